//! The 12345 gateway's shared contract.
//!
//! This crate owns what every other crate of the gateway agrees on, and nothing else:
//!
//! - [`event`]: the versioned events the gateway emits (a [`Contact`] per thing a citizen
//!   said or did, a [`TicketDraft`] per proposed ticket), their JSON form and JSON Schema;
//! - [`envelope`]: how an event becomes a Kafka record: a CloudEvents 1.0 envelope in
//!   binary content mode (`ce_*` headers), keyed by the citizen's pseudonymous key;
//! - [`identity`]: citizen identities as personal data (Art. 21): normalisation, the keyed
//!   hash that pseudonymises them, and masking for logs;
//! - [`intake`]: the [`Intake`] trait through which a channel hands events to the durable
//!   outbox, and the errors it answers with;
//! - [`chat_out`]: messages into a citizen's open chat sessions (the Art. 16 survey), and
//!   the [`SessionPush`] seam the chat channel provides for them;
//! - [`channel`]: the [`Channel`] plug-in trait and the context a channel runs in;
//! - [`audio`]: the [`AudioTap`] a voice channel feeds decoded call audio into (speech
//!   recognition plugs in there);
//! - [`problem`]: RFC 9457 problem responses shared by every HTTP surface;
//! - [`rate`]: the token bucket behind every channel's rate limits;
//! - [`notice`]: Art. 15 urgent notices as events, and the linkage dialer seam;
//! - [`screen`]: the [`Screen`] every channel passes citizens' words through (urgent
//!   notices, restriction proposals);
//! - [`revisit`]: the citizen's rating (Art. 16) and the automated revisit call (Art. 17);
//! - [`sms`]: outbound SMS requests and their status, and the [`SmsSender`] seam;
//! - [`ticket`]: a ticket's transitions as the ticket service publishes them;
//! - [`token`]: the signed bearer tokens of the agent and linkage operator feeds;
//! - [`restriction`]: Art. 9 restrictions as events, and the [`Blocklist`] every channel
//!   asks at admission.
//!
//! Nothing here does I/O of its own; the gateway crate wires the implementations.

pub mod audio;
pub mod channel;
pub mod chat_out;
pub mod envelope;
pub mod event;
pub mod identity;
pub mod intake;
pub mod notice;
pub mod problem;
pub mod rate;
pub mod restriction;
pub mod revisit;
pub mod screen;
pub mod sms;
pub mod ticket;
pub mod token;

pub use audio::{AudioTap, CallAudio, CallAudioInfo, Speaker, TranscriptSink};
pub use channel::{BoxError, Channel, ChannelContext, ChannelParts};
pub use chat_out::{ChatDelivery, ChatOutbound, ChatOutboundStatus, SessionPush};
pub use envelope::{EventType, Record};
pub use event::{
    CallContact, CallOrigin, CallOutcome, CallParty, CallPhase, ChannelKind, CitizenIdentity,
    Contact, ContactContent, EmergencyCue, Event, IdentityKind, Location, PrefillField,
    PrefillName, ReplyPath, SCHEMA_VERSION, TicketDraft, TicketKind, TicketRef, TranscriptSegment,
    TranscriptSpan, Urgency,
};
pub use identity::{CitizenKeyer, mask_identity, mask_phone, normalize_phone};
pub use intake::{Intake, IntakeError, Receipt, Submission};
pub use notice::{
    EscalationVia, FeedbackStatus, LinkageCall, LinkageCallOutcome, LinkageDialer, NoticeChange,
    NoticeEvent, NoticeOpened, NoticeUpdate,
};
pub use problem::Problem;
pub use restriction::{
    AuditEvent, Blocklist, Evidence, Layered, NoBlocklist, ProposalSource, Restricted,
    RestrictionChange, RestrictionNote, RestrictionReason, RestrictionState,
};
pub use revisit::{Rating, RevisitCall, RevisitCallOutcome, RevisitDialer, RevisitResult};
pub use screen::{NoScreen, Screen};
pub use sms::{OutboundSms, SmsSender, SmsState, SmsStatus};
pub use ticket::{Card, Outcome, TicketAction, TicketState, TicketStatus};
