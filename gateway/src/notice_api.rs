//! Urgent notices on the admin port (Art. 15), for supervisors' pages and tools: list the
//! recent ones, read one, acknowledge one on behalf of a linkage operator reached by other
//! means (`via: api`). Behind the admin token, like the restrictions API; documented in
//! `docs/openapi/admin.json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use contract::Problem;
use serde::Deserialize;
use uuid::Uuid;

use crate::notices::NoticeService;
use crate::restriction_api::{authorised, bad_body};

/// What the handlers read.
#[derive(Clone)]
pub struct NoticeApi {
    /// The notices.
    pub notices: Arc<NoticeService>,
    /// The admin token; `None` turns the API off (403).
    pub token: Option<String>,
}

/// The routes, to merge into the admin router.
pub fn router(state: NoticeApi) -> Router {
    Router::new()
        .route("/notices", get(list))
        .route("/notices/{id}", get(one))
        .route("/notices/{id}/ack", post(ack))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckIn {
    by: String,
}

fn not_found(raw: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such notice",
        format!("no notice {raw:?}"),
    )
    .into_response()
}

async fn list(State(s): State<NoticeApi>, headers: HeaderMap) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    axum::Json(serde_json::json!({ "notices": s.notices.recent_views() })).into_response()
}

async fn one(State(s): State<NoticeApi>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    match id.parse::<Uuid>().ok().and_then(|i| s.notices.view(i)) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn ack(
    State(s): State<NoticeApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<axum::Json<AckIn>, JsonRejection>,
) -> Response {
    if let Err(p) = authorised(s.token.as_deref(), &headers) {
        return p.into_response();
    }
    let Some(notice) = id
        .parse::<Uuid>()
        .ok()
        .filter(|i| s.notices.view(*i).is_some())
    else {
        return not_found(&id);
    };
    let body = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return bad_body(e),
    };
    if body.by.trim().is_empty() || body.by.chars().count() > 64 {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            "by must be 1 to 64 characters",
        )
        .into_response();
    }
    let event = routing::notices::ack_event(notice, &body.by, "api", s.notices.clock().now());
    match s.notices.write(event).await {
        Ok(()) => match s.notices.view(notice) {
            Some(v) => axum::Json(v).into_response(),
            None => not_found(&id),
        },
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-recorded",
            "Not recorded",
            format!("the acknowledgement was not recorded: {e}"),
        )
        .retry_after(5)
        .into_response(),
    }
}
