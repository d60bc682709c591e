//! The follow-up after closure, in the store's transactions: the result SMS (Art. 13),
//! the survey, its replies and its 24-hour default (Art. 16), revisits, redo and
//! appeals (Art. 17). The rules are [`crate::followup`]'s; the flows are in
//! docs/tickets.md.
//!
//! Every text and call request is an outbox row written in the transaction that decided
//! it, with an id derived from what it is (the survey, the attempt), so the gateway's
//! idempotent paths turn a request written twice into one text or one call. Every clock
//! (the survey's default, a revisit's retry gap, a call's result timeout) is a `jobs`
//! row with a derived id; the leader runs due rows under `FOR UPDATE SKIP LOCKED`, each
//! in the transaction that marks it done, so a clock fires once across instances and
//! crashes.

use chrono::{DateTime, Utc};
use contract::{
    ChatOutbound, Contact, Event, IdentityKind, OutboundSms, Rating, ReplyPath, RevisitCall,
    RevisitCallOutcome, RevisitResult, TicketAction, TicketDraft, TicketRef,
};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{CommandError, Emit, Store, StoreError, TICKET_COLUMNS, TicketRow, derived_id};
use crate::followup::{self, Reply, RevisitMode, RevisitNext};
use crate::rules::{Refusal, Role};

/// How long a revisit call request may wait in the gateway before it is not placed.
const CALL_VALID: chrono::Duration = chrono::Duration::minutes(10);
/// How long a chat survey may wait for the gateway before it is not delivered.
const CHAT_VALID: chrono::Duration = chrono::Duration::minutes(10);
/// How long a survey or clarifying SMS stays worth sending.
const SURVEY_SMS_VALID: chrono::Duration = chrono::Duration::hours(6);

/// A survey as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SurveyRow {
    /// Its id.
    pub id: Uuid,
    /// The ticket.
    pub ticket_ref: String,
    /// 1, or 2 after a redo.
    pub round: i16,
    /// chat or sms.
    pub via: String,
    /// The unit rated.
    pub unit: Option<String>,
    /// asked (the text is on its way), waiting (sent: the window runs), rated, defaulted,
    /// not_sent (no number), undelivered (the carrier could not deliver it).
    pub state: String,
    /// Asked.
    pub sent_at: DateTime<Utc>,
    /// Defaults to satisfied then.
    pub due_at: DateTime<Utc>,
    /// The clarifying SMS went out.
    pub clarified: bool,
    /// The rating.
    pub rating: Option<String>,
    /// Where it came from.
    pub rating_source: Option<String>,
    /// When.
    pub rated_at: Option<DateTime<Utc>>,
    /// An appeal was upheld.
    pub appeal_upheld: bool,
}

/// A revisit as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RevisitRow {
    /// Its id.
    pub id: Uuid,
    /// The ticket.
    pub ticket_ref: String,
    /// The survey it revisits.
    pub survey_id: Uuid,
    /// call or agent.
    pub mode: String,
    /// open, done, ended, closed.
    pub state: String,
    /// Failed attempts so far (or the attempt that rated).
    pub attempts: i32,
    /// rated, unreachable, redo.
    pub outcome: Option<String>,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The attempts.
    pub log: serde_json::Value,
}

/// An appeal as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AppealRow {
    /// Its id.
    pub id: Uuid,
    /// The ticket.
    pub ticket_ref: String,
    /// The survey appealed.
    pub survey_id: Uuid,
    /// The unit.
    pub unit: String,
    /// Who filed it.
    pub filed_by: String,
    /// The evidence.
    pub evidence: String,
    /// Filed.
    pub filed_at: DateTime<Utc>,
    /// pending, upheld, rejected.
    pub state: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why.
    pub note: Option<String>,
}

/// A reply kept with a survey (or unmatched).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReplyRow {
    /// The reference the gateway gave the SMS.
    pub ticket_ref: String,
    /// The survey it answered, if any.
    pub survey_id: Option<Uuid>,
    /// What the citizen wrote.
    pub text: String,
    /// rating, unclear, unmatched.
    pub outcome: String,
    /// Received.
    pub received_at: DateTime<Utc>,
}

/// Everything after closure of one ticket.
#[derive(Debug, Clone, Serialize)]
pub struct Followup {
    /// Surveys, by round.
    pub surveys: Vec<SurveyRow>,
    /// Replies received.
    pub replies: Vec<ReplyRow>,
    /// Revisits.
    pub revisits: Vec<RevisitRow>,
    /// Appeals.
    pub appeals: Vec<AppealRow>,
}

/// What an agent reports of a revisit attempt.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRevisit {
    /// Whether the citizen was reached.
    pub reached: bool,
    /// The rating given (digit 1 to 5), when reached.
    #[serde(default)]
    pub rating: Option<u8>,
    /// What was said.
    #[serde(default)]
    pub note: String,
}

const SURVEY_COLUMNS: &str = "id, ticket_ref, round, via, unit, state, sent_at, due_at, clarified, rating, rating_source, rated_at, appeal_upheld";
const REVISIT_COLUMNS: &str =
    "id, ticket_ref, survey_id, mode, state, attempts, outcome, opened_at, ended_at, log";
const APPEAL_COLUMNS: &str = "id, ticket_ref, survey_id, unit, filed_by, evidence, filed_at, state, decided_by, decided_at, note";

/// A reply row to keep (an SMS draft or a chat contact).
fn keep_reply<'q>(
    source: Uuid,
    ticket_ref: &'q str,
    survey: Option<Uuid>,
    citizen_key: &'q str,
    text: &'q str,
    outcome: &'static str,
    at: DateTime<Utc>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "INSERT INTO survey_replies (source_id, ticket_ref, survey_id, citizen_key, text, outcome, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(source)
    .bind(ticket_ref)
    .bind(survey)
    .bind(citizen_key)
    .bind(text)
    .bind(outcome)
    .bind(at)
}

fn refused(status: u16, code: &'static str, detail: impl Into<String>) -> CommandError {
    CommandError::Refused(Refusal {
        status,
        code,
        detail: detail.into(),
        red_card: false,
    })
}

