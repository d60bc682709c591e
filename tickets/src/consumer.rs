//! Consumption of the gateway's contacts and ticket drafts, exactly once in effect.
//!
//! The group's offsets live in PostgreSQL, committed in the transaction that applied the
//! records ([`crate::store::Store::apply_batch`]), not in Kafka: a crash between applying
//! and committing cannot happen. The partitions are shared among the service's live
//! instances through the database too: each instance beats in the `members` table every
//! second; the sorted live instances take the sorted partitions in turn; each instance
//! assigns itself its share, from the offsets in the database.
//!
//! Why not Kafka's group coordinator: tansu 0.6 (the development and test broker) kept
//! assigning a SIGKILLed member's partitions to the dead member, so the survivor never
//! took them over (observed with the gateway's urgent-notice consumer, docs/routing.md).
//! Sharing by the database needs nothing of the broker's group protocol, and the row lock
//! on each partition's offset fences two instances that both read a partition for a
//! moment while ownership moves: the second finds the offset moved and skips.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Applied, Incoming, Store};

/// What the consumer needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// This instance.
    pub instance: String,
    /// The group (the offsets' name in the database).
    pub group: String,
    /// The contacts topic.
    pub contacts_topic: String,
    /// The drafts topic.
    pub drafts_topic: String,
    /// The gateway's revisit-call results (Art. 17).
    pub revisit_results_topic: String,
    /// The gateway's outbound SMS outcomes (Art. 16).
    pub sms_status_topic: String,
    /// The gateway's chat delivery reports (Art. 16).
    pub chat_status_topic: String,
    /// librdkafka properties (bootstrap servers, security).
    pub client_properties: Vec<(String, String)>,
    /// Most records in one transaction.
    pub batch_max: usize,
    /// An instance unseen this long has left.
    pub member_timeout: Duration,
    /// `fetch.wait.max.ms`.
    pub fetch_wait_ms: u32,
}

/// Counters for `/readyz` and metrics.
#[derive(Debug, Default)]
pub struct ConsumerStatus {
    /// Records applied.
    pub applied: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Dead letters.
    pub dead: AtomicU64,
    /// Partitions this instance reads now.
    pub owned: AtomicU64,
    /// Woken after each commit (the publisher sends the new status events).
    pub committed: Notify,
}

impl ConsumerStatus {
    fn add(&self, a: Applied) {
        self.applied.fetch_add(a.applied as u64, Ordering::Relaxed);
        self.duplicates
            .fetch_add(a.duplicates as u64, Ordering::Relaxed);
        self.dead.fetch_add(a.dead as u64, Ordering::Relaxed);
        metrics::counter!("tickets_records_applied_total").increment(a.applied as u64);
        metrics::counter!("tickets_records_duplicate_total").increment(a.duplicates as u64);
    }
}

/// The partitions `me` reads: the sorted partitions dealt in turn to the sorted live
/// instances.
pub fn share(partitions: &[(String, i32)], live: &[String], me: &str) -> BTreeSet<(String, i32)> {
    let Some(_) = live.iter().position(|m| m == me) else {
        return BTreeSet::new();
    };
    let mut sorted = partitions.to_vec();
    sorted.sort();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| live[i % live.len()] == me)
        .map(|(_, p)| p)
        .collect()
}

fn to_incoming<M: Message>(m: &M) -> Incoming {
    Incoming {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        payload: m.payload().map(<[u8]>::to_vec),
    }
}

fn make_consumer(opts: &ConsumerOptions) -> anyhow::Result<StreamConsumer> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &opts.client_properties {
        cfg.set(k, v);
    }
    cfg.set("group.id", &opts.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", opts.fetch_wait_ms.to_string())
        .set("auto.offset.reset", "earliest");
    Ok(cfg.create()?)
}

