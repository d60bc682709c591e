//! The ticket a call proposes, filled in from its transcript.
//!
//! When a call ends, the agent should find the ticket already filled: kind (Art. 8),
//! summary, district and address, what the citizen asks for, Art. 7 non-acceptance hints
//! and Art. 15 emergency cues, each pointing at the words it came from (segment and
//! character range) with a confidence, for the agent to confirm.
//!
//! Machine transcripts of telephone Mandarin get most characters' *sounds* right and
//! many characters wrong (香洲 as 相周, 着火 as 找火, 咨询 as 资讯). So every cue and place
//! is matched by toneless pinyin, with all readings of a heteronym (着 is zhe, zhao and
//! zhuo), through the `pinyin` crate; district names also with one letter of pinyin off.
//! Only the citizen's words count: the agent's questions ("哪个区?") are not the
//! citizen's facts. A one-character cue (请) must start a word in jieba's segmentation
//! (jieba-rs, with the place names added to its dictionary), so that 申请 or 邀请 are
//! not requests (jieba may join it with what follows: 请派); longer cues match across
//! segmentation, which a transcript's wrong characters often break.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contract::event::new_event_id;
use contract::{
    ChannelKind, Location, PrefillField, PrefillName, SCHEMA_VERSION, Speaker, TicketDraft,
    TicketKind, TicketRef, TranscriptSegment, TranscriptSpan, Urgency,
};
use pinyin::ToPinyinMulti;
use serde::Deserialize;
use uuid::Uuid;

use crate::{Classifier, CueError, SUMMARY_CHARS, summarize};

/// The shipped place list.
pub const DEFAULT_PLACES: &str = include_str!("../data/places.toml");
/// The shipped prefill cues.
pub const DEFAULT_PREFILL: &str = include_str!("../data/prefill.toml");

#[derive(Debug, Deserialize)]
struct PlaceFile {
    districts: Vec<String>,
    departments: Vec<String>,
    towns: HashMap<String, String>,
    landmarks: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PrefillFile {
    request: Vec<String>,
    non_acceptance: Vec<String>,
}

/// A word to find, with its readings per character.
#[derive(Debug, Clone)]
struct Cue {
    word: String,
    readings: Vec<Vec<String>>,
}

fn readings(text: &str) -> Vec<Vec<String>> {
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

impl Cue {
    fn new(word: &str) -> Cue {
        Cue {
            word: word.to_owned(),
            readings: readings(word),
        }
    }

    fn len(&self) -> usize {
        self.readings.len()
    }

    /// Where the cue sounds in `text` (character offsets): every character shares a
    /// reading with the cue's.
    fn find(&self, said: &Said<'_>) -> Option<(usize, f32)> {
        let text = &said.readings;
        let n = self.len();
        if n == 0 || text.len() < n {
            return None;
        }
        (0..=text.len() - n)
            .find(|&i| {
                (0..n).all(|j| text[i + j].iter().any(|r| self.readings[j].contains(r)))
                    && (n > 1 || said.bounds.contains(&i))
            })
            .map(|i| (i, 1.0))
    }

    /// Like [`Cue::find`], and failing that, the first window whose default readings
    /// are one letter away from the cue's (for names of three characters or more).
    fn find_fuzzy(&self, said: &Said<'_>) -> Option<(usize, f32)> {
        if let Some(hit) = self.find(said) {
            return Some(hit);
        }
        let text = &said.readings;
        let n = self.len();
        if n < 3 || text.len() < n {
            return None;
        }
        let cue: String = self.readings.iter().map(|r| r[0].as_str()).collect();
        (0..=text.len() - n)
            .find(|&i| {
                let window: String = text[i..i + n].iter().map(|r| r[0].as_str()).collect();
                levenshtein(&cue, &window) <= 1
            })
            .map(|i| (i, 0.7))
    }
}

/// A cue heard: the segment, the cue, where (characters) and how well it matched.
type Heard<'s, 't, 'c> = (&'s Said<'t>, &'c Cue, usize, f32);

/// The first place a list's cue sounds in the citizen's words.
fn first_heard<'s, 't, 'c>(
    said: &'s [Said<'t>],
    cues: &'c [Cue],
    fuzzy: bool,
) -> Option<Heard<'s, 't, 'c>> {
    said.iter().find_map(|s| {
        cues.iter().find_map(|c| {
            let hit = if fuzzy { c.find_fuzzy(s) } else { c.find(s) };
            hit.map(|(at, fit)| (s, c, at, fit))
        })
    })
}

