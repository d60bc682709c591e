//! The ticket service under test: the real `ticket-service` binary with a generated
//! config against a [`crate::Broker`] and a [`crate::postgres::Postgres`], its API with
//! tokens of each role, and drafts written straight to the drafts topic (as the gateway
//! writes them: CloudEvents headers, keyed by citizen) for the tests that need many.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use contract::{ChannelKind, Event, TicketDraft, TicketKind, TicketRef, Urgency};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::{free_port, wait_for_port, workspace_binary};

/// The token secret of test services.
pub const TOKEN_SECRET: &str = "e2e-tickets-token-secret-0123456789";
/// The status topic.
pub const STATUS: &str = "hotline.ticket-status.v1";
/// The dead-letter topic.
pub const DEAD_LETTER: &str = "hotline.tickets-dead-letter.v1";

/// The `ticket-service` binary.
pub fn binary() -> PathBuf {
    workspace_binary("ticket-service", "TICKET_SERVICE_BIN")
}

/// A token of the `tickets:` scope for `subject` (`agent:a1`, `unit:xiangzhou:p1`).
pub fn token(subject: &str) -> String {
    contract::token::TokenVerifier::new(TOKEN_SECRET.as_bytes(), "tickets:")
        .mint(subject, contract::token::unix_now() + 3600)
}

/// Knobs of a test service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The instance's name.
    pub instance: String,
    /// Card sweep period.
    pub sweep_secs: u64,
    /// Clock offset.
    pub offset_secs: i64,
    /// Records per transaction.
    pub batch_max: usize,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// How often the leader looks for due follow-up clocks, in ms.
    pub clocks_ms: u64,
    /// A `[followup]` section's body (the survey window, the revisit mode...).
    pub followup: String,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            instance: "ts-1".into(),
            sweep_secs: 60,
            offset_secs: 0,
            batch_max: 200,
            rust_log: "info".into(),
            clocks_ms: 1000,
            followup: String::new(),
        }
    }
}

/// A running ticket service.
pub struct TicketService {
    /// API port.
    pub port: u16,
    dir: tempfile::TempDir,
    rust_log: String,
    child: Option<Child>,
}

impl TicketService {
    /// Writes a config and starts the service; returns once its API answers.
    pub fn start(brokers: &str, database_url: &str, opts: ServiceOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = format!(
            r#"instance = "{instance}"
[database]
url = "{database_url}"
max_connections = 8
[kafka]
brokers = "{brokers}"
batch_max = {batch}
[api]
listen = "127.0.0.1:{port}"
[clock]
sweep_secs = {sweep}
offset_secs = {offset}
clocks_ms = {clocks}
[followup]
{followup}
"#,
            instance = opts.instance,
            batch = opts.batch_max,
            sweep = opts.sweep_secs,
            offset = opts.offset_secs,
            clocks = opts.clocks_ms,
            followup = opts.followup,
        );
        std::fs::write(dir.path().join("tickets.toml"), config)?;
        let mut s = TicketService {
            port,
            dir,
            rust_log: opts.rust_log,
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("service.log"))?;
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(self.dir.path().join("tickets.toml"))
            .env("TICKETS_TOKEN_SECRET", TOKEN_SECRET)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: cargo build -p tickets)",
                    binary().display()
                )
            })?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30)).with_context(|| self.log())
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// GET with a token; the status and the JSON body.
    pub async fn get(&self, path: &str, subject: &str) -> Result<(u16, Value)> {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token(subject))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// POST (or PATCH when `path` starts with `PATCH `) JSON with a token.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        subject: &str,
        body: &Value,
    ) -> Result<(u16, Value)> {
        let c = reqwest::Client::new();
        let req = match method {
            "PATCH" => c.patch(self.url(path)),
            _ => c.post(self.url(path)),
        };
        let r = req.bearer_auth(token(subject)).json(body).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Polls `GET /tickets/{ref}` as an agent until it exists.
    pub async fn wait_ticket(&self, ticket_ref: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self
                .get(&format!("/tickets/{ticket_ref}"), "agent:a1")
                .await?;
            if status == 200 {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!(
                    "no ticket {ticket_ref} after {within:?} ({status} {body}); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The metric `name`'s value in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for TicketService {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- ticket service log ---\n{}", self.log());
        }
        self.kill9();
    }
}

/// A draft as the gateway would make it.
pub fn draft(citizen_key: &str, summary: &str, kind: TicketKind, at: DateTime<Utc>) -> TicketDraft {
    TicketDraft {
        schema_version: contract::SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        ticket_ref: TicketRef::generate(at),
        created_at: at,
        channel: ChannelKind::Sms,
        citizen_key: citizen_key.to_owned(),
        kind,
        summary: summary.to_owned(),
        location: None,
        urgency: Urgency::Normal,
        emergency: None,
        emergencies: Vec::new(),
        contacts: vec![],
        related_tickets: vec![],
        transcript: vec![],
        prefill: vec![],
        restriction: None,
        transferred_from: None,
    }
}

/// The contact an SMS from `number` makes (what the gateway's SMS channel sends).
pub fn sms_contact(
    citizen_key: &str,
    number: &str,
    ticket_ref: &TicketRef,
    text: &str,
    at: DateTime<Utc>,
) -> contract::Contact {
    contract::Contact {
        schema_version: contract::SCHEMA_VERSION,
        id: contract::event::new_event_id(),
        ticket_ref: ticket_ref.clone(),
        channel: ChannelKind::Sms,
        received_at: at,
        citizen: contract::CitizenIdentity {
            kind: contract::IdentityKind::PhoneNumber,
            value: number.to_owned(),
            key: citizen_key.to_owned(),
        },
        reply_paths: vec![contract::ReplyPath::Sms {
            number: number.to_owned(),
        }],
        content: contract::ContactContent::Text {
            text: text.to_owned(),
        },
        channel_ref: None,
        sequence: 1,
        rejected: None,
        restriction: None,
    }
}

/// A producer for the tests' own records.
pub fn producer(bootstrap: &str) -> Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

/// Writes an event to `topic` as the gateway's outbox does (CloudEvents headers).
pub async fn produce_event(p: &FutureProducer, topic: &str, event: Event) -> Result<()> {
    let record = event.to_record("/gateway/e2e/sms")?;
    produce_raw(p, topic, &record.key, &record.headers, &record.payload).await
}

/// Writes an event to `topic` as the ticket service's outbox does, retrying for up to
/// 30 s while the topic does not exist yet (the gateway creates its topics in the
/// background).
pub async fn produce_event_when_ready(bootstrap: &str, topic: &str, event: Event) -> Result<()> {
    let p = producer(bootstrap)?;
    let record = event.to_record("/tickets/e2e")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match produce_raw(&p, topic, &record.key, &record.headers, &record.payload).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Beijing wall time (`2026-12-01T09:00:00`), as the articles count.
pub fn bj(s: &str) -> DateTime<Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .expect("offset")
        .from_local_datetime(&s.parse().expect("datetime"))
        .single()
        .expect("unambiguous")
        .with_timezone(&Utc)
}

/// Writes raw bytes with headers to `topic`.
pub async fn produce_raw(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    headers: &[(String, String)],
    payload: &[u8],
) -> Result<()> {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    p.send(
        FutureRecord::to(topic).key(key).payload(payload).headers(h),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
    Ok(())
}
