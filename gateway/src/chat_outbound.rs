//! The ticket service's messages into citizens' open chat sessions (the Art. 16 survey
//! of a chat ticket, "asked in the chat if the session is still open"): requests on the
//! chat-outbound topic, each written once into the citizen's connected sessions through
//! the chat channel's [`SessionPush`], how each went on the chat-status topic
//! (docs/events.md#chat-message).
//!
//! A request topic ([`crate::request_topic`]) with the group
//! `<kafka.group_prefix>-chat-outbound`: requests one after the other (writing into a
//! session never waits on the citizen's socket, so each is quick), the status recorded
//! through the outbox with the once-key `chat-out/<request id>`, so a request read twice
//! (published twice, or delivered again after a crash before the commit) is written once
//! per session on this instance. A request whose `expires_at` has passed is `expired`
//! without being written; otherwise it is `delivered` to the `sessions` it was written
//! to, or `no_open_session` (the ticket service then texts the survey when it has a
//! number). An instance without a chat channel reads its share all the same and answers
//! `no_open_session`: no session can be open on it, and the ticket service is not left
//! waiting.
//!
//! With several gateway instances, a citizen's session is connected to one of them while
//! each partition of the chat-outbound topic is read by one instance (chosen by the
//! ticket, not the citizen): a request is written only into the sessions connected to
//! the instance that reads it. A session on another instance is not reached and the
//! request reports `no_open_session`, so the survey goes by SMS. Reaching it would take
//! every instance reading every request and one of them summing their answers; not done.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contract::{
    ChatDelivery, ChatOutbound, ChatOutboundStatus, Event, SCHEMA_VERSION, SessionPush,
};
use tokio_util::sync::CancellationToken;

use crate::request_topic::{Handler, Spec};

/// The chat-outbound requests: one after the other.
pub static REQUESTS: Spec = Spec {
    group: "chat-outbound",
    once_prefix: "chat-out",
    client_id: "hotline-gateway-chat-outbound",
    name: "Chat message",
    counter: "gateway_chat_outbound_total",
    concurrency: 1,
};

/// Writes the requests into chat sessions.
pub struct ChatMessages {
    push: Arc<dyn SessionPush>,
}

impl ChatMessages {
    /// Writes through `push` (the chat channel's).
    pub fn new(push: Arc<dyn SessionPush>) -> Self {
        ChatMessages { push }
    }

    /// Without a chat channel: every request finds no open session.
    pub fn without_chat() -> Self {
        ChatMessages {
            push: Arc::new(NoSessions),
        }
    }
}

/// The [`SessionPush`] of an instance without a chat channel.
struct NoSessions;

#[async_trait]
impl SessionPush for NoSessions {
    async fn push(&self, _message: &ChatOutbound) -> u32 {
        0
    }
}

/// The state a request written into `sessions` sessions is in.
fn delivery(sessions: u32) -> ChatDelivery {
    if sessions > 0 {
        ChatDelivery::Delivered
    } else {
        ChatDelivery::NoOpenSession
    }
}

/// The report on `request`, known `at`.
fn status(
    request: &ChatOutbound,
    state: ChatDelivery,
    sessions: u32,
    at: DateTime<Utc>,
) -> ChatOutboundStatus {
    ChatOutboundStatus {
        schema_version: SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        request_id: request.id,
        reference: request.reference.clone(),
        purpose: request.purpose.clone(),
        at,
        state,
        sessions,
    }
}

fn state_label(state: ChatDelivery) -> &'static str {
    match state {
        ChatDelivery::Delivered => "delivered",
        ChatDelivery::NoOpenSession => "no_open_session",
        ChatDelivery::Expired => "expired",
    }
}

#[async_trait]
impl Handler for ChatMessages {
    type Request = ChatOutbound;

    fn id(&self, request: &ChatOutbound) -> uuid::Uuid {
        request.id
    }

    async fn handle(&self, request: ChatOutbound, _stop: &CancellationToken) -> Option<Event> {
        let now = Utc::now();
        let (state, sessions) = if request.expires_at <= now {
            (ChatDelivery::Expired, 0)
        } else {
            let sessions = self.push.push(&request).await;
            (delivery(sessions), sessions)
        };
        metrics::counter!(REQUESTS.counter, "state" => state_label(state)).increment(1);
        tracing::info!(reference = %request.reference, request = %request.id, purpose = %request.purpose, state = state_label(state), sessions, "Chat message done");
        Some(status(&request, state, sessions, Utc::now()).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Sessions by citizen key; records what it was asked to write.
    struct Fake {
        sessions: Vec<(&'static str, u32)>,
        written: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SessionPush for Fake {
        async fn push(&self, m: &ChatOutbound) -> u32 {
            self.written
                .lock()
                .expect("lock")
                .push(m.citizen_key.clone());
            self.sessions
                .iter()
                .find(|(k, _)| *k == m.citizen_key)
                .map_or(0, |(_, n)| *n)
        }
    }

    fn handler(sessions: Vec<(&'static str, u32)>) -> (ChatMessages, Arc<Fake>) {
        let fake = Arc::new(Fake {
            sessions,
            written: Mutex::default(),
        });
        (ChatMessages::new(fake.clone()), fake)
    }

    fn request(key: &str, expires_in: chrono::Duration) -> ChatOutbound {
        let now = Utc::now();
        ChatOutbound {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            reference: contract::TicketRef::generate(now).to_string(),
            citizen_key: key.into(),
            purpose: "survey".into(),
            text: "请对本次办理评价：回复1-5".into(),
            asks_rating: true,
            requested_at: now,
            expires_at: now + expires_in,
        }
    }

    async fn run(h: &ChatMessages, req: ChatOutbound) -> ChatOutboundStatus {
        match h.handle(req, &CancellationToken::new()).await {
            Some(Event::ChatOutboundStatus(s)) => *s,
            other => panic!("not a chat status: {other:?}"),
        }
    }

    #[tokio::test]
    async fn art16_written_into_the_citizens_sessions_is_delivered_with_their_count() {
        let (h, fake) = handler(vec![("k1", 2)]);
        let req = request("k1", chrono::Duration::hours(1));
        assert_eq!(h.id(&req), req.id);
        let s = run(&h, req.clone()).await;
        assert_eq!((s.state, s.sessions), (ChatDelivery::Delivered, 2));
        assert_eq!(
            (s.request_id, &s.reference, s.purpose.as_str()),
            (req.id, &req.reference, "survey")
        );
        assert_ne!(s.id, req.id);
        assert_eq!(*fake.written.lock().expect("lock"), vec!["k1".to_owned()]);
    }

    #[tokio::test]
    async fn art16_no_connected_session_is_no_open_session() {
        let (h, _) = handler(vec![("k1", 2)]);
        let s = run(&h, request("k2", chrono::Duration::hours(1))).await;
        assert_eq!((s.state, s.sessions), (ChatDelivery::NoOpenSession, 0));
        let s = run(
            &ChatMessages::without_chat(),
            request("k1", chrono::Duration::hours(1)),
        )
        .await;
        assert_eq!(s.state, ChatDelivery::NoOpenSession);
    }

    #[tokio::test]
    async fn an_expired_request_is_not_written() {
        let (h, fake) = handler(vec![("k1", 1)]);
        let s = run(&h, request("k1", chrono::Duration::seconds(-1))).await;
        assert_eq!((s.state, s.sessions), (ChatDelivery::Expired, 0));
        assert!(fake.written.lock().expect("lock").is_empty());
    }
}
