//! `[channels.sip]`: listeners, trunks, the agent side, media and recording.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

/// Default UDP and TCP listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5060";
/// Default seconds the agent side may ring before the fallback (RFC 3261 Timer C is
/// 3 minutes; a hotline caller should not wait that long for a desk).
pub const DEFAULT_RING_TIMEOUT_SECS: u64 = 30;
/// Default longest message a citizen may record on the fallback, in seconds.
pub const DEFAULT_MAX_MESSAGE_SECS: u64 = 120;
/// Default lowest RTP port (even; RTCP uses the next odd port).
pub const DEFAULT_MEDIA_PORT_MIN: u16 = 20_000;
/// Default highest RTP port.
pub const DEFAULT_MEDIA_PORT_MAX: u16 = 39_999;
/// Default sustained INVITEs per second one trunk may send; beyond, 503.
pub const DEFAULT_INVITE_RATE: f64 = 200.0;
/// Default burst of INVITEs above the sustained rate.
pub const DEFAULT_INVITE_BURST: u32 = 400;
/// Default most calls in progress at once; beyond, 503.
pub const DEFAULT_MAX_CALLS: usize = 4_000;
/// Default largest SIP message, in bytes (UDP datagrams rarely exceed 1,300; TCP messages
/// with large SDP stay well under this).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Default most header lines in one message.
pub const DEFAULT_MAX_HEADERS: usize = 96;
/// Default RFC 3261 T1 (round-trip estimate), in milliseconds.
pub const DEFAULT_T1_MS: u64 = 500;
/// Default seconds a call may go without RTP from either side before the gateway ends it
/// (a peer that vanished without BYE).
pub const DEFAULT_MEDIA_TIMEOUT_SECS: u64 = 60;

/// What happens when the agent side is busy, does not answer or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Answer, play the leave-a-message prompt, record the citizen, release. The message
    /// still becomes a contact.
    #[default]
    Record,
    /// Pass the failure back to the caller.
    Reject,
}

/// A carrier trunk or SBC allowed to send calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name in contacts and metrics.
    pub name: String,
    /// Source networks the trunk sends from (CIDR). Empty: any address, then digest
    /// authentication is required.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Digest authentication (RFC 8760 / 7616) the trunk must pass, in addition to the
    /// address check when both are set.
    #[serde(default)]
    pub digest: Option<DigestConfig>,
    /// This trunk's share of `max_calls`: most of its calls in progress at once, so that
    /// one trunk cannot take what the others need. Default: no share of its own.
    #[serde(default)]
    pub max_calls: Option<usize>,
}

/// `[channels.sip.admission]`: the fair shares checked before the global limits, and the
/// priority lane (see `admission.rs`; issue 14).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Calls in progress at once from one calling number.
    pub number_max_calls: usize,
    /// New calls one calling number may start a minute, sustained...
    pub number_calls_per_minute: f64,
    /// ...and in a burst.
    pub number_burst: u32,
    /// Calling numbers always on the priority lane (a known-good list: the 110/119/120
    /// linkage centres' lines, hospitals' dispatch desks). They skip the number and trunk
    /// shares and may take the reserved places.
    pub priority_callers: Vec<String>,
    /// Places of `max_calls` kept for the priority lane. Default: one in twenty.
    pub priority_reserve: Option<usize>,
    /// Art. 15: seconds during which a number whose call raised an urgent notice is on the
    /// priority lane (its call back about the same emergency). Default 30 minutes, the
    /// time Art. 15 gives the linkage.
    pub emergency_priority_secs: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            number_max_calls: 3,
            number_calls_per_minute: 6.0,
            number_burst: 6,
            priority_callers: Vec::new(),
            priority_reserve: None,
            emergency_priority_secs: 1800,
        }
    }
}

impl AdmissionConfig {
    /// Places of `max_calls` reserved for the priority lane.
    pub fn reserve(&self, max_calls: usize) -> usize {
        self.priority_reserve.unwrap_or(max_calls / 20)
    }
}

