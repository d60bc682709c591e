//! The follow-up after closure against a real PostgreSQL, with an injected clock: the
//! result SMS (Art. 13), the survey, its replies and its 24-hour default (Art. 16),
//! revisits, redo and appeals (Art. 17), and the statistics of a month with holidays
//! (Art. 18). Two stores on one database stand for two service instances.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use contract::{
    Event, OutboundSms, Rating, RevisitCall, RevisitCallOutcome, RevisitResult, TicketKind,
};
use e2e::postgres::Postgres;
use e2e::tickets::{bj, draft, sms_contact};
use tickets::calendar::Calendar;
use tickets::followup::{Params, RevisitMode};
use tickets::repeat::RepeatParams;
use tickets::rules::{Command, Reply, Role};
use tickets::store::followup::AgentRevisit;
use tickets::store::{CommandError, Incoming, OutTopics, Store};
use tickets::units::Units;
use uuid::Uuid;

const GROUP: &str = "ticket-service";
const CONTACTS: &str = "hotline.contacts.v1";
const DRAFTS: &str = "hotline.ticket-drafts.v1";
const UNIT: &str = "xiangzhou";

async fn store(pg: &Postgres, mode: RevisitMode) -> Store {
    Store::connect(
        pg.url().parse().expect("url"),
        4,
        Arc::new(Calendar::builtin()),
        Arc::new(Units::builtin()),
        Arc::new(RepeatParams::builtin()),
        OutTopics::default(),
        "/tickets/test".into(),
    )
    .await
    .expect("store")
    .with_followup(Params {
        revisit_mode: mode,
        ..Params::default()
    })
}

/// Offsets per topic, as a partition would give them.
#[derive(Default)]
struct Feed {
    contacts: i64,
    drafts: i64,
    results: i64,
    statuses: i64,
    chat: i64,
}

impl Feed {
    async fn apply(&mut self, s: &Store, event: Event) {
        let r = event.to_record("/gateway/test/sms").expect("record");
        let (topic, offset) = match r.event_type {
            contract::EventType::Contact => (CONTACTS, &mut self.contacts),
            contract::EventType::TicketDraft => (DRAFTS, &mut self.drafts),
            contract::EventType::RevisitResult => ("hotline.revisit-results.v1", &mut self.results),
            contract::EventType::SmsStatus => ("hotline.sms-status.v1", &mut self.statuses),
            contract::EventType::ChatOutboundStatus => ("hotline.chat-status.v1", &mut self.chat),
            other => panic!("no topic for {other:?}"),
        };
        let rec = Incoming {
            topic: topic.into(),
            partition: 0,
            offset: *offset,
            key: Some(r.key.into_bytes()),
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            payload: Some(r.payload),
        };
        *offset += 1;
        let a = s
            .apply_batch(GROUP, CONTACTS, DRAFTS, &[rec], false)
            .await
            .expect("applied");
        assert_eq!(a.dead, 0, "no dead letter");
    }

    /// An SMS from `number` (its contact and its draft).
    async fn sms(
        &mut self,
        s: &Store,
        key: &str,
        number: &str,
        text: &str,
        kind: TicketKind,
        at: DateTime<Utc>,
    ) -> String {
        let mut d = draft(key, text, kind, at);
        let c = sms_contact(key, number, &d.ticket_ref, text, at);
        d.contacts = vec![c.id];
        let r = d.ticket_ref.to_string();
        self.apply(s, c.into()).await;
        self.apply(s, d.into()).await;
        r
    }
}

fn agent() -> Role {
    Role::Agent("a1".into())
}
fn unit() -> Role {
    Role::Unit {
        unit: UNIT.into(),
        person: "p1".into(),
    }
}
fn supervisor() -> Role {
    Role::Supervisor("s1".into())
}

fn reply() -> Command {
    Command::Reply(Reply {
        handled_at: "2026-12-03".into(),
        process: "现场查看并更换灯泡".into(),
        result: "路灯已修复".into(),
        legal_basis: "《珠海市城市照明管理办法》".into(),
    })
}

/// Dispatches, accepts, replies and closes `r` from `at` on (Beijing days).
async fn resolve(s: &Store, r: &str, day: &str) {
    for (role, c, t) in [
        (
            agent(),
            Command::Dispatch {
                lead: UNIT.into(),
                co_units: vec![],
            },
            "09:00",
        ),
        (unit(), Command::Accept, "10:00"),
        (unit(), reply(), "11:00"),
        (
            agent(),
            Command::DecideReply {
                accept: true,
                note: String::new(),
            },
            "12:00",
        ),
    ] {
        s.command(r, &role, &c, bj(&format!("{day}T{t}:00")))
            .await
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    }
}

