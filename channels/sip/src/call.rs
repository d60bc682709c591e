//! One call: a task that owns both legs, the relay and the call's contacts.
//!
//! The task runs the call as straight-line code: admit, record the offer durably, bridge
//! (or refuse, or fall back to a recorded message), then wait for the end. Requests for
//! the call (CANCEL, BYE, re-INVITE, ACK) arrive on its bounded queue, routed by Call-ID;
//! responses from the agent side arrive on the agent INVITE's client transaction.
//!
//! Contacts (Art. 21: the caller's number travels only inside them): `offered` once the
//! call is admitted and before the agent side is called, so a call the gateway took is on
//! disk before anyone rings; `answered`; `ended` with duration, who ended it and the
//! recording; `rejected` with why. Each carries an idempotency key made of the trunk's
//! Call-ID and the phase, so an INVITE retransmitted across a gateway restart is not
//! counted twice.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use contract::{
    CallAudioInfo, CallContact, CallOutcome, CallParty, CallPhase, CitizenIdentity, ContactContent,
    Event, IdentityKind, IntakeError, Submission, TicketRef,
};
use rsip::headers::UntypedHeader;
use rsip::prelude::*;
use rsip::{Header, Method, Request, Response};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use uuid::Uuid;

use crate::Core;
use crate::config::Fallback;
use crate::endpoint::{ClientTx, Peer, ServerTx, lock};
use crate::feed::{CallStateName, FeedEvent};
use crate::g711::{PCMA, PCMU};
use crate::media::{MediaEvent, Relay, RelayReport, RelaySetup, Side};
use crate::msg;
use crate::sdp::{self, MediaInfo, SdpError};
use crate::transcript::{CallRecord, CallSink};

/// What reaches a call from the router.
#[derive(Debug)]
pub enum CallInput {
    /// A request on one of the call's dialogs (or a CANCEL), with its transaction.
    Request(Box<Request>, ServerTx),
    /// An ACK (of the gateway's 2xx to the citizen).
    Ack(Box<Request>),
    /// An agent asks to hand the caller to a linkage line (the agent feed).
    Transfer {
        /// The agent who asked (only the call's own agent may).
        agent: String,
        /// The linkage target (`"120"`).
        target: String,
        /// Add the line beside the agent (three-way) instead of in the agent's place.
        conference: bool,
    },
}

/// Requests queued for one call at most (a call sees a handful; more is a flood).
const CALL_QUEUE: usize = 16;
/// The telephone-event payload type the gateway offers when it makes the offer.
const DTMF_PT: u8 = 101;
/// How long a restricted caller may still press 1 or speak after the announcement
/// ("or stay on the line").
const BYPASS_LISTEN: Duration = Duration::from_secs(8);

/// Why an answered call has no ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoAck {
    /// The citizen hung up (BYE) before acknowledging, or the call was torn down.
    HungUp,
    /// 64*T1 passed without it.
    TimedOut,
}

/// The citizen's leg: the trunk's INVITE and the dialog the gateway answers it in.
struct ALeg {
    invite: Request,
    tx: ServerTx,
    call_id: String,
    /// The gateway's To tag.
    tag: String,
    /// Where in-dialog requests to the citizen go.
    peer: Peer,
    /// Record-Route of the INVITE: copied into responses, used as the route set.
    record_route: Vec<Header>,
    /// The citizen's offer, when the INVITE had one.
    offer: Option<MediaInfo>,
    /// The gateway's CSeq for requests it sends on this dialog.
    cseq: u32,
}

/// The agent's leg, once placed (also the leg of a linkage call).
pub(crate) struct BLeg {
    pub(crate) invite: Request,
    pub(crate) call_id: String,
    pub(crate) to_tag: Option<String>,
    pub(crate) remote_target: Option<String>,
    /// The dialog's route set: the 2xx's Record-Route, reversed (RFC 3261 §12.1.2), sent
    /// as Route headers on ACK and BYE (loose routing).
    pub(crate) route_set: Vec<String>,
    pub(crate) cseq: u32,
    pub(crate) peer: Peer,
}

/// A linkage line ringing for a transfer.
struct PendingTransfer {
    agent: String,
    target: String,
    leg: BLeg,
    tx: ClientTx,
    deadline: Instant,
    /// A three-way call's own media sockets for the line.
    sockets: Option<crate::media::LegSockets>,
}

/// How a linkage line joined a call.
enum Joined {
    /// In the agent's place: the new agent-side leg, its transaction, Via and ACK.
    Replaced(BLeg, ClientTx, Header, Request),
    /// Beside the agent (three-way): its leg, Via and target.
    Added(BLeg, Header, String),
}

/// The next response of a ringing transfer, `None` past its deadline; pending forever
/// without one.
async fn ring_pending(pending: &mut Option<PendingTransfer>) -> Option<Response> {
    match pending.as_mut() {
        Some(p) => tokio::time::timeout_at(p.deadline, p.tx.recv())
            .await
            .ok()
            .flatten(),
        None => std::future::pending().await,
    }
}

/// How bridging ended before the call was connected.
enum Ring {
    Answered(Response),
    Failed(u16),
    TimedOut,
    Cancelled,
    Shutdown,
}

struct Call {
    core: Arc<Core>,
    id: Uuid,
    ticket: TicketRef,
    citizen: CitizenIdentity,
    trunk: String,
    dialled: Option<String>,
    a: ALeg,
    inputs: mpsc::Receiver<CallInput>,
    /// How the call's contacts are addressed (shared with its transcript sink).
    record: CallRecord,
    started: Instant,
    agent: Option<String>,
    /// Calls this citizen made before (from the channel's state), for the screen-pop.
    earlier_calls: u32,
    /// Channel state the next submission writes with its contact.
    pending_state: Vec<(String, Vec<u8>)>,
    /// Whether the agent's desktop got its screen-pop.
    popped: bool,
    /// The linkage line the agent handed the caller to, if any.
    transferred_to: Option<String>,
    /// The linkage line added to a three-way call, if any.
    conferenced_with: Option<String>,
}

