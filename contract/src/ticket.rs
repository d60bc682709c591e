//! A ticket's life after intake, as the ticket service publishes it: one
//! [`TicketStatus`] event per transition on the status topic
//! (`hotline.ticket-status.v1`), so the gateway, the agent screen and dashboards can
//! follow a ticket without asking the service.
//!
//! The states, actions and their articles are documented in `docs/tickets.md`.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{TicketKind, TicketRef};

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Registered from a draft; an agent confirms it and dispatches it within 1 working
    /// day (Art. 8), answers it at once (Art. 8) or does not accept it (Art. 7).
    Registered,
    /// Sent to a lead unit (and co-units), which confirms or asks to return it within 2
    /// working days (Art. 10).
    Dispatched,
    /// The lead unit confirmed it and is handling it (Arts. 10, 11).
    Handling,
    /// The lead unit asked to return it (Art. 10); the centre decides.
    ReturnRequested,
    /// The lead unit replied (Art. 13); the centre checks the reply.
    Replied,
    /// Closed: see the ticket's [`Outcome`].
    Closed,
}

impl TicketState {
    /// The name used in the database, the API and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Registered => "registered",
            TicketState::Dispatched => "dispatched",
            TicketState::Handling => "handling",
            TicketState::ReturnRequested => "return_requested",
            TicketState::Replied => "replied",
            TicketState::Closed => "closed",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [
            TicketState::Registered,
            TicketState::Dispatched,
            TicketState::Handling,
            TicketState::ReturnRequested,
            TicketState::Replied,
            TicketState::Closed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether a unit holds the ticket (its handling clock runs).
    pub fn with_unit(self) -> bool {
        matches!(
            self,
            TicketState::Dispatched
                | TicketState::Handling
                | TicketState::ReturnRequested
                | TicketState::Replied
        )
    }
}

/// How a closed ticket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A consultation answered at once from the knowledge base (Art. 8).
    Answered,
    /// Not accepted (Art. 7); the reason is in the event's `detail`.
    NotAccepted,
    /// The unit's reply was accepted (Art. 13).
    Resolved,
    /// Folded into another ticket as an urge when an agent overruled (Art. 14).
    Merged,
}

impl Outcome {
    /// The name used in the database, the API and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NotAccepted => "not_accepted",
            Outcome::Resolved => "resolved",
            Outcome::Merged => "merged",
        }
    }

    /// The outcome named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Outcome::Answered,
            Outcome::NotAccepted,
            Outcome::Resolved,
            Outcome::Merged,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// The warning a ticket shows (Art. 10): yellow on the due day, red once overdue (and
/// red for a unit that confirmed or asked to return it after 2 working days).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Card {
    /// No warning.
    None,
    /// 黄牌: the due day is today.
    Yellow,
    /// 红牌: overdue, or a late confirmation or return.
    Red,
}

