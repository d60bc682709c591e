mod host;
mod port;

#[doc(hidden)]
pub use tokenizer::Tokenizer;

pub use host::{Domain, Host};
pub use port::Port;

use crate::Error;
use std::convert::{TryFrom, TryInto};
use std::net::{IpAddr, SocketAddr};

/// Simple struct that holds the [Host] and [Port] of a SIP(S) uri, reprsented by [Uri](super::Uri).
/// Note that during parsing, if no port is set, it is returned as `None`. Usually when no port
/// is specified then port 5060 is assumed. But rsip is not acting smart here and delegates that
/// responsibility to you because you might want 5061 (TLS) as default etc.
///
/// Similarly on generation, if no port is specified, no port is set at all in the final string.
#[derive(Debug, PartialEq, Eq, Clone, Default)]
pub struct HostWithPort {
    pub host: Host,
    pub port: Option<Port>,
}

impl std::fmt::Display for HostWithPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.port.as_ref()) {
            (host, None) => write!(f, "{}", host),
            (host, Some(port)) => write!(f, "{}:{}", host, port),
        }
    }
}

impl TryFrom<String> for HostWithPort {
    type Error = Error;

    fn try_from(from: String) -> Result<Self, Self::Error> {
        from.as_str().try_into()
    }
}

impl TryFrom<&str> for HostWithPort {
    type Error = Error;

    fn try_from(from: &str) -> Result<Self, Self::Error> {
        // An IPv6reference has colons of its own (RFC 3261 §25.1): the port, if any,
        // follows the closing bracket.
        if from.starts_with('[') {
            let (host, port) = match from.find(']') {
                Some(end) => from.split_at(end + 1),
                None => return Err(Error::ParseError(format!("unclosed IPv6 reference: {}", from))),
            };
            let host = host::ipv6_reference(host)
                .ok_or_else(|| Error::ParseError(format!("invalid IPv6 reference: {}", from)))?;
            return match port {
                "" => Ok(IpAddr::V6(host).into()),
                _ => match port.strip_prefix(':') {
                    Some(port) => Ok((IpAddr::V6(host), TryInto::<Port>::try_into(port)?).into()),
                    None => Err(Error::ParseError(format!("invalid host with port: {}", from))),
                },
            };
        }
        // A bare IPv6 address (programmatic input, not SIP's syntax) has no port.
        if let Ok(ip_addr @ IpAddr::V6(_)) = from.parse::<IpAddr>() {
            return Ok(ip_addr.into());
        }
        match from.rsplit_once(":") {
            None => Ok(Host::from(from).into()),
            Some((host, port)) => Ok((
                Host::from(String::from(host)),
                TryInto::<Port>::try_into(port)?,
            )
                .into()),
        }
    }
}

impl From<Host> for HostWithPort {
    fn from(host: Host) -> Self {
        Self { host, port: None }
    }
}

impl From<IpAddr> for HostWithPort {
    fn from(from: IpAddr) -> Self {
        Self {
            host: from.into(),
            port: None,
        }
    }
}

impl From<SocketAddr> for HostWithPort {
    fn from(socket_addr: SocketAddr) -> Self {
        Self {
            host: Host::IpAddr(socket_addr.ip()),
            port: Some(socket_addr.port().into()),
        }
    }
}

impl TryInto<SocketAddr> for HostWithPort {
    type Error = Error;

    fn try_into(self) -> Result<SocketAddr, Error> {
        let ip_addr: IpAddr = self.host.try_into()?;

        Ok(SocketAddr::new(
            ip_addr,
            self.port.unwrap_or_else(|| 5060.into()).into(),
        ))
    }
}

impl From<Domain> for HostWithPort {
    fn from(domain: Domain) -> Self {
        Self {
            host: Host::Domain(domain),
            port: None,
        }
    }
}

