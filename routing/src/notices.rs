//! Art. 15 urgent notices: which contact opens a notice and which updates one, the
//! 30-minute clock's schedule, and the book every gateway instance folds the notice
//! events into.
//!
//! Rules (each a pure function of the book, the policy and `now`):
//!
//! - **One notice per ticket and target.** A later contact of the same ticket updates
//!   the notice; so does a new ticket of the same citizen for the same target within
//!   [`NoticePolicy::same_citizen_window`] (an SMS per report makes a ticket each).
//! - **Regional outages are incidents.** Water, power and gas outages reported in the
//!   same district within [`NoticePolicy::outage_window`] are one notice with a
//!   reporter count.
//! - **A flood is one notice.** An update that repeats the notice's latest words within
//!   [`NoticePolicy::min_update_gap`], or any beyond [`NoticePolicy::max_updates`], is
//!   not written (the contacts themselves still are).
//! - **The clock** runs from detection: unacknowledged, step *n* of the schedule
//!   (default 5, 10 and 20 minutes) escalates; at 30 minutes an alarm. An
//!   acknowledgement from any path stops it.
//!
//! Notice ids are derived from the ticket and target, so two instances that see the same
//! ticket's cue make the same notice; the clock owner's steps have ids derived from the
//! notice and the step, so a step written twice is one step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use contract::notice::excerpt;
use contract::{
    Contact, EmergencyCue, EscalationVia, FeedbackStatus, Location, NoticeChange, NoticeEvent,
    NoticeOpened, NoticeUpdate, SCHEMA_VERSION, TicketRef,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The longest excerpt a notice carries, in characters.
pub const EXCERPT_CHARS: usize = 200;

/// The emergency kinds that are regional outages (Art. 15: water, power, gas).
pub const OUTAGE_KINDS: [&str; 3] = ["water_outage", "power_outage", "gas_outage"];

/// What a citizen text with an Art. 15 cue reports.
#[derive(Debug, Clone)]
pub struct EmergencyReport<'a> {
    /// The contact (recorded in the same submission as the notice event).
    pub contact: &'a Contact,
    /// The cue.
    pub cue: &'a EmergencyCue,
    /// The text the cue was found in (a message, an SMS, a transcript segment).
    pub text: &'a str,
    /// Where, if the words say.
    pub location: Option<Location>,
}

/// The tunables of notices.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticePolicy {
    /// When an unacknowledged notice escalates, from detection (default 5, 10, 20 min).
    pub schedule: Vec<Duration>,
    /// When an unacknowledged notice raises the alarm (Art. 15: 30 minutes).
    pub alarm_after: Duration,
    /// A citizen's new ticket for the same target within this updates the open notice.
    pub same_citizen_window: Duration,
    /// Reports of the same outage kind in the same district within this are one
    /// incident.
    pub outage_window: Duration,
    /// An update with the same words as the notice's latest, closer than this to the
    /// latest change, is not written.
    pub min_update_gap: Duration,
    /// The most updates one notice gets.
    pub max_updates: u32,
}

impl Default for NoticePolicy {
    fn default() -> Self {
        NoticePolicy {
            schedule: vec![
                Duration::from_secs(5 * 60),
                Duration::from_secs(10 * 60),
                Duration::from_secs(20 * 60),
            ],
            alarm_after: Duration::from_secs(30 * 60),
            same_citizen_window: Duration::from_secs(30 * 60),
            outage_window: Duration::from_secs(60 * 60),
            min_update_gap: Duration::from_secs(10),
            max_updates: 50,
        }
    }
}