/// Digest credentials of a trunk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// The username the trunk presents.
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

/// `[channels.sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listener.
    #[serde(default = "default_listen")]
    pub listen_udp: SocketAddr,
    /// TCP listener (RFC 3261 §18: every element must support TCP).
    #[serde(default = "default_listen_tcp")]
    pub listen_tcp: Option<SocketAddr>,
    /// The host the gateway puts in Via, Contact and Record-Route. Default: the listener's
    /// address (must then not be unspecified). An IPv6 address may be written with or
    /// without brackets; it is sent in brackets (RFC 3261 §25.1 IPv6reference).
    #[serde(default)]
    pub advertised_host: Option<String>,
    /// A second UDP listener, on an IPv6 address, beside `listen_udp` (IPv4): trunks on
    /// either family reach the gateway, and each message goes out on the socket of its
    /// peer's family (an IPv6 socket cannot reach an IPv4 ACD, nor the reverse).
    #[serde(default)]
    pub listen_udp6: Option<SocketAddr>,
    /// A TCP listener on an IPv6 address, beside `listen_tcp`.
    #[serde(default)]
    pub listen_tcp6: Option<SocketAddr>,
    /// The host the gateway names itself by towards IPv6 peers. Default: `listen_udp6`'s
    /// address (must then not be unspecified).
    #[serde(default)]
    pub advertised_host6: Option<String>,
    /// The SIP domain / realm of digest challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The trunks allowed to send calls; anything else gets 403.
    pub trunks: Vec<TrunkConfig>,
    /// Where calls go: the centre's ACD or an agent softphone, as `ip:port` (UDP).
    pub agent_target: SocketAddr,
    /// Seconds the agent side may ring before the fallback.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u64,
    /// What happens when the agent side is busy, does not answer or fails.
    #[serde(default)]
    pub fallback: Fallback,
    /// Longest message a citizen may record on the fallback, in seconds.
    #[serde(default = "default_max_message_secs")]
    pub max_message_secs: u64,
    /// Callers refused admission, as phone numbers (normalised like contacts are). The
    /// routing blocklist (Art. 9) adds to this.
    #[serde(default)]
    pub blocked_callers: Vec<String>,
    /// Media relay.
    #[serde(default)]
    pub media: MediaConfig,
    /// Where per-call stereo WAV recordings go (caller left, agent right).
    pub recordings_dir: PathBuf,
    /// Sustained INVITEs per second one trunk may send (its share of the call rate,
    /// checked after the calling number's); beyond, 503 with Retry-After.
    #[serde(default = "default_invite_rate")]
    pub invite_rate_per_second: f64,
    /// Burst of INVITEs above the sustained rate.
    #[serde(default = "default_invite_burst")]
    pub invite_burst: u32,
    /// Most calls in progress at once; beyond, 503.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// What a source outside every trunk gets: `answer` (one 403, never retransmitted)
    /// or `silent` (nothing). Either way its retransmissions are absorbed unanswered.
    #[serde(default)]
    pub unknown_sources: UnknownSources,
    /// Stream (TCP and TLS) connections open at once, in all.
    #[serde(default = "default_stream_max")]
    pub stream_max_connections: usize,
    /// Stream connections open at once from one address.
    #[serde(default = "default_stream_per_source")]
    pub stream_max_per_source: usize,
    /// A message begun on a stream must be whole within this many milliseconds.
    #[serde(default = "default_stream_message_ms")]
    pub stream_message_timeout_ms: u64,
    /// Largest SIP message, in bytes; larger gets 513.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most header lines in one message; more gets 400.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// RFC 3261 T1 in milliseconds; retransmission and transaction timers scale from it.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    /// The agent call screen feed (a WebSocket on the public HTTP port); off when absent.
    #[serde(default)]
    pub agent_feed: Option<AgentFeedConfig>,
    /// SIP over TLS (RFC 3261 §26, `transport=tls`); off when absent.
    #[serde(default)]
    pub tls: Option<SipTlsConfig>,
    /// Art. 17 revisit calls to citizens through the trunk; off when absent.
    #[serde(default)]
    pub revisit: Option<RevisitConfig>,
    /// Fair shares per calling number and trunk, and the priority lane.
    #[serde(default)]
    pub admission: AdmissionConfig,
}

