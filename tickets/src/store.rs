//! The PostgreSQL store: tickets, the contacts and drafts they came from, the consumer's
//! offsets and the status outbox, each change in one transaction with what it caused.
//!
//! - A batch of records from one partition is applied in one transaction that also moves
//!   the partition's offset (locked `FOR UPDATE`, so two instances that both read the
//!   partition for a moment cannot both apply it), and drops any `ce_id` already
//!   applied: each record counts once, across crashes and redeliveries.
//! - A record that does not parse or fails validation becomes a dead letter (an outbox
//!   row for the dead-letter topic, with the reason) in that same transaction: it never
//!   blocks its partition and never vanishes.
//! - Every ticket transition writes its history row and its status event (an outbox row)
//!   in the transaction that changes the ticket.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use contract::{
    Card, ChannelKind, Contact, Event, IdentityKind, Outcome, PrefillName, ReplyPath, TicketAction,
    TicketDraft, TicketKind, TicketRef, TicketState, TicketStatus,
};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::calendar::Calendar;
use crate::repeat::{self, Decision, RepeatParams};
use crate::rules::{self, Command, Refusal, Role, Snapshot};
use crate::units::Units;

/// Embedded migrations (`tickets/migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How far back a citizen's tickets are compared with a new draft (Art. 14).
const REPEAT_LOOKBACK_DAYS: i64 = 90;
/// At most this many of them.
const REPEAT_CANDIDATES: i64 = 20;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (retry).
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A status event would not encode.
    #[error("event encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

impl StoreError {
    /// A data error of one record (not the database's health): SQLSTATE classes 22 (data
    /// exception) and 23 (integrity constraint violation).
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
            StoreError::Encode(_) => true,
            _ => false,
        }
    }
}

/// Topics the store writes outbox rows for (and the revisit results it reads).
#[derive(Debug, Clone)]
pub struct OutTopics {
    /// Ticket status events.
    pub status: String,
    /// Dead letters.
    pub dead_letter: String,
    /// Outbound SMS requests (the gateway sends them): result SMS, survey (Arts. 13, 16).
    pub sms_outbound: String,
    /// Revisit-call requests (the gateway places them, Art. 17).
    pub revisit_calls: String,
    /// Revisit-call results (the gateway's; read, not written).
    pub revisit_results: String,
    /// Outbound SMS outcomes (the gateway's; read: a survey's window starts when its
    /// text was sent, Art. 16).
    pub sms_status: String,
    /// Messages into open chat sessions (the chat survey, Art. 16).
    pub chat_outbound: String,
    /// Their delivery reports (the gateway's; read).
    pub chat_status: String,
}

impl Default for OutTopics {
    fn default() -> Self {
        OutTopics {
            status: "hotline.ticket-status.v1".into(),
            dead_letter: "hotline.tickets-dead-letter.v1".into(),
            sms_outbound: "hotline.sms-outbound.v1".into(),
            revisit_calls: "hotline.revisit-calls.v1".into(),
            revisit_results: "hotline.revisit-results.v1".into(),
            sms_status: "hotline.sms-status.v1".into(),
            chat_outbound: "hotline.chat-outbound.v1".into(),
            chat_status: "hotline.chat-status.v1".into(),
        }
    }
}

/// One Kafka record to apply.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Records applied (contacts stored, drafts registered).
    pub applied: u32,
    /// Records whose `ce_id` was applied before.
    pub duplicates: u32,
    /// Records behind the partition's committed offset (another instance applied them).
    pub behind: u32,
    /// Records sent to the dead-letter topic.
    pub dead: u32,
    /// The batch jumped past the committed offset (the reader's position is not the
    /// partition's: a stale read); nothing from the jump on was applied, and the reader
    /// must seek to the committed offset again.
    pub gap: bool,
}

/// What a record is.
enum Parsed {
    Contact(Box<Contact>),
    Draft(Box<TicketDraft>),
    RevisitResult(Box<contract::RevisitResult>),
    SmsStatus(Box<contract::SmsStatus>),
    ChatStatus(Box<contract::ChatOutboundStatus>),
    Dead(String),
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    calendar: Arc<Calendar>,
    units: Arc<Units>,
    repeat: Arc<RepeatParams>,
    topics: OutTopics,
    source: String,
    followup: Arc<crate::followup::Params>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("source", &self.source)
            .finish()
    }
}

fn kind_str(k: TicketKind) -> &'static str {
    match k {
        TicketKind::Consultation => "consultation",
        TicketKind::Help => "help",
        TicketKind::Complaint => "complaint",
        TicketKind::Report => "report",
        TicketKind::Suggestion => "suggestion",
        TicketKind::Praise => "praise",
        TicketKind::Correction => "correction",
        TicketKind::Unknown => "unknown",
    }
}

fn parse_kind(s: &str) -> TicketKind {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap_or(TicketKind::Unknown)
}

/// An id every instance derives alike for the same fact (a card on a due date), so a
/// clock that fires on two instances writes one event.
pub fn derived_id(parts: &[&str]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // A version 8 (custom) UUID: the version and variant bits set by hand, as RFC 9562
    // asks (uuid's `new_v8` needs a feature this workspace does not otherwise use).
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// The columns of a ticket, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketRow {
    /// Row id (registration order).
    pub id: i64,
    /// Reference.
    pub ticket_ref: String,
    /// The draft's id.
    pub draft_id: Uuid,
    /// Citizen key.
    pub citizen_key: String,
    /// Channel.
    pub channel: String,
    /// Received.
    pub received_at: DateTime<Utc>,
    /// State.
    pub state: String,
    /// Outcome.
    pub outcome: Option<String>,
    /// Kind.
    pub kind: String,
    /// Summary.
    pub summary: String,
    /// Place.
    pub location: Option<String>,
    /// District.
    pub district: Option<String>,
    /// Request.
    pub request: Option<String>,
    /// Urgency.
    pub urgency: String,
    /// Pre-selected unit.
    pub suggested_unit: Option<String>,
    /// Original of a supplement.
    pub parent_ref: Option<String>,
    /// Lead unit.
    pub lead_unit: Option<String>,
    /// Co-units.
    pub co_units: Vec<String>,
    /// Current receipt by the lead unit.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// First receipt by a unit.
    pub first_dispatched_at: Option<DateTime<Utc>>,
    /// Dispatch due.
    pub dispatch_due: Option<NaiveDate>,
    /// Handling due.
    pub handling_due: Option<NaiveDate>,
    /// Days counted.
    pub handling_days: Option<i32>,
    /// Provisional.
    pub due_provisional: bool,
    /// Extended.
    pub extended: bool,
    /// Refused returns.
    pub returns: i32,
    /// A pending return's request time.
    pub return_requested_at: Option<DateTime<Utc>>,
    /// Urges.
    pub urge_count: i32,
    /// Card.
    pub card: String,
    /// Records by name.
    pub records: serde_json::Value,
    /// The draft.
    pub draft: serde_json::Value,
    /// Art. 14 decision.
    pub repeat_decision: String,
    /// Its reason.
    pub repeat_reason: String,
    /// The earlier ticket it concerns.
    pub repeat_of: Option<String>,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The lead unit's latest reply (Art. 13).
    pub replied_at: Option<DateTime<Utc>>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Redone once (Art. 17).
    pub redone: bool,
    /// The rating that counts (Arts. 16, 17).
    pub rating: Option<String>,
    /// An appeal of that rating was upheld: it does not count (Art. 17).
    pub rating_appealed: bool,
    /// First yellow card.
    pub yellow_at: Option<DateTime<Utc>>,
    /// First red card.
    pub red_at: Option<DateTime<Utc>>,
}

