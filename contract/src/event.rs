//! The events the gateway emits, version 1.
//!
//! These event types leave the gateway, each on its own Kafka topic:
//!
//! - [`Contact`]: one thing a citizen said or did on one channel (a chat message, an SMS,
//!   a step of a call, an utterance of a call as text). Contacts are facts; they are
//!   never revised.
//! - [`TicketDraft`]: what the gateway proposes to the ticket service, built from one or
//!   more contacts. The ticket service owns the ticket; the draft is a proposal.
//! - [`crate::RestrictionChange`] and [`crate::AuditEvent`]: Art. 9 restrictions and the
//!   audit trail of the admin surface (see [`crate::restriction`]);
//! - [`crate::NoticeEvent`]: Art. 15 urgent notices to the linkage (see
//!   [`crate::notice`]).
//!
//! Compatibility rule: within a `schema_version`, fields are only ever *added*, and only
//! as optional fields, so a consumer written for version 1 keeps reading version 1
//! records. Anything else is a new version and a new CloudEvents type.
//!
//! Every field that identifies a citizen is personal data (Art. 21): it travels inside
//! the payload only, never in headers or keys, and never in logs.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version written in every event payload.
pub const SCHEMA_VERSION: u32 = 1;

/// The channel a contact arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A telephone call from a carrier trunk (SIP).
    Phone,
    /// A call placed from a browser (WebRTC).
    Webrtc,
    /// An online chat session (WebSocket).
    Chat,
    /// A text message from a carrier.
    Sms,
}

impl ChannelKind {
    /// The lowercase name used in metrics labels, CloudEvents sources and config.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Phone => "phone",
            ChannelKind::Webrtc => "webrtc",
            ChannelKind::Chat => "chat",
            ChannelKind::Sms => "sms",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of identifier `CitizenIdentity::value` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A telephone number, normalised to its national digits (mainland mobile numbers
    /// lose a +86 / 0086 prefix).
    PhoneNumber,
    /// The identity a chat client presents (a visitor id or an account id of the portal
    /// or mini-program the chat runs in).
    ChatVisitor,
    /// A caller who withheld their number (anonymous or no usable caller id); `value` is
    /// the gateway's call id, so each such call is its own citizen.
    Withheld,
}

/// Who the citizen is. Personal data (Art. 21).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CitizenIdentity {
    /// What kind of identifier `value` is.
    pub kind: IdentityKind,
    /// The identifier itself, normalised (see [`IdentityKind`]).
    pub value: String,
    /// The pseudonymous citizen key: a keyed hash (HMAC-SHA256 with the gateway's secret)
    /// of `kind` and `value`. Stable for one citizen, meaningless without the secret; it is
    /// also the Kafka record key, so one citizen's events stay in order.
    pub key: String,
}

/// A way to reach the citizen back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum ReplyPath {
    /// A text message to this number (Art. 13 result SMS, Art. 16 satisfaction survey).
    Sms {
        /// The number, normalised.
        number: String,
    },
    /// A call back to this number.
    Phone {
        /// The number, normalised.
        number: String,
    },
    /// A message into this chat session, while the citizen can still resume it.
    ChatSession {
        /// The gateway's chat session id.
        session_id: Uuid,
    },
}

/// What the contact carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
// A contact is built once per thing a citizen did and serialised at once; boxing the
// call step would cost an allocation per contact to save stack bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
pub enum ContactContent {
    /// Text the citizen wrote (a chat message, an SMS body), UTF-8, as received.
    Text {
        /// The text.
        text: String,
    },
    /// A step of a telephone call (one contact per phase: offered, answered, ended or
    /// rejected).
    Call(CallContact),
    /// One utterance of a call, transcribed (speech to text).
    Transcript(TranscriptSegment),
    /// The citizen's answer in the chat to a survey of one of their tickets (Art. 16).
    SurveyReply {
        /// The ticket the survey asked about (the `reference` of the chat message).
        ticket_ref: TicketRef,
        /// What the citizen answered: a digit 1 to 5 or the rating's words, as sent.
        text: String,
    },
}

/// One utterance of a call as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TranscriptSegment {
    /// The call (the `call_id` of its call contacts).
    pub call_id: Uuid,
    /// Who spoke.
    pub speaker: crate::audio::Speaker,
    /// Start, in milliseconds from the start of the call's media.
    pub start_ms: u64,
    /// End, in milliseconds from the start of the call's media.
    pub end_ms: u64,
    /// What was said, Simplified Chinese. Machine transcription: homophones are likely
    /// (香洲 may come out as 相周).
    pub text: String,
    /// The recogniser's confidence, 0 to 1 (mean token probability).
    pub confidence: f32,
    /// Transcribed after the call, from the recording, because the recogniser was busy
    /// while it was live (the agent saw it late or not at all).
    #[serde(default)]
    pub deferred: bool,
}