impl<H, P> From<(H, P)> for HostWithPort
where
    H: Into<Host>,
    P: Into<Port>,
{
    fn from(from: (H, P)) -> Self {
        Self {
            host: from.0.into(),
            port: Some(from.1.into()),
        }
    }
}

impl<H, P> From<(H, Option<P>)> for HostWithPort
where
    H: Into<Host>,
    P: Into<Port>,
{
    fn from(from: (H, Option<P>)) -> Self {
        Self {
            host: from.0.into(),
            port: from.1.map(Into::into),
        }
    }
}

impl<'a> std::convert::TryFrom<tokenizer::Tokenizer<'a, &'a str, char>> for HostWithPort {
    type Error = Error;

    fn try_from(tokenizer: tokenizer::Tokenizer<'a, &'a str, char>) -> Result<Self, Self::Error> {
        use std::str::FromStr;

        // The tokenizer keeps an IPv6reference's brackets (RFC 3261 §25.1); what is
        // inside them must be an IPv6 address.
        let host = if tokenizer.host.starts_with('[') {
            match host::ipv6_reference(tokenizer.host) {
                Some(ip_addr) => Host::IpAddr(IpAddr::V6(ip_addr)),
                None => {
                    return Err(Error::ParseError(format!(
                        "invalid IPv6 reference: {}",
                        tokenizer.host
                    )))
                }
            }
        } else {
            match IpAddr::from_str(tokenizer.host) {
                Ok(ip_addr) => Host::IpAddr(ip_addr),
                Err(_) => Host::Domain(tokenizer.host.into()),
            }
        };

        let port = match tokenizer.port {
            Some(port) => Some(port.parse::<u16>()?).map(Into::into),
            None => None,
        };

        Ok(Self { host, port })
    }
}

impl<'a> std::convert::TryFrom<tokenizer::Tokenizer<'a, &'a [u8], u8>> for HostWithPort {
    type Error = Error;

    fn try_from(tokenizer: tokenizer::Tokenizer<'a, &'a [u8], u8>) -> Result<Self, Self::Error> {
        use std::str::from_utf8;

        Self::try_from(Tokenizer::from((
            from_utf8(tokenizer.host)?,
            tokenizer.port.map(from_utf8).transpose()?,
        )))
    }
}

#[doc(hidden)]
pub mod tokenizer {
    use crate::{AbstractInput, AbstractInputItem, GResult, GenericNomError, TokenizerError};
    use std::marker::PhantomData;

    #[derive(Debug, PartialEq, Eq, Clone, Default)]
    pub struct Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        pub host: T,
        pub port: Option<T>,
        phantom1: PhantomData<&'a T>,
        phantom2: PhantomData<I>,
    }

    impl<'a, T, I> From<(T, Option<T>)> for Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        fn from(from: (T, Option<T>)) -> Self {
            Self {
                host: from.0,
                port: from.1,
                phantom1: PhantomData,
                phantom2: PhantomData,
            }
        }
    }

    impl<'a, T, I> Tokenizer<'a, T, I>
    where
        T: AbstractInput<'a, I>,
        I: AbstractInputItem<I>,
    {
        pub fn tokenize(part: T) -> GResult<T, Self> {
            use nom::{
                bytes::complete::{tag, take_till1, take_until},
                combinator::rest,
                sequence::tuple,
            };

            let (rem, host_with_port) =
                take_till1(|c| c == Into::<I>::into(b';') || c == Into::<I>::into(b' '))(part)
                    .map_err(|_: GenericNomError<'a, T>| {
                        TokenizerError::from(("host with port", part)).into()
                    })?;

            // An IPv6reference (RFC 3261 §25.1, `[2001:db8::10]`) has colons of its own,
            // so the port separator is the first ':' after its closing bracket. The
            // brackets stay in the host token, to tell it from a hostname.
            if let Ok((after, (_, address, _))) = tuple::<_, _, nom::error::VerboseError<T>, _>(
                (tag("["), take_until("]"), tag("]")),
            )(host_with_port)
            {
                let host = host_with_port.take(address.input_len() + 2);
                if after.input_len() == 0 {
                    return Ok((rem, (host, None).into()));
                }
                let (_, (_, port)) = tuple((tag(":"), rest))(after).map_err(
                    |_: GenericNomError<'a, T>| {
                        TokenizerError::from(("host with port (IPv6 reference)", part)).into()
                    },
                )?;
                return Ok((rem, (host, Some(port)).into()));
            }

            let (host, port) = match tuple::<_, _, nom::error::VerboseError<T>, _>((
                take_until(":"),
                tag(":"),
                rest,
            ))(host_with_port)
            {
                Ok((_, (host, _, port))) => (host, Some(port)),
                Err(_) => {
                    //this is not going to ever fail actually, since rest never returns an
                    //error
                    let (_, host) = rest(host_with_port).map_err(|_: GenericNomError<'a, T>| {
                        TokenizerError::from(("host with port (no port)", host_with_port)).into()
                    })?;
                    (host, None)
                }
            };

            Ok((rem, (host, port).into()))
        }
    }
}

