//! Repeat contacts (Art. 14): when a citizen with tickets comes back, is it the same
//! matter, and if so a supplement, an urge, or a new ticket?
//!
//! Art. 14 says: within the ticket's deadline, new or changed content on the same request
//! makes a supplementary ticket (追加工单) whose time limit restarts; chasing the same
//! request (催办) only notes the urge count on the original, with no new dispatch; once
//! the ticket is closed or past its deadline, new content makes a new ticket.
//!
//! "The same request" is judged by a score over the citizen's recent tickets (same
//! citizen key only), documented in `docs/tickets.md` and tuned in `data/repeat.toml`:
//!
//! - text: character bigrams of the new words (fillers and chase cues removed) against
//!   the original's summary and request: the largest of the Jaccard index, the share of
//!   the new words' bigrams found in the original (a short urge restates part of the
//!   matter: containment finds it where Jaccard would not), and the longest run of
//!   characters both share over `same_span` (a supplement restates the place and the
//!   thing, "凤凰路路灯", and adds new words, which dilute both bigram measures);
//! - location: 1 for the same district and an overlapping place, 0.5 for the same
//!   district alone or when either side gave no place, 0 for different districts;
//! - kind: 1 when equal, 0.5 when either is unknown, 0 otherwise.
//!
//! A contact that carries a chase cue and whose remaining words are at most
//! `urge_max_new` new against the original is only chasing; one that is nothing but a
//! chase ("催一下，怎么还没处理") chases the citizen's newest open ticket.
//!
//! Hand-written: the measure is a few lines over bigram sets; no crate does this
//! judgement, and a text-similarity crate would add nothing to a bigram set.

use std::collections::HashSet;

use chrono::NaiveDate;
use contract::TicketKind;
use serde::Deserialize;

/// The shipped parameters.
pub const SHIPPED: &str = include_str!("../data/repeat.toml");

/// The tunable parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatParams {
    /// The score at or above which two requests are the same matter.
    pub same_matter: f32,
    /// Weight of the text similarity.
    pub weight_text: f32,
    /// Weight of the location match.
    pub weight_location: f32,
    /// Weight of the kind match.
    pub weight_kind: f32,
    /// The largest share of new words a chase may carry.
    pub urge_max_new: f32,
    /// A shared run of this many content characters makes the texts alike.
    pub same_span: usize,
    /// Words that mark a chase (催办).
    pub chase_cues: Vec<String>,
    /// Words ignored when measuring content.
    pub filler: Vec<String>,
}

impl RepeatParams {
    /// The shipped parameters.
    pub fn builtin() -> Self {
        Self::from_toml(SHIPPED).unwrap_or_else(|e| unreachable!("shipped repeat.toml: {e}"))
    }

    /// Parameters from TOML text, checked.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let p: RepeatParams = toml::from_str(text).map_err(|e| e.to_string())?;
        let sum = p.weight_text + p.weight_location + p.weight_kind;
        if (sum - 1.0).abs() > 0.01 {
            return Err(format!("the three weights sum to {sum}, not 1"));
        }
        for (name, v) in [
            ("same_matter", p.same_matter),
            ("urge_max_new", p.urge_max_new),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} = {v} is not within 0..1"));
            }
        }
        if !(2..=50).contains(&p.same_span) {
            return Err(format!("same_span = {} is not within 2..50", p.same_span));
        }
        if p.chase_cues.iter().any(|c| c.trim().is_empty()) {
            return Err("an empty chase cue".into());
        }
        Ok(p)
    }
}

/// What a new contact is about.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    /// The citizen's words (summary, request).
    pub text: &'a str,
    /// The kind the gateway guessed.
    pub kind: TicketKind,
    /// The place as said.
    pub place: Option<&'a str>,
    /// The district.
    pub district: Option<&'a str>,
}

