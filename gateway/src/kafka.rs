//! The Kafka sink: an idempotent rdkafka producer (`acks=all`) fed by the outbox drain.
//!
//! The drain reads undelivered records from the outbox in journal order, keeps at most
//! `max_in_flight` of them in flight (the concurrency limit in front of rdkafka), and
//! tells the outbox which ones the brokers acknowledged. A failed delivery is never
//! dropped: the drain waits for what is in flight, backs off, and produces again from
//! the oldest failure. With the idempotent producer, librdkafka keeps per-partition order
//! across its own retries, so one citizen's events stay in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use contract::EventType;

/// What the admin API reports about Kafka.
#[derive(Debug, Default)]
pub struct KafkaHealth {
    /// Last successful delivery, ms since the epoch (0: none yet).
    pub last_ok_ms: AtomicI64,
    /// Last client or delivery error, ms since the epoch (0: none yet).
    pub last_error_ms: AtomicI64,
    /// Deliveries that failed and were scheduled again.
    pub failures: AtomicU64,
    /// The last error, for the readiness report.
    pub last_error: std::sync::Mutex<String>,
}

impl KafkaHealth {
    fn error(&self, what: String) {
        self.last_error_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        // A std Mutex: nothing awaits while it is held.
        if let Ok(mut last) = self.last_error.lock() {
            *last = what;
        }
    }

    /// Whether the brokers look reachable: the last event was a success.
    pub fn is_up(&self) -> bool {
        let ok = self.last_ok_ms.load(Ordering::Relaxed);
        let err = self.last_error_ms.load(Ordering::Relaxed);
        err == 0 || ok > err
    }
}

/// Routes librdkafka's logs and errors into tracing and the health record.
pub struct SinkContext {
    health: Arc<KafkaHealth>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "Kafka client error");
        metrics::counter!("gateway_kafka_client_errors_total").increment(1);
        self.health.error(format!("{error}: {reason}"));
    }
}

/// The topics the sink writes.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Contact events.
    pub contacts: String,
    /// Ticket-draft events.
    pub ticket_drafts: String,
    /// Art. 9 restriction changes (compacted).
    pub restrictions: String,
    /// Audit events.
    pub audit: String,
    /// Art. 15 urgent notice events.
    pub notices: String,
    /// Outbound SMS requests.
    pub sms_outbound: String,
    /// Outbound SMS outcomes.
    pub sms_status: String,
    /// The ticket service's ticket transitions (not written by the gateway).
    pub ticket_status: String,
    /// The ticket service's revisit-call requests (read by the gateway).
    pub revisit_calls: String,
    /// Revisit-call results.
    pub revisit_results: String,
    /// The ticket service's messages into open chat sessions (read by the gateway).
    pub chat_outbound: String,
    /// Their delivery reports.
    pub chat_status: String,
    /// Instances' heartbeats.
    pub members: String,
}

impl Topics {
    fn for_type(&self, t: EventType) -> &str {
        match t {
            EventType::Contact => &self.contacts,
            EventType::TicketDraft => &self.ticket_drafts,
            EventType::Restriction => &self.restrictions,
            EventType::Audit => &self.audit,
            EventType::Notice => &self.notices,
            EventType::OutboundSms => &self.sms_outbound,
            EventType::SmsStatus => &self.sms_status,
            EventType::TicketStatus => &self.ticket_status,
            EventType::RevisitCall => &self.revisit_calls,
            EventType::RevisitResult => &self.revisit_results,
            EventType::ChatOutbound => &self.chat_outbound,
            EventType::ChatOutboundStatus => &self.chat_status,
        }
    }
}

/// Builds the producer with the delivery guarantee the outbox relies on.
pub fn producer(
    client_props: &[(String, String)],
    message_timeout_ms: u64,
    linger_ms: u64,
    health: Arc<KafkaHealth>,
) -> Result<FutureProducer<SinkContext>, KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in client_props {
        cfg.set(k, v);
    }
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("linger.ms", linger_ms.to_string())
        .set("client.id", "hotline-gateway")
        .set_log_level(RDKafkaLogLevel::Warning);
    cfg.create_with_context(SinkContext { health })
}

/// Creates the topics when they are missing; an existing topic is fine.
pub async fn create_topics(
    client_props: &[(String, String)],
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in client_props {
        cfg.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let mut new: Vec<NewTopic<'_>> = [
        &topics.contacts,
        &topics.ticket_drafts,
        &topics.audit,
        &topics.notices,
        &topics.sms_outbound,
        &topics.sms_status,
        &topics.revisit_calls,
        &topics.revisit_results,
        &topics.chat_outbound,
        &topics.chat_status,
    ]
    .into_iter()
    .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
    .collect();
    // The restrictions topic keeps each citizen's latest change only: every instance
    // reads all of it at start, so it must not grow with history (the audit topic has
    // that).
    new.push(
        NewTopic::new(
            &topics.restrictions,
            partitions,
            TopicReplication::Fixed(replication),
        )
        .set("cleanup.policy", "compact"),
    );
    // Heartbeats matter for seconds; an hour is plenty.
    new.push(
        NewTopic::new(&topics.members, 1, TopicReplication::Fixed(replication))
            .set("retention.ms", "3600000"),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "Kafka topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "Kafka topic exists")
            }
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::warn!(topic, ?code, "Kafka topic creation failed"));
            }
        }
    }
    Ok(())
}

