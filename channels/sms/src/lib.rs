//! The SMS channel: carriers deliver inbound text messages to a signed HTTP webhook.
//!
//! `POST /sms/{carrier}/inbound`, JSON or form body. Each carrier has its own secret;
//! the request carries `X-Hotline-Timestamp` (Unix seconds) and `X-Hotline-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`, and is refused outside the
//! replay window. The webhook is idempotent on the carrier's message id: a redelivered
//! SMS gets the first receipt again and makes no second contact. It answers 200 only
//! once the contact is durable; every refusal is an RFC 9457 problem.
//!
//! Each SMS is one contact and one ticket draft (linking repeat contacts to earlier
//! tickets, Art. 14, is routing's job).

pub mod outbound;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use contract::event::new_event_id;
use contract::rate::TokenBucket;
use contract::{
    BoxError, Channel, ChannelContext, ChannelKind, ChannelParts, Contact, ContactContent,
    IntakeError, Problem, Receipt, ReplyPath, RestrictionNote, SCHEMA_VERSION, Submission,
    TicketRef, Urgency,
};
use hmac::{Hmac, Mac};
use routing::Classifier;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// Header carrying the request's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-hotline-timestamp";
/// Header carrying `v1=<hex signature>`.
pub const SIGNATURE_HEADER: &str = "x-hotline-signature";
/// Default replay window, in seconds either side of now.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;
/// Default largest request body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// Default longest SMS text, in characters (a long concatenated SMS).
pub const DEFAULT_MAX_TEXT_CHARS: usize = 1600;
/// Default sustained requests per second per carrier.
pub const DEFAULT_RATE_PER_SECOND: f64 = 200.0;
/// Default burst of requests above the sustained rate, per carrier.
pub const DEFAULT_BURST: u32 = 400;
/// Minimum length of a carrier secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// `[[channels.sms.carriers]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// The carrier's name, the `{carrier}` of the webhook path (`[a-z0-9_-]`, 1-32).
    pub name: String,
    /// Environment variable holding the carrier's signing secret (at least 16 bytes).
    pub secret_env: String,
}

/// `[channels.sms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// The carriers allowed to deliver.
    pub carriers: Vec<CarrierConfig>,
    /// Seconds a signed request stays valid either side of now.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
    /// Largest request body, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Longest SMS text, in characters.
    #[serde(default = "default_max_text")]
    pub max_text_chars: usize,
    /// Sustained signed requests per second a carrier may send; beyond, 429.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// Requests a carrier may send in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Outbound texts (urgent-notice escalation, result SMS, survey): the carrier's send
    /// API. Without it the gateway sends no texts.
    #[serde(default)]
    pub outbound: Option<outbound::OutboundConfig>,
}

fn default_replay_window() -> u64 {
    DEFAULT_REPLAY_WINDOW_SECS
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_text() -> usize {
    DEFAULT_MAX_TEXT_CHARS
}
fn default_rate() -> f64 {
    DEFAULT_RATE_PER_SECOND
}
fn default_burst() -> u32 {
    DEFAULT_BURST
}

/// An SMS setting out of range or a missing secret.
#[derive(Debug, thiserror::Error)]
pub enum SmsConfigError {
    /// A value is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A carrier's secret is missing or short.
    #[error("carrier {carrier}: environment variable {var} is missing or shorter than 16 bytes")]
    Secret {
        /// The carrier.
        carrier: String,
        /// The variable.
        var: String,
    },
}

impl SmsConfig {
    /// Checks every setting and that each carrier's secret is in `env`.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), SmsConfigError> {
        let invalid = |field: &str, reason: &str| SmsConfigError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.carriers.is_empty() {
            return Err(invalid("carriers", "at least one carrier is required"));
        }
        if !(30..=3600).contains(&self.replay_window_secs) {
            return Err(invalid("replay_window_secs", "must be 30 to 3600"));
        }
        if !(1024..=1 << 20).contains(&self.max_body_bytes) {
            return Err(invalid("max_body_bytes", "must be 1024 to 1048576"));
        }
        if self.max_text_chars == 0 {
            return Err(invalid("max_text_chars", "must be at least 1"));
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= 100_000.0) {
            return Err(invalid(
                "rate_per_second",
                "must be above 0 and at most 100000",
            ));
        }
        if self.burst == 0 {
            return Err(invalid("burst", "must be at least 1"));
        }
        if let Some(o) = &self.outbound {
            o.validate().map_err(|e| invalid("outbound", &e))?;
            if !self.carriers.iter().any(|c| c.name == o.carrier) {
                return Err(invalid("outbound.carrier", "must name one of carriers"));
            }
        }
        self.secrets(env).map(|_| ())
    }

    /// Each carrier's secret, from `env`.
    pub fn secrets(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HashMap<String, Vec<u8>>, SmsConfigError> {
        let mut out = HashMap::new();
        for c in &self.carriers {
            let ok_name = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                });
            if !ok_name {
                return Err(SmsConfigError::Invalid {
                    field: format!("carriers.{}", c.name),
                    reason: "name must be 1-32 of [a-z0-9_-]".into(),
                });
            }
            let secret = env(&c.secret_env)
                .filter(|s| s.len() >= MIN_SECRET_BYTES)
                .ok_or_else(|| SmsConfigError::Secret {
                    carrier: c.name.clone(),
                    var: c.secret_env.clone(),
                })?;
            if out.insert(c.name.clone(), secret.into_bytes()).is_some() {
                return Err(SmsConfigError::Invalid {
                    field: format!("carriers.{}", c.name),
                    reason: "carrier named twice".into(),
                });
            }
        }
        Ok(out)
    }
}

