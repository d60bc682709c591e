//! The gateway's typed configuration: one TOML file, every field documented, every
//! default a named constant, secrets read from the environment (never from the file),
//! and a [`Config::validate`] that refuses what would fail later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default public HTTP listener (chat WebSocket, SMS webhook).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener (health, readiness, metrics).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default environment variable holding the citizen-key secret.
pub const DEFAULT_CITIZEN_KEY_SECRET_ENV: &str = "GATEWAY_CITIZEN_KEY_SECRET";
/// Minimum length of the citizen-key secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Default grace period for draining work on shutdown, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Default maximum of undelivered records in the outbox.
pub const DEFAULT_OUTBOX_MAX_RECORDS: u64 = 1_000_000;
/// Default maximum of undelivered bytes in the outbox (1 GiB).
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 1 << 30;
/// Default maximum of submissions committed in one fsync (group commit).
pub const DEFAULT_OUTBOX_BATCH_MAX: usize = 1024;
/// Default retention of idempotency keys (carrier message ids), in seconds: 7 days.
pub const DEFAULT_IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;
/// Default contacts topic.
pub const DEFAULT_CONTACTS_TOPIC: &str = "hotline.contacts.v1";
/// Default ticket-drafts topic.
pub const DEFAULT_TICKET_DRAFTS_TOPIC: &str = "hotline.ticket-drafts.v1";
/// Default compacted topic of Art. 9 restrictions.
pub const DEFAULT_RESTRICTIONS_TOPIC: &str = "hotline.restrictions.v1";
/// Default topic of Art. 15 urgent notices.
pub const DEFAULT_NOTICES_TOPIC: &str = "hotline.urgent-notices.v1";
/// Default topic of audit events.
pub const DEFAULT_AUDIT_TOPIC: &str = "hotline.audit.v1";
/// How long a starting gateway waits for the restrictions topic before it admits.
pub const DEFAULT_RESTRICTIONS_LOAD_TIMEOUT_SECS: u64 = 15;
/// Default partitions of topics the gateway creates.
pub const DEFAULT_PARTITIONS: i32 = 3;
/// Default replication factor of topics the gateway creates.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 1;
/// Default librdkafka `message.timeout.ms`: how long one produce attempt may take
/// before the outbox retries it.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// Default number of records the drain keeps in flight to Kafka.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Default librdkafka `linger.ms`.
pub const DEFAULT_LINGER_MS: u64 = 5;

/// librdkafka properties the gateway sets itself for its delivery guarantee; config may
/// not override them through `kafka.properties`.
const PROTECTED_PROPERTIES: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "bootstrap.servers",
    "security.protocol",
    "sasl.password",
    "ssl.key.password",
];

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and housekeeping of this gateway instance.
    pub gateway: GatewaySection,
    /// The public HTTP port.
    #[serde(default)]
    pub http: HttpSection,
    /// The admin port.
    #[serde(default)]
    pub admin: AdminSection,
    /// The durable outbox.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// The Kafka sink.
    pub kafka: KafkaSection,
    /// The channels; a missing section leaves that channel off.
    #[serde(default)]
    pub channels: ChannelsSection,
    /// Art. 9 restrictions.
    #[serde(default)]
    pub restrictions: RestrictionsSection,
    /// Art. 15 urgent notices to the 110/119/120 linkage.
    #[serde(default)]
    pub linkage: LinkageSection,
    /// Speech recognition of calls; a missing section leaves it off.
    #[serde(default)]
    pub asr: Option<asr::AsrConfig>,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// This instance's name, in CloudEvents sources (`/gateway/<instance>/<channel>`).
    pub instance: String,
    /// Where the outbox and other local state live. Must be a local disk.
    pub data_dir: PathBuf,
    /// Environment variable holding the secret of the citizen key (at least 16 bytes).
    #[serde(default = "default_citizen_key_secret_env")]
    pub citizen_key_secret_env: String,
    /// Seconds to drain in-flight work on SIGTERM before stopping anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address of the public listener (chat WebSocket, SMS webhook).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_http_listen(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token `/metrics` requires. Required when
    /// `listen` is not a loopback address.
    #[serde(default)]
    pub token_env: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
            token_env: None,
        }
    }
}

