//! The calls the gateway places itself (UAC): the Art. 15 linkage call ([`crate::linkage`])
//! and the Art. 17 revisit call ([`crate::revisit`]) are one shape, here once.
//!
//! An INVITE from `12345` with a G.711 offer (and telephone-event), ringing for the
//! caller's ring time (then CANCEL; a 2xx that crosses the CANCEL is ACKed and hung up),
//! the ACK of the 2xx, then a [`Question`]: a prompt played a few times while RFC 4733
//! digits are listened for, a short silence after the last play, and the first digit the
//! question accepts ends it (the closing prompt plays), then BYE. The far end hanging up
//! ends it too, and so does the gateway's shutdown (CANCEL or BYE at once). A placed call
//! counts among the channel's active calls, so on shutdown the endpoint stays open for
//! its BYE. Nothing is recorded: the callers turn the [`Placed`] into their own events.
//!
//! Nothing here logs the URI: a revisit call's names the citizen's number (Art. 21).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Core;
use crate::call::{BLeg, CallInput, cancel_for, contact_uri, in_dialog_request, route_set};
use crate::endpoint::{ClientTx, Peer};
use crate::g711::{PCMA, PCMU};
use crate::media::{MediaEvent, RATE, Relay, RelaySetup, Side};
use crate::{msg, sdp};

/// The telephone-event payload type offered.
const DTMF_PT: u8 = 101;

/// Where and how to call.
pub(crate) struct Dial {
    /// Names the kind of call in logs (`linkage`, `revisit`).
    pub(crate) kind: &'static str,
    /// The Request-URI and To.
    pub(crate) uri: String,
    /// Headers naming what the call is about (`X-Hotline-Ticket`, ...).
    pub(crate) headers: Vec<Header>,
    /// How long the far end may ring.
    pub(crate) ring: Duration,
    /// The SDP session id.
    pub(crate) session: u64,
}

/// What the call asks once answered.
pub(crate) struct Question<T> {
    /// Played up to `plays` times.
    pub(crate) prompt: Arc<[i16]>,
    /// Times the prompt is played.
    pub(crate) plays: usize,
    /// Silence listened to after the last play (a digit pressed just after the prompt
    /// still counts).
    pub(crate) grace: Duration,
    /// The answer a digit gives, if it is one; other digits are ignored.
    pub(crate) accept: fn(char) -> Option<T>,
    /// Played once a digit is accepted.
    pub(crate) closing: Arc<[i16]>,
}

/// How a placed call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed<T> {
    /// The URI's host does not resolve: nothing was sent.
    Unresolved,
    /// 486 or 600.
    Busy,
    /// 408, 480, 487, or nothing final within the ring time.
    NoAnswer,
    /// Another failure: a final response above 299, no media port, an answer without
    /// G.711, the gateway shutting down while it rang.
    Failed,
    /// Answered: the accepted digit's answer, or `None` (none pressed, the far end hung
    /// up, the media timed out, the gateway shut down).
    Answered(Option<T>),
}

/// The host and port of a `sip:user@host:port` URI, resolved.
pub(crate) async fn resolve(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let host_port = rest.split_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split(';').next()?;
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:5060")
    };
    tokio::net::lookup_host(with_port).await.ok()?.next()
}

/// A Via of the gateway's for a new transaction towards `peer`.
pub(crate) fn via_header(core: &Core, peer: Peer) -> Header {
    rsip::headers::Via::new(format!(
        "SIP/2.0/{} {};branch=z9hG4bK{};rport",
        peer.transport(),
        core.sent_by(peer),
        msg::random_token()
    ))
    .into()
}

/// The gateway's Contact towards `peer`.
pub(crate) fn contact(core: &Core, peer: Peer) -> Header {
    rsip::headers::Contact::new(format!(
        "<sip:12345@{};transport={}>",
        core.sent_by(peer),
        peer.transport().to_ascii_lowercase()
    ))
    .into()
}

