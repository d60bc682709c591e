//! Conformance with RFC 3261's grammar and RFC 4475's torture messages, as a carrier's
//! SBC would send them from a trunk address: every valid message gets the answer a UAS
//! owes it, every invalid one the error RFC 3261 and RFC 4475 name (with the headers
//! they name), over UDP and TCP; and a normal call through sipp still completes
//! afterwards.
//!
//! The messages are the SIP fuzz corpus's `rfc4475-*`, `rfc5118-*` and `rfc3261-*` files
//! (`channels/sip/fuzz/corpus/sip_message/`), the same bytes the unit tests of
//! `channel_sip::msg` parse. Each is sent once per transport, on a fresh socket or
//! connection so that a retransmitted answer to one case cannot be read as the answer to
//! the next.
//!
//! Most `rfc4475-*` files are the RFC's message with the top Via pointed at
//! `127.0.0.1:9` with `rport`, so that the answer comes back to the test's socket
//! (intmeth and unksm2 checked against the RFC's text byte for byte); esc01, longreq and
//! inv2543 also carry an added To tag, so that the table below tests their parse without
//! placing a call (`rfc4475_invites_as_given_place_calls` sends them without it, as
//! calls). mpart01 is a message of our own around the RFC's point (a multipart/mixed
//! INVITE body with an SDP part), since its binary part is not reproduced here; it is
//! not in this table but placed as a call by `tests/tests/sip.rs`. The bext01, clerr,
//! intmeth, invut, mismatch02, multi01, quotbal, scalar02, unksm2 and zeromf files were
//! checked against the RFC's text; the others were copied from it earlier.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::sip::*;

/// What a case must get back.
struct Expect {
    /// The corpus file.
    name: &'static str,
    /// The final status; [`SILENT`] for a message that must get no answer at all.
    status: u16,
    /// Headers the answer must carry, and a text each must contain.
    headers: &'static [(&'static str, &'static str)],
    /// Whether the case is sent over TCP too (a Content-Length beyond the body cannot
    /// be: on a stream it only means "wait for more").
    tcp: bool,
}

