//! Chat sessions: what survives a disconnect and a gateway restart.
//!
//! A session is one ticket: it gets its ticket reference when it opens, one contact per
//! message, and one ticket draft when it ends (by the citizen's `end`, or when nobody
//! resumed it within the resume window). Its state is written through the outbox in the
//! same atomic step as each contact, so after a crash the gateway knows exactly which
//! messages were acknowledged and can still end the session with a complete draft.
//!
//! The [`Registry`] also finds a citizen's connected sessions by citizen key, to write
//! the hotline's messages (the Art. 16 survey) into them: each attached connection has a
//! small bounded queue of frames its loop writes to the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use contract::{CitizenIdentity, ReplyPath, TicketRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::protocol::ServerFrame;

/// State key prefix of chat sessions in the outbox.
pub const STATE_PREFIX: &str = "chat/session/";
/// Idempotency key prefix of chat messages: `chat/msg/<session>/<client message id>`,
/// stored with the message's ack (contact id and sequence number).
pub const ACK_PREFIX: &str = "chat/msg/";

/// Frames queued for one connection by the hotline (survey messages) before it takes
/// no more: a connection that does not keep up is skipped, not waited for.
pub const PUSH_QUEUE: usize = 8;

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
    /// Those of `contacts` that are survey replies (`rating` frames): numbered with the
    /// session's contacts, but about another ticket, so not part of this session's draft.
    /// Restored from their acks ([`StoredAck::survey_reply`]).
    #[serde(skip)]
    pub survey_replies: Vec<Uuid>,
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

    /// The contacts this session's ticket draft carries: its messages, not the survey
    /// replies.
    pub fn drafted(&self) -> Vec<Uuid> {
        self.contacts
            .iter()
            .filter(|c| !self.survey_replies.contains(c))
            .copied()
            .collect()
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
        let mut contacts: Vec<(Uuid, u32, Uuid, bool)> = Vec::new();
        for (key, value) in acks {
            let sid = key
                .strip_prefix(ACK_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .and_then(|sid| sid.parse::<Uuid>().ok());
            let parsed = serde_json::from_slice::<StoredAck>(&value).ok();
            match (sid, parsed) {
                (Some(sid), Some(a)) => contacts.push((sid, a.seq, a.contact_id, a.survey_reply)),
                _ => unreadable += 1,
            }
        }
        contacts.sort_by_key(|(sid, seq, _, _)| (*sid, *seq));
        for (sid, _, contact, survey_reply) in contacts {
            // Acks of sessions that already ended have no record: nothing to restore.
            if let Some(r) = sessions.get_mut(&sid) {
                r.contacts.push(contact);
                if survey_reply {
                    r.survey_replies.push(contact);
                }
            }
        }
        (sessions.into_values().collect(), unreadable)
    }
}

/// What a contact's idempotency key stores: the `ack` frame as sent (so a resent frame
/// gets it again), and whether the contact is a survey reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAck {
    /// Always `ack`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The client's id.
    pub id: String,
    /// The contact's id.
    pub contact_id: Uuid,
    /// Its position in the session.
    pub seq: u32,
    /// A `rating` frame's contact (left out of the session's draft).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub survey_reply: bool,
}

impl StoredAck {
    /// The `ack` frame it answers with.
    pub fn frame(&self) -> ServerFrame {
        ServerFrame::Ack {
            id: self.id.clone(),
            contact_id: self.contact_id,
            seq: self.seq,
        }
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
    /// The citizen's pseudonymous key (fixed at `open`): what the hotline's messages are
    /// addressed to.
    pub citizen_key: String,
    /// The record; a tokio Mutex because it is held across the outbox submit, which
    /// serialises a session's messages even across a takeover.
    pub record: tokio::sync::Mutex<SessionRecord>,
    /// The connection currently attached (a std Mutex: never held across an await).
    attached: Mutex<Option<Attached>>,
}

/// The attached connection, as the session sees it.
struct Attached {
    /// Its number.
    number: u64,
    /// Cancelled when another connection takes over.
    taken_over: CancellationToken,
    /// Frames for it to write to its socket.
    push: mpsc::Sender<ServerFrame>,
}

/// Numbers connections, so a connection detaches only itself.
static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// A connection's hold on a session.
pub struct Attachment {
    /// The connection's number.
    pub number: u64,
    /// Cancelled when another connection takes the session over.
    pub taken_over: CancellationToken,
    /// Frames the hotline writes into the session (its messages): the connection's loop
    /// sends them on its socket.
    pub pushed: mpsc::Receiver<ServerFrame>,
}

impl Session {
    /// Attaches a new connection, detaching (cancelling) the previous one.
    pub fn attach(&self) -> Attachment {
        let number = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let (push, pushed) = mpsc::channel(PUSH_QUEUE);
        let mut slot = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        let new = Attached {
            number,
            taken_over: token.clone(),
            push,
        };
        if let Some(old) = slot.replace(new) {
            old.taken_over.cancel();
        }
        Attachment {
            number,
            taken_over: token,
            pushed,
        }
    }

    /// Queues `frame` for the attached connection; returns whether one took it (none is
    /// attached, or its queue is full: `false`).
    pub fn push(&self, frame: ServerFrame) -> bool {
        let slot = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .is_some_and(|a| a.push.try_send(frame).is_ok())
    }

