//! Art. 15 urgent notices end to end: a real gateway, a real tansu broker, a real
//! WebSocket operator feed. A chat message with an emergency reaches the topic and the
//! operator within 2 seconds, the operator's acknowledgement is recorded, a flood makes
//! one notice, and forged tokens get nothing.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use e2e::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn operator(gw: &Gateway, subject: &str) -> Result<Ws> {
    let token = linkage_token(subject, Duration::from_secs(3600));
    let (ws, _) = tokio_tungstenite::connect_async(gw.linkage_url(&token)).await?;
    Ok(ws)
}

/// The next JSON frame within `within`.
async fn next_frame(ws: &mut Ws, within: Duration) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => bail!("no frame within {within:?}"),
            Ok(Some(Ok(WsMessage::Text(t)))) => return Ok(serde_json::from_str(t.as_str())?),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => bail!("feed ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_a_chat_emergency_reaches_the_operator_within_two_seconds_and_is_acknowledged()
-> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let mut op119 = operator(&gw, "119:op7").await?;
    let snapshot = next_frame(&mut op119, Duration::from_secs(5)).await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["notices"], json!([]));
    let mut op110 = operator(&gw, "110:op3").await?;
    assert_eq!(
        next_frame(&mut op110, Duration::from_secs(5)).await?["type"],
        "snapshot"
    );

    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("fire-visitor", Some("13800005555")).await?;
    let sent = Instant::now();
    let ack = chat
        .say("m1", "我家楼下着火了，有人被困，在香洲区凤凰北路")
        .await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    let frame = next_frame(&mut op119, Duration::from_secs(2)).await?;
    let took = sent.elapsed();
    assert_eq!(frame["type"], "notice", "{frame}");
    let notice = &frame["notice"];
    assert_eq!(notice["target"], "119");
    assert_eq!(notice["kind"], "fire");
    assert_eq!(notice["state"], "open");
    assert_eq!(notice["channel"], "chat");
    assert!(
        notice["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains("着火")),
        "{notice}"
    );
    assert_eq!(notice["location"]["district"], "香洲区", "{notice}");
    assert_eq!(
        notice["reply_paths"][1]["number"], "13800005555",
        "the operator can call back"
    );
    let detected =
        chrono::DateTime::parse_from_rfc3339(notice["detected_at"].as_str().unwrap_or_default())?;
    let due = chrono::DateTime::parse_from_rfc3339(notice["due_at"].as_str().unwrap_or_default())?;
    assert_eq!((due - detected).num_seconds(), 1800, "Art. 15: 30 minutes");
    eprintln!("chat message to operator feed: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let id = notice["notice_id"].as_str().unwrap_or_default().to_owned();

    // On the topic within 2 s of the message, keyed by the notice, no number in headers.
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(2), |r| {
        !r.is_empty()
    })?;
    assert!(sent.elapsed() < Duration::from_secs(4));
    let opened = records.first().map(|r| r.value.clone()).unwrap_or_default();
    assert_eq!(opened["change"]["type"], "opened", "{records:?}");
    assert_eq!(opened["notice_id"], json!(id));
    assert_eq!(records[0].key, id);
    assert!(!format!("{:?}", records[0].headers).contains("13800005555"));

    // The 110 operator does not see a 119 notice; acknowledging it is refused.
    op110
        .send(WsMessage::Text(
            json!({"type": "ack", "notice_id": id}).to_string().into(),
        ))
        .await?;
    let refused = next_frame(&mut op110, Duration::from_secs(5)).await?;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unknown_notice"))
    );

    // The 119 operator acknowledges: answered once durable, the feed shows it, the topic has it.
    op119
        .send(WsMessage::Text(
            json!({"type": "ack", "notice_id": id}).to_string().into(),
        ))
        .await?;
    let mut acked = false;
    let mut shown = false;
    while !(acked && shown) {
        let f = next_frame(&mut op119, Duration::from_secs(5)).await?;
        match f["type"].as_str() {
            Some("acked") => acked = f["notice_id"] == json!(id),
            Some("notice") => {
                shown = f["notice"]["state"] == "acknowledged"
                    && f["notice"]["acknowledged"]["by"] == "op7"
                    && f["notice"]["acknowledged"]["via"] == "feed";
            }
            _ => bail!("unexpected {f}"),
        }
    }
    // A second message on the same ticket updates the notice: no new notice.
    chat.say("m2", "火越来越大了，还是着火，三楼有人被困")
        .await?;
    let update = next_frame(&mut op119, Duration::from_secs(5)).await?;
    assert_eq!(update["notice"]["notice_id"], json!(id), "{update}");
    assert!(
        update["notice"]["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains("三楼"))
    );
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(10), |r| {
        r.len() >= 3
    })?;
    let changes: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["change"]["type"].as_str())
        .collect();
    assert_eq!(
        changes,
        ["opened", "acknowledged", "updated"],
        "{records:?}"
    );
    assert_eq!(records[1].value["by"], "op7");

    // The linkage's feedback closes the loop: recorded on the notice, shown on the feed.
    op119
        .send(WsMessage::Text(
            json!({"type": "feedback", "notice_id": id, "status": "handled", "note": "已出警，火已扑灭"})
                .to_string()
                .into(),
        ))
        .await?;
    let mut recorded = false;
    let mut shown = false;
    while !(recorded && shown) {
        let f = next_frame(&mut op119, Duration::from_secs(5)).await?;
        match f["type"].as_str() {
            Some("feedback_recorded") => recorded = true,
            Some("notice") => {
                shown = f["notice"]["feedback"][0]["status"] == "handled"
                    && f["notice"]["feedback"][0]["note"] == "已出警，火已扑灭";
            }
            _ => bail!("unexpected {f}"),
        }
    }
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(10), |r| {
        r.len() >= 4
    })?;
    assert_eq!(
        records[3].value["change"]["type"], "feedback",
        "{records:?}"
    );
    assert_eq!(records[3].value["change"]["status"], "handled");
    // Bad frames get an error, the socket stays.
    op119
        .send(WsMessage::Text("{\"type\":\"ack\"}".into()))
        .await?;
    let err = next_frame(&mut op119, Duration::from_secs(5)).await?;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("malformed"))
    );

    // A new operator gets it in the snapshot.
    let mut late = operator(&gw, "*:supervisor1").await?;
    let snap = next_frame(&mut late, Duration::from_secs(5)).await?;
    assert_eq!(snap["notices"][0]["notice_id"], json!(id), "{snap}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_a_flood_of_urgent_messages_from_one_citizen_makes_one_notice() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    for i in 0..300 {
        let (status, receipt) = gw
            .send_sms(
                &http,
                &format!("flood-{i}"),
                "13800006666",
                "着火了！！快来人，着火了",
            )
            .await?;
        assert_eq!(
            (status, receipt["status"].as_str()),
            (200, Some("accepted")),
            "{receipt}"
        );
    }
    gw.wait_drained(Duration::from_secs(30)).await?;
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(5), |_| {
        false
    })?;
    let opened = records
        .iter()
        .filter(|r| r.value["change"]["type"] == "opened")
        .count();
    let updated = records
        .iter()
        .filter(|r| r.value["change"]["type"] == "updated")
        .count();
    assert_eq!(opened, 1, "{records:?}");
    assert!(updated <= 10, "a flood is thinned: {updated} updates");
    eprintln!("300 urgent SMS from one citizen: {opened} notice, {updated} updates");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_or_foreign_tokens_get_nothing_from_the_operator_feed() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let good = linkage_token("119:op7", Duration::from_secs(3600));
    // Minted with the documented format, with the right secret.
    let mint = |scope: &str, expiry: u64| {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(LINKAGE_SECRET.as_bytes())
            .expect("any key length");
        mac.update(format!("{scope}119:op7.{expiry}").as_bytes());
        format!(
            "119:op7.{expiry}.{}",
            hex::encode(mac.finalize().into_bytes())
        )
    };
    let now = chrono::Utc::now().timestamp() as u64;
    let expired = mint("linkage:", now - 60);
    // An agent desk token's shape (no scope), even signed with the linkage secret.
    let unscoped = mint("", now + 3600);
    let forged = good.replace("119:op7", "110:op7");
    for (what, token) in [
        ("expired", expired.as_str()),
        ("forged", forged.as_str()),
        ("another scope", unscoped.as_str()),
        ("garbage", "x.y.z"),
    ] {
        match tokio_tungstenite::connect_async(gw.linkage_url(token)).await {
            Ok(_) => bail!("{what} token was let in"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401, "{what}");
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
    Ok(())
}

/// The id of the one notice on the topic, once it is there.
fn the_notice(broker: &Broker) -> Result<String> {
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(10), |r| {
        !r.is_empty()
    })?;
    records
        .first()
        .map(|r| r.key.clone())
        .ok_or_else(|| anyhow::anyhow!("no notice on the topic"))
}

