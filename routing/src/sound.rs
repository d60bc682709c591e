//! Matching words by how they sound.
//!
//! A machine transcript of telephone Mandarin gets most characters' *sounds* right and
//! many characters wrong (香洲 as 相周, 着火 as 找火, 咨询 as 资讯). So cues and places
//! are matched by toneless pinyin through the `pinyin` crate: the text with all readings
//! of a heteronym (着 is zhe, zhao and zhuo), the cue as it is meant. Three strengths:
//! - [`Cue::find`]: every character has the cue's syllable among its readings (相周区 is
//!   香洲区);
//! - [`Cue::find_fuzzy`]: one letter of pinyin off, for names of three characters or
//!   more (金温区 for 金湾区);
//! - [`Cue::alike_at`]: syllables whose initials or finals whisper confuses on a
//!   phone line, from `data/homophones.toml` ([`Homophones`]): 潮火 (chao) for 着火
//!   (zhao), 没机械路 (ji, lu) for 煤气泄漏 (qi, lou). Used for Art. 15 cues, where a
//!   missed word is a missed urgent notice.

use std::collections::{HashMap, HashSet};

use pinyin::ToPinyinMulti;
use serde::Deserialize;

use crate::CueError;

/// The shipped homophone rules.
pub const DEFAULT_HOMOPHONES: &str = include_str!("../data/homophones.toml");

/// The toneless readings of each character of `text` (a character without pinyin, such
/// as a Latin letter or a mark, reads as itself in lower case).
pub(crate) fn readings(text: &str) -> Vec<Vec<String>> {
    text.chars()
        .map(|c| match c.to_pinyin_multi() {
            Some(multi) => {
                let mut v: Vec<String> = multi.into_iter().map(|p| p.plain().to_owned()).collect();
                v.dedup();
                v
            }
            None => vec![c.to_lowercase().collect()],
        })
        .collect()
}

/// A text prepared for matching: its characters and their readings, and optionally
/// where its words start (a one-character cue must start a word).
#[derive(Debug, Clone)]
pub(crate) struct Sounds {
    pub chars: Vec<char>,
    pub readings: Vec<Vec<String>>,
    /// Character offsets where words start and end; `None`: no segmentation, every
    /// offset counts.
    pub bounds: Option<HashSet<usize>>,
}

impl Sounds {
    pub fn new(text: &str, bounds: Option<HashSet<usize>>) -> Sounds {
        Sounds {
            chars: text.chars().collect(),
            readings: readings(text),
            bounds,
        }
    }

    fn is_bound(&self, at: usize) -> bool {
        self.bounds.as_ref().is_none_or(|b| b.contains(&at))
    }
}

/// A word to find, with the reading it is meant with (one syllable per character).
///
/// The text side is read with every reading of each character (a transcript may have
/// written a heteronym: 找 for 着), the cue side only as it is meant: with every
/// reading on both sides, rare ones meet (的 read di and 提 read di make 的一 sound like
/// 提议) and a cue is heard where nobody said it.
#[derive(Debug, Clone)]
pub(crate) struct Cue {
    pub word: String,
    /// The meant syllable of each character: the commonest reading, or the data's
    /// (`readings` in homophones.toml: 着火 is zhao huo).
    pub meant: Vec<String>,
    /// The sound class of each meant syllable ([`Homophones`]), worked out once.
    near: Vec<String>,
}

impl Cue {
    pub fn new(word: &str, h: &Homophones) -> Cue {
        let meant: Vec<String> = h.reading_of(word).unwrap_or_else(|| {
            readings(word)
                .into_iter()
                .map(|mut r| r.swap_remove(0))
                .collect()
        });
        Cue {
            word: word.to_owned(),
            near: meant.iter().map(|x| h.key(x)).collect(),
            meant,
        }
    }

    pub fn len(&self) -> usize {
        self.meant.len()
    }

    /// Whether the cue sounds at `i` in `text`: every character has the cue's meant
    /// syllable among its readings (and a one-character cue starts a word).
    pub fn sounds_at(&self, text: &Sounds, i: usize) -> bool {
        let n = self.len();
        n > 0
            && i + n <= text.readings.len()
            && (0..n).all(|j| text.readings[i + j].contains(&self.meant[j]))
            && (n > 1 || text.is_bound(i))
    }

