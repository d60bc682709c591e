//! SIP messages with rsip: parsing with the checks RFC 3261 §8.1.1 and §8.2 ask of a UAS,
//! the error response for what fails them, and builders for what the gateway sends.
//!
//! Every request that reaches the transaction layer has a parseable top Via, Call-ID,
//! CSeq (whose method matches the request's), From and To: the rest of the crate relies
//! on that and never has to handle their absence.

use rsip::headers::UntypedHeader;
use rsip::prelude::*;
use rsip::{Header, Method, Request, Response, SipMessage, StatusCode};

use crate::wire::{self, Limits, Normalized, WireError};

/// A message that failed the checks, and what to do about it.
#[derive(Debug)]
pub enum Rejected {
    /// Answer with this response (a request with enough headers to answer).
    Answer(Box<Response>, String),
    /// Drop: a response, or a request without a usable Via. The reason is for metrics and
    /// debug logs.
    Drop(String),
}

/// Parses and checks one message. `host` names the gateway in Warning headers.
pub fn parse(
    bytes: &[u8],
    datagram: bool,
    limits: Limits,
    host: &str,
) -> Result<SipMessage, Rejected> {
    let norm = match wire::normalize(bytes, datagram, limits) {
        Ok(n) => n,
        Err(error) => {
            let code = match error {
                WireError::TooLarge(_) => 513,
                _ => 400,
            };
            return Err(match lenient(bytes) {
                Some(raw) => answer_raw(&raw, code, &error.to_string(), host),
                None => Rejected::Drop(error.to_string()),
            });
        }
    };
    let is_request = !norm.start_line.starts_with("SIP/");
    if is_request {
        let parts: Vec<&str> = norm.start_line.split(' ').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(answer_raw(&norm, 400, "malformed request line", host));
        }
        if parts[2] != "SIP/2.0" {
            let code = if parts[2].starts_with("SIP/") {
                505
            } else {
                400
            };
            return Err(answer_raw(&norm, code, "only SIP/2.0 is supported", host));
        }
    }
    if is_request {
        let method = norm.start_line.split(' ').next().unwrap_or_default();
        let is_token = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
        if is_token && !KNOWN_METHODS.contains(&method) {
            return Err(answer_raw(&norm, 501, "method not implemented", host));
        }
    }
    let message = match SipMessage::try_from(norm.to_bytes()) {
        Ok(m) => m,
        Err(error) => {
            let why = format!("unparseable message: {}", first_line(&error.to_string()));
            return Err(if is_request {
                answer_raw(&norm, 400, &why, host)
            } else {
                Rejected::Drop(why)
            });
        }
    };
    match message {
        SipMessage::Request(request) => {
            check_request(&request).map_err(|why| answer_raw(&norm, 400, &why, host))?;
            if max_forwards(&request) == Some(0) && request.method != Method::Options {
                return Err(answer_raw(&norm, 483, "Max-Forwards reached 0", host));
            }
            Ok(SipMessage::Request(request))
        }
        SipMessage::Response(response) => {
            check_common(&response).map_err(Rejected::Drop)?;
            Ok(SipMessage::Response(response))
        }
    }
}

/// Methods rsip knows (it refuses others, which get 501 here).
const KNOWN_METHODS: &[&str] = &[
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn check_common<M: HeadersExt>(m: &M) -> Result<(), String> {
    m.via_header()
        .map_err(|_| "missing Via header".to_owned())?
        .typed()
        .map_err(|_| "malformed Via header".to_owned())?;
    m.call_id_header()
        .map_err(|_| "missing Call-ID header".to_owned())?;
    m.cseq_header()
        .map_err(|_| "missing CSeq header".to_owned())?
        .typed()
        .map_err(|_| "malformed CSeq header".to_owned())?;
    m.from_header()
        .map_err(|_| "missing From header".to_owned())?
        .typed()
        .map_err(|_| "malformed From header".to_owned())?;
    m.to_header()
        .map_err(|_| "missing To header".to_owned())?
        .typed()
        .map_err(|_| "malformed To header".to_owned())?;
    Ok(())
}

fn check_request(r: &Request) -> Result<(), String> {
    check_common(r)?;
    let (_, method) = cseq(r).ok_or("malformed CSeq header")?;
    if method != r.method {
        return Err("CSeq method does not match the request method".into());
    }
    Ok(())
}

/// Header lines of a message that failed to normalise, read leniently, only to build the
/// error response.
fn lenient(bytes: &[u8]) -> Option<Normalized> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(16 * 1024)]);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start_line = lines.next()?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| {
            let n = n.trim();
            let n = match n {
                "v" | "V" => "Via",
                "i" | "I" => "Call-ID",
                "f" | "F" => "From",
                "t" | "T" => "To",
                other => other,
            };
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    Some(Normalized {
        start_line,
        headers,
        body: Vec::new(),
    })
}

