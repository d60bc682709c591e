//! The media relay: RTP and RTCP between the citizen's leg and the agent's leg through
//! the gateway, decoded on the way to a per-call stereo WAV and to the audio tap.
//!
//! One task per call owns both legs' sockets, so a packet is received, forwarded,
//! decoded and recorded without crossing threads or locks. Each leg latches to the
//! address its first packet came from (symmetric RTP, RFC 4961) because callers behind
//! NAT send from an address their SDP does not name; the socket is then connected to it,
//! so packets from any other source are dropped and a stranger cannot inject audio into a
//! call.
//!
//! The recording places each direction's audio by its RTP timestamp relative to when
//! that direction started, so silence suppression and jitter do not shift one side
//! against the other; the writer trails real time by [`JITTER_SAMPLES`] to let late
//! packets land. WAV writes go through a buffered writer on this task: a call writes
//! 32 KB/s, and the page cache absorbs it without a blocking-pool round trip per packet.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{CallAudio, Speaker};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::g711;
use crate::rtp;

/// Samples per second of G.711.
pub const RATE: u32 = 8000;
/// How far (in samples) the recording trails real time for late packets: 200 ms.
pub const JITTER_SAMPLES: u64 = 1600;
/// Samples in one 20 ms frame.
const FRAME: usize = 160;
/// Samples the recording writes at once (200 ms).
const FLUSH_BLOCK: u64 = 1600;
/// Packets taken from one socket per wake-up beyond the first.
const DRAIN: usize = 16;

/// Free RTP ports (even; RTCP on the next odd port).
#[derive(Debug)]
pub struct PortPool {
    bind: IpAddr,
    /// The IPv6 address for legs with an IPv6 peer, beside an IPv4 `bind`.
    bind6: Option<IpAddr>,
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    /// Ports `min..=max` on `bind`.
    pub fn new(bind: IpAddr, min: u16, max: u16) -> Arc<Self> {
        Self::dual(bind, None, min, max)
    }

    /// Ports `min..=max` on `bind`, and on `bind6` for legs with an IPv6 peer. The two
    /// families share the range: a pair is one call leg's whichever family it is in.
    pub fn dual(bind: IpAddr, bind6: Option<IpAddr>, min: u16, max: u16) -> Arc<Self> {
        let free = (min..max).step_by(2).collect();
        Arc::new(PortPool {
            bind,
            bind6,
            free: Mutex::new(free),
        })
    }

    /// Ports still free.
    pub fn available(&self) -> usize {
        crate::endpoint::lock(&self.free).len()
    }

    /// Binds an RTP and RTCP socket pair on a free port. Ports in use by another process
    /// are skipped (and go to the back of the queue).
    pub fn allocate(self: &Arc<Self>) -> std::io::Result<LegSockets> {
        self.allocate_at(self.bind)
    }

    /// Binds a pair for a leg whose peer is `peer`, in the peer's address family where
    /// the pool has one: an IPv4 socket cannot send to an IPv6 peer, nor the reverse
    /// (a citizen from an IPv6 trunk gets IPv6 sockets while the agent leg to an IPv4
    /// ACD stays IPv4).
    pub fn allocate_for(self: &Arc<Self>, peer: IpAddr) -> std::io::Result<LegSockets> {
        match self.bind6 {
            Some(bind6) if peer.is_ipv6() => self.allocate_at(bind6),
            _ => self.allocate_at(self.bind),
        }
    }

    fn allocate_at(self: &Arc<Self>, at: IpAddr) -> std::io::Result<LegSockets> {
        // Every free pair is tried once before the call is refused. A fixed number of
        // tries (16, before issue 28) refused calls with most of the range free whenever
        // another process held that many pairs in a row at the queue's front: another
        // gateway given an overlapping range on the same host, whose pool hands out the
        // same ports in the same order, did exactly that (one test run in six). The
        // worst case is a bind pair per free port, only when nearly the whole range is
        // held by someone else.
        let attempts = self.available();
        let mut elsewhere = 0u64;
        for _ in 0..attempts {
            let Some(port) = crate::endpoint::lock(&self.free).pop_front() else {
                break;
            };
            let bind = |p: u16| -> std::io::Result<UdpSocket> {
                let s = std::net::UdpSocket::bind(SocketAddr::new(at, p))?;
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            };
            match (bind(port), bind(port + 1)) {
                (Ok(rtp), Ok(rtcp)) => {
                    // Held port pairs, so that a flood's refused calls can be seen to hold
                    // none (issue 14).
                    metrics::gauge!("gateway_sip_media_port_pairs_in_use").increment(1.0);
                    count_elsewhere(elsewhere);
                    return Ok(LegSockets {
                        rtp,
                        rtcp,
                        port,
                        pool: self.clone(),
                    });
                }
                _ => {
                    elsewhere += 1;
                    crate::endpoint::lock(&self.free).push_back(port);
                }
            }
        }
        count_elsewhere(elsewhere);
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no free RTP port pair in the configured range",
        ))
    }
}

/// Counts pairs of the range found bound by another process: a range shared with
/// another program (or another gateway) shows here before it costs a call.
fn count_elsewhere(pairs: u64) {
    if pairs > 0 {
        metrics::counter!("gateway_sip_media_ports_in_use_elsewhere_total").increment(pairs);
    }
}