/// One of the citizen's earlier tickets.
#[derive(Debug, Clone)]
pub struct Earlier {
    /// Its reference.
    pub ticket_ref: String,
    /// Its words (summary, request).
    pub text: String,
    /// Its kind.
    pub kind: TicketKind,
    /// Its place.
    pub place: Option<String>,
    /// Its district.
    pub district: Option<String>,
    /// Closed (any outcome).
    pub closed: bool,
    /// The last day of its handling deadline (or, before dispatch, of its dispatch
    /// deadline); `None` while it has none.
    pub due: Option<NaiveDate>,
    /// Newer tickets sort later: the order they were registered in.
    pub seq: i64,
}

impl Earlier {
    /// Open and not past its deadline on `today` (Art. 14's "within the deadline").
    pub fn within_deadline(&self, today: NaiveDate) -> bool {
        !self.closed && self.due.is_none_or(|d| today <= d)
    }
}

/// The decision, with its reason (every decision can be overruled through the API).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A new ticket: no earlier ticket on the same matter, or (with `related`) the one
    /// there is closed or past its deadline.
    New {
        /// The earlier ticket on the same matter, if any.
        related: Option<String>,
        /// Why.
        reason: String,
    },
    /// A supplementary ticket to `original`, deadline restarted.
    Supplement {
        /// The original ticket.
        original: String,
        /// Why.
        reason: String,
    },
    /// An urge on `original`: count up, no new ticket.
    Urge {
        /// The original ticket.
        original: String,
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// The decision's name in the database and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::New { .. } => "new",
            Decision::Supplement { .. } => "supplement",
            Decision::Urge { .. } => "urge",
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            Decision::New { reason, .. }
            | Decision::Supplement { reason, .. }
            | Decision::Urge { reason, .. } => reason,
        }
    }

    /// The earlier ticket it refers to.
    pub fn original(&self) -> Option<&str> {
        match self {
            Decision::New { related, .. } => related.as_deref(),
            Decision::Supplement { original, .. } | Decision::Urge { original, .. } => {
                Some(original)
            }
        }
    }
}

fn bigrams(chars: &[char]) -> HashSet<(char, char)> {
    chars.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The text's content characters: fillers and chase cues removed, punctuation and
/// spaces dropped.
fn content(params: &RepeatParams, text: &str) -> (Vec<char>, bool) {
    let mut t = text.to_owned();
    let mut chased = false;
    // Longest cues first, so a long cue is removed whole before a short one inside it.
    let mut cues: Vec<&String> = params.chase_cues.iter().collect();
    cues.sort_by_key(|c| std::cmp::Reverse(c.chars().count()));
    for c in cues {
        if t.contains(c.as_str()) {
            chased = true;
            t = t.replace(c.as_str(), " ");
        }
    }
    let mut fillers: Vec<&String> = params.filler.iter().collect();
    fillers.sort_by_key(|c| std::cmp::Reverse(c.chars().count()));
    for f in fillers {
        t = t.replace(f.as_str(), " ");
    }
    let chars = t.chars().filter(|c| c.is_alphanumeric()).collect();
    (chars, chased)
}

/// The longest run of characters `a` and `b` share (the first 300 of each: a summary's
/// opening says what the matter is, and the table stays small).
fn longest_shared_run(a: &[char], b: &[char]) -> usize {
    let (a, b) = (&a[..a.len().min(300)], &b[..b.len().min(300)]);
    let mut prev = vec![0usize; b.len() + 1];
    let mut best = 0;
    for x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            if x == y {
                cur[j + 1] = prev[j] + 1;
                best = best.max(cur[j + 1]);
            }
        }
        prev = cur;
    }
    best
}

fn location_score(new: &Incoming<'_>, old: &Earlier) -> f32 {
    let place_overlap = match (new.place, old.place.as_deref()) {
        (Some(a), Some(b)) => {
            let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            !bigrams(&a).is_disjoint(&bigrams(&b))
        }
        _ => false,
    };
    match (new.district, old.district.as_deref()) {
        (Some(a), Some(b)) if a != b => 0.0,
        (Some(_), Some(_)) if place_overlap => 1.0,
        _ if place_overlap => 1.0,
        (Some(_), Some(_)) => 0.5,
        _ if new.place.is_none() || old.place.is_none() => 0.5,
        _ => 0.0,
    }
}

fn kind_score(a: TicketKind, b: TicketKind) -> f32 {
    if a == b {
        1.0
    } else if a == TicketKind::Unknown || b == TicketKind::Unknown {
        0.5
    } else {
        0.0
    }
}