    /// Every place the cue sounds in `text` (character offsets), with fit 1.
    pub fn find_all<'a>(&'a self, text: &'a Sounds) -> impl Iterator<Item = (usize, f32)> + 'a {
        (0..text.readings.len())
            .filter(|&i| self.sounds_at(text, i))
            .map(|i| (i, 1.0))
    }

    /// Where the cue first sounds in `text`.
    pub fn find(&self, text: &Sounds) -> Option<(usize, f32)> {
        self.find_all(text).next()
    }

    /// Like [`Cue::find`], and failing that, the first window whose default readings
    /// are one letter away from the cue's (for names of three characters or more).
    pub fn find_fuzzy(&self, text: &Sounds) -> Option<(usize, f32)> {
        if let Some(hit) = self.find(text) {
            return Some(hit);
        }
        let r = &text.readings;
        let n = self.len();
        if n < 3 || r.len() < n {
            return None;
        }
        let cue: String = self.meant.concat();
        (0..=r.len() - n)
            .find(|&i| {
                let window: String = r[i..i + n].iter().map(|r| r[0].as_str()).collect();
                levenshtein(&cue, &window) <= 1
            })
            .map(|i| (i, 0.7))
    }

    /// Whether the cue sounds near enough at `i`: every syllable sounds like the cue's,
    /// exactly or by [`Homophones`] (the text character's commonest reading against the
    /// cue's meant one), at most half of them (at least one) only alike, and at least
    /// one exact. The fit falls by 0.15 for each syllable only alike. `near` is the
    /// text's [`Homophones::near_keys`], worked out once for all the cues.
    pub fn alike_at(&self, text: &Sounds, near: &[String], i: usize) -> Option<(usize, f32)> {
        let r = &text.readings;
        let n = self.len();
        if n < 2 || i + n > r.len() || near.len() != r.len() {
            return None;
        }
        let allowed = (n / 2).max(1);
        let mut alike = 0;
        for j in 0..n {
            if r[i + j].contains(&self.meant[j]) {
                continue;
            }
            if near[i + j] != self.near[j] {
                return None;
            }
            alike += 1;
            if alike > allowed {
                return None;
            }
        }
        (alike < n).then_some((i, 1.0 - 0.15 * alike as f32))
    }

    /// The meant syllable and the sound class a cue starts with (to index cues by).
    pub fn first(&self) -> (&str, &str) {
        (
            self.meant.first().map_or("", String::as_str),
            self.near.first().map_or("", String::as_str),
        )
    }
}

/// Edit distance in characters.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HomophoneFile {
    initials: Vec<Vec<String>>,
    finals: Vec<Vec<String>>,
    #[serde(default)]
    heard_as: HashMap<String, Vec<String>>,
    #[serde(default)]
    not_cues: Vec<String>,
    #[serde(default)]
    readings: HashMap<String, String>,
}

/// How whisper mishears Mandarin on a phone line (`data/homophones.toml`): initials and
/// finals it confuses, transcriptions of cues those rules do not reach, and words that
/// sound like a cue but are something else.
#[derive(Debug, Clone)]
pub struct Homophones {
    initial: HashMap<String, String>,
    fin: HashMap<String, String>,
    /// Cue word -> other ways it was heard.
    pub(crate) heard_as: HashMap<String, Vec<String>>,
    /// Words whose sound contains a cue's but that are not one (期货 is not 起火).
    pub(crate) not_cues: Vec<Vec<char>>,
    /// Cue word -> its syllables, where the commonest readings are not what it says.
    readings: HashMap<String, Vec<String>>,
}

/// Pinyin initials, the two-letter ones first.
const INITIALS: [&str; 23] = [
    "zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r",
    "z", "c", "s", "y", "w",
];

impl Homophones {
    /// From the data file's text.
    pub fn from_toml(text: &str) -> Result<Homophones, CueError> {
        let file: HomophoneFile = toml::from_str(text)?;
        let classes = |groups: Vec<Vec<String>>, what: &str| {
            let mut map = HashMap::new();
            for g in groups {
                let Some(first) = g.first().cloned() else {
                    return Err(CueError::Inconsistent(format!("an empty group of {what}")));
                };
                for s in g {
                    if map.insert(s.clone(), first.clone()).is_some() {
                        return Err(CueError::Inconsistent(format!(
                            "{what}: {s} is in two groups"
                        )));
                    }
                }
            }
            Ok(map)
        };
        let initial = classes(file.initials, "initials")?;
        if let Some(bad) = initial.keys().find(|i| !INITIALS.contains(&i.as_str())) {
            return Err(CueError::Inconsistent(format!(
                "{bad} is not a pinyin initial"
            )));
        }
        let mut readings = HashMap::new();
        for (word, said) in file.readings {
            let syllables: Vec<String> = said.split_whitespace().map(str::to_owned).collect();
            if syllables.len() != word.chars().count() {
                return Err(CueError::Inconsistent(format!(
                    "readings: {word} has {} characters and {said:?} {} syllables",
                    word.chars().count(),
                    syllables.len()
                )));
            }
            readings.insert(word, syllables);
        }
        Ok(Homophones {
            readings,
            initial,
            fin: classes(file.finals, "finals")?,
            heard_as: file.heard_as,
            not_cues: file.not_cues.iter().map(|w| w.chars().collect()).collect(),
        })
    }