async fn fire_in_chat(gw: &Gateway) -> Result<ChatClient> {
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("fire-visitor", Some("13800005555")).await?;
    let ack = chat.say("m1", "我家楼下着火了，有人被困").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    Ok(chat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_unacknowledged_it_escalates_by_sms_on_schedule_then_alarms() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let carrier = carrier::Carrier::start().await?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            linkage_escalation_secs: vec![2, 4],
            linkage_alarm_secs: 7,
            linkage_targets: vec![("119".into(), None, Some("13800000119".into()))],
            sms_outbound_url: Some(carrier.url.clone()),
            ..GatewayOptions::default()
        },
    )?;
    let start = Instant::now();
    let _chat = fire_in_chat(&gw).await?;
    let id = the_notice(&broker)?;
    // Two escalations (2 s, 4 s), each an SMS to the duty phone, then the alarm (7 s).
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(20), |r| {
        r.iter().any(|r| r.value["change"]["type"] == "alarm")
    })?;
    let took = start.elapsed();
    let steps: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r.value["change"]["type"] == "escalation_started")
        .map(|r| {
            let at =
                chrono::DateTime::parse_from_rfc3339(r.value["at"].as_str().unwrap_or_default())
                    .map(|t| t.timestamp_millis())
                    .unwrap_or_default();
            (r.ce_id().to_owned(), at as u64)
        })
        .collect();
    assert_eq!(steps.len(), 2, "{records:?}");
    assert!(
        records.iter().any(|r| r.value["change"]["type"] == "alarm"),
        "alarm at 7 s"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let texts = carrier.texts();
    assert_eq!(texts.len(), 2, "one SMS per step: {texts:?}");
    for t in &texts {
        assert_eq!(t.body["to"], "13800000119");
        let text = t.body["text"].as_str().unwrap_or_default();
        assert!(text.contains("火灾") && text.contains("ZH"), "{text}");
    }
    assert_eq!(carrier.bad_signatures(), 0);
    // Each text's outcome is on the status topic.
    let statuses = consume(
        &broker.bootstrap(),
        SMS_STATUS,
        Duration::from_secs(10),
        |r| r.len() >= 2,
    )?;
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.value["state"] == "sent" && s.value["reference"] == json!(id))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_an_acknowledgement_stops_the_clock() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let carrier = carrier::Carrier::start().await?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            linkage_escalation_secs: vec![3],
            linkage_alarm_secs: 5,
            linkage_targets: vec![("119".into(), None, Some("13800000119".into()))],
            sms_outbound_url: Some(carrier.url.clone()),
            ..GatewayOptions::default()
        },
    )?;
    let mut op = operator(&gw, "119:op7").await?;
    next_frame(&mut op, Duration::from_secs(5)).await?;
    let _chat = fire_in_chat(&gw).await?;
    let notice = next_frame(&mut op, Duration::from_secs(5)).await?;
    let id = notice["notice"]["notice_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // A supervisor acknowledges it on the admin API for a 119 desk reached by phone.
    let http = reqwest::Client::new();
    let listed: Value = http
        .get(gw.admin_url("/notices"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["notices"][0]["notice_id"], json!(id), "{listed}");
    let acked = http
        .post(gw.admin_url(&format!("/notices/{id}/ack")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"by": "supervisor-7"}))
        .send()
        .await?;
    assert_eq!(acked.status().as_u16(), 200);
    let acked: Value = acked.json().await?;
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged"]["via"], "api");
    let shown = next_frame(&mut op, Duration::from_secs(5)).await?;
    assert_eq!(
        shown["notice"]["state"], "acknowledged",
        "the feed shows it"
    );
    let unknown = http
        .post(gw.admin_url("/notices/not-a-notice/ack"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"by": "supervisor-7"}))
        .send()
        .await?;
    assert_eq!(unknown.status().as_u16(), 404);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(3), |_| {
        false
    })?;
    let changes: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["change"]["type"].as_str())
        .collect();
    assert_eq!(
        changes,
        ["opened", "acknowledged"],
        "no escalation, no alarm after the ack"
    );
    assert!(carrier.texts().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_the_owner_killed_the_other_instance_escalates_on_time_once() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let carrier = carrier::Carrier::start().await?;
    let opts = || GatewayOptions {
        linkage_escalation_secs: vec![12],
        linkage_alarm_secs: 30,
        linkage_targets: vec![("119".into(), None, Some("13800000119".into()))],
        sms_outbound_url: Some(carrier.url.clone()),
        ..GatewayOptions::default()
    };
    let mut a = Gateway::start(&broker.bootstrap(), opts())?;
    let mut b = Gateway::start(&broker.bootstrap(), opts())?;
    let http = reqwest::Client::new();
    // Wait until each instance hears the other.
    let members = |body: &Value| body["notices"]["members"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ra: Value = http
            .get(a.admin_url("/readyz"))
            .send()
            .await?
            .json()
            .await?;
        let rb: Value = http
            .get(b.admin_url("/readyz"))
            .send()
            .await?
            .json()
            .await?;
        if members(&ra) == 2 && members(&rb) == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the instances do not hear each other: {ra} {rb}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _chat = fire_in_chat(&a).await?;
    let detected = Instant::now();
    let id = the_notice(&broker)?;
    // Find the owner and kill it.
    let mut owner = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner.is_none() {
        for (name, gw) in [("a", &a), ("b", &b)] {
            let r: Value = http
                .get(gw.admin_url("/readyz"))
                .send()
                .await?
                .json()
                .await?;
            if r["notices"]["clocks"]
                .as_array()
                .is_some_and(|c| c.contains(&json!(id)))
            {
                owner = Some(name);
            }
        }
        if Instant::now() > deadline {
            bail!("no instance owns notice {id}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor = if owner == Some("a") {
        a.kill9();
        &b
    } else {
        b.kill9();
        &a
    };
    eprintln!(
        "owner {owner:?} killed {:?} after detection",
        detected.elapsed()
    );
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(40), |r| {
        r.iter()
            .any(|r| r.value["change"]["type"] == "escalation_started")
    })?;
    let escalated = detected.elapsed();
    let steps: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.value["change"]["type"] == "escalation_started")
        .map(Received::ce_id)
        .collect();
    let clock_log: Vec<String> = survivor
        .log()
        .lines()
        .filter(|l| l.contains("escalat") || l.contains("Members"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        steps.len(),
        1,
        "escalated once: {records:?}\nsurvivor: {clock_log:#?}"
    );
    eprintln!("escalated by the survivor {escalated:?} after detection (due at 12 s)");
    assert!(
        escalated < Duration::from_secs(15),
        "on time: {escalated:?}"
    );
    // One text, whatever retries happened.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let texts = carrier.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let log = survivor.log();
    assert!(
        log.contains("Urgent notice escalated"),
        "the survivor escalated: {log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_the_escalation_call_plays_the_notice_to_the_119_line_and_1_acknowledges()
-> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let carrier = carrier::Carrier::start().await?;
    let line_port = e2e::sip::free_udp_tcp_port();
    // The line's audio comes to this socket: the test hears what the 119 desk hears.
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    rtp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let rtp_port = rtp.local_addr()?.port().to_string();
    let line = e2e::sip::Sipp::agent(
        "linkage-line.xml",
        line_port,
        &["-key", "rtp_port", &rtp_port],
    )?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sip: Some(e2e::sip::SipOptions::new(e2e::sip::free_udp_tcp_port())),
            linkage_escalation_secs: vec![2],
            linkage_alarm_secs: 60,
            linkage_targets: vec![(
                "119".into(),
                Some(format!("sip:119@127.0.0.1:{line_port}")),
                Some("13800000119".into()),
            )],
            sms_outbound_url: Some(carrier.url.clone()),
            ..GatewayOptions::default()
        },
    )?;
    let _chat = fire_in_chat(&gw).await?;
    // The notice's audio: 20 ms PCMU packets with sound in them.
    let heard = tokio::task::spawn_blocking(move || {
        let (mut packets, mut loud) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(12);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline && packets < 100 {
            if let Ok((n, _)) = rtp.recv_from(&mut buf)
                && n == 172
                && buf[1] & 0x7f == 0
            {
                packets += 1;
                // μ-law bytes far from silence (0xFF/0x7F) carry speech.
                loud += buf[12..n].iter().filter(|b| (**b & 0x7f) < 0x60).count();
            }
        }
        (packets, loud)
    })
    .await?;
    assert!(
        heard.0 >= 100,
        "the line heard the notice: {heard:?}; log: {}",
        gw.log()
            .lines()
            .filter(|l| l.contains("inkage")
                || l.contains("escalat")
                || l.contains("WARN")
                || l.contains("channel_sip"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(heard.1 > 1000, "and it was not silence: {heard:?}");
    line.expect_ok(Duration::from_secs(40))?;
    let records = consume(&broker.bootstrap(), NOTICES, Duration::from_secs(10), |r| {
        r.iter()
            .any(|r| r.value["change"]["type"] == "acknowledged")
    })?;
    let started = records
        .iter()
        .find(|r| r.value["change"]["type"] == "escalation_started")
        .map(|r| r.value["change"]["via"].clone());
    assert_eq!(started, Some(json!(["call", "sms"])), "{records:?}");
    let call = records
        .iter()
        .find(|r| r.value["change"]["type"] == "escalation_call")
        .map(|r| r.value["change"]["outcome"].clone());
    assert_eq!(call, Some(json!("acknowledged")));
    let ack = records
        .iter()
        .find(|r| r.value["change"]["type"] == "acknowledged")
        .map(|r| (r.value["change"]["via"].clone(), r.value["by"].clone()));
    assert_eq!(ack, Some((json!("call"), json!("call:119"))));
    assert_eq!(carrier.texts().len(), 1, "and the duty phone got its SMS");
    Ok(())
}

/// Issue 21: a text naming two dangers reaches both linkages, each notice with its own
/// reasons; then a candidate recognition is tried on the recorded contacts with
/// `gateway replay-recognition`: the report counts the notices it gains and loses and
/// shows the texts masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art15_two_dangers_reach_both_linkages_and_a_candidate_is_replayed() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let mut op119 = operator(&gw, "119:op1").await?;
    let mut op120 = operator(&gw, "120:op2").await?;
    for op in [&mut op119, &mut op120] {
        assert_eq!(
            next_frame(op, Duration::from_secs(5)).await?["type"],
            "snapshot"
        );
    }
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("kitchen-visitor", Some("13800006666")).await?;
    let ack = chat
        .say("m1", "厨房起火了，我奶奶去扑火，手臂烧伤了一大片，快来")
        .await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    for (op, target, kind, reason) in [
        (&mut op119, "119", "fire", "fire: fire (起火)"),
        (&mut op120, "120", "injury", "injury: "),
    ] {
        let frame = next_frame(op, Duration::from_secs(5)).await?;
        let notice = &frame["notice"];
        assert_eq!(
            (notice["target"].as_str(), notice["kind"].as_str()),
            (Some(target), Some(kind)),
            "{frame}"
        );
        let reasons = notice["reasons"].as_array().cloned().unwrap_or_default();
        assert!(
            !reasons.is_empty()
                && reasons
                    .iter()
                    .all(|r| r.as_str().is_some_and(|r| r.starts_with(kind)))
                && reasons
                    .iter()
                    .any(|r| r.as_str().is_some_and(|r| r.starts_with(reason))),
            "each notice with its own reasons: {frame}"
        );
    }
    // Two more texts: a passport question (no notice) and an estate without water.
    let ack = chat.say("m2", "请问在哪里办理护照").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ack = chat.say("m3", "我们整个小区从早上就停水了").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(10),
        |r| r.len() >= 3,
    )?;

    // The candidate gains a notice on the passport question and loses the outage.
    let shipped = routing::recognize::DEFAULT_RECOGNITION;
    let candidate = shipped
        .replacen(
            "distress = [\"救命\",",
            "distress = [\"办理护照\", \"救命\",",
            1,
        )
        .replace(
            "\"water_out\", \"area|no_notice|place\"",
            "\"water_out\", \"dead_fish\"",
        )
        .replace(
            "[\"off_for_long\", \"utility_water\", \"area|place\"]",
            "[\"off_for_long\", \"utility_water\", \"dead_fish\"]",
        );
    assert_ne!(candidate, shipped);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("candidate.toml");
    std::fs::write(&path, &candidate)?;
    let out = std::process::Command::new(gateway_binary())
        .args(["replay-recognition", "--brokers", &broker.bootstrap()])
        .arg("--candidate")
        .arg(&path)
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("1 gained a notice, 1 lost every notice, 0 to other targets"),
        "{report}"
    );
    assert!(report.contains("110: +1 -0"), "{report}");
    assert!(report.contains("水务局: +0 -1"), "{report}");
    assert!(
        report.contains("- -> 110:distress") && report.contains("水务局:water_outage -> -"),
        "{report}"
    );
    // Texts masked: the listed words stay, a citizen's other words and numbers do not.
    assert!(
        report.contains("○○○○办理护照") && !report.contains("13800006666"),
        "{report}"
    );
    // The fire and the injury are read alike either way: not in the changes.
    assert!(!report.contains("厨房"), "{report}");
    Ok(())
}