/// `[channels.sip.revisit]`: where the gateway's revisit calls to citizens go (Art. 17).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisitConfig {
    /// The SIP URI a revisit call is sent to, with `{number}` standing for the citizen's
    /// number: `sip:{number}@trunk.example:5060`. The host is the carrier trunk or SBC
    /// that places calls to the public network (UDP).
    pub uri: String,
    /// Seconds the citizen's phone may ring before the call is given up (`no_answer`).
    #[serde(default = "default_revisit_ring")]
    pub ring_timeout_secs: u64,
}

/// Default seconds a revisit call may ring (a citizen needs longer to reach the phone
/// than a desk).
pub const DEFAULT_REVISIT_RING_SECS: u64 = 40;
/// Where the citizen's number goes in [`RevisitConfig::uri`].
pub const NUMBER_PLACEHOLDER: &str = "{number}";

fn default_revisit_ring() -> u64 {
    DEFAULT_REVISIT_RING_SECS
}

impl RevisitConfig {
    /// The URI for calling `number`: `None` unless the number is digits with an optional
    /// leading `+` (anything else could change the URI it is put in).
    pub fn uri_for(&self, number: &str) -> Option<String> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(self.uri.replace(NUMBER_PLACEHOLDER, number))
    }

    fn validate(&self) -> Result<(), String> {
        if !self.uri.starts_with("sip:") {
            return Err("uri must be a sip: URI".into());
        }
        if !self.uri.contains(NUMBER_PLACEHOLDER) {
            return Err(format!("uri must hold {NUMBER_PLACEHOLDER}"));
        }
        let sample = self
            .uri_for("13800138000")
            .unwrap_or_else(|| unreachable!("a valid number"));
        match rsip::Uri::try_from(sample.as_str()) {
            Ok(u) if !u.host_with_port.host.to_string().is_empty() => {}
            _ => return Err("uri is not a SIP URI with a host once the number is in".into()),
        }
        if !(5..=300).contains(&self.ring_timeout_secs) {
            return Err("ring_timeout_secs must be 5 to 300".into());
        }
        Ok(())
    }
}

/// `[channels.sip.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTlsConfig {
    /// The TLS listener (5061 by convention).
    pub listen: SocketAddr,
    /// The server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Seconds a peer has to complete the handshake.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
}

/// Default seconds a TLS handshake may take.
pub const DEFAULT_TLS_HANDSHAKE_SECS: u64 = 10;

fn default_handshake() -> u64 {
    DEFAULT_TLS_HANDSHAKE_SECS
}

/// `[channels.sip.agent_feed]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFeedConfig {
    /// The WebSocket path on the public HTTP port.
    #[serde(default = "default_feed_path")]
    pub path: String,
    /// Environment variable holding the secret desk tokens are signed with (at least 16
    /// bytes; shared with the centre's desktop login service).
    pub token_secret_env: String,
    /// Sockets one agent may hold open at once.
    #[serde(default = "default_feed_connections")]
    pub max_connections_per_agent: usize,
}

/// Default path of the agent feed.
pub const DEFAULT_FEED_PATH: &str = "/agent/feed";
/// Default sockets per agent.
pub const DEFAULT_FEED_CONNECTIONS: usize = 4;

fn default_feed_path() -> String {
    DEFAULT_FEED_PATH.into()
}
fn default_feed_connections() -> usize {
    DEFAULT_FEED_CONNECTIONS
}