impl NoticePolicy {
    /// Checks the policy: steps in increasing order, all before the alarm.
    pub fn validate(&self) -> Result<(), String> {
        if self.schedule.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the escalation schedule must increase".into());
        }
        if self.schedule.last().is_some_and(|l| *l >= self.alarm_after) {
            return Err("every escalation step must come before the alarm".into());
        }
        if self.alarm_after > Duration::from_secs(30 * 60) {
            return Err("the alarm must come within Art. 15's 30 minutes".into());
        }
        Ok(())
    }
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Who.
    pub by: String,
    /// Through what (`feed`, `call`, `api`).
    pub via: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Feedback from the linkage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// What.
    pub status: FeedbackStatus,
    /// Their words.
    pub note: Option<String>,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One notice as its events say.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeState {
    /// The notice.
    pub notice_id: Uuid,
    /// What opened it.
    pub opened: NoticeOpened,
    /// Updates written.
    pub updates: u32,
    /// The latest update (or the opening).
    pub last_change_at: DateTime<Utc>,
    /// The latest excerpt.
    pub latest_excerpt: String,
    /// Citizens who reported it (keys).
    pub reporters: BTreeSet<String>,
    /// Tickets that reported it.
    pub tickets: BTreeSet<TicketRef>,
    /// Set once acknowledged: the clock has stopped.
    pub acknowledged: Option<Ack>,
    /// Escalation steps begun, with when and how.
    pub escalations: BTreeMap<u32, (DateTime<Utc>, Vec<EscalationVia>)>,
    /// How each step's call ended.
    pub calls: BTreeMap<u32, String>,
    /// When the alarm was raised.
    pub alarm_at: Option<DateTime<Utc>>,
    /// The linkage's feedback, in order.
    pub feedback: Vec<Feedback>,
}

/// What the clock owner must do for a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Escalation step `n` (from 1).
    Escalate(u32),
    /// The 30-minute alarm.
    Alarm,
}

/// Every notice this instance knows, folded from the topic.
#[derive(Debug, Default)]
pub struct NoticeBook {
    notices: HashMap<Uuid, NoticeState>,
    /// Event ids applied (a redelivered event is applied once).
    seen: BTreeSet<Uuid>,
    by_citizen_target: HashMap<(String, String), Uuid>,
    by_outage: HashMap<(String, String), Uuid>,
}

