//! `gateway`: the 12345 intake gateway's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

// The gateway allocates many small, short-lived buffers per message (frames, JSON,
// records); glibc's malloc showed as a tenth of its CPU under load, mimalloc far less.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TokenScope {
    Linkage,
    Agent,
}

fn main() -> ExitCode {
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
