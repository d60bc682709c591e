//! The end-to-end harness: real peers, no mocks.
//!
//! - [`Broker`]: a tansu broker (Kafka protocol) on a free loopback port, with sqlite
//!   storage that survives a restart (or memory storage for benchmarks);
//! - [`Gateway`]: the real `gateway` binary with a generated config, started, stopped
//!   with SIGTERM, killed with SIGKILL and restarted on the same data;
//! - [`consume`]: reads a topic back with an rdkafka consumer;
//! - [`ChatClient`], [`post_sms`]: the citizen side, over a real WebSocket and HTTP;
//! - [`sip`]: sipp as citizen and agent, and a raw SIP/RTP client for what sipp cannot
//!   send or check;
//! - [`speech`]: the speech fixtures, the short set's expectations, and the scores;
//! - [`postgres`]: a throwaway PostgreSQL cluster for the ticket service;
//! - [`tickets`]: the real `ticket-service` binary, its API and the drafts it reads.

pub mod carrier;
pub mod postgres;
pub mod sip;
pub mod speech;
pub mod tickets;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The citizen-key secret every test gateway uses.
pub const CITIZEN_SECRET: &str = "e2e-citizen-key-secret-0123456789";
/// The test carrier's name.
pub const CARRIER: &str = "testcarrier";
/// The test carrier's signing secret.
pub const CARRIER_SECRET: &str = "e2e-carrier-secret-0123456789";
/// The admin token.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
/// The linkage operator token secret of test gateways.
pub const LINKAGE_SECRET: &str = "e2e-linkage-secret-0123456789";
/// The urgent notices topic.
pub const NOTICES: &str = "hotline.urgent-notices.v1";
/// The outbound SMS status topic.
pub const SMS_STATUS: &str = "hotline.sms-status.v1";
/// The revisit-call requests topic (Art. 17).
pub const REVISIT_CALLS: &str = "hotline.revisit-calls.v1";
/// The revisit-call results topic.
pub const REVISIT_RESULTS: &str = "hotline.revisit-results.v1";

/// A linkage operator token for `subject` (`<target>:<operator>`), made as
/// docs/routing.md documents it (an oracle, not the gateway's code):
/// `<subject>.<expiry>.<hex HMAC-SHA256(secret, "linkage:<subject>.<expiry>")>`.
pub fn linkage_token(subject: &str, valid_for: Duration) -> String {
    use hmac::{Hmac, Mac};
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + valid_for.as_secs();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(LINKAGE_SECRET.as_bytes())
        .expect("any key length");
    mac.update(format!("linkage:{subject}.{expiry}").as_bytes());
    format!(
        "{subject}.{expiry}.{}",
        hex::encode(mac.finalize().into_bytes())
    )
}
/// Contacts topic of test gateways.
pub const CONTACTS: &str = "hotline.contacts.v1";
/// Ticket-drafts topic of test gateways.
pub const DRAFTS: &str = "hotline.ticket-drafts.v1";