/// `[outbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// Undelivered records past which new contacts are refused (retryable).
    #[serde(default = "default_outbox_max_records")]
    pub max_records: u64,
    /// Undelivered bytes past which new contacts are refused (retryable).
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: u64,
    /// Most submissions committed by one fsync.
    #[serde(default = "default_outbox_batch_max")]
    pub batch_max: usize,
    /// Seconds an idempotency key (a carrier's SMS id) is remembered.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl_secs: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            max_records: DEFAULT_OUTBOX_MAX_RECORDS,
            max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            batch_max: DEFAULT_OUTBOX_BATCH_MAX,
            idempotency_ttl_secs: DEFAULT_IDEMPOTENCY_TTL_SECS,
        }
    }
}

/// How the gateway talks to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL (development only).
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// `[kafka.tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of the CA that signed the brokers' certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM client key, for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// `[kafka.sasl]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSection {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The SASL user name.
    pub username: String,
    /// Environment variable holding the SASL password.
    pub password_env: String,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port` comma separated.
    pub brokers: String,
    /// Topic of contact events.
    #[serde(default = "default_contacts_topic")]
    pub contacts_topic: String,
    /// Topic of ticket-draft events.
    #[serde(default = "default_ticket_drafts_topic")]
    pub ticket_drafts_topic: String,
    /// Compacted topic of Art. 9 restrictions, keyed by citizen key; every instance
    /// reads all of it.
    #[serde(default = "default_restrictions_topic")]
    pub restrictions_topic: String,
    /// Topic of audit events (every change made through the admin API, every expiry).
    #[serde(default = "default_audit_topic")]
    pub audit_topic: String,
    /// Topic of Art. 15 urgent notice events, keyed by notice; every instance reads all
    /// of it.
    #[serde(default = "default_notices_topic")]
    pub notices_topic: String,
    /// Topic of outbound SMS requests (any service may publish one), keyed by request.
    #[serde(default = "default_sms_outbound_topic")]
    pub sms_outbound_topic: String,
    /// Topic of outbound SMS outcomes, keyed by request.
    #[serde(default = "default_sms_status_topic")]
    pub sms_status_topic: String,
    /// Topic of the ticket service's ticket transitions (read by whoever follows a
    /// ticket; the gateway writes none).
    #[serde(default = "default_ticket_status_topic")]
    pub ticket_status_topic: String,
    /// Topic of the ticket service's revisit-call requests (Art. 17), keyed by ticket.
    #[serde(default = "default_revisit_calls_topic")]
    pub revisit_calls_topic: String,
    /// Topic of revisit-call results, keyed by ticket.
    #[serde(default = "default_revisit_results_topic")]
    pub revisit_results_topic: String,
    /// Topic of the ticket service's messages into open chat sessions (the Art. 16
    /// survey), keyed by ticket.
    #[serde(default = "default_chat_outbound_topic")]
    pub chat_outbound_topic: String,
    /// Topic of their delivery reports, keyed by ticket.
    #[serde(default = "default_chat_status_topic")]
    pub chat_status_topic: String,
    /// Topic where the gateway's instances say they are alive (who runs which urgent
    /// notice's clock).
    #[serde(default = "default_members_topic")]
    pub members_topic: String,
    /// Prefix of the consumer group the gateway's instances share for outbound SMS
    /// (`<prefix>-sms-outbound`).
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Create the topics at start when they are missing (the development broker does not
    /// auto-create topics; production usually provisions them and sets this false).
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of created topics.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of created topics.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// librdkafka `message.timeout.ms`: after this, a produce attempt fails and the
    /// outbox retries the record later (it is never dropped).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// librdkafka `linger.ms`: batching delay.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Records the drain keeps in flight (a concurrency limit in front of rdkafka).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How to reach the brokers.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// TLS settings (with `ssl` or `sasl_ssl`).
    #[serde(default)]
    pub tls: TlsSection,
    /// SASL settings (with `sasl_plaintext` or `sasl_ssl`).
    #[serde(default)]
    pub sasl: Option<SaslSection>,
    /// Further librdkafka properties, for tuning. The delivery guarantee's own
    /// properties (idempotence, acks) cannot be set here.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `[restrictions]`: Art. 9 restrictions (the topics are in `[kafka]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionsSection {
    /// At start, how long to wait for the restrictions topic to be read to its end
    /// before the channels admit anybody. Past it the gateway starts with what it has
    /// read (nothing, if Kafka is down), logs an error and reports `synced: false`.
    #[serde(default = "default_restrictions_load_timeout")]
    pub load_timeout_secs: u64,
}