/// One leg's RTP and RTCP sockets; the port pair goes back to the pool on drop.
#[derive(Debug)]
pub struct LegSockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    port: u16,
    pool: Arc<PortPool>,
}

impl LegSockets {
    /// The RTP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LegSockets {
    fn drop(&mut self) {
        // To the back: a port is reused as late as possible, so stray packets of the last
        // call on it are unlikely to reach the next.
        crate::endpoint::lock(&self.pool.free).push_back(self.port);
        metrics::gauge!("gateway_sip_media_port_pairs_in_use").decrement(1.0);
    }
}

/// Which leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The citizen's leg (from the trunk).
    Citizen,
    /// The agent's leg.
    Agent,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Citizen => 0,
            Side::Agent => 1,
        }
    }

    fn speaker(self) -> Speaker {
        match self {
            Side::Citizen => Speaker::Citizen,
            Side::Agent => Speaker::Agent,
        }
    }
}

/// Something the relay reports to its call while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The citizen pressed a key (RFC 4733).
    Dtmf(char),
    /// No RTP from either side for the configured time.
    Timeout,
}

/// What the relay did, when stopped.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    /// Length of the recording, in milliseconds.
    pub recorded_ms: u64,
    /// RTP packets received from the citizen and from the agent.
    pub packets: [u64; 2],
    /// DTMF keys the citizen pressed, in order.
    pub dtmf: String,
    /// The recording file, when one was written.
    pub recording: Option<PathBuf>,
    /// Why the recording failed, if it did.
    pub error: Option<String>,
}

enum Control {
    Remote(Side, Option<SocketAddr>),
    /// A third party joins (its sockets and where its RTP goes), or, `None`, leaves.
    Third(Option<(LegSockets, Option<SocketAddr>)>),
    Codec(u8, Option<u8>),
    Play(Arc<[i16]>, oneshot::Sender<()>),
    Stop(oneshot::Sender<RelayReport>),
}

/// The running relay of one call.
#[derive(Debug)]
pub struct Relay {
    ctl: mpsc::Sender<Control>,
    /// Events from the media path.
    pub events: mpsc::Receiver<MediaEvent>,
    ports: [Option<u16>; 2],
}

/// How to start a relay.
pub struct RelaySetup {
    /// The citizen-facing sockets.
    pub citizen: LegSockets,
    /// The agent-facing sockets, when the call is bridged.
    pub agent: Option<LegSockets>,
    /// Where the WAV goes; `None` records nothing (the announcement to a refused
    /// caller is not a conversation the hotline keeps).
    pub recording: Option<PathBuf>,
    /// Silence (no RTP either way) after which [`MediaEvent::Timeout`] is reported.
    pub timeout: Duration,
    /// The audio tap's stream for this call.
    pub tap: Option<Box<dyn CallAudio>>,
}

impl Relay {
    /// Starts the relay task.
    pub fn start(setup: RelaySetup) -> Relay {
        let (ctl, ctl_rx) = mpsc::channel(8);
        let (ev_tx, events) = mpsc::channel(32);
        let ports = [
            Some(setup.citizen.port()),
            setup.agent.as_ref().map(LegSockets::port),
        ];
        tokio::spawn(run(setup, ctl_rx, ev_tx));
        Relay { ctl, events, ports }
    }

    /// The RTP port the gateway offers on `side`.
    pub fn port(&self, side: Side) -> Option<u16> {
        self.ports[side.index()]
    }

    /// Sets where `side`'s RTP goes until a packet from that side latches it.
    pub async fn set_remote(&self, side: Side, rtp: Option<SocketAddr>) {
        let _ = self.ctl.send(Control::Remote(side, rtp)).await;
    }

    /// Adds a third party (a linkage line in a three-way call): from then on the relay
    /// mixes, each party hearing the other two, and the recording's right channel holds
    /// the agent and the third party together.
    pub async fn add_third(&self, sockets: LegSockets, remote: Option<SocketAddr>) {
        let _ = self.ctl.send(Control::Third(Some((sockets, remote)))).await;
    }

    /// The third party left: back to relaying the two legs as they are.
    pub async fn remove_third(&self) {
        let _ = self.ctl.send(Control::Third(None)).await;
    }

    /// Sets the negotiated codec and telephone-event payload type.
    pub async fn set_codec(&self, pt: u8, dtmf: Option<u8>) {
        let _ = self.ctl.send(Control::Codec(pt, dtmf)).await;
    }

    /// Plays 8 kHz samples to the citizen; returns once played (or the relay stopped).
    pub async fn play(&self, samples: Arc<[i16]>) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Control::Play(samples, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the relay, finishes the recording and reports.
    pub async fn stop(self) -> RelayReport {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Control::Stop(tx)).await.is_err() {
            return RelayReport::default();
        }
        rx.await.unwrap_or_default()
    }
}

struct Leg {
    sockets: LegSockets,
    remote: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// The RTP socket is connected to `latched`.
    connected: bool,
    rtcp_latched: Option<SocketAddr>,
}