/// Runs one call from its INVITE (already admitted by trunk, rate and capacity) to its
/// end.
/// `caller` is the calling number's identity (`None`: withheld).
pub async fn run(
    core: Arc<Core>,
    invite: Request,
    tx: ServerTx,
    trunk: String,
    caller: Option<contract::CitizenIdentity>,
) {
    let call_id = msg::call_id(&invite).to_owned();
    let (input_tx, inputs) = mpsc::channel(CALL_QUEUE);
    core.register(&call_id, input_tx.clone());
    let id = contract::event::new_event_id();
    lock(&core.by_id).insert(id, input_tx.clone());
    let citizen = caller.unwrap_or_else(|| core.ctx.keyer.withheld(&id.to_string()));
    let dialled = invite.uri.user().map(str::to_owned).or_else(|| {
        invite
            .to_header()
            .ok()
            .and_then(|t| msg::user_of(t.value()))
    });
    let record_route = invite
        .headers
        .iter()
        .filter(|h| matches!(h, Header::RecordRoute(_)))
        .cloned()
        .collect();
    let peer = tx.peer();
    let ticket = TicketRef::generate(Utc::now());
    let origin = msg::origin(&invite);
    let record = CallRecord {
        id,
        ticket: ticket.clone(),
        citizen: citizen.clone(),
        channel_ref: call_id.clone(),
        sequence: Arc::new(AtomicU32::new(0)),
        agent: Arc::new(OnceLock::new()),
        origin: origin.clone(),
        restriction: Arc::new(OnceLock::new()),
        emergency: Arc::new(tokio::sync::Notify::new()),
        refused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let mut call = Call {
        id,
        ticket,
        citizen,
        trunk,
        dialled,
        a: ALeg {
            call_id: call_id.clone(),
            tag: msg::random_token(),
            peer,
            record_route,
            offer: None,
            cseq: 0,
            invite,
            tx,
        },
        inputs,
        record,
        started: Instant::now(),
        agent: None,
        earlier_calls: 0,
        pending_state: Vec::new(),
        popped: false,
        transferred_to: None,
        conferenced_with: None,
        core: core.clone(),
    };
    call.run(input_tx).await;
    core.unregister(&call_id);
    lock(&core.by_id).remove(&id);
}

impl Call {
    async fn run(&mut self, input_tx: mpsc::Sender<CallInput>) {
        // The offer, if any, must be usable before anything is recorded.
        // The SDP of an `application/sdp` body, or the SDP part of a `multipart/mixed` or
        // `multipart/alternative` one (SIP-I/SIP-T interconnects add an ISUP part, which
        // the gateway has no use for and leaves in the INVITE as it came).
        if let Some(offer_sdp) = msg::sdp_part(&self.a.invite.headers, self.a.invite.body()) {
            match sdp::parse_offer(&offer_sdp) {
                Ok(offer) => self.a.offer = Some(offer),
                Err(e) => {
                    let (code, reason, warning) = match e {
                        SdpError::NoCommonCodec => (
                            488,
                            "no_common_codec",
                            "305 {} \"Incompatible media format: PCMU or PCMA required\"",
                        ),
                        _ => (400, "bad_sdp", "399 {} \"Unusable SDP offer\""),
                    };
                    let warning =
                        Header::Other("Warning".into(), warning.replace("{}", self.core.ep.host()));
                    self.reject(code, reason, vec![warning]).await;
                    return;
                }
            }
        }
        self.count_call().await;
        let offered = self.call_contact(CallPhase::Offered);
        if let Err(e) = self.submit(offered, "offered").await {
            tracing::warn!(error = %e, "Cannot record the call offer; refusing the call");
            let retry = Header::Other("Retry-After".into(), "10".into());
            let mut r = self.a_response(503);
            r.headers.push(retry);
            r.headers.push(msg::warning(
                self.core.ep.host(),
                "gateway cannot record calls now",
            ));
            self.a.tx.respond(r).await;
            return;
        }
        tracing::info!(call = %self.id, trunk = %self.trunk, caller = %contract::mask_identity(&self.citizen), "Call offered");
        metrics::counter!("gateway_sip_calls_offered_total", "trunk" => self.trunk.clone())
            .increment(1);

        // Art. 9, with Art. 15's bypass: a restricted caller hears why, and an
        // emergency (1 pressed, or an emergency said) still reaches an agent.
        let restricted = self.core.blocklist.check(&self.citizen, Utc::now());
        let relay = match restricted {
            Some(r) => match self.announce_restriction(&r).await {
                Some(relay) => relay,
                None => return,
            },
            None => match self.start_relay(true) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "No media ports; refusing the call");
                    metrics::counter!("gateway_sip_calls_refused_total", "reason" => "media_ports")
                        .increment(1);
                    let mut r = self.a_response(503);
                    // Ports come back as calls end: the trunk may try again shortly
                    // (RFC 3261 §21.5.4).
                    r.headers
                        .push(Header::Other("Retry-After".into(), "5".into()));
                    r.headers
                        .push(msg::warning(self.core.ep.host(), "no media ports free"));
                    self.a.tx.respond(r).await;
                    self.ended(CallOutcome::Unanswered, CallParty::Gateway, None, Some(503))
                        .await;
                    return;
                }
            },
        };
        if let Some(o) = &self.a.offer {
            relay.set_remote(Side::Citizen, o.rtp).await;
        }

        // Place the agent leg.
        let codecs = self
            .a
            .offer
            .as_ref()
            .map(|o| o.codecs.clone())
            .unwrap_or_else(|| vec![PCMU, PCMA]);
        let dtmf = self.a.offer.as_ref().map_or(Some(DTMF_PT), |o| o.dtmf);
        let b_port = relay.port(Side::Agent).unwrap_or_default();
        let b_sdp = sdp::build(
            self.media_addr(self.agent_ip(), b_port),
            &codecs,
            dtmf,
            self.id.as_u64_pair().0,
            1,
        );
        let mut b = self.agent_invite(b_sdp);
        self.core.register(&b.call_id, input_tx.clone());
        let mut b_tx = self.core.ep.request(b.invite.clone(), b.peer);
        let ring = self.ring(&mut b, &mut b_tx, &relay).await;
        match ring {
            Ring::Answered(ok) => self.connected(b, b_tx, ok, relay).await,
            Ring::Cancelled => {
                self.cancel_agent(b, b_tx);
                let report = relay.stop().await;
                self.ended_with(
                    CallOutcome::CallerCancelled,
                    CallParty::Citizen,
                    None,
                    &report,
                    None,
                )
                .await;
            }
            Ring::Shutdown => {
                self.cancel_agent(b, b_tx);
                let r = self.a_response(503);
                self.a.tx.respond(r).await;
                let report = relay.stop().await;
                self.ended_with(
                    CallOutcome::Shutdown,
                    CallParty::Gateway,
                    Some(503),
                    &report,
                    None,
                )
                .await;
            }
            Ring::TimedOut => {
                self.cancel_agent(b, b_tx);
                self.fallback(relay, 408).await;
            }
            Ring::Failed(code) => {
                self.core.unregister(&b.call_id);
                self.fallback(relay, code).await;
            }
        }
    }

    /// Reads how many calls this citizen made before and schedules the count's update
    /// with the offer. Counts calls only: the full contact history across channels is
    /// the routing crate's (repeat contacts, Art. 14).
    async fn count_call(&mut self) {
        if self.citizen.kind != IdentityKind::PhoneNumber {
            return;
        }
        let key = format!("sip/citizen/{}", self.citizen.key);
        let earlier = match self.core.ctx.intake.get_state(&key).await {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
            _ => 0,
        };
        self.earlier_calls = earlier;
        self.pending_state
            .push((key, (earlier.saturating_add(1)).to_string().into_bytes()));
    }

    /// Sends a feed event to the agent's desktop, once the agent is known.
    fn publish(&self, event: FeedEvent) {
        if let (Some(feed), Some(agent)) = (&self.core.feed, &self.agent) {
            feed.publish(agent, &event);
        }
    }

    /// Learns the agent from a response's Contact and pops the call up on its screen.
    fn screen_pop<M: HasHeaders>(&mut self, response: &M, state: CallStateName) {
        if self.agent.is_none() {
            self.agent = contact_uri(response).as_deref().and_then(msg::user_of);
            if let Some(a) = &self.agent {
                let _ = self.record.agent.set(a.clone());
            }
        }
        if self.popped || self.agent.is_none() {
            return;
        }
        self.popped = true;
        let caller = match self.citizen.kind {
            IdentityKind::PhoneNumber => contract::mask_phone(&self.citizen.value),
            _ => "withheld".to_owned(),
        };
        self.publish(FeedEvent::ScreenPop {
            call_id: self.id,
            ticket_ref: self.ticket.clone(),
            caller,
            citizen_key: self.citizen.key.clone(),
            earlier_calls: self.earlier_calls,
            trunk: self.trunk.clone(),
            dialled: self.dialled.clone(),
        });
        // An answer's state follows once the citizen's side is connected too.
        if state == CallStateName::Ringing {
            self.publish(FeedEvent::CallState {
                call_id: self.id,
                state,
                outcome: None,
                ended_by: None,
            });
        }
    }

    /// The address the gateway's SDP names for a leg whose peer is `peer`: of the peer's
    /// family (an IPv6 leg gets `c=IN IP6`, RFC 8866 §5.7), matching the family its
    /// sockets were bound in.
    fn media_addr(&self, peer: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(self.core.cfg.media_advertised_for(peer), port)
    }

    /// Where the citizen's media comes from: the offer's connection address, else (a
    /// late offer) the trunk's signalling address. Its family is the citizen leg's.
    fn citizen_ip(&self) -> IpAddr {
        self.a
            .offer
            .as_ref()
            .and_then(|o| o.rtp)
            .map_or(self.a.peer.addr().ip(), |a| a.ip())
    }

    /// The agent side's address (its family is the agent leg's).
    fn agent_ip(&self) -> IpAddr {
        self.core.cfg.agent_target.ip()
    }

    /// Starts the relay: both legs when `bridged`, else the citizen's alone (the
    /// announcement to a refused caller, which is neither recorded nor tapped).
    fn start_relay(&self, bridged: bool) -> std::io::Result<Relay> {
        let citizen = self.core.ports.allocate_for(self.citizen_ip())?;
        let agent = if bridged {
            Some(self.core.ports.allocate_for(self.agent_ip())?)
        } else {
            None
        };
        let tap = self
            .core
            .ctx
            .audio_tap
            .as_ref()
            .filter(|_| bridged)
            .and_then(|t| {
                t.open(
                    &CallAudioInfo {
                        call_id: self.id,
                        ticket_ref: self.ticket.clone(),
                        sample_rate: crate::media::RATE,
                        recording: Some(self.core.cfg.recordings_dir.join(self.recording_name())),
                    },
                    CallSink::new(self.core.clone(), self.record.clone()),
                )
            });
        Ok(Relay::start(RelaySetup {
            citizen,
            agent,
            recording: bridged.then(|| self.core.cfg.recordings_dir.join(self.recording_name())),
            timeout: Duration::from_secs(self.core.cfg.media.timeout_secs),
            tap,
        }))
    }

    fn recording_name(&self) -> String {
        format!("{}.wav", self.id)
    }

    /// A response to the citizen's INVITE with the gateway's tag, Contact and the
    /// INVITE's Record-Route.
    fn a_response(&self, code: u16) -> Response {
        let mut r = msg::response(&self.a.invite, code, Some(&self.a.tag));
        if (101..300).contains(&code) {
            for rr in &self.a.record_route {
                r.headers.push(rr.clone());
            }
            r.headers.push(self.contact_header(self.a.peer));
        }
        r
    }

    fn contact_header(&self, peer: Peer) -> Header {
        crate::uac::contact(&self.core, peer)
    }

    fn via_header(&self, peer: Peer) -> Header {
        crate::uac::via_header(&self.core, peer)
    }

    fn agent_invite(&self, sdp_body: Vec<u8>) -> BLeg {
        let target = self.core.cfg.agent_target;
        let uri_text = format!(
            "sip:{}@{}",
            self.dialled.as_deref().unwrap_or("12345"),
            target
        );
        self.leg_invite(&uri_text, Peer::Udp(target), sdp_body)
    }

    /// An INVITE for a new leg of this call to `uri_text` (the agent side, or a linkage
    /// line the caller is handed to), with the caller's number in From.
    fn leg_invite(&self, uri_text: &str, peer: Peer, sdp_body: Vec<u8>) -> BLeg {
        // The agent side and the linkage see the caller's number in From: the centre's
        // own systems and the linkage need it for the call-back; the number still never
        // appears in logs.
        let caller = match self.citizen.kind {
            IdentityKind::PhoneNumber => self.citizen.value.clone(),
            _ => "anonymous".to_owned(),
        };
        let from = format!("<sip:{caller}@{}>", self.core.host_for(peer));
        let headers = vec![
            Header::Other("X-Hotline-Call".into(), self.id.to_string()),
            Header::Other("X-Hotline-Ticket".into(), self.ticket.to_string()),
        ];
        crate::uac::invite(&self.core, uri_text, peer, &from, headers, sdp_body)
    }

    /// Waits for the agent side to answer, relaying its progress to the citizen.
    async fn ring(&mut self, b: &mut BLeg, b_tx: &mut ClientTx, relay: &Relay) -> Ring {
        let deadline = Instant::now() + Duration::from_secs(self.core.cfg.ring_timeout_secs);
        let shutdown = self.core.ctx.shutdown.clone();
        let mut sent_ringing = false;
        loop {
            tokio::select! {
                r = b_tx.recv() => {
                    let Some(resp) = r else { return Ring::Failed(408) };
                    let code = resp.status_code.code();
                    match code {
                        100 => {}
                        101..=199 => {
                            if b.to_tag.is_none() {
                                b.to_tag = msg::to_tag(&resp);
                            }
                            self.screen_pop(&resp, CallStateName::Ringing);
                            let early = self.a.offer.is_some() && msg::has_sdp(&resp, resp.body());
                            if early {
                                // Early media (ringback or an IVR on the agent side) is
                                // relayed to the citizen as a 183 with the gateway's answer.
                                if let Ok(answer) = sdp::parse(resp.body())
                                    && let Some(codec) = answer.codecs.first().copied() {
                                        relay.set_remote(Side::Agent, answer.rtp).await;
                                        relay.set_codec(codec, answer.dtmf).await;
                                        let mut r = self.a_response(183);
                                        let body = self.a_answer_sdp(relay, codec, answer.dtmf);
                                        msg::set_sdp(&mut r.headers, &mut r.body, body);
                                        self.a.tx.respond(r).await;
                                        continue;
                                    }
                            }
                            if !sent_ringing {
                                sent_ringing = true;
                                let r = self.a_response(180);
                                self.a.tx.respond(r).await;
                            }
                        }
                        200..=299 => return Ring::Answered(resp),
                        _ => return Ring::Failed(code),
                    }
                }
                input = self.inputs.recv() => match input {
                    Some(CallInput::Request(req, tx)) if req.method == Method::Cancel => {
                        // §9.2: 200 to the CANCEL, 487 to the INVITE.
                        tx.respond(msg::response(&req, 200, Some(&self.a.tag))).await;
                        let r = self.a_response(487);
                        self.a.tx.respond(r).await;
                        return Ring::Cancelled;
                    }
                    Some(CallInput::Request(req, tx)) => {
                        let code = if req.method == Method::Bye { 481 } else { 491 };
                        tx.respond(msg::response(&req, code, None)).await;
                    }
                    Some(CallInput::Transfer { agent, target, .. }) => {
                        self.transfer_failed(&agent, &target, "not_connected");
                    }
                    Some(CallInput::Ack(_)) | None => {}
                },
                () = sleep_until(deadline) => return Ring::TimedOut,
                () = shutdown.cancelled() => return Ring::Shutdown,
            }
        }
    }

    /// The SDP the gateway sends the citizen: an answer to their offer, or (late offer)
    /// an offer of the codec the agent side took.
    fn a_answer_sdp(&self, relay: &Relay, codec: u8, agent_dtmf: Option<u8>) -> Vec<u8> {
        let port = relay.port(Side::Citizen).unwrap_or_default();
        let dtmf = match &self.a.offer {
            Some(o) => o.dtmf.filter(|_| agent_dtmf.is_some()),
            None => agent_dtmf,
        };
        sdp::build(
            self.media_addr(self.citizen_ip(), port),
            &[codec],
            dtmf,
            self.id.as_u64_pair().1,
            1,
        )
    }

    /// Stops ringing the agent side: CANCEL once it has sent a provisional response
    /// (§9.1), and ACK and BYE should it answer anyway. Runs in the background; the
    /// citizen's side goes on.
    fn cancel_agent(&self, b: BLeg, mut b_tx: ClientTx) {
        let core = self.core.clone();
        let provisional = b.to_tag.is_some();
        let call_id = b.call_id.clone();
        let via = self.via_header(b.peer);
        tokio::spawn(async move {
            let mut cancel_sent = false;
            let send_cancel = |core: &Arc<Core>, b: &BLeg| {
                let cancel = cancel_for(&b.invite);
                let mut tx = core.ep.request(cancel, b.peer);
                tokio::spawn(async move { while tx.recv().await.is_some() {} });
            };
            if provisional {
                send_cancel(&core, &b);
                cancel_sent = true;
            }
            let give_up = Instant::now() + core.ep.timers().timeout();
            loop {
                tokio::select! {
                    r = b_tx.recv() => match r {
                        None => break,
                        Some(resp) => {
                            let code = resp.status_code.code();
                            if (101..200).contains(&code) && !cancel_sent {
                                send_cancel(&core, &b);
                                cancel_sent = true;
                            } else if (200..300).contains(&code) {
                                // Answered after all: ACK, then BYE.
                                let mut leg = b;
                                leg.to_tag = msg::to_tag(&resp);
                                leg.remote_target = contact_uri(&resp);
                                leg.route_set = route_set(&resp);
                                let ack = in_dialog_request(&leg, Method::Ack, 1, via.clone());
                                core.ep.send(leg.peer, msg::encode(ack)).await;
                                leg.cseq += 1;
                                let bye = in_dialog_request(&leg, Method::Bye, leg.cseq, via.clone());
                                let mut tx = core.ep.request(bye, leg.peer);
                                while tx.recv().await.is_some_and(|r| r.status_code.code() < 200) {}
                                break;
                            } else if code >= 300 {
                                break;
                            }
                        }
                    },
                    () = sleep_until(give_up) => break,
                }
            }
            core.unregister(&call_id);
        });
    }

    /// The agent side answered: complete both dialogs and relay until one side hangs up.
    async fn connected(&mut self, mut b: BLeg, mut b_tx: ClientTx, ok: Response, mut relay: Relay) {
        b.to_tag = msg::to_tag(&ok);
        b.remote_target = contact_uri(&ok);
        b.route_set = route_set(&ok);
        if let Some(agent) = contact_uri(&ok).as_deref().and_then(msg::user_of) {
            self.agent = Some(agent);
        }
        self.screen_pop(&ok, CallStateName::Answered);
        let b_via = self.via_header(b.peer);
        let ack = in_dialog_request(&b, Method::Ack, b.cseq, b_via.clone());
        self.core.ep.send(b.peer, msg::encode(ack.clone())).await;

        let answer = sdp::parse(ok.body()).ok();
        let codec = answer.as_ref().and_then(|a| a.codecs.first().copied());
        let Some(codec) = codec else {
            // The agent side answered without a usable codec: hang it up and fall back.
            tracing::warn!(call = %self.id, "Agent side answered without a usable G.711 answer");
            self.bye(&b, b_via.clone()).await;
            self.core.unregister(&b.call_id);
            self.fallback(relay, 488).await;
            return;
        };
        let agent_dtmf = answer.as_ref().and_then(|a| a.dtmf);
        relay
            .set_remote(Side::Agent, answer.as_ref().and_then(|a| a.rtp))
            .await;
        relay
            .set_codec(
                codec,
                agent_dtmf.or(self.a.offer.as_ref().and_then(|o| o.dtmf)),
            )
            .await;

        let mut r = self.a_response(200);
        let body = self.a_answer_sdp(&relay, codec, agent_dtmf);
        msg::set_sdp(&mut r.headers, &mut r.body, body.clone());
        let a_ack = match self.answer_citizen(r).await {
            Ok(ack) => ack,
            Err(why) => {
                // No ACK from the citizen (§13.3.1.4): the gateway ends both legs, frees
                // the media ports, and (timed out) says BYE to the citizen too.
                self.bye(&b, b_via).await;
                self.core.unregister(&b.call_id);
                let report = relay.stop().await;
                self.ended_with(
                    CallOutcome::MediaTimeout,
                    CallParty::Gateway,
                    None,
                    &report,
                    None,
                )
                .await;
                if why == NoAck::TimedOut {
                    self.bye_citizen().await;
                }
                return;
            }
        };
        if self.a.offer.is_none() {
            // Late offer: the citizen's answer is in the ACK.
            match sdp::parse(a_ack.body()) {
                Ok(a_answer) if a_answer.codecs.contains(&codec) => {
                    relay.set_remote(Side::Citizen, a_answer.rtp).await;
                }
                _ => {
                    tracing::info!(call = %self.id, "Citizen's ACK answer is unusable; ending the call");
                    self.bye_citizen().await;
                    self.bye(&b, b_via).await;
                    self.core.unregister(&b.call_id);
                    let report = relay.stop().await;
                    self.ended_with(
                        CallOutcome::Unanswered,
                        CallParty::Gateway,
                        Some(488),
                        &report,
                        None,
                    )
                    .await;
                    return;
                }
            }
        }
        let answered_at = Instant::now();
        let mut answered = self.call_contact(CallPhase::Answered);
        answered.agent = self.agent.clone();
        if let Err(e) = self.submit(answered, "answered").await {
            tracing::warn!(call = %self.id, error = %e, "Cannot record the answer");
        }
        metrics::counter!("gateway_sip_calls_answered_total").increment(1);
        self.publish(FeedEvent::CallState {
            call_id: self.id,
            state: CallStateName::Answered,
            outcome: None,
            ended_by: None,
        });

        let shutdown = self.core.ctx.shutdown.clone();
        let mut ack = ack;
        let mut b_via = b_via;
        // A transfer the agent asked for, while the linkage line rings.
        let mut pending: Option<PendingTransfer> = None;
        // A linkage line on a three-way call: its leg, Via and target.
        let mut third: Option<(BLeg, Header, String)> = None;
        let (outcome, by) = loop {
            tokio::select! {
                r = ring_pending(&mut pending) => {
                    let Some(p) = pending.take() else { continue };
                    match r {
                        Some(resp) if resp.status_code.code() < 200 => pending = Some(p),
                        Some(resp) if resp.status_code.code() < 300 => {
                            match self.complete_transfer(p, resp, &relay, codec, &b, &b_via).await {
                                Some(Joined::Replaced(leg, leg_tx, leg_via, leg_ack)) => {
                                    b = leg;
                                    b_tx = leg_tx;
                                    b_via = leg_via;
                                    ack = leg_ack;
                                }
                                Some(Joined::Added(leg, leg_via, target)) => third = Some((leg, leg_via, target)),
                                None => {}
                            }
                        }
                        Some(resp) => {
                            let code = resp.status_code.code().to_string();
                            self.core.unregister(&p.leg.call_id);
                            self.transfer_failed(&p.agent, &p.target, &code);
                        }
                        None => {
                            let cancel = cancel_for(&p.leg.invite);
                            let mut ctx = self.core.ep.request(cancel, p.leg.peer);
                            tokio::spawn(async move { while ctx.recv().await.is_some() {} });
                            self.core.unregister(&p.leg.call_id);
                            self.transfer_failed(&p.agent, &p.target, "no_answer");
                        }
                    }
                }
                input = self.inputs.recv() => match input {
                    None => break (CallOutcome::Shutdown, CallParty::Gateway),
                    Some(CallInput::Ack(_)) => {}
                    Some(CallInput::Transfer { agent, target, conference }) => {
                        if pending.is_some() || (conference && third.is_some()) {
                            self.transfer_failed(&agent, &target, "transfer_in_progress");
                        } else {
                            pending = self.start_transfer(agent, target, conference, &relay, codec, agent_dtmf).await;
                        }
                    }
                    Some(CallInput::Request(req, tx)) => {
                        let from_citizen = msg::call_id(&*req) == self.a.call_id;
                        let from_third = third.as_ref().is_some_and(|(t, _, _)| msg::call_id(&*req) == t.call_id);
                        match req.method {
                            Method::Bye if from_third => {
                                // The line left the three-way call: back to two parties.
                                tx.respond(msg::response(&req, 200, None)).await;
                                relay.remove_third().await;
                                if let Some((t, _, target)) = third.take() {
                                    self.core.unregister(&t.call_id);
                                    self.publish(FeedEvent::Transfer { call_id: self.id, target, state: "left", reason: None });
                                }
                            }
                            Method::Bye => {
                                tx.respond(msg::response(&req, 200, None)).await;
                                if from_citizen {
                                    self.bye(&b, b_via.clone()).await;
                                    break (CallOutcome::Talked, CallParty::Citizen);
                                }
                                self.bye_citizen().await;
                                break (CallOutcome::Talked, CallParty::Agent);
                            }
                            Method::Invite | Method::Update => {
                                // A session refresh or hold: keep the gateway's side as it
                                // is, follow a new address of the sender.
                                if let Ok(info) = sdp::parse(req.body()) {
                                    let side = if from_citizen { Side::Citizen } else { Side::Agent };
                                    relay.set_remote(side, info.rtp).await;
                                }
                                let mut r = msg::response(&req, 200, None);
                                r.headers.push(self.contact_header(if from_citizen { self.a.peer } else { b.peer }));
                                let own = if from_citizen {
                                    body.clone()
                                } else {
                                    let port = relay.port(Side::Agent).unwrap_or_default();
                                    sdp::build(self.media_addr(b.peer.addr().ip(), port), &[codec], agent_dtmf, self.id.as_u64_pair().0, 2)
                                };
                                msg::set_sdp(&mut r.headers, &mut r.body, own);
                                tx.respond(r).await;
                            }
                            Method::Info | Method::Options => {
                                tx.respond(msg::response(&req, 200, None)).await;
                            }
                            Method::Cancel => {
                                // Too late to cancel an answered call (§9.2).
                                tx.respond(msg::response(&req, 200, None)).await;
                            }
                            _ => {
                                let mut r = msg::response(&req, 405, None);
                                r.headers.push(Header::Other("Allow".into(), crate::ALLOW.into()));
                                tx.respond(r).await;
                            }
                        }
                    }
                },
                r = b_tx.recv() => {
                    // A retransmitted 2xx from the agent side: it did not get the ACK.
                    if r.is_some_and(|r| r.status_code.code() / 100 == 2) {
                        self.core.ep.send(b.peer, msg::encode(ack.clone())).await;
                    }
                }
                ev = relay.events.recv() => match ev {
                    Some(MediaEvent::Timeout) => {
                        tracing::info!(call = %self.id, "No media either way; ending the call");
                        self.bye_citizen().await;
                        self.bye(&b, b_via.clone()).await;
                        break (CallOutcome::MediaTimeout, CallParty::Gateway);
                    }
                    Some(MediaEvent::Dtmf(key)) => self.publish(FeedEvent::Dtmf { call_id: self.id, key }),
                    None => {}
                },
                () = shutdown.cancelled() => {
                    self.bye_citizen().await;
                    self.bye(&b, b_via.clone()).await;
                    break (CallOutcome::Shutdown, CallParty::Gateway);
                }
            }
        };
        if let Some((t, t_via, _)) = third.take() {
            self.bye(&t, t_via).await;
            self.core.unregister(&t.call_id);
        }
        if let Some(p) = pending {
            let cancel = cancel_for(&p.leg.invite);
            let mut ctx = self.core.ep.request(cancel, p.leg.peer);
            tokio::spawn(async move { while ctx.recv().await.is_some() {} });
            self.core.unregister(&p.leg.call_id);
        }
        self.core.unregister(&b.call_id);
        let talk_ms = answered_at.elapsed().as_millis() as u64;
        let report = relay.stop().await;
        self.ended_with(outcome, by, None, &report, Some(talk_ms))
            .await;
    }

    /// Tells `agent`'s screen a transfer did not happen, and why.
    fn transfer_failed(&self, agent: &str, target: &str, reason: &str) {
        tracing::info!(call = %self.id, target, reason, "Transfer to the linkage not done");
        metrics::counter!("gateway_sip_transfers_total", "result" => "failed").increment(1);
        if let Some(feed) = &self.core.feed {
            feed.publish(
                agent,
                &FeedEvent::Transfer {
                    call_id: self.id,
                    target: target.to_owned(),
                    state: "failed",
                    reason: Some(reason.to_owned()),
                },
            );
        }
    }

    /// Starts calling the linkage line `target` for the call's agent: the caller stays
    /// with the agent until the line answers.
    async fn start_transfer(
        &mut self,
        agent: String,
        target: String,
        conference: bool,
        relay: &Relay,
        codec: u8,
        dtmf: Option<u8>,
    ) -> Option<PendingTransfer> {
        if self.agent.as_deref() != Some(agent.as_str()) {
            self.transfer_failed(&agent, &target, "not_your_call");
            return None;
        }
        let Some(uri) = self.core.ctx.linkage_lines.get(&target).cloned() else {
            self.transfer_failed(&agent, &target, "unknown_target");
            return None;
        };
        let Some(addr) = crate::uac::resolve(&uri).await else {
            self.transfer_failed(&agent, &target, "unresolvable");
            return None;
        };
        let input = lock(&self.core.by_id).get(&self.id).cloned()?;
        // A transfer: the linkage takes the agent's place on the relay's agent side, so the
        // caller's media path and the recording go on unchanged. A three-way call: the
        // line gets sockets of its own and the relay mixes.
        let sockets = if conference {
            match self.core.ports.allocate_for(addr.ip()) {
                Ok(s) => Some(s),
                Err(_) => {
                    self.transfer_failed(&agent, &target, "no_media_ports");
                    return None;
                }
            }
        } else {
            None
        };
        let port = match &sockets {
            Some(s) => s.port(),
            None => relay.port(Side::Agent).unwrap_or_default(),
        };
        // A conference line has sockets of its own, of its family; a transfer reuses the
        // agent side's, so the offer names the agent side's family.
        let family = if sockets.is_some() {
            addr.ip()
        } else {
            self.agent_ip()
        };
        let offer = sdp::build(
            self.media_addr(family, port),
            &[codec],
            dtmf,
            self.id.as_u64_pair().0,
            3,
        );
        let peer = Peer::Udp(addr);
        let leg = self.leg_invite(&uri, peer, offer);
        self.core.register(&leg.call_id, input);
        let tx = self.core.ep.request(leg.invite.clone(), peer);
        tracing::info!(call = %self.id, target, "Agent transfers the caller to the linkage");
        self.publish(FeedEvent::Transfer {
            call_id: self.id,
            target: target.clone(),
            state: "calling",
            reason: None,
        });
        Some(PendingTransfer {
            agent,
            target,
            leg,
            tx,
            deadline: Instant::now() + Duration::from_secs(self.core.cfg.ring_timeout_secs),
            sockets,
        })
    }

    /// The linkage line answered: ACK it, point the relay's agent side at it, hang up
    /// the agent. Returns the new leg (its transaction, Via and ACK), or `None` when
    /// its answer is unusable (the caller stays with the agent).
    async fn complete_transfer(
        &mut self,
        p: PendingTransfer,
        ok: Response,
        relay: &Relay,
        codec: u8,
        old: &BLeg,
        old_via: &Header,
    ) -> Option<Joined> {
        let mut leg = p.leg;
        leg.to_tag = msg::to_tag(&ok);
        leg.remote_target = contact_uri(&ok);
        leg.route_set = route_set(&ok);
        let via = self.via_header(leg.peer);
        let ack = in_dialog_request(&leg, Method::Ack, leg.cseq, via.clone());
        self.core.ep.send(leg.peer, msg::encode(ack.clone())).await;
        let answer = sdp::parse(ok.body()).ok();
        if !answer.as_ref().is_some_and(|a| a.codecs.contains(&codec)) {
            self.bye(&leg, via).await;
            self.core.unregister(&leg.call_id);
            self.transfer_failed(&p.agent, &p.target, "no_common_codec");
            return None;
        }
        let rtp = answer.as_ref().and_then(|a| a.rtp);
        if let Some(sockets) = p.sockets {
            relay.add_third(sockets, rtp).await;
            tracing::warn!(call = %self.id, target = %p.target, "Linkage line joined the call (three-way)");
            metrics::counter!("gateway_sip_transfers_total", "result" => "joined").increment(1);
            self.publish(FeedEvent::Transfer {
                call_id: self.id,
                target: p.target.clone(),
                state: "joined",
                reason: None,
            });
            self.conferenced_with = Some(p.target.clone());
            return Some(Joined::Added(leg, via, p.target));
        }
        relay.set_remote(Side::Agent, rtp).await;
        self.bye(old, old_via.clone()).await;
        self.core.unregister(&old.call_id);
        tracing::warn!(call = %self.id, target = %p.target, "Caller handed to the linkage line");
        metrics::counter!("gateway_sip_transfers_total", "result" => "connected").increment(1);
        self.publish(FeedEvent::Transfer {
            call_id: self.id,
            target: p.target.clone(),
            state: "connected",
            reason: None,
        });
        self.transferred_to = Some(p.target);
        Some(Joined::Replaced(leg, p.tx, via, ack))
    }

    /// Sends a 2xx to the citizen and retransmits it until the ACK (§13.3.1.4). Returns
    /// the ACK, or why there is none: the citizen hung up first, or 64 T1 passed without
    /// it (the caller then ends the session with a BYE, as §13.3.1.4 asks).
    async fn answer_citizen(&mut self, ok: Response) -> Result<Request, NoAck> {
        let bytes = self.a.tx.respond(ok).await;
        let timers = self.core.ep.timers();
        let give_up = Instant::now() + timers.timeout();
        let mut interval = timers.t1;
        let mut next = Instant::now() + interval;
        loop {
            tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(CallInput::Ack(ack)) => return Ok(*ack),
                    Some(CallInput::Transfer { agent, target, .. }) => {
                        self.transfer_failed(&agent, &target, "not_connected");
                    }
                    Some(CallInput::Request(req, tx)) => {
                        if req.method == Method::Bye && msg::call_id(&*req) == self.a.call_id {
                            tx.respond(msg::response(&req, 200, None)).await;
                            return Err(NoAck::HungUp);
                        }
                        tx.respond(msg::response(&req, 491, None)).await;
                    }
                    None => return Err(NoAck::HungUp),
                },
                () = sleep_until(next), if !self.a.peer.reliable() => {
                    self.core.ep.send(self.a.tx.peer(), bytes.clone()).await;
                    interval = (interval * 2).min(timers.t2);
                    next = Instant::now() + interval;
                }
                () = sleep_until(give_up) => {
                    metrics::counter!("gateway_sip_calls_no_ack_total").increment(1);
                    tracing::info!(call = %self.id, "No ACK of the 2xx in 64*T1: ending the call with BYE (RFC 3261 §13.3.1.4)");
                    return Err(NoAck::TimedOut);
                }
            }
        }
    }

    /// No agent took the call: record a message (or pass the failure on).
    async fn fallback(&mut self, relay: Relay, agent_code: u16) {
        metrics::counter!("gateway_sip_calls_fallback_total").increment(1);
        if self.core.cfg.fallback == Fallback::Reject {
            let code = match agent_code {
                486 | 600 => 486,
                408 | 480 => 480,
                _ => 503,
            };
            let r = self.a_response(code);
            self.a.tx.respond(r).await;
            let report = relay.stop().await;
            self.ended_with(
                CallOutcome::Unanswered,
                CallParty::Agent,
                Some(agent_code),
                &report,
                None,
            )
            .await;
            return;
        }
        let codec = self
            .a
            .offer
            .as_ref()
            .and_then(|o| o.codecs.first().copied())
            .unwrap_or(PCMU);
        let dtmf = self.a.offer.as_ref().map_or(Some(DTMF_PT), |o| o.dtmf);
        relay.set_codec(codec, dtmf).await;
        let port = relay.port(Side::Citizen).unwrap_or_default();
        let codecs: Vec<u8> = match &self.a.offer {
            Some(_) => vec![codec],
            None => vec![PCMU, PCMA],
        };
        let mut r = self.a_response(200);
        let body = sdp::build(
            self.media_addr(self.citizen_ip(), port),
            &codecs,
            dtmf,
            self.id.as_u64_pair().1,
            1,
        );
        msg::set_sdp(&mut r.headers, &mut r.body, body);
        let ack = match self.answer_citizen(r).await {
            Ok(ack) => ack,
            Err(why) => {
                let report = relay.stop().await;
                self.ended_with(
                    CallOutcome::Unanswered,
                    CallParty::Citizen,
                    Some(agent_code),
                    &report,
                    None,
                )
                .await;
                if why == NoAck::TimedOut {
                    self.bye_citizen().await;
                }
                return;
            }
        };
        if self.a.offer.is_none()
            && let Ok(info) = sdp::parse(ack.body())
        {
            if let Some(c) = info.codecs.first().copied() {
                relay.set_codec(c, info.dtmf.or(dtmf)).await;
            }
            relay.set_remote(Side::Citizen, info.rtp).await;
        }
        let prompts = self.core.prompts.clone();
        // The citizen may hang up during the prompt.
        let mut hung_up = false;
        for p in [prompts.leave_message, prompts.beep] {
            tokio::select! {
                () = relay.play(p) => {}
                by = self.wait_citizen_bye() => { hung_up = by; break; }
            }
            if hung_up {
                break;
            }
        }
        let message_start = Instant::now();
        let (by, outcome) = if hung_up {
            (CallParty::Citizen, CallOutcome::Unanswered)
        } else {
            let limit = Instant::now() + Duration::from_secs(self.core.cfg.max_message_secs);
            let shutdown = self.core.ctx.shutdown.clone();
            tokio::select! {
                _ = self.wait_citizen_bye() => (CallParty::Citizen, CallOutcome::MessageRecorded),
                () = sleep_until(limit) => {
                    self.bye_citizen().await;
                    (CallParty::Gateway, CallOutcome::MessageRecorded)
                }
                () = shutdown.cancelled() => {
                    self.bye_citizen().await;
                    (CallParty::Gateway, CallOutcome::MessageRecorded)
                }
            }
        };
        let message_ms = message_start.elapsed().as_millis() as u64;
        let report = relay.stop().await;
        self.ended_with(outcome, by, Some(agent_code), &report, Some(message_ms))
            .await;
    }

    /// Waits for the citizen's BYE and answers it; `true` once it came.
    async fn wait_citizen_bye(&mut self) -> bool {
        loop {
            match self.inputs.recv().await {
                None => return false,
                Some(CallInput::Ack(_)) => {}
                Some(CallInput::Transfer { agent, target, .. }) => {
                    self.transfer_failed(&agent, &target, "not_connected");
                }
                Some(CallInput::Request(req, tx)) => {
                    if req.method == Method::Bye {
                        tx.respond(msg::response(&req, 200, None)).await;
                        return true;
                    }
                    let code = if matches!(req.method, Method::Info | Method::Options) {
                        200
                    } else {
                        491
                    };
                    tx.respond(msg::response(&req, code, None)).await;
                }
            }
        }
    }

    /// Refuses a blocked caller (Art. 9): the announcement as early media when the
    /// INVITE had an offer, then 603 with a Reason header. Never a silent drop.
    /// Art. 9: a restricted caller hears the announcement as early media ("restricted;
    /// if this is an emergency, press 1 or stay on the line and say so") and is then
    /// declined with 603, unless, while it plays or within [`BYPASS_LISTEN`] after it,
    /// the caller presses 1 (RFC 4733) or says words with an Art. 15 emergency cue (the
    /// transcript's screen made an urgent notice): then the call goes on to an agent with
    /// the restriction noted on its contacts and draft (Art. 15: an emergency is never
    /// turned away). The relay is the call's own, so a bypassed call keeps one media
    /// path and one recording; a declined caller's recording is deleted.
    async fn announce_restriction(&mut self, restricted: &contract::Restricted) -> Option<Relay> {
        tracing::info!(call = %self.id, "Caller is restricted (Art. 9); announcing, listening for an emergency");
        let Some(offer) = self.a.offer.clone() else {
            // A late offer: no early media to announce on.
            self.decline_restricted().await;
            return None;
        };
        let mut relay = match self.start_relay(true) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "No media ports for the announcement");
                self.decline_restricted().await;
                return None;
            }
        };
        let codec = offer.codecs[0];
        relay.set_remote(Side::Citizen, offer.rtp).await;
        relay.set_codec(codec, offer.dtmf).await;
        let mut r = self.a_response(183);
        let port = relay.port(Side::Citizen).unwrap_or_default();
        let body = sdp::build(
            self.media_addr(self.citizen_ip(), port),
            &[codec],
            offer.dtmf,
            self.id.as_u64_pair().1,
            1,
        );
        msg::set_sdp(&mut r.headers, &mut r.body, body);
        self.a.tx.respond(r).await;
        let mut events = std::mem::replace(&mut relay.events, mpsc::channel(1).1);
        let emergency = self.record.emergency.clone();
        let prompt = self.core.prompts.blocked.clone();
        let bypass = {
            let play = relay.play(prompt);
            tokio::pin!(play);
            let mut played = false;
            let listen = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    () = &mut play, if !played => {
                        played = true;
                        listen.as_mut().reset(tokio::time::Instant::now() + BYPASS_LISTEN);
                    }
                    () = &mut listen => break Err(false),
                    ev = events.recv() => match ev {
                        Some(MediaEvent::Dtmf('1')) => break Ok("dtmf"),
                        Some(MediaEvent::Dtmf(_)) => {}
                        Some(MediaEvent::Timeout) | None => break Err(false),
                    },
                    () = emergency.notified() => break Ok("speech"),
                    c = self.wait_cancel() => {
                        if c {
                            break Err(true);
                        }
                    }
                }
            }
        };
        relay.events = events;
        match bypass {
            Err(true) => {
                let report = relay.stop().await;
                self.forget_recording(&report);
                self.rejected("blocked_caller", 487).await;
                None
            }
            Ok(how) => {
                tracing::warn!(call = %self.id, how, "Restricted caller let through for an emergency (Art. 15)");
                metrics::counter!("gateway_restricted_emergencies_total", "channel" => "phone")
                    .increment(1);
                let _ = self
                    .record
                    .restriction
                    .set(contract::RestrictionNote::from(restricted));
                Some(relay)
            }
            Err(false) => {
                let report = relay.stop().await;
                self.forget_recording(&report);
                self.decline_restricted().await;
                None
            }
        }
    }

    /// A declined caller's words are not a conversation the hotline keeps.
    fn forget_recording(&self, report: &RelayReport) {
        if let Some(path) = &report.recording {
            let _ = std::fs::remove_file(path);
        }
        self.record
            .refused
            .store(true, std::sync::atomic::Ordering::Release);
    }

    async fn decline_restricted(&mut self) {
        metrics::counter!("gateway_sip_calls_refused_total", "reason" => "blocked").increment(1);
        let reason = Header::Other(
            "Reason".into(),
            "SIP;cause=603;text=\"Caller restricted from the hotline (Art. 9)\"".into(),
        );
        self.reject(603, "blocked_caller", vec![reason]).await;
    }

    /// Waits for a CANCEL of the INVITE; answers it (200, then 487 on the INVITE).
    async fn wait_cancel(&mut self) -> bool {
        loop {
            match self.inputs.recv().await {
                None => return false,
                Some(CallInput::Ack(_)) => {}
                Some(CallInput::Transfer { agent, target, .. }) => {
                    self.transfer_failed(&agent, &target, "not_connected");
                }
                Some(CallInput::Request(req, tx)) => {
                    if req.method == Method::Cancel {
                        tx.respond(msg::response(&req, 200, Some(&self.a.tag)))
                            .await;
                        let r = self.a_response(487);
                        self.a.tx.respond(r).await;
                        return true;
                    }
                    tx.respond(msg::response(&req, 481, None)).await;
                }
            }
        }
    }

    /// Answers the INVITE with a failure and records the rejection.
    async fn reject(&mut self, code: u16, reason: &str, extra: Vec<Header>) {
        let mut r = self.a_response(code);
        for h in extra {
            r.headers.push(h);
        }
        self.a.tx.respond(r).await;
        self.rejected(reason, code).await;
    }

    async fn rejected(&mut self, reason: &str, code: u16) {
        let mut c = self.call_contact(CallPhase::Rejected);
        c.reason = Some(reason.to_owned());
        c.sip_status = Some(code);
        if let Err(e) = self.submit(c, "rejected").await {
            tracing::warn!(call = %self.id, error = %e, "Cannot record a rejected call");
        }
    }

    async fn bye_citizen(&mut self) {
        self.a.cseq += 1;
        let mut headers = rsip::Headers::default();
        headers.push(self.via_header(self.a.peer));
        headers.push(rsip::headers::MaxForwards::new("70").into());
        // The gateway is the UAS of this dialog: its From is the INVITE's To with its tag.
        if let Ok(to) = self.a.invite.to_header() {
            headers.push(
                rsip::headers::From::new(format!("{};tag={}", to.value(), self.a.tag)).into(),
            );
        }
        if let Ok(from) = self.a.invite.from_header() {
            headers.push(rsip::headers::To::new(from.value()).into());
        }
        headers.push(rsip::headers::CallId::new(self.a.call_id.clone()).into());
        headers.push(rsip::headers::CSeq::new(format!("{} BYE", self.a.cseq)).into());
        for rr in &self.a.record_route {
            if let Header::RecordRoute(r) = rr {
                headers.push(rsip::headers::Route::new(r.value()).into());
            }
        }
        let uri = contact_uri(&self.a.invite)
            .and_then(|u| rsip::Uri::try_from(u.as_str()).ok())
            .unwrap_or_else(|| self.a.invite.uri.clone());
        let bye = Request {
            method: Method::Bye,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        let mut tx = self.core.ep.request(bye, self.a.peer);
        while tx.recv().await.is_some_and(|r| r.status_code.code() < 200) {}
    }

    async fn bye(&self, b: &BLeg, via: Header) {
        let bye = in_dialog_request(b, Method::Bye, b.cseq + 1, fresh_branch(&via));
        let mut tx = self.core.ep.request(bye, b.peer);
        while tx.recv().await.is_some_and(|r| r.status_code.code() < 200) {}
    }

    fn call_contact(&self, phase: CallPhase) -> CallContact {
        CallContact {
            call_id: self.id,
            phase,
            trunk: self.trunk.clone(),
            dialled: self.dialled.clone(),
            agent: None,
            outcome: None,
            ended_by: None,
            duration_ms: None,
            talk_ms: None,
            recording: None,
            dtmf: None,
            sip_status: None,
            reason: None,
            origin: (phase == CallPhase::Offered)
                .then(|| self.record.origin.clone())
                .flatten(),
            transferred_to: None,
            conferenced_with: None,
        }
    }

    async fn ended(
        &mut self,
        outcome: CallOutcome,
        by: CallParty,
        talk_ms: Option<u64>,
        status: Option<u16>,
    ) {
        self.ended_with(outcome, by, status, &RelayReport::default(), talk_ms)
            .await;
    }

    async fn ended_with(
        &mut self,
        outcome: CallOutcome,
        by: CallParty,
        status: Option<u16>,
        report: &RelayReport,
        talk_ms: Option<u64>,
    ) {
        let mut c = self.call_contact(CallPhase::Ended);
        c.agent = self.agent.clone();
        c.outcome = Some(outcome);
        c.ended_by = Some(by);
        c.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        c.talk_ms = talk_ms;
        c.recording = report.recording.as_ref().map(|_| self.recording_name());
        c.dtmf = (!report.dtmf.is_empty()).then(|| report.dtmf.clone());
        c.transferred_to = self.transferred_to.clone();
        c.conferenced_with = self.conferenced_with.clone();
        c.sip_status = status;
        if let Some(e) = &report.error {
            tracing::warn!(call = %self.id, error = %e, "Recording incomplete");
        }
        tracing::info!(call = %self.id, outcome = ?outcome, ended_by = ?by, packets_citizen = report.packets[0], packets_agent = report.packets[1], "Call ended");
        metrics::counter!("gateway_sip_calls_ended_total").increment(1);
        self.publish(FeedEvent::CallState {
            call_id: self.id,
            state: CallStateName::Ended,
            outcome: Some(outcome),
            ended_by: Some(by),
        });
        // The end of a call is a fact the hotline must keep: retry a full outbox for a
        // while rather than lose it.
        let mut wait = Duration::from_millis(200);
        for _ in 0..8 {
            match self.submit(c.clone(), "ended").await {
                Ok(()) => return,
                Err(e) if e.is_retryable() && !matches!(e, IntakeError::ShuttingDown) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::error!(call = %self.id, error = %e, "Lost the end of a call");
                    return;
                }
            }
        }
        tracing::error!(call = %self.id, "Lost the end of a call: the outbox stayed full");
    }

    /// Records one call contact durably, once per Call-ID and phase.
    async fn submit(&mut self, call: CallContact, phase: &str) -> Result<(), IntakeError> {
        let contact = self.record.contact(ContactContent::Call(call));
        let submission = Submission {
            events: vec![Event::from(contact)],
            put_state: std::mem::take(&mut self.pending_state),
            once: Some((
                format!("sip/{}/{phase}", self.a.call_id),
                self.id.to_string().into_bytes(),
            )),
            ..Submission::default()
        };
        self.core.ctx.intake.submit(submission).await.map(|_| ())
    }
}

