//! Art. 15 recognition: which emergencies a citizen's words describe, for which linkage,
//! and why (issue 21).
//!
//! A list of fixed phrases misses how people describe danger (拿着刀说要杀了我 holds no
//! 拿刀) and hears danger where there is none (火锅, 增值税 heard as 的增). So an emergency
//! is recognised from its parts, with the data in `data/emergency.toml`:
//!
//! 1. **Rewrites** turn emoji, Cantonese written forms, pinyin and the commonest typos
//!    into the Mandarin word they stand for, keeping each character's place in the
//!    citizen's own text.
//! 2. **Words** count only where jieba cuts them as whole words, or as a whole word
//!    beside another of two characters or more inside one of its dictionary's compounds
//!    (爆炸 in 发生爆炸): 火 in 火锅 or 火车 is no fire, 血 in 血压 no blood. A listed word
//!    may span several of jieba's words, and `*` in it stands for a few characters.
//! 3. **Rules** name the parts of an emergency (a weapon and someone wielding it, a harm
//!    and its victim, a person and the water they fell into), found in any order within
//!    a window of characters of one sentence, with anything between.
//! 4. **Modifiers** take a found danger back: a negation just before a part, a what-if
//!    or advice earlier in the sentence, talk of the past or of what came after, an
//!    all-clear after it, a joke. Words of urgency or of the present keep it.
//!
//! Typed text (chat, SMS) is read as typed. A call's transcript is first mended by
//! sound: where whisper wrote a word that sounds like an emergency cue of
//! `data/cues.toml` (找火 for 着火), the cue takes its place, and the reason says so.
//!
//! Each finding is one linkage target with every rule that named it: a kitchen fire
//! with a burned grandmother is a notice to 119 and one to 120, each with its own
//! reasons. What was found and set aside is kept too ([`Reading::set_aside`]), for the
//! replay tool and for an operator asking why no notice came.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;

use crate::CueError;
use crate::emergency::EmergencyRules;
use crate::sound::Sounds;

/// The shipped recognition data.
pub const DEFAULT_RECOGNITION: &str = include_str!("../data/emergency.toml");

/// How the words reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    /// Typed by the citizen (chat, SMS): read as written.
    Typed,
    /// A machine transcript of speech: words that sound like an emergency cue count as
    /// the cue.
    Speech,
}

/// One linkage target an emergency needs, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The kind of emergency of the first rule that named this target (`fire`,
    /// `injury`...).
    pub kind: String,
    /// Every kind named for this target, in the order found.
    pub kinds: Vec<String>,
    /// The linkage: `110`, `119`, `120` or a responsible unit.
    pub target: String,
    /// The danger's own word in the first rule (its first part), as the rules spell it:
    /// 着火 for a transcript's 找火, 救命 for a typed jm.
    pub cue: String,
    /// The citizen's words of the first rule's parts, from the first part to the last,
    /// as written (a transcript's own characters).
    pub heard: String,
    /// Where those words start in the text, in characters.
    pub at: usize,
    /// Their length, in characters.
    pub len: usize,
    /// Each rule that named the target: `kind: rule (word + word)`, and any mending by
    /// sound (`heard 找火 as 着火`).
    pub reasons: Vec<String>,
    /// Whether a word of a transcript was mended by sound before the rules read it.
    pub mended: bool,
}

/// A danger found and then set aside, with why (for the replay tool and operators).
#[derive(Debug, Clone, PartialEq)]
pub struct SetAside {
    /// The kind the rule names.
    pub kind: String,
    /// `kind: rule (words)`.
    pub reason: String,
    /// What took it back: `negation 没有`, `past 上次`...
    pub because: String,
}

/// What a text says, as far as Art. 15 goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// One finding per linkage target, in the order their first words appear.
    pub findings: Vec<Finding>,
    /// Dangers found and taken back.
    pub set_aside: Vec<SetAside>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    kinds: HashMap<String, String>,
    gives_way: HashMap<String, Vec<String>>,
    rewrite: HashMap<String, String>,
    words: HashMap<String, Vec<String>>,
    modifiers: HashMap<String, Vec<String>>,
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    kind: String,
    name: String,
    parts: Vec<String>,
    #[serde(default)]
    window: Option<usize>,
    #[serde(default)]
    unless: Vec<String>,
    #[serde(default)]
    unless_before: Vec<String>,
    #[serde(default)]
    unless_text: Vec<String>,
    #[serde(default)]
    unless_sentence: Vec<String>,
    #[serde(default)]
    across_sentences: bool,
    #[serde(default)]
    ordered: bool,
    #[serde(default)]
    gives_way: Vec<String>,
}

/// The modifiers the code gives a meaning to; each must have a list in the file.
const MODIFIERS: [&str; 12] = [
    "negation",
    "turn",
    "fiction",
    "simile",
    "hypothetical",
    "generic",
    "past",
    "aftermath",
    "resolved",
    "joke",
    "present",
    "urgent",
];

/// Default window of a rule, in characters.
const WINDOW: usize = 24;
/// Characters that may stand between a negation and the part it negates (没有任何人受伤),
/// and the only ones that may: 没关漏了 does not deny the leak.
const NEGATION_GAP: usize = 3;
const NEGATION_FILLER: &str = "人任何什么有一个都也被着在会发生再是闻到看见听发现";
/// The longest quotation whose danger words are taken as a figure of speech.
const QUOTE_CHARS: usize = 8;

/// The quoted text around `start..end`, if the words lie inside a short quotation.
fn quoted(t: &Text, start: usize, end: usize) -> Option<String> {
    let open = |c: char| matches!(c, '“' | '"' | '「' | '『' | '\'' | '‘');
    let close = |c: char| matches!(c, '”' | '"' | '」' | '』' | '\'' | '’');
    let before = (start.saturating_sub(QUOTE_CHARS)..start)
        .rev()
        .find(|i| open(t.chars[*i]) || is_clause_end(t.chars[*i]))?;
    if !open(t.chars[before]) {
        return None;
    }
    let after = (end..(end + QUOTE_CHARS).min(t.chars.len()))
        .find(|i| close(t.chars[*i]) || is_clause_end(t.chars[*i]))?;
    if !close(t.chars[after]) || after - before > QUOTE_CHARS + 1 {
        return None;
    }
    Some(t.chars[before..=after].iter().collect())
}
/// Characters around a rule's words searched for its `unless` words.
const UNLESS_MARGIN: usize = 4;

