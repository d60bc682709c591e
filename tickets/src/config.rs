//! The service's typed configuration (TOML), checked by [`Config::validate`] before
//! anything starts. Secrets come from the environment, never the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This instance's name among the service's instances (unique per running process;
    /// a restarted process may reuse it). Default: the host name and process id.
    #[serde(default)]
    pub instance: Option<String>,
    /// The database.
    pub database: DatabaseConfig,
    /// The bus.
    pub kafka: KafkaConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Rule data beyond the shipped files.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Clocks.
    #[serde(default)]
    pub clock: ClockConfig,
    /// The follow-up after closure (Arts. 13, 16, 17).
    #[serde(default)]
    pub followup: FollowupConfig,
}

/// `[followup]`: the result SMS, the survey, revisits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowupConfig {
    /// No valid reply within this counts as satisfied (Art. 16: 24 hours; tests shorten
    /// it).
    #[serde(default = "default_survey_window")]
    pub survey_window_secs: u64,
    /// `call` (the gateway's automated call) or `agent` (a task in the API).
    #[serde(default = "default_revisit_mode")]
    pub revisit_mode: crate::followup::RevisitMode,
    /// The gap between failed revisit attempts.
    #[serde(default = "default_revisit_retry")]
    pub revisit_retry_secs: u64,
    /// A revisit call with no result after this counts as failed.
    #[serde(default = "default_revisit_timeout")]
    pub revisit_result_timeout_secs: u64,
    /// Texts to use instead of the shipped `data/followup.toml`.
    #[serde(default)]
    pub templates_file: Option<PathBuf>,
}

fn default_survey_window() -> u64 {
    24 * 3600
}
fn default_revisit_mode() -> crate::followup::RevisitMode {
    crate::followup::RevisitMode::Call
}
fn default_revisit_retry() -> u64 {
    2 * 3600
}
fn default_revisit_timeout() -> u64 {
    15 * 60
}

impl Default for FollowupConfig {
    fn default() -> Self {
        FollowupConfig {
            survey_window_secs: default_survey_window(),
            revisit_mode: default_revisit_mode(),
            revisit_retry_secs: default_revisit_retry(),
            revisit_result_timeout_secs: default_revisit_timeout(),
            templates_file: None,
        }
    }
}

impl FollowupConfig {
    /// The store's settings, with the texts read.
    pub fn params(&self) -> anyhow::Result<crate::followup::Params> {
        let templates = match &self.templates_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                crate::followup::Templates::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
            }
            None => crate::followup::Templates::builtin(),
        };
        Ok(crate::followup::Params {
            templates,
            survey_window: Duration::from_secs(self.survey_window_secs),
            revisit_mode: self.revisit_mode,
            revisit_retry: Duration::from_secs(self.revisit_retry_secs),
            revisit_result_timeout: Duration::from_secs(self.revisit_result_timeout_secs),
        })
    }
}

/// The database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/db`; a password comes from `TICKETS_DATABASE_PASSWORD`
    /// when set (or in the URL for development).
    pub url: String,
    /// Pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

fn default_pool() -> u32 {
    16
}

