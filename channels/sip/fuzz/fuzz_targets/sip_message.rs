//! Any bytes as a SIP message, as a UDP datagram and as the start of a TCP stream: parsing
//! and framing must never panic, and a request they accept must be answerable.
#![no_main]

use channel_sip::msg;
use channel_sip::wire::{self, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_message_bytes: 16 * 1024,
    max_headers: 96,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(rsip::SipMessage::Request(r)) = msg::parse(data, true, LIMITS, "fuzz") {
        // The gateway answers what it accepts: building and encoding a response must work.
        let _ = msg::encode(msg::response(&r, 400, Some("t")));
        let _ = msg::branch(&r);
        let _ = msg::cseq(&r);
        let _ = msg::to_tag(&r);
    }
    let skip = wire::leading_crlf(data);
    if let Ok(Some(n)) = wire::frame_stream(&data[skip..], LIMITS) {
        let _ = msg::parse(&data[skip..skip + n], false, LIMITS, "fuzz");
    }
});