/// The similarity of a new contact to an earlier ticket, and the share of its content
/// that is new against it.
pub fn score(params: &RepeatParams, new: &Incoming<'_>, old: &Earlier) -> (f32, f32) {
    let (mine, _) = content(params, new.text);
    let (theirs, _) = content(params, &old.text);
    let (a, b) = (bigrams(&mine), bigrams(&theirs));
    let shared = a.intersection(&b).count() as f32;
    let (text, new_share) = if a.is_empty() {
        (0.0, 0.0)
    } else {
        let union = a.union(&b).count() as f32;
        let containment = shared / a.len() as f32;
        let run = (longest_shared_run(&mine, &theirs) as f32 / params.same_span as f32).min(1.0);
        (
            (shared / union).max(containment).max(run),
            1.0 - containment,
        )
    };
    let s = params.weight_text * text
        + params.weight_location * location_score(new, old)
        + params.weight_kind * kind_score(new.kind, old.kind);
    (s, new_share)
}

/// Art. 14: what a contact from a citizen with `earlier` tickets becomes on `today`
/// (Beijing date).
pub fn classify(
    params: &RepeatParams,
    new: &Incoming<'_>,
    earlier: &[Earlier],
    today: NaiveDate,
) -> Decision {
    let (mine, chased) = content(params, new.text);
    // Nothing but a chase: it chases the newest ticket still open.
    if chased
        && mine.len() <= 2
        && let Some(open) = earlier.iter().filter(|e| !e.closed).max_by_key(|e| e.seq)
    {
        return Decision::Urge {
            original: open.ticket_ref.clone(),
            reason:
                "Art. 14: only chasing (a chase cue and no other content); the newest open ticket"
                    .into(),
        };
    }
    let best = earlier
        .iter()
        .map(|e| {
            let (s, new_share) = score(params, new, e);
            (e, s, new_share)
        })
        .filter(|(_, s, _)| *s >= params.same_matter)
        .max_by(|x, y| x.1.total_cmp(&y.1).then(x.0.seq.cmp(&y.0.seq)));
    let Some((old, s, new_share)) = best else {
        return Decision::New {
            related: None,
            reason: format!(
                "Art. 14: no earlier ticket of this citizen on the same matter (threshold {:.2})",
                params.same_matter
            ),
        };
    };
    let original = old.ticket_ref.clone();
    if chased && !old.closed && new_share <= params.urge_max_new {
        return Decision::Urge {
            original,
            reason: format!(
                "Art. 14: same matter (score {s:.2}), only chasing ({:.0}% new content)",
                new_share * 100.0
            ),
        };
    }
    if old.within_deadline(today) {
        return Decision::Supplement {
            original,
            reason: format!(
                "Art. 14: same matter (score {s:.2}) within its deadline, with new content ({:.0}% new)",
                new_share * 100.0
            ),
        };
    }
    let why = if old.closed {
        "closed"
    } else {
        "past its deadline"
    };
    Decision::New {
        related: Some(original),
        reason: format!("Art. 14: same matter (score {s:.2}) but the earlier ticket is {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn streetlight(closed: bool, due: &str) -> Earlier {
        Earlier {
            ticket_ref: "ZH1".into(),
            text: "香洲区凤凰路的路灯坏了一个星期，晚上很黑".into(),
            kind: TicketKind::Complaint,
            place: Some("凤凰路".into()),
            district: Some("香洲区".into()),
            closed,
            due: Some(d(due)),
            seq: 1,
        }
    }

    fn incoming(text: &str) -> Incoming<'_> {
        Incoming {
            text,
            kind: TicketKind::Complaint,
            place: Some("凤凰路"),
            district: Some("香洲区"),
        }
    }

    #[test]
    fn art14_new_content_within_the_deadline_is_a_supplement() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &incoming("凤凰路的路灯还是坏的，现在旁边的电线也掉下来了，很危险"),
            &[streetlight(false, "2026-12-10")],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::Supplement { ref original, .. } if original == "ZH1"),
            "{got:?}"
        );
    }

    #[test]
    fn art14_a_supplement_is_found_without_a_place_or_a_kind() {
        // An SMS draft carries neither: the shared "凤凰路路灯" is the matter.
        let p = RepeatParams::builtin();
        let mut old = streetlight(false, "2026-12-10");
        old.place = None;
        old.district = None;
        let got = classify(
            &p,
            &Incoming {
                text: "凤凰路的路灯还是坏的，现在旁边的电线也掉下来了，很危险",
                kind: TicketKind::Unknown,
                place: None,
                district: None,
            },
            &[old],
            d("2026-12-01"),
        );
        assert!(matches!(got, Decision::Supplement { .. }), "{got:?}");
    }

    #[test]
    fn art14_only_chasing_is_an_urge_on_the_original() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &incoming("凤凰路路灯坏了的事怎么还没处理，催一下"),
            &[streetlight(false, "2026-12-10")],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::Urge { ref original, .. } if original == "ZH1"),
            "{got:?}"
        );
    }

    #[test]
    fn art14_a_bare_chase_urges_the_newest_open_ticket() {
        let p = RepeatParams::builtin();
        let mut newer = streetlight(false, "2026-12-10");
        newer.ticket_ref = "ZH2".into();
        newer.seq = 2;
        let got = classify(
            &p,
            &Incoming {
                text: "你好，催一下，怎么还没处理",
                kind: TicketKind::Unknown,
                place: None,
                district: None,
            },
            &[streetlight(false, "2026-12-10"), newer, {
                let mut c = streetlight(true, "2026-12-10");
                c.ticket_ref = "ZH3".into();
                c.seq = 3;
                c
            }],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::Urge { ref original, .. } if original == "ZH2"),
            "{got:?}"
        );
    }

    #[test]
    fn art14_chasing_past_the_deadline_still_urges_the_open_original() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &incoming("凤凰路路灯坏了怎么还没处理"),
            &[streetlight(false, "2026-11-20")],
            d("2026-12-01"),
        );
        assert!(matches!(got, Decision::Urge { .. }), "{got:?}");
    }

    #[test]
    fn art14_new_content_after_closure_is_a_new_ticket_related_to_the_old() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &incoming("凤凰路的路灯又坏了，旁边电线也掉下来了"),
            &[streetlight(true, "2026-12-10")],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::New { related: Some(ref r), .. } if r == "ZH1"),
            "{got:?}"
        );
    }

    #[test]
    fn art14_new_content_past_the_deadline_is_a_new_ticket() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &incoming("凤凰路的路灯还是坏的，现在旁边的电线也掉下来了"),
            &[streetlight(false, "2026-11-20")],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::New { related: Some(_), ref reason } if reason.contains("past its deadline")),
            "{got:?}"
        );
    }

    #[test]
    fn art14_another_matter_is_a_new_ticket() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &Incoming {
                text: "斗门区井岸镇的菜市场卫生很差，想投诉",
                kind: TicketKind::Complaint,
                place: Some("井岸镇"),
                district: Some("斗门区"),
            },
            &[streetlight(false, "2026-12-10")],
            d("2026-12-01"),
        );
        assert!(
            matches!(got, Decision::New { related: None, .. }),
            "{got:?}"
        );
    }

    #[test]
    fn art14_a_bare_chase_with_nothing_open_is_a_new_ticket() {
        let p = RepeatParams::builtin();
        let got = classify(
            &p,
            &Incoming {
                text: "催一下",
                kind: TicketKind::Unknown,
                place: None,
                district: None,
            },
            &[streetlight(true, "2026-12-10")],
            d("2026-12-01"),
        );
        assert!(matches!(got, Decision::New { .. }), "{got:?}");
    }

    #[test]
    fn the_parameters_are_checked() {
        let mut text = SHIPPED.replace("weight_kind = 0.15", "weight_kind = 0.5");
        assert!(
            RepeatParams::from_toml(&text).is_err(),
            "weights not summing to 1"
        );
        text = SHIPPED.replace("same_matter = 0.45", "same_matter = 1.5");
        assert!(RepeatParams::from_toml(&text).is_err());
    }
}