impl TicketRow {
    /// The fields the rules work on.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: TicketState::parse(&self.state).unwrap_or(TicketState::Registered),
            outcome: self.outcome.as_deref().and_then(Outcome::parse),
            kind: parse_kind(&self.kind),
            summary: self.summary.clone(),
            location: self.location.clone(),
            district: self.district.clone(),
            request: self.request.clone(),
            lead_unit: self.lead_unit.clone(),
            co_units: self.co_units.clone(),
            dispatched_at: self.dispatched_at,
            first_dispatched_at: self.first_dispatched_at,
            dispatch_due: self.dispatch_due,
            handling_due: self.handling_due,
            handling_days: self.handling_days.map(|d| d.max(0) as u32),
            due_provisional: self.due_provisional,
            extended: self.extended,
            returns: self.returns.max(0) as u32,
            return_requested_at: self.return_requested_at,
            card: Card::parse(&self.card).unwrap_or(Card::None),
            redone: self.redone,
            rating: self.rating.as_deref().and_then(contract::Rating::parse),
        }
    }

    /// The card shown on `today`: the stored one, or what the date says if the sweep
    /// has not run yet.
    pub fn card_on(&self, today: NaiveDate) -> Card {
        rules::card_on(&self.snapshot(), today)
    }
}

/// A citizen's progress answer (Art. 14): state and dates only.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The reference asked about.
    pub ticket_ref: String,
    /// The ticket that carries it (the original, for a reference taken as an urge).
    pub handled_as: String,
    /// State.
    pub state: String,
    /// Outcome, once closed.
    pub outcome: Option<String>,
    /// Received.
    pub received_at: DateTime<Utc>,
    /// Handling due.
    pub handling_due: Option<NaiveDate>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One history entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    /// Event id.
    pub event_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub action: String,
    /// Article.
    pub article: String,
    /// Who.
    pub actor: String,
    /// State after.
    pub state: String,
    /// Why.
    pub detail: Option<String>,
}

/// An outbox row to publish.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Order.
    pub seq: i64,
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: String,
    /// Headers, as a JSON array of `[name, value]`.
    pub headers: serde_json::Value,
    /// Value.
    pub payload: Vec<u8>,
}

/// A list filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<TicketState>,
    /// Only tickets this unit leads or co-handles.
    pub unit: Option<String>,
    /// Only this card.
    pub card: Option<Card>,
    /// Rows with an id below this (the cursor).
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such ticket (or, for a unit, not one it may see).
    #[error("no ticket {0}")]
    NotFound(String),
    /// The rules refused it.
    #[error("{}", .0.detail)]
    Refused(Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        CommandError::Store(StoreError::Db(e))
    }
}

/// An agent's overrule of an Art. 14 decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrule {
    /// `new`, `supplement` or `urge`.
    pub decision: String,
    /// The original ticket (for `supplement` and `urge`).
    #[serde(default)]
    pub original: Option<String>,
    /// Why.
    pub reason: String,
}

const TICKET_COLUMNS: &str = "id, ticket_ref, draft_id, citizen_key, channel, received_at, state, outcome, kind, summary, location, district, request, urgency, suggested_unit, parent_ref, lead_unit, co_units, dispatched_at, first_dispatched_at, dispatch_due, handling_due, handling_days, due_provisional, extended, returns, return_requested_at, urge_count, card, records, draft, repeat_decision, repeat_reason, repeat_of, created_at, updated_at, replied_at, closed_at, redone, rating, rating_appealed, yellow_at, red_at";

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Checks what PostgreSQL and the rules need of a draft; the reason otherwise.
fn validate_draft(d: &TicketDraft) -> Result<(), String> {
    if d.schema_version != contract::SCHEMA_VERSION {
        return Err(format!(
            "schema_version {} is not supported",
            d.schema_version
        ));
    }
    let r = d.ticket_ref.as_str();
    if r.is_empty() || r.len() > 64 || has_nul(r) {
        return Err("ticket_ref is empty, longer than 64 or has a NUL".into());
    }
    if d.citizen_key.is_empty() || d.citizen_key.len() > 128 || has_nul(&d.citizen_key) {
        return Err("citizen_key is empty, longer than 128 or has a NUL".into());
    }
    if d.summary.chars().count() > 2000 {
        return Err("summary is longer than 2,000 characters".into());
    }
    if d.contacts.len() > 10_000 {
        return Err("more than 10,000 contacts".into());
    }
    // Text columns take no NUL; jsonb takes none either (\u0000).
    let json = serde_json::to_string(d).map_err(|e| e.to_string())?;
    if json.contains("\\u0000") || has_nul(&d.summary) {
        return Err("a text field holds a NUL character".into());
    }
    Ok(())
}

fn validate_contact(c: &Contact) -> Result<(), String> {
    if c.schema_version != contract::SCHEMA_VERSION {
        return Err(format!(
            "schema_version {} is not supported",
            c.schema_version
        ));
    }
    let r = c.ticket_ref.as_str();
    if r.is_empty() || r.len() > 64 {
        return Err("ticket_ref is empty or longer than 64".into());
    }
    if c.citizen.key.is_empty() || c.citizen.key.len() > 128 {
        return Err("citizen key is empty or longer than 128".into());
    }
    let json = serde_json::to_string(c).map_err(|e| e.to_string())?;
    if json.contains("\\u0000") {
        return Err("a text field holds a NUL character".into());
    }
    Ok(())
}

/// The last four digits of the number a contact came from, if it came from one.
fn phone_tail(c: &Contact) -> Option<String> {
    let number = if c.citizen.kind == IdentityKind::PhoneNumber {
        Some(c.citizen.value.as_str())
    } else {
        c.reply_paths.iter().find_map(|p| match p {
            ReplyPath::Sms { number } => Some(number.as_str()),
            _ => None,
        })
    }?;
    let digits: Vec<char> = number.chars().filter(|ch| ch.is_ascii_digit()).collect();
    (digits.len() >= 4).then(|| digits[digits.len() - 4..].iter().collect())
}