/// A carrier's words with any run of 7 or more digits masked: they may echo the number
/// (Art. 21).
fn mask_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= 7 {
            out.push_str("***");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars().take(300) {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The number a contact can be texted at: its SMS reply path, or the caller's number.
fn sms_number(c: &Contact) -> Option<String> {
    c.reply_paths
        .iter()
        .find_map(|p| match p {
            ReplyPath::Sms { number } => Some(number.clone()),
            _ => None,
        })
        .or_else(|| (c.citizen.kind == IdentityKind::PhoneNumber).then(|| c.citizen.value.clone()))
}

impl Store {
    /// The follow-up's settings.
    pub fn followup_params(&self) -> &followup::Params {
        &self.followup
    }

    /// What follows a transition: the result SMS and the survey after closure (Arts. 13,
    /// 16); a redo ends the revisit that led to it (Art. 17).
    pub(super) async fn after_transition(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        action: TicketAction,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match action {
            TicketAction::ReplyAccepted => {
                // One look-up of the number for both texts.
                let reach = self.reachable(tx, row).await?;
                self.result_sms(tx, row, reach.as_ref().map(|(n, _)| n.clone()), now)
                    .await?;
                self.ask_survey(tx, row, reach, now).await
            }
            TicketAction::Answered => {
                let reach = self.reachable(tx, row).await?;
                self.ask_survey(tx, row, reach, now).await
            }
            TicketAction::RedoOrdered => {
                sqlx::query(
                    "UPDATE revisits SET state = 'closed', outcome = 'redo', ended_at = $2 WHERE ticket_ref = $1 AND state = 'open'",
                )
                .bind(&row.ticket_ref)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The number to text or call about a ticket, from its contacts (newest first), and
    /// the citizen key an SMS from that number carries (the contact's own key when the
    /// number is its identity, else the ticket's).
    async fn citizen_number(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.reachable(tx, row).await?.map(|(n, _)| n))
    }

    async fn reachable(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
    ) -> Result<Option<(String, String)>, StoreError> {
        let contact_ids: Vec<Uuid> = row
            .draft
            .get("contacts")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let bodies: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT body FROM contacts WHERE ticket_ref = $1 OR id = ANY($2) ORDER BY received_at DESC LIMIT 20",
        )
        .bind(&row.ticket_ref)
        .bind(&contact_ids)
        .fetch_all(&mut **tx)
        .await?;
        Ok(bodies
            .into_iter()
            .filter_map(|b| serde_json::from_value::<Contact>(b).ok())
            .find_map(|c| {
                let key = if c.citizen.kind == IdentityKind::PhoneNumber {
                    c.citizen.key.clone()
                } else {
                    row.citizen_key.clone()
                };
                sms_number(&c).map(|n| (n, key))
            }))
    }

    /// Writes an outbound SMS request to the outbox.
    #[allow(clippy::too_many_arguments)]
    async fn text(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        purpose: &str,
        ticket_ref: &str,
        to: String,
        text: String,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let request = OutboundSms {
            schema_version: contract::SCHEMA_VERSION,
            id,
            requested_at: now,
            expires_at,
            purpose: purpose.to_owned(),
            reference: ticket_ref.to_owned(),
            to,
            text,
        };
        // Keyed by the ticket (the request's reference): its texts keep their order.
        let record = Event::from(request).to_record(&self.source)?;
        self.outbox(tx, &self.topics.sms_outbound, &record.key, &record)
            .await?;
        metrics::counter!("tickets_sms_requested_total", "purpose" => purpose.to_owned())
            .increment(1);
        Ok(())
    }

    async fn outbox(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        topic: &str,
        key: &str,
        record: &contract::Record,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (topic, key, headers, payload) VALUES ($1, $2, $3, $4)")
            .bind(topic)
            .bind(key)
            .bind(serde_json::to_value(&record.headers)?)
            .bind(&record.payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn note(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        action: TicketAction,
        article: &str,
        actor: &str,
        detail: String,
        at: DateTime<Utc>,
        id: Uuid,
    ) -> Result<(), StoreError> {
        self.emit(
            tx,
            row,
            Emit {
                action,
                article,
                actor,
                detail: Some(detail),
                at,
                id,
            },
        )
        .await
    }

    /// Art. 13: the result SMS, within 1 working day of the accepted reply.
    async fn result_sms(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        number: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = derived_id(&[
            "result-sms",
            &row.ticket_ref,
            if row.redone { "2" } else { "1" },
        ]);
        let detail = match number {
            Some(to) => {
                let result = row
                    .records
                    .get("reply")
                    .and_then(|r| r.get("result"))
                    .and_then(|r| r.as_str())
                    .unwrap_or_default();
                let text = self.followup.templates.result_text(&row.ticket_ref, result);
                let expires = followup::result_expires(&self.calendar, now);
                self.text(tx, id, "result", &row.ticket_ref, to, text, now, expires)
                    .await?;
                format!("result SMS asked for (request {id})")
            }
            None => "no number to text: the result was not sent by SMS".to_owned(),
        };
        self.note(
            tx,
            row,
            TicketAction::ResultNotified,
            "Art. 13",
            "service",
            detail,
            now,
            derived_id(&["result-notified", &id.to_string()]),
        )
        .await
    }

    /// Art. 16: the satisfaction survey after closure (praise gets none).
    /// `reach`: the number to text and the key its SMS carry ([`Store::reachable`]).
    async fn ask_survey(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        reach: Option<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let snap = row.snapshot();
        let Some(outcome) = snap.outcome else {
            return Ok(());
        };
        if !followup::surveyed(snap.kind, outcome) {
            return Ok(());
        }
        let round: i16 = if row.redone { 2 } else { 1 };
        let id = derived_id(&["survey", &row.ticket_ref, &round.to_string()]);
        let window = self.followup.survey_window;
        let due = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(24));
        let reply_key = reach
            .as_ref()
            .map_or_else(|| row.citizen_key.clone(), |(_, k)| k.clone());
        let number = reach.map(|(n, _)| n);
        // Art. 16: a chat ticket is asked in the citizen's open chat session first (the
        // gateway says whether one was open; if not, the text follows).
        let chat = row.channel == contract::ChannelKind::Chat.as_str();
        let (state, via) = match (chat, &number) {
            (true, _) => ("asked", "chat"),
            (false, Some(_)) => ("asked", "sms"),
            (false, None) => ("not_sent", "sms"),
        };
        // The window starts when the gateway reports it sent (Art. 16: 短信发送24小时内).
        let fresh = sqlx::query(
            "INSERT INTO surveys (id, ticket_ref, round, citizen_key, reply_key, via, unit, state, sent_at, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&row.ticket_ref)
        .bind(round)
        .bind(&row.citizen_key)
        .bind(&reply_key)
        .bind(via)
        .bind(&row.lead_unit)
        .bind(state)
        .bind(now)
        .bind(due)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(());
        }
        let hours = window.as_secs_f64() / 3600.0;
        let detail = match (chat, number) {
            (true, _) => {
                let message = ChatOutbound {
                    schema_version: contract::SCHEMA_VERSION,
                    id: derived_id(&["survey-chat", &id.to_string()]),
                    reference: row.ticket_ref.clone(),
                    citizen_key: row.citizen_key.clone(),
                    purpose: "survey".into(),
                    text: self.followup.templates.survey_text(&row.ticket_ref, window),
                    asks_rating: true,
                    requested_at: now,
                    expires_at: now + CHAT_VALID,
                };
                let record = Event::from(message).to_record(&self.source)?;
                self.outbox(tx, &self.topics.chat_outbound, &record.key, &record)
                    .await?;
                format!(
                    "survey round {round} asked in the citizen's chat (by SMS if no session is open); no reply within {hours} h of its delivery counts as satisfied"
                )
            }
            (false, Some(to)) => {
                self.survey_sms(tx, row, id, to, now).await?;
                format!(
                    "survey round {round} asked for; no reply within {hours} h of its sending counts as satisfied"
                )
            }
            (false, None) => format!("survey round {round} not sent: no number to text"),
        };
        metrics::counter!("tickets_surveys_total", "state" => state).increment(1);
        self.note(
            tx,
            row,
            TicketAction::SurveySent,
            "Art. 16",
            "service",
            detail,
            now,
            derived_id(&["survey-sent", &id.to_string()]),
        )
        .await
    }

    /// What became of a text the service asked for: a survey's window starts when its
    /// text was sent (Art. 16); a survey whose text could not be delivered is
    /// `undelivered` and never defaults.
    pub(super) async fn sms_status(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        st: &contract::SmsStatus,
    ) -> Result<(), StoreError> {
        if st.purpose == "result" && st.state == contract::SmsState::Failed {
            // Art. 13: the centre sees that the citizen was not told.
            if let Some(row) = self.ticket_in(tx, &st.reference).await? {
                let reason = mask_digits(st.reason.as_deref().unwrap_or("unknown"));
                self.note(
                    tx,
                    &row,
                    TicketAction::ResultNotified,
                    "Art. 13",
                    "gateway",
                    format!("the result SMS was not delivered: {reason}"),
                    st.at,
                    derived_id(&["result-failed", &st.request_id.to_string()]),
                )
                .await?;
            }
            return Ok(());
        }
        if st.purpose != "survey" {
            return Ok(());
        }
        let Some(survey) = self
            .asked_survey(tx, &st.reference, "sms", st.request_id)
            .await?
        else {
            return Ok(());
        };
        match st.state {
            contract::SmsState::Sent => self.survey_sent(tx, survey, &st.reference, st.at).await,
            contract::SmsState::Failed => {
                sqlx::query("UPDATE surveys SET state = 'undelivered' WHERE id = $1")
                    .bind(survey)
                    .execute(&mut **tx)
                    .await?;
                metrics::counter!("tickets_surveys_undelivered_total").increment(1);
                let reason = mask_digits(st.reason.as_deref().unwrap_or("unknown"));
                tracing::warn!(ticket = %st.reference, %reason, "The survey's text could not be delivered; it will not default");
                Ok(())
            }
        }
    }

    /// Arms a clock (once, by its derived id).
    async fn arm(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        kind: &str,
        ticket_ref: &str,
        due_at: DateTime<Utc>,
        args: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (id, kind, ticket_ref, due_at, args) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(ticket_ref)
        .bind(due_at)
        .bind(args)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Art. 16: whether an SMS draft answers the citizen's waiting survey (then it is
    /// taken as the reply and makes no ticket). A bare rating with no survey waiting is
    /// kept as an unmatched reply and makes no ticket either; anything longer than a
    /// reply becomes a ticket as usual.
    pub(super) async fn survey_reply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        d: &TicketDraft,
    ) -> Result<bool, StoreError> {
        if d.channel != contract::ChannelKind::Sms {
            return Ok(false);
        }
        let reply = followup::read_reply(&d.summary);
        if reply == Reply::NotAReply {
            return Ok(false);
        }
        let waiting: Option<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT id, ticket_ref, clarified FROM surveys WHERE reply_key = $1 AND state IN ('asked', 'waiting') AND sent_at <= $2 ORDER BY sent_at DESC LIMIT 1 FOR UPDATE",
        )
        .bind(&d.citizen_key)
        .bind(d.created_at)
        .fetch_optional(&mut **tx)
        .await?;
        let keep = |survey: Option<Uuid>, outcome: &'static str| {
            keep_reply(
                d.id,
                d.ticket_ref.as_str(),
                survey,
                &d.citizen_key,
                &d.summary,
                outcome,
                d.created_at,
            )
        };
        match (waiting, reply) {
            (None, Reply::Rating(_)) => {
                keep(None, "unmatched").execute(&mut **tx).await?;
                metrics::counter!("tickets_survey_replies_total", "outcome" => "unmatched")
                    .increment(1);
                Ok(true)
            }
            (None, _) => Ok(false),
            (Some((survey, ticket_ref, _)), Reply::Rating(r)) => {
                keep(Some(survey), "rating").execute(&mut **tx).await?;
                metrics::counter!("tickets_survey_replies_total", "outcome" => "rating")
                    .increment(1);
                self.rate(
                    tx,
                    survey,
                    &ticket_ref,
                    r,
                    "sms_reply",
                    "citizen",
                    d.created_at,
                )
                .await?;
                Ok(true)
            }
            (Some((survey, ticket_ref, clarified)), _) => {
                keep(Some(survey), "unclear").execute(&mut **tx).await?;
                metrics::counter!("tickets_survey_replies_total", "outcome" => "unclear")
                    .increment(1);
                if !clarified {
                    sqlx::query("UPDATE surveys SET clarified = true WHERE id = $1")
                        .bind(survey)
                        .execute(&mut **tx)
                        .await?;
                    let row = self.ticket_in(tx, &ticket_ref).await?;
                    if let (Some(row), Some(to)) = (
                        row.as_ref(),
                        match &row {
                            Some(r) => self.citizen_number(tx, r).await?,
                            None => None,
                        },
                    ) {
                        let text = self.followup.templates.clarify_text(&row.ticket_ref);
                        self.text(
                            tx,
                            derived_id(&["survey-clarify", &survey.to_string()]),
                            "survey_clarify",
                            &row.ticket_ref,
                            to,
                            text,
                            d.created_at,
                            d.created_at + SURVEY_SMS_VALID,
                        )
                        .await?;
                    }
                }
                Ok(true)
            }
        }
    }

    /// Art. 16: a chat survey's answer, from the citizen's open session (a contact with a
    /// `survey_reply`). Only the citizen the survey asked may answer it; an unclear answer
    /// is kept (the chat client asks again), an answer with no survey waiting is kept as
    /// unmatched.
    pub(super) async fn chat_survey_reply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        c: &Contact,
    ) -> Result<(), StoreError> {
        let contract::ContactContent::SurveyReply { ticket_ref, text } = &c.content else {
            return Ok(());
        };
        let waiting: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM surveys WHERE ticket_ref = $1 AND (reply_key = $2 OR citizen_key = $2) AND state IN ('asked', 'waiting') ORDER BY round DESC LIMIT 1 FOR UPDATE",
        )
        .bind(ticket_ref.as_str())
        .bind(&c.citizen.key)
        .fetch_optional(&mut **tx)
        .await?;
        let reply = followup::read_reply(text);
        let outcome = match (waiting, reply) {
            (None, _) => "unmatched",
            (Some(_), Reply::Rating(_)) => "rating",
            (Some(_), _) => "unclear",
        };
        keep_reply(
            c.id,
            ticket_ref.as_str(),
            waiting,
            &c.citizen.key,
            text,
            outcome,
            c.received_at,
        )
        .execute(&mut **tx)
        .await?;
        metrics::counter!("tickets_survey_replies_total", "outcome" => outcome).increment(1);
        if let (Some(survey), Reply::Rating(r)) = (waiting, reply) {
            self.rate(
                tx,
                survey,
                ticket_ref.as_str(),
                r,
                "chat_reply",
                "citizen",
                c.received_at,
            )
            .await?;
        }
        Ok(())
    }

    /// What became of a chat survey: delivered starts its window; no open session (or
    /// expired) falls back to the SMS survey when a number is known (Art. 16).
    pub(super) async fn chat_status(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        st: &contract::ChatOutboundStatus,
    ) -> Result<(), StoreError> {
        if st.purpose != "survey" {
            return Ok(());
        }
        let Some(survey) = self
            .asked_survey(tx, &st.reference, "chat", st.request_id)
            .await?
        else {
            return Ok(());
        };
        match st.state {
            contract::ChatDelivery::Delivered => {
                self.survey_sent(tx, survey, &st.reference, st.at).await
            }
            contract::ChatDelivery::NoOpenSession | contract::ChatDelivery::Expired => {
                let Some(row) = self.ticket_in(tx, &st.reference).await? else {
                    return Ok(());
                };
                match self.citizen_number(tx, &row).await? {
                    Some(to) => {
                        sqlx::query("UPDATE surveys SET via = 'sms' WHERE id = $1")
                            .bind(survey)
                            .execute(&mut **tx)
                            .await?;
                        self.survey_sms(tx, &row, survey, to, st.at).await
                    }
                    None => {
                        sqlx::query("UPDATE surveys SET state = 'not_sent' WHERE id = $1")
                            .bind(survey)
                            .execute(&mut **tx)
                            .await?;
                        metrics::counter!("tickets_surveys_total", "state" => "not_sent")
                            .increment(1);
                        Ok(())
                    }
                }
            }
        }
    }

    /// The ticket's survey still `asked` by `via` (`sms`, `chat`) whose request the
    /// gateway's report names, locked; none for a report of anything else (an answered
    /// survey, a redelivered report).
    async fn asked_survey(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_ref: &str,
        via: &str,
        request_id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let asked: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM surveys WHERE ticket_ref = $1 AND state = 'asked' AND via = $2 ORDER BY round DESC LIMIT 1 FOR UPDATE",
        )
        .bind(ticket_ref)
        .bind(via)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(asked
            .filter(|id| derived_id(&[&format!("survey-{via}"), &id.to_string()]) == request_id))
    }

    /// The survey's text (Art. 16).
    async fn survey_sms(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        survey: Uuid,
        to: String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = self
            .followup
            .templates
            .survey_text(&row.ticket_ref, self.followup.survey_window);
        self.text(
            tx,
            derived_id(&["survey-sms", &survey.to_string()]),
            "survey",
            &row.ticket_ref,
            to,
            text,
            now,
            now + SURVEY_SMS_VALID,
        )
        .await
    }

    /// The survey reached the citizen at `at`: its window runs from then (Art. 16).
    async fn survey_sent(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        survey: Uuid,
        ticket_ref: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let due = at
            + chrono::Duration::from_std(self.followup.survey_window)
                .unwrap_or(chrono::Duration::hours(24));
        sqlx::query(
            "UPDATE surveys SET state = 'waiting', sent_at = $2, due_at = $3 WHERE id = $1",
        )
        .bind(survey)
        .bind(at)
        .bind(due)
        .execute(&mut **tx)
        .await?;
        self.arm(
            tx,
            derived_id(&["survey-default", &survey.to_string()]),
            "survey_default",
            ticket_ref,
            due,
            serde_json::json!({ "survey": survey }),
        )
        .await
    }

    async fn ticket_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_ref: &str,
    ) -> Result<Option<TicketRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_ref = $1 FOR UPDATE"
        ))
        .bind(ticket_ref)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Records a rating on a survey and the ticket; a dissatisfied first rating opens a
    /// revisit (Art. 17).
    #[allow(clippy::too_many_arguments)]
    async fn rate(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        survey: Uuid,
        ticket_ref: &str,
        rating: Rating,
        source: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let state = if source == "default" {
            "defaulted"
        } else {
            "rated"
        };
        sqlx::query(
            "UPDATE surveys SET state = $2, rating = $3, rating_source = $4, rated_at = COALESCE(rated_at, $5) WHERE id = $1",
        )
        .bind(survey)
        .bind(state)
        .bind(rating.as_str())
        .bind(source)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let row: TicketRow = sqlx::query_as(&format!(
            "UPDATE tickets SET rating = $2, rating_appealed = (SELECT appeal_upheld FROM surveys WHERE id = $3) WHERE ticket_ref = $1 RETURNING {TICKET_COLUMNS}"
        ))
        .bind(ticket_ref)
        .bind(rating.as_str())
        .bind(survey)
        .fetch_one(&mut **tx)
        .await?;
        metrics::counter!("tickets_ratings_total", "rating" => rating.as_str(), "source" => source.to_owned())
            .increment(1);
        let revisit = source.starts_with("revisit");
        self.note(
            tx,
            &row,
            TicketAction::Rated,
            if revisit { "Art. 17" } else { "Art. 16" },
            actor,
            match source {
                "default" => format!("{} (no reply within the survey window)", rating.zh()),
                _ => format!("{} ({source})", rating.zh()),
            },
            now,
            derived_id(&["rated", &survey.to_string(), source]),
        )
        .await?;
        if !rating.satisfied() && !revisit {
            self.open_revisit(tx, &row, survey, now).await?;
        }
        Ok(())
    }

    async fn open_revisit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &TicketRow,
        survey: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mode = self.followup.revisit_mode;
        let id = derived_id(&["revisit", &survey.to_string()]);
        let fresh = sqlx::query(
            "INSERT INTO revisits (id, ticket_ref, survey_id, mode, state, opened_at) VALUES ($1, $2, $3, $4, 'open', $5) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&row.ticket_ref)
        .bind(survey)
        .bind(mode.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(());
        }
        metrics::counter!("tickets_revisits_opened_total", "mode" => mode.as_str()).increment(1);
        if mode == RevisitMode::Call {
            self.arm(
                tx,
                derived_id(&["revisit-call", &id.to_string(), "1"]),
                "revisit_call",
                &row.ticket_ref,
                now,
                serde_json::json!({ "revisit": id, "attempt": 1 }),
            )
            .await?;
        }
        self.note(
            tx,
            row,
            TicketAction::RevisitOpened,
            "Art. 17",
            "service",
            format!("revisit by {}", mode.as_str()),
            now,
            derived_id(&["revisit-opened", &id.to_string()]),
        )
        .await
    }

    // ---- Clocks ------------------------------------------------------------------

    /// Runs the clocks due at `now` (at most `limit`), each once and each in its own
    /// transaction (so one that keeps failing holds up no other): the survey's default
    /// (Art. 16), revisit calls and their timeouts (Art. 17). A clock that fails is
    /// tried again a minute later. Returns how many ran.
    pub async fn run_due_jobs(&self, now: DateTime<Utc>, limit: i64) -> Result<u32, StoreError> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut ran = 0;
        for id in due {
            match self.run_job(id, now).await {
                Ok(true) => ran += 1,
                Ok(false) => {}
                Err(e) if e.is_data_error() => {
                    tracing::error!(job = %id, error = %e, "A follow-up clock failed; trying it again in a minute");
                    metrics::counter!("tickets_clock_failures_total").increment(1);
                    sqlx::query("UPDATE jobs SET due_at = $2 WHERE id = $1 AND done_at IS NULL")
                        .bind(id)
                        .bind(now + chrono::Duration::minutes(1))
                        .execute(&self.pool)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ran)
    }

    /// Runs one clock, unless another instance has it or ran it.
    async fn run_job(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let job: Option<(String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT kind, ticket_ref, args FROM jobs WHERE id = $1 AND done_at IS NULL FOR UPDATE SKIP LOCKED",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((kind, ticket_ref, args)) = job else {
            return Ok(false);
        };
        let uuid = |k: &str| {
            args.get(k)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<Uuid>().ok())
        };
        let attempt = args.get("attempt").and_then(|v| v.as_u64()).unwrap_or(1) as u32;
        match (kind.as_str(), uuid("survey"), uuid("revisit")) {
            ("survey_default", Some(survey), _) => {
                self.survey_default(&mut tx, survey, &ticket_ref, now)
                    .await?
            }
            ("revisit_call", _, Some(revisit)) => {
                self.revisit_call(&mut tx, revisit, attempt, now).await?
            }
            ("revisit_timeout", _, Some(revisit)) => {
                self.revisit_timeout(&mut tx, revisit, attempt, now).await?
            }
            _ => tracing::error!(job = %id, kind, "Unknown clock; marked done"),
        }
        sqlx::query("UPDATE jobs SET done_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("tickets_clocks_fired_total", "kind" => kind).increment(1);
        Ok(true)
    }

    /// Art. 16: no valid reply within the window counts as satisfied.
    async fn survey_default(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        survey: Uuid,
        ticket_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let waiting: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT sent_at FROM surveys WHERE id = $1 AND state = 'waiting' FOR UPDATE",
        )
        .bind(survey)
        .fetch_optional(&mut **tx)
        .await?;
        match waiting {
            Some(sent) if followup::survey_defaults(sent, now, self.followup.survey_window) => {
                self.rate(
                    tx,
                    survey,
                    ticket_ref,
                    Rating::Satisfied,
                    "default",
                    "service",
                    now,
                )
                .await
            }
            _ => Ok(()),
        }
    }

    async fn revisit_locked(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        revisit: Uuid,
    ) -> Result<Option<RevisitRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {REVISIT_COLUMNS} FROM revisits WHERE id = $1 FOR UPDATE"
        ))
        .bind(revisit)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Art. 17: asks the gateway to place attempt `attempt`, and arms its timeout.
    async fn revisit_call(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        revisit: Uuid,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(v) = self.revisit_locked(tx, revisit).await? else {
            return Ok(());
        };
        if v.state != "open" || v.attempts as u32 + 1 != attempt {
            return Ok(());
        }
        let Some(row) = self.ticket_in(tx, &v.ticket_ref).await? else {
            return Ok(());
        };
        let Some(to) = self.citizen_number(tx, &row).await? else {
            // Nobody to call: a failed attempt, as Art. 17 counts them.
            return self
                .revisit_attempt(
                    tx,
                    &v,
                    attempt,
                    RevisitCallOutcome::Failed,
                    None,
                    "service",
                    None,
                    now,
                )
                .await;
        };
        let call = RevisitCall {
            schema_version: contract::SCHEMA_VERSION,
            id: derived_id(&["revisit-call", &revisit.to_string(), &attempt.to_string()]),
            ticket_ref: TicketRef(v.ticket_ref.clone()),
            attempt,
            requested_at: now,
            expires_at: now + CALL_VALID,
            to,
        };
        let record = Event::from(call).to_record(&self.source)?;
        self.outbox(tx, &self.topics.revisit_calls, &record.key, &record)
            .await?;
        let timeout = chrono::Duration::from_std(self.followup.revisit_result_timeout)
            .unwrap_or(chrono::Duration::minutes(15));
        self.arm(
            tx,
            derived_id(&[
                "revisit-timeout",
                &revisit.to_string(),
                &attempt.to_string(),
            ]),
            "revisit_timeout",
            &v.ticket_ref,
            now + timeout,
            serde_json::json!({ "revisit": revisit, "attempt": attempt }),
        )
        .await
    }

    /// A call with no result in time is a failed attempt.
    async fn revisit_timeout(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        revisit: Uuid,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(v) = self.revisit_locked(tx, revisit).await? else {
            return Ok(());
        };
        if v.state == "open" && v.attempts as u32 + 1 == attempt {
            tracing::warn!(ticket = %v.ticket_ref, attempt, "No result of the revisit call in time: a failed attempt");
            self.revisit_attempt(
                tx,
                &v,
                attempt,
                RevisitCallOutcome::Failed,
                None,
                "service",
                None,
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// A revisit call's result from the gateway (redelivered or late ones change nothing).
    pub(super) async fn revisit_result(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        r: &RevisitResult,
    ) -> Result<(), StoreError> {
        let open: Option<RevisitRow> = sqlx::query_as(&format!(
            "SELECT {REVISIT_COLUMNS} FROM revisits WHERE ticket_ref = $1 AND state = 'open' FOR UPDATE"
        ))
        .bind(r.ticket_ref.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        match open {
            Some(v) if v.attempts as u32 + 1 == r.attempt => {
                self.revisit_attempt(
                    tx, &v, r.attempt, r.outcome, r.rating, "gateway", None, r.at,
                )
                .await
            }
            _ => {
                metrics::counter!("tickets_revisit_results_ignored_total").increment(1);
                tracing::info!(ticket = %r.ticket_ref, attempt = r.attempt, "Revisit result for no open attempt; ignored");
                Ok(())
            }
        }
    }

    /// Records attempt `attempt` of a revisit and what follows it (Art. 17).
    #[allow(clippy::too_many_arguments)]
    async fn revisit_attempt(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        v: &RevisitRow,
        attempt: u32,
        outcome: RevisitCallOutcome,
        rating: Option<Rating>,
        actor: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let next =
            followup::revisit_next(attempt, outcome, rating, now, self.followup.revisit_retry);
        let entry = serde_json::json!([{
            "attempt": attempt,
            "at": now,
            "outcome": outcome.as_str(),
            "rating": rating.map(|r| r.as_str()),
            "by": actor,
            "note": note,
        }]);
        let (state, end) = match next {
            RevisitNext::Done(_) => ("done", Some("rated")),
            RevisitNext::Ended => ("ended", Some("unreachable")),
            RevisitNext::Retry(_) => ("open", None),
        };
        sqlx::query(
            "UPDATE revisits SET state = $2, attempts = $3, outcome = $4, ended_at = CASE WHEN $2 = 'open' THEN NULL ELSE $5 END, log = log || $6 WHERE id = $1",
        )
        .bind(v.id)
        .bind(state)
        .bind(attempt as i32)
        .bind(end)
        .bind(now)
        .bind(entry)
        .execute(&mut **tx)
        .await?;
        metrics::counter!("tickets_revisit_attempts_total", "outcome" => outcome.as_str())
            .increment(1);
        let source = if v.mode == "call" && actor == "gateway" {
            "revisit_call"
        } else {
            "revisit_agent"
        };
        let row = self.ticket_in(tx, &v.ticket_ref).await?;
        let Some(row) = row else { return Ok(()) };
        let key = |what: &str| derived_id(&[what, &v.id.to_string(), &attempt.to_string()]);
        match next {
            RevisitNext::Done(r) => {
                self.rate(tx, v.survey_id, &v.ticket_ref, r, source, actor, now)
                    .await?;
                let row = self.ticket_in(tx, &v.ticket_ref).await?.unwrap_or(row);
                self.note(
                    tx,
                    &row,
                    TicketAction::RevisitEnded,
                    "Art. 17",
                    actor,
                    format!("rated {} on attempt {attempt}", r.zh()),
                    now,
                    key("revisit-ended"),
                )
                .await
            }
            RevisitNext::Retry(at) => {
                if v.mode == RevisitMode::Call.as_str() {
                    self.arm(
                        tx,
                        key("revisit-call-next"),
                        "revisit_call",
                        &v.ticket_ref,
                        at,
                        serde_json::json!({ "revisit": v.id, "attempt": attempt + 1 }),
                    )
                    .await?;
                }
                self.note(
                    tx,
                    &row,
                    TicketAction::RevisitAttemptFailed,
                    "Art. 17",
                    actor,
                    format!("attempt {attempt}: {}; next from {at}", outcome.as_str()),
                    now,
                    key("revisit-failed"),
                )
                .await
            }
            RevisitNext::Ended => {
                self.note(
                    tx,
                    &row,
                    TicketAction::RevisitEnded,
                    "Art. 17",
                    actor,
                    format!(
                        "not reached in {attempt} attempts (last: {}): the revisit ends",
                        outcome.as_str()
                    ),
                    now,
                    key("revisit-ended"),
                )
                .await
            }
        }
    }

    // ---- Commands ----------------------------------------------------------------

    /// An agent's revisit attempt (Art. 17: 人工回访), in either mode.
    pub async fn revisit_by_agent(
        &self,
        ticket_ref: &str,
        role: &Role,
        input: &AgentRevisit,
        now: DateTime<Utc>,
    ) -> Result<RevisitRow, CommandError> {
        if !role.is_centre() {
            return Err(refused(
                403,
                "centre-only",
                "only the hotline centre revisits (Art. 17)",
            ));
        }
        if input.note.chars().count() > 4000 {
            return Err(refused(
                422,
                "field-too-long",
                "`note` is longer than 4,000 characters",
            ));
        }
        let rating = match (input.reached, input.rating) {
            (true, Some(d)) => Some(Rating::from_digit(d).ok_or_else(|| {
                refused(
                    422,
                    "invalid-rating",
                    "a rating is a digit 1 to 5 (Art. 16)",
                )
            })?),
            (true, None) => {
                return Err(refused(
                    422,
                    "rating-required",
                    "a citizen reached gives a rating (1 to 5)",
                ));
            }
            (false, Some(_)) => {
                return Err(refused(
                    422,
                    "invalid-rating",
                    "no rating from a citizen not reached",
                ));
            }
            (false, None) => None,
        };
        let mut tx = self.pool.begin().await?;
        let open: Option<RevisitRow> = sqlx::query_as(&format!(
            "SELECT {REVISIT_COLUMNS} FROM revisits WHERE ticket_ref = $1 AND state = 'open' FOR UPDATE"
        ))
        .bind(ticket_ref)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(v) = open else {
            return Err(refused(
                409,
                "no-open-revisit",
                format!("ticket {ticket_ref} has no open revisit"),
            ));
        };
        let outcome = if rating.is_some() {
            RevisitCallOutcome::Rated
        } else {
            RevisitCallOutcome::NoAnswer
        };
        let attempt = v.attempts as u32 + 1;
        let note = input.note.trim();
        self.revisit_attempt(
            &mut tx,
            &v,
            attempt,
            outcome,
            rating,
            &role.actor(),
            (!note.is_empty()).then_some(note),
            now,
        )
        .await?;
        let after: RevisitRow = sqlx::query_as(&format!(
            "SELECT {REVISIT_COLUMNS} FROM revisits WHERE id = $1"
        ))
        .bind(v.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn newest_survey(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_ref: &str,
    ) -> Result<Option<SurveyRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SURVEY_COLUMNS} FROM surveys WHERE ticket_ref = $1 ORDER BY round DESC LIMIT 1 FOR UPDATE"
        ))
        .bind(ticket_ref)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Art. 17: the lead unit appeals a dissatisfied rating with evidence, within 3
    /// working days of the rating.
    pub async fn appeal(
        &self,
        ticket_ref: &str,
        role: &Role,
        evidence: &str,
        now: DateTime<Utc>,
    ) -> Result<AppealRow, CommandError> {
        let Role::Unit { unit, .. } = role else {
            return Err(refused(
                403,
                "unit-only",
                "only the rated unit appeals (Art. 17)",
            ));
        };
        if evidence.trim().is_empty() {
            return Err(refused(422, "field-required", "`evidence` is required"));
        }
        if evidence.chars().count() > 4000 {
            return Err(refused(
                422,
                "field-too-long",
                "`evidence` is longer than 4,000 characters",
            ));
        }
        let mut tx = self.pool.begin().await?;
        let row = self
            .ticket_in(&mut tx, ticket_ref)
            .await?
            .ok_or_else(|| CommandError::NotFound(ticket_ref.to_owned()))?;
        let survey = self.newest_survey(&mut tx, ticket_ref).await?;
        let Some(survey) = survey.filter(|s| s.unit.as_deref() == Some(unit.as_str())) else {
            return Err(refused(
                403,
                "not-your-rating",
                "the rating is not your unit's",
            ));
        };
        let (Some(rating), Some(rated_at)) = (
            survey.rating.as_deref().and_then(Rating::parse),
            survey.rated_at,
        ) else {
            return Err(refused(409, "not-rated", "the ticket has no rating yet"));
        };
        if rating.satisfied() {
            return Err(refused(
                409,
                "not-dissatisfied",
                "only a dissatisfied rating is appealed (Art. 17)",
            ));
        }
        let until = followup::appeal_until(&self.calendar, rated_at);
        if crate::rules::beijing_date(now) > until {
            return Err(refused(
                422,
                "appeal-window-closed",
                format!(
                    "an appeal is filed within 3 working days of the rating (by {until}, Art. 17)"
                ),
            ));
        }
        let id = derived_id(&["appeal", &survey.id.to_string()]);
        let appeal: Option<AppealRow> = sqlx::query_as(&format!(
            "INSERT INTO appeals (id, ticket_ref, survey_id, unit, filed_by, evidence, filed_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT DO NOTHING RETURNING {APPEAL_COLUMNS}"
        ))
        .bind(id)
        .bind(ticket_ref)
        .bind(survey.id)
        .bind(unit)
        .bind(role.actor())
        .bind(evidence.trim())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(appeal) = appeal else {
            return Err(refused(
                409,
                "appealed-already",
                "this rating was appealed already",
            ));
        };
        self.note(
            &mut tx,
            &row,
            TicketAction::AppealFiled,
            "Art. 17",
            &role.actor(),
            format!("appeal of the {} rating", rating.zh()),
            now,
            contract::event::new_event_id(),
        )
        .await?;
        tx.commit().await?;
        Ok(appeal)
    }

    /// Art. 17: a supervisor upholds (the rating no longer counts against the unit) or
    /// rejects an appeal.
    pub async fn decide_appeal(
        &self,
        ticket_ref: &str,
        role: &Role,
        uphold: bool,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<AppealRow, CommandError> {
        if !matches!(role, Role::Supervisor(_)) {
            return Err(refused(
                403,
                "supervisor-only",
                "a supervisor decides appeals (Art. 17)",
            ));
        }
        if note.trim().is_empty() || note.chars().count() > 4000 {
            return Err(refused(
                422,
                "field-required",
                "`note` is required (at most 4,000 characters)",
            ));
        }
        let mut tx = self.pool.begin().await?;
        let row = self
            .ticket_in(&mut tx, ticket_ref)
            .await?
            .ok_or_else(|| CommandError::NotFound(ticket_ref.to_owned()))?;
        let decided: Option<AppealRow> = sqlx::query_as(&format!(
            "UPDATE appeals SET state = $2, decided_by = $3, decided_at = $4, note = $5 WHERE ticket_ref = $1 AND state = 'pending' AND survey_id = (SELECT id FROM surveys WHERE ticket_ref = $1 ORDER BY round DESC LIMIT 1) RETURNING {APPEAL_COLUMNS}"
        ))
        .bind(ticket_ref)
        .bind(if uphold { "upheld" } else { "rejected" })
        .bind(role.actor())
        .bind(now)
        .bind(note.trim())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(appeal) = decided else {
            return Err(refused(
                409,
                "no-pending-appeal",
                format!("ticket {ticket_ref} has no pending appeal"),
            ));
        };
        if uphold {
            sqlx::query("UPDATE surveys SET appeal_upheld = true WHERE id = $1")
                .bind(appeal.survey_id)
                .execute(&mut *tx)
                .await?;
            // Only while that survey's rating is the one that counts (a redo's second
            // rating replaces it, Art. 17).
            sqlx::query(
                "UPDATE tickets t SET rating_appealed = true WHERE ticket_ref = $1 AND NOT EXISTS (SELECT 1 FROM surveys s WHERE s.ticket_ref = t.ticket_ref AND s.id <> $2 AND s.round > (SELECT round FROM surveys WHERE id = $2))",
            )
            .bind(ticket_ref)
            .bind(appeal.survey_id)
            .execute(&mut *tx)
            .await?;
        }
        self.note(
            &mut tx,
            &row,
            TicketAction::AppealDecided,
            "Art. 17",
            &role.actor(),
            format!(
                "{}: {}",
                if uphold { "upheld" } else { "rejected" },
                note.trim()
            ),
            now,
            contract::event::new_event_id(),
        )
        .await?;
        tx.commit().await?;
        Ok(appeal)
    }

    // ---- Reading -----------------------------------------------------------------

    /// Everything after closure of a ticket.
    pub async fn followup_of(&self, ticket_ref: &str) -> Result<Followup, StoreError> {
        let surveys = sqlx::query_as(&format!(
            "SELECT {SURVEY_COLUMNS} FROM surveys WHERE ticket_ref = $1 ORDER BY round"
        ))
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?;
        let replies = sqlx::query_as(
            "SELECT r.ticket_ref, r.survey_id, r.text, r.outcome, r.received_at FROM survey_replies r JOIN surveys s ON s.id = r.survey_id WHERE s.ticket_ref = $1 ORDER BY r.received_at",
        )
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?;
        let revisits = sqlx::query_as(&format!(
            "SELECT {REVISIT_COLUMNS} FROM revisits WHERE ticket_ref = $1 ORDER BY opened_at"
        ))
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?;
        let appeals = sqlx::query_as(&format!(
            "SELECT {APPEAL_COLUMNS} FROM appeals WHERE ticket_ref = $1 ORDER BY filed_at"
        ))
        .bind(ticket_ref)
        .fetch_all(&self.pool)
        .await?;
        Ok(Followup {
            surveys,
            replies,
            revisits,
            appeals,
        })
    }

    /// Revisits in `state`, oldest first (an agent's task list), after `cursor` (the last
    /// `opened_at` and id of the previous page).
    pub async fn revisits(
        &self,
        state: &str,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<RevisitRow>, StoreError> {
        self.task_list(
            &format!("SELECT {REVISIT_COLUMNS} FROM revisits WHERE state = $1 AND (opened_at, id) > ($2, $3) ORDER BY opened_at, id LIMIT $4"),
            state,
            after,
            limit,
        )
        .await
    }

    /// Appeals in `state`, oldest first (a supervisor's task list).
    pub async fn appeals(
        &self,
        state: &str,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<AppealRow>, StoreError> {
        self.task_list(
            &format!("SELECT {APPEAL_COLUMNS} FROM appeals WHERE state = $1 AND (filed_at, id) > ($2, $3) ORDER BY filed_at, id LIMIT $4"),
            state,
            after,
            limit,
        )
        .await
    }

    /// A page of a task list: `sql` takes the state, the cursor's time and id, the limit.
    async fn task_list<T>(
        &self,
        sql: &str,
        state: &str,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let (at, id) = after.unwrap_or((DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()));
        Ok(sqlx::query_as(sql)
            .bind(state)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Replies that matched no survey (kept, never a ticket), newest first.
    pub async fn unmatched_replies(&self, limit: i64) -> Result<Vec<ReplyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT ticket_ref, survey_id, text, outcome, received_at FROM survey_replies WHERE outcome = 'unmatched' ORDER BY received_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many clocks are armed and not yet run (for readiness and tests).
    pub async fn pending_jobs(&self) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query("SELECT count(*) FROM jobs WHERE done_at IS NULL")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n)
    }
}
