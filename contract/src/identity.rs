//! Citizen identities are personal data (Art. 21): this module normalises them, turns
//! them into a pseudonymous key for partitioning and linking, and masks them for logs.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::{CitizenIdentity, IdentityKind};

/// Derives the pseudonymous citizen key: HMAC-SHA256 under the gateway's secret over the
/// identity kind and normalised value, first 128 bits, hex.
///
/// A keyed hash rather than a plain one, because phone numbers are few enough to
/// enumerate: without the secret nobody can map a key back to a number.
#[derive(Clone)]
pub struct CitizenKeyer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CitizenKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CitizenKeyer(..)")
    }
}

impl CitizenKeyer {
    /// A keyer with this secret. The gateway's config requires at least 16 bytes.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        CitizenKeyer { mac }
    }

    /// The key for an already normalised identity.
    pub fn key(&self, kind: IdentityKind, value: &str) -> String {
        let mut mac = self.mac.clone();
        let tag: &[u8] = match kind {
            IdentityKind::PhoneNumber => b"phone:",
            IdentityKind::ChatVisitor => b"chat:",
            IdentityKind::Withheld => b"withheld:",
        };
        mac.update(tag);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        hex::encode(&digest[..16])
    }

    /// A full identity for a phone number as received (any formatting).
    pub fn phone(&self, raw: &str) -> Option<CitizenIdentity> {
        let value = normalize_phone(raw)?;
        let key = self.key(IdentityKind::PhoneNumber, &value);
        Some(CitizenIdentity {
            kind: IdentityKind::PhoneNumber,
            value,
            key,
        })
    }

    /// The identity of a caller who withheld their number: one per call.
    pub fn withheld(&self, call_id: &str) -> CitizenIdentity {
        let value = call_id.to_owned();
        let key = self.key(IdentityKind::Withheld, &value);
        CitizenIdentity {
            kind: IdentityKind::Withheld,
            value,
            key,
        }
    }

    /// A full identity for a chat visitor id.
    pub fn chat_visitor(&self, visitor: &str) -> CitizenIdentity {
        let value = visitor.trim().to_owned();
        let key = self.key(IdentityKind::ChatVisitor, &value);
        CitizenIdentity {
            kind: IdentityKind::ChatVisitor,
            value,
            key,
        }
    }
}

/// Normalises a telephone number as carriers and people write it: keeps the digits,
/// drops a leading `+86`/`0086` country code from mainland numbers. Returns `None` when
/// what is left is not 3 to 20 digits (an optional leading `+` aside, anything but
/// digits, spaces, dashes, dots and brackets makes it invalid).
pub fn normalize_phone(raw: &str) -> Option<String> {
    // A country code written twice ("+86 86 138...") is still one citizen: repeat the
    // step until nothing changes, so normalising a normalised number is a no-op.
    let mut current = normalize_phone_step(raw)?;
    loop {
        let next = normalize_phone_step(&current)?;
        if next == current {
            return Some(current);
        }
        current = next;
    }
}

fn normalize_phone_step(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (plus, body) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let national = if plus && digits.starts_with("86") {
        &digits[2..]
    } else if !plus && digits.starts_with("0086") {
        &digits[4..]
    } else if !plus && digits.len() == 13 && digits.starts_with("86") {
        &digits[2..]
    } else {
        &digits[..]
    };
    if !(3..=20).contains(&national.len()) {
        return None;
    }
    if plus && !digits.starts_with("86") {
        // A foreign number keeps its country code, marked with the plus.
        return Some(format!("+{digits}"));
    }
    Some(national.to_owned())
}

/// Masks a phone number for logs and screens: the first three and last four digits of a
/// mobile number stay (`138****1234`), shorter numbers keep only their last two.
pub fn mask_phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    if n >= 11 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[n - 4..].iter().collect();
        format!("{head}{}{tail}", "*".repeat(n - 7))
    } else if n > 2 {
        let tail: String = chars[n - 2..].iter().collect();
        format!("{}{tail}", "*".repeat(n - 2))
    } else {
        "*".repeat(n)
    }
}

/// Masks any identity for logs: phone numbers as [`mask_phone`], other identifiers as
/// their kind and citizen key, never the value.
pub fn mask_identity(identity: &CitizenIdentity) -> String {
    match identity.kind {
        IdentityKind::PhoneNumber => mask_phone(&identity.value),
        IdentityKind::ChatVisitor => format!("chat:{}", &identity.key[..8.min(identity.key.len())]),
        IdentityKind::Withheld => "withheld".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mainland_numbers_normalise_to_national_digits() {
        for raw in [
            "13800001234",
            "+86 138-0000-1234",
            "0086 13800001234",
            "8613800001234",
            "(138) 0000 1234",
        ] {
            assert_eq!(
                normalize_phone(raw).as_deref(),
                Some("13800001234"),
                "{raw}"
            );
        }
        assert_eq!(
            normalize_phone("+1 415 555 0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(normalize_phone("12345").as_deref(), Some("12345"));
        assert_eq!(normalize_phone("abc"), None);
        assert_eq!(normalize_phone("12"), None);
        assert_eq!(normalize_phone("1380000123x"), None);
    }

    #[test]
    fn masking_hides_the_middle() {
        assert_eq!(mask_phone("13800001234"), "138****1234");
        assert_eq!(mask_phone("12345"), "***45");
        assert_eq!(mask_phone("1"), "*");
    }

    #[test]
    fn key_depends_on_secret_kind_and_value() {
        let a = CitizenKeyer::new(b"secret-a-0123456789");
        let b = CitizenKeyer::new(b"secret-b-0123456789");
        let ka = a.key(IdentityKind::PhoneNumber, "13800001234");
        assert_eq!(ka.len(), 32);
        assert_eq!(ka, a.key(IdentityKind::PhoneNumber, "13800001234"));
        assert_ne!(ka, b.key(IdentityKind::PhoneNumber, "13800001234"));
        assert_ne!(ka, a.key(IdentityKind::ChatVisitor, "13800001234"));
        assert_eq!(
            a.phone("+86 138 0000 1234").map(|i| i.key),
            Some(ka),
            "formatting must not change the key"
        );
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in "[+]?[0-9 ()-]{0,24}") {
            if let Some(n) = normalize_phone(&raw) {
                prop_assert_eq!(normalize_phone(&n), Some(n.clone()));
            }
        }

        #[test]
        fn masked_numbers_never_show_the_middle(n in "1[3-9][0-9]{9}") {
            let m = mask_phone(&n);
            prop_assert_eq!(m.len(), n.len());
            prop_assert_eq!(&m[3..7], "****");
        }
    }
}