/// An error response built from raw header values, for a request rsip could not parse or
/// that failed the checks. Needs a Via to know where to answer; a response is never
/// answered.
fn answer_raw(raw: &Normalized, code: u16, why: &str, host: &str) -> Rejected {
    let looks_like_request = raw
        .start_line
        .split(' ')
        .next()
        .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()));
    if !looks_like_request || raw.value("Via").is_none() {
        return Rejected::Drop(why.to_owned());
    }
    let mut headers = rsip::Headers::default();
    for via in raw.values("Via") {
        headers.push(rsip::headers::Via::new(via).into());
    }
    if let Some(v) = raw.value("From") {
        headers.push(rsip::headers::From::new(v).into());
    }
    if let Some(v) = raw.value("To") {
        headers.push(rsip::headers::To::new(v).into());
    }
    if let Some(v) = raw.value("Call-ID") {
        headers.push(rsip::headers::CallId::new(v).into());
    }
    if let Some(v) = raw.value("CSeq") {
        headers.push(rsip::headers::CSeq::new(v).into());
    }
    headers.push(warning(host, why));
    let response = Response {
        status_code: status(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    Rejected::Answer(Box::new(response), why.to_owned())
}

/// A Warning header (RFC 3261 §20.43), code 399 (miscellaneous), the text quoted.
pub fn warning(host: &str, text: &str) -> Header {
    let text: String = text.chars().filter(|c| *c != '"' && *c != '\\').collect();
    Header::Other("Warning".into(), format!("399 {host} \"{text}\""))
}

/// The reason phrase the gateway sends with `code` (RFC 3261 §21 and extensions).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A status code carrying the gateway's reason phrase (rsip's own are identifiers such as
/// `BusyHere`).
pub fn status(code: u16) -> StatusCode {
    StatusCode::Other(code, reason_phrase(code).into())
}

/// The Call-ID.
pub fn call_id<M: HeadersExt>(m: &M) -> &str {
    m.call_id_header().map(|h| h.value()).unwrap_or_default()
}

/// The CSeq number and method.
pub fn cseq<M: HeadersExt>(m: &M) -> Option<(u32, Method)> {
    let c = m.cseq_header().ok()?.typed().ok()?;
    Some((c.seq, c.method))
}

/// The branch of the top Via.
pub fn branch<M: HeadersExt>(m: &M) -> Option<String> {
    let via = m.via_header().ok()?.typed().ok()?;
    via.branch().map(|b| b.to_string())
}

/// The tag of the To header.
pub fn to_tag<M: HeadersExt>(m: &M) -> Option<String> {
    m.to_header()
        .ok()?
        .typed()
        .ok()?
        .tag()
        .map(|t| t.value().to_owned())
}

/// The tag of the From header.
pub fn from_tag<M: HeadersExt>(m: &M) -> Option<String> {
    m.from_header()
        .ok()?
        .typed()
        .ok()?
        .tag()
        .map(|t| t.value().to_owned())
}

/// `Max-Forwards`, when present and numeric.
pub fn max_forwards(r: &Request) -> Option<u32> {
    r.headers.iter().find_map(|h| match h {
        Header::MaxForwards(m) => m.value().trim().parse().ok(),
        _ => None,
    })
}

/// The value of the first header named `name` that rsip keeps as `Other`
/// (P-Asserted-Identity, Reason, ...).
pub fn other_header<'a, M: HasHeaders>(m: &'a M, name: &str) -> Option<&'a str> {
    m.headers().iter().find_map(|h| match h {
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
        _ => None,
    })
}