async fn texts(s: &Store) -> Vec<(String, OutboundSms)> {
    s.pending(10_000)
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.topic == "hotline.sms-outbound.v1")
        .map(|r| {
            (
                r.key,
                serde_json::from_slice(&r.payload).expect("an SMS request"),
            )
        })
        .collect()
}

async fn calls(s: &Store) -> Vec<RevisitCall> {
    s.pending(10_000)
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.topic == "hotline.revisit-calls.v1")
        .map(|r| serde_json::from_slice(&r.payload).expect("a call request"))
        .collect()
}

async fn actions(s: &Store, r: &str) -> Vec<String> {
    s.history(r)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.action)
        .collect()
}

fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql(sql).expect("psql").parse().expect("a count")
}

/// The gateway's report on a text.
fn sms_status(sms: &OutboundSms, state: contract::SmsState, at: DateTime<Utc>) -> Event {
    contract::SmsStatus {
        schema_version: contract::SCHEMA_VERSION,
        id: Uuid::now_v7(),
        request_id: sms.id,
        purpose: sms.purpose.clone(),
        reference: sms.reference.clone(),
        at,
        state,
        carrier: "test".into(),
        carrier_message_id: None,
        attempts: 1,
        reason: (state == contract::SmsState::Failed)
            .then(|| "carrier refused (400): bad number".into()),
    }
    .into()
}

fn result(
    call: &RevisitCall,
    outcome: RevisitCallOutcome,
    rating: Option<Rating>,
    at: DateTime<Utc>,
) -> Event {
    RevisitResult {
        schema_version: contract::SCHEMA_VERSION,
        id: Uuid::now_v7(),
        request_id: call.id,
        ticket_ref: call.ticket_ref.clone(),
        attempt: call.attempt,
        at,
        outcome,
        rating,
    }
    .into()
}

#[tokio::test]
async fn art13_art16_art17_result_sms_survey_reply_and_revisit_by_call() {
    let pg = Postgres::start().expect("postgres");
    let (a, b) = (
        store(&pg, RevisitMode::Call).await,
        store(&pg, RevisitMode::Call).await,
    );
    let mut feed = Feed::default();
    let number = "13800138000";
    let r = feed
        .sms(
            &a,
            "k-1",
            number,
            "凤凰路路灯坏了三天了",
            TicketKind::Complaint,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r, "2026-12-01").await;

    // Art. 13 then Art. 16: the result, then the survey, keyed by the ticket (one
    // partition: sent in that order), to the number the citizen wrote from.
    let out = texts(&a).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.purpose, "result");
    assert_eq!(out[1].1.purpose, "survey");
    for (key, sms) in &out {
        assert_eq!(key, &r, "keyed by the ticket, never the number");
        assert_eq!(sms.to, number);
        assert!(sms.text.contains(&r), "{}", sms.text);
    }
    assert!(out[0].1.text.contains("路灯已修复"), "{}", out[0].1.text);
    // Within 1 working day: Tuesday's reply expires at the end of Wednesday.
    assert_eq!(out[0].1.expires_at, bj("2026-12-02T23:59:59"));
    let h = actions(&a, &r).await;
    assert!(
        h.ends_with(&[
            "reply_accepted".into(),
            "result_notified".into(),
            "survey_sent".into()
        ]),
        "{h:?}"
    );

    // The citizen answers "4": dissatisfied; no ticket is made of it; a revisit opens.
    let reply_ref = feed
        .sms(
            &a,
            "k-1",
            number,
            "4",
            TicketKind::Unknown,
            bj("2026-12-01T13:00:00"),
        )
        .await;
    assert!(
        a.ticket(&reply_ref).await.expect("read").is_none(),
        "a reply is not a ticket"
    );
    let t = a.ticket(&r).await.expect("read").expect("ticket");
    assert_eq!(t.rating.as_deref(), Some("dissatisfied"));
    let f = a.followup_of(&r).await.expect("followup");
    assert_eq!(f.surveys[0].rating_source.as_deref(), Some("sms_reply"));
    assert_eq!(f.replies.len(), 1);
    assert_eq!(f.revisits.len(), 1);
    assert_eq!(f.revisits[0].state, "open");

    // The revisit call: both instances run the clocks at once; one request.
    let now = bj("2026-12-01T13:00:01");
    let (x, y) = tokio::join!(a.run_due_jobs(now, 100), b.run_due_jobs(now, 100));
    assert_eq!(
        x.expect("a") + y.expect("b"),
        1,
        "the call clock fires once"
    );
    let c = calls(&a).await;
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].attempt, c[0].to.as_str()), (1, number));

    // No answer: a failed attempt; the next call comes after the retry gap (2 hours).
    feed.apply(
        &a,
        result(
            &c[0],
            RevisitCallOutcome::NoAnswer,
            None,
            bj("2026-12-01T13:01:00"),
        ),
    )
    .await;
    // The same result delivered again changes nothing.
    feed.apply(
        &a,
        result(
            &c[0],
            RevisitCallOutcome::NoAnswer,
            None,
            bj("2026-12-01T13:01:00"),
        ),
    )
    .await;
    assert_eq!(a.followup_of(&r).await.expect("f").revisits[0].attempts, 1);
    a.run_due_jobs(bj("2026-12-01T15:00:00"), 100)
        .await
        .expect("jobs");
    assert_eq!(calls(&a).await.len(), 1, "not before the gap");
    a.run_due_jobs(bj("2026-12-01T15:01:01"), 100)
        .await
        .expect("jobs");
    let c = calls(&a).await;
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].attempt, 2);

    // The citizen presses 2: satisfied, the revisit is done and its rating counts.
    feed.apply(
        &a,
        result(
            &c[1],
            RevisitCallOutcome::Rated,
            Some(Rating::Satisfied),
            bj("2026-12-01T15:02:00"),
        ),
    )
    .await;
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(f.revisits[0].state, "done");
    assert_eq!(f.surveys[0].rating.as_deref(), Some("satisfied"));
    assert_eq!(f.surveys[0].rating_source.as_deref(), Some("revisit_call"));
    assert_eq!(
        a.ticket(&r)
            .await
            .expect("read")
            .expect("t")
            .rating
            .as_deref(),
        Some("satisfied")
    );
    // Its timeout, due later, finds nothing to do.
    a.run_due_jobs(bj("2026-12-01T18:00:00"), 100)
        .await
        .expect("jobs");
    assert_eq!(a.followup_of(&r).await.expect("f").revisits[0].attempts, 2);
    // The survey was answered before its text was reported sent: no 24-hour clock was
    // ever armed, and a late report arms none.
    let survey = texts(&a)
        .await
        .into_iter()
        .find(|(_, t)| t.purpose == "survey")
        .expect("survey")
        .1;
    feed.apply(
        &a,
        sms_status(&survey, contract::SmsState::Sent, bj("2026-12-01T13:30:00")),
    )
    .await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM jobs WHERE done_at IS NULL"),
        0
    );
    assert_eq!(
        a.ticket(&r)
            .await
            .expect("read")
            .expect("t")
            .rating
            .as_deref(),
        Some("satisfied")
    );
}

