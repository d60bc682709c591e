//! SIP peers for the end-to-end tests: sipp playing the citizen's trunk (uac) and the
//! agent side (uas) with real RTP, a raw UDP/TCP SIP client for what sipp cannot send
//! (malformed messages, exact retransmissions) or check (the RTP of an announcement),
//! and readers of the gateway's recordings.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The digest password of the test trunk that authenticates (env `E2E_TRUNK_PASSWORD`).
pub const TRUNK_PASSWORD: &str = "e2e-trunk-password-0123";
/// The digest user of that trunk.
pub const TRUNK_USER: &str = "carrier-b";
/// The source address of the digest trunk.
pub const DIGEST_TRUNK_IP: &str = "127.0.0.4";
/// The agent feed's token secret (env `E2E_FEED_SECRET`).
pub const FEED_SECRET: &str = "e2e-agent-feed-secret-0123456789";
/// An address no trunk sends from.
pub const UNKNOWN_TRUNK_IP: &str = "127.0.0.3";

/// Knobs of the SIP channel of a test gateway.
#[derive(Debug, Clone)]
pub struct SipOptions {
    /// Where the agent side (a sipp uas) listens on 127.0.0.1.
    pub agent_port: u16,
    /// `record` or `reject`.
    pub fallback: String,
    /// Seconds the agent side may ring.
    pub ring_timeout_secs: u64,
    /// Blocked numbers.
    pub blocked_callers: Vec<String>,
    /// Longest recorded message, in seconds.
    pub max_message_secs: u64,
    /// INVITEs per second per source.
    pub invite_rate: f64,
    /// Burst of INVITEs.
    pub invite_burst: u32,
    /// Most calls at once.
    pub max_calls: usize,
    /// T1 in milliseconds.
    pub t1_ms: u64,
    /// Whether the agent feed is on (at `/agent/feed`).
    pub agent_feed: bool,
    /// Whether SIP over TLS is on (a self-signed certificate for `localhost` is made with
    /// openssl in the gateway's directory).
    pub tls: bool,
    /// Seconds without RTP either way after which a call is hung up.
    pub media_timeout_secs: u64,
    /// How many media ports the gateway may use (a bridged call takes four: an RTP and
    /// RTCP pair per leg).
    pub media_ports: u16,
    /// Speech recognition with the real model (`.dev/models/ggml-base.bin`, from
    /// deploy/fetch-model.sh, or `HOTLINE_ASR_MODEL`): an `[asr]` section.
    pub asr: bool,
    /// `[asr] queue`: utterances of all calls waiting for the one worker.
    pub asr_queue: usize,
    /// `[asr] model` instead of [`asr_model`].
    pub asr_model: Option<PathBuf>,
    /// `[asr] busy_window_ms` (the degraded mode's window) instead of the default.
    pub asr_busy_window_ms: Option<u64>,
    /// Art. 17 revisit calls: `[channels.sip.revisit] uri` (with `{number}`), and the
    /// seconds they ring.
    pub revisit: Option<(String, u64)>,
    /// Stream connections per source, and the ms a begun message has to complete.
    pub streams: Option<(usize, u64)>,
    /// Lines of a `[channels.sip.admission]` section (the calling number's share, the
    /// priority lane); the channel's defaults when absent.
    pub admission: Option<String>,
    /// An IPv6 listener beside the IPv4 one, on `[::1]` and the same port (UDP and TCP),
    /// and a trunk `carrier-v6` sending from `::1/128`.
    pub ipv6: bool,
}

impl SipOptions {
    /// Defaults for an agent side on `agent_port`.
    pub fn new(agent_port: u16) -> Self {
        SipOptions {
            agent_port,
            fallback: "record".into(),
            ring_timeout_secs: 10,
            blocked_callers: vec![],
            max_message_secs: 30,
            invite_rate: 1000.0,
            invite_burst: 1000,
            max_calls: 4000,
            t1_ms: 500,
            agent_feed: false,
            tls: false,
            media_timeout_secs: 20,
            media_ports: 3999,
            asr: false,
            asr_queue: 4,
            asr_model: None,
            asr_busy_window_ms: None,
            revisit: None,
            streams: None,
            admission: None,
            ipv6: false,
        }
    }

