//! The restrictions API on the admin port (Art. 9), documented in
//! `docs/openapi/admin.json` and `docs/routing.md`.
//!
//! Every route needs the admin bearer token; every change is durable (the outbox) and
//! audited (an audit event) before the answer. Errors are RFC 9457 problems. Identities
//! come in clear (the number an agent reads on the screen) and are turned into the
//! citizen key at once; answers show them masked only.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, FixedOffset, Utc};
use contract::{
    CitizenKeyer, Evidence, IntakeError, Problem, ProposalSource, RestrictionChange,
    RestrictionReason, RestrictionState,
};
use routing::RestrictionError;
use routing::restrictions::Proposal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::restrictions::{ChangeError, Restrictions};

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The default and largest page of a list.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The restrictions.
    pub restrictions: Arc<Restrictions>,
    /// Turns identities into citizen keys.
    pub keyer: CitizenKeyer,
    /// The admin token; `None` turns the API off (403).
    pub token: Option<String>,
}

/// The API's routes, to merge into the admin router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/restrictions", post(propose).get(list))
        .route("/restrictions/{id}", get(one))
        .route("/restrictions/{id}/confirm", post(confirm))
        .route("/restrictions/{id}/lift", post(lift))
        .route("/restrictions/{id}/withdraw", post(withdraw))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Whom a proposal names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityIn {
    /// `phone` (calls and SMS, any notation) or `chat_visitor`.
    kind: IdentityKindIn,
    value: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IdentityKindIn {
    Phone,
    ChatVisitor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeIn {
    identity: IdentityIn,
    reason: RestrictionReason,
    evidence: Evidence,
    proposed_by: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmIn {
    confirmed_by: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndIn {
    by: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<RestrictionState>,
    after: Option<Uuid>,
    limit: Option<usize>,
}

/// A restriction as the API shows it: the stored fields (UTC) and the times in
/// Asia/Shanghai for people to read.
#[derive(Debug, Serialize)]
struct View {
    #[serde(flatten)]
    restriction: RestrictionChange,
    /// The times in Asia/Shanghai (UTC+08:00).
    shanghai: LocalTimes,
}

#[derive(Debug, Serialize)]
struct LocalTimes {
    proposed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<View>,
    /// The cursor of the next page (`after`), when there is one.
    next: Option<Uuid>,
}

/// Asia/Shanghai's offset. China has kept UTC+8 without daylight saving since 1991, so
/// a fixed offset is exact for every date this service handles (and spares a time-zone
/// database).
fn shanghai(t: DateTime<Utc>) -> String {
    let offset = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!("valid offset"));
    t.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn view(r: RestrictionChange) -> View {
    let shanghai_times = LocalTimes {
        proposed_at: shanghai(r.proposed_at),
        confirmed_at: r.confirmed_at.map(shanghai),
        expires_at: r.expires_at.map(shanghai),
        ended_at: r.ended_at.map(shanghai),
    };
    View {
        restriction: r,
        shanghai: shanghai_times,
    }
}

/// Checks the admin bearer token (the API is off, 403, without one configured).
pub(crate) fn authorised(token: Option<&str>, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(token) = token else {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "admin-token-required",
            "Restrictions API disabled",
            "the restrictions API needs an admin token: set admin.token_env",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| crate::admin::constant_time_eq(p.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send the admin token as `Authorization: Bearer <token>`",
        ))
    }
}

pub(crate) fn bad_body(e: JsonRejection) -> Response {
    Problem::new(
        e.status(),
        "malformed-request",
        "Malformed request",
        e.body_text(),
    )
    .into_response()
}

fn refused(e: RestrictionError) -> Response {
    let (status, slug, title) = match &e {
        RestrictionError::NotFound(_) => {
            (StatusCode::NOT_FOUND, "not-found", "No such restriction")
        }
        RestrictionError::Conflict { .. } => (
            StatusCode::CONFLICT,
            "restriction-exists",
            "The citizen already has a live restriction",
        ),
        RestrictionError::WrongState { .. } => (
            StatusCode::CONFLICT,
            "wrong-state",
            "Not possible in the restriction's state",
        ),
        RestrictionError::SamePerson(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "second-person-required",
            "A second person must confirm",
        ),
        RestrictionError::Invalid(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
        ),
    };
    Problem::new(status, slug, title, e.to_string()).into_response()
}

fn not_written(e: IntakeError) -> Response {
    let p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-recorded",
        "Not recorded",
        format!("the change was not recorded: {e}"),
    );
    if e.is_retryable() {
        p.retry_after(5).into_response()
    } else {
        p.into_response()
    }
}

fn answer(
    result: Result<RestrictionChange, ChangeError<RestrictionError>>,
    status: StatusCode,
) -> Response {
    match result {
        Ok(r) => {
            let location = format!("/restrictions/{}", r.restriction_id);
            (status, [(header::LOCATION, location)], axum::Json(view(r))).into_response()
        }
        Err(ChangeError::Refused(e)) => refused(e),
        Err(ChangeError::Intake(e)) => not_written(e),
    }
}

async fn propose(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<axum::Json<ProposeIn>, JsonRejection>,
) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let body = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    let citizen = match body.identity.kind {
        IdentityKindIn::Phone => match s.keyer.phone(&body.identity.value) {
            Some(c) => c,
            None => {
                return refused(RestrictionError::Invalid(
                    "identity.value is not a telephone number".into(),
                ));
            }
        },
        IdentityKindIn::ChatVisitor => {
            let v = body.identity.value.trim();
            if v.is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
                return refused(RestrictionError::Invalid(
                    "identity.value must be 1 to 128 printable characters".into(),
                ));
            }
            s.keyer.chat_visitor(v)
        }
    };
    let proposal = Proposal {
        citizen,
        reason: body.reason,
        evidence: body.evidence,
        proposed_by: body.proposed_by,
        source: ProposalSource::Staff,
    };
    answer(
        s.restrictions
            .change(|book, now| book.propose(proposal, now))
            .await,
        StatusCode::CREATED,
    )
}