#[derive(Debug, Clone)]
struct Rule {
    kind: String,
    target: String,
    name: String,
    /// Each part: the word lists any of which may fill it.
    parts: Vec<Vec<u16>>,
    window: usize,
    unless: Vec<u16>,
    unless_before: Vec<u16>,
    /// No match when a word of these lists is anywhere in the text.
    unless_text: Vec<u16>,
    /// No match when a word of these lists is in the sentence, not past a turn.
    unless_sentence: Vec<u16>,
    across_sentences: bool,
    /// The parts must come in their listed order (打我, not 我们砸).
    ordered: bool,
    /// Kinds this rule's match gives way to, beside its kind's own (`[gives_way]`).
    gives_way: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Mods {
    negation: u16,
    turn: u16,
    fiction: u16,
    simile: u16,
    hypothetical: u16,
    generic: u16,
    past: u16,
    aftermath: u16,
    resolved: u16,
    joke: u16,
    present: u16,
    urgent: u16,
}

/// Words by their first character, each with what it maps to (a rewrite's replacement,
/// a word's lists), longest first where it matters.
type ByFirst<T> = HashMap<char, Vec<(Vec<char>, T)>>;

/// The Art. 15 recogniser.
#[derive(Clone)]
pub struct Recognizer {
    rules: Vec<Rule>,
    /// Kinds that give way to others (`*`: to any other kind).
    gives_way: HashMap<String, Vec<String>>,
    /// Rewrites by first character, longest first.
    rewrites: ByFirst<Vec<char>>,
    /// Words by first character: the word and the lists it is in.
    words: ByFirst<Vec<u16>>,
    list_names: Vec<String>,
    /// The `segmenter` words: whole words, never split (救命恩人, 跳楼价).
    benign: HashSet<String>,
    mods: Mods,
    jieba: Arc<jieba_rs::Jieba>,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("rules", &self.rules.len())
            .field("lists", &self.list_names.len())
            .finish()
    }
}

/// A listed word found in the text (normalised characters).
#[derive(Debug, Clone, Copy)]
struct Occ {
    list: u16,
    start: usize,
    end: usize,
}

/// The listed words found in a text, by list.
struct Found {
    by_list: Vec<Vec<Occ>>,
}

impl Found {
    fn new(occ: Vec<Occ>, lists: usize) -> Found {
        let mut by_list = vec![Vec::new(); lists];
        for o in occ {
            by_list[o.list as usize].push(o);
        }
        Found { by_list }
    }

    fn of(&self, list: u16) -> &[Occ] {
        &self.by_list[list as usize]
    }

    fn any_of(&self, lists: &[u16]) -> impl Iterator<Item = &Occ> {
        lists.iter().flat_map(|l| self.of(*l))
    }
}

/// A rule's match before modifiers.
#[derive(Debug, Clone)]
struct Hit {
    rule: usize,
    /// The words filling the parts, in text order.
    parts: Vec<Occ>,
    /// Which of `parts` fills the rule's first part (the danger's own word).
    head: usize,
    start: usize,
    end: usize,
}

/// The text as read: normalised characters, where each came from, word bounds,
/// sentence and clause numbers.
struct Text {
    chars: Vec<char>,
    origin: Vec<usize>,
    bound: Vec<bool>,
    sentence: Vec<usize>,
    clause: Vec<usize>,
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '!' | '?' | '；' | ';' | '\n')
}

fn is_clause_end(c: char) -> bool {
    is_sentence_end(c) || matches!(c, '，' | ',' | ' ' | '：' | ':' | '~' | '～' | '\t')
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// Some people type a space after every character or word (电 梯 里 出 不 去): where most
/// gaps between two Chinese characters are spaces, those spaces are dropped, or no word
/// of more than one character would ever be found. Elsewhere a space separates clauses.
fn unspaced(chars: &[char], origin: &[usize]) -> (Vec<char>, Vec<usize>) {
    let han_pairs = chars
        .windows(2)
        .filter(|w| is_han(w[0]) && is_han(w[1]))
        .count();
    let spaced = chars
        .windows(3)
        .filter(|w| is_han(w[0]) && w[1] == ' ' && is_han(w[2]))
        .count();
    if spaced < 4 || spaced * 2 < han_pairs {
        return (chars.to_vec(), origin.to_vec());
    }
    let keep: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            !(chars[i] == ' '
                && i > 0
                && i + 1 < chars.len()
                && is_han(chars[i - 1])
                && is_han(chars[i + 1]))
        })
        .collect();
    (
        keep.iter().map(|&i| chars[i]).collect(),
        keep.iter().map(|&i| origin[i]).collect(),
    )
}

/// Full-width ASCII to half-width, Latin letters to lower case.
fn fold(c: char) -> char {
    let c = match c {
        '\u{FF01}'..='\u{FF5E}' if !matches!(c, '，' | '！' | '？' | '；' | '：') => {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        }
        '\u{3000}' => ' ',
        _ => c,
    };
    c.to_ascii_lowercase()
}

impl Recognizer {
    /// Builds a recogniser from `data/emergency.toml`'s text; `extra_words` (place names)
    /// join jieba's dictionary too, so that one segmentation serves both.
    pub fn from_toml(text: &str, extra_words: &[&str]) -> Result<Recognizer, CueError> {
        let file: File = toml::from_str(text)?;
        let mut lists = Lists::of(&file)?;
        // The place names given (districts, towns, landmarks) join the `place` list: a
        // place named with an outage makes it an area's (三灶镇又停水了).
        if !extra_words.is_empty() {
            let i = lists.id(PLACE_LIST)? as usize;
            lists.words[i].extend(extra_words.iter().map(|w| (*w).to_owned()));
        }
        let mods = Mods::of(&file, &lists)?;
        let rules = rules_of(&file, &lists)?;
        for (k, to) in &file.gives_way {
            if let Some(bad_kind) = std::iter::once(k)
                .chain(to.iter().filter(|t| *t != "*"))
                .find(|k| !file.kinds.contains_key(*k))
            {
                return Err(inconsistent(format!("gives_way: {bad_kind} is no kind")));
            }
        }
        let (words, jieba) = lists.index(extra_words)?;
        let benign = lists.words[lists.id(SEGMENTER_LIST)? as usize]
            .iter()
            .cloned()
            .collect();
        Ok(Recognizer {
            benign,
            rules,
            gives_way: file.gives_way,
            rewrites: rewrites_of(&file.rewrite)?,
            words,
            list_names: lists.names,
            mods,
            jieba: Arc::new(jieba),
        })
    }

