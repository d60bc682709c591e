//! Art. 9 restrictions in the gateway: the shared book every channel asks at admission,
//! kept current from the compacted restrictions topic, written through the outbox.
//!
//! - Every change (from the admin API, the expiry timer, an abusive-language proposal)
//!   is submitted to the outbox with its audit event, so it is durable before anybody is
//!   told it happened, and then applied to this instance's book at once.
//! - A reader thread reads the restrictions topic from the beginning of every partition
//!   and applies each record to the book, so every instance sees every change (one
//!   second is the target: the drain produces at once, the reader fetches with a 100 ms
//!   wait). Once it has reached the end of every partition the book is *synced*; the
//!   gateway waits for that (up to `restrictions.load_timeout_secs`) before it builds
//!   its channels, and `/readyz` reports it.
//! - Admission never waits on Kafka: it reads the book in memory.
//!
//! The reader is [`crate::topic_reader`]: every instance needs every record.

use std::sync::Arc;

use contract::{AuditEvent, Intake, IntakeError, RestrictionChange, RestrictionState, Submission};
use routing::restrictions::Applied;
use routing::{Clock, SharedBook};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::topic_reader::{self, ReaderStatus, Taken};

/// The gateway's restrictions: the book, how changes are written, the reader's status.
pub struct Restrictions {
    book: SharedBook,
    intake: Arc<dyn Intake>,
    clock: Clock,
    /// Wakes the expiry timer when a confirmation may have moved the next end earlier.
    wake: Arc<Notify>,
    /// Changes are decided and written one at a time on this instance, so that two
    /// requests cannot both confirm the same proposal here.
    writing: tokio::sync::Mutex<()>,
    status: Arc<ReaderStatus>,
}

impl std::fmt::Debug for Restrictions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restrictions").finish_non_exhaustive()
    }
}

impl Restrictions {
    /// Restrictions written through `intake`, timed by `clock`.
    pub fn new(intake: Arc<dyn Intake>, clock: Clock) -> Arc<Self> {
        Arc::new(Restrictions {
            book: SharedBook::new(),
            intake,
            clock,
            wake: Arc::new(Notify::new()),
            writing: tokio::sync::Mutex::new(()),
            status: Arc::new(ReaderStatus::default()),
        })
    }

    /// The book (a [`contract::Blocklist`]).
    pub fn book(&self) -> &SharedBook {
        &self.book
    }

    /// The clock the rules read.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The reader's status.
    pub fn status(&self) -> &Arc<ReaderStatus> {
        &self.status
    }

    /// Decides a change on the current book and writes it: `decide` sees the book and
    /// `now` and returns the change, or why not. The change and its audit event are
    /// durable when this returns `Ok`, and applied to this instance's book.
    pub async fn change<E, F>(&self, decide: F) -> Result<RestrictionChange, ChangeError<E>>
    where
        F: FnOnce(
            &routing::RestrictionBook,
            chrono::DateTime<chrono::Utc>,
        ) -> Result<RestrictionChange, E>,
    {
        let _one_at_a_time = self.writing.lock().await;
        let change = {
            let book = self.book.read();
            decide(&book, self.clock.now()).map_err(ChangeError::Refused)?
        };
        self.publish(vec![change.clone()])
            .await
            .map_err(ChangeError::Intake)?;
        Ok(change)
    }

    /// Writes changes (and their audit events) through the outbox, then applies them.
    pub async fn publish(&self, changes: Vec<RestrictionChange>) -> Result<(), IntakeError> {
        let mut events = Vec::with_capacity(changes.len() * 2);
        for c in &changes {
            events.push(c.clone().into());
            events.push(AuditEvent::of_restriction(c).into());
        }
        self.intake
            .submit(Submission {
                events,
                ..Submission::default()
            })
            .await?;
        let mut confirmed = false;
        {
            let mut book = self.book.write();
            for c in changes {
                metrics::counter!("gateway_restriction_changes_total", "state" => c.state.as_str())
                    .increment(1);
                confirmed |= c.state == RestrictionState::Active;
                book.apply(c);
            }
        }
        if confirmed {
            self.wake.notify_one();
        }
        self.gauges();
        Ok(())
    }