/// Where a call was transferred from (the 110/119/120 linkage handing a caller to 12345,
/// the State Council's 2022 opinion on 12345-110 linkage), from the INVITE's
/// History-Info (RFC 7044: the first entry is the original target, when the request
/// was retargeted at least once) or, failing that, its Diversion (RFC 5806: the last
/// header is the first diversion). The number of a mainland mobile is kept masked
/// (Art. 21): a person's phone forwarded to the hotline is personal data; a service
/// line's number is not.
pub fn origin(invite: &Request) -> Option<contract::CallOrigin> {
    let values = |name: &str| -> Vec<&str> {
        invite
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
                _ => None,
            })
            .flat_map(split_entries)
            .collect()
    };
    let shown = |user: String| {
        if user.len() == 11 && user.starts_with('1') && user.bytes().all(|b| b.is_ascii_digit()) {
            contract::mask_phone(&user)
        } else {
            user
        }
    };
    let history = values("History-Info");
    if history.len() >= 2
        && let Some(first) = history.first()
        && let Some(user) = user_of(first)
    {
        let reason = first
            .split_once("cause=")
            .map(|(_, c)| {
                c.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .filter(|c| !c.is_empty());
        return Some(contract::CallOrigin {
            via: "history_info".into(),
            from: shown(user),
            reason,
        });
    }
    let diversion = values("Diversion");
    let last = diversion.last()?;
    let reason = last
        .split(';')
        .find_map(|p| p.trim().strip_prefix("reason="))
        .map(|r| r.trim_matches('"').to_owned());
    Some(contract::CallOrigin {
        via: "diversion".into(),
        from: shown(user_of(last)?),
        reason,
    })
}

/// The comma-separated entries of a header value, commas inside `<...>` or quotes kept.
fn split_entries(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|e| !e.is_empty());
    out
}

/// The user part of a name-addr or addr-spec (`"Name" <sip:user@host>;tag=x`), if any.
pub fn user_of(addr: &str) -> Option<String> {
    let inner = match (addr.find('<'), addr.find('>')) {
        (Some(a), Some(b)) if a < b => &addr[a + 1..b],
        _ => addr.split(';').next().unwrap_or(addr),
    };
    let rest = inner
        .strip_prefix("sip:")
        .or_else(|| inner.strip_prefix("sips:"))
        .or_else(|| inner.strip_prefix("tel:"))?;
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if inner.starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split([';', ':']).next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_owned())
}

/// Whether the message carries an SDP body (a non-empty body of type application/sdp).
pub fn has_sdp<M: HasHeaders>(m: &M, body: &[u8]) -> bool {
    !body.is_empty()
        && m.headers().iter().any(|h| match h {
            Header::ContentType(c) => c
                .value()
                .to_ascii_lowercase()
                .starts_with("application/sdp"),
            _ => false,
        })
}