/// `[channels.sip.media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Address RTP sockets bind to. Default: the SIP UDP listener's address.
    #[serde(default)]
    pub bind: Option<IpAddr>,
    /// Address put in SDP. Default: `bind`.
    #[serde(default)]
    pub advertised: Option<IpAddr>,
    /// IPv6 address the RTP sockets of legs with an IPv6 peer bind to, when `bind` is
    /// IPv4. Default: `listen_udp6`'s address. A leg's sockets are of its peer's family:
    /// a citizen from an IPv6 trunk gets IPv6 sockets while the agent leg to an IPv4 ACD
    /// stays IPv4.
    #[serde(default)]
    pub bind6: Option<IpAddr>,
    /// IPv6 address put in SDP (`c=IN IP6`, RFC 8866 §5.7) for those legs. Default:
    /// `bind6`.
    #[serde(default)]
    pub advertised6: Option<IpAddr>,
    /// Lowest RTP port (even).
    #[serde(default = "default_port_min")]
    pub port_min: u16,
    /// Highest RTP port.
    #[serde(default = "default_port_max")]
    pub port_max: u16,
    /// Seconds without RTP from either side before the call is ended.
    #[serde(default = "default_media_timeout")]
    pub timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: None,
            advertised: None,
            bind6: None,
            advertised6: None,
            port_min: DEFAULT_MEDIA_PORT_MIN,
            port_max: DEFAULT_MEDIA_PORT_MAX,
            timeout_secs: DEFAULT_MEDIA_TIMEOUT_SECS,
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_listen_tcp() -> Option<SocketAddr> {
    Some(default_listen())
}
fn default_realm() -> String {
    "12345.hotline".into()
}
fn default_ring_timeout() -> u64 {
    DEFAULT_RING_TIMEOUT_SECS
}
fn default_max_message_secs() -> u64 {
    DEFAULT_MAX_MESSAGE_SECS
}
fn default_port_min() -> u16 {
    DEFAULT_MEDIA_PORT_MIN
}
fn default_port_max() -> u16 {
    DEFAULT_MEDIA_PORT_MAX
}
fn default_media_timeout() -> u64 {
    DEFAULT_MEDIA_TIMEOUT_SECS
}
fn default_invite_rate() -> f64 {
    DEFAULT_INVITE_RATE
}
fn default_invite_burst() -> u32 {
    DEFAULT_INVITE_BURST
}
/// What a source outside every trunk gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSources {
    /// One 403 Forbidden, never retransmitted.
    #[default]
    Answer,
    /// No answer at all.
    Silent,
}

fn default_stream_max() -> usize {
    1024
}
fn default_stream_per_source() -> usize {
    64
}
fn default_stream_message_ms() -> u64 {
    10_000
}