    /// The shipped rules.
    pub fn builtin() -> Homophones {
        // The shipped file is checked by a unit test; it cannot fail at run time.
        Self::from_toml(DEFAULT_HOMOPHONES)
            .unwrap_or_else(|e| unreachable!("shipped homophones: {e}"))
    }

    /// A syllable's sound class: its initial's group and its final's group.
    fn key(&self, syllable: &str) -> String {
        let initial = INITIALS
            .iter()
            .find(|i| syllable.starts_with(*i))
            .copied()
            .unwrap_or("");
        let fin = &syllable[initial.len()..];
        let i = self.initial.get(initial).map_or(initial, String::as_str);
        let f = self.fin.get(fin).map_or(fin, String::as_str);
        format!("{i}-{f}")
    }

    /// The sound class of each character of `text` by its commonest reading: near sounds
    /// compare that alone, since with every reading a rare one (斗 read zhu) would make
    /// near sounds of nearly anything.
    pub(crate) fn near_keys(&self, text: &Sounds) -> Vec<String> {
        text.readings
            .iter()
            .map(|r| r.first().map_or_else(String::new, |x| self.key(x)))
            .collect()
    }

    /// The syllables `word` is meant with, where the data gives them.
    pub(crate) fn reading_of(&self, word: &str) -> Option<Vec<String>> {
        self.readings.get(word).cloned()
    }

    /// Whether the characters `at..at + len` of `text` lie inside a word that only
    /// sounds like a cue.
    pub(crate) fn inside_not_cue(&self, text: &[char], at: usize, len: usize) -> bool {
        self.not_cues.iter().any(|w| {
            let n = w.len();
            n <= text.len()
                && (0..=text.len() - n)
                    .any(|s| s <= at && at + len <= s + n && text[s..s + n] == w[..])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_homophones_parse() {
        let h = Homophones::from_toml(DEFAULT_HOMOPHONES).expect("shipped homophones");
        assert_eq!(h.key("zhao"), h.key("chao"));
        assert_eq!(h.key("qi"), h.key("ji"));
        assert_ne!(h.key("zhao"), h.key("hao"));
    }

    #[test]
    fn bad_homophone_files_are_refused() {
        for bad in [
            "initials = [[\"zh\", \"zz\"]]\nfinals = []",
            "initials = [[\"zh\"], [\"zh\", \"z\"]]\nfinals = []",
            "initials = [[]]\nfinals = []",
            "initials = []\nfinals = []\nunknown = 1",
            "initials = []\nfinals = []\n[readings]\n\"着火\" = \"zhao\"",
        ] {
            assert!(Homophones::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loose_matching_takes_near_initials_and_finals_but_not_everything() {
        let h = Homophones::builtin();
        let fire = Cue::new("着火", &h);
        let gas = Cue::new("煤气泄漏", &h);
        let first = |c: &Cue, t: &str| {
            let t = Sounds::new(t, None);
            let near = h.near_keys(&t);
            (0..t.readings.len()).find_map(|i| c.alike_at(&t, &near, i))
        };
        let at = |c: &Cue, t: &str| first(c, t).map(|x| x.0);
        assert_eq!(at(&fire, "我家楼下潮火了"), Some(4), "chao for zhao");
        assert_eq!(at(&gas, "家里没机械路了"), Some(2), "ji for qi, lu for lou");
        assert_eq!(at(&fire, "我家楼下好火了"), None, "hao is not zhao");
        assert_eq!(at(&fire, "我家楼下潮湿了"), None, "湿 is not 火");
        let fit = first(&fire, "潮火").map_or(0.0, |x| x.1);
        assert!((fit - 0.85).abs() < 1e-6, "{fit}");
    }
}