/// A response to `req` (RFC 3261 §8.2.6.2): Vias, From, Call-ID and CSeq copied, To
/// copied with `to_tag` added when it has none (never on 100).
pub fn response(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let has_tag = to.typed().ok().and_then(|t| t.tag().cloned()).is_some();
                match to_tag {
                    Some(tag) if !has_tag && code > 100 => headers
                        .push(rsip::headers::To::new(format!("{};tag={tag}", to.value())).into()),
                    _ => headers.push(h.clone()),
                }
            }
            _ => {}
        }
    }
    Response {
        status_code: status(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Sets a body (SDP) with its Content-Type.
pub fn set_sdp(headers: &mut rsip::Headers, body_slot: &mut Vec<u8>, sdp: Vec<u8>) {
    headers.retain(|h| !matches!(h, Header::ContentType(_)));
    headers.push(rsip::headers::ContentType::new("application/sdp").into());
    *body_slot = sdp;
}

/// The bytes to send: rsip's rendering with exactly one correct Content-Length.
pub fn encode(message: impl Into<SipMessage>) -> bytes::Bytes {
    let mut message: SipMessage = message.into();
    let len = message.body().len();
    message
        .headers_mut()
        .retain(|h| !matches!(h, Header::ContentLength(_)));
    message
        .headers_mut()
        .push(rsip::headers::ContentLength::new(len.to_string()).into());
    bytes::Bytes::from(message.to_string().into_bytes())
}

/// Applies RFC 3581 to a request received over UDP from `source`: the top Via gets
/// `received` when the source address differs from its sent-by, and `rport` gets the
/// source port when the client asked for it. Returns whether the client asked (then
/// responses go to the source address and port).
pub fn stamp_received(req: &mut Request, source: std::net::SocketAddr) -> bool {
    let Some(via) = req.headers.iter_mut().find_map(|h| match h {
        Header::Via(v) => Some(v),
        _ => None,
    }) else {
        return false;
    };
    let value = via.value().to_owned();
    let mut parts: Vec<String> = value.split(';').map(|p| p.trim().to_owned()).collect();
    let mut asked = false;
    for p in parts.iter_mut().skip(1) {
        if p.eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", source.port());
            asked = true;
        }
    }
    if !parts
        .iter()
        .skip(1)
        .any(|p| p.to_ascii_lowercase().starts_with("received="))
    {
        let sent_by_host = parts[0]
            .split_whitespace()
            .nth(1)
            .map(|h| {
                h.rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(h)
                    .trim_matches(['[', ']'])
            })
            .unwrap_or_default();
        if sent_by_host != source.ip().to_string() || asked {
            parts.push(format!("received={}", source.ip()));
        }
    }
    via.replace(parts.join(";"));
    asked
}

/// The port of the top Via's sent-by, if given.
pub fn via_sent_by_port<M: HeadersExt>(m: &M) -> Option<u16> {
    let via = m.via_header().ok()?.typed().ok()?;
    via.uri.host_with_port.port.map(|p| *p.value())
}

/// A fresh tag or branch suffix: 16 random hex digits.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite_with(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:12345@gw.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:13800138000@carrier.example>;tag=a\r\nTo: <sip:12345@gw.example>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_bytes()).expect("a valid INVITE")
    }

    #[test]
    fn a_call_transferred_by_110_keeps_its_origin() {
        let hi = invite_with(
            "History-Info: <sip:110@pstn.example;cause=302>;index=1, <sip:12345@gw.example>;index=1.1\r\n",
        );
        let o = origin(&hi).expect("an origin");
        assert_eq!(
            (o.via.as_str(), o.from.as_str(), o.reason.as_deref()),
            ("history_info", "110", Some("302"))
        );
        let div =
            invite_with("Diversion: <sip:119@pstn.example>;reason=unconditional;counter=1\r\n");
        let o = origin(&div).expect("an origin");
        assert_eq!(
            (o.via.as_str(), o.from.as_str(), o.reason.as_deref()),
            ("diversion", "119", Some("unconditional"))
        );
        // A person's mobile forwarding to the hotline is masked (Art. 21).
        let mobile = invite_with("Diversion: <tel:13912345678>;reason=no-answer\r\n");
        assert_eq!(origin(&mobile).map(|o| o.from), Some("139****5678".into()));
        // One History-Info entry is no retargeting; nothing at all is no origin.
        assert_eq!(
            origin(&invite_with(
                "History-Info: <sip:12345@gw.example>;index=1\r\n"
            )),
            None
        );
        assert_eq!(origin(&invite_with("")), None);
    }

    const LIMITS: Limits = Limits {
        max_message_bytes: 8192,
        max_headers: 64,
    };

    fn invite(extra: &str, drop: &str) -> Vec<u8> {
        let all = [
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;rport",
            "From: <sip:13800138000@carrier>;tag=1",
            "To: <sip:12345@hotline>",
            "Call-ID: abc@10.0.0.1",
            "CSeq: 1 INVITE",
            "Max-Forwards: 70",
        ];
        let mut s = String::from("INVITE sip:12345@hotline SIP/2.0\r\n");
        for h in all
            .iter()
            .filter(|h| drop.is_empty() || !h.starts_with(drop))
        {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str(extra);
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn rejected_code(r: Result<SipMessage, Rejected>) -> Option<u16> {
        match r {
            Err(Rejected::Answer(resp, _)) => Some(resp.status_code.code()),
            _ => None,
        }
    }

    #[test]
    fn a_good_invite_parses() {
        let m = parse(&invite("", ""), true, LIMITS, "gw").expect("valid");
        let SipMessage::Request(r) = m else {
            panic!("a request")
        };
        assert_eq!(call_id(&r), "abc@10.0.0.1");
        assert_eq!(cseq(&r), Some((1, Method::Invite)));
        assert_eq!(branch(&r).as_deref(), Some("z9hG4bK776"));
        assert_eq!(from_tag(&r).as_deref(), Some("1"));
        assert_eq!(to_tag(&r), None);
    }

    #[test]
    fn missing_mandatory_headers_get_400_with_a_warning() {
        for h in ["Call-ID", "CSeq", "From", "To"] {
            let r = parse(&invite("", h), true, LIMITS, "gw");
            let Err(Rejected::Answer(resp, why)) = r else {
                panic!("{h}: expected an answer")
            };
            assert_eq!(resp.status_code.code(), 400, "{h}");
            assert!(why.contains(h), "{h}: {why}");
            let text = resp.to_string();
            assert!(text.contains("Warning: 399 gw"), "{text}");
        }
        assert!(matches!(
            parse(&invite("", "Via"), true, LIMITS, "gw"),
            Err(Rejected::Drop(_))
        ));
    }

    #[test]
    fn cseq_method_must_match_and_max_forwards_zero_is_483() {
        let bad = String::from_utf8(invite("", ""))
            .expect("utf8")
            .replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        assert_eq!(
            rejected_code(parse(bad.as_bytes(), true, LIMITS, "gw")),
            Some(400)
        );
        let hops = String::from_utf8(invite("", ""))
            .expect("utf8")
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(
            rejected_code(parse(hops.as_bytes(), true, LIMITS, "gw")),
            Some(483)
        );
    }

    #[test]
    fn wrong_version_is_505_and_garbage_is_dropped() {
        let v = String::from_utf8(invite("", ""))
            .expect("utf8")
            .replace("SIP/2.0\r\n", "SIP/3.0\r\n");
        assert_eq!(
            rejected_code(parse(v.as_bytes(), true, LIMITS, "gw")),
            Some(505)
        );
        assert!(matches!(
            parse(b"\x16\x03\x01garbage", true, LIMITS, "gw"),
            Err(Rejected::Drop(_))
        ));
    }

    #[test]
    fn responses_copy_the_dialog_headers_and_add_a_to_tag() {
        let SipMessage::Request(r) = parse(&invite("", ""), true, LIMITS, "gw").expect("valid")
        else {
            panic!("a request")
        };
        let resp = response(&r, 486, Some("t1"));
        let text = String::from_utf8(encode(resp).to_vec()).expect("utf8");
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        assert!(text.contains("To: <sip:12345@hotline>;tag=t1"), "{text}");
        assert!(text.contains("Call-ID: abc@10.0.0.1"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn rport_and_received_are_stamped() {
        let SipMessage::Request(mut r) = parse(&invite("", ""), true, LIMITS, "gw").expect("valid")
        else {
            panic!("a request")
        };
        let asked = stamp_received(&mut r, "192.0.2.7:40000".parse().expect("addr"));
        assert!(asked);
        let via = r.via_header().expect("via").value().to_owned();
        assert_eq!(
            via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;rport=40000;received=192.0.2.7"
        );
    }

    #[test]
    fn users_of_addresses() {
        assert_eq!(
            user_of("\"A\" <sip:+8613800138000@x;user=phone>;tag=1").as_deref(),
            Some("+8613800138000")
        );
        assert_eq!(user_of("<tel:+862112345>").as_deref(), Some("+862112345"));
        assert_eq!(user_of("sip:host.only"), None);
    }
}
