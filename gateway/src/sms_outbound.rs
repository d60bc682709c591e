//! The outbound SMS path: requests on the outbound topic, sent once each by one
//! instance, their outcomes on the status topic (docs/sms-webhook.md#outbound).
//!
//! Each partition of the outbound topic is read by one live instance: the member the
//! rendezvous hash of [`crate::escalation::Members`] names for it, so every instance
//! agrees without a group coordinator (tansu 0.6's left a killed member's partitions
//! unread in our tests). Offsets are committed under one group id
//! (`<kafka.group_prefix>-sms-outbound`), so a partition that moves to another instance
//! goes on from the last request done. A request is sent through the SMS channel's carrier
//! sender (idempotent on the request id, retried until it expires), then its status is
//! recorded through the outbox with the request id as the outbox's once-key, and only
//! then is the offset committed. A crash between the carrier's answer and the commit
//! delivers the request again: the once-key stops a second send on the same instance,
//! and the carrier's idempotency key on any other.

use std::sync::Arc;
use std::time::Duration;

use contract::{Intake, OutboundSms, Receipt, SmsSender, Submission};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::escalation::{Members, owner};

/// Sends requests until `stop`.
pub async fn run(
    props: Vec<(String, String)>,
    topic: String,
    group: String,
    members: Arc<Members>,
    sender: Arc<dyn SmsSender>,
    intake: Arc<dyn Intake>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(250);
    while !stop.is_cancelled() {
        match consume(&props, &topic, &group, &members, &sender, &intake, &stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "Outbound SMS consumer not running yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The partitions of `partitions` this member reads now.
fn mine(members: &Members, partitions: usize) -> Vec<i32> {
    let live = members.live();
    (0..partitions as i32)
        .filter(|p| owner(&live, Uuid::from_u128(*p as u128)).is_some_and(|o| *o == members.me))
        .collect()
}

async fn consume(
    props: &[(String, String)],
    topic: &str,
    group: &str,
    members: &Members,
    sender: &Arc<dyn SmsSender>,
    intake: &Arc<dyn Intake>,
    stop: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in props {
        cfg.set(k, v);
    }
    let consumer: StreamConsumer = cfg
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", "hotline-gateway-sms-outbound")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create()?;
    let partitions = crate::topic_reader::partitions(&consumer, topic)?;
    let mut assigned: Vec<i32> = Vec::new();
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            m = consumer.recv(), if !assigned.is_empty() => m,
            _ = recheck.tick() => {
                let want = if members.ready() { mine(members, partitions) } else { Vec::new() };
                if want != assigned {
                    let mut tpl = TopicPartitionList::new();
                    for p in &want {
                        tpl.add_partition_offset(topic, *p, Offset::Stored)?;
                    }
                    consumer.assign(&tpl)?;
                    tracing::info!(partitions = ?want, "Outbound SMS: partitions this instance sends");
                    assigned = want;
                }
                continue;
            }
            () = stop.cancelled() => break,
        };
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "Outbound SMS consumer");
                continue;
            }
        };
        let request: OutboundSms = match serde_json::from_slice(m.payload().unwrap_or_default()) {
            Ok(r) => r,
            Err(e) => {
                // Nothing can be sent from it; it is skipped, loudly.
                metrics::counter!("gateway_sms_outbound_total", "state" => "unreadable")
                    .increment(1);
                tracing::error!(error = %e, partition = m.partition(), offset = m.offset(), "Unreadable outbound SMS request; skipped");
                consumer.commit_message(&m, CommitMode::Async)?;
                continue;
            }
        };
        let once = format!("sms-out/{}", request.id);
        let already = intake
            .scan_once(&once)
            .await
            .map(|v| v.iter().any(|(k, _)| *k == once))
            .unwrap_or(false);
        if !already {
            let status = tokio::select! {
                s = sender.send(&request) => s,
                // Shutting down mid-retry: the request is not committed and is taken again.
                () = stop.cancelled() => break,
            };
            tracing::info!(request = %request.id, purpose = %request.purpose, state = ?status.state, attempts = status.attempts, "Outbound SMS done");
            let submission = Submission {
                once: Some((once, status.request_id.as_bytes().to_vec())),
                events: vec![status.into()],
                ..Submission::default()
            };
            // The status must be durable before the offset moves; keep trying.
            loop {
                match intake.submit(submission.clone()).await {
                    Ok(Receipt::Accepted | Receipt::Duplicate(_)) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot record an outbound SMS status yet; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = stop.cancelled() => return Ok(()),
                        }
                    }
                }
            }
        }
        consumer.commit_message(&m, CommitMode::Async)?;
    }
    Ok(())
}
