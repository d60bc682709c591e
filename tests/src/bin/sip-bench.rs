//! SIP benchmark: the call rate the gateway sustains and the CPU a relayed, recorded call
//! costs, beside baselines measured in the same run.
//!
//! ```text
//! cargo build --release -p gateway -p e2e
//! target/release/sip-bench --rates 100,200,300,400 --seconds 10 --concurrent 200 --hold 15
//! ```
//!
//! It starts a tansu broker (memory) and a release gateway with the SIP channel, and
//! drives them with sipp:
//! 1. **signalling**: for each rate, sipp places `rate x seconds` short calls (INVITE with
//!    SDP, 200, ACK, BYE; no RTP) through the gateway to a sipp agent side. A rate is
//!    sustained when under 0.5% of calls fail. Baseline: the same calls from sipp to a
//!    sipp agent side directly.
//! 2. **bare signalling**: OPTIONS at increasing rates to the gateway and to Kamailio
//!    (Debian's, answering statelessly with `sl_send_reply`), when installed.
//! 3. **media**: `concurrent` calls held `hold` seconds with G.711 RTP both ways (sipp
//!    rtp_stream on both sides) and recording on; the gateway's CPU over the window in
//!    which all of them are up, per call, as a fraction of one core.
//!
//! CPU is read from /proc for each process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use e2e::cpu_seconds;
use e2e::sip::{Sipp, free_udp_tcp_port, sipp_counts, sipp_dir, start_gateway};

#[derive(Debug, Parser)]
struct Args {
    /// Call rates to try, calls per second.
    #[arg(long, value_delimiter = ',', default_value = "100,200,300,400")]
    rates: Vec<u32>,
    /// Seconds of calls at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// OPTIONS rates to try.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000")]
    options_rates: Vec<u32>,
    /// Concurrent calls with RTP for the media phase (0 skips it).
    #[arg(long, default_value_t = 200)]
    concurrent: u32,
    /// Seconds each media call lasts.
    #[arg(long, default_value_t = 15)]
    hold: u32,
}

/// Calls that succeeded and failed, from sipp's statistics file.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    ok: u64,
    failed: u64,
    wall: f64,
    cpu_gateway: f64,
    cpu_sipp: f64,
}

impl Outcome {
    fn failed_pct(&self) -> f64 {
        let all = self.ok + self.failed;
        if all == 0 {
            100.0
        } else {
            self.failed as f64 * 100.0 / all as f64
        }
    }
}