    /// The `[channels.sip]` section for a gateway on `port` (and `tls_port`), writing
    /// recordings under `dir/recordings` and TLS material in `dir`.
    pub fn config_section(&self, port: u16, tls_port: u16, dir: &Path) -> Result<String> {
        let recordings = dir.join("recordings");
        let tls = if self.tls {
            make_certificate(dir)?;
            format!(
                "[channels.sip.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            )
        } else {
            String::new()
        };
        // A small range sits above the ephemeral ports and the big ranges, so that no
        // other test gateway's calls take the few ports a test means to exhaust.
        let media = if self.media_ports < 100 {
            61_000 + (uuid::Uuid::new_v4().as_u128() % 1400) as u16 * 2
        } else {
            free_media_base()
        };
        let revisit = match &self.revisit {
            Some((uri, ring)) => {
                format!("[channels.sip.revisit]\nuri = \"{uri}\"\nring_timeout_secs = {ring}\n")
            }
            None => String::new(),
        };
        let blocked: Vec<String> = self
            .blocked_callers
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect();
        Ok(format!(
            r#"
[channels.sip]
listen_udp = "127.0.0.1:{port}"
listen_tcp = "127.0.0.1:{port}"
agent_target = "127.0.0.1:{agent}"
recordings_dir = "{rec}"
fallback = "{fallback}"
ring_timeout_secs = {ring}
max_message_secs = {msg}
blocked_callers = [{blocked}]
invite_rate_per_second = {rate}
invite_burst = {burst}
max_calls = {max_calls}
t1_ms = {t1}
{streams}
{ipv6}
trunks = [
  {{ name = "carrier-a", addresses = ["127.0.0.1/32"] }},{v6_trunk}
  {{ name = "{TRUNK_USER}", addresses = ["{DIGEST_TRUNK_IP}/32"], digest = {{ username = "{TRUNK_USER}", password_env = "E2E_TRUNK_PASSWORD" }} }},
]

{feed}
{tls}
{revisit}
{admission}
[channels.sip.media]
port_min = {media}
port_max = {media_max}
timeout_secs = {media_timeout}
{asr}
"#,
            agent = self.agent_port,
            rec = recordings.display(),
            fallback = self.fallback,
            ring = self.ring_timeout_secs,
            msg = self.max_message_secs,
            blocked = blocked.join(", "),
            rate = self.invite_rate,
            burst = self.invite_burst,
            max_calls = self.max_calls,
            t1 = self.t1_ms,
            streams = self
                .streams
                .map(|(n, ms)| {
                    format!("stream_max_per_source = {n}\nstream_message_timeout_ms = {ms}")
                })
                .unwrap_or_default(),
            admission = self
                .admission
                .as_ref()
                .map(|a| format!("[channels.sip.admission]\n{a}\n"))
                .unwrap_or_default(),
            ipv6 = if self.ipv6 {
                format!("listen_udp6 = \"[::1]:{port}\"\nlisten_tcp6 = \"[::1]:{port}\"")
            } else {
                String::new()
            },
            v6_trunk = if self.ipv6 {
                "\n  { name = \"carrier-v6\", addresses = [\"::1/128\"] },"
            } else {
                ""
            },
            // A range larger than what is left above the base ends at the last port (the
            // flood bench asks for 16,000 ports; a base of 52,000 once wrapped past
            // 65,535 and the gateway refused the range).
            media_max = media.saturating_add(self.media_ports - 1).min(65_534),
            media_timeout = self.media_timeout_secs,
            asr = if self.asr {
                format!(
                    "\n[asr]\nmodel = \"{}\"\nqueue = {}\n{}",
                    self.asr_model.clone().unwrap_or_else(asr_model).display(),
                    self.asr_queue,
                    self.asr_busy_window_ms
                        .map(|ms| format!("busy_window_ms = {ms}\n"))
                        .unwrap_or_default()
                )
            } else {
                String::new()
            },
            feed = if self.agent_feed {
                "[channels.sip.agent_feed]\ntoken_secret_env = \"E2E_FEED_SECRET\"\n"
            } else {
                ""
            },
        ))
    }
}

/// The speech model the tests use: `HOTLINE_ASR_MODEL`, or the one
/// deploy/fetch-model.sh puts in `.dev/models/` (`make test` runs it first).
pub fn asr_model() -> PathBuf {
    std::env::var_os("HOTLINE_ASR_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/models/ggml-base.bin")
        })
}

