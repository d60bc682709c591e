//! Art. 15 cue words matched by sound: how a call's transcript is mended before Art. 15
//! recognition reads it ([`crate::recognize`]), and the words that prime the speech
//! recogniser. Typed text is never matched by sound (issue 21: 增值税 was heard as a
//! danger word).
//!
//! The rules are data (`data/cues.toml`, `[[emergency]]`): a kind (fire, gas leak,
//! trapped people, a regional water outage...), its linkage target (110, 119, 120 or the
//! responsible unit) and its cue words. Cues are matched by sound ([`crate::sound`]), so
//! that what whisper writes for them still counts: the same pinyin first (找火 for 着火),
//! then the transcriptions listed in `data/homophones.toml`, then syllables whose initials
//! or finals whisper confuses (潮火 for 着火, 没机械路 for 煤气泄漏). A word that only sounds
//! like a cue (期货 for 起火) is listed there too and does not count.
//!
//! [`EmergencyRules::hits_in`] gives every cue heard, none overlapping; the recogniser
//! puts each cue in the place of the words heard. `detect` (the first cue) serves the
//! abusive-word rules built on the same matcher ([`crate::abuse`]).

use std::collections::HashMap;

use serde::Deserialize;

use crate::CueError;
use crate::sound::{Cue, Homophones, Sounds};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    pub(crate) kind: String,
    pub(crate) target: String,
    pub(crate) cues: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    kind: String,
    target: String,
    /// The cues, then the other ways they were heard (with the cue each stands for).
    cues: Vec<(Cue, Option<String>)>,
}

/// An emergency cue heard in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct EmergencyHit {
    /// The rule's kind of emergency (`fire`, `gas_leak`, ...).
    pub kind: String,
    /// The linkage it goes to (`110`, `119`, `120` or a unit).
    pub target: String,
    /// The cue, as the rules spell it.
    pub cue: String,
    /// Where it was heard: the first character's offset in the text.
    pub at: usize,
    /// Length in characters.
    pub len: usize,
    /// How well the sound matched: 1 the same pinyin, less for a listed mishearing or a
    /// near sound.
    pub fit: f32,
}

/// The Art. 15 rules.
#[derive(Debug, Clone)]
pub struct EmergencyRules {
    rules: Vec<Rule>,
    homophones: Homophones,
    /// (rule, cue) by the syllable each cue is meant to start with, and by that
    /// syllable's sound class: a text is read once, position by position, and only the
    /// cues that can start there are tried (scanning every cue at every position cost
    /// 4x as much: routing/examples/emergency-cost.rs).
    by_first: HashMap<String, Vec<(usize, usize)>>,
    by_first_near: HashMap<String, Vec<(usize, usize)>>,
}

/// Earliest first, the longest where two start together, the better fit where both do.
fn first_and_longest(a: &EmergencyHit, b: &EmergencyHit) -> std::cmp::Ordering {
    a.at.cmp(&b.at)
        .then(b.len.cmp(&a.len))
        .then(b.fit.total_cmp(&a.fit))
}

/// How much a listed mishearing (`heard_as`) counts.
const HEARD_AS_FIT: f32 = 0.9;

impl EmergencyRules {
    pub(crate) fn new(
        file: Vec<RuleFile>,
        homophones: Homophones,
    ) -> Result<EmergencyRules, CueError> {
        Self::build(file, homophones, true)
    }

