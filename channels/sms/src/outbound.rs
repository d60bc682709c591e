//! Outbound texts through the carrier's HTTP API (the [`contract::SmsSender`] of the
//! gateway; docs/sms-webhook.md#outbound).
//!
//! `POST <url>` with `{"request_id", "to", "text"}` as JSON, signed like the inbound
//! webhook (`X-Hotline-Timestamp`, `X-Hotline-Signature: v1=<hex HMAC-SHA256(secret,
//! "<timestamp>.<body>")>` with the carrier's secret) and carrying `Idempotency-Key:
//! <request_id>`: the carrier must treat a second request with the same key as the same
//! text, which is what makes a retry, or a redelivery after a crash, one text. A 2xx
//! (optionally `{"message_id": …}`) is sent; 408, 429 and 5xx, timeouts and refused
//! connections are retried with exponential backoff (honouring `Retry-After`) until the
//! request expires; any other 4xx is a refusal and ends the request as failed with the
//! carrier's words. A rate limit per carrier paces the sending.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use contract::rate::TokenBucket;
use contract::{OutboundSms, SCHEMA_VERSION, SmsSender, SmsState, SmsStatus};
use serde::Deserialize;

/// `[channels.sms.outbound]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The carrier it goes through (one of `carriers`; its secret signs the requests).
    pub carrier: String,
    /// The carrier's send URL.
    pub url: String,
    /// Texts per second at most (the carrier's contract), and the burst above it.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// Burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long one HTTP attempt may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First wait after a failed attempt; doubles up to `retry_max_ms`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest wait between attempts.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> u32 {
    20
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_retry_min_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

impl OutboundConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err("outbound.url must be an http:// or https:// URL".into());
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= 10_000.0) || self.burst == 0 {
            return Err(
                "outbound.rate_per_second must be above 0 (at most 10000), burst at least 1".into(),
            );
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err("outbound.timeout_ms must be 100 to 60000".into());
        }
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            return Err("outbound.retry_min_ms must be above 0 and at most retry_max_ms".into());
        }
        Ok(())
    }
}

/// Sends texts through one carrier.
pub struct CarrierSender {
    config: OutboundConfig,
    secret: Vec<u8>,
    http: reqwest::Client,
    bucket: tokio::sync::Mutex<TokenBucket>,
}

impl std::fmt::Debug for CarrierSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierSender")
            .field("carrier", &self.config.carrier)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Sent(Option<String>),
    Refused(String),
    Retry(String, Option<Duration>),
}

#[derive(Deserialize)]
struct CarrierAnswer {
    message_id: Option<String>,
}

impl CarrierSender {
    /// A sender with the carrier's `secret`.
    pub fn new(config: OutboundConfig, secret: Vec<u8>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()?;
        let bucket = TokenBucket::new(config.rate_per_second, config.burst);
        Ok(CarrierSender {
            config,
            secret,
            http,
            bucket: tokio::sync::Mutex::new(bucket),
        })
    }

    async fn paced(&self) {
        loop {
            let wait = {
                let mut b = self.bucket.lock().await;
                if b.take() {
                    return;
                }
                b.retry_after_secs().max(1)
            };
            // Short waits: the bucket refills continuously.
            tokio::time::sleep(Duration::from_millis((wait * 1000).min(200))).await;
        }
    }

    async fn attempt(&self, request: &OutboundSms) -> Attempt {
        self.paced().await;
        let body = serde_json::json!({
            "request_id": request.id,
            "to": request.to,
            "text": request.text,
        })
        .to_string();
        let ts = Utc::now().timestamp();
        let signature = crate::sign(&self.secret, ts, body.as_bytes());
        let sent = self
            .http
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(crate::TIMESTAMP_HEADER, ts.to_string())
            .header(crate::SIGNATURE_HEADER, signature)
            .header("idempotency-key", request.id.to_string())
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("carrier unreachable: {e}"), None),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => Attempt::Sent(
                serde_json::from_str::<CarrierAnswer>(&text)
                    .ok()
                    .and_then(|a| a.message_id),
            ),
            408 | 429 | 500..=599 => {
                Attempt::Retry(format!("carrier answered {status}"), retry_after)
            }
            _ => Attempt::Refused(format!(
                "carrier refused ({status}): {}",
                text.chars().take(200).collect::<String>()
            )),
        }
    }
}

#[async_trait]
impl SmsSender for CarrierSender {
    async fn send(&self, request: &OutboundSms) -> SmsStatus {
        retrying(&self.config, request, || self.attempt(request)).await
    }
}

