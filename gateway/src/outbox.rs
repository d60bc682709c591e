//! The durable outbox: nothing a citizen was told is accepted is ever lost.
//!
//! A channel's [`Submission`] is encoded into Kafka records, appended to a local
//! journal and fsync'd before [`Intake::submit`] returns, and so before the citizen is
//! acknowledged. The drain ([`crate::kafka`]) produces journal records to Kafka and
//! deletes them on the delivery report; on restart whatever is left is produced again,
//! so a record reaches Kafka at least once, and consumers drop the rare duplicate by its
//! CloudEvents id: exactly once in effect.
//!
//! The journal is a [redb](https://docs.rs/redb) database rather than a file format of
//! our own: redb gives crash-safe, checksummed, atomic multi-table transactions with an
//! fsync per commit, which is exactly the unit we need (records + channel state +
//! idempotency key in one step), and it is pure Rust and well maintained. What redb does
//! not do is group commit, so one writer thread does it here: it takes every submission
//! waiting in its bounded queue, writes them all in one transaction and pays one fsync
//! for the lot. Throughput then grows with concurrency instead of dying on fsync.
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
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

/// Undelivered records: sequence number -> [`Stored`] (postcard).
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Channel state: key -> value.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Idempotency keys: key -> [`OnceEntry`] (postcard).
const ONCE: TableDefinition<&str, &[u8]> = TableDefinition::new("once");

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

/// Why the outbox could not open.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database file could not be created or opened.
    #[error(
        "cannot open the outbox at {path}: {source} (is the data_dir on a local, writable disk, and no other gateway using it?)"
    )]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: Box<redb::Error>,
    },
    /// Reading or writing the database failed.
    #[error("outbox storage error: {0}")]
    Storage(#[from] Box<redb::Error>),
}

fn storage<E: Into<redb::Error>>(e: E) -> Box<redb::Error> {
    Box::new(e.into())
}

enum WriterMsg {
    Append {
        records: Vec<Vec<u8>>,
        bytes: u64,
        put_state: Vec<(String, Vec<u8>)>,
        delete_state: Vec<String>,
        once: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<Receipt, IntakeError>>,
    },
    Delivered(Vec<(u64, u64)>),
    SweepOnce,
}

