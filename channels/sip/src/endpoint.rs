//! The SIP transport and transaction layers (RFC 3261 §17, §18).
//!
//! One [`Endpoint`] owns the UDP socket and the TCP connections. Inbound bytes are framed
//! and parsed ([`crate::msg::parse`]); a request that fails the checks is answered (400,
//! 483, 505, 513, with a Warning) or dropped, and the socket goes on. Requests are matched
//! to server transactions by branch, method and source, so a retransmitted INVITE or BYE
//! is absorbed: it gets the last response again and never reaches the call twice.
//! Responses are matched to client transactions by branch and CSeq method.
//!
//! Timers follow RFC 3261 §17 with RFC 6026's Accepted state for 2xx: A/B and E/F on
//! client transactions, G/H, I and J on server transactions; retransmissions only on UDP.
//! The layer above (the transaction user, [`TransactionUser`]) gets each new request once,
//! with a [`ServerTx`] to answer it, and each ACK for a 2xx (which has no transaction).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsip::prelude::*;
use rsip::{Method, Request, Response, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::msg::{self, Rejected};
use crate::wire::{self, Limits};

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A UDP address.
    Udp(SocketAddr),
    /// The remote address of an open TCP connection.
    Tcp(SocketAddr),
    /// The remote address of an open TLS connection.
    Tls(SocketAddr),
}

impl Peer {
    /// The remote address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Peer::Udp(a) | Peer::Tcp(a) | Peer::Tls(a) => *a,
        }
    }

    /// Whether the transport is reliable (no retransmissions).
    pub fn reliable(&self) -> bool {
        matches!(self, Peer::Tcp(_) | Peer::Tls(_))
    }

    /// The Via transport token.
    pub fn transport(&self) -> &'static str {
        match self {
            Peer::Udp(_) => "UDP",
            Peer::Tcp(_) => "TCP",
            Peer::Tls(_) => "TLS",
        }
    }
}

/// RFC 3261 timer values.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Round-trip estimate.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Longest time a message stays in the network.
    pub t4: Duration,
}

impl Timers {
    /// The standard values scaled from `t1` (T2 = 8 T1, T4 = 10 T1, as 500 ms / 4 s / 5 s).
    pub fn from_t1(t1: Duration) -> Self {
        Timers {
            t1,
            t2: t1 * 8,
            t4: t1 * 10,
        }
    }

    /// 64 T1: transaction timeout (Timers B, F, H, J, L).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// The layer above: gets every new request once.
pub trait TransactionUser: Send + Sync + 'static {
    /// A new request (not ACK), with its server transaction to answer on.
    fn on_request(self: Arc<Self>, request: Request, tx: ServerTx);
    /// An ACK that matched no server transaction (the ACK of a 2xx, RFC 3261 §13.3.1.4).
    fn on_ack(self: Arc<Self>, request: Request, peer: Peer);
    /// Whether `source` may get the transaction layer's full service. A source that may
    /// not (outside every trunk) gets no 100 Trying, its final answer is never
    /// retransmitted and its retransmitted requests are absorbed without an answer: UDP
    /// lets anyone forge a source address, so the gateway must not answer one request
    /// with many datagrams (a reflection amplifier).
    fn source_known(&self, _source: std::net::IpAddr) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    branch: String,
    /// The method's name (rsip's `Method` is not `Hash`).
    method: String,
    peer: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    /// A final non-2xx was sent; waiting for ACK (INVITE) or absorbing (non-INVITE).
    Completed,
    /// ACK received for a non-2xx.
    Confirmed,
    /// A 2xx was sent to an INVITE (RFC 6026): retransmitted INVITEs get it again.
    Accepted,
}

struct ServerEntry {
    state: ServerState,
    last: Option<Bytes>,
    expires: Instant,
    /// A source outside every trunk: one answer at most, never again.
    quiet: bool,
}