/// The reader of this instance's share: a fresh librdkafka consumer per assignment, so
/// nothing fetched for an earlier assignment (a partition since moved to another
/// instance) can be handed over afterwards; and the partitions whose first record may
/// be past the committed offset (just sought there, see `Store::apply_batch`).
struct Reader {
    consumer: StreamConsumer,
    owned: BTreeSet<(String, i32)>,
    fresh: HashSet<(String, i32)>,
}

/// Runs until `shutdown`: keeps this instance's membership, reads its share of the
/// partitions, applies what it reads.
pub async fn run(
    store: Store,
    opts: ConsumerOptions,
    status: Arc<ConsumerStatus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metadata = make_consumer(&opts)?;
    let topics = [
        opts.contacts_topic.clone(),
        opts.drafts_topic.clone(),
        opts.revisit_results_topic.clone(),
        opts.sms_status_topic.clone(),
        opts.chat_status_topic.clone(),
    ];
    let mut partitions: Vec<(String, i32)> = Vec::new();
    let mut reader: Option<Reader> = None;
    let mut reseek = false;
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_metadata = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = beat.tick() => {
                if last_metadata.elapsed() > Duration::from_secs(30) || partitions.is_empty() {
                    match discover(&metadata, &topics) {
                        Ok(p) => { partitions = p; last_metadata = std::time::Instant::now(); }
                        Err(e) => tracing::warn!(error = %e, "Topic metadata not available yet"),
                    }
                }
                let live = match store.heartbeat(&opts.instance, opts.member_timeout).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "Heartbeat failed");
                        continue;
                    }
                };
                let mine = share(&partitions, &live, &opts.instance);
                let current = reader.as_ref().map(|r| &r.owned);
                if current != Some(&mine) || reseek {
                    // Drop the old reader first: what it fetched goes with it.
                    reader = None;
                    match open_reader(&opts, &store, &mine).await {
                        Ok(r) => {
                            tracing::info!(partitions = mine.len(), members = live.len(), reseek, "Partitions assigned");
                            status.owned.store(mine.len() as u64, Ordering::Relaxed);
                            reader = Some(r);
                            reseek = false;
                        }
                        Err(e) => tracing::warn!(error = %e, "Assignment failed"),
                    }
                }
            }
            m = async {
                match reader.as_ref() {
                    Some(r) => r.consumer.recv().await.map(|m| to_incoming(&m)),
                    None => std::future::pending().await,
                }
            } => {
                let Some(r) = reader.as_mut() else { continue };
                let first = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka fetch failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let mut batch = vec![first];
                while batch.len() < opts.batch_max {
                    match tokio::time::timeout(Duration::from_millis(2), r.consumer.recv()).await {
                        Ok(Ok(m)) => batch.push(to_incoming(&m)),
                        _ => break,
                    }
                }
                if apply(&store, &opts, &status, batch, r, &shutdown).await {
                    // A stale read: seek again from the database at the next beat.
                    tracing::warn!("A batch did not continue its partition's committed offset; seeking again");
                    reseek = true;
                    reader = None;
                }
            }
        }
    }
    let _ = store.leave(&opts.instance).await;
    Ok(())
}

async fn open_reader(
    opts: &ConsumerOptions,
    store: &Store,
    mine: &BTreeSet<(String, i32)>,
) -> anyhow::Result<Reader> {
    let consumer = make_consumer(opts)?;
    assign(&consumer, store, &opts.group, mine).await?;
    Ok(Reader {
        consumer,
        owned: mine.clone(),
        fresh: mine.iter().cloned().collect(),
    })
}

fn discover(consumer: &StreamConsumer, topics: &[String]) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(5))?;
        let n = md
            .topics()
            .first()
            .filter(|x| x.error().is_none())
            .map(|x| x.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            anyhow::bail!("topic {t} has no partitions yet");
        }
        out.extend((0..n as i32).map(|p| (t.clone(), p)));
    }
    Ok(out)
}

