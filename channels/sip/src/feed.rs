//! The agent call screen feed: a WebSocket an agent desktop keeps open to get, for each
//! call routed to its agent, a screen-pop (masked caller, the citizen's earlier calls,
//! trunk, dialled number) and the call's state changes. The live transcript joins this
//! feed with speech recognition.
//!
//! Authentication: the centre's desktop login mints a bearer token per agent,
//! `<agent>.<expiry unix seconds>.<hex HMAC-SHA256(secret, "<agent>.<expiry>")>`, with
//! the secret named by `agent_feed.token_secret_env`. The desktop presents it as
//! `Authorization: Bearer <token>` or, where a browser cannot set headers on a
//! WebSocket, as `?access_token=<token>`. An agent is the user part of the Contact the
//! agent side answers with (`sip:agent1001@...` is agent `agent1001`).
//!
//! Each socket has a bounded queue; a desktop that does not read loses events (counted)
//! rather than holding the call path up. The caller's number appears only masked
//! (Art. 21): the full number is in the contacts, for the ticket service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use contract::{CallOutcome, CallParty, Problem, TicketRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::endpoint::lock;

/// Events queued per socket before new ones are dropped.
const SOCKET_QUEUE: usize = 64;

/// What an agent desktop receives.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// A call is ringing at (or was answered by) this agent.
    ScreenPop {
        /// The gateway's call id.
        call_id: Uuid,
        /// The ticket the call's contacts go to.
        ticket_ref: TicketRef,
        /// The caller's number, masked (`138****8000`), or `withheld`.
        caller: String,
        /// The citizen's pseudonymous key (the ticket service looks the history up by it).
        citizen_key: String,
        /// Calls this citizen made to the hotline before this one.
        earlier_calls: u32,
        /// The trunk the call came in on.
        trunk: String,
        /// The number dialled.
        dialled: Option<String>,
    },
    /// The call's state changed.
    CallState {
        /// The gateway's call id.
        call_id: Uuid,
        /// `ringing`, `answered` or `ended`.
        state: CallStateName,
        /// Ended: how.
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<CallOutcome>,
        /// Ended: who ended it.
        #[serde(skip_serializing_if = "Option::is_none")]
        ended_by: Option<CallParty>,
    },
    /// A transfer the agent asked for is under way, done, or failed.
    Transfer {
        /// The gateway's call id.
        call_id: Uuid,
        /// The linkage target.
        target: String,
        /// `calling`, `connected` (the caller is with the linkage now), `joined` (a
        /// three-way call), `left` (the line hung up a three-way call) or `failed`.
        state: &'static str,
        /// Failed: why (a SIP status, `unknown_target`, `not_your_call`...).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The citizen pressed a key.
    Dtmf {
        /// The gateway's call id.
        call_id: Uuid,
        /// The key.
        key: char,
    },
    /// An utterance of the call as text (live, within about a second of its end), or,
    /// with empty text and `deferred`, one the recogniser could not take live: it is
    /// sent again with its text once transcribed from the recording after the call.
    Transcript {
        /// The gateway's call id.
        call_id: Uuid,
        /// `citizen` or `agent`.
        speaker: contract::Speaker,
        /// Start and end, in milliseconds from the start of the call's media.
        start_ms: u64,
        /// End.
        end_ms: u64,
        /// What was said (Simplified Chinese; machine transcription).
        text: String,
        /// The recogniser's confidence, 0 to 1.
        confidence: f32,
        /// Not live: see above.
        deferred: bool,
    },
}

/// A call's state on the feed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallStateName {
    /// Ringing at the agent.
    Ringing,
    /// Answered by the agent.
    Answered,
    /// Over.
    Ended,
}

pub use contract::token::TokenVerifier;

/// What an agent's desktop may ask of a call on the feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentCommand {
    /// Hand the caller to a linkage line (`"120"`): the gateway calls it and, once it
    /// answers, bridges the caller to it in place of the agent (one-key transfer).
    Transfer {
        /// The gateway's call id (from the screen-pop).
        call_id: Uuid,
        /// The linkage target, as `[linkage.targets]` names it.
        target: String,
    },
    /// Add a linkage line to the call (a three-way call): the gateway calls it and, once
    /// it answers, mixes the caller, the agent and the line.
    Conference {
        /// The gateway's call id.
        call_id: Uuid,
        /// The linkage target.
        target: String,
    },
}

