//! The outbound SMS path: requests on the outbound topic, sent once each by one
//! instance, their outcomes on the status topic (docs/sms-webhook.md#outbound).
//!
//! A request topic ([`crate::request_topic`]): each partition of the outbound topic is
//! read by one live instance, the member the rendezvous hash of
//! [`crate::escalation::Members`] names for it, and offsets are committed under one group
//! id (`<kafka.group_prefix>-sms-outbound`), so a partition that moves to another
//! instance goes on from the last request done. Requests are sent one after the other. A
//! request is sent through the SMS channel's carrier sender (idempotent on the request
//! id, retried until it expires), then its status is recorded through the outbox with
//! the request id as the outbox's once-key, and only then is the offset committed. A
//! crash between the carrier's answer and the commit delivers the request again: the
//! once-key stops a second send on the same instance, and the carrier's idempotency key
//! on any other. Shutting down mid-retry leaves the request uncommitted: it is taken
//! again.

use std::sync::Arc;

use async_trait::async_trait;
use contract::{Event, OutboundSms, SmsSender};
use tokio_util::sync::CancellationToken;

use crate::request_topic::{Handler, Spec};

/// The outbound SMS requests: one after the other.
pub static REQUESTS: Spec = Spec {
    group: "sms-outbound",
    once_prefix: "sms-out",
    client_id: "hotline-gateway-sms-outbound",
    name: "Outbound SMS",
    counter: "gateway_sms_outbound_total",
    concurrency: 1,
};

/// Sends outbound texts through the carrier.
pub struct Sms {
    sender: Arc<dyn SmsSender>,
}

impl Sms {
    /// Sends through `sender`.
    pub fn new(sender: Arc<dyn SmsSender>) -> Self {
        Sms { sender }
    }
}

#[async_trait]
impl Handler for Sms {
    type Request = OutboundSms;

    fn id(&self, request: &OutboundSms) -> uuid::Uuid {
        request.id
    }

    async fn handle(&self, request: OutboundSms, stop: &CancellationToken) -> Option<Event> {
        let status = tokio::select! {
            s = self.sender.send(&request) => s,
            // Shutting down mid-retry: the request is not committed and is taken again.
            () = stop.cancelled() => return None,
        };
        tracing::info!(request = %request.id, purpose = %request.purpose, state = ?status.state, attempts = status.attempts, "Outbound SMS done");
        Some(status.into())
    }
}