impl NoticeBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many notices.
    pub fn len(&self) -> usize {
        self.notices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty()
    }

    /// One notice.
    pub fn get(&self, id: Uuid) -> Option<&NoticeState> {
        self.notices.get(&id)
    }

    /// Every notice detected since `since`, newest first.
    pub fn recent(&self, since: DateTime<Utc>) -> Vec<&NoticeState> {
        let mut out: Vec<&NoticeState> = self
            .notices
            .values()
            .filter(|n| n.opened.detected_at >= since)
            .collect();
        out.sort_by_key(|n| std::cmp::Reverse(n.opened.detected_at));
        out
    }

    /// The notice event a report makes: a new notice, an update, or nothing.
    pub fn decide(
        &self,
        report: &EmergencyReport<'_>,
        policy: &NoticePolicy,
        now: DateTime<Utc>,
    ) -> Option<NoticeEvent> {
        let contact = report.contact;
        let target = report.cue.target.clone();
        let at = report
            .text
            .find(&report.cue.heard)
            .map(|b| report.text[..b].chars().count())
            .unwrap_or(0);
        let words = excerpt(report.text, at, EXCERPT_CHARS);
        let own_id = notice_id(&contact.ticket_ref, &target);
        let district = report.location.as_ref().and_then(|l| l.district.clone());
        let outage = OUTAGE_KINDS.contains(&report.cue.kind.as_str());
        // The notice this report belongs to, if one is open.
        let existing = self
            .notices
            .get(&own_id)
            .or_else(|| {
                let id = self
                    .by_citizen_target
                    .get(&(contact.citizen.key.clone(), target.clone()))?;
                let n = self.notices.get(id)?;
                (now < after(n.opened.detected_at, policy.same_citizen_window)).then_some(n)
            })
            .or_else(|| {
                let district = district.as_ref().filter(|_| outage)?;
                let id = self
                    .by_outage
                    .get(&(report.cue.kind.clone(), district.clone()))?;
                let n = self.notices.get(id)?;
                (now < after(n.opened.detected_at, policy.outage_window)).then_some(n)
            });
        let change = match existing {
            Some(n) => {
                // The same words again within the gap add nothing (a flood of one text is
                // one notice); new words are written, up to the cap.
                let repeat = words == n.latest_excerpt
                    && now < after(n.last_change_at, policy.min_update_gap);
                let new_reporter = !n.reporters.contains(&contact.citizen.key);
                // Another reporter of an incident always counts; the same citizen's
                // repeats are thinned.
                if !new_reporter && (repeat || n.updates >= policy.max_updates) {
                    return None;
                }
                if new_reporter && n.updates >= policy.max_updates.saturating_mul(20) {
                    return None;
                }
                let notice = n.notice_id;
                return Some(NoticeEvent {
                    schema_version: SCHEMA_VERSION,
                    id: contract::event::new_event_id(),
                    notice_id: notice,
                    at: now,
                    by: "gateway".into(),
                    change: NoticeChange::Updated(NoticeUpdate {
                        contact_id: contact.id,
                        ticket_ref: contact.ticket_ref.clone(),
                        excerpt: words,
                        location: report
                            .location
                            .clone()
                            .filter(|_| n.opened.location.is_none()),
                        new_reporter: new_reporter.then(|| contact.citizen.key.clone()),
                    }),
                });
            }
            None => NoticeChange::Opened(Box::new(NoticeOpened {
                ticket_ref: contact.ticket_ref.clone(),
                target,
                kind: report.cue.kind.clone(),
                cue: report.cue.clone(),
                excerpt: words,
                channel: contact.channel,
                contact_id: contact.id,
                citizen_key: contact.citizen.key.clone(),
                reply_paths: contact.reply_paths.clone(),
                location: report.location.clone(),
                detected_at: now,
                incident_district: district.filter(|_| outage),
                restriction: contact.restriction.clone(),
            })),
        };
        Some(NoticeEvent {
            schema_version: SCHEMA_VERSION,
            id: derived_id(own_id, "opened", 0),
            notice_id: own_id,
            at: now,
            by: "gateway".into(),
            change,
        })
    }

    /// Takes an event (from the topic, or one this instance just recorded). Returns
    /// whether it changed the book: a redelivered event, or an update of a notice the
    /// book has not seen opened, does not.
    pub fn apply(&mut self, e: &NoticeEvent) -> bool {
        if !self.seen.insert(e.id) {
            return false;
        }
        if let NoticeChange::Opened(o) = &e.change {
            if self.notices.contains_key(&e.notice_id) {
                return false;
            }
            self.by_citizen_target
                .insert((o.citizen_key.clone(), o.target.clone()), e.notice_id);
            if let Some(d) = &o.incident_district {
                self.by_outage
                    .insert((o.kind.clone(), d.clone()), e.notice_id);
            }
            let state = NoticeState {
                notice_id: e.notice_id,
                opened: (**o).clone(),
                updates: 0,
                last_change_at: e.at,
                latest_excerpt: o.excerpt.clone(),
                reporters: BTreeSet::from([o.citizen_key.clone()]),
                tickets: BTreeSet::from([o.ticket_ref.clone()]),
                acknowledged: None,
                escalations: BTreeMap::new(),
                calls: BTreeMap::new(),
                alarm_at: None,
                feedback: Vec::new(),
            };
            self.notices.insert(e.notice_id, state);
            return true;
        }
        let Some(n) = self.notices.get_mut(&e.notice_id) else {
            return false;
        };
        match &e.change {
            NoticeChange::Opened(_) => return false,
            NoticeChange::Updated(u) => {
                n.updates += 1;
                n.last_change_at = e.at;
                n.latest_excerpt = u.excerpt.clone();
                n.tickets.insert(u.ticket_ref.clone());
                if let Some(r) = &u.new_reporter {
                    n.reporters.insert(r.clone());
                }
                if n.opened.location.is_none() {
                    n.opened.location = u.location.clone();
                }
            }
            NoticeChange::EscalationStarted { step, via } => {
                n.escalations.entry(*step).or_insert((e.at, via.clone()));
            }
            NoticeChange::EscalationCall { step, outcome } => {
                n.calls.insert(*step, outcome.clone());
            }
            NoticeChange::Acknowledged { via } => {
                if n.acknowledged.is_none() {
                    n.acknowledged = Some(Ack {
                        by: e.by.clone(),
                        via: via.clone(),
                        at: e.at,
                    });
                }
            }
            NoticeChange::Alarm => {
                n.alarm_at.get_or_insert(e.at);
            }
            NoticeChange::Feedback { status, note } => n.feedback.push(Feedback {
                status: *status,
                note: note.clone(),
                by: e.by.clone(),
                at: e.at,
            }),
        }
        true
    }

    /// What the clock owner must do now for notice `id`, in order.
    pub fn due(&self, id: Uuid, policy: &NoticePolicy, now: DateTime<Utc>) -> Vec<Due> {
        let Some(n) = self.notices.get(&id) else {
            return Vec::new();
        };
        if n.acknowledged.is_some() {
            return Vec::new();
        }
        let detected = n.opened.detected_at;
        let mut out: Vec<Due> = policy
            .schedule
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                let step = *i as u32 + 1;
                !n.escalations.contains_key(&step) && after(detected, **d) <= now
            })
            .map(|(i, _)| Due::Escalate(i as u32 + 1))
            .collect();
        if n.alarm_at.is_none() && after(detected, policy.alarm_after) <= now {
            out.push(Due::Alarm);
        }
        out
    }

    /// When notice `id` next needs its owner (`None`: acknowledged, or nothing left).
    pub fn next_due(&self, id: Uuid, policy: &NoticePolicy) -> Option<DateTime<Utc>> {
        let n = self.notices.get(&id)?;
        if n.acknowledged.is_some() {
            return None;
        }
        let detected = n.opened.detected_at;
        let steps = policy
            .schedule
            .iter()
            .enumerate()
            .filter(|(i, _)| !n.escalations.contains_key(&(*i as u32 + 1)))
            .map(|(_, d)| after(detected, *d));
        let alarm = n
            .alarm_at
            .is_none()
            .then(|| after(detected, policy.alarm_after));
        steps.chain(alarm).min()
    }

    /// The escalation calls of notice `id` that were begun before `before` and have no
    /// outcome: their owner died mid-call, or its call outcome never came. The next
    /// owner places them again (a missed linkage call is worse than a second one).
    pub fn unfinished_calls(&self, id: Uuid, before: DateTime<Utc>) -> Vec<u32> {
        let Some(n) = self.notices.get(&id) else {
            return Vec::new();
        };
        if n.acknowledged.is_some() {
            return Vec::new();
        }
        n.escalations
            .iter()
            .filter(|(step, (at, via))| {
                via.contains(&EscalationVia::Call) && *at < before && !n.calls.contains_key(step)
            })
            .map(|(step, _)| *step)
            .collect()
    }

    /// Every notice still running a clock.
    pub fn unacknowledged(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.notices
            .values()
            .filter(|n| n.acknowledged.is_none())
            .map(|n| n.notice_id)
    }
}