impl Leg {
    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.remote)
    }

    /// Sends RTP to this leg's far end.
    async fn send_rtp(&self, packet: &[u8]) {
        if self.connected {
            let _ = self.sockets.rtp.send(packet).await;
        } else if let Some(dest) = self.rtp_dest() {
            let _ = self.sockets.rtp.send_to(packet, dest).await;
        }
    }

    /// Takes the address the far end's SDP gives, first or in a re-INVITE / UPDATE.
    ///
    /// Before any packet arrived it is only where to send. Once latched, a *different*
    /// address means the far end moved its media (RFC 3264 §8.3.1): the leg re-latches
    /// there at once, the socket connected to it, so packets from the old address stop
    /// and the new one is served without waiting for its first packet. The same address
    /// again (a session refresh) or a hold's unspecified address changes nothing.
    async fn follow(&mut self, addr: Option<SocketAddr>) {
        let moved = matches!((addr, self.remote), (Some(new), Some(old)) if new != old);
        let unspecified = addr.is_some_and(|a| a.ip().is_unspecified());
        if unspecified {
            return;
        }
        if moved && self.latched.is_some() {
            let new = addr.expect("moved implies an address");
            self.connected = self.sockets.rtp.connect(new).await.is_ok();
            self.latched = self.connected.then_some(new);
            self.rtcp_latched = None;
        }
        self.remote = addr;
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        self.rtcp_latched.or_else(|| {
            self.remote
                .map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
        })
    }
}

