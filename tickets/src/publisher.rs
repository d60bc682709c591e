//! What one instance at a time does: send the outbox (status events, dead letters, SMS
//! and revisit-call requests) to Kafka in order, and run the clocks (Art. 10's card
//! sweep, Art. 22's recount of provisional deadlines, the follow-up's clocks of Arts. 16
//! and 17).
//!
//! The one instance is whoever holds a PostgreSQL session advisory lock on a dedicated
//! connection: the database frees it the moment that connection drops (a crash, a
//! SIGKILL), and another instance takes it within a second. A row is marked sent only
//! after the broker acknowledged it (idempotent producer, `acks=all`); a crash in
//! between sends it again, and readers drop it by its `ce_id`. The clocks write derived
//! event ids, so even two sweeps at once would write each card once.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::config::Clock;
use crate::consumer::ConsumerStatus;
use crate::store::Store;

/// The advisory lock's key ("tick" in ASCII).
const LEADER_LOCK: i64 = 0x7469_636b;

/// What the publisher needs.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// librdkafka properties.
    pub client_properties: Vec<(String, String)>,
    /// The database (the lock's own connection).
    pub database: sqlx::postgres::PgConnectOptions,
    /// How often the card sweep runs.
    pub sweep_every: Duration,
    /// How often due follow-up clocks are looked for (Arts. 16, 17).
    pub clocks_every: Duration,
}

/// Creates the topics the service writes, if missing (the gateway's own topics are the
/// gateway's to create).
pub async fn create_topics(
    client_properties: &[(String, String)],
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    for (k, v) in client_properties {
        cfg.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(&new, &AdminOptions::new()).await? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => tracing::warn!(topic = %t, error = %e, "Topic not created"),
        }
    }
    Ok(())
}

/// Runs until `shutdown`.
pub async fn run(
    store: Store,
    opts: PublisherOptions,
    clock: Clock,
    status: Arc<ConsumerStatus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &opts.client_properties {
        cfg.set(k, v);
    }
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    let producer: FutureProducer = cfg.create()?;
    loop {
        // Wait to lead.
        let mut lock = loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match try_lead(&opts.database).await {
                Ok(Some(conn)) => break conn,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "Leader lock not reachable"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        tracing::info!("This instance sends the outbox and runs the clocks");
        metrics::gauge!("tickets_leader").set(1.0);
        if let Err(e) = store.recompute_provisional(clock.now()).await {
            tracing::warn!(error = %e, "Recounting provisional deadlines failed");
        }
        let mut sweep = tokio::time::interval(opts.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut clocks = tokio::time::interval(opts.clocks_every);
        clocks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        let lost = loop {
            match publish_some(&store, &producer).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Publishing failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = status.committed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = sweep.tick() => {
                    match store.sweep_cards(clock.now()).await {
                        Ok(n) if n > 0 => tracing::info!(cards = n, "Cards shown (Art. 10)"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "Card sweep failed"),
                    }
                }
                _ = clocks.tick() => {
                    // Arts. 16, 17: the survey's default, revisit calls, their timeouts.
                    loop {
                        match store.run_due_jobs(clock.now(), 200).await {
                            Ok(n) if n >= 200 => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "Running the follow-up clocks failed");
                                break;
                            }
                        }
                    }
                }
                _ = prune.tick() => {
                    let _ = store.prune_outbox(chrono::Duration::days(7)).await;
                }
                _ = check.tick() => {
                    if lock.ping().await.is_err() {
                        break true;
                    }
                }
            }
        };
        metrics::gauge!("tickets_leader").set(0.0);
        let _ = lock.close().await;
        if !lost {
            return Ok(());
        }
        tracing::warn!("Lost the leader lock's connection");
    }
}

async fn try_lead(
    options: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<Option<sqlx::PgConnection>> {
    let mut conn = sqlx::PgConnection::connect_with(options).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut conn)
        .await?;
    if got {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

/// Sends up to 500 pending rows in order; returns how many.
async fn publish_some(store: &Store, producer: &FutureProducer) -> anyhow::Result<usize> {
    let rows = store.pending(500).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        let pairs: Vec<(String, String)> = serde_json::from_value(row.headers.clone())?;
        let mut headers = OwnedHeaders::new_with_capacity(pairs.len());
        for (k, v) in &pairs {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(&row.topic)
            .key(row.key.as_bytes())
            .payload(&row.payload)
            .headers(headers);
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    let mut sent = Vec::with_capacity(rows.len());
    for (row, d) in rows.iter().zip(futures::future::join_all(deliveries).await) {
        match d {
            Ok(_) => sent.push(row.seq),
            Err((e, _)) => {
                // Stop at the first failure: later rows wait, so a ticket's events keep
                // their order.
                store.published(&sent).await?;
                anyhow::bail!("broker refused outbox row {}: {e}", row.seq);
            }
        }
    }
    store.published(&sent).await?;
    metrics::counter!("tickets_outbox_published_total").increment(sent.len() as u64);
    Ok(sent.len())
}
