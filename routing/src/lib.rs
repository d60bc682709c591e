//! Routing decides what happens to a contact once it is recorded.
//!
//! Today it owns the first guesses a ticket draft carries: the request's kind (Art. 8)
//! and whether it may be an emergency for the 110/119/120 linkage (Art. 15), which kind
//! and for which linkage ([`emergency`]), from cue words kept in `data/cues.toml` and
//! matched by sound ([`sound`], `data/homophones.toml`); a call's ticket prefill from its
//! transcript ([`prefill`]); and the [`Blocklist`] voice channels ask before they bridge
//! a call (Art. 9). The restrictions agents record, repeat-contact linking (Art. 14) and
//! working-day deadlines (Art. 22) join this crate behind the same kind of small, pure,
//! tested functions.

pub mod abuse;
pub mod blocklist;
pub mod clock;
pub mod emergency;
pub mod notices;
pub mod prefill;
pub mod recognize;
pub mod replay;
pub mod restrictions;
pub mod sound;

pub use abuse::AbuseRules;
pub use blocklist::StaticBlocklist;
pub use clock::Clock;
pub use contract::{Blocklist, Restricted};
pub use emergency::{EmergencyHit, EmergencyRules};
pub use notices::{NoticeBook, NoticePolicy};
pub use prefill::Prefiller;
pub use recognize::{Finding, Medium, Reading, Recognizer};
pub use restrictions::{ExpiryTimer, RestrictionBook, RestrictionError, SharedBook};
pub use sound::Homophones;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contract::event::new_event_id;
use contract::{
    ChannelKind, EmergencyCue, SCHEMA_VERSION, TicketDraft, TicketKind, TicketRef, Urgency,
};
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
#[serde(deny_unknown_fields)]
struct CueFile {
    priority: Vec<TicketKind>,
    kinds: HashMap<TicketKind, Vec<String>>,
    emergency: Vec<emergency::RuleFile>,
}

/// Classifies citizen text: its kind by cue words (Art. 8), its emergencies by the
/// recogniser (Art. 15, [`recognize`]).
#[derive(Debug, Clone)]
pub struct Classifier {
    kinds: Vec<(TicketKind, Vec<String>)>,
    /// The Art. 15 cue words, matched by sound: they mend a transcript before it is
    /// read, and prime the speech recogniser.
    emergency: EmergencyRules,
    recognizer: Arc<Recognizer>,
}

/// The classifier's guess for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// The kind (Art. 8): the kind with the most cues; help (求助) when only an
    /// emergency was recognised; `Unknown` when nothing was.
    pub kind: TicketKind,
    /// How many cues of that kind matched (0 for help by an emergency alone).
    pub kind_hits: usize,
    /// `Emergency` when an Art. 15 emergency was recognised.
    pub urgency: Urgency,
    /// One cue per linkage target the words need, in the order said.
    pub emergencies: Vec<EmergencyCue>,
}

impl Classifier {
    /// Builds a classifier from a cue file's and a homophone file's texts, with the
    /// shipped recognition data.
    pub fn from_toml(cues: &str, homophones: &str) -> Result<Self, CueError> {
        Self::from_data(cues, homophones, recognize::DEFAULT_RECOGNITION, &[])
    }

    /// Builds a classifier from its data files' texts: cues.toml, homophones.toml and
    /// emergency.toml; `extra_words` (place names) join the segmenter's dictionary.
    pub fn from_data(
        cues: &str,
        homophones: &str,
        recognition: &str,
        extra_words: &[&str],
    ) -> Result<Self, CueError> {
        let file: CueFile = toml::from_str(cues)?;
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
        let recognizer = Recognizer::from_toml(recognition, extra_words)?;
        let emergency = EmergencyRules::new(file.emergency, Homophones::from_toml(homophones)?)?;
        Ok(Classifier {
            kinds,
            emergency,
            recognizer: Arc::new(recognizer),
        })
    }

    /// The classifier with the shipped data: the shared prefiller's
    /// ([`Prefiller::shared`]), so that the process loads the segmenter's dictionary (a
    /// noticeable pause, tens of MB) once.
    pub fn builtin() -> Self {
        Prefiller::shared().classifier().clone()
    }

    /// Guesses kind and urgency for text a citizen typed (chat, SMS).
    pub fn classify(&self, text: &str) -> Guess {
        self.classify_as(text, Medium::Typed)
    }

    /// Guesses kind and urgency for a citizen's words that came as `medium`.
    pub fn classify_as(&self, text: &str, medium: Medium) -> Guess {
        let mut best = (TicketKind::Unknown, 0usize);
        for (kind, cues) in &self.kinds {
            let hits = cues.iter().filter(|c| text.contains(c.as_str())).count();
            // Strictly greater: on a tie the kind earlier in priority keeps the lead.
            if hits > best.1 {
                best = (*kind, hits);
            }
        }
        let emergencies = self.emergency_cues(text, medium);
        Guess {
            kind: kind_with_emergency(best.0, !emergencies.is_empty()),
            kind_hits: best.1,
            urgency: if emergencies.is_empty() {
                Urgency::Normal
            } else {
                Urgency::Emergency
            },
            emergencies,
        }
    }