impl Default for RestrictionsSection {
    fn default() -> Self {
        RestrictionsSection {
            load_timeout_secs: DEFAULT_RESTRICTIONS_LOAD_TIMEOUT_SECS,
        }
    }
}

/// `[linkage]`: Art. 15 urgent notices (the topic is in `[kafka]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageSection {
    /// The operator feed's path on the public port.
    #[serde(default = "default_linkage_path")]
    pub path: String,
    /// The environment variable with the secret operator tokens are signed with (scope
    /// `linkage:`, subject `<target>:<operator>`). Without it the feed is off.
    #[serde(default)]
    pub token_secret_env: Option<String>,
    /// When an unacknowledged notice escalates, seconds after detection (default 300,
    /// 600, 1200), increasing, each before the alarm.
    #[serde(default = "default_escalation_secs")]
    pub escalation_secs: Vec<u64>,
    /// When an unacknowledged notice raises the alarm (Art. 15: at most 1800).
    #[serde(default = "default_alarm_secs")]
    pub alarm_secs: u64,
    /// The linkage lines and duty phones, by target (`"119"`, `"120"`, `"110"`, a unit's
    /// name as the cue rules write it).
    #[serde(default)]
    pub targets: BTreeMap<String, LinkageTarget>,
}

/// `[linkage.targets."<target>"]`: how an unacknowledged notice reaches a linkage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageTarget {
    /// The target's 24-hour linkage line, a SIP URI (`sip:119@10.1.2.3:5060`); called
    /// through the phone channel.
    #[serde(default)]
    pub uri: Option<String>,
    /// The duty phone that gets an SMS through the outbound SMS path.
    #[serde(default)]
    pub duty_phone: Option<String>,
}

impl Default for LinkageSection {
    fn default() -> Self {
        LinkageSection {
            path: default_linkage_path(),
            token_secret_env: None,
            escalation_secs: default_escalation_secs(),
            alarm_secs: default_alarm_secs(),
            targets: BTreeMap::new(),
        }
    }
}

impl LinkageSection {
    /// The notice policy these settings make.
    pub fn policy(&self) -> routing::NoticePolicy {
        routing::NoticePolicy {
            schedule: self
                .escalation_secs
                .iter()
                .map(|s| std::time::Duration::from_secs(*s))
                .collect(),
            alarm_after: std::time::Duration::from_secs(self.alarm_secs),
            ..routing::NoticePolicy::default()
        }
    }
}

/// `[channels]`: one optional section per channel (the registry's config variants).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsSection {
    /// Online chat over WebSocket.
    pub chat: Option<channel_chat::ChatConfig>,
    /// Inbound SMS webhook.
    pub sms: Option<channel_sms::SmsConfig>,
    /// Phone calls from carrier trunks (SIP).
    pub sip: Option<channel_sip::SipConfig>,
}

