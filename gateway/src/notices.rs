//! Art. 15 urgent notices in the gateway: the book every instance folds the notices topic
//! into, the notice events citizens' emergency words make (through the channels'
//! [`contract::Screen`], [`crate::screen`]), and the linkage operators' feed.
//!
//! A channel whose citizen's words carry an emergency cue gets the notice event from
//! its screen and records it in the same submission as the contact: the notice is
//! durable the moment the citizen's words are, and on the notices topic a few
//! milliseconds later. Every instance reads the whole topic ([`crate::topic_reader`]),
//! so an operator connected to any instance sees every notice, and an acknowledgement
//! made on any instance reaches all of them.
//!
//! The feed (`[linkage] path`, default `/linkage/ws`, on the public port) is a WebSocket
//! for linkage operators, authenticated like the agent feed but with its own scope and
//! secret ([`contract::token`], scope `linkage:`): the token's subject is
//! `<target>:<operator>` (`119:op7`; `*:<id>` sees every target). On connect it sends a
//! `snapshot` of the notices of the last 24 hours for that target, then a `notice` frame
//! with the whole current state on every change. The operator acknowledges with
//! `{"type":"ack","notice_id":…}` and gives feedback with
//! `{"type":"feedback","notice_id":…,"status":"accepted"|"handled"|"returned","note":…}`;
//! both are answered once durable. Protocol: docs/routing.md.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use contract::token::TokenVerifier;
use contract::{
    EscalationVia, FeedbackStatus, Intake, IntakeError, Location, NoticeChange, NoticeEvent,
    Problem, ReplyPath, SCHEMA_VERSION, Submission, TicketRef,
};
use routing::notices::{EmergencyReport, NoticeBook, NoticeState};
use routing::{Clock, NoticePolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::topic_reader::{self, ReaderStatus, Taken};

/// Frames queued for the feed's sockets; a socket that falls further behind gets a fresh
/// snapshot instead of the frames it missed.
const FEED_QUEUE: usize = 256;
/// The largest frame an operator may send.
const MAX_OPERATOR_FRAME: usize = 4096;
/// How far back a snapshot reaches.
const SNAPSHOT_HOURS: i64 = 24;

/// The notices of this instance.
pub struct NoticeService {
    book: Mutex<NoticeBook>,
    policy: NoticePolicy,
    clock: Clock,
    intake: Arc<dyn Intake>,
    feed: broadcast::Sender<Arc<NoticeView>>,
    status: Arc<ReaderStatus>,
}

impl std::fmt::Debug for NoticeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeService").finish_non_exhaustive()
    }
}

impl NoticeService {
    /// Notices under `policy`, written through `intake`.
    pub fn new(intake: Arc<dyn Intake>, policy: NoticePolicy, clock: Clock) -> Arc<Self> {
        let (feed, _) = broadcast::channel(FEED_QUEUE);
        Arc::new(NoticeService {
            book: Mutex::new(NoticeBook::new()),
            policy,
            clock,
            intake,
            feed,
            status: Arc::new(ReaderStatus::default()),
        })
    }

    /// The reader's status.
    pub fn status(&self) -> &Arc<ReaderStatus> {
        &self.status
    }

    /// The notice policy.
    pub fn policy(&self) -> &NoticePolicy {
        &self.policy
    }

    /// The clock the notices run on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// What the clock owner must do now for notice `id`.
    pub fn due(&self, id: Uuid) -> Vec<routing::notices::Due> {
        self.book().due(id, &self.policy, self.clock.now())
    }

    /// Escalation calls of notice `id` begun before `before` without an outcome.
    pub fn unfinished_calls(&self, id: Uuid, before: DateTime<Utc>) -> Vec<u32> {
        self.book().unfinished_calls(id, before)
    }

    /// The notices whose clocks still run.
    pub fn unacknowledged(&self) -> Vec<Uuid> {
        self.book().unacknowledged().collect()
    }

    /// When notice `id` next needs its owner.
    pub fn next_due(&self, id: Uuid) -> Option<DateTime<Utc>> {
        self.book().next_due(id, &self.policy)
    }

