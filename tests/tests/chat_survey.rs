//! The Art. 16 survey of a chat ticket end to end: a message on the chat-outbound topic
//! as the ticket service publishes it, written by the real gateway into the citizen's
//! open chat session (a real WebSocket), the citizen's `rating` frame back as a
//! survey-reply contact, and the delivery reports on the chat-status topic.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;
use contract::{ChatOutbound, Event, SCHEMA_VERSION, TicketRef};
use e2e::{
    Broker, CONTACTS, ChatClient, DRAFTS, Gateway, GatewayOptions, Received, Storage, consume,
};
use serde_json::{Value, json};

/// The ticket service's messages into chat sessions.
const CHAT_OUTBOUND: &str = "hotline.chat-outbound.v1";
/// The gateway's reports on them.
const CHAT_STATUS: &str = "hotline.chat-status.v1";
/// The citizen's number.
const NUMBER: &str = "13800138000";
/// The survey's text.
const SURVEY: &str =
    "您反映的问题已办结，请对办理结果评价：1非常满意 2满意 3基本满意 4不满意 5非常不满意";

fn start() -> Result<(Broker, Gateway)> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    Ok((broker, gw))
}

/// A survey of `reference` for the citizen `key`, expiring `expires_in` from now.
fn survey(reference: &str, key: &str, expires_in: chrono::Duration) -> ChatOutbound {
    let now = Utc::now();
    ChatOutbound {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        reference: reference.into(),
        citizen_key: key.into(),
        purpose: "survey".into(),
        text: SURVEY.into(),
        asks_rating: true,
        requested_at: now,
        expires_at: now + expires_in,
    }
}

/// Publishes `m` on its topic as the ticket service does.
async fn publish(broker: &Broker, m: &ChatOutbound) -> Result<()> {
    e2e::tickets::produce_event_when_ready(
        &broker.bootstrap(),
        CHAT_OUTBOUND,
        Event::from(m.clone()),
    )
    .await
}

/// The records of `topic` that `mine` picks, read until `enough` of them are there or
/// `within` passes.
fn records(
    broker: &Broker,
    topic: &str,
    within: Duration,
    enough: usize,
    mine: impl Fn(&Received) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consume(&broker.bootstrap(), topic, left, |rs| {
            rs.iter().filter(|r| mine(r)).count() >= enough
        }) {
            Ok(rs) => return rs.into_iter().filter(|r| mine(r)).collect(),
            // The gateway creates its topics in the background.
            Err(_) if !left.is_zero() => std::thread::sleep(Duration::from_millis(500)),
            Err(_) => return Vec::new(),
        }
    }
}

/// The gateway's report on `m`.
fn status(broker: &Broker, gw: &Gateway, m: &ChatOutbound) -> Result<Received> {
    let id = m.id.to_string();
    let found = records(broker, CHAT_STATUS, Duration::from_secs(45), 1, |r| {
        r.value["request_id"] == json!(id)
    });
    match found.into_iter().next() {
        Some(r) => Ok(r),
        None => bail!(
            "no chat status for {id} in 45 s; gateway log:\n{}",
            chat_log(gw)
        ),
    }
}

/// The gateway's log lines about chat messages and trouble.
fn chat_log(gw: &Gateway) -> String {
    gw.log()
        .lines()
        .filter(|l| l.contains("hat") || l.contains("WARN") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The next frame, waiting up to `within` (the gateway takes its partitions of the
/// request topic a moment after it starts).
async fn next_frame(chat: &mut ChatClient, within: Duration) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        match chat.recv_json().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && e.to_string().contains("no frame") => {}
            Err(e) => return Err(e),
        }
    }
}