/// An INVITE of a new leg to `uri_text` from `from` (a name-addr; the tag is added),
/// with `headers` naming what it is about and an SDP offer.
pub(crate) fn invite(
    core: &Core,
    uri_text: &str,
    peer: Peer,
    from: &str,
    headers: Vec<Header>,
    sdp_body: Vec<u8>,
) -> BLeg {
    let call_id = format!("{}@{}", msg::random_token(), core.host_for(peer));
    let uri = rsip::Uri::try_from(uri_text).unwrap_or_default();
    let mut all = rsip::Headers::default();
    all.push(via_header(core, peer));
    all.push(rsip::headers::MaxForwards::new("70").into());
    all.push(rsip::headers::From::new(format!("{from};tag={}", msg::random_token())).into());
    all.push(rsip::headers::To::new(format!("<{uri_text}>")).into());
    all.push(rsip::headers::CallId::new(call_id.clone()).into());
    all.push(rsip::headers::CSeq::new("1 INVITE").into());
    all.push(contact(core, peer));
    for h in headers {
        all.push(h);
    }
    all.push(Header::Other("Allow".into(), crate::ALLOW.into()));
    all.push(rsip::headers::ContentType::new("application/sdp").into());
    BLeg {
        invite: Request {
            method: Method::Invite,
            uri,
            version: rsip::Version::V2,
            headers: all,
            body: sdp_body,
        },
        call_id,
        to_tag: None,
        remote_target: None,
        route_set: Vec::new(),
        cseq: 1,
        peer,
    }
}

/// Holds a place among the channel's active calls while the call runs.
struct Active<'a>(&'a Core);

impl<'a> Active<'a> {
    fn enter(core: &'a Core) -> Self {
        core.active.fetch_add(1, Ordering::AcqRel);
        Active(core)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Places the call, asks the question, hangs up.
pub(crate) async fn place<T>(core: &Arc<Core>, dial: Dial, question: &Question<T>) -> Placed<T> {
    let Some(target) = resolve(&dial.uri).await else {
        return Placed::Unresolved;
    };
    let sockets = match core.ports.allocate_for(target.ip()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, call = dial.kind, "No media port for an outgoing call");
            return Placed::Failed;
        }
    };
    let _active = Active::enter(core);
    let port = sockets.port();
    let mut relay = Relay::start(RelaySetup {
        citizen: sockets,
        agent: None,
        recording: None,
        timeout: Duration::from_secs(core.cfg.media.timeout_secs),
        tap: None,
    });
    let media = SocketAddr::new(core.cfg.media_advertised_for(target.ip()), port);
    let offer = sdp::build(media, &[PCMU, PCMA], Some(DTMF_PT), dial.session, 1);
    let peer = Peer::Udp(target);
    let from = format!("\"12345\" <sip:12345@{}>", core.host_for(peer));
    let mut leg = invite(core, &dial.uri, peer, &from, dial.headers, offer);
    let (input_tx, mut inputs) = mpsc::channel::<CallInput>(16);
    core.register(&leg.call_id, input_tx);
    let mut tx = core.ep.request(leg.invite.clone(), peer);
    let via = via_header(core, peer);
    let placed = match ring(core, &mut leg, &mut tx, dial.ring).await {
        Rang::Busy => Placed::Busy,
        Rang::NoAnswer => Placed::NoAnswer,
        Rang::Failed => Placed::Failed,
        Rang::Answered(ok) => {
            leg.to_tag = msg::to_tag(&ok);
            leg.remote_target = contact_uri(&ok);
            leg.route_set = route_set(&ok);
            let ack = in_dialog_request(&leg, Method::Ack, leg.cseq, via.clone());
            core.ep.send(peer, msg::encode(ack)).await;
            let answer = sdp::parse(ok.body()).ok();
            match answer.as_ref().and_then(|a| a.codecs.first().copied()) {
                None => {
                    tracing::warn!(call = dial.kind, call_id = %leg.call_id, "Outgoing call answered without a G.711 answer");
                    bye(core, &mut leg, via).await;
                    Placed::Failed
                }
                Some(codec) => {
                    let rtp = answer.as_ref().and_then(|a| a.rtp);
                    relay.set_remote(Side::Citizen, rtp).await;
                    relay
                        .set_codec(codec, answer.as_ref().and_then(|a| a.dtmf))
                        .await;
                    let (heard, hung_up) = ask(core, &mut relay, &mut inputs, &leg, question).await;
                    if !hung_up {
                        bye(core, &mut leg, via).await;
                    }
                    Placed::Answered(heard)
                }
            }
        }
    };
    let _ = relay.stop().await;
    core.unregister(&leg.call_id);
    placed
}

enum Rang {
    Answered(Response),
    Busy,
    NoAnswer,
    Failed,
}

