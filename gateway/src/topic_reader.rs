//! Reads a whole topic into memory, on every instance: the restrictions and the urgent
//! notices are small, every instance needs all of them (admission, the operator feed),
//! and nothing is committed.
//!
//! A plain consumer with every partition assigned from the beginning (no group), on its
//! own thread (librdkafka's poll blocks). Once it has reached the end of every partition
//! the reader is *synced*; it then goes on applying new records as they come (the fetch
//! waits at most 100 ms, so a change made on one instance is applied on the others well
//! within a second).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The readers' client context: reaching the end of a partition is how a reader knows it
/// has synced, not an error (librdkafka reports it as a "global error", which the default
/// context logs at ERROR level on every partition, at every start).
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) => tracing::trace!(reason, "Reader at a partition's end"),
            e => tracing::warn!(error = %e, reason, "Topic reader client error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// How many partitions `topic` has (an error while it does not exist yet: the gateway
/// creates its topics in the background, and readers retry).
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> Result<usize, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let n = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if n == 0 {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok(n)
}

/// What a reader reports (`/readyz`, metrics).
#[derive(Debug, Default)]
pub struct ReaderStatus {
    /// The reader reached the end of every partition once.
    pub synced: AtomicBool,
    /// Records taken (new or newer states).
    pub applied: AtomicU64,
    /// Records that did not parse or were unusable.
    pub unreadable: AtomicU64,
    /// Notified when `synced` turns true.
    pub synced_notify: Notify,
}

impl ReaderStatus {
    /// Waits until synced, or `timeout` passes; says which.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.synced_notify.notified();
                if self.synced.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Whether synced.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// What the record handler made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Applied.
    Applied,
    /// Known already, or older than what is known.
    Ignored,
    /// Unusable (logged by the handler).
    Unreadable,
}

/// Starts the reader thread of `topic`: `take` gets every record's value in partition
/// order, `synced` runs once when the end of every partition is reached. It stops soon
/// after `stop`.
pub fn spawn<T, S>(
    name: &str,
    props: Vec<(String, String)>,
    topic: String,
    status: Arc<ReaderStatus>,
    stop: CancellationToken,
    mut take: T,
    synced: S,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    T: FnMut(&[u8]) -> Taken + Send + 'static,
    S: FnOnce() + Send + 'static,
{
    let client_id = format!("hotline-gateway-{name}");
    std::thread::Builder::new()
        .name(format!("{name}-reader"))
        .spawn(move || {
            let mut synced = Some(synced);
            let mut wait = Duration::from_millis(250);
            while !stop.is_cancelled() {
                match read(
                    &props,
                    &topic,
                    &client_id,
                    &status,
                    &stop,
                    &mut take,
                    &mut synced,
                ) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, topic, "Topic not readable yet; retrying");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
}

fn read<T, S>(
    props: &[(String, String)],
    topic: &str,
    client_id: &str,
    status: &ReaderStatus,
    stop: &CancellationToken,
    take: &mut T,
    synced: &mut Option<S>,
) -> Result<(), KafkaError>
where
    T: FnMut(&[u8]) -> Taken,
    S: FnOnce(),
{
    let mut cfg = ClientConfig::new();
    for (k, v) in props {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer<ReaderContext> = cfg
        // Required by librdkafka even without a group: nothing is committed.
        .set("group.id", format!("{client_id}-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", client_id)
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(ReaderContext)?;
    let partitions = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end: HashSet<i32> = HashSet::new();
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => match take(m.payload().unwrap_or_default()) {
                Taken::Applied => {
                    status.applied.fetch_add(1, Ordering::Relaxed);
                }
                Taken::Ignored => {}
                Taken::Unreadable => {
                    status.unreadable.fetch_add(1, Ordering::Relaxed);
                }
            },
            Some(Err(KafkaError::PartitionEOF(p)))
                if at_end.insert(p)
                    && at_end.len() == partitions
                    && !status.synced.swap(true, Ordering::AcqRel) =>
            {
                if let Some(s) = synced.take() {
                    s();
                }
                status.synced_notify.notify_waiters();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::debug!(error = %e, topic, "Topic reader"),
        }
    }
    Ok(())
}