    /// The shipped data, with no extra words.
    pub fn builtin() -> Recognizer {
        // The shipped file is checked by a unit test; it cannot fail at run time.
        Self::from_toml(DEFAULT_RECOGNITION, &[])
            .unwrap_or_else(|e| unreachable!("shipped recognition data: {e}"))
    }

    /// The segmenter, with the recogniser's words (and the extra ones) in its dictionary.
    pub fn jieba(&self) -> &Arc<jieba_rs::Jieba> {
        &self.jieba
    }

    /// The kinds of emergency and their targets, in the rules' order.
    pub fn kinds(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for r in &self.rules {
            if !out.iter().any(|(k, _)| *k == r.kind) {
                out.push((&r.kind, &r.target));
            }
        }
        out
    }

    /// Reads `text`. For [`Medium::Speech`], `sound` mends words that sound like an
    /// emergency cue first.
    pub fn read(&self, text: &str, medium: Medium, sound: Option<&EmergencyRules>) -> Reading {
        let mut mended = Vec::new();
        let source: Vec<char> = text.chars().collect();
        // Characters and where each came from in `text`.
        let (chars, origin) = match (medium, sound) {
            (Medium::Speech, Some(rules)) => {
                let sounds = Sounds::new(text, None);
                let mut chars = Vec::with_capacity(source.len());
                let mut origin = Vec::with_capacity(source.len());
                let mut i = 0;
                let hits = rules.hits_in(&sounds);
                let mut next = hits.iter().peekable();
                while i < source.len() {
                    if let Some(h) = next.next_if(|h| h.at == i) {
                        let heard: String = source[h.at..h.at + h.len].iter().collect();
                        if heard != h.cue {
                            mended.push(format!("heard {heard} as {} (sound)", h.cue));
                        }
                        let cue: Vec<char> = h.cue.chars().collect();
                        let last = h.len.saturating_sub(1);
                        for (k, c) in cue.iter().enumerate() {
                            chars.push(*c);
                            origin.push(
                                h.at + if k + 1 == cue.len() {
                                    last
                                } else {
                                    k.min(last)
                                },
                            );
                        }
                        i = h.at + h.len;
                        continue;
                    }
                    // A hit that starts inside an earlier one is skipped.
                    while next.next_if(|h| h.at < i).is_some() {}
                    chars.push(source[i]);
                    origin.push(i);
                    i += 1;
                }
                (chars, origin)
            }
            _ => (source.clone(), (0..source.len()).collect()),
        };
        let t = self.prepare(&chars, &origin);
        let found = Found::new(self.occurrences(&t), self.list_names.len());
        let hits = self.hits(&t, &found);
        self.judge(&t, &source, &found, hits, &mended)
    }

    /// Rewrites, word bounds, sentences and clauses.
    fn prepare(&self, chars: &[char], origin: &[usize]) -> Text {
        let (chars, origin) = unspaced(chars, origin);
        let (chars, origin) = self.rewritten(&chars, &origin);
        let bound = self.bounds(&chars);
        let (mut sentence, mut clause) = (Vec::with_capacity(chars.len()), Vec::new());
        let (mut si, mut ci) = (0, 0);
        for c in &chars {
            sentence.push(si);
            clause.push(ci);
            if is_sentence_end(*c) {
                si += 1;
            }
            if is_clause_end(*c) {
                ci += 1;
            }
        }
        Text {
            chars,
            origin,
            bound,
            sentence,
            clause,
        }
    }

    /// The text folded and rewritten, with where each character came from.
    fn rewritten(&self, chars: &[char], origin: &[usize]) -> (Vec<char>, Vec<usize>) {
        let folded: Vec<char> = chars.iter().map(|c| fold(*c)).collect();
        let mut out = Vec::with_capacity(folded.len());
        let mut from = Vec::with_capacity(folded.len());
        let mut i = 0;
        while i < folded.len() {
            let found = self.rewrites.get(&folded[i]).and_then(|cands| {
                cands
                    .iter()
                    .find(|(f, _)| folded.len() - i >= f.len() && folded[i..i + f.len()] == f[..])
            });
            let Some((f, to)) = found else {
                out.push(folded[i]);
                from.push(origin[i]);
                i += 1;
                continue;
            };
            // The rewrite's last character stands for the original's last, so that the
            // words quoted span all of what was written (zhao huo).
            for (k, c) in to.iter().enumerate() {
                out.push(*c);
                let at = if k + 1 == to.len() {
                    f.len() - 1
                } else {
                    k.min(f.len() - 1)
                };
                from.push(origin[i + at]);
            }
            i += f.len();
        }
        (out, from)
    }

    /// Where words start and end: jieba's cut, and inside its compounds the bounds of a
    /// listed word beside another word. jieba's dictionary holds compounds of a danger's
    /// word and another word (发生爆炸, 昏迷不醒, 熊熊燃烧): a listed word inside one,
    /// beside a part of two characters or more, counts (a single character beside it
    /// does not: 血 in 血压, 火 in 火锅).
    fn bounds(&self, chars: &[char]) -> Vec<bool> {
        let s: String = chars.iter().collect();
        let mut bound = vec![false; chars.len() + 1];
        bound[0] = true;
        let mut at = 0;
        let mut compounds = Vec::new();
        for w in self.jieba.cut(&s, false) {
            let start = at;
            at += w.chars().count();
            if at < bound.len() {
                bound[at] = true;
            }
            if at - start >= 4 && !self.benign.contains(w) {
                compounds.push((start, at));
            }
        }
        let listed = |at: usize, fits: &dyn Fn(usize) -> bool| {
            self.words
                .get(&chars[at])
                .into_iter()
                .flatten()
                .any(|(w, _)| {
                    let e = at + w.len();
                    !w.contains(&GAP_MARK) && e <= chars.len() && fits(e) && chars[at..e] == w[..]
                })
        };
        let inner: Vec<usize> = compounds
            .into_iter()
            .flat_map(|(start, end)| {
                (start + 2..=end - 2).filter(move |&k| {
                    let starts_word = listed(k, &|e| e == end || (e <= end && end - e >= 2));
                    let ends_word = (start..k - 1)
                        .filter(|b| *b == start || b - start >= 2)
                        .any(|b| listed(b, &|e| e == k));
                    starts_word || ends_word
                })
            })
            .collect();
        for k in inner {
            bound[k] = true;
        }
        bound
    }

