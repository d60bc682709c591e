//! Routing decides what happens to a contact once it is recorded.
//!
//! Today it owns the first guesses a ticket draft carries: the request's kind (Art. 8)
//! and whether it may be an emergency for the 110/119/120 linkage (Art. 15), both from
//! cue words kept in `data/cues.toml`; and the [`Blocklist`] voice channels ask before
//! they bridge a call (Art. 9). The restrictions agents record, repeat-contact linking
//! (Art. 14) and working-day deadlines (Art. 22) join this crate behind the same kind of
//! small, pure, tested functions.

pub mod blocklist;
pub mod prefill;

pub use blocklist::{Blocklist, Restriction, StaticBlocklist};
pub use prefill::Prefiller;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use contract::event::new_event_id;
use contract::{ChannelKind, SCHEMA_VERSION, TicketDraft, TicketKind, TicketRef, Urgency};
use serde::Deserialize;
use uuid::Uuid;

/// The cue file shipped with the gateway.
pub const DEFAULT_CUES: &str = include_str!("../data/cues.toml");

/// A cue file that does not parse or names an unknown kind.
#[derive(Debug, thiserror::Error)]
pub enum CueError {
    /// The TOML is malformed.
    #[error("cue file does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// A kind in `priority` has no cue list, or the other way round.
    #[error("cue file is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Debug, Deserialize)]
struct CueFile {
    priority: Vec<TicketKind>,
    kinds: HashMap<TicketKind, Vec<String>>,
    emergency: EmergencyCues,
}

#[derive(Debug, Deserialize)]
struct EmergencyCues {
    cues: Vec<String>,
}

/// Classifies citizen text by cue words.
#[derive(Debug, Clone)]
pub struct Classifier {
    kinds: Vec<(TicketKind, Vec<String>)>,
    emergency: Vec<String>,
}

/// The classifier's guess for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// The kind (Art. 8), `Unknown` when no cue matched.
    pub kind: TicketKind,
    /// How many cues of that kind matched.
    pub kind_hits: usize,
    /// `Emergency` when an Art. 15 cue matched.
    pub urgency: Urgency,
}

impl Classifier {
    /// Builds a classifier from a cue file's text.
    pub fn from_toml(text: &str) -> Result<Self, CueError> {
        let file: CueFile = toml::from_str(text)?;
        let mut kinds = Vec::with_capacity(file.priority.len());
        for kind in &file.priority {
            let cues = file.kinds.get(kind).ok_or_else(|| {
                CueError::Inconsistent(format!("{kind:?} is in priority but has no cue list"))
            })?;
            kinds.push((*kind, cues.clone()));
        }
        if let Some(extra) = file.kinds.keys().find(|k| !file.priority.contains(k)) {
            return Err(CueError::Inconsistent(format!(
                "{extra:?} has cues but is missing from priority"
            )));
        }
        Ok(Classifier {
            kinds,
            emergency: file.emergency.cues,
        })
    }

    /// The classifier with the shipped cues.
    pub fn builtin() -> Self {
        // The shipped file is checked by a unit test; it cannot fail at run time.
        Self::from_toml(DEFAULT_CUES).unwrap_or_else(|e| unreachable!("shipped cues: {e}"))
    }

    /// Guesses kind and urgency for a citizen's text.
    pub fn classify(&self, text: &str) -> Guess {
        let mut best = (TicketKind::Unknown, 0usize);
        for (kind, cues) in &self.kinds {
            let hits = cues.iter().filter(|c| text.contains(c.as_str())).count();
            // Strictly greater: on a tie the kind earlier in priority keeps the lead.
            if hits > best.1 {
                best = (*kind, hits);
            }
        }
        let urgency = if self.emergency.iter().any(|c| text.contains(c.as_str())) {
            Urgency::Emergency
        } else {
            Urgency::Normal
        };
        Guess {
            kind: best.0,
            kind_hits: best.1,
            urgency,
        }
    }
}

/// Longest summary a draft carries, in characters.
pub const SUMMARY_CHARS: usize = 60;

impl Classifier {
    /// Proposes a ticket draft for the citizen's text: kind and urgency from the cues,
    /// the summary from the text's start.
    pub fn draft(
        &self,
        ticket_ref: TicketRef,
        channel: ChannelKind,
        citizen_key: String,
        contacts: Vec<Uuid>,
        text: &str,
        now: DateTime<Utc>,
    ) -> TicketDraft {
        let guess = self.classify(text);
        TicketDraft {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            ticket_ref,
            created_at: now,
            channel,
            citizen_key,
            kind: guess.kind,
            summary: summarize(text, SUMMARY_CHARS),
            location: None,
            urgency: guess.urgency,
            contacts,
            related_tickets: Vec::new(),
            transcript: Vec::new(),
            prefill: Vec::new(),
        }
    }
}

/// A one-line summary of citizen text for a ticket title: white space folded, at most
/// `max_chars` characters, an ellipsis where it was cut.
pub fn summarize(text: &str, max_chars: usize) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.chars().count() <= max_chars {
        return folded;
    }
    let mut cut: String = folded.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_cues_parse() {
        Classifier::from_toml(DEFAULT_CUES).expect("shipped cues parse");
    }

    #[test]
    fn art8_kinds_from_cues() {
        let c = Classifier::builtin();
        assert_eq!(
            c.classify("我要投诉小区物业乱收费").kind,
            TicketKind::Complaint
        );
        assert_eq!(
            c.classify("请问护照在哪里办，需要什么材料").kind,
            TicketKind::Consultation
        );
        assert_eq!(
            c.classify("我要举报工地违规偷排污水").kind,
            TicketKind::Report
        );
        assert_eq!(c.classify("表扬一下社区工作人员").kind, TicketKind::Praise);
        assert_eq!(c.classify("今天天气不错").kind, TicketKind::Unknown);
    }

    #[test]
    fn art15_emergency_cues_mark_urgency() {
        let c = Classifier::builtin();
        assert_eq!(c.classify("我家楼下着火了").urgency, Urgency::Emergency);
        assert_eq!(c.classify("香洲区整片停电了").urgency, Urgency::Emergency);
        assert_eq!(c.classify("路灯坏了").urgency, Urgency::Normal);
    }

    #[test]
    fn inconsistent_cue_files_are_refused() {
        let bad = "priority = [\"help\"]\n[kinds]\nhelp=[\"帮\"]\npraise=[\"赞\"]\n[emergency]\ncues=[]\n";
        assert!(matches!(
            Classifier::from_toml(bad),
            Err(CueError::Inconsistent(_))
        ));
    }

    #[test]
    fn summaries_fold_and_cut() {
        assert_eq!(summarize("  路灯\n坏了 ", 10), "路灯 坏了");
        assert_eq!(summarize("一二三四五六", 4), "一二三…");
    }
}
