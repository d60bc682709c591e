//! Intake benchmark: chat messages through the gateway into Kafka, beside a raw rdkafka
//! producer into the same broker, in the same run.
//!
//! ```text
//! cargo build --release -p gateway -p e2e
//! target/release/intake-bench --messages 20000 --sessions 64
//! ```
//!
//! It starts its own tansu broker (memory storage unless `--storage sqlite`) and a
//! release gateway, then:
//! 1. baseline: a raw rdkafka producer with the gateway's producer settings (idempotent,
//!    acks=all, same linger) produces N records of the same size and headers;
//! 2. gateway: S WebSocket chat sessions send N messages in total, each waiting for its
//!    durable ack before the next (a closed loop, as a citizen's client does), while a
//!    consumer reads the contacts topic back.
//!
//! It prints accepted contacts/s, p50/p99 accept latency (send to durable ack),
//! contact-to-Kafka latency (accept to the broker's acknowledgement, from the gateway's
//! histogram), the end-to-end rate (until the outbox is empty) as a ratio of the raw
//! producer's, and the CPU each process used. Every contact is then read back from Kafka
//! (untimed) to check none is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use e2e::{Broker, CONTACTS, ChatClient, Gateway, GatewayOptions, Storage};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Parser)]
struct Args {
    /// Messages in each phase.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Concurrent chat sessions.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// Broker storage: memory or sqlite.
    #[arg(long, default_value = "memory")]
    storage: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

const TEXT: &str = "我们小区楼下的餐馆每天晚上噪音扰民，到凌晨两点还不停，请相关部门处理。";

async fn raw_baseline(bootstrap: &str, n: usize, sample: &e2e::Received) -> Result<f64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", gateway::config::DEFAULT_LINGER_MS.to_string())
        .create()?;
    let payload = serde_json::to_vec(&sample.value)?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &sample.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let key = format!("{}-{}", sample.key, i % 64);
        let record = FutureRecord::to("bench.raw")
            .key(&key)
            .payload(&payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => anyhow::bail!("raw produce: {e}"),
        }
        // The same in-flight window the gateway's drain uses.
        while pending.len() >= gateway::config::DEFAULT_MAX_IN_FLIGHT {
            use futures::StreamExt;
            pending.next().await;
        }
    }
    use futures::StreamExt;
    while let Some(r) = pending.next().await {
        r?.map_err(|(e, _)| e)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Reads the contacts topic until `n` records; returns how many and the first.
fn read_back(bootstrap: String, n: usize) -> Result<(usize, e2e::Received)> {
    let records = e2e::consume(&bootstrap, CONTACTS, Duration::from_secs(120), |r| {
        r.len() >= n
    })?;
    let first = records.first().cloned().context("no record read back")?;
    Ok((records.len(), first))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let storage = if args.storage == "sqlite" {
        Storage::Sqlite
    } else {
        Storage::Memory
    };
    let broker = Broker::start(storage)?;
    broker.create_topic("bench.raw", 3)?;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            rate_per_second: 1000.0,
            burst: 1000,
            rust_log: "warn".into(),
            ..GatewayOptions::default()
        },
    )?;

    // Warm-up: one message all the way to Kafka, so the timed phase does not include
    // the gateway's first broker connection and topic check.
    let http = reqwest::Client::new();
    {
        let mut c = ChatClient::connect(&gw.chat_url()).await?;
        c.open("warm-up", None).await?;
        c.say("w1", TEXT).await?;
        gw.wait_drained(Duration::from_secs(60)).await?;
    }

    // Gateway phase.
    let n = args.messages;
    let per_session = n.div_ceil(args.sessions);
    let total = per_session * args.sessions;
    let cpu = |pid: Option<u32>| pid.map(e2e::cpu_seconds).unwrap_or(f64::NAN);
    let me = std::process::id();
    let cpu_before = (cpu(gw.pid()), cpu(broker.pid()), cpu(Some(me)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let accept_latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    for s in 0..args.sessions {
        let url = gw.chat_url();
        let lat = accept_latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ChatClient::connect(&url).await?;
            c.open(&format!("bench-{s}"), None).await?;
            let mut mine = Vec::with_capacity(per_session);
            for i in 0..per_session {
                let t = Instant::now();
                let ack = c.say(&format!("m{i}"), TEXT).await?;
                anyhow::ensure!(ack["type"] == "ack", "not acknowledged: {ack}");
                mine.push(t.elapsed().as_secs_f64());
            }
            lat.lock().expect("not poisoned").extend(mine);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let accepted_in = started.elapsed().as_secs_f64();
    let cpu_after = (cpu(gw.pid()), cpu(broker.pid()), cpu(Some(me)));
    // End to end: until the outbox is empty, every contact acknowledged by the broker.
    loop {
        let ready: serde_json::Value = http
            .get(gw.admin_url("/readyz"))
            .send()
            .await?
            .json()
            .await?;
        if ready["outbox"]["depth"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end_to_end = started.elapsed().as_secs_f64();
    let mut accept = accept_latencies.lock().expect("not poisoned").clone();
    accept.sort_by(f64::total_cmp);
    // Check (untimed) that every contact is on Kafka, and take one as the baseline's
    // record shape.
    let (read, sample) = {
        let bootstrap = broker.bootstrap();
        tokio::task::spawn_blocking(move || read_back(bootstrap, total + 1)).await??
    };
    anyhow::ensure!(
        read == total + 1,
        "only {read} of {} contacts read back",
        total + 1
    );

    // What the outbox did: commits and their batch sizes.
    let metrics = http
        .get(gw.admin_url("/metrics"))
        .bearer_auth(e2e::ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    // Contact to Kafka: accept to the broker's acknowledgement, from the gateway's own
    // histogram (the bucket bound at or above the quantile).
    let quantile = |name: &str, q: f64| -> f64 {
        let count = metric(&format!("{name}_count"));
        metrics
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.parse::<f64>().ok()?, value.parse::<f64>().ok()?))
            })
            .find(|(_, cumulative)| *cumulative >= q * count)
            .map(|(le, _)| le)
            .unwrap_or(f64::NAN)
    };
    if std::env::var_os("BENCH_DEBUG").is_some() {
        for l in metrics
            .lines()
            .filter(|l| l.contains("delivery_seconds") || l.contains("commit_seconds"))
        {
            eprintln!("{l}");
        }
    }
    let delivery_p50 = quantile("gateway_kafka_delivery_seconds", 0.5);
    let delivery_p99 = quantile("gateway_kafka_delivery_seconds", 0.99);
    let commits = metric("gateway_outbox_commit_seconds_count");
    let commit_time = metric("gateway_outbox_commit_seconds_sum");
    let batched = metric("gateway_outbox_batch_size_sum");

    // Baseline phase, same broker, same record shape.
    let raw_cpu_before = (cpu(broker.pid()), cpu(Some(me)));
    let raw_rate = raw_baseline(&broker.bootstrap(), total, &sample).await?;
    let raw_cpu = (
        cpu(broker.pid()) - raw_cpu_before.0,
        cpu(Some(me)) - raw_cpu_before.1,
    );

    let accept_rate = total as f64 / accepted_in;
    let e2e_rate = total as f64 / end_to_end;
    println!("| figure | value |");
    println!("|---|---|");
    println!("| messages, sessions | {total}, {} |", args.sessions);
    println!("| raw rdkafka producer (baseline) | {raw_rate:.0} records/s |");
    println!("| gateway accepted contacts/s (send to durable ack) | {accept_rate:.0} |");
    println!("| gateway contacts/s on Kafka (end to end) | {e2e_rate:.0} |");
    println!(
        "| ratio, end to end / raw producer | {:.2} |",
        e2e_rate / raw_rate
    );
    println!(
        "| accept latency p50 / p99 | {:.1} ms / {:.1} ms |",
        percentile(&accept, 0.5) * 1e3,
        percentile(&accept, 0.99) * 1e3
    );
    println!(
        "| outbox commits, mean batch, mean commit time | {commits:.0}, {:.1}, {:.2} ms |",
        batched / commits,
        commit_time / commits * 1e3
    );
    println!(
        "| CPU seconds while accepting: gateway, broker, load client | {:.2}, {:.2}, {:.2} (wall {accepted_in:.2}) |",
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
        cpu_after.2 - cpu_before.2
    );
    let per = |cpu_s: f64| cpu_s / total as f64 * 1e6;
    let (gw_us, broker_us, client_us) = (
        per(cpu_after.0 - cpu_before.0),
        per(cpu_after.1 - cpu_before.1),
        per(cpu_after.2 - cpu_before.2),
    );
    let (raw_broker_us, raw_us) = (per(raw_cpu.0), per(raw_cpu.1));
    println!(
        "| CPU per contact, gateway path: gateway / broker / load client | {gw_us:.0} µs / {broker_us:.0} µs / {client_us:.0} µs |"
    );
    println!(
        "| CPU per record, baseline: producer / broker | {raw_us:.0} µs / {raw_broker_us:.0} µs |"
    );
    // The load client and the broker share the cores with the gateway: even a gateway
    // that cost nothing could not go faster than the cores can run them.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ceiling = cores * 1e6 / (client_us + broker_us);
    println!(
        "| ceiling for a zero-cost gateway on {cores} cores, as a ratio | {ceiling:.0}/s, {:.2} |",
        ceiling / raw_rate
    );
    println!(
        "| contact-to-Kafka latency p50 / p99 (histogram bucket bounds) | ≤ {:.1} ms / ≤ {:.1} ms |",
        delivery_p50 * 1e3,
        delivery_p99 * 1e3
    );
    Ok(())
}