    /// The target, kind and ticket of a notice (what an escalation says).
    pub fn summary(&self, id: Uuid) -> Option<(String, String, TicketRef)> {
        self.book().get(id).map(|n| {
            (
                n.opened.target.clone(),
                n.opened.kind.clone(),
                n.opened.ticket_ref.clone(),
            )
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, NoticeBook> {
        // The book stays consistent through a panic elsewhere (each apply is a few
        // inserts); a poisoned lock must not stop emergencies.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current view of one notice.
    pub fn view(&self, id: Uuid) -> Option<NoticeView> {
        self.book().get(id).map(|n| NoticeView::of(n, &self.policy))
    }

    /// Applies an event and tells the feed when it changed something.
    fn apply(&self, e: &NoticeEvent) -> bool {
        let view = {
            let mut book = self.book();
            if !book.apply(e) {
                return false;
            }
            book.get(e.notice_id)
                .map(|n| Arc::new(NoticeView::of(n, &self.policy)))
        };
        if let Some(v) = view {
            if matches!(e.change, NoticeChange::Opened(_)) {
                metrics::counter!("gateway_notices_opened_total", "target" => v.target.clone())
                    .increment(1);
            }
            // No receivers is fine: nobody is watching on this instance.
            let _ = self.feed.send(v);
        }
        true
    }

    /// Writes an event through the outbox, then applies it.
    pub async fn write(&self, e: NoticeEvent) -> Result<(), IntakeError> {
        self.write_with(e, Vec::new()).await
    }

    /// Writes an event and other events (an SMS request) in one submission, then applies
    /// the notice event.
    pub async fn write_with(
        &self,
        e: NoticeEvent,
        others: Vec<contract::Event>,
    ) -> Result<(), IntakeError> {
        let mut events = vec![e.clone().into()];
        events.extend(others);
        self.intake
            .submit(Submission {
                events,
                ..Submission::default()
            })
            .await?;
        self.apply(&e);
        Ok(())
    }

    /// Starts the reader of the notices topic; it stops soon after `stop`.
    pub fn spawn_reader(
        self: &Arc<Self>,
        client_props: Vec<(String, String)>,
        topic: String,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let this = self.clone();
        let synced = self.clone();
        topic_reader::spawn(
            "notices",
            client_props,
            topic,
            self.status.clone(),
            stop,
            move |payload| match serde_json::from_slice::<NoticeEvent>(payload) {
                Ok(e) => {
                    if this.apply(&e) {
                        Taken::Applied
                    } else {
                        Taken::Ignored
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Unreadable record on the notices topic; skipped");
                    Taken::Unreadable
                }
            },
            move || {
                tracing::info!(
                    notices = synced.book().len(),
                    "Notices synced from the topic"
                );
            },
        )
    }

    /// The feed's route.
    pub fn router(
        self: &Arc<Self>,
        path: &str,
        verifier: TokenVerifier,
        shutdown: CancellationToken,
    ) -> axum::Router {
        axum::Router::new()
            .route(path, get(upgrade))
            .with_state(FeedState {
                notices: self.clone(),
                verifier: Arc::new(verifier),
                shutdown,
            })
    }

    /// Every notice of the last 24 hours, newest first.
    pub fn recent_views(&self) -> Vec<NoticeView> {
        self.snapshot(&Target("*".into()))
    }

    fn snapshot(&self, target: &Target) -> Vec<NoticeView> {
        let now = self.clock.now();
        let since = now - chrono::Duration::hours(SNAPSHOT_HOURS);
        self.book()
            .recent(since)
            .into_iter()
            .filter(|n| target.sees(&n.opened.target))
            .map(|n| NoticeView::of(n, &self.policy))
            .collect()
    }
}

impl NoticeService {
    /// The notice event a citizen text with an Art. 15 cue makes (a new notice, an
    /// update of the open one), or nothing (a flood's repeat).
    pub fn on_emergency(&self, report: EmergencyReport<'_>) -> Option<NoticeEvent> {
        let event = self.book().decide(&report, &self.policy, self.clock.now());
        if event.is_none() {
            metrics::counter!("gateway_notice_reports_thinned_total").increment(1);
        }
        event
    }

    /// Called once the submission that carried `event` is durable.
    pub fn recorded(&self, event: &NoticeEvent) {
        if self.apply(event) && matches!(event.change, NoticeChange::Opened(_)) {
            tracing::warn!(notice = %event.notice_id, "URGENT NOTICE (Art. 15) opened");
        }
    }
}

/// A notice as operators see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NoticeView {
    /// The notice.
    pub notice_id: Uuid,
    /// The ticket that opened it.
    pub ticket_ref: TicketRef,
    /// `110`, `119`, `120` or a unit.
    pub target: String,
    /// The kind of emergency.
    pub kind: String,
    /// The cue as heard.
    pub heard: String,
    /// Why it was recognised: each rule with the words it used, and any word of a
    /// transcript mended by sound (issue 21).
    pub reasons: Vec<String>,
    /// The latest words around the cue.
    pub excerpt: String,
    /// Where, as far as the gateway could read it.
    pub location: Option<Location>,
    /// `phone`, `chat`, `sms`.
    pub channel: contract::ChannelKind,
    /// How to call or text the citizen back (the feed is authenticated; never logged).
    pub reply_paths: Vec<ReplyPath>,
    /// When the cue was detected.
    pub detected_at: DateTime<Utc>,
    /// Art. 15's limit: detection + 30 minutes.
    pub due_at: DateTime<Utc>,
    /// `open`, `acknowledged`, or `alarm` (30 minutes passed unacknowledged).
    pub state: &'static str,
    /// Who acknowledged it, how and when.
    pub acknowledged: Option<AckView>,
    /// Escalation steps taken.
    pub escalations: Vec<EscalationView>,
    /// How many citizens reported it (an outage incident counts each).
    pub reporters: usize,
    /// How many tickets carry it.
    pub tickets: usize,
    /// The district of an outage incident.
    pub incident_district: Option<String>,
    /// The citizen is restricted (Art. 9) and was let through for the emergency.
    pub restricted: bool,
    /// The linkage's feedback.
    pub feedback: Vec<FeedbackView>,
}

/// An acknowledgement.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AckView {
    /// Who.
    pub by: String,
    /// `feed`, `call` or `api`.
    pub via: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An escalation step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EscalationView {
    /// From 1.
    pub step: u32,
    /// When it began.
    pub at: DateTime<Utc>,
    /// `call`, `sms`.
    pub via: Vec<EscalationVia>,
    /// How its call ended.
    pub call: Option<String>,
}

/// Feedback.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeedbackView {
    /// What.
    pub status: FeedbackStatus,
    /// Their words.
    pub note: Option<String>,
    /// Who.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl NoticeView {
    fn of(n: &NoticeState, policy: &NoticePolicy) -> Self {
        let o = &n.opened;
        let state = if n.acknowledged.is_some() {
            "acknowledged"
        } else if n.alarm_at.is_some() {
            "alarm"
        } else {
            "open"
        };
        NoticeView {
            notice_id: n.notice_id,
            ticket_ref: o.ticket_ref.clone(),
            target: o.target.clone(),
            kind: o.kind.clone(),
            heard: o.cue.heard.clone(),
            reasons: o.cue.reasons.clone(),
            excerpt: n.latest_excerpt.clone(),
            location: o.location.clone(),
            channel: o.channel,
            reply_paths: o.reply_paths.clone(),
            detected_at: o.detected_at,
            due_at: o.detected_at
                + chrono::Duration::from_std(policy.alarm_after).unwrap_or_default(),
            state,
            acknowledged: n.acknowledged.as_ref().map(|a| AckView {
                by: a.by.clone(),
                via: a.via.clone(),
                at: a.at,
            }),
            escalations: n
                .escalations
                .iter()
                .map(|(step, (at, via))| EscalationView {
                    step: *step,
                    at: *at,
                    via: via.clone(),
                    call: n.calls.get(step).cloned(),
                })
                .collect(),
            reporters: n.reporters.len(),
            tickets: n.tickets.len(),
            incident_district: o.incident_district.clone(),
            restricted: o.restriction.is_some(),
            feedback: n
                .feedback
                .iter()
                .map(|f| FeedbackView {
                    status: f.status,
                    note: f.note.clone(),
                    by: f.by.clone(),
                    at: f.at,
                })
                .collect(),
        }
    }
}

/// Which notices an operator sees.
#[derive(Debug, Clone)]
struct Target(String);

impl Target {
    fn sees(&self, target: &str) -> bool {
        self.0 == "*" || self.0 == target
    }
}

#[derive(Clone)]
struct FeedState {
    notices: Arc<NoticeService>,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// What an operator sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum OperatorFrame {
    Ack {
        notice_id: Uuid,
    },
    Feedback {
        notice_id: Uuid,
        status: FeedbackStatus,
        #[serde(default)]
        note: Option<String>,
    },
}

/// What the feed sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FeedFrame<'a> {
    Snapshot { notices: Vec<NoticeView> },
    Notice { notice: &'a NoticeView },
    Acked { notice_id: Uuid },
    FeedbackRecorded { notice_id: Uuid },
    Error { code: &'static str, detail: String },
}

async fn upgrade(
    State(s): State<FeedState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let subject = contract::token::presented(&headers, query.access_token)
        .and_then(|t| s.verifier.verify(&t, contract::token::unix_now()));
    let Some((target, operator)) = subject
        .as_deref()
        .and_then(|sub| sub.split_once(':'))
        .filter(|(t, o)| !t.is_empty() && !o.is_empty())
        .map(|(t, o)| (Target(t.to_owned()), o.to_owned()))
    else {
        metrics::counter!("gateway_linkage_feed_refused_total").increment(1);
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "linkage-token",
            "Linkage operator token missing, forged or expired",
            "Present the operator token (subject <target>:<operator>) as a Bearer token or access_token.",
        )
        .into_response();
    };
    ws.max_message_size(MAX_OPERATOR_FRAME)
        .on_upgrade(move |socket| serve(socket, s, target, operator))
}

async fn send(socket: &mut WebSocket, frame: &FeedFrame<'_>) -> bool {
    match serde_json::to_string(frame) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

async fn serve(mut socket: WebSocket, s: FeedState, target: Target, operator: String) {
    metrics::gauge!("gateway_linkage_feed_connections").increment(1.0);
    let mut rx = s.notices.feed.subscribe();
    let snapshot = FeedFrame::Snapshot {
        notices: s.notices.snapshot(&target),
    };
    let mut open = send(&mut socket, &snapshot).await;
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    while open {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(view) => {
                    if target.sees(&view.target) {
                        open = send(&mut socket, &FeedFrame::Notice { notice: &view }).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    metrics::counter!("gateway_linkage_feed_lagged_total").increment(1);
                    let snapshot = FeedFrame::Snapshot { notices: s.notices.snapshot(&target) };
                    open = send(&mut socket, &snapshot).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let answer = operator_frame(&s.notices, &target, &operator, text.as_str()).await;
                    open = send(&mut socket, &answer).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                open = socket.send(Message::Ping(Vec::new().into())).await.is_ok();
            }
            () = s.shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: 1001, reason: "gateway shutting down".into() })))
                    .await;
                break;
            }
        }
    }
    metrics::gauge!("gateway_linkage_feed_connections").decrement(1.0);
}

