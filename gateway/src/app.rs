//! Wiring: opens the outbox, builds the channels, serves the public and admin ports,
//! drains to Kafka, and shuts down on one signal with a drain and a grace period.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use contract::{AudioTap, ChannelContext, CitizenKeyer, Intake};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Secrets};
use crate::kafka::{self, DrainOptions, KafkaHealth, Topics};
use crate::notices::NoticeService;
use crate::outbox::{Outbox, OutboxOptions};
use crate::restrictions::Restrictions;
use crate::{admin, registry};

/// How often expired idempotency keys are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Runs the gateway until `shutdown` is cancelled (the binary cancels it on SIGTERM or
/// SIGINT), then drains.
pub async fn run(
    config: Config,
    secrets: Secrets,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.gateway.shutdown_grace_secs);
    let (outbox, writer) = Outbox::open(
        &config.gateway.data_dir,
        OutboxOptions {
            max_records: config.outbox.max_records,
            max_bytes: config.outbox.max_bytes,
            batch_max: config.outbox.batch_max,
            idempotency_ttl: Duration::from_secs(config.outbox.idempotency_ttl_secs),
            source_prefix: format!("/gateway/{}", config.gateway.instance),
        },
    )?;

    // Kafka: the producer is created now (it connects lazily); topics are created by a
    // task, so that a broker that is down at start does not stop intake.
    let health = Arc::new(KafkaHealth::default());
    let client_props = config.kafka_client_properties(&secrets);
    let topics = Topics {
        contacts: config.kafka.contacts_topic.clone(),
        ticket_drafts: config.kafka.ticket_drafts_topic.clone(),
        restrictions: config.kafka.restrictions_topic.clone(),
        audit: config.kafka.audit_topic.clone(),
        notices: config.kafka.notices_topic.clone(),
        sms_outbound: config.kafka.sms_outbound_topic.clone(),
        sms_status: config.kafka.sms_status_topic.clone(),
        ticket_status: config.kafka.ticket_status_topic.clone(),
        revisit_calls: config.kafka.revisit_calls_topic.clone(),
        revisit_results: config.kafka.revisit_results_topic.clone(),
        chat_outbound: config.kafka.chat_outbound_topic.clone(),
        chat_status: config.kafka.chat_status_topic.clone(),
        members: config.kafka.members_topic.clone(),
    };
    let reader_props = client_props.clone();
    let group_props = client_props.clone();
    let producer = kafka::producer(
        &client_props,
        config.kafka.message_timeout_ms,
        config.kafka.linger_ms,
        health.clone(),
    )
    .context("cannot create the Kafka producer")?;

    let drain_stop = CancellationToken::new();
    let drain_task = {
        let outbox = outbox.clone();
        let topics = topics.clone();
        let health = health.clone();
        let stop = drain_stop.clone();
        let create = config.kafka.create_topics;
        let (partitions, replication) = (config.kafka.partitions, config.kafka.replication_factor);
        tokio::spawn(async move {
            if create {
                let mut wait = Duration::from_millis(250);
                loop {
                    match kafka::create_topics(&client_props, &topics, partitions, replication)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot create Kafka topics yet; intake goes on, retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = stop.cancelled() => return,
                            }
                            wait = (wait * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
            let options = DrainOptions {
                max_in_flight: config.kafka.max_in_flight,
                ..DrainOptions::default()
            };
            kafka::drain(outbox, producer, topics, options, health, stop, grace).await;
        })
    };

    // Art. 9 restrictions: read the topic (every instance reads all of it) and wait for
    // it, within the load timeout, before any channel admits anybody.
    let intake: Arc<dyn Intake> = Arc::new(outbox.clone());
    let restrictions = Restrictions::new(intake.clone(), routing::Clock::system());
    let reader_stop = CancellationToken::new();
    let reader = restrictions
        .spawn_reader(
            reader_props.clone(),
            topics.restrictions.clone(),
            reader_stop.clone(),
        )
        .context("cannot start the restrictions reader")?;
    // Art. 15 urgent notices: every instance reads the whole notices topic (the operator
    // feed shows every notice wherever the operator connects).
    let notices = NoticeService::new(
        intake.clone(),
        config.linkage.policy(),
        routing::Clock::system(),
    );
    let notice_reader = notices
        .spawn_reader(reader_props, topics.notices.clone(), reader_stop.clone())
        .context("cannot start the notices reader")?;
    let load_timeout = Duration::from_secs(config.restrictions.load_timeout_secs);
    let restrictions_deadline = tokio::time::Instant::now() + load_timeout;
    if !restrictions.status().wait_synced(load_timeout).await {
        tracing::error!(
            timeout_secs = load_timeout.as_secs(),
            "RESTRICTIONS NOT SYNCED: the restrictions topic could not be read to its end; admitting with what was read (Art. 9 restrictions confirmed elsewhere may not hold here until Kafka is back)"
        );
        metrics::gauge!("gateway_restrictions_synced").set(0.0);
    }

    // Speech recognition (Art. 15's urgent calls and every ticket's prefill read from it).
    let audio_tap: Option<Arc<dyn AudioTap>> = match &config.asr {
        None => None,
        Some(a) => {
            let prefiller = routing::Prefiller::shared();
            let hotwords: Vec<String> = prefiller
                .hotwords()
                .into_iter()
                .map(str::to_owned)
                .collect();
            let a = a.clone();
            let started = tokio::task::spawn_blocking(move || {
                let words: Vec<&str> = hotwords.iter().map(String::as_str).collect();
                a.start(&words)
            })
            .await
            .map_err(|e| anyhow::anyhow!("speech model loader: {e}"))?;
            match started {
                Ok(tap) => Some(tap as Arc<dyn AudioTap>),
                Err(e) => {
                    tracing::error!(error = %e, "SPEECH RECOGNITION IS OFF: calls are recorded but not transcribed, agents get no live transcript and tickets no prefill. Fix the [asr] model and restart");
                    metrics::gauge!("gateway_asr_enabled").set(0.0);
                    None
                }
            }
        }
    };
    if audio_tap.is_some() {
        metrics::gauge!("gateway_asr_enabled").set(1.0);
    }

    // Channels.
    let tasks = TaskTracker::new();
    let ctx = ChannelContext {
        intake: intake.clone(),
        blocklist: Arc::new(restrictions.book().clone()),
        screen: Arc::new(crate::screen::Screener {
            notices: notices.clone(),
            restrictions: restrictions.clone(),
            prefiller: routing::Prefiller::shared(),
            abuse: routing::AbuseRules::builtin(),
        }),
        keyer: CitizenKeyer::new(&secrets.citizen_key),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        audio_tap,
        linkage_lines: Arc::new(
            config
                .linkage
                .targets
                .iter()
                .filter_map(|(t, l)| Some((t.clone(), l.uri.clone()?)))
                .collect(),
        ),
    };
    let mut public = axum::Router::new();
    if let Some(secret) = &secrets.linkage_token_secret {
        public = public.merge(notices.router(
            &config.linkage.path,
            contract::token::TokenVerifier::new(secret.as_bytes(), "linkage:"),
            shutdown.clone(),
        ));
    } else {
        tracing::warn!("The linkage operator feed is off: set linkage.token_secret_env");
    }
    let members = crate::escalation::Members::new(&config.gateway.instance);
    // The channel tasks still running, by name: a shutdown that outlives its grace
    // period says which.
    let running: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let mut dialer: Option<Arc<dyn contract::LinkageDialer>> = None;
    let mut sms_sender: Option<Arc<dyn contract::SmsSender>> = None;
    let mut revisit_dialer: Option<Arc<dyn contract::RevisitDialer>> = None;
    let mut session_push: Option<Arc<dyn contract::SessionPush>> = None;
    for channel in registry::channels(&config.channels) {
        let kind = channel.kind();
        let parts = channel
            .build(ctx.clone())
            .await
            .map_err(|e| anyhow::anyhow!("channel {kind} failed to start: {e}"))?;
        if let Some(router) = parts.router {
            public = public.merge(router);
        }
        for (i, task) in parts.tasks.into_iter().enumerate() {
            let name = format!("{kind}#{i}");
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone());
            let running = running.clone();
            tasks.spawn(async move {
                task.await;
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
            });
        }
        dialer = dialer.or(parts.dialer);
        sms_sender = sms_sender.or(parts.sms_sender);
        revisit_dialer = revisit_dialer.or(parts.revisit_dialer);
        session_push = session_push.or(parts.session_push);
        tracing::info!(channel = %kind, "Channel started");
    }

    // Request topics: the outbound SMS path, one instance sending each text; Art. 17
    // revisit calls, placed by the instances with a revisit route; Art. 16 messages into
    // open chat sessions, written by every instance into the sessions connected to it.
    let requests = crate::request_topic::Runner {
        props: group_props.clone(),
        group_prefix: config.kafka.group_prefix.clone(),
        members: members.clone(),
        intake: intake.clone(),
        stop: shutdown.clone(),
    };
    match sms_sender {
        Some(sender) => {
            tasks.spawn(requests.clone().run(
                topics.sms_outbound.clone(),
                &crate::sms_outbound::REQUESTS,
                crate::sms_outbound::Sms::new(sender),
            ));
        }
        None => tracing::warn!(
            "No outbound SMS carrier (channels.sms.outbound): texts, urgent-notice SMS included, are requested but not sent by this instance"
        ),
    }
    match revisit_dialer {
        Some(dialer) => {
            tasks.spawn(requests.clone().run(
                topics.revisit_calls.clone(),
                &crate::revisit::REQUESTS,
                crate::revisit::RevisitCalls::new(dialer),
            ));
        }
        None => tracing::info!(
            "No revisit route (channels.sip.revisit): this instance places no revisit calls"
        ),
    }
    let chat_messages = match session_push {
        Some(push) => crate::chat_outbound::ChatMessages::new(push),
        None => {
            tracing::info!(
                "No chat channel (channels.chat): chat messages read by this instance find no open session"
            );
            crate::chat_outbound::ChatMessages::without_chat()
        }
    };
    tasks.spawn(requests.run(
        topics.chat_outbound.clone(),
        &crate::chat_outbound::REQUESTS,
        chat_messages,
    ));

    // Art. 15: the clocks of the notices this instance owns (the notices topic's
    // partitions assigned to it in the clock group).
    let membership = crate::escalation::spawn_membership(
        group_props,
        config.kafka.members_topic.clone(),
        members.clone(),
        reader_stop.clone(),
    )
    .context("cannot start the members heartbeat")?;
    let escalator = Arc::new(crate::escalation::Escalator {
        notices: notices.clone(),
        members: members.clone(),
        targets: config.linkage.targets.clone().into_iter().collect(),
        dialer,
    });
    tasks.spawn(escalator.run(shutdown.clone()));

    // Art. 9: expiries are written when the 30 days are over.
    tasks.spawn(restrictions.clone().run_expiry(shutdown.clone()));

    // Housekeeping: forget expired idempotency keys.
    {
        let outbox = outbox.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => outbox.sweep_expired_keys().await,
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    let public_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen {}", config.admin.listen))?;
    tracing::info!(
        http = %public_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        instance = %config.gateway.instance,
        "Gateway listening"
    );

    let admin_state = admin::AdminState {
        outbox: outbox.clone(),
        kafka: health,
        metrics,
        token: secrets.admin_token.clone(),
        restrictions: restrictions.clone(),
        restrictions_deadline,
        notices: notices.clone(),
        members: members.clone(),
    };
    let api_state = crate::restriction_api::ApiState {
        restrictions: restrictions.clone(),
        keyer: CitizenKeyer::new(&secrets.citizen_key),
        token: secrets.admin_token.clone(),
    };
    let public_server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(public_listener, public)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    let admin_stop = CancellationToken::new();
    let admin_server = {
        let stop = admin_stop.clone();
        tokio::spawn(async move {
            axum::serve(admin_listener, admin::router(admin_state, api_state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    shutdown.cancelled().await;
    tracing::info!(grace_secs = grace.as_secs(), "Shutting down: draining");

    // 1. Channels stop taking work and finish what they accepted.
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        let left: Vec<String> = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        tracing::warn!(channel_tasks = ?left, "Channels did not finish within the grace period");
    }
    if tokio::time::timeout(grace, public_server).await.is_err() {
        tracing::warn!("Public connections did not close within the grace period");
    }
    // 2. The outbox takes nothing more; the drain gets the grace period for Kafka.
    outbox.close();
    drain_stop.cancel();
    let _ = tokio::time::timeout(grace + Duration::from_secs(1), drain_task).await;
    let depth = outbox.depth();
    admin_stop.cancel();
    let _ = admin_server.await;
    reader_stop.cancel();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = reader.join();
        let _ = notice_reader.join();
        let _ = membership.join();
    })
    .await;
    // 3. The writer commits what it holds and stops: every holder of the intake lets go
    // first, and the writer is told to stop all the same (a channel task that outlived
    // the grace period still holds a handle; waiting for it hung `make run`'s Ctrl-C).
    outbox.stop_writer().await;
    drop(ctx);
    drop(intake);
    drop(notices);
    drop(restrictions);
    drop(outbox);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .ok();
    tracing::info!(undelivered = depth, "Gateway stopped");
    Ok(())
}
