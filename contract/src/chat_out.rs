//! Messages the hotline sends into a citizen's open chat session: the Art. 16 survey of a
//! chat ticket ("asked in the chat if the session is still open").
//!
//! The ticket service publishes a [`ChatOutbound`] on the chat-outbound topic (keyed by
//! its `reference`, the ticket). The gateway's chat channel delivers it to every session
//! of that citizen connected at that moment, as a `message` frame
//! (docs/chat-protocol.md), and reports a [`ChatOutboundStatus`] on the chat-status
//! topic: `delivered`, or `no_open_session` (the ticket service then texts the survey
//! when it knows a number). The citizen's answer comes back as a contact whose content
//! is a [`crate::ContactContent::SurveyReply`].
//!
//! [`SessionPush`] is the seam between the two: the chat channel provides it (in
//! [`crate::ChannelParts`]), the gateway's chat-outbound consumer calls it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message for a citizen's open chat sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatOutbound {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The request id: the CloudEvents id, derived from what the message is, so one
    /// published twice is delivered once per session.
    pub id: Uuid,
    /// What it is about (the ticket reference): the record key, and what a reply names.
    pub reference: String,
    /// The citizen (the pseudonymous key of the sessions it goes to). Never an identity.
    pub citizen_key: String,
    /// Why: `survey`.
    pub purpose: String,
    /// The text, Simplified Chinese.
    pub text: String,
    /// Whether the citizen is asked for one of the five ratings (the client shows 1 to 5).
    #[serde(default)]
    pub asks_rating: bool,
    /// When it was asked for (UTC).
    pub requested_at: DateTime<Utc>,
    /// Not delivered after this (UTC).
    pub expires_at: DateTime<Utc>,
}

/// What became of a [`ChatOutbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatDelivery {
    /// Written to at least one connected session.
    Delivered,
    /// The citizen had no connected session.
    NoOpenSession,
    /// Past its expiry before it could be delivered.
    Expired,
}

/// The gateway's report on a [`ChatOutbound`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatOutboundStatus {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event.
    pub id: Uuid,
    /// The request.
    pub request_id: Uuid,
    /// What it is about (copied; the record key).
    pub reference: String,
    /// Why (copied).
    pub purpose: String,
    /// When this was known (UTC).
    pub at: DateTime<Utc>,
    /// How it went.
    pub state: ChatDelivery,
    /// Sessions it was written to.
    pub sessions: u32,
}

/// Writes a [`ChatOutbound`] into the citizen's chat sessions connected to this gateway
/// instance: the chat channel.
#[async_trait]
pub trait SessionPush: Send + Sync + 'static {
    /// Queues `message` as a `message` frame on every session of `message.citizen_key`
    /// connected to this instance now; returns how many sessions took it (0: none is
    /// connected here). Never waits on a citizen's socket.
    async fn push(&self, message: &ChatOutbound) -> u32;
}
