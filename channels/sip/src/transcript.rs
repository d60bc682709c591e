//! Where a call's transcript goes: the agent's call screen, contacts on Kafka, and the
//! ticket draft when the call's audio is all transcribed.
//!
//! The speech tap calls this sink from its own task, outside the call's: a transcript
//! completes after the call has ended (deferred utterances are transcribed from the
//! recording then), so everything the sink needs to write contacts is its own copy, and
//! contacts share the call's sequence counter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use contract::{
    ChannelKind, CitizenIdentity, Contact, ContactContent, Event, IdentityKind, ReplyPath,
    SCHEMA_VERSION, Submission, TicketRef, TranscriptSegment, TranscriptSink,
};
use uuid::Uuid;

use crate::Core;
use crate::feed::FeedEvent;

/// How a call's contacts are addressed; shared by the call and its transcript.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The gateway's call id.
    pub id: Uuid,
    /// The ticket the contacts go to.
    pub ticket: TicketRef,
    /// The caller.
    pub citizen: CitizenIdentity,
    /// The citizen leg's SIP Call-ID.
    pub channel_ref: String,
    /// Position of the last contact in the ticket.
    pub sequence: Arc<AtomicU32>,
    /// The agent, once known (the screen the transcript goes to).
    pub agent: Arc<OnceLock<String>>,
    /// Where the call was transferred from (History-Info, Diversion), if it was.
    pub origin: Option<contract::CallOrigin>,
    /// Art. 9: set when a restricted caller was let through for an emergency; every
    /// later contact and the draft carry it.
    pub restriction: Arc<OnceLock<contract::RestrictionNote>>,
    /// Notified when the citizen's words made an urgent notice (a restricted caller
    /// saying an emergency during the announcement is let through).
    pub emergency: Arc<tokio::sync::Notify>,
    /// Set when the call was declined: its transcript is not kept.
    pub refused: Arc<std::sync::atomic::AtomicBool>,
}

impl CallRecord {
    /// A contact of this call with `content`, numbered next in the ticket.
    pub fn contact(&self, content: ContactContent) -> Contact {
        Contact {
            schema_version: SCHEMA_VERSION,
            id: contract::event::new_event_id(),
            ticket_ref: self.ticket.clone(),
            channel: ChannelKind::Phone,
            received_at: Utc::now(),
            citizen: self.citizen.clone(),
            reply_paths: reply_paths(&self.citizen),
            content,
            channel_ref: Some(self.channel_ref.clone()),
            sequence: self.sequence.fetch_add(1, Ordering::AcqRel) + 1,
            rejected: None,
            restriction: self.restriction.get().cloned(),
        }
    }
}

/// How the hotline can answer a caller: the number, and an SMS for mainland mobiles (the
/// Art. 13 result SMS).
pub fn reply_paths(citizen: &CitizenIdentity) -> Vec<ReplyPath> {
    let mut paths = Vec::new();
    if citizen.kind == IdentityKind::PhoneNumber {
        let n = &citizen.value;
        paths.push(ReplyPath::Phone { number: n.clone() });
        if n.len() == 11 && n.starts_with('1') {
            paths.push(ReplyPath::Sms { number: n.clone() });
        }
    }
    paths
}

/// The transcript sink of one call.
pub struct CallSink {
    core: Arc<Core>,
    call: CallRecord,
    /// Ids of the transcript contacts recorded so far, for the draft.
    contacts: Arc<Mutex<Vec<Uuid>>>,
}

impl CallSink {
    /// A sink writing `call`'s transcript.
    pub fn new(core: Arc<Core>, call: CallRecord) -> Arc<CallSink> {
        Arc::new(CallSink {
            core,
            call,
            contacts: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn submit(&self, events: Vec<Event>, once: String, what: &'static str) {
        let intake = self.core.ctx.intake.clone();
        let screen = self.core.ctx.screen.clone();
        let call = self.call.id;
        self.core.ctx.tasks.spawn(async move {
            // What the screen added beside the contact (the first event).
            let screened: Vec<Event> = events.iter().skip(1).cloned().collect();
            let submission = Submission {
                events,
                once: Some((once, call.to_string().into_bytes())),
                ..Submission::default()
            };
            match intake.submit(submission).await {
                Ok(contract::Receipt::Accepted) => screen.recorded(&screened),
                Ok(contract::Receipt::Duplicate(_)) => {}
                Err(e) => {
                    tracing::warn!(call = %call, error = %e, what, "Cannot record the transcript")
                }
            }
        });
    }
}

impl TranscriptSink for CallSink {
    fn segment(&self, s: TranscriptSegment) {
        if let (Some(feed), Some(agent)) = (&self.core.feed, self.call.agent.get()) {
            feed.publish(
                agent,
                &FeedEvent::Transcript {
                    call_id: s.call_id,
                    speaker: s.speaker,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    text: s.text.clone(),
                    confidence: s.confidence,
                    deferred: s.deferred,
                },
            );
        }
        if s.text.is_empty() || self.call.refused.load(Ordering::Acquire) {
            return;
        }
        metrics::counter!("gateway_asr_segments_total").increment(1);
        let once = format!(
            "sip/{}/transcript/{:?}/{}",
            self.call.channel_ref, s.speaker, s.start_ms
        );
        // Art. 15 and Art. 9: a citizen's emergency words make (or update) an urgent
        // notice while the call is still up, abusive words a restriction proposal; both
        // recorded with the segment.
        let text = (s.speaker == contract::Speaker::Citizen).then(|| s.text.clone());
        let contact = self.call.contact(ContactContent::Transcript(s));
        if let Ok(mut ids) = self.contacts.lock() {
            ids.push(contact.id);
        }
        let screened = text
            .map(|t| self.core.ctx.screen.screen(&contact, &t))
            .unwrap_or_default();
        if screened.iter().any(|e| matches!(e, Event::Notice(_))) {
            self.call.emergency.notify_one();
            // Art. 15: the caller's call back about this emergency gets the priority
            // lane (admission.rs).
            if self.call.citizen.kind == contract::IdentityKind::PhoneNumber {
                self.core.admission.mark_emergency(&self.call.citizen.key);
            }
        }
        let mut events = vec![Event::from(contact)];
        events.extend(screened);
        self.submit(events, once, "segment");
    }

    fn complete(&self, transcript: Vec<TranscriptSegment>) {
        if self.call.refused.load(Ordering::Acquire) {
            return;
        }
        let contacts = self.contacts.lock().map(|c| c.clone()).unwrap_or_default();
        let mut draft = self.core.prefiller.draft_for_call(
            self.call.ticket.clone(),
            self.call.citizen.key.clone(),
            contacts,
            transcript,
            Utc::now(),
        );
        draft.transferred_from = self.call.origin.clone();
        draft.restriction = self.call.restriction.get().cloned();
        tracing::info!(call = %self.call.id, kind = ?draft.kind, urgency = ?draft.urgency, segments = draft.transcript.len(), "Call transcript complete");
        let once = format!("sip/{}/draft", self.call.channel_ref);
        self.submit(vec![Event::from(draft)], once, "draft");
    }
}