/// The CANCEL of an INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number and
/// top Via.
pub(crate) fn cancel_for(invite: &Request) -> Request {
    let mut headers = rsip::Headers::default();
    for h in invite.headers.iter() {
        match h {
            Header::Via(_)
            | Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::MaxForwards(_)
            | Header::Route(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    let seq = msg::cseq(invite).map(|c| c.0).unwrap_or(1);
    headers.push(rsip::headers::CSeq::new(format!("{seq} CANCEL")).into());
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A request on the agent leg's dialog (ACK of the 2xx, BYE).
pub(crate) fn in_dialog_request(b: &BLeg, method: Method, cseq: u32, via: Header) -> Request {
    let mut headers = rsip::Headers::default();
    headers.push(via);
    headers.push(rsip::headers::MaxForwards::new("70").into());
    for h in b.invite.headers.iter() {
        if matches!(h, Header::From(_) | Header::CallId(_)) {
            headers.push(h.clone());
        }
    }
    if let Ok(to) = b.invite.to_header() {
        let value = match &b.to_tag {
            Some(tag) => format!("{};tag={tag}", to.value()),
            None => to.value().to_owned(),
        };
        headers.push(rsip::headers::To::new(value).into());
    }
    headers.push(rsip::headers::CSeq::new(format!("{cseq} {method}")).into());
    for route in &b.route_set {
        headers.push(rsip::headers::Route::new(route.clone()).into());
    }
    let uri = b
        .remote_target
        .as_deref()
        .and_then(|u| rsip::Uri::try_from(u).ok())
        .unwrap_or_else(|| b.invite.uri.clone());
    Request {
        method,
        uri,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The route set a UAC learns from a 2xx: its Record-Route values, last first (§12.1.2).
pub(crate) fn route_set(response: &Response) -> Vec<String> {
    let mut routes: Vec<String> = response
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(r) => Some(r.value().to_owned()),
            _ => None,
        })
        .collect();
    routes.reverse();
    routes
}

/// The same Via with a new branch (each new transaction needs one).
pub(crate) fn fresh_branch(via: &Header) -> Header {
    match via {
        Header::Via(v) => {
            let value = v.value();
            let base = value.split(";branch=").next().unwrap_or(value);
            rsip::headers::Via::new(format!(
                "{base};branch=z9hG4bK{};rport",
                msg::random_token()
            ))
            .into()
        }
        other => other.clone(),
    }
}

/// The URI in a message's Contact header.
pub(crate) fn contact_uri<M: HasHeaders>(m: &M) -> Option<String> {
    m.headers().iter().find_map(|h| match h {
        Header::Contact(c) => {
            let v = c.value();
            let inner = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => &v[a + 1..b],
                _ => v.split(';').next().unwrap_or(v),
            };
            Some(inner.trim().to_owned())
        }
        _ => None,
    })
}