fn restriction_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such restriction",
            format!("{raw:?} is not a restriction id"),
        )
    })
}

async fn confirm(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<axum::Json<ConfirmIn>, JsonRejection>,
) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let id = match restriction_id(&id) {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    let body = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    answer(
        s.restrictions
            .change(|book, now| book.confirm(id, &body.confirmed_by, now))
            .await,
        StatusCode::OK,
    )
}

async fn lift(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<axum::Json<EndIn>, JsonRejection>,
) -> Response {
    end(s, id, headers, body, |book, id, b, now| {
        book.lift(id, &b.by, &b.reason, now)
    })
    .await
}

async fn withdraw(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<axum::Json<EndIn>, JsonRejection>,
) -> Response {
    end(s, id, headers, body, |book, id, b, now| {
        book.withdraw(id, &b.by, &b.reason, now)
    })
    .await
}

type EndFn = fn(
    &routing::RestrictionBook,
    Uuid,
    &EndIn,
    DateTime<Utc>,
) -> Result<RestrictionChange, RestrictionError>;

async fn end(
    s: ApiState,
    id: String,
    headers: HeaderMap,
    body: Result<axum::Json<EndIn>, JsonRejection>,
    op: EndFn,
) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let id = match restriction_id(&id) {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    let body = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    answer(
        s.restrictions
            .change(|book, now| op(book, id, &body, now))
            .await,
        StatusCode::OK,
    )
}

async fn one(State(s): State<ApiState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let id = match restriction_id(&id) {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    let now = s.restrictions.clock().now();
    let found = {
        let book = s.restrictions.book().read();
        book.get(id).map(|r| {
            let mut r = r.clone();
            r.state = routing::restrictions::effective_state(&r, now);
            r
        })
    };
    match found {
        Some(r) => axum::Json(view(r)).into_response(),
        None => refused(RestrictionError::NotFound(id)),
    }
}

async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed query",
                e.body_text(),
            )
            .into_response();
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return refused(RestrictionError::Invalid(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let now = s.restrictions.clock().now();
    let (items, next) = s
        .restrictions
        .book()
        .read()
        .list(q.state, q.after, limit, now);
    axum::Json(Page {
        items: items.into_iter().map(view).collect(),
        next,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use contract::{Receipt, Submission};
    use tower::ServiceExt;

    /// Records nothing: the routes are refused before they write.
    struct Nowhere;

    #[async_trait::async_trait]
    impl contract::Intake for Nowhere {
        async fn submit(&self, _: Submission) -> Result<Receipt, IntakeError> {
            Err(IntakeError::ShuttingDown)
        }
        async fn scan_state(&self, _: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
            Ok(vec![])
        }
        async fn scan_once(&self, _: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
            Ok(vec![])
        }
    }

    fn api() -> Router {
        let token = Some("a-token-of-enough-length".to_owned());
        router(ApiState {
            restrictions: Restrictions::new(Arc::new(Nowhere), routing::Clock::system()),
            keyer: CitizenKeyer::new(b"a-test-secret-of-enough-length"),
            token: token.clone(),
        })
        .merge(crate::notice_api::router(crate::notice_api::NoticeApi {
            notices: crate::notices::NoticeService::new(
                Arc::new(Nowhere),
                routing::NoticePolicy::default(),
                routing::Clock::system(),
            ),
            token,
        }))
    }

    /// Every operation docs/openapi/admin.json documents is served (and guarded): an
    /// unknown route would answer 404 and a wrong method 405, a guarded one 401.
    #[tokio::test]
    async fn every_documented_operation_is_served_behind_the_token() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi/admin.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the OpenAPI document"))
                .expect("JSON");
        let mut operations = 0;
        for (route, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                let uri = route.replace("{id}", "0193e5a0-0000-7000-8000-000000000001");
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(uri)
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .expect("request");
                let response = api().oneshot(request).await.expect("infallible");
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {route}"
                );
                operations += 1;
            }
        }
        assert_eq!(
            operations, 9,
            "propose, list, get, confirm, lift, withdraw; list, get and acknowledge notices"
        );
    }

    #[test]
    fn times_are_shown_in_beijing_time() {
        let t = DateTime::parse_from_rfc3339("2026-12-30T18:15:07Z")
            .expect("literal")
            .with_timezone(&Utc);
        assert_eq!(shanghai(t), "2026-12-31 02:15:07 +08:00");
    }
}
