//! `gateway`: the 12345 intake gateway's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

// The gateway allocates many small, short-lived buffers per message (frames, JSON,
// records); glibc's malloc showed as a tenth of its CPU under load. jemalloc, with its
// background threads purging freed pages on a timer (turned on in `main`): after a SIP
// flood an idle gateway gives the memory back within a minute. mimalloc (used before)
// returned freed pages only when the process next allocated, so an idle gateway held
// 200 MB after a flood until the next calls came (docs/benchmarks.md, "SIP floods").
// `--features system-alloc` keeps the C library's malloc, so that heaptrack (which hooks
// malloc) can see the gateway's heap.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's own figures as gauges every 10 s: what the gateway's objects take
/// (`gateway_heap_allocated_bytes`) and what the allocator holds from the system
/// (`gateway_heap_resident_bytes`), so that an operator can tell a leak (the first
/// grows) from memory not yet given back (only the second).
#[cfg(not(feature = "system-alloc"))]
async fn heap_gauges() {
    use tikv_jemalloc_ctl::{epoch, stats};
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        if epoch::advance().is_err() {
            continue;
        }
        if let (Ok(allocated), Ok(resident)) = (stats::allocated::read(), stats::resident::read()) {
            metrics::gauge!("gateway_heap_allocated_bytes").set(allocated as f64);
            metrics::gauge!("gateway_heap_resident_bytes").set(resident as f64);
        }
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "The 12345 hotline's intake gateway")]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gateway.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Checks a config file (and the secrets it names) and exits.
    CheckConfig {
        /// The TOML config file.
        config: PathBuf,
    },
    /// Mints a feed token, as the centre's login service does (for development and
    /// tools): `linkage` for a linkage operator (subject `<target>:<operator>`), `agent`
    /// for an agent desk (subject: the agent). The secret is read from `--secret-env`.
    MintToken {
        /// `linkage` or `agent`.
        #[arg(long)]
        scope: TokenScope,
        /// Who the token is for.
        #[arg(long)]
        subject: String,
        /// The environment variable with the feed's secret.
        #[arg(long)]
        secret_env: String,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 8 * 3600)]
        valid_secs: u64,
    },
    /// Reads recorded contacts from Kafka with the Art. 15 recognition in use and with a
    /// candidate recognition file, and prints what would change: notices gained, lost,
    /// and to other targets, texts masked (docs/routing.md).
    ReplayRecognition(gateway::replay::ReplayArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TokenScope {
    Linkage,
    Agent,
}

/// Turns transparent huge pages off for this process: the kernel's khugepaged fills
/// whole 2 MiB pages around the few objects a flood leaves scattered in a region (with
/// mimalloc, which asks for huge pages, the gateway's memory grew by 30 MB in a minute
/// while idle after a SIP flood). The gateway's heap is a few hundred megabytes at most,
/// where huge pages save little. With THP mode `always` the kernel would back any
/// allocator's memory so (this host runs `madvise`; that case was not measured).
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("gateway: could not turn transparent huge pages off: {e}");
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    #[cfg(not(feature = "system-alloc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("gateway: jemalloc's background threads did not start: {e}");
    }
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => {
            match Config::load(&config).and_then(|c| c.validate().map(|_| c)) {
                Ok(c) => {
                    println!(
                        "{}: valid (instance {}, channels: {})",
                        config.display(),
                        c.gateway.instance,
                        [
                            ("chat", c.channels.chat.is_some()),
                            ("sms", c.channels.sms.is_some()),
                            ("phone", c.channels.sip.is_some()),
                        ]
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                    );
                    if let Some(a) = &c.asr
                        && !a.model.is_file()
                    {
                        println!(
                            "warning: asr.model {} does not exist: calls will not be transcribed (deploy/fetch-model.sh)",
                            a.model.display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::ReplayRecognition(args) => match gateway::replay::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::MintToken {
            scope,
            subject,
            secret_env,
            valid_secs,
        } => {
            let Some(secret) = std::env::var(&secret_env).ok().filter(|s| s.len() >= 16) else {
                eprintln!("error: {secret_env} is not set or shorter than 16 bytes");
                return ExitCode::from(2);
            };
            let scope = match scope {
                TokenScope::Linkage => "linkage:",
                TokenScope::Agent => "",
            };
            let verifier = contract::token::TokenVerifier::new(secret.as_bytes(), scope);
            println!(
                "{}",
                verifier.mint(&subject, contract::token::unix_now() + valid_secs)
            );
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            let (cfg, secrets) =
                match Config::load(&config).and_then(|c| c.validate().map(|s| (c, s))) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async move {
                let metrics = telemetry::init_metrics()?;
                #[cfg(not(feature = "system-alloc"))]
                tokio::spawn(heap_gauges());
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    signal.cancel();
                });
                gateway::app::run(cfg, secrets, metrics, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "Gateway failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops the gateway");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