fn parse(rec: &Incoming, contacts_topic: &str, drafts_topic: &str, topics: &OutTopics) -> Parsed {
    let Some(payload) = rec.payload.as_deref() else {
        return Parsed::Dead("the record has no value".into());
    };
    let ce_type = rec.header("ce_type");
    if rec.topic == contacts_topic {
        if ce_type.is_some_and(|t| t != contract::EventType::Contact.ce_type()) {
            return Parsed::Dead(format!("ce_type {ce_type:?} on the contacts topic"));
        }
        match serde_json::from_slice::<Contact>(payload) {
            Ok(c) => match validate_contact(&c) {
                Ok(()) => Parsed::Contact(Box::new(c)),
                Err(e) => Parsed::Dead(format!("invalid contact: {e}")),
            },
            Err(e) => Parsed::Dead(format!("not a contact: {e}")),
        }
    } else if rec.topic == drafts_topic {
        if ce_type.is_some_and(|t| t != contract::EventType::TicketDraft.ce_type()) {
            return Parsed::Dead(format!("ce_type {ce_type:?} on the drafts topic"));
        }
        match serde_json::from_slice::<TicketDraft>(payload) {
            Ok(d) => match validate_draft(&d) {
                Ok(()) => Parsed::Draft(Box::new(d)),
                Err(e) => Parsed::Dead(format!("invalid ticket draft: {e}")),
            },
            Err(e) => Parsed::Dead(format!("not a ticket draft: {e}")),
        }
    } else if rec.topic == topics.chat_status {
        if ce_type.is_some_and(|t| t != contract::EventType::ChatOutboundStatus.ce_type()) {
            return Parsed::Dead(format!("ce_type {ce_type:?} on the chat status topic"));
        }
        match serde_json::from_slice::<contract::ChatOutboundStatus>(payload) {
            Ok(st) if st.schema_version != contract::SCHEMA_VERSION => Parsed::Dead(format!(
                "schema_version {} is not supported",
                st.schema_version
            )),
            Ok(st) => Parsed::ChatStatus(Box::new(st)),
            Err(e) => Parsed::Dead(format!("not a chat delivery report: {e}")),
        }
    } else if rec.topic == topics.sms_status {
        if ce_type.is_some_and(|t| t != contract::EventType::SmsStatus.ce_type()) {
            return Parsed::Dead(format!("ce_type {ce_type:?} on the SMS status topic"));
        }
        match serde_json::from_slice::<contract::SmsStatus>(payload) {
            Ok(st) if st.schema_version != contract::SCHEMA_VERSION => Parsed::Dead(format!(
                "schema_version {} is not supported",
                st.schema_version
            )),
            Ok(st) => Parsed::SmsStatus(Box::new(st)),
            Err(e) => Parsed::Dead(format!("not an SMS status: {e}")),
        }
    } else if rec.topic == topics.revisit_results {
        if ce_type.is_some_and(|t| t != contract::EventType::RevisitResult.ce_type()) {
            return Parsed::Dead(format!("ce_type {ce_type:?} on the revisit-results topic"));
        }
        match serde_json::from_slice::<contract::RevisitResult>(payload) {
            Ok(r) if r.schema_version != contract::SCHEMA_VERSION => Parsed::Dead(format!(
                "schema_version {} is not supported",
                r.schema_version
            )),
            Ok(r) if r.ticket_ref.as_str().is_empty() || r.ticket_ref.as_str().len() > 64 => {
                Parsed::Dead("ticket_ref is empty or longer than 64".into())
            }
            Ok(r) => Parsed::RevisitResult(Box::new(r)),
            Err(e) => Parsed::Dead(format!("not a revisit result: {e}")),
        }
    } else {
        Parsed::Dead(format!("no reader for topic {}", rec.topic))
    }
}

pub mod followup;

/// What an event says about a ticket row.
struct Emit<'a> {
    action: TicketAction,
    article: &'a str,
    actor: &'a str,
    detail: Option<String>,
    at: DateTime<Utc>,
    id: Uuid,
}

