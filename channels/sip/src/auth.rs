//! Digest authentication of trunks (RFC 3261 §22, RFC 7616, RFC 8760), checked with
//! rsip's digest generator.
//!
//! Nonces are stateless: `<unix seconds in hex>.<HMAC of them>`, signed with a secret
//! drawn at start, valid for [`NONCE_TTL_SECS`]. Nothing is stored per challenge, so a
//! flood of unauthenticated INVITEs costs no memory. A nonce may be reused within its
//! lifetime (no nonce-count tracking): a captured request could be replayed for that
//! long, which the per-source rate limit and the address allowlist bound.

use hmac::{Hmac, Mac};
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::services::DigestGenerator;
use rsip::{Header, Request};
use sha2::Sha256;

/// How long a nonce stays valid.
pub const NONCE_TTL_SECS: u64 = 300;

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials for the user.
    Ok,
    /// No credentials: challenge.
    Missing,
    /// The nonce expired: challenge again with `stale=true`.
    Stale,
    /// Wrong user, realm, nonce or response.
    Bad,
}

/// Issues challenges and checks answers.
pub struct Digest {
    secret: [u8; 32],
    realm: String,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digest")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Digest {
    /// A verifier for `realm` with a fresh secret.
    pub fn new(realm: String) -> Self {
        Digest {
            secret: rand::random(),
            realm,
        }
    }

    fn sign(&self, stamp: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(stamp.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    fn nonce(&self) -> String {
        let stamp = format!("{:x}", now_secs());
        let sig = self.sign(&stamp);
        format!("{stamp}.{sig}")
    }

    fn nonce_state(&self, nonce: &str) -> Verdict {
        let Some((stamp, sig)) = nonce.split_once('.') else {
            return Verdict::Bad;
        };
        if self.sign(stamp) != sig {
            return Verdict::Bad;
        }
        match u64::from_str_radix(stamp, 16) {
            Ok(t) if now_secs().saturating_sub(t) <= NONCE_TTL_SECS => Verdict::Ok,
            Ok(_) => Verdict::Stale,
            Err(_) => Verdict::Bad,
        }
    }

    /// The WWW-Authenticate header of a 401.
    pub fn challenge(&self, stale: bool) -> Header {
        let stale = if stale { ", stale=true" } else { "" };
        Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{stale}",
            self.realm,
            self.nonce()
        )))
    }

    /// Checks the request's Authorization (or Proxy-Authorization) against `username`
    /// and `password`.
    pub fn verify(&self, request: &Request, username: &str, password: &str) -> Verdict {
        let raw = request.headers.iter().find_map(|h| match h {
            Header::Authorization(a) => Some(a.value().to_owned()),
            Header::ProxyAuthorization(a) => Some(a.value().to_owned()),
            _ => None,
        });
        let Some(raw) = raw else {
            return Verdict::Missing;
        };
        let Ok(auth) = rsip::headers::Authorization::new(raw).typed() else {
            return Verdict::Bad;
        };
        if auth.username != username || auth.realm != self.realm {
            return Verdict::Bad;
        }
        match self.nonce_state(&auth.nonce) {
            Verdict::Ok => {}
            other => return other,
        }
        let generator = DigestGenerator::from(&auth, password, &request.method);
        if constant_time_eq(generator.compute().as_bytes(), auth.response.as_bytes()) {
            Verdict::Ok
        } else {
            Verdict::Bad
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::headers::auth::Algorithm;

    fn request_with(auth: Option<String>) -> Request {
        let mut text = String::from(
            "INVITE sip:12345@gw SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:12345@gw>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n",
        );
        if let Some(a) = auth {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        Request::try_from(text.as_str()).expect("valid request")
    }

    fn answer(d: &Digest, nonce: &str, user: &str, password: &str) -> String {
        let uri = rsip::Uri::try_from("sip:12345@gw").expect("uri");
        let qop = rsip::headers::auth::AuthQop::Auth {
            cnonce: "abc".into(),
            nc: 1,
        };
        let g = DigestGenerator {
            username: user,
            password,
            nonce,
            uri: &uri,
            realm: &d.realm,
            method: &rsip::Method::Invite,
            qop: Some(&qop),
            algorithm: Algorithm::Md5,
        };
        format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{nonce}\", uri=\"sip:12345@gw\", response=\"{}\", algorithm=MD5, qop=auth, cnonce=\"abc\", nc=00000001",
            d.realm,
            g.compute()
        )
    }

    #[test]
    fn right_password_passes_wrong_fails_missing_is_challenged() {
        let d = Digest::new("12345.hotline".into());
        let Header::WwwAuthenticate(challenge) = d.challenge(false) else {
            panic!("a WWW-Authenticate header")
        };
        let nonce = challenge
            .value()
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("nonce")
            .to_owned();
        let good = request_with(Some(answer(&d, &nonce, "trunk", "secret-password")));
        assert_eq!(d.verify(&good, "trunk", "secret-password"), Verdict::Ok);
        assert_eq!(d.verify(&good, "trunk", "other-password"), Verdict::Bad);
        assert_eq!(d.verify(&good, "someone", "secret-password"), Verdict::Bad);
        assert_eq!(
            d.verify(&request_with(None), "trunk", "x"),
            Verdict::Missing
        );
        let forged = request_with(Some(answer(
            &d,
            "5f5e100.000000000000000000000000",
            "trunk",
            "secret-password",
        )));
        assert_eq!(d.verify(&forged, "trunk", "secret-password"), Verdict::Bad);
        let old = format!("{:x}", now_secs() - NONCE_TTL_SECS - 10);
        let stale_nonce = format!("{old}.{}", d.sign(&old));
        let stale = request_with(Some(answer(&d, &stale_nonce, "trunk", "secret-password")));
        assert_eq!(d.verify(&stale, "trunk", "secret-password"), Verdict::Stale);
    }
}
