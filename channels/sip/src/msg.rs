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
    if is_request
        && let Some(why) = request_uri_fault(norm.start_line.split(' ').nth(1).unwrap_or_default())
    {
        return Err(answer_raw(&norm, 400, why, host));
    }
    if is_request {
        let method = norm.start_line.split(' ').next().unwrap_or_default();
        if is_token(method) && !KNOWN_METHODS.contains(&method) {
            // RFC 3261 §8.2.1: 501, and an Allow header saying what is implemented. This
            // comes before the CSeq check: RFC 4475 3.1.2.18 ("mismatch02", an unknown
            // method whose CSeq names another) allows 501 as well as 400.
            let allow = Header::Other("Allow".into(), crate::ALLOW.into());
            return Err(answer_with(
                &norm,
                501,
                "method not implemented",
                host,
                vec![allow],
            ));
        }
    }
    if is_request
        && let Some(scheme) = foreign_scheme(norm.start_line.split(' ').nth(1).unwrap_or_default())
    {
        // RFC 3261 §8.2.2.1, after the method (§8.2.1): a Request-URI scheme the gateway
        // does not serve is 416, not 400 (RFC 4475 3.3.2 "unkscm", 3.3.3 "novelsc").
        let why = format!("unsupported Request-URI scheme {scheme}");
        return Err(answer_raw(&norm, 416, &why, host));
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
            check_raw(&norm).map_err(|why| answer_raw(&norm, 400, &why, host))?;
            check_require(&request, &norm, host)?;
            check_body(&request, &norm, host)?;
            check_accept(&request, &norm, host)?;
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

/// What is wrong with a Request-URI that rsip would take or misread, if anything.
/// RFC 4475 3.1.2.7 ("ltgtruri"): the Request-URI is never in `<...>` (RFC 3261 §25.1
/// `Request-URI = SIP-URI / SIPS-URI / absoluteURI`). RFC 4475 3.1.2.11 ("escruri"):
/// RFC 3261 §19.1.1's table does not allow headers (`?Route=...`) in a SIP
/// Request-URI; 400 is what RFC 4475 names (ignoring them would be the liberal choice,
/// but a gateway that places calls should not guess what the sender meant).
fn request_uri_fault(uri: &str) -> Option<&'static str> {
    if uri.starts_with('<') {
        return Some("Request-URI in <...>");
    }
    let lower = uri.get(..5).unwrap_or_default().to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower == "sips:" {
        &uri[5..]
    } else {
        return None;
    };
    // The user part may hold `?` (RFC 3261's user-unreserved, RFC 4475 3.1.1.2) but never
    // an unescaped `@`, so the host and what follows start after the first `@`.
    let host_on = rest.split_once('@').map_or(rest, |(_, h)| h);
    host_on
        .contains('?')
        .then_some("headers in the Request-URI")
}

/// The scheme of a Request-URI that is a well-formed `scheme ":"` but not one the gateway
/// serves (`sip`, `sips`, `tel`): `nobodyKnowsThisScheme`, `soap.beep`.
fn foreign_scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let served = ["sip", "sips", "tel"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s));
    (well_formed && !served).then_some(scheme)
}

/// RFC 3261 §25.1 `token`, which a method is.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
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
    let from = m
        .from_header()
        .map_err(|_| "missing From header".to_owned())?;
    if from.typed().is_err() && !opaque_addr(from.value()) {
        return Err("malformed From header".to_owned());
    }
    let to = m.to_header().map_err(|_| "missing To header".to_owned())?;
    if to.typed().is_err() && !opaque_addr(to.value()) {
        return Err("malformed To header".to_owned());
    }
    Ok(())
}

/// A From or To whose URI has a scheme other than `sip`/`sips`, in `<...>`
/// (`<isbn:2983792873>`, `<urn:service:sos>`) or as a bare addr-spec (`isbn:2983792873`,
/// as RFC 4475 3.3.4 "unksm2" sends its To). RFC 3261 §8.1.1.2/§8.1.1.3 lets a UAS take
/// such a URI as opaque; rsip's typed parser reads anything after a colon as a port and
/// refuses it. The rest of the crate copies these headers raw, and
/// [`from_tag`]/[`to_tag`] read the tag from the raw value.
fn opaque_addr(value: &str) -> bool {
    let (uri, bare) = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) => {
            if open > close || !quotes_balanced(&value[..open]) {
                return false;
            }
            (&value[open + 1..close], false)
        }
        // An addr-spec: the URI runs to the first `;`, the header's parameters follow
        // (a URI holding `;`, `,` or `?` must be in brackets, RFC 3261 §20.10).
        (None, None) => (value.split(';').next().unwrap_or_default().trim(), true),
        _ => return false,
    };
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !scheme.eq_ignore_ascii_case("sip")
        && !scheme.eq_ignore_ascii_case("sips")
        && !rest.is_empty()
        && !rest.contains(['<', '>', ' ', '"'])
        && !(bare && rest.contains([',', '?']))
}

/// The `tag` parameter of a raw From/To value, outside its `<...>` (or after the URI of
/// an addr-spec, which runs to the first `;`).
fn raw_tag(value: &str) -> Option<String> {
    let params = value.rfind('>').map_or(value, |close| &value[close..]);
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("tag") && !v.trim().is_empty()).then(|| v.trim().to_owned())
    })
}

fn check_request(r: &Request) -> Result<(), String> {
    check_common(r)?;
    let (_, method) = cseq(r).ok_or("malformed CSeq header")?;
    if method != r.method {
        return Err("CSeq method does not match the request method".into());
    }
    Ok(())
}