/// A command with the agent whose token sent it.
pub type Command = (String, AgentCommand);

/// The subscriptions of connected desktops.
pub struct Feed {
    verifier: TokenVerifier,
    commands: mpsc::Sender<Command>,
    subscribers: Mutex<HashMap<String, Vec<mpsc::Sender<Arc<str>>>>>,
    max_per_agent: usize,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed checking tokens with `verifier`.
    pub fn new(
        verifier: TokenVerifier,
        max_per_agent: usize,
        shutdown: CancellationToken,
        commands: mpsc::Sender<Command>,
    ) -> Arc<Self> {
        Arc::new(Feed {
            verifier,
            commands,
            subscribers: Mutex::new(HashMap::new()),
            max_per_agent,
            shutdown,
        })
    }

    /// Sends an event to every socket of `agent`.
    pub fn publish(&self, agent: &str, event: &FeedEvent) {
        let mut subs = lock(&self.subscribers);
        let Some(list) = subs.get_mut(agent) else {
            return;
        };
        let text: Arc<str> = match serde_json::to_string(event) {
            Ok(t) => Arc::from(t),
            Err(_) => return,
        };
        list.retain(|tx| match tx.try_send(text.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("gateway_sip_feed_dropped_total").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            subs.remove(agent);
        }
    }

    /// The route of the feed.
    pub fn router(self: Arc<Self>, path: &str) -> axum::Router {
        axum::Router::new()
            .route(path, get(upgrade))
            .with_state(self)
    }
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn upgrade(
    State(feed): State<Arc<Feed>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(agent) = contract::token::presented(&headers, query.access_token)
        .and_then(|t| feed.verifier.verify(&t, contract::token::unix_now()))
    else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "agent-token",
            "Agent token missing, forged or expired",
            "Present the desk token from the login service as a Bearer token or access_token.",
        )
        .into_response();
    };
    let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
    {
        let mut subs = lock(&feed.subscribers);
        let list = subs.entry(agent.clone()).or_default();
        list.retain(|t| !t.is_closed());
        if list.len() >= feed.max_per_agent {
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "agent-feed-connections",
                "Too many feed connections for this agent",
                format!("At most {} sockets per agent.", feed.max_per_agent),
            )
            .into_response();
        }
        list.push(tx);
    }
    let shutdown = feed.shutdown.clone();
    let commands = feed.commands.clone();
    ws.max_message_size(4096)
        .on_upgrade(move |socket| serve(socket, rx, shutdown, agent, commands))
}

async fn serve(
    mut socket: WebSocket,
    mut rx: mpsc::Receiver<Arc<str>>,
    shutdown: CancellationToken,
    agent: String,
    commands: mpsc::Sender<Command>,
) {
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(text) => {
                    if socket.send(Message::Text(text.as_ref().into())).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    let answer = match serde_json::from_str::<AgentCommand>(text.as_str()) {
                        // The call answers on the feed (transferring, transfer_failed...).
                        Ok(c) => match commands.try_send((agent.clone(), c)) {
                            Ok(()) => None,
                            Err(_) => Some(r#"{"type":"error","code":"busy","detail":"too many commands; send it again"}"#.to_owned()),
                        },
                        Err(e) => Some(serde_json::json!({"type": "error", "code": "malformed", "detail": e.to_string()}).to_string()),
                    };
                    if let Some(a) = answer && socket.send(Message::Text(a.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            () = shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: 1001, reason: "gateway shutting down".into() })))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_only_the_agents_sockets_and_a_slow_socket_drops() {
        let feed = Feed::new(
            TokenVerifier::new(b"x", ""),
            4,
            CancellationToken::new(),
            mpsc::channel(1).0,
        );
        let (tx, mut rx) = mpsc::channel(1);
        lock(&feed.subscribers).insert("a1".into(), vec![tx]);
        let ev = FeedEvent::Dtmf {
            call_id: Uuid::nil(),
            key: '5',
        };
        feed.publish("a2", &ev);
        feed.publish("a1", &ev);
        feed.publish("a1", &ev);
        let got = rx.recv().await.expect("one event");
        assert_eq!(
            got.as_ref(),
            r#"{"type":"dtmf","call_id":"00000000-0000-0000-0000-000000000000","key":"5"}"#
        );
        assert!(
            rx.try_recv().is_err(),
            "the second was dropped, not queued without bound"
        );
    }
}