#[tokio::test]
async fn art16_no_reply_in_24_hours_counts_as_satisfied_once() {
    let pg = Postgres::start().expect("postgres");
    let (a, b) = (
        store(&pg, RevisitMode::Call).await,
        store(&pg, RevisitMode::Call).await,
    );
    let mut feed = Feed::default();
    let r = feed
        .sms(
            &a,
            "k-2",
            "13900139000",
            "小区门口垃圾没人清理",
            TicketKind::Complaint,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r, "2026-12-01").await;
    // Closed at 12:00; the survey's text is reported sent at 12:10 (the carrier was slow):
    // the 24 hours count from then. A day after the closure nothing happens.
    a.run_due_jobs(bj("2026-12-02T12:05:00"), 100)
        .await
        .expect("jobs");
    let survey = texts(&a)
        .await
        .into_iter()
        .find(|(_, t)| t.purpose == "survey")
        .expect("survey")
        .1;
    feed.apply(
        &a,
        sms_status(&survey, contract::SmsState::Sent, bj("2026-12-01T12:10:00")),
    )
    .await;
    // Reported twice (a redelivery): one clock.
    feed.apply(
        &a,
        sms_status(&survey, contract::SmsState::Sent, bj("2026-12-01T12:10:00")),
    )
    .await;
    a.run_due_jobs(bj("2026-12-02T12:09:00"), 100)
        .await
        .expect("jobs");
    assert_eq!(a.ticket(&r).await.expect("r").expect("t").rating, None);
    assert_eq!(
        a.followup_of(&r).await.expect("f").surveys[0].state,
        "waiting"
    );
    let now = bj("2026-12-02T12:10:00");
    let (x, y) = tokio::join!(a.run_due_jobs(now, 100), b.run_due_jobs(now, 100));
    assert_eq!(x.expect("a") + y.expect("b"), 1);
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(f.surveys[0].state, "defaulted");
    assert_eq!(f.surveys[0].rating.as_deref(), Some("satisfied"));
    assert!(f.revisits.is_empty());
    let rated = actions(&a, &r)
        .await
        .iter()
        .filter(|x| *x == "rated")
        .count();
    assert_eq!(rated, 1, "one rating event however many instances");
    // A survey whose text could not be delivered never defaults.
    let r3 = feed
        .sms(
            &a,
            "k-2b",
            "13900139001",
            "楼道灯坏了",
            TicketKind::Complaint,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r3, "2026-12-01").await;
    let survey = texts(&a)
        .await
        .into_iter()
        .find(|(k, t)| k == &r3 && t.purpose == "survey")
        .expect("survey")
        .1;
    feed.apply(
        &a,
        sms_status(
            &survey,
            contract::SmsState::Failed,
            bj("2026-12-01T12:01:00"),
        ),
    )
    .await;
    a.run_due_jobs(bj("2026-12-09T12:00:00"), 100)
        .await
        .expect("jobs");
    let f = a.followup_of(&r3).await.expect("f");
    assert_eq!(f.surveys[0].state, "undelivered");
    assert_eq!(a.ticket(&r3).await.expect("r").expect("t").rating, None);
    // A late "5" answers no survey: kept, unmatched, no ticket, the rating stands.
    let late = feed
        .sms(
            &a,
            "k-2",
            "13900139000",
            "5",
            TicketKind::Unknown,
            bj("2026-12-02T13:00:00"),
        )
        .await;
    assert!(a.ticket(&late).await.expect("r").is_none());
    assert_eq!(a.unmatched_replies(10).await.expect("u").len(), 1);
    assert_eq!(
        a.ticket(&r).await.expect("r").expect("t").rating.as_deref(),
        Some("satisfied")
    );
}

