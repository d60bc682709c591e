//! Request topics: requests other services publish for the gateway to carry out once
//! each (an outbound SMS, a revisit call, a message into chat sessions), with how each
//! went recorded through the outbox. [`crate::sms_outbound`], [`crate::revisit`] and
//! [`crate::chat_outbound`] are its [`Handler`]s.
//!
//! Each partition of a request topic is read by one live instance: the member the
//! rendezvous hash of [`crate::escalation::Members`] names for it, so every instance
//! agrees without a group coordinator (tansu 0.6's left a killed member's partitions
//! unread in our tests). Offsets are committed under one group id per topic
//! (`<kafka.group_prefix>-<suffix>`), so a partition that moves to another instance goes
//! on from the last request done. A request is done by the handler, its outcome is
//! recorded through the outbox with the handler's once-key, and only then is its offset
//! committed. A crash between the outcome and the commit delivers the request again: the
//! once-key stops doing it twice on the same instance (the handler's peer, such as the
//! carrier's idempotency key, on any other).
//!
//! Up to [`Spec::concurrency`] requests are in hand at once, and their offsets are
//! committed in the order they were read: a request done early waits, uncommitted, for
//! those read before it (and takes a place meanwhile). A request whose once-key is
//! already in hand is not done again. On a change of partitions the instance finishes
//! what it has in hand before it takes the new ones, so it never commits for a partition
//! another instance reads. On shutdown it reads nothing more and lets what is in hand
//! finish: a handler that breaks a request off returns `None`, and from then on nothing
//! more is committed (those requests are read again after the restart).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{Event, Intake, Receipt, Submission};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::escalation::{Members, owner};

/// What a kind of request is called, and how many are in hand at once.
#[derive(Debug)]
pub struct Spec {
    /// The consumer group the offsets are committed under, after
    /// `<kafka.group_prefix>-`.
    pub group: &'static str,
    /// A request's outbox once-key is `<once_prefix>/<request id>`.
    pub once_prefix: &'static str,
    /// The Kafka client id.
    pub client_id: &'static str,
    /// Names the requests in logs (`Outbound SMS`, `Revisit call`).
    pub name: &'static str,
    /// A counter with a `state` label: `unreadable` counts the records skipped because
    /// they do not parse.
    pub counter: &'static str,
    /// Requests in hand at once (1: one after the other).
    pub concurrency: usize,
}

/// Carries out one kind of request.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The request, as the record's JSON value.
    type Request: DeserializeOwned + Send + 'static;

    /// The request's id: the same request published twice has the same id.
    fn id(&self, request: &Self::Request) -> Uuid;

    /// Carries the request out; returns the event that records how it went, or `None`
    /// when `stop` broke it off (it is not committed and is read again after a restart).
    async fn handle(&self, request: Self::Request, stop: &CancellationToken) -> Option<Event>;
}

/// What every request topic's runner shares.
#[derive(Clone)]
pub struct Runner {
    /// The Kafka client properties.
    pub props: Vec<(String, String)>,
    /// `kafka.group_prefix`.
    pub group_prefix: String,
    /// The live instances, which share the partitions.
    pub members: Arc<Members>,
    /// Where outcomes are recorded.
    pub intake: Arc<dyn Intake>,
    /// The gateway's shutdown.
    pub stop: CancellationToken,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("group_prefix", &self.group_prefix)
            .finish_non_exhaustive()
    }
}

/// The partitions of `partitions` this member reads now.
fn mine(members: &Members, partitions: usize) -> Vec<i32> {
    let live = members.live();
    (0..partitions as i32)
        .filter(|p| owner(&live, Uuid::from_u128(*p as u128)).is_some_and(|o| *o == members.me))
        .collect()
}

/// A request in hand, once finished.
struct Finished {
    partition: i32,
    offset: i64,
    /// Its once-key, while it counts as in hand.
    once: Option<String>,
    /// Whether it may be committed (`false`: broken off by the shutdown).
    done: bool,
}

/// The requests in hand, in the order they were read.
#[derive(Default)]
struct InHand {
    queue: FuturesOrdered<BoxFuture<'static, Finished>>,
    keys: HashSet<String>,
}

impl InHand {
    /// A record to commit in its turn, with nothing to do.
    fn skip(&mut self, partition: i32, offset: i64) {
        let f = Finished {
            partition,
            offset,
            once: None,
            done: true,
        };
        self.queue.push_back(Box::pin(std::future::ready(f)));
    }

    /// Starts `work` on the request `once` names, unless that request is in hand
    /// already (read twice): then it is skipped.
    fn start(
        &mut self,
        partition: i32,
        offset: i64,
        once: String,
        work: impl Future<Output = bool> + Send + 'static,
    ) {
        if !self.keys.insert(once.clone()) {
            return self.skip(partition, offset);
        }
        self.queue.push_back(Box::pin(async move {
            let done = work.await;
            Finished {
                partition,
                offset,
                once: Some(once),
                done,
            }
        }));
    }

