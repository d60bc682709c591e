//! Art. 9 restrictions as events, and the seam channels ask at admission.
//!
//! A citizen who disrupts the hotline, or harasses, insults or threatens its staff, is
//! restricted from the hotline for 30 natural days (Art. 9). A restriction is proposed
//! (by an agent, or by the gateway when it hears abusive language), confirmed by a
//! second person, and then runs 30 days from the confirmation to the second; it can be
//! lifted early, and it expires. Every step is a [`RestrictionChange`]: the whole state of
//! the restriction after the step, with who made it and when.
//!
//! On Kafka the changes go to a compacted topic keyed by the citizen key, so the topic
//! holds each citizen's current restriction and every gateway instance rebuilds its
//! in-memory view by reading it from the start. The same change also goes to the audit
//! topic as an [`AuditEvent`], which keeps the history compaction drops.
//!
//! Personal data (Art. 21): a change names the citizen by key and a masked form only
//! (`138****1234`); the number itself never reaches the topic.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{CitizenIdentity, IdentityKind, TicketRef};

/// How long a confirmed restriction runs: 30 natural days (Art. 9), counted to the second
/// from the confirmation.
pub const RESTRICTION_DAYS: i64 = 30;

/// Why a citizen is restricted: the fixed list of Art. 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionReason {
    /// 扰乱热线秩序: disrupting the hotline (malicious, repeated or nuisance contacts).
    DisruptingHotline,
    /// 骚扰工作人员: harassing staff.
    HarassingStaff,
    /// 辱骂工作人员: insulting staff.
    InsultingStaff,
    /// 威胁工作人员: threatening staff.
    ThreateningStaff,
}

impl RestrictionReason {
    /// The reason in Chinese, as a citizen or agent reads it.
    pub fn zh(self) -> &'static str {
        match self {
            RestrictionReason::DisruptingHotline => "扰乱热线秩序",
            RestrictionReason::HarassingStaff => "骚扰工作人员",
            RestrictionReason::InsultingStaff => "辱骂工作人员",
            RestrictionReason::ThreateningStaff => "威胁工作人员",
        }
    }
}

/// Where a restriction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionState {
    /// Proposed, waiting for a second person to confirm it. Not enforced.
    Proposed,
    /// Confirmed and in force until `expires_at`.
    Active,
    /// Ended early by a person, who said why.
    Lifted,
    /// Ran its 30 days.
    Expired,
    /// A proposal a person declined; it was never in force.
    Withdrawn,
}

impl RestrictionState {
    /// Whether the restriction can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RestrictionState::Lifted | RestrictionState::Expired | RestrictionState::Withdrawn
        )
    }

    /// The state's name as written in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            RestrictionState::Proposed => "proposed",
            RestrictionState::Active => "active",
            RestrictionState::Lifted => "lifted",
            RestrictionState::Expired => "expired",
            RestrictionState::Withdrawn => "withdrawn",
        }
    }
}

/// Who or what proposed a restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposalSource {
    /// A person, through the admin API.
    Staff,
    /// The gateway, on abusive words in a chat message or a call's transcript. Never
    /// enforced before a person confirms it.
    AbusiveLanguage,
}

/// What the restriction rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// The contacts (their event ids) that show the behaviour.
    #[serde(default)]
    pub contacts: Vec<Uuid>,
    /// The ticket the behaviour happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_ref: Option<TicketRef>,
    /// The words: a transcript or chat excerpt (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// A restriction's state after one change (the record on the compacted topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestrictionChange {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event (also the CloudEvents id). An expiry's id is derived from
    /// the restriction (every instance that notices it writes the same event).
    pub id: Uuid,
    /// The restriction.
    pub restriction_id: Uuid,
    /// Counts the restriction's changes from 1; a reader keeps the highest.
    pub version: u32,
    /// The citizen's pseudonymous key (the record key).
    pub citizen_key: String,
    /// What kind of identity is restricted.
    pub identity_kind: IdentityKind,
    /// The identity masked for screens (`138****1234`); never the value.
    pub identity_masked: String,
    /// Why (Art. 9).
    pub reason: RestrictionReason,
    /// What it rests on.
    pub evidence: Evidence,
    /// Where it stands after this change.
    pub state: RestrictionState,
    /// Who proposed it (a staff id, or `gateway` for abusive-language proposals).
    pub proposed_by: String,
    /// Staff or the gateway.
    pub proposal_source: ProposalSource,
    /// When it was proposed (UTC).
    pub proposed_at: DateTime<Utc>,
    /// Who confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<String>,
    /// When it was confirmed: the 30 days start here (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When it ends unless lifted: `confirmed_at` + 30 days, to the second (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Who lifted or withdrew it (`gateway` for an expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// When it was lifted, withdrawn or expired (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it was lifted or withdrawn, in the words of who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// When this change was made (UTC).
    pub changed_at: DateTime<Utc>,
    /// Who made this change.
    pub changed_by: String,
}