    /// Every listed word on word bounds, by list.
    fn occurrences(&self, t: &Text) -> Vec<Occ> {
        let mut out = Vec::new();
        for i in 0..t.chars.len() {
            if !t.bound[i] {
                continue;
            }
            for (w, lists) in self.words.get(&t.chars[i]).into_iter().flatten() {
                if let Some(end) = match_at(t, i, w) {
                    out.extend(lists.iter().map(|&list| Occ {
                        list,
                        start: i,
                        end,
                    }));
                }
            }
        }
        out
    }

    /// Every rule's matches: each part filled by a different, non-overlapping word, all
    /// within the rule's window (and sentence).
    fn hits(&self, t: &Text, found: &Found) -> Vec<Hit> {
        let mut out: Vec<Hit> = Vec::new();
        let mut seen: HashSet<(usize, usize, usize)> = HashSet::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            if rule.parts.iter().any(|p| found.any_of(p).next().is_none())
                || found.any_of(&rule.unless_text).next().is_some()
            {
                continue;
            }
            let candidates: Vec<Vec<Occ>> = rule
                .parts
                .iter()
                .map(|p| found.any_of(p).copied().collect())
                .collect();
            for anchor in &candidates[0] {
                let mut chosen = vec![*anchor];
                let mut ok = true;
                for cands in &candidates[1..] {
                    // The nearest word of this part that fits with those chosen.
                    let last_end = chosen.last().map_or(0, |c| c.end);
                    let best = cands
                        .iter()
                        .filter(|o| !chosen.iter().any(|c| c.start < o.end && o.start < c.end))
                        .filter(|o| !rule.ordered || o.start >= last_end)
                        .filter(|o| {
                            rule.across_sentences || t.sentence[o.start] == t.sentence[anchor.start]
                        })
                        .min_by_key(|o| o.start.abs_diff(anchor.start));
                    match best {
                        Some(o) => chosen.push(*o),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    continue;
                }
                let start = chosen.iter().map(|o| o.start).min().unwrap_or(0);
                let end = chosen.iter().map(|o| o.end).max().unwrap_or(0);
                if end - start > rule.window {
                    continue;
                }
                let (lo, hi) = (
                    start.saturating_sub(UNLESS_MARGIN),
                    (end + UNLESS_MARGIN).min(t.chars.len()),
                );
                // An `unless` word that is itself denied (没有看到停气通知, 不是跳闸) does not
                // count, nor one a turn separates from the match (之前都有通知，但这次...).
                let denied = |u: &Occ| {
                    found.of(self.mods.negation).iter().any(|n| {
                        n.end <= u.start
                            && u.start - n.end <= UNLESS_MARGIN
                            && t.clause[n.start] == t.clause[u.start]
                    })
                };
                let turned = |u: &Occ| {
                    found.of(self.mods.turn).iter().any(|x| {
                        (u.end <= x.start && x.end <= start) || (end <= x.start && x.end <= u.start)
                    })
                };
                let sentence = t.sentence[start];
                let blocked = found
                    .any_of(&rule.unless)
                    .any(|o| o.start >= lo && o.end <= hi && !denied(o))
                    || found
                        .any_of(&rule.unless_before)
                        .any(|o| o.start >= lo && o.end <= end && !denied(o))
                    || found
                        .any_of(&rule.unless_sentence)
                        .any(|o| t.sentence[o.start] == sentence && !turned(o) && !denied(o));
                if blocked || !seen.insert((ri, start, end)) {
                    continue;
                }
                let anchor_start = chosen[0].start;
                chosen.sort_by_key(|o| o.start);
                let head = chosen
                    .iter()
                    .position(|o| o.start == anchor_start)
                    .unwrap_or(0);
                out.push(Hit {
                    rule: ri,
                    head,
                    parts: chosen,
                    start,
                    end,
                });
            }
        }
        // One match per rule and stretch of text: 着火 inside 着火了 is the same fire, and
        // the reasons should say so once. The longest stays.
        out.sort_by_key(|h| (h.rule, h.start, std::cmp::Reverse(h.end)));
        let mut kept: Vec<Hit> = Vec::with_capacity(out.len());
        for h in out {
            if !kept
                .iter()
                .any(|k| k.rule == h.rule && k.start < h.end && h.start < k.end)
            {
                kept.push(h);
            }
        }
        kept.sort_by_key(|h| (h.start, h.end));
        kept
    }

    fn words_of(&self, t: &Text, o: &Occ) -> String {
        t.chars[o.start..o.end].iter().collect()
    }

    fn reason(&self, t: &Text, h: &Hit) -> String {
        let rule = &self.rules[h.rule];
        let words: Vec<String> = h.parts.iter().map(|o| self.words_of(t, o)).collect();
        format!("{}: {} ({})", rule.kind, rule.name, words.join(" + "))
    }