    /// What the recogniser reads in `text`: findings with their reasons, and what it set
    /// aside and why.
    pub fn read_emergencies(&self, text: &str, medium: Medium) -> Reading {
        self.recognizer.read(text, medium, Some(&self.emergency))
    }

    /// The Art. 15 emergencies in `text`: one cue per linkage target, with its reasons.
    pub fn emergency_cues(&self, text: &str, medium: Medium) -> Vec<EmergencyCue> {
        self.read_emergencies(text, medium)
            .findings
            .iter()
            .map(emergency_cue)
            .collect()
    }

    /// The Art. 15 cue words matched by sound (transcripts; the recogniser's prompt).
    pub fn emergency_rules(&self) -> &EmergencyRules {
        &self.emergency
    }

    /// The Art. 15 recogniser.
    pub fn recognizer(&self) -> &Recognizer {
        &self.recognizer
    }

    /// The first cue of each kind (for priming the speech recogniser).
    pub fn kind_words(&self) -> impl Iterator<Item = &str> {
        self.kinds
            .iter()
            .filter_map(|(_, cues)| cues.first().map(String::as_str))
    }
}

/// Art. 8: an emergency with no other request named is a request for help (求助).
pub(crate) fn kind_with_emergency(kind: TicketKind, emergency: bool) -> TicketKind {
    if kind == TicketKind::Unknown && emergency {
        TicketKind::Help
    } else {
        kind
    }
}

/// The draft's and the notice's record of one finding.
pub fn emergency_cue(f: &Finding) -> EmergencyCue {
    EmergencyCue {
        kind: f.kind.clone(),
        target: f.target.clone(),
        cue: f.cue.clone(),
        heard: f.heard.clone(),
        reasons: f.reasons.clone(),
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
            emergency: guess.emergencies.first().cloned(),
            emergencies: guess.emergencies,
            contacts,
            related_tickets: Vec::new(),
            transcript: Vec::new(),
            prefill: Vec::new(),
            restriction: None,
            transferred_from: None,
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
        Classifier::from_toml(DEFAULT_CUES, sound::DEFAULT_HOMOPHONES).expect("shipped cues parse");
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
    fn art15_only_is_a_request_for_help_with_its_kind_and_linkage() {
        let c = Classifier::builtin();
        let g = c.classify("我家楼下着火了，有人被困");
        assert_eq!(
            g.kind,
            TicketKind::Help,
            "Art. 8: an emergency alone is 求助"
        );
        let e = g.emergencies.first().cloned().expect("Art. 15 cue");
        assert_eq!((e.kind.as_str(), e.target.as_str()), ("fire", "119"));
        let g = c.classify("我要投诉，小区又停水了");
        assert_eq!(g.kind, TicketKind::Complaint, "a named request stays");
        assert_eq!(
            g.emergencies.first().map(|e| e.kind.clone()),
            Some("water_outage".into())
        );
        let d = c.draft(
            TicketRef("ZH1".into()),
            ChannelKind::Chat,
            "k".into(),
            vec![],
            "楼下有人打架，还拿着刀",
            Utc::now(),
        );
        assert_eq!(d.kind, TicketKind::Help);
        let e = d.emergency.expect("on the draft");
        assert_eq!(
            (e.kind.as_str(), e.target.as_str(), e.heard.as_str()),
            ("violence", "110", "打架")
        );
    }

    #[test]
    fn inconsistent_cue_files_are_refused() {
        let h = sound::DEFAULT_HOMOPHONES;
        let rule = "[[emergency]]\nkind=\"fire\"\ntarget=\"119\"\ncues=[\"着火\"]\n";
        let bad = format!("priority = [\"help\"]\n[kinds]\nhelp=[\"帮\"]\npraise=[\"赞\"]\n{rule}");
        assert!(matches!(
            Classifier::from_toml(&bad, h),
            Err(CueError::Inconsistent(_))
        ));
        let kinds = "priority = [\"help\"]\n[kinds]\nhelp=[\"帮\"]\n";
        assert!(Classifier::from_toml(&format!("{kinds}{rule}"), h).is_ok());
        for bad_rule in [
            "[[emergency]]\nkind=\"fire\"\ntarget=\"119\"\ncues=[\"火\"]\n",
            "[[emergency]]\nkind=\"fire\"\ntarget=\"\"\ncues=[\"着火\"]\n",
            &format!("{rule}{rule}"),
        ] {
            assert!(
                matches!(
                    Classifier::from_toml(&format!("{kinds}{bad_rule}"), h),
                    Err(CueError::Inconsistent(_))
                ),
                "{bad_rule}"
            );
        }
        // heard_as must name a cue of the rules (the shipped homophones name 着火).
        let other = "[[emergency]]\nkind=\"flood\"\ntarget=\"119\"\ncues=[\"洪水\"]\n";
        assert!(Classifier::from_toml(&format!("{kinds}{other}"), h).is_err());
    }

    #[test]
    fn summaries_fold_and_cut() {
        assert_eq!(summarize("  路灯\n坏了 ", 10), "路灯 坏了");
        assert_eq!(summarize("一二三四五六", 4), "一二三…");
    }
}