impl Card {
    /// The name used in the database, the API and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            Card::None => "none",
            Card::Yellow => "yellow",
            Card::Red => "red",
        }
    }

    /// The card named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Card::None, Card::Yellow, Card::Red]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// What happened to the ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketAction {
    /// Made from a draft (or, by an agent's overrule, from a draft first taken as an
    /// urge).
    Registered,
    /// A supplementary ticket (追加工单) made from a repeat contact with new content
    /// while the original is within its deadline (Art. 14).
    Supplemented,
    /// A repeat contact that only chased the ticket (催办): its urge count went up, no
    /// new dispatch (Art. 14).
    Urged,
    /// An agent confirmed or edited kind, summary, location or request.
    Edited,
    /// A consultation answered at once (Art. 8).
    Answered,
    /// Not accepted (Art. 7).
    NotAccepted,
    /// Dispatched to a lead unit and co-units (Arts. 8, 10).
    Dispatched,
    /// The lead unit confirmed it (Art. 10).
    Accepted,
    /// The lead unit asked to return it (Art. 10).
    ReturnRequested,
    /// The centre agreed to the return; the ticket waits for a new dispatch, whose
    /// deadline starts afresh (Art. 10).
    ReturnApproved,
    /// The centre refused the return; the unit goes on, the deadline counts from the
    /// first receipt, and a return is recorded against the unit (Art. 10).
    ReturnRefused,
    /// One extension of the same length granted (Art. 12).
    Extended,
    /// The unit replied with time, process, result and legal basis (Art. 13).
    Replied,
    /// The centre accepted the reply; the ticket is closed (Art. 13).
    ReplyAccepted,
    /// The centre sent the reply back; the deadline still counts from the first receipt
    /// (Art. 13).
    ReplySentBack,
    /// The due day came: yellow card (Art. 10).
    YellowCard,
    /// Overdue, or a late confirmation or return: red card (Art. 10).
    RedCard,
    /// An agent overruled a repeat-contact decision (Art. 14).
    RepeatOverruled,
    /// A provisional deadline was recomputed once its year's calendar was added (Art. 22).
    DeadlineRecomputed,
    /// The result SMS was asked for (Art. 13).
    ResultNotified,
    /// The satisfaction survey was sent (Art. 16).
    SurveySent,
    /// The citizen's rating was recorded, or the 24-hour default applied (Arts. 16, 17).
    Rated,
    /// A dissatisfied rating opened a revisit (Art. 17).
    RevisitOpened,
    /// A revisit attempt failed (no answer, busy, no digit).
    RevisitAttemptFailed,
    /// The revisit ended: rated again, or after three failed attempts (Art. 17).
    RevisitEnded,
    /// The centre sent the ticket back to the unit to redo it: half the original
    /// deadline, no extension, once only (Art. 17).
    RedoOrdered,
    /// The unit appealed a dissatisfied rating with evidence (Art. 17).
    AppealFiled,
    /// A supervisor decided the appeal (Art. 17).
    AppealDecided,
}

/// One transition of a ticket, on the status topic. Keyed by the citizen key (like the
/// gateway's events, so one citizen's tickets stay in order); never carries the
/// citizen's identity (Art. 21).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketStatus {
    /// Always [`crate::SCHEMA_VERSION`] for this type.
    pub schema_version: u32,
    /// Unique id of this event (UUIDv7, derived where a clock fires on several instances
    /// so they agree); also the CloudEvents `id`.
    pub id: Uuid,
    /// The ticket's reference (what the citizen was given).
    pub ticket_ref: TicketRef,
    /// The citizen's pseudonymous key.
    pub citizen_key: String,
    /// When it happened (RFC 3339, UTC).
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: TicketAction,
    /// The article the transition follows (`Art. 10`).
    pub article: String,
    /// Who did it: `service`, `agent:<id>`, `supervisor:<id>`, `unit:<unit>:<person>`.
    pub actor: String,
    /// The state after it.
    pub state: TicketState,
    /// How it ended, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The request's kind (Art. 8).
    pub kind: TicketKind,
    /// The lead unit's id, once dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_unit: Option<String>,
    /// Co-units' ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub co_units: Vec<String>,
    /// Dispatch is due by the end of this day, Beijing time (Art. 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_due: Option<NaiveDate>,
    /// Handling is due by the end of this day, Beijing time (Arts. 11, 12, 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling_due: Option<NaiveDate>,
    /// A due date was counted over a year whose holiday notice is not in the calendar
    /// yet (plain weekdays); it is recomputed when the year is added (Art. 22).
    #[serde(default)]
    pub due_provisional: bool,
    /// The warning it shows (Art. 10).
    pub card: Card,
    /// How often the citizen chased it (Art. 14).
    pub urge_count: u32,
    /// The original ticket of a supplementary one (Art. 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_ref: Option<TicketRef>,
    /// Why: the Art. 7 reason, a return's reasons, a repeat decision's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The rating that counts now (Arts. 16, 17), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<crate::revisit::Rating>,
}