/// Option tags the gateway supports (RFC 3261 §8.2.2.3): none, so any `Require` tag is
/// unsupported. The gateway sends no `Supported` header either.
pub const SUPPORTED: &[&str] = &[];

/// Headers RFC 3261 §7.3.1 allows once only (they are not comma-separated lists).
const SINGLE: &[&str] = &[
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Type",
];

/// The §8.2 checks rsip does not make, on the header values as received (normalised):
/// RFC 4475 3.1.2.6 (unbalanced quotes), 3.3.8 (a single-valued header twice), an empty
/// Call-ID, and a Max-Forwards that is not `1*DIGIT` (negative, or not a number).
fn check_raw(norm: &Normalized) -> Result<(), String> {
    for name in SINGLE {
        if norm.values(name).count() > 1 {
            return Err(format!("more than one {name} header"));
        }
    }
    if norm.value("Call-ID").is_some_and(|v| v.trim().is_empty()) {
        return Err("empty Call-ID header".into());
    }
    if let Some(v) = norm.value("Max-Forwards") {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.parse::<u32>().is_err() {
            return Err("malformed Max-Forwards header".into());
        }
    }
    // One pass per header, each value masked once: this runs on every message.
    for name in [
        "Via",
        "Route",
        "Record-Route",
        "From",
        "To",
        "Contact",
        "Reply-To",
    ] {
        let address = matches!(name, "From" | "To" | "Contact" | "Reply-To");
        for v in norm.values(name) {
            if address && !quotes_balanced(v) {
                return Err(format!("unterminated quoted string in {name} header"));
            }
            let mask = masked(v);
            if name != "Reply-To" {
                check_separators(name, &mask)?;
            }
            if address {
                check_addresses(name, v, &mask)?;
            }
        }
    }
    if let Some(date) = norm.value("Date")
        && !is_sip_date(date)
    {
        return Err("malformed Date header".into());
    }
    Ok(())
}

/// `value` with every quoted string and every `<...>` replaced by `x`s, byte for byte (the
/// same length in bytes, so positions found in the mask slice `value` on the same char
/// boundaries: a quoted UTF-8 display name masked char by char came out shorter, and
/// slicing `value` at the mask's positions then fell inside a character), leaving the
/// separators that structure the header. Byte-wise is safe: the structure characters are
/// ASCII and never part of a UTF-8 sequence. It also runs on every From, To, Contact,
/// Via and Route of every message, so it allocates once and does no char decoding.
fn masked(value: &str) -> String {
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let mut out = Vec::with_capacity(value.len());
    for &c in value.as_bytes() {
        let hide = quoted || angle;
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' if !angle => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if angle => {
                angle = false;
                out.push(b'>');
                continue;
            }
            _ => {}
        }
        // Hidden bytes, the quotes, and every byte of a non-ASCII character become `x`
        // (the checks read structure from the mask and text from `value`).
        if hide || c == b'"' || !c.is_ascii() {
            out.push(b'x');
        } else {
            out.push(c);
        }
    }
    // Every byte is ASCII by construction.
    String::from_utf8(out).unwrap_or_default()
}

/// RFC 4475 3.1.2.1 ("badinv01"): `Via: SIP/2.0/UDP 192.0.2.15;;,;,,` and
/// `Contact: "Joe" <sip:joe@example.org>;;;;` are not RFC 3261 grammar: every `;` starts
/// a `generic-param` (a token at least) and every `,` another whole entry. Empty ones
/// get 400 rather than being skipped, as the RFC asks.
fn check_separators(name: &str, mask: &str) -> Result<(), String> {
    let bad = mask
        .split(',')
        .any(|entry| entry.split(';').any(|part| part.trim().is_empty()));
    if bad {
        return Err(format!("empty parameter or entry in {name} header"));
    }
    Ok(())
}

/// The name-addr / addr-spec rules RFC 3261 §20.10 and §25.1 set for From, To, Contact
/// and Reply-To:
/// - an unquoted display name is `*(token LWS)`: RFC 4475 3.1.2.15 ("baddn",
///   `From: Bell, Alexander <sip:...>`) gets 400;
/// - an addr-spec is a URI; and one with headers (`?`) must be in `<...>`: RFC 4475 3.1.2.13 ("regbadct",
///   `Contact: sip:user@example.com?Route=...`, whose `?` part could belong to the URI
///   or not) gets 400.
fn check_addresses(name: &str, value: &str, mask: &str) -> Result<(), String> {
    let entries: Vec<(usize, &str)> = if name == "Contact" {
        // Entries start after each top-level comma (the mask keeps positions).
        let mut start = 0;
        mask.split(',')
            .map(|e| {
                let at = start;
                start += e.len() + 1;
                (at, e)
            })
            .collect()
    } else {
        vec![(0, mask)]
    };
    for (at, entry) in entries {
        match entry.find('<') {
            Some(open) => {
                let shown = value[at..at + open].trim();
                // Non-ASCII is let through: not RFC 3261's token, but a carrier's
                // unquoted UTF-8 name is no separator and would not be worth a refused call.
                let token_words = shown.chars().all(|c| {
                    c == ' ' || c == '\t' || !c.is_ascii() || is_token(c.encode_utf8(&mut [0; 4]))
                });
                if !shown.starts_with('"') && !token_words {
                    return Err(format!(
                        "unquoted display name with separators in {name} header"
                    ));
                }
            }
            None => {
                let uri = entry.split(';').next().unwrap_or_default().trim();
                if uri.contains('?') {
                    return Err(format!("URI with headers outside <...> in {name} header"));
                }
                // An addr-spec is a URI, `scheme:...` (or Contact's `*`): what is left
                // of `Bell, Alexander <sip:...>` split at its comma is not one.
                if !uri.contains(':') && uri != "*" {
                    return Err(format!("malformed address in {name} header"));
                }
            }
        }
    }
    Ok(())
}

