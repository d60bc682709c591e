//! Who may not use the hotline's telephone resources (Art. 9: a caller who disrupts the
//! hotline, or harasses, insults or threatens its staff, is restricted for 30 natural
//! days).
//!
//! Every channel asks a [`Blocklist`] at admission; a restricted caller hears an
//! announcement and is declined, never silently dropped. This module holds the numbers in
//! the gateway's config ([`StaticBlocklist`]), a static addition to the restrictions
//! people record ([`crate::restrictions`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use contract::{Blocklist, CitizenIdentity, IdentityKind, Restricted};

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
    fn check(&self, citizen: &CitizenIdentity, _now: DateTime<Utc>) -> Option<Restricted> {
        (citizen.kind == IdentityKind::PhoneNumber && self.numbers.contains(&citizen.value))
            .then_some(Restricted {
                restriction_id: None,
                reason: None,
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
