//! Art. 9 restrictions in the gateway: the shared book every channel asks at admission,
//! kept current from the compacted restrictions topic, written through the outbox.
//!
//! - Every change (from the admin API, the expiry timer, an abusive-language proposal)
//!   is submitted to the outbox with its audit event, so it is durable before anybody is
//!   told it happened, and then applied to this instance's book at once.
//! - A reader thread reads the restrictions topic from the beginning of every partition
//!   and applies each record to the book, so every instance sees every change (one
//!   second is the target: the drain produces at once, the reader fetches with a 100 ms
//!   wait). Once it has reached the end of every partition the book is *synced*; the
//!   gateway waits for that (up to `restrictions.load_timeout_secs`) before it builds
//!   its channels, and `/readyz` reports it.
//! - Admission never waits on Kafka: it reads the book in memory.
//!
//! The reader uses a plain consumer with assigned partitions, not a consumer group:
//! every instance needs every record, and nothing is committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use contract::{AuditEvent, Intake, IntakeError, RestrictionChange, RestrictionState, Submission};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use routing::restrictions::Applied;
use routing::{Clock, SharedBook};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What `/readyz` and the metrics report about the book.
#[derive(Debug, Default)]
pub struct ReaderStatus {
    /// The reader reached the end of every partition once.
    pub synced: AtomicBool,
    /// Records taken from the topic (new or newer states).
    pub applied: AtomicU64,
    /// Records that did not parse or named no valid citizen key.
    pub unreadable: AtomicU64,
    /// Notified when `synced` turns true.
    pub synced_notify: Notify,
}

/// The gateway's restrictions: the book, how changes are written, the reader's status.
pub struct Restrictions {
    book: SharedBook,
    intake: Arc<dyn Intake>,
    clock: Clock,
    /// Wakes the expiry timer when a confirmation may have moved the next end earlier.
    wake: Arc<Notify>,
    /// Changes are decided and written one at a time on this instance, so that two
    /// requests cannot both confirm the same proposal here.
    writing: tokio::sync::Mutex<()>,
    status: Arc<ReaderStatus>,
}

impl std::fmt::Debug for Restrictions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restrictions").finish_non_exhaustive()
    }
}

impl Restrictions {
    /// Restrictions written through `intake`, timed by `clock`.
    pub fn new(intake: Arc<dyn Intake>, clock: Clock) -> Arc<Self> {
        Arc::new(Restrictions {
            book: SharedBook::new(),
            intake,
            clock,
            wake: Arc::new(Notify::new()),
            writing: tokio::sync::Mutex::new(()),
            status: Arc::new(ReaderStatus::default()),
        })
    }

    /// The book (a [`contract::Blocklist`]).
    pub fn book(&self) -> &SharedBook {
        &self.book
    }

    /// The clock the rules read.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The reader's status.
    pub fn status(&self) -> &Arc<ReaderStatus> {
        &self.status
    }

    /// Decides a change on the current book and writes it: `decide` sees the book and
    /// `now` and returns the change, or why not. The change and its audit event are
    /// durable when this returns `Ok`, and applied to this instance's book.
    pub async fn change<E, F>(&self, decide: F) -> Result<RestrictionChange, ChangeError<E>>
    where
        F: FnOnce(
            &routing::RestrictionBook,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<RestrictionChange, E>,
    {
        let _one_at_a_time = self.writing.lock().await;
        let change = {
            let book = self.book.read();
            decide(&book, self.clock.now()).map_err(ChangeError::Refused)?
        };
        self.publish(vec![change.clone()])
            .await
            .map_err(ChangeError::Intake)?;
        Ok(change)
    }

    /// Writes changes (and their audit events) through the outbox, then applies them.
    pub async fn publish(&self, changes: Vec<RestrictionChange>) -> Result<(), IntakeError> {
        let mut events = Vec::with_capacity(changes.len() * 2);
        for c in &changes {
            events.push(c.clone().into());
            events.push(AuditEvent::of_restriction(c).into());
        }
        self.intake
            .submit(Submission {
                events,
                ..Submission::default()
            })
            .await?;
        let mut confirmed = false;
        {
            let mut book = self.book.write();
            for c in changes {
                metrics::counter!("gateway_restriction_changes_total", "state" => c.state.as_str())
                    .increment(1);
                confirmed |= c.state == RestrictionState::Active;
                book.apply(c);
            }
        }
        if confirmed {
            self.wake.notify_one();
        }
        self.gauges();
        Ok(())
    }

    fn gauges(&self) {
        let book = self.book.read();
        metrics::gauge!("gateway_restrictions_active").set(book.active_len() as f64);
        metrics::gauge!("gateway_restrictions").set(book.len() as f64);
    }

    /// Runs the expiry timer until `stop` (see [`routing::ExpiryTimer`]).
    pub async fn run_expiry(self: Arc<Self>, stop: CancellationToken) {
        let timer = routing::ExpiryTimer::new(self.book.clone(), self.clock, self.wake.clone());
        let this = self.clone();
        tokio::select! {
            () = timer.run(move |changes| {
                let this = this.clone();
                async move {
                    let n = changes.len();
                    let result = this.publish(changes).await.map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => tracing::info!(expired = n, "Restrictions expired (Art. 9: 30 days over)"),
                        Err(e) => tracing::warn!(error = %e, "Cannot write restriction expiries yet; retrying"),
                    }
                    result
                }
            }) => {}
            () = stop.cancelled() => {}
        }
        self.gauges();
    }

