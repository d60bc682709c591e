//! Bytes from the network to text rsip can parse.
//!
//! rsip parses one complete message held in memory. What it leaves to its user, and this
//! module does (by hand, because no maintained crate does SIP framing):
//!
//! - **Stream framing** (RFC 3261 §18.3): on TCP a message ends `Content-Length` bytes
//!   after the blank line; the header is mandatory there. Keep-alive CRLFs (RFC 5626
//!   §3.5.1) between messages are skipped.
//! - **Datagram bodies**: bytes past `Content-Length` are discarded; a body shorter than it
//!   is an error (a request gets 400, §18.3).
//! - **Line folding** (§7.3.1) is undone and **compact header names** (§7.3.3: `v`, `i`,
//!   `f`, `t`, `m`, `l`, `c`, ...) are expanded, neither of which rsip understands.
//! - **Optional whitespace** around the separators of Via, From, To, Contact, Route,
//!   Record-Route and Reply-To and in CSeq (§25.1's `SWS`), which rsip refuses or misreads
//!   (see `tidy`), is removed, and header names get their usual case.
//! - **Limits**: total size, header count, header section bytes, so that a hostile peer
//!   cannot make the gateway buffer or scan without bound.

/// What went wrong turning bytes into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Larger than the configured maximum.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// No blank line ends the headers.
    #[error("no blank line ends the header section")]
    NoHeaderEnd,
    /// `Content-Length` is missing on a stream, repeated with different values, or not a
    /// number.
    #[error("missing or invalid Content-Length")]
    BadContentLength,
    /// The datagram ends before the body `Content-Length` announces.
    #[error("body shorter than Content-Length")]
    Truncated,
    /// More header lines than allowed.
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    /// The header section holds bytes that are not text.
    #[error("header section is not UTF-8 text")]
    NotText,
    /// A header line without a name and colon.
    #[error("malformed header line")]
    BadHeaderLine,
}

/// Limits on one message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest whole message, headers and body.
    pub max_message_bytes: usize,
    /// Most header lines (after unfolding).
    pub max_headers: usize,
}

/// A message's header lines, unfolded and with full names, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The start line.
    pub start_line: String,
    /// `(name, value)` in order, names as full names, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, exactly `Content-Length` bytes (or all for a datagram without it).
    pub body: Vec<u8>,
}

