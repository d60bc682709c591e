//! Art. 9 restrictions end to end: two gateway processes on one tansu broker; a
//! restriction proposed and confirmed through one instance's admin API holds on the
//! other's phone, chat and SMS within a second, survives a restart, and lifting it
//! restores access. The API's bad input gets RFC 9457 problems.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use e2e::sip::*;
use e2e::*;
use serde_json::{Value, json};

const RESTRICTIONS: &str = "hotline.restrictions.v1";
const AUDIT: &str = "hotline.audit.v1";
const NUMBER: &str = "13900007777";

/// One admin API call with the admin token; returns status, content type and JSON body.
async fn api(
    http: &reqwest::Client,
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String, Value)> {
    let mut req = http
        .request(method, gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await?;
    Ok((
        status,
        ctype,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn gateway_with_sip(broker: &Broker) -> Result<(Gateway, u16)> {
    let agent_port = free_udp_tcp_port();
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sip: Some(SipOptions::new(agent_port)),
            rust_log: "info,gateway=debug".into(),
            ..GatewayOptions::default()
        },
    )?;
    Ok((gw, agent_port))
}

/// Polls `GET /restrictions/{id}` on `gw` until its state is `state`; returns how long
/// it took.
async fn wait_state(
    http: &reqwest::Client,
    gw: &Gateway,
    id: &str,
    state: &str,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let (status, _, body) = api(
            http,
            gw,
            reqwest::Method::GET,
            &format!("/restrictions/{id}"),
            None,
        )
        .await?;
        if status == 200 && body["state"] == state {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("restriction {id} not {state} within {within:?}: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A chat `open` with the number; returns the first frame or the close.
async fn chat_open(gw: &Gateway, message: Option<(&str, &str)>) -> Result<Result<Value, Closed>> {
    let mut c = ChatClient::connect(&gw.chat_url()).await?;
    let mut frame = json!({"type": "open", "visitor": "v-restricted", "phone": NUMBER});
    if let Some((id, text)) = message {
        frame["message"] = json!({"id": id, "text": text});
    }
    c.send_json(frame).await?;
    let first = c.frame_or_close().await?;
    if first.is_ok() && message.is_some() {
        let ack = c.recv_json().await?;
        assert_eq!(
            ack["type"], "ack",
            "the first message is acknowledged: {ack}"
        );
    }
    Ok(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art9_a_restriction_confirmed_on_one_instance_holds_on_the_other_within_a_second()
-> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let (gw1, agent1) = gateway_with_sip(&broker)?;
    let (mut gw2, _agent2) = gateway_with_sip(&broker)?;
    let http = reqwest::Client::new();

    // An agent proposes; a proposal is not enforced.
    let (status, _, proposed) = api(
        &http,
        &gw1,
        reqwest::Method::POST,
        "/restrictions",
        Some(json!({
            "identity": {"kind": "phone", "value": "+86 139-0000-7777"},
            "reason": "insulting_staff",
            "evidence": {"excerpt": "你们这帮废物，我天天打到你们没法干活", "ticket_ref": "ZH20261130ABCDEF0123"},
            "proposed_by": "agent-1001"
        })),
    )
    .await?;
    assert_eq!(status, 201, "{proposed}");
    assert_eq!(proposed["state"], "proposed");
    assert_eq!(proposed["identity_masked"], "139****7777");
    assert!(
        !proposed.to_string().contains(NUMBER),
        "no number in clear: {proposed}"
    );
    let id = proposed["restriction_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        chat_open(&gw2, None).await?.is_ok(),
        "a proposal does not restrict"
    );

    // The proposer cannot confirm; a supervisor can.
    let confirm = |by: &str| json!({"confirmed_by": by});
    let path = format!("/restrictions/{id}/confirm");
    let (status, ctype, problem) = api(
        &http,
        &gw1,
        reqwest::Method::POST,
        &path,
        Some(confirm("agent-1001")),
    )
    .await?;
    assert_eq!(
        (status, ctype.as_str()),
        (422, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(problem["type"], "urn:12345:problem:second-person-required");
    let (status, _, active) = api(
        &http,
        &gw1,
        reqwest::Method::POST,
        &path,
        Some(confirm("supervisor-7")),
    )
    .await?;
    let confirmed_at = Instant::now();
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["state"], "active");
    let from =
        chrono::DateTime::parse_from_rfc3339(active["confirmed_at"].as_str().unwrap_or_default())?;
    let to =
        chrono::DateTime::parse_from_rfc3339(active["expires_at"].as_str().unwrap_or_default())?;
    assert_eq!(
        (to - from).num_seconds(),
        30 * 86_400,
        "Art. 9: 30 natural days"
    );
    assert!(
        active["shanghai"]["expires_at"]
            .as_str()
            .is_some_and(|s| s.ends_with("+08:00")),
        "{active}"
    );

    // The other instance knows within a second.
    let took = wait_state(&http, &gw2, &id, "active", Duration::from_secs(5)).await?;
    assert!(took < Duration::from_secs(1), "propagation took {took:?}");
    eprintln!("restriction propagated to the other instance in {took:?}");

    // One second after the confirmation the caller's call on the other instance hears the
    // announcement and gets 603; the chat is refused with 4403; the SMS makes no ticket.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(confirmed_at.elapsed())).await;
    Sipp::citizen(
        "citizen-restricted.xml",
        "127.0.0.1",
        gw2.sip_port,
        NUMBER,
        &[],
    )?
    .expect_ok(Duration::from_secs(60))?;
    match chat_open(&gw2, None).await? {
        Err(closed) => {
            assert_eq!(closed.code, 4403, "{closed:?}");
            assert!(closed.reason.contains("北京时间"), "{closed:?}");
        }
        Ok(frame) => bail!("a restricted citizen opened a chat: {frame}"),
    }
    let (status, receipt) = gw2
        .send_sms(&http, "restricted-1", NUMBER, "你们就是一群废物")
        .await?;
    assert_eq!(
        (status, receipt["status"].as_str()),
        (200, Some("rejected")),
        "{receipt}"
    );

    // An emergency is never turned away (Art. 15): the chat opens with the restriction
    // noted, the SMS makes an urgent ticket.
    let session = chat_open(&gw2, Some(("e1", "我家楼下着火了，有人被困"))).await?;
    assert!(session.is_ok(), "{session:?}");
    let (status, receipt) = gw2
        .send_sms(&http, "restricted-2", NUMBER, "小区燃气泄漏了，快来人")
        .await?;
    assert_eq!(
        (status, receipt["status"].as_str()),
        (200, Some("accepted")),
        "{receipt}"
    );

    // A restarted instance rebuilds the book from the topic before it admits anybody.
    gw2.restart()?;
    let ready: Value = http
        .get(gw2.admin_url("/readyz"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(ready["restrictions"]["synced"], true, "{ready}");
    assert!(matches!(chat_open(&gw2, None).await?, Err(c) if c.code == 4403));

    // Lifting on the second instance restores access on the first.
    let (status, _, lifted) = api(
        &http,
        &gw2,
        reqwest::Method::POST,
        &format!("/restrictions/{id}/lift"),
        Some(json!({"by": "supervisor-7", "reason": "复核：来电人已道歉"})),
    )
    .await?;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["state"], "lifted");
    assert_eq!(lifted["end_reason"], "复核：来电人已道歉");
    let took = wait_state(&http, &gw1, &id, "lifted", Duration::from_secs(5)).await?;
    assert!(took < Duration::from_secs(1), "propagation took {took:?}");
    call_through(
        &gw1,
        agent1,
        ("agent-answer.xml", &[]),
        ("citizen-call.xml", NUMBER, &[]),
    )?;
    assert!(
        chat_open(&gw1, None).await?.is_ok(),
        "lifting restores the chat"
    );

    // On Kafka: the compacted topic keyed by citizen key, no number in clear; the audit
    // topic has every step.
    let key = chat_key(NUMBER);
    let records = consume(
        &broker.bootstrap(),
        RESTRICTIONS,
        Duration::from_secs(10),
        |r| r.iter().any(|r| r.value["state"] == "lifted"),
    )?;
    let states: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["state"].as_str())
        .collect();
    assert_eq!(states, ["proposed", "active", "lifted"], "{records:?}");
    for r in &records {
        assert_eq!(r.key, key, "keyed by the citizen key");
        assert_eq!(r.headers["ce_type"], "cn.gov.zhuhai.12345.restriction.v1");
        let raw = format!("{:?} {}", r.headers, r.value);
        assert!(!raw.contains(NUMBER), "personal data: {raw}");
    }
    let audit = consume(&broker.bootstrap(), AUDIT, Duration::from_secs(10), |r| {
        r.len() >= 3
    })?;
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .filter_map(|r| Some((r.value["action"].as_str()?, r.value["actor"].as_str()?)))
        .collect();
    assert_eq!(
        actions,
        [
            ("restriction.proposed", "agent-1001"),
            ("restriction.confirmed", "supervisor-7"),
            ("restriction.lifted", "supervisor-7"),
        ]
    );

    // The SMS contacts: the rejected one carries the restriction and no draft followed.
    let contacts = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(10),
        |r| r.iter().filter(|r| r.value["channel"] == "sms").count() >= 2,
    )?;
    let sms: Vec<&Value> = contacts
        .iter()
        .filter(|r| r.value["channel"] == "sms")
        .map(|r| &r.value)
        .collect();
    let rejected = sms.iter().find(|c| c["channel_ref"] == "restricted-1");
    assert_eq!(
        rejected.map(|c| &c["rejected"]),
        Some(&json!("restricted")),
        "{sms:?}"
    );
    assert_eq!(
        rejected.map(|c| c["restriction"]["restriction_id"].as_str() == Some(id.as_str())),
        Some(true)
    );
    let drafts = consume(&broker.bootstrap(), DRAFTS, Duration::from_secs(10), |r| {
        r.iter().filter(|r| r.value["channel"] == "sms").count() >= 1
    })?;
    let sms_drafts: Vec<&Value> = drafts
        .iter()
        .filter(|r| r.value["channel"] == "sms")
        .map(|r| &r.value)
        .collect();
    assert_eq!(
        sms_drafts.len(),
        1,
        "only the emergency made a ticket: {sms_drafts:?}"
    );
    assert_eq!(sms_drafts[0]["urgency"], "emergency");
    assert_eq!(sms_drafts[0]["restriction"]["restriction_id"], json!(id));
    Ok(())
}

/// The documented citizen key of a phone number (an oracle, not the gateway's code).
fn chat_key(number: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(CITIZEN_SECRET.as_bytes())
        .expect("any key length");
    mac.update(b"phone:");
    mac.update(number.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restrictions_api_answers_bad_input_with_problems() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str, token: Option<&str>| {
        let mut req = http
            .post(gw.admin_url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let good = json!({
        "identity": {"kind": "chat_visitor", "value": "visitor-9"},
        "reason": "threatening_staff",
        "evidence": {"contacts": ["0193e5a0-0000-7000-8000-000000000001"]},
        "proposed_by": "agent-1"
    })
    .to_string();
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        ("/restrictions", good.clone(), None, 401, "unauthorized"),
        ("/restrictions", good.clone(), Some("wrong-token-0123456789"), 401, "unauthorized"),
        ("/restrictions", "{not json".into(), Some(ADMIN_TOKEN), 400, "malformed-request"),
        (
            "/restrictions",
            good.replace("threatening_staff", "being_rude"),
            Some(ADMIN_TOKEN),
            422,
            "malformed-request",
        ),
        (
            "/restrictions",
            good.replace("\"contacts\":[\"0193e5a0-0000-7000-8000-000000000001\"]", ""),
            Some(ADMIN_TOKEN),
            422,
            "invalid-field",
        ),
        (
            "/restrictions",
            json!({"identity": {"kind": "phone", "value": "not-a-number"}, "reason": "harassing_staff", "evidence": {"excerpt": "x"}, "proposed_by": "a"}).to_string(),
            Some(ADMIN_TOKEN),
            422,
            "invalid-field",
        ),
        (
            "/restrictions/not-an-id/confirm",
            json!({"confirmed_by": "s"}).to_string(),
            Some(ADMIN_TOKEN),
            404,
            "not-found",
        ),
        (
            "/restrictions/0193e5a0-0000-7000-8000-000000000001/lift",
            json!({"by": "s", "reason": "r"}).to_string(),
            Some(ADMIN_TOKEN),
            404,
            "not-found",
        ),
    ];
    for (path, body, token, want, slug) in cases {
        let resp = post(path, &body, token).await?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let problem: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{path} {body}: {problem}");
        assert_eq!(ctype, "application/problem+json", "{path}");
        assert_eq!(
            problem["type"],
            format!("urn:12345:problem:{slug}"),
            "{path} {body}: {problem}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    // A state change that does not apply: 409; a second proposal for the same citizen: 409.
    let (status, _, p) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        "/restrictions",
        serde_json::from_str(&good).ok(),
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    let id = p["restriction_id"].as_str().unwrap_or_default().to_owned();
    let (status, _, problem) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        &format!("/restrictions/{id}/lift"),
        Some(json!({"by": "s", "reason": "r"})),
    )
    .await?;
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("urn:12345:problem:wrong-state"))
    );
    let (status, _, problem) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        "/restrictions",
        serde_json::from_str(&good).ok(),
    )
    .await?;
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("urn:12345:problem:restriction-exists")),
        "{problem}"
    );
    // Lists: filter and limit checked.
    let (status, _, page) = api(
        &http,
        &gw,
        reqwest::Method::GET,
        "/restrictions?state=proposed&limit=10",
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    for bad in [
        "/restrictions?state=sleeping",
        "/restrictions?limit=0",
        "/restrictions?after=x",
    ] {
        let (status, ctype, problem) = api(&http, &gw, reqwest::Method::GET, bad, None).await?;
        assert!(
            (status == 400 || status == 422) && ctype == "application/problem+json",
            "{bad}: {status} {problem}"
        );
    }
    // An oversized body is refused before it is read whole.
    let big = json!({"proposed_by": "a", "x": "字".repeat(20_000)}).to_string();
    let resp = post("/restrictions", &big, Some(ADMIN_TOKEN)).await?;
    assert_eq!(resp.status().as_u16(), 413);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art9_abusive_words_in_chat_make_a_proposal_for_a_person_never_a_block() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("angry-visitor", Some("13900008888")).await?;
    let ack = chat.say("a1", "你们这帮废物，我再打一百次也没用").await?;
    assert_eq!(ack["type"], "ack", "the message itself is recorded: {ack}");
    // Repeating the insult while the proposal waits makes no second proposal.
    chat.say("a2", "废物！废物！").await?;
    let (status, _, page) = api(
        &http,
        &gw,
        reqwest::Method::GET,
        "/restrictions?state=proposed",
        None,
    )
    .await?;
    assert_eq!(status, 200);
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{page}");
    let p = &items[0];
    assert_eq!(p["proposal_source"], "abusive_language");
    assert_eq!(p["proposed_by"], "gateway");
    assert_eq!(p["reason"], "insulting_staff");
    assert_eq!(p["identity_masked"], "139****8888");
    assert!(
        p["evidence"]["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains("废物")),
        "{p}"
    );
    assert_eq!(p["evidence"]["contacts"][0], ack["contact_id"]);
    // Not a block: the same citizen still opens a chat.
    let mut again = ChatClient::connect(&gw.chat_url()).await?;
    again.open("angry-visitor", Some("13900008888")).await?;
    // A supervisor confirms it: now it holds.
    let id = p["restriction_id"].as_str().unwrap_or_default();
    let (status, _, active) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        &format!("/restrictions/{id}/confirm"),
        Some(json!({"confirmed_by": "supervisor-7"})),
    )
    .await?;
    assert_eq!(
        (status, active["state"].as_str()),
        (200, Some("active")),
        "{active}"
    );
    let mut refused = ChatClient::connect(&gw.chat_url()).await?;
    refused
        .send_json(json!({"type": "open", "visitor": "angry-visitor", "phone": "13900008888"}))
        .await?;
    assert!(matches!(refused.frame_or_close().await?, Err(c) if c.code == 4403));
    // The proposal and its audit are on Kafka.
    let audit = consume(&broker.bootstrap(), AUDIT, Duration::from_secs(10), |r| {
        r.len() >= 2
    })?;
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .filter_map(|r| Some((r.value["action"].as_str()?, r.value["actor"].as_str()?)))
        .collect();
    assert_eq!(
        actions,
        [
            ("restriction.proposed", "gateway"),
            ("restriction.confirmed", "supervisor-7")
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art9_a_restricted_caller_who_presses_1_reaches_an_agent_with_the_restriction_noted()
-> Result<()> {
    const CALLER: &str = "13900006666";
    let broker = Broker::start(Storage::Memory)?;
    let (gw, agent_port) = gateway_with_sip(&broker)?;
    let http = reqwest::Client::new();
    let (_, _, p) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        "/restrictions",
        Some(json!({
            "identity": {"kind": "phone", "value": CALLER},
            "reason": "threatening_staff",
            "evidence": {"excerpt": "你给我等着"},
            "proposed_by": "agent-1001"
        })),
    )
    .await?;
    let id = p["restriction_id"].as_str().unwrap_or_default().to_owned();
    let (status, _, _) = api(
        &http,
        &gw,
        reqwest::Method::POST,
        &format!("/restrictions/{id}/confirm"),
        Some(json!({"confirmed_by": "supervisor-7"})),
    )
    .await?;
    assert_eq!(status, 200);
    // Presses 1 during the announcement: put through to the agent, who answers.
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-restricted-emergency.xml", CALLER, &["-d", "2000"]),
    )?;
    let records = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(15),
        |r| r.iter().any(|r| r.value["content"]["phase"] == "ended"),
    )?;
    let phases: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["content"]["phase"].as_str())
        .collect();
    assert_eq!(phases, ["offered", "answered", "ended"], "{records:?}");
    let ended = &records[2].value;
    assert_eq!(ended["content"]["outcome"], "talked");
    assert_eq!(ended["restriction"]["restriction_id"], json!(id), "{ended}");
    assert!(
        gw.log()
            .contains("Restricted caller let through for an emergency"),
        "{}",
        gw.log()
    );
    Ok(())
}