impl RestrictionChange {
    /// Whether it is in force at `now`: confirmed, not ended, and `now` before
    /// `expires_at` (the restriction ends at that second, even before anybody writes the
    /// expiry).
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.state == RestrictionState::Active && self.expires_at.is_some_and(|end| now < end)
    }
}

/// One audited action on the admin surface (the history the compacted topic forgets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEvent {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event (for a restriction change, the change's own id).
    pub id: Uuid,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// Who did it (a staff id as given to the API, or `gateway`).
    pub actor: String,
    /// What was done, `<object>.<verb>` (`restriction.confirmed`).
    pub action: String,
    /// The object's id (the restriction id).
    pub subject: String,
    /// The citizen concerned, by key (the record key).
    pub citizen_key: String,
    /// The object after the action.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// The audit record of a restriction change.
    pub fn of_restriction(change: &RestrictionChange) -> Self {
        let verb = match change.state {
            RestrictionState::Proposed => "proposed",
            RestrictionState::Active => "confirmed",
            RestrictionState::Lifted => "lifted",
            RestrictionState::Expired => "expired",
            RestrictionState::Withdrawn => "withdrawn",
        };
        AuditEvent {
            schema_version: crate::SCHEMA_VERSION,
            id: change.id,
            at: change.changed_at,
            actor: change.changed_by.clone(),
            action: format!("restriction.{verb}"),
            subject: change.restriction_id.to_string(),
            citizen_key: change.citizen_key.clone(),
            detail: serde_json::to_value(change).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// What a channel learns when it asks whether a citizen is restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    /// The restriction, when it is one a person recorded (`None` for the config's list).
    pub restriction_id: Option<Uuid>,
    /// Why, when known.
    pub reason: Option<RestrictionReason>,
    /// When it ends; `None` for one without an end (set by configuration).
    pub until: Option<DateTime<Utc>>,
    /// Where it comes from, for logs and contacts (`config`, `restrictions`); never the
    /// number.
    pub source: &'static str,
}

/// Answers whether a citizen is restricted (Art. 9). Every channel asks one at admission;
/// answers come from memory and never wait on the network.
pub trait Blocklist: Send + Sync + 'static {
    /// The restriction on this citizen in force at `now`, if any.
    fn check(&self, citizen: &CitizenIdentity, now: DateTime<Utc>) -> Option<Restricted>;
}

/// No restrictions at all (unit tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBlocklist;

impl Blocklist for NoBlocklist {
    fn check(&self, _: &CitizenIdentity, _: DateTime<Utc>) -> Option<Restricted> {
        None
    }
}

/// Two lists asked in turn (the config's static numbers, then the recorded restrictions).
pub struct Layered(pub Vec<std::sync::Arc<dyn Blocklist>>);

impl std::fmt::Debug for Layered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Layered({} lists)", self.0.len())
    }
}

impl Blocklist for Layered {
    fn check(&self, citizen: &CitizenIdentity, now: DateTime<Utc>) -> Option<Restricted> {
        self.0.iter().find_map(|list| list.check(citizen, now))
    }
}

/// A note on a contact or draft that the citizen is restricted but was let through
/// because the contact carried an Art. 15 emergency cue (the emergency bypass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestrictionNote {
    /// The restriction, when a person recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction_id: Option<Uuid>,
    /// When it ends, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// `config` or `restrictions`.
    pub source: String,
}

impl From<&Restricted> for RestrictionNote {
    fn from(r: &Restricted) -> Self {
        RestrictionNote {
            restriction_id: r.restriction_id,
            until: r.until,
            source: r.source.to_owned(),
        }
    }
}
