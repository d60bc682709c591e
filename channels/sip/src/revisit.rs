//! Art. 17 revisit calls: the gateway calls a citizen through the trunk, asks for the
//! rating of the ticket's handling again and takes it as an RFC 4733 digit (1 to 5, Art.
//! 16).
//!
//! The call goes to `[channels.sip.revisit] uri` with `{number}` replaced by the
//! request's number, as a [`crate::uac`] call: the question played up to twice, then
//! [`GRACE`] of silence; the first digit 1 to 5 is the rating (the thanks prompt plays,
//! then BYE); other digits are ignored. No digit by then, or the citizen hanging up
//! mid-question, is `no_digit`; 486/600 `busy`; 408/480/487 or the ring time over
//! `no_answer`; anything else (a request already expired, a number that is not one, a
//! URI that does not resolve, no media port, another SIP failure) `failed`.
//!
//! The number is personal data (Art. 21): it is in the Request-URI and To only, never in
//! logs or metrics; logs name the ticket and the request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{Rating, RevisitCall, RevisitCallOutcome, RevisitDialer};
use rsip::Header;

use crate::Core;
use crate::config::RevisitConfig;
use crate::uac::{self, Dial, Placed, Question};

/// Times the question is played.
pub const PLAYS: usize = 2;
/// Silence listened to after the last play, for a citizen who presses at its end.
pub const GRACE: Duration = Duration::from_secs(5);

/// Places revisit calls through the phone channel.
pub struct Dialer {
    core: Arc<Core>,
    cfg: RevisitConfig,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("revisit::Dialer")
    }
}

impl Dialer {
    /// A dialer on the channel's core, when the channel has a `[channels.sip.revisit]`
    /// section.
    pub fn new(core: Arc<Core>) -> Option<Self> {
        let cfg = core.cfg.revisit.clone()?;
        Some(Dialer { core, cfg })
    }

    async fn place(&self, call: &RevisitCall) -> (RevisitCallOutcome, Option<Rating>) {
        if call.expires_at <= chrono::Utc::now() {
            tracing::info!(ticket = %call.ticket_ref, request = %call.id, "Revisit request expired; not placed");
            return (RevisitCallOutcome::Failed, None);
        }
        let Some(uri) = self.cfg.uri_for(&call.to) else {
            tracing::warn!(ticket = %call.ticket_ref, request = %call.id, "Revisit request's number is not a phone number; not placed");
            return (RevisitCallOutcome::Failed, None);
        };
        let dial = Dial {
            kind: "revisit",
            uri,
            headers: vec![
                Header::Other("X-Hotline-Revisit".into(), call.id.to_string()),
                Header::Other("X-Hotline-Ticket".into(), call.ticket_ref.to_string()),
            ],
            ring: Duration::from_secs(self.cfg.ring_timeout_secs),
            session: call.id.as_u64_pair().0,
        };
        let question = Question {
            prompt: self.core.prompts.revisit.clone(),
            plays: PLAYS,
            grace: GRACE,
            accept: rating,
            closing: self.core.prompts.revisit_thanks.clone(),
        };
        tracing::info!(ticket = %call.ticket_ref, request = %call.id, attempt = call.attempt, "Placing the revisit call");
        let placed = uac::place(&self.core, dial, &question).await;
        if placed == Placed::Unresolved {
            tracing::warn!(ticket = %call.ticket_ref, request = %call.id, "Revisit URI does not resolve (channels.sip.revisit.uri)");
        }
        outcome(placed)
    }
}

/// The rating a digit gives: 1 to 5 (Art. 16); any other key is none.
fn rating(digit: char) -> Option<Rating> {
    let d = digit.to_digit(10)?;
    Rating::from_digit(u8::try_from(d).ok()?)
}

/// The outcome of a placed revisit call.
fn outcome(placed: Placed<Rating>) -> (RevisitCallOutcome, Option<Rating>) {
    match placed {
        Placed::Answered(Some(r)) => (RevisitCallOutcome::Rated, Some(r)),
        Placed::Answered(None) => (RevisitCallOutcome::NoDigit, None),
        Placed::Busy => (RevisitCallOutcome::Busy, None),
        Placed::NoAnswer => (RevisitCallOutcome::NoAnswer, None),
        Placed::Unresolved | Placed::Failed => (RevisitCallOutcome::Failed, None),
    }
}

#[async_trait]
impl RevisitDialer for Dialer {
    async fn call(&self, call: &RevisitCall) -> (RevisitCallOutcome, Option<Rating>) {
        let (outcome, rating) = self.place(call).await;
        tracing::info!(
            ticket = %call.ticket_ref,
            request = %call.id,
            attempt = call.attempt,
            outcome = outcome.as_str(),
            rating = rating.map(Rating::as_str),
            "Revisit call ended"
        );
        metrics::counter!("gateway_sip_revisit_calls_total", "outcome" => outcome.as_str())
            .increment(1);
        (outcome, rating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art16_digits_1_to_5_rate_and_other_keys_are_ignored() {
        assert_eq!(rating('1'), Some(Rating::VerySatisfied));
        assert_eq!(rating('2'), Some(Rating::Satisfied));
        assert_eq!(rating('3'), Some(Rating::BasicallySatisfied));
        assert_eq!(rating('4'), Some(Rating::Dissatisfied));
        assert_eq!(rating('5'), Some(Rating::VeryDissatisfied));
        for d in ['0', '6', '9', '*', '#', 'A', 'D'] {
            assert_eq!(rating(d), None, "{d}");
        }
    }

    #[test]
    fn art17_revisit_outcomes() {
        assert_eq!(
            outcome(Placed::Answered(Some(Rating::Satisfied))),
            (RevisitCallOutcome::Rated, Some(Rating::Satisfied))
        );
        assert_eq!(
            outcome(Placed::Answered(None)),
            (RevisitCallOutcome::NoDigit, None)
        );
        assert_eq!(outcome(Placed::Busy), (RevisitCallOutcome::Busy, None));
        assert_eq!(
            outcome(Placed::NoAnswer),
            (RevisitCallOutcome::NoAnswer, None)
        );
        assert_eq!(
            outcome(Placed::Unresolved),
            (RevisitCallOutcome::Failed, None)
        );
        assert_eq!(outcome(Placed::Failed), (RevisitCallOutcome::Failed, None));
    }
}
