//! A ticket's life cycle as pure rules: which commands each role may give in each state,
//! and what they change (Arts. 7, 8, 10-13, 22). No I/O: the store loads a
//! [`Snapshot`], asks [`apply`], and writes the new snapshot with its event in one
//! transaction.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use contract::{Card, Outcome, TicketAction, TicketKind, TicketState};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::units::Units;

/// Working days to dispatch any ticket (Art. 8).
pub const DISPATCH_DAYS: u32 = 1;
/// Working days a unit has to confirm or ask to return a ticket (Art. 10).
pub const RETURN_DAYS: u32 = 2;

/// Working days to handle a ticket of `kind` (Art. 11): 2 for a consultation, 10 for
/// every other kind.
pub fn handling_days(kind: TicketKind) -> u32 {
    if kind == TicketKind::Consultation {
        2
    } else {
        10
    }
}

/// Beijing date of an instant (Art. 22 counts Beijing days).
pub fn beijing_date(t: DateTime<Utc>) -> NaiveDate {
    let tz = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!("valid offset"));
    t.with_timezone(&tz).date_naive()
}

/// Who gives a command, from their bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A hotline agent (the centre).
    Agent(String),
    /// A supervisor (the centre).
    Supervisor(String),
    /// A person of a handling unit.
    Unit {
        /// The unit's id.
        unit: String,
        /// The person.
        person: String,
    },
}

impl Role {
    /// The actor as events name it.
    pub fn actor(&self) -> String {
        match self {
            Role::Agent(id) => format!("agent:{id}"),
            Role::Supervisor(id) => format!("supervisor:{id}"),
            Role::Unit { unit, person } => format!("unit:{unit}:{person}"),
        }
    }

    /// The hotline centre (agents and supervisors).
    pub fn is_centre(&self) -> bool {
        matches!(self, Role::Agent(_) | Role::Supervisor(_))
    }

    /// Parses a token's subject: `agent:<id>`, `supervisor:<id>`, `unit:<unit>:<person>`.
    pub fn from_subject(subject: &str) -> Option<Role> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut parts = subject.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("agent"), Some(id), None, None) if ok(id) => Some(Role::Agent(id.into())),
            (Some("supervisor"), Some(id), None, None) if ok(id) => {
                Some(Role::Supervisor(id.into()))
            }
            (Some("unit"), Some(unit), Some(person), None) if ok(unit) && ok(person) => {
                Some(Role::Unit {
                    unit: unit.into(),
                    person: person.into(),
                })
            }
            _ => None,
        }
    }
}

/// The reasons Art. 7 gives for not accepting a matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonAcceptance {
    /// (1) In or due for litigation, arbitration, administrative ruling, discipline
    /// inspection, administrative review or information disclosure.
    LegalProcedure,
    /// (2) Already in the petition (信访) channel.
    Petition,
    /// (3) State secrets, trade secrets, personal privacy.
    Secrets,
    /// (4) Unlawful, malicious, harassing, or without real content.
    UnlawfulOrEmpty,
    /// (5) Being handled or handled already, raised again on the same facts and reasons.
    RepeatedAfterHandling,
    /// (6) Other matters excluded by law, or of the Party, congress, CPPCC, courts,
    /// procuratorates, press, democratic parties, army and armed police.
    OutsideRemit,
}

impl NonAcceptance {
    /// The article's wording, for the citizen's explanation.
    pub fn text(self) -> &'static str {
        match self {
            NonAcceptance::LegalProcedure => {
                "Art. 7(1): 已进入或须通过诉讼、仲裁、行政裁决、纪检监察、行政复议、政府信息公开等法定程序解决的事项"
            }
            NonAcceptance::Petition => "Art. 7(2): 已进入信访渠道的事项",
            NonAcceptance::Secrets => "Art. 7(3): 涉及国家机密、商业秘密、个人隐私的事项",
            NonAcceptance::UnlawfulOrEmpty => {
                "Art. 7(4): 违反法律法规规章、社会公序良俗以及恶意攻击、骚扰或无实质诉求内容的事项"
            }
            NonAcceptance::RepeatedAfterHandling => {
                "Art. 7(5): 正在办理或已办理完毕，仍以同一事实、同一理由重复反映的事项"
            }
            NonAcceptance::OutsideRemit => "Art. 7(6): 其他依法不予受理的事项",
        }
    }
}

/// A unit's reply (Art. 13): every part is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reply {
    /// When it was handled (办理时间).
    #[serde(default)]
    pub handled_at: String,
    /// What was done (办理经过).
    #[serde(default)]
    pub process: String,
    /// The result (办理结果).
    #[serde(default)]
    pub result: String,
    /// The legal or policy basis (法律政策依据).
    #[serde(default)]
    pub legal_basis: String,
}

/// An agent's corrections of what the gateway drafted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// The kind (Art. 8).
    #[serde(default)]
    pub kind: Option<TicketKind>,
    /// The summary.
    #[serde(default)]
    pub summary: Option<String>,
    /// The place.
    #[serde(default)]
    pub location: Option<String>,
    /// The district.
    #[serde(default)]
    pub district: Option<String>,
    /// What the citizen asks for.
    #[serde(default)]
    pub request: Option<String>,
}