/// The phase of a call a contact reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// The call reached the gateway and was admitted.
    Offered,
    /// The agent side answered.
    Answered,
    /// The call is over.
    Ended,
    /// The gateway refused the call (a blocked caller, Art. 9; an unusable offer).
    Rejected,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallParty {
    /// The citizen hung up or cancelled.
    Citizen,
    /// The agent side hung up or refused.
    Agent,
    /// The gateway released the call (end of a recorded message, media timeout,
    /// shutdown).
    Gateway,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The citizen talked with an agent.
    Talked,
    /// The citizen hung up before an agent answered.
    CallerCancelled,
    /// No agent was available (busy, no answer, failure) and the citizen left a message.
    MessageRecorded,
    /// No agent was available and the call was released without a message.
    Unanswered,
    /// Neither side sent audio for too long.
    MediaTimeout,
    /// The gateway was shutting down.
    Shutdown,
}

/// A step of a telephone call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallContact {
    /// The gateway's id of the call; every phase of one call carries the same id.
    pub call_id: Uuid,
    /// Which step this is.
    pub phase: CallPhase,
    /// The trunk the call came in on.
    pub trunk: String,
    /// The number the citizen dialled (the Request-URI user), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialled: Option<String>,
    /// Who answered on the agent side (the user part of its Contact), once answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Ended: how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CallOutcome>,
    /// Ended: who ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<CallParty>,
    /// Ended: milliseconds from the offer to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Ended: milliseconds of conversation (from the answer) or of the recorded message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_ms: Option<u64>,
    /// Ended: the recording, as the file name under the gateway's recordings directory
    /// (a stereo WAV, citizen left, agent right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Ended: DTMF keys the citizen pressed, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
    /// Rejected or failed: the SIP status sent to the caller or received from the agent
    /// side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Rejected: why, in words (`blocked_caller`, `no_common_codec`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Offered: where the call was transferred from (110 handing a caller to 12345).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<CallOrigin>,
    /// Ended: the linkage line the agent handed the caller to (`120`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_to: Option<String>,
    /// Ended: the linkage line added to the call as a third party (three-way), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conferenced_with: Option<String>,
}

/// Where a call was transferred or diverted from, as the trunk said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallOrigin {
    /// `history_info` (RFC 7044) or `diversion` (RFC 5806).
    pub via: String,
    /// The line it came from (`110`); a mobile number masked.
    pub from: String,
    /// The retargeting cause or diversion reason, when given (`302`, `unconditional`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A human-friendly ticket reference, unique across restarts and instances
/// (`ZH` + the UTC date + 10 hex digits of randomness), given to the citizen so that
/// they can quote it and query progress (Art. 14).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct TicketRef(pub String);

impl TicketRef {
    /// A fresh reference for a ticket opened at `now`.
    pub fn generate(now: DateTime<Utc>) -> Self {
        let random: [u8; 5] = rand::random();
        TicketRef(format!(
            "ZH{}{}",
            now.format("%Y%m%d"),
            hex::encode_upper(random)
        ))
    }

    /// The reference as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TicketRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing a citizen said or did on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    /// Always [`SCHEMA_VERSION`] for this type.
    pub schema_version: u32,
    /// Unique id of this event (UUIDv7: unique across restarts and instances, sortable by
    /// time). Also the CloudEvents `id`: consumers drop a redelivered record by this id.
    pub id: Uuid,
    /// The ticket this contact belongs to (the draft that carries it has the same ref).
    pub ticket_ref: TicketRef,
    /// The channel it arrived on.
    pub channel: ChannelKind,
    /// When the gateway received it (RFC 3339, UTC).
    pub received_at: DateTime<Utc>,
    /// Who the citizen is. Personal data (Art. 21).
    pub citizen: CitizenIdentity,
    /// How to reach the citizen back, best first. Personal data (Art. 21).
    pub reply_paths: Vec<ReplyPath>,
    /// What the contact carries.
    pub content: ContactContent,
    /// The channel's own reference for it: the carrier's SMS message id, or the chat
    /// client's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_ref: Option<String>,
    /// Position of this contact within its ticket, from 1.
    pub sequence: u32,
    /// Set when the gateway did not admit the contact, and why (`restricted`: the
    /// citizen is restricted, Art. 9). No ticket follows a rejected contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The Art. 9 restriction on the citizen: why the contact was rejected, or, on an
    /// admitted contact, a restriction the citizen passed because the contact carried an
    /// Art. 15 emergency cue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<crate::restriction::RestrictionNote>,
}