/// The SMS channel plug-in.
#[derive(Debug)]
pub struct SmsChannel {
    config: SmsConfig,
}

impl SmsChannel {
    /// An SMS channel with these settings.
    pub fn new(config: SmsConfig) -> Self {
        SmsChannel { config }
    }
}

struct Shared {
    config: SmsConfig,
    secrets: HashMap<String, Vec<u8>>,
    /// One bucket per carrier (a std Mutex: never held across an await).
    limits: HashMap<String, std::sync::Mutex<TokenBucket>>,
    ctx: ChannelContext,
    classifier: Classifier,
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn build(self: Box<Self>, ctx: ChannelContext) -> Result<ChannelParts, BoxError> {
        let secrets = self.config.secrets(&|var| std::env::var(var).ok())?;
        let limit = self.config.max_body_bytes;
        let limits = secrets
            .keys()
            .map(|c| {
                let bucket = TokenBucket::new(self.config.rate_per_second, self.config.burst);
                (c.clone(), std::sync::Mutex::new(bucket))
            })
            .collect();
        let sms_sender: Option<Arc<dyn contract::SmsSender>> = match &self.config.outbound {
            Some(o) => {
                let secret = secrets.get(&o.carrier).cloned().unwrap_or_default();
                Some(Arc::new(outbound::CarrierSender::new(o.clone(), secret)?))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            config: self.config,
            secrets,
            limits,
            ctx,
            classifier: Classifier::builtin(),
        });
        let router = Router::new()
            .route("/sms/{carrier}/inbound", post(inbound))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(shared);
        Ok(ChannelParts {
            router: Some(router),
            sms_sender,
            ..ChannelParts::default()
        })
    }
}

/// An inbound SMS as carriers post it (JSON or form fields of the same names).
#[derive(Debug, Deserialize)]
pub struct InboundSms {
    /// The carrier's id of the message (idempotency key; 1-128 characters).
    pub message_id: String,
    /// The sender's number.
    pub from: String,
    /// The number it was sent to (the hotline's).
    #[serde(default)]
    pub to: Option<String>,
    /// The text.
    pub text: String,
}

/// What the webhook answers on success (also kept for redeliveries).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmsReceipt {
    /// `accepted`; `rejected` when the sender is restricted (Art. 9: the text is recorded
    /// as a rejected contact, no ticket follows; nothing to resend); `duplicate` for a
    /// redelivery.
    pub status: String,
    /// The contact's id.
    pub contact_id: Uuid,
    /// The ticket reference.
    pub ticket_ref: TicketRef,
}

/// A 400 for a body that does not say what an SMS must.
fn malformed(detail: impl Into<String>) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "malformed-body",
        "Malformed SMS",
        detail,
    )
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Response {
    metrics::counter!("gateway_sms_refused_total", "reason" => slug.to_owned()).increment(1);
    Problem::new(status, slug, title, detail).into_response()
}

