//! Closing the loop with the citizen end to end (Arts. 13, 16, 17) with real peers: tansu,
//! PostgreSQL, the gateway, the ticket service, sipp as the citizen's phone, and a small
//! HTTP server standing in for the carrier's outbound SMS API.
//!
//! A ticket is replied and closed; the carrier receives the result SMS and then the
//! survey; the citizen's SMS "4" rates it dissatisfied, which opens a revisit; the
//! gateway's automated call reaches sipp, which presses 2, and the rating is recorded. A
//! chat ticket whose citizen is back in the chat is asked there and answered there. A
//! second ticket's survey waits out a carrier down for a minute (nothing lost, nothing
//! doubled, and its 24-hour window, shortened to 20 s here, starts only when the text is
//! sent), then counts as satisfied. A third ticket's texts are pending when the gateway is
//! SIGKILLed; after the restart each is sent once.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use e2e::postgres::Postgres;
use e2e::tickets::{ServiceOptions, TicketService};
use e2e::*;
use serde_json::{Value, json};

const UNIT: &str = "xiangzhou";

/// Sends an SMS from `from` through the gateway's webhook; returns the reference given.
async fn sms(
    gw: &Gateway,
    http: &reqwest::Client,
    id: &str,
    from: &str,
    text: &str,
) -> Result<String> {
    let (status, body) = gw.send_sms(http, id, from, text).await?;
    if status != 200 {
        bail!("webhook answered {status}: {body}");
    }
    Ok(body["ticket_ref"].as_str().unwrap_or_default().to_owned())
}

/// Dispatches, accepts, replies and closes a ticket through the API.
async fn close(svc: &TicketService, r: &str) -> Result<()> {
    let (st, b) = svc
        .send(
            "PATCH",
            &format!("/tickets/{r}"),
            "agent:a1",
            &json!({"kind": "complaint"}),
        )
        .await?;
    if st != 200 {
        bail!("confirming the kind: {st} {b}");
    }
    for (path, who, body) in [
        (
            "dispatch",
            "agent:a1",
            json!({"lead_unit": UNIT, "co_units": []}),
        ),
        ("accept", "unit:xiangzhou:p1", json!({})),
        (
            "reply",
            "unit:xiangzhou:p1",
            json!({"handled_at": "2026-12-01 15:00", "process": "到现场更换灯具", "result": "路灯已修复",
                   "legal_basis": "《珠海市城市照明管理办法》"}),
        ),
        ("reply-decision", "agent:a1", json!({"accept": true})),
    ] {
        let (st, b) = svc
            .send("POST", &format!("/tickets/{r}/{path}"), who, &body)
            .await?;
        if st != 200 {
            bail!("{path}: {st} {b}");
        }
    }
    Ok(())
}