async fn assign(
    consumer: &StreamConsumer,
    store: &Store,
    group: &str,
    mine: &BTreeSet<(String, i32)>,
) -> anyhow::Result<()> {
    let mut offsets: HashMap<String, HashMap<i32, i64>> = HashMap::new();
    for (t, _) in mine {
        if !offsets.contains_key(t) {
            offsets.insert(t.clone(), store.offsets(group, t).await?);
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in mine {
        let at = offsets
            .get(t)
            .and_then(|o| o.get(p))
            .map(|&o| Offset::Offset(o))
            .unwrap_or(Offset::Beginning);
        tpl.add_partition_offset(t, *p, at)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Applies a batch, partition by partition; a transient database failure is retried
/// until it passes (the records stay in memory, the offsets unmoved); a record the
/// database refuses as data is dead-lettered alone. Records of partitions this reader
/// does not own are dropped (their owner reads them). Returns whether a partition's
/// batch did not continue its committed offset (the reader must seek again).
async fn apply(
    store: &Store,
    opts: &ConsumerOptions,
    status: &ConsumerStatus,
    batch: Vec<Incoming>,
    reader: &mut Reader,
    shutdown: &CancellationToken,
) -> bool {
    let mut by_partition: Vec<((String, i32), Vec<Incoming>)> = Vec::new();
    for rec in batch {
        let key = (rec.topic.clone(), rec.partition);
        if !reader.owned.contains(&key) {
            continue;
        }
        match by_partition.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(rec),
            None => by_partition.push((key, vec![rec])),
        }
    }
    let mut gap = false;
    for (key, mut records) in by_partition {
        records.sort_by_key(|r| r.offset);
        let may_jump = reader.fresh.remove(&key);
        let mut backoff = Duration::from_millis(100);
        loop {
            match store
                .apply_batch(
                    &opts.group,
                    &opts.contacts_topic,
                    &opts.drafts_topic,
                    &records,
                    may_jump,
                )
                .await
            {
                Ok(a) => {
                    gap |= a.gap;
                    status.add(a);
                    break;
                }
                Err(e) if e.is_data_error() => {
                    tracing::warn!(error = %e, "A record of the batch was refused; applying one by one");
                    gap |= one_by_one(store, opts, status, &records, may_jump, shutdown).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Applying failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    status.committed.notify_waiters();
    gap
}

async fn one_by_one(
    store: &Store,
    opts: &ConsumerOptions,
    status: &ConsumerStatus,
    records: &[Incoming],
    may_jump: bool,
    shutdown: &CancellationToken,
) -> bool {
    for (i, rec) in records.iter().enumerate() {
        let mut backoff = Duration::from_millis(100);
        loop {
            let r = match store
                .apply_batch(
                    &opts.group,
                    &opts.contacts_topic,
                    &opts.drafts_topic,
                    std::slice::from_ref(rec),
                    may_jump && i == 0,
                )
                .await
            {
                Ok(a) if a.gap => return true,
                Ok(a) => {
                    status.add(a);
                    Ok(())
                }
                Err(e) if e.is_data_error() => store
                    .dead_letter_alone(&opts.group, rec, &format!("the database refused it: {e}"))
                    .await
                    .map(|()| {
                        status.dead.fetch_add(1, Ordering::Relaxed);
                    }),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "Applying failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<(String, i32)> {
        let mut v = Vec::new();
        for t in ["contacts", "drafts"] {
            for p in 0..3 {
                v.push((t.to_owned(), p));
            }
        }
        v
    }

    #[test]
    fn partitions_are_dealt_evenly_and_every_one_has_one_owner() {
        let live = vec!["a".to_owned(), "b".to_owned()];
        let a = share(&parts(), &live, "a");
        let b = share(&parts(), &live, "b");
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        assert!(a.is_disjoint(&b));
        assert_eq!(a.len() + b.len(), parts().len());
        assert_eq!(
            share(&parts(), &live[..1], "a").len(),
            6,
            "alone it reads all"
        );
        assert!(
            share(&parts(), &live, "c").is_empty(),
            "not a member: nothing"
        );
    }
}
