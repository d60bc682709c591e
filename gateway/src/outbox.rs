//! The durable outbox: nothing a citizen was told is accepted is ever lost.
//!
//! A channel's [`Submission`] is encoded into Kafka records, appended to a local
//! journal and fsync'd before [`Intake::submit`] returns, and so before the citizen is
//! acknowledged. The drain ([`crate::kafka`]) produces journal records to Kafka and
//! deletes them on the delivery report; on restart whatever is left is produced again,
//! so a record reaches Kafka at least once, and consumers drop the rare duplicate by its
//! CloudEvents id: exactly once in effect.
//!
//! The journal is a [fjall](https://docs.rs/fjall) database rather than a file format
//! of our own: fjall is a well-maintained, pure-Rust LSM store whose write path is an
//! append to a journal, with atomic batches across keyspaces. That is exactly the unit
//! we need (records + channel state + idempotency key in one step), and its writes are
//! sequential, so a commit costs one append and one `fdatasync` however scattered the
//! keys are. (An earlier version used redb, a copy-on-write B-tree: every chat session's
//! state key dirtied its own 4 KiB page per commit, and commits, not fsyncs, capped
//! intake at about 10,000 contacts/s on the benchmark machine.) What the store does not
//! do is group commit, so one writer thread does it here: it takes every submission
//! waiting in its bounded queue, writes them all in one batch and pays one fsync for
//! the lot. Throughput then grows with concurrency instead of dying on fsync.
//!
//! Bounded: the outbox counts undelivered records and bytes; past the configured limits
//! it refuses new submissions with [`IntakeError::Full`] (retryable), and never drops an
//! accepted one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use contract::{Event, Intake, IntakeError, Receipt, Record, Submission};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

/// Undelivered records: sequence number (big-endian u64, so keys sort by number) ->
/// [`Stored`] (postcard).
const RECORDS: &str = "records";
/// Channel state: key -> value.
const STATE: &str = "state";
/// Idempotency keys: key -> [`OnceEntry`] (postcard).
const ONCE: &str = "once";

/// Each keyspace's memtable is written out at this size (fjall's default is 64 MiB).
/// The outbox is a queue: a burst's records are delivered and deleted within seconds,
/// but they and their deletions stay in memory until the memtable is written. With the
/// default, what a burst leaves in memory is bounded only at 64 MiB a keyspace; here at
/// 4 MiB. (Under issue 14's floods heaptrack found about 7 MB of records still held a
/// minute after delivery, with either size: those floods stayed under both bounds.)
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// The block cache (fjall's default is 32 MiB). Records are read back from the tail,
/// mostly still in the memtable; from disk only after an outage, a sequential read the
/// operating system's page cache serves.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Capacity of the writer's queue; submissions beyond wait (they are bounded by the
/// channels' own limits on sessions and requests).
const WRITER_QUEUE: usize = 8192;

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// When the outbox accepted it, milliseconds since the Unix epoch.
    pub accepted_at_ms: i64,
    /// The Kafka record.
    pub record: Record,
}

#[derive(Serialize, Deserialize)]
struct OnceEntry {
    expires_at_ms: i64,
    value: Vec<u8>,
}

/// Outbox limits and tuning.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Refuse new submissions past this many undelivered records.
    pub max_records: u64,
    /// Refuse new submissions past this many undelivered bytes.
    pub max_bytes: u64,
    /// Most submissions per commit.
    pub batch_max: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// CloudEvents source prefix, `/gateway/<instance>`.
    pub source_prefix: String,
}

/// Why the outbox could not open or read.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database could not be created or opened.
    #[error(
        "cannot open the outbox at {path}: {source} (is the data_dir on a local, writable disk, and no other gateway using it?)"
    )]
    Open {
        /// The directory.
        path: String,
        /// Why.
        source: fjall::Error,
    },
    /// Reading or writing the database failed.
    #[error("outbox storage error: {0}")]
    Storage(#[from] fjall::Error),
}

enum WriterMsg {
    Append(AppendJob),
    Delivered(Vec<(u64, u64)>),
    SweepOnce,
    /// Commit what came before and stop, even while handles remain (a channel task that
    /// did not finish within the shutdown's grace period still holds one).
    Stop,
}