async fn recv_opt(
    leg: Option<&Leg>,
    rtcp: bool,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match leg {
        Some(l) if rtcp => l.sockets.rtcp.recv_from(buf).await,
        Some(l) => l.sockets.rtp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct Player {
    samples: Arc<[i16]>,
    at: usize,
    done: Option<oneshot::Sender<()>>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    first: bool,
}

async fn run(
    setup: RelaySetup,
    mut ctl: mpsc::Receiver<Control>,
    events: mpsc::Sender<MediaEvent>,
) {
    let start = Instant::now();
    let legs = [
        Some(Leg {
            sockets: setup.citizen,
            remote: None,
            latched: None,
            connected: false,
            rtcp_latched: None,
        }),
        setup.agent.map(|sockets| Leg {
            sockets,
            remote: None,
            latched: None,
            connected: false,
            rtcp_latched: None,
        }),
    ];
    let mut fwd = Forwarder {
        legs,
        recorder: Recorder::new(setup.recording, start, setup.tap),
        report: RelayReport::default(),
        pcm: Vec::with_capacity(FRAME * 2),
        dtmf_pt: None,
        last_dtmf_ts: None,
        events,
        last_packet: start,
        third: None,
        mixer: None,
    };
    let mut codec = g711::PCMU;
    let mut timed_out = false;
    let mut player: Option<Player> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Silence is checked once a second rather than with a timer reset per packet: a
    // timer-wheel update for each of 100 packets a second per call was measurable.
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    let mut buf_rtcp = vec![0u8; 2048];
    let mut buf_rtcp_b = vec![0u8; 2048];
    let mut buf_third = vec![0u8; 2048];
    let mut out: Vec<u8> = Vec::with_capacity(FRAME + 12);
    let mut encoded: Vec<u8> = Vec::with_capacity(FRAME);

    loop {
        tokio::select! {
            biased;
            c = ctl.recv() => match c {
                None => break,
                Some(Control::Stop(reply)) => {
                    if let Some(p) = player.take().and_then(|p| p.done) {
                        let _ = p.send(());
                    }
                    let (ms, path, error) = fwd.recorder.finish();
                    fwd.report.recorded_ms = ms;
                    fwd.report.recording = path;
                    fwd.report.error = error;
                    let _ = reply.send(fwd.report);
                    return;
                }
                Some(Control::Remote(side, addr)) => {
                    if let Some(l) = fwd.legs[side.index()].as_mut() {
                        l.follow(addr).await;
                    }
                }
                Some(Control::Codec(pt, dtmf)) => {
                    codec = pt;
                    fwd.dtmf_pt = dtmf;
                }
                Some(Control::Third(Some((sockets, remote)))) => {
                    let mut leg = Leg {
                        sockets,
                        remote: None,
                        latched: None,
                        connected: false,
                        rtcp_latched: None,
                    };
                    leg.follow(remote).await;
                    fwd.third = Some(leg);
                    fwd.mixer = Some(Mixer::new());
                    // The ticks missed while nobody mixed must not burst out now.
                    tick.reset();
                }
                Some(Control::Third(None)) => {
                    fwd.third = None;
                    fwd.mixer = None;
                }
                Some(Control::Play(samples, done)) => {
                    player = Some(Player {
                        samples,
                        at: 0,
                        done: Some(done),
                        seq: rand::random(),
                        ts: rand::random(),
                        ssrc: rand::random(),
                        first: true,
                    });
                    fwd.last_packet = Instant::now();
                }
            },
            r = recv_opt(fwd.legs[0].as_ref(), false, &mut buf) => {
                if let Ok((n, from)) = r {
                    fwd.on_rtp_burst(Side::Citizen, &mut buf, n, from).await;
                }
            }
            r = recv_opt(fwd.legs[1].as_ref(), false, &mut buf_b) => {
                if let Ok((n, from)) = r {
                    fwd.on_rtp_burst(Side::Agent, &mut buf_b, n, from).await;
                }
            }
            r = recv_opt(fwd.third.as_ref(), false, &mut buf_third) => {
                if let Ok((n, from)) = r {
                    fwd.on_third_rtp(&buf_third[..n], from).await;
                }
            }
            r = recv_opt(fwd.legs[0].as_ref(), true, &mut buf_rtcp) => {
                if let Ok((n, from)) = r {
                    fwd.on_rtcp(Side::Citizen, &buf_rtcp[..n], from).await;
                }
            }
            r = recv_opt(fwd.legs[1].as_ref(), true, &mut buf_rtcp_b) => {
                if let Ok((n, from)) = r {
                    fwd.on_rtcp(Side::Agent, &buf_rtcp_b[..n], from).await;
                }
            }
            _ = tick.tick(), if player.is_some() || fwd.mixer.is_some() => {
                if player.is_none() {
                    fwd.mix(codec, start.elapsed(), &mut out, &mut encoded).await;
                    continue;
                }
                let finished = match (player.as_mut(), fwd.legs[0].as_ref()) {
                    (Some(p), Some(leg)) => {
                        let end = (p.at + FRAME).min(p.samples.len());
                        let frame = &p.samples[p.at..end];
                        if leg.rtp_dest().is_some() {
                            out.clear();
                            rtp::write_header(&mut out, codec, p.first, p.seq, p.ts, p.ssrc);
                            g711::encode(codec, frame, &mut encoded);
                            out.extend_from_slice(&encoded);
                            leg.send_rtp(&out).await;
                        }
                        // What the citizen hears from the gateway is on the agent channel.
                        fwd.recorder.push_at(Side::Agent, start.elapsed(), frame);
                        p.first = false;
                        p.seq = p.seq.wrapping_add(1);
                        p.ts = p.ts.wrapping_add(FRAME as u32);
                        p.at = end;
                        p.at >= p.samples.len()
                    }
                    _ => true,
                };
                if finished
                    && let Some(done) = player.take().and_then(|p| p.done) {
                        let _ = done.send(());
                    }
            }
            _ = idle_check.tick(), if !timed_out && player.is_none() => {
                if fwd.last_packet.elapsed() >= setup.timeout {
                    timed_out = true;
                    let _ = fwd.events.try_send(MediaEvent::Timeout);
                }
            }
        }
    }
    let _ = fwd.recorder.finish();
}

/// What handling one RTP packet touches: both legs, the recording, the report, the DTMF
/// state and the event channel, held together so that both legs share one packet path.
struct Forwarder {
    legs: [Option<Leg>; 2],
    recorder: Recorder,
    report: RelayReport,
    /// Decoded samples of the packet at hand, reused.
    pcm: Vec<i16>,
    /// The telephone-event payload type the citizen's leg negotiated (RFC 4733).
    dtmf_pt: Option<u8>,
    last_dtmf_ts: Option<u32>,
    events: mpsc::Sender<MediaEvent>,
    last_packet: Instant,
    /// A third party (three-way call), when one joined.
    third: Option<Leg>,
    /// Mixes the three parties while a third is on the call.
    mixer: Option<Mixer>,
}

/// Frames a party may queue ahead in the mixer (100 ms): older ones are dropped.
const MIX_QUEUE: usize = 5;

/// The three-way mixer: each party's latest decoded frames, and each party's outgoing
/// RTP stream (the gateway is now the source of what every party hears).
///
/// Hand-written: mixing three G.711 legs is a sum of 160-sample frames per 20 ms, and
/// the crates that mix audio bring whole media stacks (GStreamer, webrtc's) for it.
struct Mixer {
    /// Citizen, agent, third party.
    queues: [VecDeque<[i16; FRAME]>; 3],
    /// (sequence, timestamp, SSRC) of the stream sent to each party.
    streams: [(u16, u32, u32); 3],
    first: [bool; 3],
    /// Where the next mixed frame goes in the recording (samples from its start): a
    /// running count, so that ticks that come late do not tear the recording.
    at: Option<u64>,
}

impl Mixer {
    fn new() -> Self {
        Mixer {
            queues: Default::default(),
            streams: std::array::from_fn(|_| (rand::random(), rand::random(), rand::random())),
            first: [true; 3],
            at: None,
        }
    }

    /// Queues a party's decoded samples as whole frames.
    fn push(&mut self, party: usize, samples: &[i16]) {
        for chunk in samples.chunks(FRAME) {
            let mut frame = [0i16; FRAME];
            frame[..chunk.len()].copy_from_slice(chunk);
            let q = &mut self.queues[party];
            if q.len() >= MIX_QUEUE {
                q.pop_front();
            }
            q.push_back(frame);
        }
    }

    /// The next frame of each party (silence for one that sent none).
    fn next(&mut self) -> [[i16; FRAME]; 3] {
        std::array::from_fn(|i| self.queues[i].pop_front().unwrap_or([0; FRAME]))
    }
}

/// `a + b`, sample by sample, clipped.
fn mix2(a: &[i16; FRAME], b: &[i16; FRAME]) -> [i16; FRAME] {
    std::array::from_fn(|k| a[k].saturating_add(b[k]))
}

impl Forwarder {
    /// Handles the packet just received into `buf` on `side`'s RTP socket, then what else
    /// is already queued on that socket (up to [`DRAIN`]) before the caller goes back to
    /// select over all of them.
    async fn on_rtp_burst(&mut self, side: Side, buf: &mut [u8], n: usize, from: SocketAddr) {
        self.last_packet = Instant::now();
        self.on_rtp(side, &buf[..n], from).await;
        for _ in 0..DRAIN {
            let Some(Ok((n, from))) = self.legs[side.index()]
                .as_ref()
                .map(|l| l.sockets.rtp.try_recv_from(buf))
            else {
                break;
            };
            self.on_rtp(side, &buf[..n], from).await;
        }
    }

    async fn on_rtp(&mut self, side: Side, packet: &[u8], from: SocketAddr) {
        let i = side.index();
        let legs = &mut self.legs;
        let Some(leg) = legs[i].as_mut() else { return };
        match leg.latched {
            None => {
                leg.latched = Some(from);
                // A connected socket takes packets from the latched source only and sends
                // without a route lookup per packet.
                if leg.sockets.rtp.connect(from).await.is_ok() {
                    leg.connected = true;
                }
            }
            Some(l) if l != from => {
                metrics::counter!("gateway_sip_rtp_foreign_packets_total").increment(1);
                return;
            }
            Some(_) => {}
        }
        if rtp::is_rtcp(packet) {
            // RTCP multiplexed on the RTP port (RFC 5761): pass it on as it is.
            if let Some(o) = other(legs, side) {
                o.send_rtp(packet).await;
            }
            return;
        }
        let Some(view) = rtp::parse(packet) else {
            metrics::counter!("gateway_sip_rtp_malformed_packets_total").increment(1);
            return;
        };
        self.report.packets[i] += 1;
        if self.mixer.is_none()
            && let Some(o) = other(legs, side)
        {
            o.send_rtp(packet).await;
        }
        let payload = &packet[view.payload.0..view.payload.1];
        // DTMF is taken from the citizen only: the agent keys nothing the gateway acts on.
        if side == Side::Citizen && Some(view.payload_type) == self.dtmf_pt {
            if let Some((key, true)) = rtp::dtmf_event(payload) {
                // The end packet is sent three times (RFC 4733 §2.5.1.4); one key per event.
                if self.last_dtmf_ts != Some(view.timestamp) {
                    self.last_dtmf_ts = Some(view.timestamp);
                    self.report.dtmf.push(key);
                    self.recorder.dtmf(key);
                    let _ = self.events.try_send(MediaEvent::Dtmf(key));
                }
            }
            return;
        }
        if g711::decode(view.payload_type, payload, &mut self.pcm) {
            match self.mixer.as_mut() {
                // Three-way: the mixer sends and records what each party hears.
                Some(m) => m.push(i, &self.pcm),
                None => self
                    .recorder
                    .push_rtp(side, view.ssrc, view.timestamp, &self.pcm),
            }
        }
    }

    /// A packet from the third party: latched like the others, decoded into the mixer.
    async fn on_third_rtp(&mut self, packet: &[u8], from: SocketAddr) {
        self.last_packet = Instant::now();
        let Some(leg) = self.third.as_mut() else {
            return;
        };
        match leg.latched {
            None => {
                leg.latched = Some(from);
                if leg.sockets.rtp.connect(from).await.is_ok() {
                    leg.connected = true;
                }
            }
            Some(l) if l != from => return,
            Some(_) => {}
        }
        if rtp::is_rtcp(packet) {
            return;
        }
        let Some(view) = rtp::parse(packet) else {
            return;
        };
        let payload = &packet[view.payload.0..view.payload.1];
        if g711::decode(view.payload_type, payload, &mut self.pcm)
            && let Some(m) = self.mixer.as_mut()
        {
            m.push(2, &self.pcm);
        }
    }

    /// One 20 ms step of a three-way call: each party gets the other two, mixed; the
    /// recording gets the citizen left, the agent and the third party right.
    async fn mix(
        &mut self,
        codec: u8,
        elapsed: Duration,
        out: &mut Vec<u8>,
        encoded: &mut Vec<u8>,
    ) {
        let Some(m) = self.mixer.as_mut() else { return };
        let [c, a, t] = m.next();
        let heard = [mix2(&a, &t), mix2(&c, &t), mix2(&c, &a)];
        let legs = [
            self.legs[0].as_ref(),
            self.legs[1].as_ref(),
            self.third.as_ref(),
        ];
        for (i, leg) in legs.into_iter().enumerate() {
            let Some(leg) = leg else { continue };
            if leg.rtp_dest().is_none() {
                continue;
            }
            let (seq, ts, ssrc) = m.streams[i];
            out.clear();
            rtp::write_header(out, codec, m.first[i], seq, ts, ssrc);
            g711::encode(codec, &heard[i], encoded);
            out.extend_from_slice(encoded);
            leg.send_rtp(out).await;
            m.first[i] = false;
            m.streams[i] = (seq.wrapping_add(1), ts.wrapping_add(FRAME as u32), ssrc);
        }
        let pos = *m.at.get_or_insert(Recorder::samples_at(elapsed));
        m.at = Some(pos + FRAME as u64);
        self.recorder.place(Side::Citizen, pos, &c);
        self.recorder.place(Side::Agent, pos, &heard[0]);
    }

    /// RTCP on its own port (RFC 3550): latched like RTP, passed to the other leg's RTCP
    /// port.
    async fn on_rtcp(&mut self, side: Side, packet: &[u8], from: SocketAddr) {
        let legs = &mut self.legs;
        let i = side.index();
        let Some(leg) = legs[i].as_mut() else { return };
        match leg.rtcp_latched {
            None => leg.rtcp_latched = Some(from),
            Some(l) if l != from => return,
            Some(_) => {}
        }
        if let Some(o) = other(legs, side)
            && let Some(dest) = o.rtcp_dest()
        {
            let _ = o.sockets.rtcp.send_to(packet, dest).await;
        }
    }
}

fn other(legs: &[Option<Leg>; 2], side: Side) -> Option<&Leg> {
    legs[1 - side.index()].as_ref()
}

struct Track {
    /// (RTP timestamp, SSRC, sample position) of the packet the track was based on.
    base: Option<(u32, u32, u64)>,
    /// Samples from `Recorder::written` on.
    pending: VecDeque<i16>,
}

/// The stereo WAV of a call and the tap, fed per packet.
struct Recorder {
    path: Option<PathBuf>,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    error: Option<String>,
    start: Instant,
    written: u64,
    tracks: [Track; 2],
    tap: Option<Box<dyn CallAudio>>,
}

impl Recorder {
    fn new(path: Option<PathBuf>, start: Instant, tap: Option<Box<dyn CallAudio>>) -> Self {
        Recorder {
            path,
            writer: None,
            error: None,
            start,
            written: 0,
            tracks: [
                Track {
                    base: None,
                    pending: VecDeque::new(),
                },
                Track {
                    base: None,
                    pending: VecDeque::new(),
                },
            ],
            tap,
        }
    }

    fn samples_at(elapsed: Duration) -> u64 {
        (elapsed.as_micros() as u64) * u64::from(RATE) / 1_000_000
    }

    /// Places a decoded RTP payload by its timestamp.
    fn push_rtp(&mut self, side: Side, ssrc: u32, ts: u32, samples: &[i16]) {
        let now = Self::samples_at(self.start.elapsed());
        let track = &mut self.tracks[side.index()];
        let pos = match track.base {
            Some((ts0, ssrc0, p0)) if ssrc0 == ssrc => {
                let delta = i64::from(ts.wrapping_sub(ts0) as i32);
                let p = p0 as i64 + delta;
                // A jump of more than two seconds against the clock is a new stream
                // (a restarted sender), not a gap: rebase.
                if (p - now as i64).abs() > 2 * i64::from(RATE) {
                    track.base = Some((ts, ssrc, now));
                    now
                } else {
                    p.max(0) as u64
                }
            }
            _ => {
                track.base = Some((ts, ssrc, now));
                now
            }
        };
        self.place(side, pos, samples);
    }

    /// Places samples at the current time (what the gateway itself plays).
    fn push_at(&mut self, side: Side, elapsed: Duration, samples: &[i16]) {
        let pos = Self::samples_at(elapsed);
        self.place(side, pos, samples);
    }

    fn place(&mut self, side: Side, pos: u64, samples: &[i16]) {
        if let Some(tap) = self.tap.as_mut() {
            tap.push(side.speaker(), pos * 1000 / u64::from(RATE), samples);
        }
        let written = self.written;
        let track = &mut self.tracks[side.index()];
        let (skip, idx) = if pos < written {
            ((written - pos) as usize, 0usize)
        } else {
            (0, (pos - written) as usize)
        };
        if skip >= samples.len() {
            return;
        }
        let samples = &samples[skip..];
        if track.pending.len() < idx + samples.len() {
            track.pending.resize(idx + samples.len(), 0);
        }
        for (k, s) in samples.iter().enumerate() {
            track.pending[idx + k] = *s;
        }
        // Written in blocks of about 200 ms rather than per packet: each flush has a fixed
        // cost (the writer, the buffered file) that showed in profiles.
        let upto = Self::samples_at(self.start.elapsed()).saturating_sub(JITTER_SAMPLES);
        if upto >= self.written + FLUSH_BLOCK {
            self.flush(upto);
        }
    }

    fn dtmf(&mut self, key: char) {
        let ms = self.start.elapsed().as_millis() as u64;
        if let Some(tap) = self.tap.as_mut() {
            tap.dtmf(key, ms);
        }
    }

    fn flush(&mut self, upto: u64) {
        if upto <= self.written || self.error.is_some() {
            return;
        }
        let Some(path) = self.path.as_ref() else {
            // Not recorded: drop what is pending up to `upto`.
            let n = (upto - self.written) as usize;
            for t in &mut self.tracks {
                t.pending.drain(..n.min(t.pending.len()));
            }
            self.written = upto;
            return;
        };
        if self.writer.is_none() {
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: RATE,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            match File::create(path)
                .map_err(hound::Error::from)
                .and_then(|f| hound::WavWriter::new(BufWriter::with_capacity(64 * 1024, f), spec))
            {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot create the call recording");
                    metrics::counter!("gateway_sip_recording_errors_total").increment(1);
                    self.error = Some(e.to_string());
                    return;
                }
            }
        }
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let frames = (upto - self.written) as usize;
        let mut w = writer.get_i16_writer(frames as u32 * 2);
        let [left, right] = &mut self.tracks;
        for _ in 0..frames {
            w.write_sample(left.pending.pop_front().unwrap_or(0));
            w.write_sample(right.pending.pop_front().unwrap_or(0));
        }
        if let Err(e) = w.flush() {
            self.error = Some(e.to_string());
        }
        self.written = upto;
    }

    /// Writes what is pending and closes the file. Returns the length in milliseconds,
    /// the path when a file was written, and an error if writing failed.
    fn finish(&mut self) -> (u64, Option<PathBuf>, Option<String>) {
        let longest = self
            .tracks
            .iter()
            .map(|t| t.pending.len())
            .max()
            .unwrap_or(0) as u64;
        self.flush(self.written + longest);
        let ms = self.written * 1000 / u64::from(RATE);
        let result = match self.writer.take() {
            Some(w) => match w.finalize() {
                Ok(()) => (ms, self.path.clone(), self.error.clone()),
                Err(e) => (ms, self.path.clone(), Some(e.to_string())),
            },
            None => (ms, None, self.error.clone()),
        };
        // After the WAV is complete: a tap that fell behind reads the rest from it.
        if let Some(tap) = self.tap.take() {
            tap.finish();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_way_mixer_gives_each_party_the_other_two_and_clips() {
        let mut m = Mixer::new();
        m.push(0, &[100; FRAME]);
        m.push(1, &[20_000; FRAME]);
        m.push(2, &[20_000; FRAME]);
        let [c, a, t] = m.next();
        assert_eq!(mix2(&a, &t)[0], i16::MAX, "clipped, never wrapped");
        assert_eq!(mix2(&c, &t)[0], 20_100);
        // Nothing queued: silence, not the last frame again.
        assert_eq!(m.next(), [[0; FRAME]; 3]);
        // A party far ahead loses its oldest frames, not the others' time.
        for k in 0..(MIX_QUEUE as i16 + 3) {
            m.push(1, &[k; FRAME]);
        }
        assert_eq!(m.queues[1].len(), MIX_QUEUE);
        assert_eq!(m.next()[1][0], 3);
        // A 30 ms packet makes a whole frame and a padded one.
        m.push(2, &[7; FRAME + FRAME / 2]);
        assert_eq!(m.queues[2].len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn recording_aligns_both_sides_by_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("call.wav");
        let start = Instant::now();
        let mut r = Recorder::new(Some(path.clone()), start, None);
        // The citizen talks for one second from t=0; the agent answers from t=0.5 s with
        // a packet lost in the middle.
        for i in 0..50u32 {
            tokio::time::advance(Duration::from_millis(20)).await;
            r.push_rtp(Side::Citizen, 1, 1000 + i * 160, &[1000; 160]);
            if i >= 25 && i != 30 {
                r.push_rtp(Side::Agent, 2, 5000 + (i - 25) * 160, &[-2000; 160]);
            }
        }
        let (ms, written, error) = r.finish();
        assert_eq!(error, None);
        assert_eq!(written.as_deref(), Some(path.as_path()));
        let mut reader = hound::WavReader::open(&path).expect("wav");
        assert_eq!(reader.spec().channels, 2);
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        let frames = samples.len() / 2;
        assert_eq!(frames as u64 * 1000 / 8000, ms);
        // About one second plus the first packet's offset.
        assert!((1000..=1100).contains(&ms), "{ms} ms");
        let left_signal = samples.iter().step_by(2).filter(|s| **s == 1000).count();
        let right_signal = samples
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|s| **s == -2000)
            .count();
        assert_eq!(left_signal, 50 * 160);
        assert_eq!(right_signal, 24 * 160);
        // The agent's audio starts about half a second in.
        let first_right = samples
            .iter()
            .skip(1)
            .step_by(2)
            .position(|s| *s == -2000)
            .expect("agent audio");
        assert!((3900..=4300).contains(&first_right), "{first_right}");
    }

    fn relay_on_loopback(recording: Option<PathBuf>) -> (Relay, Arc<PortPool>) {
        let base = (std::net::UdpSocket::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
            & !1)
            .clamp(20_000, 60_000);
        let pool = PortPool::new("127.0.0.1".parse().expect("ip"), base, base + 40);
        let relay = Relay::start(RelaySetup {
            citizen: pool.allocate().expect("ports"),
            agent: Some(pool.allocate().expect("ports")),
            recording,
            timeout: Duration::from_secs(5),
            tap: None,
        });
        (relay, pool)
    }

    async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn relays_rtp_and_rtcp_both_ways_and_drops_strangers_after_latching() {
        let (relay, _pool) = relay_on_loopback(None);
        let a_port = relay.port(Side::Citizen).expect("citizen port");
        let b_port = relay.port(Side::Agent).expect("agent port");
        let citizen = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let citizen_rtcp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // The agent's RTP and RTCP on consecutive ports, as RFC 3550 has them.
        let (agent, agent_rtcp) = loop {
            let rtp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let port = rtp.local_addr().expect("addr").port();
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port.wrapping_add(1))).await {
                break (rtp, rtcp);
            }
        };
        relay
            .set_remote(Side::Agent, Some(agent.local_addr().expect("addr")))
            .await;
        relay.set_codec(g711::PCMU, None).await;

        let mut packet = Vec::new();
        rtp::write_header(&mut packet, g711::PCMU, true, 1, 160, 7);
        packet.extend_from_slice(&[0xff; 160]);
        citizen
            .send_to(&packet, ("127.0.0.1", a_port))
            .await
            .expect("send");
        assert_eq!(
            recv(&agent).await.as_deref(),
            Some(&packet[..]),
            "citizen to agent"
        );
        // The agent answers; the citizen latched, so its audio goes to the source seen.
        agent
            .send_to(&packet, ("127.0.0.1", b_port))
            .await
            .expect("send");
        assert_eq!(
            recv(&citizen).await.as_deref(),
            Some(&packet[..]),
            "agent to citizen"
        );
        // A stranger sending to the citizen's port after latching is dropped.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        stranger
            .send_to(&packet, ("127.0.0.1", a_port))
            .await
            .expect("send");
        assert_eq!(
            recv(&agent).await,
            None,
            "a stranger's packet is not relayed"
        );
        // RTCP goes from the citizen's RTCP port to the agent's (its RTP port + 1).
        let report = [
            0x80, 200, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        citizen_rtcp
            .send_to(&report, ("127.0.0.1", a_port + 1))
            .await
            .expect("send");
        assert_eq!(
            recv(&agent_rtcp).await.as_deref(),
            Some(&report[..]),
            "RTCP passed on"
        );
        let report = relay.stop().await;
        assert_eq!(report.packets, [1, 1]);
        assert_eq!(report.recording, None, "nothing recorded when not asked");
    }

    #[tokio::test]
    async fn a_moved_address_in_a_reinvite_relatches_and_a_refresh_does_not() {
        let (relay, _pool) = relay_on_loopback(None);
        let a_port = relay.port(Side::Citizen).expect("citizen port");
        let b_port = relay.port(Side::Agent).expect("agent port");
        let old = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let new = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let agent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let old_addr = old.local_addr().expect("addr");
        relay.set_remote(Side::Citizen, Some(old_addr)).await;
        relay
            .set_remote(Side::Agent, Some(agent.local_addr().expect("addr")))
            .await;
        relay.set_codec(g711::PCMU, None).await;
        let mut packet = Vec::new();
        rtp::write_header(&mut packet, g711::PCMU, true, 1, 160, 7);
        packet.extend_from_slice(&[0xff; 160]);
        // The citizen latches from its first address.
        old.send_to(&packet, ("127.0.0.1", a_port))
            .await
            .expect("send");
        assert!(recv(&agent).await.is_some(), "citizen to agent");
        // A refresh with the same address keeps the latch.
        relay.set_remote(Side::Citizen, Some(old_addr)).await;
        agent
            .send_to(&packet, ("127.0.0.1", b_port))
            .await
            .expect("send");
        assert!(recv(&old).await.is_some(), "still to the old address");
        // The citizen moves its media: the agent's audio goes to the new address at
        // once, and the old address is no longer relayed.
        relay
            .set_remote(Side::Citizen, Some(new.local_addr().expect("addr")))
            .await;
        agent
            .send_to(&packet, ("127.0.0.1", b_port))
            .await
            .expect("send");
        assert!(recv(&new).await.is_some(), "agent to the new address");
        old.send_to(&packet, ("127.0.0.1", a_port))
            .await
            .expect("send");
        assert_eq!(recv(&agent).await, None, "the old address is dropped");
        new.send_to(&packet, ("127.0.0.1", a_port))
            .await
            .expect("send");
        assert!(recv(&agent).await.is_some(), "the new address is relayed");
        relay.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn silence_either_way_is_reported_once() {
        let (mut relay, _pool) = relay_on_loopback(None);
        let event = tokio::time::timeout(Duration::from_secs(30), relay.events.recv()).await;
        assert_eq!(event.ok().flatten(), Some(MediaEvent::Timeout));
        let again = tokio::time::timeout(Duration::from_secs(30), relay.events.recv()).await;
        assert!(again.is_err(), "reported once");
        relay.stop().await;
    }

    #[tokio::test]
    async fn port_pool_skips_ports_in_use_and_returns_them() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port() & !1;
        let _hold = std::net::UdpSocket::bind(("127.0.0.1", port)).ok();
        let _hold2 = std::net::UdpSocket::bind(("127.0.0.1", port + 1)).ok();
        let pool = PortPool::new("127.0.0.1".parse().expect("ip"), port, port + 4);
        let leg = pool.allocate().expect("a free pair");
        assert_eq!(leg.port(), port + 2);
        drop(leg);
        assert_eq!(pool.available(), 2);
    }

    /// Issue 28: another process holding a run of pairs at the front of the queue (another
    /// gateway whose range overlaps, allocating the same ports in the same order) must not
    /// refuse calls while the range has free pairs further on.
    #[tokio::test]
    async fn port_pool_goes_past_a_long_run_of_ports_held_elsewhere() {
        let (base, held) = loop {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let base = probe.local_addr().expect("addr").port() & !1;
            drop(probe);
            if base > 65_535 - 200 {
                continue;
            }
            let held: std::io::Result<Vec<_>> = (base..base + 80)
                .map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)))
                .collect();
            if let Ok(held) = held {
                break (base, held);
            }
        };
        let pool = PortPool::new("127.0.0.1".parse().expect("ip"), base, base + 100);
        let leg = pool.allocate().expect("a pair past the 40 held ones");
        assert!(leg.port() >= base + 80, "{} of {base}", leg.port());
        drop(held);
        // The held pairs went to the back, and the pool still has them all.
        drop(leg);
        assert_eq!(pool.available(), 50);
    }
}
