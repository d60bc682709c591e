//! Art. 9 and Art. 15 latencies, end to end, with real peers (docs/benchmarks.md):
//!
//! ```text
//! cargo build --release -p gateway -p e2e
//! target/release/linkage-bench --restrictions 50 --chats 50 --calls
//! ```
//!
//! It starts its own tansu broker and release gateways, then measures:
//! 1. **restriction propagation**: two gateway instances; a restriction proposed and
//!    confirmed through one's admin API, timed from the confirmation's answer until the
//!    other instance's API shows it active (polled every 5 ms);
//! 2. **chat message to notice**: a chat message with an emergency, timed from sending it
//!    until the urgent notice arrives on a linkage operator's feed, on the instance the
//!    chat is on and on another instance (through Kafka); each message a new citizen, so
//!    each opens a notice;
//! 3. **utterance to notice** (`--calls`, needs the speech model): each emergency of the
//!    short fixture set said into a live call through sipp, timed from the end of the
//!    recording's sound (the call placed + its length: an upper bound, the answer takes
//!    some milliseconds) until the notice arrives on the operator's feed.
//!
//! It prints p50, p95 and the maximum of each.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use e2e::sip::{SipOptions, Sipp, free_udp_tcp_port, next_event};
use e2e::{ADMIN_TOKEN, Broker, ChatClient, Gateway, GatewayOptions, Storage, linkage_token};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Restrictions to propagate.
    #[arg(long, default_value_t = 50)]
    restrictions: usize,
    /// Chat messages with an emergency.
    #[arg(long, default_value_t = 50)]
    chats: usize,
    /// Also time live calls (whisper on the short set's emergencies).
    #[arg(long)]
    calls: bool,
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name}: n={} p50={:.0} ms p95={:.0} ms max={:.0} ms",
        ms.len(),
        at(0.5),
        at(0.95),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

async fn admin(
    http: &reqwest::Client,
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = http
        .request(method, gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    Ok((
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    ))
}

async fn restrictions(broker: &Broker, n: usize) -> Result<Vec<f64>> {
    let a = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let b = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (status, p) = admin(
            &http,
            &a,
            reqwest::Method::POST,
            "/restrictions",
            Some(json!({
                "identity": {"kind": "phone", "value": format!("1390000{i:04}")},
                "reason": "insulting_staff",
                "evidence": {"excerpt": "bench"},
                "proposed_by": "agent-1"
            })),
        )
        .await?;
        if status != 201 {
            bail!("propose: {status} {p}");
        }
        let id = p["restriction_id"].as_str().unwrap_or_default().to_owned();
        let (status, c) = admin(
            &http,
            &a,
            reqwest::Method::POST,
            &format!("/restrictions/{id}/confirm"),
            Some(json!({"confirmed_by": "supervisor-1"})),
        )
        .await?;
        let confirmed = Instant::now();
        if status != 200 {
            bail!("confirm: {status} {c}");
        }
        loop {
            let (status, r) = admin(
                &http,
                &b,
                reqwest::Method::GET,
                &format!("/restrictions/{id}"),
                None,
            )
            .await?;
            if status == 200 && r["state"] == "active" {
                break;
            }
            if confirmed.elapsed() > Duration::from_secs(10) {
                bail!("restriction {id} never reached the other instance");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(confirmed.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// The time until an open notice arrives on `op`'s feed, from `sent`.
async fn notice_on(
    op: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    sent: Instant,
) -> Result<f64> {
    loop {
        let ev = next_event(op, Duration::from_secs(10))
            .await
            .context("no notice on the feed")?;
        if ev["type"] == "notice" && ev["notice"]["state"] == "open" {
            return Ok(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

async fn chats(broker: &Broker, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let gw = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let other = Gateway::start(&broker.bootstrap(), GatewayOptions::default())?;
    let token = linkage_token("119:bench", Duration::from_secs(3600));
    let (mut op, _) = tokio_tungstenite::connect_async(gw.linkage_url(&token)).await?;
    let (mut op_other, _) = tokio_tungstenite::connect_async(other.linkage_url(&token)).await?;
    for feed in [&mut op, &mut op_other] {
        next_event(feed, Duration::from_secs(10))
            .await
            .context("no snapshot")?;
    }
    let mut out = Vec::with_capacity(n);
    let mut out_other = Vec::with_capacity(n);
    for i in 0..n {
        let mut chat = ChatClient::connect(&gw.chat_url()).await?;
        chat.open(&format!("bench-{i}"), Some(&format!("1380001{i:04}")))
            .await?;
        let sent = Instant::now();
        chat.send_json(json!({"type": "message", "id": "m1", "text": "我家楼下着火了，有人被困"}))
            .await?;
        let (here, there) = tokio::join!(notice_on(&mut op, sent), notice_on(&mut op_other, sent));
        out.push(here?);
        out_other.push(there?);
    }
    Ok((out, out_other))
}

async fn calls(broker: &Broker) -> Result<Vec<f64>> {
    let agent_port = free_udp_tcp_port();
    let mut sip = SipOptions::new(agent_port);
    sip.asr = true;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sip: Some(sip),
            ..GatewayOptions::default()
        },
    )?;
    let token = linkage_token("*:bench", Duration::from_secs(3600));
    let (mut op, _) = tokio_tungstenite::connect_async(gw.linkage_url(&token)).await?;
    next_event(&mut op, Duration::from_secs(10))
        .await
        .context("no snapshot")?;
    let set: Vec<_> = e2e::speech::short_set()?
        .into_iter()
        .filter(|s| s.emergency.is_some())
        .collect();
    let mut out = Vec::new();
    for (i, s) in set.iter().enumerate() {
        let speech = e2e::speech::read_8k(&s.wav())?.len() as f64 / 8.0;
        let agent = Sipp::agent("agent-listens.xml", agent_port, &[])?;
        let placed = Instant::now();
        let citizen = Sipp::citizen_saying(
            &s.wav(),
            gw.sip_port,
            &format!("1380002{i:04}"),
            &["-d", &format!("{}", speech as u64 + 8000)],
        )?;
        let mut got = None;
        while let Some(ev) = next_event(&mut op, Duration::from_secs(30)).await {
            if ev["type"] == "notice" && ev["notice"]["channel"] == "phone" {
                got = Some(placed.elapsed().as_secs_f64() * 1000.0 - speech);
                break;
            }
        }
        match got {
            Some(ms) => out.push(ms),
            None => eprintln!("{}: no notice (the recogniser missed the cue)", s.id),
        }
        citizen.wait(Duration::from_secs(60))?;
        agent.wait(Duration::from_secs(60))?;
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let broker = Broker::start(Storage::Memory)?;
    if args.restrictions > 0 {
        summary(
            "restriction confirmed on one instance -> active on the other",
            restrictions(&broker, args.restrictions).await?,
        );
    }
    if args.chats > 0 {
        let (here, there) = chats(&broker, args.chats).await?;
        summary(
            "chat message -> urgent notice on the operator feed, same instance",
            here,
        );
        summary(
            "chat message -> urgent notice on the operator feed, other instance",
            there,
        );
    }
    if args.calls {
        summary(
            "end of the caller's words -> urgent notice on the operator feed",
            calls(&broker).await?,
        );
    }
    Ok(())
}