    /// The next request finished, in order.
    async fn next(&mut self) -> Option<Finished> {
        let f = self.queue.next().await?;
        if let Some(once) = &f.once {
            self.keys.remove(once);
        }
        Some(f)
    }
}

impl Runner {
    /// Carries out the requests on `topic` with `handler` until the shutdown.
    pub async fn run<H: Handler>(self, topic: String, spec: &'static Spec, handler: H) {
        let handler = Arc::new(handler);
        let group = format!("{}-{}", self.group_prefix, spec.group);
        let mut wait = Duration::from_millis(250);
        while !self.stop.is_cancelled() {
            match self.consume(&topic, &group, spec, &handler).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, requests = spec.name, %topic, "Request consumer not running yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn consume<H: Handler>(
        &self,
        topic: &str,
        group: &str,
        spec: &Spec,
        handler: &Arc<H>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let (members, intake, stop) = (&self.members, &self.intake, &self.stop);
        let mut cfg = ClientConfig::new();
        for (k, v) in &self.props {
            cfg.set(k, v);
        }
        let consumer: StreamConsumer = cfg
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("client.id", spec.client_id)
            .set_log_level(RDKafkaLogLevel::Warning)
            .create()?;
        let partitions = crate::topic_reader::partitions(&consumer, topic)?;
        let limit = spec.concurrency.max(1);
        let mut assigned: Vec<i32> = Vec::new();
        let mut moving = false;
        let mut in_hand = InHand::default();
        let mut broken_off = false;
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        loop {
            let idle = in_hand.queue.is_empty();
            if stop.is_cancelled() && idle {
                break;
            }
            let taking = !assigned.is_empty() && !moving && !stop.is_cancelled();
            tokio::select! {
                Some(f) = in_hand.next(), if !idle => {
                    broken_off |= !f.done;
                    if !broken_off {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(topic, f.partition, Offset::Offset(f.offset + 1))?;
                        consumer.commit(&tpl, CommitMode::Async)?;
                    }
                }
                m = consumer.recv(), if taking && in_hand.queue.len() < limit => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!(error = %e, requests = spec.name, "Request consumer");
                            continue;
                        }
                    };
                    let (partition, offset) = (m.partition(), m.offset());
                    match serde_json::from_slice::<H::Request>(m.payload().unwrap_or_default()) {
                        Ok(request) => {
                            let id = handler.id(&request);
                            let once = format!("{}/{id}", spec.once_prefix);
                            let work = carry_out(
                                handler.clone(),
                                intake.clone(),
                                stop.clone(),
                                request,
                                (once.clone(), id.as_bytes().to_vec()),
                            );
                            in_hand.start(partition, offset, once, work);
                        }
                        Err(e) => {
                            // Nothing can be done from it; it is skipped, loudly.
                            metrics::counter!(spec.counter, "state" => "unreadable").increment(1);
                            tracing::error!(error = %e, requests = spec.name, partition, offset, "Unreadable request; skipped");
                            in_hand.skip(partition, offset);
                        }
                    }
                }
                _ = recheck.tick() => {
                    let want = if members.ready() { mine(members, partitions) } else { Vec::new() };
                    // Partitions move once what is in hand is done: no commit for a
                    // partition another instance reads.
                    moving = want != assigned;
                    if moving && idle {
                        let mut tpl = TopicPartitionList::new();
                        for p in &want {
                            tpl.add_partition_offset(topic, *p, Offset::Stored)?;
                        }
                        consumer.assign(&tpl)?;
                        tracing::info!(requests = spec.name, partitions = ?want, "Partitions of requests this instance carries out");
                        assigned = want;
                        moving = false;
                    }
                }
                () = stop.cancelled(), if !stop.is_cancelled() => {}
            }
        }
        Ok(())
    }
}

/// Carries one request out unless its once-key is recorded, then records its outcome
/// with that key. Returns whether it may be committed.
async fn carry_out<H: Handler>(
    handler: Arc<H>,
    intake: Arc<dyn Intake>,
    stop: CancellationToken,
    request: H::Request,
    (once, value): (String, Vec<u8>),
) -> bool {
    let already = intake
        .scan_once(&once)
        .await
        .map(|v| v.iter().any(|(k, _)| *k == once))
        .unwrap_or(false);
    if already {
        return true;
    }
    let Some(event) = handler.handle(request, &stop).await else {
        return false;
    };
    let submission = Submission {
        once: Some((once, value)),
        events: vec![event],
        ..Submission::default()
    };
    // The outcome must be durable before the offset moves; keep trying.
    loop {
        match intake.submit(submission.clone()).await {
            Ok(Receipt::Accepted | Receipt::Duplicate(_)) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot record a request's outcome yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return false,
                }
            }
        }
    }
}
