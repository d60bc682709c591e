//! Intake end to end: real gateway process, real tansu broker, real WebSocket and HTTP
//! clients, records read back with rdkafka and checked field by field.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use e2e::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The documented citizen key: HMAC-SHA256(secret, "phone:" + number), first 16 bytes, hex.
fn expected_phone_key(number: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(CITIZEN_SECRET.as_bytes())
        .expect("any key length");
    mac.update(b"phone:");
    mac.update(number.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn assert_cloudevent(rec: &Received, ce_type: &str, source: &str, subject: &str) {
    let h = &rec.headers;
    assert_eq!(h["ce_specversion"], "1.0");
    assert_eq!(h["ce_type"], ce_type);
    assert_eq!(h["ce_source"], source);
    assert_eq!(h["ce_subject"], subject);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["ce_schemaversion"], "1");
    assert_eq!(
        h["ce_partitionkey"], rec.key,
        "partition key header repeats the record key"
    );
    assert_eq!(
        h["ce_id"],
        rec.value["id"].as_str().unwrap_or_default(),
        "ce_id is the event id"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(&h["ce_time"]).is_ok(),
        "ce_time is RFC 3339: {}",
        h["ce_time"]
    );
    assert_eq!(rec.value["schema_version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chinese_chat_conversation_becomes_contacts_and_a_ticket_draft() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;

    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    let session = chat.open("visitor-42", Some("+86 138-0013-8000")).await?;
    let ticket_ref = session["ticket_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(ticket_ref.starts_with("ZH"), "{session}");
    assert_eq!(session["resumed"], false);

    let lines = [
        "你好，我要投诉。",
        "我们小区楼下的餐馆每天晚上噪音扰民，到凌晨两点还不停。",
        "地址是香洲区凤凰路88号。",
    ];
    let mut contact_ids = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let ack = chat.say(&format!("m{i}"), line).await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["id"], format!("m{i}"));
        assert_eq!(ack["seq"], i as u64 + 1);
        contact_ids.push(ack["contact_id"].as_str().unwrap_or_default().to_owned());
    }
    let (ended, closed) = chat.end().await?;
    assert_eq!(ended["type"], "ended");
    assert_eq!(ended["ticket_ref"], ticket_ref.as_str());
    assert_eq!(ended["messages"], 3);
    assert_eq!(closed.code, 1000);

    let key = expected_phone_key("13800138000");
    let mut contacts = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(30),
        |r| r.len() >= 3,
    )?;
    assert_eq!(contacts.len(), 3, "three contacts on Kafka");
    contacts.sort_by_key(|r| r.value["sequence"].as_u64());
    for (i, rec) in contacts.iter().enumerate() {
        assert_cloudevent(
            rec,
            "cn.gov.zhuhai.12345.contact.v1",
            "/gateway/e2e/chat",
            &ticket_ref,
        );
        assert_eq!(rec.key, key, "keyed by the pseudonymous citizen key");
        let v = &rec.value;
        assert_eq!(v["id"], contact_ids[i].as_str());
        assert_eq!(v["ticket_ref"], ticket_ref.as_str());
        assert_eq!(v["channel"], "chat");
        assert_eq!(v["sequence"], i as u64 + 1);
        assert_eq!(v["channel_ref"], format!("m{i}"));
        assert_eq!(v["citizen"]["kind"], "phone_number");
        assert_eq!(v["citizen"]["value"], "13800138000");
        assert_eq!(v["citizen"]["key"], key.as_str());
        assert_eq!(v["content"], json!({"type": "text", "text": lines[i]}));
        let paths = v["reply_paths"].as_array().cloned().unwrap_or_default();
        assert!(
            paths.contains(&json!({"via": "sms", "number": "13800138000"})),
            "{paths:?}"
        );
        assert!(
            paths.iter().any(|p| p["via"] == "chat_session"),
            "{paths:?}"
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(v["received_at"].as_str().unwrap_or("")).is_ok()
        );
        // Same key, same partition, in order.
        assert_eq!(rec.partition, contacts[0].partition);
        if i > 0 {
            assert!(
                rec.offset > contacts[i - 1].offset,
                "one citizen's contacts stay in order"
            );
        }
    }

    let drafts = consume(&broker.bootstrap(), DRAFTS, Duration::from_secs(30), |r| {
        !r.is_empty()
    })?;
    assert_eq!(drafts.len(), 1);
    let d = &drafts[0];
    assert_cloudevent(
        d,
        "cn.gov.zhuhai.12345.ticket_draft.v1",
        "/gateway/e2e/chat",
        &ticket_ref,
    );
    assert_eq!(d.key, key);
    assert_eq!(d.value["ticket_ref"], ticket_ref.as_str());
    assert_eq!(d.value["kind"], "complaint", "{}", d.value);
    assert_eq!(d.value["urgency"], "normal");
    assert_eq!(d.value["channel"], "chat");
    assert_eq!(d.value["citizen_key"], key.as_str());
    assert_eq!(d.value["contacts"], json!(contact_ids));
    assert!(
        d.value["summary"]
            .as_str()
            .unwrap_or("")
            .starts_with("你好，我要投诉。")
    );
    assert_eq!(d.value["related_tickets"], json!([]));

    assert!(
        !gw.log().contains("13800138000"),
        "a phone number leaked into the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_becomes_one_contact_and_draft_even_when_redelivered() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    let url = gw.sms_url();

    let fire = json!({"message_id": "cmcc-0001", "from": "+86 139 0013 9000", "to": "12345", "text": "我家楼下着火了，请快来人！"});
    let body = serde_json::to_vec(&fire)?;
    let (status, first) = post_sms(&http, &url, &body, "application/json", CARRIER_SECRET).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "accepted");

    // The carrier redelivers (new timestamp and signature, same message id).
    let (status, again) = post_sms(&http, &url, &body, "application/json", CARRIER_SECRET).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["contact_id"], first["contact_id"]);
    assert_eq!(again["ticket_ref"], first["ticket_ref"]);

    // A form-encoded SMS.
    let form = "message_id=cmcc-0002&from=13700137000&to=12345&text=%E8%AF%B7%E9%97%AE%E6%8A%A4%E7%85%A7%E5%9C%A8%E5%93%AA%E9%87%8C%E5%8A%9E%E7%90%86%EF%BC%9F";
    let (status, second) = post_sms(
        &http,
        &url,
        form.as_bytes(),
        "application/x-www-form-urlencoded",
        CARRIER_SECRET,
    )
    .await?;
    assert_eq!(status, 200, "{second}");

    check_sms_on_kafka(&broker, &gw, &first, &second).await
}