    /// Rules of another kind matched the same way (abusive words): the homophone file's
    /// listed mishearings are the emergency cues', so they are not checked against these.
    pub(crate) fn build(
        file: Vec<RuleFile>,
        homophones: Homophones,
        own_mishearings: bool,
    ) -> Result<EmergencyRules, CueError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(file.len());
        for r in file {
            if r.kind.is_empty() || r.target.is_empty() || r.cues.is_empty() {
                return Err(CueError::Inconsistent(format!(
                    "emergency rule {:?}: kind, target and cues are all required",
                    r.kind
                )));
            }
            if rules.iter().any(|x| x.kind == r.kind) {
                return Err(CueError::Inconsistent(format!(
                    "emergency kind {} has two rules",
                    r.kind
                )));
            }
            if let Some(c) = r.cues.iter().find(|c| c.chars().count() < 2) {
                return Err(CueError::Inconsistent(format!(
                    "emergency cue {c:?}: at least two characters (one sound is anything)"
                )));
            }
            let mut cues: Vec<(Cue, Option<String>)> = r
                .cues
                .iter()
                .map(|c| (Cue::new(c, &homophones), None))
                .collect();
            for c in &r.cues {
                for heard in homophones.heard_as.get(c).into_iter().flatten() {
                    cues.push((Cue::new(heard, &homophones), Some(c.clone())));
                }
            }
            rules.push(Rule {
                kind: r.kind,
                target: r.target,
                cues,
            });
        }
        if let Some(w) = homophones
            .heard_as
            .keys()
            .filter(|_| own_mishearings)
            .find(|w| {
                !rules
                    .iter()
                    .any(|r| r.cues.iter().any(|(c, _)| &c.word == *w))
            })
        {
            return Err(CueError::Inconsistent(format!(
                "homophones: heard_as names {w}, which is no emergency cue"
            )));
        }
        let mut by_first: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut by_first_near: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (ri, r) in rules.iter().enumerate() {
            for (ci, (c, _)) in r.cues.iter().enumerate() {
                let (meant, near) = c.first();
                by_first.entry(meant.to_owned()).or_default().push((ri, ci));
                by_first_near
                    .entry(near.to_owned())
                    .or_default()
                    .push((ri, ci));
            }
        }
        Ok(EmergencyRules {
            rules,
            homophones,
            by_first,
            by_first_near,
        })
    }

    /// The emergency a typed text names, if any (see [`EmergencyRules::detect_in`]).
    pub fn detect(&self, text: &str) -> Option<EmergencyHit> {
        self.detect_in(&Sounds::new(text, None))
    }

    /// The emergency cue heard in `text`: of the cues heard with their own pinyin or a
    /// listed mishearing, the earliest (the longest where two start together); failing
    /// that, the earliest near sound.
    pub(crate) fn detect_in(&self, text: &Sounds) -> Option<EmergencyHit> {
        let best = |hits: Vec<EmergencyHit>| {
            hits.into_iter()
                .filter(|h| !self.homophones.inside_not_cue(&text.chars, h.at, h.len))
                .min_by(first_and_longest)
        };
        best(self.same_sound(text)).or_else(|| best(self.near_sound(text)))
    }

    /// Every cue heard in `text`, none overlapping another: the cues heard with their own
    /// pinyin or a listed mishearing first (earliest, longest where two start together),
    /// then near sounds where nothing was heard. The recogniser mends a transcript with
    /// them ([`crate::recognize`]).
    pub(crate) fn hits_in(&self, text: &Sounds) -> Vec<EmergencyHit> {
        let mut hits: Vec<EmergencyHit> = Vec::new();
        for mut found in [self.same_sound(text), self.near_sound(text)] {
            found.retain(|h| !self.homophones.inside_not_cue(&text.chars, h.at, h.len));
            found.sort_by(first_and_longest);
            for h in found {
                if !hits
                    .iter()
                    .any(|k| k.at < h.at + h.len && h.at < k.at + k.len)
                {
                    hits.push(h);
                }
            }
        }
        hits.sort_by_key(|h| h.at);
        hits
    }

    /// The cues heard with their own pinyin or a listed mishearing.
    fn same_sound(&self, text: &Sounds) -> Vec<EmergencyHit> {
        (0..text.readings.len())
            .flat_map(|i| self.cues_at(text, i, None))
            .filter_map(|(ri, ci, i)| {
                let (r, (c, s)) = (&self.rules[ri], &self.rules[ri].cues[ci]);
                c.sounds_at(text, i).then(|| Self::hit(r, c, s, (i, 1.0)))
            })
            .collect()
    }

    /// The cues heard with syllables whisper confuses.
    fn near_sound(&self, text: &Sounds) -> Vec<EmergencyHit> {
        let keys = self.homophones.near_keys(text);
        (0..text.readings.len())
            .flat_map(|i| self.cues_at(text, i, Some(&keys)))
            .filter_map(|(ri, ci, i)| {
                let (r, (c, s)) = (&self.rules[ri], &self.rules[ri].cues[ci]);
                c.alike_at(text, &keys, i).map(|h| Self::hit(r, c, s, h))
            })
            .collect()
    }

    /// The (rule, cue, position) of the cues that can start at `i`: by any reading of the
    /// character there (a same-sound match, or a near one whose first syllable is the
    /// same), and for near sounds also by the sound class of its commonest reading.
    fn cues_at(
        &self,
        text: &Sounds,
        i: usize,
        near: Option<&[String]>,
    ) -> Vec<(usize, usize, usize)> {
        let mut found: Vec<(usize, usize)> = text.readings[i]
            .iter()
            .filter_map(|r| self.by_first.get(r))
            .chain(near.and_then(|k| self.by_first_near.get(&k[i])))
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|(r, c)| (r, c, i)).collect()
    }

    fn hit(
        r: &Rule,
        cue: &Cue,
        stands_for: &Option<String>,
        (at, fit): (usize, f32),
    ) -> EmergencyHit {
        EmergencyHit {
            kind: r.kind.clone(),
            target: r.target.clone(),
            cue: stands_for.clone().unwrap_or_else(|| cue.word.clone()),
            at,
            len: cue.len(),
            fit: if stands_for.is_some() {
                fit * HEARD_AS_FIT
            } else {
                fit
            },
        }
    }

    /// The words that prime the speech recogniser: the first two cues of each rule.
    pub fn prompt_words(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(|r| {
            r.cues
                .iter()
                .filter(|(_, s)| s.is_none())
                .take(2)
                .map(|(c, _)| c.word.as_str())
        })
    }

    /// The homophone rules the cues are matched with.
    pub(crate) fn homophones(&self) -> &Homophones {
        &self.homophones
    }

    /// The kinds of emergency, in the rules' order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use crate::Classifier;

    fn kind(text: &str) -> Option<String> {
        Classifier::builtin()
            .emergency_rules()
            .detect(text)
            .map(|h| h.kind)
    }

    /// Every rule on sentences a citizen says, and their linkage.
    #[test]
    fn every_rule_on_real_sentences() {
        let rules = Classifier::builtin();
        let rules = rules.emergency_rules();
        for (said, want, target) in [
            ("香洲区吉大有栋居民楼着火了，快来救火！", "fire", "119"),
            ("金湾区红旗镇有家工厂发生爆炸了", "explosion", "119"),
            ("我家厨房煤气泄漏了，味道很大", "gas_leak", "119"),
            ("燃气管道漏气了", "gas_leak", "119"),
            ("路口发生车祸，有人受伤了", "injury", "120"),
            ("万山的海边有人溺水了", "drowning", "119"),
            ("前山有一面围墙倒塌了", "collapse", "119"),
            ("井岸镇内涝很严重，车都被淹了", "flooding", "119"),
            ("电梯坏了，有人被困在里面", "trapped", "119"),
            ("楼下有人打架，还拿着刀", "violence", "110"),
            ("山上发生了山体滑坡", "disaster", "119"),
            ("三灶镇整片停水了", "water_outage", "水务局"),
            ("梅华这边大面积停电了", "power_outage", "供电局"),
            ("我们小区突然停气了", "gas_outage", "燃气公司"),
            ("救命啊，快来人", "distress", "110"),
        ] {
            let hit = rules.detect(said).unwrap_or_else(|| panic!("{said}"));
            assert_eq!(
                (hit.kind.as_str(), hit.target.as_str()),
                (want, target),
                "{said}"
            );
        }
        let kinds: Vec<&str> = rules.kinds().collect();
        assert_eq!(kinds.len(), 14, "{kinds:?}");
    }

    /// The earliest cue names the emergency; the longest where two start together.
    #[test]
    fn the_first_cue_heard_names_the_emergency() {
        assert_eq!(kind("有人被困，楼下着火了").as_deref(), Some("trapped"));
        assert_eq!(kind("楼下着火了，有人被困").as_deref(), Some("fire"));
        let hit = Classifier::builtin()
            .emergency_rules()
            .detect("家里天然气泄漏了")
            .expect("gas leak");
        assert_eq!((hit.cue.as_str(), hit.len), ("天然气泄漏", 5));
    }

    /// A hotline hears far more ordinary requests than emergencies: near sounds must not
    /// turn them into urgent notices.
    #[test]
    fn ordinary_requests_raise_no_emergency() {
        for said in [
            "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了。",
            "你好,我要投诉,相周区奉皇陆有个工地每天晚上十公道十二点,噪音太大了,吵得我们睡不着假。",
            "请问在香洲区哪里可以办护照？",
            "我想咨询一下，公积金怎么提取？",
            "我家门口的下水道堵塞了，请帮忙处理一下。",
            "我要举报有人在万山海域非法捕鱼。",
            "建议在高栏港多开几条公交线路。",
            "我想表扬一下前山派出所的民警，态度很好。",
            "地图上这条路的名字写错了，请更正一下。",
            "高新区这个小区的物业乱收费，我要投诉。",
            "请问横琴的社保服务中心几点上班？",
            "孩子上小学需要什么材料，在哪里报名？",
            "感谢横琴税务局的工作人员，帮我解决了问题。",
            "政府网站上的办公地址信息有误。",
            "斗门镇的工地晚上一直施工，噪音扰民。",
            "举报一下，香洲区湾仔有人私搭乱建。",
            "我有个建议，横琴的公园应该多装一些路灯。",
            "给万山的社区医生点赞，他们非常负责。",
            "你们公布的办事电话不准确，一直打不通。",
            "高栏港的企业怎么办理环评手续？",
            "机场的出租车司机拒载，态度恶劣。",
            "我想咨询一下期货交易的投诉渠道。",
            "您好，这里是珠海幺二三四五热线，请问有什么可以帮您？",
            "我有个建议，拱北口岸附近的公交站太少了，希望能多设几个站点。",
            "你好，我想咨询一下，在珠海怎么办理社保卡，需要带什么材料？",
            "小区的路灯坏了好久，晚上黑漆漆的没人管。",
            "我的医保卡丢了，怎么补办？",
            "我们这里的公交车经常不按时到站。",
            "菜市场的摊位乱摆，影响交通。",
            "楼上邻居装修太吵了，周末也不停。",
        ] {
            assert_eq!(kind(said), None, "{said}");
        }
    }
}