/// Runs a uac against `target` and returns its counts, with the CPU of `watch` meanwhile.
fn run_uac(
    scenario: &str,
    target: &str,
    rate: u32,
    calls: u32,
    extra: &[&str],
    watch: Option<u32>,
) -> Result<Outcome> {
    let port = e2e::free_port();
    let rate_s = rate.to_string();
    let calls_s = calls.to_string();
    let mut args: Vec<&str> = vec![
        "-r",
        &rate_s,
        "-m",
        &calls_s,
        "-l",
        "100000",
        "-key",
        "caller",
        "13800138000",
        "-trace_stat",
        "-fd",
        "1",
        "-timeout",
        "600s",
        "-recv_timeout",
        "8000",
    ];
    args.extend_from_slice(extra);
    args.push(target);
    let scratch = tempfile::tempdir()?;
    let stf = scratch.path().join("stats.csv");
    let stf_s = stf.display().to_string();
    args.splice(0..0, ["-stf", stf_s.as_str()]);
    let uac = Sipp::start("citizen", scenario, "127.0.0.1", port, &args)?;
    let g0 = watch.map(cpu_seconds).unwrap_or(0.0);
    let s0 = cpu_seconds(uac.pid());
    let start = Instant::now();
    let pid = uac.pid();
    let mut s1 = s0;
    // Read the uac's CPU just before it exits.
    let r = {
        let deadline = Instant::now() + Duration::from_secs(u64::from(calls / rate.max(1)) + 120);
        let mut uac = uac;
        loop {
            let c = cpu_seconds(pid);
            if c.is_finite() {
                s1 = c;
            }
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        uac.kill();
        sipp_counts(&stf)
    };
    let wall = start.elapsed().as_secs_f64();
    let g1 = watch.map(cpu_seconds).unwrap_or(0.0);
    Ok(Outcome {
        ok: r.0,
        failed: r.1,
        wall,
        cpu_gateway: g1 - g0,
        cpu_sipp: s1 - s0,
    })
}

fn kamailio(port: u16) -> Option<Child> {
    let cfg = sipp_dir().join("kamailio-options.cfg");
    let modules = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
    Command::new("kamailio")
        .args(["-f"])
        .arg(&cfg)
        .args(["-L", modules, "-DD", "-E", "-m", "64", "-M", "8", "-l"])
        .arg(format!("udp:127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (_broker, gw, agent_port) = start_gateway(
        |sip| {
            sip.invite_rate = 100_000.0;
            sip.invite_burst = 100_000;
            sip.max_calls = 20_000;
            // Every call of this benchmark is from one number: its share is lifted
            // (sip-flood-bench measures the shares).
            sip.admission = Some(
                "number_max_calls = 100000\nnumber_calls_per_minute = 10000000.0\nnumber_burst = 1000000"
                    .into(),
            );
        },
        "warn",
    )
    .context("start the gateway (cargo build --release -p gateway -p e2e)")?;
    let gw_pid = gw.pid().context("gateway pid")?;
    let gw_target = format!("127.0.0.1:{}", gw.sip_port);
    println!("sip-bench: gateway {gw_target}, agent side 127.0.0.1:{agent_port}");

    // 1. Signalling: short calls through the gateway, and sipp to sipp directly.
    println!(
        "\n## Call rate (INVITE/200/ACK/BYE, no RTP), {} s per rate",
        args.seconds
    );
    println!(
        "| rate | via gateway: ok / failed (%) | gateway CPU per call | caller sipp CPU per call | sipp to sipp directly: ok / failed (%) | wall via / direct |"
    );
    println!("|---|---|---|---|---|---|");
    let mut sustained = 0;
    let mut direct_sustained = 0;
    for &rate in &args.rates {
        let calls = rate * args.seconds;
        let agent = Sipp::start(
            "agent",
            "bench-agent-short.xml",
            "127.0.0.1",
            agent_port,
            &["-timeout", "600s"],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let via = run_uac(
            "bench-citizen-short.xml",
            &gw_target,
            rate,
            calls,
            &[],
            Some(gw_pid),
        )?;
        drop(agent);
        let direct_port = free_udp_tcp_port();
        let direct_agent = Sipp::start(
            "agent",
            "bench-agent-short.xml",
            "127.0.0.1",
            direct_port,
            &["-timeout", "600s"],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let direct = run_uac(
            "bench-citizen-short.xml",
            &format!("127.0.0.1:{direct_port}"),
            rate,
            calls,
            &[],
            None,
        )?;
        drop(direct_agent);
        if via.failed_pct() < 0.5 && via.ok + via.failed >= u64::from(calls) {
            sustained = rate;
        }
        if direct.failed_pct() < 0.5 && direct.ok + direct.failed >= u64::from(calls) {
            direct_sustained = rate;
        }
        println!(
            "| {rate}/s | {} / {} ({:.2}%) | {:.0} µs | {:.0} µs | {} / {} ({:.2}%) | {:.1} s / {:.1} s |",
            via.ok,
            via.failed,
            via.failed_pct(),
            via.cpu_gateway / (via.ok.max(1) as f64) * 1e6,
            via.cpu_sipp / (via.ok.max(1) as f64) * 1e6,
            direct.ok,
            direct.failed,
            direct.failed_pct(),
            via.wall,
            direct.wall
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "\nsustained (< 0.5% failed): gateway {sustained}/s, sipp to sipp {direct_sustained}/s"
    );

    // 2. Bare signalling: OPTIONS to the gateway and to Kamailio.
    println!("\n## OPTIONS, 5 s per rate");
    println!("| rate | gateway: ok / failed (%) | Kamailio (sl): ok / failed (%) |");
    println!("|---|---|---|");
    let kam_port = free_udp_tcp_port();
    let mut kam = kamailio(kam_port);
    std::thread::sleep(Duration::from_secs(1));
    for &rate in &args.options_rates {
        let calls = rate * 5;
        let g = run_uac("options.xml", &gw_target, rate, calls, &[], Some(gw_pid))?;
        let k = match &kam {
            Some(_) => Some(run_uac(
                "options.xml",
                &format!("127.0.0.1:{kam_port}"),
                rate,
                calls,
                &[],
                None,
            )?),
            None => None,
        };
        let kam_cell = k.map_or("Kamailio not installed".to_owned(), |k| {
            format!("{} / {} ({:.2}%)", k.ok, k.failed, k.failed_pct())
        });
        println!(
            "| {rate}/s | {} / {} ({:.2}%) | {kam_cell} |",
            g.ok,
            g.failed,
            g.failed_pct()
        );
    }
    if let Some(k) = kam.as_mut() {
        let _ = k.kill();
        let _ = k.wait();
    }

    // 3. Media: concurrent calls with RTP both ways and recording.
    if args.concurrent > 0 {
        let c = args.concurrent;
        let hold_ms = (args.hold * 1000).to_string();
        // Launch over `hold` seconds, then as many again: all `c` calls are up from `hold`
        // to 2 x `hold` seconds.
        let rate = (c / args.hold).max(1);
        let calls = rate * args.hold * 2;
        println!(
            "\n## {c} concurrent calls, G.711 RTP both ways, recording on (launch {rate}/s, hold {} s)",
            args.hold
        );
        let agent = Sipp::start(
            "agent",
            "agent-answer.xml",
            "127.0.0.1",
            agent_port,
            &["-timeout", "600s"],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let gw_target2 = gw_target.clone();
        let hold = args.hold;
        let uac = std::thread::spawn(move || {
            run_uac(
                "citizen-call.xml",
                &gw_target2,
                rate,
                calls,
                &["-d", &hold_ms],
                None,
            )
        });
        std::thread::sleep(Duration::from_secs(u64::from(hold)) + Duration::from_millis(500));
        let g0 = cpu_seconds(gw_pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(u64::from(hold)) - Duration::from_millis(1000));
        let g1 = cpu_seconds(gw_pid);
        let window = t0.elapsed().as_secs_f64();
        let outcome = uac.join().map_err(|_| anyhow::anyhow!("uac thread"))??;
        drop(agent);
        let core_fraction = (g1 - g0) / window;
        println!(
            "calls ok / failed: {} / {} ({:.2}%)",
            outcome.ok,
            outcome.failed,
            outcome.failed_pct()
        );
        println!(
            "gateway CPU while {c} calls were up: {:.1}% of a core in all, {:.3}% of a core per call (target < 0.1%)",
            core_fraction * 100.0,
            core_fraction * 100.0 / f64::from(c)
        );
        let recordings = std::fs::read_dir(gw.recordings_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        println!("recordings written: {recordings}");
    }
    Ok(())
}
