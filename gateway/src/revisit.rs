//! Art. 17 revisit calls: the ticket service's requests on the revisit-calls topic, each
//! placed once by one instance through the phone channel's revisit dialer, how each went
//! on the revisit-results topic (docs/sip.md#revisit-calls-art-17).
//!
//! A request topic ([`crate::request_topic`]) with the group
//! `<kafka.group_prefix>-revisit-calls`: up to [`CONCURRENT_CALLS`] calls at once, their
//! offsets committed in the order they were read. The result is recorded through the
//! outbox with the once-key `revisit/<request id>`, so a request read twice (published
//! twice, or delivered again after a crash before the commit) is one call and one result
//! on this instance. A request whose `expires_at` has passed ends `failed` without a
//! call. A call the shutdown breaks off without a rating is not recorded: the request is
//! read again after the restart, and the citizen is not charged a failed attempt for the
//! gateway's restart.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use contract::{
    Event, Rating, RevisitCall, RevisitCallOutcome, RevisitDialer, RevisitResult, SCHEMA_VERSION,
};
use tokio_util::sync::CancellationToken;

use crate::request_topic::{Handler, Spec};

/// Revisit calls in progress at once on one instance.
pub const CONCURRENT_CALLS: usize = 8;

/// The revisit-call requests: up to [`CONCURRENT_CALLS`] at once.
pub static REQUESTS: Spec = Spec {
    group: "revisit-calls",
    once_prefix: "revisit",
    client_id: "hotline-gateway-revisit-calls",
    name: "Revisit call",
    counter: "gateway_revisit_requests_total",
    concurrency: CONCURRENT_CALLS,
};

/// Places revisit calls.
pub struct RevisitCalls {
    dialer: Arc<dyn RevisitDialer>,
}

impl RevisitCalls {
    /// Calls through `dialer`.
    pub fn new(dialer: Arc<dyn RevisitDialer>) -> Self {
        RevisitCalls { dialer }
    }
}

/// The result event of a request that went `outcome`.
fn result(request: &RevisitCall, outcome: RevisitCallOutcome, rating: Option<Rating>) -> Event {
    RevisitResult {
        schema_version: SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        request_id: request.id,
        ticket_ref: request.ticket_ref.clone(),
        attempt: request.attempt,
        at: Utc::now(),
        outcome,
        rating: rating.filter(|_| outcome == RevisitCallOutcome::Rated),
    }
    .into()
}

#[async_trait]
impl Handler for RevisitCalls {
    type Request = RevisitCall;

    fn id(&self, request: &RevisitCall) -> uuid::Uuid {
        request.id
    }

    async fn handle(&self, request: RevisitCall, stop: &CancellationToken) -> Option<Event> {
        if request.expires_at <= Utc::now() {
            tracing::info!(ticket = %request.ticket_ref, request = %request.id, attempt = request.attempt, "Revisit request expired before its call; failed");
            metrics::counter!("gateway_revisit_requests_total", "state" => "expired").increment(1);
            return Some(result(&request, RevisitCallOutcome::Failed, None));
        }
        let (outcome, rating) = self.dialer.call(&request).await;
        if outcome != RevisitCallOutcome::Rated && stop.is_cancelled() {
            tracing::info!(ticket = %request.ticket_ref, request = %request.id, "Revisit call broken off by the shutdown; it is placed again after the restart");
            return None;
        }
        metrics::counter!("gateway_revisit_requests_total", "state" => "done").increment(1);
        Some(result(&request, outcome, rating))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Fake {
        calls: AtomicUsize,
        answer: (RevisitCallOutcome, Option<Rating>),
    }

    #[async_trait]
    impl RevisitDialer for Fake {
        async fn call(&self, _call: &RevisitCall) -> (RevisitCallOutcome, Option<Rating>) {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer
        }
    }

    fn request(expires_in: chrono::Duration) -> RevisitCall {
        let now = Utc::now();
        RevisitCall {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            ticket_ref: contract::TicketRef::generate(now),
            attempt: 2,
            requested_at: now,
            expires_at: now + expires_in,
            to: "13800138000".into(),
        }
    }

    fn handler(answer: (RevisitCallOutcome, Option<Rating>)) -> (RevisitCalls, Arc<Fake>) {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            answer,
        });
        (RevisitCalls::new(fake.clone()), fake)
    }

    fn unpack(e: Option<Event>) -> RevisitResult {
        match e {
            Some(Event::RevisitResult(r)) => *r,
            other => panic!("not a revisit result: {other:?}"),
        }
    }

    #[tokio::test]
    async fn art17_a_rating_is_the_result_with_the_attempt_copied() {
        let (h, fake) = handler((RevisitCallOutcome::Rated, Some(Rating::Satisfied)));
        let req = request(chrono::Duration::hours(1));
        assert_eq!(h.id(&req), req.id);
        let r = unpack(h.handle(req.clone(), &CancellationToken::new()).await);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            (r.request_id, r.attempt, r.outcome, r.rating),
            (
                req.id,
                2,
                RevisitCallOutcome::Rated,
                Some(Rating::Satisfied)
            )
        );
        assert_eq!(r.ticket_ref, req.ticket_ref);
        assert_ne!(r.id, req.id);
    }

    #[tokio::test]
    async fn art17_an_expired_request_fails_without_a_call() {
        let (h, fake) = handler((RevisitCallOutcome::Rated, Some(Rating::Satisfied)));
        let r = unpack(
            h.handle(
                request(chrono::Duration::seconds(-1)),
                &CancellationToken::new(),
            )
            .await,
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert_eq!((r.outcome, r.rating), (RevisitCallOutcome::Failed, None));
    }

    #[tokio::test]
    async fn art17_a_call_the_shutdown_broke_off_is_not_recorded_but_a_rating_is() {
        let stop = CancellationToken::new();
        stop.cancel();
        let (h, _) = handler((RevisitCallOutcome::NoDigit, None));
        assert!(
            h.handle(request(chrono::Duration::hours(1)), &stop)
                .await
                .is_none()
        );
        let (h, _) = handler((RevisitCallOutcome::Rated, Some(Rating::Dissatisfied)));
        let r = unpack(h.handle(request(chrono::Duration::hours(1)), &stop).await);
        assert_eq!(r.rating, Some(Rating::Dissatisfied));
    }
}