async fn check_sms_on_kafka(
    broker: &Broker,
    gw: &Gateway,
    first: &Value,
    second: &Value,
) -> Result<()> {
    // Everything accepted is on Kafka once the outbox is drained; a few seconds of
    // reading would show a record too many.
    gw.wait_drained(Duration::from_secs(30)).await?;
    let contacts = consume(&broker.bootstrap(), CONTACTS, Duration::from_secs(5), |r| {
        r.len() >= 3
    })?;
    assert_eq!(
        contacts.len(),
        2,
        "a redelivered SMS makes no second contact"
    );
    let fire = contacts
        .iter()
        .find(|r| r.value["id"] == first["contact_id"])
        .expect("the first SMS is on Kafka");
    let ticket_ref = first["ticket_ref"].as_str().unwrap_or_default();
    assert_cloudevent(
        fire,
        "cn.gov.zhuhai.12345.contact.v1",
        "/gateway/e2e/sms",
        ticket_ref,
    );
    assert_eq!(fire.key, expected_phone_key("13900139000"));
    assert_eq!(fire.value["channel"], "sms");
    assert_eq!(fire.value["channel_ref"], "cmcc-0001");
    assert_eq!(fire.value["citizen"]["value"], "13900139000");
    assert_eq!(
        fire.value["reply_paths"],
        json!([{"via": "sms", "number": "13900139000"}])
    );
    assert_eq!(fire.value["content"]["text"], "我家楼下着火了，请快来人！");
    let passport = contacts
        .iter()
        .find(|r| r.value["id"] == second["contact_id"])
        .expect("the form SMS is on Kafka");
    assert_eq!(passport.value["content"]["text"], "请问护照在哪里办理？");

    let drafts = consume(&broker.bootstrap(), DRAFTS, Duration::from_secs(5), |r| {
        r.len() >= 3
    })?;
    assert_eq!(drafts.len(), 2);
    let fire_draft = drafts
        .iter()
        .find(|d| d.value["ticket_ref"] == first["ticket_ref"])
        .expect("draft of the first SMS");
    assert_eq!(fire_draft.value["urgency"], "emergency", "Art. 15 cue 着火");
    let emergency = &fire_draft.value["emergency"];
    assert_eq!(
        (
            &emergency["kind"],
            &emergency["target"],
            &emergency["cue"],
            &emergency["heard"]
        ),
        (
            &json!("fire"),
            &json!("119"),
            &json!("着火"),
            &json!("着火")
        ),
        "which emergency, for which linkage"
    );
    assert_eq!(
        emergency["reasons"],
        json!(["fire: fire (着火)"]),
        "why, for the operator (issue 21)"
    );
    assert_eq!(
        fire_draft.value["emergencies"],
        json!([emergency]),
        "one linkage target: one cue (请快来人 is the fire's, not a second target)"
    );
    assert_eq!(
        fire_draft.value["kind"], "help",
        "Art. 8: an emergency alone is 求助"
    );
    assert_eq!(fire_draft.value["contacts"], json!([first["contact_id"]]));
    let passport_draft = drafts
        .iter()
        .find(|d| d.value["ticket_ref"] == second["ticket_ref"])
        .expect("draft of the second SMS");
    assert_eq!(passport_draft.value["kind"], "consultation");
    assert!(passport_draft.value.get("emergency").is_none());
    assert!(
        !gw.log().contains("13900139000"),
        "a phone number leaked into the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sms_signatures_get_401_and_bad_bodies_400_and_nothing_reaches_kafka() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    let url = gw.sms_url();
    let body = serde_json::to_vec(
        &json!({"message_id": "x-1", "from": "13800001111", "text": "路灯坏了"}),
    )?;

    let (status, problem) = post_sms(
        &http,
        &url,
        &body,
        "application/json",
        "wrong-secret-0123456789",
    )
    .await?;
    assert_eq!(status, 401);
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["type"], "urn:12345:problem:bad-signature");

    // No signature at all.
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );

    // Signed, but malformed.
    for (bad, ct) in [
        (&b"{not json"[..], "application/json"),
        (
            &br#"{"message_id":"x-2","from":"not a phone","text":"hi"}"#[..],
            "application/json",
        ),
        (
            &br#"{"message_id":"x-3","from":"13800001111","text":"  "}"#[..],
            "application/json",
        ),
        (
            &b"message_id=x-4&from=13800001111"[..],
            "application/x-www-form-urlencoded",
        ),
    ] {
        let (status, problem) = post_sms(&http, &url, bad, ct, CARRIER_SECRET).await?;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["type"], "urn:12345:problem:malformed-body");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (status, _) = post_sms(&http, &url, &body, "text/plain", CARRIER_SECRET).await?;
    assert_eq!(status, 415);
    let unknown = url.replace(CARRIER, "nosuchcarrier");
    let (status, _) = post_sms(&http, &unknown, &body, "application/json", CARRIER_SECRET).await?;
    assert_eq!(status, 404);
    let huge = vec![b'a'; 64 * 1024];
    // Its own connection: the server may close a connection after refusing its body,
    // and a pooled connection closed that way would fail the next request.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let (status, problem) =
        post_sms(&once, &url, &huge, "application/json", CARRIER_SECRET).await?;
    assert_eq!(status, 413, "{problem}");

    // Then a good one, so we know the topic is readable and holds only it.
    let (status, good) = post_sms(&http, &url, &body, "application/json", CARRIER_SECRET).await?;
    assert_eq!(status, 200);
    gw.wait_drained(Duration::from_secs(30)).await?;
    let contacts = consume(&broker.bootstrap(), CONTACTS, Duration::from_secs(5), |r| {
        r.len() >= 2
    })?;
    assert_eq!(contacts.len(), 1, "only the good SMS is on Kafka");
    assert_eq!(contacts[0].value["id"], good["contact_id"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_their_close_codes_while_another_session_keeps_working() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let opts = GatewayOptions {
        max_frame_bytes: 4096,
        rate_per_second: 2.0,
        burst: 5,
        idle_timeout_secs: 3,
        resume_window_secs: 60,
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(&broker.bootstrap(), opts)?;
    let mut good = ChatClient::connect(&gw.chat_url()).await?;
    good.open("good-citizen", None).await?;
    let mut acked = 0;

    // Oversize frame: 1009.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.open("big", None).await?;
    c.send_json(json!({"type": "message", "id": "b1", "text": "字".repeat(2000)}))
        .await?;
    let closed = c.closed().await?;
    assert_eq!(closed.code, 1009, "{closed:?}");
    assert!(closed.reason.contains("4096"), "{closed:?}");
    check_good(&mut good, &mut acked).await?;

    // Far oversize (beyond the transport's backstop): still 1009.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.open("huge", None).await?;
    let _ = c
        .send_json(json!({"type": "message", "id": "b2", "text": "a".repeat(200_000)}))
        .await;
    let closed = c.closed().await?;
    assert_eq!(closed.code, 1009, "{closed:?}");
    check_good(&mut good, &mut acked).await?;

    // Not JSON: 4400.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.send_raw(WsMessage::Text("not json{".into())).await?;
    let closed = c.closed().await?;
    assert_eq!(closed.code, 4400, "{closed:?}");
    assert!(closed.reason.starts_with("malformed frame"), "{closed:?}");

    // Unknown frame type: 4400.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.send_json(json!({"type": "hello"})).await?;
    assert_eq!(c.closed().await?.code, 4400);

    // A text frame that is not UTF-8: 1007.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.open("bad-bytes", None).await?;
    let invalid = vec![b'{', 0xff, 0xfe, b'}'];
    c.send_raw(WsMessage::Frame(Frame::message(
        invalid,
        OpCode::Data(Data::Text),
        true,
    )))
    .await?;
    let closed = c.closed().await?;
    assert_eq!(closed.code, 1007, "{closed:?}");

    // Binary: 1003.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.send_raw(WsMessage::Binary(vec![0, 159, 146, 150].into()))
        .await?;
    assert_eq!(c.closed().await?.code, 1003);

    // A message before open: 1008.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.send_json(json!({"type": "message", "id": "x", "text": "hi"}))
        .await?;
    assert_eq!(c.closed().await?.code, 1008);

    // Unknown resume token: 4401.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.send_json(json!({"type": "resume", "token": "nope"}))
        .await?;
    assert_eq!(c.closed().await?.code, 4401);
    check_good(&mut good, &mut acked).await?;

    // Faster than the rate limit (burst 5): 4429.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.open("flooder", None).await?;
    for i in 0..20 {
        let _ = c
            .send_json(json!({"type": "message", "id": format!("f{i}"), "text": "刷屏"}))
            .await;
    }
    let closed = c.closed().await?;
    assert_eq!(closed.code, 4429, "{closed:?}");
    let flood_acked = c.skipped.iter().filter(|f| f["type"] == "ack").count();
    assert!(
        (5..=6).contains(&flood_acked),
        "burst of 5 (+1 refilled): {flood_acked}"
    );

    // Silence past the idle timeout: 4408, while the good session keeps talking.
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    c.open("sleepy", None).await?;
    let closed = loop {
        tokio::select! {
            closed = c.closed() => break closed?,
            _ = tokio::time::sleep(Duration::from_millis(700)) => check_good(&mut good, &mut acked).await?,
        }
    };
    assert_eq!(closed.code, 4408, "{closed:?}");
    check_good(&mut good, &mut acked).await?;

    let (ended, closed) = good.end().await?;
    assert_eq!(ended["messages"], acked);
    assert_eq!(closed.code, 1000);

    // Every refused frame left nothing on Kafka: only the good session's contacts and
    // the ones acknowledged before the flood's close.
    gw.wait_drained(Duration::from_secs(30)).await?;
    let expected = acked as usize + flood_acked;
    let contacts = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(15),
        |r| r.len() >= expected,
    )?;
    assert_eq!(contacts.len(), expected);
    let texts: HashSet<String> = contacts
        .iter()
        .map(|r| {
            r.value["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        !texts
            .iter()
            .any(|t| t.starts_with("字字") || t.starts_with("aaa")),
        "oversize text recorded"
    );
    let good_count = contacts
        .iter()
        .filter(|r| r.value["content"]["text"] == "我想咨询一下公积金提取。")
        .count();
    assert_eq!(good_count as u64, acked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_max_sessions_get_1013_and_the_others_keep_working() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let opts = GatewayOptions {
        max_sessions: 2,
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(&broker.bootstrap(), opts)?;
    let mut first = ChatClient::connect(&gw.chat_url()).await?;
    first.open("first", None).await?;
    let mut second = ChatClient::connect(&gw.chat_url()).await?;
    second.open("second", None).await?;
    let mut third = ChatClient::connect(&gw.chat_url()).await?;
    let closed = third.closed().await?;
    assert_eq!(closed.code, 1013, "{closed:?}");
    assert!(closed.reason.contains("try again later"), "{closed:?}");
    let mut n = 0;
    check_good(&mut first, &mut n).await?;
    // A socket that leaves makes room for the next.
    let (_, closed) = second.end().await?;
    assert_eq!(closed.code, 1000);
    drop(second);
    open_when_room(&gw, "fourth").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_beyond_its_rate_gets_429_with_a_retry_time() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let opts = GatewayOptions {
        sms_rate_per_second: 0.5,
        sms_burst: 3,
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(&broker.bootstrap(), opts)?;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let (status, r) = gw
            .send_sms(&http, &format!("r-{i}"), "13600000009", "井盖丢了")
            .await?;
        assert_eq!(status, 200, "{r}");
    }
    let (status, problem) = gw.send_sms(&http, "r-3", "13600000009", "井盖丢了").await?;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["type"], "urn:12345:problem:rate-limited");
    assert!(
        problem["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=2).contains(&s)),
        "{problem}"
    );
    // Forged requests do not spend the carrier's allowance: they are refused first.
    let body = br#"{"message_id":"f","from":"13600000009","text":"x"}"#;
    let (status, _) = post_sms(
        &http,
        &gw.sms_url(),
        body,
        "application/json",
        "forged-secret-0123456789",
    )
    .await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_beyond_max_resumable_sessions_get_1013_until_one_ends() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let opts = GatewayOptions {
        max_sessions: 2,
        max_resumable_sessions: 2,
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(&broker.bootstrap(), opts)?;
    // Two citizens open sessions and drop their connections: both stay resumable.
    let mut tokens = Vec::new();
    for v in ["a", "b"] {
        let mut c = ChatClient::connect(&gw.chat_url()).await?;
        let session = c.open(v, None).await?;
        tokens.push(
            session["resume_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let mut third = ChatClient::connect(&gw.chat_url()).await?;
    third
        .send_json(json!({"type": "open", "visitor": "c"}))
        .await?;
    let closed = third.closed().await?;
    assert_eq!(closed.code, 1013, "{closed:?}");
    assert!(closed.reason.contains("open chat sessions"), "{closed:?}");
    // Resuming is still possible, and ending one makes room. The three sockets are gone
    // once the gateway has seen them go: before, the resume could meet the limit on live
    // sockets (max_sessions, 1013 "too many chat sessions"; issue 28, once in 20 runs).
    gw.until_metric_at_most("gateway_chat_connections", 0.0)
        .await?;
    let mut a = ChatClient::connect(&gw.chat_url()).await?;
    a.send_json(json!({"type": "resume", "token": tokens[0]}))
        .await?;
    assert_eq!(a.recv_json().await?["resumed"], true);
    a.end().await?;
    open_when_room(&gw, "d").await?;
    Ok(())
}

/// Opens a session, retrying while the gateway answers 1013: a socket that just left
/// is counted until the gateway has seen it go, a few milliseconds later.
async fn open_when_room(gw: &Gateway, visitor: &str) -> Result<ChatClient> {
    for _ in 0..50 {
        let mut c = ChatClient::connect(&gw.chat_url()).await?;
        c.send_json(json!({"type": "open", "visitor": visitor}))
            .await?;
        match c.recv_json().await {
            Ok(session) if session["type"] == "session" => return Ok(c),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    anyhow::bail!("no room for a new session within 5 s")
}

async fn check_good(good: &mut ChatClient, n: &mut u64) -> Result<()> {
    *n += 1;
    let ack = good
        .say(&format!("g{n}"), "我想咨询一下公积金提取。")
        .await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], *n);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_with_its_token_and_a_resent_message_is_not_doubled() -> Result<()> {
    let broker = Broker::start(Storage::Sqlite)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;

    let mut first = ChatClient::connect(&gw.chat_url()).await?;
    let session = first.open("wechat-openid-7", None).await?;
    let token = session["resume_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ack1 = first.say("m1", "小区门口的路灯坏了一个星期了").await?;
    drop(first); // The phone lost its network.

    let mut second = ChatClient::connect(&gw.chat_url()).await?;
    second
        .send_json(json!({"type": "resume", "token": token}))
        .await?;
    let resumed = second.recv_json().await?;
    assert_eq!(resumed["type"], "session");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["last_seq"], 1);
    assert_eq!(resumed["ticket_ref"], session["ticket_ref"]);
    let ack2 = second.say("m2", "在吉大九洲大道").await?;
    assert_eq!(ack2["seq"], 2);
    // The client never saw ack2 (say) and sends m2 again: same contact, no second one.
    let again = second.say("m2", "在吉大九洲大道").await?;
    assert_eq!(again["type"], "ack");
    assert_eq!(again["contact_id"], ack2["contact_id"]);

    // A third connection takes the session over; the second is told why.
    let mut third = ChatClient::connect(&gw.chat_url()).await?;
    third
        .send_json(json!({"type": "resume", "token": token}))
        .await?;
    assert_eq!(third.recv_json().await?["last_seq"], 2);
    assert_eq!(second.closed().await?.code, 4409);

    let (ended, _) = third.end().await?;
    assert_eq!(ended["messages"], 2);
    let drafts = consume(&broker.bootstrap(), DRAFTS, Duration::from_secs(30), |r| {
        !r.is_empty()
    })?;
    assert_eq!(drafts.len(), 1);
    assert_eq!(
        drafts[0].value["contacts"],
        json!([ack1["contact_id"], ack2["contact_id"]])
    );
    assert_eq!(drafts[0].value["kind"], "help", "{}", drafts[0].value);
    assert_eq!(
        drafts[0].value["citizen_key"].as_str().map(str::len),
        Some(32)
    );
    assert_eq!(drafts[0].headers["ce_source"], "/gateway/e2e/chat");
    Ok(())
}
