//! The 30-minute clock of every urgent notice (Art. 15), run once across instances.
//!
//! **Who runs a notice's clock.** Every instance announces itself on the members topic
//! (`kafka.members_topic`) every second and listens to the others; an instance not
//! heard from for [`MEMBER_TIMEOUT`] is gone. The owner of a notice is the live member
//! with the highest hash of (member, notice): rendezvous hashing, so every instance
//! computes the same owner from the same member list without talking, and when a member
//! dies only its notices move, each to one survivor, within [`MEMBER_TIMEOUT`]. A
//! stopping instance says it is leaving, and its notices move at once.
//!
//! (The notices topic's partition assignment in a consumer group would do the same on
//! Apache Kafka. On tansu 0.6, the development and test broker, a killed member's
//! partitions were never handed to the survivor in our test, so the clocks would stop
//! with their owner: the membership here needs nothing of the broker but a topic.)
//!
//! While the member lists of two instances differ (the second after one starts or
//! stops) both may take the same step. That is harmless by construction: a step is
//! written, durably through the outbox, before it is acted on, with an event id derived
//! from the notice and the step (readers keep one), and its duty-phone SMS request has
//! an id derived the same way (the SMS path is idempotent on it). Only a linkage call
//! could then be placed twice, which for an unacknowledged emergency errs the right way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::{
    EscalationVia, LinkageCall, LinkageCallOutcome, LinkageDialer, NoticeChange, NoticeEvent,
    OutboundSms, SCHEMA_VERSION,
};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use routing::notices::{Due, derived_id, kind_zh, step_event};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::LinkageTarget;
use crate::notices::NoticeService;

/// A linkage call begun this long ago without an outcome is placed again by whoever owns
/// the notice now (ringing, two plays of the notice and the BYE take well under it).
const CALL_REDO_AFTER: Duration = Duration::from_secs(120);
/// How long an escalation SMS stays worth sending.
const SMS_VALID: Duration = Duration::from_secs(3600);
/// The longest the runner sleeps before it looks again.
const RECHECK: Duration = Duration::from_secs(1);
/// How often a member says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A member not heard from for this long is gone.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(4);

/// What a member says on the members topic.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    member: String,
    #[serde(default)]
    leaving: bool,
}