#[tokio::test]
async fn art16_unclear_replies_praise_and_numbers_without_a_survey() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, RevisitMode::Agent).await;
    let mut feed = Feed::default();
    let number = "13700137000";
    let r = feed
        .sms(
            &a,
            "k-3",
            number,
            "路面塌陷请处理",
            TicketKind::Report,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r, "2026-12-01").await;
    assert_eq!(texts(&a).await.len(), 2);
    // Unclear: kept, one clarifying SMS; a second unclear reply gets none.
    let u1 = feed
        .sms(
            &a,
            "k-3",
            number,
            "好的",
            TicketKind::Unknown,
            bj("2026-12-01T13:00:00"),
        )
        .await;
    let u2 = feed
        .sms(
            &a,
            "k-3",
            number,
            "7",
            TicketKind::Unknown,
            bj("2026-12-01T13:05:00"),
        )
        .await;
    for u in [&u1, &u2] {
        assert!(
            a.ticket(u).await.expect("r").is_none(),
            "an unclear reply is not a ticket"
        );
    }
    let out = texts(&a).await;
    assert_eq!(out.len(), 3, "one clarifying SMS: {out:?}");
    assert_eq!(out[2].1.purpose, "survey_clarify");
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(
        f.replies.iter().filter(|x| x.outcome == "unclear").count(),
        2
    );
    assert_eq!(
        f.surveys[0].state, "asked",
        "the gateway has not reported it sent"
    );
    // A new request from the same number while the survey waits is a ticket.
    let new = feed
        .sms(
            &a,
            "k-3",
            number,
            "另外我们小区的电梯已经坏了一个星期了，物业一直不修",
            TicketKind::Complaint,
            bj("2026-12-01T13:10:00"),
        )
        .await;
    assert!(a.ticket(&new).await.expect("r").is_some());
    // Then "非常不满意": rated; in agent mode the revisit waits in the task list.
    feed.sms(
        &a,
        "k-3",
        number,
        "非常不满意",
        TicketKind::Unknown,
        bj("2026-12-01T13:20:00"),
    )
    .await;
    let open = a.revisits("open", None, 10).await.expect("revisits");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].mode, "agent");
    assert!(calls(&a).await.is_empty(), "agents call in agent mode");
    // Three failed attempts end it (Art. 17).
    let miss = AgentRevisit {
        reached: false,
        rating: None,
        note: "无人接听".into(),
    };
    for (i, at) in [
        "2026-12-02T09:00:00",
        "2026-12-02T11:00:00",
        "2026-12-02T15:00:00",
    ]
    .into_iter()
    .enumerate()
    {
        let v = a
            .revisit_by_agent(&r, &agent(), &miss, bj(at))
            .await
            .expect("attempt");
        assert_eq!(v.attempts, i as i32 + 1);
    }
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(
        (
            f.revisits[0].state.as_str(),
            f.revisits[0].outcome.as_deref()
        ),
        ("ended", Some("unreachable"))
    );
    assert!(matches!(
        a.revisit_by_agent(&r, &agent(), &miss, bj("2026-12-02T13:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "no-open-revisit"
    ));
    // A unit cannot revisit; a bad rating digit is refused.
    assert!(matches!(
        a.revisit_by_agent(&r, &unit(), &miss, bj("2026-12-02T13:00:00")).await,
        Err(CommandError::Refused(x)) if x.status == 403
    ));

    // Praise: no survey, and a "1" from its author answers nothing (unmatched).
    let p = feed
        .sms(
            &a,
            "k-4",
            "13600136000",
            "感谢环卫工人",
            TicketKind::Praise,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &p, "2026-12-01").await;
    assert!(a.followup_of(&p).await.expect("f").surveys.is_empty());
    assert!(!actions(&a, &p).await.contains(&"survey_sent".to_owned()));
    let before = a.unmatched_replies(10).await.expect("u").len();
    let one = feed
        .sms(
            &a,
            "k-4",
            "13600136000",
            "1",
            TicketKind::Unknown,
            bj("2026-12-01T13:00:00"),
        )
        .await;
    assert!(a.ticket(&one).await.expect("r").is_none());
    assert_eq!(a.unmatched_replies(10).await.expect("u").len(), before + 1);
    // The rated ticket's survey is untouched by the praise author's reply.
    assert_eq!(a.ticket(&p).await.expect("r").expect("t").rating, None);
}

#[tokio::test]
async fn art17_redo_second_rating_counts_and_appeals() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, RevisitMode::Agent).await;
    let mut feed = Feed::default();
    let number = "13500135000";
    let r = feed
        .sms(
            &a,
            "k-5",
            number,
            "噪音扰民",
            TicketKind::Complaint,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r, "2026-12-01").await;
    // No redo of a ticket not rated dissatisfied.
    let redo = Command::Redo("群众要求重办".into());
    assert!(matches!(
        a.command(&r, &agent(), &redo, bj("2026-12-01T12:30:00")).await,
        Err(CommandError::Refused(x)) if x.code == "not-dissatisfied"
    ));
    feed.sms(
        &a,
        "k-5",
        number,
        "5",
        TicketKind::Unknown,
        bj("2026-12-01T13:00:00"),
    )
    .await;

    // The unit appeals within 3 working days; only once; a supervisor decides.
    assert!(matches!(
        a.appeal(&r, &agent(), "证据", bj("2026-12-02T09:00:00")).await,
        Err(CommandError::Refused(x)) if x.status == 403
    ));
    let ap = a
        .appeal(
            &r,
            &unit(),
            "已按规定处理，附现场照片",
            bj("2026-12-04T09:00:00"),
        )
        .await
        .expect("appeal within 3 working days");
    assert_eq!(ap.state, "pending");
    assert!(matches!(
        a.appeal(&r, &unit(), "再次申诉", bj("2026-12-04T10:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "appealed-already"
    ));
    assert!(matches!(
        a.decide_appeal(&r, &agent(), true, "ok", bj("2026-12-04T11:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "supervisor-only"
    ));
    let d = a
        .decide_appeal(
            &r,
            &supervisor(),
            true,
            "依据充分",
            bj("2026-12-04T11:00:00"),
        )
        .await
        .expect("decided");
    assert_eq!(d.state, "upheld");
    assert!(a.ticket(&r).await.expect("r").expect("t").rating_appealed);

    // The citizen asks for a redo: half the deadline (5 working days), no extension.
    let t = a
        .command(&r, &agent(), &redo, bj("2026-12-07T09:00:00"))
        .await
        .expect("redo");
    assert_eq!(t.state, "handling");
    assert_eq!(t.handling_days, Some(5));
    assert_eq!(t.handling_due, Some("2026-12-14".parse().expect("date")));
    assert!(matches!(
        a.command(&r, &unit(), &Command::Extend("需要协调".into()), bj("2026-12-08T09:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "redo-not-extended"
    ));
    assert_eq!(
        a.revisits("open", None, 10).await.expect("r").len(),
        0,
        "the redo closes the revisit"
    );
    for (role, c, at) in [
        (unit(), reply(), "2026-12-09T10:00:00"),
        (
            agent(),
            Command::DecideReply {
                accept: true,
                note: String::new(),
            },
            "2026-12-09T11:00:00",
        ),
    ] {
        a.command(&r, &role, &c, bj(at))
            .await
            .expect("handled again");
    }
    // Round 2 of the survey: its rating is the one that counts.
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(f.surveys.len(), 2);
    assert_eq!(f.surveys[1].round, 2);
    feed.sms(
        &a,
        "k-5",
        number,
        "3",
        TicketKind::Unknown,
        bj("2026-12-09T12:00:00"),
    )
    .await;
    let t = a.ticket(&r).await.expect("r").expect("t");
    assert_eq!(t.rating.as_deref(), Some("basically_satisfied"));
    assert!(!t.rating_appealed, "the appeal was of the first rating");
    // Once only.
    assert!(matches!(
        a.command(&r, &agent(), &redo, bj("2026-12-10T09:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "redone-already"
    ));

    // A late appeal: rated Tuesday 1 December, the window closed Friday 4 December.
    let r2 = feed
        .sms(
            &a,
            "k-6",
            "13400134000",
            "占道经营",
            TicketKind::Complaint,
            bj("2026-12-01T08:00:00"),
        )
        .await;
    resolve(&a, &r2, "2026-12-01").await;
    feed.sms(
        &a,
        "k-6",
        "13400134000",
        "4",
        TicketKind::Unknown,
        bj("2026-12-01T13:00:00"),
    )
    .await;
    assert!(matches!(
        a.appeal(&r2, &unit(), "证据", bj("2026-12-07T09:00:00")).await,
        Err(CommandError::Refused(x)) if x.code == "appeal-window-closed"
    ));
}

#[tokio::test]
async fn art18_statistics_of_a_month_with_holidays() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, RevisitMode::Agent).await;
    let mut feed = Feed::default();
    // Received 30 September 23:30 Beijing: September's, not October's.
    feed.sms(
        &a,
        "k-s0",
        "13000000000",
        "九月的事",
        TicketKind::Help,
        bj("2026-09-30T23:30:00"),
    )
    .await;
    // Received on the National Day holiday (1 October): dispatch is due on the first
    // working day after it, Thursday 8 October; dispatched then, it is on time.
    let on_time = feed
        .sms(
            &a,
            "k-s1",
            "13000000001",
            "国庆期间水管爆裂",
            TicketKind::Help,
            bj("2026-10-01T10:00:00"),
        )
        .await;
    a.command(
        &on_time,
        &agent(),
        &Command::Dispatch {
            lead: UNIT.into(),
            co_units: vec![],
        },
        bj("2026-10-08T17:00:00"),
    )
    .await
    .expect("dispatch");
    a.command(
        &on_time,
        &unit(),
        &Command::Accept,
        bj("2026-10-09T09:00:00"),
    )
    .await
    .expect("accept");
    // Handling: 10 working days counted from 9 October, the 10th a make-up working day:
    // due 21 October. Replied on the make-up Saturday: on time.
    let t = a.ticket(&on_time).await.expect("r").expect("t");
    assert_eq!(t.handling_due, Some("2026-10-21".parse().expect("date")));
    a.command(&on_time, &unit(), &reply(), bj("2026-10-10T10:00:00"))
        .await
        .expect("reply");
    a.command(
        &on_time,
        &agent(),
        &Command::DecideReply {
            accept: true,
            note: String::new(),
        },
        bj("2026-10-10T11:00:00"),
    )
    .await
    .expect("close");
    feed.sms(
        &a,
        "k-s1",
        "13000000001",
        "1",
        TicketKind::Unknown,
        bj("2026-10-10T12:00:00"),
    )
    .await;
    // Received Friday 9 October, dispatched Monday 12 October: late (due the 10th, the
    // make-up Saturday), replied late with a red card on the way.
    let late = feed
        .sms(
            &a,
            "k-s2",
            "13000000002",
            "路灯不亮",
            TicketKind::Complaint,
            bj("2026-10-09T10:00:00"),
        )
        .await;
    a.sweep_cards(bj("2026-10-10T09:00:00"))
        .await
        .expect("sweep");
    a.sweep_cards(bj("2026-10-11T09:00:00"))
        .await
        .expect("sweep");
    a.command(
        &late,
        &agent(),
        &Command::Dispatch {
            lead: "doumen".into(),
            co_units: vec![],
        },
        bj("2026-10-12T09:00:00"),
    )
    .await
    .expect("dispatch");
    // An urge.
    feed.sms(
        &a,
        "k-s2",
        "13000000002",
        "路灯不亮，催一下",
        TicketKind::Complaint,
        bj("2026-10-12T10:00:00"),
    )
    .await;
    // A chat ticket not dispatched yet (the centre's only).
    let mut chat = draft(
        "k-s3",
        "咨询社保",
        TicketKind::Consultation,
        bj("2026-10-20T10:00:00"),
    );
    chat.channel = contract::ChannelKind::Chat;
    feed.apply(&a, chat.into()).await;

    let report = tickets::stats::report(
        a.pool(),
        tickets::stats::Period::parse("2026-10").expect("p"),
        None,
    )
    .await
    .expect("report");
    let c = &report.centre;
    assert_eq!(c.received, 3, "{report:#?}");
    assert_eq!(c.by_channel["sms"], 2);
    assert_eq!(c.by_channel["chat"], 1);
    assert_eq!(c.by_kind["help"], 1);
    assert_eq!(c.dispatched, 2);
    assert_eq!(c.dispatched_on_time, 1);
    assert_eq!((c.replied, c.handled_on_time), (1, 1));
    assert_eq!(c.yellow_cards, 1, "the late one's due day");
    assert_eq!(c.red_cards, 1);
    assert_eq!(c.urges, 1);
    assert_eq!((c.rated, c.satisfied), (1, 1));
    assert_eq!(c.satisfaction_rate, Some(1.0));
    let units: Vec<&str> = report.units.iter().map(|u| u.unit.as_str()).collect();
    assert_eq!(units, ["doumen", UNIT]);
    assert_eq!(report.units[1].handled_on_time, 1);
    assert_eq!(report.units[0].urges, 1);
    // One unit asked for: its figures only.
    let one = tickets::stats::report(
        a.pool(),
        tickets::stats::Period::parse("2026-Q4").expect("p"),
        Some("doumen"),
    )
    .await
    .expect("report");
    assert_eq!(
        (one.centre.unit.as_str(), one.centre.received),
        ("doumen", 1)
    );
    assert!(one.units.is_empty());
    // The late ticket's cards were the centre's own (before dispatch), not doumen's.
    assert_eq!((one.centre.yellow_cards, one.centre.red_cards), (0, 0));
    let csv = tickets::stats::csv(&report);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // September has its own ticket.
    let sep = tickets::stats::report(
        a.pool(),
        tickets::stats::Period::parse("2026-09").expect("p"),
        None,
    )
    .await
    .expect("report");
    assert_eq!(sep.centre.received, 1);
}

/// A chat ticket from a session with (or without) a phone given.
async fn chat_ticket(
    feed: &mut Feed,
    s: &Store,
    key: &str,
    phone: Option<&str>,
    text: &str,
) -> String {
    let at = bj("2026-12-01T08:00:00");
    let mut d = draft(key, text, TicketKind::Complaint, at);
    d.channel = contract::ChannelKind::Chat;
    let mut c = sms_contact(key, phone.unwrap_or("0"), &d.ticket_ref, text, at);
    c.channel = contract::ChannelKind::Chat;
    c.reply_paths = vec![contract::ReplyPath::ChatSession {
        session_id: Uuid::now_v7(),
    }];
    match phone {
        Some(p) => c
            .reply_paths
            .push(contract::ReplyPath::Sms { number: p.into() }),
        None => {
            c.citizen.kind = contract::IdentityKind::ChatVisitor;
            c.citizen.value = format!("visitor-{key}");
        }
    }
    d.contacts = vec![c.id];
    let r = d.ticket_ref.to_string();
    feed.apply(s, c.into()).await;
    feed.apply(s, d.into()).await;
    r
}

fn chat_reply(key: &str, ticket_ref: &str, text: &str, at: DateTime<Utc>) -> Event {
    let mut c = sms_contact(key, "0", &contract::TicketRef::generate(at), text, at);
    c.channel = contract::ChannelKind::Chat;
    c.citizen.kind = contract::IdentityKind::ChatVisitor;
    c.content = contract::ContactContent::SurveyReply {
        ticket_ref: contract::TicketRef(ticket_ref.into()),
        text: text.into(),
    };
    c.into()
}

async fn chat_messages(s: &Store) -> Vec<contract::ChatOutbound> {
    s.pending(10_000)
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.topic == "hotline.chat-outbound.v1")
        .map(|r| serde_json::from_slice(&r.payload).expect("a chat message"))
        .collect()
}

fn delivery(m: &contract::ChatOutbound, state: contract::ChatDelivery, at: DateTime<Utc>) -> Event {
    contract::ChatOutboundStatus {
        schema_version: contract::SCHEMA_VERSION,
        id: Uuid::now_v7(),
        request_id: m.id,
        reference: m.reference.clone(),
        purpose: m.purpose.clone(),
        at,
        state,
        sessions: u32::from(state == contract::ChatDelivery::Delivered),
    }
    .into()
}

#[tokio::test]
async fn art16_a_chat_ticket_is_asked_in_its_open_session_else_by_sms() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, RevisitMode::Agent).await;
    let mut feed = Feed::default();
    // 1. The session is open: the survey goes into the chat, not by SMS; the citizen
    // answers there. Someone else's answer to it counts for nothing.
    let r = chat_ticket(
        &mut feed,
        &a,
        "k-c1",
        Some("13100131001"),
        "网上咨询：小区噪音",
    )
    .await;
    resolve(&a, &r, "2026-12-01").await;
    let m = chat_messages(&a).await;
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].reference.as_str(), m[0].citizen_key.as_str()),
        (r.as_str(), "k-c1")
    );
    assert!(m[0].asks_rating && m[0].text.contains(&r));
    assert_eq!(
        texts(&a)
            .await
            .iter()
            .filter(|(_, t)| t.purpose == "survey")
            .count(),
        0,
        "no SMS survey while the chat may be open"
    );
    feed.apply(
        &a,
        delivery(
            &m[0],
            contract::ChatDelivery::Delivered,
            bj("2026-12-01T12:00:05"),
        ),
    )
    .await;
    assert_eq!(
        a.followup_of(&r).await.expect("f").surveys[0].state,
        "waiting"
    );
    feed.apply(
        &a,
        chat_reply("k-other", &r, "1", bj("2026-12-01T12:01:00")),
    )
    .await;
    assert_eq!(a.ticket(&r).await.expect("r").expect("t").rating, None);
    feed.apply(&a, chat_reply("k-c1", &r, "4", bj("2026-12-01T12:02:00")))
        .await;
    let f = a.followup_of(&r).await.expect("f");
    assert_eq!(f.surveys[0].rating.as_deref(), Some("dissatisfied"));
    assert_eq!(f.surveys[0].rating_source.as_deref(), Some("chat_reply"));
    assert_eq!(
        f.revisits.len(),
        1,
        "a revisit follows as for any dissatisfied rating"
    );
    assert_eq!(
        a.unmatched_replies(10).await.expect("u").len(),
        1,
        "the stranger's answer kept"
    );

    // 2. No session open: the survey falls back to SMS to the number the citizen gave.
    let r2 = chat_ticket(
        &mut feed,
        &a,
        "k-c2",
        Some("13100131002"),
        "网上反映：路面积水",
    )
    .await;
    resolve(&a, &r2, "2026-12-01").await;
    let m2 = chat_messages(&a)
        .await
        .into_iter()
        .find(|m| m.reference == r2)
        .expect("asked in chat");
    feed.apply(
        &a,
        delivery(
            &m2,
            contract::ChatDelivery::NoOpenSession,
            bj("2026-12-01T12:00:05"),
        ),
    )
    .await;
    let sms: Vec<OutboundSms> = texts(&a)
        .await
        .into_iter()
        .filter(|(k, t)| k == &r2 && t.purpose == "survey")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, "13100131002");
    let f2 = a.followup_of(&r2).await.expect("f");
    assert_eq!(
        (f2.surveys[0].state.as_str(), f2.surveys[0].via.as_str()),
        ("asked", "sms")
    );

    // 3. No session and no number: not surveyed, and it never defaults.
    let r3 = chat_ticket(&mut feed, &a, "k-c3", None, "网上咨询：办证材料").await;
    resolve(&a, &r3, "2026-12-01").await;
    let m3 = chat_messages(&a)
        .await
        .into_iter()
        .find(|m| m.reference == r3)
        .expect("asked in chat");
    feed.apply(
        &a,
        delivery(
            &m3,
            contract::ChatDelivery::NoOpenSession,
            bj("2026-12-01T12:00:05"),
        ),
    )
    .await;
    a.run_due_jobs(bj("2026-12-03T12:00:00"), 100)
        .await
        .expect("jobs");
    let f3 = a.followup_of(&r3).await.expect("f");
    assert_eq!(f3.surveys[0].state, "not_sent");
    assert_eq!(a.ticket(&r3).await.expect("r").expect("t").rating, None);
}