fn levenshtein(a: &str, b: &str) -> usize {
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

/// Reads ticket fields out of call transcripts.
#[derive(Debug, Clone)]
pub struct Prefiller {
    jieba: Arc<jieba_rs::Jieba>,
    classifier: Classifier,
    kinds: Vec<(TicketKind, Vec<Cue>)>,
    emergency: Vec<Cue>,
    districts: Vec<Cue>,
    /// Towns, longest first, and the district each is in (by town name).
    towns: Vec<Cue>,
    town_district: HashMap<String, String>,
    landmarks: Vec<Cue>,
    departments: Vec<Cue>,
    request: Vec<Cue>,
    non_acceptance: Vec<Cue>,
}

/// One citizen segment prepared for matching.
struct Said<'a> {
    index: usize,
    seg: &'a TranscriptSegment,
    chars: Vec<char>,
    readings: Vec<Vec<String>>,
    /// Character offsets where jieba's words start and end.
    bounds: HashSet<usize>,
}

impl Prefiller {
    /// From the data files' texts.
    pub fn from_toml(cues: &str, places: &str, prefill: &str) -> Result<Prefiller, CueError> {
        let classifier = Classifier::from_toml(cues)?;
        let places: PlaceFile = toml::from_str(places)?;
        let prefill: PrefillFile = toml::from_str(prefill)?;
        let cue_list = |v: &[String]| v.iter().map(|w| Cue::new(w)).collect::<Vec<_>>();
        let mut towns: Vec<Cue> = places.towns.keys().map(|t| Cue::new(t)).collect();
        // Longest first, then by name, so that matching is deterministic.
        towns.sort_by(|a, b| b.len().cmp(&a.len()).then(a.word.cmp(&b.word)));
        let mut jieba = jieba_rs::Jieba::new();
        for w in places
            .districts
            .iter()
            .chain(places.towns.keys())
            .chain(&places.landmarks)
            .chain(&places.departments)
        {
            jieba.add_word(w, None, None);
        }
        if let Some((t, d)) = places
            .towns
            .iter()
            .find(|(_, d)| !places.districts.contains(d))
        {
            return Err(CueError::Inconsistent(format!(
                "town {t} is in {d}, which is not in districts"
            )));
        }
        Ok(Prefiller {
            jieba: Arc::new(jieba),
            kinds: classifier
                .kinds
                .iter()
                .map(|(k, cues)| (*k, cue_list(cues)))
                .collect(),
            emergency: cue_list(&classifier.emergency),
            classifier,
            districts: cue_list(&places.districts),
            towns,
            town_district: places.towns.clone(),
            landmarks: cue_list(&places.landmarks),
            departments: cue_list(&places.departments),
            request: cue_list(&prefill.request),
            non_acceptance: cue_list(&prefill.non_acceptance),
        })
    }

    /// With the shipped data.
    pub fn builtin() -> Prefiller {
        // The shipped files are checked by a unit test; they cannot fail at run time.
        Self::from_toml(crate::DEFAULT_CUES, DEFAULT_PLACES, DEFAULT_PREFILL)
            .unwrap_or_else(|e| unreachable!("shipped prefill data: {e}"))
    }