/// The transport and transaction layers.
pub struct Endpoint {
    udp: Arc<UdpSocket>,
    /// The IPv6 UDP listener beside an IPv4 `udp`, with the host the gateway names
    /// itself by towards IPv6 peers.
    udp6: Option<(Arc<UdpSocket>, String)>,
    /// The local addresses of `udp` and `udp6`, read once: every message sent and every
    /// Via built asks for them, and each `local_addr()` is a system call.
    local: Option<SocketAddr>,
    local6: Option<SocketAddr>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    server: Mutex<HashMap<TxKey, ServerEntry>>,
    client: Mutex<HashMap<TxKey, mpsc::Sender<Response>>>,
    timers: Timers,
    limits: Limits,
    host: String,
    /// Stream (TCP, TLS) connections open: in all, and by source address.
    streams: Mutex<(usize, HashMap<std::net::IpAddr, usize>)>,
    stream_limits: Mutex<StreamLimits>,
}

/// Caps on stream connections (TCP and TLS together): a peer that opens connections and
/// sends half a header must not hold them, or the gateway's memory, forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connections open at once, from every source.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_source: usize,
    /// A message begun must be complete within this (its headers and body); a connection
    /// that dawdles is closed.
    pub message_timeout: Duration,
    /// A connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 1024,
            max_per_source: 64,
            message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// One open stream connection, counted until dropped.
struct StreamSlot {
    ep: Arc<Endpoint>,
    ip: std::net::IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = lock(&self.ep.streams);
        let (total, by_ip) = &mut *streams;
        *total -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        metrics::gauge!("gateway_sip_stream_connections").decrement(1.0);
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack `[::]`
/// socket reports for an IPv4 peer, RFC 4291 §2.5.5.2) as the IPv4 address it is, so
/// that trunks' IPv4 CIDRs, rport/received and replies see the peer as it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// How long a server transaction with no final response is kept at most (a transaction
/// user that never answers must not leak it).
const UNANSWERED_TTL: Duration = Duration::from_secs(900);
/// Bytes a TCP connection's outbound queue may hold before the connection is dropped.
const TCP_QUEUE: usize = 256;

impl Endpoint {
    /// An endpoint on a bound UDP socket.
    pub fn new(udp: UdpSocket, timers: Timers, limits: Limits, host: String) -> Arc<Self> {
        Self::dual(udp, None, timers, limits, host)
    }

    /// An endpoint on a bound UDP socket and, beside it, an IPv6 one with the host
    /// IPv6 peers know the gateway by.
    pub fn dual(
        udp: UdpSocket,
        udp6: Option<(UdpSocket, String)>,
        timers: Timers,
        limits: Limits,
        host: String,
    ) -> Arc<Self> {
        Arc::new(Endpoint {
            local: udp.local_addr().ok(),
            local6: udp6.as_ref().and_then(|(s, _)| s.local_addr().ok()),
            udp: Arc::new(udp),
            udp6: udp6.map(|(s, h)| (Arc::new(s), h)),
            tcp: Mutex::new(HashMap::new()),
            server: Mutex::new(HashMap::new()),
            client: Mutex::new(HashMap::new()),
            timers,
            limits,
            host,
            streams: Mutex::new((0, HashMap::new())),
            stream_limits: Mutex::new(StreamLimits::default()),
        })
    }

