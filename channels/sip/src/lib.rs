//! Phone calls from carrier trunks.
//!
//! The gateway's voice path is a back-to-back user agent (B2BUA): a citizen's call from a
//! trunk (leg A) is answered by the gateway's own user agent, which places a second call
//! (leg B) to the agent side (the centre's ACD or an agent softphone) and bridges the two,
//! relaying RTP through itself so that each direction can be recorded and transcribed.
//! Every call becomes contacts on Kafka through the outbox: offered, answered, ended, or
//! rejected.
//!
//! Layout, bottom up:
//! - [`wire`]: framing (UDP datagrams, TCP streams), folding, compact names, limits;
//! - [`msg`]: rsip parsing with the RFC 3261 §8.2 checks, error responses, builders;
//! - [`endpoint`]: transport (UDP, TCP) and transaction layers with their timers;
//! - [`auth`]: trunk digest authentication;
//! - [`sdp`], [`rtp`], [`g711`]: media descriptions, RTP headers, G.711 codecs;
//! - [`media`]: port pool, per-call relay, stereo WAV recording, audio tap, DTMF;
//! - [`call`]: one task per call: admission, bridging, fallback, contacts;
//! - [`feed`]: the agent call screen feed (screen-pops and call states over WebSocket);
//! - [`uac`]: the calls the gateway places itself, and on it [`linkage`] (Art. 15
//!   escalation calls to linkage lines) and [`revisit`] (Art. 17 revisit calls to
//!   citizens);
//! - this module: the channel (config to running listeners) and the request router.

pub mod admission;
pub mod auth;
pub mod call;
pub mod config;
pub mod endpoint;
pub mod feed;
pub mod g711;
pub mod linkage;
pub mod media;
pub mod msg;
pub mod prompt;
pub mod revisit;
pub mod rtp;
pub mod sdp;
pub mod transcript;
pub mod uac;
pub mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use contract::{BoxError, Channel, ChannelContext, ChannelKind, ChannelParts};
use rsip::{Header, Method, Request};
use tokio::sync::mpsc;

pub use config::{Fallback, RevisitConfig, SipConfig, SipConfigError};

use crate::admission::Admission;
use crate::auth::{Digest, Verdict};
use crate::call::CallInput;
use crate::endpoint::{Endpoint, Peer, ServerTx, Timers, TransactionUser, lock};
use crate::media::PortPool;
use crate::prompt::Prompts;

/// Methods the gateway implements (in the Allow header of its answers).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// The SIP channel.
#[derive(Debug)]
pub struct SipChannel {
    config: SipConfig,
}

impl SipChannel {
    /// A channel with this (validated) config.
    pub fn new(config: SipConfig) -> Self {
        SipChannel { config }
    }
}

