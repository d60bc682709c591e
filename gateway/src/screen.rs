//! The gateway's [`contract::Screen`]: what a citizen's words make beside their contact.
//!
//! - an Art. 15 emergency (routing's recognition; a transcript's words also by sound): an
//!   urgent notice per linkage target, new or an update of the open one
//!   ([`crate::notices`]), with the place the words name;
//! - abusive words (routing's `data/abuse.toml`): an Art. 9 restriction *proposal* with
//!   the words as evidence and its audit event ([`crate::restrictions`]), never a block.
//!
//! The channel records the events with the contact and reports back once they are
//! durable; only then are they applied to this instance's books.

use std::sync::Arc;

use contract::{AuditEvent, Contact, ContactContent, Event, Screen};
use routing::notices::EmergencyReport;
use routing::{AbuseRules, Medium, Prefiller};

use crate::notices::NoticeService;
use crate::restrictions::Restrictions;

/// Screens citizens' words for emergencies and abuse.
pub struct Screener {
    /// Urgent notices.
    pub notices: Arc<NoticeService>,
    /// Restrictions.
    pub restrictions: Arc<Restrictions>,
    /// Emergency cues and places.
    pub prefiller: Arc<Prefiller>,
    /// Abusive words.
    pub abuse: AbuseRules,
}

impl std::fmt::Debug for Screener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Screener")
    }
}

impl Screen for Screener {
    fn screen(&self, contact: &Contact, text: &str) -> Vec<Event> {
        let mut out = Vec::new();
        // A transcript is read with sound-alike matching (whisper writes 找火 for 着火);
        // typed words are read as typed (Art. 15 recognition, issue 21).
        let medium = match contact.content {
            ContactContent::Transcript(_) => Medium::Speech,
            _ => Medium::Typed,
        };
        let cues = self.prefiller.classifier().emergency_cues(text, medium);
        let location = (!cues.is_empty())
            .then(|| self.prefiller.location_of_text(text))
            .flatten();
        // One notice per linkage target: a fire with an injured person is 119 and 120.
        for cue in &cues {
            let report = EmergencyReport {
                contact,
                cue,
                text,
                location: location.clone(),
            };
            if let Some(e) = self.notices.on_emergency(report) {
                out.push(e.into());
            }
        }
        if let Some(hit) = self.abuse.detect(text)
            && let Some(p) = self.restrictions.propose_for_abuse(contact, &hit, text)
        {
            out.push(AuditEvent::of_restriction(&p).into());
            out.push(p.into());
        }
        out
    }

    fn recorded(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::Notice(n) => self.notices.recorded(n),
                Event::Restriction(r) => self.restrictions.recorded(r),
                _ => {}
            }
        }
    }
}
