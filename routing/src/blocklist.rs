//! Who may not use the hotline's telephone resources (Art. 9: a caller who disrupts the
//! hotline, or harasses, insults or threatens its staff, is restricted for 30 natural
//! days).
//!
//! Voice channels ask a [`Blocklist`] before they bridge a call; a restricted caller
//! hears an announcement and is declined, never silently dropped. Today the list is the
//! numbers in the gateway's config ([`StaticBlocklist`]); the restrictions agents record,
//! with their 30-day expiry, arrive with the routing work behind the same trait.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use contract::{CitizenIdentity, IdentityKind};

/// Why and until when a caller is restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// When the restriction ends; `None` for one without an end (set by configuration).
    pub until: Option<DateTime<Utc>>,
    /// Where it comes from, for logs and contacts (never the number).
    pub source: &'static str,
}

/// Answers whether a caller is restricted.
pub trait Blocklist: Send + Sync + 'static {
    /// The restriction on this citizen in force at `now`, if any.
    fn check(&self, citizen: &CitizenIdentity, now: DateTime<Utc>) -> Option<Restriction>;
}

/// A fixed list of phone numbers from configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticBlocklist {
    numbers: HashSet<String>,
}

impl StaticBlocklist {
    /// A list of these numbers, normalised like contacts' numbers (numbers that do not
    /// normalise are skipped; the config check refuses them before this).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(numbers: I) -> Self {
        StaticBlocklist {
            numbers: numbers
                .into_iter()
                .filter_map(|n| contract::normalize_phone(n.as_ref()))
                .collect(),
        }
    }
}

impl Blocklist for StaticBlocklist {
    fn check(&self, citizen: &CitizenIdentity, _now: DateTime<Utc>) -> Option<Restriction> {
        (citizen.kind == IdentityKind::PhoneNumber && self.numbers.contains(&citizen.value))
            .then_some(Restriction {
                until: None,
                source: "config",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::CitizenKeyer;

    #[test]
    fn art9_configured_numbers_are_restricted_in_any_notation() {
        let keyer = CitizenKeyer::new(b"a-test-secret-of-enough-length");
        let list = StaticBlocklist::new(["+86 139-0000-0000"]);
        let now = Utc::now();
        let blocked = keyer.phone("13900000000").expect("valid number");
        assert!(list.check(&blocked, now).is_some());
        let other = keyer.phone("13800138000").expect("valid number");
        assert_eq!(list.check(&other, now), None);
        assert_eq!(list.check(&keyer.withheld("call-1"), now), None);
    }
}