/// Settings of the drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Records in flight at most.
    pub max_in_flight: usize,
    /// First backoff after a failed delivery; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            max_in_flight: crate::config::DEFAULT_MAX_IN_FLIGHT,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

type Flight = (u64, u64, i64, Result<(), String>);

/// Produces the outbox to Kafka until `shutdown`; then waits up to `grace` for what is
/// in flight. Whatever is not acknowledged stays in the outbox for the next start.
pub async fn drain(
    outbox: Outbox,
    producer: FutureProducer<SinkContext>,
    topics: Topics,
    options: DrainOptions,
    health: Arc<KafkaHealth>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut cursor: Option<u64> = None;
    let mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, Flight>> =
        FuturesUnordered::new();
    let mut oldest_failed: Option<u64> = None;
    let mut backoff = options.min_backoff;
    let mut done: Vec<(u64, u64)> = Vec::new();
    let mut retry_at: Option<tokio::time::Instant> = None;

    loop {
        // Refill the window unless we are waiting out a failure.
        if oldest_failed.is_none() && retry_at.is_none() && in_flight.len() < options.max_in_flight
        {
            let room = options.max_in_flight - in_flight.len();
            match outbox.read_after(cursor, room.min(2048)) {
                Ok(batch) => {
                    for (seq, size, stored) in batch {
                        let mut headers =
                            OwnedHeaders::new_with_capacity(stored.record.headers.len());
                        for (k, v) in &stored.record.headers {
                            headers = headers.insert(Header {
                                key: k,
                                value: Some(v.as_bytes()),
                            });
                        }
                        let topic = topics.for_type(stored.record.event_type);
                        let record = FutureRecord::to(topic)
                            .key(stored.record.key.as_bytes())
                            .payload(&stored.record.payload)
                            .headers(headers);
                        match producer.send_result(record) {
                            Ok(delivery) => {
                                let accepted = stored.accepted_at_ms;
                                in_flight.push(Box::pin(async move {
                                    let outcome = match delivery.await {
                                        Ok(Ok(_)) => Ok(()),
                                        Ok(Err((e, _))) => Err(e.to_string()),
                                        Err(_) => Err("producer dropped the delivery".to_owned()),
                                    };
                                    (seq, size, accepted, outcome)
                                }));
                                cursor = Some(seq);
                            }
                            Err((e, _)) => {
                                // librdkafka's queue is full: wait for deliveries to make
                                // room, then continue from this record.
                                tracing::debug!(error = %e, "Producer queue full");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "Outbox read failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                }
            }
        }

        let idle = in_flight.is_empty();
        tokio::select! {
            Some((seq, size, accepted_ms, outcome)) = in_flight.next(), if !idle => {
                match outcome {
                    Ok(()) => {
                        let now = chrono::Utc::now().timestamp_millis();
                        metrics::histogram!("gateway_kafka_delivery_seconds")
                            .record((now - accepted_ms).max(0) as f64 / 1000.0);
                        metrics::counter!("gateway_kafka_delivered_total").increment(1);
                        health.last_ok_ms.store(now, Ordering::Relaxed);
                        done.push((seq, size));
                    }
                    Err(e) => {
                        metrics::counter!("gateway_kafka_delivery_errors_total").increment(1);
                        health.failures.fetch_add(1, Ordering::Relaxed);
                        health.error(e.clone());
                        if oldest_failed.is_none_or(|f| seq < f) {
                            tracing::warn!(error = %e, "Kafka delivery failed; the record stays in the outbox and is produced again");
                            oldest_failed = Some(seq);
                        }
                    }
                }
                // Hand acknowledgements to the outbox in batches, not one by one.
                if done.len() >= 256 || in_flight.is_empty() {
                    outbox.delivered(std::mem::take(&mut done)).await;
                }
            }
            _ = outbox.appended(), if idle || in_flight.len() < options.max_in_flight => {}
            _ = sleep_until(retry_at), if retry_at.is_some() => { retry_at = None; }
            // Poll again now and then: an append notification may have raced the read.
            _ = tokio::time::sleep(Duration::from_millis(500)), if idle && oldest_failed.is_none() && retry_at.is_none() => {}
            _ = shutdown.cancelled() => break,
        }

        if let Some(failed) = oldest_failed {
            if in_flight.is_empty() {
                // Everything after the failure has settled: go back to it after a pause.
                outbox.delivered(std::mem::take(&mut done)).await;
                cursor = failed.checked_sub(1);
                oldest_failed = None;
                retry_at = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(options.max_backoff);
            }
        } else if retry_at.is_none() && !done.is_empty() {
            backoff = options.min_backoff;
        }
    }

    // Shutdown: give what is in flight the grace period.
    let deadline = tokio::time::Instant::now() + grace;
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, in_flight.next()).await {
            Ok(Some((seq, size, _, Ok(())))) => done.push((seq, size)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let left = in_flight.len();
    outbox.delivered(done).await;
    if left > 0 {
        tracing::warn!(
            left,
            "Records still in flight at shutdown stay in the outbox for the next start"
        );
    }
    let _ = producer.flush(Duration::from_millis(100));
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