#[async_trait]
impl Channel for SipChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Phone
    }

    async fn build(self: Box<Self>, ctx: ChannelContext) -> Result<ChannelParts, BoxError> {
        let cfg = self.config;
        std::fs::create_dir_all(&cfg.recordings_dir).map_err(|e| {
            format!(
                "cannot create the recordings directory {}: {e}",
                cfg.recordings_dir.display()
            )
        })?;
        let udp = tokio::net::UdpSocket::bind(cfg.listen_udp)
            .await
            .map_err(|e| format!("cannot bind SIP UDP {}: {e}", cfg.listen_udp))?;
        let udp6 = match cfg.listen_udp6 {
            Some(addr) => Some(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|e| format!("cannot bind SIP UDP {addr}: {e}"))?,
            ),
            None => None,
        };
        let mut tcp = Vec::new();
        for addr in [cfg.listen_tcp, cfg.listen_tcp6].into_iter().flatten() {
            tcp.push(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot bind SIP TCP {addr}: {e}"))?,
            );
        }
        let tls = match &cfg.tls {
            Some(t) => {
                let acceptor = tls_acceptor(t)?;
                let listener = tokio::net::TcpListener::bind(t.listen)
                    .await
                    .map_err(|e| format!("cannot bind SIP TLS {}: {e}", t.listen))?;
                Some((
                    listener,
                    acceptor,
                    Duration::from_secs(t.handshake_timeout_secs),
                ))
            }
            None => None,
        };
        let limits = wire::Limits {
            max_message_bytes: cfg.max_message_bytes,
            max_headers: cfg.max_headers,
        };
        let timers = Timers::from_t1(Duration::from_millis(cfg.t1_ms));
        let udp6 = udp6.zip(cfg.host6());
        let ep = Endpoint::dual(udp, udp6, timers, limits, cfg.host());
        ep.set_stream_limits(endpoint::StreamLimits {
            max_connections: cfg.stream_max_connections,
            max_per_source: cfg.stream_max_per_source,
            message_timeout: Duration::from_millis(cfg.stream_message_timeout_ms),
            ..endpoint::StreamLimits::default()
        });
        let local_port = ep.udp_addr()?.port();
        let trunks = cfg
            .trunks
            .iter()
            .map(|t| {
                let password = t.digest.as_ref().map(|d| {
                    (
                        d.username.clone(),
                        std::env::var(&d.password_env).unwrap_or_default(),
                    )
                });
                Trunk {
                    name: t.name.clone(),
                    nets: t.addresses.clone(),
                    digest: password,
                }
            })
            .collect();
        // Art. 9: the restrictions people record (the gateway's, from the restrictions
        // topic), then the config's fixed numbers.
        let blocklist: Arc<dyn routing::Blocklist> = Arc::new(contract::Layered(vec![
            ctx.blocklist.clone(),
            Arc::new(routing::StaticBlocklist::new(&cfg.blocked_callers)),
        ]));
        let ports = PortPool::dual(
            cfg.media_bind(),
            cfg.media_bind6(),
            cfg.media.port_min,
            cfg.media.port_max,
        );
        let (commands_tx, mut commands) = mpsc::channel::<feed::Command>(64);
        let feed = cfg.agent_feed.as_ref().map(|f| {
            let secret = std::env::var(&f.token_secret_env).unwrap_or_default();
            feed::Feed::new(
                feed::TokenVerifier::new(secret.as_bytes(), ""),
                f.max_connections_per_agent,
                ctx.shutdown.clone(),
                commands_tx.clone(),
            )
        });
        let router = match (&feed, &cfg.agent_feed) {
            (Some(feed), Some(f)) => Some(feed.clone().router(&f.path)),
            _ => None,
        };
        let core = Arc::new(Core {
            digest: Digest::new(cfg.realm.clone()),
            ep: ep.clone(),
            ports,
            prompts: Prompts::load()?,
            local_port,
            trunks,
            blocklist,
            calls: Mutex::new(HashMap::new()),
            by_id: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            admission: Arc::new(Admission::new(
                &cfg,
                cfg.admission
                    .priority_callers
                    .iter()
                    .filter_map(|n| ctx.keyer.phone(n).map(|c| c.key))
                    .collect(),
            )),
            ctx: ctx.clone(),
            feed,
            prefiller: routing::Prefiller::shared(),
            refused: LogSample::new(),
            cfg: Arc::new(cfg),
        });
        let tu: Arc<dyn TransactionUser> = core.clone();
        let core_for_dialer = core.clone();
        // Agents' commands from the feed go to their calls; a call checks it is the
        // agent's before it acts.
        let command_task = {
            let core = core.clone();
            let shutdown = ctx.shutdown.clone();
            async move {
                // Ends with the shutdown: the feed (held by the core this task holds)
                // keeps a sender, so the channel itself never closes.
                while let Some((agent, command)) = tokio::select! {
                    c = commands.recv() => c,
                    _ = shutdown.cancelled() => None,
                } {
                    let (call_id, target, conference) = match command {
                        feed::AgentCommand::Transfer { call_id, target } => {
                            (call_id, target, false)
                        }
                        feed::AgentCommand::Conference { call_id, target } => {
                            (call_id, target, true)
                        }
                    };
                    let call = lock(&core.by_id).get(&call_id).cloned();
                    let sent = match call {
                        Some(tx) => tx
                            .send(CallInput::Transfer {
                                agent: agent.clone(),
                                target: target.clone(),
                                conference,
                            })
                            .await
                            .is_ok(),
                        None => false,
                    };
                    if !sent && let Some(feed) = &core.feed {
                        feed.publish(
                            &agent,
                            &feed::FeedEvent::Transfer {
                                call_id,
                                target,
                                state: "failed",
                                reason: Some("no_such_call".into()),
                            },
                        );
                    }
                }
            }
        };
        let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
        tasks.push(Box::pin(command_task));
        // On shutdown, calls in progress hang up both legs; their BYEs need answers, so
        // the sockets stay open until the last call has ended (the gateway's grace period
        // bounds the wait). New INVITEs meanwhile get 503.
        let stop = tokio_util::sync::CancellationToken::new();
        {
            let core = core.clone();
            let stop = stop.clone();
            let shutdown = ctx.shutdown.clone();
            tasks.push(Box::pin(async move {
                shutdown.cancelled().await;
                while core.active.load(Ordering::Acquire) > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                stop.cancel();
            }));
        }
        tasks.push(Box::pin(core.admission.clone().run_sweeps(stop.clone())));
        tasks.push(Box::pin(ep.clone().run_udp(tu.clone(), stop.clone())));
        for listener in tcp {
            tasks.push(Box::pin(ep.clone().run_listener(
                listener,
                None,
                tu.clone(),
                stop.clone(),
                ctx.tasks.clone(),
            )));
        }
        if let Some((listener, acceptor, handshake)) = tls {
            tasks.push(Box::pin(ep.clone().run_listener(
                listener,
                Some((acceptor, handshake)),
                core.clone(),
                stop.clone(),
                ctx.tasks.clone(),
            )));
        }
        tracing::info!(
            udp = %core.cfg.listen_udp,
            udp6 = ?core.cfg.listen_udp6,
            tcp6 = ?core.cfg.listen_tcp6,
            tls = ?core.cfg.tls.as_ref().map(|t| t.listen),
            tcp = ?core.cfg.listen_tcp,
            agent_target = %core.cfg.agent_target,
            "SIP channel listening"
        );
        Ok(ChannelParts {
            router,
            tasks,
            revisit_dialer: revisit::Dialer::new(core_for_dialer.clone())
                .map(|d| Arc::new(d) as Arc<dyn contract::RevisitDialer>),
            dialer: Some(Arc::new(linkage::Dialer::new(core_for_dialer))),
            ..ChannelParts::default()
        })
    }
}