impl Normalized {
    /// The values of every header called `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`.
    pub fn value<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    /// The message as bytes rsip can parse: `Content-Length` rewritten to the body kept.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(self.start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// Number of CR and LF bytes at the start of `buf` (keep-alives between stream messages).
pub fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Looks for one whole message at the start of a stream buffer (which must not start with
/// keep-alive CRLFs; see [`leading_crlf`]). `Ok(None)`: read more. `Ok(Some(n))`: the first
/// `n` bytes are one message.
pub fn frame_stream(buf: &[u8], limits: Limits) -> Result<Option<usize>, WireError> {
    let Some(end) = find_header_end(buf) else {
        return if buf.len() > limits.max_message_bytes {
            Err(WireError::TooLarge(limits.max_message_bytes))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| WireError::NotText)?;
    let pairs = head.split("\r\n").skip(1).filter_map(|l| l.split_once(':'));
    let length = content_length(pairs)?.ok_or(WireError::BadContentLength)?;
    let total = end
        .checked_add(4)
        .and_then(|n| n.checked_add(length))
        .ok_or(WireError::BadContentLength)?;
    if total > limits.max_message_bytes {
        return Err(WireError::TooLarge(limits.max_message_bytes));
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Reads `Content-Length` (or its compact form `l`) from raw header lines. Repeated with
/// different values is an error: a smuggling attempt or a broken peer.
fn content_length<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Option<usize>, WireError> {
    let mut found: Option<usize> = None;
    for (name, value) in pairs {
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 9 {
                return Err(WireError::BadContentLength);
            }
            let n: usize = value.parse().map_err(|_| WireError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(WireError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Header names whose case rsip or this crate matches exactly: written in their usual
/// case, since RFC 3261 §7.3.1 makes names case-insensitive (RFC 4475 3.1.1.1 sends
/// `MaX-fOrWaRdS`, `cseq`, `TO`).
const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Require",
    "Proxy-Require",
    "Supported",
    "Reply-To",
];

/// The full name of a compact header name (RFC 3261 §7.3.3, RFC 3515, RFC 3841), and
/// the usual case of the names in [`CANONICAL`].
fn expand(name: &str) -> &str {
    if name.len() != 1 {
        return CANONICAL
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .copied()
            .unwrap_or(name);
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'r' => "Refer-To",
        b'o' => "Event",
        b'u' => "Allow-Events",
        _ => name,
    }
}

/// Removes the optional whitespace RFC 3261's grammar allows where rsip's tokenizer
/// refuses it or, worse, silently drops what follows it.
///
/// RFC 3261 §25.1 writes separators as `SLASH = SWS "/" SWS`, `SEMI = SWS ";" SWS`,
/// `EQUAL = SWS "=" SWS`, `COMMA`, `COLON` alike: any whitespace may surround them
/// (RFC 4475 3.1.1.1 "wsinv" sends `SIP  /   2.0 /UDP` and `; tag = 98asjd8`). rsip
/// 0.4 takes none: a Via with it fails to tokenize, a From fails, and a To written as an
/// addr-spec loses its tag (`sip:a@b ; tag = 1` comes back as `<sip:a@b>`). So before
/// rsip sees them:
/// - **Via**: runs of whitespace become one space, and spaces next to `/ ; = , :`
///   go (the one space left separates the protocol from sent-by);
/// - **From, To, Contact, Route, Record-Route, Reply-To**: outside quoted display names
///   and outside `<...>`, runs of whitespace become one space and spaces next to
///   `; = ,` go; quoted strings are kept byte for byte;
/// - **CSeq**: whitespace between number and method becomes one space.
///
/// Folding was already undone, so a value here is one line.
/// Whether `value` is already what [`tidy`] would make of it with these separators: no
/// tab, no run of spaces, no space beside a separator. Most carriers send exactly that,
/// and the check costs a scan where tidying costs a copy char by char (the parse path
/// measured 21% more instructions per message without this; docs/benchmarks.md).
/// Conservative: a space inside quotes or brackets beside a separator takes the slow
/// path, which keeps it.
fn already_tidy(value: &str, separators: &[u8]) -> bool {
    let b = value.as_bytes();
    let odd = |i: usize| {
        b.get(i)
            .is_none_or(|c| *c == b' ' || separators.contains(c))
    };
    !b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\t' || (c == b' ' && (i == 0 || odd(i - 1) || odd(i + 1))))
}

/// The separators around which [`tidy`] drops whitespace in a header named `name`.
fn separators_of(name: &str) -> &'static [u8] {
    match name {
        "Via" => b"/;=,:",
        "From" | "To" | "Contact" | "Route" | "Record-Route" | "Reply-To" => b";=,",
        _ => b"",
    }
}

fn tidy(name: &str, value: &str) -> String {
    let squeeze = |separators: &[u8], keep_brackets: bool| -> String {
        let mut out = String::with_capacity(value.len());
        let (mut quoted, mut escaped, mut angle) = (false, false, false);
        let mut pending_space = false;
        for c in value.trim().chars() {
            if quoted {
                out.push(c);
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quoted = false,
                    _ => {}
                }
                continue;
            }
            if angle {
                out.push(c);
                if c == '>' {
                    angle = false;
                }
                continue;
            }
            if c == ' ' || c == '\t' {
                pending_space = true;
                continue;
            }
            let sep = c.is_ascii() && separators.contains(&(c as u8));
            let after_sep = out
                .as_bytes()
                .last()
                .is_some_and(|b| separators.contains(b));
            if pending_space && !sep && !after_sep && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            match c {
                '"' => quoted = true,
                '<' if keep_brackets => angle = true,
                _ => {}
            }
            out.push(c);
        }
        out
    };
    match name {
        "Via" => squeeze(separators_of(name), false),
        "From" | "To" | "Contact" | "Route" | "Record-Route" | "Reply-To" => {
            squeeze(separators_of(name), true)
        }
        "CSeq" => value.split_whitespace().collect::<Vec<_>>().join(" "),
        _ => value.trim().to_owned(),
    }
}

/// Whether the header section has a control character where RFC 3261's grammar allows
/// none. The one place one may stand is a quoted-pair inside a quoted string (§25.1:
/// `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`), as in RFC 4475 3.1.1.2's
/// `To: "BEL:\<07> NUL:\<00> DEL:\<7F>" <sip:...>`, a valid message; anywhere else
/// (and a backslash before CR or LF) the section is not text. A line that is not folded
/// ends any quoted string, so that a `"` in a Call-ID (a `word` may hold one) does not
/// change how the next header is read.
fn has_stray_control(head: &[u8]) -> bool {
    // Almost every message has none at all: one plain scan first (the state machine
    // below costs 4,000 instructions a message more, measured with parse_cost).
    if !head
        .iter()
        .any(|&b| b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t')
    {
        return false;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in head.iter().enumerate() {
        if escaped {
            escaped = false;
            if b == b'\r' || b == b'\n' {
                return true;
            }
            continue;
        }
        match b {
            b'"' => quoted = !quoted,
            b'\\' if quoted => escaped = true,
            b'\n' if !matches!(head.get(i + 1), Some(b' ' | b'\t')) => quoted = false,
            b'\n' => {}
            b'\r' | b'\t' => {}
            0..=0x1f => return true,
            _ => {}
        }
    }
    false
}

/// Splits one whole message into start line, unfolded headers and body. `datagram`: the
/// message came alone in a UDP datagram, so the body is whatever follows the headers,
/// cut to `Content-Length`.
pub fn normalize(msg: &[u8], datagram: bool, limits: Limits) -> Result<Normalized, WireError> {
    if msg.len() > limits.max_message_bytes {
        return Err(WireError::TooLarge(limits.max_message_bytes));
    }
    let msg = &msg[leading_crlf(msg)..];
    let (head, body) = match find_header_end(msg) {
        Some(end) => (&msg[..end], &msg[end + 4..]),
        None => return Err(WireError::NoHeaderEnd),
    };
    let head = std::str::from_utf8(head).map_err(|_| WireError::NotText)?;
    if has_stray_control(head.as_bytes()) {
        return Err(WireError::NotText);
    }
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            // A continuation line (§7.3.1): folds into the previous header's value.
            let Some((_, value)) = headers.last_mut() else {
                return Err(WireError::BadHeaderLine);
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(WireError::BadHeaderLine)?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WireError::BadHeaderLine);
        }
        if headers.len() == limits.max_headers {
            return Err(WireError::TooManyHeaders(limits.max_headers));
        }
        headers.push((expand(name).to_owned(), value.trim().to_owned()));
    }
    for (name, value) in headers.iter_mut() {
        if !already_tidy(value, separators_of(name)) {
            *value = tidy(name, value);
        }
    }
    let length = content_length(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
    let body = match (length, datagram) {
        (Some(n), _) if body.len() < n => return Err(WireError::Truncated),
        (Some(n), _) => body[..n].to_vec(),
        (None, true) => body.to_vec(),
        (None, false) => return Err(WireError::BadContentLength),
    };
    Ok(Normalized {
        start_line,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 4096,
        max_headers: 8,
    };

    #[test]
    fn unfolds_lines_and_expands_compact_names() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSubject: one\r\n two\r\ni: x\r\nl: 0\r\n\r\n";
        let n = normalize(raw, true, LIMITS).expect("valid");
        assert_eq!(n.value("Via"), Some("SIP/2.0/UDP h;branch=z9hG4bK1"));
        assert_eq!(n.value("Subject"), Some("one two"));
        assert_eq!(n.value("call-id"), Some("x"));
        let again = String::from_utf8(n.to_bytes()).expect("utf8");
        assert!(again.ends_with("Content-Length: 0\r\n\r\n"), "{again}");
    }

    #[test]
    fn datagram_body_is_cut_to_content_length_and_short_body_is_an_error() {
        let raw = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(normalize(raw, true, LIMITS).expect("valid").body, b"abc");
        let short = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 30\r\n\r\nabc";
        assert_eq!(normalize(short, true, LIMITS), Err(WireError::Truncated));
    }

    #[test]
    fn conflicting_content_lengths_are_refused() {
        let raw = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 4\r\n\r\nabcd";
        assert_eq!(
            normalize(raw, true, LIMITS),
            Err(WireError::BadContentLength)
        );
    }

    #[test]
    fn stream_framing_waits_for_the_body_and_needs_content_length() {
        let raw = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(frame_stream(&raw[..20], LIMITS), Ok(None));
        assert_eq!(frame_stream(&raw[..raw.len() - 1], LIMITS), Ok(None));
        assert_eq!(frame_stream(raw, LIMITS), Ok(Some(raw.len())));
        let none = b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n";
        assert_eq!(frame_stream(none, LIMITS), Err(WireError::BadContentLength));
        let endless = vec![b'a'; 5000];
        assert_eq!(
            frame_stream(&endless, LIMITS),
            Err(WireError::TooLarge(4096))
        );
    }

    #[test]
    fn too_many_headers_and_binary_headers_are_refused() {
        let mut raw = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..9 {
            raw.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(
            normalize(&raw, true, LIMITS),
            Err(WireError::TooManyHeaders(8))
        );
        let binary = b"OPTIONS sip:a@b SIP/2.0\r\nX: \x01\x02\r\n\r\n";
        assert_eq!(normalize(binary, true, LIMITS), Err(WireError::NotText));
    }

    /// RFC 3261 §25.1 lets a control character stand only as a quoted-pair inside a
    /// quoted string (RFC 4475 3.1.1.2); not bare, not escaped outside quotes, and a
    /// quote left open on one line does not carry to the next.
    #[test]
    fn control_characters_only_as_quoted_pairs() {
        let ok = b"OPTIONS sip:a@b SIP/2.0\r\nTo: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:a@b>\r\n\r\n";
        assert!(normalize(ok, true, LIMITS).is_ok());
        for bad in [
            &b"OPTIONS sip:a@b SIP/2.0\r\nTo: \"BEL:\x07\" <sip:a@b>\r\n\r\n"[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nTo: BEL\\\x07 <sip:a@b>\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: a\"b\r\nTo: \\\x07 <sip:a@b>\r\n\r\n",
        ] {
            assert_eq!(
                normalize(bad, true, LIMITS),
                Err(WireError::NotText),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A quoted string folded onto the next line stays quoted.
        let folded = b"OPTIONS sip:a@b SIP/2.0\r\nTo: \"a\r\n b\\\x07\" <sip:a@b>\r\n\r\n";
        assert!(normalize(folded, true, LIMITS).is_ok());
    }

    #[test]
    fn rfc4475_3_1_1_1_wsinv_whitespace_is_removed_where_the_grammar_allows_it() {
        assert_eq!(
            tidy(
                "Via",
                "SIP  /   2.0 /UDP\t192.0.2.2 : 5060 ; branch = z9hG4bK1 ,SIP / 2.0 / TCP h"
            ),
            "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK1,SIP/2.0/TCP h"
        );
        // Quoted display names are kept as they are; `<...>` is not touched.
        assert_eq!(
            tidy(
                "From",
                r#""J  Rosenberg \""   <sip:a@b;x = y> ; tag = 98asjd8"#
            ),
            r#""J  Rosenberg \"" <sip:a@b;x = y>;tag=98asjd8"#
        );
        assert_eq!(
            tidy("To", "sip:vivekg@chair ;   tag    = 1918181833n"),
            "sip:vivekg@chair;tag=1918181833n"
        );
        assert_eq!(tidy("CSeq", "0009   INVITE"), "0009 INVITE");
        // Other headers keep their inner whitespace.
        assert_eq!(tidy("Subject", " a  b "), "a  b");
    }

    #[test]
    fn header_names_are_case_insensitive_and_may_have_whitespace_before_the_colon() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nMaX-fOrWaRdS : 0068\r\ncseq\t: 1\r\n  OPTIONS\r\nTO :\r\n <sip:a@b>\r\nNewFangled: a\r\n\r\n";
        let n = normalize(raw, true, LIMITS).expect("valid");
        assert_eq!(n.value("Max-Forwards"), Some("0068"));
        assert_eq!(n.value("CSeq"), Some("1 OPTIONS"));
        assert_eq!(n.value("To"), Some("<sip:a@b>"));
        let text = String::from_utf8(n.to_bytes()).expect("utf8");
        assert!(
            text.contains(
                "\r\nMax-Forwards: 0068\r\nCSeq: 1 OPTIONS\r\nTo: <sip:a@b>\r\nNewFangled: a\r\n"
            ),
            "{text}"
        );
    }

    proptest::proptest! {
        /// The fast path skips only what tidying would leave as it is.
        #[test]
        fn a_value_found_tidy_is_what_tidying_makes_of_it(
            value in "[a-z0-9 \t;=,/:<>\"@.]{0,40}",
            name in proptest::sample::select(vec!["Via", "From", "Contact", "CSeq", "Subject"]),
        ) {
            let value = value.trim();
            if already_tidy(value, separators_of(name)) {
                proptest::prop_assert_eq!(tidy(name, value), value);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = normalize(&bytes, true, LIMITS);
            let _ = frame_stream(&bytes, LIMITS);
        }
    }
}
