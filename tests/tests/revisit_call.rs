//! Art. 17 revisit calls end to end: a request on the revisit-calls topic as the ticket
//! service publishes it, the gateway's call through its SIP trunk to sipp playing the
//! citizen, and the result on the revisit-results topic.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;
use contract::{Event, RevisitCall, SCHEMA_VERSION, TicketRef};
use e2e::sip::{SipOptions, Sipp, free_udp_tcp_port};
use e2e::{
    Broker, Gateway, GatewayOptions, REVISIT_CALLS, REVISIT_RESULTS, Received, Storage, consume,
};
use serde_json::json;

/// The citizen's number: personal data, which must not reach the gateway's log.
const NUMBER: &str = "13912345678";
/// Seconds a revisit call rings in these tests.
const RING_SECS: u64 = 10;

/// A broker and a gateway whose revisit calls go to 127.0.0.1:`citizen_port`, logging
/// the SIP channel and the gateway at debug level (the number must not be there either).
fn start(citizen_port: u16) -> Result<(Broker, Gateway)> {
    let broker = Broker::start(Storage::Memory)?;
    let mut sip = SipOptions::new(free_udp_tcp_port());
    sip.revisit = Some((
        format!("sip:{{number}}@127.0.0.1:{citizen_port}"),
        RING_SECS,
    ));
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sip: Some(sip),
            rust_log: "info,gateway=debug,channel_sip=debug".into(),
            ..GatewayOptions::default()
        },
    )?;
    Ok((broker, gw))
}

/// A request for attempt `attempt`, expiring `expires_in` from now.
fn request(attempt: u32, expires_in: chrono::Duration) -> RevisitCall {
    let now = Utc::now();
    RevisitCall {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        ticket_ref: TicketRef::generate(now),
        attempt,
        requested_at: now,
        expires_at: now + expires_in,
        to: NUMBER.into(),
    }
}

/// Publishes `call` on its topic as the ticket service does.
async fn publish(broker: &Broker, call: &RevisitCall) -> Result<()> {
    e2e::tickets::produce_event_when_ready(
        &broker.bootstrap(),
        REVISIT_CALLS,
        Event::from(call.clone()),
    )
    .await
}

/// The results for `call` on the results topic, read for `within` or until one is there
/// (`first`).
fn results(broker: &Broker, call: &RevisitCall, within: Duration, first: bool) -> Vec<Received> {
    let id = call.id.to_string();
    let mine = |r: &Received| r.value["request_id"] == json!(id);
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consume(&broker.bootstrap(), REVISIT_RESULTS, left, |rs| {
            first && rs.iter().any(mine)
        }) {
            Ok(rs) => return rs.into_iter().filter(mine).collect(),
            // The gateway creates its topics in the background.
            Err(_) if !left.is_zero() => std::thread::sleep(Duration::from_millis(500)),
            Err(_) => return Vec::new(),
        }
    }
}

/// The one result for `call`, within `within`.
fn result(broker: &Broker, gw: &Gateway, call: &RevisitCall, within: Duration) -> Result<Received> {
    match results(broker, call, within, true).into_iter().next() {
        Some(r) => Ok(r),
        None => bail!(
            "no revisit result in {within:?}; gateway log:\n{}",
            revisit_log(gw)
        ),
    }
}

/// The gateway's log lines about revisit calls and SIP trouble.
fn revisit_log(gw: &Gateway) -> String {
    gw.log()
        .lines()
        .filter(|l| l.contains("evisit") || l.contains("WARN") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_number_not_logged(gw: &Gateway) {
    let log = gw.log();
    assert!(
        log.contains("Revisit"),
        "the revisit path logged: {}",
        revisit_log(gw)
    );
    assert!(
        !log.contains(NUMBER) && !log.contains(&NUMBER[3..]),
        "the citizen's number is in the gateway's log (Art. 21)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art17_the_citizen_presses_2_and_a_request_read_twice_is_one_call_rated_satisfied()
-> Result<()> {
    let port = free_udp_tcp_port();
    let citizen = Sipp::agent("revisit-citizen.xml", port, &[])?;
    let (broker, gw) = start(port)?;
    let call = request(2, chrono::Duration::minutes(30));
    publish(&broker, &call).await?;
    publish(&broker, &call).await?;
    let r = result(&broker, &gw, &call, Duration::from_secs(90))?;
    assert_eq!(r.value["outcome"], "rated", "{:?}", r.value);
    assert_eq!(r.value["rating"], "satisfied");
    assert_eq!(r.value["attempt"], 2, "the attempt is copied");
    assert_eq!(r.value["ticket_ref"], call.ticket_ref.as_str());
    assert_eq!(r.key, call.ticket_ref.as_str(), "keyed by the ticket");
    assert_eq!(
        r.headers.get("ce_type").map(String::as_str),
        Some("cn.gov.zhuhai.12345.revisit_result.v1")
    );
    citizen.expect_ok(Duration::from_secs(60))?;
    // A second call would ring out (sipp answered one) and end `no_answer` within the
    // ring time: none comes.
    let all = results(&broker, &call, Duration::from_secs(RING_SECS + 8), false);
    assert_eq!(all.len(), 1, "one result for one request: {all:?}");
    assert_number_not_logged(&gw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn art17_busy_a_hang_up_mid_question_and_an_expired_request_are_failed_attempts() -> Result<()>
{
    let port = free_udp_tcp_port();
    let (broker, gw) = start(port)?;

    // 486: busy.
    let busy = Sipp::agent("agent-busy.xml", port, &[])?;
    let call = request(1, chrono::Duration::minutes(30));
    publish(&broker, &call).await?;
    let r = result(&broker, &gw, &call, Duration::from_secs(60))?;
    assert_eq!(
        (&r.value["outcome"], r.value.get("rating")),
        (&json!("busy"), None),
        "{:?}",
        r.value
    );
    busy.expect_ok(Duration::from_secs(30))?;

    // Answered, then the citizen hangs up three seconds into the question: no digit.
    let hangs_up = Sipp::agent("agent-hangs-up.xml", port, &["-d", "3000"])?;
    let call = request(2, chrono::Duration::minutes(30));
    publish(&broker, &call).await?;
    let r = result(&broker, &gw, &call, Duration::from_secs(60))?;
    assert_eq!(r.value["outcome"], "no_digit", "{:?}", r.value);
    assert_eq!(r.value.get("rating"), None);
    hangs_up.expect_ok(Duration::from_secs(30))?;

    // Expired before its call: failed at once, nobody called (a call to the closed port
    // would ring the whole ring time and end `no_answer`).
    let call = request(3, chrono::Duration::minutes(-1));
    let published = Instant::now();
    publish(&broker, &call).await?;
    let r = result(&broker, &gw, &call, Duration::from_secs(30))?;
    assert_eq!(r.value["outcome"], "failed", "{:?}", r.value);
    assert!(
        published.elapsed() < Duration::from_secs(RING_SECS),
        "not dialled: {:?}",
        published.elapsed()
    );
    assert_number_not_logged(&gw);
    Ok(())
}