/// A free TCP port on 127.0.0.1 for a listener a test starts (a broker, a gateway, a
/// database, sipp), bound and released.
///
/// The ports come from below the kernel's ephemeral range, in turn within the process
/// (from a random first one): a port the kernel handed out for `:0` is one it hands out
/// again to the next outgoing connection, and a gateway then failed to listen on it
/// ("cannot listen on http.listen 127.0.0.1:34569: Address already in use", `no_loss`,
/// issue 28: 2 runs in 16 while other tests ran beside it). Where the ephemeral range
/// leaves no room below it, the kernel's choice it is.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    const LAST: u32 = 19_999;
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_from > LAST {
        let next = NEXT.get_or_init(|| {
            std::sync::atomic::AtomicU32::new((uuid::Uuid::new_v4().as_u128() % 10_000) as u32)
        });
        for _ in 0..=(LAST - FIRST) {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = (FIRST + n % (LAST - FIRST + 1)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_for_port(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {within:?}")
}

/// The tansu binary: `$TANSU`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cargo/bin/tansu")
}

/// Where tansu keeps its data.
#[derive(Debug, Clone, Copy)]
pub enum Storage {
    /// sqlite in the broker's directory: survives a restart and a kill.
    Sqlite,
    /// In memory: fastest, lost on restart.
    Memory,
}

/// A running tansu broker.
pub struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    storage: Storage,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker and creates the gateway's topics (tansu does not auto-create).
    pub fn start(storage: Storage) -> Result<Self> {
        let mut broker = Broker {
            port: free_port(),
            dir: tempfile::tempdir()?,
            storage,
            child: None,
        };
        broker.spawn()?;
        for topic in [CONTACTS, DRAFTS] {
            broker.create_topic(topic, 3)?;
        }
        Ok(broker)
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let engine = match self.storage {
            // tansu resolves the sqlite path against its working directory.
            Storage::Sqlite => "sqlite://tansu.db".to_owned(),
            Storage::Memory => "memory://tansu/".to_owned(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))?;
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &engine])
            .current_dir(self.dir.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start tansu ({}); install it: cargo install --locked tansu --features dynostore,libsql",
                    tansu_binary().display()
                )
            })?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20))
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let out = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .args(["--partitions", &partitions.to_string(), name])
            .output()?;
        if !out.status.success() {
            bail!(
                "tansu topic create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `host:port` for Kafka clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGKILL: the harshest outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A binary of this workspace built by cargo next to the test executables (`$ENV`
/// overrides).
pub fn workspace_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("target directory");
    profile_dir.join(name)
}

/// The gateway binary built by cargo next to the test executables.
pub fn gateway_binary() -> PathBuf {
    workspace_binary("gateway", "GATEWAY_BIN")
}

/// Knobs of a test gateway's config.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Chat limits: largest frame in bytes.
    pub max_frame_bytes: usize,
    /// Chat limits: messages per second.
    pub rate_per_second: f64,
    /// Chat limits: burst.
    pub burst: u32,
    /// Chat limits: idle timeout in seconds.
    pub idle_timeout_secs: u64,
    /// Chat: resume window in seconds.
    pub resume_window_secs: u64,
    /// Chat limits: most connected sockets.
    pub max_sessions: usize,
    /// Chat limits: most sessions kept for resuming.
    pub max_resumable_sessions: usize,
    /// SMS: signed requests per second per carrier.
    pub sms_rate_per_second: f64,
    /// SMS: burst per carrier.
    pub sms_burst: u32,
    /// Outbox: most undelivered records.
    pub outbox_max_records: u64,
    /// Kafka `message.timeout.ms`.
    pub message_timeout_ms: u64,
    /// Extra `RUST_LOG`.
    pub rust_log: String,
    /// The SIP channel, when wanted.
    pub sip: Option<sip::SipOptions>,
    /// Art. 15: escalation times and the alarm, seconds after detection.
    pub linkage_escalation_secs: Vec<u64>,
    /// Art. 15: the alarm, seconds after detection.
    pub linkage_alarm_secs: u64,
    /// Art. 15: linkage targets, `(target, line URI, duty phone)`.
    pub linkage_targets: Vec<(String, Option<String>, Option<String>)>,
    /// The carrier's outbound send URL (the outbound SMS path), when wanted.
    pub sms_outbound_url: Option<String>,
    /// The outbound path's rate per second and burst (the gateway's default otherwise).
    pub sms_outbound_rate: Option<(f64, u32)>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_frame_bytes: 4096,
            rate_per_second: 50.0,
            burst: 50,
            idle_timeout_secs: 60,
            resume_window_secs: 120,
            max_sessions: 1000,
            max_resumable_sessions: 100_000,
            sms_rate_per_second: 10_000.0,
            sms_burst: 10_000,
            outbox_max_records: 1_000_000,
            message_timeout_ms: 5000,
            rust_log: "info".into(),
            sip: None,
            linkage_escalation_secs: vec![300, 600, 1200],
            linkage_alarm_secs: 1800,
            linkage_targets: Vec::new(),
            sms_outbound_url: None,
            sms_outbound_rate: None,
        }
    }
}