    /// Why `h` is taken back, if it is.
    fn taken_back(&self, t: &Text, found: &Found, h: &Hit) -> Option<String> {
        let m = &self.mods;
        let of = |list: u16| found.of(list).iter();
        let sentence = t.sentence[h.start];
        let in_sentence = |o: &&Occ| t.sentence[o.start] == sentence;
        let part_at = |o: &Occ| h.parts.iter().any(|p| p.start < o.end && o.start < p.end);
        // A general word that is itself denied (没听说要停) says nothing general.
        let denied = |o: &Occ| {
            of(m.negation).any(|n| {
                n.end <= o.start && o.start - n.end <= 1 && t.clause[n.start] == t.clause[o.start]
            })
        };
        let said = |why: &str, o: &Occ| format!("{why} {}", self.words_of(t, o));
        if let Some(o) = of(m.joke).next() {
            return Some(said("joke", o));
        }
        // A film, a game, a dream, a live stream: not this world, unless something in the
        // text is urgent.
        if let Some(o) = of(m.fiction).next()
            && !of(m.urgent).any(|u| !part_at(u))
        {
            return Some(said("fiction", o));
        }
        // A simile (像打架一样) compares; it reports nothing.
        let head = h.parts[h.head];
        if let Some(o) = of(m.simile).find(|o| o.start <= head.start && head.end <= o.end) {
            return Some(said("simile", o));
        }
        // A negation just before the danger's own word (a rule's first part), in its
        // clause: 没有着火, 没人受伤; not before the words around it (没接到女儿 does
        // not deny that she is missing).
        for p in h.parts.iter().filter(|p| p.list == head.list) {
            if let Some(n) = of(m.negation).find(|n| {
                n.end <= p.start
                    && p.start - n.end <= NEGATION_GAP
                    && t.chars[n.end..p.start]
                        .iter()
                        .all(|c| NEGATION_FILLER.contains(*c))
                    && t.clause[n.start] == t.clause[p.start]
                    && !part_at(n)
            }) {
                return Some(said("negation", n));
            }
        }
        // A danger's words inside short quotation marks are a figure of speech: 天天都在
        // “救火”, 老板说要“弄死我”.
        if let Some(q) = quoted(t, h.start, h.end) {
            return Some(format!("in quotation marks {q}"));
        }
        let clauses: HashSet<usize> = (h.start..h.end).map(|i| t.clause[i]).collect();
        let in_clause = |o: &&Occ| clauses.contains(&t.clause[o.start]);
        // The present keeps a danger when it is said before the danger's word, in its
        // clause (现在叫不醒); after it, it is often the time since (中风住了院现在出院了).
        let now = of(m.present)
            .filter(in_clause)
            .any(|o| o.start < head.end && !part_at(o));
        let urgent = of(m.urgent).filter(in_sentence).any(|o| !part_at(o));
        // A turn (但是, 不过, 突然) between a modifier and the danger ends the modifier's
        // reach: 本来想问停车收费，但是刚才暴雨，水一直往下灌.
        let turned = |o: &Occ| {
            of(m.turn).any(|x| {
                (o.end <= x.start && x.end <= head.start)
                    || (head.end <= x.start && x.end <= o.start)
            })
        };
        if !now
            && let Some(o) = of(m.hypothetical)
                .filter(in_sentence)
                .find(|o| o.end <= head.start && !part_at(o) && !turned(o))
        {
            return Some(said("what-if", o));
        }
        // Advice, training, products: in the danger's own clause or the next.
        let next_clause = clauses.iter().max().map_or(0, |c| c + 1);
        if !urgent
            && let Some(o) = of(m.generic)
                .filter(|o| in_clause(o) || t.clause[o.start] == next_clause)
                .filter(in_sentence)
                .find(|o| !part_at(o) && !turned(o) && !denied(o))
        {
            return Some(said("general", o));
        }
        if !now
            && let Some(o) = of(m.past)
                .filter(in_sentence)
                .find(|o| (o.end <= head.start || in_clause(o)) && !part_at(o) && !turned(o))
        {
            return Some(said("past", o));
        }
        // What came after (compensation, reports): in the danger's clause or the next.
        if !now
            && !urgent
            && let Some(o) = of(m.aftermath)
                .filter(|o| in_clause(o) || t.clause[o.start] == next_clause)
                .filter(in_sentence)
                .find(|o| !part_at(o) && !turned(o))
        {
            return Some(said("afterwards", o));
        }
        // An all-clear after the danger, with nothing urgent after it.
        for r in of(m.resolved).filter(|r| r.start >= h.end || in_clause(r)) {
            if part_at(r) {
                continue;
            }
            let revived = of(m.urgent)
                .chain(of(m.present))
                .any(|o| o.start >= r.end && !part_at(o));
            if !revived {
                return Some(said("all clear", r));
            }
        }
        None
    }

    /// Applies the modifiers and groups what stands by target.
    fn judge(
        &self,
        t: &Text,
        source: &[char],
        found: &Found,
        hits: Vec<Hit>,
        mended: &[String],
    ) -> Reading {
        let mut reading = Reading::default();
        let mut kept: Vec<&Hit> = Vec::new();
        let mut negated: HashSet<(usize, &str)> = HashSet::new();
        let mut judged: Vec<(&Hit, Option<String>)> = Vec::new();
        for h in &hits {
            let why = self.taken_back(t, found, h);
            if why.as_deref().is_some_and(|w| w.starts_with("negation")) {
                negated.insert((t.sentence[h.start], self.rules[h.rule].kind.as_str()));
            }
            judged.push((h, why));
        }
        for (h, why) in judged {
            let kind = &self.rules[h.rule].kind;
            // A kind denied in a sentence is denied there whatever else names it:
            // 没有着火，只是烧烤的烟.
            let why = why.or_else(|| {
                negated
                    .contains(&(t.sentence[h.start], kind.as_str()))
                    .then(|| format!("negation of {kind} in the sentence"))
            });
            match why {
                Some(because) => reading.set_aside.push(SetAside {
                    kind: kind.clone(),
                    reason: self.reason(t, h),
                    because,
                }),
                None => kept.push(h),
            }
        }
        let kinds: HashSet<&str> = kept
            .iter()
            .map(|h| self.rules[h.rule].kind.as_str())
            .collect();
        for h in kept {
            let rule = &self.rules[h.rule];
            let yields_to = self
                .gives_way
                .get(&rule.kind)
                .into_iter()
                .flatten()
                .chain(&rule.gives_way)
                .find_map(|to| {
                    kinds
                        .iter()
                        .find(|k| **k != rule.kind && (to == "*" || to == *k))
                });
            if let Some(other) = yields_to {
                reading.set_aside.push(SetAside {
                    kind: rule.kind.clone(),
                    reason: self.reason(t, h),
                    because: format!("gives way to {other}"),
                });
                continue;
            }
            let reason = self.reason(t, h);
            match reading
                .findings
                .iter_mut()
                .find(|f| f.target == rule.target)
            {
                Some(f) => {
                    if !f.kinds.contains(&rule.kind) {
                        f.kinds.push(rule.kind.clone());
                    }
                    if !f.reasons.contains(&reason) {
                        f.reasons.push(reason);
                    }
                }
                None => {
                    let at = t.origin.get(h.start).copied().unwrap_or(0);
                    let last = t.origin.get(h.end - 1).copied().unwrap_or(at);
                    let heard: String = source[at..=last.min(source.len() - 1)].iter().collect();
                    let mut reasons = vec![reason];
                    reasons.extend(mended.iter().cloned());
                    reading.findings.push(Finding {
                        mended: !mended.is_empty(),
                        cue: self.words_of(t, &h.parts[h.head]),
                        kind: rule.kind.clone(),
                        kinds: vec![rule.kind.clone()],
                        target: rule.target.clone(),
                        len: last + 1 - at,
                        at,
                        heard,
                        reasons,
                    });
                }
            }
        }
        reading
    }

    /// The text as the rules see it: rewritten, cut into words (for operators checking
    /// why a word did or did not count).
    pub fn words(&self, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let origin: Vec<usize> = (0..chars.len()).collect();
        let t = self.prepare(&chars, &origin);
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=t.chars.len() {
            if t.bound[i] {
                out.push(t.chars[start..i].iter().collect());
                start = i;
            }
        }
        out
    }

