//! The online chat channel: citizens chat with the hotline over a WebSocket on the
//! gateway's public port.
//!
//! - [`protocol`]: the JSON frames and close codes (documented in `docs/chat-protocol.md`);
//! - [`session`]: sessions, resume tokens, and their persisted state;
//! - this module: the [`ChatChannel`] plug-in, the per-connection loop and the sweeper
//!   that ends sessions nobody resumed.
//!
//! A message is acknowledged only after its contact is durable in the outbox. Limits
//! (frame size, message rate, idle time, sockets) close only the offending socket, with
//! a close code and a reason.
//!
//! The hotline writes into open sessions too: the channel hands the gateway a
//! [`SessionPush`] that queues a `message` frame (the Art. 16 survey of one of the
//! citizen's tickets) on each connected session of a citizen key, and the citizen's
//! `rating` frame comes back as a survey-reply contact, acknowledged like a message.

pub mod config;
pub mod protocol;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use contract::event::new_event_id;
use contract::rate::TokenBucket;
use contract::{
    BoxError, Channel, ChannelContext, ChannelKind, ChannelParts, ChatOutbound, CitizenIdentity,
    Contact, ContactContent, IdentityKind, IntakeError, Receipt, ReplyPath, Restricted,
    RestrictionNote, SCHEMA_VERSION, SessionPush, Submission, TicketRef, Urgency,
};
use routing::Classifier;

pub use config::ChatConfig;
use protocol::{ClientFrame, ServerFrame, close};
use session::{Registry, Session, SessionRecord, StoredAck};

/// The chat channel plug-in.
#[derive(Debug)]
pub struct ChatChannel {
    config: ChatConfig,
}

impl ChatChannel {
    /// A chat channel with these settings (validated by the gateway's config).
    pub fn new(config: ChatConfig) -> Self {
        ChatChannel { config }
    }
}

struct Shared {
    config: ChatConfig,
    ctx: ChannelContext,
    registry: Arc<Registry>,
    classifier: Classifier,
    connected: AtomicUsize,
}

#[async_trait]
impl Channel for ChatChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Chat
    }

    async fn build(self: Box<Self>, ctx: ChannelContext) -> Result<ChannelParts, BoxError> {
        let registry = Arc::new(Registry::default());
        // Sessions that were open when the gateway stopped stay resumable.
        let entries = ctx.intake.scan_state(session::STATE_PREFIX).await?;
        let acks = ctx.intake.scan_once(session::ACK_PREFIX).await?;
        let (records, unreadable) = SessionRecord::restore(entries, acks);
        if unreadable > 0 {
            tracing::error!(unreadable, "Unreadable chat session state skipped");
        }
        if !records.is_empty() {
            tracing::info!(restored = records.len(), "Chat sessions restored");
        }
        // The record's activity time is written only while its kept text grows, so it
        // may be old: every restored session gets a full resume window from now.
        let now_ms = Utc::now().timestamp_millis();
        for mut record in records {
            record.last_activity_ms = now_ms;
            registry.insert(record);
        }
        let push = Arc::new(Push(registry.clone()));
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            ctx,
            registry,
            classifier: Classifier::builtin(),
            connected: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route(&self.config.path, get(upgrade))
            .with_state(shared.clone());
        Ok(ChannelParts {
            router: Some(router),
            tasks: vec![Box::pin(sweeper(shared))],
            session_push: Some(push),
            ..ChannelParts::default()
        })
    }
}

/// The channel's [`SessionPush`]: the hotline's messages, as `message` frames, into the
/// sessions connected to this instance.
struct Push(Arc<Registry>);

#[async_trait]
impl SessionPush for Push {
    async fn push(&self, m: &ChatOutbound) -> u32 {
        let frame = ServerFrame::Message {
            reference: m.reference.clone(),
            purpose: m.purpose.clone(),
            text: m.text.clone(),
            asks_rating: m.asks_rating,
        };
        self.0.push(&m.citizen_key, &frame)
    }
}