/// RFC 3261 §20.17: `SIP-date = rfc1123-date`, `wkday "," SP date1 SP time SP "GMT"`,
/// and "the time zone MUST be GMT". RFC 4475 3.1.2.12 ("baddate", `... 16:00:00 EST`)
/// gets 400. The day is taken with one digit too (RFC 1123's own `1*2DIGIT`), as some
/// senders write it.
fn is_sip_date(value: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let Some((wkday, rest)) = value.trim().split_once(", ") else {
        return false;
    };
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, zone] = parts[..] else {
        return false;
    };
    let hms: Vec<&str> = time.split(':').collect();
    DAYS.contains(&wkday)
        && digits(day, 1..=2)
        && MONTHS.contains(&month)
        && digits(year, 4..=4)
        && hms.len() == 3
        && hms.iter().all(|p| digits(p, 2..=2))
        && zone == "GMT"
}

/// Whether every quoted string in `value` is closed (`\"` inside one does not close it).
fn quotes_balanced(value: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// RFC 3261 §8.2.2.3: a `Require` naming an option tag the gateway does not support gets
/// 420 with `Unsupported` listing those tags; never for ACK or CANCEL. (`Proxy-Require`
/// is for proxies; a UAS ignores it.)
fn check_require(request: &Request, norm: &Normalized, host: &str) -> Result<(), Rejected> {
    if matches!(request.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    let unsupported: Vec<&str> = norm
        .values("Require")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    let header = Header::Other("Unsupported".into(), unsupported.join(", "));
    Err(answer_with(
        norm,
        420,
        "unsupported extension required",
        host,
        vec![header],
    ))
}

/// What the gateway accepts as an INVITE body (RFC 3261 §8.2.3's `Accept`).
pub const ACCEPT: &str = "application/sdp, multipart/mixed";

/// RFC 3261 §8.2.3, RFC 4475 3.3.6 ("invut"): an INVITE whose body the gateway cannot
/// read (a type other than SDP, a multipart body without an SDP part, or a
/// Content-Encoding other than identity) gets 415 with `Accept` (and `Accept-Encoding`).
/// Other methods' bodies (INFO's DTMF) are the call's business.
fn check_body(request: &Request, norm: &Normalized, host: &str) -> Result<(), Rejected> {
    if request.method != Method::Invite || norm.body.is_empty() {
        return Ok(());
    }
    if let Some(enc) = norm.value("Content-Encoding")
        && enc
            .split(',')
            .map(str::trim)
            .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        let header = Header::Other("Accept-Encoding".into(), "identity".into());
        return Err(answer_with(
            norm,
            415,
            "unsupported Content-Encoding",
            host,
            vec![header],
        ));
    }
    let content_type = norm.value("Content-Type").unwrap_or_default();
    if sdp_in(content_type, &norm.body, 0).is_some() {
        return Ok(());
    }
    let header = Header::Other("Accept".into(), ACCEPT.into());
    Err(answer_with(
        norm,
        415,
        "body type not supported",
        host,
        vec![header],
    ))
}

/// RFC 3261 §20.1 and §21.4.7, RFC 4475 3.3.15 ("sdp01"): an INVITE whose `Accept` names
/// types, none of them SDP, cannot take the gateway's answer (its 200 carries SDP): 406.
/// Without `Accept` SDP is assumed (§20.1). An empty one (RFC 3261: no type acceptable)
/// is left alone too: a call refused over an empty header would cost a citizen more than
/// an answer the caller may ignore.
fn check_accept(request: &Request, norm: &Normalized, host: &str) -> Result<(), Rejected> {
    if request.method != Method::Invite {
        return Ok(());
    }
    let types: Vec<String> = norm
        .values("Accept")
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect();
    let sdp = |t: &String| matches!(t.as_str(), "application/sdp" | "application/*" | "*/*");
    if types.is_empty() || types.iter().any(sdp) {
        return Ok(());
    }
    Err(answer_raw(norm, 406, "only application/sdp answers", host))
}

/// The SDP of a message body: the body itself when it is `application/sdp`, or the first
/// `application/sdp` part of a `multipart/mixed` or `multipart/alternative` body
/// (RFC 5621; the SIP-I/SIP-T shape with an `application/isup` part beside the SDP,
/// RFC 3204), one nested multipart level deep. `None` when there is none.
pub fn sdp_part(headers: &rsip::Headers, body: &[u8]) -> Option<Vec<u8>> {
    let content_type = headers.iter().find_map(|h| match h {
        Header::ContentType(c) => Some(c.value().to_owned()),
        _ => None,
    })?;
    sdp_in(&content_type, body, 0)
}

fn sdp_in(content_type: &str, body: &[u8], depth: u8) -> Option<Vec<u8>> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim().to_ascii_lowercase();
    if media == "application/sdp" {
        return (!body.is_empty()).then(|| body.to_vec());
    }
    if depth > 1 || (media != "multipart/mixed" && media != "multipart/alternative") {
        return None;
    }
    let boundary = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })?;
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // Positions of every delimiter that starts a line.
    let mut starts = Vec::new();
    let mut i = 0;
    while i + delimiter.len() <= body.len() {
        if &body[i..i + delimiter.len()] == delimiter && (i == 0 || body[i - 1] == b'\n') {
            starts.push(i);
            i += delimiter.len();
        } else {
            i += 1;
        }
    }
    for pair in starts.windows(2) {
        let after = pair[0] + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        // The part runs from the line after the delimiter to the CRLF before the next.
        let line_end = body[after..].iter().position(|b| *b == b'\n')? + after + 1;
        let mut end = pair[1];
        if end > line_end && body[end - 1] == b'\n' {
            end -= 1;
            if end > line_end && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        let part = &body[line_end..end.max(line_end)];
        let (head, content) = match part.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(p) => (&part[..p], &part[p + 4..]),
            None if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
            None => continue,
        };
        let head = String::from_utf8_lossy(head);
        // A part without Content-Type is text/plain (RFC 2046 §5.1).
        let part_type = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| {
                n.trim().eq_ignore_ascii_case("Content-Type") || n.trim().eq_ignore_ascii_case("c")
            })
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        if let Some(sdp) = sdp_in(&part_type, content, depth + 1) {
            return Some(sdp);
        }
    }
    None
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
    answer_with(raw, code, why, host, Vec::new())
}