    /// Sets the stream connections' caps (before the listeners start).
    pub fn set_stream_limits(&self, limits: StreamLimits) {
        *lock(&self.stream_limits) = limits;
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    fn stream_slot(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<StreamSlot, &'static str> {
        let limits = *lock(&self.stream_limits);
        let mut streams = lock(&self.streams);
        let (total, by_ip) = &mut *streams;
        if *total >= limits.max_connections {
            return Err("total");
        }
        let mine = by_ip.entry(ip).or_insert(0);
        if *mine >= limits.max_per_source {
            return Err("per_source");
        }
        *mine += 1;
        *total += 1;
        metrics::gauge!("gateway_sip_stream_connections").increment(1.0);
        Ok(StreamSlot {
            ep: self.clone(),
            ip,
        })
    }

    /// The timers in use.
    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// The UDP listener's address.
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The host the gateway names itself by.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host and UDP port the gateway names itself by towards `peer` (in Via,
    /// Contact): its IPv6 listener's to an IPv6 peer, when it has one, since the
    /// peer could not reach the IPv4 one.
    pub fn local_for(&self, peer: SocketAddr) -> (&str, Option<u16>) {
        match &self.udp6 {
            Some((_, host)) if peer.is_ipv6() => (host.as_str(), self.local6.map(|a| a.port())),
            _ => (&self.host, self.local.map(|a| a.port())),
        }
    }

    /// The UDP socket to reach `addr` from, and `addr` as that socket takes it: an
    /// IPv6 peer from the IPv6 listener when there is one; an IPv4 peer from an IPv6
    /// (dual-stack, `[::]`) socket as its IPv4-mapped address, the only form such a
    /// socket sends to (RFC 4291 §2.5.5.2).
    fn udp_for(&self, addr: SocketAddr) -> (&UdpSocket, SocketAddr) {
        if let (Some((sock, _)), true) = (&self.udp6, addr.is_ipv6()) {
            return (sock, addr);
        }
        let main_is_v6 = self.local.is_some_and(|a| a.is_ipv6());
        match addr {
            SocketAddr::V4(v4) if main_is_v6 => (
                &self.udp,
                SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            ),
            _ => (&self.udp, addr),
        }
    }

    /// Sends bytes to a peer. Errors are logged, not returned: SIP recovers from loss by
    /// retransmission, and a broken TCP connection is noticed by its reader.
    pub async fn send(&self, peer: Peer, bytes: Bytes) {
        match peer {
            Peer::Udp(addr) => {
                let (udp, addr) = self.udp_for(addr);
                if let Err(error) = udp.send_to(&bytes, addr).await {
                    tracing::debug!(%error, "UDP send failed");
                }
            }
            Peer::Tcp(addr) | Peer::Tls(addr) => {
                let sender = lock(&self.tcp).get(&addr).cloned();
                match sender {
                    Some(s) => {
                        if s.try_send(bytes).is_err() {
                            tracing::debug!("TCP connection queue full or closed; dropping it");
                            lock(&self.tcp).remove(&addr);
                        }
                    }
                    None => tracing::debug!("no TCP connection to send on"),
                }
            }
        }
    }

    /// Runs the UDP receiver until `shutdown`.
    pub async fn run_udp(
        self: Arc<Self>,
        tu: Arc<dyn TransactionUser>,
        shutdown: CancellationToken,
    ) {
        let sweeper = {
            let ep = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { ep.sweep(shutdown).await })
        };
        let v6 = self.udp6.as_ref().map(|(sock, _)| {
            let (ep, tu, shutdown) = (self.clone(), tu.clone(), shutdown.clone());
            let sock = sock.clone();
            tokio::spawn(async move { ep.receive_udp(&sock, &tu, &shutdown).await })
        });
        let udp = self.udp.clone();
        self.receive_udp(&udp, &tu, &shutdown).await;
        if let Some(v6) = v6 {
            let _ = v6.await;
        }
        sweeper.abort();
    }

    /// Receives on one UDP socket until `shutdown`.
    async fn receive_udp(
        self: &Arc<Self>,
        udp: &UdpSocket,
        tu: &Arc<dyn TransactionUser>,
        shutdown: &CancellationToken,
    ) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                r = udp.recv_from(&mut buf) => r,
                () = shutdown.cancelled() => break,
            };
            match received {
                Ok((n, from)) => {
                    let from = canonical(from);
                    // Keep-alive pings (RFC 5626 CRLFs, or a bare zero byte some SBCs
                    // send) carry no message.
                    if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                        continue;
                    }
                    self.on_message(&buf[..n], Peer::Udp(from), tu).await;
                }
                Err(error) => {
                    // ICMP port unreachable from an earlier send shows up here on Linux;
                    // it says nothing about this socket.
                    tracing::debug!(%error, "UDP receive error");
                }
            }
        }
    }

    /// Accepts stream connections until `shutdown`: plain TCP, or TLS when `tls` gives
    /// the acceptor and the time a peer has to complete its handshake.
    pub async fn run_listener(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
        tu: Arc<dyn TransactionUser>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = shutdown.cancelled() => break,
            };
            let (stream, from) = match accepted {
                Ok((stream, from)) => (stream, canonical(from)),
                Err(error) => {
                    tracing::warn!(%error, "SIP stream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match self.stream_slot(from.ip()) {
                Ok(slot) => slot,
                Err(reason) => {
                    // Closed at once: no task, no buffer. Counted, not logged one by one
                    // (a flood of connections would flood the log).
                    metrics::counter!("gateway_sip_stream_refused_total", "reason" => reason)
                        .increment(1);
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ep = self.clone();
            let tu = tu.clone();
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            tasks.spawn(async move {
                let _slot = slot;
                let Some((acceptor, handshake)) = tls else {
                    return ep.serve_stream(stream, Peer::Tcp(from), tu, shutdown).await;
                };
                match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => ep.serve_stream(tls, Peer::Tls(from), tu, shutdown).await,
                    Ok(Err(error)) => {
                        metrics::counter!("gateway_sip_tls_handshake_failures_total").increment(1);
                        tracing::debug!(%error, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("gateway_sip_tls_handshake_failures_total").increment(1);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    }

    /// Serves one stream connection (TCP or TLS): frames messages by Content-Length and
    /// sends responses and requests for this peer back on it.
    async fn serve_stream<S>(
        self: Arc<Self>,
        stream: S,
        peer: Peer,
        tu: Arc<dyn TransactionUser>,
        shutdown: CancellationToken,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let from = peer.addr();
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_QUEUE);
        lock(&self.tcp).insert(from, tx);
        let writer_task = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = BytesMut::with_capacity(8192);
        // Idle connections are closed after `idle_timeout` (RFC 3261 §18 leaves it to
        // us); a message begun must be whole within `message_timeout` of its first byte.
        let limits = *lock(&self.stream_limits);
        let mut begun: Option<Instant> = None;
        'conn: loop {
            let wait = match begun {
                None => limits.idle_timeout,
                Some(at) => limits.message_timeout.saturating_sub(at.elapsed()),
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, reader.read_buf(&mut buf)) => r,
                () = shutdown.cancelled() => break,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Err(_) => {
                    if begun.is_some() {
                        metrics::counter!("gateway_sip_stream_timeouts_total").increment(1);
                        tracing::debug!(%from, "A stream message not complete in time; closing");
                    }
                    break;
                }
                Ok(Ok(_)) => {}
            }
            loop {
                let skip = wire::leading_crlf(&buf);
                let _ = buf.split_to(skip);
                match wire::frame_stream(&buf, self.limits) {
                    Ok(None) => {
                        // A part of a message waits for the rest: its clock runs from the
                        // first byte.
                        if buf.is_empty() {
                            begun = None;
                        } else if begun.is_none() {
                            begun = Some(Instant::now());
                        }
                        break;
                    }
                    Ok(Some(n)) => {
                        let message = buf.split_to(n);
                        begun = None;
                        self.on_message(&message, peer, &tu).await;
                    }
                    Err(error) => {
                        // The stream cannot be resynchronised after a framing error:
                        // answer what can be answered, then close (RFC 3261 §18.3).
                        metrics::counter!("gateway_sip_messages_rejected_total").increment(1);
                        let code = if matches!(error, wire::WireError::TooLarge(_)) {
                            513
                        } else {
                            400
                        };
                        if let Some(resp) =
                            error_for_head(&buf, code, &error.to_string(), &self.host)
                        {
                            self.send(peer, resp).await;
                        }
                        tracing::debug!(%error, "TCP framing error; closing the connection");
                        break 'conn;
                    }
                }
            }
        }
        lock(&self.tcp).remove(&from);
        // Let queued responses go out before the writer closes.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    }

    /// Handles one framed message.
    async fn on_message(self: &Arc<Self>, bytes: &[u8], peer: Peer, tu: &Arc<dyn TransactionUser>) {
        let message = match msg::parse(bytes, !peer.reliable(), self.limits, &self.host) {
            Ok(m) => m,
            Err(Rejected::Answer(response, why)) => {
                metrics::counter!("gateway_sip_messages_rejected_total").increment(1);
                tracing::debug!(reason = %why, "Rejected a malformed request");
                let dest = Self::response_destination(&*response, peer);
                self.send(dest, msg::encode(*response)).await;
                return;
            }
            Err(Rejected::Drop(why)) => {
                metrics::counter!("gateway_sip_messages_dropped_total").increment(1);
                tracing::debug!(reason = %why, "Dropped an unusable message");
                return;
            }
        };
        match message {
            SipMessage::Response(response) => self.on_response(response),
            SipMessage::Request(mut request) => {
                if let Peer::Udp(from) = peer {
                    msg::stamp_received(&mut request, from);
                }
                self.on_request(request, peer, tu).await;
            }
        }
    }

    fn server_key(request: &Request, peer: Peer) -> TxKey {
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method
        };
        // RFC 2543 peers without the magic cookie: the Call-ID and CSeq number stand in
        // for the branch (§17.2.3 asks for more, but such peers are rare on trunks).
        let branch = match msg::branch(request) {
            Some(b) if b.starts_with("z9hG4bK") => b,
            _ => format!(
                "{}/{}",
                msg::call_id(request),
                msg::cseq(request).map(|c| c.0).unwrap_or_default()
            ),
        };
        TxKey {
            branch,
            method: method.to_string(),
            peer: Some(peer.addr()),
        }
    }

    async fn on_request(
        self: &Arc<Self>,
        request: Request,
        peer: Peer,
        tu: &Arc<dyn TransactionUser>,
    ) {
        let key = Self::server_key(&request, peer);
        let resend = {
            let mut server = lock(&self.server);
            match server.get_mut(&key) {
                Some(entry) => {
                    if request.method == Method::Ack {
                        if entry.state == ServerState::Completed {
                            entry.state = ServerState::Confirmed;
                            entry.expires = Instant::now()
                                + if peer.reliable() {
                                    Duration::ZERO
                                } else {
                                    self.timers.t4
                                };
                            return;
                        }
                        None
                    } else {
                        metrics::counter!("gateway_sip_retransmissions_absorbed_total")
                            .increment(1);
                        Some(if entry.quiet {
                            None
                        } else {
                            entry.last.clone()
                        })
                    }
                }
                None => {
                    if request.method != Method::Ack {
                        server.insert(
                            key.clone(),
                            ServerEntry {
                                state: ServerState::Trying,
                                last: None,
                                expires: Instant::now() + UNANSWERED_TTL,
                                quiet: !tu.source_known(peer.addr().ip()),
                            },
                        );
                    }
                    None
                }
            }
        };
        match resend {
            Some(Some(bytes)) => {
                let dest = Self::response_destination(&request, peer);
                self.send(dest, bytes).await;
                return;
            }
            Some(None) => return,
            None => {}
        }
        if request.method == Method::Ack {
            tu.clone().on_ack(request, peer);
            return;
        }
        let quiet = lock(&self.server).get(&key).is_some_and(|e| e.quiet);
        let tx = ServerTx {
            ep: self.clone(),
            key,
            peer,
            dest: Self::response_destination(&request, peer),
            invite: request.method == Method::Invite,
            quiet,
        };
        if tx.invite && !quiet {
            // §17.2.1: answer 100 at once, so the trunk stops retransmitting while the
            // agent side rings.
            tx.respond(msg::response(&request, 100, None)).await;
        }
        tu.clone().on_request(request, tx);
    }

    /// Where responses to a request go (§18.2.2, RFC 3581): back over the same TCP or
    /// TLS connection; over UDP to the source address and port when the client asked
    /// with `rport`, else to the source address and the Via's port. `m` is the request,
    /// or a response built from it (which carries its Vias).
    fn response_destination<M: HeadersExt>(m: &M, peer: Peer) -> Peer {
        match peer {
            Peer::Tcp(_) | Peer::Tls(_) => peer,
            Peer::Udp(from) => {
                let asked = m.via_header().is_ok_and(|v| v.value().contains("rport"));
                if asked {
                    peer
                } else {
                    let port = msg::via_sent_by_port(m).unwrap_or(5060);
                    Peer::Udp(SocketAddr::new(from.ip(), port))
                }
            }
        }
    }

    fn on_response(&self, response: Response) {
        let Some((_, method)) = msg::cseq(&response) else {
            return;
        };
        let Some(branch) = msg::branch(&response) else {
            return;
        };
        let key = TxKey {
            branch,
            method: method.to_string(),
            peer: None,
        };
        let sender = lock(&self.client).get(&key).cloned();
        match sender {
            Some(s) => {
                if s.try_send(response).is_err() {
                    tracing::debug!(
                        "client transaction busy; response dropped (it will be retransmitted)"
                    );
                }
            }
            None => {
                metrics::counter!("gateway_sip_stray_responses_total").increment(1);
                tracing::debug!("Response matched no client transaction");
            }
        }
    }

    /// Removes expired server transactions.
    async fn sweep(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = Instant::now();
            let mut server = lock(&self.server);
            server.retain(|_, e| e.expires > now);
            crate::shrink_sparse(&mut server);
            drop(server);
            crate::shrink_sparse(&mut lock(&self.client));
        }
    }

    /// Starts a client transaction: sends `request` to `peer`, retransmits it on UDP, and
    /// hands every response to the returned receiver. A timeout arrives as a synthesised
    /// 408. For INVITE, a non-2xx final is ACKed here (§17.1.1.3); 2xx retransmissions
    /// keep arriving for 64 T1 so the caller can ACK each (§13.2.2.4).
    pub fn request(self: &Arc<Self>, request: Request, peer: Peer) -> ClientTx {
        let method = request.method;
        let branch = msg::branch(&request).unwrap_or_default();
        let key = TxKey {
            branch,
            method: method.to_string(),
            peer: None,
        };
        let (in_tx, mut in_rx) = mpsc::channel::<Response>(16);
        let (out_tx, out_rx) = mpsc::channel::<Response>(16);
        lock(&self.client).insert(key.clone(), in_tx);
        let ep = self.clone();
        tokio::spawn(async move {
            let timers = ep.timers;
            let bytes = msg::encode(request.clone());
            ep.send(peer, bytes.clone()).await;
            let invite = method == Method::Invite;
            let start = Instant::now();
            let mut deadline = start + timers.timeout();
            let mut interval = timers.t1;
            let mut next = start + interval;
            let mut retransmit = !peer.reliable();
            let linger;
            loop {
                tokio::select! {
                    r = in_rx.recv() => {
                        let Some(resp) = r else { return };
                        let code = resp.status_code.code();
                        if code < 200 {
                            if invite {
                                // Proceeding: no more retransmissions, and Timer B no
                                // longer applies; the caller's own ring timer (Timer C)
                                // ends the wait with a CANCEL.
                                retransmit = false;
                                deadline = start + Duration::from_secs(24 * 3600);
                            } else {
                                interval = timers.t2;
                            }
                            let _ = out_tx.try_send(resp);
                            continue;
                        }
                        if invite && code >= 300 {
                            let ack = ack_for_failure(&request, &resp);
                            ep.send(peer, msg::encode(ack.clone())).await;
                            let _ = out_tx.send(resp).await;
                            linger = Some((Duration::from_secs(32), Some(ack)));
                        } else if invite {
                            let _ = out_tx.send(resp).await;
                            linger = Some((timers.timeout(), None));
                        } else {
                            let _ = out_tx.send(resp).await;
                            linger = Some((timers.t4, None));
                        }
                        break;
                    }
                    () = sleep_until(next), if retransmit => {
                        ep.send(peer, bytes.clone()).await;
                        interval = if invite { interval * 2 } else { (interval * 2).min(timers.t2) };
                        next = Instant::now() + interval;
                    }
                    () = sleep_until(deadline) => {
                        let timeout = msg::response(&request, 408, None);
                        let _ = out_tx.send(timeout).await;
                        linger = None;
                        break;
                    }
                }
            }
            if let Some((how_long, ack)) = linger {
                let until = Instant::now()
                    + if peer.reliable() && ack.is_some() {
                        Duration::ZERO
                    } else {
                        how_long
                    };
                loop {
                    tokio::select! {
                        r = in_rx.recv() => {
                            let Some(resp) = r else { break };
                            match &ack {
                                // Timer D: a retransmitted failure gets the ACK again.
                                Some(ack) => ep.send(peer, msg::encode(ack.clone())).await,
                                // A retransmitted 2xx goes up so the caller ACKs it again.
                                None => { let _ = out_tx.try_send(resp); }
                            }
                        }
                        () = sleep_until(until) => break,
                    }
                }
            }
            lock(&ep.client).remove(&key);
        });
        ClientTx { rx: out_rx }
    }
}

/// A response to a client transaction's request.
#[derive(Debug)]
pub struct ClientTx {
    rx: mpsc::Receiver<Response>,
}

impl ClientTx {
    /// The next response; `None` once the transaction is over.
    pub async fn recv(&mut self) -> Option<Response> {
        self.rx.recv().await
    }
}

/// A server transaction: answer the request on it.
#[derive(Debug, Clone)]
pub struct ServerTx {
    ep: Arc<Endpoint>,
    key: TxKey,
    peer: Peer,
    dest: Peer,
    invite: bool,
    /// One answer at most (a source outside every trunk).
    quiet: bool,
}

impl ServerTx {
    /// Where the request came from.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Sends a response on a server transaction and moves it along its state machine.
    /// Returns the bytes sent, for a caller that retransmits a 2xx itself (§13.3.1.4).
    pub async fn respond(&self, response: Response) -> Bytes {
        let tx = self;
        let ep = &self.ep;
        let code = response.status_code.code();
        let bytes = msg::encode(response);
        let now = Instant::now();
        let timeout = ep.timers.timeout();
        let mut retransmit = false;
        {
            let mut server = lock(&ep.server);
            if let Some(entry) = server.get_mut(&tx.key) {
                entry.last = Some(bytes.clone());
                match (tx.invite, code) {
                    (_, 100..=199) => entry.state = ServerState::Proceeding,
                    (true, 200..=299) => {
                        entry.state = ServerState::Accepted;
                        entry.expires = now + timeout;
                    }
                    (true, _) => {
                        entry.state = ServerState::Completed;
                        entry.expires = now + timeout;
                        retransmit = !tx.peer.reliable() && !tx.quiet;
                    }
                    (false, _) => {
                        entry.state = ServerState::Completed;
                        entry.expires = now
                            + if tx.peer.reliable() {
                                Duration::ZERO
                            } else {
                                timeout
                            };
                    }
                }
            }
        }
        ep.send(tx.dest, bytes.clone()).await;
        let sent = bytes.clone();
        if retransmit {
            // Timer G until ACK (Confirmed) or Timer H.
            let ep_timers = ep.timers;
            let key = tx.key.clone();
            let dest = tx.dest;
            let ep = ep.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + ep_timers.timeout();
                let mut interval = ep_timers.t1;
                loop {
                    tokio::time::sleep(interval).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    let still = lock(&ep.server)
                        .get(&key)
                        .is_some_and(|e| e.state == ServerState::Completed);
                    if !still {
                        break;
                    }
                    ep.send(dest, bytes.clone()).await;
                    interval = (interval * 2).min(ep_timers.t2);
                }
            });
        }
        sent
    }
}