#[tokio::test]
async fn bad_records_on_the_follow_up_topics_are_dead_letters_and_block_nothing() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, RevisitMode::Call).await;
    let raw = |topic: &str, offset: i64, ce_type: &str, payload: &[u8]| Incoming {
        topic: topic.into(),
        partition: 0,
        offset,
        key: Some(b"ZH1".to_vec()),
        headers: vec![
            ("ce_id".into(), Uuid::now_v7().to_string().into_bytes()),
            ("ce_type".into(), ce_type.as_bytes().to_vec()),
        ],
        payload: Some(payload.to_vec()),
    };
    let results = "hotline.revisit-results.v1";
    let status = "hotline.sms-status.v1";
    let chat = "hotline.chat-status.v1";
    for (rec, why) in [
        (
            raw(
                results,
                0,
                contract::EventType::RevisitResult.ce_type(),
                b"not json",
            ),
            "not a revisit result",
        ),
        (
            raw(results, 1, contract::EventType::SmsStatus.ce_type(), b"{}"),
            "ce_type",
        ),
        (
            raw(
                status,
                0,
                contract::EventType::SmsStatus.ce_type(),
                br#"{"schema_version": 9}"#,
            ),
            "not an SMS status",
        ),
        (
            raw(
                chat,
                0,
                contract::EventType::ChatOutboundStatus.ce_type(),
                b"[1, 2]",
            ),
            "not a chat delivery report",
        ),
    ] {
        let done = a
            .apply_batch(GROUP, CONTACTS, DRAFTS, &[rec], false)
            .await
            .expect("applied");
        assert_eq!(done.dead, 1, "{why}");
    }
    let dead: Vec<String> = a
        .pending(100)
        .await
        .expect("outbox")
        .into_iter()
        .filter(|r| r.topic == "hotline.tickets-dead-letter.v1")
        .map(|r| r.headers.to_string())
        .collect();
    assert_eq!(dead.len(), 4);
    assert!(
        dead.iter().any(|h| h.contains("not a revisit result")),
        "{dead:?}"
    );
    // The partitions moved on: a good record after a bad one is applied.
    let next = raw(
        results,
        2,
        contract::EventType::RevisitResult.ce_type(),
        b"x",
    );
    assert_eq!(
        a.apply_batch(GROUP, CONTACTS, DRAFTS, &[next], false)
            .await
            .expect("applied")
            .dead,
        1,
        "offset 2 follows 1: the partition is not stuck"
    );
}