struct Shared {
    db: Database,
    records: Keyspace,
    state: Keyspace,
    once: Keyspace,
    depth: AtomicU64,
    bytes: AtomicU64,
    writable: AtomicBool,
    closing: AtomicBool,
    appended: Notify,
    options: OutboxOptions,
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    tx: mpsc::Sender<WriterMsg>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

/// The running writer thread; join it after the last handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to commit what it was given and stop (blocking).
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("Outbox writer thread panicked");
        }
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` and starts its writer thread.
    pub fn open(dir: &Path, options: OutboxOptions) -> Result<(Self, WriterThread), OutboxError> {
        let path = dir.join("outbox");
        let open_err = |source: fjall::Error| OutboxError::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        // Persistence is ours to call (after each group commit), not the store's.
        let db = Database::builder(&path)
            .manual_journal_persist(true)
            .worker_threads(1)
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(open_err)?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
        };
        let records = keyspace(RECORDS).map_err(open_err)?;
        let state = keyspace(STATE).map_err(open_err)?;
        let once = keyspace(ONCE).map_err(open_err)?;

        // Count what is undelivered from an earlier run. Sequence numbers only need to
        // grow within the journal's lifetime: numbering goes on after the last one.
        let (mut depth, mut bytes, mut next_seq) = (0u64, 0u64, 0u64);
        for entry in records.iter() {
            let (k, v) = entry.into_inner().map_err(open_err)?;
            next_seq = decode_seq(&k).map_or(next_seq, |s| s + 1);
            depth += 1;
            bytes += v.len() as u64;
        }

        let shared = Arc::new(Shared {
            db,
            records,
            state,
            once,
            depth: AtomicU64::new(depth),
            bytes: AtomicU64::new(bytes),
            writable: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            appended: Notify::new(),
            options,
        });
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer_loop(writer_shared, rx, next_seq))
            .map_err(|e| open_err(e.into()))?;
        if depth > 0 {
            tracing::info!(
                depth,
                bytes,
                "Outbox holds undelivered records from an earlier run"
            );
        }
        metrics::gauge!("gateway_outbox_depth").set(depth as f64);
        metrics::gauge!("gateway_outbox_bytes").set(bytes as f64);
        Ok((Outbox { shared, tx }, WriterThread(thread)))
    }

    /// Undelivered records.
    pub fn depth(&self) -> u64 {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Undelivered bytes.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Whether the last commit succeeded and the outbox is below its limits.
    pub fn is_writable(&self) -> bool {
        self.shared.writable.load(Ordering::Relaxed)
            && !self.shared.closing.load(Ordering::Relaxed)
            && self.depth() < self.shared.options.max_records
            && self.bytes() < self.shared.options.max_bytes
    }

    /// Accept time of the oldest undelivered record (ms since the epoch).
    pub fn oldest_accepted_ms(&self) -> Option<i64> {
        let (_, v) = self.shared.records.first_key_value()?.into_inner().ok()?;
        postcard::from_bytes::<Stored>(&v)
            .ok()
            .map(|s| s.accepted_at_ms)
    }

    /// Stops taking submissions; the writer finishes what it has and stops once every
    /// handle is dropped.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }

    /// Waits until a commit appended records (or returns at once if one did since the
    /// last call).
    pub async fn appended(&self) {
        self.shared.appended.notified().await;
    }

    /// Reads up to `limit` undelivered records with a sequence number above `after`:
    /// `(seq, stored size, record)`.
    pub fn read_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, u64, Stored)>, OutboxError> {
        let from = after.map_or(0, |seq| seq + 1).to_be_bytes();
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self.shared.records.range(from..).take(limit) {
            let (k, v) = entry.into_inner()?;
            let Some(seq) = decode_seq(&k) else { continue };
            match postcard::from_bytes::<Stored>(&v) {
                Ok(stored) => out.push((seq, v.len() as u64, stored)),
                Err(e) => {
                    // A record we cannot decode was written by an incompatible build; it
                    // stays in the journal for an operator, and the drain moves past it.
                    tracing::error!(seq, error = %e, "Undecodable outbox record skipped");
                    metrics::counter!("gateway_outbox_undecodable_total").increment(1);
                }
            }
        }
        Ok(out)
    }

    /// Marks records delivered: `(seq, stored bytes)` pairs. They are deleted in the next
    /// commit.
    pub async fn delivered(&self, done: Vec<(u64, u64)>) {
        if done.is_empty() {
            return;
        }
        // If the writer is gone (shutdown), the records stay in the journal and are
        // produced again on the next start: a duplicate, never a loss.
        let _ = self.tx.send(WriterMsg::Delivered(done)).await;
    }

    /// Tells the writer to commit what it was given so far and stop, whoever still holds
    /// a handle (submissions after it are answered `ShuttingDown`).
    pub async fn stop_writer(&self) {
        self.close();
        let _ = self.tx.send(WriterMsg::Stop).await;
    }

    /// Asks the writer to forget expired idempotency keys.
    pub async fn sweep_expired_keys(&self) {
        let _ = self.tx.send(WriterMsg::SweepOnce).await;
    }

    fn encode(&self, events: &[Event]) -> Result<(Vec<Vec<u8>>, u64), IntakeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut records = Vec::with_capacity(events.len());
        let mut bytes = 0u64;
        for event in events {
            // The CloudEvents source names the channel, or the gateway part that made it.
            let part = match event {
                Event::Contact(c) => c.channel.as_str(),
                Event::TicketDraft(d) => d.channel.as_str(),
                Event::Restriction(_) | Event::Audit(_) => "restrictions",
                Event::Notice(_) => "notices",
                Event::OutboundSms(_) | Event::SmsStatus(_) => "sms-outbound",
                Event::TicketStatus(_) => "tickets",
                Event::RevisitCall(_) | Event::RevisitResult(_) => "revisit",
                Event::ChatOutbound(_) | Event::ChatOutboundStatus(_) => "chat",
            };
            let source = format!("{}/{}", self.shared.options.source_prefix, part);
            let record = event
                .to_record(&source)
                .map_err(|e| IntakeError::Invalid(format!("event does not serialise: {e}")))?;
            let stored = Stored {
                accepted_at_ms: now_ms,
                record,
            };
            let encoded = postcard::to_stdvec(&stored)
                .map_err(|e| IntakeError::Invalid(format!("record does not encode: {e}")))?;
            bytes += encoded.len() as u64;
            records.push(encoded);
        }
        Ok((records, bytes))
    }

    /// Reserves room for `n` records of `bytes`; refuses past the limits.
    fn reserve(&self, n: u64, bytes: u64) -> Result<(), IntakeError> {
        let o = &self.shared.options;
        let depth = self.shared.depth.fetch_add(n, Ordering::AcqRel);
        let total = self.shared.bytes.fetch_add(bytes, Ordering::AcqRel);
        if n > 0 && (depth + n > o.max_records || total + bytes > o.max_bytes) {
            self.release(n, bytes);
            metrics::counter!("gateway_outbox_refused_total", "reason" => "full").increment(1);
            return Err(IntakeError::Full { depth });
        }
        Ok(())
    }

    /// Reads the entries of a keyspace under `prefix`, decoded by `decode` (entries it
    /// returns `None` for are left out).
    async fn scan(
        &self,
        keyspace: fn(&Shared) -> &Keyspace,
        prefix: &str,
        decode: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        let shared = self.shared.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || -> Result<_, fjall::Error> {
            let mut out = Vec::new();
            for entry in keyspace(&shared).prefix(prefix.as_bytes()) {
                let (k, v) = entry.into_inner()?;
                if let (Ok(key), Some(value)) = (std::str::from_utf8(&k), decode(&v)) {
                    out.push((key.to_owned(), value));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| IntakeError::Storage(e.to_string()))?
        .map_err(|e| IntakeError::Storage(e.to_string()))
    }

    fn release(&self, n: u64, bytes: u64) {
        self.shared.depth.fetch_sub(n, Ordering::AcqRel);
        self.shared.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[async_trait]
impl Intake for Outbox {
    async fn submit(&self, submission: Submission) -> Result<Receipt, IntakeError> {
        if self.shared.closing.load(Ordering::Relaxed) {
            return Err(IntakeError::ShuttingDown);
        }
        if submission.events.is_empty()
            && submission.put_state.is_empty()
            && submission.delete_state.is_empty()
        {
            return Err(IntakeError::Invalid("empty submission".into()));
        }
        let (records, bytes) = self.encode(&submission.events)?;
        let n = records.len() as u64;
        self.reserve(n, bytes)?;
        let (reply, rx) = oneshot::channel();
        let msg = WriterMsg::Append(AppendJob {
            records,
            bytes,
            put_state: submission.put_state,
            delete_state: submission.delete_state,
            once: submission.once,
            reply,
        });
        if self.tx.send(msg).await.is_err() {
            self.release(n, bytes);
            return Err(IntakeError::ShuttingDown);
        }
        // The writer releases the reservation itself when the commit fails or the
        // submission is a duplicate.
        rx.await.unwrap_or(Err(IntakeError::ShuttingDown))
    }

    async fn scan_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        self.scan(|s| &s.state, prefix, |v| Some(v.to_vec())).await
    }

    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, IntakeError> {
        let shared = self.shared.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            shared
                .state
                .get(key.as_bytes())
                .map(|v| v.map(|v| v.to_vec()))
        })
        .await
        .map_err(|e| IntakeError::Storage(e.to_string()))?
        .map_err(|e| IntakeError::Storage(e.to_string()))
    }

    async fn scan_once(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.scan(
            |s| &s.once,
            prefix,
            move |v| {
                postcard::from_bytes::<OnceEntry>(v)
                    .ok()
                    .filter(|e| e.expires_at_ms > now_ms)
                    .map(|e| e.value)
            },
        )
        .await
    }
}

/// One submission on its way to the writer.
struct AppendJob {
    records: Vec<Vec<u8>>,
    bytes: u64,
    put_state: Vec<(String, Vec<u8>)>,
    delete_state: Vec<String>,
    once: Option<(String, Vec<u8>)>,
    reply: oneshot::Sender<Result<Receipt, IntakeError>>,
}

fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<WriterMsg>, mut next_seq: u64) {
    let batch_max = shared.options.batch_max;
    let mut batch = Vec::with_capacity(batch_max);
    let mut stop = false;
    while !stop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        stop = matches!(first, WriterMsg::Stop);
        batch.push(first);
        // Group commit: everything already waiting rides on this fsync.
        while batch.len() < batch_max && !stop {
            match rx.try_recv() {
                Ok(msg) => {
                    stop = matches!(msg, WriterMsg::Stop);
                    batch.push(msg);
                }
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = std::time::Instant::now();
        commit_batch(&shared, batch.drain(..), &mut next_seq);
        metrics::histogram!("gateway_outbox_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("gateway_outbox_batch_size").record(size as f64);
    }
    tracing::debug!("Outbox writer stopped");
}

/// A records key back to its sequence number.
fn decode_seq(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn commit_batch(shared: &Shared, batch: impl Iterator<Item = WriterMsg>, seq: &mut u64) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ttl_ms = shared.options.idempotency_ttl.as_millis() as i64;
    // Take the batch apart first, so that whatever the transaction does, every reply
    // sender and every reservation is accounted for below.
    let mut jobs: Vec<AppendJob> = Vec::new();
    let mut delivered: Vec<(u64, u64)> = Vec::new();
    let mut sweep = false;
    for msg in batch {
        match msg {
            WriterMsg::Append(job) => jobs.push(job),
            WriterMsg::Delivered(done) => delivered.extend(done),
            WriterMsg::SweepOnce => sweep = true,
            WriterMsg::Stop => {}
        }
    }
    // For each job, the value stored by an earlier submission with the same once-key.
    let mut duplicates: Vec<Option<Vec<u8>>> = Vec::with_capacity(jobs.len());
    let mut appended = 0u64;

    let mut next_seq = *seq;
    let result = (|| -> Result<(), fjall::Error> {
        let mut batch = shared.db.batch();
        // Once-keys written by this batch, which the store cannot show us before the
        // commit: a redelivery inside the same batch is still a duplicate.
        let mut once_here: std::collections::HashMap<&str, &[u8]> = Default::default();
        for job in &jobs {
            if let Some((key, value)) = &job.once {
                let earlier = match once_here.get(key.as_str()) {
                    Some(v) => Some(v.to_vec()),
                    None => shared
                        .once
                        .get(key.as_bytes())?
                        .and_then(|v| postcard::from_bytes::<OnceEntry>(&v).ok())
                        .filter(|e| e.expires_at_ms > now_ms)
                        .map(|e| e.value),
                };
                if let Some(value) = earlier {
                    duplicates.push(Some(value));
                    continue;
                }
                let entry = OnceEntry {
                    expires_at_ms: now_ms + ttl_ms,
                    value: value.clone(),
                };
                let encoded = postcard::to_stdvec(&entry)
                    .map_err(|e| fjall::Error::from(std::io::Error::other(e.to_string())))?;
                batch.insert(&shared.once, key.as_bytes(), encoded);
                once_here.insert(key.as_str(), value.as_slice());
            }
            duplicates.push(None);
            for rec in &job.records {
                batch.insert(&shared.records, next_seq.to_be_bytes(), rec.as_slice());
                next_seq += 1;
            }
            appended += job.records.len() as u64;
            for (k, v) in &job.put_state {
                batch.insert(&shared.state, k.as_bytes(), v.as_slice());
            }
            for k in &job.delete_state {
                batch.remove(&shared.state, k.as_bytes());
            }
        }
        for (seq, _) in &delivered {
            batch.remove(&shared.records, seq.to_be_bytes());
        }
        if sweep {
            let mut count = 0usize;
            for entry in shared.once.iter() {
                let (k, v) = entry.into_inner()?;
                let expired = postcard::from_bytes::<OnceEntry>(&v)
                    .map(|e| e.expires_at_ms <= now_ms)
                    .unwrap_or(true);
                if expired {
                    batch.remove(&shared.once, k);
                    count += 1;
                }
            }
            if count > 0 {
                tracing::debug!(count, "Expired idempotency keys forgotten");
            }
        }
        batch.commit()?;
        // Only what was acknowledged to citizens needs an fsync. A batch that only
        // forgets delivered records may be lost in a crash: those records are then
        // produced again, a duplicate that consumers drop by event id. It becomes
        // durable with the next appending commit.
        if !jobs.is_empty() {
            shared.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
    })();

    match result {
        Ok(()) => {
            *seq = next_seq;
            shared.writable.store(true, Ordering::Relaxed);
            let mut done_n = delivered.len() as u64;
            let mut done_bytes: u64 = delivered.iter().map(|(_, b)| b).sum();
            let mut replies = Vec::with_capacity(jobs.len());
            for (job, duplicate) in jobs.into_iter().zip(duplicates) {
                let receipt = match duplicate {
                    Some(value) => {
                        // Nothing was written for it: give its reservation back.
                        done_n += job.records.len() as u64;
                        done_bytes += job.bytes;
                        Receipt::Duplicate(value)
                    }
                    None => Receipt::Accepted,
                };
                replies.push((job.reply, receipt));
            }
            // Counters first, so that whoever gets a reply sees them settled.
            shared.depth.fetch_sub(done_n, Ordering::AcqRel);
            shared.bytes.fetch_sub(done_bytes, Ordering::AcqRel);
            for (reply, receipt) in replies {
                let _ = reply.send(Ok(receipt));
            }
            if appended > 0 {
                metrics::counter!("gateway_outbox_appended_total").increment(appended);
                shared.appended.notify_one();
            }
        }
        Err(e) => {
            shared.writable.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "Outbox commit failed; submissions refused");
            metrics::counter!("gateway_outbox_commit_errors_total").increment(1);
            for job in jobs {
                shared
                    .depth
                    .fetch_sub(job.records.len() as u64, Ordering::AcqRel);
                shared.bytes.fetch_sub(job.bytes, Ordering::AcqRel);
                let _ = job.reply.send(Err(IntakeError::Storage(e.to_string())));
            }
            // Delivered records whose deletion failed stay in the journal and stay
            // counted; they are produced again on the next start: a duplicate, never a
            // loss.
        }
    }
    metrics::gauge!("gateway_outbox_depth").set(shared.depth.load(Ordering::Relaxed) as f64);
    metrics::gauge!("gateway_outbox_bytes").set(shared.bytes.load(Ordering::Relaxed) as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::event::new_event_id;
    use contract::{
        ChannelKind, CitizenIdentity, Contact, ContactContent, IdentityKind, SCHEMA_VERSION,
        TicketRef,
    };

    fn options(max_records: u64) -> OutboxOptions {
        OutboxOptions {
            max_records,
            max_bytes: 1 << 30,
            batch_max: 64,
            idempotency_ttl: Duration::from_secs(3600),
            source_prefix: "/gateway/test".into(),
        }
    }

    fn contact(text: &str) -> Event {
        Contact {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            ticket_ref: TicketRef("ZH20261126AAAAAAAAAA".into()),
            channel: ChannelKind::Sms,
            received_at: chrono::Utc::now(),
            citizen: CitizenIdentity {
                kind: IdentityKind::PhoneNumber,
                value: "13800001234".into(),
                key: "k".into(),
            },
            reply_paths: vec![],
            content: ContactContent::Text { text: text.into() },
            channel_ref: None,
            sequence: 1,
            rejected: None,
            restriction: None,
        }
        .into()
    }

    fn submission(text: &str) -> Submission {
        Submission {
            events: vec![contact(text)],
            ..Submission::default()
        }
    }

    #[tokio::test]
    async fn accepted_records_survive_a_reopen_until_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (outbox, writer) = Outbox::open(dir.path(), options(100)).expect("open");
            for i in 0..5 {
                let receipt = outbox
                    .submit(submission(&format!("m{i}")))
                    .await
                    .expect("accepted");
                assert_eq!(receipt, Receipt::Accepted);
            }
            assert_eq!(outbox.depth(), 5);
            let read = outbox.read_after(None, 10).expect("read");
            assert_eq!(read.len(), 5);
            // The first two are delivered; the rest are not when the gateway stops.
            let done: Vec<(u64, u64)> = read[..2].iter().map(|(s, b, _)| (*s, *b)).collect();
            outbox.delivered(done).await;
            // A durable commit after the deletions, as happens with the next contact.
            outbox.submit(submission("m5")).await.expect("accepted");
            assert_eq!(outbox.depth(), 4);
            drop(outbox);
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .expect("join");
        }
        let (outbox, _writer) = Outbox::open(dir.path(), options(100)).expect("reopen");
        assert_eq!(outbox.depth(), 4, "undelivered records are counted again");
        let read = outbox.read_after(None, 10).expect("read");
        let texts: Vec<String> = read
            .iter()
            .map(|(_, _, s)| {
                let c: Contact = serde_json::from_slice(&s.record.payload).expect("json");
                match c.content {
                    ContactContent::Text { text } => text,
                    other => panic!("only text contacts were submitted: {other:?}"),
                }
            })
            .collect();
        assert_eq!(texts, ["m2", "m3", "m4", "m5"]);
        // New records number after the old ones.
        outbox.submit(submission("m6")).await.expect("accepted");
        let last = outbox.read_after(Some(read[3].0), 10).expect("read");
        assert_eq!(last.len(), 1);
        assert!(last[0].0 > read[3].0);
        assert!(outbox.oldest_accepted_ms().is_some());
    }

    #[tokio::test]
    async fn a_once_key_records_only_the_first_submission() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (outbox, _writer) = Outbox::open(dir.path(), options(100)).expect("open");
        let once = |v: &str| Submission {
            once: Some(("sms/c/1".into(), v.as_bytes().to_vec())),
            ..submission("hello")
        };
        // Two at once (likely one batch) and one later: one record, the first value.
        let (a, b) = tokio::join!(outbox.submit(once("first")), outbox.submit(once("second")));
        let receipts = [a.expect("ok"), b.expect("ok")];
        assert_eq!(
            receipts.iter().filter(|r| **r == Receipt::Accepted).count(),
            1,
            "{receipts:?}"
        );
        let later = outbox.submit(once("third")).await.expect("ok");
        let Receipt::Duplicate(value) = later else {
            panic!("expected a duplicate")
        };
        assert!(value == b"first" || value == b"second");
        assert_eq!(outbox.depth(), 1, "duplicates release their reservation");
        let scanned = outbox.scan_once("sms/").await.expect("scan");
        assert_eq!(scanned.len(), 1);
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_with_a_retryable_error_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (outbox, _writer) = Outbox::open(dir.path(), options(3)).expect("open");
        for i in 0..3 {
            outbox
                .submit(submission(&format!("m{i}")))
                .await
                .expect("room");
        }
        let err = outbox
            .submit(submission("one too many"))
            .await
            .expect_err("full");
        assert!(matches!(err, IntakeError::Full { depth: 3 }), "{err}");
        assert!(err.is_retryable());
        assert!(!outbox.is_writable());
        assert_eq!(outbox.read_after(None, 10).expect("read").len(), 3);
        // Delivery makes room again.
        let read = outbox.read_after(None, 1).expect("read");
        outbox.delivered(vec![(read[0].0, read[0].1)]).await;
        for _ in 0..100 {
            if outbox.depth() < 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outbox
            .submit(submission("fits again"))
            .await
            .expect("room after delivery");
    }

    #[tokio::test]
    async fn state_is_written_and_deleted_with_the_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (outbox, _writer) = Outbox::open(dir.path(), options(100)).expect("open");
        let put = Submission {
            put_state: vec![
                ("chat/session/a".into(), b"1".to_vec()),
                ("chat/session/b".into(), b"2".to_vec()),
                ("other/x".into(), b"3".to_vec()),
            ],
            ..submission("x")
        };
        outbox.submit(put).await.expect("ok");
        let del = Submission {
            delete_state: vec!["chat/session/a".into()],
            ..Submission::default()
        };
        outbox.submit(del).await.expect("ok");
        let state = outbox.scan_state("chat/session/").await.expect("scan");
        assert_eq!(state, vec![("chat/session/b".to_owned(), b"2".to_vec())]);
        let empty = outbox.submit(Submission::default()).await;
        assert!(matches!(empty, Err(IntakeError::Invalid(_))));
    }
}
