//! Nothing accepted is lost: across a broker outage, and across a gateway killed with
//! SIGKILL in the middle of a load. Every contact a citizen was acknowledged for is on
//! Kafka afterwards, exactly once after de-duplication by CloudEvents id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::{Value, json};

/// Reads the contacts topic until every id in `expected` is there; returns the ids seen
/// and how often each was seen.
fn contacts_on_kafka(
    broker: &Broker,
    expected: &HashSet<String>,
) -> Result<HashMap<String, usize>> {
    let records = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(90),
        |r| {
            let seen: HashSet<&str> = r.iter().map(|x| x.ce_id()).collect();
            expected.iter().all(|id| seen.contains(id.as_str()))
        },
    )?;
    let mut counts = HashMap::new();
    for r in &records {
        ensure!(
            r.ce_id() == r.value["id"].as_str().unwrap_or_default(),
            "ce_id is the event id"
        );
        *counts.entry(r.ce_id().to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Every acknowledged contact is on Kafka, each distinct event id counted once. At most
/// `in_flight` others may be there too: contacts made durable in the instant between the
/// commit and the acknowledgement when the gateway was killed (one per client that had
/// a request in flight).
fn assert_exactly_once_after_dedup(
    expected: &HashSet<String>,
    counts: &HashMap<String, usize>,
    in_flight: usize,
) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged contacts missing from Kafka: {missing:?}",
        missing.len()
    );
    let unexpected: Vec<&String> = counts.keys().filter(|id| !expected.contains(*id)).collect();
    assert!(
        unexpected.len() <= in_flight,
        "contacts on Kafka nobody was acknowledged for: {unexpected:?}"
    );
    let duplicates = counts.values().filter(|&&n| n > 1).count();
    // Redelivery after a crash may duplicate a record; the event id makes it harmless.
    eprintln!(
        "{} contacts, {duplicates} delivered more than once (dropped by id)",
        counts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_intake_goes_on_and_everything_arrives_after() -> Result<()> {
    let mut broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            message_timeout_ms: 2000,
            ..GatewayOptions::default()
        },
    )?;
    let http = reqwest::Client::new();
    let mut expected = HashSet::new();

    // Before the outage: one SMS goes through.
    let (status, r) = gw
        .send_sms(&http, "pre-1", "13600000001", "停车场收费不合理")
        .await?;
    assert_eq!(status, 200);
    expected.insert(r["contact_id"].as_str().unwrap_or_default().to_owned());
    gw.wait_drained(Duration::from_secs(30)).await?;

    broker.stop();

    // During the outage: chat and SMS are still accepted, durably.
    let mut chats = Vec::new();
    for s in 0..2 {
        let mut c = ChatClient::connect(&gw.chat_url()).await?;
        c.open(&format!("outage-{s}"), None).await?;
        chats.push(c);
    }
    for i in 0..10 {
        for (s, c) in chats.iter_mut().enumerate() {
            let ack = c
                .say(&format!("m{i}"), &format!("停电第{i}条消息，会话{s}"))
                .await?;
            assert_eq!(ack["type"], "ack", "{ack}");
            expected.insert(ack["contact_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    for i in 0..10 {
        let (status, r) = gw
            .send_sms(
                &http,
                &format!("out-{i}"),
                "13600000002",
                &format!("短信{i}"),
            )
            .await?;
        assert_eq!(status, 200, "{r}");
        expected.insert(r["contact_id"].as_str().unwrap_or_default().to_owned());
    }

    // Kafka is reported down, but the gateway stays ready: intake does not stop.
    let mut reported_down = false;
    for _ in 0..100 {
        let resp = http.get(gw.admin_url("/readyz")).send().await?;
        assert_eq!(resp.status().as_u16(), 200, "ready while Kafka is down");
        let body: Value = resp.json().await?;
        assert!(body["outbox"]["depth"].as_u64().unwrap_or(0) > 0, "{body}");
        if body["kafka"]["status"] == "down" {
            reported_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported_down, "readyz never reported Kafka down");

    broker.restart()?;
    gw.wait_drained(Duration::from_secs(90)).await?;
    let counts = contacts_on_kafka(&broker, &expected)?;
    assert_exactly_once_after_dedup(&expected, &counts, 0);
    assert_eq!(expected.len(), 31);

    // Metrics need the admin token, and count what happened.
    let resp = http.get(gw.admin_url("/metrics")).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    let text = http
        .get(gw.admin_url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("gateway_contacts_accepted_total{channel=\"chat\"} 20"),
        "{text}"
    );
    assert!(
        text.contains("gateway_contacts_accepted_total{channel=\"sms\"} 11"),
        "{text}"
    );
    assert!(
        text.contains("gateway_kafka_delivery_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("gateway_outbox_depth 0"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_mid_load_loses_nothing_it_acknowledged() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let mut gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();

    // Eight citizens chat as fast as the gateway acknowledges, and a carrier posts SMS.
    let mut load = Vec::new();
    for s in 0..8 {
        let url = gw.chat_url();
        let acked = acked.clone();
        load.push(tokio::spawn(async move {
            let Ok(mut c) = ChatClient::connect(&url).await else {
                return;
            };
            if c.open(&format!("load-{s}"), None).await.is_err() {
                return;
            }
            for i in 0.. {
                match c
                    .say(&format!("m{i}"), &format!("第{i}条：垃圾没人清运"))
                    .await
                {
                    Ok(ack) if ack["type"] == "ack" => {
                        let id = ack["contact_id"].as_str().unwrap_or_default().to_owned();
                        acked.lock().expect("not poisoned").insert(id);
                    }
                    _ => return, // The gateway died under us.
                }
            }
        }));
    }
    {
        let url = gw.sms_url();
        let acked = acked.clone();
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                let body = serde_json::to_vec(&json!({"message_id": format!("k-{i}"), "from": "13500000000", "text": "噪音扰民"}))
                    .unwrap_or_default();
                match post_sms(&http, &url, &body, "application/json", CARRIER_SECRET).await {
                    Ok((200, r)) => {
                        let id = r["contact_id"].as_str().unwrap_or_default().to_owned();
                        acked.lock().expect("not poisoned").insert(id);
                    }
                    _ => return,
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_kill = acked.lock().expect("not poisoned").len();
    assert!(before_kill > 50, "the load got going: {before_kill} acks");
    gw.kill9();
    for task in load {
        let _ = task.await;
    }
    let expected = acked.lock().expect("not poisoned").clone();

    // Restarted on the same data: what was journalled and not yet delivered goes out.
    gw.restart()?;
    gw.wait_drained(Duration::from_secs(90)).await?;
    let counts = contacts_on_kafka(&broker, &expected)?;
    // Nine clients (eight chats, one carrier) had at most one request in flight each.
    assert_exactly_once_after_dedup(&expected, &counts, 9);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_chats_with_1001_drains_and_exits_cleanly() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let mut gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    let session = c.open("leaving", None).await?;
    let ack = c.say("m1", "请问社保卡补办需要什么材料").await?;
    let waiter = tokio::spawn(async move { c.closed().await });
    let clean = tokio::task::spawn_blocking(move || {
        let clean = gw.terminate(Duration::from_secs(15));
        (clean, gw)
    })
    .await?;
    let (clean, gw) = clean;
    assert!(
        clean,
        "gateway did not exit 0 within its grace period; log:\n{}",
        gw.log()
    );
    let closed = waiter.await??;
    assert_eq!(closed.code, 1001, "{closed:?}");
    let expected: HashSet<String> =
        [ack["contact_id"].as_str().unwrap_or_default().to_owned()].into();
    let counts = contacts_on_kafka(&broker, &expected)?;
    assert_exactly_once_after_dedup(&expected, &counts, 0);

    // The session survives the restart and can be resumed with its token.
    let mut gw = gw;
    gw.restart()?;
    let mut again = ChatClient::connect(&gw.chat_url()).await?;
    again
        .send_json(json!({"type": "resume", "token": session["resume_token"]}))
        .await?;
    let resumed = again.recv_json().await?;
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["last_seq"], 1);
    assert_eq!(resumed["ticket_ref"], session["ticket_ref"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_with_retryable_errors_and_keeps_what_it_accepted() -> Result<()> {
    let mut broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            outbox_max_records: 6,
            message_timeout_ms: 2000,
            ..GatewayOptions::default()
        },
    )?;
    let http = reqwest::Client::new();
    broker.stop();

    // Four chat messages (one record each) and one SMS (contact and draft) fill it. None
    // is an emergency: an Art. 15 cue would add an urgent notice record to the count.
    let mut expected = HashSet::new();
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("patient", None).await?;
    for i in 0..4 {
        let ack = chat.say(&format!("m{i}"), "小区路灯不亮了").await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        expected.insert(ack["contact_id"].as_str().unwrap_or_default().to_owned());
    }
    let (status, r) = gw
        .send_sms(&http, "full-1", "13600000003", "垃圾没人清运")
        .await?;
    assert_eq!(status, 200, "{r}");
    expected.insert(r["contact_id"].as_str().unwrap_or_default().to_owned());

    // Full: a chat message gets a retryable error frame and the socket stays open...
    let refused = chat.say("m4", "还有一件事").await?;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "overloaded");
    assert_eq!(refused["retryable"], true);
    // ...an SMS gets 503 with a retry time, so the carrier redelivers later...
    let (status, problem) = gw
        .send_sms(&http, "full-2", "13600000003", "再发一次")
        .await?;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:12345:problem:overloaded");
    assert!(problem["retry_after"].as_u64().is_some(), "{problem}");
    // ...and the gateway says it is not ready for more.
    let ready = http.get(gw.admin_url("/readyz")).send().await?;
    assert_eq!(ready.status().as_u16(), 503);

    // Kafka back: what was accepted drains, and intake opens again.
    broker.restart()?;
    gw.wait_drained(Duration::from_secs(90)).await?;
    let ack = chat.say("m4", "还有一件事").await?;
    assert_eq!(
        ack["type"], "ack",
        "the same message id is accepted once there is room: {ack}"
    );
    expected.insert(ack["contact_id"].as_str().unwrap_or_default().to_owned());
    let counts = contacts_on_kafka(&broker, &expected)?;
    assert_exactly_once_after_dedup(&expected, &counts, 0);
    Ok(())
}
