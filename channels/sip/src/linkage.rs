//! Art. 15 escalation calls: the gateway calls a linkage line (110, 119, 120, a unit's
//! 24-hour line), plays the urgent notice with the ticket's reference, and listens for
//! the operator's 1 (RFC 4733), which acknowledges the notice.
//!
//! A plain UAC call on the channel's endpoint: INVITE with a G.711 offer (and
//! telephone-event), ringing for the channel's `ring_timeout_secs` (then CANCEL), ACK of
//! the 2xx, the notice played twice (a linkage operator who picks up mid-sentence hears
//! it whole once), 1 at any time acknowledges (the acknowledgement prompt plays), then
//! BYE. The far end hanging up ends it too. Nothing is recorded: the notice and its
//! acknowledgement are events already.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{LinkageCall, LinkageCallOutcome, LinkageDialer};
use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Core;
use crate::call::{BLeg, CallInput, cancel_for, contact_uri, in_dialog_request, route_set};
use crate::endpoint::{ClientTx, Peer};
use crate::g711::{PCMA, PCMU};
use crate::media::{MediaEvent, Relay, RelaySetup, Side};
use crate::{msg, sdp};

/// The telephone-event payload type offered.
const DTMF_PT: u8 = 101;
/// Times the notice is played.
const PLAYS: usize = 2;

/// Places linkage calls through the phone channel.
pub struct Dialer {
    core: Arc<Core>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

impl Dialer {
    /// A dialer on the channel's core.
    pub fn new(core: Arc<Core>) -> Self {
        Dialer { core }
    }
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

enum Rang {
    Answered(Response),
    Ended(LinkageCallOutcome),
}

#[async_trait]
impl LinkageDialer for Dialer {
    async fn call(&self, call: LinkageCall) -> LinkageCallOutcome {
        let core = &self.core;
        let Some(target) = resolve(&call.uri).await else {
            tracing::warn!(notice = %call.notice_id, uri = %call.uri, "Linkage line URI does not resolve");
            return LinkageCallOutcome::Failed;
        };
        let sockets = match core.ports.allocate() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "No media port for the linkage call");
                return LinkageCallOutcome::Failed;
            }
        };
        let port = sockets.port();
        let mut relay = Relay::start(RelaySetup {
            citizen: sockets,
            agent: None,
            recording: None,
            timeout: Duration::from_secs(core.cfg.media.timeout_secs),
            tap: None,
        });
        let media = SocketAddr::new(core.cfg.media_advertised(), port);
        let offer = sdp::build(
            media,
            &[PCMU, PCMA],
            Some(DTMF_PT),
            call.notice_id.as_u64_pair().0,
            1,
        );
        let peer = Peer::Udp(target);
        let mut leg = invite(core, &call, peer, offer);
        tracing::info!(notice = %call.notice_id, step = call.step, %target, "Placing the linkage call");
        let (input_tx, mut inputs) = mpsc::channel::<CallInput>(16);
        core.register(&leg.call_id, input_tx);
        let mut tx = core.ep.request(leg.invite.clone(), peer);
        let via = via_header(core, peer);
        let outcome = match ring(core, &mut leg, &mut tx).await {
            Rang::Ended(outcome) => outcome,
            Rang::Answered(ok) => {
                leg.to_tag = msg::to_tag(&ok);
                leg.remote_target = contact_uri(&ok);
                leg.route_set = route_set(&ok);
                let ack = in_dialog_request(&leg, Method::Ack, leg.cseq, via.clone());
                core.ep.send(peer, msg::encode(ack)).await;
                let answer = sdp::parse(ok.body()).ok();
                match answer.as_ref().and_then(|a| a.codecs.first().copied()) {
                    None => {
                        tracing::warn!(notice = %call.notice_id, "Linkage line answered without a G.711 answer");
                        bye(core, &mut leg, via.clone()).await;
                        LinkageCallOutcome::Failed
                    }
                    Some(codec) => {
                        let rtp = answer.as_ref().and_then(|a| a.rtp);
                        relay.set_remote(Side::Citizen, rtp).await;
                        relay
                            .set_codec(codec, answer.as_ref().and_then(|a| a.dtmf))
                            .await;
                        let (outcome, hung_up) =
                            play_notice(core, &mut relay, &mut inputs, &leg, &call).await;
                        if !hung_up {
                            bye(core, &mut leg, via.clone()).await;
                        }
                        outcome
                    }
                }
            }
        };
        let _ = relay.stop().await;
        core.unregister(&leg.call_id);
        tracing::info!(notice = %call.notice_id, step = call.step, outcome = outcome.as_str(), "Linkage call ended");
        metrics::counter!("gateway_sip_linkage_calls_total", "outcome" => outcome.as_str())
            .increment(1);
        outcome
    }
}

fn via_header(core: &Core, peer: Peer) -> Header {
    rsip::headers::Via::new(format!(
        "SIP/2.0/{} {}:{};branch=z9hG4bK{};rport",
        peer.transport(),
        core.ep.host(),
        core.local_port,
        msg::random_token()
    ))
    .into()
}