    /// `text` with every character that is not part of a listed word (a danger's words,
    /// a modifier's) masked as ○: enough to see why recognition read it so, not enough
    /// to read a citizen's message or name (Art. 21). Punctuation and spaces stay.
    pub fn masked(&self, text: &str) -> String {
        let source: Vec<char> = text.chars().collect();
        let origin: Vec<usize> = (0..source.len()).collect();
        let t = self.prepare(&source, &origin);
        let mut keep = vec![false; source.len()];
        for o in self.occurrences(&t) {
            if self.list_names[o.list as usize] == SEGMENTER_LIST {
                continue;
            }
            for i in o.start..o.end {
                if let Some(&k) = t.origin.get(i) {
                    keep[k] = true;
                }
            }
        }
        source
            .iter()
            .zip(keep)
            .map(|(c, k)| if k || !c.is_alphanumeric() { *c } else { '○' })
            .collect()
    }

    /// Every word of every list, as matched (folded).
    pub fn known_words(&self) -> Vec<String> {
        self.words
            .values()
            .flatten()
            .map(|(w, _)| w.iter().collect())
            .collect()
    }

    /// Names of the word lists (for the data's tests).
    pub fn list_names(&self) -> &[String] {
        &self.list_names
    }
}

fn inconsistent(m: String) -> CueError {
    CueError::Inconsistent(m)
}

/// The word lists of the data (`[words]` and `[modifiers]` in one namespace), by id.
struct Lists {
    names: Vec<String>,
    words: Vec<Vec<String>>,
}

impl Lists {
    fn of(file: &File) -> Result<Lists, CueError> {
        let mut names: Vec<&String> = file.words.keys().chain(file.modifiers.keys()).collect();
        names.sort();
        let mut lists = Lists {
            names: Vec::new(),
            words: Vec::new(),
        };
        for name in names {
            if lists.names.contains(name) {
                return Err(inconsistent(format!(
                    "{name} is both a word list and a modifier"
                )));
            }
            let words = file
                .words
                .get(name)
                .or_else(|| file.modifiers.get(name))
                .unwrap_or_else(|| unreachable!("a listed name"));
            if words.is_empty() {
                return Err(inconsistent(format!("word list {name} is empty")));
            }
            lists.names.push(name.clone());
            lists.words.push(words.clone());
        }
        Ok(lists)
    }

    fn id(&self, name: &str) -> Result<u16, CueError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as u16)
            .ok_or_else(|| inconsistent(format!("no word list {name}")))
    }

    fn ids(&self, names: &[String]) -> Result<Vec<u16>, CueError> {
        names.iter().map(|n| self.id(n)).collect()
    }

    /// The words by first character with the lists each is in, and the segmenter with
    /// the `segmenter` words and `extra_words` in its dictionary.
    fn index(
        &self,
        extra_words: &[&str],
    ) -> Result<(ByFirst<Vec<u16>>, jieba_rs::Jieba), CueError> {
        let mut words: ByFirst<Vec<u16>> = HashMap::new();
        let mut jieba = jieba_rs::Jieba::new();
        for (i, list) in self.words.iter().enumerate() {
            for w in list {
                let chars: Vec<char> = w.chars().map(fold).collect();
                let Some(&first) = chars.first() else {
                    return Err(inconsistent(format!("an empty word in {}", self.names[i])));
                };
                let entry = words.entry(first).or_default();
                match entry.iter_mut().find(|(c, _)| *c == chars) {
                    Some((_, ids)) => ids.push(i as u16),
                    None => entry.push((chars.clone(), vec![i as u16])),
                }
                // Only the words meant to change the cut go into jieba's dictionary: a
                // listed word spanning several of jieba's words still matches, and one
                // added with a high frequency swallows its neighbours (发/烧到 for 发烧到,
                // 我孩子 hiding 孩子 from the other lists).
                if self.names[i] == SEGMENTER_LIST && chars.len() > 1 {
                    jieba.add_word(&chars.iter().collect::<String>(), Some(WORD_FREQ), None);
                }
            }
        }
        for w in extra_words {
            jieba.add_word(w, None, None);
        }
        Ok((words, jieba))
    }
}

impl Mods {
    fn of(file: &File, lists: &Lists) -> Result<Mods, CueError> {
        if let Some(m) = MODIFIERS.iter().find(|m| !file.modifiers.contains_key(**m)) {
            return Err(inconsistent(format!("modifiers: {m} is missing")));
        }
        if let Some(m) = file
            .modifiers
            .keys()
            .find(|m| !MODIFIERS.contains(&m.as_str()))
        {
            return Err(inconsistent(format!(
                "modifiers: {m} means nothing to the recogniser"
            )));
        }
        Ok(Mods {
            negation: lists.id("negation")?,
            turn: lists.id("turn")?,
            fiction: lists.id("fiction")?,
            simile: lists.id("simile")?,
            hypothetical: lists.id("hypothetical")?,
            generic: lists.id("generic")?,
            past: lists.id("past")?,
            aftermath: lists.id("aftermath")?,
            resolved: lists.id("resolved")?,
            joke: lists.id("joke")?,
            present: lists.id("present")?,
            urgent: lists.id("urgent")?,
        })
    }
}

fn rules_of(file: &File, lists: &Lists) -> Result<Vec<Rule>, CueError> {
    let mut rules = Vec::with_capacity(file.rule.len());
    for r in &file.rule {
        let Some(target) = file.kinds.get(&r.kind) else {
            return Err(inconsistent(format!(
                "rule {:?}: kind {} has no target",
                r.name, r.kind
            )));
        };
        if r.parts.is_empty() {
            return Err(inconsistent(format!("rule {:?} has no parts", r.name)));
        }
        if let Some(k) = r.gives_way.iter().find(|k| !file.kinds.contains_key(*k)) {
            return Err(inconsistent(format!(
                "rule {:?}: gives way to {k}, which is no kind",
                r.name
            )));
        }
        let parts = r
            .parts
            .iter()
            .map(|p| p.split('|').map(|l| lists.id(l)).collect())
            .collect::<Result<Vec<_>, _>>()?;
        rules.push(Rule {
            kind: r.kind.clone(),
            target: target.clone(),
            name: r.name.clone(),
            parts,
            window: r.window.unwrap_or(WINDOW),
            unless: lists.ids(&r.unless)?,
            unless_before: lists.ids(&r.unless_before)?,
            unless_text: lists.ids(&r.unless_text)?,
            unless_sentence: lists.ids(&r.unless_sentence)?,
            across_sentences: r.across_sentences,
            ordered: r.ordered,
            gives_way: r.gives_way.clone(),
        });
    }
    if let Some(k) = file
        .kinds
        .keys()
        .find(|k| !rules.iter().any(|r| &r.kind == *k))
    {
        return Err(inconsistent(format!("kind {k} has no rule")));
    }
    Ok(rules)
}

