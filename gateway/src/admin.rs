//! The admin port: `/healthz` (the process is alive), `/readyz` (the outbox takes
//! contacts and the Art. 9 restrictions are synced from their topic; Kafka's state is
//! reported but does not make the gateway unready, because intake goes on while Kafka is
//! down), `/metrics` (Prometheus text, behind a bearer token when one is configured) and
//! the restrictions API ([`crate::restriction_api`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use contract::Problem;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::kafka::KafkaHealth;
use crate::outbox::Outbox;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The outbox.
    pub outbox: Outbox,
    /// Kafka's health record.
    pub kafka: Arc<KafkaHealth>,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
    /// The bearer token `/metrics` requires, if any.
    pub token: Option<String>,
    /// The Art. 9 restrictions (their API is mounted beside).
    pub restrictions: Arc<crate::restrictions::Restrictions>,
    /// The urgent notices (their reader's state for `/readyz`).
    pub notices: Arc<crate::notices::NoticeService>,
    /// The live instances (who runs which notice's clock).
    pub members: Arc<crate::escalation::Members>,
    /// Readiness waits for the restrictions to sync until this passes; afterwards the
    /// gateway is ready without them (it admits with what it holds, and says so).
    pub restrictions_deadline: tokio::time::Instant,
}

/// The admin router.
pub fn router(state: AdminState, api: crate::restriction_api::ApiState) -> Router {
    let api_notices = (state.notices.clone(), state.token.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(crate::notice_api::router(crate::notice_api::NoticeApi {
            notices: api_notices.0,
            token: api_notices.1,
        }))
        .merge(crate::restriction_api::router(api))
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let writable = s.outbox.is_writable();
    let now = chrono::Utc::now().timestamp_millis();
    let oldest_age = s
        .outbox
        .oldest_accepted_ms()
        .map(|ms| (now - ms).max(0) as f64 / 1000.0);
    let last_error = s
        .kafka
        .last_error
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    let status = s.restrictions.status();
    let synced = status.is_synced();
    // Until the deadline an unsynced book makes the gateway unready (a restarted
    // instance must not admit a restricted citizen); after it, the gateway serves with
    // what it holds, because a hotline that takes no calls helps nobody.
    let restrictions_ok = synced || tokio::time::Instant::now() >= s.restrictions_deadline;
    let (count, active) = {
        let book = s.restrictions.book().read();
        (book.len(), book.active_len())
    };
    let ready = writable && restrictions_ok;
    let body = json!({
        "ready": ready,
        "outbox": {
            "writable": writable,
            "depth": s.outbox.depth(),
            "bytes": s.outbox.bytes(),
            "oldest_age_seconds": oldest_age,
        },
        "kafka": {
            "status": if s.kafka.is_up() { "up" } else { "down" },
            "failed_deliveries": s.kafka.failures.load(Ordering::Relaxed),
            "last_error": if last_error.is_empty() { None } else { Some(last_error) },
        },
        "notices": {
            "synced": s.notices.status().is_synced(),
            "member": s.members.me,
            "members": s.members.live().len(),
            "clocks": s.notices.unacknowledged().into_iter().filter(|id| s.members.owns(*id)).collect::<Vec<_>>(),
        },
        "restrictions": {
            "synced": synced,
            "restrictions": count,
            "active": active,
            "applied_from_topic": status.applied.load(Ordering::Relaxed),
            "unreadable": status.unreadable.load(Ordering::Relaxed),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
        if !ok {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send the admin token as `Authorization: Bearer <token>`",
            )
            .into_response();
        }
    }
    if let Some(ms) = s.outbox.oldest_accepted_ms() {
        let age = (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0;
        metrics::gauge!("gateway_outbox_oldest_age_seconds").set(age);
    } else {
        metrics::gauge!("gateway_outbox_oldest_age_seconds").set(0.0);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