async fn inbound(
    State(shared): State<Arc<Shared>>,
    Path(carrier): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(secret) = shared.secrets.get(&carrier) else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-carrier",
            "Unknown carrier",
            "no carrier of that name is configured",
        );
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            return problem(
                status,
                "body-rejected",
                "Request body rejected",
                format!(
                    "{} (the limit is {} bytes)",
                    rejection.body_text(),
                    shared.config.max_body_bytes
                ),
            );
        }
    };
    if let Err(why) = verify(
        &headers,
        &body,
        secret,
        shared.config.replay_window_secs,
        Utc::now().timestamp(),
    ) {
        tracing::warn!(carrier, why, "SMS webhook signature refused");
        return problem(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "Signature refused",
            why,
        );
    }
    // Limited after authentication: a forger cannot use up a real carrier's allowance,
    // and a carrier that floods gets 429 with the time to wait.
    if let Some(bucket) = shared.limits.get(&carrier) {
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        if !bucket.take() {
            let wait = bucket.retry_after_secs();
            metrics::counter!("gateway_sms_refused_total", "reason" => "rate-limited").increment(1);
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!(
                    "more than {} requests per second from this carrier; retry after {wait} s",
                    shared.config.rate_per_second
                ),
            )
            .retry_after(wait)
            .into_response();
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let sms: InboundSms = match content_type.as_str() {
        "application/json" => match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                return malformed(format!("JSON body: {e}"));
            }
        },
        "application/x-www-form-urlencoded" => match serde_urlencoded::from_bytes(&body) {
            Ok(s) => s,
            Err(e) => {
                return malformed(format!("form body: {e}"));
            }
        },
        other => {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported body",
                format!(
                    "content-type {other:?}: send application/json or application/x-www-form-urlencoded"
                ),
            );
        }
    };
    if sms.message_id.is_empty() || sms.message_id.chars().count() > 128 {
        return malformed("message_id must be 1 to 128 characters");
    }
    if sms.text.trim().is_empty() {
        return malformed("text is empty");
    }
    if sms.text.chars().count() > shared.config.max_text_chars {
        return malformed(format!(
            "text exceeds {} characters",
            shared.config.max_text_chars
        ));
    }
    let Some(citizen) = shared.ctx.keyer.phone(&sms.from) else {
        return malformed("from is not a telephone number");
    };

    let now = Utc::now();
    let ticket_ref = TicketRef::generate(now);
    let contact = Contact {
        schema_version: SCHEMA_VERSION,
        id: new_event_id(),
        ticket_ref: ticket_ref.clone(),
        channel: ChannelKind::Sms,
        received_at: now,
        reply_paths: vec![ReplyPath::Sms {
            number: citizen.value.clone(),
        }],
        citizen,
        content: ContactContent::Text {
            text: sms.text.clone(),
        },
        channel_ref: Some(sms.message_id.clone()),
        sequence: 1,
        rejected: None,
        restriction: None,
    };
    let mut contact = contact;
    let mut draft = shared.classifier.draft(
        ticket_ref.clone(),
        ChannelKind::Sms,
        contact.citizen.key.clone(),
        vec![contact.id],
        &sms.text,
        now,
    );
    // Art. 9: a restricted citizen's text is taken from the carrier (200: it must not
    // resend) but makes no ticket, only a rejected contact, unless it carries an Art. 15
    // emergency cue: then it goes through with the restriction noted.
    let mut status = "accepted";
    if let Some(r) = shared.ctx.blocklist.check(&contact.citizen, now) {
        let note = RestrictionNote::from(&r);
        contact.restriction = Some(note.clone());
        if draft.urgency == Urgency::Emergency {
            draft.restriction = Some(note);
            metrics::counter!("gateway_restricted_emergencies_total", "channel" => "sms")
                .increment(1);
        } else {
            contact.rejected = Some("restricted".into());
            status = "rejected";
            metrics::counter!("gateway_sms_refused_total", "reason" => "restricted").increment(1);
            tracing::info!(citizen = %contract::mask_identity(&contact.citizen), "SMS not admitted: citizen restricted (Art. 9)");
        }
    }
    let receipt = SmsReceipt {
        status: status.into(),
        contact_id: contact.id,
        ticket_ref,
    };
    // Art. 15 and Art. 9: an emergency makes (or updates) an urgent notice, abusive
    // words a restriction proposal, at once, recorded with the contact.
    let screened = shared.ctx.screen.screen(&contact, &sms.text);
    let mut events = vec![contact.into()];
    if status == "accepted" {
        events.push(draft.into());
    }
    events.extend(screened.iter().cloned());
    let submission = Submission {
        events,
        once: Some((
            format!("sms/{carrier}/{}", sms.message_id),
            serde_json::to_vec(&receipt).unwrap_or_default(),
        )),
        ..Submission::default()
    };
    match shared.ctx.intake.submit(submission).await {
        Ok(Receipt::Accepted) => {
            metrics::counter!("gateway_contacts_accepted_total", "channel" => "sms").increment(1);
            shared.ctx.screen.recorded(&screened);
            (StatusCode::OK, axum::Json(receipt)).into_response()
        }
        Ok(Receipt::Duplicate(first)) => {
            metrics::counter!("gateway_sms_duplicates_total").increment(1);
            let mut first: SmsReceipt = match serde_json::from_slice(&first) {
                Ok(r) => r,
                Err(_) => receipt,
            };
            first.status = "duplicate".into();
            (StatusCode::OK, axum::Json(first)).into_response()
        }
        Err(e) => intake_problem(&e),
    }
}

