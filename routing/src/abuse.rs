//! Abusive words (Art. 9): which words in a citizen's text make the gateway propose a
//! restriction, and for which of Art. 9's reasons.
//!
//! The words are data (`data/abuse.toml`), matched by sound with the same matcher as
//! the Art. 15 cues ([`crate::emergency`]), so that a transcript's homophones still
//! count. A match is only ever a proposal with its evidence: a person confirms it.

use contract::RestrictionReason;
use serde::Deserialize;

use crate::CueError;
use crate::emergency::{EmergencyRules, RuleFile};
use crate::sound::Homophones;

/// The word file shipped with the gateway.
pub const DEFAULT_ABUSE: &str = include_str!("../data/abuse.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbuseFile {
    abuse: Vec<AbuseRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbuseRule {
    reason: RestrictionReason,
    words: Vec<String>,
}

/// Abusive words found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct AbuseHit {
    /// Art. 9's reason the words fall under.
    pub reason: RestrictionReason,
    /// The word as the list spells it.
    pub word: String,
    /// The words as written in the text.
    pub heard: String,
}

/// The abusive-word rules.
#[derive(Debug, Clone)]
pub struct AbuseRules {
    rules: EmergencyRules,
}

impl AbuseRules {
    /// Rules from a word file's and a homophone file's texts.
    pub fn from_toml(abuse: &str, homophones: &str) -> Result<Self, CueError> {
        let file: AbuseFile = toml::from_str(abuse)?;
        let mut rules = Vec::with_capacity(file.abuse.len());
        for r in file.abuse {
            let kind = serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            rules.push(RuleFile {
                kind,
                target: "art9".into(),
                cues: r.words,
            });
        }
        let homophones = Homophones::from_toml(homophones)?;
        Ok(AbuseRules {
            rules: EmergencyRules::build(rules, homophones, false)?,
        })
    }

    /// The shipped rules.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_ABUSE, crate::sound::DEFAULT_HOMOPHONES)
            .unwrap_or_else(|e| unreachable!("shipped abuse words: {e}"))
    }

    /// The abusive words in `text`, if any.
    pub fn detect(&self, text: &str) -> Option<AbuseHit> {
        let hit = self.rules.detect(text)?;
        let reason = serde_json::from_value(serde_json::Value::String(hit.kind)).ok()?;
        Some(AbuseHit {
            reason,
            word: hit.cue,
            heard: text.chars().skip(hit.at).take(hit.len).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art9_abusive_words_are_found_with_their_reason() {
        let rules = AbuseRules::builtin();
        for (text, reason) in [
            (
                "你们这帮废物，什么都办不成",
                RestrictionReason::InsultingStaff,
            ),
            ("再不给我办我就弄死你", RestrictionReason::ThreateningStaff),
            (
                "我知道你住哪，你给我等着",
                RestrictionReason::ThreateningStaff,
            ),
            ("美女陪我聊天嘛", RestrictionReason::HarassingStaff),
        ] {
            let hit = rules.detect(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(hit.reason, reason, "{text}");
        }
        // A transcript's homophone still counts.
        assert!(rules.detect("你们就是一群费物").is_some());
    }

    #[test]
    fn ordinary_requests_and_complaints_propose_nothing() {
        let rules = AbuseRules::builtin();
        for text in [
            "我要投诉，楼下餐馆每天晚上噪音扰民",
            "路灯坏了好几天了，没人管",
            "请问社保卡补办需要什么材料",
            "垃圾分类的垃圾桶满了没人清运",
            "你们的服务态度太差了，我很不满意",
            "我家楼下着火了，有人被困",
            "物业乱收费，我要举报",
        ] {
            assert_eq!(rules.detect(text), None, "{text}");
        }
    }
}
