//! The follow-up's two measured figures (docs/benchmarks.md, "Follow-up"):
//!
//! ```text
//! cargo build --release -p gateway -p tickets -p e2e
//! target/release/followup-bench --texts 2000 --tickets-per-month 20000
//! ```
//!
//! 1. **Outbound SMS sent per second through the carrier stand-in.** A release gateway
//!    with the outbound path on reads `--texts` requests from the outbound topic (written
//!    first, as the ticket service's outbox writes them) and sends each to the stand-in
//!    (`tests/src/carrier.rs`), timed from the first text the stand-in takes to the last
//!    (the gateway's start-up and membership, about 5 s, are printed, not counted).
//!    Run twice: at the carrier contract's default pace (20 a second: what is measured is
//!    the pacing) and with the pace opened up (what the path itself does). Baseline in the
//!    same run: the bench posting the same signed requests to the stand-in itself, one at
//!    a time (what a sequential sender could do at best on this machine).
//! 2. **Statistics query time for one year at `--tickets-per-month`.** A throwaway
//!    PostgreSQL gets twelve months of closed tickets (53 units, four channels, eight
//!    kinds, ratings, cards, returns, extensions, urges) and the Art. 18 report
//!    (`tickets::stats::report`) is timed for each month, each quarter and one unit's
//!    month, median of `--rounds`. Baseline in the same run: a plain `count(*)` of the
//!    same month's tickets.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{TimeZone, Utc};
use clap::Parser;
use e2e::postgres::Postgres;
use e2e::tickets::{produce_event, producer};
use e2e::{Broker, Gateway, GatewayOptions, Storage, carrier};
use hmac::{Hmac, Mac};
use tickets::stats::{Period, report};

#[derive(Debug, Parser)]
struct Args {
    /// Texts per outbound run.
    #[arg(long, default_value_t = 2000)]
    texts: usize,
    /// Tickets a month for the statistics run.
    #[arg(long, default_value_t = 20_000)]
    tickets_per_month: usize,
    /// Repetitions of each statistics query.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only the statistics run.
    #[arg(long)]
    stats_only: bool,
    /// Only the outbound SMS run.
    #[arg(long)]
    sms_only: bool,
}

const OUTBOUND: &str = "hotline.sms-outbound.v1";

fn request(i: usize) -> contract::OutboundSms {
    contract::OutboundSms {
        schema_version: contract::SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        requested_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        purpose: "survey".into(),
        reference: format!("ZH-BENCH-{i}"),
        to: format!("138{:08}", i),
        text: format!(
            "【12345热线】请对工单ZH-BENCH-{i}的办理情况评价，回复数字：1非常满意 2满意 3基本满意 4不满意 5非常不满意。"
        ),
    }
}