/// A notice's id: derived from its ticket and target (two instances that see the same
/// ticket's cue make the same notice).
pub fn notice_id(ticket: &TicketRef, target: &str) -> Uuid {
    hashed(&[ticket.as_str().as_bytes(), b"\x00", target.as_bytes()])
}

/// The id of a step the clock owner takes (`escalation`, `alarm`...): the same whoever
/// writes it.
pub fn derived_id(notice: Uuid, what: &str, n: u32) -> Uuid {
    hashed(&[notice.as_bytes(), what.as_bytes(), &n.to_be_bytes()])
}

fn hashed(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A step the owner writes.
pub fn step_event(
    notice: Uuid,
    due: Due,
    via: Vec<EscalationVia>,
    now: DateTime<Utc>,
) -> NoticeEvent {
    let (id, change) = match due {
        Due::Escalate(step) => (
            derived_id(notice, "escalation", step),
            NoticeChange::EscalationStarted { step, via },
        ),
        Due::Alarm => (derived_id(notice, "alarm", 0), NoticeChange::Alarm),
    };
    NoticeEvent {
        schema_version: SCHEMA_VERSION,
        id,
        notice_id: notice,
        at: now,
        by: "gateway".into(),
        change,
    }
}

/// An acknowledgement event (from the feed, a call or the API).
pub fn ack_event(notice: Uuid, by: &str, via: &str, now: DateTime<Utc>) -> NoticeEvent {
    NoticeEvent {
        schema_version: SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        notice_id: notice,
        at: now,
        by: by.to_owned(),
        change: NoticeChange::Acknowledged {
            via: via.to_owned(),
        },
    }
}

/// The kind of emergency in Chinese, for texts and announcements to the linkage.
pub fn kind_zh(kind: &str) -> &str {
    match kind {
        "fire" => "火灾",
        "explosion" => "爆炸",
        "gas_leak" => "燃气泄漏",
        "injury" => "人员受伤",
        "drowning" => "溺水",
        "collapse" => "坍塌",
        "flooding" => "水浸",
        "trapped" => "人员被困",
        "violence" => "暴力事件",
        "disaster" => "灾害",
        "water_outage" => "区域停水",
        "power_outage" => "区域停电",
        "gas_outage" => "区域停气",
        "distress" => "紧急求助",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{ChannelKind, CitizenKeyer, Contact, ContactContent, Location, ReplyPath};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
            .expect("literal")
            .with_timezone(&Utc)
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    fn contact(number: &str, ticket: &str, text: &str) -> Contact {
        let citizen = CitizenKeyer::new(b"a-test-secret-of-enough-length")
            .phone(number)
            .expect("valid");
        Contact {
            schema_version: SCHEMA_VERSION,
            id: contract::event::new_event_id(),
            ticket_ref: TicketRef(ticket.into()),
            channel: ChannelKind::Sms,
            received_at: t0(),
            reply_paths: vec![ReplyPath::Sms {
                number: citizen.value.clone(),
            }],
            citizen,
            content: ContactContent::Text { text: text.into() },
            channel_ref: None,
            sequence: 1,
            rejected: None,
            restriction: None,
        }
    }

    /// Reports `text` through the real classifier and applies the event it makes.
    fn report(
        book: &mut NoticeBook,
        c: &Contact,
        district: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<NoticeEvent> {
        let text = match &c.content {
            ContactContent::Text { text } => text.clone(),
            _ => unreachable!("text contacts only"),
        };
        let cue = crate::Classifier::builtin()
            .emergency_cues(&text, crate::Medium::Typed)
            .into_iter()
            .next()
            .expect("an emergency sentence");
        let r = EmergencyReport {
            contact: c,
            cue: &cue,
            text: &text,
            location: district.map(|d| Location {
                text: d.into(),
                district: Some(d.into()),
            }),
        };
        let e = book.decide(&r, &NoticePolicy::default(), now)?;
        book.apply(&e);
        Some(e)
    }

    #[test]
    fn art15_a_cue_opens_a_notice_for_its_linkage_with_the_words() {
        let mut book = NoticeBook::new();
        let c = contact("13800001111", "ZH1", "我家楼下着火了，有人被困");
        let e = report(&mut book, &c, Some("香洲区"), t0()).expect("a notice");
        let NoticeChange::Opened(o) = &e.change else {
            panic!("opened: {e:?}")
        };
        assert_eq!((o.kind.as_str(), o.target.as_str()), ("fire", "119"));
        assert_eq!(o.excerpt, "我家楼下着火了，有人被困");
        assert_eq!(o.detected_at, t0());
        assert_eq!(e.notice_id, notice_id(&TicketRef("ZH1".into()), "119"));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn art15_later_contacts_update_one_notice_and_a_flood_is_thinned() {
        let mut book = NoticeBook::new();
        let first = contact("13800001111", "ZH1", "着火了");
        let opened = report(&mut book, &first, None, t0()).expect("opened");
        // The same ticket 20 s later: an update of the same notice.
        let again = contact("13800001111", "ZH1", "楼道里着火了，火越来越大");
        let up = report(&mut book, &again, None, t0() + secs(20)).expect("update");
        assert_eq!(up.notice_id, opened.notice_id);
        assert!(matches!(up.change, NoticeChange::Updated(_)));
        // A thousand SMS of one text in the next minute, a ticket each: the same words are
        // written at most once per 10 s.
        let mut written = 0;
        for i in 0..1000 {
            let c = contact("13800001111", &format!("ZH-sms-{i}"), "着火了着火了");
            if report(
                &mut book,
                &c,
                None,
                t0() + secs(21) + chrono::Duration::milliseconds(60 * i),
            )
            .is_some()
            {
                written += 1;
            }
        }
        assert_eq!(book.len(), 1, "one notice");
        assert!(written <= 7, "{written} updates in 60 s");
        // Another citizen's fire is its own notice.
        let other = contact("13800002222", "ZH2", "着火了");
        let e = report(&mut book, &other, None, t0() + secs(30)).expect("opened");
        assert_ne!(e.notice_id, opened.notice_id);
        // After the citizen window a new ticket of the first citizen opens a new one.
        let late = contact("13800001111", "ZH3", "又着火了");
        let e = report(&mut book, &late, None, t0() + secs(31 * 60)).expect("opened");
        assert!(matches!(e.change, NoticeChange::Opened(_)));
        assert_eq!(book.len(), 3);
    }

    #[test]
    fn art15_outage_reports_in_one_district_are_one_incident_with_a_reporter_count() {
        let mut book = NoticeBook::new();
        let mut ids = BTreeSet::new();
        for i in 0..12 {
            let c = contact(
                &format!("1380000{i:04}"),
                &format!("ZH-w{i}"),
                "我们小区停水了",
            );
            let e = report(&mut book, &c, Some("斗门区"), t0() + secs(60 * i)).expect("event");
            ids.insert(e.notice_id);
        }
        assert_eq!(ids.len(), 1, "one incident");
        let n = book.get(*ids.first().expect("one")).expect("known");
        assert_eq!(n.reporters.len(), 12);
        assert_eq!(n.opened.incident_district.as_deref(), Some("斗门区"));
        // Another district, or after the window, is another incident.
        let c = contact("13900000001", "ZH-x", "这一片都停水了");
        let e = report(&mut book, &c, Some("金湾区"), t0() + secs(600)).expect("event");
        assert!(matches!(e.change, NoticeChange::Opened(_)));
        let c = contact("13900000002", "ZH-y", "整个小区停水了");
        let e = report(&mut book, &c, Some("斗门区"), t0() + secs(61 * 60)).expect("event");
        assert!(matches!(e.change, NoticeChange::Opened(_)));
    }

    #[test]
    fn art15_escalation_schedule_and_alarm_stop_on_acknowledgement() {
        let policy = NoticePolicy::default();
        let mut book = NoticeBook::new();
        let c = contact("13800001111", "ZH1", "煤气泄漏了");
        let id = report(&mut book, &c, None, t0()).expect("opened").notice_id;
        assert_eq!(book.next_due(id, &policy), Some(t0() + secs(300)));
        assert!(book.due(id, &policy, t0() + secs(299)).is_empty());
        assert_eq!(book.due(id, &policy, t0() + secs(300)), [Due::Escalate(1)]);
        book.apply(&step_event(
            id,
            Due::Escalate(1),
            vec![EscalationVia::Call],
            t0() + secs(300),
        ));
        // Written twice (an owner that died after writing it): one step.
        assert!(!book.apply(&step_event(
            id,
            Due::Escalate(1),
            vec![EscalationVia::Call],
            t0() + secs(301)
        )));
        assert_eq!(book.next_due(id, &policy), Some(t0() + secs(600)));
        // An owner that was down catches up on every step due, then the alarm.
        assert_eq!(
            book.due(id, &policy, t0() + secs(1800)),
            [Due::Escalate(2), Due::Escalate(3), Due::Alarm]
        );
        book.apply(&ack_event(id, "op-119-1", "feed", t0() + secs(700)));
        assert!(book.due(id, &policy, t0() + secs(1800)).is_empty());
        assert_eq!(book.next_due(id, &policy), None);
        assert_eq!(
            book.get(id)
                .and_then(|n| n.acknowledged.clone())
                .map(|a| a.via),
            Some("feed".into())
        );
    }

    #[test]
    fn every_emergency_kind_has_a_chinese_name() {
        for kind in crate::Classifier::builtin().emergency_rules().kinds() {
            assert_ne!(kind_zh(kind), kind, "{kind} has no Chinese name");
        }
    }

    #[test]
    fn art15_a_call_begun_without_an_outcome_is_placed_again_later() {
        let mut book = NoticeBook::new();
        let c = contact("13800001111", "ZH1", "着火了");
        let id = report(&mut book, &c, None, t0()).expect("opened").notice_id;
        let at = t0() + secs(300);
        book.apply(&step_event(
            id,
            Due::Escalate(1),
            vec![EscalationVia::Call, EscalationVia::Sms],
            at,
        ));
        assert!(
            book.unfinished_calls(id, at).is_empty(),
            "not before its time"
        );
        assert_eq!(book.unfinished_calls(id, at + secs(90)), [1]);
        book.apply(&NoticeEvent {
            schema_version: SCHEMA_VERSION,
            id: derived_id(id, "call", 1),
            notice_id: id,
            at: at + secs(40),
            by: "call:119".into(),
            change: NoticeChange::EscalationCall {
                step: 1,
                outcome: "answered".into(),
            },
        });
        assert!(
            book.unfinished_calls(id, at + secs(90)).is_empty(),
            "it ended"
        );
        // An SMS-only step has no call to redo.
        book.apply(&step_event(
            id,
            Due::Escalate(2),
            vec![EscalationVia::Sms],
            at + secs(300),
        ));
        assert!(book.unfinished_calls(id, at + secs(900)).is_empty());
    }

    #[test]
    fn the_policy_keeps_every_step_inside_thirty_minutes() {
        assert_eq!(NoticePolicy::default().validate(), Ok(()));
        let p = NoticePolicy {
            schedule: vec![Duration::from_secs(600), Duration::from_secs(300)],
            ..NoticePolicy::default()
        };
        assert!(p.validate().is_err());
        let p = NoticePolicy {
            alarm_after: Duration::from_secs(31 * 60),
            ..NoticePolicy::default()
        };
        assert!(p.validate().is_err());
    }
}
