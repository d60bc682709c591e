//! `gateway replay-recognition`: reads the contacts topic over a time range and prints
//! what a candidate Art. 15 recognition would change (routing's [`routing::replay`]),
//! texts masked. Nothing is written anywhere: the consumer has no group and commits
//! nothing, so a centre can run it against production brokers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use contract::Contact;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use routing::Prefiller;

/// What to replay.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Bootstrap brokers.
    #[arg(long)]
    pub brokers: String,
    /// The contacts topic.
    #[arg(long, default_value = "hotline.contacts.v1")]
    pub topic: String,
    /// Contacts received from this time on (RFC 3339); the topic's start if absent.
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Contacts received before this time (RFC 3339); all if absent.
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
    /// The candidate recognition file (an edited routing/data/emergency.toml).
    #[arg(long)]
    pub candidate: PathBuf,
    /// The recognition in use, if not the one this binary ships.
    #[arg(long)]
    pub current: Option<PathBuf>,
    /// Extra librdkafka settings (`key=value`, repeated), such as TLS and SASL.
    #[arg(long = "kafka", value_parser = parse_setting)]
    pub kafka: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s}: expected key=value"))
}

fn prefiller(path: &PathBuf) -> Result<Prefiller> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Prefiller::with_recognition(&text).with_context(|| format!("{}", path.display()))
}

/// Reads the contacts and prints the report on stdout.
pub fn run(args: &ReplayArgs) -> Result<()> {
    let candidate = prefiller(&args.candidate)?;
    let current = match &args.current {
        Some(p) => prefiller(p)?,
        None => Prefiller::builtin(),
    };
    let contacts = read_contacts(args)?;
    let report = routing::replay::replay(current.classifier(), candidate.classifier(), &contacts);
    print!("{report}");
    Ok(())
}

/// Every contact of the topic received in the range, read up to the end each partition
/// had when the command started.
fn read_contacts(args: &ReplayArgs) -> Result<Vec<Contact>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "hotline-recognition-replay")
        .set("enable.auto.commit", "false");
    for (k, v) in &args.kafka {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&args.topic), timeout)?;
    let Some(topic) = metadata.topics().first() else {
        bail!("no topic {}", args.topic);
    };
    if topic.partitions().is_empty() {
        bail!("topic {} has no partitions", args.topic);
    }
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(&args.topic, p.id(), timeout)?;
        if high > low {
            ends.push((p.id(), high));
            tpl.add_partition_offset(&args.topic, p.id(), Offset::Beginning)?;
        }
    }
    // Start at the range's first record where the broker can tell by time (the whole
    // partition otherwise; records are filtered by when the contact was received anyway).
    if let Some(from) = args.from {
        let mut by_time = TopicPartitionList::new();
        for (p, _) in &ends {
            by_time.add_partition_offset(
                &args.topic,
                *p,
                Offset::Offset(from.timestamp_millis()),
            )?;
        }
        if let Ok(found) = consumer.offsets_for_times(by_time, timeout) {
            for e in found.elements() {
                if let Offset::Offset(o) = e.offset() {
                    tpl.set_partition_offset(&args.topic, e.partition(), Offset::Offset(o))?;
                }
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut next: Vec<(i32, i64)> = Vec::new();
    let mut idle = 0;
    loop {
        match consumer.poll(Duration::from_millis(300)) {
            Some(m) => {
                idle = 0;
                let m = m?;
                match next.iter_mut().find(|(p, _)| *p == m.partition()) {
                    Some(n) => n.1 = m.offset() + 1,
                    None => next.push((m.partition(), m.offset() + 1)),
                }
                let Ok(contact) =
                    serde_json::from_slice::<Contact>(m.payload().unwrap_or_default())
                else {
                    continue;
                };
                let in_range = args.from.is_none_or(|f| contact.received_at >= f)
                    && args.to.is_none_or(|t| contact.received_at < t);
                if in_range {
                    out.push(contact);
                }
            }
            None => {
                // Caught up when every partition is read to its end as the broker gives it
                // now (a watermark read before the first poll can be stale).
                let mut caught_up = true;
                for (p, _) in &ends {
                    let (_, high) = consumer.fetch_watermarks(&args.topic, *p, timeout)?;
                    let at = next.iter().find(|(q, _)| q == p).map_or(0, |n| n.1);
                    caught_up &= at >= high;
                }
                if caught_up {
                    break;
                }
                idle += 1;
                if idle > 100 {
                    bail!("the topic's end was not reached in 30 s (is the broker up?)");
                }
            }
        }
    }
    out.sort_by_key(|c| c.received_at);
    Ok(out)
}