/// The kind of a request (Art. 8), or `unknown` when the gateway cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketKind {
    /// 咨询: a question.
    Consultation,
    /// 求助: a request for help.
    Help,
    /// 投诉: a complaint.
    Complaint,
    /// 举报: a report of wrongdoing.
    Report,
    /// 建议: a suggestion.
    Suggestion,
    /// 表扬: praise (no satisfaction survey follows, Art. 16).
    Praise,
    /// 纠错: a correction of published information.
    Correction,
    /// The gateway could not tell; an agent decides.
    Unknown,
}

/// How fast the ticket needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Ordinary handling within the Art. 11 deadlines.
    Normal,
    /// Possibly an emergency (Art. 15: disasters, public-safety dangers, regional water,
    /// power or gas outages): the linkage operators must look at it now.
    Emergency,
}

/// An Art. 15 emergency cue found in the citizen's words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmergencyCue {
    /// The kind of emergency, as routing's recognition names it (`fire`, `explosion`,
    /// `gas_leak`, `hazmat`, `electric`, `trapped`, `drowning`, `flooding`, `collapse`, `disaster`,
    /// `injury`, `medical`, `violence`, `self_harm`, `missing`, `distress`,
    /// `water_outage`, `power_outage`, `gas_outage`): the first kind found for this
    /// target.
    pub kind: String,
    /// The linkage: `110` (police), `119` (fire and rescue), `120` (ambulance), or the
    /// responsible unit. One cue per target: a text naming a fire and an injured person
    /// has a cue for 119 and one for 120.
    pub target: String,
    /// The word that named it: the danger's own word in the first rule that found it,
    /// as the rules spell it (着火 where a transcript has 找火, 救命 for a typed jm).
    pub cue: String,
    /// The words as written in the text, from the rule's first word to its last (a
    /// transcript may hold a homophone: 找火 for 着火).
    pub heard: String,
    /// Why, for the operator: each rule that named this target with the words it used
    /// (`violence: weapon in hand (拿着 + 刀)`), and any word mended by sound in a
    /// transcript (`heard 找火 as 着火 (sound)`). Empty on events written before issue 21.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Where the matter is, as the citizen stated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// The place as stated (address, landmark).
    pub text: String,
    /// The district, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
}

/// What the gateway proposes to the ticket service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketDraft {
    /// Always [`SCHEMA_VERSION`] for this type.
    pub schema_version: u32,
    /// Unique id of this event (UUIDv7); also the CloudEvents `id`.
    pub id: Uuid,
    /// The reference the citizen was given.
    pub ticket_ref: TicketRef,
    /// When the draft was made (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// The channel the ticket came in on.
    pub channel: ChannelKind,
    /// The citizen's pseudonymous key (see [`CitizenIdentity::key`]); the identity itself
    /// is in the contacts.
    pub citizen_key: String,
    /// The kind of request (Art. 8), as the gateway guesses it.
    pub kind: TicketKind,
    /// A short summary for the agent and the ticket title.
    pub summary: String,
    /// Where, if the citizen said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How urgent it looks.
    pub urgency: Urgency,
    /// The Art. 15 cue that made it an emergency: which kind, for which linkage (the
    /// first of `emergencies`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<EmergencyCue>,
    /// Every linkage the words need, one cue per target, in the order they were said
    /// (a kitchen fire with a burned grandmother: 119 and 120). Empty on drafts written
    /// before issue 21, which carry `emergency` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emergencies: Vec<EmergencyCue>,
    /// The contacts the draft was built from, in order (their `id`s).
    pub contacts: Vec<Uuid>,
    /// Earlier tickets this one repeats or supplements (Art. 14); filled by routing.
    #[serde(default)]
    pub related_tickets: Vec<TicketRef>,
    /// Calls: the whole transcript, both speakers, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<TranscriptSegment>,
    /// Fields the gateway read out of the citizen's words, each with where it came from
    /// and how sure it is; the agent confirms or corrects them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefill: Vec<PrefillField>,
    /// The citizen is restricted (Art. 9) and was let through because of an Art. 15
    /// emergency cue: the agent sees the restriction beside the emergency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<crate::restriction::RestrictionNote>,
    /// Calls: the linkage line that transferred the caller to 12345 (110, 119, 120), so
    /// that the loop with it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_from: Option<CallOrigin>,
}

/// Which ticket field a prefill value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrefillName {
    /// The request's kind (Art. 8); the value is a [`TicketKind`] name.
    Kind,
    /// A one-line summary.
    Summary,
    /// The district (区) the matter is in.
    District,
    /// The place as said (street, town, landmark).
    Address,
    /// What the citizen asks for.
    Request,
    /// A department or unit the citizen names (a hint for dispatch, Art. 10).
    Department,
    /// A hint that the matter may not be accepted (Art. 7), for the agent to check.
    NonAcceptance,
    /// A cue of an emergency (Art. 15).
    Emergency,
}