    /// The one built-in prefiller of the process. Building one loads jieba's dictionary
    /// (tens of MB, a noticeable pause), so the gateway's recogniser prompt and the SIP
    /// channel's drafts share this one rather than each building their own.
    pub fn shared() -> Arc<Prefiller> {
        static SHARED: std::sync::OnceLock<Arc<Prefiller>> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Self::builtin())).clone()
    }

    /// The names that prime the recogniser (districts, towns, landmarks, departments).
    pub fn hotwords(&self) -> Vec<&str> {
        self.districts
            .iter()
            .chain(&self.towns)
            .chain(&self.landmarks)
            .chain(&self.departments)
            .map(|c| c.word.as_str())
            .collect()
    }

    /// The ticket draft of a call: the transcript, and the fields read out of it.
    pub fn draft_for_call(
        &self,
        ticket_ref: TicketRef,
        citizen_key: String,
        contacts: Vec<Uuid>,
        transcript: Vec<TranscriptSegment>,
        now: DateTime<Utc>,
    ) -> TicketDraft {
        let prefill = self.fields(&transcript);
        let value = |n: PrefillName| {
            prefill
                .iter()
                .find(|f| f.name == n)
                .map(|f| f.value.clone())
        };
        let kind = prefill
            .iter()
            .find(|f| f.name == PrefillName::Kind)
            .and_then(|f| serde_json::from_value(serde_json::Value::String(f.value.clone())).ok())
            .unwrap_or(TicketKind::Unknown);
        let district = value(PrefillName::District);
        let address = value(PrefillName::Address);
        let location = match (&address, &district) {
            (None, None) => None,
            _ => Some(Location {
                text: address.clone().or(district.clone()).unwrap_or_default(),
                district,
            }),
        };
        let urgency = if value(PrefillName::Emergency).is_some() {
            Urgency::Emergency
        } else {
            Urgency::Normal
        };
        TicketDraft {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            ticket_ref,
            created_at: now,
            channel: ChannelKind::Phone,
            citizen_key,
            kind,
            summary: value(PrefillName::Summary).unwrap_or_default(),
            location,
            urgency,
            contacts,
            related_tickets: Vec::new(),
            transcript,
            prefill,
        }
    }

    /// The fields read out of the citizen's segments of a transcript.
    pub fn fields(&self, transcript: &[TranscriptSegment]) -> Vec<PrefillField> {
        let said: Vec<Said<'_>> = transcript
            .iter()
            .enumerate()
            .filter(|(_, s)| s.speaker == Speaker::Citizen && !s.text.is_empty())
            .map(|(index, seg)| {
                let mut bounds = HashSet::from([0]);
                let mut at = 0;
                for word in self.jieba.cut(&seg.text, true) {
                    at += word.chars().count();
                    bounds.insert(at);
                }
                Said {
                    index,
                    seg,
                    chars: seg.text.chars().collect(),
                    readings: readings(&seg.text),
                    bounds,
                }
            })
            .collect();
        let mut out = Vec::new();
        let field =
            |name, value: String, s: &Said<'_>, start: usize, len: usize, fit: f32| PrefillField {
                name,
                value,
                span: TranscriptSpan {
                    segment: s.index,
                    start,
                    end: start + len,
                },
                confidence: s.seg.confidence * fit,
            };
        // Kind: the kind with the most cues heard, ties to the earlier in priority.
        let mut best: Option<(TicketKind, usize, Heard<'_, '_, '_>)> = None;
        for (kind, cues) in &self.kinds {
            let hits: Vec<_> = said
                .iter()
                .flat_map(|s| {
                    cues.iter()
                        .filter_map(move |c| c.find(s).map(|(at, fit)| (s, c, at, fit)))
                })
                .collect();
            if let Some(h) = hits.first()
                && best.as_ref().is_none_or(|b| hits.len() > b.1)
            {
                best = Some((*kind, hits.len(), *h));
            }
        }
        if let Some((kind, _, (s, c, at, fit))) = best {
            let name = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push(field(PrefillName::Kind, name, s, at, c.len(), fit));
        }
        if let Some((s, c, at, fit)) = first_heard(&said, &self.emergency, false) {
            out.push(field(
                PrefillName::Emergency,
                c.word.clone(),
                s,
                at,
                c.len(),
                fit,
            ));
        }
        // District: said, or implied by a town.
        let town = first_heard(&said, &self.towns, false);
        let district = first_heard(&said, &self.districts, true);
        match (district, &town) {
            (Some((s, c, at, fit)), _) => {
                out.push(field(
                    PrefillName::District,
                    c.word.clone(),
                    s,
                    at,
                    c.len(),
                    fit,
                ));
            }
            (None, Some((s, c, at, fit))) => {
                if let Some(d) = self.town_district.get(&c.word) {
                    out.push(field(
                        PrefillName::District,
                        d.clone(),
                        s,
                        *at,
                        c.len(),
                        fit * 0.9,
                    ));
                }
            }
            (None, None) => {}
        }
        // Address: the town and the landmark heard in the first segment that names a
        // place, in the official spelling. Places from different segments are not
        // joined: a caller with two matters (noise in one district, an outage in
        // another) must not get an address made of both.
        let landmark = first_heard(&said, &self.landmarks, false);
        let first_place = [&town, &landmark]
            .into_iter()
            .flatten()
            .map(|p| p.0.index)
            .min();
        let mut parts: Vec<_> = [town, landmark]
            .into_iter()
            .flatten()
            .filter(|p| Some(p.0.index) == first_place)
            .collect();
        parts.sort_by_key(|p| p.2);
        if let (Some(&(s, _, at, fit)), Some(last)) = (parts.first(), parts.last()) {
            let value: String = parts.iter().map(|(_, c, _, _)| c.word.as_str()).collect();
            let end = last.2 + last.1.len();
            out.push(field(PrefillName::Address, value, s, at, end - at, fit));
        }
        if let Some((s, c, at, fit)) = first_heard(&said, &self.departments, true) {
            out.push(field(
                PrefillName::Department,
                c.word.clone(),
                s,
                at,
                c.len(),
                fit,
            ));
        }
        // The request: the clause where a request cue starts, to the clause's end.
        if let Some((s, _, at, fit)) = first_heard(&said, &self.request, false) {
            let end = s.chars[at..]
                .iter()
                .position(|c| "，。？！,.?!".contains(*c))
                .map_or(s.chars.len(), |p| at + p);
            let clause_start = s.chars[..at]
                .iter()
                .rposition(|c| "，。？！,.?!".contains(*c))
                .map_or(0, |p| p + 1);
            let value: String = s.chars[clause_start..end].iter().collect();
            out.push(field(
                PrefillName::Request,
                value,
                s,
                clause_start,
                end - clause_start,
                fit,
            ));
        }
        for c in &self.non_acceptance {
            if let Some(s) = said.iter().find(|s| c.find(s).is_some())
                && let Some((at, fit)) = c.find(s)
            {
                out.push(field(
                    PrefillName::NonAcceptance,
                    c.word.clone(),
                    s,
                    at,
                    c.len(),
                    fit,
                ));
            }
        }
        // Summary: the citizen's first words.
        if let Some(s) = said.first() {
            let all: String = said.iter().map(|s| s.seg.text.as_str()).collect();
            let value = summarize(&all, SUMMARY_CHARS);
            out.push(field(PrefillName::Summary, value, s, 0, s.chars.len(), 1.0));
        }
        out
    }

    /// The classifier the prefill shares cues with.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(speaker: Speaker, text: &str) -> TranscriptSegment {
        TranscriptSegment {
            call_id: Uuid::nil(),
            speaker,
            start_ms: 0,
            end_ms: 1000,
            text: text.into(),
            confidence: 0.9,
            deferred: false,
        }
    }

    fn field(f: &[PrefillField], n: PrefillName) -> Option<&PrefillField> {
        f.iter().find(|x| x.name == n)
    }

    #[test]
    fn shipped_data_parses_and_gives_hotwords() {
        let p = Prefiller::builtin();
        assert!(p.hotwords().contains(&"香洲区"));
        assert!(p.hotwords().contains(&"三灶镇"));
    }

    /// Transcripts as whisper base wrote them for the Kokoro fixtures.
    #[test]
    fn homophones_in_a_transcript_still_give_kind_district_and_address() {
        let p = Prefiller::builtin();
        let t = vec![
            seg(
                Speaker::Agent,
                "你好,这里是珠海12345热线,请问有什么可以帮您。",
            ),
            seg(
                Speaker::Citizen,
                "你好,我要投诉,相周区奉皇陆有个工地每天晚上十公道十二点,噪音太大了,吵得我们睡不着假。",
            ),
        ];
        let f = p.fields(&t);
        assert_eq!(
            field(&f, PrefillName::Kind).map(|x| x.value.as_str()),
            Some("complaint")
        );
        let d = field(&f, PrefillName::District).expect("district");
        assert_eq!(d.value, "香洲区");
        assert_eq!(d.span.segment, 1, "the citizen's segment, not the agent's");
        let said: String = t[1]
            .text
            .chars()
            .skip(d.span.start)
            .take(d.span.end - d.span.start)
            .collect();
        assert_eq!(said, "相周区", "the span points at the words heard");
        assert!(field(&f, PrefillName::Emergency).is_none());
    }

    #[test]
    fn an_emergency_with_a_town_and_road_is_located_and_urgent() {
        let p = Prefiller::builtin();
        let t = vec![seg(
            Speaker::Citizen,
            "为我家楼下找火了在金温区三造镇海城路烟很大,请赶快派人过来。",
        )];
        let d = p.draft_for_call(TicketRef("ZH1".into()), "k".into(), vec![], t, Utc::now());
        assert_eq!(d.urgency, Urgency::Emergency, "找火 sounds like 着火");
        let loc = d.location.expect("location");
        assert_eq!(
            loc.district.as_deref(),
            Some("金湾区"),
            "金温区 is one letter off"
        );
        assert_eq!(loc.text, "三灶镇海澄路");
        let req = field(&d.prefill, PrefillName::Request).expect("request");
        assert!(req.value.contains("派人过来"), "{}", req.value);
    }

    #[test]
    fn a_town_implies_its_district_and_art7_hints_are_flagged() {
        let p = Prefiller::builtin();
        let t = vec![seg(
            Speaker::Citizen,
            "抖门区紧暗镇已经停水两天了,这个事我已经在法院起诉了,请问什么时候能恢复公水。",
        )];
        let f = p.fields(&t);
        assert_eq!(
            field(&f, PrefillName::District).map(|x| x.value.as_str()),
            Some("斗门区")
        );
        assert!(
            f.iter()
                .any(|x| x.name == PrefillName::NonAcceptance && x.value == "法院")
        );
        assert_eq!(
            field(&f, PrefillName::Emergency).map(|x| x.value.as_str()),
            Some("停水")
        );
        let only_town = p.fields(&[seg(Speaker::Citizen, "我在井岸镇,路灯坏了")]);
        assert_eq!(
            field(&only_town, PrefillName::District).map(|x| x.value.as_str()),
            Some("斗门区")
        );
    }

    #[test]
    fn a_department_named_is_read_out_even_with_a_homophone_nearby() {
        let p = Prefiller::builtin();
        let praise = p.fields(&[seg(
            Speaker::Citizen,
            "我想表扬一下相周区市场监督管理局的工作人员,他们处理我的问题很及时。",
        )]);
        assert_eq!(
            field(&praise, PrefillName::Department).map(|x| x.value.as_str()),
            Some("市场监督管理局")
        );
        assert_eq!(
            field(&praise, PrefillName::Kind).map(|x| x.value.as_str()),
            Some("praise")
        );
    }

    #[test]
    fn two_matters_in_two_districts_are_not_joined_into_one_address() {
        let p = Prefiller::builtin();
        let f = p.fields(&[
            seg(
                Speaker::Citizen,
                "我要投诉,香洲区、凤凰路有个工地每天晚上施工。",
            ),
            seg(Speaker::Citizen, "斗门区、井岸镇已经停水两天了。"),
        ]);
        assert_eq!(
            field(&f, PrefillName::District).map(|x| x.value.as_str()),
            Some("香洲区")
        );
        let a = field(&f, PrefillName::Address).expect("address");
        assert_eq!(a.value, "凤凰路");
        assert_eq!(a.span.segment, 0);
    }

    #[test]
    fn a_one_character_cue_must_start_a_word() {
        let p = Prefiller::builtin();
        let f = p.fields(&[seg(Speaker::Citizen, "我上个月申请了低保。")]);
        assert!(
            field(&f, PrefillName::Request).is_none(),
            "申请 is not 请: {f:?}"
        );
        let f = p.fields(&[seg(Speaker::Citizen, "路灯坏了，请派人来修。")]);
        assert_eq!(
            field(&f, PrefillName::Request).map(|x| x.value.as_str()),
            Some("请派人来修")
        );
    }

    #[test]
    fn the_agents_words_are_not_the_citizens_facts() {
        let p = Prefiller::builtin();
        let f = p.fields(&[seg(Speaker::Agent, "请问您在香洲区还是金湾区?是投诉吗?")]);
        assert!(f.is_empty(), "{f:?}");
    }
}
