//! Any bytes as an RTP packet: the header view must stay inside the packet, and decoding
//! its payload (G.711, telephone-event) must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = channel_sip::rtp::is_rtcp(data);
    if let Some(v) = channel_sip::rtp::parse(data) {
        assert!(v.payload.0 <= v.payload.1 && v.payload.1 <= data.len());
        let payload = &data[v.payload.0..v.payload.1];
        let mut pcm = Vec::new();
        let _ = channel_sip::g711::decode(v.payload_type, payload, &mut pcm);
        let _ = channel_sip::rtp::dtmf_event(payload);
    }
});