/// What someone asks of a ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Confirm or correct the draft's fields.
    Edit(Edit),
    /// Answer a consultation at once (Art. 8).
    Answer(String),
    /// Do not accept (Art. 7).
    NotAccept(NonAcceptance, String),
    /// Dispatch to a lead unit and co-units (Arts. 8, 10).
    Dispatch {
        /// The lead unit.
        lead: String,
        /// The co-units.
        co_units: Vec<String>,
    },
    /// The lead unit confirms it (Art. 10).
    Accept,
    /// The lead unit asks to return it (Art. 10).
    Return {
        /// Why it is not the unit's (reasons and basis).
        reasons: String,
        /// The unit it should go to.
        suggested_unit: String,
    },
    /// The centre decides a return (Art. 10).
    DecideReturn {
        /// Agree (the ticket waits for a new dispatch) or refuse (the unit goes on).
        approve: bool,
        /// Why.
        note: String,
    },
    /// The lead unit asks for the one extension (Art. 12).
    Extend(String),
    /// The lead unit replies (Art. 13).
    Reply(Reply),
    /// The centre accepts the reply (closing the ticket) or sends it back (Art. 13).
    DecideReply {
        /// Accept or send back.
        accept: bool,
        /// Why (required to send back).
        note: String,
    },
    /// The centre sends a resolved ticket back to its lead unit to redo, at the
    /// citizen's request after a dissatisfied rating (Art. 17). The store checks the
    /// rating; the rules check the rest.
    Redo(String),
}

/// The fields of a ticket the rules read and write.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Where it is.
    pub state: TicketState,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Its kind.
    pub kind: TicketKind,
    /// Summary.
    pub summary: String,
    /// Place.
    pub location: Option<String>,
    /// District.
    pub district: Option<String>,
    /// What the citizen asks for.
    pub request: Option<String>,
    /// The lead unit.
    pub lead_unit: Option<String>,
    /// Co-units.
    pub co_units: Vec<String>,
    /// When the current lead unit received it.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When a unit first received it.
    pub first_dispatched_at: Option<DateTime<Utc>>,
    /// Dispatch is due by the end of this Beijing day (Art. 8).
    pub dispatch_due: Option<NaiveDate>,
    /// Handling is due by the end of this Beijing day (Arts. 11, 12).
    pub handling_due: Option<NaiveDate>,
    /// The working days the handling deadline was counted with.
    pub handling_days: Option<u32>,
    /// A due date crossed a year without its calendar.
    pub due_provisional: bool,
    /// The one extension was used (Art. 12).
    pub extended: bool,
    /// Returns refused and recorded against the unit (Art. 10).
    pub returns: u32,
    /// When the lead unit asked to return it (while the centre decides).
    pub return_requested_at: Option<DateTime<Utc>>,
    /// The warning shown (Art. 10).
    pub card: Card,
    /// Redone once already (Art. 17).
    pub redone: bool,
    /// The rating that counts (Arts. 16, 17).
    pub rating: Option<contract::Rating>,
}

/// A refused command: nothing changes (except, for a late return, the red card Art. 10
/// gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The problem type's last segment.
    pub code: &'static str,
    /// Why, for a person.
    pub detail: String,
    /// Art. 10: a late return earns a red card even though it is refused.
    pub red_card: bool,
}

fn refuse(status: u16, code: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        detail: detail.into(),
        red_card: false,
    }
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The ticket after it.
    pub after: Snapshot,
    /// What happened.
    pub action: TicketAction,
    /// The article.
    pub article: &'static str,
    /// Why, or what was said (reasons, the answer's summary).
    pub detail: Option<String>,
    /// A red card the same command earned (a late confirmation, Art. 10).
    pub red_card: bool,
    /// What to keep with the ticket's record under this name (the answer, the reply,
    /// the return request), as JSON.
    pub record: Option<(&'static str, serde_json::Value)>,
}

fn required(field: &str, value: &str) -> Result<(), Refusal> {
    if value.trim().is_empty() {
        Err(refuse(
            422,
            "field-required",
            format!("`{field}` is required"),
        ))
    } else if value.chars().count() > 4000 {
        Err(refuse(
            422,
            "field-too-long",
            format!("`{field}` is longer than 4,000 characters"),
        ))
    } else {
        Ok(())
    }
}

fn centre_only(role: &Role) -> Result<(), Refusal> {
    if role.is_centre() {
        Ok(())
    } else {
        Err(refuse(
            403,
            "centre-only",
            "only the hotline centre (agents, supervisors) may do this",
        ))
    }
}

fn lead_only(role: &Role, t: &Snapshot) -> Result<(), Refusal> {
    match role {
        Role::Unit { unit, .. } if t.lead_unit.as_deref() == Some(unit.as_str()) => Ok(()),
        Role::Unit { .. } => Err(refuse(
            403,
            "not-your-ticket",
            "only the lead unit the ticket is dispatched to may do this (Art. 10)",
        )),
        _ => Err(refuse(
            403,
            "unit-only",
            "only the lead handling unit may do this",
        )),
    }
}

fn in_state(t: &Snapshot, allowed: &[TicketState], what: &str) -> Result<(), Refusal> {
    if allowed.contains(&t.state) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        Err(refuse(
            409,
            "wrong-state",
            format!(
                "cannot {what} a ticket that is {} (only when {})",
                t.state.as_str(),
                names.join(" or ")
            ),
        ))
    }
}

/// The last second of a Beijing day.
pub fn end_of_day(date: NaiveDate) -> DateTime<Utc> {
    end_of(date)
}

/// The end of a Beijing day, as the instant a deadline counted "after" it starts from.
fn end_of(date: NaiveDate) -> DateTime<Utc> {
    let tz = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!("valid offset"));
    date.and_hms_opt(23, 59, 59)
        .and_then(|t| t.and_local_timezone(tz).single())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Working days after `from` up to and including `to`.
fn working_days_between(calendar: &Calendar, from: NaiveDate, to: NaiveDate) -> u32 {
    let mut n = 0;
    let mut d = from;
    while d < to {
        d = d.succ_opt().unwrap_or(to);
        if calendar.day(d).working {
            n += 1;
        }
    }
    n
}