    /// Waits until the reader has synced, or `timeout` passes; says which.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.status.synced_notify.notified();
                if self.status.synced.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Starts the reader thread (see the module docs). It stops soon after `stop`.
    pub fn spawn_reader(
        self: &Arc<Self>,
        client_props: Vec<(String, String)>,
        topic: String,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("restrictions-reader".into())
            .spawn(move || this.read_topic(&client_props, &topic, &stop))
    }

    fn read_topic(&self, props: &[(String, String)], topic: &str, stop: &CancellationToken) {
        let mut wait = Duration::from_millis(250);
        while !stop.is_cancelled() {
            match self.read_once(props, topic, stop) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, topic, "Restrictions topic not readable yet; admission uses what the book holds, retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Assigns every partition from the beginning and applies records until `stop`.
    fn read_once(
        &self,
        props: &[(String, String)],
        topic: &str,
        stop: &CancellationToken,
    ) -> Result<(), KafkaError> {
        let mut cfg = ClientConfig::new();
        for (k, v) in props {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer = cfg
            // Required by librdkafka even without a group: nothing is committed.
            .set("group.id", format!("restrictions-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("client.id", "hotline-gateway-restrictions")
            .set_log_level(RDKafkaLogLevel::Warning)
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let partitions = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut at_end: HashSet<i32> = HashSet::new();
        while !stop.is_cancelled() {
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => self.take(m.payload().unwrap_or_default()),
                Some(Err(KafkaError::PartitionEOF(p)))
                    if at_end.insert(p)
                        && at_end.len() == partitions
                        && !self.status.synced.swap(true, Ordering::AcqRel) =>
                {
                    let (count, active) = {
                        let book = self.book.read();
                        (book.len(), book.active_len())
                    };
                    tracing::info!(
                        restrictions = count,
                        active,
                        "Restrictions synced from the topic"
                    );
                    metrics::gauge!("gateway_restrictions_synced").set(1.0);
                    self.gauges();
                    self.status.synced_notify.notify_waiters();
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Restrictions reader");
                }
            }
        }
        Ok(())
    }

    fn take(&self, payload: &[u8]) {
        let change: RestrictionChange = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                self.status.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Unreadable record on the restrictions topic; skipped");
                return;
            }
        };
        let active = change.state == RestrictionState::Active;
        let applied = self.book.write().apply(change);
        match applied {
            Applied::New | Applied::Updated => {
                self.status.applied.fetch_add(1, Ordering::Relaxed);
                if active {
                    self.wake.notify_one();
                }
                if self.status.synced.load(Ordering::Relaxed) {
                    self.gauges();
                }
            }
            Applied::Stale => {}
            Applied::Invalid => {
                self.status.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("A restrictions record without a valid citizen key; skipped");
            }
        }
    }
}

/// Why [`Restrictions::change`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The rules refused it.
    #[error("{0}")]
    Refused(E),
    /// The outbox refused it.
    #[error("{0}")]
    Intake(IntakeError),
}
