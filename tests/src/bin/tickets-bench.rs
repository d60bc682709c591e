//! The ticket service's throughput and latency, with real peers (docs/benchmarks.md,
//! "Ticket service"):
//!
//! ```text
//! cargo build --release -p tickets -p e2e
//! target/release/tickets-bench --drafts 5000 --latency 500 --rate 50
//! ```
//!
//! It starts its own tansu broker (memory storage), PostgreSQL cluster and release
//! `ticket-service` processes, then measures:
//! 1. **drafts applied per second**, one instance and then two on one database: the
//!    drafts are written to the drafts topic first (as the gateway writes them, each of
//!    its own citizen), then the instances start; timed from the first record applied to
//!    the last (from the database's own `applied_at`);
//! 2. **draft-to-ticket latency**: with one instance running and idle, drafts written at
//!    `--rate` a second, each timed from the broker's acknowledgement of the write until
//!    the database row that applied it (`applied_events.applied_at`, the transaction's
//!    start, taken on the same machine's clock).
//!
//! It prints the rates and p50, p99 and the maximum of the latencies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use contract::TicketKind;
use e2e::postgres::Postgres;
use e2e::tickets::{ServiceOptions, TicketService, draft, produce_event, producer};
use e2e::{Broker, DRAFTS, Storage};

#[derive(Debug, Parser)]
struct Args {
    /// Drafts for the throughput runs.
    #[arg(long, default_value_t = 5000)]
    drafts: usize,
    /// Drafts for the latency run.
    #[arg(long, default_value_t = 500)]
    latency: usize,
    /// Drafts a second in the latency run.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Only the latency run.
    #[arg(long)]
    latency_only: bool,
    /// Only the two-instance throughput run.
    #[arg(long)]
    two_only: bool,
}

async fn wait_count(pg: &Postgres, n: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let got: usize = pg.psql("SELECT count(*) FROM applied_events")?.parse()?;
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{got} of {n} applied after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn throughput(instances: usize, n: usize) -> Result<f64> {
    let broker = Broker::start(Storage::Memory)?;
    let pg = Postgres::start()?;
    let p = producer(&broker.bootstrap())?;
    let mut sends = Vec::with_capacity(n);
    for i in 0..n {
        let d = draft(
            &format!("bench-{instances}-{i}"),
            &format!("第{i}号：小区门口垃圾堆放多日无人清运"),
            TicketKind::Complaint,
            Utc::now(),
        );
        sends.push(produce_event(&p, DRAFTS, d.into()));
    }
    for s in futures::future::join_all(sends).await {
        s?;
    }
    let mut services = Vec::new();
    for i in 0..instances {
        services.push(TicketService::start(
            &broker.bootstrap(),
            &pg.url(),
            ServiceOptions {
                instance: format!("bench-{i}"),
                rust_log: "info".into(),
                ..ServiceOptions::default()
            },
        )?);
    }
    if let Err(e) = wait_count(&pg, n, Duration::from_secs(120)).await {
        for s in &services {
            eprintln!("--- service log ---\n{}", s.log());
        }
        eprintln!(
            "offsets: {}",
            pg.psql("SELECT topic, partition, next_offset FROM consumer_offsets ORDER BY 1, 2")?
        );
        eprintln!(
            "members: {}",
            pg.psql("SELECT instance, seen_at FROM members")?
        );
        eprintln!(
            "applied by partition: {}",
            pg.psql("SELECT partition, count(*), min(kafka_offset), max(kafka_offset) FROM applied_events GROUP BY 1 ORDER BY 1")?
        );
        eprintln!(
            "missing ranges: {}",
            pg.psql("WITH o AS (SELECT partition, kafka_offset, kafka_offset - row_number() OVER (PARTITION BY partition ORDER BY kafka_offset) AS g FROM applied_events) SELECT partition, min(kafka_offset), max(kafka_offset) FROM o GROUP BY partition, g ORDER BY 1, 2")?
        );
        eprintln!(
            "dead letters: {}",
            pg.psql("SELECT count(*) FROM outbox WHERE topic LIKE '%dead%'")?
        );
        return Err(e);
    }
    let span: f64 = pg
        .psql("SELECT extract(epoch FROM max(applied_at) - min(applied_at)) FROM applied_events")?
        .parse()?;
    let tickets: usize = pg.psql("SELECT count(*) FROM tickets")?.parse()?;
    if tickets != n {
        bail!("{tickets} tickets of {n} drafts");
    }
    drop(services);
    Ok(n as f64 / span)
}

async fn latency(n: usize, rate: f64) -> Result<Vec<f64>> {
    let broker = Broker::start(Storage::Memory)?;
    let pg = Postgres::start()?;
    let _svc = TicketService::start(
        &broker.bootstrap(),
        &pg.url(),
        ServiceOptions {
            rust_log: "warn".into(),
            ..ServiceOptions::default()
        },
    )?;
    let p = producer(&broker.bootstrap())?;
    // Warm up: the instance must own its partitions before the clock starts.
    let warm = draft("warm", "预热", TicketKind::Help, Utc::now());
    produce_event(&p, DRAFTS, warm.into()).await?;
    wait_count(&pg, 1, Duration::from_secs(60)).await?;
    let mut acked: HashMap<String, DateTime<Utc>> = HashMap::new();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        let d = draft(
            &format!("lat-{i}"),
            &format!("第{i}号：路灯不亮"),
            TicketKind::Complaint,
            Utc::now(),
        );
        let id = d.id.to_string();
        produce_event(&p, DRAFTS, d.into()).await?;
        acked.insert(id, Utc::now());
    }
    wait_count(&pg, n + 1, Duration::from_secs(120)).await?;
    let rows = pg.psql(
        "SELECT ce_id, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM applied_events",
    )?;
    let mut ms = Vec::with_capacity(n);
    for line in rows.lines() {
        let Some((id, at)) = line.split_once('|') else {
            continue;
        };
        let (Some(sent), Ok(at)) = (acked.get(id), DateTime::parse_from_rfc3339(at)) else {
            continue;
        };
        ms.push(
            (at.with_timezone(&Utc) - *sent)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0,
        );
    }
    Ok(ms)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.two_only {
        let two = throughput(2, args.drafts).await?;
        println!("drafts applied per second, 2 instances on one database: {two:.0}");
        return Ok(());
    }
    if !args.latency_only {
        let one = throughput(1, args.drafts).await?;
        println!(
            "drafts applied per second, 1 instance: {one:.0} ({} drafts)",
            args.drafts
        );
        let two = throughput(2, args.drafts).await?;
        println!(
            "drafts applied per second, 2 instances on one database: {two:.0} ({:.2}x)",
            two / one
        );
    }
    let mut ms = latency(args.latency, args.rate).await?;
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "draft-to-ticket latency at {} drafts/s: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        args.rate,
        ms.len(),
        at(0.5),
        at(0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