/// A session with the citizen's number that has said one thing; returns its ticket
/// reference and the citizen key the gateway gave it (read off its contact on Kafka).
async fn session_with_a_message(
    broker: &Broker,
    chat: &mut ChatClient,
    visitor: &str,
) -> Result<(String, String, Value)> {
    let session = chat.open(visitor, Some(NUMBER)).await?;
    let ticket_ref = session["ticket_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ack = chat.say("m1", "我家门口的路灯坏了一个星期了。").await?;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    let contact_id = ack["contact_id"].clone();
    let found = records(broker, CONTACTS, Duration::from_secs(30), 1, |r| {
        r.value["id"] == contact_id
    });
    let Some(contact) = found.into_iter().next() else {
        bail!("the message's contact is not on {CONTACTS}");
    };
    let key = contact.value["citizen"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The key is the phone's, as documented (docs/events.md#records).
    let keyer = contract::CitizenKeyer::new(e2e::CITIZEN_SECRET.as_bytes());
    assert_eq!(key, keyer.key(contract::IdentityKind::PhoneNumber, NUMBER));
    Ok((ticket_ref, key, contact_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art16_the_survey_reaches_the_open_session_and_the_rating_comes_back() -> Result<()> {
    let (broker, gw) = start()?;
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    let (session_ref, key, message_id) =
        session_with_a_message(&broker, &mut chat, "wx-openid-survey").await?;

    // The ticket surveyed is an earlier one of this citizen's.
    let rated = TicketRef::generate(Utc::now()).to_string();
    let m = survey(&rated, &key, chrono::Duration::minutes(10));
    publish(&broker, &m).await?;
    let frame = next_frame(&mut chat, Duration::from_secs(45)).await?;
    assert_eq!(
        frame,
        json!({"type": "message", "reference": rated, "purpose": "survey", "text": SURVEY, "asks_rating": true})
    );

    chat.send_json(json!({"type": "rating", "id": "r1", "reference": rated, "answer": "4"}))
        .await?;
    let ack = chat.recv_json().await?;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("r1")),
        "{ack}"
    );
    assert_eq!(ack["seq"], 2, "numbered with the session's contacts");

    // The rating is a contact of this session, keyed by the citizen, whose content names
    // the ticket rated.
    let reply_id = ack["contact_id"].clone();
    let found = records(&broker, CONTACTS, Duration::from_secs(30), 1, |r| {
        r.value["id"] == reply_id
    });
    let Some(reply) = found.into_iter().next() else {
        bail!("the survey reply is not on {CONTACTS}");
    };
    assert_eq!(reply.key, key);
    assert_eq!(reply.headers["ce_source"], "/gateway/e2e/chat");
    let v = &reply.value;
    assert_eq!(
        v["content"],
        json!({"type": "survey_reply", "ticket_ref": rated, "text": "4"})
    );
    assert_eq!(v["ticket_ref"], session_ref.as_str());
    assert_eq!(
        (v["sequence"].as_u64(), v["channel_ref"].as_str()),
        (Some(2), Some("r1"))
    );
    assert_eq!(v["citizen"]["key"], key.as_str());
    assert_eq!(v["channel"], "chat");

    // The same rating sent again (its ack lost) is the same contact.
    chat.send_json(json!({"type": "rating", "id": "r1", "reference": rated, "answer": "4"}))
        .await?;
    let again = chat.recv_json().await?;
    assert_eq!(again, ack);

    // Delivered, to one session; keyed and described as the contract says.
    let st = status(&broker, &gw, &m)?;
    assert_eq!(
        (st.value["state"].as_str(), st.value["sessions"].as_u64()),
        (Some("delivered"), Some(1)),
        "{}",
        st.value
    );
    assert_eq!(st.value["reference"], rated.as_str());
    assert_eq!(st.value["purpose"], "survey");
    assert_eq!(st.key, rated);
    assert_eq!(
        st.headers["ce_type"],
        "cn.gov.zhuhai.12345.chat_outbound_status.v1"
    );
    assert_eq!(st.headers["ce_source"], "/gateway/e2e/chat");

    // Nobody connected with this key: no open session. Expired: not written.
    let nobody = survey(&rated, &"0".repeat(32), chrono::Duration::minutes(10));
    publish(&broker, &nobody).await?;
    let st = status(&broker, &gw, &nobody)?;
    assert_eq!(
        (st.value["state"].as_str(), st.value["sessions"].as_u64()),
        (Some("no_open_session"), Some(0)),
        "{}",
        st.value
    );
    let late = survey(&rated, &key, chrono::Duration::seconds(-1));
    publish(&broker, &late).await?;
    let st = status(&broker, &gw, &late)?;
    assert_eq!(
        (st.value["state"].as_str(), st.value["sessions"].as_u64()),
        (Some("expired"), Some(0)),
        "{}",
        st.value
    );

    // The session's ticket is its message, not the rating of another ticket.
    let (ended, closed) = chat.end().await?;
    assert!(
        chat.skipped.is_empty(),
        "nothing else was written: {:?}",
        chat.skipped
    );
    assert_eq!(
        (ended["messages"].as_u64(), closed.code),
        (Some(1), 1000),
        "{ended}"
    );
    let drafts = records(&broker, DRAFTS, Duration::from_secs(30), 1, |r| {
        r.value["ticket_ref"] == json!(session_ref)
    });
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].value["contacts"], json!([message_id]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rating_frame_is_refused_and_records_nothing() -> Result<()> {
    let (broker, gw) = start()?;
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    let (_, _, message_id) = session_with_a_message(&broker, &mut chat, "wx-openid-bad").await?;
    let rated = TicketRef::generate(Utc::now()).to_string();

    // An answer that is no rating: an error frame, the socket stays open.
    chat.send_json(json!({"type": "rating", "id": "r1", "reference": rated, "answer": "我觉得还行但是路灯还是不亮该怎么办呢"}))
        .await?;
    let err = chat.recv_json().await?;
    assert_eq!(
        (
            err["type"].as_str(),
            err["id"].as_str(),
            err["code"].as_str(),
            err["retryable"].as_bool()
        ),
        (
            Some("error"),
            Some("r1"),
            Some("invalid_rating"),
            Some(false)
        ),
        "{err}"
    );
    let ack = chat.say("m2", "还有，路口的井盖松了。").await?;
    assert_eq!(
        ack["seq"], 2,
        "the refused rating took no sequence number: {ack}"
    );
    let second_message = ack["contact_id"].clone();

    // A reference that is no ticket reference: malformed, closed with 4400.
    chat.send_json(json!({"type": "rating", "id": "r2", "reference": "ZH 1/2", "answer": "4"}))
        .await?;
    let closed = chat.closed().await?;
    assert_eq!(closed.code, 4400, "{closed:?}");
    assert!(closed.reason.contains("reference"), "{closed:?}");

    // Only the two messages are on Kafka: no survey reply.
    let contacts = records(&broker, CONTACTS, Duration::from_secs(30), 2, |_| true);
    let ids: Vec<&Value> = contacts.iter().map(|r| &r.value["id"]).collect();
    assert_eq!(ids, vec![&message_id, &second_message]);
    std::thread::sleep(Duration::from_secs(2));
    let contacts = records(
        &broker,
        CONTACTS,
        Duration::from_secs(3),
        usize::MAX,
        |_| true,
    );
    assert!(
        contacts
            .iter()
            .all(|r| r.value["content"]["type"] == "text"),
        "{contacts:?}"
    );
    assert_eq!(contacts.len(), 2);
    drop(gw);
    Ok(())
}
