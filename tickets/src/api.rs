//! The HTTP API (docs/openapi/tickets.json): agents, supervisors and handling units with
//! bearer tokens and roles, and the citizen's progress query (Art. 14).
//!
//! Tokens are the centre's signed tokens (`contract::token`) of the scope `tickets:`;
//! the subject names the role: `agent:<id>`, `supervisor:<id>`, `unit:<unit>:<person>`.
//! A unit sees and acts on only the tickets dispatched to it. Every error is an RFC 9457
//! problem; every list is paged by a cursor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use contract::token::TokenVerifier;
use contract::{Card, Problem, TicketState};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use crate::config::Clock;
use crate::rules::{self, Command, Edit, NonAcceptance, Reply, Role};
use crate::store::followup::AgentRevisit;
use crate::store::{CommandError, ListFilter, Overrule, Store, TicketRow};

/// The largest request body.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// Page sizes.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// The token scope.
pub const SCOPE: &str = "tickets:";

/// The API's state.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// Checks tokens.
    pub verifier: TokenVerifier,
    /// Now.
    pub clock: Clock,
    /// The progress query's limits.
    pub progress: Arc<ProgressGuard>,
    /// Renders metrics.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The progress query's guard: a global rate, and a lock on a reference after too many
/// wrong checks (the check is four digits: guessing must not pay).
#[derive(Debug)]
pub struct ProgressGuard {
    bucket: Mutex<contract::rate::TokenBucket>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    max_failures: u32,
}

const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// References with wrong checks remembered at most.
const MAX_REMEMBERED: usize = 100_000;

impl ProgressGuard {
    /// `per_sec` queries a second in all, `max_failures` wrong checks per reference per
    /// 15 minutes.
    pub fn new(per_sec: f64, max_failures: u32) -> Self {
        ProgressGuard {
            bucket: Mutex::new(contract::rate::TokenBucket::new(
                per_sec,
                per_sec.ceil() as u32,
            )),
            failures: Mutex::new(HashMap::new()),
            max_failures,
        }
    }

    fn admit(&self) -> bool {
        self.bucket.lock().map(|mut b| b.take()).unwrap_or(false)
    }

    fn locked(&self, r: &str) -> bool {
        let Ok(mut map) = self.failures.lock() else {
            return true;
        };
        map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        match map.get(r) {
            Some((n, _)) => *n >= self.max_failures,
            None => map.len() >= MAX_REMEMBERED,
        }
    }

    fn failed(&self, r: &str) {
        if let Ok(mut map) = self.failures.lock() {
            // Bounded: when full of live entries, a new reference is not remembered but
            // `locked` then refuses every reference it does not know (fail closed), so
            // filling the map buys a guesser nothing.
            if map.len() < MAX_REMEMBERED || map.contains_key(r) {
                let e = map.entry(r.to_owned()).or_insert((0, Instant::now()));
                e.0 += 1;
            }
        }
    }
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/units", get(units))
        .route("/tickets", get(list))
        .route("/tickets/{ticket_ref}", get(one).patch(edit))
        .route("/tickets/{ticket_ref}/history", get(history))
        .route("/tickets/{ticket_ref}/answer", post(answer))
        .route("/tickets/{ticket_ref}/not-accept", post(not_accept))
        .route("/tickets/{ticket_ref}/dispatch", post(dispatch))
        .route("/tickets/{ticket_ref}/accept", post(accept))
        .route("/tickets/{ticket_ref}/return", post(return_))
        .route(
            "/tickets/{ticket_ref}/return-decision",
            post(return_decision),
        )
        .route("/tickets/{ticket_ref}/extension", post(extension))
        .route("/tickets/{ticket_ref}/reply", post(reply))
        .route("/tickets/{ticket_ref}/reply-decision", post(reply_decision))
        .route("/tickets/{ticket_ref}/repeat", post(repeat))
        .route("/tickets/{ticket_ref}/followup", get(followup_of))
        .route("/tickets/{ticket_ref}/redo", post(redo))
        .route("/tickets/{ticket_ref}/revisit", post(revisit))
        .route("/tickets/{ticket_ref}/appeal", post(appeal))
        .route(
            "/tickets/{ticket_ref}/appeal-decision",
            post(appeal_decision),
        )
        .route("/revisits", get(revisits))
        .route("/appeals", get(appeals))
        .route("/survey-replies/unmatched", get(unmatched_replies))
        .route("/statistics", get(statistics))
        .route("/progress/{ticket_ref}", get(progress))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, slug, title, detail).into_response()
}

