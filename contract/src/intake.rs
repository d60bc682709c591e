//! The seam between channels and the durable outbox.
//!
//! A channel builds events and hands them to [`Intake::submit`] as one [`Submission`].
//! `submit` returns only once the submission is durably recorded (fsync'd) or refused;
//! a channel acknowledges a citizen only after `Ok`. Everything in one submission is
//! recorded atomically: its events, the channel state it updates, and its idempotency
//! key, so that a crash can never leave a message acknowledged without its contact, or a
//! contact recorded without the state that says it was.

use async_trait::async_trait;

use crate::event::Event;

/// What a channel asks the outbox to record, atomically.
#[derive(Debug, Default, Clone)]
pub struct Submission {
    /// Events to deliver to Kafka, in this order.
    pub events: Vec<Event>,
    /// Channel state to write (key, value). Keys are namespaced by the channel
    /// (`chat/session/<id>`).
    pub put_state: Vec<(String, Vec<u8>)>,
    /// Channel state to delete.
    pub delete_state: Vec<String>,
    /// Record this submission only if this key was never recorded before (within the
    /// outbox's idempotency retention); the value is kept with the key and returned to
    /// later duplicates (a carrier's SMS message id and the receipt it got).
    pub once: Option<(String, Vec<u8>)>,
}

/// The outcome of a successful [`Intake::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Recorded durably; the events will reach Kafka.
    Accepted,
    /// The `once` key was recorded before: nothing new was recorded. Carries the value
    /// stored with the first submission.
    Duplicate(Vec<u8>),
}

/// Why the outbox refused a submission. Nothing of a refused submission is recorded.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The outbox holds as many undelivered records or bytes as it is allowed to (Kafka
    /// has been unreachable for a while). Retryable: tell the citizen to try again.
    #[error("the outbox is full ({depth} undelivered records); retry later")]
    Full {
        /// Undelivered records at the time.
        depth: u64,
    },
    /// The local store failed to write or sync. Retryable, but operators must look.
    #[error("the outbox could not record the submission: {0}")]
    Storage(String),
    /// The gateway is shutting down and takes no new work. Retry on another instance.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// The submission itself is unusable (an event that does not serialise, an empty
    /// submission). Not retryable: a bug in the calling channel.
    #[error("invalid submission: {0}")]
    Invalid(String),
}

impl IntakeError {
    /// Whether the same submission may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, IntakeError::Invalid(_))
    }
}

/// Where channels hand their events: the durable outbox in the gateway, an in-memory
/// double in unit tests.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Records a submission durably (see the module docs). Returns once it is on disk.
    async fn submit(&self, submission: Submission) -> Result<Receipt, IntakeError>;

    /// Reads all channel state whose key starts with `prefix` (for a channel to restore
    /// its sessions at start).
    async fn scan_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError>;

    /// Reads one channel state value (a point lookup: a prefix scan also walks the older
    /// versions of a key that is updated often, such as a per-citizen counter).
    async fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, IntakeError> {
        Ok(self
            .scan_state(key)
            .await?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v))
    }

    /// Reads the unexpired idempotency keys starting with `prefix` and the values stored
    /// with them (the chat channel rebuilds a session's acknowledged messages from them).
    async fn scan_once(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IntakeError>;
}