/// The rewrites by first character, longest first (so that 跌咗落水 wins over 跌落).
fn rewrites_of(table: &HashMap<String, String>) -> Result<ByFirst<Vec<char>>, CueError> {
    let mut rewrites: ByFirst<Vec<char>> = HashMap::new();
    for (from, to) in table {
        let from: Vec<char> = from.chars().map(fold).collect();
        let Some(&first) = from.first() else {
            return Err(inconsistent("an empty rewrite".into()));
        };
        rewrites
            .entry(first)
            .or_default()
            .push((from, to.chars().collect()));
    }
    for v in rewrites.values_mut() {
        v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }
    Ok(rewrites)
}

/// In a listed word, `*` stands for up to [`GAP`] characters of the same clause: 喘不*气
/// is 喘不上气, 喘不过气 and 喘不到气; 叫*不醒 is 叫他不醒 and 叫了半天不醒.
const GAP_MARK: char = '*';
/// The most characters a `*` stands for.
const GAP: usize = 4;

/// Where the listed word `w` ends if it is found at `i`: its first character on a word
/// bound, its last one before a bound (the bounds inside a word with a gap are free: a
/// transcript or a colloquial phrase cuts them anywhere).
fn match_at(t: &Text, i: usize, w: &[char]) -> Option<usize> {
    fn rest(t: &Text, at: usize, w: &[char]) -> Option<usize> {
        match w.split_first() {
            None => t.bound[at].then_some(at),
            Some((&GAP_MARK, tail)) => (0..=GAP).find_map(|skip| {
                let gap = t.chars.get(at..at + skip)?;
                if gap.iter().any(|c| is_clause_end(*c)) {
                    return None;
                }
                rest(t, at + skip, tail)
            }),
            Some((c, tail)) => (t.chars.get(at) == Some(c)).then(|| rest(t, at + 1, tail))?,
        }
    }
    rest(t, i, w)
}

/// The list whose words are added to jieba's dictionary: words it would otherwise cut
/// wrongly for the rules, either joining a danger's word to its neighbour (刀架 / 在 for
/// 刀 / 架在) or cutting a harmless word so that a danger's word appears (爆炸 / 头 for
/// the barber's 爆炸头).
const SEGMENTER_LIST: &str = "segmenter";
/// The list the place names given to [`Recognizer::from_toml`] join.
const PLACE_LIST: &str = "place";