/// Tries `attempt` until it sends, is refused, or the request expires: waits
/// `retry_min_ms`, doubling up to `retry_max_ms` (or what the carrier's `Retry-After`
/// asks, within that cap), and never past the expiry. Apart from the HTTP so that the
/// schedule runs on tokio's clock (paused in the tests).
async fn retrying<F, Fut>(
    config: &OutboundConfig,
    request: &OutboundSms,
    mut attempt: F,
) -> SmsStatus
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut attempts = 0u32;
    let mut wait = Duration::from_millis(config.retry_min_ms);
    let max_wait = Duration::from_millis(config.retry_max_ms);
    // The expiry on tokio's clock: what is left of it now.
    let expires = tokio::time::Instant::now()
        + (request.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
    let status = |state, attempts, message_id, reason| SmsStatus {
        schema_version: SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        request_id: request.id,
        purpose: request.purpose.clone(),
        reference: request.reference.clone(),
        at: Utc::now(),
        state,
        carrier: config.carrier.clone(),
        carrier_message_id: message_id,
        attempts,
        reason,
    };
    loop {
        if tokio::time::Instant::now() >= expires {
            metrics::counter!("gateway_sms_outbound_total", "state" => "expired").increment(1);
            return status(SmsState::Failed, attempts, None, Some("expired".into()));
        }
        attempts += 1;
        match attempt().await {
            Attempt::Sent(id) => {
                metrics::counter!("gateway_sms_outbound_total", "state" => "sent").increment(1);
                return status(SmsState::Sent, attempts, id, None);
            }
            Attempt::Refused(reason) => {
                metrics::counter!("gateway_sms_outbound_total", "state" => "refused").increment(1);
                tracing::warn!(request = %request.id, %reason, "Outbound SMS refused by the carrier");
                return status(SmsState::Failed, attempts, None, Some(reason));
            }
            Attempt::Retry(reason, after) => {
                metrics::counter!("gateway_sms_outbound_retries_total").increment(1);
                let pause = after
                    .unwrap_or(wait)
                    .min(max_wait)
                    .min(expires.saturating_duration_since(tokio::time::Instant::now()));
                tracing::warn!(request = %request.id, %reason, attempts, retry_in_ms = pause.as_millis() as u64, "Outbound SMS not sent yet; retrying");
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(max_wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn config() -> OutboundConfig {
        OutboundConfig {
            carrier: "c".into(),
            url: "http://127.0.0.1:1/send".into(),
            rate_per_second: 10.0,
            burst: 10,
            timeout_ms: 1000,
            retry_min_ms: 500,
            retry_max_ms: 4000,
        }
    }

    fn request(valid_for: chrono::Duration) -> OutboundSms {
        OutboundSms {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            requested_at: Utc::now(),
            expires_at: Utc::now() + valid_for,
            purpose: "survey".into(),
            reference: "ZH1".into(),
            to: "13800138000".into(),
            text: "t".into(),
        }
    }

    /// Runs the schedule against scripted answers; returns the status and the instants
    /// of the attempts, from the start.
    async fn run(answers: Vec<Attempt>, valid_for: chrono::Duration) -> (SmsStatus, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let r = request(valid_for);
        let status = retrying(&config(), &r, || {
            times.lock().expect("lock").push(start.elapsed());
            let next = answers
                .lock()
                .expect("lock")
                .next()
                .unwrap_or(Attempt::Retry("down".into(), None));
            async move { next }
        })
        .await;
        let t = times.lock().expect("lock").clone();
        (status, t)
    }

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_doubling_to_the_cap_then_send() {
        let down = || Attempt::Retry("carrier answered 503".into(), None);
        let (st, times) = run(
            vec![
                down(),
                down(),
                down(),
                down(),
                down(),
                Attempt::Sent(Some("m1".into())),
            ],
            chrono::Duration::hours(1),
        )
        .await;
        assert_eq!(st.state, SmsState::Sent);
        assert_eq!(st.attempts, 6);
        assert_eq!(st.carrier_message_id.as_deref(), Some("m1"));
        // 0.5, 1, 2, 4, then capped at 4 seconds.
        assert_eq!(times, secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5]));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_the_cap() {
        let (st, times) = run(
            vec![
                Attempt::Retry("429".into(), Some(Duration::from_secs(3))),
                Attempt::Retry("429".into(), Some(Duration::from_secs(60))),
                Attempt::Sent(None),
            ],
            chrono::Duration::hours(1),
        )
        .await;
        assert_eq!(st.state, SmsState::Sent);
        assert_eq!(times, secs(&[0.0, 3.0, 7.0]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_carrier_down_past_the_expiry_ends_failed_expired_never_silently() {
        let (st, times) = run(vec![], chrono::Duration::seconds(10)).await;
        assert_eq!(st.state, SmsState::Failed);
        assert_eq!(st.reason.as_deref(), Some("expired"));
        // 0, 0.5, 1.5, 3.5, 7.5, then the last wait is cut at the expiry (10 s).
        assert_eq!(st.attempts as usize, times.len());
        assert_eq!(times.len(), 5);
        assert!(times.last().is_some_and(|t| *t <= Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_ends_at_once_with_the_carriers_words() {
        let (st, times) = run(
            vec![Attempt::Refused("carrier refused (400): bad number".into())],
            chrono::Duration::hours(1),
        )
        .await;
        assert_eq!(st.state, SmsState::Failed);
        assert_eq!(
            st.reason.as_deref(),
            Some("carrier refused (400): bad number")
        );
        assert_eq!(times.len(), 1);
    }
}
