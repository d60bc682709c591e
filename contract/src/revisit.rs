//! The citizen's rating of a closed ticket (Art. 16) and the automated revisit call that
//! asks a dissatisfied citizen again (Art. 17).
//!
//! The ticket service asks for a revisit call by publishing a [`RevisitCall`] on the
//! revisit-calls topic (keyed by the ticket reference: no number in a key). The gateway
//! calls the number through its SIP trunk, plays the question and takes the rating as an
//! RFC 4733 digit (1 to 5, [`Rating::digit`]), then publishes how it went as a
//! [`RevisitResult`] on the revisit-results topic, which the ticket service reads. A call
//! not answered, busy or without a digit is a failed attempt; the service decides when
//! to try again (Art. 17: three failures end the revisit).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::TicketRef;

/// The five ratings of Art. 16, with the digit a citizen answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// 非常满意 (1).
    VerySatisfied,
    /// 满意 (2); also what no reply within 24 hours counts as (Art. 16).
    Satisfied,
    /// 基本满意 (3).
    BasicallySatisfied,
    /// 不满意 (4): a revisit follows (Art. 17).
    Dissatisfied,
    /// 非常不满意 (5): a revisit follows (Art. 17).
    VeryDissatisfied,
}

impl Rating {
    /// All five, by digit.
    pub const ALL: [Rating; 5] = [
        Rating::VerySatisfied,
        Rating::Satisfied,
        Rating::BasicallySatisfied,
        Rating::Dissatisfied,
        Rating::VeryDissatisfied,
    ];

    /// The digit that answers with it (SMS reply and RFC 4733 alike).
    pub fn digit(self) -> u8 {
        match self {
            Rating::VerySatisfied => 1,
            Rating::Satisfied => 2,
            Rating::BasicallySatisfied => 3,
            Rating::Dissatisfied => 4,
            Rating::VeryDissatisfied => 5,
        }
    }

    /// The rating a digit answers with.
    pub fn from_digit(d: u8) -> Option<Rating> {
        Rating::ALL.into_iter().find(|r| r.digit() == d)
    }

    /// The name used in the database, the API and the events.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::VerySatisfied => "very_satisfied",
            Rating::Satisfied => "satisfied",
            Rating::BasicallySatisfied => "basically_satisfied",
            Rating::Dissatisfied => "dissatisfied",
            Rating::VeryDissatisfied => "very_dissatisfied",
        }
    }

    /// The rating named `s`, if any.
    pub fn parse(s: &str) -> Option<Rating> {
        Rating::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The words in Simplified Chinese.
    pub fn zh(self) -> &'static str {
        match self {
            Rating::VerySatisfied => "非常满意",
            Rating::Satisfied => "满意",
            Rating::BasicallySatisfied => "基本满意",
            Rating::Dissatisfied => "不满意",
            Rating::VeryDissatisfied => "非常不满意",
        }
    }

    /// Whether it counts as satisfied in the statistics (Art. 18) and needs no revisit
    /// (Art. 17).
    pub fn satisfied(self) -> bool {
        !matches!(self, Rating::Dissatisfied | Rating::VeryDissatisfied)
    }
}

/// A request to call a citizen and ask for the rating again (Art. 17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevisitCall {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The request id: the CloudEvents id, derived from the ticket, the survey round and
    /// the attempt, so a request published twice is one call.
    pub id: Uuid,
    /// The ticket.
    pub ticket_ref: TicketRef,
    /// Which attempt this is (1 to 3).
    pub attempt: u32,
    /// When it was asked for (UTC).
    pub requested_at: DateTime<Utc>,
    /// Not placed after this (UTC); it then ends `failed`.
    pub expires_at: DateTime<Utc>,
    /// The number to call, normalised. Personal data (Art. 21): in the payload only,
    /// never logged.
    pub to: String,
}

/// How a revisit call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevisitCallOutcome {
    /// Answered and a digit 1 to 5 pressed: the rating is in the result.
    Rated,
    /// Not answered within the ring time.
    NoAnswer,
    /// Busy or declined.
    Busy,
    /// Answered, the question played, no valid digit.
    NoDigit,
    /// Not placed or broken off (no route, no media port, expired, a SIP error).
    Failed,
}

impl RevisitCallOutcome {
    /// The name used in metrics and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisitCallOutcome::Rated => "rated",
            RevisitCallOutcome::NoAnswer => "no_answer",
            RevisitCallOutcome::Busy => "busy",
            RevisitCallOutcome::NoDigit => "no_digit",
            RevisitCallOutcome::Failed => "failed",
        }
    }
}

/// What became of a [`RevisitCall`], published by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevisitResult {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event.
    pub id: Uuid,
    /// The request.
    pub request_id: Uuid,
    /// The ticket (the record key).
    pub ticket_ref: TicketRef,
    /// The attempt (copied from the request).
    pub attempt: u32,
    /// When the call ended (UTC).
    pub at: DateTime<Utc>,
    /// How it went.
    pub outcome: RevisitCallOutcome,
    /// The rating, when `outcome` is `rated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
}

/// Places revisit calls (the gateway's phone channel implements it).
#[async_trait]
pub trait RevisitDialer: Send + Sync + 'static {
    /// Calls the number, asks for the rating, listens for a digit; returns how it went
    /// and the rating when one was given.
    async fn call(&self, call: &RevisitCall) -> (RevisitCallOutcome, Option<Rating>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art16_five_ratings_by_digit() {
        for d in 1..=5 {
            let r = Rating::from_digit(d).expect("1 to 5 are ratings");
            assert_eq!(r.digit(), d);
            assert_eq!(Rating::parse(r.as_str()), Some(r));
        }
        assert_eq!(Rating::from_digit(0), None);
        assert_eq!(Rating::from_digit(6), None);
        assert!(Rating::BasicallySatisfied.satisfied());
        assert!(!Rating::Dissatisfied.satisfied());
        assert!(!Rating::VeryDissatisfied.satisfied());
    }
}
