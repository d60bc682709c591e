//! The 30-minute clock of every urgent notice (Art. 15), run once across instances.
//!
//! Ownership is the notices topic's partition assignment in one consumer group
//! (`<kafka.group_prefix>-notice-clocks`): every instance joins; the instance assigned a
//! partition runs the clocks of the notices whose events are on it (a notice's events
//! all share its key, so its partition). Nothing is committed: on every assignment the
//! member reads its partitions from the beginning to learn which notices are there, and
//! the state of each (acknowledged? which steps were taken?) comes from the notice book
//! every instance keeps. When an owner dies the group coordinator hands its partitions
//! to another member after the session timeout (6 s), and that member picks the clocks
//! up where the events say they are.
//!
//! A step is written (durably, through the outbox) before it is acted on: an
//! escalation's `escalation_started` event and its duty-phone SMS request go in one
//! submission, so the SMS is requested exactly once (the request id is derived from the
//! notice and the step, and the SMS path is idempotent on it); then the linkage call is
//! placed and its outcome written. Event ids of steps are derived from the notice and
//! the step, so a step two owners both write (around a hand-over) is one step to every
//! reader.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{
    EscalationVia, LinkageCall, LinkageCallOutcome, LinkageDialer, NoticeChange, NoticeEvent,
    OutboundSms, SCHEMA_VERSION,
};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use routing::notices::{Due, derived_id, kind_zh, step_event};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::LinkageTarget;
use crate::notices::NoticeService;

/// How long an escalation SMS stays worth sending.
const SMS_VALID: Duration = Duration::from_secs(3600);
/// The longest the runner sleeps before it looks again.
const RECHECK: Duration = Duration::from_secs(1);

/// The notices this instance owns, by partition.
#[derive(Debug, Default)]
pub struct Owned {
    partitions: Mutex<HashMap<i32, HashSet<Uuid>>>,
    /// Woken when ownership or the owned set changes.
    pub changed: Notify,
}

impl Owned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, HashSet<Uuid>>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notices owned now.
    pub fn ids(&self) -> Vec<Uuid> {
        self.lock().values().flatten().copied().collect()
    }

    /// How many partitions this instance owns.
    pub fn partitions(&self) -> usize {
        self.lock().len()
    }
}

struct GroupContext {
    owned: Arc<Owned>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut owned = self.owned.lock();
                for e in tpl.elements() {
                    owned.entry(e.partition()).or_default();
                }
                tracing::info!(partitions = ?owned.keys().collect::<Vec<_>>(), "Notice clocks: partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let mut owned = self.owned.lock();
                for e in tpl.elements() {
                    owned.remove(&e.partition());
                }
                tracing::info!("Notice clocks: partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Notice clocks: rebalance error"),
        }
        self.owned.changed.notify_one();
    }
}

/// Joins the clock group and tracks which notices this instance owns, on its own
/// thread, until `stop`.
pub fn spawn_membership(
    props: Vec<(String, String)>,
    topic: String,
    group: String,
    owned: Arc<Owned>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("notice-clocks".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(250);
            while !stop.is_cancelled() {
                match membership(&props, &topic, &group, &owned, &stop) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "Notice clock group not joined yet; retrying");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
}

fn membership(
    props: &[(String, String)],
    topic: &str,
    group: &str,
    owned: &Arc<Owned>,
    stop: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in props {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer<GroupContext> = cfg
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A dead owner's notices move within seconds, not the default 45.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", "hotline-gateway-notice-clocks")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(GroupContext {
            owned: owned.clone(),
        })?;
    consumer.subscribe(&[topic])?;
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let id = std::str::from_utf8(m.key().unwrap_or_default())
                    .ok()
                    .and_then(|k| k.parse::<Uuid>().ok());
                if let Some(id) = id {
                    let fresh = owned.lock().get_mut(&m.partition()).is_some_and(|s| s.insert(id));
                    if fresh {
                        owned.changed.notify_one();
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "Notice clock group"),
        }
    }
    // Leave the group now, so the others take the partitions at once.
    consumer.unsubscribe();
    Ok(())
}

/// Runs the clocks of the owned notices.
pub struct Escalator {
    /// The notices.
    pub notices: Arc<NoticeService>,
    /// Which notices are ours.
    pub owned: Arc<Owned>,
    /// The linkage lines and duty phones, by target.
    pub targets: HashMap<String, LinkageTarget>,
    /// Places linkage calls (the phone channel), if there is one.
    pub dialer: Option<Arc<dyn LinkageDialer>>,
}