/// Handles one operator frame; returns the answer.
async fn operator_frame(
    notices: &NoticeService,
    target: &Target,
    operator: &str,
    text: &str,
) -> FeedFrame<'static> {
    let frame: OperatorFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return FeedFrame::Error {
                code: "malformed",
                detail: format!("not an operator frame: {e}"),
            };
        }
    };
    let (id, change) = match frame {
        OperatorFrame::Ack { notice_id } => {
            (notice_id, NoticeChange::Acknowledged { via: "feed".into() })
        }
        OperatorFrame::Feedback {
            notice_id,
            status,
            note,
        } => {
            if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
                return FeedFrame::Error {
                    code: "malformed",
                    detail: "note is at most 500 characters".into(),
                };
            }
            (notice_id, NoticeChange::Feedback { status, note })
        }
    };
    match notices.view(id) {
        Some(v) if target.sees(&v.target) => {
            if matches!(change, NoticeChange::Acknowledged { .. }) && v.acknowledged.is_some() {
                return FeedFrame::Acked { notice_id: id };
            }
        }
        _ => {
            return FeedFrame::Error {
                code: "unknown_notice",
                detail: format!("no notice {id} for this operator"),
            };
        }
    }
    let acked = matches!(change, NoticeChange::Acknowledged { .. });
    let event = NoticeEvent {
        schema_version: SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        notice_id: id,
        at: notices.clock.now(),
        by: operator.to_owned(),
        change,
    };
    match notices.write(event).await {
        Ok(()) if acked => {
            tracing::info!(notice = %id, operator, "Urgent notice acknowledged on the feed");
            FeedFrame::Acked { notice_id: id }
        }
        Ok(()) => FeedFrame::FeedbackRecorded { notice_id: id },
        Err(e) => FeedFrame::Error {
            code: "not_recorded",
            detail: format!("not recorded, send it again: {e}"),
        },
    }
}
