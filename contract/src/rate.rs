//! A token bucket for the rate limits of every channel (chat messages per session, SMS
//! requests per carrier).
//!
//! Written here rather than taken from a crate such as governor because it runs on
//! tokio's clock: tests pause and advance time to prove a limit in milliseconds, which a
//! limiter with its own clock cannot follow.

use tokio::time::Instant;

/// Allows `rate` events per second on average, and bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        TokenBucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Adds the tokens earned since the last look.
    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes one token; `false` when the limit is exceeded.
    pub fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for an event that a later check refused after all, so
    /// that the event does not count against this limit.
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Whether the bucket is full again: it then limits nothing that a new bucket would
    /// not, and whoever keeps buckets by key may forget it.
    pub fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }

    /// Seconds until the next token, rounded up (for a `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        if self.tokens >= 1.0 {
            0
        } else {
            ((1.0 - self.tokens) / self.rate).ceil().max(1.0) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(2.0, 3);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take(), "burst spent");
        assert_eq!(b.retry_after_secs(), 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.take(), "one token after 0.5 s at 2/s");
        assert!(!b.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        let taken = (0..10).filter(|_| b.take()).count();
        assert_eq!(
            taken, 3,
            "never more than the burst, however long the pause"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_given_back_can_be_taken_again_and_a_refilled_bucket_is_full() {
        let mut b = TokenBucket::new(1.0, 2);
        assert!(b.is_full());
        assert!(b.take() && b.take());
        assert!(!b.is_full());
        b.give_back();
        assert!(b.take(), "the token given back");
        assert!(!b.take());
        b.give_back();
        b.give_back();
        b.give_back();
        assert!(b.take() && b.take());
        assert!(!b.take(), "giving back never fills past the burst");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!b.is_full(), "1.5 of 2 tokens back");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.is_full());
    }
}