/// A self-signed certificate for `localhost` and its key, as `dir/cert.pem` and
/// `dir/key.pem` (openssl, as the CI installs it).
pub fn make_certificate(dir: &Path) -> Result<()> {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        // An end-entity certificate: rustls refuses a CA certificate as a server's.
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run openssl")?;
    if !status.success() {
        bail!("openssl could not make a certificate");
    }
    Ok(())
}

/// A TLS client to the gateway's SIP TLS port, trusting the certificate in `cert`.
pub async fn tls_connect(
    port: u16,
    cert: &Path,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert)? {
        roots.add(c?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(connector.connect(name, tcp).await?)
}

/// Reads one SIP message from a stream (framed by Content-Length), within `within`.
pub async fn read_sip<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    within: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = header(&format!("{head}\r\n\r\n"), "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A broker (memory storage) and a gateway with the SIP channel, its options set by
/// `configure`, logging at `rust_log`; also returns the port the agent side must listen
/// on (UDP, 127.0.0.1).
pub fn start_gateway(
    configure: impl FnOnce(&mut SipOptions),
    rust_log: &str,
) -> Result<(super::Broker, super::Gateway, u16)> {
    let broker = super::Broker::start(super::Storage::Memory)?;
    let agent_port = free_udp_tcp_port();
    let mut sip = SipOptions::new(agent_port);
    configure(&mut sip);
    let gw = super::Gateway::start(
        &broker.bootstrap(),
        super::GatewayOptions {
            sip: Some(sip),
            rust_log: rust_log.into(),
            ..super::GatewayOptions::default()
        },
    )?;
    Ok((broker, gw, agent_port))
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_udp_tcp_port() -> u16 {
    loop {
        let port = super::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An even port for sipp's media (`-mp`: it binds the port and the ones after it) on
/// `ip`, the address sipp binds: above the kernel's ephemeral ports (32768-60999 here)
/// and above every test gateway's media range ([`free_media_base`] ends below 56,000,
/// the small ranges below 64,000), taken in turn within a test process (from a random
/// first one) and checked free on `ip` and on 127.0.0.1. Before issue 28 it was a random
/// port from 57,000, checked on 127.0.0.1 only: an IPv6 sipp then met a port in use on
/// `::1` ("Unable to bind audio RTP socket (IP=::1, ...)", `sip_ipv6`, once in 20 runs),
/// and a port from the ephemeral range can be taken by any socket bound to port 0.
pub fn free_sipp_media_port(ip: &str) -> u16 {
    const FIRST: u16 = 64_000;
    const SLOTS: u16 = 380;
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU16> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        std::sync::atomic::AtomicU16::new(
            (uuid::Uuid::new_v4().as_u128() % u128::from(SLOTS)) as u16,
        )
    });
    loop {
        let slot = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SLOTS;
        let port = FIRST + slot * 4;
        let free = |ip: &str| {
            let sockets: Vec<_> = (0..4).map(|i| UdpSocket::bind((ip, port + i))).collect();
            sockets.iter().all(Result::is_ok)
        };
        if free(ip) && (ip == "127.0.0.1" || free("127.0.0.1")) {
            return port;
        }
    }
}

/// An even port to start a media range at: one of nine ranges of 4,000 ports, taken in
/// turn within a test process (from a random first one), so that gateways started by
/// tests running side by side never share a range. Two gateways with the same range hand
/// out the same ports in the same order: the one started second met the first one's
/// calls on every port it tried and refused its own (issue 28, `sip_flood`, one run in
/// six when the choice was random per gateway).
pub fn free_media_base() -> u16 {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU16> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        std::sync::atomic::AtomicU16::new((uuid::Uuid::new_v4().as_u128() % 9) as u16)
    });
    let slot = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 9;
    20_000 + slot * 4000
}

/// The directory with the sipp scenarios and their audio.
pub fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// A running sipp.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    name: String,
}