impl Store {
    /// Connects (at most `max_connections`) and runs the migrations.
    pub async fn connect(
        options: sqlx::postgres::PgConnectOptions,
        max_connections: u32,
        calendar: Arc<Calendar>,
        units: Arc<Units>,
        repeat: Arc<RepeatParams>,
        topics: OutTopics,
        source: String,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Db(sqlx::Error::Migrate(Box::new(e))))?;
        Ok(Store {
            pool,
            calendar,
            units,
            repeat,
            topics,
            source,
            followup: Arc::new(crate::followup::Params::default()),
        })
    }

    /// A store that connects on first use and runs no migrations: for tests of what is
    /// refused before the database is asked.
    pub fn lazy(
        options: sqlx::postgres::PgConnectOptions,
        calendar: Arc<Calendar>,
        units: Arc<Units>,
        repeat: Arc<RepeatParams>,
        topics: OutTopics,
    ) -> Self {
        Store {
            pool: PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_millis(200))
                .connect_lazy_with(options),
            calendar,
            units,
            repeat,
            topics,
            source: "/tickets/lazy".into(),
            followup: Arc::new(crate::followup::Params::default()),
        }
    }

    /// The same store with these follow-up settings (Arts. 13, 16, 17).
    pub fn with_followup(mut self, params: crate::followup::Params) -> Self {
        self.followup = Arc::new(params);
        self
    }

    /// The pool (for the publisher's lock connection and health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The units.
    pub fn units(&self) -> &Units {
        &self.units
    }

    // ---- Consumption -------------------------------------------------------------

    /// The next offset to read of each partition of `topic` this group has applied.
    pub async fn offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<std::collections::HashMap<i32, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i32, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    /// Applies records of one partition, in offset order, in one transaction with the
    /// partition's new offset.
    ///
    /// The records must continue the partition from its committed offset: records
    /// before it are skipped (another reader applied them), and a record past it (a
    /// gap) stops the batch there, reported as [`Applied::gap`], because a reader whose
    /// position is not the partition's (librdkafka may still hand over a fetch made
    /// before the partition moved to another instance) must never move the offset over
    /// records nobody applied. `may_jump` trusts a jump at the batch's first record: the
    /// reader has just sought to the committed offset itself, so a higher first offset
    /// is the log's own (compaction, transaction markers).
    pub async fn apply_batch(
        &self,
        group: &str,
        contacts_topic: &str,
        drafts_topic: &str,
        batch: &[Incoming],
        may_jump: bool,
    ) -> Result<Applied, StoreError> {
        let mut out = Applied::default();
        let Some(first) = batch.first() else {
            return Ok(out);
        };
        let mut tx = self.pool.begin().await?;
        let committed = lock_offset(&mut tx, group, &first.topic, first.partition).await?;
        let mut next = committed;
        let mut at_first = true;
        for rec in batch {
            if rec.offset < next {
                out.behind += 1;
                continue;
            }
            if rec.offset > next && !(at_first && may_jump) {
                out.gap = true;
                break;
            }
            at_first = false;
            next = rec.offset + 1;
            let ce_id = rec.header("ce_id").and_then(|s| s.parse::<Uuid>().ok());
            let parsed = match ce_id {
                None => Parsed::Dead("no ce_id header (a CloudEvents id) on the record".into()),
                Some(_) => parse(rec, contacts_topic, drafts_topic, &self.topics),
            };
            if let (Some(id), false) = (ce_id, matches!(parsed, Parsed::Dead(_))) {
                let fresh = sqlx::query(
                    "INSERT INTO applied_events (ce_id, topic, partition, kafka_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(&rec.topic)
                .bind(rec.partition)
                .bind(rec.offset)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !fresh {
                    out.duplicates += 1;
                    continue;
                }
            }
            match parsed {
                Parsed::Contact(c) => {
                    self.store_contact(&mut tx, &c).await?;
                    // Art. 16: a chat survey's answer.
                    self.chat_survey_reply(&mut tx, &c).await?;
                    out.applied += 1;
                }
                // Art. 16: an SMS may answer a survey rather than ask for anything.
                Parsed::Draft(d) if self.survey_reply(&mut tx, &d).await? => out.applied += 1,
                Parsed::Draft(d) => match self.register(&mut tx, &d).await? {
                    Ok(()) => out.applied += 1,
                    Err(reason) => {
                        self.dead_letter(&mut tx, rec, &reason).await?;
                        out.dead += 1;
                    }
                },
                Parsed::RevisitResult(r) => {
                    self.revisit_result(&mut tx, &r).await?;
                    out.applied += 1;
                }
                Parsed::SmsStatus(st) => {
                    self.sms_status(&mut tx, &st).await?;
                    out.applied += 1;
                }
                Parsed::ChatStatus(st) => {
                    self.chat_status(&mut tx, &st).await?;
                    out.applied += 1;
                }
                Parsed::Dead(reason) => {
                    self.dead_letter(&mut tx, rec, &reason).await?;
                    out.dead += 1;
                }
            }
        }
        set_offset(&mut tx, group, &first.topic, first.partition, next).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Sends one record to the dead-letter topic and moves the offset past it, alone in
    /// its transaction: for a record the database itself refused.
    pub async fn dead_letter_alone(
        &self,
        group: &str,
        rec: &Incoming,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let committed = lock_offset(&mut tx, group, &rec.topic, rec.partition).await?;
        // Only the record the partition is at: one behind was applied by another
        // reader, one ahead is a stale read (see `apply_batch`).
        if rec.offset == committed {
            self.dead_letter(&mut tx, rec, reason).await?;
            set_offset(&mut tx, group, &rec.topic, rec.partition, rec.offset + 1).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rec: &Incoming,
        reason: &str,
    ) -> Result<(), StoreError> {
        metrics::counter!("tickets_dead_letters_total").increment(1);
        tracing::warn!(
            topic = %rec.topic,
            partition = rec.partition,
            offset = rec.offset,
            reason,
            "Record sent to the dead-letter topic"
        );
        // The original headers (binary-safe as lossy text: ce_* headers are text), then
        // where it came from and why.
        let mut headers: Vec<(String, String)> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        headers.push(("dlq_topic".into(), rec.topic.clone()));
        headers.push(("dlq_partition".into(), rec.partition.to_string()));
        headers.push(("dlq_offset".into(), rec.offset.to_string()));
        headers.push(("dlq_reason".into(), reason.chars().take(1000).collect()));
        let key = rec
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        sqlx::query("INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)")
            .bind(&self.topics.dead_letter)
            .bind(key)
            .bind(serde_json::to_value(&headers)?)
            .bind(rec.payload.clone().unwrap_or_default())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn store_contact(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        c: &Contact,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contacts (id, ticket_ref, citizen_key, channel, received_at, phone_tail, body) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(c.id)
        .bind(c.ticket_ref.as_str())
        .bind(&c.citizen.key)
        .bind(c.channel.as_str())
        .bind(c.received_at)
        .bind(phone_tail(c))
        .bind(serde_json::to_value(c)?)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The unit a draft's hints pre-select (Art. 10): a department named, else the
    /// district.
    fn suggested_unit(&self, d: &TicketDraft) -> Option<String> {
        let hint = |name| {
            d.prefill
                .iter()
                .filter(|f| f.name == name)
                .find_map(|f| self.units.by_hint(&f.value))
        };
        hint(PrefillName::Department)
            .or_else(|| hint(PrefillName::District))
            .or_else(|| {
                d.location
                    .as_ref()
                    .and_then(|l| l.district.as_deref())
                    .and_then(|x| self.units.by_hint(x))
            })
            .map(|u| u.id.clone())
    }

    /// Registers a draft as Art. 14 says: a new ticket, a supplement, or an urge. An
    /// `Err` is a reason to dead-letter it (its reference is taken).
    async fn register(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        d: &TicketDraft,
    ) -> Result<Result<(), String>, StoreError> {
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT ticket_ref FROM tickets WHERE ticket_ref = $1 UNION ALL SELECT ticket_ref FROM urges WHERE ticket_ref = $1 LIMIT 1",
        )
        .bind(d.ticket_ref.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if taken.is_some() {
            return Ok(Err(format!(
                "reference {} is registered already by another draft",
                d.ticket_ref
            )));
        }
        let today = rules::beijing_date(d.created_at);
        let decision = self.judge(tx, d, today).await?;
        self.register_as(tx, d, decision, "service", d.created_at)
            .await?;
        Ok(Ok(()))
    }

    /// Art. 14 on a draft: compared with the citizen's recent tickets.
    async fn judge(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        d: &TicketDraft,
        today: NaiveDate,
    ) -> Result<Decision, StoreError> {
        let rows: Vec<TicketRow> = sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE citizen_key = $1 AND outcome IS DISTINCT FROM 'merged' AND received_at > $2 AND ticket_ref <> $3 ORDER BY id DESC LIMIT $4"
        ))
        .bind(&d.citizen_key)
        .bind(d.created_at - chrono::Duration::days(REPEAT_LOOKBACK_DAYS))
        .bind(d.ticket_ref.as_str())
        .bind(REPEAT_CANDIDATES)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(Decision::New {
                related: None,
                reason: "Art. 14: the citizen has no earlier ticket".into(),
            });
        }
        let earlier: Vec<repeat::Earlier> = rows
            .iter()
            .map(|r| repeat::Earlier {
                ticket_ref: r.ticket_ref.clone(),
                text: [Some(r.summary.as_str()), r.request.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                kind: parse_kind(&r.kind),
                place: r.location.clone(),
                district: r.district.clone(),
                closed: r.state == TicketState::Closed.as_str(),
                due: r.handling_due.or(r.dispatch_due),
                seq: r.id,
            })
            .collect();
        let text = draft_text(d);
        let incoming = repeat::Incoming {
            text: &text,
            kind: d.kind,
            place: d.location.as_ref().map(|l| l.text.as_str()),
            district: d.location.as_ref().and_then(|l| l.district.as_deref()),
        };
        Ok(repeat::classify(&self.repeat, &incoming, &earlier, today))
    }

    /// Registers `d` as `decision` says.
    async fn register_as(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        d: &TicketDraft,
        decision: Decision,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match &decision {
            Decision::Urge { original, reason } => {
                sqlx::query(
                    "INSERT INTO urges (draft_id, ticket_ref, original_ref, citizen_key, reason, draft, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(d.id)
                .bind(d.ticket_ref.as_str())
                .bind(original)
                .bind(&d.citizen_key)
                .bind(reason)
                .bind(serde_json::to_value(d)?)
                .bind(d.created_at)
                .execute(&mut **tx)
                .await?;
                let row: TicketRow = sqlx::query_as(&format!(
                    "UPDATE tickets SET urge_count = urge_count + 1, updated_at = $2 WHERE ticket_ref = $1 RETURNING {TICKET_COLUMNS}"
                ))
                .bind(original)
                .bind(at)
                .fetch_one(&mut **tx)
                .await?;
                metrics::counter!("tickets_urges_total").increment(1);
                self.emit(
                    tx,
                    &row,
                    Emit {
                        action: TicketAction::Urged,
                        article: "Art. 14",
                        actor,
                        detail: Some(format!("{} ({})", reason, d.ticket_ref)),
                        at,
                        id: derived_id(&["urged", d.id.to_string().as_str(), actor]),
                    },
                )
                .await
            }
            Decision::New { .. } | Decision::Supplement { .. } => {
                let parent = match &decision {
                    Decision::Supplement { original, .. } => {
                        sqlx::query_as::<_, TicketRow>(&format!(
                            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_ref = $1"
                        ))
                        .bind(original)
                        .fetch_optional(&mut **tx)
                        .await?
                    }
                    _ => None,
                };
                let received = d.created_at;
                let dispatch_due = self.calendar.deadline(received, rules::DISPATCH_DAYS);
                // A supplement goes to the original's units at once, its time limit
                // counted afresh (Art. 14); otherwise the centre dispatches it.
                let lead = parent.as_ref().and_then(|p| p.lead_unit.clone());
                let (state, handling_due, handling_days, dispatched_at) = match &lead {
                    Some(_) => {
                        let days = rules::handling_days(d.kind);
                        let due = self.calendar.deadline(received, days);
                        (
                            TicketState::Dispatched,
                            Some(due),
                            Some(days as i32),
                            Some(received),
                        )
                    }
                    None => (TicketState::Registered, None, None, None),
                };
                let provisional =
                    dispatch_due.provisional || handling_due.is_some_and(|h| h.provisional);
                if provisional {
                    metrics::counter!("tickets_provisional_deadlines_total").increment(1);
                }
                let request = d
                    .prefill
                    .iter()
                    .find(|f| f.name == PrefillName::Request)
                    .map(|f| f.value.clone());
                let row: TicketRow = sqlx::query_as(&format!(
                    "INSERT INTO tickets (ticket_ref, draft_id, citizen_key, channel, received_at, state, kind, summary, location, district, request, urgency, suggested_unit, parent_ref, lead_unit, co_units, dispatched_at, first_dispatched_at, dispatch_due, handling_due, handling_days, due_provisional, draft, repeat_decision, repeat_reason, repeat_of, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $26) RETURNING {TICKET_COLUMNS}"
                ))
                .bind(d.ticket_ref.as_str())
                .bind(d.id)
                .bind(&d.citizen_key)
                .bind(d.channel.as_str())
                .bind(received)
                .bind(state.as_str())
                .bind(kind_str(d.kind))
                .bind(&d.summary)
                .bind(d.location.as_ref().map(|l| l.text.clone()))
                .bind(d.location.as_ref().and_then(|l| l.district.clone()))
                .bind(request)
                .bind(match d.urgency {
                    contract::Urgency::Normal => "normal",
                    contract::Urgency::Emergency => "emergency",
                })
                .bind(self.suggested_unit(d))
                .bind(parent.as_ref().map(|p| p.ticket_ref.clone()))
                .bind(&lead)
                .bind(parent.as_ref().map(|p| p.co_units.clone()).unwrap_or_default())
                .bind(dispatched_at)
                .bind(dispatch_due.date)
                .bind(handling_due.map(|h| h.date))
                .bind(handling_days)
                .bind(provisional)
                .bind(serde_json::to_value(d)?)
                .bind(decision.name())
                .bind(decision.reason())
                .bind(decision.original())
                .bind(at)
                .fetch_one(&mut **tx)
                .await?;
                metrics::counter!("tickets_registered_total", "decision" => decision.name())
                    .increment(1);
                let action = match decision {
                    Decision::Supplement { .. } => TicketAction::Supplemented,
                    _ => TicketAction::Registered,
                };
                let id = if actor == "service" {
                    // One event per draft, whichever instance applies it.
                    derived_id(&["registered", d.id.to_string().as_str()])
                } else {
                    contract::event::new_event_id()
                };
                self.emit(
                    tx,
                    &row,
                    Emit {
                        action,
                        article: if action == TicketAction::Registered {
                            "Art. 8"
                        } else {
                            "Art. 14"
                        },
                        actor,
                        detail: Some(decision.reason().to_owned()),
                        at,
                        id,
                    },
                )
                .await
            }
        }
    }

    /// Writes a transition's history row and status event.
    async fn emit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        e: Emit<'_>,
    ) -> Result<(), StoreError> {
        let snap = row.snapshot();
        let inserted = sqlx::query(
            "INSERT INTO ticket_history (event_id, ticket_ref, at, action, article, actor, state, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(e.id)
        .bind(&row.ticket_ref)
        .bind(e.at)
        .bind(serde_json::to_value(e.action)?.as_str().unwrap_or_default().to_owned())
        .bind(e.article)
        .bind(e.actor)
        .bind(&row.state)
        .bind(&e.detail)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // The same derived event was written before (a clock that fired twice).
            return Ok(());
        }
        let status = TicketStatus {
            schema_version: contract::SCHEMA_VERSION,
            id: e.id,
            ticket_ref: TicketRef(row.ticket_ref.clone()),
            citizen_key: row.citizen_key.clone(),
            at: e.at,
            action: e.action,
            article: e.article.to_owned(),
            actor: e.actor.to_owned(),
            state: snap.state,
            outcome: snap.outcome,
            kind: snap.kind,
            lead_unit: snap.lead_unit.clone(),
            co_units: snap.co_units.clone(),
            dispatch_due: snap.dispatch_due,
            handling_due: snap.handling_due,
            due_provisional: snap.due_provisional,
            card: snap.card,
            urge_count: row.urge_count.max(0) as u32,
            parent_ref: row.parent_ref.clone().map(TicketRef),
            detail: e.detail,
            rating: row.rating.as_deref().and_then(contract::Rating::parse),
        };
        let record = Event::from(status).to_record(&self.source)?;
        sqlx::query("INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)")
            .bind(&self.topics.status)
            .bind(&record.key)
            .bind(serde_json::to_value(&record.headers)?)
            .bind(&record.payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    // ---- Commands ----------------------------------------------------------------

    async fn locked(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_ref: &str,
    ) -> Result<Option<TicketRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_ref = $1 FOR UPDATE"
        ))
        .bind(ticket_ref)
        .fetch_optional(&mut **tx)
        .await
    }

    /// Whether `role` may see `row`: the centre sees every ticket, a unit the ones it
    /// leads or co-handles.
    pub fn visible(role: &Role, row: &TicketRow) -> bool {
        match role {
            Role::Unit { unit, .. } => {
                row.lead_unit.as_deref() == Some(unit.as_str()) || row.co_units.contains(unit)
            }
            _ => true,
        }
    }

    /// Writes a ticket's snapshot; also stamps, from the state it moves from and to, when
    /// the unit replied (Art. 13) and when it closed (cleared by a redo, Art. 17): the
    /// times the follow-up and the statistics (Art. 18) read.
    async fn write_snapshot(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_ref: &str,
        s: &Snapshot,
        record: Option<(&'static str, serde_json::Value)>,
        at: DateTime<Utc>,
    ) -> Result<TicketRow, sqlx::Error> {
        let (name, value) = record
            .map(|(n, v)| (Some(n), v))
            .unwrap_or((None, serde_json::Value::Null));
        sqlx::query_as(&format!(
            "UPDATE tickets SET state = $2, outcome = $3, kind = $4, summary = $5, location = $6, district = $7, request = $8, lead_unit = $9, co_units = $10, dispatched_at = $11, first_dispatched_at = $12, dispatch_due = $13, handling_due = $14, handling_days = $15, due_provisional = $16, extended = $17, returns = $18, card = $19, \
             records = CASE WHEN $20::text IS NULL THEN records ELSE jsonb_set(records, ARRAY[$20::text], $21::jsonb) END, updated_at = $22, return_requested_at = $23, redone = $24, \
             replied_at = CASE WHEN $2 = 'replied' AND state <> 'replied' THEN $22 ELSE replied_at END, \
             closed_at = CASE WHEN $2 <> 'closed' THEN NULL WHEN state <> 'closed' THEN $22 ELSE closed_at END \
             WHERE ticket_ref = $1 RETURNING {TICKET_COLUMNS}"
        ))
        .bind(ticket_ref)
        .bind(s.state.as_str())
        .bind(s.outcome.map(|o| o.as_str()))
        .bind(kind_str(s.kind))
        .bind(&s.summary)
        .bind(&s.location)
        .bind(&s.district)
        .bind(&s.request)
        .bind(&s.lead_unit)
        .bind(&s.co_units)
        .bind(s.dispatched_at)
        .bind(s.first_dispatched_at)
        .bind(s.dispatch_due)
        .bind(s.handling_due)
        .bind(s.handling_days.map(|d| d as i32))
        .bind(s.due_provisional)
        .bind(s.extended)
        .bind(s.returns as i32)
        .bind(s.card.as_str())
        .bind(name)
        .bind(value)
        .bind(at)
        .bind(s.return_requested_at)
        .bind(s.redone)
        .fetch_one(&mut **tx)
        .await
    }

    /// Carries out `command` by `role` at `now`, or says why not (nothing changes then,
    /// except the red card Art. 10 gives a late return).
    pub async fn command(
        &self,
        ticket_ref: &str,
        role: &Role,
        command: &Command,
        now: DateTime<Utc>,
    ) -> Result<TicketRow, CommandError> {
        let mut tx = self.pool.begin().await?;
        let row = self
            .locked(&mut tx, ticket_ref)
            .await?
            .ok_or_else(|| CommandError::NotFound(ticket_ref.to_owned()))?;
        if !Self::visible(role, &row) {
            return Err(CommandError::Refused(Refusal {
                status: 403,
                code: "not-your-ticket",
                detail: "the ticket is not dispatched to your unit".into(),
                red_card: false,
            }));
        }
        let actor = role.actor();
        match rules::apply(
            &row.snapshot(),
            role,
            command,
            now,
            &self.calendar,
            &self.units,
        ) {
            Ok(t) => {
                if t.after.due_provisional && !row.due_provisional {
                    // Art. 22: a deadline counted over a year without its notice.
                    metrics::counter!("tickets_provisional_deadlines_total").increment(1);
                }
                let after = self
                    .write_snapshot(&mut tx, ticket_ref, &t.after, t.record, now)
                    .await?;
                self.emit(
                    &mut tx,
                    &after,
                    Emit {
                        action: t.action,
                        article: t.article,
                        actor: &actor,
                        detail: t.detail,
                        at: now,
                        id: contract::event::new_event_id(),
                    },
                )
                .await?;
                self.after_transition(&mut tx, &after, t.action, now)
                    .await?;
                if t.red_card {
                    self.emit(
                        &mut tx,
                        &after,
                        Emit {
                            action: TicketAction::RedCard,
                            article: "Art. 10",
                            actor: "service",
                            detail: Some("confirmed after 2 working days".into()),
                            at: now,
                            id: contract::event::new_event_id(),
                        },
                    )
                    .await?;
                }
                tx.commit().await?;
                metrics::counter!("tickets_transitions_total").increment(1);
                Ok(after)
            }
            Err(refusal) => {
                if refusal.red_card {
                    let mut s = row.snapshot();
                    s.card = Card::Red;
                    let after = self
                        .write_snapshot(&mut tx, ticket_ref, &s, None, now)
                        .await?;
                    self.emit(
                        &mut tx,
                        &after,
                        Emit {
                            action: TicketAction::RedCard,
                            article: "Art. 10",
                            actor: "service",
                            detail: Some(format!("late return refused: {}", refusal.detail)),
                            at: now,
                            id: contract::event::new_event_id(),
                        },
                    )
                    .await?;
                    tx.commit().await?;
                }
                Err(CommandError::Refused(refusal))
            }
        }
    }

    /// Overrules an Art. 14 decision on the draft behind `ticket_ref` (a ticket, or a
    /// reference taken as an urge).
    pub async fn overrule(
        &self,
        ticket_ref: &str,
        role: &Role,
        o: &Overrule,
        now: DateTime<Utc>,
    ) -> Result<TicketRow, CommandError> {
        let refuse = |status, code, detail: String| {
            CommandError::Refused(Refusal {
                status,
                code,
                detail,
                red_card: false,
            })
        };
        if !role.is_centre() {
            return Err(refuse(
                403,
                "centre-only",
                "only the hotline centre overrules a repeat decision (Art. 14)".into(),
            ));
        }
        if o.reason.trim().is_empty() || o.reason.chars().count() > 2000 {
            return Err(refuse(422, "field-required", "`reason` is required".into()));
        }
        let wanted = match o.decision.as_str() {
            "new" => None,
            "supplement" | "urge" => Some(o.original.clone().ok_or_else(|| {
                refuse(
                    422,
                    "field-required",
                    format!("`original` is required for `{}`", o.decision),
                )
            })?),
            other => {
                return Err(refuse(
                    422,
                    "unknown-decision",
                    format!("decision {other:?}: use new, supplement or urge"),
                ));
            }
        };
        if wanted.as_deref() == Some(ticket_ref) {
            return Err(refuse(
                422,
                "self-reference",
                "a ticket is not a repeat of itself".into(),
            ));
        }
        let actor = role.actor();
        let reason = format!("Art. 14, overruled by {actor}: {}", o.reason.trim());
        let mut tx = self.pool.begin().await?;
        let original = match &wanted {
            Some(r) => Some(self.locked(&mut tx, r).await?.ok_or_else(|| {
                refuse(
                    422,
                    "unknown-original",
                    format!("no ticket {r} to refer to"),
                )
            })?),
            None => None,
        };
        if let Some(ticket) = self.locked(&mut tx, ticket_ref).await? {
            // A ticket made as new or supplement.
            if ticket.state != TicketState::Registered.as_str()
                && ticket.state != TicketState::Dispatched.as_str()
            {
                return Err(refuse(
                    409,
                    "wrong-state",
                    format!(
                        "a ticket that is {} keeps its decision (only before a unit confirms it)",
                        ticket.state
                    ),
                ));
            }
            if original
                .as_ref()
                .is_some_and(|x| x.citizen_key != ticket.citizen_key)
            {
                return Err(refuse(
                    422,
                    "another-citizen",
                    "a repeat is of the same citizen's ticket (Art. 14)".into(),
                ));
            }
            let after: TicketRow = match o.decision.as_str() {
                "urge" => {
                    let orig = original.as_ref().map(|x| x.ticket_ref.clone());
                    sqlx::query(
                        "UPDATE tickets SET urge_count = urge_count + 1, updated_at = $2 WHERE ticket_ref = $1",
                    )
                    .bind(&orig)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query_as(&format!(
                        "UPDATE tickets SET state = 'closed', outcome = 'merged', card = 'none', repeat_decision = 'urge', repeat_reason = $2, repeat_of = $3, updated_at = $4 WHERE ticket_ref = $1 RETURNING {TICKET_COLUMNS}"
                    ))
                    .bind(ticket_ref)
                    .bind(&reason)
                    .bind(&orig)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
                }
                _ => {
                    sqlx::query_as(&format!(
                        "UPDATE tickets SET repeat_decision = $2, repeat_reason = $3, repeat_of = $4, parent_ref = CASE WHEN $2 = 'supplement' THEN $4 ELSE NULL END, updated_at = $5 WHERE ticket_ref = $1 RETURNING {TICKET_COLUMNS}"
                    ))
                    .bind(ticket_ref)
                    .bind(&o.decision)
                    .bind(&reason)
                    .bind(original.as_ref().map(|x| x.ticket_ref.clone()))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            self.emit(
                &mut tx,
                &after,
                Emit {
                    action: TicketAction::RepeatOverruled,
                    article: "Art. 14",
                    actor: &actor,
                    detail: Some(reason),
                    at: now,
                    id: contract::event::new_event_id(),
                },
            )
            .await?;
            tx.commit().await?;
            return Ok(after);
        }
        // A reference taken as an urge: make its ticket after all.
        let urge = sqlx::query(
            "SELECT draft, original_ref FROM urges WHERE ticket_ref = $1 AND NOT overruled FOR UPDATE",
        )
        .bind(ticket_ref)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CommandError::NotFound(ticket_ref.to_owned()))?;
        if o.decision == "urge" {
            return Err(refuse(
                409,
                "already-an-urge",
                "this reference is an urge already".into(),
            ));
        }
        let draft: TicketDraft = serde_json::from_value(urge.get::<serde_json::Value, _>(0))
            .map_err(StoreError::Encode)?;
        let first_original: String = urge.get(1);
        sqlx::query(
            "UPDATE tickets SET urge_count = GREATEST(urge_count - 1, 0), updated_at = $2 WHERE ticket_ref = $1",
        )
        .bind(&first_original)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE urges SET overruled = true WHERE ticket_ref = $1")
            .bind(ticket_ref)
            .execute(&mut *tx)
            .await?;
        // The ticket is registered as the agent said; its reference stays reserved in
        // `urges` (overruled), so `register` could not be used.
        let decision = match wanted {
            Some(original) => Decision::Supplement { original, reason },
            None => Decision::New {
                related: Some(first_original),
                reason,
            },
        };
        self.register_as(&mut tx, &draft, decision, &actor, now)
            .await?;
        let row = self
            .locked(&mut tx, ticket_ref)
            .await?
            .ok_or_else(|| CommandError::NotFound(ticket_ref.to_owned()))?;
        tx.commit().await?;
        Ok(row)
    }

    // ---- Clocks ------------------------------------------------------------------

    /// Art. 10's cards as of `now`: yellow on the due day, red once overdue. Each change
    /// is written once (derived event ids), however many instances sweep.
    pub async fn sweep_cards(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let today = rules::beijing_date(now);
        let mut tx = self.pool.begin().await?;
        let rows: Vec<TicketRow> = sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE state <> 'closed' AND state <> 'replied' AND card <> 'red' \
             AND ((state = 'registered' AND dispatch_due <= $1) OR (state IN ('dispatched', 'handling') AND handling_due <= $1)) \
             ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED"
        ))
        .bind(today)
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for row in rows {
            let card = row.card_on(today);
            if card.as_str() == row.card {
                continue;
            }
            let mut s = row.snapshot();
            s.card = card;
            let after = self
                .write_snapshot(&mut tx, &row.ticket_ref, &s, None, now)
                .await?;
            let due = match s.state {
                TicketState::Registered => s.dispatch_due,
                _ => s.handling_due,
            }
            .map(|d| d.to_string())
            .unwrap_or_default();
            let (action, what) = match card {
                Card::Red => (TicketAction::RedCard, "overdue"),
                _ => (TicketAction::YellowCard, "due today"),
            };
            self.emit(
                &mut tx,
                &after,
                Emit {
                    action,
                    article: "Art. 10",
                    actor: "service",
                    detail: Some(format!("{what} ({} due {due})", s.state.as_str())),
                    at: now,
                    id: derived_id(&[&row.ticket_ref, card.as_str(), s.state.as_str(), &due]),
                },
            )
            .await?;
            changed += 1;
        }
        tx.commit().await?;
        if changed > 0 {
            metrics::counter!("tickets_cards_total").increment(changed as u64);
        }
        Ok(changed)
    }

    /// Recomputes provisional deadlines with the calendar as it now is (Art. 22): a year
    /// whose notice was added since makes them final.
    pub async fn recompute_provisional(&self, now: DateTime<Utc>) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<TicketRow> = sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE due_provisional AND state <> 'closed' FOR UPDATE SKIP LOCKED"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for row in rows {
            let mut s = row.snapshot();
            let dispatch = self
                .calendar
                .deadline(row.received_at, rules::DISPATCH_DAYS);
            let mut provisional = dispatch.provisional;
            s.dispatch_due = Some(dispatch.date);
            if let (Some(at), Some(days)) = (s.dispatched_at, s.handling_days) {
                let mut due = self.calendar.deadline(at, days);
                if s.extended {
                    let end = due.due;
                    due = self.calendar.deadline(end, days);
                }
                provisional |= due.provisional;
                s.handling_due = Some(due.date);
            }
            s.due_provisional = provisional;
            if s == row.snapshot() {
                continue;
            }
            let after = self
                .write_snapshot(&mut tx, &row.ticket_ref, &s, None, now)
                .await?;
            self.emit(
                &mut tx,
                &after,
                Emit {
                    action: TicketAction::DeadlineRecomputed,
                    article: "Art. 22",
                    actor: "service",
                    detail: Some(format!(
                        "recounted with the calendar's years {:?}",
                        self.calendar.years().collect::<Vec<_>>()
                    )),
                    at: now,
                    id: contract::event::new_event_id(),
                },
            )
            .await?;
            changed += 1;
        }
        tx.commit().await?;
        Ok(changed)
    }

    // ---- Reads -------------------------------------------------------------------

    /// A ticket by reference.
    pub async fn ticket(&self, ticket_ref: &str) -> Result<Option<TicketRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_ref = $1"
        ))
        .bind(ticket_ref)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A page of tickets, newest first.
    pub async fn list(&self, f: &ListFilter) -> Result<Vec<TicketRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ($1::text IS NULL OR state = $1) \
             AND ($2::text IS NULL OR lead_unit = $2 OR $2 = ANY(co_units)) \
             AND ($3::text IS NULL OR card = $3) AND ($4::bigint IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(f.state.map(|s| s.as_str()))
        .bind(&f.unit)
        .bind(f.card.map(|c| c.as_str()))
        .bind(f.before)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A ticket's history, oldest first.
    pub async fn history(&self, ticket_ref: &str) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(self
            .history_page(ticket_ref, 0, i64::MAX)
            .await?
            .into_iter()
            .map(|(_, h)| h)
            .collect())
    }

    /// A page of a ticket's history after the entry numbered `after`, oldest first,
    /// each with its number (the next page's cursor).
    pub async fn history_page(
        &self,
        ticket_ref: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, HistoryRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, at, action, article, actor, state, detail FROM ticket_history WHERE ticket_ref = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(ticket_ref)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>("seq"),
                    HistoryRow {
                        event_id: r.get("event_id"),
                        at: r.get("at"),
                        action: r.get("action"),
                        article: r.get("article"),
                        actor: r.get("actor"),
                        state: r.get("state"),
                        detail: r.get("detail"),
                    },
                )
            })
            .collect())
    }

    /// The contacts of a reference, oldest first (the centre's view).
    pub async fn contacts(&self, ticket_ref: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM contacts WHERE ticket_ref = $1 ORDER BY received_at, id",
        )
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The references taken as urges of a ticket (Art. 14).
    pub async fn urges_of(&self, ticket_ref: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ticket_ref, reason FROM urges WHERE original_ref = $1 AND NOT overruled ORDER BY received_at",
        )
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The citizen's progress query (Art. 14): the reference plus the last four digits
    /// of the number it came from. `None` when either does not match (the caller cannot
    /// tell which).
    pub async fn progress(
        &self,
        ticket_ref: &str,
        tail: &str,
    ) -> Result<Option<Progress>, StoreError> {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE ticket_ref = $1 AND phone_tail = $2)",
        )
        .bind(ticket_ref)
        .bind(tail)
        .fetch_one(&self.pool)
        .await?;
        if !known {
            return Ok(None);
        }
        let handled_as: Option<String> = sqlx::query_scalar(
            "SELECT ticket_ref FROM tickets WHERE ticket_ref = $1 UNION ALL SELECT original_ref FROM urges WHERE ticket_ref = $1 AND NOT overruled LIMIT 1",
        )
        .bind(ticket_ref)
        .fetch_optional(&self.pool)
        .await?;
        let Some(handled_as) = handled_as else {
            return Ok(None);
        };
        let Some(t) = self.ticket(&handled_as).await? else {
            return Ok(None);
        };
        Ok(Some(Progress {
            ticket_ref: ticket_ref.to_owned(),
            handled_as,
            state: t.state,
            outcome: t.outcome,
            received_at: t.received_at,
            handling_due: t.handling_due,
            updated_at: t.updated_at,
        }))
    }

    // ---- Members and the outbox --------------------------------------------------

    /// Says `instance` is alive and returns the live instances, sorted (seen within
    /// `timeout`, by the database's clock, so instances' clocks need not agree).
    pub async fn heartbeat(
        &self,
        instance: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "INSERT INTO members (instance, seen_at) VALUES ($1, now()) ON CONFLICT (instance) DO UPDATE SET seen_at = now()",
        )
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(
            "SELECT instance FROM members WHERE seen_at > now() - make_interval(secs => $1) ORDER BY instance",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leaves the members (a clean stop hands its partitions over at once).
    pub async fn leave(&self, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM members WHERE instance = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest unpublished outbox rows.
    pub async fn pending(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, topic, key, headers, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks outbox rows published.
    pub async fn published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops published outbox rows older than `keep` (they are on Kafka).
    pub async fn prune_outbox(&self, keep: chrono::Duration) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM outbox WHERE published_at < now() - $1::interval")
                .bind(format!("{} seconds", keep.num_seconds()))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

/// Locks a partition's offset row (made at 0 the first time) and reads it: two readers
/// of one partition apply one after the other, the second seeing where the first left it.
async fn lock_offset(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .fetch_one(&mut **tx)
    .await
}

/// Moves a locked partition's offset.
async fn set_offset(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    topic: &str,
    partition: i32,
    next: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE consumer_offsets SET next_offset = $4, updated_at = now() WHERE group_id = $1 AND topic = $2 AND partition = $3",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(next)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The words of a draft Art. 14 compares: summary, request, and the citizen's side of a
/// call.
fn draft_text(d: &TicketDraft) -> String {
    let mut parts = vec![d.summary.clone()];
    parts.extend(
        d.prefill
            .iter()
            .filter(|f| f.name == PrefillName::Request)
            .map(|f| f.value.clone()),
    );
    parts.join(" ")
}

/// A channel's name as stored.
pub fn channel_str(c: ChannelKind) -> &'static str {
    c.as_str()
}
