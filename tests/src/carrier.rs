//! A small carrier outbound API for the tests: receives the gateway's signed send
//! requests, checks their signature (docs/sms-webhook.md#outbound, written from the
//! document, not the gateway's code), keeps one text per idempotency key, and can be
//! told to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// One text the carrier took.
#[derive(Debug, Clone)]
pub struct Text {
    /// The idempotency key (the request id).
    pub key: String,
    /// The body.
    pub body: Value,
    /// How many requests carried this key.
    pub requests: usize,
    /// When the first arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    texts: Mutex<Vec<Text>>,
    by_key: Mutex<HashMap<String, usize>>,
    failing: AtomicBool,
    bad_signatures: Mutex<usize>,
}

/// The running carrier.
#[derive(Clone)]
pub struct Carrier {
    inner: Arc<Inner>,
    /// Its send URL.
    pub url: String,
}

impl Carrier {
    /// Starts it on a free port.
    pub async fn start() -> Result<Self> {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/send", listener.local_addr()?);
        let app = Router::new()
            .route("/send", post(send))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Carrier { inner, url })
    }

    /// Answers 503 to everything while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// The texts taken, one per idempotency key.
    pub fn texts(&self) -> Vec<Text> {
        self.inner.texts.lock().expect("not poisoned").clone()
    }

    /// Requests refused for a bad signature.
    pub fn bad_signatures(&self) -> usize {
        *self.inner.bad_signatures.lock().expect("not poisoned")
    }
}

async fn send(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (ts, sig, key) = (
        h("x-hotline-timestamp"),
        h("x-hotline-signature"),
        h("idempotency-key"),
    );
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(crate::CARRIER_SECRET.as_bytes())
        .expect("any key length");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    if sig != want || key.is_empty() {
        *inner.bad_signatures.lock().expect("not poisoned") += 1;
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "bad signature"})),
        );
    }
    if inner.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "down"})),
        );
    }
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut by_key = inner.by_key.lock().expect("not poisoned");
    let mut texts = inner.texts.lock().expect("not poisoned");
    let index = *by_key.entry(key.clone()).or_insert_with(|| {
        texts.push(Text {
            key: key.clone(),
            body: value,
            requests: 0,
            at: std::time::Instant::now(),
        });
        texts.len() - 1
    });
    texts[index].requests += 1;
    (
        StatusCode::OK,
        axum::Json(json!({"message_id": format!("carrier-{index}")})),
    )
}