/// The bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,...`.
    pub brokers: String,
    /// The consumer group: offsets are kept in the database under this name.
    #[serde(default = "default_group")]
    pub group: String,
    /// The gateway's contacts topic.
    #[serde(default = "default_contacts")]
    pub contacts_topic: String,
    /// The gateway's ticket-drafts topic.
    #[serde(default = "default_drafts")]
    pub drafts_topic: String,
    /// Where ticket transitions go.
    #[serde(default = "default_status")]
    pub status_topic: String,
    /// Where records that cannot be applied go, with the reason.
    #[serde(default = "default_dead_letter")]
    pub dead_letter_topic: String,
    /// The gateway's outbound SMS requests (result SMS, survey; Arts. 13, 16).
    #[serde(default = "default_sms_outbound")]
    pub sms_outbound_topic: String,
    /// Revisit-call requests to the gateway (Art. 17).
    #[serde(default = "default_revisit_calls")]
    pub revisit_calls_topic: String,
    /// The gateway's revisit-call results.
    #[serde(default = "default_revisit_results")]
    pub revisit_results_topic: String,
    /// The gateway's outbound SMS outcomes (a survey's window starts when it was sent).
    #[serde(default = "default_sms_status")]
    pub sms_status_topic: String,
    /// Messages into open chat sessions (the chat survey, Art. 16), to the gateway.
    #[serde(default = "default_chat_outbound")]
    pub chat_outbound_topic: String,
    /// The gateway's reports on them.
    #[serde(default = "default_chat_status")]
    pub chat_status_topic: String,
    /// Partitions of the topics the service creates (status, dead letters).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Most records applied in one transaction.
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// How long a fetch waits at the broker for new records (`fetch.wait.max.ms`): the
    /// bound on an idle service's draft-to-ticket latency where the broker answers a
    /// fetch only when the wait is over (tansu), and the rate of idle fetches.
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_ms: u32,
    /// Extra librdkafka properties (security, timeouts).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_group() -> String {
    "ticket-service".into()
}
fn default_contacts() -> String {
    "hotline.contacts.v1".into()
}
fn default_drafts() -> String {
    "hotline.ticket-drafts.v1".into()
}
fn default_status() -> String {
    "hotline.ticket-status.v1".into()
}
fn default_dead_letter() -> String {
    "hotline.tickets-dead-letter.v1".into()
}
fn default_sms_outbound() -> String {
    "hotline.sms-outbound.v1".into()
}
fn default_revisit_calls() -> String {
    "hotline.revisit-calls.v1".into()
}
fn default_revisit_results() -> String {
    "hotline.revisit-results.v1".into()
}
fn default_sms_status() -> String {
    "hotline.sms-status.v1".into()
}
fn default_chat_outbound() -> String {
    "hotline.chat-outbound.v1".into()
}
fn default_chat_status() -> String {
    "hotline.chat-status.v1".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_batch() -> usize {
    200
}
fn default_fetch_wait() -> u32 {
    20
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The environment variable holding the token secret (at least 16 bytes).
    #[serde(default = "default_secret_env")]
    pub token_secret_env: String,
    /// Progress queries (Art. 14) per second, all citizens together.
    #[serde(default = "default_progress_rate")]
    pub progress_per_sec: f64,
    /// Wrong checks allowed per reference per 15 minutes before it is locked for the rest
    /// of them.
    #[serde(default = "default_progress_failures")]
    pub progress_failures: u32,
}

fn default_secret_env() -> String {
    "TICKETS_TOKEN_SECRET".into()
}
fn default_progress_rate() -> f64 {
    50.0
}
fn default_progress_failures() -> u32 {
    5
}

/// Rule data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Extra holiday files (one per year, as `data/holidays/2026.toml`), for years the
    /// build does not ship.
    #[serde(default)]
    pub holiday_files: Vec<PathBuf>,
    /// A unit list to use instead of the shipped one.
    #[serde(default)]
    pub units_file: Option<PathBuf>,
    /// Art. 14 parameters to use instead of the shipped ones.
    #[serde(default)]
    pub repeat_file: Option<PathBuf>,
}

/// Clocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// How often the card sweep runs (Art. 10).
    #[serde(default = "default_sweep")]
    pub sweep_secs: u64,
    /// An instance unseen this long has left; its partitions go to the others.
    #[serde(default = "default_member_timeout")]
    pub member_timeout_secs: u64,
    /// Development and tests only: run this many seconds ahead of the wall clock.
    #[serde(default)]
    pub offset_secs: i64,
    /// How often the leader looks for due follow-up clocks (Arts. 16, 17).
    #[serde(default = "default_clocks_ms")]
    pub clocks_ms: u64,
}

fn default_clocks_ms() -> u64 {
    1000
}

fn default_sweep() -> u64 {
    60
}
fn default_member_timeout() -> u64 {
    4
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            sweep_secs: default_sweep(),
            member_timeout_secs: default_member_timeout(),
            offset_secs: 0,
            clocks_ms: default_clocks_ms(),
        }
    }
}