fn default_http_listen() -> SocketAddr {
    DEFAULT_HTTP_LISTEN
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN
        .parse()
        .unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_citizen_key_secret_env() -> String {
    DEFAULT_CITIZEN_KEY_SECRET_ENV.to_owned()
}
fn default_shutdown_grace() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}
fn default_outbox_max_records() -> u64 {
    DEFAULT_OUTBOX_MAX_RECORDS
}
fn default_outbox_max_bytes() -> u64 {
    DEFAULT_OUTBOX_MAX_BYTES
}
fn default_outbox_batch_max() -> usize {
    DEFAULT_OUTBOX_BATCH_MAX
}
fn default_idempotency_ttl() -> u64 {
    DEFAULT_IDEMPOTENCY_TTL_SECS
}
fn default_contacts_topic() -> String {
    DEFAULT_CONTACTS_TOPIC.to_owned()
}
fn default_ticket_drafts_topic() -> String {
    DEFAULT_TICKET_DRAFTS_TOPIC.to_owned()
}
fn default_restrictions_topic() -> String {
    DEFAULT_RESTRICTIONS_TOPIC.to_owned()
}
fn default_audit_topic() -> String {
    DEFAULT_AUDIT_TOPIC.to_owned()
}
fn default_notices_topic() -> String {
    DEFAULT_NOTICES_TOPIC.to_owned()
}
fn default_sms_outbound_topic() -> String {
    "hotline.sms-outbound.v1".to_owned()
}
fn default_sms_status_topic() -> String {
    "hotline.sms-status.v1".to_owned()
}
fn default_ticket_status_topic() -> String {
    "hotline.ticket-status.v1".to_owned()
}
fn default_revisit_calls_topic() -> String {
    "hotline.revisit-calls.v1".to_owned()
}
fn default_revisit_results_topic() -> String {
    "hotline.revisit-results.v1".to_owned()
}
fn default_chat_outbound_topic() -> String {
    "hotline.chat-outbound.v1".to_owned()
}
fn default_chat_status_topic() -> String {
    "hotline.chat-status.v1".to_owned()
}
fn default_members_topic() -> String {
    "hotline.gateway-members.v1".to_owned()
}
fn default_group_prefix() -> String {
    "hotline-gateway".to_owned()
}
fn default_linkage_path() -> String {
    "/linkage/ws".to_owned()
}
fn default_escalation_secs() -> Vec<u64> {
    vec![5 * 60, 10 * 60, 20 * 60]
}
fn default_alarm_secs() -> u64 {
    30 * 60
}
fn default_restrictions_load_timeout() -> u64 {
    DEFAULT_RESTRICTIONS_LOAD_TIMEOUT_SECS
}
fn default_partitions() -> i32 {
    DEFAULT_PARTITIONS
}
fn default_replication_factor() -> i32 {
    DEFAULT_REPLICATION_FACTOR
}
fn default_message_timeout_ms() -> u64 {
    DEFAULT_MESSAGE_TIMEOUT_MS
}
fn default_linger_ms() -> u64 {
    DEFAULT_LINGER_MS
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent with another.
    #[error("config value {field} is invalid: {reason}")]
    Invalid {
        /// The dotted path of the field.
        field: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A secret named by the config is not in the environment.
    #[error("environment variable {var} (named by {field}) is missing or too short: {reason}")]
    Secret {
        /// The variable.
        var: String,
        /// The config field that names it.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Secrets resolved from the environment.
#[derive(Clone)]
pub struct Secrets {
    /// The citizen-key secret.
    pub citizen_key: Vec<u8>,
    /// The admin bearer token, when configured.
    pub admin_token: Option<String>,
    /// The SASL password, when configured.
    pub sasl_password: Option<String>,
    /// The linkage operator token secret, when configured.
    pub linkage_token_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// Looks up an environment variable; tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads one secret from the environment.
pub fn secret_from_env(
    env: EnvLookup<'_>,
    var: &str,
    field: &str,
    min_len: usize,
) -> Result<String, ConfigError> {
    let value = env(var).ok_or_else(|| ConfigError::Secret {
        var: var.to_owned(),
        field: field.to_owned(),
        reason: "not set".to_owned(),
    })?;
    if value.len() < min_len {
        return Err(ConfigError::Secret {
            var: var.to_owned(),
            field: field.to_owned(),
            reason: format!("{} bytes, at least {min_len} required", value.len()),
        });
    }
    Ok(value)
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Config {
    /// Reads and parses a config file (without validating it).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value and resolves the secrets from the process environment.
    pub fn validate(&self) -> Result<Secrets, ConfigError> {
        self.validate_with(&|var| std::env::var(var).ok())
    }

    /// [`Config::validate`] against a given environment.
    pub fn validate_with(&self, env: EnvLookup<'_>) -> Result<Secrets, ConfigError> {
        let g = &self.gateway;
        if g.instance.is_empty()
            || !g
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "gateway.instance",
                "must be a non-empty name of letters, digits, '-', '_' or '.'",
            ));
        }
        if g.shutdown_grace_secs == 0 || g.shutdown_grace_secs > 600 {
            return Err(invalid("gateway.shutdown_grace_secs", "must be 1 to 600"));
        }
        let citizen_key = secret_from_env(
            env,
            &g.citizen_key_secret_env,
            "gateway.citizen_key_secret_env",
            MIN_SECRET_BYTES,
        )?
        .into_bytes();

        if self.http.listen == self.admin.listen && self.http.listen.port() != 0 {
            return Err(invalid("admin.listen", "must differ from http.listen"));
        }
        let admin_token = match &self.admin.token_env {
            Some(var) => Some(secret_from_env(
                env,
                var,
                "admin.token_env",
                MIN_SECRET_BYTES,
            )?),
            None if !self.admin.listen.ip().is_loopback() => {
                return Err(invalid(
                    "admin.token_env",
                    "required when admin.listen is not a loopback address: metrics must not be public",
                ));
            }
            None => None,
        };

        let o = &self.outbox;
        if o.max_records == 0 {
            return Err(invalid("outbox.max_records", "must be at least 1"));
        }
        if o.max_bytes < 1 << 20 {
            return Err(invalid("outbox.max_bytes", "must be at least 1 MiB"));
        }
        if !(1..=65_536).contains(&o.batch_max) {
            return Err(invalid("outbox.batch_max", "must be 1 to 65536"));
        }
        if o.idempotency_ttl_secs < 3600 {
            return Err(invalid(
                "outbox.idempotency_ttl_secs",
                "must be at least 3600: carriers redeliver for hours",
            ));
        }

        let k = &self.kafka;
        if k.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(invalid("kafka.brokers", "must name at least one host:port"));
        }
        for (field, topic) in [
            ("kafka.contacts_topic", &k.contacts_topic),
            ("kafka.ticket_drafts_topic", &k.ticket_drafts_topic),
            ("kafka.restrictions_topic", &k.restrictions_topic),
            ("kafka.audit_topic", &k.audit_topic),
            ("kafka.notices_topic", &k.notices_topic),
            ("kafka.sms_outbound_topic", &k.sms_outbound_topic),
            ("kafka.sms_status_topic", &k.sms_status_topic),
            ("kafka.ticket_status_topic", &k.ticket_status_topic),
            ("kafka.revisit_calls_topic", &k.revisit_calls_topic),
            ("kafka.revisit_results_topic", &k.revisit_results_topic),
            ("kafka.chat_outbound_topic", &k.chat_outbound_topic),
            ("kafka.chat_status_topic", &k.chat_status_topic),
            ("kafka.group_prefix", &k.group_prefix),
            ("kafka.members_topic", &k.members_topic),
        ] {
            if !valid_topic(topic) {
                return Err(invalid(
                    field,
                    "a Kafka topic name: 1-249 of letters, digits, '.', '_', '-'",
                ));
            }
        }
        let topics = [
            &k.contacts_topic,
            &k.ticket_drafts_topic,
            &k.restrictions_topic,
            &k.audit_topic,
            &k.notices_topic,
            &k.sms_outbound_topic,
            &k.sms_status_topic,
            &k.ticket_status_topic,
            &k.revisit_calls_topic,
            &k.revisit_results_topic,
            &k.chat_outbound_topic,
            &k.chat_status_topic,
            &k.members_topic,
        ];
        if topics
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            != topics.len()
        {
            return Err(invalid(
                "kafka.ticket_drafts_topic",
                "the gateway's topics (contacts, ticket drafts, restrictions, audit, notices, SMS outbound and status) must all differ",
            ));
        }
        if !(1..=600).contains(&self.restrictions.load_timeout_secs) {
            return Err(invalid(
                "restrictions.load_timeout_secs",
                "must be 1 to 600",
            ));
        }
        let l = &self.linkage;
        if !l.path.starts_with('/') {
            return Err(invalid("linkage.path", "must start with '/'"));
        }
        if l.alarm_secs == 0 || l.escalation_secs.contains(&0) {
            return Err(invalid("linkage.escalation_secs", "times must be above 0"));
        }
        l.policy()
            .validate()
            .map_err(|e| invalid("linkage.escalation_secs", &e))?;
        for (name, t) in &l.targets {
            if let Some(uri) = &t.uri
                && !(uri.starts_with("sip:") && uri.contains('@'))
            {
                return Err(invalid(
                    &format!("linkage.targets.{name}.uri"),
                    "must be a SIP URI, sip:user@host:port",
                ));
            }
            if let Some(p) = &t.duty_phone
                && contract::normalize_phone(p).is_none()
            {
                return Err(invalid(
                    &format!("linkage.targets.{name}.duty_phone"),
                    "must be a telephone number",
                ));
            }
        }
        let linkage_token_secret = match &l.token_secret_env {
            Some(var) => Some(secret_from_env(
                env,
                var,
                "linkage.token_secret_env",
                MIN_SECRET_BYTES,
            )?),
            None => None,
        };
        if k.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if k.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if k.message_timeout_ms < 1000 {
            return Err(invalid("kafka.message_timeout_ms", "must be at least 1000"));
        }
        if !(1..=1_000_000).contains(&k.max_in_flight) {
            return Err(invalid("kafka.max_in_flight", "must be 1 to 1000000"));
        }
        if let Some(p) = k
            .properties
            .keys()
            .find(|p| PROTECTED_PROPERTIES.contains(&p.as_str()))
        {
            return Err(invalid(
                &format!("kafka.properties.{p}"),
                "is set by the gateway for its delivery guarantee or comes from its own field",
            ));
        }
        let sasl_wanted = matches!(
            k.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        let sasl_password = match (&k.sasl, sasl_wanted) {
            (Some(s), true) => {
                if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&s.mechanism.as_str()) {
                    return Err(invalid(
                        "kafka.sasl.mechanism",
                        "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    ));
                }
                Some(secret_from_env(
                    env,
                    &s.password_env,
                    "kafka.sasl.password_env",
                    1,
                )?)
            }
            (None, true) => {
                return Err(invalid(
                    "kafka.sasl",
                    "required with security_protocol sasl_plaintext or sasl_ssl",
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    "kafka.sasl",
                    "set, but security_protocol does not use SASL",
                ));
            }
            (None, false) => None,
        };
        for (field, file) in [
            ("kafka.tls.ca_file", &k.tls.ca_file),
            ("kafka.tls.cert_file", &k.tls.cert_file),
            ("kafka.tls.key_file", &k.tls.key_file),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(invalid(field, format!("{} is not a file", path.display())));
            }
        }
        if k.tls.cert_file.is_some() != k.tls.key_file.is_some() {
            return Err(invalid("kafka.tls", "cert_file and key_file go together"));
        }

        if self.channels.chat.is_none()
            && self.channels.sms.is_none()
            && self.channels.sip.is_none()
        {
            return Err(invalid("channels", "no channel is configured"));
        }
        if let Some(chat) = &self.channels.chat {
            chat.validate()
                .map_err(|e| invalid("channels.chat", e.to_string()))?;
        }
        if let Some(chat) = &self.channels.chat {
            // A restarted gateway rebuilds a chat session's contact list from its
            // messages' idempotency keys: they must outlive any resumable session.
            if self.outbox.idempotency_ttl_secs <= chat.resume_window_secs {
                return Err(invalid(
                    "outbox.idempotency_ttl_secs",
                    "must exceed channels.chat.resume_window_secs",
                ));
            }
        }
        if let Some(sms) = &self.channels.sms {
            sms.validate(env)
                .map_err(|e| invalid("channels.sms", e.to_string()))?;
        }
        if let Some(sip) = &self.channels.sip {
            sip.validate(env)
                .map_err(|e| invalid("channels.sip", e.to_string()))?;
        }
        if let Some(a) = &self.asr {
            a.validate().map_err(|e| invalid("asr", e))?;
        }

        Ok(Secrets {
            citizen_key,
            admin_token,
            sasl_password,
            linkage_token_secret,
        })
    }

    /// The librdkafka client properties for this config (shared by producer and admin).
    pub fn kafka_client_properties(&self, secrets: &Secrets) -> Vec<(String, String)> {
        let k = &self.kafka;
        let mut props = vec![
            ("bootstrap.servers".to_owned(), k.brokers.clone()),
            (
                "security.protocol".to_owned(),
                k.security_protocol.as_librdkafka().to_owned(),
            ),
        ];
        let mut set = |key: &str, value: String| props.push((key.to_owned(), value));
        if let Some(ca) = &k.tls.ca_file {
            set("ssl.ca.location", ca.display().to_string());
        }
        if let Some(cert) = &k.tls.cert_file {
            set("ssl.certificate.location", cert.display().to_string());
        }
        if let Some(key) = &k.tls.key_file {
            set("ssl.key.location", key.display().to_string());
        }
        if let Some(sasl) = &k.sasl {
            set("sasl.mechanisms", sasl.mechanism.clone());
            set("sasl.username", sasl.username.clone());
            if let Some(password) = &secrets.sasl_password {
                set("sasl.password", password.clone());
            }
        }
        for (key, value) in &k.properties {
            props.push((key.clone(), value.clone()));
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[gateway]
instance = "t1"
data_dir = "/tmp/x"
citizen_key_secret_env = "CONFIG_TEST_SECRET"

[kafka]
brokers = "127.0.0.1:9092"

[channels.chat]
"#;

    fn env(var: &str) -> Option<String> {
        (var == "CONFIG_TEST_SECRET").then(|| "0123456789abcdef0123".to_owned())
    }

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let c = Config::parse(MINIMAL).expect("parses");
        c.validate_with(&env).expect("valid");
        assert_eq!(c.http.listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(c.kafka.contacts_topic, DEFAULT_CONTACTS_TOPIC);
        assert_eq!(c.outbox.max_records, DEFAULT_OUTBOX_MAX_RECORDS);
        assert!(!c.kafka.create_topics);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
        assert!(Config::parse(&text).is_err());
    }

    #[test]
    fn protected_kafka_properties_are_refused() {
        let text = MINIMAL.replace(
            "[channels.chat]",
            "[kafka.properties]\n\"enable.idempotence\" = \"false\"\n\n[channels.chat]",
        );
        let c = Config::parse(&text).expect("parses");
        let err = c.validate_with(&env).expect_err("must refuse");
        assert!(err.to_string().contains("enable.idempotence"), "{err}");
    }

    #[test]
    fn public_admin_without_token_is_refused() {
        let text = MINIMAL.replace("[kafka]", "[admin]\nlisten = \"0.0.0.0:9090\"\n\n[kafka]");
        let c = Config::parse(&text).expect("parses");
        let err = c.validate_with(&env).expect_err("must refuse");
        assert!(err.to_string().contains("admin.token_env"), "{err}");
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let text = MINIMAL.replace("CONFIG_TEST_SECRET", "CONFIG_TEST_SECRET_ABSENT");
        let c = Config::parse(&text).expect("parses");
        let err = c.validate_with(&env).expect_err("must refuse");
        assert!(
            err.to_string().contains("CONFIG_TEST_SECRET_ABSENT"),
            "{err}"
        );
    }

    #[test]
    fn idempotency_keys_must_outlive_resumable_chat_sessions() {
        let text = MINIMAL.replace(
            "[channels.chat]",
            "[outbox]\nidempotency_ttl_secs = 3600\n\n[channels.chat]\nresume_window_secs = 7200",
        );
        let c = Config::parse(&text).expect("parses");
        let err = c.validate_with(&env).expect_err("must refuse");
        assert!(err.to_string().contains("idempotency_ttl_secs"), "{err}");
    }

    #[test]
    fn same_topic_twice_is_refused() {
        let text = MINIMAL.replace(
            "brokers = \"127.0.0.1:9092\"",
            "brokers = \"127.0.0.1:9092\"\ncontacts_topic = \"a\"\nticket_drafts_topic = \"a\"",
        );
        let c = Config::parse(&text).expect("parses");
        assert!(c.validate_with(&env).is_err());
    }
}
