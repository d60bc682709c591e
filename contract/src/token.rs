//! Bearer tokens of the people who watch the gateway's feeds (agents, linkage operators),
//! minted by the centre's login service:
//! `<subject>.<expiry unix seconds>.<hex HMAC-SHA256(secret, "<scope><subject>.<expiry>")>`.
//!
//! The scope is part of what is signed, so a token minted for one feed is worthless on
//! another even if both were configured with the same secret: agent desk tokens have the
//! empty scope (their documented format, docs/sip.md), linkage operator tokens the scope
//! `linkage:` (docs/routing.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Checks (and, for tests and tools, mints) the tokens of one scope.
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Vec<u8>,
    scope: &'static str,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenVerifier({:?}, ..)", self.scope)
    }
}

impl TokenVerifier {
    /// A verifier of `scope` tokens signed with `secret`.
    pub fn new(secret: &[u8], scope: &'static str) -> Self {
        TokenVerifier {
            secret: secret.to_vec(),
            scope,
        }
    }

    fn mac(&self, subject: &str, expiry: u64) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(self.scope.as_bytes());
        mac.update(format!("{subject}.{expiry}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A token for `subject` valid until `expiry`.
    pub fn mint(&self, subject: &str, expiry: u64) -> String {
        format!(
            "{subject}.{expiry}.{}",
            hex::encode(self.mac(subject, expiry))
        )
    }

    /// The subject a token names, if it is genuine and unexpired at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Option<String> {
        let (rest, sig) = token.rsplit_once('.')?;
        let (subject, expiry) = rest.rsplit_once('.')?;
        let expiry: u64 = expiry.parse().ok()?;
        if subject.is_empty() || expiry < now {
            return None;
        }
        let sig = hex::decode(sig).ok()?;
        let want = self.mac(subject, expiry);
        let same = sig.len() == want.len()
            && sig.iter().zip(&want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        same.then(|| subject.to_owned())
    }
}

/// Now, in unix seconds (what [`TokenVerifier::verify`] compares expiries with).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The token a request presents: `Authorization: Bearer`, else `?access_token=` (a
/// browser cannot set headers on a WebSocket).
pub fn presented(headers: &axum::http::HeaderMap, query_token: Option<String>) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(query_token)
        .map(|t| t.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_when_genuine_unexpired_and_of_the_scope() {
        let v = TokenVerifier::new(b"a-feed-secret-of-enough-length", "");
        let t = v.mint("agent1001", 2_000);
        assert_eq!(v.verify(&t, 1_000).as_deref(), Some("agent1001"));
        assert_eq!(v.verify(&t, 2_001), None, "expired");
        let forged = t.replace("agent1001", "agent1002");
        assert_eq!(v.verify(&forged, 1_000), None, "another subject");
        let other = TokenVerifier::new(b"another-secret-entirely-here", "");
        assert_eq!(other.verify(&t, 1_000), None, "another secret");
        let linkage = TokenVerifier::new(b"a-feed-secret-of-enough-length", "linkage:");
        assert_eq!(
            linkage.verify(&t, 1_000),
            None,
            "another scope, same secret"
        );
        let lt = linkage.mint("119:op7", 2_000);
        assert_eq!(linkage.verify(&lt, 1_000).as_deref(), Some("119:op7"));
        assert_eq!(v.verify(&lt, 1_000), None);
        assert_eq!(v.verify("garbage", 0), None);
    }
}
