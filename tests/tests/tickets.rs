//! The ticket service end to end with real peers: tansu, PostgreSQL, the gateway and
//! `ticket-service` binaries, WebSocket and HTTP clients (issue 12).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use contract::TicketKind;
use e2e::postgres::Postgres;
use e2e::tickets::{
    DEAD_LETTER, STATUS, ServiceOptions, TicketService, draft, produce_event, produce_raw,
    producer, token,
};
use e2e::{Broker, ChatClient, DRAFTS, Gateway, GatewayOptions, Storage, consume};
use serde_json::{Value, json};
use tickets::calendar::Calendar;

fn date(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn received(v: &Value) -> DateTime<Utc> {
    v["received_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .expect("received_at")
}

/// Polls `sql` (a count) until it reaches `n`.
async fn wait_count(pg: &Postgres, sql: &str, n: i64, within: Duration) -> Result<i64> {
    let deadline = Instant::now() + within;
    loop {
        let got: i64 = pg.psql(sql)?.parse()?;
        if got >= n {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!("{sql}: {got} of {n} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_and_an_sms_become_tickets_with_the_right_deadlines_and_live_by_the_articles()
-> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let svc = TicketService::start(&broker.bootstrap(), &pg.url(), ServiceOptions::default())?;
    let cal = Calendar::builtin();

    // A chat: a noise complaint.
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    let session = chat.open("visitor-7", Some("13800138000")).await?;
    let chat_ref = date(&session["ticket_ref"]);
    for (i, line) in [
        "你好，我要投诉。",
        "我们小区楼下的餐馆每天晚上噪音扰民，到凌晨两点还不停。",
        "地址是香洲区凤凰路88号。",
    ]
    .iter()
    .enumerate()
    {
        let ack = chat.say(&format!("m{i}"), line).await?;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    chat.end().await?;
    // An SMS: a consultation.
    let http = reqwest::Client::new();
    let (status, receipt) = gw
        .send_sms(&http, "sms-1", "13600001234", "请问社保卡丢了在哪里补办？")
        .await?;
    assert_eq!(status, 200, "{receipt}");
    let sms_ref = date(&receipt["ticket_ref"]);

    // Both become registered tickets; dispatch is due 1 working day after receipt
    // (Arts. 8, 22).
    let t = svc.wait_ticket(&chat_ref, Duration::from_secs(30)).await?;
    assert_eq!(t["state"], "registered", "{t}");
    assert_eq!(t["channel"], "chat");
    assert_eq!(
        date(&t["dispatch_due"]),
        cal.deadline(received(&t), 1).date.to_string()
    );
    assert!(t["handling_due"].is_null(), "no unit holds it yet");
    assert_eq!(
        t["contacts"].as_array().map(Vec::len),
        Some(3),
        "the centre sees the contacts"
    );
    assert_eq!(t["repeat"]["decision"], "new");
    let s = svc.wait_ticket(&sms_ref, Duration::from_secs(30)).await?;
    assert_eq!(s["channel"], "sms");
    assert_eq!(
        date(&s["dispatch_due"]),
        cal.deadline(received(&s), 1).date.to_string()
    );

    // The agent confirms the chat's kind and dispatches it; handling is due in 10
    // working days from the unit's receipt (Art. 11).
    let (st, e) = svc
        .send(
            "PATCH",
            &format!("/tickets/{chat_ref}"),
            "agent:a1",
            &json!({"kind": "complaint", "district": "香洲区"}),
        )
        .await?;
    assert_eq!(st, 200, "{e}");
    let before = Utc::now();
    let (st, d) = svc
        .send(
            "POST",
            &format!("/tickets/{chat_ref}/dispatch"),
            "agent:a1",
            &json!({"lead_unit": "xiangzhou", "co_units": ["urban-management"]}),
        )
        .await?;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["state"], "dispatched");
    let due = date(&d["handling_due"]);
    assert!(
        due == cal.deadline(before, 10).date.to_string()
            || due == cal.deadline(Utc::now(), 10).date.to_string(),
        "{due}"
    );
    // Another unit cannot see or touch it; the lead unit and the co-unit can see it.
    let (st, p) = svc
        .get(&format!("/tickets/{chat_ref}"), "unit:doumen:p1")
        .await?;
    assert_eq!(st, 403, "{p}");
    assert_eq!(p["type"], "urn:12345:problem:not-your-ticket");
    let (st, _) = svc
        .get(&format!("/tickets/{chat_ref}"), "unit:urban-management:p2")
        .await?;
    assert_eq!(st, 200);
    let (st, u) = svc
        .get(&format!("/tickets/{chat_ref}"), "unit:xiangzhou:p1")
        .await?;
    assert_eq!(st, 200);
    assert!(
        u.get("contacts").is_none(),
        "units never see the citizen's identity (Art. 21)"
    );
    // The lead unit confirms, replies with every part, the centre accepts: closed.
    let (st, a) = svc
        .send(
            "POST",
            &format!("/tickets/{chat_ref}/accept"),
            "unit:xiangzhou:p1",
            &json!({}),
        )
        .await?;
    assert_eq!((st, a["state"].clone()), (200, json!("handling")), "{a}");
    let (st, r) = svc
        .send("POST", &format!("/tickets/{chat_ref}/reply"), "unit:xiangzhou:p1", &json!({
            "handled_at": "2026-12-01 15:00", "process": "执法人员到现场检查", "result": "餐馆已整改，22点后停止营业",
            "legal_basis": "《中华人民共和国噪声污染防治法》第六十四条"}))
        .await?;
    assert_eq!((st, r["state"].clone()), (200, json!("replied")), "{r}");
    let (st, c) = svc
        .send(
            "POST",
            &format!("/tickets/{chat_ref}/reply-decision"),
            "agent:a1",
            &json!({"accept": true}),
        )
        .await?;
    assert_eq!(
        (st, c["state"].clone(), c["outcome"].clone()),
        (200, json!("closed"), json!("resolved")),
        "{c}"
    );

    // The SMS consultation is answered at once (Art. 8).
    let (st, _) = svc
        .send(
            "PATCH",
            &format!("/tickets/{sms_ref}"),
            "agent:a1",
            &json!({"kind": "consultation"}),
        )
        .await?;
    assert_eq!(st, 200);
    let (st, q) = svc
        .send(
            "POST",
            &format!("/tickets/{sms_ref}/answer"),
            "agent:a1",
            &json!({"answer": "可到任一社保网点或粤省事补办"}),
        )
        .await?;
    assert_eq!((st, q["outcome"].clone()), (200, json!("answered")), "{q}");

    // The citizen's progress query (Art. 14): reference plus the number's last four.
    let r = http
        .get(svc.url(&format!("/progress/{sms_ref}?check=1234")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await?;
    assert_eq!(
        (p["state"].clone(), p["outcome"].clone()),
        (json!("closed"), json!("answered"))
    );
    assert!(
        p.get("summary").is_none() && p.get("contacts").is_none(),
        "state and dates only: {p}"
    );
    let r = http
        .get(svc.url(&format!("/progress/{sms_ref}?check=9999")))
        .send()
        .await?;
    assert_eq!(r.status(), 404, "a wrong check");
    let r = http
        .get(svc.url(&format!("/progress/{chat_ref}?check=8000")))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "the chat came with a number too");

    // Every transition is on the status topic, in order per ticket, with no identity.
    let want = [
        "registered",
        "edited",
        "dispatched",
        "accepted",
        "replied",
        "reply_accepted",
    ];
    let events = consume(&broker.bootstrap(), STATUS, Duration::from_secs(30), |r| {
        r.iter()
            .filter(|e| e.value["ticket_ref"] == chat_ref.as_str())
            .count()
            >= want.len()
            && r.iter().any(|e| {
                e.value["ticket_ref"] == sms_ref.as_str() && e.value["action"] == "answered"
            })
    })?;
    let chat_actions: Vec<String> = events
        .iter()
        .filter(|e| e.value["ticket_ref"] == chat_ref.as_str())
        .map(|e| date(&e.value["action"]))
        .collect();
    assert_eq!(chat_actions, want, "{chat_actions:?}");
    for e in &events {
        assert_eq!(
            e.headers.get("ce_type").map(String::as_str),
            Some("cn.gov.zhuhai.12345.ticket_status.v1")
        );
        let text = e.value.to_string();
        assert!(
            !text.contains("13800138000") && !text.contains("13600001234"),
            "{text}"
        );
        assert!(!e.key.contains("1380013"), "no number in the key");
    }
    let dispatched = events
        .iter()
        .find(|e| e.value["action"] == "dispatched")
        .expect("dispatched event");
    assert_eq!(dispatched.value["article"], "Art. 10");
    assert_eq!(dispatched.value["lead_unit"], "xiangzhou");
    assert_eq!(date(&dispatched.value["handling_due"]), due);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art14_a_second_contact_from_the_same_citizen_is_an_urge_or_a_supplement() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let svc = TicketService::start(&broker.bootstrap(), &pg.url(), ServiceOptions::default())?;
    let http = reqwest::Client::new();
    let sms = |id: &'static str, text: &'static str| {
        let (gw, http) = (&gw, &http);
        async move {
            let (st, r) = gw.send_sms(http, id, "13700001111", text).await?;
            anyhow::ensure!(st == 200, "{r}");
            Ok::<_, anyhow::Error>(date(&r["ticket_ref"]))
        }
    };
    let first = sms("s1", "香洲区凤凰路的路灯坏了一个星期，晚上很黑，希望尽快修").await?;
    svc.wait_ticket(&first, Duration::from_secs(30)).await?;
    let (st, _) = svc
        .send(
            "PATCH",
            &format!("/tickets/{first}"),
            "agent:a1",
            &json!({"kind": "complaint"}),
        )
        .await?;
    assert_eq!(st, 200);
    let (st, d) = svc
        .send(
            "POST",
            &format!("/tickets/{first}/dispatch"),
            "agent:a1",
            &json!({"lead_unit": "xiangzhou"}),
        )
        .await?;
    assert_eq!(st, 200, "{d}");

    // Only chasing: the urge count goes up on the original, no new ticket, no dispatch.
    let urge = sms("s2", "凤凰路路灯坏了的事怎么还没处理，催一下").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let original = loop {
        let (_, t) = svc.get(&format!("/tickets/{first}"), "agent:a1").await?;
        if t["urge_count"] == 1 || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(original["urge_count"], 1, "{original}");
    assert_eq!(original["urges"][0]["ticket_ref"], urge.as_str());
    assert!(
        original["urges"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Art. 14")
    );
    let (st, _) = svc.get(&format!("/tickets/{urge}"), "agent:a1").await?;
    assert_eq!(st, 404, "an urge makes no ticket");
    let p: Value = http
        .get(svc.url(&format!("/progress/{urge}?check=1111")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        p["handled_as"],
        first.as_str(),
        "the citizen's reference finds the original"
    );

    // New content within the deadline: a supplementary ticket, straight to the
    // original's unit, its deadline counted afresh.
    let supplement = sms(
        "s3",
        "凤凰路的路灯还是坏的，现在旁边的电线也掉下来了，很危险",
    )
    .await?;
    let s = svc
        .wait_ticket(&supplement, Duration::from_secs(30))
        .await?;
    assert_eq!(s["repeat"]["decision"], "supplement", "{s}");
    assert_eq!(s["parent_ref"], first.as_str());
    assert_eq!(s["state"], "dispatched");
    assert_eq!(s["lead_unit"], "xiangzhou");
    assert_eq!(
        date(&s["handling_due"]),
        Calendar::builtin()
            .deadline(received(&s), 10)
            .date
            .to_string()
    );

    // The agent overrules the urge: the reference becomes a ticket of its own after all.
    let (st, o) = svc
        .send(
            "POST",
            &format!("/tickets/{urge}/repeat"),
            "agent:a1",
            &json!({"decision": "new", "reason": "市民说是另一盏路灯"}),
        )
        .await?;
    assert_eq!(st, 200, "{o}");
    assert_eq!(o["repeat"]["decision"], "new");
    assert!(
        o["repeat"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("overruled by agent:a1")
    );
    let (_, t) = svc.get(&format!("/tickets/{first}"), "agent:a1").await?;
    assert_eq!(t["urge_count"], 0, "the urge is taken back");
    // A unit cannot overrule.
    let (st, p) = svc
        .send(
            "POST",
            &format!("/tickets/{supplement}/repeat"),
            "unit:xiangzhou:p1",
            &json!({"decision": "new", "reason": "x"}),
        )
        .await?;
    assert_eq!(st, 403, "{p}");
    Ok(())
}

/// `n` drafts of `n` citizens (no Art. 14 folding), written as the gateway writes them.
async fn write_drafts(bootstrap: &str, n: usize, tag: &str) -> Result<Vec<String>> {
    let p = producer(bootstrap)?;
    let mut refs = Vec::with_capacity(n);
    let mut sends = Vec::with_capacity(n);
    let drafts: Vec<_> = (0..n)
        .map(|i| {
            draft(
                &format!("{tag}-{i}"),
                &format!("{tag}第{i}号：小区垃圾没人清运"),
                TicketKind::Complaint,
                Utc::now(),
            )
        })
        .collect();
    for d in &drafts {
        refs.push(d.ticket_ref.to_string());
        sends.push(produce_event(&p, DRAFTS, d.clone().into()));
    }
    for s in futures::future::join_all(sends).await {
        s?;
    }
    // The gateway's outbox delivering some of them again (a crash after the broker's
    // ack): the same ce_id under a new offset.
    for d in drafts.iter().step_by(20) {
        produce_event(&p, DRAFTS, d.clone().into()).await?;
    }
    Ok(refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_1000_drafts_the_service_loses_none_and_applies_none_twice()
-> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    let refs = write_drafts(&broker.bootstrap(), 1000, "kill").await?;
    let mut svc = TicketService::start(
        &broker.bootstrap(),
        &pg.url(),
        ServiceOptions {
            batch_max: 20,
            ..ServiceOptions::default()
        },
    )?;
    let applied = wait_count(
        &pg,
        "SELECT count(*) FROM tickets",
        150,
        Duration::from_secs(60),
    )
    .await?;
    svc.kill9();
    let at_kill: i64 = pg.psql("SELECT count(*) FROM tickets")?.parse()?;
    assert!(
        at_kill < 1000,
        "killed in the middle ({applied}, then {at_kill})"
    );
    svc.restart()?;
    wait_count(
        &pg,
        "SELECT count(*) FROM tickets",
        1000,
        Duration::from_secs(120),
    )
    .await?;
    // Give a doubled application every chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pg.psql("SELECT count(*) FROM tickets")?, "1000");
    assert_eq!(
        pg.psql("SELECT count(DISTINCT ticket_ref) FROM tickets")?,
        "1000"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM ticket_history WHERE action = 'registered'")?,
        "1000"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM outbox WHERE topic = 'hotline.tickets-dead-letter.v1'")?,
        "0"
    );
    assert_eq!(
        pg.psql(
            "SELECT sum(next_offset) FROM consumer_offsets WHERE topic = 'hotline.ticket-drafts.v1'"
        )?,
        "1050",
        "every record passed once: 1000 drafts and 50 redeliveries"
    );
    let stored: HashSet<String> = pg
        .psql("SELECT ticket_ref FROM tickets")?
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, refs.into_iter().collect::<HashSet<_>>());
    // On the status topic, each registration once in effect (a crash may send an event
    // again; its ce_id is the same).
    let events = consume(&broker.bootstrap(), STATUS, Duration::from_secs(60), |r| {
        r.iter()
            .map(|e| e.ce_id().to_owned())
            .collect::<HashSet<_>>()
            .len()
            >= 1000
    })?;
    let ids: HashSet<&str> = events.iter().map(|e| e.ce_id()).collect();
    assert_eq!(ids.len(), 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_load_with_the_same_result() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    write_drafts(&broker.bootstrap(), 1000, "two").await?;
    // The first instance starts alone; the second joins under load, so partitions move
    // while both hold fetched records of them (the case that once lost records: a
    // stale read past the committed offset).
    let opts = |name: &str| ServiceOptions {
        instance: name.into(),
        batch_max: 20,
        ..ServiceOptions::default()
    };
    let a = TicketService::start(&broker.bootstrap(), &pg.url(), opts("ts-a"))?;
    wait_count(
        &pg,
        "SELECT count(*) FROM tickets",
        100,
        Duration::from_secs(60),
    )
    .await?;
    let b = TicketService::start(&broker.bootstrap(), &pg.url(), opts("ts-b"))?;
    // An even share of the partitions it reads (five topics of three partitions: the
    // contacts, drafts, revisit results, SMS and chat reports): 8 and 7.
    let share = |log: String| {
        log.lines()
            .rev()
            .find(|l| l.contains("Partitions assigned") && l.contains("members=2"))
            .and_then(|l| l.split("partitions=").nth(1))
            .and_then(|x| x.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Some(x), Some(y)) = (share(a.log()), share(b.log()))
            && x + y == 15
            && x.abs_diff(y) <= 1
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("no even share:\n{}\n{}", a.log(), b.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second wave once both hold their share: each instance has records to apply.
    write_drafts(&broker.bootstrap(), 1000, "two-more").await?;
    wait_count(
        &pg,
        "SELECT count(*) FROM tickets",
        2000,
        Duration::from_secs(120),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pg.psql("SELECT count(*) FROM tickets")?, "2000");
    assert_eq!(
        pg.psql("SELECT count(*) FROM ticket_history WHERE action = 'registered'")?,
        "2000"
    );
    let (na, nb) = (
        a.metric("tickets_records_applied_total").await?,
        b.metric("tickets_records_applied_total").await?,
    );
    assert_eq!(na + nb, 2000.0, "each draft applied by one of them");
    assert!(na > 0.0 && nb > 0.0, "both worked: {na} and {nb}");
    // One of them sends the outbox: every registration reaches the status topic.
    let events = consume(&broker.bootstrap(), STATUS, Duration::from_secs(60), |r| {
        r.iter()
            .map(|e| e.ce_id().to_owned())
            .collect::<HashSet<_>>()
            .len()
            >= 2000
    })?;
    assert_eq!(
        events
            .iter()
            .map(|e| e.ce_id())
            .collect::<HashSet<_>>()
            .len(),
        2000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_record_lands_in_the_dead_letter_topic_and_the_records_behind_it_are_applied()
-> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    let svc = TicketService::start(&broker.bootstrap(), &pg.url(), ServiceOptions::default())?;
    let p = producer(&broker.bootstrap())?;
    // All keyed alike: one partition, in this order.
    let key = "k-poison";
    let before = draft(key, "第一件：路面塌陷", TicketKind::Complaint, Utc::now());
    produce_event(&p, DRAFTS, before.clone().into()).await?;
    let good = before.clone().into_record_headers();
    produce_raw(&p, DRAFTS, key, &good, b"{not json").await?;
    let mut nul = draft(key, "含\u{0}字符", TicketKind::Complaint, Utc::now());
    nul.citizen_key = key.into();
    produce_event(&p, DRAFTS, nul.into()).await?;
    produce_raw(&p, DRAFTS, key, &[], br#"{"no":"headers"}"#).await?;
    let after = draft(
        key,
        "第二件：另一处的垃圾堆放",
        TicketKind::Report,
        Utc::now(),
    );
    produce_event(&p, DRAFTS, after.clone().into()).await?;

    svc.wait_ticket(after.ticket_ref.as_str(), Duration::from_secs(30))
        .await?;
    svc.wait_ticket(before.ticket_ref.as_str(), Duration::from_secs(5))
        .await?;
    let dead = consume(
        &broker.bootstrap(),
        DEAD_LETTER,
        Duration::from_secs(30),
        |r| r.len() >= 3,
    )?;
    assert_eq!(dead.len(), 3, "{dead:?}");
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| {
            d.headers
                .get("dlq_reason")
                .map(String::as_str)
                .unwrap_or_default()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a ticket draft")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("NUL")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("ce_id")), "{reasons:?}");
    for d in &dead {
        assert_eq!(d.headers.get("dlq_topic").map(String::as_str), Some(DRAFTS));
        assert!(d.headers.contains_key("dlq_offset"));
    }
    assert_eq!(pg.psql("SELECT count(*) FROM tickets")?, "2");
    Ok(())
}

/// The CloudEvents headers of a draft (to put on garbage).
trait Headers {
    fn into_record_headers(self) -> Vec<(String, String)>;
}

impl Headers for contract::TicketDraft {
    fn into_record_headers(self) -> Vec<(String, String)> {
        contract::Event::from(self)
            .to_record("/gateway/e2e/sms")
            .map(|r| r.headers)
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_malformed_bodies_wrong_roles_and_other_units_and_nothing_changes()
-> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let pg = Postgres::start()?;
    let svc = TicketService::start(&broker.bootstrap(), &pg.url(), ServiceOptions::default())?;
    let p = producer(&broker.bootstrap())?;
    let d = draft(
        "k-api",
        "斗门区井岸镇菜市场卫生很差",
        TicketKind::Complaint,
        Utc::now(),
    );
    let r = d.ticket_ref.to_string();
    produce_event(&p, DRAFTS, d.into()).await?;
    svc.wait_ticket(&r, Duration::from_secs(30)).await?;
    let (st, x) = svc
        .send(
            "POST",
            &format!("/tickets/{r}/dispatch"),
            "agent:a1",
            &json!({"lead_unit": "doumen"}),
        )
        .await?;
    assert_eq!(st, 200, "{x}");
    let snapshot = || async {
        let (_, t) = svc.get(&format!("/tickets/{r}"), "agent:a1").await?;
        let (_, h) = svc
            .get(&format!("/tickets/{r}/history"), "agent:a1")
            .await?;
        Ok::<_, anyhow::Error>((t, h))
    };
    let before = snapshot().await?;
    let http = reqwest::Client::new();
    let posts = [
        "answer",
        "not-accept",
        "dispatch",
        "accept",
        "return",
        "return-decision",
        "extension",
        "reply",
        "reply-decision",
        "repeat",
    ];
    for ep in posts {
        let url = svc.url(&format!("/tickets/{r}/{ep}"));
        // No token; a token of another scope (an agent desk token); a token with no role.
        let resp = http.post(&url).json(&json!({})).send().await?;
        assert_eq!(resp.status(), 401, "{ep} without a token");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let desk = contract::token::TokenVerifier::new(e2e::tickets::TOKEN_SECRET.as_bytes(), "")
            .mint("agent:a1", contract::token::unix_now() + 60);
        let resp = http
            .post(&url)
            .bearer_auth(desk)
            .json(&json!({}))
            .send()
            .await?;
        assert_eq!(resp.status(), 401, "{ep} with another scope's token");
        let resp = http
            .post(&url)
            .bearer_auth(token("admin:root"))
            .json(&json!({}))
            .send()
            .await?;
        assert_eq!(resp.status(), 403, "{ep} with no role");
        // Malformed JSON, and a JSON that is not the body.
        let resp = http
            .post(&url)
            .bearer_auth(token("agent:a1"))
            .header("content-type", "application/json")
            .body("{1}")
            .send()
            .await?;
        if ep != "accept" {
            let status = resp.status();
            let body: Value = resp.json().await?;
            assert_eq!(status, 400, "{ep} malformed: {body}");
            assert_eq!(body["type"], "urn:12345:problem:malformed-request", "{ep}");
            let (st, body) = svc
                .send(
                    "POST",
                    &format!("/tickets/{r}/{ep}"),
                    "agent:a1",
                    &json!({"unexpected": 1}),
                )
                .await?;
            assert_eq!(st, 422, "{ep} wrong fields: {body}");
        }
        // Another unit reaching for doumen's ticket.
        let (st, body) = svc
            .send(
                "POST",
                &format!("/tickets/{r}/{ep}"),
                "unit:xiangzhou:p1",
                &valid_body(ep),
            )
            .await?;
        assert!(st == 403, "{ep} by another unit: {st} {body}");
    }
    // Edits: malformed, unknown kind, empty.
    for (body, want) in [
        (json!({"kind": "gossip"}), 422),
        (json!({"kind": "complaint", "colour": "red"}), 422),
        // Well-formed, but a dispatched ticket is no longer edited.
        (json!({"summary": "改"}), 409),
    ] {
        let (st, b) = svc
            .send("PATCH", &format!("/tickets/{r}"), "agent:a1", &body)
            .await?;
        assert_eq!(st, want, "{body}: {b}");
    }
    // Reads: another unit's ticket, another unit's list, bad queries, bad references.
    assert_eq!(
        svc.get(&format!("/tickets/{r}"), "unit:xiangzhou:p1")
            .await?
            .0,
        403
    );
    assert_eq!(
        svc.get(&format!("/tickets/{r}/history"), "unit:xiangzhou:p1")
            .await?
            .0,
        403
    );
    assert_eq!(
        svc.get("/tickets?unit=doumen", "unit:xiangzhou:p1")
            .await?
            .0,
        403
    );
    assert_eq!(svc.get("/tickets?limit=0", "agent:a1").await?.0, 400);
    assert_eq!(svc.get("/tickets?state=lost", "agent:a1").await?.0, 400);
    assert_eq!(svc.get("/tickets/ZH-nope", "agent:a1").await?.0, 404);
    assert_eq!(svc.get("/tickets/bad%20ref", "agent:a1").await?.0, 400);
    let (st, page) = svc.get("/tickets?limit=1", "unit:doumen:p1").await?;
    assert_eq!(
        (st, page["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );
    // A body over the limit.
    let big = "字".repeat(20_000);
    let (st, _) = svc
        .send(
            "POST",
            &format!("/tickets/{r}/extension"),
            "unit:doumen:p1",
            &json!({"reason": big}),
        )
        .await?;
    assert_eq!(st, 413);
    // The progress query: malformed checks, wrong ones, then locked.
    assert_eq!(
        http.get(svc.url(&format!("/progress/{r}?check=12a4")))
            .send()
            .await?
            .status(),
        400
    );
    for _ in 0..5 {
        assert_eq!(
            http.get(svc.url(&format!("/progress/{r}?check=0000")))
                .send()
                .await?
                .status(),
            404
        );
    }
    let locked = http
        .get(svc.url(&format!("/progress/{r}?check=0001")))
        .send()
        .await?;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    // Nothing changed.
    let after = snapshot().await?;
    assert_eq!(before, after);
    Ok(())
}

/// A well-formed body for each command (refused for its sender's role, not its shape).
fn valid_body(ep: &str) -> Value {
    match ep {
        "answer" => json!({"answer": "x"}),
        "not-accept" => json!({"reason": "petition", "note": "x"}),
        "dispatch" => json!({"lead_unit": "xiangzhou"}),
        "return" => json!({"reasons": "x", "suggested_unit": "jinwan"}),
        "return-decision" => json!({"approve": true, "note": "x"}),
        "extension" => json!({"reason": "x"}),
        "reply" => json!({"handled_at": "x", "process": "x", "result": "x", "legal_basis": "x"}),
        "reply-decision" => json!({"accept": true}),
        "repeat" => json!({"decision": "new", "reason": "x"}),
        _ => json!({}),
    }
}