/// A running gateway process.
pub struct Gateway {
    /// Public port.
    pub http_port: u16,
    /// SIP port (UDP and TCP), 0 without the SIP channel.
    pub sip_port: u16,
    /// SIP TLS port, when the SIP channel has TLS on.
    pub sip_tls_port: u16,
    /// Admin port.
    pub admin_port: u16,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    rust_log: String,
    child: Option<Child>,
}

impl Gateway {
    /// Writes a config for `brokers` and starts the gateway; returns once it is ready.
    pub fn start(brokers: &str, opts: GatewayOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let http_port = free_port();
        let admin_port = free_port();
        let config = format!(
            r#"
[gateway]
instance = "e2e"
data_dir = "{data}"
shutdown_grace_secs = 5

[http]
listen = "127.0.0.1:{http_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token_env = "E2E_ADMIN_TOKEN"

[outbox]
max_records = {max_records}

[kafka]
brokers = "{brokers}"
create_topics = true
message_timeout_ms = {timeout}

[linkage]
token_secret_env = "E2E_LINKAGE_SECRET"
escalation_secs = {escalation:?}
alarm_secs = {alarm}

[channels.chat]
max_frame_bytes = {frame}
rate_per_second = {rate}
burst = {burst}
idle_timeout_secs = {idle}
resume_window_secs = {resume}
max_sessions = {max_sessions}
max_resumable_sessions = {max_resumable}

[channels.sms]
rate_per_second = {sms_rate}
burst = {sms_burst}
carriers = [{{ name = "{CARRIER}", secret_env = "E2E_CARRIER_SECRET" }}]
"#,
            data = dir.path().join("data").display(),
            max_records = opts.outbox_max_records,
            timeout = opts.message_timeout_ms,
            frame = opts.max_frame_bytes,
            rate = opts.rate_per_second,
            burst = opts.burst,
            idle = opts.idle_timeout_secs,
            resume = opts.resume_window_secs,
            max_sessions = opts.max_sessions,
            max_resumable = opts.max_resumable_sessions,
            sms_rate = opts.sms_rate_per_second,
            sms_burst = opts.sms_burst,
            escalation = opts.linkage_escalation_secs,
            alarm = opts.linkage_alarm_secs,
        );
        let mut config = config;
        if let Some(url) = &opts.sms_outbound_url {
            config.push_str(&format!(
                "\n[channels.sms.outbound]\ncarrier = \"{CARRIER}\"\nurl = \"{url}\"\nretry_min_ms = 200\nretry_max_ms = 2000\n"
            ));
            if let Some((rate, burst)) = opts.sms_outbound_rate {
                config.push_str(&format!("rate_per_second = {rate}\nburst = {burst}\n"));
            }
        }
        for (target, uri, phone) in &opts.linkage_targets {
            config.push_str(&format!("\n[linkage.targets.\"{target}\"]\n"));
            if let Some(u) = uri {
                config.push_str(&format!("uri = \"{u}\"\n"));
            }
            if let Some(p) = phone {
                config.push_str(&format!("duty_phone = \"{p}\"\n"));
            }
        }
        let (sip_port, sip_tls_port) = match &opts.sip {
            Some(sip) => {
                let port = sip::free_udp_tcp_port();
                let tls_port = free_port();
                config.push_str(&sip.config_section(port, tls_port, dir.path())?);
                (port, tls_port)
            }
            None => (0, 0),
        };
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config)?;
        let mut gw = Gateway {
            http_port,
            sip_port,
            sip_tls_port,
            admin_port,
            dir,
            config_path,
            rust_log: opts.rust_log,
            child: None,
        };
        gw.spawn()?;
        Ok(gw)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let bin = gateway_binary();
        let child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("GATEWAY_CITIZEN_KEY_SECRET", CITIZEN_SECRET)
            .env("E2E_CARRIER_SECRET", CARRIER_SECRET)
            .env("E2E_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("E2E_TRUNK_PASSWORD", sip::TRUNK_PASSWORD)
            .env("E2E_FEED_SECRET", sip::FEED_SECRET)
            .env("E2E_LINKAGE_SECRET", LINKAGE_SECRET)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: cargo build -p gateway)",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("gateway exited at start ({status}); log:\n{}", self.log());
            }
            if probe_status(&format!("http://127.0.0.1:{}/readyz", self.admin_port)).ok()
                == Some(200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("gateway not ready in 30 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gateway's own directory (config, TLS material, recordings, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the SIP channel writes call recordings.
    pub fn recordings_dir(&self) -> PathBuf {
        self.dir.path().join("recordings")
    }

    /// The config file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The gateway's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ws://` URL of the chat endpoint.
    pub fn chat_url(&self) -> String {
        format!("ws://127.0.0.1:{}/chat/ws", self.http_port)
    }

    /// URL of the SMS webhook of the test carrier.
    pub fn sms_url(&self) -> String {
        format!("http://127.0.0.1:{}/sms/{CARRIER}/inbound", self.http_port)
    }

    /// Posts a signed JSON SMS as the test carrier; returns status and JSON body.
    pub async fn send_sms(
        &self,
        http: &reqwest::Client,
        message_id: &str,
        from: &str,
        text: &str,
    ) -> Result<(u16, Value)> {
        let body = serde_json::to_vec(
            &serde_json::json!({"message_id": message_id, "from": from, "to": "12345", "text": text}),
        )?;
        post_sms(
            http,
            &self.sms_url(),
            &body,
            "application/json",
            CARRIER_SECRET,
        )
        .await
    }

    /// The linkage operator feed's URL with `token`.
    pub fn linkage_url(&self, token: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/linkage/ws?access_token={token}",
            self.http_port
        )
    }

    /// URL on the admin port.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The gateway's metrics (Prometheus text, with the admin token).
    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::Client::new()
            .get(self.admin_url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Waits until the gateway's metric `series` is at most `at_most`, for a test that
    /// must not race the gateway noticing something (a socket that just closed is counted
    /// until the gateway has seen it go).
    pub async fn until_metric_at_most(&self, series: &str, at_most: f64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = metric_value(&self.metrics().await?, series);
            if value <= at_most {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{series} is {value} after 10 s, not at most {at_most}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's metrics (Prometheus text, with the admin token), for a test that
    /// runs no runtime of its own.
    pub fn metrics_blocking(&self) -> Result<String> {
        let url = self.admin_url("/metrics");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                Ok(reqwest::Client::new()
                    .get(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?)
            })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: the crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited cleanly in `within`.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts the same gateway again on the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Polls `/readyz` until the outbox is empty (everything delivered).
    pub async fn wait_drained(&self, within: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            let body: Value = client
                .get(self.admin_url("/readyz"))
                .send()
                .await?
                .json()
                .await?;
            if body["outbox"]["depth"] == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("outbox not drained in {within:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Status code of a GET over a plain TCP socket: the harness's start-up probe is
/// synchronous and must not need a runtime.
fn probe_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Received {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: String,
    /// Headers.
    pub headers: HashMap<String, String>,
    /// Value, as JSON.
    pub value: Value,
}

impl Received {
    /// The CloudEvents id.
    pub fn ce_id(&self) -> &str {
        self.headers.get("ce_id").map(String::as_str).unwrap_or("")
    }
}

/// Reads every record of `topic` from the beginning, until `until` says it has enough or
/// `within` passes. Partitions are assigned directly (no consumer group needed).
pub fn consume(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    until: impl Fn(&[Received]) -> bool,
) -> Result<Vec<Received>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("e2e-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if until(&out) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Received {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    headers,
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(Value::Null),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    Ok(out)
}

/// A chat client speaking the gateway's protocol over a real WebSocket.
pub struct ChatClient {
    /// Text frames [`ChatClient::closed`] passed over while waiting for the close.
    pub skipped: Vec<Value>,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// How a chat socket closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The close code.
    pub code: u16,
    /// The reason.
    pub reason: String,
}

impl ChatClient {
    /// Connects.
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ChatClient {
            ws,
            skipped: Vec::new(),
        })
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, v: Value) -> Result<()> {
        self.ws.send(WsMessage::Text(v.to_string().into())).await?;
        Ok(())
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, m: WsMessage) -> Result<()> {
        self.ws.send(m).await?;
        Ok(())
    }

    /// The next JSON frame from the server.
    pub async fn recv_json(&mut self) -> Result<Value> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .context("no frame from the gateway in 15 s")?;
            match next {
                Some(Ok(WsMessage::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
                Some(Ok(WsMessage::Close(c))) => bail!("closed: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket ended"),
            }
        }
    }

    /// The next JSON frame, or the close if the server closes first.
    pub async fn frame_or_close(&mut self) -> Result<std::result::Result<Value, Closed>> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .context("nothing from the gateway in 15 s")?;
            match next {
                Some(Ok(WsMessage::Text(t))) => return Ok(Ok(serde_json::from_str(t.as_str())?)),
                Some(Ok(WsMessage::Close(Some(c)))) => {
                    let _ = self.ws.flush().await;
                    return Ok(Err(Closed {
                        code: u16::from(c.code),
                        reason: c.reason.to_string(),
                    }));
                }
                Some(Ok(WsMessage::Close(None))) => bail!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket ended"),
            }
        }
    }

    /// Waits for the close frame.
    pub async fn closed(&mut self) -> Result<Closed> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .context("no close from the gateway in 15 s")?;
            match next {
                Some(Ok(WsMessage::Close(Some(c)))) => {
                    // Complete the closing handshake as a browser does: tungstenite
                    // queued the reply, a flush sends it.
                    let _ = self.ws.flush().await;
                    return Ok(Closed {
                        code: u16::from(c.code),
                        reason: c.reason.to_string(),
                    });
                }
                Some(Ok(WsMessage::Close(None))) => bail!("closed without a code"),
                Some(Ok(WsMessage::Text(t))) => {
                    self.skipped
                        .push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error before close: {e}"),
                None => bail!("socket ended without a close frame"),
            }
        }
    }

    /// Opens a session; returns the `session` frame.
    pub async fn open(&mut self, visitor: &str, phone: Option<&str>) -> Result<Value> {
        let mut frame = serde_json::json!({"type": "open", "visitor": visitor});
        if let Some(p) = phone {
            frame["phone"] = p.into();
        }
        self.send_json(frame).await?;
        let session = self.recv_json().await?;
        if session["type"] != "session" {
            bail!("expected a session frame, got {session}");
        }
        Ok(session)
    }

    /// Sends a message and waits for its ack (or error) frame.
    pub async fn say(&mut self, id: &str, text: &str) -> Result<Value> {
        self.send_json(serde_json::json!({"type": "message", "id": id, "text": text}))
            .await?;
        self.recv_json().await
    }

    /// Ends the session; returns the `ended` frame and the close.
    pub async fn end(&mut self) -> Result<(Value, Closed)> {
        self.send_json(serde_json::json!({"type": "end"})).await?;
        let ended = self.recv_json().await?;
        let closed = self.closed().await?;
        Ok((ended, closed))
    }
}

/// Posts a signed SMS as the test carrier; returns status and JSON body. Signs from the
/// documented format (docs/sms-webhook.md), deliberately not with `channel_sms::sign`,
/// so that a change to the gateway's idea of the format fails these tests.
pub async fn post_sms(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    content_type: &str,
    secret: &str,
) -> Result<(u16, Value)> {
    use hmac::{Hmac, Mac};
    let ts = chrono::Utc::now().timestamp();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())?;
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let resp = client
        .post(url)
        .header("content-type", content_type)
        .header("x-hotline-timestamp", ts.to_string())
        .header("x-hotline-signature", sig)
        .body(body.to_vec())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The value of one series (`name{labels}` as the exposition writes it) in Prometheus
/// text; 0 when absent (a counter not yet incremented).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