#[cfg(feature = "test-utils")]
impl testing_utils::Randomize for HostWithPort {
    fn random() -> Self {
        use testing_utils::sample;

        Self {
            host: testing_utils::Randomize::random(),
            port: sample(&[None, Some(testing_utils::Randomize::random())]),
        }
    }
}

// IPv6 references (RFC 3261 §25.1), patched in by the 12345 hotline gateway
// (vendor/README.md): they must parse in every place a host is, and be written back in
// brackets.
#[cfg(test)]
mod ipv6_tests {
    use super::*;
    use crate::headers::typed::{Contact, Via};
    use crate::prelude::{HeadersExt, ToTypedHeader};
    use crate::{Request, Response, Uri};
    use std::convert::TryFrom;
    use std::net::Ipv6Addr;

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().expect("test address"))
    }

    #[test]
    fn host_with_port_parses_ipv6_references() {
        let hp = HostWithPort::try_from("[2001:db8::10]:5060").expect("with port");
        assert_eq!(hp.host, Host::IpAddr(v6("2001:db8::10")));
        assert_eq!(hp.port, Some(5060.into()));
        let hp = HostWithPort::try_from("[::1]").expect("without port");
        assert_eq!(hp.host, Host::IpAddr(v6("::1")));
        assert_eq!(hp.port, None);
        // IPv4 and names as before.
        let hp = HostWithPort::try_from("192.0.2.1:5062").expect("v4");
        assert_eq!(hp.port, Some(5062.into()));
        assert!(HostWithPort::try_from("[::1").is_err());
        assert!(HostWithPort::try_from("[::1]5060").is_err());
        assert!(HostWithPort::try_from("[example.com]:5060").is_err());
    }

    #[test]
    fn ipv6_hosts_are_written_in_brackets() {
        let hp = HostWithPort::from(SocketAddr::new(v6("2001:db8::10"), 5060));
        assert_eq!(hp.to_string(), "[2001:db8::10]:5060");
        assert_eq!(HostWithPort::from(v6("::1")).to_string(), "[::1]");
        assert_eq!(Host::from("[::1]"), Host::IpAddr(v6("::1")));
        let sa: SocketAddr = HostWithPort::try_from("[::1]:5070")
            .expect("parse")
            .try_into()
            .expect("socket address");
        assert_eq!(sa, SocketAddr::new(v6("::1"), 5070));
    }

    #[test]
    fn uris_with_ipv6_references_parse_and_round_trip() {
        for s in [
            "sip:12345@[2001:db8::10]:5060",
            "sip:12345@[2001:db8::10]",
            "sip:[::1]:5060;transport=TCP",
            "sips:alice@[2001:db8::1]:5061;lr",
        ] {
            let uri = Uri::try_from(s).expect(s);
            assert_eq!(uri.to_string(), s);
        }
        let uri = Uri::try_from("sip:12345@[2001:db8::10]:5062;transport=udp").expect("uri");
        assert_eq!(uri.host_with_port.host, Host::IpAddr(v6("2001:db8::10")));
        assert_eq!(uri.host_with_port.port, Some(5062.into()));
        assert_eq!(uri.auth.expect("user").user, "12345");
        assert!(Uri::try_from("sip:12345@[2001:db8::zz]:5060").is_err());
    }

    #[test]
    fn requests_with_ipv6_request_uri_via_and_contact_parse() {
        let raw = concat!(
            "INVITE sip:12345@[2001:db8::10]:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP [2001:db8::20]:5062;branch=z9hG4bK776;received=2001:db8::21;rport=5070\r\n",
            "Max-Forwards: 70\r\n",
            "From: <sip:13800138000@[2001:db8::20]>;tag=1\r\n",
            "To: <sip:12345@[2001:db8::10]>\r\n",
            "Call-ID: v6@test\r\n",
            "CSeq: 1 INVITE\r\n",
            "Contact: <sip:13800138000@[2001:db8::20]:5062;transport=udp>\r\n",
            "Record-Route: <sip:[2001:db8::30];lr>\r\n",
            "Content-Length: 0\r\n\r\n"
        );
        let req = Request::try_from(raw.as_bytes()).expect("request");
        assert_eq!(req.uri.host_with_port.to_string(), "[2001:db8::10]:5060");
        let via: Via = req.via_header().expect("via").typed().expect("typed via");
        assert_eq!(via.uri.host_with_port.to_string(), "[2001:db8::20]:5062");
        assert_eq!(via.branch().expect("branch").to_string(), "z9hG4bK776");
        assert_eq!(via.received(), Ok(Some(v6("2001:db8::21"))));
        let contact: Contact = req.contact_header().expect("contact").typed().expect("typed");
        assert_eq!(contact.uri.host_with_port.host, Host::IpAddr(v6("2001:db8::20")));
        assert_eq!(contact.uri.host_with_port.port, Some(5062.into()));
        // Written back as it came.
        let again = Request::try_from(req.to_string().as_bytes()).expect("round trip");
        assert_eq!(again.uri, req.uri);
        assert!(req.to_string().contains("Record-Route: <sip:[2001:db8::30];lr>"));
    }

    #[test]
    fn responses_with_ipv6_via_parse() {
        let raw = concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport\r\n",
            "From: <sip:a@[::1]>;tag=1\r\n",
            "To: <sip:b@[::1]>;tag=2\r\n",
            "Call-ID: x\r\n",
            "CSeq: 1 INVITE\r\n",
            "Content-Length: 0\r\n\r\n"
        );
        let resp = Response::try_from(raw.as_bytes()).expect("response");
        let via: Via = resp.via_header().expect("via").typed().expect("typed via");
        assert_eq!(via.uri.host_with_port.host, Host::IpAddr(v6("::1")));
        assert_eq!(via.uri.host_with_port.port, Some(5060.into()));
    }

    #[test]
    fn tokenizer_keeps_the_brackets_and_splits_the_port_after_them() {
        let (rem, t) = Tokenizer::<&str, char>::tokenize("[2001:db8::10]:5060;lr").expect("tok");
        assert_eq!(rem, ";lr");
        assert_eq!(t, Tokenizer::from(("[2001:db8::10]", Some("5060"))));
        let (_, t) = Tokenizer::<&[u8], u8>::tokenize(&b"[::1] SIP/2.0"[..]).expect("bytes");
        assert_eq!(t, Tokenizer::from((&b"[::1]"[..], None)));
        assert!(Tokenizer::<&str, char>::tokenize("[::1]x").is_err());
        // Brackets around something else are tokenized, then refused.
        let (_, t) = Tokenizer::<&str, char>::tokenize("[host]:5060").expect("tok");
        assert!(HostWithPort::try_from(t).is_err());
    }
}