impl Escalator {
    /// Runs until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut calling: HashSet<(Uuid, u32)> = HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<(Uuid, u32)>(64);
        loop {
            let ids = self.owned.ids();
            let mut next: Option<chrono::DateTime<chrono::Utc>> = None;
            for id in ids {
                for due in self.notices.due(id) {
                    self.act(id, due, &mut calling, &done_tx).await;
                }
                if let Some(t) = self.notices.next_due(id) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            let clock = self.notices.clock();
            let wake_at = next.map_or(clock.now() + RECHECK, |n| n.min(clock.now() + RECHECK));
            tokio::select! {
                () = clock.sleep_until(wake_at) => {}
                () = self.owned.changed.notified() => {}
                Some(done) = done_rx.recv() => { calling.remove(&done); }
                () = stop.cancelled() => return,
            }
        }
    }

    async fn act(
        self: &Arc<Self>,
        id: Uuid,
        due: Due,
        calling: &mut HashSet<(Uuid, u32)>,
        done: &tokio::sync::mpsc::Sender<(Uuid, u32)>,
    ) {
        let Some((target, kind, ticket)) = self.notices.summary(id) else {
            return;
        };
        let now = self.notices.clock().now();
        match due {
            Due::Alarm => {
                tracing::error!(notice = %id, target, "URGENT NOTICE UNACKNOWLEDGED FOR 30 MINUTES (Art. 15)");
                metrics::counter!("gateway_notice_alarms_total", "target" => target.clone())
                    .increment(1);
                if let Err(e) = self.notices.write(step_event(id, due, Vec::new(), now)).await {
                    tracing::warn!(notice = %id, error = %e, "Cannot record the alarm yet; retrying");
                }
            }
            Due::Escalate(step) => {
                let line = self.targets.get(&target);
                let uri = line.and_then(|l| l.uri.clone()).filter(|_| self.dialer.is_some());
                let phone = line.and_then(|l| l.duty_phone.clone());
                let mut via = Vec::new();
                if uri.is_some() {
                    via.push(EscalationVia::Call);
                }
                if phone.is_some() {
                    via.push(EscalationVia::Sms);
                }
                let sms = phone.map(|to| {
                    OutboundSms {
                        schema_version: SCHEMA_VERSION,
                        id: derived_id(id, "sms", step),
                        requested_at: now,
                        expires_at: now + chrono::Duration::from_std(SMS_VALID).unwrap_or_default(),
                        purpose: "urgent_notice".into(),
                        reference: id.to_string(),
                        to,
                        text: format!(
                            "【12345紧急联动】{}（{}），工单{}，未确认已{}分钟。请立即在联动平台确认处置。",
                            kind_zh(&kind),
                            target,
                            ticket,
                            (now - self.notices.view(id).map_or(now, |v| v.detected_at)).num_minutes()
                        ),
                    }
                    .into()
                });
                let event = step_event(id, due, via.clone(), now);
                if let Err(e) = self.notices.write_with(event, sms.into_iter().collect()).await {
                    tracing::warn!(notice = %id, step, error = %e, "Cannot record the escalation yet; retrying");
                    return;
                }
                tracing::warn!(notice = %id, step, target, via = ?via, "Urgent notice escalated (unacknowledged)");
                metrics::counter!("gateway_notice_escalations_total", "target" => target.clone())
                    .increment(1);
                if let (Some(uri), Some(dialer)) = (uri, self.dialer.clone())
                    && calling.insert((id, step))
                {
                    let this = self.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        let outcome = dialer
                            .call(LinkageCall {
                                notice_id: id,
                                step,
                                uri,
                                ticket_ref: ticket,
                                kind,
                            })
                            .await;
                        this.record_call(id, step, &target, outcome).await;
                        let _ = done.send((id, step)).await;
                    });
                }
            }
        }
    }

    async fn record_call(&self, id: Uuid, step: u32, target: &str, outcome: LinkageCallOutcome) {
        let now = self.notices.clock().now();
        let call = NoticeEvent {
            schema_version: SCHEMA_VERSION,
            id: derived_id(id, "call", step),
            notice_id: id,
            at: now,
            by: format!("call:{target}"),
            change: NoticeChange::EscalationCall {
                step,
                outcome: outcome.as_str().to_owned(),
            },
        };
        if let Err(e) = self.notices.write(call).await {
            tracing::warn!(notice = %id, error = %e, "Cannot record the linkage call's outcome");
        }
        if outcome == LinkageCallOutcome::Acknowledged {
            let ack = routing::notices::ack_event(id, &format!("call:{target}"), "call", now);
            match self.notices.write(ack).await {
                Ok(()) => tracing::info!(notice = %id, target, "Urgent notice acknowledged on the linkage call"),
                Err(e) => tracing::warn!(notice = %id, error = %e, "Cannot record the acknowledgement"),
            }
        }
    }
}