async fn upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    // tungstenite's own limit is a backstop well above ours, so that an oversize frame
    // normally reaches our check and gets a clean 1009 with a reason.
    let hard_limit = shared
        .config
        .max_frame_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    let tasks = shared.ctx.tasks.clone();
    // A small read buffer: tungstenite's default (128 KiB) is zeroed as it grows, which
    // showed as the gateway's top CPU cost under many short chat messages.
    ws.read_buffer_size(2 * 1024)
        .max_frame_size(hard_limit)
        .max_message_size(hard_limit)
        .on_upgrade(move |socket| {
            let fut = connection(socket, shared);
            async move {
                // Tracked, so that shutdown waits for the socket to close cleanly.
                let _ = tasks.spawn(fut).await;
            }
        })
}

/// Why a connection ends.
enum End {
    /// Send this close frame.
    Close(u16, String),
    /// The client is gone; nothing to send.
    Gone,
}

fn end(code: u16, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

struct Connection {
    shared: Arc<Shared>,
    session: Option<(Arc<Session>, session::Attachment)>,
    bucket: TokenBucket,
}

async fn connection(mut socket: WebSocket, shared: Arc<Shared>) {
    let connected = shared.connected.fetch_add(1, Ordering::AcqRel) + 1;
    metrics::gauge!("gateway_chat_connections").set(connected as f64);
    let outcome = if connected > shared.config.max_sessions {
        end(
            close::TRY_AGAIN_LATER,
            "too many chat sessions; try again later",
        )
    } else {
        let mut conn = Connection {
            bucket: TokenBucket::new(shared.config.rate_per_second, shared.config.burst),
            shared: shared.clone(),
            session: None,
        };
        let outcome = conn.run(&mut socket).await;
        if let Some((session, attachment)) = conn.session.take() {
            session.detach(attachment.number);
        }
        outcome
    };
    if let End::Close(code, reason) = outcome {
        metrics::counter!("gateway_chat_closed_total", "code" => code.to_string()).increment(1);
        tracing::debug!(code, reason, "Chat socket closed");
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        // Let the client answer the close before the socket drops.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
    let left = shared.connected.fetch_sub(1, Ordering::AcqRel) - 1;
    metrics::gauge!("gateway_chat_connections").set(left as f64);
}

impl Connection {
    /// The session this socket is attached to.
    fn current(&self) -> Option<Arc<Session>> {
        self.session.as_ref().map(|(s, _)| s.clone())
    }

    async fn run(&mut self, socket: &mut WebSocket) -> End {
        let idle = Duration::from_secs(self.shared.config.idle_timeout_secs);
        // Idle counts from the client's last frame: the hotline's messages written
        // meanwhile do not keep a silent socket open.
        let mut idle_until = tokio::time::Instant::now() + idle;
        loop {
            let taken_over = self.session.as_ref().map(|(_, a)| a.taken_over.clone());
            let pushed = self.session.as_mut().map(|(_, a)| &mut a.pushed);
            let frame = tokio::select! {
                r = tokio::time::timeout_at(idle_until, socket.recv()) => r,
                _ = self.shared.ctx.shutdown.cancelled() => {
                    return end(close::GOING_AWAY, "gateway shutting down; resume with your token");
                }
                _ = wait_cancelled(taken_over) => {
                    return end(close::TAKEN_OVER, "session resumed on another connection");
                }
                // The hotline's messages (the Art. 16 survey) for this session.
                Some(frame) = next_pushed(pushed) => {
                    if let Some(gone) = send(socket, &frame).await {
                        return gone;
                    }
                    metrics::counter!("gateway_chat_messages_written_total").increment(1);
                    continue;
                }
            };
            let msg = match frame {
                Err(_) => return end(close::IDLE, "idle timeout; resume with your token"),
                Ok(None) => return End::Gone,
                Ok(Some(Err(e))) => return self.transport_error(e),
                Ok(Some(Ok(msg))) => msg,
            };
            idle_until = tokio::time::Instant::now() + idle;
            let text = match msg {
                Message::Text(text) => text,
                Message::Binary(_) => {
                    return end(
                        close::UNSUPPORTED_DATA,
                        "binary frames are not supported; send JSON text frames",
                    );
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => return End::Gone,
            };
            let max = self.shared.config.max_frame_bytes;
            if text.len() > max {
                return end(
                    close::TOO_BIG,
                    format!("frame of {} bytes exceeds the limit of {max}", text.len()),
                );
            }
            let frame: ClientFrame = match serde_json::from_str(text.as_str()) {
                Ok(f) => f,
                Err(e) => return end(close::MALFORMED, truncate(&format!("malformed frame: {e}"))),
            };
            if let Some(outcome) = self.handle(frame, socket).await {
                return outcome;
            }
        }
    }

    /// Maps what tungstenite refused to the close code the protocol documents.
    fn transport_error(&self, e: axum::Error) -> End {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let inner = e.into_inner();
        tracing::debug!(error = %inner, "Chat transport error");
        match inner.downcast_ref::<WsError>() {
            Some(WsError::Capacity(_)) => end(close::TOO_BIG, "frame exceeds the size limit"),
            Some(WsError::Utf8(_)) => end(close::INVALID_PAYLOAD, "text frame is not valid UTF-8"),
            Some(WsError::Protocol(p)) => end(
                close::PROTOCOL_ERROR,
                truncate(&format!("protocol error: {p}")),
            ),
            _ => End::Gone,
        }
    }

    /// Handles one frame; `Some` ends the connection.
    async fn handle(&mut self, frame: ClientFrame, socket: &mut WebSocket) -> Option<End> {
        match frame {
            ClientFrame::Open {
                visitor,
                phone,
                message,
            } => {
                if self.session.is_some() {
                    return Some(end(
                        close::POLICY,
                        "a session is already open on this socket",
                    ));
                }
                if let Some(e) = self.open(visitor, phone, message.as_ref(), socket).await {
                    return Some(e);
                }
                match (message, self.current()) {
                    (Some(m), Some(session)) => {
                        self.checked_message(&session, m.id, m.text, socket).await
                    }
                    _ => None,
                }
            }
            ClientFrame::Resume { token } => {
                if self.session.is_some() {
                    return Some(end(
                        close::POLICY,
                        "a session is already open on this socket",
                    ));
                }
                let Some(session) = self.shared.registry.by_token(&token) else {
                    return Some(end(
                        close::UNKNOWN_SESSION,
                        "unknown or ended session; open a new one",
                    ));
                };
                let attachment = session.attach();
                let frame = {
                    let mut record = session.record.lock().await;
                    record.last_activity_ms = Utc::now().timestamp_millis();
                    ServerFrame::Session {
                        session_id: record.session_id,
                        ticket_ref: record.ticket_ref.clone(),
                        resume_token: token.clone(),
                        resumed: true,
                        last_seq: record.contacts.len() as u32,
                    }
                };
                self.session = Some((session, attachment));
                send(socket, &frame).await
            }
            ClientFrame::Message { id, text } => {
                let Some(session) = self.current() else {
                    return Some(end(close::POLICY, "send open or resume first"));
                };
                self.checked_message(&session, id, text, socket).await
            }
            ClientFrame::Rating {
                id,
                reference,
                answer,
            } => {
                let Some(session) = self.current() else {
                    return Some(end(close::POLICY, "send open or resume first"));
                };
                self.checked_rating(&session, id, reference, answer, socket)
                    .await
            }
            ClientFrame::End => {
                let Some(session) = self.current() else {
                    return Some(end(close::POLICY, "send open or resume first"));
                };
                match finalize(&self.shared, &session).await {
                    Ok((ticket_ref, messages)) => {
                        let frame = ServerFrame::Ended {
                            ticket_ref,
                            messages,
                        };
                        if let Some(gone) = send(socket, &frame).await {
                            return Some(gone);
                        }
                        Some(end(close::NORMAL, "session ended"))
                    }
                    Err(e) => {
                        let frame = ServerFrame::Error {
                            id: None,
                            code: error_code(&e),
                            detail: format!("the session could not be ended now: {e}"),
                            retryable: e.is_retryable(),
                        };
                        send(socket, &frame).await
                    }
                }
            }
        }
    }

    /// The checks every citizen frame that makes a contact passes (its id, the rate);
    /// `Some` closes the socket.
    fn admit(&mut self, id: &str, what: &str) -> Option<End> {
        if id.is_empty() || id.chars().count() > 64 {
            return Some(end(
                close::MALFORMED,
                format!("{what} id must be 1 to 64 characters"),
            ));
        }
        if !self.bucket.take() {
            return Some(end(
                close::RATE_LIMITED,
                format!(
                    "more than {} messages per second",
                    self.shared.config.rate_per_second
                ),
            ));
        }
        None
    }

    /// A message frame's checks (id, rate, text), then the message; answers on `socket`.
    async fn checked_message(
        &mut self,
        session: &Arc<Session>,
        id: String,
        text: String,
        socket: &mut WebSocket,
    ) -> Option<End> {
        if let Some(closed) = self.admit(&id, "message") {
            return Some(closed);
        }
        if text.trim().is_empty() {
            let frame = ServerFrame::Error {
                id: Some(id),
                code: "empty_message",
                detail: "the message has no text".into(),
                retryable: false,
            };
            return send(socket, &frame).await;
        }
        let content = ContactContent::Text { text: text.clone() };
        let frame = self.record(session, id, content, &text).await;
        send(socket, &frame).await
    }

    /// A rating frame's checks (id, rate, reference, answer), then its survey-reply
    /// contact (Art. 16); answers on `socket`.
    async fn checked_rating(
        &mut self,
        session: &Arc<Session>,
        id: String,
        reference: String,
        answer: String,
        socket: &mut WebSocket,
    ) -> Option<End> {
        if let Some(closed) = self.admit(&id, "rating") {
            return Some(closed);
        }
        if !protocol::valid_reference(&reference) {
            return Some(end(
                close::MALFORMED,
                "rating reference must be 1 to 64 letters, digits or '-'",
            ));
        }
        let Some(answer) = protocol::valid_answer(&answer) else {
            let frame = ServerFrame::Error {
                id: Some(id),
                code: "invalid_rating",
                detail: format!(
                    "the answer must be a digit 1 to 5 or the rating's words, 1 to {} characters",
                    protocol::MAX_ANSWER_CHARS
                ),
                retryable: false,
            };
            return send(socket, &frame).await;
        };
        let content = ContactContent::SurveyReply {
            ticket_ref: TicketRef(reference),
            text: answer.to_owned(),
        };
        let frame = self.record(session, id, content, answer).await;
        send(socket, &frame).await
    }

    /// Art. 9: the restriction on this citizen (by the phone they give, or their visitor
    /// id), if any.
    fn restricted(&self, citizen: &CitizenIdentity, visitor: &str) -> Option<Restricted> {
        let now = Utc::now();
        let blocklist = &self.shared.ctx.blocklist;
        blocklist.check(citizen, now).or_else(|| {
            (citizen.kind != IdentityKind::ChatVisitor)
                .then(|| blocklist.check(&self.shared.ctx.keyer.chat_visitor(visitor), now))
                .flatten()
        })
    }

    async fn open(
        &mut self,
        visitor: String,
        phone: Option<String>,
        first: Option<&protocol::FirstMessage>,
        socket: &mut WebSocket,
    ) -> Option<End> {
        if self.shared.registry.len() >= self.shared.config.max_resumable_sessions {
            return Some(end(
                close::TRY_AGAIN_LATER,
                "too many open chat sessions; try again later",
            ));
        }
        let visitor = visitor.trim();
        if visitor.is_empty()
            || visitor.chars().count() > 128
            || visitor.chars().any(char::is_control)
        {
            return Some(end(
                close::MALFORMED,
                "visitor must be 1 to 128 printable characters",
            ));
        }
        let keyer = &self.shared.ctx.keyer;
        let now = Utc::now();
        let session_id = new_event_id();
        let mut reply_paths = vec![ReplyPath::ChatSession { session_id }];
        let citizen = match phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(raw) => match keyer.phone(raw) {
                Some(identity) => {
                    reply_paths.push(ReplyPath::Sms {
                        number: identity.value.clone(),
                    });
                    identity
                }
                None => return Some(end(close::MALFORMED, "phone is not a telephone number")),
            },
            None => keyer.chat_visitor(visitor),
        };
        // Art. 9: a restricted citizen opens no session, unless the first message carries
        // an Art. 15 emergency cue: an emergency is never turned away, and the restriction
        // is noted on its contacts and draft.
        let restriction = match self.restricted(&citizen, visitor) {
            None => None,
            Some(r) => {
                let emergency = first.is_some_and(|m| {
                    self.shared.classifier.classify(&m.text).urgency == Urgency::Emergency
                });
                if !emergency {
                    metrics::counter!("gateway_chat_refused_total", "reason" => "restricted")
                        .increment(1);
                    tracing::info!(citizen = %contract::mask_identity(&citizen), "Chat refused: citizen restricted (Art. 9)");
                    return Some(end(close::RESTRICTED, protocol::restricted_reason(r.until)));
                }
                metrics::counter!("gateway_restricted_emergencies_total", "channel" => "chat")
                    .increment(1);
                Some(RestrictionNote::from(&r))
            }
        };
        let (token, token_hash) = session::new_token();
        let record = SessionRecord {
            session_id,
            ticket_ref: TicketRef::generate(now),
            token_hash,
            citizen,
            reply_paths,
            contacts: Vec::new(),
            survey_replies: Vec::new(),
            text: String::new(),
            opened_at: now,
            last_activity_ms: now.timestamp_millis(),
            ended: false,
            restriction,
        };
        let submission = Submission {
            put_state: vec![(record.state_key(), to_json(&record))],
            ..Submission::default()
        };
        if let Err(e) = self.shared.ctx.intake.submit(submission).await {
            let code = if e.is_retryable() {
                close::TRY_AGAIN_LATER
            } else {
                close::POLICY
            };
            return Some(end(code, truncate(&format!("session not opened: {e}"))));
        }
        let frame = ServerFrame::Session {
            session_id,
            ticket_ref: record.ticket_ref.clone(),
            resume_token: token.clone(),
            resumed: false,
            last_seq: 0,
        };
        let session = self.shared.registry.insert(record);
        let attachment = session.attach();
        self.session = Some((session, attachment));
        metrics::counter!("gateway_chat_sessions_opened_total").increment(1);
        send(socket, &frame).await
    }

    /// Records one contact of the session, a message or a survey reply (`text` is the
    /// citizen's words in it); answers with its ack or an error frame.
    async fn record(
        &self,
        session: &Arc<Session>,
        id: String,
        content: ContactContent,
        text: &str,
    ) -> ServerFrame {
        // A survey reply is about another ticket: it adds nothing to this session's
        // kept text or draft.
        let survey_reply = matches!(content, ContactContent::SurveyReply { .. });
        let mut record = session.record.lock().await;
        if record.ended {
            return ServerFrame::Error {
                id: Some(id),
                code: "session_ended",
                detail: format!("session {} has ended; open a new one", record.ticket_ref),
                retryable: false,
            };
        }
        let now = Utc::now();
        let seq = record.contacts.len() as u32 + 1;
        let contact = Contact {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            ticket_ref: record.ticket_ref.clone(),
            channel: ChannelKind::Chat,
            received_at: now,
            citizen: record.citizen.clone(),
            reply_paths: record.reply_paths.clone(),
            content,
            channel_ref: Some(id.clone()),
            sequence: seq,
            rejected: None,
            restriction: record.restriction.clone(),
        };
        let contact_id = contact.id;
        // Update the record in place (no clone of its growing contact list) and put it
        // back as it was if the outbox refuses.
        let (kept_len, last_activity) = (record.text.len(), record.last_activity_ms);
        record.last_activity_ms = now.timestamp_millis();
        let mut put_state = Vec::new();
        if !survey_reply && record.keep_text(text) {
            put_state.push((record.state_key(), to_json(&*record)));
        }
        let stored = StoredAck {
            kind: "ack".into(),
            id: id.clone(),
            contact_id,
            seq,
            survey_reply,
        };
        let ack = stored.frame();
        // A client that resends a message after a reconnect (it never saw the ack) gets
        // the first ack again instead of a second contact.
        // The ack stored with the key is also how a restart learns the session's
        // contacts (see `SessionRecord::restore`).
        let once_key = record.ack_key(&id);
        // Art. 15 and Art. 9: an emergency makes (or updates) an urgent notice, abusive
        // words a restriction proposal, at once, recorded with the message.
        let screened = self.shared.ctx.screen.screen(&contact, text);
        let mut events = vec![contact.into()];
        events.extend(screened.iter().cloned());
        let submission = Submission {
            events,
            put_state,
            once: Some((once_key, to_json(&stored))),
            ..Submission::default()
        };
        match self.shared.ctx.intake.submit(submission).await {
            Ok(Receipt::Accepted) => {
                record.contacts.push(contact_id);
                if survey_reply {
                    record.survey_replies.push(contact_id);
                }
                self.shared.ctx.screen.recorded(&screened);
                metrics::counter!("gateway_contacts_accepted_total", "channel" => "chat")
                    .increment(1);
                ack
            }
            Ok(Receipt::Duplicate(first)) => {
                record.text.truncate(kept_len);
                serde_json::from_slice::<StoredAck>(&first)
                    .ok()
                    .map(|a| ServerFrame::Ack {
                        id: id.clone(),
                        contact_id: a.contact_id,
                        seq: a.seq,
                    })
                    .unwrap_or(ServerFrame::Error {
                        id: Some(id),
                        code: "duplicate",
                        detail: "this message id was already recorded".into(),
                        retryable: false,
                    })
            }
            Err(e) => {
                record.text.truncate(kept_len);
                record.last_activity_ms = last_activity;
                metrics::counter!("gateway_contacts_refused_total", "channel" => "chat", "reason" => error_code(&e)).increment(1);
                ServerFrame::Error {
                    id: Some(id),
                    code: error_code(&e),
                    detail: e.to_string(),
                    retryable: e.is_retryable(),
                }
            }
        }
    }
}

fn error_code(e: &IntakeError) -> &'static str {
    match e {
        IntakeError::Full { .. } => "overloaded",
        IntakeError::Storage(_) => "storage",
        IntakeError::ShuttingDown => "shutting_down",
        IntakeError::Invalid(_) => "invalid",
    }
}

/// Ends a session: records its ticket draft (if anything was said) and forgets it.
async fn finalize(
    shared: &Shared,
    session: &Arc<Session>,
) -> Result<(TicketRef, u32), IntakeError> {
    let mut record = session.record.lock().await;
    // Survey replies (`rating` frames) are about other tickets: not this draft's.
    let drafted = record.drafted();
    let messages = drafted.len() as u32;
    if record.ended {
        return Ok((record.ticket_ref.clone(), messages));
    }
    let mut submission = Submission {
        delete_state: vec![record.state_key()],
        ..Submission::default()
    };
    if messages > 0 {
        let mut draft = shared.classifier.draft(
            record.ticket_ref.clone(),
            ChannelKind::Chat,
            record.citizen.key.clone(),
            drafted,
            &record.text,
            Utc::now(),
        );
        draft.restriction = record.restriction.clone();
        submission.events.push(draft.into());
    }
    shared.ctx.intake.submit(submission).await?;
    record.ended = true;
    shared
        .registry
        .remove(record.session_id, &record.token_hash);
    metrics::counter!("gateway_chat_sessions_ended_total").increment(1);
    Ok((record.ticket_ref.clone(), messages))
}

/// Ends sessions nobody resumed within the resume window.
async fn sweeper(shared: Arc<Shared>) {
    let window_ms = shared.config.resume_window_secs as i64 * 1000;
    let every = Duration::from_secs((shared.config.resume_window_secs / 4).clamp(1, 30));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.ctx.shutdown.cancelled() => return,
        }
        let now = Utc::now().timestamp_millis();
        for session in shared.registry.all() {
            if session.is_attached() {
                continue;
            }
            let expired = match session.record.try_lock() {
                Ok(r) => now - r.last_activity_ms > window_ms,
                Err(_) => false,
            };
            if expired {
                match finalize(&shared, &session).await {
                    Ok((_, messages)) => {
                        tracing::info!(messages, "Chat session ended after the resume window")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Chat session could not be ended yet; will retry")
                    }
                }
            }
        }
        metrics::gauge!("gateway_chat_sessions").set(shared.registry.len() as f64);
    }
}

async fn next_pushed(
    pushed: Option<&mut tokio::sync::mpsc::Receiver<ServerFrame>>,
) -> Option<ServerFrame> {
    match pushed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn wait_cancelled(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Option<End> {
    let text = serde_json::to_string(frame).unwrap_or_default();
    match socket.send(Message::Text(text.into())).await {
        Ok(()) => None,
        Err(_) => Some(End::Gone),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our own plain data types: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > 123 {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "错".repeat(100);
        assert!(truncate(&long).len() <= 123);
    }

    #[test]
    fn art9_the_restricted_reason_fits_a_close_frame_and_says_until_when() {
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-30T02:15:07Z")
            .expect("literal")
            .with_timezone(&Utc);
        let reason = protocol::restricted_reason(Some(until));
        assert!(reason.len() <= 123, "{} bytes", reason.len());
        assert!(
            reason.contains("2026-12-30 10:15"),
            "Beijing time: {reason}"
        );
        assert!(reason.contains("110"));
        assert!(protocol::restricted_reason(None).len() <= 123);
    }
}