/// [`answer_raw`] with `extra` headers (Allow, Unsupported, Accept) before the Warning.
fn answer_with(raw: &Normalized, code: u16, why: &str, host: &str, extra: Vec<Header>) -> Rejected {
    let looks_like_request = raw
        .start_line
        .split(' ')
        .next()
        .is_some_and(|m| !m.is_empty() && !m.starts_with("SIP/") && is_token(m));
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
        // RFC 3261 §8.2.6.2: a final response adds a To tag when the request had none.
        let v = if to_has_tag(v) {
            v.to_owned()
        } else {
            format!("{v};tag={}", random_token())
        };
        headers.push(rsip::headers::To::new(v).into());
    }
    if let Some(v) = raw.value("Call-ID") {
        headers.push(rsip::headers::CallId::new(v).into());
    }
    if let Some(v) = raw.value("CSeq") {
        headers.push(rsip::headers::CSeq::new(v).into());
    }
    headers.extend(extra);
    headers.push(warning(host, why));
    let response = Response {
        status_code: status(code),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    };
    Rejected::Answer(Box::new(response), why.to_owned())
}

/// Whether a raw To value carries a tag parameter (outside its `<...>` and quotes).
fn to_has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(p) => &value[p..],
        None => value,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag"))
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
        406 => "Not Acceptable",
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
    let to = m.to_header().ok()?;
    match to.typed() {
        Ok(t) => t.tag().map(|t| t.value().to_owned()),
        Err(_) => raw_tag(to.value()),
    }
}