/// Applies `command` by `role` at `now` to a ticket, or says why not.
pub fn apply(
    t: &Snapshot,
    role: &Role,
    command: &Command,
    now: DateTime<Utc>,
    calendar: &Calendar,
    units: &Units,
) -> Result<Transition, Refusal> {
    let today = beijing_date(now);
    let mut after = t.clone();
    let done = |after: Snapshot, action, article, detail: Option<String>| Transition {
        after,
        action,
        article,
        detail,
        red_card: false,
        record: None,
    };
    match command {
        Command::Edit(e) => {
            centre_only(role)?;
            in_state(t, &[TicketState::Registered], "edit")?;
            if *e == Edit::default() {
                return Err(refuse(422, "nothing-to-edit", "name at least one field"));
            }
            if e.kind == Some(TicketKind::Unknown) {
                return Err(refuse(
                    422,
                    "kind-unknown",
                    "an agent confirms a kind (Art. 8); `unknown` is the gateway's",
                ));
            }
            if let Some(k) = e.kind {
                after.kind = k;
            }
            if let Some(s) = &e.summary {
                required("summary", s)?;
                after.summary = s.trim().to_owned();
            }
            for (name, v, slot) in [
                ("location", &e.location, &mut after.location),
                ("district", &e.district, &mut after.district),
                ("request", &e.request, &mut after.request),
            ] {
                if let Some(v) = v {
                    required(name, v)?;
                    *slot = Some(v.trim().to_owned());
                }
            }
            Ok(done(after, TicketAction::Edited, "Art. 9", None))
        }
        Command::Answer(answer) => {
            centre_only(role)?;
            in_state(t, &[TicketState::Registered], "answer")?;
            if t.kind != TicketKind::Consultation {
                return Err(refuse(
                    422,
                    "not-a-consultation",
                    "only a consultation is answered at once (Art. 8); confirm the kind first",
                ));
            }
            required("answer", answer)?;
            after.state = TicketState::Closed;
            after.outcome = Some(Outcome::Answered);
            after.card = Card::None;
            let mut tr = done(after, TicketAction::Answered, "Art. 8", None);
            tr.record = Some(("answer", serde_json::json!({ "text": answer.trim() })));
            Ok(tr)
        }
        Command::NotAccept(reason, note) => {
            centre_only(role)?;
            in_state(t, &[TicketState::Registered], "refuse to accept")?;
            required("note", note)?;
            after.state = TicketState::Closed;
            after.outcome = Some(Outcome::NotAccepted);
            after.card = Card::None;
            let mut tr = done(
                after,
                TicketAction::NotAccepted,
                "Art. 7",
                Some(reason.text().to_owned()),
            );
            tr.record = Some((
                "not_accepted",
                serde_json::json!({ "reason": reason, "note": note.trim() }),
            ));
            Ok(tr)
        }
        Command::Dispatch { lead, co_units } => {
            centre_only(role)?;
            in_state(t, &[TicketState::Registered], "dispatch")?;
            if t.kind == TicketKind::Unknown {
                return Err(refuse(
                    422,
                    "kind-unconfirmed",
                    "confirm the ticket's kind before dispatch: it sets the deadline (Art. 11)",
                ));
            }
            if units.get(lead).is_none() {
                return Err(refuse(
                    422,
                    "unknown-unit",
                    format!("no handling unit {lead:?}"),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for c in co_units {
                if units.get(c).is_none() {
                    return Err(refuse(
                        422,
                        "unknown-unit",
                        format!("no handling unit {c:?}"),
                    ));
                }
                if c == lead || !seen.insert(c) {
                    return Err(refuse(
                        422,
                        "duplicate-unit",
                        format!("{c:?} is named twice (lead and co-units are distinct)"),
                    ));
                }
            }
            let days = handling_days(t.kind);
            let due = calendar.deadline(now, days);
            after.state = TicketState::Dispatched;
            after.lead_unit = Some(lead.clone());
            after.co_units = co_units.clone();
            after.dispatched_at = Some(now);
            after.first_dispatched_at = t.first_dispatched_at.or(Some(now));
            after.handling_due = Some(due.date);
            after.handling_days = Some(days);
            after.due_provisional = due.provisional;
            after.card = Card::None;
            let late = t.dispatch_due.is_some_and(|d| today > d);
            let detail =
                late.then(|| "dispatched after its 1-working-day deadline (Art. 8)".to_owned());
            Ok(done(after, TicketAction::Dispatched, "Art. 10", detail))
        }
        Command::Accept => {
            lead_only(role, t)?;
            in_state(t, &[TicketState::Dispatched], "confirm")?;
            after.state = TicketState::Handling;
            let window = t
                .dispatched_at
                .map(|at| calendar.deadline(at, RETURN_DAYS).date);
            let late = window.is_some_and(|w| today > w);
            if late {
                after.card = Card::Red;
            }
            let mut tr = done(
                after,
                TicketAction::Accepted,
                "Art. 10",
                late.then(|| "confirmed after 2 working days: red card (Art. 10)".to_owned()),
            );
            tr.red_card = late && t.card != Card::Red;
            Ok(tr)
        }
        Command::Return {
            reasons,
            suggested_unit,
        } => {
            lead_only(role, t)?;
            if t.state == TicketState::Handling {
                return Err(refuse(
                    409,
                    "already-confirmed",
                    "a ticket the unit has confirmed is not returned (Art. 10)",
                ));
            }
            in_state(t, &[TicketState::Dispatched], "return")?;
            required("reasons", reasons)?;
            if units.get(suggested_unit).is_none() {
                return Err(refuse(
                    422,
                    "unknown-unit",
                    format!("no handling unit {suggested_unit:?} to suggest"),
                ));
            }
            if t.lead_unit.as_deref() == Some(suggested_unit.as_str()) {
                return Err(refuse(
                    422,
                    "suggests-itself",
                    "suggest the unit the ticket belongs to, not your own (Art. 10)",
                ));
            }
            let window = t
                .dispatched_at
                .map(|at| calendar.deadline(at, RETURN_DAYS).date);
            if let Some(w) = window.filter(|w| today > *w) {
                return Err(Refusal {
                    status: 422,
                    code: "return-window-closed",
                    detail: format!(
                        "a return is asked within 2 working days of receipt (by {w}); later is refused with a red card (Art. 10)"
                    ),
                    red_card: t.card != Card::Red,
                });
            }
            after.state = TicketState::ReturnRequested;
            after.return_requested_at = Some(now);
            let mut tr = done(
                after,
                TicketAction::ReturnRequested,
                "Art. 10",
                Some(reasons.trim().to_owned()),
            );
            tr.record = Some((
                "return",
                serde_json::json!({ "reasons": reasons.trim(), "suggested_unit": suggested_unit }),
            ));
            Ok(tr)
        }
        Command::DecideReturn { approve, note } => {
            centre_only(role)?;
            in_state(t, &[TicketState::ReturnRequested], "decide a return of")?;
            required("note", note)?;
            if *approve {
                after.state = TicketState::Registered;
                after.return_requested_at = None;
                after.lead_unit = None;
                after.co_units.clear();
                after.dispatched_at = None;
                after.handling_due = None;
                after.handling_days = None;
                after.extended = false;
                after.card = Card::None;
                after.dispatch_due = Some(calendar.deadline(now, DISPATCH_DAYS).date);
                Ok(done(
                    after,
                    TicketAction::ReturnApproved,
                    "Art. 10",
                    Some(note.trim().to_owned()),
                ))
            } else {
                after.state = TicketState::Handling;
                after.returns += 1;
                after.return_requested_at = None;
                // Art. 10: the centre's review does not count against the unit: the
                // working days it took move the deadline by as many.
                let review = t
                    .return_requested_at
                    .map(|at| working_days_between(calendar, beijing_date(at), today))
                    .unwrap_or(0);
                if let (Some(due), true) = (t.handling_due, review > 0) {
                    let moved = calendar.deadline(end_of(due), review);
                    after.handling_due = Some(moved.date);
                    after.due_provisional |= moved.provisional;
                }
                Ok(done(
                    after,
                    TicketAction::ReturnRefused,
                    "Art. 10",
                    Some(note.trim().to_owned()),
                ))
            }
        }
        Command::Extend(reason) => {
            lead_only(role, t)?;
            in_state(
                t,
                &[TicketState::Dispatched, TicketState::Handling],
                "extend",
            )?;
            required("reason", reason)?;
            if t.redone {
                return Err(refuse(
                    409,
                    "redo-not-extended",
                    "a redo is not extended (Art. 17)",
                ));
            }
            if t.extended {
                return Err(refuse(
                    409,
                    "extension-used",
                    "a ticket is extended once at most (Art. 12)",
                ));
            }
            let (Some(due), Some(days)) = (t.handling_due, t.handling_days) else {
                return Err(refuse(
                    409,
                    "no-deadline",
                    "the ticket has no handling deadline",
                ));
            };
            if today > due {
                return Err(refuse(
                    422,
                    "extension-too-late",
                    format!("an extension is asked within the deadline (by {due}) (Art. 12)"),
                ));
            }
            let new_due = calendar.deadline(end_of(due), days);
            after.handling_due = Some(new_due.date);
            after.due_provisional = t.due_provisional || new_due.provisional;
            after.extended = true;
            if after.card == Card::Yellow {
                after.card = Card::None;
            }
            Ok(done(
                after,
                TicketAction::Extended,
                "Art. 12",
                Some(reason.trim().to_owned()),
            ))
        }
        Command::Reply(reply) => {
            lead_only(role, t)?;
            in_state(t, &[TicketState::Handling], "reply to")?;
            let missing: Vec<&str> = [
                ("handled_at", &reply.handled_at),
                ("process", &reply.process),
                ("result", &reply.result),
                ("legal_basis", &reply.legal_basis),
            ]
            .into_iter()
            .filter(|(_, v)| v.trim().is_empty())
            .map(|(k, _)| k)
            .collect();
            if !missing.is_empty() {
                return Err(refuse(
                    422,
                    "reply-incomplete",
                    format!(
                        "a reply lists time, process, result and legal basis (Art. 13); missing: {}",
                        missing.join(", ")
                    ),
                ));
            }
            for (k, v) in [
                ("handled_at", &reply.handled_at),
                ("process", &reply.process),
                ("result", &reply.result),
                ("legal_basis", &reply.legal_basis),
            ] {
                required(k, v)?;
            }
            after.state = TicketState::Replied;
            let mut tr = done(after, TicketAction::Replied, "Art. 13", None);
            tr.record = Some((
                "reply",
                serde_json::to_value(reply).unwrap_or(serde_json::Value::Null),
            ));
            Ok(tr)
        }
        Command::DecideReply { accept, note } => {
            centre_only(role)?;
            in_state(t, &[TicketState::Replied], "decide the reply of")?;
            if *accept {
                after.state = TicketState::Closed;
                after.outcome = Some(Outcome::Resolved);
                Ok(done(
                    after,
                    TicketAction::ReplyAccepted,
                    "Art. 13",
                    (!note.trim().is_empty()).then(|| note.trim().to_owned()),
                ))
            } else {
                required("note", note)?;
                after.state = TicketState::Handling;
                Ok(done(
                    after,
                    TicketAction::ReplySentBack,
                    "Art. 13",
                    Some(note.trim().to_owned()),
                ))
            }
        }
        Command::Redo(note) => {
            centre_only(role)?;
            required("note", note)?;
            if t.state != TicketState::Closed || t.outcome != Some(Outcome::Resolved) {
                return Err(refuse(
                    409,
                    "wrong-state",
                    "only a ticket closed on an accepted reply is redone (Art. 17)",
                ));
            }
            if t.redone {
                return Err(refuse(
                    409,
                    "redone-already",
                    "a ticket is redone once only (Art. 17)",
                ));
            }
            if t.rating.is_none_or(|r| r.satisfied()) {
                return Err(refuse(
                    409,
                    "not-dissatisfied",
                    "a redo follows a dissatisfied rating at the citizen's request (Art. 17)",
                ));
            }
            let days = redo_days(t.handling_days.unwrap_or_else(|| handling_days(t.kind)));
            let due = calendar.deadline(now, days);
            after.state = TicketState::Handling;
            after.outcome = None;
            after.dispatched_at = Some(now);
            after.handling_due = Some(due.date);
            after.handling_days = Some(days);
            after.due_provisional = due.provisional;
            after.card = Card::None;
            after.redone = true;
            Ok(done(
                after,
                TicketAction::RedoOrdered,
                "Art. 17",
                Some(format!("{} (redo within {days} working days)", note.trim())),
            ))
        }
    }
}

/// A redo's working days: half the original deadline (Art. 17), rounded up so a
/// consultation's 2 days give 1, never 0.
pub fn redo_days(original: u32) -> u32 {
    original.div_ceil(2).max(1)
}

/// The card a ticket shows on `today` (Art. 10): yellow on its due day, red once
/// overdue, never lowered by the passing of time. A unit's handling deadline counts
/// while a unit holds it (not while the centre reviews a reply); before dispatch, the
/// centre's own 1-working-day dispatch deadline (Art. 8) counts the same way.
pub fn card_on(t: &Snapshot, today: NaiveDate) -> Card {
    let due = match t.state {
        TicketState::Registered => t.dispatch_due,
        TicketState::Dispatched | TicketState::Handling => t.handling_due,
        // The centre's review of a return or a reply does not count against the unit
        // (Arts. 10, 13).
        TicketState::ReturnRequested | TicketState::Replied | TicketState::Closed => None,
    };
    let by_date = match due {
        Some(d) if today > d => Card::Red,
        Some(d) if today == d => Card::Yellow,
        _ => Card::None,
    };
    by_date.max(t.card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        // Beijing wall time, as the articles count.
        let tz = FixedOffset::east_opt(8 * 3600).expect("offset");
        tz.from_local_datetime(&s.parse().expect("a datetime"))
            .single()
            .expect("unambiguous")
            .with_timezone(&Utc)
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    fn agent() -> Role {
        Role::Agent("a1".into())
    }

    fn unit(u: &str) -> Role {
        Role::Unit {
            unit: u.into(),
            person: "p1".into(),
        }
    }

    fn registered(kind: TicketKind) -> Snapshot {
        Snapshot {
            state: TicketState::Registered,
            outcome: None,
            kind,
            summary: "路灯坏了".into(),
            location: Some("凤凰路".into()),
            district: Some("香洲区".into()),
            request: None,
            lead_unit: None,
            co_units: vec![],
            dispatched_at: None,
            first_dispatched_at: None,
            dispatch_due: Some(d("2026-12-01")),
            handling_due: None,
            handling_days: None,
            due_provisional: false,
            extended: false,
            returns: 0,
            return_requested_at: None,
            card: Card::None,
            redone: false,
            rating: None,
        }
    }

    fn run(t: &Snapshot, role: &Role, c: Command, now: &str) -> Result<Transition, Refusal> {
        apply(
            t,
            role,
            &c,
            at(now),
            &Calendar::builtin(),
            &Units::builtin(),
        )
    }

    fn dispatched(kind: TicketKind, when: &str) -> Snapshot {
        run(
            &registered(kind),
            &agent(),
            Command::Dispatch {
                lead: "xiangzhou".into(),
                co_units: vec!["water-group".into()],
            },
            when,
        )
        .expect("dispatch")
        .after
    }

    #[test]
    fn art11_a_complaint_is_due_in_10_working_days_a_consultation_in_2() {
        // Monday 30 Nov 2026, 10:00: day 1 is Tue 1 Dec.
        let c = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        assert_eq!(c.state, TicketState::Dispatched);
        assert_eq!(c.handling_due, Some(d("2026-12-14")));
        let q = dispatched(TicketKind::Consultation, "2026-11-30T10:00:00");
        assert_eq!(q.handling_due, Some(d("2026-12-02")));
    }

    #[test]
    fn art11_dispatch_needs_a_confirmed_kind_and_known_units() {
        let r = run(
            &registered(TicketKind::Unknown),
            &agent(),
            Command::Dispatch {
                lead: "xiangzhou".into(),
                co_units: vec![],
            },
            "2026-11-30T10:00:00",
        )
        .expect_err("kind unknown");
        assert_eq!(r.code, "kind-unconfirmed");
        let r = run(
            &registered(TicketKind::Help),
            &agent(),
            Command::Dispatch {
                lead: "nowhere".into(),
                co_units: vec![],
            },
            "2026-11-30T10:00:00",
        )
        .expect_err("unknown unit");
        assert_eq!(r.code, "unknown-unit");
        let r = run(
            &registered(TicketKind::Help),
            &agent(),
            Command::Dispatch {
                lead: "xiangzhou".into(),
                co_units: vec!["xiangzhou".into()],
            },
            "2026-11-30T10:00:00",
        )
        .expect_err("lead twice");
        assert_eq!(r.code, "duplicate-unit");
    }

    #[test]
    fn art10_the_lead_unit_confirms_within_2_working_days() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let ok = run(
            &t,
            &unit("xiangzhou"),
            Command::Accept,
            "2026-12-02T17:00:00",
        )
        .expect("in time");
        assert_eq!(ok.after.state, TicketState::Handling);
        assert!(!ok.red_card);
        assert_eq!(ok.after.card, Card::None);
    }

    #[test]
    fn art10_a_late_confirmation_earns_a_red_card() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let late = run(
            &t,
            &unit("xiangzhou"),
            Command::Accept,
            "2026-12-03T09:00:00",
        )
        .expect("accepted, late");
        assert_eq!(late.after.state, TicketState::Handling);
        assert!(late.red_card);
        assert_eq!(late.after.card, Card::Red);
    }

    #[test]
    fn art10_a_return_within_2_working_days_waits_for_the_centre() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let r = run(
            &t,
            &unit("xiangzhou"),
            Command::Return {
                reasons: "供水管网归水务集团".into(),
                suggested_unit: "doumen".into(),
            },
            "2026-12-02T10:00:00",
        )
        .expect("in time");
        assert_eq!(r.after.state, TicketState::ReturnRequested);
        // Approved: back to the centre, a new dispatch deadline, the clock restarts.
        let ok = run(
            &r.after,
            &agent(),
            Command::DecideReturn {
                approve: true,
                note: "同意".into(),
            },
            "2026-12-02T15:00:00",
        )
        .expect("approve");
        assert_eq!(ok.after.state, TicketState::Registered);
        assert_eq!(ok.after.lead_unit, None);
        assert_eq!(ok.after.handling_due, None);
        assert_eq!(ok.after.dispatch_due, Some(d("2026-12-03")));
        let again = run(
            &ok.after,
            &agent(),
            Command::Dispatch {
                lead: "doumen".into(),
                co_units: vec![],
            },
            "2026-12-03T09:00:00",
        )
        .expect("redispatch");
        assert_eq!(again.after.handling_due, Some(d("2026-12-17")), "recounted");
        assert_eq!(
            again.after.first_dispatched_at, t.first_dispatched_at,
            "the first receipt is kept"
        );
    }

    #[test]
    fn art10_a_refused_return_counts_against_the_unit_and_keeps_the_deadline() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let r = run(
            &t,
            &unit("xiangzhou"),
            Command::Return {
                reasons: "不是我们的".into(),
                suggested_unit: "doumen".into(),
            },
            "2026-12-01T10:00:00",
        )
        .expect("asked");
        let no = run(
            &r.after,
            &Role::Supervisor("s1".into()),
            Command::DecideReturn {
                approve: false,
                note: "属于贵单位职责".into(),
            },
            "2026-12-01T15:00:00",
        )
        .expect("refuse");
        assert_eq!(no.after.state, TicketState::Handling);
        assert_eq!(no.after.returns, 1);
        assert_eq!(no.after.handling_due, t.handling_due);
        assert_eq!(no.after.lead_unit.as_deref(), Some("xiangzhou"));
    }

    #[test]
    fn art10_the_centres_review_of_a_return_is_not_counted() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        assert_eq!(t.handling_due, Some(d("2026-12-14")));
        let r = run(
            &t,
            &unit("xiangzhou"),
            Command::Return {
                reasons: "不是我们的".into(),
                suggested_unit: "doumen".into(),
            },
            "2026-12-01T10:00:00",
        )
        .expect("asked");
        // No card while the centre reviews, even past the date.
        assert_eq!(card_on(&r.after, d("2026-12-20")), Card::None);
        // Refused three working days later (Wed 2, Thu 3, Fri 4 December).
        let no = run(
            &r.after,
            &agent(),
            Command::DecideReturn {
                approve: false,
                note: "属于贵单位职责".into(),
            },
            "2026-12-04T16:00:00",
        )
        .expect("refused");
        assert_eq!(
            no.after.handling_due,
            Some(d("2026-12-17")),
            "moved by 3 working days"
        );
        assert_eq!(no.after.return_requested_at, None);
    }

    #[test]
    fn art10_a_late_return_is_refused_with_a_red_card() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let r = run(
            &t,
            &unit("xiangzhou"),
            Command::Return {
                reasons: "不是我们的".into(),
                suggested_unit: "doumen".into(),
            },
            "2026-12-03T10:00:00",
        )
        .expect_err("late");
        assert_eq!(r.code, "return-window-closed");
        assert!(r.red_card);
    }

    #[test]
    fn art10_a_confirmed_ticket_is_not_returned() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let h = run(
            &t,
            &unit("xiangzhou"),
            Command::Accept,
            "2026-12-01T10:00:00",
        )
        .expect("accept")
        .after;
        let r = run(
            &h,
            &unit("xiangzhou"),
            Command::Return {
                reasons: "x".into(),
                suggested_unit: "doumen".into(),
            },
            "2026-12-01T11:00:00",
        )
        .expect_err("confirmed");
        assert_eq!(r.code, "already-confirmed");
    }

    #[test]
    fn art10_only_the_lead_unit_acts_and_only_the_centre_dispatches() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let r = run(&t, &unit("doumen"), Command::Accept, "2026-12-01T10:00:00")
            .expect_err("another unit");
        assert_eq!((r.status, r.code), (403, "not-your-ticket"));
        let r = run(
            &registered(TicketKind::Help),
            &unit("xiangzhou"),
            Command::Dispatch {
                lead: "xiangzhou".into(),
                co_units: vec![],
            },
            "2026-11-30T10:00:00",
        )
        .expect_err("a unit dispatching");
        assert_eq!((r.status, r.code), (403, "centre-only"));
        let r = run(&t, &agent(), Command::Accept, "2026-12-01T10:00:00").expect_err("agent");
        assert_eq!(r.status, 403);
    }

    #[test]
    fn art10_yellow_on_the_due_day_red_once_overdue() {
        let t = dispatched(TicketKind::Consultation, "2026-11-30T10:00:00");
        assert_eq!(t.handling_due, Some(d("2026-12-02")));
        assert_eq!(card_on(&t, d("2026-12-01")), Card::None);
        assert_eq!(card_on(&t, d("2026-12-02")), Card::Yellow);
        assert_eq!(card_on(&t, d("2026-12-03")), Card::Red);
        let mut red = t.clone();
        red.card = Card::Red;
        assert_eq!(card_on(&red, d("2026-12-01")), Card::Red, "never lowered");
        let mut replied = t.clone();
        replied.state = TicketState::Replied;
        assert_eq!(
            card_on(&replied, d("2026-12-05")),
            Card::None,
            "the unit is done"
        );
        // Before dispatch, the 1-working-day dispatch deadline (Art. 8).
        let r = registered(TicketKind::Help);
        assert_eq!(card_on(&r, d("2026-12-01")), Card::Yellow);
        assert_eq!(card_on(&r, d("2026-12-02")), Card::Red);
    }

    #[test]
    fn art12_one_extension_of_the_same_length_inside_the_deadline() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let e = run(
            &t,
            &unit("xiangzhou"),
            Command::Extend("需要现场勘查".into()),
            "2026-12-14T16:00:00",
        )
        .expect("on the due day");
        // 10 more working days after 14 Dec.
        assert_eq!(e.after.handling_due, Some(d("2026-12-28")));
        assert!(e.after.extended);
        let again = run(
            &e.after,
            &unit("xiangzhou"),
            Command::Extend("还要".into()),
            "2026-12-15T10:00:00",
        )
        .expect_err("twice");
        assert_eq!(again.code, "extension-used");
    }

    #[test]
    fn art12_an_extension_after_the_deadline_is_refused() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let r = run(
            &t,
            &unit("xiangzhou"),
            Command::Extend("来不及".into()),
            "2026-12-15T09:00:00",
        )
        .expect_err("late");
        assert_eq!(r.code, "extension-too-late");
    }

    #[test]
    fn art12_an_extension_resets_a_yellow_card_but_not_a_red_one() {
        let mut t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        t.card = Card::Yellow;
        let e = run(
            &t,
            &unit("xiangzhou"),
            Command::Extend("需要协调".into()),
            "2026-12-14T10:00:00",
        )
        .expect("extend");
        assert_eq!(e.after.card, Card::None);
        t.card = Card::Red;
        let e = run(
            &t,
            &unit("xiangzhou"),
            Command::Extend("需要协调".into()),
            "2026-12-14T10:00:00",
        )
        .expect("extend");
        assert_eq!(e.after.card, Card::Red);
    }

    #[test]
    fn art13_a_reply_needs_time_process_result_and_basis() {
        let t = dispatched(TicketKind::Complaint, "2026-11-30T10:00:00");
        let h = run(
            &t,
            &unit("xiangzhou"),
            Command::Accept,
            "2026-12-01T10:00:00",
        )
        .expect("accept")
        .after;
        let r = run(
            &h,
            &unit("xiangzhou"),
            Command::Reply(Reply {
                handled_at: "2026-12-03".into(),
                process: "现场查看".into(),
                result: "已修复".into(),
                legal_basis: "".into(),
            }),
            "2026-12-03T10:00:00",
        )
        .expect_err("no basis");
        assert_eq!(r.code, "reply-incomplete");
        assert!(r.detail.contains("legal_basis"));
        let ok = run(
            &h,
            &unit("xiangzhou"),
            Command::Reply(Reply {
                handled_at: "2026-12-03".into(),
                process: "现场查看".into(),
                result: "已修复".into(),
                legal_basis: "《珠海市城市照明管理办法》".into(),
            }),
            "2026-12-03T10:00:00",
        )
        .expect("complete");
        assert_eq!(ok.after.state, TicketState::Replied);
        let back = run(
            &ok.after,
            &agent(),
            Command::DecideReply {
                accept: false,
                note: "未逐条回应".into(),
            },
            "2026-12-03T11:00:00",
        )
        .expect("sent back");
        assert_eq!(back.after.state, TicketState::Handling);
        assert_eq!(
            back.after.handling_due, t.handling_due,
            "from the first receipt"
        );
        let closed = run(
            &ok.after,
            &agent(),
            Command::DecideReply {
                accept: true,
                note: String::new(),
            },
            "2026-12-03T11:00:00",
        )
        .expect("accepted");
        assert_eq!(closed.after.state, TicketState::Closed);
        assert_eq!(closed.after.outcome, Some(Outcome::Resolved));
    }

    #[test]
    fn art8_a_consultation_is_answered_at_once_others_are_not() {
        let q = run(
            &registered(TicketKind::Consultation),
            &agent(),
            Command::Answer("社保卡可在任一网点补办".into()),
            "2026-11-30T10:00:00",
        )
        .expect("answered");
        assert_eq!(q.after.outcome, Some(Outcome::Answered));
        let r = run(
            &registered(TicketKind::Complaint),
            &agent(),
            Command::Answer("x".into()),
            "2026-11-30T10:00:00",
        )
        .expect_err("a complaint");
        assert_eq!(r.code, "not-a-consultation");
    }

    #[test]
    fn art7_not_accepted_closes_with_the_articles_reason() {
        let r = run(
            &registered(TicketKind::Complaint),
            &agent(),
            Command::NotAccept(NonAcceptance::Petition, "已走信访".into()),
            "2026-11-30T10:00:00",
        )
        .expect("closed");
        assert_eq!(r.after.outcome, Some(Outcome::NotAccepted));
        assert!(r.detail.as_deref().is_some_and(|d| d.contains("Art. 7(2)")));
    }

    #[test]
    fn refused_transitions_are_refused() {
        let closed = {
            let mut t = registered(TicketKind::Help);
            t.state = TicketState::Closed;
            t
        };
        for c in [
            Command::Edit(Edit {
                summary: Some("x".into()),
                ..Edit::default()
            }),
            Command::Dispatch {
                lead: "xiangzhou".into(),
                co_units: vec![],
            },
            Command::Answer("x".into()),
            Command::NotAccept(NonAcceptance::Secrets, "x".into()),
            Command::DecideReturn {
                approve: true,
                note: "x".into(),
            },
            Command::DecideReply {
                accept: true,
                note: "x".into(),
            },
        ] {
            let r = run(&closed, &agent(), c.clone(), "2026-11-30T10:00:00")
                .expect_err("closed tickets do not move");
            assert_eq!((r.status, r.code), (409, "wrong-state"), "{c:?}");
        }
        let reg = registered(TicketKind::Help);
        let r = run(
            &reg,
            &agent(),
            Command::Edit(Edit::default()),
            "2026-11-30T10:00:00",
        )
        .expect_err("empty edit");
        assert_eq!(r.code, "nothing-to-edit");
        let r = run(
            &reg,
            &agent(),
            Command::Edit(Edit {
                kind: Some(TicketKind::Unknown),
                ..Edit::default()
            }),
            "2026-11-30T10:00:00",
        )
        .expect_err("unknown kind");
        assert_eq!(r.code, "kind-unknown");
    }

    #[test]
    fn roles_parse_from_token_subjects() {
        assert_eq!(
            Role::from_subject("agent:a1"),
            Some(Role::Agent("a1".into()))
        );
        assert_eq!(
            Role::from_subject("unit:xiangzhou:p9"),
            Some(Role::Unit {
                unit: "xiangzhou".into(),
                person: "p9".into()
            })
        );
        for bad in [
            "agent",
            "unit:x",
            "admin:x",
            "agent:a:b",
            "agent:",
            "unit:x y:p",
        ] {
            assert_eq!(Role::from_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn art17_redo_half_the_deadline_no_extension_once_only() {
        assert_eq!(redo_days(10), 5);
        assert_eq!(redo_days(2), 1);
        assert_eq!(redo_days(5), 3);
        let mut t = dispatched(TicketKind::Complaint, "2026-12-01T09:00:00");
        t.state = TicketState::Closed;
        t.outcome = Some(Outcome::Resolved);
        // Only after a dissatisfied rating.
        for rating in [None, Some(contract::Rating::BasicallySatisfied)] {
            t.rating = rating;
            assert_eq!(
                run(
                    &t,
                    &agent(),
                    Command::Redo("重办".into()),
                    "2026-12-14T09:00:00"
                )
                .expect_err("not dissatisfied")
                .code,
                "not-dissatisfied"
            );
        }
        t.rating = Some(contract::Rating::Dissatisfied);
        let unit = Role::Unit {
            unit: t.lead_unit.clone().expect("dispatched"),
            person: "u1".into(),
        };
        // Only the centre orders it, with a note.
        assert_eq!(
            run(
                &t,
                &unit,
                Command::Redo("群众要求重办".into()),
                "2026-12-14T09:00:00"
            )
            .expect_err("units do not")
            .status,
            403
        );
        assert_eq!(
            run(
                &t,
                &agent(),
                Command::Redo(" ".into()),
                "2026-12-14T09:00:00"
            )
            .expect_err("note")
            .code,
            "field-required"
        );
        // Monday 14 December: 5 working days counted from the next working day.
        let r = run(
            &t,
            &agent(),
            Command::Redo("群众要求重办".into()),
            "2026-12-14T09:00:00",
        )
        .expect("redo");
        assert_eq!(r.action, TicketAction::RedoOrdered);
        assert_eq!(r.article, "Art. 17");
        assert_eq!(r.after.state, TicketState::Handling);
        assert_eq!(r.after.outcome, None);
        assert_eq!(r.after.handling_days, Some(5));
        assert_eq!(r.after.handling_due, Some(d("2026-12-21")));
        assert!(r.after.redone);
        // No extension of a redo.
        let e = run(
            &r.after,
            &unit,
            Command::Extend("需要协调".into()),
            "2026-12-15T09:00:00",
        )
        .expect_err("no extension");
        assert_eq!(e.code, "redo-not-extended");
        // Once only.
        let mut again = r.after.clone();
        again.state = TicketState::Closed;
        again.outcome = Some(Outcome::Resolved);
        assert_eq!(
            run(
                &again,
                &agent(),
                Command::Redo("再次重办".into()),
                "2026-12-22T09:00:00"
            )
            .expect_err("once")
            .code,
            "redone-already"
        );
        // Only a resolved ticket.
        let mut answered = t.clone();
        answered.outcome = Some(Outcome::Answered);
        assert_eq!(
            run(
                &answered,
                &agent(),
                Command::Redo("重办".into()),
                "2026-12-14T09:00:00"
            )
            .expect_err("resolved only")
            .status,
            409
        );
    }
}
