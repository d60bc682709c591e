//! The 12345 intake gateway.
//!
//! The binary (`main.rs`) is a thin CLI over this library:
//!
//! - [`config`]: the typed TOML config, its defaults and `validate()`;
//! - [`registry`]: the channel registry, one line per channel;
//! - [`outbox`]: the durable, bounded journal every accepted contact goes through;
//! - [`kafka`]: the idempotent producer and the drain from the outbox to Kafka;
//! - [`admin`]: health, readiness and Prometheus metrics;
//! - [`notices`] and [`notice_api`]: Art. 15 urgent notices, the linkage operators' feed,
//!   the notices on the admin port;
//! - [`screen`]: what citizens' words make beside their contacts (notices, proposals);
//! - [`escalation`]: each notice's 30-minute clock, run by the instance that owns it;
//! - [`request_topic`]: requests on a topic carried out once each, outcomes through the
//!   outbox; on it [`sms_outbound`] (the outbound SMS path), [`revisit`] (Art. 17
//!   revisit calls) and [`chat_outbound`] (messages into open chat sessions, the Art. 16
//!   survey);
//! - [`restrictions`] and [`restriction_api`]: Art. 9 restrictions shared by every
//!   instance through a compacted topic, and their admin API;
//! - [`telemetry`]: logs and the metrics recorder;
//! - [`app`]: the wiring and the shutdown sequence.

pub mod admin;
pub mod app;
pub mod chat_outbound;
pub mod config;
pub mod escalation;
pub mod kafka;
pub mod notice_api;
pub mod notices;
pub mod outbox;
pub mod registry;
pub mod replay;
pub mod request_topic;
pub mod restriction_api;
pub mod restrictions;
pub mod revisit;
pub mod screen;
pub mod sms_outbound;
pub mod telemetry;
pub mod topic_reader;