/// Gives back most of a table's room once it holds far fewer entries than it has room
/// for: a `HashMap` keeps the capacity it grew to, so a table filled by a flood would
/// hold its peak size, and the pages under it, for good.
pub(crate) fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// The TLS server side: the configured certificate chain and key, TLS 1.2 and 1.3 with
/// rustls's safe defaults (ring). Trunks authenticate by address or digest as on the
/// other transports.
fn tls_acceptor(cfg: &config::SipTlsConfig) -> Result<tokio_rustls::TlsAcceptor, BoxError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read SIP TLS certificates {}: {e}",
                cfg.cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cfg.cert_file.display()).into());
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| format!("cannot read SIP TLS key {}: {e}", cfg.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("SIP TLS certificate and key do not go together: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// A trunk as the router checks it.
#[derive(Debug)]
struct Trunk {
    name: String,
    nets: Vec<ipnet::IpNet>,
    digest: Option<(String, String)>,
}

/// The request router and what every call shares.
pub struct Core {
    cfg: Arc<SipConfig>,
    ep: Arc<Endpoint>,
    ctx: ChannelContext,
    ports: Arc<PortPool>,
    prompts: Prompts,
    digest: Digest,
    local_port: u16,
    trunks: Vec<Trunk>,
    blocklist: Arc<dyn routing::Blocklist>,
    /// Calls in progress by Call-ID (both legs' Call-IDs point at the same call).
    calls: Mutex<HashMap<String, mpsc::Sender<CallInput>>>,
    /// Calls in progress by the gateway's call id (what agents name on the feed).
    by_id: Mutex<HashMap<uuid::Uuid, mpsc::Sender<CallInput>>>,
    active: AtomicUsize,
    /// Fair shares per calling number and trunk, and the priority lane.
    pub(crate) admission: Arc<Admission>,
    feed: Option<Arc<feed::Feed>>,
    /// Fills a call's ticket draft from its transcript.
    prefiller: Arc<routing::Prefiller>,
    /// Refusals of sources outside every trunk, logged as a sample, not one by one.
    refused: LogSample,
}

/// A log line now and then for an event that may come thousands of times a second (a
/// flood's refusals): counted always (metrics), logged at most once per
/// [`LogSample::EVERY`] with how many happened since.
#[derive(Debug)]
struct LogSample {
    since: AtomicUsize,
    last: Mutex<Option<std::time::Instant>>,
}

impl LogSample {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn new() -> Self {
        LogSample {
            since: AtomicUsize::new(0),
            last: Mutex::new(None),
        }
    }

    /// Counts one; returns how many to log now (this one included), or `None`.
    fn hit(&self) -> Option<usize> {
        let n = self.since.fetch_add(1, Ordering::AcqRel) + 1;
        let mut last = lock(&self.last);
        let due = last.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if due {
            *last = Some(std::time::Instant::now());
            self.since.store(0, Ordering::Release);
            Some(n)
        } else {
            None
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

/// How a trunk check ended.
enum TrunkCheck {
    Admitted(String),
    Challenge { stale: bool },
    Forbidden,
}

impl Core {
    fn trunk_for(&self, request: &Request, source: IpAddr) -> TrunkCheck {
        let mut challenge = None;
        for t in &self.trunks {
            let by_address = t.nets.iter().any(|n| n.contains(&source));
            if !t.nets.is_empty() && !by_address {
                continue;
            }
            match &t.digest {
                None => return TrunkCheck::Admitted(t.name.clone()),
                Some((user, password)) => match self.digest.verify(request, user, password) {
                    Verdict::Ok => return TrunkCheck::Admitted(t.name.clone()),
                    Verdict::Missing => challenge = challenge.or(Some(false)),
                    Verdict::Stale => challenge = Some(true),
                    Verdict::Bad => {}
                },
            }
        }
        match challenge {
            Some(stale) => TrunkCheck::Challenge { stale },
            None => TrunkCheck::Forbidden,
        }
    }

    fn source_known(&self, source: IpAddr) -> bool {
        self.trunks
            .iter()
            .any(|t| t.nets.is_empty() || t.nets.iter().any(|n| n.contains(&source)))
    }

    /// The host the gateway names itself by towards `peer` (its IPv6 one to an IPv6
    /// peer, when it has an IPv6 listener), for From and Call-ID.
    pub(crate) fn host_for(&self, peer: Peer) -> &str {
        self.ep.local_for(peer.addr()).0
    }

    /// `host:port` of the gateway towards `peer`, for Via sent-by and Contact; an IPv6
    /// host is in brackets already (RFC 3261 §25.1).
    pub(crate) fn sent_by(&self, peer: Peer) -> String {
        let (host, port) = self.ep.local_for(peer.addr());
        format!("{host}:{}", port.unwrap_or(self.local_port))
    }

    fn route(&self, call_id: &str) -> Option<mpsc::Sender<CallInput>> {
        lock(&self.calls).get(call_id).cloned()
    }

    pub(crate) fn register(&self, call_id: &str, tx: mpsc::Sender<CallInput>) {
        lock(&self.calls).insert(call_id.to_owned(), tx);
    }

    pub(crate) fn unregister(&self, call_id: &str) {
        lock(&self.calls).remove(call_id);
    }

    /// Answers `request` with `code`, a Warning saying why, and extra headers.
    async fn answer(
        &self,
        request: &Request,
        tx: &ServerTx,
        code: u16,
        why: &str,
        extra: Vec<Header>,
    ) {
        let mut response = msg::response(request, code, Some(&msg::random_token()));
        if !why.is_empty() {
            response.headers.push(msg::warning(self.ep.host(), why));
        }
        for h in extra {
            response.headers.push(h);
        }
        tx.respond(response).await;
    }

    async fn on_invite(self: Arc<Self>, request: Request, tx: ServerTx) {
        let source = tx.peer().addr().ip();
        let trunk = match self.trunk_for(&request, source) {
            TrunkCheck::Admitted(name) => name,
            TrunkCheck::Challenge { stale } => {
                metrics::counter!("gateway_sip_calls_refused_total", "reason" => "challenge")
                    .increment(1);
                let challenge = self.digest.challenge(stale);
                self.answer(&request, &tx, 401, "", vec![challenge]).await;
                return;
            }
            TrunkCheck::Forbidden => {
                metrics::counter!("gateway_sip_calls_refused_total", "reason" => "unknown_trunk")
                    .increment(1);
                if let Some(n) = self.refused.hit() {
                    tracing::info!(source = %source, refused = n, "Refused calls from outside every trunk (this source, and the count since the last such line)");
                }
                // One small answer at most, never retransmitted (the endpoint treats the
                // source as quiet), or none.
                if self.cfg.unknown_sources == config::UnknownSources::Answer {
                    self.answer(&request, &tx, 403, "unknown trunk", vec![])
                        .await;
                }
                return;
            }
        };
        // The calling number's and the trunk's shares come first, before any work for
        // the call (admission.rs says why and in what order).
        let caller = msg::calling_number(&request).and_then(|c| self.ctx.keyer.phone(&c));
        let admitted = match self
            .admission
            .admit(&trunk, caller.as_ref().map(|c| c.key.as_str()))
        {
            Ok(a) => a,
            Err(refused) => {
                metrics::counter!("gateway_sip_calls_refused_total", "reason" => refused.reason())
                    .increment(1);
                let retry = refused.retry_after_secs().to_string();
                let retry_after = Header::Other("Retry-After".into(), retry);
                self.answer(&request, &tx, 503, refused.warning(), vec![retry_after])
                    .await;
                return;
            }
        };
        if self.ctx.shutdown.is_cancelled() {
            admitted.refused();
            let retry_after = Header::Other("Retry-After".into(), "5".into());
            self.answer(
                &request,
                &tx,
                503,
                "gateway shutting down",
                vec![retry_after],
            )
            .await;
            return;
        }
        let limit = self.admission.limit(self.cfg.max_calls, admitted.priority);
        if self.active.fetch_add(1, Ordering::AcqRel) >= limit {
            self.active.fetch_sub(1, Ordering::AcqRel);
            admitted.refused();
            metrics::counter!("gateway_sip_calls_refused_total", "reason" => "capacity")
                .increment(1);
            let retry_after = Header::Other("Retry-After".into(), "5".into());
            self.answer(
                &request,
                &tx,
                503,
                "gateway at call capacity",
                vec![retry_after],
            )
            .await;
            return;
        }
        if admitted.priority {
            metrics::counter!("gateway_sip_calls_priority_total").increment(1);
        }
        metrics::gauge!("gateway_sip_calls_active").increment(1.0);
        call::run(self.clone(), request, tx, trunk, caller).await;
        drop(admitted);
        self.active.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("gateway_sip_calls_active").decrement(1.0);
    }
}

impl TransactionUser for Core {
    fn source_known(&self, source: IpAddr) -> bool {
        Core::source_known(self, source)
    }

    fn on_request(self: Arc<Self>, request: Request, tx: ServerTx) {
        let call_id = msg::call_id(&request).to_owned();
        let in_dialog = msg::to_tag(&request).is_some();
        match request.method {
            Method::Invite if !in_dialog => {
                self.ctx.tasks.clone().spawn(self.on_invite(request, tx));
            }
            Method::Options if !in_dialog => {
                let source = tx.peer().addr().ip();
                let known = self.source_known(source);
                let host = self.ep.host().to_owned();
                tokio::spawn(async move {
                    let (code, why) = if known {
                        (200, "")
                    } else {
                        (403, "unknown trunk")
                    };
                    let mut r = msg::response(&request, code, Some(&msg::random_token()));
                    if !why.is_empty() {
                        r.headers.push(msg::warning(&host, why));
                    }
                    r.headers.push(Header::Other("Allow".into(), ALLOW.into()));
                    r.headers
                        .push(Header::Other("Accept".into(), "application/sdp".into()));
                    tx.respond(r).await;
                });
            }
            _ => match self.route(&call_id) {
                Some(call) => {
                    let input = CallInput::Request(Box::new(request), tx);
                    // The call's queue is full (a flood of in-dialog requests) or the
                    // call just ended: 500, and the peer retransmits or gives up.
                    if let Err(
                        mpsc::error::TrySendError::Full(CallInput::Request(r, tx))
                        | mpsc::error::TrySendError::Closed(CallInput::Request(r, tx)),
                    ) = call.try_send(input)
                    {
                        tokio::spawn(async move {
                            let resp = msg::response(&r, 500, None);
                            tx.respond(resp).await;
                        });
                    }
                }
                None => {
                    let code = match request.method {
                        Method::Register
                        | Method::Subscribe
                        | Method::Publish
                        | Method::Message
                        | Method::Refer
                        | Method::Notify
                        | Method::PRack
                            if !in_dialog =>
                        {
                            405
                        }
                        _ => 481,
                    };
                    tokio::spawn(async move {
                        let mut r = msg::response(&request, code, Some(&msg::random_token()));
                        if code == 405 {
                            r.headers.push(Header::Other("Allow".into(), ALLOW.into()));
                        }
                        tx.respond(r).await;
                    });
                }
            },
        }
    }

    fn on_ack(self: Arc<Self>, request: Request, _peer: Peer) {
        if let Some(call) = self.route(msg::call_id(&request)) {
            let _ = call.try_send(CallInput::Ack(Box::new(request)));
        }
    }
}