fn intake_problem(e: &IntakeError) -> Response {
    match e {
        IntakeError::Full { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Hotline intake is full",
            "the gateway cannot record more messages right now; redeliver later",
        )
        .retry_after(30)
        .into_response(),
        IntakeError::ShuttingDown => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "Gateway shutting down",
            "redeliver to another instance or later",
        )
        .retry_after(5)
        .into_response(),
        IntakeError::Storage(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage",
            "Message not recorded",
            "the gateway could not record the message; redeliver later",
        )
        .retry_after(30)
        .into_response(),
        IntakeError::Invalid(why) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            why.clone(),
        ),
    }
}

/// Checks the timestamp and signature headers; returns why they are refused.
pub fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
    window_secs: u64,
    now: i64,
) -> Result<(), &'static str> {
    let ts_text = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing X-Hotline-Timestamp")?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| "X-Hotline-Timestamp is not Unix seconds")?;
    if now.abs_diff(ts) > window_secs {
        return Err("timestamp outside the replay window");
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("v1="))
        .ok_or("missing or malformed X-Hotline-Signature (expected v1=<hex>)")?;
    let signature = hex::decode(signature).map_err(|_| "signature is not hex")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| "unusable secret")?;
    mac.update(ts_text.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| "signature does not match")
}

/// Signs a body the way carriers must: the reference for integrators (the e2e harness
/// and `deploy/send-sms.sh` sign independently, from docs/sms-webhook.md, so that they
/// check the documented format rather than this code).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).expect("ascii"),
        );
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).expect("ascii"));
        h
    }

    #[test]
    fn good_signature_passes_and_tampering_fails() {
        let secret = b"carrier-secret-0123456789";
        let body = br#"{"message_id":"1","from":"13800001234","text":"hi"}"#;
        let now = 1_800_000_000;
        let sig = sign(secret, now, body);
        assert_eq!(verify(&headers(now, &sig), body, secret, 300, now), Ok(()));
        assert!(verify(&headers(now, &sig), b"{}", secret, 300, now).is_err());
        assert!(verify(&headers(now, &sig), body, b"other-secret-0123456", 300, now).is_err());
        assert!(
            verify(&headers(now + 1, &sig), body, secret, 300, now).is_err(),
            "ts is signed"
        );
    }

    #[test]
    fn stale_requests_are_replays() {
        let secret = b"carrier-secret-0123456789";
        let then = 1_800_000_000;
        let sig = sign(secret, then, b"x");
        assert_eq!(
            verify(&headers(then, &sig), b"x", secret, 300, then + 301),
            Err("timestamp outside the replay window")
        );
    }

    #[test]
    fn config_requires_secrets() {
        let cfg = SmsConfig {
            carriers: vec![CarrierConfig {
                name: "cmcc".into(),
                secret_env: "S".into(),
            }],
            replay_window_secs: 300,
            max_body_bytes: 16384,
            max_text_chars: 1600,
            rate_per_second: 200.0,
            burst: 400,
            outbound: None,
        };
        assert!(cfg.validate(&|_| None).is_err());
        assert!(cfg.validate(&|_| Some("short".into())).is_err());
        assert!(
            cfg.validate(&|_| Some("long-enough-secret-123".into()))
                .is_ok()
        );
        let outbound = |carrier: &str, url: &str| outbound::OutboundConfig {
            carrier: carrier.into(),
            url: url.into(),
            rate_per_second: 20.0,
            burst: 20,
            timeout_ms: 5000,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
        };
        let secret = |_: &str| Some("long-enough-secret-123".to_owned());
        let mut with = cfg.clone();
        with.outbound = Some(outbound("cmcc", "https://sms.example/send"));
        assert!(with.validate(&secret).is_ok());
        with.outbound = Some(outbound("other", "https://sms.example/send"));
        assert!(with.validate(&secret).is_err(), "an unknown carrier");
        with.outbound = Some(outbound("cmcc", "ftp://sms.example/send"));
        assert!(with.validate(&secret).is_err(), "not HTTP");
    }
}
