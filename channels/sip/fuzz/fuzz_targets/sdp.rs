//! Any bytes as an SDP offer or answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = channel_sip::sdp::parse(data);
    let _ = channel_sip::sdp::parse_offer(data);
});
