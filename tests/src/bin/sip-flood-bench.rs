//! SIP flood benchmark (issue 14): real callers behind a trunk that floods.
//!
//! ```text
//! cargo build --release -p gateway -p e2e
//! target/release/sip-flood-bench --flood-rate 2000 --seconds 20 --soak 10
//! ```
//!
//! A tansu broker (memory) and a release gateway with the channel's default admission
//! (a trunk's 200 INVITEs/s with a burst of 400; per calling number 3 calls at once and 6
//! a minute with a burst of 6; `max_calls` 4,000), a sipp agent side answering every call.
//! Every sipp runs from 127.0.0.1, the trunk's own address, as one carrier SBC would.
//!
//! 1. **Few numbers**: `flood-rate` INVITEs a second for `seconds` from `flood-numbers`
//!    calling numbers (a looping PBX, an autodialer), and meanwhile 5 calls a second from
//!    other numbers (one each). The figure: the share of those 5/s answered (target 99%).
//! 2. **Random numbers**: the same flood, each INVITE from a new number, and the 5/s. The
//!    trunk's rate sheds both in proportion; what is measured is that no media port stays
//!    held by a refused call (port pairs in use against calls in progress), and how soon
//!    after the flood a new call is answered.
//! 3. **Soak**: `soak` few-number floods in a row; the gateway's resident memory after
//!    each, 10 s later and settled ([`SETTLE`]), against its memory settled after the
//!    baseline's calls.
//!
//! The gateway's CPU over each flood is read from /proc, sipp's achieved INVITE rate from
//! its statistics. Baseline in the same run: the 5/s alone, before any flood.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use e2e::sip::{
    RawSip, Sipp, calls_from_numbers, numbers_file, rtp_socket, sipp_counts, start_gateway,
    status_of,
};
use e2e::{Gateway, cpu_seconds, metric_value};

#[derive(Debug, Parser)]
struct Args {
    /// INVITEs a second of each flood.
    #[arg(long, default_value_t = 2000)]
    flood_rate: u32,
    /// Seconds each flood lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    /// Calling numbers of the few-number flood.
    #[arg(long, default_value_t = 5)]
    flood_numbers: usize,
    /// Legitimate calls a second during a flood (each from its own number).
    #[arg(long, default_value_t = 5)]
    legit_rate: u32,
    /// Few-number floods in the soak (0 skips it).
    #[arg(long, default_value_t = 10)]
    soak: u32,
    /// Seconds of each soak flood.
    #[arg(long, default_value_t = 10)]
    soak_seconds: u32,
}

/// How long the gateway is left idle before its memory is read as settled: the
/// admission's sweep forgets a flood's numbers within 20 s (their share whole again,
/// then the next sweep), transactions end within 32 s (Timer H).
const SETTLE: Duration = Duration::from_secs(40);

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// What the gateway's objects take on its heap, in MB (its allocator's gauge, updated
/// every 10 s).
fn heap_mb(gw: &Gateway) -> f64 {
    gw.metrics_blocking().map_or(f64::NAN, |m| {
        metric_value(&m, "gateway_heap_allocated_bytes") / 1e6
    })
}

/// Numbers `prefix` + 7 digits from `from`, `n` of them.
fn numbers(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{prefix}{i:07}"))
        .collect()
}

struct Flood {
    legit_ok: u64,
    legit_failed: u64,
    flood_ok: u64,
    flood_failed: u64,
    flood_wall: f64,
    gateway_cpu: f64,
}

/// What one flood is: its numbers, and the legitimate callers' meanwhile.
struct Plan<'a> {
    tag: &'a str,
    flood: &'a [String],
    rate: u32,
    legit: &'a [String],
    legit_rate: u32,
    seconds: u32,
}

/// Runs `plan` (no flood when its rate is 0): the flood's INVITEs with the legitimate
/// calls starting half a second later.
fn flood(gw: &Gateway, dir: &std::path::Path, plan: &Plan) -> Result<Flood> {
    let pid = gw.pid().context("gateway pid")?;
    let tag = plan.tag;
    let (fs, ls) = (
        dir.join(format!("{tag}-flood.stat")),
        dir.join(format!("{tag}-legit.stat")),
    );
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let f = if plan.rate > 0 {
        let file = numbers_file(dir, &format!("{tag}-flood.csv"), plan.flood)?;
        let calls = plan.rate * plan.seconds;
        Some(calls_from_numbers(
            gw.sip_port,
            &file,
            plan.rate,
            calls,
            200,
            &fs,
        )?)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(500));
    let legit_file = numbers_file(dir, &format!("{tag}-legit.csv"), plan.legit)?;
    let legit_calls = plan.legit_rate * plan.seconds.saturating_sub(1).max(1);
    let l = calls_from_numbers(
        gw.sip_port,
        &legit_file,
        plan.legit_rate,
        legit_calls,
        1000,
        &ls,
    )?;
    let limit = Duration::from_secs(u64::from(plan.seconds) * 4 + 60);
    l.wait(limit)?;
    if let Some(f) = f {
        f.wait(limit)?;
    }
    let flood_wall = t0.elapsed().as_secs_f64();
    let gateway_cpu = cpu_seconds(pid) - c0;
    let (legit_ok, legit_failed) = sipp_counts(&ls);
    let (flood_ok, flood_failed) = sipp_counts(&fs);
    Ok(Flood {
        legit_ok,
        legit_failed,
        flood_ok,
        flood_failed,
        flood_wall,
        gateway_cpu,
    })
}

