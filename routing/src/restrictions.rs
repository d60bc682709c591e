//! Art. 9 restrictions: the rules of their life cycle and the in-memory book every
//! gateway instance keeps.
//!
//! A restriction is proposed (by a person, or by the gateway on abusive words: a
//! proposal is never enforced), confirmed by a *second* person, and then in force for
//! exactly 30 natural days from the second of the confirmation (Art. 9,
//! [`RESTRICTION_DAYS`]); it may be lifted early with a reason, a proposal may be
//! withdrawn, and when the 30 days are over it expires. Each step is a
//! [`RestrictionChange`] that the gateway publishes (durably, through the outbox) and
//! every instance applies to its [`RestrictionBook`]. Enforcement does not wait for the
//! expiry event: a restriction is in force only while `now < expires_at`.
//!
//! The book is pure: operations take `now` and return the change to publish, so that the
//! rules are tested with any clock. One citizen has at most one live restriction (a new
//! proposal while one is proposed or in force is a conflict); the book, like the
//! compacted topic it mirrors, keeps each citizen's latest restriction only (the audit
//! topic keeps the history).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use contract::{
    Blocklist, CitizenIdentity, Evidence, IdentityKind, ProposalSource, Restricted,
    RestrictionChange, RestrictionReason, RestrictionState, SCHEMA_VERSION,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use contract::restriction::RESTRICTION_DAYS;

/// The longest evidence excerpt, in characters.
pub const MAX_EXCERPT_CHARS: usize = 500;
/// The most contacts one piece of evidence lists.
pub const MAX_EVIDENCE_CONTACTS: usize = 100;
/// The longest staff id or reason text, in characters.
pub const MAX_ACTOR_CHARS: usize = 64;
/// The longest lifting or withdrawal reason, in characters.
pub const MAX_END_REASON_CHARS: usize = 500;

/// A citizen key (128 bits, the hex the contacts carry) as 16 bytes: a million entries
/// then cost 16 bytes of key each instead of a 32-character string on the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CitizenKey([u8; 16]);

impl CitizenKey {
    /// Parses the 32 hex digits of a citizen key.
    pub fn parse(hex_key: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(hex_key, &mut out).ok()?;
        Some(CitizenKey(out))
    }
}

/// What the proposer gives.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Who is to be restricted (the full identity; only its key and masked form are
    /// kept).
    pub citizen: CitizenIdentity,
    /// Why (Art. 9).
    pub reason: RestrictionReason,
    /// What it rests on.
    pub evidence: Evidence,
    /// Who proposes it.
    pub proposed_by: String,
    /// A person or the gateway's abusive-language check.
    pub source: ProposalSource,
}

/// Why an operation on the book was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionError {
    /// No restriction has this id.
    #[error("no restriction {0}")]
    NotFound(Uuid),
    /// The citizen already has a live restriction.
    #[error("the citizen already has a {state} restriction ({existing})", state = .state.as_str())]
    Conflict {
        /// The live restriction.
        existing: Uuid,
        /// Its state.
        state: RestrictionState,
    },
    /// The operation does not apply in the restriction's state.
    #[error("restriction {id} is {state}; {operation} needs it {wanted}", state = .state.as_str())]
    WrongState {
        /// The restriction.
        id: Uuid,
        /// Its state.
        state: RestrictionState,
        /// What was asked.
        operation: &'static str,
        /// The state it needs.
        wanted: &'static str,
    },
    /// The confirmer is the proposer: Art. 9 restrictions need a second person.
    #[error("a restriction is confirmed by someone other than who proposed it ({0})")]
    SamePerson(String),
    /// A field is missing, too long or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// How a person ends a restriction.
#[derive(Debug, Clone, Copy)]
enum End {
    /// An active restriction, early.
    Lift,
    /// A proposal, declined.
    Withdraw,
}

