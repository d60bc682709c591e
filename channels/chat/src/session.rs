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
/// Idempotency key prefix of chat messages: `chat/msg/<session>/<client message id>`,
/// stored with the message's ack (contact id and sequence number).
pub const ACK_PREFIX: &str = "chat/msg/";

/// Most characters of the citizen's text kept for classifying and summarising the
/// ticket at the end (the full text is in the contacts). Small, because the session
/// record is rewritten with every message until it is full.
pub const MAX_KEPT_TEXT: usize = 1000;

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
    /// Acknowledged contacts, in order. Not in the record: each message's idempotency
    /// key already stores its contact id and sequence number ([`SessionRecord::ack_key`]),
    /// so a message writes no second key and never the whole growing list.
    #[serde(skip)]
    pub contacts: Vec<Uuid>,
    /// The citizen's text so far, up to [`MAX_KEPT_TEXT`] characters.
    pub text: String,
    /// When the session opened.
    pub opened_at: DateTime<Utc>,
    /// Last frame from the citizen, ms since the epoch.
    pub last_activity_ms: i64,
    /// Set once the session's draft is recorded: a connection still holding the session
    /// (a resume racing the sweeper) must not add to a ticket that was already proposed.
    #[serde(skip)]
    pub ended: bool,
    /// Art. 9: the citizen is restricted and was let in for an Art. 15 emergency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction: Option<contract::RestrictionNote>,
}

impl SessionRecord {
    /// The outbox state key.
    pub fn state_key(&self) -> String {
        format!("{STATE_PREFIX}{}", self.session_id)
    }

    /// The idempotency key of the client's message `id`.
    pub fn ack_key(&self, id: &str) -> String {
        format!("{ACK_PREFIX}{}/{id}", self.session_id)
    }

    /// Appends citizen text, keeping at most [`MAX_KEPT_TEXT`] characters; returns
    /// whether anything was kept (and so whether the record must be written again).
    pub fn keep_text(&mut self, text: &str) -> bool {
        let mut room = MAX_KEPT_TEXT.saturating_sub(self.text.chars().count());
        if !self.text.is_empty() {
            if room <= 1 {
                return false;
            }
            self.text.push('\n');
            room -= 1;
        }
        if room == 0 {
            return false;
        }
        self.text.extend(text.chars().take(room));
        true
    }

    /// Rebuilds sessions from their records (state under [`STATE_PREFIX`]) and their
    /// messages' acks (idempotency keys under [`ACK_PREFIX`]); returns them and how many
    /// entries could not be read.
    pub fn restore(
        records: Vec<(String, Vec<u8>)>,
        acks: Vec<(String, Vec<u8>)>,
    ) -> (Vec<SessionRecord>, usize) {
        let mut sessions: HashMap<Uuid, SessionRecord> = HashMap::new();
        let mut unreadable = 0;
        for (_, value) in records {
            match serde_json::from_slice::<SessionRecord>(&value) {
                Ok(r) => {
                    sessions.insert(r.session_id, r);
                }
                Err(_) => unreadable += 1,
            }
        }
        let mut contacts: Vec<(Uuid, u64, Uuid)> = Vec::new();
        for (key, value) in acks {
            let sid = key
                .strip_prefix(ACK_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .and_then(|sid| sid.parse::<Uuid>().ok());
            let ack = serde_json::from_slice::<serde_json::Value>(&value).ok();
            let parsed = ack.as_ref().and_then(|a| {
                Some((
                    a.get("seq")?.as_u64()?,
                    a.get("contact_id")?.as_str()?.parse::<Uuid>().ok()?,
                ))
            });
            match (sid, parsed) {
                (Some(sid), Some((seq, contact))) => contacts.push((sid, seq, contact)),
                _ => unreadable += 1,
            }
        }
        contacts.sort_by_key(|(sid, seq, _)| (*sid, *seq));
        for (sid, _, contact) in contacts {
            // Acks of sessions that already ended have no record: nothing to restore.
            if let Some(r) = sessions.get_mut(&sid) {
                r.contacts.push(contact);
            }
        }
        (sessions.into_values().collect(), unreadable)
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

#[cfg(test)]
mod tests {
    use super::*;
    use contract::IdentityKind;

    fn record() -> SessionRecord {
        SessionRecord {
            session_id: Uuid::now_v7(),
            ticket_ref: TicketRef("ZH20261126AAAAAAAAAA".into()),
            token_hash: hash_token("t"),
            citizen: CitizenIdentity {
                kind: IdentityKind::ChatVisitor,
                value: "v".into(),
                key: "k".into(),
            },
            reply_paths: vec![],
            contacts: vec![],
            text: String::new(),
            opened_at: Utc::now(),
            last_activity_ms: 0,
            ended: false,
            restriction: None,
        }
    }

    #[test]
    fn restore_reassembles_contacts_in_order_and_skips_garbage() {
        let a = record();
        let b = record();
        let ids: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
        let records = vec![
            (a.state_key(), serde_json::to_vec(&a).expect("json")),
            (b.state_key(), serde_json::to_vec(&b).expect("json")),
            ("chat/session/garbage".to_owned(), b"x".to_vec()),
        ];
        // Client ids do not sort like sequence numbers; stored out of order on purpose.
        let mut acks: Vec<(String, Vec<u8>)> = ids
            .iter()
            .enumerate()
            .rev()
            .map(|(i, id)| {
                let ack = serde_json::json!({"type": "ack", "id": format!("c{i}"), "contact_id": id, "seq": i + 1});
                (a.ack_key(&format!("c{i}")), serde_json::to_vec(&ack).expect("json"))
            })
            .collect();
        // An ended session's acks remain until they expire.
        acks.push((
            format!("{ACK_PREFIX}{}/x", Uuid::now_v7()),
            br#"{"type":"ack","id":"x","contact_id":"01a216cb-fd05-759c-bd3f-be6a5441050b","seq":1}"#.to_vec(),
        ));
        let (mut restored, unreadable) = SessionRecord::restore(records, acks);
        assert_eq!(unreadable, 1);
        assert_eq!(restored.len(), 2);
        restored.sort_by_key(|r| r.contacts.len());
        assert_eq!(restored[0].session_id, b.session_id);
        assert!(restored[0].contacts.is_empty());
        assert_eq!(restored[1].contacts, ids);
    }

    #[test]
    fn kept_text_is_bounded() {
        let mut r = record();
        assert!(r.keep_text(&"字".repeat(MAX_KEPT_TEXT - 2)));
        assert!(r.keep_text("多出来的"));
        assert!(!r.keep_text("再多"), "full: the record need not be written");
        assert_eq!(r.text.chars().count(), MAX_KEPT_TEXT);
    }
}