/// Texts a second through a gateway paced at `rate`.
async fn through_gateway(n: usize, rate: Option<(f64, u32)>) -> Result<f64> {
    let broker = Broker::start(Storage::Memory)?;
    broker.create_topic(OUTBOUND, 3)?;
    let carrier = carrier::Carrier::start().await?;
    let p = producer(&broker.bootstrap())?;
    let sends: Vec<_> = (0..n)
        .map(|i| produce_event(&p, OUTBOUND, request(i).into()))
        .collect();
    for s in futures::future::join_all(sends).await {
        s?;
    }
    let started = Instant::now();
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sms_outbound_url: Some(carrier.url.clone()),
            sms_outbound_rate: rate,
            rust_log: "warn".into(),
            ..GatewayOptions::default()
        },
    )?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    loop {
        let got = carrier.texts().len();
        if got > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if got >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("{got} of {n} texts in 600 s; log:\n{}", gw.log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts = carrier.texts();
    let (t0, t1) = (
        texts.iter().map(|t| t.at).min().unwrap_or(started),
        texts.iter().map(|t| t.at).max().unwrap_or(started),
    );
    let doubled = texts.iter().filter(|t| t.requests > 1).count();
    eprintln!(
        "  gateway at {rate:?}: {n} texts, first after {:?} (start-up and membership), {doubled} keys asked twice",
        t0 - started
    );
    Ok((n - 1) as f64 / (t1 - t0).as_secs_f64())
}

/// Texts a second the bench itself gets through the stand-in, one at a time.
async fn direct(n: usize) -> Result<f64> {
    let carrier = carrier::Carrier::start().await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..n {
        let r = request(i);
        let body = serde_json::json!({"request_id": r.id, "to": r.to, "text": r.text}).to_string();
        let ts = Utc::now().timestamp().to_string();
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(e2e::CARRIER_SECRET.as_bytes())?;
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let sig = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        let st = http
            .post(&carrier.url)
            .header("content-type", "application/json")
            .header("x-hotline-timestamp", ts)
            .header("x-hotline-signature", sig)
            .header("idempotency-key", r.id.to_string())
            .body(body)
            .send()
            .await?
            .status();
        if !st.is_success() {
            bail!("the stand-in answered {st}");
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn statistics(per_month: usize, rounds: usize) -> Result<()> {
    let pg = Postgres::start()?;
    let units = tickets::units::Units::builtin();
    let ids: Vec<String> = units.all().map(|u| format!("'{}'", u.id)).collect();
    let store = tickets::store::Store::connect(
        pg.url().parse()?,
        4,
        std::sync::Arc::new(tickets::Calendar::builtin()),
        std::sync::Arc::new(units),
        std::sync::Arc::new(tickets::repeat::RepeatParams::builtin()),
        tickets::store::OutTopics::default(),
        "/tickets/bench".into(),
    )
    .await?;
    let total = per_month * 12;
    let loading = Instant::now();
    // A year of closed tickets, evenly spread over 2025 (Beijing time), a mix of every
    // figure the report counts.
    pg.psql(&format!(
        "INSERT INTO tickets (ticket_ref, draft_id, citizen_key, channel, received_at, state, outcome, kind, summary, urgency, lead_unit, dispatched_at, first_dispatched_at, dispatch_due, handling_due, handling_days, extended, returns, urge_count, card, draft, repeat_decision, repeat_reason, created_at, updated_at, replied_at, closed_at, rating, yellow_at, red_at) \
         SELECT 'ZHB' || g, gen_random_uuid(), 'k' || (g % 60000), (ARRAY['phone','webrtc','chat','sms'])[1 + g % 4], t, 'closed', 'resolved', \
           (ARRAY['consultation','help','complaint','report','suggestion','praise','correction','unknown'])[1 + (g * 7) % 8], '路灯不亮', 'normal', \
           (ARRAY[{units}])[1 + (g * 13) % {n_units}], t + interval '5 hours', t + interval '5 hours', (t + interval '1 day')::date, (t + interval '14 days')::date, 10, \
           g % 20 = 0, (g % 50 = 0)::int, (g % 10 = 0)::int, CASE WHEN g % 25 = 0 THEN 'red' ELSE 'none' END, '{{}}'::jsonb, 'new', 'bench', t, t, \
           t + (g % 17) * interval '1 day', t + (g % 17) * interval '1 day' + interval '2 hours', \
           (ARRAY['very_satisfied','satisfied','satisfied','basically_satisfied','dissatisfied','very_dissatisfied', NULL])[1 + g % 7], \
           CASE WHEN g % 12 = 0 THEN t + interval '13 days' END, CASE WHEN g % 25 = 0 THEN t + interval '15 days' END \
         FROM generate_series(1, {total}) g, LATERAL (SELECT timestamptz '2025-01-01 00:00:00+08' + (g::float8 / {total}) * interval '365 days' AS t) x; ANALYZE tickets",
        units = ids.join(","),
        n_units = ids.len(),
    ))?;
    eprintln!("  loaded {total} tickets in {:?}", loading.elapsed());
    let pool = store.pool();
    let mut month = Vec::new();
    let mut quarter = Vec::new();
    let mut unit = Vec::new();
    let mut count = Vec::new();
    for _ in 0..rounds {
        for m in 1..=12 {
            let p = Period::parse(&format!("2025-{m:02}")).expect("a month");
            let t = Instant::now();
            let r = report(pool, p, None).await?;
            month.push(t.elapsed());
            if r.centre.received < (per_month as i64) * 9 / 10 {
                bail!("month {m}: {} tickets", r.centre.received);
            }
            let t = Instant::now();
            report(pool, p, Some("xiangzhou")).await?;
            unit.push(t.elapsed());
            let (from, until) = (
                chrono::FixedOffset::east_opt(8 * 3600)
                    .expect("offset")
                    .with_ymd_and_hms(2025, m, 1, 0, 0, 0)
                    .single()
                    .expect("t"),
                if m == 12 {
                    chrono::FixedOffset::east_opt(8 * 3600)
                        .expect("offset")
                        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                        .single()
                        .expect("t")
                } else {
                    chrono::FixedOffset::east_opt(8 * 3600)
                        .expect("offset")
                        .with_ymd_and_hms(2025, m + 1, 1, 0, 0, 0)
                        .single()
                        .expect("t")
                },
            );
            let t = Instant::now();
            let _: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tickets WHERE received_at >= $1 AND received_at < $2",
            )
            .bind(from)
            .bind(until)
            .fetch_one(pool)
            .await?;
            count.push(t.elapsed());
        }
        for q in 1..=4 {
            let p = Period::parse(&format!("2025-Q{q}")).expect("a quarter");
            let t = Instant::now();
            report(pool, p, None).await?;
            quarter.push(t.elapsed());
        }
    }
    let (m, q, u, c) = (median(month), median(quarter), median(unit), median(count));
    println!(
        "statistics, {total} tickets in the year: month report median {:.1} ms, quarter {:.1} ms, one unit's month {:.1} ms; baseline count(*) of a month {:.1} ms (month report = {:.1}x the count)",
        m.as_secs_f64() * 1e3,
        q.as_secs_f64() * 1e3,
        u.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        m.as_secs_f64() / c.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.stats_only {
        let raw = direct(args.texts).await?;
        let paced = through_gateway(args.texts.min(600), None).await?;
        let open = through_gateway(args.texts, Some((10_000.0, 10_000))).await?;
        println!(
            "outbound SMS: gateway at the default pace (20/s) {paced:.1} texts/s; pace opened {open:.1} texts/s; baseline: the bench straight to the stand-in {raw:.1} texts/s (gateway = {:.2}x the baseline)",
            open / raw
        );
    }
    if !args.sms_only {
        statistics(args.tickets_per_month, args.rounds).await?;
    }
    Ok(())
}