/// How a change from the topic was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A restriction the book did not know.
    New,
    /// A newer state of a known restriction.
    Updated,
    /// Older than what the book holds: ignored.
    Stale,
    /// Unusable (a citizen key that is not 32 hex digits): ignored.
    Invalid,
}

/// The compact entry the admission path reads.
#[derive(Debug, Clone, Copy)]
struct InForce {
    restriction_id: Uuid,
    reason: RestrictionReason,
    expires_at: DateTime<Utc>,
}

/// Every instance's view of the restrictions.
#[derive(Debug, Default)]
pub struct RestrictionBook {
    /// Each citizen's latest restriction, by id (UUIDv7: sorted by proposal time, which
    /// is the list's order and its pagination cursor).
    /// Boxed: a B-tree node holds eleven values inline, and half-empty nodes of
    /// 400-byte records cost more than the pointers (measured: restriction-cost).
    records: BTreeMap<Uuid, Box<RestrictionChange>>,
    /// The citizen's latest restriction.
    by_citizen: HashMap<CitizenKey, Uuid>,
    /// Confirmed, not ended: what admission reads.
    active: HashMap<CitizenKey, InForce>,
    /// Active restrictions by end time, for the expiry timer.
    expiries: BTreeSet<(DateTime<Utc>, Uuid)>,
}