/// Where "now" comes from: the wall clock, moved by a configured offset in development
/// and tests (so a test can run the service on the day a deadline falls).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    /// The wall clock moved by `offset`.
    pub fn offset(offset: chrono::Duration) -> Self {
        Clock { offset }
    }

    /// Now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + self.offset
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Config {
    /// Reads and checks a file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} does not parse: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return Err(invalid("database.url", "a postgres:// URL"));
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            return Err(invalid("database.max_connections", "1 to 1000"));
        }
        let k = &self.kafka;
        if k.brokers.split(',').all(|b| b.trim().is_empty()) {
            return Err(invalid("kafka.brokers", "name at least one host:port"));
        }
        for (field, t) in [
            ("kafka.group", &k.group),
            ("kafka.contacts_topic", &k.contacts_topic),
            ("kafka.drafts_topic", &k.drafts_topic),
            ("kafka.status_topic", &k.status_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.sms_outbound_topic", &k.sms_outbound_topic),
            ("kafka.revisit_calls_topic", &k.revisit_calls_topic),
            ("kafka.revisit_results_topic", &k.revisit_results_topic),
            ("kafka.sms_status_topic", &k.sms_status_topic),
            ("kafka.chat_outbound_topic", &k.chat_outbound_topic),
            ("kafka.chat_status_topic", &k.chat_status_topic),
        ] {
            if !valid_topic(t) {
                return Err(invalid(field, "1-249 of letters, digits, '.', '_', '-'"));
            }
        }
        let topics = [
            &k.contacts_topic,
            &k.drafts_topic,
            &k.status_topic,
            &k.dead_letter_topic,
            &k.sms_outbound_topic,
            &k.revisit_calls_topic,
            &k.revisit_results_topic,
            &k.sms_status_topic,
            &k.chat_outbound_topic,
            &k.chat_status_topic,
        ];
        if topics
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            != topics.len()
        {
            return Err(invalid("kafka", "the ten topics must differ"));
        }
        if !(1..=1000).contains(&k.partitions) {
            return Err(invalid("kafka.partitions", "1 to 1000"));
        }
        if !(1..=10_000).contains(&k.batch_max) {
            return Err(invalid("kafka.batch_max", "1 to 10,000"));
        }
        if !(1..=10_000).contains(&k.fetch_wait_ms) {
            return Err(invalid("kafka.fetch_wait_ms", "1 to 10,000"));
        }
        if self.api.token_secret_env.is_empty() {
            return Err(invalid(
                "api.token_secret_env",
                "name an environment variable",
            ));
        }
        if self.api.progress_per_sec.is_nan() || self.api.progress_per_sec <= 0.0 {
            return Err(invalid("api.progress_per_sec", "above 0"));
        }
        if self.api.progress_failures == 0 {
            return Err(invalid("api.progress_failures", "at least 1"));
        }
        if !(1..=86_400).contains(&self.clock.sweep_secs) {
            return Err(invalid("clock.sweep_secs", "1 to 86,400"));
        }
        if !(100..=60_000).contains(&self.clock.clocks_ms) {
            return Err(invalid("clock.clocks_ms", "100 to 60,000"));
        }
        let f = &self.followup;
        if !(1..=7 * 86_400).contains(&f.survey_window_secs) {
            return Err(invalid("followup.survey_window_secs", "1 to 604,800"));
        }
        if !(1..=7 * 86_400).contains(&f.revisit_retry_secs) {
            return Err(invalid("followup.revisit_retry_secs", "1 to 604,800"));
        }
        if !(1..=86_400).contains(&f.revisit_result_timeout_secs) {
            return Err(invalid(
                "followup.revisit_result_timeout_secs",
                "1 to 86,400",
            ));
        }
        if !(1..=600).contains(&self.clock.member_timeout_secs) {
            return Err(invalid("clock.member_timeout_secs", "1 to 600"));
        }
        if let Some(i) = &self.instance
            && (i.is_empty() || i.len() > 128)
        {
            return Err(invalid("instance", "1 to 128 characters"));
        }
        Ok(())
    }

    /// This instance's name.
    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The member timeout.
    pub fn member_timeout(&self) -> Duration {
        Duration::from_secs(self.clock.member_timeout_secs)
    }

    /// librdkafka's client properties.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![("bootstrap.servers".to_owned(), self.kafka.brokers.clone())];
        props.extend(
            self.kafka
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/tickets"
[kafka]
brokers = "127.0.0.1:9092"
[api]
listen = "127.0.0.1:8090"
"#;

    #[test]
    fn a_minimal_config_validates_and_bad_ones_say_which_field() {
        let c: Config = toml::from_str(OK).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.kafka.status_topic, "hotline.ticket-status.v1");
        let bad = OK.replace("postgres://", "mysql://");
        let c: Config = toml::from_str(&bad).expect("parses");
        assert_eq!(c.validate().expect_err("bad url").field, "database.url");
        let bad = format!("{OK}\n[clock]\nsweep_secs = 0\n");
        let c: Config = toml::from_str(&bad).expect("parses");
        assert_eq!(c.validate().expect_err("bad").field, "clock.sweep_secs");
        assert!(toml::from_str::<Config>(&format!("{OK}\nnonsense = 1\n")).is_err());
    }
}