fn role(s: &ApiState, headers: &HeaderMap) -> Result<Role, Problem> {
    let Some(token) = contract::token::presented(headers, None) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send a ticket token as `Authorization: Bearer <token>`",
        ));
    };
    let subject = s
        .verifier
        .verify(&token, contract::token::unix_now())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "the token is not genuine, expired, or of another scope",
            )
        })?;
    Role::from_subject(&subject).ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "no-role",
            "No role",
            "the token names no role (agent:<id>, supervisor:<id>, unit:<unit>:<person>)",
        )
    })
}

fn bad_body(e: JsonRejection) -> Response {
    problem(
        e.status(),
        "malformed-request",
        "Malformed request",
        e.body_text(),
    )
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "Store failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "Store unavailable",
        "the ticket database did not answer; retry",
    )
    .retry_after(2)
    .into_response()
}

fn ref_ok(r: &str) -> Result<(), Problem> {
    if r.is_empty() || r.len() > 64 || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-reference",
            "Malformed reference",
            "a ticket reference is 1-64 letters, digits and '-'",
        ));
    }
    Ok(())
}

/// A ticket as the API shows it.
#[derive(Debug, Serialize)]
pub struct TicketView {
    ticket_ref: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    kind: String,
    summary: String,
    location: Option<String>,
    district: Option<String>,
    request: Option<String>,
    urgency: String,
    channel: String,
    received_at: DateTime<Utc>,
    suggested_unit: Option<String>,
    lead_unit: Option<String>,
    co_units: Vec<String>,
    dispatch_due: Option<NaiveDate>,
    handling_due: Option<NaiveDate>,
    due_provisional: bool,
    extended: bool,
    returns: i32,
    urge_count: i32,
    card: Card,
    parent_ref: Option<String>,
    repeat: RepeatView,
    records: serde_json::Value,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draft: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contacts: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    urges: Option<Vec<UrgeView>>,
}

#[derive(Debug, Serialize)]
struct RepeatView {
    decision: String,
    reason: String,
    of: Option<String>,
}

#[derive(Debug, Serialize)]
struct UrgeView {
    ticket_ref: String,
    reason: String,
}

fn view(r: TicketRow, today: NaiveDate) -> TicketView {
    let card = r.card_on(today);
    TicketView {
        card,
        ticket_ref: r.ticket_ref,
        state: r.state,
        outcome: r.outcome,
        kind: r.kind,
        summary: r.summary,
        location: r.location,
        district: r.district,
        request: r.request,
        urgency: r.urgency,
        channel: r.channel,
        received_at: r.received_at,
        suggested_unit: r.suggested_unit,
        lead_unit: r.lead_unit,
        co_units: r.co_units,
        dispatch_due: r.dispatch_due,
        handling_due: r.handling_due,
        due_provisional: r.due_provisional,
        extended: r.extended,
        returns: r.returns,
        urge_count: r.urge_count,
        parent_ref: r.parent_ref,
        repeat: RepeatView {
            decision: r.repeat_decision,
            reason: r.repeat_reason,
            of: r.repeat_of,
        },
        records: r.records,
        updated_at: r.updated_at,
        draft: None,
        contacts: None,
        urges: None,
    }
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match sqlx::query("SELECT 1").execute(s.store.pool()).await {
        Ok(_) => "ready".into_response(),
        Err(e) => store_failed(e),
    }
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    match &s.metrics {
        Some(h) => h.render().into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "no-metrics",
            "No metrics",
            "metrics are off",
        ),
    }
}