fn default_max_calls() -> usize {
    DEFAULT_MAX_CALLS
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_max_headers() -> usize {
    DEFAULT_MAX_HEADERS
}
fn default_t1() -> u64 {
    DEFAULT_T1_MS
}

/// A SIP setting out of range or a missing secret.
#[derive(Debug, thiserror::Error)]
pub enum SipConfigError {
    /// A value is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A trunk's digest password is missing or short.
    #[error("trunk {trunk}: environment variable {var} is missing or shorter than 12 bytes")]
    Secret {
        /// The trunk.
        trunk: String,
        /// The variable.
        var: String,
    },
}

impl SipConfig {
    /// Checks every setting and that each digest password is in `env`.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), SipConfigError> {
        let invalid = |field: &str, reason: &str| SipConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        };
        if self.trunks.is_empty() {
            return Err(invalid("trunks", "at least one trunk is needed"));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.trunks {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(invalid("trunks.name", "names must be set and distinct"));
            }
            if t.addresses.is_empty() && t.digest.is_none() {
                return Err(invalid(
                    &format!("trunks.{}", t.name),
                    "needs addresses, digest, or both",
                ));
            }
            if let Some(d) = &t.digest
                && env(&d.password_env).is_none_or(|p| p.len() < 12)
            {
                return Err(SipConfigError::Secret {
                    trunk: t.name.clone(),
                    var: d.password_env.clone(),
                });
            }
        }
        if self.advertised_host.is_none() && self.listen_udp.ip().is_unspecified() {
            return Err(invalid(
                "advertised_host",
                "required when listen_udp is an unspecified address",
            ));
        }
        let m = &self.media;
        if !m.port_min.is_multiple_of(2) || m.port_min >= m.port_max || m.port_min < 1024 {
            return Err(invalid(
                "media.port_min",
                "must be even, at least 1024 and below port_max",
            ));
        }
        if m.advertised.is_none() && m.bind.unwrap_or(self.listen_udp.ip()).is_unspecified() {
            return Err(invalid(
                "media.advertised",
                "required when media.bind is an unspecified address",
            ));
        }
        self.validate_ipv6()?;
        if !(1..=600).contains(&self.ring_timeout_secs) {
            return Err(invalid("ring_timeout_secs", "must be 1 to 600"));
        }
        if !(1..=3600).contains(&self.max_message_secs) {
            return Err(invalid("max_message_secs", "must be 1 to 3600"));
        }
        if !(5..=3600).contains(&m.timeout_secs) {
            return Err(invalid("media.timeout_secs", "must be 5 to 3600"));
        }
        if self.invite_rate_per_second.is_nan()
            || self.invite_rate_per_second <= 0.0
            || self.invite_burst == 0
        {
            return Err(invalid(
                "invite_rate_per_second",
                "rate and burst must be positive",
            ));
        }
        if self.stream_max_connections == 0 || self.stream_max_per_source == 0 {
            return Err(invalid(
                "stream_max_connections",
                "stream connection caps must be positive",
            ));
        }
        if !(100..=600_000).contains(&self.stream_message_timeout_ms) {
            return Err(invalid("stream_message_timeout_ms", "100 to 600,000"));
        }
        if self.max_calls == 0 {
            return Err(invalid("max_calls", "must be positive"));
        }
        if self.trunks.iter().any(|t| t.max_calls == Some(0)) {
            return Err(invalid("trunks.max_calls", "must be positive"));
        }
        let a = &self.admission;
        if a.number_max_calls == 0
            || a.number_burst == 0
            || a.number_calls_per_minute.is_nan()
            || a.number_calls_per_minute <= 0.0
        {
            return Err(invalid(
                "admission.number_max_calls",
                "a number's calls at once, rate and burst must be positive",
            ));
        }
        if a.reserve(self.max_calls) >= self.max_calls {
            return Err(invalid(
                "admission.priority_reserve",
                "must leave places below max_calls",
            ));
        }
        if a.priority_callers
            .iter()
            .any(|n| contract::normalize_phone(n).is_none())
        {
            return Err(invalid(
                "admission.priority_callers",
                "each must be a phone number",
            ));
        }
        if !(1024..=65_535).contains(&self.max_message_bytes) {
            return Err(invalid("max_message_bytes", "must be 1024 to 65535"));
        }
        if !(16..=1024).contains(&self.max_headers) {
            return Err(invalid("max_headers", "must be 16 to 1024"));
        }
        if !(10..=5000).contains(&self.t1_ms) {
            return Err(invalid("t1_ms", "must be 10 to 5000"));
        }
        if let Some(t) = &self.tls {
            for (field, path) in [
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
            ] {
                if !path.is_file() {
                    return Err(invalid(
                        field,
                        &format!("{} is not a readable file", path.display()),
                    ));
                }
            }
            if !(1..=60).contains(&t.handshake_timeout_secs) {
                return Err(invalid("tls.handshake_timeout_secs", "must be 1 to 60"));
            }
        }
        if let Some(f) = &self.agent_feed {
            if !f.path.starts_with('/') {
                return Err(invalid("agent_feed.path", "must start with /"));
            }
            if !(1..=64).contains(&f.max_connections_per_agent) {
                return Err(invalid(
                    "agent_feed.max_connections_per_agent",
                    "must be 1 to 64",
                ));
            }
            if env(&f.token_secret_env).is_none_or(|s| s.len() < 16) {
                return Err(invalid(
                    "agent_feed.token_secret_env",
                    &format!(
                        "environment variable {} is missing or shorter than 16 bytes",
                        f.token_secret_env
                    ),
                ));
            }
        }
        if let Some(r) = &self.revisit {
            r.validate().map_err(|reason| invalid("revisit", &reason))?;
        }
        for n in &self.blocked_callers {
            if contract::identity::normalize_phone(n).is_none() {
                return Err(invalid("blocked_callers", "each must be a phone number"));
            }
        }
        Ok(())
    }

    /// The IPv6 settings: each listener and address of the right family, and an
    /// advertised one where the bound one is unspecified.
    fn validate_ipv6(&self) -> Result<(), SipConfigError> {
        let invalid = |field: &str, reason: &str| SipConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        };
        for (field, addr) in [
            ("listen_udp6", self.listen_udp6.map(|a| a.ip())),
            ("listen_tcp6", self.listen_tcp6.map(|a| a.ip())),
            ("media.bind6", self.media.bind6),
            ("media.advertised6", self.media.advertised6),
        ] {
            if addr.is_some_and(|a| !a.is_ipv6()) {
                return Err(invalid(field, "must be an IPv6 address"));
            }
        }
        if self.listen_udp6.is_some() && self.listen_udp.is_ipv6() {
            return Err(invalid(
                "listen_udp6",
                "listen_udp is IPv6 already: a second listener is for IPv4 plus IPv6",
            ));
        }
        for (field, host) in [
            ("advertised_host", &self.advertised_host),
            ("advertised_host6", &self.advertised_host6),
        ] {
            if let Some(h) = host
                && !host_is_usable(h)
            {
                return Err(invalid(
                    field,
                    "must be a host name, an IPv4 address or an IPv6 address (no port)",
                ));
            }
        }
        if self.advertised_host6.is_some() && self.listen_udp6.is_none() {
            return Err(invalid("advertised_host6", "needs listen_udp6"));
        }
        if self.advertised_host6.is_none()
            && self.listen_udp6.is_some_and(|a| a.ip().is_unspecified())
        {
            return Err(invalid(
                "advertised_host6",
                "required when listen_udp6 is an unspecified address",
            ));
        }
        if self.media.advertised6.is_some()
            && self.media_bind6().is_none()
            && !self.media_bind().is_ipv6()
        {
            return Err(invalid(
                "media.advertised6",
                "needs IPv6 media sockets: media.bind6, listen_udp6, or an IPv6 media.bind",
            ));
        }
        if let Some(bind6) = self.media_bind6()
            && self.media.advertised6.is_none()
            && bind6.is_unspecified()
        {
            return Err(invalid(
                "media.advertised6",
                "required when media.bind6 is an unspecified address",
            ));
        }
        Ok(())
    }

    /// The host the gateway names itself by (towards IPv4 peers, or all peers without an
    /// IPv6 listener of its own).
    pub fn host(&self) -> String {
        match &self.advertised_host {
            Some(h) => sip_host(h),
            None => sip_host(&self.listen_udp.ip().to_string()),
        }
    }

    /// The host the gateway names itself by towards IPv6 peers, with `listen_udp6`.
    pub fn host6(&self) -> Option<String> {
        let listen = self.listen_udp6?;
        Some(match &self.advertised_host6 {
            Some(h) => sip_host(h),
            None => sip_host(&listen.ip().to_string()),
        })
    }

    /// The address RTP sockets bind to.
    pub fn media_bind(&self) -> IpAddr {
        self.media.bind.unwrap_or(self.listen_udp.ip())
    }

    /// The address put in SDP.
    pub fn media_advertised(&self) -> IpAddr {
        self.media.advertised.unwrap_or(self.media_bind())
    }

    /// The IPv6 address RTP sockets of IPv6 legs bind to, beside an IPv4 `media_bind`.
    pub fn media_bind6(&self) -> Option<IpAddr> {
        if self.media_bind().is_ipv6() {
            return None;
        }
        self.media.bind6.or(self.listen_udp6.map(|a| a.ip()))
    }

    /// The address put in SDP for a leg whose peer is `peer`: of the peer's family where
    /// the gateway has media of that family.
    pub fn media_advertised_for(&self, peer: IpAddr) -> IpAddr {
        if peer.is_ipv6() {
            // A dual-stack `bind = "::"` has no `media_bind6`, yet may name its IPv6
            // address apart from the IPv4 one its IPv4 legs are told.
            if let Some(a) = self.media.advertised6 {
                return a;
            }
            if let Some(bind6) = self.media_bind6() {
                return bind6;
            }
        }
        self.media_advertised()
    }
}

