//! Art. 15 urgent notices to the 110/119/120 linkage, as events, and the seam channels
//! report emergencies through.
//!
//! When a contact carries an emergency cue, the channel's [`crate::Screen`] gives it the
//! notice event to record in the same submission as the contact: the notice is durable
//! exactly when the contact is, before anybody is told. One notice per ticket
//! and linkage target: later contacts of the same ticket (or, within the window, of the
//! same citizen; or, for a regional outage, of the same district) *update* it.
//!
//! A notice's life is a sequence of [`NoticeEvent`]s on the notices topic, keyed by the
//! notice id (so one notice's events stay on one partition, in order, and the instance
//! that owns the partition runs its 30-minute clock): opened, updated, escalation steps,
//! acknowledged, alarm, and the linkage operator's feedback.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{ChannelKind, EmergencyCue, Location, ReplyPath, TicketRef};
use crate::restriction::RestrictionNote;

/// One step in a notice's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeEvent {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event (also the CloudEvents id). Steps the clock owner takes
    /// have ids derived from the notice and the step, so a step written twice (an owner
    /// that died after writing it) is one step to every reader.
    pub id: Uuid,
    /// The notice (the record key).
    pub notice_id: Uuid,
    /// When the step happened (UTC).
    pub at: DateTime<Utc>,
    /// Who took it: an operator id, `gateway`, or the linkage line (`call:<target>`).
    pub by: String,
    /// What happened.
    pub change: NoticeChange,
}

/// What a notice event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NoticeChange {
    /// A new notice: everything the linkage operator needs.
    Opened(Box<NoticeOpened>),
    /// A later contact on the same matter: a new excerpt, another reporter.
    Updated(NoticeUpdate),
    /// An escalation step began (it is written before the call is placed or the SMS
    /// requested, so an owner that takes over does not repeat it).
    EscalationStarted {
        /// The step, from 1, in the schedule's order.
        step: u32,
        /// How: `call` (the target's linkage line) and `sms` (the duty phone).
        via: Vec<EscalationVia>,
    },
    /// An escalation step's call ended.
    EscalationCall {
        /// The step.
        step: u32,
        /// How the call ended: `answered`, `acknowledged` (1 pressed), `busy`,
        /// `no_answer`, `failed`.
        outcome: String,
    },
    /// Somebody acknowledged the notice: its clock stops.
    Acknowledged {
        /// Through what: `feed` (the operator feed), `call` (1 pressed on an escalation
        /// call), `api`.
        via: String,
    },
    /// 30 minutes passed without an acknowledgement (Art. 15's limit).
    Alarm,
    /// The linkage operator's feedback (the loop the 2022 opinion asks to close).
    Feedback {
        /// `accepted`, `handled` or `returned` (returned to 12345).
        status: FeedbackStatus,
        /// The operator's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

/// How an escalation step reaches the linkage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalationVia {
    /// A call to the target's 24-hour linkage line that plays the notice.
    Call,
    /// An SMS to the target's duty phone.
    Sms,
}

/// The linkage operator's feedback on a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackStatus {
    /// Taken on by the linkage.
    Accepted,
    /// Dealt with.
    Handled,
    /// Not the linkage's: returned to the hotline.
    Returned,
}

/// What a new notice carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeOpened {
    /// The ticket the contact went to.
    pub ticket_ref: TicketRef,
    /// The linkage: `110`, `119`, `120`, or a unit.
    pub target: String,
    /// The kind of emergency (`fire`, `gas_leak`, `water_outage`...).
    pub kind: String,
    /// The cue as the rules spell it, and as heard.
    pub cue: EmergencyCue,
    /// The words around the cue (at most 200 characters).
    pub excerpt: String,
    /// The channel it came in on.
    pub channel: ChannelKind,
    /// The contact that triggered it.
    pub contact_id: Uuid,
    /// The citizen's pseudonymous key.
    pub citizen_key: String,
    /// How to reach the citizen back. Personal data (Art. 21): never logged.
    pub reply_paths: Vec<ReplyPath>,
    /// Where, as far as the gateway could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// When the cue was detected: the 30 minutes run from here (Art. 15).
    pub detected_at: DateTime<Utc>,
    /// A regional outage (water, power, gas) reported by several citizens is one
    /// incident: the district it is in. Later reports there update this notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_district: Option<String>,
    /// The citizen is restricted (Art. 9) and was let through for the emergency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<RestrictionNote>,
}

/// A later contact on an open notice's matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NoticeUpdate {
    /// The contact.
    pub contact_id: Uuid,
    /// Its ticket (another citizen's, for an outage incident).
    pub ticket_ref: TicketRef,
    /// The words around the cue.
    pub excerpt: String,
    /// Where, when this contact says more than the notice had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// A different citizen reporting the same incident (their key): the reporter count
    /// goes up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_reporter: Option<String>,
}

/// A call to a linkage line that plays an urgent notice.
#[derive(Debug, Clone)]
pub struct LinkageCall {
    /// The notice.
    pub notice_id: Uuid,
    /// The escalation step.
    pub step: u32,
    /// The linkage line's SIP URI (`sip:119@10.1.2.3:5060`).
    pub uri: String,
    /// The ticket, read out on the call.
    pub ticket_ref: TicketRef,
    /// The kind of emergency.
    pub kind: String,
}

/// How a linkage call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkageCallOutcome {
    /// Answered and 1 pressed: the notice is acknowledged.
    Acknowledged,
    /// Answered, the notice played, no 1.
    Answered,
    /// Busy.
    Busy,
    /// Not answered in time.
    NoAnswer,
    /// Refused or unreachable.
    Failed,
}

impl LinkageCallOutcome {
    /// The outcome's name, as events write it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkageCallOutcome::Acknowledged => "acknowledged",
            LinkageCallOutcome::Answered => "answered",
            LinkageCallOutcome::Busy => "busy",
            LinkageCallOutcome::NoAnswer => "no_answer",
            LinkageCallOutcome::Failed => "failed",
        }
    }
}

/// Places linkage calls (the SIP channel).
#[async_trait::async_trait]
pub trait LinkageDialer: Send + Sync + 'static {
    /// Calls the line, plays the notice, listens for 1; returns how it ended.
    async fn call(&self, call: LinkageCall) -> LinkageCallOutcome;
}

/// The words of `text` around character `at` (the cue), at most `max` characters.
pub fn excerpt(text: &str, at: usize, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_owned();
    }
    let start = at.saturating_sub(max / 2).min(chars.len() - max);
    chars[start..start + max].iter().collect()
}
