//! The clock every routing rule reads: wall time in production, tokio's clock in tests.
//!
//! Rules that run on a calendar (Art. 9's 30 natural days, Art. 15's 30 minutes) must be
//! testable to the second without waiting: a [`Clock::starting_at`] clock reads UTC as
//! a fixed origin plus the time tokio's clock has moved since, so a test that pauses
//! tokio (`start_paused = true`) and advances it by 30 days sees exactly 30 days pass.
//! Timers sleep on tokio's clock in both modes, so a paused test drives them too.

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// `origin` at tokio instant `at`, moving with tokio's clock.
    Tokio {
        /// UTC at `at`.
        origin: DateTime<Utc>,
        /// The tokio instant that corresponds to `origin`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock::System
    }

    /// A clock that reads `origin` now and moves with tokio's clock (paused or not).
    pub fn starting_at(origin: DateTime<Utc>) -> Self {
        Clock::Tokio {
            origin,
            at: tokio::time::Instant::now(),
        }
    }

    /// Now, in UTC.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { origin, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                *origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
            }
        }
    }

    /// Sleeps until `when` on this clock (at once when it has passed). The wait is
    /// measured on tokio's clock; with the wall clock, a caller that must be exact
    /// re-reads [`Clock::now`] after waking (the wall clock may have been stepped).
    pub async fn sleep_until(&self, when: DateTime<Utc>) {
        let left = (when - self.now()).to_std().unwrap_or_default();
        tokio::time::sleep(left).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let origin = DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
            .expect("literal")
            .with_timezone(&Utc);
        let clock = Clock::starting_at(origin);
        assert_eq!(clock.now(), origin);
        tokio::time::advance(std::time::Duration::from_secs(86_400)).await;
        assert_eq!(clock.now(), origin + chrono::Duration::days(1));
        let target = origin + chrono::Duration::days(2);
        clock.sleep_until(target).await;
        assert_eq!(clock.now(), target);
    }
}