/// The INVITE to the linkage line.
fn invite(core: &Core, call: &LinkageCall, peer: Peer, sdp_body: Vec<u8>) -> BLeg {
    let call_id = format!("{}@{}", msg::random_token(), core.ep.host());
    let uri = rsip::Uri::try_from(call.uri.as_str()).unwrap_or_default();
    let mut headers = rsip::Headers::default();
    headers.push(via_header(core, peer));
    headers.push(rsip::headers::MaxForwards::new("70").into());
    headers.push(
        rsip::headers::From::new(format!(
            "\"12345\" <sip:12345@{}>;tag={}",
            core.ep.host(),
            msg::random_token()
        ))
        .into(),
    );
    headers.push(rsip::headers::To::new(format!("<{}>", call.uri)).into());
    headers.push(rsip::headers::CallId::new(call_id.clone()).into());
    headers.push(rsip::headers::CSeq::new("1 INVITE").into());
    headers.push(
        rsip::headers::Contact::new(format!(
            "<sip:12345@{}:{};transport={}>",
            core.ep.host(),
            core.local_port,
            peer.transport().to_ascii_lowercase()
        ))
        .into(),
    );
    headers.push(Header::Other(
        "X-Hotline-Notice".into(),
        call.notice_id.to_string(),
    ));
    headers.push(Header::Other(
        "X-Hotline-Ticket".into(),
        call.ticket_ref.to_string(),
    ));
    headers.push(Header::Other("Allow".into(), crate::ALLOW.into()));
    headers.push(rsip::headers::ContentType::new("application/sdp").into());
    let invite = Request {
        method: Method::Invite,
        uri,
        version: rsip::Version::V2,
        headers,
        body: sdp_body,
    };
    BLeg {
        invite,
        call_id,
        to_tag: None,
        remote_target: None,
        route_set: Vec::new(),
        cseq: 1,
        peer,
    }
}

/// Waits for the line to answer, within the ring timeout.
async fn ring(core: &Arc<Core>, leg: &mut BLeg, tx: &mut ClientTx) -> Rang {
    let deadline = Instant::now() + Duration::from_secs(core.cfg.ring_timeout_secs);
    loop {
        tokio::select! {
            r = tx.recv() => {
                let Some(resp) = r else { return Rang::Ended(LinkageCallOutcome::NoAnswer) };
                let code = resp.status_code.code();
                tracing::debug!(code, "Linkage line answered");
                match code {
                    100..=199 => {
                        if leg.to_tag.is_none() {
                            leg.to_tag = msg::to_tag(&resp);
                        }
                    }
                    200..=299 => return Rang::Answered(resp),
                    486 | 600 => return Rang::Ended(LinkageCallOutcome::Busy),
                    408 | 480 | 487 => return Rang::Ended(LinkageCallOutcome::NoAnswer),
                    _ => return Rang::Ended(LinkageCallOutcome::Failed),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
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
                return Rang::Ended(LinkageCallOutcome::NoAnswer);
            }
        }
    }
}

/// Plays the notice until 1 is pressed, it has played [`PLAYS`] times, or the line hangs
/// up. Returns the outcome and whether the far end hung up.
async fn play_notice(
    core: &Arc<Core>,
    relay: &mut Relay,
    inputs: &mut mpsc::Receiver<CallInput>,
    leg: &BLeg,
    call: &LinkageCall,
) -> (LinkageCallOutcome, bool) {
    let notice = core.prompts.notice_for(call.ticket_ref.as_str());
    let mut events = std::mem::replace(&mut relay.events, mpsc::channel(1).1);
    let mut outcome = LinkageCallOutcome::Answered;
    let mut hung_up = false;
    'plays: for _ in 0..PLAYS {
        let play = relay.play(notice.clone());
        tokio::pin!(play);
        loop {
            tokio::select! {
                () = &mut play => break,
                ev = events.recv() => match ev {
                    Some(MediaEvent::Dtmf('1')) => {
                        outcome = LinkageCallOutcome::Acknowledged;
                        break 'plays;
                    }
                    Some(MediaEvent::Dtmf(_)) => {}
                    Some(MediaEvent::Timeout) | None => break 'plays,
                },
                input = inputs.recv() => match input {
                    Some(CallInput::Request(req, tx)) if req.method == Method::Bye => {
                        tx.respond(msg::response(&req, 200, leg.to_tag.as_deref())).await;
                        hung_up = true;
                        break 'plays;
                    }
                    Some(CallInput::Request(req, tx)) => {
                        tx.respond(msg::response(&req, 200, leg.to_tag.as_deref())).await;
                    }
                    Some(CallInput::Ack(_)) | Some(CallInput::Transfer { .. }) => {}
                    None => break 'plays,
                },
            }
        }
    }
    if outcome == LinkageCallOutcome::Acknowledged {
        relay.play(core.prompts.notice_acknowledged.clone()).await;
    }
    relay.events = events;
    (outcome, hung_up)
}

async fn bye(core: &Arc<Core>, leg: &mut BLeg, via: Header) {
    leg.cseq += 1;
    let bye = in_dialog_request(leg, Method::Bye, leg.cseq, fresh(via));
    let mut tx = core.ep.request(bye, leg.peer);
    while tx.recv().await.is_some_and(|r| r.status_code.code() < 200) {}
}

fn fresh(via: Header) -> Header {
    crate::call::fresh_branch(&via)
}
