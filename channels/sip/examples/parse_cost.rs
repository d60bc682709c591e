//! The cost of parsing the messages of one call, for instruction counts under
//! `perf stat` (issue 14: the parsing path grew a pre-pass for folding, whitespace and
//! compact forms; what did it cost per message?).
//!
//! ```text
//! cargo build --release -p channel-sip --example parse_cost
//! perf stat -e instructions:u target/release/examples/parse_cost gateway 100000
//! perf stat -e instructions:u target/release/examples/parse_cost rsip 100000
//! perf stat -e instructions:u target/release/examples/parse_cost none 100000
//! ```
//!
//! `gateway` parses with the gateway's path (`msg::parse`: framing, the pre-pass, rsip,
//! the checks), `rsip` with rsip alone on the same bytes (the baseline), `none` only
//! touches the bytes (the process's own cost, to subtract). Each iteration parses the four
//! messages a short call brings in on its citizen leg as a carrier sends them: INVITE with
//! SDP, ACK, BYE, and the agent side's 200 OK with SDP.

use channel_sip::msg;
use channel_sip::wire::Limits;

const INVITE: &str = "INVITE sip:12345@198.51.100.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:12345@198.51.100.10>\r\n\
From: \"Citizen\" <sip:13800138000@carrier.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@203.0.113.5\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:13800138000@203.0.113.5:5060>\r\n\
P-Asserted-Identity: <sip:13800138000@carrier.example>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO\r\n\
Supported: timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\
\r\n\
v=0\r\n\
o=carrier 53655765 2353687637 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

const ACK: &str = "ACK sip:12345@198.51.100.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhdt;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:12345@198.51.100.10>;tag=gw8837\r\n\
From: \"Citizen\" <sip:13800138000@carrier.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@203.0.113.5\r\n\
CSeq: 314159 ACK\r\n\
Content-Length: 0\r\n\
\r\n";

const BYE: &str = "BYE sip:12345@198.51.100.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhdu;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:12345@198.51.100.10>;tag=gw8837\r\n\
From: \"Citizen\" <sip:13800138000@carrier.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@203.0.113.5\r\n\
CSeq: 314160 BYE\r\n\
Content-Length: 0\r\n\
\r\n";

const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bKgw123;received=198.51.100.10\r\n\
To: <sip:agent@10.0.0.20>;tag=acd77\r\n\
From: <sip:13800138000@198.51.100.10>;tag=gw8838\r\n\
Call-ID: gw-b-leg-1@198.51.100.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:agent1001@10.0.0.20:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\
\r\n\
v=0\r\n\
o=acd 1 1 IN IP4 10.0.0.20\r\n\
s=-\r\n\
c=IN IP4 10.0.0.20\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "gateway".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let limits = Limits {
        max_message_bytes: 16 * 1024,
        max_headers: 96,
    };
    // The bodies' lengths filled in, as a sender would.
    let with_length = |m: &str| {
        let body = m.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
        m.replace("{len}", &body.to_string())
    };
    let owned = [INVITE, ACK, BYE, OK].map(with_length);
    let messages = owned.each_ref().map(|m| m.as_bytes());
    for m in messages {
        if let Err(e) = msg::parse(m, true, limits, "198.51.100.10") {
            panic!("{e:?}: {}", String::from_utf8_lossy(m));
        }
    }
    let mut parsed = 0usize;
    for _ in 0..n {
        for m in messages {
            let m = std::hint::black_box(m);
            parsed += match mode.as_str() {
                "gateway" => usize::from(msg::parse(m, true, limits, "198.51.100.10").is_ok()),
                "rsip" => usize::from(rsip::SipMessage::try_from(m).is_ok()),
                _ => usize::from(m.iter().fold(0u8, |a, b| a ^ b) != 0),
            };
        }
    }
    assert_eq!(parsed, n * messages.len(), "every message parses");
    println!("{mode}: {n} x {} messages parsed", messages.len());
}