const fn case(
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> Expect {
    Expect {
        name,
        status,
        headers,
        tcp: true,
    }
}

/// A message the gateway must not answer (a response outside any transaction: RFC 3261
/// §18.1.2 and §17.1.3 drop it, whether or not it parses).
const SILENT: u16 = 0;

/// A response the gateway must take without answering; the unit tests of
/// `channel_sip::msg` check which of them parse.
const fn silent(name: &'static str) -> Expect {
    case(name, SILENT, &[])
}

/// A case sent over UDP only.
const fn udp_only(
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> Expect {
    Expect {
        name,
        status,
        headers,
        tcp: false,
    }
}

const ALLOW: &[(&str, &str)] = &[("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")];
const WHY: &[(&str, &str)] = &[("Warning", "399 ")];

const CASES: &[Expect] = &[
    // Valid: accepted as RFC 3261's grammar allows.
    // 3.1.1.1: whitespace everywhere the grammar allows it, folding, odd case, compact
    // forms, unknown headers. Its To has a tag, so for the gateway it is a re-INVITE in a
    // dialog it does not know: 481 is what a UAS owes it (RFC 3261 §12.2.2).
    case("rfc4475-wsinv", 481, &[]),
    case("rfc3261-compact", 200, &[]),
    case("rfc3261-folded-from", 200, &[]),
    case("rfc3261-ws-before-colon", 200, &[]),
    // 3.1.1.9: `;`, `=` and escapes in the Request-URI's user part (the patched rsip).
    case("rfc4475-semiuri", 200, &[]),
    // 3.1.1.3: escapes in the Request-URI (`sips%3Auser%40example.com`, a user, not a
    // scheme), To, From (`I%20have%20spaces`) and a folded Contact with escaped
    // parameters. A To tag is added to the RFC's INVITE so that it tests the parse
    // path without placing a call: a re-INVITE in a dialog the gateway does not know,
    // 481 (RFC 3261 §12.2.2).
    case("rfc4475-esc01", 481, &[]),
    // 3.1.1.7: very long values (display name, URI parameters, tag, Call-ID, an
    // unknown header, a 200-character branch) and 34 Vias in every case and compact
    // form (3.8 KB). To tag added as for esc01: 481.
    case("rfc4475-longreq", 481, &[]),
    // 3.1.1.4: `%00` in the To, From and Contact users. A REGISTER, which this gateway
    // (no registrar) answers with 405 and Allow (RFC 3261 §8.2.1).
    case("rfc4475-escnull", 405, ALLOW),
    // 3.1.1.5: `RE%47IST%45R` is not REGISTER (no unescaping in a method) but an
    // unknown method, with `"%Z%45"` display names and a `C%6Fntact` extension header:
    // 501 with Allow (RFC 3261 §8.2.1).
    case("rfc4475-esc02", 501, ALLOW),
    // 3.1.1.6: no LWS between the display name and `<` (`caller<sip:...>`).
    case("rfc4475-lwsdisp", 200, &[]),
    // 3.1.1.10: Vias of transports SCTP, TLS, UNKNOWN and TCP below the sender's.
    case("rfc4475-transports", 200, &[]),
    // 3.1.1.8: a REGISTER with Content-Length 0 and an INVITE after it in the same UDP
    // datagram: the INVITE is no part of the message, the REGISTER gets 405. On a
    // stream the INVITE would be a second message (and a call), so UDP only, as the RFC
    // describes it.
    udp_only("rfc4475-dblreq", 405, ALLOW),
    // 3.1.1.12 (a UTF-8 reason phrase) and 3.1.1.13 (an empty one): valid responses,
    // outside any transaction of the gateway, so taken and never answered.
    silent("rfc4475-unreason"),
    silent("rfc4475-noreason"),
    // 3.3.4: unknown URI schemes in From (`<http://...>`), To (a bare
    // `isbn:2983792873`) and Contact are opaque to a UAS: the message parses, and as a
    // REGISTER it gets the gateway's 405 with Allow (the RFC's registrar would answer 400
    // for the To that is no SIP address of record).
    case("rfc4475-unksm2", 405, ALLOW),
    // 3.3.11: Max-Forwards 0 on an OPTIONS addressed to the gateway is answered.
    case("rfc4475-zeromf", 200, &[]),
    // 3.3.2 and 3.3.3: Request-URI schemes the gateway does not serve
    // (`nobodyKnowsThisScheme:`, `soap.beep://`): 416 (RFC 3261 §8.2.2.1).
    case("rfc4475-unkscm", 416, WHY),
    case("rfc4475-novelsc", 416, WHY),
    // 3.3.15: an INVITE whose Accept names no SDP cannot take the gateway's SDP answer:
    // 406 (RFC 3261 §21.4.7), before any call starts.
    case("rfc4475-sdp01", 406, WHY),
    // 3.3.7 (an Authorization of an unknown scheme), 3.3.12 and 3.3.13 (`;unknownparam`
    // on the Contact header and on its URI), 3.3.14 (escaped headers in a Contact URI
    // in `<...>`): REGISTERs, which the RFC has a registrar answer (401, 200); this
    // gateway is no registrar, and answers them as it does any REGISTER: 405 with Allow
    // (RFC 3261 §8.2.1), which shows each parsed.
    case("rfc4475-regaut01", 405, ALLOW),
    case("rfc4475-cparam01", 405, ALLOW),
    case("rfc4475-cparam02", 405, ALLOW),
    case("rfc4475-regescrt", 405, ALLOW),
    // 3.4.1: RFC 2543's INVITE (no branch, no Max-Forwards, a From without tag, a To
    // with `;user=phone` outside `<...>`). A To tag is added, as for esc01, so that it
    // tests the parse path without placing a call: 481. UDP only: on a stream a message
    // without Content-Length is malformed (RFC 3261 §18.3).
    udp_only("rfc4475-inv2543", 481, &[]),
    // 3.3.10: a response with a broadcast address in a Via: outside any transaction,
    // dropped, and the gateway (no proxy) never sends anything towards it.
    silent("rfc4475-bcast"),
    // Unknown methods, 3.1.1.2 (every token character; and BEL, NUL and DEL as
    // quoted-pairs in the To's display name, odd characters in the Call-ID, a UTF-8
    // extension header) and 3.1.2.18: 501 with Allow.
    case("rfc4475-intmeth", 501, ALLOW),
    case("rfc3261-newmethod", 501, ALLOW),
    case("rfc4475-mismatch02", 501, ALLOW),
    // 3.3.5: Require of unknown extensions; Proxy-Require is not a UAS's business.
    case(
        "rfc4475-bext01",
        420,
        &[(
            "Unsupported",
            "nothingSupportsThis, nothingSupportsThisEither",
        )],
    ),
    // 3.3.6: an INVITE body the gateway cannot read.
    case(
        "rfc4475-invut",
        415,
        &[("Accept", "application/sdp, multipart/mixed")],
    ),
    // IPv6 references (RFC 3261 §25.1; RFC 5118's torture messages, with `rport` so the
    // answer comes back to the test's socket): valid in the Request-URI, Via sent-by,
    // From, To and Contact, so answered as the method asks, never 400.
    case("rfc3261-ipv6-options", 200, &[]),
    // RFC 5118 §4.5: `received` holding an IPv6 reference (RFC 3261's ABNF bug).
    case("rfc5118-via-received-reference", 200, &[]),
    // RFC 5118 §4.1, §4.3 (an address ending in what looks like a port), §4.4: REGISTER
    // is a method the gateway does not serve.
    case("rfc5118-ipv6-good", 405, ALLOW),
    case("rfc5118-port-ambiguous", 405, ALLOW),
    case("rfc5118-port-unambiguous", 405, ALLOW),
    // RFC 5118 §4.2: an IPv6 address without brackets; and a reference never closed.
    case("rfc5118-ipv6-bad", 400, WHY),
    case("rfc3261-ipv6-unclosed", 400, WHY),
    // Invalid: 400 with a Warning saying why.
    case("rfc4475-quotbal", 400, WHY),
    // 3.3.8: Call-ID, CSeq, From, To and Max-Forwards twice each. Its `l: 154` is more
    // than the SDP that follows, which on a stream only means "wait for more": UDP only
    // (rfc3261-two-from has the fault over TCP too).
    udp_only("rfc4475-multi01", 400, WHY),
    case("rfc3261-two-from", 400, WHY),
    case("rfc3261-two-callid", 400, WHY),
    case("rfc3261-empty-callid", 400, WHY),
    case("rfc3261-negative-max-forwards", 400, WHY),
    case("rfc3261-nonnumeric-max-forwards", 400, WHY),
    case("rfc4475-scalar02", 400, WHY),
    // 3.1.2.1: empty parameters and entries, `Via: ...;;,;,,` and `Contact: ...;;;;`.
    case("rfc4475-badinv01", 400, WHY),
    // 3.1.2.3: a negative Content-Length.
    case("rfc4475-ncl", 400, WHY),
    // 3.1.2.7: the Request-URI in `<...>`.
    case("rfc4475-ltgtruri", 400, WHY),
    // 3.1.2.8: LWS inside the Request-URI (`sip:user@example.com; lr`).
    case("rfc4475-lwsruri", 400, WHY),
    // 3.1.2.9: two SPs between the request line's elements.
    case("rfc4475-lwsstart", 400, WHY),
    // 3.1.2.10: SPs after the request line's version.
    case("rfc4475-trws", 400, WHY),
    // 3.1.2.11: escaped headers in the Request-URI (`?Route=%3Csip:example.com%3E`).
    case("rfc4475-escruri", 400, WHY),
    // 3.1.2.12: a Date in EST (SIP dates are GMT, RFC 3261 §20.17).
    case("rfc4475-baddate", 400, WHY),
    // 3.1.2.13: a Contact URI with headers not in `<...>` (RFC 3261 §20.10). A REGISTER,
    // but malformed, and 400 is what RFC 4475 names (inferring the brackets is only
    // possible in this one example); the method is looked at once the message parses.
    case("rfc4475-regbadct", 400, WHY),
    // 3.1.2.14: spaces inside `< sip:... >`.
    case("rfc4475-badaspec", 400, WHY),
    // 3.1.2.15: unquoted display names with a comma (`Bell, Alexander <sip:...>`).
    case("rfc4475-baddn", 400, WHY),
    // 3.1.2.16: SIP/7.0 in the request line and Via: 505 Version Not Supported (RFC
    // 3261 §21.5.6).
    case("rfc4475-badvers", 505, WHY),
    // 3.1.2.17: an OPTIONS whose CSeq names INVITE.
    case("rfc4475-mismatch01", 400, WHY),
    // 3.3.1: an INVITE without Call-ID, From, To and Max-Forwards.
    case("rfc4475-insuf", 400, WHY),
    // 3.3.9: Content-Length twice, 13 and 5 (a datagram; on a stream neither could
    // frame the message, so UDP only).
    udp_only("rfc4475-mcl01", 400, WHY),
    // 3.1.2.5 (overlarge CSeq and Retry-After) and 3.1.2.19 (a status code of ten
    // digits): responses, dropped without an answer.
    silent("rfc4475-scalarlg"),
    silent("rfc4475-bigcode"),
    Expect {
        name: "rfc4475-clerr",
        status: 400,
        headers: WHY,
        tcp: false,
    },
    // rfc4475-mpart01 (an INVITE whose body is multipart/mixed with an SDP part) starts
    // a call: tests/tests/sip.rs `a_sip_i_multipart_invite_is_bridged_and_stays_up_until_bye`
    // places one through sipp, bridged and up until the citizen's BYE.
];

fn corpus(name: &str) -> Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../channels/sip/fuzz/corpus/sip_message")
        .join(name);
    std::fs::read(&path).with_context(|| path.display().to_string())
}

/// The message with its transaction and dialog identifiers made unique for `tag` (the
/// transport), so that the gateway takes each send as a new request.
fn unique(bytes: &[u8], tag: &str) -> Vec<u8> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + 4);
    // Several of the RFC's messages share a branch (`z9hG4bKkdjuw`) and every file the
    // same sent-by, which would make one case a retransmission of another (RFC 3261
    // §17.2.3): the branch carries the case's name too.
    let head = String::from_utf8_lossy(&bytes[..split])
        .replace("z9hG4bK", &format!("z9hG4bK{tag}"))
        .replace("390skdjuw", &format!("390skdjuw{tag}"))
        .replace("@conformance", &format!("-{tag}@conformance"))
        .replace("wsinv.ndaksdj@", &format!("wsinv.{tag}@"));
    let mut out = head.into_bytes();
    out.extend_from_slice(&bytes[split..]);
    out
}