    fn gauges(&self) {
        let book = self.book.read();
        metrics::gauge!("gateway_restrictions_active").set(book.active_len() as f64);
        metrics::gauge!("gateway_restrictions").set(book.len() as f64);
    }

    /// Runs the expiry timer until `stop` (see [`routing::ExpiryTimer`]).
    pub async fn run_expiry(self: Arc<Self>, stop: CancellationToken) {
        let timer = routing::ExpiryTimer::new(self.book.clone(), self.clock, self.wake.clone());
        let this = self.clone();
        tokio::select! {
            () = timer.run(move |changes| {
                let this = this.clone();
                async move {
                    let n = changes.len();
                    let result = this.publish(changes).await.map_err(|e| e.to_string());
                    match &result {
                        Ok(()) => tracing::info!(expired = n, "Restrictions expired (Art. 9: 30 days over)"),
                        Err(e) => tracing::warn!(error = %e, "Cannot write restriction expiries yet; retrying"),
                    }
                    result
                }
            }) => {}
            () = stop.cancelled() => {}
        }
        self.gauges();
    }

    /// Art. 9: the proposal abusive words make (with the words as evidence, for a person
    /// to confirm), unless the citizen already has a live restriction or proposal, or
    /// withheld their number (a withheld caller is a new citizen each call).
    pub fn propose_for_abuse(
        &self,
        contact: &contract::Contact,
        hit: &routing::abuse::AbuseHit,
        text: &str,
    ) -> Option<RestrictionChange> {
        if contact.citizen.kind == contract::IdentityKind::Withheld {
            return None;
        }
        let at = text
            .find(&hit.heard)
            .map_or(0, |b| text[..b].chars().count());
        let proposal = routing::restrictions::Proposal {
            citizen: contact.citizen.clone(),
            reason: hit.reason,
            evidence: contract::Evidence {
                contacts: vec![contact.id],
                ticket_ref: Some(contact.ticket_ref.clone()),
                excerpt: Some(contract::notice::excerpt(text, at, 200)),
            },
            proposed_by: "gateway".into(),
            source: contract::ProposalSource::AbusiveLanguage,
        };
        self.book.read().propose(proposal, self.clock.now()).ok()
    }

    /// Applies a change a channel recorded (an abusive-language proposal).
    pub fn recorded(&self, change: &RestrictionChange) {
        metrics::counter!("gateway_restriction_changes_total", "state" => change.state.as_str())
            .increment(1);
        tracing::info!(restriction = %change.restriction_id, reason = ?change.reason, "Restriction proposed on abusive words (Art. 9), for a person to confirm");
        self.book.write().apply(change.clone());
        self.gauges();
    }

    /// Starts the reader of the restrictions topic (see the module docs). It stops soon
    /// after `stop`.
    pub fn spawn_reader(
        self: &Arc<Self>,
        client_props: Vec<(String, String)>,
        topic: String,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let (this, synced) = (self.clone(), self.clone());
        topic_reader::spawn(
            "restrictions",
            client_props,
            topic,
            self.status.clone(),
            stop,
            move |payload| this.take(payload),
            move || {
                let (count, active) = {
                    let book = synced.book.read();
                    (book.len(), book.active_len())
                };
                tracing::info!(
                    restrictions = count,
                    active,
                    "Restrictions synced from the topic"
                );
                metrics::gauge!("gateway_restrictions_synced").set(1.0);
                synced.gauges();
            },
        )
    }

    fn take(&self, payload: &[u8]) -> Taken {
        let change: RestrictionChange = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Unreadable record on the restrictions topic; skipped");
                return Taken::Unreadable;
            }
        };
        let active = change.state == RestrictionState::Active;
        let applied = self.book.write().apply(change);
        match applied {
            Applied::New | Applied::Updated => {
                if active {
                    self.wake.notify_one();
                }
                if self.status.is_synced() {
                    self.gauges();
                }
                Taken::Applied
            }
            Applied::Stale => Taken::Ignored,
            Applied::Invalid => {
                tracing::warn!("A restrictions record without a valid citizen key; skipped");
                Taken::Unreadable
            }
        }
    }
}

/// Why [`Restrictions::change`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The rules refused it.
    #[error("{0}")]
    Refused(E),
    /// The outbox refused it.
    #[error("{0}")]
    Intake(IntakeError),
}