/// One value read out of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrefillField {
    /// The field.
    pub name: PrefillName,
    /// The value, normalised (the district's official name even when the transcript has
    /// a homophone).
    pub value: String,
    /// Where it came from: the segment's index in `transcript` and the character range
    /// (start inclusive, end exclusive) in that segment's text.
    pub span: TranscriptSpan,
    /// 0 to 1: the recogniser's confidence times how well the words matched.
    pub confidence: f32,
}

/// A character range of one transcript segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TranscriptSpan {
    /// Index into the draft's `transcript`.
    pub segment: usize,
    /// First character (in Unicode scalar values).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// Any event the gateway emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A contact.
    Contact(Box<Contact>),
    /// A ticket draft.
    TicketDraft(Box<TicketDraft>),
    /// An Art. 9 restriction's state after a change (compacted topic).
    Restriction(Box<crate::restriction::RestrictionChange>),
    /// An audited action (restriction changes and other admin actions).
    Audit(Box<crate::restriction::AuditEvent>),
    /// A step of an Art. 15 urgent notice.
    Notice(Box<crate::notice::NoticeEvent>),
    /// A request to send a text.
    OutboundSms(Box<crate::sms::OutboundSms>),
    /// What became of a text.
    SmsStatus(Box<crate::sms::SmsStatus>),
    /// A ticket's transition (published by the ticket service).
    TicketStatus(Box<crate::ticket::TicketStatus>),
    /// A request for an automated revisit call (published by the ticket service).
    RevisitCall(Box<crate::revisit::RevisitCall>),
    /// How a revisit call went.
    RevisitResult(Box<crate::revisit::RevisitResult>),
    /// A message for a citizen's open chat sessions (published by the ticket service).
    ChatOutbound(Box<crate::chat_out::ChatOutbound>),
    /// What became of it.
    ChatOutboundStatus(Box<crate::chat_out::ChatOutboundStatus>),
}

impl From<crate::chat_out::ChatOutbound> for Event {
    fn from(m: crate::chat_out::ChatOutbound) -> Self {
        Event::ChatOutbound(Box::new(m))
    }
}

impl From<crate::chat_out::ChatOutboundStatus> for Event {
    fn from(s: crate::chat_out::ChatOutboundStatus) -> Self {
        Event::ChatOutboundStatus(Box::new(s))
    }
}

impl From<crate::revisit::RevisitCall> for Event {
    fn from(c: crate::revisit::RevisitCall) -> Self {
        Event::RevisitCall(Box::new(c))
    }
}

impl From<crate::revisit::RevisitResult> for Event {
    fn from(r: crate::revisit::RevisitResult) -> Self {
        Event::RevisitResult(Box::new(r))
    }
}

impl From<crate::ticket::TicketStatus> for Event {
    fn from(t: crate::ticket::TicketStatus) -> Self {
        Event::TicketStatus(Box::new(t))
    }
}

impl From<crate::sms::OutboundSms> for Event {
    fn from(s: crate::sms::OutboundSms) -> Self {
        Event::OutboundSms(Box::new(s))
    }
}

impl From<crate::sms::SmsStatus> for Event {
    fn from(s: crate::sms::SmsStatus) -> Self {
        Event::SmsStatus(Box::new(s))
    }
}

impl From<crate::notice::NoticeEvent> for Event {
    fn from(n: crate::notice::NoticeEvent) -> Self {
        Event::Notice(Box::new(n))
    }
}

impl From<Contact> for Event {
    fn from(c: Contact) -> Self {
        Event::Contact(Box::new(c))
    }
}

impl From<TicketDraft> for Event {
    fn from(d: TicketDraft) -> Self {
        Event::TicketDraft(Box::new(d))
    }
}

impl From<crate::restriction::RestrictionChange> for Event {
    fn from(r: crate::restriction::RestrictionChange) -> Self {
        Event::Restriction(Box::new(r))
    }
}

impl From<crate::restriction::AuditEvent> for Event {
    fn from(a: crate::restriction::AuditEvent) -> Self {
        Event::Audit(Box::new(a))
    }
}

/// A new event id: UUIDv7, so ids are unique across restarts and sort by time.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_refs_are_distinct_and_dated() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .expect("valid literal")
            .with_timezone(&Utc);
        let a = TicketRef::generate(now);
        let b = TicketRef::generate(now);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("ZH20261126"), "{a}");
        assert_eq!(a.as_str().len(), 2 + 8 + 10);
    }
}
