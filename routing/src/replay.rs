//! Trying a change to Art. 15 recognition before it is live: the centre's own recorded
//! contacts read by the recognition in use and by a candidate (an edited
//! `data/emergency.toml`), and what would change (issue 21).
//!
//! The gateway's `replay-recognition` command reads the contacts topic over a time range
//! and prints this module's [`Report`]. Texts are masked ([`crate::Recognizer::masked`]):
//! only the words the recognition lists stay readable, so an operator sees why a notice
//! would come or go without reading a citizen's message (Art. 21).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use contract::{ChannelKind, Contact, ContactContent, Speaker};
use uuid::Uuid;

use crate::Classifier;
use crate::recognize::{Medium, Reading};

/// The words of a contact that recognition reads, and how: a typed message or SMS as
/// typed, a citizen's utterance as speech. Calls' other steps, the agent's words and
/// survey replies carry none.
pub fn text_of(contact: &Contact) -> Option<(&str, Medium)> {
    match &contact.content {
        ContactContent::Text { text } => Some((text, Medium::Typed)),
        ContactContent::Transcript(seg) if seg.speaker == Speaker::Citizen => {
            Some((&seg.text, Medium::Speech))
        }
        _ => None,
    }
}

/// One contact the candidate reads differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The contact.
    pub contact_id: Uuid,
    /// Its channel.
    pub channel: ChannelKind,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
    /// The text with every word the recognition does not list masked.
    pub masked: String,
    /// Targets (and first kinds) the recognition in use gives.
    pub before: Vec<(String, String)>,
    /// Targets (and first kinds) the candidate gives.
    pub after: Vec<(String, String)>,
    /// The candidate's reasons, or what it set aside and why where it gives fewer
    /// targets.
    pub why: Vec<String>,
}

/// What a candidate recognition would change on recorded contacts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Contacts read.
    pub contacts: usize,
    /// Of them, those with words to read.
    pub texts: usize,
    /// Notices (one per contact and target) the recognition in use gives.
    pub notices_before: usize,
    /// Notices the candidate gives.
    pub notices_after: usize,
    /// Contacts with no notice before and one after.
    pub gained: usize,
    /// Contacts with a notice before and none after.
    pub lost: usize,
    /// Contacts with notices either way, to other targets.
    pub targets_changed: usize,
    /// Notices gained (+) and lost (-) by target.
    pub by_target: BTreeMap<String, (usize, usize)>,
    /// Every changed contact, in the order read.
    pub changes: Vec<Change>,
}

fn targets(r: &Reading) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = r
        .findings
        .iter()
        .map(|f| (f.target.clone(), f.kind.clone()))
        .collect();
    t.sort();
    t
}

/// Reads `contacts` with `current` and `candidate`.
pub fn replay<'a>(
    current: &Classifier,
    candidate: &Classifier,
    contacts: impl IntoIterator<Item = &'a Contact>,
) -> Report {
    let mut report = Report::default();
    for c in contacts {
        report.contacts += 1;
        let Some((text, medium)) = text_of(c) else {
            continue;
        };
        report.texts += 1;
        let (a, b) = (
            current.read_emergencies(text, medium),
            candidate.read_emergencies(text, medium),
        );
        let (before, after) = (targets(&a), targets(&b));
        report.notices_before += before.len();
        report.notices_after += after.len();
        let names =
            |v: &[(String, String)]| -> Vec<String> { v.iter().map(|t| t.0.clone()).collect() };
        let (nb, na) = (names(&before), names(&after));
        if nb == na {
            continue;
        }
        for t in na.iter().filter(|t| !nb.contains(t)) {
            report.by_target.entry(t.clone()).or_default().0 += 1;
        }
        for t in nb.iter().filter(|t| !na.contains(t)) {
            report.by_target.entry(t.clone()).or_default().1 += 1;
        }
        match (nb.is_empty(), na.is_empty()) {
            (true, false) => report.gained += 1,
            (false, true) => report.lost += 1,
            _ => report.targets_changed += 1,
        }
        let why = if na.len() >= nb.len() {
            b.findings.iter().flat_map(|f| f.reasons.clone()).collect()
        } else {
            b.set_aside
                .iter()
                .map(|s| format!("{} [{}]", s.reason, s.because))
                .collect()
        };
        report.changes.push(Change {
            contact_id: c.id,
            channel: c.channel,
            received_at: c.received_at,
            masked: candidate.recognizer().masked(text),
            before,
            after,
            why,
        });
    }
    report
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "contacts read: {} (with words: {})",
            self.contacts, self.texts
        )?;
        writeln!(
            f,
            "notices: {} now, {} with the candidate",
            self.notices_before, self.notices_after
        )?;
        writeln!(
            f,
            "contacts changed: {} gained a notice, {} lost every notice, {} to other targets",
            self.gained, self.lost, self.targets_changed
        )?;
        for (t, (plus, minus)) in &self.by_target {
            writeln!(f, "  {t}: +{plus} -{minus}")?;
        }
        for c in &self.changes {
            let show = |v: &[(String, String)]| -> String {
                if v.is_empty() {
                    "-".into()
                } else {
                    v.iter()
                        .map(|(t, k)| format!("{t}:{k}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            };
            writeln!(
                f,
                "{} {} {} {} -> {} | {} | {}",
                c.received_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                c.channel.as_str(),
                c.contact_id,
                show(&c.before),
                show(&c.after),
                c.masked,
                c.why.join("; ")
            )?;
        }
        Ok(())
    }
}