/// Waits for the far end to answer, `within` the ring time; CANCELs after it, or at the
/// gateway's shutdown.
async fn ring(core: &Arc<Core>, leg: &mut BLeg, tx: &mut ClientTx, within: Duration) -> Rang {
    let deadline = Instant::now() + within;
    let shutdown = core.ctx.shutdown.clone();
    let given_up = loop {
        tokio::select! {
            r = tx.recv() => {
                let Some(resp) = r else { return Rang::NoAnswer };
                let code = resp.status_code.code();
                tracing::debug!(code, call_id = %leg.call_id, "Outgoing call progress");
                match code {
                    100..=199 => {
                        if leg.to_tag.is_none() {
                            leg.to_tag = msg::to_tag(&resp);
                        }
                    }
                    200..=299 => return Rang::Answered(resp),
                    486 | 600 => return Rang::Busy,
                    408 | 480 | 487 => return Rang::NoAnswer,
                    _ => return Rang::Failed,
                }
            }
            () = tokio::time::sleep_until(deadline) => break Rang::NoAnswer,
            () = shutdown.cancelled() => break Rang::Failed,
        }
    };
    let cancel = cancel_for(&leg.invite);
    let mut ctx = core.ep.request(cancel, leg.peer);
    tokio::spawn(async move { while ctx.recv().await.is_some() {} });
    // The INVITE's 487 (or a late 2xx, hung up at once) ends the transaction.
    let until = Instant::now() + core.ep.timers().timeout();
    loop {
        tokio::select! {
            r = tx.recv() => match r {
                Some(resp) if (200..300).contains(&resp.status_code.code()) => {
                    let via = via_header(core, leg.peer);
                    leg.to_tag = msg::to_tag(&resp);
                    leg.remote_target = contact_uri(&resp);
                    leg.route_set = route_set(&resp);
                    let ack = in_dialog_request(leg, Method::Ack, leg.cseq, via.clone());
                    core.ep.send(leg.peer, msg::encode(ack)).await;
                    bye(core, leg, via).await;
                    break;
                }
                Some(resp) if resp.status_code.code() >= 300 => break,
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(until) => break,
        }
    }
    given_up
}

/// Plays the question until a digit it accepts, the end of its plays and grace, the far
/// end's BYE, a media timeout or the shutdown. Returns the answer and whether the far
/// end hung up.
async fn ask<T>(
    core: &Arc<Core>,
    relay: &mut Relay,
    inputs: &mut mpsc::Receiver<CallInput>,
    leg: &BLeg,
    q: &Question<T>,
) -> (Option<T>, bool) {
    let mut events = std::mem::replace(&mut relay.events, mpsc::channel(1).1);
    let silence: Arc<[i16]> = Arc::from(vec![
        0i16;
        (q.grace.as_millis() as usize) * RATE as usize / 1000
    ]);
    let mut parts = vec![q.prompt.clone(); q.plays];
    if !silence.is_empty() {
        parts.push(silence);
    }
    let shutdown = core.ctx.shutdown.clone();
    let mut heard = None;
    let mut hung_up = false;
    'parts: for part in parts {
        let play = relay.play(part);
        tokio::pin!(play);
        loop {
            tokio::select! {
                () = &mut play => break,
                ev = events.recv() => match ev {
                    Some(MediaEvent::Dtmf(d)) => {
                        if let Some(answer) = (q.accept)(d) {
                            heard = Some(answer);
                            break 'parts;
                        }
                    }
                    Some(MediaEvent::Timeout) | None => break 'parts,
                },
                input = inputs.recv() => match input {
                    Some(CallInput::Request(req, tx)) if req.method == Method::Bye => {
                        tx.respond(msg::response(&req, 200, leg.to_tag.as_deref())).await;
                        hung_up = true;
                        break 'parts;
                    }
                    Some(CallInput::Request(req, tx)) => {
                        tx.respond(msg::response(&req, 200, leg.to_tag.as_deref())).await;
                    }
                    Some(CallInput::Ack(_)) | Some(CallInput::Transfer { .. }) => {}
                    None => break 'parts,
                },
                () = shutdown.cancelled() => break 'parts,
            }
        }
    }
    if heard.is_some() && !shutdown.is_cancelled() {
        relay.play(q.closing.clone()).await;
    }
    relay.events = events;
    (heard, hung_up)
}

/// Hangs up the leg (a BYE in its dialog, the CSeq one up) and waits for the answer.
pub(crate) async fn bye(core: &Arc<Core>, leg: &mut BLeg, via: Header) {
    leg.cseq += 1;
    let bye = in_dialog_request(leg, Method::Bye, leg.cseq, crate::call::fresh_branch(&via));
    let mut tx = core.ep.request(bye, leg.peer);
    while tx.recv().await.is_some_and(|r| r.status_code.code() < 200) {}
}
