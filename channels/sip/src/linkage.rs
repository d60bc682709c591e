//! Art. 15 escalation calls: the gateway calls a linkage line (110, 119, 120, a unit's
//! 24-hour line), plays the urgent notice with the ticket's reference, and listens for
//! the operator's 1 (RFC 4733), which acknowledges the notice.
//!
//! A plain UAC call on the channel's endpoint ([`crate::uac`]): INVITE with a G.711 offer
//! (and telephone-event), ringing for the channel's `ring_timeout_secs` (then CANCEL),
//! ACK of the 2xx, the notice played twice (a linkage operator who picks up mid-sentence
//! hears it whole once), 1 at any time acknowledges (the acknowledgement prompt plays),
//! then BYE. The far end hanging up ends it too. Nothing is recorded: the notice and its
//! acknowledgement are events already.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{LinkageCall, LinkageCallOutcome, LinkageDialer};
use rsip::Header;

use crate::Core;
use crate::uac::{self, Dial, Placed, Question};

/// Times the notice is played.
const PLAYS: usize = 2;

/// Places linkage calls through the phone channel.
pub struct Dialer {
    core: Arc<Core>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

impl Dialer {
    /// A dialer on the channel's core.
    pub fn new(core: Arc<Core>) -> Self {
        Dialer { core }
    }
}

/// 1 acknowledges; other digits are ignored.
fn acknowledges(digit: char) -> Option<()> {
    (digit == '1').then_some(())
}

/// The outcome of a placed linkage call.
fn outcome(placed: Placed<()>) -> LinkageCallOutcome {
    match placed {
        Placed::Answered(Some(())) => LinkageCallOutcome::Acknowledged,
        Placed::Answered(None) => LinkageCallOutcome::Answered,
        Placed::Busy => LinkageCallOutcome::Busy,
        Placed::NoAnswer => LinkageCallOutcome::NoAnswer,
        Placed::Unresolved | Placed::Failed => LinkageCallOutcome::Failed,
    }
}

#[async_trait]
impl LinkageDialer for Dialer {
    async fn call(&self, call: LinkageCall) -> LinkageCallOutcome {
        let core = &self.core;
        let dial = Dial {
            kind: "linkage",
            uri: call.uri.clone(),
            headers: vec![
                Header::Other("X-Hotline-Notice".into(), call.notice_id.to_string()),
                Header::Other("X-Hotline-Ticket".into(), call.ticket_ref.to_string()),
            ],
            ring: Duration::from_secs(core.cfg.ring_timeout_secs),
            session: call.notice_id.as_u64_pair().0,
        };
        let question = Question {
            prompt: core.prompts.notice_for(call.ticket_ref.as_str()),
            plays: PLAYS,
            grace: Duration::ZERO,
            accept: acknowledges,
            closing: core.prompts.notice_acknowledged.clone(),
        };
        tracing::info!(notice = %call.notice_id, step = call.step, uri = %call.uri, "Placing the linkage call");
        let placed = uac::place(core, dial, &question).await;
        if placed == Placed::Unresolved {
            tracing::warn!(notice = %call.notice_id, uri = %call.uri, "Linkage line URI does not resolve");
        }
        let outcome = outcome(placed);
        tracing::info!(notice = %call.notice_id, step = call.step, outcome = outcome.as_str(), "Linkage call ended");
        metrics::counter!("gateway_sip_linkage_calls_total", "outcome" => outcome.as_str())
            .increment(1);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art15_only_1_acknowledges_the_notice() {
        assert_eq!(acknowledges('1'), Some(()));
        for d in ['0', '2', '9', '*', '#', 'A'] {
            assert_eq!(acknowledges(d), None, "{d}");
        }
    }

    #[test]
    fn art15_linkage_outcomes() {
        assert_eq!(
            outcome(Placed::Answered(Some(()))),
            LinkageCallOutcome::Acknowledged
        );
        assert_eq!(
            outcome(Placed::Answered(None)),
            LinkageCallOutcome::Answered
        );
        assert_eq!(outcome(Placed::Busy), LinkageCallOutcome::Busy);
        assert_eq!(outcome(Placed::NoAnswer), LinkageCallOutcome::NoAnswer);
        assert_eq!(outcome(Placed::Unresolved), LinkageCallOutcome::Failed);
        assert_eq!(outcome(Placed::Failed), LinkageCallOutcome::Failed);
    }
}