fn check(expect: &Expect, transport: &str, answers: &[String]) -> Result<()> {
    if expect.status == SILENT {
        if !answers.is_empty() {
            bail!("{} over {transport}: answered {answers:?}", expect.name);
        }
        return Ok(());
    }
    let Some(last) = answers.last() else {
        bail!("{} over {transport}: no answer", expect.name);
    };
    if status_of(last) != Some(expect.status) {
        bail!(
            "{} over {transport}: wanted {}, got {answers:?}",
            expect.name,
            expect.status
        );
    }
    for (name, wanted) in expect.headers {
        let value = header(last, name).unwrap_or_default();
        if !value.contains(wanted) {
            bail!(
                "{} over {transport}: {name} should contain {wanted:?}: {last}",
                expect.name
            );
        }
    }
    if expect.status >= 300 && header(last, "To").is_some_and(|t| !t.contains("tag=")) {
        bail!(
            "{} over {transport}: a final answer tags To: {last}",
            expect.name
        );
    }
    Ok(())
}

/// Reads messages off a stream until one is final or `within` passes.
fn tcp_answers(stream: &mut std::net::TcpStream, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        // Split off every whole message buffered so far.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let message = String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            let done = status_of(&message).is_some_and(|s| s >= 200);
            out.push(message);
            if done {
                return out;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

/// How long to wait for an answer: for one that must not come, long enough for the
/// gateway to have sent any (it answers within milliseconds on loopback).
fn wait(expect: &Expect) -> Duration {
    if expect.status == SILENT {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(3)
    }
}

#[test]
fn rfc4475_messages_get_the_answers_the_rfcs_name_and_calls_still_work() -> Result<()> {
    let (_broker, gw, agent_port) = start_gateway(|_| {}, "info")?;
    let mut failures = Vec::new();
    for expect in CASES {
        let bytes = corpus(expect.name)?;
        let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
        raw.send(&unique(&bytes, &format!("udp-{}", expect.name)))?;
        let answers = raw.recv_final(wait(expect));
        if let Err(e) = check(expect, "UDP", &answers) {
            failures.push(e.to_string());
        }
    }
    for expect in CASES.iter().filter(|c| c.tcp) {
        let bytes = unique(&corpus(expect.name)?, &format!("tcp-{}", expect.name));
        let mut tcp = tcp_connect(gw.sip_port)?;
        tcp.write_all(&bytes)?;
        let answers = tcp_answers(&mut tcp, wait(expect));
        if let Err(e) = check(expect, "TCP", &answers) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // None of it changed anything: a normal call still goes through.
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-call.xml", "13800138000", &["-d", "1000"]),
    )?;
    Ok(())
}

/// RFC 4475's INVITEs as the RFC gives them, with no To tag (the corpus files carry one
/// so that the table above tests their parse without a call): 3.1.1.3 (escapes), 3.1.1.7
/// (very long values, 34 Vias) and 3.4.1 (RFC 2543's INVITE, no branch, a From without
/// tag) are valid, and each places a real call: answered 200 once the agent answers,
/// then ACKed and hung up with a 200 to the BYE. UDP, as 3.4.1 has no Content-Length.
#[test]
fn rfc4475_invites_as_given_place_calls() -> Result<()> {
    let (_broker, gw, agent_port) = start_gateway(|_| {}, "info")?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &["-m", "3"])?;
    let mut failures = Vec::new();
    for (name, tag) in [
        ("rfc4475-esc01", ";tag=esc01"),
        ("rfc4475-longreq", ";tag=longreq"),
        ("rfc4475-inv2543", ";tag=inv2543"),
    ] {
        let bytes = corpus(name)?;
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no blank line")?;
        let head = String::from_utf8_lossy(&bytes[..split]);
        assert!(head.contains(tag), "{name}: the corpus's To tag {tag}");
        let mut message = head.replace(tag, "").into_bytes();
        message.extend_from_slice(&bytes[split..]);
        let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
        raw.send(&message)?;
        let answers = raw.recv_final(Duration::from_secs(15));
        let Some(ok) = answers.last().filter(|m| status_of(m) == Some(200)) else {
            failures.push(format!("{name}: wanted 200, got {answers:?}"));
            continue;
        };
        match raw.hang_up(ok, Duration::from_millis(300)) {
            Ok(200) => {}
            other => failures.push(format!("{name}: BYE answered {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    agent.expect_ok(Duration::from_secs(30))?;
    Ok(())
}