/// What a sipp run left.
#[derive(Debug)]
pub struct SippResult {
    /// Exit code (0: every call succeeded).
    pub code: Option<i32>,
    /// Its screen output (statistics).
    pub output: String,
    /// Its error log.
    pub errors: String,
    /// Its message trace.
    pub messages: String,
}

impl SippResult {
    /// Whether every call of the scenario succeeded.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// A report for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "exit {:?}\n--- errors\n{}\n--- output (tail)\n{}\n--- messages (tail)\n{}",
            self.code,
            tail(&self.errors, 3000),
            tail(&self.output, 1500),
            tail(&self.messages, 6000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

impl Sipp {
    /// Starts sipp with `scenario` (a file in [`sipp_dir`]) and the arguments after the
    /// common ones (`-i`, `-p`, `-mp`, traces, a timeout).
    pub fn start(
        name: &str,
        scenario: &str,
        local_ip: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Sipp> {
        Sipp::start_in(tempfile::tempdir()?, name, scenario, local_ip, port, args)
    }

    /// [`Sipp::start`] without the message and error traces: for floods, whose traces
    /// would cost sipp more than its calls.
    pub fn start_quiet(
        name: &str,
        scenario: &str,
        local_ip: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Sipp> {
        Sipp::spawn(
            tempfile::tempdir()?,
            name,
            scenario,
            local_ip,
            port,
            args,
            false,
        )
    }

    /// [`Sipp::start`] with its logs in `dir` (which may hold the scenario too).
    fn start_in(
        dir: tempfile::TempDir,
        name: &str,
        scenario: &str,
        local_ip: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Sipp> {
        Sipp::spawn(dir, name, scenario, local_ip, port, args, true)
    }

    fn spawn(
        dir: tempfile::TempDir,
        name: &str,
        scenario: &str,
        local_ip: &str,
        port: u16,
        args: &[&str],
        traces: bool,
    ) -> Result<Sipp> {
        let media = free_sipp_media_port(local_ip);
        let out = std::fs::File::create(dir.path().join("out.txt"))?;
        let mut command = Command::new("sipp");
        command
            .current_dir(sipp_dir())
            .args(["-sf", scenario, "-i", local_ip, "-p", &port.to_string()])
            .args(["-mp", &media.to_string(), "-nostdin"]);
        if traces {
            command
                .args(["-trace_err", "-trace_msg"])
                .arg("-error_file")
                .arg(dir.path().join("errors.txt"))
                .arg("-message_file")
                .arg(dir.path().join("messages.txt"));
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start sipp (apt-get install sip-tester)")?;
        Ok(Sipp {
            child,
            dir,
            name: name.to_owned(),
        })
    }

    /// The agent side: a uas on 127.0.0.1:`port`, one call unless `args` say otherwise.
    pub fn agent(scenario: &str, port: u16, args: &[&str]) -> Result<Sipp> {
        let mut all = vec!["-m", "1", "-timeout", "60s", "-timeout_error"];
        all.extend_from_slice(args);
        let s = Sipp::start("agent", scenario, "127.0.0.1", port, &all)?;
        // sipp binds its socket within milliseconds; a call placed before that would
        // meet a closed port.
        std::thread::sleep(Duration::from_millis(300));
        Ok(s)
    }

    /// The citizen's trunk: a uac from `local_ip` calling the gateway on `gateway_port`
    /// as `caller`.
    pub fn citizen(
        scenario: &str,
        local_ip: &str,
        gateway_port: u16,
        caller: &str,
        args: &[&str],
    ) -> Result<Sipp> {
        let all = uac_args(gateway_port, caller, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let port = super::free_port();
        Sipp::start("citizen", scenario, local_ip, port, &all)
    }

    /// The citizen's trunk over IPv6: a uac on `[::1]` calling the gateway's IPv6
    /// listener (`[::1]:gateway_port`, [`SipOptions::ipv6`]) as `caller`. sipp's
    /// `[local_ip_type]` and `[media_ip_type]` then say 6, so citizen-call.xml offers
    /// `c=IN IP6 ::1`.
    pub fn citizen_v6(
        scenario: &str,
        gateway_port: u16,
        caller: &str,
        args: &[&str],
    ) -> Result<Sipp> {
        let all = uac_args_to(&format!("[::1]:{gateway_port}"), caller, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let port = super::free_port();
        Sipp::start("citizen", scenario, "::1", port, &all)
    }

    /// The citizen's trunk like [`Sipp::citizen`], saying `wav` (8 kHz mu-law) once:
    /// citizen-speech.xml with that recording, then on the line for `-d` in all.
    pub fn citizen_saying(
        wav: &Path,
        gateway_port: u16,
        caller: &str,
        args: &[&str],
    ) -> Result<Sipp> {
        Sipp::citizen_saying_in("citizen-speech.xml", wav, gateway_port, caller, args)
    }

    /// [`Sipp::citizen_saying`] with another scenario that plays
    /// `../fixtures/speech/call-complaint.wav` (replaced by `wav`).
    pub fn citizen_saying_in(
        scenario: &str,
        wav: &Path,
        gateway_port: u16,
        caller: &str,
        args: &[&str],
    ) -> Result<Sipp> {
        let dir = tempfile::tempdir()?;
        let template = std::fs::read_to_string(sipp_dir().join(scenario))?;
        let from = "../fixtures/speech/call-complaint.wav";
        if !template.contains(from) {
            bail!("{scenario} no longer plays {from}");
        }
        let scenario = dir.path().join("citizen-says.xml");
        std::fs::write(
            &scenario,
            template.replace(from, &wav.display().to_string()),
        )?;
        let all = uac_args(gateway_port, caller, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let scenario = scenario.display().to_string();
        Sipp::start_in(
            dir,
            "citizen",
            &scenario,
            "127.0.0.1",
            super::free_port(),
            &all,
        )
    }

    /// What sipp has printed so far, and whether it is still running (for reports of a
    /// wait that timed out).
    pub fn progress(&mut self) -> String {
        let running = matches!(self.child.try_wait(), Ok(None));
        let out = std::fs::read_to_string(self.dir.path().join("out.txt")).unwrap_or_default();
        format!(
            "sipp {} running: {running}\n{}",
            self.name,
            tail(&out, 3000)
        )
    }

    /// The process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops sipp now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for sipp to exit (killing it after `within`).
    pub fn wait(mut self, within: Duration) -> Result<SippResult> {
        let deadline = Instant::now() + within;
        let code = loop {
            if let Some(status) = self.child.try_wait()? {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        Ok(SippResult {
            code,
            output: read("out.txt"),
            errors: read("errors.txt"),
            messages: read("messages.txt"),
        })
    }

    /// Waits and fails with sipp's logs unless every call succeeded.
    pub fn expect_ok(self, within: Duration) -> Result<SippResult> {
        let name = self.name.clone();
        let r = self.wait(within)?;
        if !r.ok() {
            bail!("sipp {name} failed: {}", r.report());
        }
        Ok(r)
    }
}

/// Writes a sipp injection file (`-inf`) of calling numbers, used in turn.
pub fn numbers_file(dir: &Path, name: &str, numbers: &[String]) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut text = String::from("SEQUENTIAL\n");
    for n in numbers {
        text.push_str(n);
        text.push_str(";\n");
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Short calls (citizen-numbers.xml: INVITE with an offer, ACK, BYE after `hold_ms`) at
/// `rate` a second, `calls` in all, from the numbers of `numbers` (an injection file),
/// to the gateway on `gateway_port`; sipp's statistics go to `stats` (read them with
/// [`sipp_counts`]). No message traces: this is for floods.
pub fn calls_from_numbers(
    gateway_port: u16,
    numbers: &Path,
    rate: u32,
    calls: u32,
    hold_ms: u64,
    stats: &Path,
) -> Result<Sipp> {
    let (rate, calls, hold) = (rate.to_string(), calls.to_string(), hold_ms.to_string());
    let numbers = numbers.display().to_string();
    let stats = stats.display().to_string();
    let target = format!("127.0.0.1:{gateway_port}");
    let args = [
        "-inf",
        &numbers,
        "-r",
        &rate,
        "-m",
        &calls,
        "-l",
        "100000",
        "-d",
        &hold,
        "-stf",
        &stats,
        "-trace_stat",
        "-fd",
        "1",
        "-timeout",
        "600s",
        "-recv_timeout",
        "8000",
        &target,
    ];
    Sipp::start_quiet(
        "citizens",
        "citizen-numbers.xml",
        "127.0.0.1",
        super::free_port(),
        &args,
    )
}

/// Successful and failed calls in the last row of sipp's `-trace_stat` CSV.
pub fn sipp_counts(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let Some(head) = lines.next() else {
        return (0, 0);
    };
    let cols: Vec<&str> = head.split(';').collect();
    let Some(last) = text.lines().rfind(|l| !l.is_empty()) else {
        return (0, 0);
    };
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// A citizen uac's arguments: one call as `caller` to the gateway, `args` added.
fn uac_args(gateway_port: u16, caller: &str, args: &[&str]) -> Vec<String> {
    uac_args_to(&format!("127.0.0.1:{gateway_port}"), caller, args)
}

fn uac_args_to(gateway: &str, caller: &str, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ["-m", "1", "-timeout", "60s", "-timeout_error"]
        .into_iter()
        .chain(["-key", "caller", caller])
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect();
    all.push(gateway.to_owned());
    all
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call from a sipp citizen (on 127.0.0.1) through the gateway to a sipp agent side:
/// `(scenario, args)` for the agent, `(scenario, caller, args)` for the citizen; fails
/// with sipp's logs unless both complete within a minute.
pub fn call_through(
    gw: &super::Gateway,
    agent_port: u16,
    agent: (&str, &[&str]),
    citizen: (&str, &str, &[&str]),
) -> Result<()> {
    let a = Sipp::agent(agent.0, agent_port, agent.1)?;
    let c = Sipp::citizen(citizen.0, "127.0.0.1", gw.sip_port, citizen.1, citizen.2)?;
    c.expect_ok(Duration::from_secs(60))?;
    a.expect_ok(Duration::from_secs(60))?;
    Ok(())
}

/// A SIP peer over a raw UDP socket, for exact bytes.
pub struct RawSip {
    /// The socket.
    pub sock: UdpSocket,
    target: SocketAddr,
}

impl RawSip {
    /// A socket on `local_ip` talking to the gateway's `port`.
    pub fn new(local_ip: &str, port: u16) -> Result<Self> {
        let sock = UdpSocket::bind((local_ip, 0))?;
        Ok(RawSip {
            sock,
            target: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// The local address.
    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound socket")
    }

    /// Sends bytes.
    pub fn send(&self, bytes: &[u8]) -> Result<()> {
        self.sock.send_to(bytes, self.target)?;
        Ok(())
    }

    /// The next message within `within`.
    pub fn recv(&self, within: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(within)).ok()?;
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one has a final status (>= 200) or `within` passes.
    pub fn recv_final(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(m) = self.recv(left.max(Duration::from_millis(1))) else {
                break;
            };
            let done = status_of(&m).is_some_and(|s| s >= 200);
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// An INVITE from this socket as `caller`, with an SDP offer of PCMU to `rtp_port`
    /// when given.
    pub fn invite(
        &self,
        call_id: &str,
        branch: &str,
        caller: &str,
        rtp_port: Option<u16>,
    ) -> String {
        let local = self.local();
        let body = match rtp_port {
            Some(p) => format!(
                "v=0\r\no=t 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                ip = local.ip()
            ),
            None => String::new(),
        };
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "INVITE sip:12345@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nFrom: <sip:{caller}@carrier.example>;tag=raw1\r\nTo: <sip:12345@{t}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{caller}@{local}>\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
            t = self.target,
            len = body.len()
        )
    }

    /// Ends a call this socket set up, `ok` being the gateway's 200 to its INVITE: the ACK
    /// (RFC 3261 §13.2.2.4) and, `hold` later, a BYE; the status of the BYE's answer
    /// (the 200 to the INVITE may come again meanwhile and is passed over).
    pub fn hang_up(&self, ok: &str, hold: Duration) -> Result<u16> {
        let target = header(ok, "Contact")
            .unwrap_or_default()
            .trim()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or_default()
            .to_owned();
        let (from, to, call_id) = (
            header(ok, "From").unwrap_or_default(),
            header(ok, "To").unwrap_or_default(),
            header(ok, "Call-ID").unwrap_or_default(),
        );
        let local = self.local();
        // A branch unique to the call and request.
        let id: String = call_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let request = |method: &str, cseq: u64| {
            format!(
                "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{id}{cseq};rport\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let cseq: u64 = header(ok, "CSeq")
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or(1);
        self.send(request("ACK", cseq).as_bytes())?;
        std::thread::sleep(hold);
        self.send(request("BYE", cseq + 1).as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left.max(Duration::from_millis(1))) {
                Some(m) if header(&m, "CSeq").is_some_and(|c| c.ends_with("BYE")) => {
                    return status_of(&m).context("BYE answer without status");
                }
                Some(_) => {}
                None => break,
            }
        }
        bail!("no answer to the BYE of {call_id}")
    }

    /// The ACK of a non-2xx final response to an INVITE made by [`RawSip::invite`].
    pub fn ack_failure(&self, invite: &str, response: &str) -> String {
        let via = header(invite, "Via").unwrap_or_default();
        let from = header(invite, "From").unwrap_or_default();
        let call_id = header(invite, "Call-ID").unwrap_or_default();
        let to = header(response, "To").unwrap_or_default();
        format!(
            "ACK sip:12345@{t} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            t = self.target
        )
    }
}

/// A desk token for `agent`, made as docs/sip.md documents it (an oracle, not the
/// gateway's own code): `<agent>.<expiry>.<hex HMAC-SHA256(secret, "<agent>.<expiry>")>`.
pub fn desk_token(agent: &str, valid_for: Duration) -> String {
    use hmac::{Hmac, Mac};
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + valid_for.as_secs();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(FEED_SECRET.as_bytes())
        .expect("any key length");
    mac.update(format!("{agent}.{expiry}").as_bytes());
    format!(
        "{agent}.{expiry}.{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The status code of a response.
pub fn status_of(message: &str) -> Option<u16> {
    let line = message.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The value of the first header `name` (case-insensitive) of a message.
pub fn header(message: &str, name: &str) -> Option<String> {
    message
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

/// A stereo recording, split into its channels.
#[derive(Debug)]
pub struct Recording {
    /// Samples per second.
    pub rate: u32,
    /// The citizen's channel.
    pub left: Vec<i16>,
    /// The agent's channel.
    pub right: Vec<i16>,
}

impl Recording {
    /// Reads a WAV the gateway wrote.
    pub fn open(path: &Path) -> Result<Self> {
        let mut r =
            hound::WavReader::open(path).with_context(|| format!("open {}", path.display()))?;
        let spec = r.spec();
        if spec.channels != 2 || spec.bits_per_sample != 16 {
            bail!("not 16-bit stereo: {spec:?}");
        }
        let samples: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>()?;
        let left = samples.iter().step_by(2).copied().collect();
        let right = samples.iter().skip(1).step_by(2).copied().collect();
        Ok(Recording {
            rate: spec.sample_rate,
            left,
            right,
        })
    }

    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        self.left.len() as f64 / f64::from(self.rate)
    }

    /// The middle half of each channel (citizen, agent): clear of the ringing before the
    /// answer and of the hang-up.
    pub fn middle(&self) -> (Vec<i16>, Vec<i16>) {
        let mid = |s: &[i16]| s[s.len() / 4..s.len() * 3 / 4].to_vec();
        (mid(&self.left), mid(&self.right))
    }

    /// Asserts the middle half carries the citizen's 440 Hz tone on the left and the
    /// agent's 880 Hz on the right (citizen-call.xml and agent-answer.xml), each louder
    /// than `min_rms`: audio relayed and recorded both ways.
    pub fn assert_tones_both_ways(&self, min_rms: f64) {
        let (left, right) = self.middle();
        assert!(
            rms(&left) > min_rms && rms(&right) > min_rms,
            "both channels carry signal: {} {}",
            rms(&left),
            rms(&right)
        );
        let (fl, fr) = (tone_hz(&left, self.rate), tone_hz(&right, self.rate));
        assert!((400.0..480.0).contains(&fl), "citizen channel at {fl} Hz");
        assert!((820.0..940.0).contains(&fr), "agent channel at {fr} Hz");
    }
}

/// Root-mean-square level of samples, 0 to 32767.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The dominant frequency of a tone, from its zero crossings.
pub fn tone_hz(samples: &[i16], rate: u32) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
}

/// The audible stretches of a channel: (first second with sound, seconds with sound).
pub fn sound_span(samples: &[i16], rate: u32) -> (f64, f64) {
    let chunk = (rate / 50) as usize;
    let loud: Vec<usize> = samples
        .chunks(chunk)
        .enumerate()
        .filter(|(_, c)| rms(c) > 500.0)
        .map(|(i, _)| i)
        .collect();
    let first = loud.first().map_or(f64::NAN, |i| *i as f64 / 50.0);
    (first, loud.len() as f64 / 50.0)
}

/// A TCP connection to the gateway's SIP port.
pub fn tcp_connect(port: u16) -> Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// A UDP socket that receives RTP, for counting what the gateway plays.
pub fn rtp_socket() -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// The next JSON text frame of an agent feed socket within `within`.
pub async fn next_event<S>(ws: &mut S, within: Duration) -> Option<serde_json::Value>
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).ok();
        }
    }
}

/// The phone contacts on Kafka in order of their sequence, once `count` of them have
/// arrived (within 20 s).
pub fn call_contacts(broker: &super::Broker, count: usize) -> Result<Vec<serde_json::Value>> {
    let phone = |r: &super::Received| r.value["channel"] == "phone";
    let records = super::consume(
        &broker.bootstrap(),
        super::CONTACTS,
        Duration::from_secs(20),
        |r| r.iter().filter(|r| phone(r)).count() >= count,
    )?;
    let mut out: Vec<serde_json::Value> = records
        .into_iter()
        .filter(|r| phone(r))
        .map(|r| r.value)
        .collect();
    out.sort_by_key(|v| v["sequence"].as_u64());
    Ok(out)
}