    /// Detaches the connection `number` if it is still the attached one.
    pub fn detach(&self, number: u64) {
        let mut slot = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|a| a.number == number) {
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
    /// Session ids by citizen key (a citizen may have several sessions open).
    by_citizen: HashMap<String, Vec<Uuid>>,
}

impl Registry {
    /// Adds a session.
    pub fn insert(&self, record: SessionRecord) -> Arc<Session> {
        let id = record.session_id;
        let token_hash = record.token_hash.clone();
        let citizen_key = record.citizen.key.clone();
        let session = Arc::new(Session {
            citizen_key: citizen_key.clone(),
            record: tokio::sync::Mutex::new(record),
            attached: Mutex::new(None),
        });
        let mut maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_token.insert(token_hash, id);
        maps.by_citizen.entry(citizen_key).or_default().push(id);
        maps.by_id.insert(id, session.clone());
        session
    }

    /// Queues `frame` on every connected session of the citizen `citizen_key`; returns
    /// how many took it.
    pub fn push(&self, citizen_key: &str, frame: &ServerFrame) -> u32 {
        let sessions: Vec<Arc<Session>> = {
            let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            maps.by_citizen
                .get(citizen_key)
                .into_iter()
                .flatten()
                .filter_map(|id| maps.by_id.get(id).cloned())
                .collect()
        };
        sessions.iter().filter(|s| s.push(frame.clone())).count() as u32
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
        if let Some(session) = maps.by_id.remove(&id)
            && let Some(ids) = maps.by_citizen.get_mut(&session.citizen_key)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                maps.by_citizen.remove(&session.citizen_key);
            }
        }
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
            survey_replies: vec![],
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

    fn for_citizen(key: &str) -> SessionRecord {
        let mut r = record();
        r.citizen.key = key.into();
        r.token_hash = hash_token(&r.session_id.to_string());
        r
    }

    fn survey() -> ServerFrame {
        ServerFrame::Message {
            reference: "ZH20261126AAAAAAAAAA".into(),
            purpose: "survey".into(),
            text: "请评价".into(),
            asks_rating: true,
        }
    }

    #[test]
    fn art16_push_reaches_every_connected_session_of_the_citizen_only() {
        let registry = Registry::default();
        let a1 = registry.insert(for_citizen("a"));
        let a2 = registry.insert(for_citizen("a"));
        let resumable = registry.insert(for_citizen("a"));
        let b = registry.insert(for_citizen("b"));
        let mut at1 = a1.attach();
        let mut at2 = a2.attach();
        let mut atb = b.attach();
        assert!(!resumable.is_attached());
        assert_eq!(
            registry.push("a", &survey()),
            2,
            "the detached one is not connected"
        );
        assert!(matches!(
            at1.pushed.try_recv(),
            Ok(ServerFrame::Message { .. })
        ));
        assert!(matches!(
            at2.pushed.try_recv(),
            Ok(ServerFrame::Message { .. })
        ));
        assert!(atb.pushed.try_recv().is_err(), "another citizen's session");
        assert_eq!(registry.push("nobody", &survey()), 0);
    }

    #[test]
    fn push_goes_to_the_connection_that_took_the_session_over() {
        let registry = Registry::default();
        let s = registry.insert(for_citizen("a"));
        let mut old = s.attach();
        let mut new = s.attach();
        assert!(old.taken_over.is_cancelled());
        assert_eq!(registry.push("a", &survey()), 1);
        assert!(old.pushed.try_recv().is_err());
        assert!(new.pushed.try_recv().is_ok());
        s.detach(new.number);
        assert_eq!(registry.push("a", &survey()), 0);
    }

    #[test]
    fn a_connection_that_does_not_read_is_skipped_not_waited_for() {
        let registry = Registry::default();
        let s = registry.insert(for_citizen("a"));
        let _attachment = s.attach();
        for _ in 0..PUSH_QUEUE {
            assert_eq!(registry.push("a", &survey()), 1);
        }
        assert_eq!(registry.push("a", &survey()), 0, "its queue is full");
    }

    #[test]
    fn removed_sessions_leave_the_citizen_index() {
        let registry = Registry::default();
        let r = for_citizen("a");
        let (id, hash) = (r.session_id, r.token_hash.clone());
        let s = registry.insert(r);
        let _attachment = s.attach();
        registry.remove(id, &hash);
        assert_eq!(registry.push("a", &survey()), 0);
        assert!(registry.inner.lock().expect("lock").by_citizen.is_empty());
    }

    #[test]
    fn restore_keeps_survey_replies_numbered_but_out_of_the_draft() {
        let a = record();
        let (m1, reply, m2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ack = |id: &str, contact_id, seq, survey_reply| {
            let stored = StoredAck {
                kind: "ack".into(),
                id: id.into(),
                contact_id,
                seq,
                survey_reply,
            };
            (a.ack_key(id), serde_json::to_vec(&stored).expect("json"))
        };
        let acks = vec![
            ack("c2", m2, 3, false),
            ack("r1", reply, 2, true),
            ack("c1", m1, 1, false),
        ];
        let records = vec![(a.state_key(), serde_json::to_vec(&a).expect("json"))];
        let (restored, unreadable) = SessionRecord::restore(records, acks);
        assert_eq!(unreadable, 0);
        assert_eq!(restored[0].contacts, vec![m1, reply, m2]);
        assert_eq!(restored[0].survey_replies, vec![reply]);
        assert_eq!(restored[0].drafted(), vec![m1, m2]);
    }

    #[test]
    fn a_message_ack_is_stored_as_the_ack_frame() {
        let stored = StoredAck {
            kind: "ack".into(),
            id: "c1".into(),
            contact_id: Uuid::nil(),
            seq: 1,
            survey_reply: false,
        };
        assert_eq!(
            serde_json::to_value(&stored).expect("json"),
            serde_json::to_value(stored.frame()).expect("json")
        );
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
