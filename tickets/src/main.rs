//! `ticket-service`: the downstream ticket service's binary.
//!
//! - `run --config FILE`: consume the gateway's topics, serve the API, run the clocks;
//! - `check-config FILE`: validate a configuration;
//! - `migrate --database-url URL`: apply the migrations and exit;
//! - `mint-token --role agent|supervisor|unit ...`: a token for development and tools.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tickets::api::{self, ApiState, ProgressGuard};
use tickets::calendar::Calendar;
use tickets::config::{Clock, Config};
use tickets::consumer::{self, ConsumerOptions, ConsumerStatus};
use tickets::publisher::{self, PublisherOptions};
use tickets::repeat::RepeatParams;
use tickets::store::{OutTopics, Store};
use tickets::units::Units;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ticket-service", about = "The 12345 hotline's ticket service")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the service.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// The file.
        config: PathBuf,
    },
    /// Apply the database migrations and exit.
    Migrate {
        /// `postgres://...`
        #[arg(long, env = "TICKETS_DATABASE_URL")]
        database_url: String,
    },
    /// Mint an API token (development and tools; production tokens come from the
    /// centre's login service with the same secret).
    MintToken {
        /// `agent`, `supervisor` or `unit`.
        #[arg(long)]
        role: String,
        /// The person's id.
        #[arg(long)]
        id: String,
        /// The unit, for `unit`.
        #[arg(long)]
        unit: Option<String>,
        /// Valid for this many seconds.
        #[arg(long, default_value_t = 8 * 3600)]
        valid_secs: u64,
        /// The environment variable holding the secret.
        #[arg(long, default_value = "TICKETS_TOKEN_SECRET")]
        secret_env: String,
    },
}

fn secret(env: &str) -> anyhow::Result<Vec<u8>> {
    let s = std::env::var(env).map_err(|_| anyhow::anyhow!("set {env} (the token secret)"))?;
    if s.len() < 16 {
        anyhow::bail!("{env} is shorter than 16 bytes");
    }
    Ok(s.into_bytes())
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: valid", config.display());
            Ok(())
        }
        Cmd::Migrate { database_url } => {
            init_logs();
            let pool = sqlx::PgPool::connect(&database_url).await?;
            tickets::store::MIGRATOR.run(&pool).await?;
            println!("migrated");
            Ok(())
        }
        Cmd::MintToken {
            role,
            id,
            unit,
            valid_secs,
            secret_env,
        } => {
            let subject = match (role.as_str(), unit) {
                ("agent", None) => format!("agent:{id}"),
                ("supervisor", None) => format!("supervisor:{id}"),
                ("unit", Some(u)) => format!("unit:{u}:{id}"),
                _ => anyhow::bail!("--role agent|supervisor, or --role unit --unit <id>"),
            };
            if tickets::rules::Role::from_subject(&subject).is_none() {
                anyhow::bail!("ids are 1-64 of letters, digits, '-' and '_'");
            }
            let v = contract::token::TokenVerifier::new(&secret(&secret_env)?, api::SCOPE);
            println!(
                "{}",
                v.mint(&subject, contract::token::unix_now() + valid_secs)
            );
            Ok(())
        }
        Cmd::Run { config } => {
            init_logs();
            let config = Config::load(&config)?;
            run(config).await
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let instance = config.instance();
    let token_secret = secret(&config.api.token_secret_env)?;
    let mut years: Vec<String> = tickets::calendar::SHIPPED_YEARS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for f in &config.rules.holiday_files {
        years.push(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
        );
    }
    let calendar = Calendar::from_toml(&years.iter().map(String::as_str).collect::<Vec<_>>())?;
    let units = match &config.rules.units_file {
        Some(f) => Units::from_toml(&std::fs::read_to_string(f)?)?,
        None => Units::builtin(),
    };
    let repeat = match &config.rules.repeat_file {
        Some(f) => RepeatParams::from_toml(&std::fs::read_to_string(f)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        None => RepeatParams::builtin(),
    };
    let mut db: sqlx::postgres::PgConnectOptions = config.database.url.parse()?;
    if let Ok(pw) = std::env::var("TICKETS_DATABASE_PASSWORD") {
        db = db.password(&pw);
    }
    let store = Store::connect(
        db.clone(),
        config.database.max_connections,
        Arc::new(calendar),
        Arc::new(units),
        Arc::new(repeat),
        OutTopics {
            status: config.kafka.status_topic.clone(),
            dead_letter: config.kafka.dead_letter_topic.clone(),
            sms_outbound: config.kafka.sms_outbound_topic.clone(),
            revisit_calls: config.kafka.revisit_calls_topic.clone(),
            revisit_results: config.kafka.revisit_results_topic.clone(),
            sms_status: config.kafka.sms_status_topic.clone(),
            chat_outbound: config.kafka.chat_outbound_topic.clone(),
            chat_status: config.kafka.chat_status_topic.clone(),
        },
        format!("/tickets/{instance}"),
    )
    .await?
    .with_followup(config.followup.params()?);
    let props = config.client_properties();
    if let Err(e) = publisher::create_topics(
        &props,
        &[
            &config.kafka.status_topic,
            &config.kafka.dead_letter_topic,
            &config.kafka.sms_outbound_topic,
            &config.kafka.revisit_calls_topic,
            &config.kafka.revisit_results_topic,
            &config.kafka.sms_status_topic,
            &config.kafka.chat_outbound_topic,
            &config.kafka.chat_status_topic,
        ],
        config.kafka.partitions,
    )
    .await
    {
        tracing::warn!(error = %e, "Creating the service's topics failed; the broker may auto-create them");
    }
    let clock = Clock::offset(chrono::Duration::seconds(config.clock.offset_secs));
    let shutdown = CancellationToken::new();
    let status = Arc::new(ConsumerStatus::default());

    let consumer_task = tokio::spawn(consumer::run(
        store.clone(),
        ConsumerOptions {
            instance: instance.clone(),
            group: config.kafka.group.clone(),
            contacts_topic: config.kafka.contacts_topic.clone(),
            drafts_topic: config.kafka.drafts_topic.clone(),
            revisit_results_topic: config.kafka.revisit_results_topic.clone(),
            sms_status_topic: config.kafka.sms_status_topic.clone(),
            chat_status_topic: config.kafka.chat_status_topic.clone(),
            client_properties: props.clone(),
            batch_max: config.kafka.batch_max,
            member_timeout: config.member_timeout(),
            fetch_wait_ms: config.kafka.fetch_wait_ms,
        },
        status.clone(),
        shutdown.clone(),
    ));
    let publisher_task = tokio::spawn(publisher::run(
        store.clone(),
        PublisherOptions {
            client_properties: props,
            database: db,
            sweep_every: std::time::Duration::from_secs(config.clock.sweep_secs),
            clocks_every: std::time::Duration::from_millis(config.clock.clocks_ms),
        },
        clock,
        status.clone(),
        shutdown.clone(),
    ));
    let app = api::router(ApiState {
        store: store.clone(),
        verifier: contract::token::TokenVerifier::new(&token_secret, api::SCOPE),
        clock,
        progress: Arc::new(ProgressGuard::new(
            config.api.progress_per_sec,
            config.api.progress_failures,
        )),
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(config.api.listen).await?;
    tracing::info!(listen = %config.api.listen, instance = %instance, "Ticket service running");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("Stopping");
        stop.cancel();
    });
    let serve_stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { serve_stop.cancelled().await })
        .await?;
    let _ = consumer_task.await;
    let _ = publisher_task.await;
    Ok(())
}