/// Polls the ticket's follow-up until `done` holds.
async fn followup_until(
    svc: &TicketService,
    r: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let (st, f) = svc
            .get(&format!("/tickets/{r}/followup"), "agent:a1")
            .await?;
        if st == 200 && done(&f) {
            return Ok(f);
        }
        if Instant::now() > deadline {
            bail!(
                "follow-up of {r} not there in {within:?}: {f}\nservice log:\n{}",
                svc.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The carrier's texts about `r`, in the order they arrived.
fn texts_about(carrier: &carrier::Carrier, r: &str) -> Vec<carrier::Text> {
    let mut t: Vec<carrier::Text> = carrier
        .texts()
        .into_iter()
        .filter(|t| t.body["text"].as_str().is_some_and(|x| x.contains(r)))
        .collect();
    t.sort_by_key(|t| t.at);
    t
}

async fn wait_texts(
    carrier: &carrier::Carrier,
    r: &str,
    n: usize,
    within: Duration,
) -> Result<Vec<carrier::Text>> {
    let deadline = Instant::now() + within;
    loop {
        let t = texts_about(carrier, r);
        if t.len() >= n {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("{} of {n} texts about {r} in {within:?}: {t:?}", t.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art13_art16_art17_the_loop_with_the_citizen() -> Result<()> {
    let broker = Broker::start(Storage::Memory)?;
    let pg = Postgres::start()?;
    let carrier = carrier::Carrier::start().await?;
    let phone_port = e2e::sip::free_udp_tcp_port();
    let phone = e2e::sip::Sipp::agent("revisit-citizen.xml", phone_port, &[])?;
    let gw_opts = || GatewayOptions {
        sip: Some(e2e::sip::SipOptions {
            revisit: Some((format!("sip:{{number}}@127.0.0.1:{phone_port}"), 20)),
            ..e2e::sip::SipOptions::new(e2e::sip::free_udp_tcp_port())
        }),
        sms_outbound_url: Some(carrier.url.clone()),
        ..GatewayOptions::default()
    };
    let mut gw = Gateway::start(&broker.bootstrap(), gw_opts())?;
    let svc = TicketService::start(
        &broker.bootstrap(),
        &pg.url(),
        ServiceOptions {
            clocks_ms: 200,
            followup: "survey_window_secs = 20\nrevisit_mode = \"call\"\nrevisit_retry_secs = 5\nrevisit_result_timeout_secs = 120".into(),
            ..ServiceOptions::default()
        },
    )?;
    let http = reqwest::Client::new();

    // 1. A ticket by SMS, handled and closed.
    let number = "13800138001";
    let r1 = sms(
        &gw,
        &http,
        "m-1",
        number,
        "凤凰路的路灯坏了三天了，晚上很黑",
    )
    .await?;
    svc.wait_ticket(&r1, Duration::from_secs(20)).await?;
    close(&svc, &r1).await?;
    // Art. 13 then Art. 16: the result SMS, then the survey, to the citizen's number.
    let t = wait_texts(&carrier, &r1, 2, Duration::from_secs(20)).await?;
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(
        t[0].body["text"]
            .as_str()
            .is_some_and(|x| x.contains("路灯已修复")),
        "the result first: {t:?}"
    );
    assert!(
        t[1].body["text"]
            .as_str()
            .is_some_and(|x| x.contains("1非常满意")),
        "then the survey: {t:?}"
    );
    assert!(t.iter().all(|x| x.body["to"] == number));

    // 2. The citizen answers "4": dissatisfied; the reply makes no ticket; a revisit opens,
    // and the gateway calls: sipp answers and presses 2.
    let reply_ref = sms(&gw, &http, "m-2", number, "4").await?;
    let f = followup_until(&svc, &r1, Duration::from_secs(60), |f| {
        f["revisits"][0]["state"] == "done"
    })
    .await?;
    assert_eq!(f["revisits"][0]["outcome"], "rated", "{f}");
    assert_eq!(f["revisits"][0]["attempts"], 1, "{f}");
    assert_eq!(f["surveys"][0]["rating"], "satisfied", "{f}");
    assert_eq!(f["surveys"][0]["rating_source"], "revisit_call", "{f}");
    assert_eq!(f["replies"][0]["text"], "4");
    let (st, _) = svc
        .get(&format!("/tickets/{reply_ref}"), "agent:a1")
        .await?;
    assert_eq!(st, 404, "a survey reply is not a ticket");
    phone.expect_ok(Duration::from_secs(30))?;
    let history: Vec<String> = {
        let (_, h) = svc
            .get(&format!("/tickets/{r1}/history"), "agent:a1")
            .await?;
        h["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for want in [
        "result_notified",
        "survey_sent",
        "rated",
        "revisit_opened",
        "revisit_ended",
    ] {
        assert!(history.contains(&want.to_owned()), "{want} in {history:?}");
    }
    assert!(
        !gw.log().contains(number),
        "no number in the gateway's log (Art. 21)"
    );
    assert!(!svc.log().contains(number), "nor in the service's");

    // 2b. A chat ticket, its citizen back in the chat when it closes: the survey is asked
    // in the open session, not by SMS, and answered there (Art. 16).
    let number4 = "13800138004";
    let mut chat = ChatClient::connect(&gw.chat_url()).await?;
    chat.open("visitor-4", Some(number4)).await?;
    chat.say("c1", "网上反映：我们小区的路灯一直不亮").await?;
    let (ended, _) = chat.end().await?;
    let r4 = ended["ticket_ref"].as_str().unwrap_or_default().to_owned();
    svc.wait_ticket(&r4, Duration::from_secs(20)).await?;
    let mut back = ChatClient::connect(&gw.chat_url()).await?;
    back.open("visitor-4", Some(number4)).await?;
    close(&svc, &r4).await?;
    let asked = back.recv_json().await?;
    assert_eq!(
        (
            asked["type"].as_str(),
            asked["reference"].as_str(),
            asked["asks_rating"].as_bool()
        ),
        (Some("message"), Some(r4.as_str()), Some(true)),
        "{asked}"
    );
    back.send_json(json!({"type": "rating", "id": "r1", "reference": r4, "answer": "2"}))
        .await?;
    assert_eq!(back.recv_json().await?["type"], "ack");
    let f4 = followup_until(&svc, &r4, Duration::from_secs(30), |f| {
        f["surveys"][0]["state"] == "rated"
    })
    .await?;
    assert_eq!(
        (
            f4["surveys"][0]["via"].as_str(),
            f4["surveys"][0]["rating"].as_str(),
            f4["surveys"][0]["rating_source"].as_str()
        ),
        (Some("chat"), Some("satisfied"), Some("chat_reply")),
        "{f4}"
    );
    // The result SMS went to the number given in the chat; no survey SMS did.
    let t4 = wait_texts(&carrier, &r4, 1, Duration::from_secs(20)).await?;
    assert_eq!(t4.len(), 1, "{t4:?}");
    assert!(
        t4[0].body["text"]
            .as_str()
            .is_some_and(|x| x.contains("路灯已修复"))
    );

    // 3. The carrier is down for a minute while a second ticket closes: its texts wait,
    // and its survey's window has not started (nothing was sent).
    let number2 = "13800138002";
    let r2 = sms(
        &gw,
        &http,
        "m-3",
        number2,
        "小区门口的垃圾一个星期没人清理了",
    )
    .await?;
    svc.wait_ticket(&r2, Duration::from_secs(20)).await?;
    carrier.set_failing(true);
    close(&svc, &r2).await?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(texts_about(&carrier, &r2).is_empty());
    let (_, f2) = svc
        .get(&format!("/tickets/{r2}/followup"), "agent:a1")
        .await?;
    assert_eq!(
        f2["surveys"][0]["state"], "asked",
        "no window before the text is sent: {f2}"
    );
    carrier.set_failing(false);
    let t2 = wait_texts(&carrier, &r2, 2, Duration::from_secs(30)).await?;
    assert_eq!(t2.len(), 2, "each text once: {t2:?}");
    // No reply within the (shortened) window: satisfied.
    let f2 = followup_until(&svc, &r2, Duration::from_secs(60), |f| {
        f["surveys"][0]["state"] == "defaulted"
    })
    .await?;
    assert_eq!(f2["surveys"][0]["rating"], "satisfied");
    assert!(f2["revisits"].as_array().is_some_and(Vec::is_empty));

    // 4. Texts pending when the gateway is SIGKILLed are sent once after the restart.
    let number3 = "13800138003";
    let r3 = sms(&gw, &http, "m-4", number3, "公园的健身器材坏了").await?;
    svc.wait_ticket(&r3, Duration::from_secs(20)).await?;
    carrier.set_failing(true);
    close(&svc, &r3).await?;
    // The gateway has taken them (it is retrying against the failing carrier).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw.log().contains("Outbound SMS not sent yet") {
        if Instant::now() > deadline {
            bail!("the gateway never tried: {}", gw.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.kill9();
    carrier.set_failing(false);
    gw.restart()?;
    let t3 = wait_texts(&carrier, &r3, 2, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t3_again = texts_about(&carrier, &r3);
    assert_eq!(t3_again.len(), 2, "once each: {t3:?} then {t3_again:?}");
    assert_eq!(carrier.bad_signatures(), 0);
    // Nothing doubled anywhere: one text per request id over the whole run.
    let all = carrier.texts();
    let keys: std::collections::HashSet<&str> = all.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys.len(), all.len());
    assert_eq!(all.len(), 7, "{all:?}");
    Ok(())
}
