//! The RTP fixed header (RFC 3550 §5.1), read and written by hand.
//!
//! The relay needs four fields of each packet (payload type, sequence, timestamp, SSRC)
//! and where the payload starts. webrtc-rs's `rtp` crate parses into an owned packet with
//! a `Bytes` per packet and brings webrtc-util along; on a path that sees 100,000 packets
//! a second, reading twelve bytes in place is both smaller and faster.

/// The parts of an RTP packet the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Byte range of the payload within the packet.
    pub payload: (usize, usize),
}

/// Whether a packet on an RTP port is RTCP multiplexed onto it (RFC 5761 §4: packet
/// types 192-223 in the second byte).
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

/// Reads an RTP packet's header. `None` for anything that is not RTP version 2 with a
/// consistent length.
pub fn parse(packet: &[u8]) -> Option<RtpView> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let padding = packet[0] & 0x20 != 0;
    let extension = packet[0] & 0x10 != 0;
    let csrc_count = usize::from(packet[0] & 0x0f);
    let mut start = 12 + 4 * csrc_count;
    if extension {
        let ext = packet.get(start..start + 4)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        start += 4 + 4 * words;
    }
    let mut end = packet.len();
    if padding {
        let pad = usize::from(*packet.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    if start > end {
        return None;
    }
    Some(RtpView {
        payload_type: packet[1] & 0x7f,
        marker: packet[1] & 0x80 != 0,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        payload: (start, end),
    })
}

/// Writes a fixed header with no CSRCs or extension.
pub fn write_header(
    out: &mut Vec<u8>,
    pt: u8,
    marker: bool,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) {
    out.push(0x80);
    out.push(pt & 0x7f | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// A DTMF event from an RFC 4733 telephone-event payload: the key and whether this
/// packet ends the event.
pub fn dtmf_event(payload: &[u8]) -> Option<(char, bool)> {
    if payload.len() < 4 {
        return None;
    }
    let key = match payload[0] {
        d @ 0..=9 => char::from(b'0' + d),
        10 => '*',
        11 => '#',
        k @ 12..=15 => char::from(b'A' + (k - 12)),
        _ => return None,
    };
    Some((key, payload[1] & 0x80 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_payload_bounds() {
        let mut p = Vec::new();
        write_header(&mut p, 8, true, 7, 160, 0xdead_beef);
        p.extend_from_slice(&[1, 2, 3]);
        let v = parse(&p).expect("rtp");
        assert_eq!(
            (v.payload_type, v.marker, v.sequence, v.timestamp, v.ssrc),
            (8, true, 7, 160, 0xdead_beef)
        );
        assert_eq!(&p[v.payload.0..v.payload.1], &[1, 2, 3]);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 5, 5, 5, 5]); // extension of one word
        p.extend_from_slice(&[42, 43]); // payload
        p.extend_from_slice(&[0, 2]); // padding of two
        let v = parse(&p).expect("rtp");
        assert_eq!(&p[v.payload.0..v.payload.1], &[42, 43]);
        let bad_pad = [0xa0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 200];
        assert_eq!(parse(&bad_pad), None);
    }

    #[test]
    fn dtmf_keys() {
        assert_eq!(dtmf_event(&[5, 0x80, 0, 160]), Some(('5', true)));
        assert_eq!(dtmf_event(&[11, 0x0a, 0, 160]), Some(('#', false)));
        assert_eq!(dtmf_event(&[16, 0, 0, 0]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Some(v) = parse(&bytes) {
                proptest::prop_assert!(v.payload.0 <= v.payload.1 && v.payload.1 <= bytes.len());
            }
            let _ = dtmf_event(&bytes);
        }
    }
}
