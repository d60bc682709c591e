//! SDP offer/answer for G.711 calls (RFC 3264), parsed with the `sdp` crate.
//!
//! The gateway relays media without transcoding, so negotiation picks one codec both
//! sides speak: PCMU or PCMA, plus telephone-event (RFC 4733) for DTMF when offered. An
//! offer with neither G.711 codec gets 488.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use crate::g711::{PCMA, PCMU};

/// What the gateway needs from a session description: where to send audio, and which
/// codecs the sender takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Where the sender wants RTP; `None` when the stream is on hold (address 0.0.0.0)
    /// or rejected (port 0).
    pub rtp: Option<SocketAddr>,
    /// G.711 payload types offered, in the sender's order of preference.
    pub codecs: Vec<u8>,
    /// The telephone-event payload type, when offered.
    pub dtmf: Option<u8>,
}

/// Why a session description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body does not parse as SDP.
    #[error("unparseable SDP: {0}")]
    Syntax(String),
    /// No audio stream in it.
    #[error("no audio stream in the SDP")]
    NoAudio,
    /// No connection address for the audio stream.
    #[error("no connection address for the audio stream")]
    NoAddress,
    /// Neither PCMU nor PCMA offered.
    #[error("no common codec: the gateway relays PCMU and PCMA only")]
    NoCommonCodec,
}

/// Parses an offer or answer and picks out its first audio stream.
pub fn parse(body: &[u8]) -> Result<MediaInfo, SdpError> {
    let session = sdp::SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| SdpError::Syntax(e.to_string()))?;
    let media = session
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio")
        .ok_or(SdpError::NoAudio)?;
    let connection = media
        .connection_information
        .as_ref()
        .or(session.connection_information.as_ref())
        .ok_or(SdpError::NoAddress)?;
    let address = connection.address.as_ref().ok_or(SdpError::NoAddress)?;
    let ip: IpAddr = address.address.parse().map_err(|_| SdpError::NoAddress)?;
    // `c=IN IP4 <IPv4>` or `c=IN IP6 <IPv6>` (RFC 8866 §5.7, RFC 4566 §5.7 before it):
    // an address of the other family than its addrtype says is a broken description,
    // and a relay that sent to it would send from the wrong socket family.
    let family_matches = match connection.address_type.to_ascii_uppercase().as_str() {
        "IP4" => ip.is_ipv4(),
        "IP6" => ip.is_ipv6(),
        _ => false,
    };
    if !family_matches || !connection.network_type.eq_ignore_ascii_case("IN") {
        return Err(SdpError::NoAddress);
    }
    let port = media.media_name.port.value;
    let rtp = (port > 0 && port <= 65_535 && !ip.is_unspecified())
        .then(|| SocketAddr::new(ip, port as u16));

    let rtpmap = |pt: u8| -> Option<String> {
        media.attributes.iter().find_map(|a| {
            let v = a.value.as_deref()?;
            let (num, name) = v.split_once(' ')?;
            (a.key == "rtpmap" && num.trim().parse::<u8>().ok()? == pt)
                .then(|| name.trim().to_ascii_uppercase())
        })
    };
    let mut codecs = Vec::new();
    let mut dtmf = None;
    for f in &media.media_name.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        match rtpmap(pt).as_deref() {
            Some("PCMU/8000") | Some("PCMU/8000/1") => codecs.push(PCMU),
            Some("PCMA/8000") | Some("PCMA/8000/1") => codecs.push(PCMA),
            Some(n) if n.starts_with("TELEPHONE-EVENT/8000") => dtmf = Some(pt),
            None if pt == PCMU || pt == PCMA => codecs.push(pt),
            _ => {}
        }
    }
    codecs.dedup();
    Ok(MediaInfo { rtp, codecs, dtmf })
}

/// Parses an offer and checks it shares a codec with the gateway.
pub fn parse_offer(body: &[u8]) -> Result<MediaInfo, SdpError> {
    let info = parse(body)?;
    if info.codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    Ok(info)
}