struct Shared {
    db: Database,
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
        let path = dir.join("outbox.redb");
        let open_err = |e: redb::Error| OutboxError::Open {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;

        // Create the tables and count what is undelivered from an earlier run.
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        // Sequence numbers only need to grow within the journal's lifetime: after the
        // last undelivered record, numbering may start anywhere above it.
        let (depth, bytes, next_seq) = {
            let records = txn.open_table(RECORDS).map_err(|e| open_err(e.into()))?;
            txn.open_table(STATE).map_err(|e| open_err(e.into()))?;
            txn.open_table(ONCE).map_err(|e| open_err(e.into()))?;
            let mut depth = 0u64;
            let mut bytes = 0u64;
            let mut next_seq = 0;
            for entry in records.iter().map_err(|e| open_err(e.into()))? {
                let (k, v) = entry.map_err(|e| open_err(e.into()))?;
                next_seq = k.value() + 1;
                depth += 1;
                bytes += v.value().len() as u64;
            }
            (depth, bytes, next_seq)
        };
        txn.commit().map_err(|e| open_err(e.into()))?;

        let shared = Arc::new(Shared {
            db,
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
            .map_err(|e| open_err(redb::Error::Io(e)))?;
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
        let txn = self.shared.db.begin_read().ok()?;
        let table = txn.open_table(RECORDS).ok()?;
        let (_, v) = table.first().ok()??;
        postcard::from_bytes::<Stored>(v.value())
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
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(RECORDS).map_err(storage)?;
        let range = match after {
            Some(seq) => table.range(seq + 1..).map_err(storage)?,
            None => table.range(0..).map_err(storage)?,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in range.take(limit) {
            let (k, v) = entry.map_err(storage)?;
            match postcard::from_bytes::<Stored>(v.value()) {
                Ok(stored) => out.push((k.value(), v.value().len() as u64, stored)),
                Err(e) => {
                    // A record we cannot decode was written by an incompatible build; it
                    // stays in the journal for an operator, and the drain moves past it.
                    tracing::error!(seq = k.value(), error = %e, "Undecodable outbox record skipped");
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

    /// Asks the writer to forget expired idempotency keys.
    pub async fn sweep_expired_keys(&self) {
        let _ = self.tx.send(WriterMsg::SweepOnce).await;
    }

    fn encode(&self, events: &[Event]) -> Result<(Vec<Vec<u8>>, u64), IntakeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut records = Vec::with_capacity(events.len());
        let mut bytes = 0u64;
        for event in events {
            let channel = match event {
                Event::Contact(c) => c.channel,
                Event::TicketDraft(d) => d.channel,
            };
            let source = format!("{}/{}", self.shared.options.source_prefix, channel);
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

    /// Reads the entries of a string-keyed table under `prefix`, decoded by `decode`
    /// (entries it returns `None` for are left out).
    async fn scan(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        prefix: &str,
        decode: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        let shared = self.shared.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || -> Result<_, Box<redb::Error>> {
            let txn = shared.db.begin_read().map_err(storage)?;
            let table = txn.open_table(table).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                if let Some(value) = decode(v.value()) {
                    out.push((k.value().to_owned(), value));
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
        let msg = WriterMsg::Append {
            records,
            bytes,
            put_state: submission.put_state,
            delete_state: submission.delete_state,
            once: submission.once,
            reply,
        };
        if self.tx.send(msg).await.is_err() {
            self.release(n, bytes);
            return Err(IntakeError::ShuttingDown);
        }
        // The writer releases the reservation itself when the commit fails or the
        // submission is a duplicate.
        rx.await.unwrap_or(Err(IntakeError::ShuttingDown))
    }

    async fn scan_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        self.scan(STATE, prefix, |v| Some(v.to_vec())).await
    }

    async fn scan_once(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.scan(ONCE, prefix, move |v| {
            postcard::from_bytes::<OnceEntry>(v)
                .ok()
                .filter(|e| e.expires_at_ms > now_ms)
                .map(|e| e.value)
        })
        .await
    }
}

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
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        // Group commit: everything already waiting rides on this fsync.
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
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

fn io_error(e: impl std::fmt::Display) -> redb::Error {
    redb::Error::Io(std::io::Error::other(e.to_string()))
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
            WriterMsg::Append {
                records,
                bytes,
                put_state,
                delete_state,
                once,
                reply,
            } => jobs.push(AppendJob {
                records,
                bytes,
                put_state,
                delete_state,
                once,
                reply,
            }),
            WriterMsg::Delivered(done) => delivered.extend(done),
            WriterMsg::SweepOnce => sweep = true,
        }
    }
    // For each job, the value stored by an earlier submission with the same once-key.
    let mut duplicates: Vec<Option<Vec<u8>>> = Vec::with_capacity(jobs.len());
    let mut appended = 0u64;

    let mut next_seq = *seq;
    let result = (|| -> Result<(), redb::Error> {
        let mut txn = shared.db.begin_write()?;
        // Only what was acknowledged to citizens needs an fsync. A commit that only
        // forgets delivered records may be lost in a crash: those records are then
        // produced again, a duplicate that consumers drop by event id. It becomes
        // durable with the next appending commit.
        let durability = if jobs.is_empty() {
            Durability::None
        } else {
            Durability::Immediate
        };
        txn.set_durability(durability).map_err(io_error)?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let mut state = txn.open_table(STATE)?;
            let mut once_t = txn.open_table(ONCE)?;
            for job in &jobs {
                if let Some((key, value)) = &job.once {
                    let existing = once_t
                        .get(key.as_str())?
                        .and_then(|g| postcard::from_bytes::<OnceEntry>(g.value()).ok());
                    if let Some(entry) = existing.filter(|e| e.expires_at_ms > now_ms) {
                        duplicates.push(Some(entry.value));
                        continue;
                    }
                    let entry = OnceEntry {
                        expires_at_ms: now_ms + ttl_ms,
                        value: value.clone(),
                    };
                    let encoded = postcard::to_stdvec(&entry).map_err(io_error)?;
                    once_t.insert(key.as_str(), encoded.as_slice())?;
                }
                duplicates.push(None);
                for rec in &job.records {
                    records.insert(next_seq, rec.as_slice())?;
                    next_seq += 1;
                }
                appended += job.records.len() as u64;
                for (k, v) in &job.put_state {
                    state.insert(k.as_str(), v.as_slice())?;
                }
                for k in &job.delete_state {
                    state.remove(k.as_str())?;
                }
            }
            for (seq, _) in &delivered {
                records.remove(seq)?;
            }
            if sweep {
                let count = once_t
                    .extract_if(|_, v| {
                        postcard::from_bytes::<OnceEntry>(v)
                            .map(|e| e.expires_at_ms <= now_ms)
                            .unwrap_or(true)
                    })?
                    .count();
                if count > 0 {
                    tracing::debug!(count, "Expired idempotency keys forgotten");
                }
            }
        }
        txn.commit()?;
        Ok(())
    })();

    match result {
        Ok(()) => {
            *seq = next_seq;
            shared.writable.store(true, Ordering::Relaxed);
            let mut done_n = delivered.len() as u64;
            let mut done_bytes: u64 = delivered.iter().map(|(_, b)| b).sum();
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
                let _ = job.reply.send(Ok(receipt));
            }
            shared.depth.fetch_sub(done_n, Ordering::AcqRel);
            shared.bytes.fetch_sub(done_bytes, Ordering::AcqRel);
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