/// The live gateway instances, as this one hears them.
#[derive(Debug)]
pub struct Members {
    /// This process: the instance name and a per-start id (two processes may share a
    /// name, and a restarted one is a new member).
    pub me: String,
    started: Instant,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Members {
    /// This process as a member.
    pub fn new(instance: &str) -> Arc<Self> {
        Arc::new(Members {
            me: format!("{instance}/{}", Uuid::new_v4()),
            started: Instant::now(),
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The members alive now, this one included, sorted.
    pub fn live(&self) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .seen()
            .iter()
            .filter(|(m, at)| **m != self.me && now.duration_since(**at) < MEMBER_TIMEOUT)
            .map(|(m, _)| m.clone())
            .collect();
        out.push(self.me.clone());
        out.sort();
        out
    }

    /// Whether the member list has been heard long enough to act on: a starting
    /// instance must not take every clock because it has heard nobody yet.
    pub fn ready(&self) -> bool {
        self.started.elapsed() >= MEMBER_TIMEOUT
    }

    /// Whether this instance runs `notice`'s clock.
    pub fn owns(&self, notice: Uuid) -> bool {
        self.ready() && owner(&self.live(), notice).is_some_and(|o| *o == self.me)
    }

    fn heard(&self, beat: Beat) {
        if beat.member == self.me {
            return;
        }
        if beat.leaving {
            self.seen().remove(&beat.member);
        } else {
            self.seen().insert(beat.member, Instant::now());
        }
    }
}

/// The owner of `notice` among `members`: the highest hash of (member, notice).
pub fn owner(members: &[String], notice: Uuid) -> Option<&String> {
    members.iter().max_by_key(|m| {
        let digest = Sha256::new()
            .chain_update(m.as_bytes())
            .chain_update(notice.as_bytes())
            .finalize();
        let mut top = [0u8; 8];
        top.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(top)
    })
}

/// Announces this member and listens to the others, on its own thread, until `stop`;
/// then says it is leaving.
pub fn spawn_membership(
    props: Vec<(String, String)>,
    topic: String,
    members: Arc<Members>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("members".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(250);
            while !stop.is_cancelled() {
                match membership(&props, &topic, &members, &stop) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "Members topic not reachable yet; retrying");
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
    members: &Members,
    stop: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in props {
        cfg.set(k, v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = cfg
        .clone()
        .set("linger.ms", "0")
        .set("message.timeout.ms", "3000")
        .set("client.id", "hotline-gateway-members")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create()?;
    let consumer: BaseConsumer = cfg
        .set("group.id", format!("members-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", "hotline-gateway-members")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create()?;
    let partitions = crate::topic_reader::partitions(&consumer, topic)?;
    // Only what is said from now on matters: liveness is recent by definition.
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let beat = |leaving: bool| {
        serde_json::to_vec(&Beat {
            member: members.me.clone(),
            leaving,
        })
        .unwrap_or_default()
    };
    let mut next_beat = Instant::now();
    while !stop.is_cancelled() {
        if Instant::now() >= next_beat {
            let payload = beat(false);
            let record = BaseRecord::to(topic).key(&members.me).payload(&payload);
            if let Err((e, _)) = producer.send(record) {
                tracing::debug!(error = %e, "Heartbeat not sent");
            }
            next_beat = Instant::now() + HEARTBEAT;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Ok(b) = serde_json::from_slice::<Beat>(m.payload().unwrap_or_default()) {
                    members.heard(b);
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "Members topic"),
            None => {}
        }
    }
    let payload = beat(true);
    let _ = producer.send(BaseRecord::to(topic).key(&members.me).payload(&payload));
    let _ = producer.flush(Duration::from_secs(1));
    Ok(())
}

/// Runs the clocks of the owned notices.
pub struct Escalator {
    /// The notices.
    pub notices: Arc<NoticeService>,
    /// Which instances are alive (and so which notices are ours).
    pub members: Arc<Members>,
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
            let ids = self.notices.unacknowledged();
            let ids: Vec<Uuid> = ids
                .into_iter()
                .filter(|id| self.members.owns(*id))
                .collect();
            let mut next: Option<chrono::DateTime<chrono::Utc>> = None;
            let redo_before = self.notices.clock().now()
                - chrono::Duration::from_std(CALL_REDO_AFTER).unwrap_or_default();
            for id in ids {
                for due in self.notices.due(id) {
                    self.act(id, due, &mut calling, &done_tx).await;
                }
                for step in self.notices.unfinished_calls(id, redo_before) {
                    if !calling.contains(&(id, step)) {
                        tracing::warn!(notice = %id, step, "A linkage call has no outcome (its owner stopped?); calling again");
                        self.call(id, step, &mut calling, &done_tx);
                    }
                }
                if let Some(t) = self.notices.next_due(id) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            let clock = self.notices.clock();
            let wake_at = next.map_or(clock.now() + RECHECK, |n| n.min(clock.now() + RECHECK));
            tokio::select! {
                () = clock.sleep_until(wake_at) => {}
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
                if let Err(e) = self
                    .notices
                    .write(step_event(id, due, Vec::new(), now))
                    .await
                {
                    tracing::warn!(notice = %id, error = %e, "Cannot record the alarm yet; retrying");
                }
            }
            Due::Escalate(step) => {
                let line = self.targets.get(&target);
                let uri = line
                    .and_then(|l| l.uri.clone())
                    .filter(|_| self.dialer.is_some());
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
                if let Err(e) = self
                    .notices
                    .write_with(event, sms.into_iter().collect())
                    .await
                {
                    tracing::warn!(notice = %id, step, error = %e, "Cannot record the escalation yet; retrying");
                    return;
                }
                tracing::warn!(notice = %id, step, target, via = ?via, "Urgent notice escalated (unacknowledged)");
                metrics::counter!("gateway_notice_escalations_total", "target" => target.clone())
                    .increment(1);
                if uri.is_some() {
                    self.call(id, step, calling, done);
                }
            }
        }
    }

    /// Places step `step`'s linkage call, unless it is being placed already; its outcome
    /// (and an acknowledgement by 1) is written when it ends.
    fn call(
        self: &Arc<Self>,
        id: Uuid,
        step: u32,
        calling: &mut HashSet<(Uuid, u32)>,
        done: &tokio::sync::mpsc::Sender<(Uuid, u32)>,
    ) {
        let Some((target, kind, ticket)) = self.notices.summary(id) else {
            return;
        };
        let uri = self.targets.get(&target).and_then(|l| l.uri.clone());
        let (Some(uri), Some(dialer)) = (uri, self.dialer.clone()) else {
            return;
        };
        if !calling.insert((id, step)) {
            return;
        }
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
                Ok(()) => {
                    tracing::info!(notice = %id, target, "Urgent notice acknowledged on the linkage call")
                }
                Err(e) => {
                    tracing::warn!(notice = %id, error = %e, "Cannot record the acknowledgement")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instance computes the same owner; when a member goes, only its notices
    /// move, and they spread over the survivors.
    #[test]
    fn rendezvous_ownership_moves_only_the_dead_members_notices() {
        let members: Vec<String> = ["gw-a/1", "gw-b/2", "gw-c/3"].map(String::from).to_vec();
        let notices: Vec<Uuid> = (0..3000u128).map(Uuid::from_u128).collect();
        let before: Vec<&String> = notices
            .iter()
            .map(|n| owner(&members, *n).expect("members"))
            .collect();
        for m in &members {
            let share = before.iter().filter(|o| **o == m).count();
            assert!((800..1200).contains(&share), "{m} owns {share} of 3000");
        }
        let survivors: Vec<String> = members[..2].to_vec();
        let mut moved = 0;
        for (n, was) in notices.iter().zip(&before) {
            let now = owner(&survivors, *n).expect("survivors");
            if *was == &members[2] {
                moved += 1;
            } else {
                assert_eq!(now, *was, "a survivor's notice stays");
            }
        }
        assert!(moved > 0);
        let mut reversed = members.clone();
        reversed.reverse();
        assert!(
            notices
                .iter()
                .all(|n| owner(&members, *n) == owner(&reversed, *n))
        );
    }

    #[test]
    fn a_starting_member_owns_nothing_until_it_has_heard_the_others() {
        let m = Members::new("gw");
        assert!(!m.ready());
        assert!(!m.owns(Uuid::from_u128(1)));
        assert_eq!(m.live(), vec![m.me.clone()]);
        m.heard(Beat {
            member: "gw/other".into(),
            leaving: false,
        });
        assert_eq!(m.live().len(), 2);
        m.heard(Beat {
            member: "gw/other".into(),
            leaving: true,
        });
        assert_eq!(m.live().len(), 1, "a leaving member is gone at once");
    }
}