#[derive(Debug, Serialize)]
struct UnitView<'a> {
    id: &'a str,
    name: &'a str,
    kind: crate::units::UnitKind,
    parent: &'a str,
    district: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsQuery {
    /// The last id of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ))
    }
}

fn bad_query(e: QueryRejection) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "malformed-request",
        "Malformed query",
        e.body_text(),
    )
}

async fn units(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<UnitsQuery>, QueryRejection>,
) -> Response {
    if let Err(r) = role(&s, &headers) {
        return r.into_response();
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = match page_limit(q.limit) {
        Ok(l) => l as usize,
        Err(p) => return p.into_response(),
    };
    let mut items: Vec<UnitView<'_>> = s
        .store
        .units()
        .all()
        .filter(|u| q.cursor.as_deref().is_none_or(|c| u.id.as_str() > c))
        .take(limit + 1)
        .map(|u| UnitView {
            id: &u.id,
            name: &u.name,
            kind: u.kind,
            parent: &u.parent,
            district: &u.district,
        })
        .collect();
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|u| u.id.to_owned()).unwrap_or_default()
    });
    Json(serde_json::json!({ "items": items, "next": next })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    card: Option<String>,
    unit: Option<String>,
    cursor: Option<i64>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<TicketView>,
    /// The `cursor` of the next page, when there is one.
    next: Option<i64>,
}

async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let role = match role(&s, &headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = match page_limit(q.limit) {
        Ok(l) => l,
        Err(p) => return p.into_response(),
    };
    let state = match q.state.as_deref().map(TicketState::parse) {
        Some(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed query",
                "unknown state",
            );
        }
        Some(s) => s,
        None => None,
    };
    let card = match q.card.as_deref().map(Card::parse) {
        Some(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed query",
                "unknown card",
            );
        }
        Some(c) => c,
        None => None,
    };
    let unit = match &role {
        Role::Unit { unit, .. } => {
            if q.unit.as_ref().is_some_and(|u| u != unit) {
                return problem(
                    StatusCode::FORBIDDEN,
                    "not-your-unit",
                    "Not your unit",
                    "a unit lists only its own tickets",
                );
            }
            Some(unit.clone())
        }
        _ => q.unit.clone(),
    };
    let filter = ListFilter {
        state,
        unit,
        card,
        before: q.cursor,
        limit: limit + 1,
    };
    let today = rules::beijing_date(s.clock.now());
    match s.store.list(&filter).await {
        Ok(mut rows) => {
            let next = (rows.len() as i64 > limit).then(|| {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.id).unwrap_or_default()
            });
            Json(Page {
                items: rows.into_iter().map(|r| view(r, today)).collect(),
                next,
            })
            .into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn fetch_visible(s: &ApiState, role: &Role, r: &str) -> Result<TicketRow, Response> {
    ref_ok(r).map_err(IntoResponse::into_response)?;
    match s.store.ticket(r).await {
        Ok(Some(row)) if Store::visible(role, &row) => Ok(row),
        Ok(Some(_)) => Err(problem(
            StatusCode::FORBIDDEN,
            "not-your-ticket",
            "Not your ticket",
            "the ticket is not dispatched to your unit",
        )),
        Ok(None) => Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such ticket",
            format!("no ticket {r}"),
        )),
        Err(e) => Err(store_failed(e)),
    }
}

async fn one(State(s): State<ApiState>, Path(r): Path<String>, headers: HeaderMap) -> Response {
    let role = match role(&s, &headers) {
        Ok(x) => x,
        Err(x) => return x.into_response(),
    };
    let row = match fetch_visible(&s, &role, &r).await {
        Ok(x) => x,
        Err(x) => return x,
    };
    let draft = row.draft.clone();
    let today = rules::beijing_date(s.clock.now());
    let mut v = view(row, today);
    v.draft = Some(draft);
    if role.is_centre() {
        // The citizen's identity and contacts: the centre only (Art. 21).
        match (s.store.contacts(&r).await, s.store.urges_of(&r).await) {
            (Ok(c), Ok(u)) => {
                v.contacts = Some(c);
                v.urges = Some(
                    u.into_iter()
                        .map(|(ticket_ref, reason)| UrgeView { ticket_ref, reason })
                        .collect(),
                );
            }
            (Err(e), _) | (_, Err(e)) => return store_failed(e),
        }
    }
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// The number of the last entry of the previous page.
    cursor: Option<i64>,
    limit: Option<i64>,
}

