//! Prints the gateway's events from Kafka, one JSON line each (key, CloudEvents headers,
//! value): an example of a downstream consumer, and the README tour's way to watch
//! events arrive.
//!
//! ```text
//! cargo run -p e2e --bin consume -- --brokers 127.0.0.1:9092 --follow
//! ```
//!
//! A real consumer drops the rare redelivered record by its `ce_id` (the gateway
//! delivers at least once); this one shows duplicates as `"duplicate": true`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Parser)]
struct Args {
    /// Bootstrap brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topics to read.
    #[arg(long, default_values_t = ["hotline.contacts.v1".to_owned(), "hotline.ticket-drafts.v1".to_owned()])]
    topic: Vec<String>,
    /// Keep waiting for new events instead of stopping when caught up.
    #[arg(long)]
    follow: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "hotline-example-consumer")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in &args.topic {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut seen = HashSet::new();
    let mut idle = 0;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                let mut headers = serde_json::Map::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        let v = String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned();
                        headers.insert(x.key.to_owned(), v.into());
                    }
                }
                let id = headers
                    .get("ce_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned();
                let value: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                let line = serde_json::json!({
                    "topic": m.topic(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": String::from_utf8_lossy(m.key().unwrap_or_default()),
                    "duplicate": !seen.insert(id),
                    "headers": headers,
                    "value": value,
                });
                println!("{line}");
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {
                idle += 1;
                if !args.follow && idle >= 6 {
                    return Ok(());
                }
            }
        }
    }
}
