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

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::sip::*;

/// What a case must get back.
struct Expect {
    /// The corpus file.
    name: &'static str,
    /// The final status.
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
    // 3.3.4: unknown URI schemes in From, To and Contact are opaque to a UAS.
    case("rfc4475-unksm2", 200, &[]),
    // 3.3.11: Max-Forwards 0 on an OPTIONS addressed to the gateway is answered.
    case("rfc4475-zeromf", 200, &[]),
    // Unknown methods, 3.1.1.2 (every token character) and 3.1.2.18: 501 with Allow.
    case("rfc4475-intmeth", 501, ALLOW),
    case("rfc3261-newmethod", 501, ALLOW),
    case("rfc4475-mismatch02", 501, ALLOW),
    // 3.3.5: Require of unknown extensions; Proxy-Require is not a UAS's business.
    case(
        "rfc4475-bext01",
        420,
        &[(
            "Unsupported",
            "nothingSupportedHere, nothingSupportedHereEither",
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
    case("rfc4475-multi01", 400, WHY),
    case("rfc3261-two-callid", 400, WHY),
    case("rfc3261-empty-callid", 400, WHY),
    case("rfc3261-negative-max-forwards", 400, WHY),
    case("rfc3261-nonnumeric-max-forwards", 400, WHY),
    case("rfc4475-scalar02", 400, WHY),
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

#[test]
fn rfc4475_messages_get_the_answers_the_rfcs_name_and_calls_still_work() -> Result<()> {
    let (_broker, gw, agent_port) = start_gateway(|_| {}, "info")?;
    let mut failures = Vec::new();
    for expect in CASES {
        let bytes = corpus(expect.name)?;
        let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
        raw.send(&unique(&bytes, "udp"))?;
        let answers = raw.recv_final(Duration::from_secs(3));
        if let Err(e) = check(expect, "UDP", &answers) {
            failures.push(e.to_string());
        }
    }
    for expect in CASES.iter().filter(|c| c.tcp) {
        let bytes = unique(&corpus(expect.name)?, "tcp");
        let mut tcp = tcp_connect(gw.sip_port)?;
        tcp.write_all(&bytes)?;
        let answers = tcp_answers(&mut tcp, Duration::from_secs(3));
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