/// The tag of the From header.
pub fn from_tag<M: HeadersExt>(m: &M) -> Option<String> {
    let from = m.from_header().ok()?;
    match from.typed() {
        Ok(f) => f.tag().map(|t| t.value().to_owned()),
        Err(_) => raw_tag(from.value()),
    }
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

/// The calling number as the INVITE gives it: P-Asserted-Identity (RFC 3325, what a
/// carrier's network asserts), else the From user.
pub fn calling_number(invite: &Request) -> Option<String> {
    other_header(invite, "P-Asserted-Identity")
        .and_then(user_of)
        .or_else(|| invite.from_header().ok().and_then(|f| user_of(f.value())))
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
        // The sent-by's host as an address: split by rsip, which knows that an IPv6
        // reference's colons are not the port's (RFC 3261 §25.1), and compared as an
        // address, since `2001:DB8::1` and `2001:db8:0::1` are the same one.
        let sent_by_ip = parts[0]
            .split_whitespace()
            .nth(1)
            .and_then(|h| rsip::HostWithPort::try_from(h).ok())
            .and_then(|hp| match hp.host {
                rsip::Host::IpAddr(ip) => Some(ip),
                rsip::Host::Domain(_) => None,
            });
        if sent_by_ip != Some(source.ip()) || asked {
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

    /// IPv6 references (RFC 3261 §25.1, RFC 5118's torture messages) parse wherever a
    /// host is: Request-URI, Via sent-by, From, To, Contact, Record-Route.
    #[test]
    fn ipv6_references_parse_in_request_uri_via_contact_and_record_route() {
        let r = parses("rfc3261-ipv6-options");
        assert_eq!(r.uri.to_string(), "sip:12345@[2001:db8::10]:5060");
        assert_eq!(via_sent_by_port(&r), Some(5060));
        let via = r.via_header().expect("via").typed().expect("typed via");
        assert_eq!(via.uri.host_with_port.to_string(), "[2001:db8::10]:5060");
        assert_eq!(
            user_of(r.contact_header().expect("contact").value()).as_deref(),
            Some("13800138000")
        );
        for name in [
            "rfc5118-ipv6-good",
            "rfc5118-port-ambiguous",
            "rfc5118-port-unambiguous",
            "rfc5118-via-received-reference",
        ] {
            parses(name);
        }
        assert_eq!(
            parses("rfc5118-port-ambiguous").uri.to_string(),
            "sip:[2001:db8::10:5070]"
        );
        assert_eq!(
            parses("rfc5118-port-unambiguous").uri.to_string(),
            "sip:[2001:db8::10]:5070"
        );
        let rr = String::from_utf8(invite(
            "Record-Route: <sip:[2001:db8::30]:5060;lr>, <sip:192.0.2.1;lr>\r\n",
            "",
        ))
        .expect("text");
        let SipMessage::Request(r) = parse(rr.as_bytes(), true, LIMITS, "gw").expect("valid")
        else {
            panic!("a request")
        };
        let text = r.to_string();
        assert!(
            text.contains("Record-Route: <sip:[2001:db8::30]:5060;lr>,<sip:192.0.2.1;lr>"),
            "{text}"
        );
    }

    #[test]
    fn ipv6_hosts_without_brackets_or_unclosed_get_400() {
        for name in ["rfc5118-ipv6-bad", "rfc3261-ipv6-unclosed"] {
            let (code, text) = answer_to(name);
            assert_eq!(code, 400, "{name}: {text}");
        }
    }

    #[test]
    fn received_is_stamped_for_ipv6_sources_only_when_they_differ() {
        let text = String::from_utf8(invite("", ""))
            .expect("text")
            .replace("10.0.0.1:5060", "[2001:DB8::1]:5060");
        let SipMessage::Request(mut r) = parse(text.as_bytes(), true, LIMITS, "gw").expect("valid")
        else {
            panic!("a request")
        };
        // The same address written differently is the same address: only rport.
        let mut same = r.clone();
        stamp_received(&mut same, "[2001:db8::1]:40000".parse().expect("addr"));
        let via = same.via_header().expect("via").value().to_owned();
        assert!(via.ends_with(";rport=40000;received=2001:db8::1"), "{via}");
        // received is written bare, as RFC 3261's `received = IPv6address` has it.
        stamp_received(&mut r, "[2001:db8::7]:40000".parse().expect("addr"));
        let via = r.via_header().expect("via").value().to_owned();
        assert!(via.ends_with(";received=2001:db8::7"), "{via}");
        let typed = r.via_header().expect("via").typed().expect("typed");
        assert_eq!(
            typed.received().expect("an address"),
            Some("2001:db8::7".parse().expect("ip"))
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

    /// A message of the fuzz corpus (also sent by the e2e conformance suite).
    fn corpus(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/fuzz/corpus/sip_message/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The error response to a corpus message, as text.
    fn answer_to(name: &str) -> (u16, String) {
        match parse(&corpus(name), true, LIMITS, "gw") {
            Err(Rejected::Answer(resp, _)) => (resp.status_code.code(), resp.to_string()),
            Err(Rejected::Drop(why)) => panic!("{name}: dropped: {why}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }

    fn parses(name: &str) -> Request {
        match parse(&corpus(name), true, LIMITS, "gw") {
            Ok(SipMessage::Request(r)) => r,
            Ok(_) => panic!("{name}: not a request"),
            Err(Rejected::Answer(resp, why)) => panic!("{name}: {why}: {resp}"),
            Err(Rejected::Drop(why)) => panic!("{name}: dropped: {why}"),
        }
    }

    #[test]
    fn rfc4475_3_1_1_1_wsinv_parses() {
        let r = parses("rfc4475-wsinv");
        assert_eq!(r.method, Method::Invite);
        assert_eq!(call_id(&r), "wsinv.ndaksdj@192.0.2.1");
        assert_eq!(cseq(&r), Some((9, Method::Invite)));
        assert_eq!(branch(&r).as_deref(), Some("390skdjuw"));
        assert_eq!(from_tag(&r).as_deref(), Some("98asjd8"));
        assert_eq!(to_tag(&r).as_deref(), Some("1918181833n"));
        assert_eq!(max_forwards(&r), Some(68));
        assert_eq!(via_sent_by_port(&r), Some(9));
        assert_eq!(r.body.len(), 150);
        assert_eq!(
            other_header(&r, "NewFangledHeader"),
            Some("newfangled value continued newfangled value")
        );
        // The display name's escaped quote is kept byte for byte.
        let from = r.from_header().expect("from").value().to_owned();
        assert_eq!(
            from,
            r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#
        );
        let vias: Vec<String> = r
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Via(v) => Some(v.value().to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP 127.0.0.1:9;branch=390skdjuw;rport",
                "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8,SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239"
            ]
        );
    }

    #[test]
    fn folding_whitespace_before_colons_and_compact_forms_parse() {
        let r = parses("rfc3261-folded-from");
        assert_eq!(from_tag(&r).as_deref(), Some("ff1"));
        assert_eq!(cseq(&r), Some((1, Method::Options)));
        let r = parses("rfc3261-ws-before-colon");
        assert_eq!(from_tag(&r).as_deref(), Some("w1"));
        assert_eq!(branch(&r).as_deref(), Some("z9hG4bKwscolon"));
        assert_eq!(call_id(&r), "wscolon@conformance");
        let r = parses("rfc3261-compact");
        assert_eq!(call_id(&r), "compact@conformance");
        let text = r.to_string();
        assert!(text.contains("Subject: all compact forms\r\n"), "{text}");
        assert!(text.contains("Supported: timer\r\n"), "{text}");
        assert!(r.contact_header().is_ok());
    }

    /// RFC 4475 3.1.1.9: `;`, `=` and an escaped `@` in the Request-URI's user part are
    /// the user's, not URI parameters (parsed by the patched rsip, vendor/README.md).
    #[test]
    fn rfc4475_3_1_1_9_reserved_characters_in_the_user_part_are_the_users() {
        let r = parses("rfc4475-semiuri");
        assert_eq!(r.uri.user(), Some("user;par=u%40example.net"));
        assert_eq!(r.uri.host_with_port.to_string(), "gw");
        assert!(r.uri.params.is_empty(), "{:?}", r.uri.params);
    }

    #[test]
    fn rfc4475_3_3_4_unknown_uri_schemes_in_to_and_from_are_opaque() {
        // The RFC's REGISTER: `To: isbn:2983792873` (a bare addr-spec), From
        // `<http://www.example.com>`, Contact `<name:John_Smith>`.
        let r = parses("rfc4475-unksm2");
        assert_eq!(from_tag(&r).as_deref(), Some("3234233"));
        assert_eq!(to_tag(&r), None);
        let text = String::from_utf8(corpus("rfc4475-unksm2")).expect("utf8");
        for (to, tag) in [
            ("<urn:service:sos>;tag=t9", "t9"),
            ("isbn:2983792873;tag=t8", "t8"),
        ] {
            let m = text.replace("isbn:2983792873", to);
            let SipMessage::Request(r) = parse(m.as_bytes(), true, LIMITS, "gw").expect("valid")
            else {
                panic!("a request")
            };
            assert_eq!(to_tag(&r).as_deref(), Some(tag), "{to}");
        }
        assert!(opaque_addr("<isbn:2983792873>"));
        assert!(opaque_addr("isbn:2983792873 ;tag=x"));
        // Not a licence for garbage: no scheme, or a space inside the brackets.
        assert!(!opaque_addr("<isbn 2983792873>"));
        assert!(!opaque_addr("<:x>"));
        assert!(!opaque_addr("\"a <urn:x>"));
        assert!(!opaque_addr("isbn:29,83"), "a comma needs brackets");
        assert!(!opaque_addr("isbn:"));
        assert!(!opaque_addr("urn:x>"));
    }

    #[test]
    fn rfc4475_3_3_11_zeromf_options_is_answered() {
        parses("rfc4475-zeromf");
    }

    #[test]
    fn rfc4475_3_1_1_2_intmeth_and_unknown_methods_get_501_with_allow() {
        for name in ["rfc4475-intmeth", "rfc3261-newmethod", "rfc4475-mismatch02"] {
            let (code, text) = answer_to(name);
            assert_eq!(code, 501, "{name}: {text}");
            assert!(
                text.contains(&format!("Allow: {}\r\n", crate::ALLOW)),
                "{name}: {text}"
            );
            let to = text
                .lines()
                .find(|l| l.starts_with("To: "))
                .unwrap_or_else(|| panic!("{name}: no To: {text}"));
            assert!(to.contains("sip:"), "{name}: {text}");
            assert!(to.contains(";tag="), "{name}: a To tag: {text}");
        }
        // 3.1.1.2 as the RFC gives it: control characters as quoted-pairs in the To's
        // display name, echoed as they came.
        let (_, text) = answer_to("rfc4475-intmeth");
        assert!(
            text.contains("To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual"),
            "{text}"
        );
    }

    #[test]
    fn rfc4475_3_3_5_bext01_gets_420_with_unsupported() {
        let (code, text) = answer_to("rfc4475-bext01");
        assert_eq!(code, 420, "{text}");
        assert!(
            text.contains("Unsupported: nothingSupportsThis, nothingSupportsThisEither\r\n"),
            "Proxy-Require is not a UAS's business: {text}"
        );
        // Not for ACK or CANCEL.
        let cancel = String::from_utf8(corpus("rfc4475-bext01"))
            .expect("utf8")
            .replace("OPTIONS", "CANCEL");
        assert!(parse(cancel.as_bytes(), true, LIMITS, "gw").is_ok());
    }

    #[test]
    fn rfc4475_3_3_6_invut_gets_415_with_accept() {
        let (code, text) = answer_to("rfc4475-invut");
        assert_eq!(code, 415, "{text}");
        assert!(
            text.contains("Accept: application/sdp, multipart/mixed\r\n"),
            "{text}"
        );
        // A Content-Encoding the gateway cannot undo is 415 too.
        let gz = String::from_utf8(corpus("rfc4475-mpart01"))
            .expect("utf8")
            .replace("MIME-Version: 1.0", "Content-Encoding: gzip");
        assert_eq!(
            rejected_code(parse(gz.as_bytes(), true, LIMITS, "gw")),
            Some(415)
        );
    }

    #[test]
    fn rfc4475_3_1_1_11_mpart01_multipart_invite_is_accepted() {
        let r = parses("rfc4475-mpart01");
        let sdp = sdp_part(&r.headers, &r.body).expect("an SDP part");
        assert!(
            sdp.starts_with(b"v=0\r\n"),
            "{}",
            String::from_utf8_lossy(&sdp)
        );
        assert!(
            sdp.ends_with(b"m=audio 9 RTP/AVP 0\r\n"),
            "{}",
            String::from_utf8_lossy(&sdp)
        );
    }

    #[test]
    fn sdp_part_of_bodies() {
        let sdp = b"v=0\r\nm=audio 9 RTP/AVP 0\r\n";
        assert_eq!(sdp_in("application/SDP", sdp, 0).as_deref(), Some(&sdp[..]));
        assert_eq!(sdp_in("application/isup", sdp, 0), None);
        assert_eq!(sdp_in("application/sdp", b"", 0), None);
        // Quoted boundary, a part without headers first, the SDP second, no CRLF kept.
        let body = b"preamble\r\n--b 1\r\n\r\nplain text\r\n--b 1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b 1--\r\n";
        assert_eq!(
            sdp_in("multipart/alternative; boundary=\"b 1\"", body, 0).as_deref(),
            Some(&b"v=0\r\n"[..])
        );
        // Nested one level: multipart/mixed holding a multipart/alternative.
        let nested = b"--o\r\nContent-Type: multipart/alternative;boundary=i\r\n\r\n--i\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--i--\r\n--o--\r\n";
        assert_eq!(
            sdp_in("multipart/mixed;boundary=o", nested, 0).as_deref(),
            Some(&b"v=0"[..])
        );
        // No SDP part, no boundary, an unterminated body: none.
        let isup = b"--b\r\nContent-Type: application/isup\r\n\r\n\x01\x10\r\n--b--\r\n";
        assert_eq!(sdp_in("multipart/mixed;boundary=b", isup, 0), None);
        assert_eq!(sdp_in("multipart/mixed", body, 0), None);
        assert_eq!(
            sdp_in(
                "multipart/mixed;boundary=b",
                b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0",
                0
            ),
            None
        );
    }

    #[test]
    fn rfc4475_3_1_2_6_quotbal_gets_400() {
        let (code, text) = answer_to("rfc4475-quotbal");
        assert_eq!(code, 400);
        assert!(text.contains("unterminated quoted string in To"), "{text}");
        // The same in a From.
        let from = String::from_utf8(corpus("rfc4475-quotbal"))
            .expect("utf8")
            .replace(
                "To: \"Mr. J. User <sip:j.user@example.com>",
                "To: <sip:j.user@example.com>",
            )
            .replace(
                "From: sip:caller@example.net;tag=93334",
                "From: \"Mr. J. User <sip:j.user@example.com>;tag=93334",
            );
        match parse(from.as_bytes(), true, LIMITS, "gw") {
            Err(Rejected::Answer(resp, why)) => {
                assert_eq!(resp.status_code.code(), 400);
                assert!(why.contains("unterminated quoted string in From"), "{why}");
            }
            other => panic!("an unbalanced From: {other:?}"),
        }
    }

    #[test]
    fn rfc4475_3_3_8_multi01_and_other_bad_scalars_get_400() {
        for (name, why) in [
            ("rfc3261-two-from", "more than one From"),
            ("rfc3261-two-callid", "more than one Call-ID"),
            ("rfc3261-empty-callid", "Call-ID"),
            ("rfc3261-negative-max-forwards", "malformed Max-Forwards"),
            ("rfc3261-nonnumeric-max-forwards", "malformed Max-Forwards"),
            ("rfc4475-scalar02", "CSeq"),
            ("rfc4475-clerr", "Content-Length"),
        ] {
            let (code, text) = answer_to(name);
            assert_eq!(code, 400, "{name}: {text}");
            assert!(text.contains("Warning: 399 gw"), "{name}: {text}");
            assert!(text.contains(why), "{name}: wanted {why:?} in {text}");
        }
        // 3.3.8 as the RFC prints it: its `l: 154` is more than the 152 bytes of SDP
        // that follow (with CRLF line ends), which is a 400 of its own; with the length
        // mended, the duplicated Call-ID, CSeq, From, To and Max-Forwards are.
        let (code, _) = answer_to("rfc4475-multi01");
        assert_eq!(code, 400);
        let mended = String::from_utf8(corpus("rfc4475-multi01"))
            .expect("utf8")
            .replace("l: 154", "l: 152");
        match parse(mended.as_bytes(), true, LIMITS, "gw") {
            Err(Rejected::Answer(resp, why)) => {
                assert_eq!(resp.status_code.code(), 400);
                assert!(why.contains("more than one"), "{why}");
            }
            other => panic!("multi01 mended: {other:?}"),
        }
    }
    #[test]
    fn rfc4475_3_1_1_valid_torture_messages_parse() {
        // 3.1.1.3 esc01: escapes in the Request-URI, To, From and Contact stay as sent.
        let esc01 = parses("rfc4475-esc01");
        assert_eq!(esc01.method, Method::Invite);
        assert!(esc01.uri.to_string().contains("sips%3Auser%40example.com"));
        // 3.1.1.4 escnull (%00 in URIs), 3.1.1.8 dblreq (a REGISTER with Content-Length
        // 0 and an INVITE after it in one datagram: the INVITE is not part of it).
        for name in ["rfc4475-escnull", "rfc4475-dblreq"] {
            let r = parses(name);
            assert_eq!(r.method, Method::Register, "{name}");
            assert!(r.body.is_empty(), "{name}");
        }
        // 3.1.1.6 lwsdisp, 3.1.1.10 transports.
        for name in ["rfc4475-lwsdisp", "rfc4475-transports"] {
            assert_eq!(parses(name).method, Method::Options, "{name}");
        }
        // 3.1.1.7 longreq: long values and 34 Vias in every case and compact form.
        let long = parses("rfc4475-longreq");
        assert_eq!(long.body.len(), 150);
        assert!(call_id(&long).starts_with("longreq.onereally"));
        // 3.1.1.5 esc02: `RE%47IST%45R` is not REGISTER but an unknown method.
        assert_eq!(answer_to("rfc4475-esc02").0, 501);
        // 3.1.1.12 unreason, 3.1.1.13 noreason: any reason phrase, or none.
        for (name, code) in [("rfc4475-unreason", 200), ("rfc4475-noreason", 100)] {
            match parse(&corpus(name), true, LIMITS, "gw") {
                Ok(SipMessage::Response(r)) => assert_eq!(u16::from(r.status_code), code),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn rfc4475_3_1_2_invalid_torture_messages_get_400_505_or_are_dropped() {
        for (name, code, why) in [
            ("rfc4475-badinv01", 400, "empty parameter or entry in Via"),
            ("rfc4475-ncl", 400, "Content-Length"),
            ("rfc4475-ltgtruri", 400, "Request-URI in <...>"),
            ("rfc4475-lwsruri", 400, "malformed request line"),
            ("rfc4475-lwsstart", 400, "malformed request line"),
            ("rfc4475-trws", 400, "malformed request line"),
            ("rfc4475-escruri", 400, "headers in the Request-URI"),
            ("rfc4475-baddate", 400, "malformed Date"),
            (
                "rfc4475-regbadct",
                400,
                "URI with headers outside <...> in Contact",
            ),
            ("rfc4475-badaspec", 400, "malformed To"),
            (
                "rfc4475-baddn",
                400,
                "unquoted display name with separators in From",
            ),
            ("rfc4475-badvers", 505, "only SIP/2.0"),
            ("rfc4475-mismatch01", 400, "CSeq method does not match"),
        ] {
            let (got, text) = answer_to(name);
            assert_eq!(got, code, "{name}: {text}");
            assert!(text.contains(why), "{name}: wanted {why:?} in {text}");
        }
        // 3.1.2.5 scalarlg and 3.1.2.19 bigcode are responses: dropped, never answered.
        for name in ["rfc4475-scalarlg", "rfc4475-bigcode"] {
            assert!(
                matches!(
                    parse(&corpus(name), true, LIMITS, "gw"),
                    Err(Rejected::Drop(_))
                ),
                "{name}"
            );
        }
    }

    /// The separator and address checks on one value, masked as `check_raw` does.
    fn separators(name: &str, value: &str) -> Result<(), String> {
        check_separators(name, &masked(value))
    }
    fn addresses(name: &str, value: &str) -> Result<(), String> {
        check_addresses(name, value, &masked(value))
    }

    #[test]
    fn separators_display_names_and_dates() {
        for (name, value) in [
            ("Contact", "*"),
            ("Contact", "\"a;,\" <sip:a@b;x>;expires=3, <sip:c@d>"),
            (
                "Via",
                "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport",
            ),
            (
                "Via",
                "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2",
            ),
        ] {
            assert_eq!(separators(name, value), Ok(()), "{value}");
        }
        for (name, value) in [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;"),
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1,"),
            ("Contact", "<sip:a@b>;;q=1"),
        ] {
            assert!(separators(name, value).is_err(), "{value}");
        }
        for value in [
            "A. Bell <sip:a@b>;tag=1",
            "\"Bell, A.\" <sip:a@b>",
            "张三 <sip:a@b>",
            "<sip:a@b?Route=x>",
            // A quoted UTF-8 name: the mask keeps byte positions (it once did not, and
            // slicing at its positions fell inside a character).
            "\"张三\" <sip:13800138000@carrier.example>;tag=1",
        ] {
            assert_eq!(addresses("From", value), Ok(()), "{value}");
        }
        assert_eq!(
            addresses("Contact", "\"李四\" <sip:a@b>, \"王五 先生\" <sip:c@d>"),
            Ok(())
        );
        assert!(addresses("Contact", "\"李四\" <sip:a@b>, Bell, Al <sip:c@d>").is_err());
        assert!(addresses("To", "Watson, Thomas <sip:t@b>").is_err());
        assert!(addresses("Contact", "<sip:a@b>, Bell, Al <sip:c@d>").is_err());
        assert!(addresses("Contact", "sip:a@b?Route=x").is_err());
        assert!(is_sip_date("Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(is_sip_date("Mon, 1 Feb 2027 08:00:00 GMT"));
        for bad in [
            "Fri, 01 Jan 2010 16:00:00 EST",
            "Fri 01 Jan 2010 16:00:00 GMT",
            "Fri, 01 January 2010 16:00:00 GMT",
            "Fri, 01 Jan 2010 16:00 GMT",
            "",
        ] {
            assert!(!is_sip_date(bad), "{bad}");
        }
    }
    #[test]
    fn rfc4475_3_3_semantic_torture_messages() {
        // 3.3.1 insuf: no Call-ID, From, To, Max-Forwards; 3.3.9 mcl01: Content-Length
        // twice, 13 and 5.
        assert_eq!(answer_to("rfc4475-insuf").0, 400);
        let (code, text) = answer_to("rfc4475-mcl01");
        assert_eq!(code, 400, "{text}");
        // 3.3.2 unkscm, 3.3.3 novelsc: Request-URI schemes the gateway does not serve.
        for name in ["rfc4475-unkscm", "rfc4475-novelsc"] {
            let (code, text) = answer_to(name);
            assert_eq!(code, 416, "{name}: {text}");
            assert!(text.contains("unsupported Request-URI scheme"), "{text}");
        }
        // 3.3.15 sdp01: an INVITE that accepts no SDP.
        let (code, text) = answer_to("rfc4475-sdp01");
        assert_eq!(code, 406, "{text}");
        // 3.3.7 regaut01 (unknown Authorization scheme), 3.3.12 cparam01 (`;unknownparam`
        // of an addr-spec Contact is the header's), 3.3.13 cparam02 (the URI's),
        // 3.3.14 regescrt (a Contact URI with escaped headers in `<...>`): valid
        // REGISTERs, which the gateway refuses with 405 after parsing.
        for name in [
            "rfc4475-regaut01",
            "rfc4475-cparam01",
            "rfc4475-cparam02",
            "rfc4475-regescrt",
        ] {
            assert_eq!(parses(name).method, Method::Register, "{name}");
        }
        // 3.4.1 inv2543: RFC 2543's INVITE (no branch, no Max-Forwards, no From tag),
        // over UDP; a stream needs Content-Length (RFC 3261 §18.3).
        assert_eq!(parses("rfc4475-inv2543").method, Method::Invite);
        assert!(parse(&corpus("rfc4475-inv2543"), false, LIMITS, "gw").is_err());
        // 3.3.10 bcast: a response naming a broadcast address in a Via; parsed, and the
        // gateway, never a proxy, never forwards it.
        assert!(matches!(
            parse(&corpus("rfc4475-bcast"), true, LIMITS, "gw"),
            Ok(SipMessage::Response(_))
        ));
        // A Request-URI with a scheme the gateway serves is not 416.
        assert_eq!(foreign_scheme("tel:+862112345"), None);
        assert_eq!(foreign_scheme("SIP:a@b"), None);
        assert_eq!(foreign_scheme("<sip:a@b>"), None);
    }
}