/// A session description from the gateway: one audio stream at `rtp`, the `codecs` in
/// order, and telephone-event on `dtmf`. RTCP is on the next port (RFC 3550).
pub fn build(
    rtp: SocketAddr,
    codecs: &[u8],
    dtmf: Option<u8>,
    session_id: u64,
    version: u64,
) -> Vec<u8> {
    let ip = rtp.ip();
    // RFC 8866 §5.2 / §5.7: the addrtype says the address's family; an IPv6 address is
    // written bare here (no brackets, unlike a SIP host).
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut formats: Vec<String> = codecs.iter().map(u8::to_string).collect();
    if let Some(pt) = dtmf {
        formats.push(pt.to_string());
    }
    let mut s = format!(
        "v=0\r\no=hotline {session_id} {version} IN {family} {ip}\r\ns=12345\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        rtp.port(),
        formats.join(" ")
    );
    for pt in codecs {
        let name = if *pt == PCMA { "PCMA" } else { "PCMU" };
        s.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    if let Some(pt) = dtmf {
        s.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
        ));
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn reads_address_codecs_in_order_and_dtmf() {
        let info = parse_offer(SIPP_OFFER.as_bytes()).expect("valid");
        assert_eq!(info.rtp, Some("127.0.0.1:6000".parse().expect("addr")));
        assert_eq!(info.codecs, vec![PCMA, PCMU]);
        assert_eq!(info.dtmf, Some(101));
    }

    #[test]
    fn no_g711_is_no_common_codec() {
        let g729 = SIPP_OFFER.replace("8 0 101", "18").replace(
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:18 G729/8000\r\n",
        );
        assert_eq!(parse_offer(g729.as_bytes()), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn hold_address_means_no_destination() {
        let hold = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(parse(hold.as_bytes()).expect("valid").rtp, None);
    }

    #[test]
    fn what_we_build_parses_back() {
        let body = build(
            "192.0.2.1:20000".parse().expect("addr"),
            &[PCMU],
            Some(101),
            1,
            1,
        );
        let info = parse_offer(&body).expect("valid");
        assert_eq!(info.rtp, Some("192.0.2.1:20000".parse().expect("addr")));
        assert_eq!(info.codecs, vec![PCMU]);
        assert_eq!(info.dtmf, Some(101));
    }

    const IPV6_OFFER: &str = "v=0\r\no=- 1 1 IN IP6 2001:db8::20\r\ns=-\r\nc=IN IP6 2001:db8::20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn an_ipv6_offer_is_read() {
        let info = parse_offer(IPV6_OFFER.as_bytes()).expect("valid");
        assert_eq!(info.rtp, Some("[2001:db8::20]:6000".parse().expect("addr")));
        assert_eq!(info.codecs, vec![PCMU]);
        assert_eq!(info.dtmf, Some(101));
        // The IPv6 hold address is no destination, as 0.0.0.0 is.
        let hold = IPV6_OFFER.replace("c=IN IP6 2001:db8::20", "c=IN IP6 ::");
        assert_eq!(parse(hold.as_bytes()).expect("valid").rtp, None);
        // An address at media level overrides the session's.
        let media_level = IPV6_OFFER.replace("a=rtpmap:0", "c=IN IP6 2001:db8::99\r\na=rtpmap:0");
        assert_eq!(
            parse(media_level.as_bytes()).expect("valid").rtp,
            Some("[2001:db8::99]:6000".parse().expect("addr"))
        );
    }

    #[test]
    fn an_address_of_the_other_family_than_its_addrtype_is_refused() {
        let v6_as_ip4 = IPV6_OFFER.replace("c=IN IP6", "c=IN IP4");
        assert_eq!(parse(v6_as_ip4.as_bytes()), Err(SdpError::NoAddress));
        let v4_as_ip6 = SIPP_OFFER.replace("c=IN IP4", "c=IN IP6");
        assert_eq!(parse(v4_as_ip6.as_bytes()), Err(SdpError::NoAddress));
    }

    #[test]
    fn an_ipv6_answer_is_written_in_ip6() {
        let body = build(
            "[2001:db8::10]:20000".parse().expect("addr"),
            &[PCMA],
            None,
            7,
            2,
        );
        let text = String::from_utf8(body.clone()).expect("text");
        assert!(
            text.contains("o=hotline 7 2 IN IP6 2001:db8::10\r\n"),
            "{text}"
        );
        assert!(text.contains("c=IN IP6 2001:db8::10\r\n"), "{text}");
        let info = parse_offer(&body).expect("parses back");
        assert_eq!(
            info.rtp,
            Some("[2001:db8::10]:20000".parse().expect("addr"))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }
    }
}