/// One call placed by hand from `number`: the final answer to its INVITE and how long
/// it took (the gateway's admission, the agent leg's INVITE and the agent's 200: the
/// bench's agent answers at once). An answered call is ACKed and hung up.
fn probe(port: u16, number: &str, n: usize) -> Result<(u16, Duration)> {
    let raw = RawSip::new("127.0.0.1", port)?;
    let rtp = rtp_socket()?;
    let call_id = format!("probe-{n}-{number}@bench");
    let invite = raw.invite(
        &call_id,
        &format!("z9hG4bKprobe{n}x{number}"),
        number,
        Some(rtp.local_addr()?.port()),
    );
    let t0 = Instant::now();
    raw.send(invite.as_bytes())?;
    let answers = raw.recv_final(Duration::from_secs(10));
    let took = t0.elapsed();
    let last = answers.last().context("no answer to the probe")?;
    let status = status_of(last).unwrap_or(0);
    if status >= 300 {
        raw.send(raw.ack_failure(&invite, last).as_bytes())?;
    } else if status == 200 {
        raw.hang_up(last, Duration::from_millis(100))?;
    }
    Ok((status, took))
}

fn pct(a: u64, b: u64) -> f64 {
    if a + b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / (a + b) as f64
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (_broker, gw, agent_port) = start_gateway(
        |sip| {
            // The channel's defaults (tests/src/sip.rs raises the rate for other tests).
            sip.invite_rate = 200.0;
            sip.invite_burst = 400;
            sip.max_calls = 4000;
            sip.media_ports = 16_000;
        },
        "warn",
    )
    .context("start the gateway (cargo build --release -p gateway -p e2e)")?;
    let pid = gw.pid().context("gateway pid")?;
    let _agent = Sipp::start_quiet(
        "agent",
        "bench-agent-short.xml",
        "127.0.0.1",
        agent_port,
        &["-timeout", "3600s"],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir()?;
    let mut next = 0usize;
    let mut take = |n: usize| {
        next += n;
        numbers("139", next - n, n)
    };
    println!(
        "sip-flood-bench: gateway RSS at start {:.1} MB",
        rss_mb(pid)
    );

    // Baseline: the legitimate calls alone.
    let base = flood(
        &gw,
        dir.path(),
        &Plan {
            tag: "base",
            flood: &[],
            rate: 0,
            legit: &take(200),
            legit_rate: args.legit_rate,
            seconds: args.seconds,
        },
    )?;
    std::thread::sleep(SETTLE);
    println!(
        "\n## Baseline, {}/s legitimate calls alone ({} s)\nanswered {} of {} ({:.2}%); gateway RSS {} s after: {:.1} MB (heap allocated {:.1} MB)",
        args.legit_rate,
        args.seconds,
        base.legit_ok,
        base.legit_ok + base.legit_failed,
        pct(base.legit_ok, base.legit_failed),
        SETTLE.as_secs(),
        rss_mb(pid),
        heap_mb(&gw)
    );

    // 1. Few numbers.
    let few = take(args.flood_numbers);
    let r = flood(
        &gw,
        dir.path(),
        &Plan {
            tag: "few",
            flood: &few,
            rate: args.flood_rate,
            legit: &take(200),
            legit_rate: args.legit_rate,
            seconds: args.seconds,
        },
    )?;
    let sent = r.flood_ok + r.flood_failed;
    println!(
        "\n## Flood of {}/s for {} s from {} numbers, with {}/s legitimate calls",
        args.flood_rate, args.seconds, args.flood_numbers, args.legit_rate
    );
    println!(
        "legitimate answered {} of {} (**{:.2}%**); flood INVITEs {sent} in {:.1} s ({:.0}/s achieved), {} answered; gateway CPU {:.2} s ({:.0}% of a core, {:.0} µs per INVITE)",
        r.legit_ok,
        r.legit_ok + r.legit_failed,
        pct(r.legit_ok, r.legit_failed),
        r.flood_wall,
        sent as f64 / r.flood_wall,
        r.flood_ok,
        r.gateway_cpu,
        r.gateway_cpu / r.flood_wall * 100.0,
        r.gateway_cpu / (sent.max(1) as f64) * 1e6
    );
    let m = gw.metrics_blocking()?;
    println!(
        "refused so far: number_share {}, rate {}, capacity {}",
        metric_value(
            &m,
            r#"gateway_sip_calls_refused_total{reason="number_share"}"#
        ),
        metric_value(&m, r#"gateway_sip_calls_refused_total{reason="rate"}"#),
        metric_value(&m, r#"gateway_sip_calls_refused_total{reason="capacity"}"#),
    );
    std::thread::sleep(Duration::from_secs(3));

    // 2. Random numbers.
    let random = take((args.flood_rate * args.seconds) as usize);
    let legit = take(200);
    let flood_file = numbers_file(dir.path(), "random-flood.csv", &random)?;
    let legit_file = numbers_file(dir.path(), "random-legit.csv", &legit)?;
    let (fs, ls) = (
        dir.path().join("random-flood.stat"),
        dir.path().join("random-legit.stat"),
    );
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let f = calls_from_numbers(
        gw.sip_port,
        &flood_file,
        args.flood_rate,
        args.flood_rate * args.seconds,
        200,
        &fs,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let l = calls_from_numbers(
        gw.sip_port,
        &legit_file,
        args.legit_rate,
        args.legit_rate * (args.seconds - 1),
        1000,
        &ls,
    )?;
    // Midway: port pairs held against calls in progress (a bridged call holds two).
    std::thread::sleep(Duration::from_secs(u64::from(args.seconds) / 2));
    let m = gw.metrics_blocking()?;
    let (active_mid, ports_mid) = (
        metric_value(&m, "gateway_sip_calls_active"),
        metric_value(&m, "gateway_sip_media_port_pairs_in_use"),
    );
    let limit = Duration::from_secs(u64::from(args.seconds) * 4 + 60);
    f.wait(limit)?;
    let flood_end = Instant::now();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - c0;
    // New numbers call at once and then every 200 ms for a second: each INVITE's time
    // to its answer (sipp's exit, taken as the flood's end, is within milliseconds of
    // its last INVITE's answer).
    let mut probes = Vec::new();
    for (i, number) in take(5).iter().enumerate() {
        let at = flood_end.elapsed();
        let (status, took) = probe(gw.sip_port, number, i)?;
        probes.push(format!(
            "{:.0} ms after: {status} in {:.1} ms",
            at.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3
        ));
        let next = Duration::from_millis(200 * (i as u64 + 1));
        std::thread::sleep(next.saturating_sub(flood_end.elapsed()));
    }
    l.wait(limit)?;
    let (lo, lf) = sipp_counts(&ls);
    let (fo, ff) = sipp_counts(&fs);
    println!(
        "\n## Flood of {}/s for {} s, every INVITE from a new number, with {}/s legitimate calls",
        args.flood_rate, args.seconds, args.legit_rate
    );
    println!(
        "flood answered {fo} of {} ({:.2}%), legitimate {lo} of {} ({:.2}%): shed in proportion; midway {active_mid} calls in progress holding {ports_mid} port pairs; gateway CPU {:.0}% of a core",
        fo + ff,
        pct(fo, ff),
        lo + lf,
        pct(lo, lf),
        cpu / wall * 100.0,
    );
    println!(
        "new calls after the flood's end (INVITE to final answer): {}",
        probes.join("; ")
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = gw.metrics_blocking()?;
    println!(
        "after it: calls in progress {}, port pairs held {}",
        metric_value(&m, "gateway_sip_calls_active"),
        metric_value(&m, "gateway_sip_media_port_pairs_in_use")
    );
    std::thread::sleep(SETTLE);
    println!(
        "gateway RSS {} s after the random-number flood: {:.1} MB (heap allocated {:.1} MB)",
        SETTLE.as_secs() + 3,
        rss_mb(pid),
        heap_mb(&gw)
    );

    // 3. Soak.
    if args.soak > 0 {
        println!(
            "\n## Soak: {} few-number floods of {}/s for {} s; gateway RSS (MB)",
            args.soak, args.flood_rate, args.soak_seconds
        );
        println!(
            "| flood | legitimate answered | RSS right after | 10 s later | {} s later | heap allocated then |",
            SETTLE.as_secs()
        );
        println!("|---|---|---|---|---|---|");
        for i in 1..=args.soak {
            let few = take(args.flood_numbers);
            let r = flood(
                &gw,
                dir.path(),
                &Plan {
                    tag: &format!("soak{i}"),
                    flood: &few,
                    rate: args.flood_rate,
                    legit: &take(100),
                    legit_rate: args.legit_rate,
                    seconds: args.soak_seconds,
                },
            )?;
            let right_after = rss_mb(pid);
            std::thread::sleep(Duration::from_secs(10));
            let later = rss_mb(pid);
            std::thread::sleep(SETTLE - Duration::from_secs(10));
            println!(
                "| {i} | {} of {} | {right_after:.1} | {later:.1} | {:.1} | {:.1} |",
                r.legit_ok,
                r.legit_ok + r.legit_failed,
                rss_mb(pid),
                heap_mb(&gw)
            );
        }
    }
    Ok(())
}