async fn history(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let role = match role(&s, &headers) {
        Ok(x) => x,
        Err(x) => return x.into_response(),
    };
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = match page_limit(q.limit) {
        Ok(l) => l,
        Err(p) => return p.into_response(),
    };
    if let Err(x) = fetch_visible(&s, &role, &r).await {
        return x;
    }
    match s
        .store
        .history_page(&r, q.cursor.unwrap_or(0), limit + 1)
        .await
    {
        Ok(mut rows) => {
            let next = (rows.len() as i64 > limit).then(|| {
                rows.truncate(limit as usize);
                rows.last().map(|(seq, _)| *seq).unwrap_or_default()
            });
            let items: Vec<_> = rows.into_iter().map(|(_, h)| h).collect();
            Json(serde_json::json!({ "items": items, "next": next })).into_response()
        }
        Err(e) => store_failed(e),
    }
}

/// Runs a command and answers with the ticket, or the problem.
async fn run(s: &ApiState, headers: &HeaderMap, r: &str, command: Command) -> Response {
    let role = match role(s, headers) {
        Ok(x) => x,
        Err(x) => return x.into_response(),
    };
    if let Err(x) = ref_ok(r) {
        return x.into_response();
    }
    let now = s.clock.now();
    let today = rules::beijing_date(now);
    match s.store.command(r, &role, &command, now).await {
        Ok(row) => Json(view(row, today)).into_response(),
        Err(e) => command_problem(e),
    }
}

fn command_problem(e: CommandError) -> Response {
    match e {
        CommandError::NotFound(r) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such ticket",
            format!("no ticket {r}"),
        ),
        CommandError::Refused(refusal) => {
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            problem(status, refusal.code, "Refused", refusal.detail)
        }
        CommandError::Store(e) => store_failed(e),
    }
}

/// The body, once the token has been checked (an unauthenticated caller learns nothing
/// about what a body should hold).
macro_rules! body_or_problem {
    ($s:expr, $headers:expr, $body:expr) => {{
        if let Err(x) = role(&$s, &$headers) {
            return x.into_response();
        }
        match $body {
            Ok(Json(b)) => b,
            Err(e) => return bad_body(e),
        }
    }};
}