/// The ACK of a non-2xx final response (§17.1.1.3): same Request-URI, Call-ID, From,
/// CSeq number and top Via as the INVITE, the To of the response.
fn ack_for_failure(invite: &Request, response: &Response) -> Request {
    let mut headers = rsip::Headers::default();
    if let Ok(via) = invite.via_header() {
        headers.push(via.clone().into());
    }
    for h in invite.headers.iter() {
        match h {
            rsip::Header::From(_)
            | rsip::Header::CallId(_)
            | rsip::Header::Route(_)
            | rsip::Header::MaxForwards(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    if let Ok(to) = response.to_header() {
        headers.push(to.clone().into());
    }
    let seq = msg::cseq(invite).map(|c| c.0).unwrap_or(1);
    headers.push(rsip::headers::CSeq::new(format!("{seq} ACK")).into());
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A minimal error response from the raw head of a stream that failed framing.
fn error_for_head(buf: &[u8], code: u16, why: &str, host: &str) -> Option<Bytes> {
    let head = &buf[..buf.len().min(8192)];
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let mut candidate = head[..end].to_vec();
    candidate.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    match msg::parse(
        &candidate,
        true,
        Limits {
            max_message_bytes: 1 << 16,
            max_headers: 1024,
        },
        host,
    ) {
        Ok(SipMessage::Request(r)) => {
            let mut resp = msg::response(&r, code, None);
            resp.headers.push(msg::warning(host, why));
            Some(msg::encode(resp))
        }
        Err(Rejected::Answer(resp, _)) => {
            let mut resp = *resp;
            resp.status_code = msg::status(code);
            Some(msg::encode(resp))
        }
        _ => None,
    }
}

/// Locks a std mutex: nothing awaits while it is held, and a poisoned lock (a panic
/// elsewhere) leaves maps that are still consistent, so go on with them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 8192,
        max_headers: 64,
    };

    /// A transaction user that refuses every request with 486 and counts what it saw.
    struct Refuser {
        seen: std::sync::atomic::AtomicUsize,
    }

    impl TransactionUser for Refuser {
        fn on_request(self: Arc<Self>, request: Request, tx: ServerTx) {
            self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move { tx.respond(msg::response(&request, 486, Some("t"))).await });
        }
        fn on_ack(self: Arc<Self>, _request: Request, _peer: Peer) {}
    }

    async fn endpoint(t1_ms: u64) -> Arc<Endpoint> {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Endpoint::new(
            udp,
            Timers::from_t1(Duration::from_millis(t1_ms)),
            LIMITS,
            "127.0.0.1".into(),
        )
    }

    fn invite_from(from: SocketAddr, branch: &str) -> String {
        format!(
            "INVITE sip:12345@gw SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={branch};rport\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:12345@gw>\r\nCall-ID: {branch}@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    async fn recv_text(sock: &UdpSocket, within: Duration) -> Option<String> {
        let mut buf = vec![0u8; 8192];
        let (n, _) = tokio::time::timeout(within, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn invite_failure_is_retransmitted_until_ack_and_retransmitted_invites_are_absorbed() {
        let ep = endpoint(50).await;
        let tu = Arc::new(Refuser {
            seen: std::sync::atomic::AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(ep.clone().run_udp(tu.clone(), shutdown.clone()));
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let target = ep.udp_addr().expect("addr");
        let invite = invite_from(peer.local_addr().expect("addr"), "z9hG4bKg1");
        peer.send_to(invite.as_bytes(), target).await.expect("send");
        // 100 at once, then the 486, then the 486 again on Timer G (T1, 2 T1, ...).
        let mut codes = Vec::new();
        while codes.iter().filter(|c| **c == 486).count() < 3 {
            let m = recv_text(&peer, Duration::from_secs(2))
                .await
                .expect("a response");
            codes.push(m[8..11].parse::<u16>().expect("status"));
        }
        assert_eq!(codes[0], 100);
        // A retransmitted INVITE is absorbed: answered with the 486 again, not passed up.
        peer.send_to(invite.as_bytes(), target).await.expect("send");
        let again = recv_text(&peer, Duration::from_secs(2))
            .await
            .expect("a response");
        assert!(again.starts_with("SIP/2.0 486"), "{again}");
        assert_eq!(tu.seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The ACK stops the retransmissions.
        let ack = invite
            .replace("INVITE sip", "ACK sip")
            .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
        peer.send_to(ack.as_bytes(), target).await.expect("send");
        while recv_text(&peer, Duration::from_millis(150)).await.is_some() {}
        assert_eq!(
            recv_text(&peer, Duration::from_millis(600)).await,
            None,
            "no 486 after the ACK"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn client_invite_is_retransmitted_on_timer_a_and_times_out_with_408() {
        let ep = endpoint(20).await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = silent.local_addr().expect("addr");
        let request = rsip::Request::try_from(
            invite_from(ep.udp_addr().expect("addr"), "z9hG4bKa1").as_str(),
        )
        .expect("valid");
        let mut tx = ep.request(request, Peer::Udp(to));
        // Timer A doubles from T1: sends at 0, 20, 60, 140, 300, 620 ms, ... until Timer B
        // (64 T1 = 1.28 s).
        let mut arrivals = Vec::new();
        let start = Instant::now();
        while let Some(_m) = recv_text(&silent, Duration::from_millis(1500)).await {
            arrivals.push(start.elapsed());
            if arrivals.len() == 6 {
                break;
            }
        }
        assert_eq!(arrivals.len(), 6, "retransmissions: {arrivals:?}");
        let gaps: Vec<u128> = arrivals
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        // Each retransmission waits at least twice as long as the one before (delays on a
        // loaded machine only lengthen the gaps).
        for (i, gap) in gaps.iter().enumerate() {
            assert!(
                *gap >= 20 << i,
                "gap {i} of {gaps:?} is shorter than T1 x 2^{i}"
            );
        }
        let timeout = tokio::time::timeout(Duration::from_secs(3), tx.recv())
            .await
            .expect("in time");
        assert_eq!(timeout.map(|r| r.status_code.code()), Some(408));
    }
}
