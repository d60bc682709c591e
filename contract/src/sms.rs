//! Outbound SMS: the one path every text the hotline sends goes through (urgent-notice
//! escalation to a duty phone, and later the Art. 13 result SMS and the Art. 16 survey).
//!
//! Any service asks for a text by publishing an [`OutboundSms`] on the outbound-SMS
//! topic (keyed by its `reference`, so one matter's texts keep their order: no number in
//! a key). The gateway's SMS channel sends
//! it through the carrier's outbound HTTP API with the request id as the idempotency
//! key, retries with backoff until the request expires, and reports each outcome as an
//! [`SmsStatus`] on the status topic. A text that cannot be delivered ends as `failed`
//! with the carrier's reason, never silently.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A request to send one text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundSms {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The request id: the CloudEvents id and the carrier's idempotency key (a retried or
    /// redelivered request is one text).
    pub id: Uuid,
    /// When it was asked for (UTC).
    pub requested_at: DateTime<Utc>,
    /// Not sent after this (UTC); it then ends `failed` with reason `expired`.
    pub expires_at: DateTime<Utc>,
    /// Why: `urgent_notice`, `result`, `survey`...
    pub purpose: String,
    /// What it is about (the notice id, the ticket reference): the record key.
    pub reference: String,
    /// The number, normalised. Personal data (Art. 21): in the payload only, never logged.
    pub to: String,
    /// The text, Simplified Chinese.
    pub text: String,
}

/// How a request ended (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsState {
    /// The carrier took it.
    Sent,
    /// It will not be sent: the carrier refused it, or it expired while the carrier was
    /// unreachable.
    Failed,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmsStatus {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event.
    pub id: Uuid,
    /// The request (the record key).
    pub request_id: Uuid,
    /// Why the request was made (copied from it).
    pub purpose: String,
    /// What it is about (copied from it).
    pub reference: String,
    /// When this was known (UTC).
    pub at: DateTime<Utc>,
    /// Sent or failed.
    pub state: SmsState,
    /// The carrier it went through.
    pub carrier: String,
    /// The carrier's id of the message, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_message_id: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed, in the carrier's words where it gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Sends a text through a carrier, retrying until it is sent, refused or expired.
#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// Sends `request` (idempotent on its id); returns the final status.
    async fn send(&self, request: &OutboundSms) -> SmsStatus;
}