/// jieba frequency of the `segmenter` words: high enough to win over the dictionary's
/// own cut.
const WORD_FREQ: usize = 100_000;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Classifier;

    fn read(text: &str) -> Reading {
        Classifier::builtin().read_emergencies(text, Medium::Typed)
    }

    fn targets(text: &str) -> Vec<String> {
        let mut t: Vec<String> = read(text).findings.into_iter().map(|f| f.target).collect();
        t.sort();
        t
    }

    #[test]
    fn the_shipped_data_parses_and_names_every_kind() {
        let r = Recognizer::builtin();
        let kinds: Vec<&str> = r.kinds().iter().map(|(k, _)| *k).collect();
        for k in [
            "fire",
            "explosion",
            "gas_leak",
            "hazmat",
            "trapped",
            "drowning",
            "flooding",
            "collapse",
            "disaster",
            "injury",
            "medical",
            "violence",
            "self_harm",
            "missing",
            "distress",
            "water_outage",
            "power_outage",
            "gas_outage",
        ] {
            assert!(kinds.contains(&k), "{k}: {kinds:?}");
        }
    }

    #[test]
    fn inconsistent_data_is_refused() {
        let base = DEFAULT_RECOGNITION;
        let broken = [
            // A rule naming a list that does not exist.
            base.replacen(r#"parts = ["fire"]"#, r#"parts = ["no_such_list"]"#, 1),
            // A rule of a kind with no target.
            base.replacen(
                r#"kind = "fire"
name = "fire""#,
                r#"kind = "arson_spree"
name = "fire""#,
                1,
            ),
            // A modifier the code gives no meaning to.
            base.replacen("[modifiers]\n", "[modifiers]\nmaybe = [\"也许\"]\n", 1),
            // A kind giving way to no kind.
            base.replacen("[gives_way]\n", "[gives_way]\nfire = [\"meteor\"]\n", 1),
        ];
        for (i, text) in broken.iter().enumerate() {
            assert_ne!(text, base, "case {i} changed nothing");
            assert!(
                matches!(
                    Recognizer::from_toml(text, &[]),
                    Err(CueError::Inconsistent(_))
                ),
                "case {i}"
            );
        }
        assert!(matches!(
            Recognizer::from_toml("kinds = 3", &[]),
            Err(CueError::Parse(_))
        ));
    }

    /// Issue 21's first finding: a threat in words nobody listed (拿着刀, 要杀了我).
    #[test]
    fn art15_a_threat_is_recognised_from_its_parts() {
        let r = read("有个男的在我家门口砸门，手里拿着刀说要杀了我，我很害怕");
        assert_eq!(r.findings.len(), 1, "{r:?}");
        let f = &r.findings[0];
        assert_eq!((f.kind.as_str(), f.target.as_str()), ("violence", "110"));
        assert!(
            f.reasons.iter().any(|x| x.contains("拿着 + 刀")),
            "the notice says which words: {:?}",
            f.reasons
        );
        for text in [
            "刀架在他脖子上",
            "他说要砍死我",
            "他手里拿着一把水果刀追着人",
        ] {
            assert_eq!(targets(text), ["110"], "{text}");
        }
    }

    /// Issue 21's second finding: a person trapped by water, in words of its own.
    #[test]
    fn art15_a_person_in_danger_with_a_hazard_is_recognised() {
        assert_eq!(
            targets("地下车库进水了，有辆车里还困着人，水已经淹到车窗了"),
            ["119"]
        );
        assert_eq!(targets("老人倒在地上叫不醒"), ["120"]);
        assert_eq!(targets("我朋友下海游泳抽筋了，离岸好远"), ["119"]);
    }

    /// Issue 21's third finding: typed text is read as typed. The tax question was a
    /// 119 notice (的增 heard as a sound-alike of a danger word).
    #[test]
    fn art15_typed_text_is_not_matched_by_sound() {
        let tax = "请问个体工商户的增值税起征点是多少？季度申报怎么操作？";
        assert_eq!(targets(tax), Vec::<String>::new());
        // 找火 is how whisper writes 着火: a transcript's is mended, a typed one is not.
        let c = Classifier::builtin();
        let typed = c.read_emergencies("我家楼下找火了", Medium::Typed);
        assert!(typed.findings.is_empty(), "{typed:?}");
        let heard = c.read_emergencies("我家楼下找火了", Medium::Speech);
        let f = heard.findings.first().expect("a transcript's 找火 is 着火");
        assert_eq!(
            (f.kind.as_str(), f.cue.as_str(), f.heard.as_str()),
            ("fire", "着火", "找火")
        );
        assert!(
            f.mended && f.reasons.iter().any(|r| r == "heard 找火 as 着火 (sound)"),
            "{f:?}"
        );
    }

    /// Negations, questions, what-ifs and the past are not emergencies; everyday words
    /// holding a danger's characters never are.
    #[test]
    fn art15_negations_questions_and_the_past_raise_nothing() {
        for text in [
            "没有着火",
            "没有着火，只是楼下烧烤的烟",
            "怎么预防火灾",
            "万一着火了高层住户应该怎么逃生",
            "上次着火的补偿什么时候发",
            "去年台风吹倒的树还没清理",
            "刚才报的煤气味是误会，是邻居在煮臭豆腐",
            "火已经灭了，消防也走了，想问墙被熏黑了物业管不管",
            "防火",
            "火锅",
            "火车",
            "火龙果",
            "增值税",
            "我们去吃火锅吧，坐火车去",
            "买了两斤火龙果，顺便问下增值税怎么交",
            "办个证跑了四趟，我真的气炸了",
            "我们部门天天都在“救火”",
            "我的手机掉进河里了",
        ] {
            let r = read(text);
            assert!(r.findings.is_empty(), "{text}: {:?}", r.findings);
        }
        let r = read("没有着火，只是楼下烧烤的烟");
        assert!(
            r.set_aside
                .iter()
                .any(|s| s.because.starts_with("negation")),
            "what was set aside says why: {:?}",
            r.set_aside
        );
    }

    /// A text naming several dangers reaches every target it needs, each with its own
    /// reasons; a cry for help beside a named danger is that danger's.
    #[test]
    fn art15_several_dangers_reach_every_target() {
        let r = read("厨房起火了，我奶奶去扑火，手臂烧伤了一大片，快来");
        let t: Vec<(&str, &str)> = r
            .findings
            .iter()
            .map(|f| (f.target.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(t, [("119", "fire"), ("120", "injury")], "{r:?}");
        assert!(r.findings[0].reasons.iter().all(|x| x.starts_with("fire")));
        assert!(
            r.findings[1]
                .reasons
                .iter()
                .all(|x| x.starts_with("injury"))
        );
        assert_eq!(targets("有人被捅了，肚子一直在流血"), ["110", "120"]);
        let kitchen = read("厨房着火了，救命");
        assert_eq!(
            kitchen
                .findings
                .iter()
                .map(|f| f.target.as_str())
                .collect::<Vec<_>>(),
            ["119"]
        );
        assert!(
            kitchen.set_aside.iter().any(|s| s.kind == "distress"),
            "{kitchen:?}"
        );
    }

    /// Regional outages go to the unit; one home's or an announced one does not.
    #[test]
    fn art15_outages_of_an_area_only() {
        assert_eq!(targets("我们整个小区从早上就停水了"), ["水务局"]);
        assert_eq!(targets("我要投诉，三灶镇又停水了"), ["水务局"]);
        assert_eq!(targets("整条街都停电了，连红绿灯也不亮了"), ["供电局"]);
        for text in [
            "我家停电了，邻居家都有电，是不是欠费了",
            "下周二计划停水，几点能恢复",
            "停电通知说周四全天停电",
        ] {
            assert_eq!(targets(text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn emoji_cantonese_and_pinyin_are_read() {
        assert_eq!(targets("jm 快来"), ["110"]);
        assert_eq!(targets("🔥🔥🔥 电动车烧起来了"), ["119"]);
        assert_eq!(targets("隔篱屋好大阵煤气味，敲门冇人应"), ["119"]);
        assert_eq!(targets("阿婆喺街市跌亲，个头撞到地，流好多血"), ["120"]);
        let f = &read("zhao huo le 快").findings[0];
        assert_eq!((f.cue.as_str(), f.heard.as_str()), ("着火", "zhao huo"));
    }

    #[test]
    fn masked_texts_keep_only_the_listed_words() {
        let r = Recognizer::builtin();
        assert_eq!(
            r.masked("王五拿着刀在追我，李四138"),
            "○○拿着刀○追我，○○○○○"
        );
    }

    proptest! {
        /// Issue 21: filler words or punctuation between a threat's parts do not lose it.
        #[test]
        fn a_threat_survives_filler_between_its_parts(
            a in proptest::collection::vec(0usize..FILLER.len(), 0..3),
            b in proptest::collection::vec(0usize..FILLER.len(), 0..3),
            c in proptest::collection::vec(0usize..FILLER.len(), 0..3),
            which in 0usize..THREATS.len(),
        ) {
            let fill = |v: &[usize]| v.iter().map(|i| FILLER[*i]).collect::<String>();
            let [x, y, z] = THREATS[which];
            let text = format!("他{x}{}{y}{}{z}{}", fill(&a), fill(&b), fill(&c));
            prop_assert_eq!(targets(&text), vec!["110".to_owned()], "{}", text);
        }
    }

    /// Threats in three parts; the filler goes after each.
    const THREATS: [[&str; 3]; 4] = [
        ["拿着", "刀", "说要杀了我"],
        ["手里", "拿着", "刀"],
        ["把刀", "架在", "我脖子上"],
        ["追着我", "说要", "砍死我"],
    ];
    const FILLER: [&str; 12] = [
        "，",
        "、",
        " ",
        "……",
        "一把",
        "很长的",
        "明晃晃的",
        "啊",
        "就",
        "还",
        "那个",
        "一直",
    ];
}