async fn edit(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Edit>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(&s, &headers, &r, Command::Edit(b)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerIn {
    answer: String,
}

async fn answer(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AnswerIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(&s, &headers, &r, Command::Answer(b.answer)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotAcceptIn {
    reason: NonAcceptance,
    note: String,
}

async fn not_accept(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<NotAcceptIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(&s, &headers, &r, Command::NotAccept(b.reason, b.note)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchIn {
    lead_unit: String,
    #[serde(default)]
    co_units: Vec<String>,
}

async fn dispatch(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<DispatchIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    if b.co_units.len() > 20 {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-units",
            "Refused",
            "at most 20 co-units",
        );
    }
    run(
        &s,
        &headers,
        &r,
        Command::Dispatch {
            lead: b.lead_unit,
            co_units: b.co_units,
        },
    )
    .await
}

async fn accept(State(s): State<ApiState>, Path(r): Path<String>, headers: HeaderMap) -> Response {
    run(&s, &headers, &r, Command::Accept).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnIn {
    reasons: String,
    suggested_unit: String,
}

async fn return_(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReturnIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(
        &s,
        &headers,
        &r,
        Command::Return {
            reasons: b.reasons,
            suggested_unit: b.suggested_unit,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnDecisionIn {
    approve: bool,
    note: String,
}

async fn return_decision(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReturnDecisionIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(
        &s,
        &headers,
        &r,
        Command::DecideReturn {
            approve: b.approve,
            note: b.note,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionIn {
    reason: String,
}

async fn extension(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ExtensionIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(&s, &headers, &r, Command::Extend(b.reason)).await
}

async fn reply(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReplyIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(
        &s,
        &headers,
        &r,
        Command::Reply(Reply {
            handled_at: b.handled_at,
            process: b.process,
            result: b.result,
            legal_basis: b.legal_basis,
        }),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyIn {
    #[serde(default)]
    handled_at: String,
    #[serde(default)]
    process: String,
    #[serde(default)]
    result: String,
    #[serde(default)]
    legal_basis: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyDecisionIn {
    accept: bool,
    #[serde(default)]
    note: String,
}

async fn reply_decision(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReplyDecisionIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(
        &s,
        &headers,
        &r,
        Command::DecideReply {
            accept: b.accept,
            note: b.note,
        },
    )
    .await
}

async fn repeat(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Overrule>, JsonRejection>,
) -> Response {
    let role = match role(&s, &headers) {
        Ok(x) => x,
        Err(x) => return x.into_response(),
    };
    let b = match body {
        Ok(Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    if let Err(x) = ref_ok(&r) {
        return x.into_response();
    }
    let now = s.clock.now();
    match s.store.overrule(&r, &role, &b, now).await {
        Ok(row) => Json(view(row, rules::beijing_date(now))).into_response(),
        Err(e) => command_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressQuery {
    check: String,
}

/// The citizen's progress query (Art. 14): the reference and the last four digits of
/// the phone number the ticket came from. A wrong reference and a wrong check answer
/// alike (404), so the answer tells a stranger nothing; after too many wrong checks the
/// reference is locked for a while (429).
async fn progress(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    q: Result<Query<ProgressQuery>, QueryRejection>,
) -> Response {
    if let Err(x) = ref_ok(&r) {
        return x.into_response();
    }
    let check = match q {
        Ok(Query(q)) if q.check.len() == 4 && q.check.bytes().all(|b| b.is_ascii_digit()) => {
            q.check
        }
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-check",
                "Malformed check",
                "give `check`: the last four digits of the phone number the ticket came from",
            );
        }
    };
    if !s.progress.admit() {
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many queries",
            "the progress query is busy; retry shortly",
        )
        .retry_after(1)
        .into_response();
    }
    if s.progress.locked(&r) {
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "check-locked",
            "Too many wrong checks",
            "too many wrong checks for this reference; retry in 15 minutes or call 12345",
        )
        .retry_after(FAILURE_WINDOW.as_secs())
        .into_response();
    }
    match s.store.progress(&r, &check).await {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => {
            s.progress.failed(&r);
            problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no ticket with this reference and check",
            )
        }
        Err(e) => store_failed(e),
    }
}

// ---- Follow-up (Arts. 13, 16-18) ---------------------------------------------------

/// The role, or the problem to answer with.
macro_rules! role_or_problem {
    ($s:expr, $headers:expr) => {
        match role(&$s, &$headers) {
            Ok(x) => x,
            Err(x) => return x.into_response(),
        }
    };
}

async fn followup_of(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
) -> Response {
    let role = role_or_problem!(s, headers);
    if let Err(x) = fetch_visible(&s, &role, &r).await {
        return x;
    }
    match s.store.followup_of(&r).await {
        Ok(mut f) => {
            if !role.is_centre() {
                // What the citizen wrote back stays with the centre (Art. 21).
                f.replies.clear();
            }
            Json(f).into_response()
        }
        Err(e) => store_failed(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedoIn {
    note: String,
}

async fn redo(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<RedoIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    run(&s, &headers, &r, Command::Redo(b.note)).await
}

async fn revisit(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AgentRevisit>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    let role = role_or_problem!(s, headers);
    if let Err(x) = ref_ok(&r) {
        return x.into_response();
    }
    match s.store.revisit_by_agent(&r, &role, &b, s.clock.now()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => command_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppealIn {
    evidence: String,
}

async fn appeal(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AppealIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    let role = role_or_problem!(s, headers);
    if let Err(x) = fetch_visible(&s, &role, &r).await {
        return x;
    }
    match s.store.appeal(&r, &role, &b.evidence, s.clock.now()).await {
        Ok(a) => (StatusCode::CREATED, Json(a)).into_response(),
        Err(e) => command_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppealDecisionIn {
    uphold: bool,
    note: String,
}

async fn appeal_decision(
    State(s): State<ApiState>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AppealDecisionIn>, JsonRejection>,
) -> Response {
    let b = body_or_problem!(s, headers, body);
    let role = role_or_problem!(s, headers);
    if let Err(x) = ref_ok(&r) {
        return x.into_response();
    }
    match s
        .store
        .decide_appeal(&r, &role, b.uphold, &b.note, s.clock.now())
        .await
    {
        Ok(a) => Json(a).into_response(),
        Err(e) => command_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    state: Option<String>,
    /// `<RFC 3339 time>_<uuid>` of the last item of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct TaskPage<T> {
    items: Vec<T>,
    next: Option<String>,
}

/// A task list's page: the state asked for, after which item, how many.
struct TaskPageQuery {
    state: String,
    cursor: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
}

fn task_query(
    q: Result<Query<TaskQuery>, QueryRejection>,
    states: &[&str],
) -> Result<TaskPageQuery, Box<Response>> {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return Err(Box::new(bad_query(e))),
    };
    let limit = page_limit(q.limit).map_err(|p| Box::new(p.into_response()))?;
    let state = q.state.unwrap_or_else(|| states[0].to_owned());
    if !states.contains(&state.as_str()) {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed query",
            format!("state is one of {}", states.join(", ")),
        )));
    }
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(c) => match c.split_once('_').and_then(|(t, id)| {
            Some((
                DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc),
                id.parse().ok()?,
            ))
        }) {
            Some(x) => Some(x),
            None => {
                return Err(Box::new(problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    "Malformed query",
                    "cursor is the `next` of the previous page",
                )));
            }
        },
    };
    Ok(TaskPageQuery {
        state,
        cursor,
        limit,
    })
}

fn task_page<T: Serialize>(
    mut items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid),
) -> Response {
    let next = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items
            .last()
            .map(|i| {
                let (t, id) = key(i);
                format!(
                    "{}_{id}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )
            })
            .unwrap_or_default()
    });
    Json(TaskPage { items, next }).into_response()
}

fn centre_or_forbidden(role: &Role) -> Result<(), Box<Response>> {
    if role.is_centre() {
        Ok(())
    } else {
        Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "centre-only",
            "Centre only",
            "only the hotline centre (agents, supervisors) sees this",
        )))
    }
}

/// The revisit task list (Art. 17): open revisits, oldest first.
async fn revisits(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<TaskQuery>, QueryRejection>,
) -> Response {
    let role = role_or_problem!(s, headers);
    if let Err(x) = centre_or_forbidden(&role) {
        return *x;
    }
    let p = match task_query(q, &["open", "done", "ended", "closed"]) {
        Ok(x) => x,
        Err(x) => return *x,
    };
    match s.store.revisits(&p.state, p.cursor, p.limit + 1).await {
        Ok(items) => task_page(items, p.limit, |v| (v.opened_at, v.id)),
        Err(e) => store_failed(e),
    }
}

/// Appeals (Art. 17): pending ones for a supervisor to decide, oldest first.
async fn appeals(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<TaskQuery>, QueryRejection>,
) -> Response {
    let role = role_or_problem!(s, headers);
    if let Err(x) = centre_or_forbidden(&role) {
        return *x;
    }
    let p = match task_query(q, &["pending", "upheld", "rejected"]) {
        Ok(x) => x,
        Err(x) => return *x,
    };
    match s.store.appeals(&p.state, p.cursor, p.limit + 1).await {
        Ok(items) => task_page(items, p.limit, |a| (a.filed_at, a.id)),
        Err(e) => store_failed(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<i64>,
}

/// Rating-shaped texts that answered no survey (kept, never a ticket).
async fn unmatched_replies(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Response {
    let role = role_or_problem!(s, headers);
    if let Err(x) = centre_or_forbidden(&role) {
        return *x;
    }
    let limit = match q.map(|Query(q)| page_limit(q.limit)) {
        Ok(Ok(l)) => l,
        Ok(Err(p)) => return p.into_response(),
        Err(e) => return bad_query(e),
    };
    match s.store.unmatched_replies(limit).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => store_failed(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    period: String,
    unit: Option<String>,
    format: Option<String>,
}

/// Art. 18: the statistics of a month (`2026-11`) or quarter (`2026-Q4`), as JSON or CSV
/// (`format=csv` or `Accept: text/csv`). A unit sees its own figures only.
async fn statistics(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Response {
    let role = role_or_problem!(s, headers);
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let Some(period) = crate::stats::Period::parse(&q.period) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed query",
            "period is a month (2026-11) or a quarter (2026-Q4)",
        );
    };
    let unit = match &role {
        Role::Unit { unit, .. } => {
            if q.unit.as_ref().is_some_and(|u| u != unit) {
                return problem(
                    StatusCode::FORBIDDEN,
                    "not-your-unit",
                    "Not your unit",
                    "a unit sees only its own figures",
                );
            }
            Some(unit.clone())
        }
        _ => q.unit.clone(),
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed query",
                "format is json or csv",
            );
        }
        None => headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    let started = Instant::now();
    let report = match crate::stats::report(s.store.pool(), period, unit.as_deref()).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    metrics::histogram!("tickets_statistics_seconds").record(started.elapsed().as_secs_f64());
    if csv {
        (
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "text/csv; charset=utf-8".to_owned(),
                ),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"statistics-{}.csv\"", report.period),
                ),
            ],
            crate::stats::csv(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn api() -> Router {
        let store = Store::lazy(
            "postgres://nobody@127.0.0.1:1/none".parse().expect("url"),
            Arc::new(crate::Calendar::builtin()),
            Arc::new(crate::units::Units::builtin()),
            Arc::new(crate::repeat::RepeatParams::builtin()),
            crate::store::OutTopics::default(),
        );
        router(ApiState {
            store,
            verifier: TokenVerifier::new(b"a-test-secret-of-enough-length", SCOPE),
            clock: Clock::default(),
            progress: Arc::new(ProgressGuard::new(10.0, 5)),
            metrics: None,
        })
    }

    /// Every operation docs/openapi/tickets.json documents is served, and every one that
    /// says it needs a token refuses a request without one (an unknown route would answer
    /// 404, a wrong method 405).
    #[tokio::test]
    async fn every_documented_operation_is_served_and_guarded() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi/tickets.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the OpenAPI document"))
                .expect("JSON");
        let open = ["/healthz", "/readyz", "/metrics", "/progress/{ticket_ref}"];
        let mut guarded = 0;
        for (route, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                let uri = route.replace("{ticket_ref}", "ZH20261130ABCDEF0123");
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .expect("request");
                let status = api().oneshot(request).await.expect("infallible").status();
                if open.contains(&route.as_str()) {
                    assert!(
                        status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED
                            || route == "/metrics",
                        "{method} {route}: {status}"
                    );
                } else {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {route}");
                    guarded += 1;
                }
            }
        }
        assert_eq!(
            guarded, 24,
            "units, list, get, edit, history, ten commands, and the follow-up's nine"
        );
    }

    #[test]
    fn the_progress_guard_locks_a_reference_and_fails_closed_when_full() {
        let g = ProgressGuard::new(10.0, 3);
        for _ in 0..3 {
            assert!(!g.locked("ZH1"));
            g.failed("ZH1");
        }
        assert!(g.locked("ZH1"), "three wrong checks lock it");
        assert!(!g.locked("ZH2"), "another reference is not");
        if let Ok(mut map) = g.failures.lock() {
            for i in 0..MAX_REMEMBERED {
                map.insert(format!("R{i}"), (1, Instant::now()));
            }
        }
        assert!(
            g.locked("ZH-new"),
            "full of live entries: unknown references wait"
        );
    }
}