/// `host` as SIP writes it: an IPv6 address in brackets (RFC 3261 §25.1 IPv6reference,
/// so that its colons are not taken for the port's), anything else as it is.
pub fn sip_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_owned(),
    }
}

/// A host as `advertised_host` may give it: a name, an IPv4 address, or an IPv6 address
/// with or without brackets; no port, nothing else.
fn host_is_usable(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return bare.parse::<std::net::Ipv6Addr>().is_ok() || bare == host;
    }
    !host.is_empty()
        && bare == host
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revisit(uri: &str) -> RevisitConfig {
        RevisitConfig {
            uri: uri.into(),
            ring_timeout_secs: DEFAULT_REVISIT_RING_SECS,
        }
    }

    fn sip(extra: &str) -> SipConfig {
        let text = format!(
            "listen_udp = \"127.0.0.1:5060\"\nagent_target = \"127.0.0.1:5070\"\nrecordings_dir = \"/tmp\"\ntrunks = [{{ name = \"a\", addresses = [\"127.0.0.1/32\", \"2001:db8::/32\", \"::1/128\"] }}]\n{extra}\n"
        );
        toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn ipv6_hosts_are_advertised_in_brackets() {
        let c = sip("listen_udp6 = \"[::1]:5060\"");
        assert!(c.validate(&|_| None).is_ok());
        assert_eq!(c.host(), "127.0.0.1");
        assert_eq!(c.host6().as_deref(), Some("[::1]"));
        let c = sip(
            "listen_udp6 = \"[::]:5060\"\nadvertised_host6 = \"2001:db8::10\"\n[media]\nadvertised6 = \"2001:db8::10\"",
        );
        assert!(c.validate(&|_| None).is_ok());
        assert_eq!(c.host6().as_deref(), Some("[2001:db8::10]"));
        let mut c = sip("advertised_host = \"[2001:db8::10]\"");
        assert_eq!(c.host(), "[2001:db8::10]");
        c.listen_udp = "[::1]:5060".parse().expect("addr");
        c.advertised_host = None;
        assert_eq!(c.host(), "[::1]");
        assert_eq!(c.host6(), None);
    }

    #[test]
    fn ipv6_settings_are_checked() {
        for bad in [
            "listen_udp6 = \"127.0.0.1:5062\"",
            "listen_tcp6 = \"127.0.0.1:5062\"",
            "listen_udp6 = \"[::]:5062\"",
            "advertised_host6 = \"[::1]\"",
            "listen_udp6 = \"[::1]:5062\"\nadvertised_host6 = \"[::1]:5060\"",
            "advertised_host = \"gw.example:5060\"",
            "advertised_host = \"[gw.example]\"",
            "listen_udp6 = \"[::1]:5062\"\n[media]\nbind6 = \"127.0.0.1\"",
            "listen_udp6 = \"[::1]:5062\"\n[media]\nbind6 = \"::\"",
            "[media]\nadvertised6 = \"192.0.2.1\"",
        ] {
            assert!(sip(bad).validate(&|_| None).is_err(), "{bad}");
        }
        let ok = sip(
            "listen_udp6 = \"[::1]:5062\"\n[media]\nbind6 = \"::\"\nadvertised6 = \"2001:db8::10\"",
        );
        assert!(ok.validate(&|_| None).is_ok());
    }

    #[test]
    fn each_leg_gets_media_of_its_peers_family() {
        let c = sip("listen_udp6 = \"[::1]:5060\"");
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        let v6: IpAddr = "2001:db8::20".parse().expect("ip");
        assert_eq!(c.media_bind6(), Some("::1".parse().expect("ip")));
        assert_eq!(c.media_advertised_for(v4), c.media_advertised());
        assert_eq!(
            c.media_advertised_for(v6),
            "::1".parse::<IpAddr>().expect("ip")
        );
        // Without IPv6 media, every leg gets the one address there is.
        let c = sip("");
        assert_eq!(c.media_bind6(), None);
        assert_eq!(c.media_advertised_for(v6), c.media_advertised());
        let c = sip("listen_udp6 = \"[::1]:5060\"\n[media]\nadvertised6 = \"2001:db8::10\"");
        assert_eq!(
            c.media_advertised_for(v6),
            "2001:db8::10".parse::<IpAddr>().expect("ip")
        );
        // One dual-stack socket family: each family is told its own address.
        let c = sip(
            "[media]\nbind = \"::\"\nadvertised = \"192.0.2.10\"\nadvertised6 = \"2001:db8::10\"",
        );
        assert!(c.validate(&|_| None).is_ok());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(c.media_advertised_for(v4), ip("192.0.2.10"));
        assert_eq!(c.media_advertised_for(v6), ip("2001:db8::10"));
    }

    #[test]
    fn ipv6_trunk_cidrs_match_ipv6_sources() {
        let c = sip("");
        let nets = &c.trunks[0].addresses;
        let matches = |ip: &str| {
            nets.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().expect("ip")))
        };
        assert!(matches("2001:db8::20"));
        assert!(matches("::1"));
        assert!(matches("127.0.0.1"));
        assert!(!matches("2001:db9::1"));
        // A dual-stack socket reports an IPv4 peer IPv4-mapped; the endpoint turns it
        // back (endpoint::canonical) before any trunk is matched.
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:5060".parse().expect("addr");
        let canonical = crate::endpoint::canonical(mapped);
        assert!(matches(&canonical.ip().to_string()));
    }

    #[test]
    fn art17_the_revisit_uri_takes_the_number() {
        let r = revisit("sip:{number}@127.0.0.1:5070");
        assert_eq!(
            r.uri_for("13800138000").as_deref(),
            Some("sip:13800138000@127.0.0.1:5070")
        );
        assert_eq!(
            r.uri_for("+8613800138000").as_deref(),
            Some("sip:+8613800138000@127.0.0.1:5070")
        );
    }

    #[test]
    fn art17_a_number_that_is_not_digits_is_not_put_in_a_uri() {
        let r = revisit("sip:{number}@127.0.0.1:5070");
        for bad in [
            "",
            "+",
            "138@evil.example",
            "138;x=1",
            "138 0",
            "12345678901234567890123",
        ] {
            assert_eq!(r.uri_for(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn art17_the_revisit_section_is_checked() {
        assert!(
            revisit("sip:{number}@trunk.example:5060")
                .validate()
                .is_ok()
        );
        for bad in [
            "sip:13800138000@trunk.example",
            "tel:{number}",
            "{number}@trunk.example",
        ] {
            assert!(revisit(bad).validate().is_err(), "{bad}");
        }
        let mut slow = revisit("sip:{number}@trunk.example");
        slow.ring_timeout_secs = 0;
        assert!(slow.validate().is_err());
    }
}
