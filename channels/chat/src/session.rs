//! Chat sessions: what survives a disconnect and a gateway restart.
//!
//! A session is one ticket: it gets its ticket reference when it opens, one contact per
//! message, and one ticket draft when it ends (by the citizen's `end`, or when nobody
//! resumed it within the resume window). Its state is written through the outbox in the
//! same atomic step as each contact, so after a crash the gateway knows exactly which
//! messages were acknowledged and can still end the session with a complete draft.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use contract::{CitizenIdentity, ReplyPath, TicketRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// State key prefix of chat sessions in the outbox.
pub const STATE_PREFIX: &str = "chat/session/";

/// Most characters of the citizen's text kept for classifying and summarising the
/// ticket at the end (the full text is in the contacts).
pub const MAX_KEPT_TEXT: usize = 4000;

/// The persisted part of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id.
    pub session_id: Uuid,
    /// The ticket reference given to the citizen.
    pub ticket_ref: TicketRef,
    /// SHA-256 of the resume token, hex. The token itself is never stored.
    pub token_hash: String,
    /// Who the citizen is.
    pub citizen: CitizenIdentity,
    /// How to reach them.
    pub reply_paths: Vec<ReplyPath>,
    /// Acknowledged contacts, in order.
    pub contacts: Vec<Uuid>,
    /// The citizen's text so far, up to [`MAX_KEPT_TEXT`] characters.
    pub text: String,
    /// When the session opened.
    pub opened_at: DateTime<Utc>,
    /// Last frame from the citizen, ms since the epoch.
    pub last_activity_ms: i64,
}

impl SessionRecord {
    /// The outbox state key.
    pub fn state_key(&self) -> String {
        format!("{STATE_PREFIX}{}", self.session_id)
    }

    /// Appends citizen text, keeping at most [`MAX_KEPT_TEXT`] characters.
    pub fn keep_text(&mut self, text: &str) {
        let room = MAX_KEPT_TEXT.saturating_sub(self.text.chars().count());
        if room == 0 {
            return;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.extend(text.chars().take(room));
    }
}

/// A new random resume token (256 bits, base64url) and its hash.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of a token, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A live or resumable session.
pub struct Session {
    /// The record; a tokio Mutex because it is held across the outbox submit, which
    /// serialises a session's messages even across a takeover.
    pub record: tokio::sync::Mutex<SessionRecord>,
    /// The connection currently attached: its number and the token that closes it (a
    /// std Mutex: never held across an await).
    attached: Mutex<Option<(u64, CancellationToken)>>,
}

/// Numbers connections, so a connection detaches only itself.
static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// A connection's hold on a session.
pub struct Attachment {
    /// The connection's number.
    pub number: u64,
    /// Cancelled when another connection takes the session over.
    pub taken_over: CancellationToken,
}

impl Session {
    /// Attaches a new connection, detaching (cancelling) the previous one.
    pub fn attach(&self) -> Attachment {
        let number = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut slot = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = slot.replace((number, token.clone())) {
            old.cancel();
        }
        Attachment {
            number,
            taken_over: token,
        }
    }

    /// Detaches the connection `number` if it is still the attached one.
    pub fn detach(&self, number: u64) {
        let mut slot = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(n, _)| *n == number) {
            *slot = None;
        }
    }

    /// Whether a connection is attached.
    pub fn is_attached(&self) -> bool {
        self.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// All sessions of this gateway, by id and by token hash.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<Uuid, Arc<Session>>,
    by_token: HashMap<String, Uuid>,
}

impl Registry {
    /// Adds a session.
    pub fn insert(&self, record: SessionRecord) -> Arc<Session> {
        let id = record.session_id;
        let token_hash = record.token_hash.clone();
        let session = Arc::new(Session {
            record: tokio::sync::Mutex::new(record),
            attached: Mutex::new(None),
        });
        let mut maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_token.insert(token_hash, id);
        maps.by_id.insert(id, session.clone());
        session
    }

    /// The session a resume token names.
    pub fn by_token(&self, token: &str) -> Option<Arc<Session>> {
        let hash = hash_token(token);
        let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_token
            .get(&hash)
            .and_then(|id| maps.by_id.get(id))
            .cloned()
    }

    /// Removes a session.
    pub fn remove(&self, id: Uuid, token_hash: &str) {
        let mut maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_id.remove(&id);
        maps.by_token.remove(token_hash);
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_id.values().cloned().collect()
    }

    /// How many sessions exist (attached or resumable).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