impl RestrictionBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many restrictions the book holds (any state).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the book holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many are confirmed and not ended (some may be past their end, not yet
    /// expired by the timer).
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// The restriction in force on this citizen key at `now`.
    pub fn in_force(&self, citizen_key: &str, now: DateTime<Utc>) -> Option<Restricted> {
        let key = CitizenKey::parse(citizen_key)?;
        let entry = self.active.get(&key)?;
        (now < entry.expires_at).then_some(Restricted {
            restriction_id: Some(entry.restriction_id),
            reason: Some(entry.reason),
            until: Some(entry.expires_at),
            source: "restrictions",
        })
    }

    /// One restriction.
    pub fn get(&self, id: Uuid) -> Option<&RestrictionChange> {
        self.records.get(&id).map(|r| &**r)
    }

    /// Restrictions in proposal order after the cursor `after`, those in `state` (as of
    /// `now`: an active one past its end counts as expired) only when given; at most
    /// `limit`. Returns the page and the cursor of the next page, if there is more.
    pub fn list(
        &self,
        state: Option<RestrictionState>,
        after: Option<Uuid>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> (Vec<RestrictionChange>, Option<Uuid>) {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        let mut page: Vec<RestrictionChange> = Vec::new();
        for r in self
            .records
            .range((start, Bound::Unbounded))
            .map(|(_, r)| r)
        {
            if state.is_some_and(|s| effective_state(r, now) != s) {
                continue;
            }
            if page.len() == limit {
                // There is at least one more: the next page starts after the last shown.
                let next = page.last().map(|p| p.restriction_id);
                return (page, next);
            }
            page.push(shown(r, now));
        }
        (page, None)
    }

    /// A new proposal (not enforced until confirmed).
    pub fn propose(
        &self,
        p: Proposal,
        now: DateTime<Utc>,
    ) -> Result<RestrictionChange, RestrictionError> {
        actor(&p.proposed_by, "proposed_by")?;
        check_evidence(&p.evidence)?;
        let key = CitizenKey::parse(&p.citizen.key)
            .ok_or_else(|| RestrictionError::Invalid("citizen key is not 32 hex digits".into()))?;
        if let Some(existing) = self
            .by_citizen
            .get(&key)
            .and_then(|id| self.records.get(id))
        {
            let state = effective_state(existing, now);
            if matches!(state, RestrictionState::Proposed | RestrictionState::Active) {
                return Err(RestrictionError::Conflict {
                    existing: existing.restriction_id,
                    state,
                });
            }
        }
        let masked = contract::mask_identity(&p.citizen);
        Ok(RestrictionChange {
            schema_version: SCHEMA_VERSION,
            id: contract::event::new_event_id(),
            restriction_id: contract::event::new_event_id(),
            version: 1,
            citizen_key: p.citizen.key,
            identity_kind: p.citizen.kind,
            identity_masked: masked,
            reason: p.reason,
            evidence: p.evidence,
            state: RestrictionState::Proposed,
            proposed_by: p.proposed_by.clone(),
            proposal_source: p.source,
            proposed_at: now,
            confirmed_by: None,
            confirmed_at: None,
            expires_at: None,
            ended_by: None,
            ended_at: None,
            end_reason: None,
            changed_at: now,
            changed_by: p.proposed_by,
        })
    }

    /// Confirms a proposal: in force from `now` for 30 natural days, to the second
    /// (Art. 9). The confirmer must not be the proposer.
    pub fn confirm(
        &self,
        id: Uuid,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<RestrictionChange, RestrictionError> {
        actor(by, "confirmed_by")?;
        let r = self.expect(id, RestrictionState::Proposed, "confirm", "proposed", now)?;
        if r.proposed_by == by {
            return Err(RestrictionError::SamePerson(by.to_owned()));
        }
        let mut next = step(r, by, now);
        next.state = RestrictionState::Active;
        next.confirmed_by = Some(by.to_owned());
        next.confirmed_at = Some(now);
        next.expires_at = Some(now + chrono::Duration::days(RESTRICTION_DAYS));
        Ok(next)
    }

    /// Lifts a restriction in force before its end; `why` is recorded.
    pub fn lift(
        &self,
        id: Uuid,
        by: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<RestrictionChange, RestrictionError> {
        self.end(id, by, why, now, End::Lift)
    }

    /// Declines a proposal; `why` is recorded.
    pub fn withdraw(
        &self,
        id: Uuid,
        by: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<RestrictionChange, RestrictionError> {
        self.end(id, by, why, now, End::Withdraw)
    }

    /// Ends a restriction by a person's decision, recording who, when and why.
    fn end(
        &self,
        id: Uuid,
        by: &str,
        why: &str,
        now: DateTime<Utc>,
        how: End,
    ) -> Result<RestrictionChange, RestrictionError> {
        let (field, from, operation, wanted, to) = match how {
            End::Lift => (
                "lifted_by",
                RestrictionState::Active,
                "lift",
                "active",
                RestrictionState::Lifted,
            ),
            End::Withdraw => (
                "withdrawn_by",
                RestrictionState::Proposed,
                "withdraw",
                "proposed",
                RestrictionState::Withdrawn,
            ),
        };
        actor(by, field)?;
        end_reason(why)?;
        let r = self.expect(id, from, operation, wanted, now)?;
        let mut next = step(r, by, now);
        next.state = to;
        next.ended_by = Some(by.to_owned());
        next.ended_at = Some(now);
        next.end_reason = Some(why.trim().to_owned());
        Ok(next)
    }

    /// The expiries due at `now`: every active restriction whose end has come. Each
    /// change's id is derived from the restriction, so instances that notice the same
    /// expiry write the same event and consumers keep one (exactly once in effect).
    pub fn due_expiries(&self, now: DateTime<Utc>) -> Vec<RestrictionChange> {
        self.expiries
            .iter()
            .take_while(|(end, _)| *end <= now)
            .filter_map(|(end, id)| {
                let r = self.records.get(id)?;
                let mut next = step(r, "gateway", *end);
                next.id = expiry_event_id(r.restriction_id);
                next.state = RestrictionState::Expired;
                next.ended_by = Some("gateway".to_owned());
                next.ended_at = Some(*end);
                Some(next)
            })
            .collect()
    }

    /// When the next active restriction ends.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.first().map(|(end, _)| *end)
    }

    /// Takes a change (from the topic, or one this instance just published). Changes of
    /// one restriction are kept by version; a different restriction of the same citizen
    /// replaces an older one (as compaction does on the topic).
    pub fn apply(&mut self, change: RestrictionChange) -> Applied {
        let Some(key) = CitizenKey::parse(&change.citizen_key) else {
            return Applied::Invalid;
        };
        let id = change.restriction_id;
        let outcome = match self.records.get(&id) {
            Some(known) if known.version > change.version => return Applied::Stale,
            Some(_) => Applied::Updated,
            None => {
                if let Some(other) = self.by_citizen.get(&key).copied()
                    && other != id
                {
                    let newer = self
                        .records
                        .get(&other)
                        .is_some_and(|o| (o.proposed_at, other) > (change.proposed_at, id));
                    if newer {
                        return Applied::Stale;
                    }
                    self.forget(other, key);
                }
                Applied::New
            }
        };
        self.unindex(id, key);
        if change.state == RestrictionState::Active
            && let Some(end) = change.expires_at
        {
            self.active.insert(
                key,
                InForce {
                    restriction_id: id,
                    reason: change.reason,
                    expires_at: end,
                },
            );
            self.expiries.insert((end, id));
        }
        self.by_citizen.insert(key, id);
        self.records.insert(id, Box::new(change));
        outcome
    }

    fn forget(&mut self, id: Uuid, key: CitizenKey) {
        self.unindex(id, key);
        self.records.remove(&id);
    }

    fn unindex(&mut self, id: Uuid, key: CitizenKey) {
        if let Some(old) = self.records.get(&id)
            && let Some(end) = old.expires_at
        {
            self.expiries.remove(&(end, id));
        }
        if self
            .active
            .get(&key)
            .is_some_and(|e| e.restriction_id == id)
        {
            self.active.remove(&key);
        }
    }

    fn expect(
        &self,
        id: Uuid,
        wanted: RestrictionState,
        operation: &'static str,
        wanted_name: &'static str,
        now: DateTime<Utc>,
    ) -> Result<&RestrictionChange, RestrictionError> {
        let r = self
            .records
            .get(&id)
            .ok_or(RestrictionError::NotFound(id))?;
        let state = effective_state(r, now);
        if state != wanted {
            return Err(RestrictionError::WrongState {
                id,
                state,
                operation,
                wanted: wanted_name,
            });
        }
        Ok(r)
    }
}

/// A restriction's state as of `now`: an active one whose end has come is expired even
/// before the expiry is written.
pub fn effective_state(r: &RestrictionChange, now: DateTime<Utc>) -> RestrictionState {
    if r.state == RestrictionState::Active && !r.in_force(now) {
        RestrictionState::Expired
    } else {
        r.state
    }
}

/// The restriction as an API shows it at `now` (its effective state).
fn shown(r: &RestrictionChange, now: DateTime<Utc>) -> RestrictionChange {
    let mut out = r.clone();
    out.state = effective_state(r, now);
    out
}

/// The next version of `r`, changed by `by` at `now`.
fn step(r: &RestrictionChange, by: &str, now: DateTime<Utc>) -> RestrictionChange {
    let mut next = r.clone();
    next.id = contract::event::new_event_id();
    next.version = r.version + 1;
    next.changed_at = now;
    next.changed_by = by.to_owned();
    next
}

/// The id of a restriction's expiry event: the same on every instance.
pub fn expiry_event_id(restriction_id: Uuid) -> Uuid {
    let digest = Sha256::new()
        .chain_update(restriction_id.as_bytes())
        .chain_update(b"expired")
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn actor(who: &str, field: &str) -> Result<(), RestrictionError> {
    let n = who.chars().count();
    if who.trim().is_empty() || n > MAX_ACTOR_CHARS || who.chars().any(char::is_control) {
        return Err(RestrictionError::Invalid(format!(
            "{field} must be 1 to {MAX_ACTOR_CHARS} printable characters"
        )));
    }
    Ok(())
}

fn end_reason(why: &str) -> Result<(), RestrictionError> {
    if why.trim().is_empty() || why.chars().count() > MAX_END_REASON_CHARS {
        return Err(RestrictionError::Invalid(format!(
            "reason must be 1 to {MAX_END_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

fn check_evidence(e: &Evidence) -> Result<(), RestrictionError> {
    if e.contacts.len() > MAX_EVIDENCE_CONTACTS {
        return Err(RestrictionError::Invalid(format!(
            "evidence lists at most {MAX_EVIDENCE_CONTACTS} contacts"
        )));
    }
    if e.excerpt
        .as_ref()
        .is_some_and(|x| x.chars().count() > MAX_EXCERPT_CHARS)
    {
        return Err(RestrictionError::Invalid(format!(
            "evidence excerpt is at most {MAX_EXCERPT_CHARS} characters"
        )));
    }
    if e.contacts.is_empty() && e.ticket_ref.is_none() && e.excerpt.is_none() {
        return Err(RestrictionError::Invalid(
            "evidence must name contacts, a ticket or an excerpt".into(),
        ));
    }
    Ok(())
}

/// The book behind a lock, shared by the admission path, the admin API, the topic
/// reader and the expiry timer; a [`Blocklist`].
#[derive(Debug, Clone, Default)]
pub struct SharedBook(std::sync::Arc<std::sync::RwLock<RestrictionBook>>);

impl SharedBook {
    /// An empty shared book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the book. A poisoned lock still holds a consistent book (every mutation is
    /// a few inserts and removes that cannot panic halfway in a way that matters here):
    /// admission must not fail because another thread panicked.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, RestrictionBook> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the book.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, RestrictionBook> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Blocklist for SharedBook {
    fn check(&self, citizen: &CitizenIdentity, now: DateTime<Utc>) -> Option<Restricted> {
        if citizen.kind == IdentityKind::Withheld {
            return None;
        }
        self.read().in_force(&citizen.key, now)
    }
}

/// Writes the expiry of every restriction when its 30 days are over ("nothing expires
/// silently"). Enforcement does not wait for it (the book compares with `expires_at`);
/// the timer makes the end an event on the topic and in the audit trail.
#[derive(Debug, Clone)]
pub struct ExpiryTimer {
    book: SharedBook,
    clock: crate::Clock,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The longest the timer sleeps before it looks again (the wall clock may be stepped
/// while it sleeps on tokio's monotonic clock).
const EXPIRY_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

impl ExpiryTimer {
    /// A timer over this book; `wake` is notified when a change may have moved the next
    /// expiry earlier (a confirmation).
    pub fn new(
        book: SharedBook,
        clock: crate::Clock,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Self {
        ExpiryTimer { book, clock, wake }
    }

    /// Runs until dropped: waits for the next end, publishes the due expiries through
    /// `publish` (which returns once they are durable), then applies them to the book.
    /// A failed publish is tried again a second later; nothing is skipped.
    pub async fn run<F, Fut>(&self, mut publish: F)
    where
        F: FnMut(Vec<RestrictionChange>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        loop {
            let next = self.read().next_expiry();
            match next {
                Some(end) => {
                    let cap = self.clock.now()
                        + chrono::Duration::from_std(EXPIRY_RECHECK).unwrap_or_default();
                    tokio::select! {
                        _ = self.clock.sleep_until(end.min(cap)) => {}
                        _ = self.wake.notified() => continue,
                    }
                }
                None => {
                    self.wake.notified().await;
                    continue;
                }
            }
            let due = self.read().due_expiries(self.clock.now());
            if due.is_empty() {
                continue;
            }
            match publish(due.clone()).await {
                Ok(()) => {
                    let mut book = self.book.write();
                    for change in due {
                        book.apply(change);
                    }
                }
                Err(e) => {
                    // The outbox refused (full, closing): the restriction is already not
                    // enforced; its expiry event is written on the next try.
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RestrictionBook> {
        self.book.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{CitizenKeyer, TicketRef};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T02:15:07Z")
            .expect("literal")
            .with_timezone(&Utc)
    }

    fn keyer() -> CitizenKeyer {
        CitizenKeyer::new(b"a-test-secret-of-enough-length")
    }

    fn proposal(number: &str, by: &str) -> Proposal {
        Proposal {
            citizen: keyer().phone(number).expect("valid number"),
            reason: RestrictionReason::InsultingStaff,
            evidence: Evidence {
                contacts: vec![contract::event::new_event_id()],
                ticket_ref: Some(TicketRef("ZH20261130ABCDEF0123".into())),
                excerpt: Some("你们这帮废物".into()),
            },
            proposed_by: by.into(),
            source: ProposalSource::Staff,
        }
    }

    /// Proposes and confirms one restriction at `at`; returns its id.
    fn restrict(book: &mut RestrictionBook, number: &str, at: DateTime<Utc>) -> Uuid {
        let p = book
            .propose(proposal(number, "agent-1001"), at)
            .expect("propose");
        let id = p.restriction_id;
        book.apply(p);
        let c = book.confirm(id, "supervisor-7", at).expect("confirm");
        book.apply(c);
        id
    }

    #[test]
    fn art9_a_proposal_is_not_enforced_until_a_second_person_confirms() {
        let mut book = RestrictionBook::new();
        let citizen = keyer().phone("13900001111").expect("valid");
        let p = book
            .propose(proposal("13900001111", "agent-1001"), t0())
            .expect("propose");
        assert_eq!(p.state, RestrictionState::Proposed);
        assert_eq!(p.identity_masked, "139****1111");
        assert!(
            !serde_json::to_string(&p)
                .expect("json")
                .contains("13900001111")
        );
        let id = p.restriction_id;
        book.apply(p);
        assert_eq!(
            book.check_key(&citizen, t0()),
            None,
            "a proposal is not enforced"
        );
        assert_eq!(
            book.confirm(id, "agent-1001", t0()),
            Err(RestrictionError::SamePerson("agent-1001".into()))
        );
        let c = book.confirm(id, "supervisor-7", t0()).expect("confirm");
        assert_eq!(c.version, 2);
        assert_eq!(c.confirmed_at, Some(t0()));
        assert_eq!(
            c.expires_at,
            Some(t0() + chrono::Duration::seconds(30 * 86_400))
        );
        book.apply(c);
        let r = book.check_key(&citizen, t0()).expect("in force");
        assert_eq!(r.restriction_id, Some(id));
        assert_eq!(r.reason, Some(RestrictionReason::InsultingStaff));
    }

    #[test]
    fn art9_thirty_natural_days_to_the_second() {
        let mut book = RestrictionBook::new();
        restrict(&mut book, "13900001111", t0());
        let citizen = keyer().phone("13900001111").expect("valid");
        let end = t0() + chrono::Duration::days(30);
        assert!(
            book.check_key(&citizen, end - chrono::Duration::seconds(1))
                .is_some()
        );
        assert!(
            book.check_key(&citizen, end).is_none(),
            "ends at the second"
        );
        assert!(
            book.due_expiries(end - chrono::Duration::seconds(1))
                .is_empty()
        );
        let due = book.due_expiries(end);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].state, RestrictionState::Expired);
        assert_eq!(due[0].ended_at, Some(end));
        assert_eq!(
            due[0].id,
            expiry_event_id(due[0].restriction_id),
            "same on every instance"
        );
    }

    #[test]
    fn art9_lifting_ends_it_early_with_who_and_why() {
        let mut book = RestrictionBook::new();
        let id = restrict(&mut book, "13900001111", t0());
        let later = t0() + chrono::Duration::days(3);
        assert!(matches!(
            book.lift(id, "supervisor-7", "  ", later),
            Err(RestrictionError::Invalid(_))
        ));
        let l = book
            .lift(id, "supervisor-7", "误判，来电人情绪激动但未辱骂", later)
            .expect("lift");
        assert_eq!(l.state, RestrictionState::Lifted);
        assert_eq!(l.ended_by.as_deref(), Some("supervisor-7"));
        assert_eq!(l.ended_at, Some(later));
        book.apply(l);
        let citizen = keyer().phone("13900001111").expect("valid");
        assert!(book.check_key(&citizen, later).is_none());
        assert!(
            book.due_expiries(t0() + chrono::Duration::days(31))
                .is_empty()
        );
        assert!(matches!(
            book.lift(id, "supervisor-7", "again", later),
            Err(RestrictionError::WrongState { .. })
        ));
    }

    #[test]
    fn one_live_restriction_per_citizen_and_a_new_one_after_the_end() {
        let mut book = RestrictionBook::new();
        let first = restrict(&mut book, "13900001111", t0());
        assert!(matches!(
            book.propose(proposal("+86 139-0000-1111", "agent-2"), t0()),
            Err(RestrictionError::Conflict { existing, .. }) if existing == first
        ));
        // After the 30 days (even before the expiry event) a new proposal is allowed, and
        // replaces the old one in the book as compaction does on the topic.
        let after = t0() + chrono::Duration::days(30);
        let p = book
            .propose(proposal("13900001111", "agent-2"), after)
            .expect("new");
        book.apply(p);
        assert_eq!(book.len(), 1);
        assert!(book.get(first).is_none());
        // The old restriction's late changes are stale now.
        let mut old_expiry = RestrictionChange {
            restriction_id: first,
            ..book.list(None, None, 1, after).0[0].clone()
        };
        old_expiry.proposed_at = t0();
        old_expiry.version = 3;
        assert_eq!(book.apply(old_expiry), Applied::Stale);
    }

    #[test]
    fn stale_and_invalid_changes_are_ignored() {
        let mut book = RestrictionBook::new();
        let p = book
            .propose(proposal("13900001111", "agent-1"), t0())
            .expect("propose");
        let id = p.restriction_id;
        assert_eq!(book.apply(p.clone()), Applied::New);
        let c = book.confirm(id, "sup-1", t0()).expect("confirm");
        assert_eq!(book.apply(c), Applied::Updated);
        assert_eq!(book.apply(p.clone()), Applied::Stale, "version 1 after 2");
        let mut bad = p;
        bad.citizen_key = "13900001111".into();
        assert_eq!(book.apply(bad), Applied::Invalid);
        assert_eq!(book.active_len(), 1);
    }

    #[test]
    fn lists_filter_by_effective_state_and_page() {
        let mut book = RestrictionBook::new();
        for i in 0..5 {
            restrict(&mut book, &format!("1390000{i:04}"), t0());
        }
        let p = book
            .propose(proposal("13800009999", "agent-1"), t0())
            .expect("propose");
        book.apply(p);
        let (page, next) = book.list(Some(RestrictionState::Active), None, 2, t0());
        assert_eq!(page.len(), 2);
        let (page2, next2) = book.list(Some(RestrictionState::Active), next, 2, t0());
        assert_eq!(page2.len(), 2);
        assert_ne!(page[0].restriction_id, page2[0].restriction_id);
        let (page3, next3) = book.list(Some(RestrictionState::Active), next2, 2, t0());
        assert_eq!((page3.len(), next3), (1, None));
        assert_eq!(
            book.list(Some(RestrictionState::Proposed), None, 10, t0())
                .0
                .len(),
            1
        );
        let later = t0() + chrono::Duration::days(30);
        let (expired, _) = book.list(Some(RestrictionState::Expired), None, 10, later);
        assert_eq!(expired.len(), 5, "past the end counts as expired");
        assert!(expired.iter().all(|r| r.state == RestrictionState::Expired));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let book = RestrictionBook::new();
        let mut p = proposal("13900001111", "");
        assert!(matches!(
            book.propose(p.clone(), t0()),
            Err(RestrictionError::Invalid(_))
        ));
        p.proposed_by = "agent-1".into();
        p.evidence = Evidence::default();
        assert!(matches!(
            book.propose(p.clone(), t0()),
            Err(RestrictionError::Invalid(_))
        ));
        p.evidence.excerpt = Some("骂".repeat(MAX_EXCERPT_CHARS + 1));
        assert!(matches!(
            book.propose(p, t0()),
            Err(RestrictionError::Invalid(_))
        ));
        let unknown = contract::event::new_event_id();
        assert_eq!(
            book.confirm(unknown, "sup", t0()),
            Err(RestrictionError::NotFound(unknown))
        );
    }

    /// The timer writes the expiry at exactly the 30th day's second, under tokio's
    /// paused clock (Art. 9).
    #[tokio::test(start_paused = true)]
    async fn art9_the_expiry_timer_fires_at_exactly_thirty_days() {
        let clock = crate::Clock::starting_at(t0());
        let book = SharedBook::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        let timer = ExpiryTimer::new(book.clone(), clock, wake.clone());
        type Written = Vec<(DateTime<Utc>, RestrictionChange)>;
        let published: Arc<Mutex<Written>> = Arc::default();
        let sink = published.clone();
        let task = tokio::spawn(async move {
            timer
                .run(|changes| {
                    let sink = sink.clone();
                    async move {
                        let now = clock.now();
                        sink.lock()
                            .expect("lock")
                            .extend(changes.into_iter().map(|c| (now, c)));
                        Ok(())
                    }
                })
                .await
        });
        // Confirmed 10 s after the start.
        tokio::time::advance(Duration::from_secs(10)).await;
        let confirmed = clock.now();
        {
            let mut b = book.write();
            restrict(&mut b, "13900001111", confirmed);
        }
        wake.notify_one();
        let citizen = keyer().phone("13900001111").expect("valid");
        let end = confirmed + chrono::Duration::days(30);
        tokio::time::advance(Duration::from_secs(30 * 86_400 - 1)).await;
        tokio::task::yield_now().await;
        assert_eq!(clock.now(), end - chrono::Duration::seconds(1));
        assert!(book.check(&citizen, clock.now()).is_some());
        assert!(
            published.lock().expect("lock").is_empty(),
            "not a second early"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(book.check(&citizen, clock.now()).is_none());
        let got = published.lock().expect("lock").clone();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, end, "written at the second it ends");
        assert_eq!(got[0].1.state, RestrictionState::Expired);
        assert_eq!(got[0].1.ended_at, Some(end));
        // Applied: never written twice.
        tokio::time::advance(Duration::from_secs(3600)).await;
        tokio::task::yield_now().await;
        assert_eq!(published.lock().expect("lock").len(), 1);
        assert_eq!(
            book.read().get(got[0].1.restriction_id).map(|r| r.state),
            Some(RestrictionState::Expired)
        );
        task.abort();
    }

    impl RestrictionBook {
        fn check_key(&self, c: &CitizenIdentity, now: DateTime<Utc>) -> Option<Restricted> {
            self.in_force(&c.key, now)
        }
    }

    proptest::proptest! {
        /// In force exactly on [confirmed, confirmed + 30 days), whatever the times.
        #[test]
        fn art9_in_force_exactly_for_thirty_days(
            confirm_after in 0i64..10_000_000,
            probe in -100i64..3_000_000,
        ) {
            let mut book = RestrictionBook::new();
            let confirmed = t0() + chrono::Duration::seconds(confirm_after);
            restrict(&mut book, "13900001111", confirmed);
            let citizen = keyer().phone("13900001111").expect("valid");
            let at = confirmed + chrono::Duration::seconds(probe);
            let expected = (0..30 * 86_400).contains(&probe);
            proptest::prop_assert_eq!(book.check_key(&citizen, at).is_some(), expected);
        }
    }
}
