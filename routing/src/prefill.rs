//! The ticket a call proposes, filled in from its transcript.
//!
//! When a call ends, the agent should find the ticket already filled: kind (Art. 8),
//! summary, district and address, what the citizen asks for, Art. 7 non-acceptance hints
//! and Art. 15 emergency cues, each pointing at the words it came from (segment and
//! character range) with a confidence, for the agent to confirm.
//!
//! Machine transcripts of telephone Mandarin get most characters' *sounds* right and
//! many characters wrong, so every cue and place is matched by sound ([`crate::sound`]):
//! toneless pinyin, the transcript's characters with all their readings, the cue as it
//! is meant; district names also with one
//! letter of pinyin off; Art. 15 cues also by the homophones whisper produces
//! ([`crate::emergency`]). Only the citizen's words count: the agent's questions
//! ("哪个区?") are not the citizen's facts. A one-character cue (请) must start a word in
//! jieba's segmentation (jieba-rs, with the place names added to its dictionary), so that
//! 申请 or 邀请 are not requests (jieba may join it with what follows: 请派); longer cues
//! match across segmentation, which a transcript's wrong characters often break.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contract::event::new_event_id;
use contract::{
    ChannelKind, EmergencyCue, Location, PrefillField, PrefillName, SCHEMA_VERSION, Speaker,
    TicketDraft, TicketKind, TicketRef, TranscriptSegment, TranscriptSpan, Urgency,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::recognize::{Finding, Medium};
use crate::sound::{Cue, Sounds};
use crate::{Classifier, CueError, SUMMARY_CHARS, emergency_cue, kind_with_emergency, summarize};

/// The shipped place list.
pub const DEFAULT_PLACES: &str = include_str!("../data/places.toml");
/// The location prefill fields name: the address (or the district alone) and the
/// district.
fn location_of(prefill: &[PrefillField]) -> Option<Location> {
    let value = |n: PrefillName| {
        prefill
            .iter()
            .find(|f| f.name == n)
            .map(|f| f.value.clone())
    };
    let district = value(PrefillName::District);
    let address = value(PrefillName::Address);
    match (&address, &district) {
        (None, None) => None,
        _ => Some(Location {
            text: address.or(district.clone()).unwrap_or_default(),
            district,
        }),
    }
}

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

/// A kind's name as the contract spells it (`help`, `complaint`...).
fn kind_name(kind: TicketKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How sure a finding is: a word mended by sound (找火 read as 着火) counts as a
/// listed mishearing did before.
fn finding_fit(f: &Finding) -> f32 {
    if f.mended { 0.9 } else { 1.0 }
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
            let hit = if fuzzy {
                c.find_fuzzy(&s.sounds)
            } else {
                c.find(&s.sounds)
            };
            hit.map(|(at, fit)| (s, c, at, fit))
        })
    })
}

/// Reads ticket fields out of call transcripts.
#[derive(Debug, Clone)]
pub struct Prefiller {
    jieba: Arc<jieba_rs::Jieba>,
    classifier: Classifier,
    kinds: Vec<(TicketKind, Vec<Cue>)>,
    districts: Vec<Cue>,
    /// Towns, longest first, and the district each is in (by town name).
    towns: Vec<Cue>,
    town_district: HashMap<String, String>,
    landmarks: Vec<Cue>,
    departments: Vec<Cue>,
    request: Vec<Cue>,
    non_acceptance: Vec<Cue>,
}

/// One citizen segment prepared for matching (its word bounds are jieba's).
struct Said<'a> {
    index: usize,
    seg: &'a TranscriptSegment,
    sounds: Sounds,
}

impl Prefiller {
    /// From the data files' texts (cues.toml, homophones.toml, places.toml,
    /// prefill.toml).
    pub fn from_toml(
        cues: &str,
        homophones: &str,
        places: &str,
        prefill: &str,
    ) -> Result<Prefiller, CueError> {
        Self::from_data(
            cues,
            homophones,
            crate::recognize::DEFAULT_RECOGNITION,
            places,
            prefill,
        )
    }

    /// [`Prefiller::from_toml`] with the recognition data's text too.
    pub fn from_data(
        cues: &str,
        homophones: &str,
        recognition: &str,
        places: &str,
        prefill: &str,
    ) -> Result<Prefiller, CueError> {
        let places: PlaceFile = toml::from_str(places)?;
        let prefill: PrefillFile = toml::from_str(prefill)?;
        // One segmenter for the recogniser and the places: its dictionary has both.
        let place_words: Vec<&str> = places
            .districts
            .iter()
            .chain(places.towns.keys())
            .chain(&places.landmarks)
            .chain(&places.departments)
            .map(String::as_str)
            .collect();
        let classifier = Classifier::from_data(cues, homophones, recognition, &place_words)?;
        let h = classifier.emergency_rules().homophones().clone();
        let cue_list = |v: &[String]| v.iter().map(|w| Cue::new(w, &h)).collect::<Vec<_>>();
        let mut towns: Vec<Cue> = places.towns.keys().map(|t| Cue::new(t, &h)).collect();
        // Longest first, then by name, so that matching is deterministic.
        towns.sort_by(|a, b| b.len().cmp(&a.len()).then(a.word.cmp(&b.word)));
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
            jieba: classifier.recognizer().jieba().clone(),
            kinds: classifier
                .kinds
                .iter()
                .map(|(k, cues)| (*k, cue_list(cues)))
                .collect(),
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
        Self::from_toml(
            crate::DEFAULT_CUES,
            crate::sound::DEFAULT_HOMOPHONES,
            DEFAULT_PLACES,
            DEFAULT_PREFILL,
        )
        .unwrap_or_else(|e| unreachable!("shipped prefill data: {e}"))
    }

    /// The shipped data with another Art. 15 recognition file (a candidate being tried
    /// with `gateway replay-recognition`).
    pub fn with_recognition(recognition: &str) -> Result<Prefiller, CueError> {
        Self::from_data(
            crate::DEFAULT_CUES,
            crate::sound::DEFAULT_HOMOPHONES,
            recognition,
            DEFAULT_PLACES,
            DEFAULT_PREFILL,
        )
    }

    /// The one built-in prefiller of the process. Building one loads jieba's dictionary
    /// (tens of MB, a noticeable pause), so the gateway's recogniser prompt and the SIP
    /// channel's drafts share this one rather than each building their own.
    pub fn shared() -> Arc<Prefiller> {
        static SHARED: std::sync::OnceLock<Arc<Prefiller>> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Self::builtin())).clone()
    }

    /// The words that prime the recogniser, most important first (the prompt keeps as
    /// many as fit): the Art. 15 cues (two per kind of emergency), the request kinds'
    /// key words (Art. 8), then districts, towns, landmarks and departments.
    pub fn hotwords(&self) -> Vec<&str> {
        self.cue_words()
            .into_iter()
            .chain(self.place_words())
            .collect()
    }

    /// The Art. 15 cues (two per kind of emergency) and the request kinds' key words.
    pub fn cue_words(&self) -> Vec<&str> {
        let rules = self.classifier.emergency_rules();
        rules
            .prompt_words()
            .chain(self.classifier.kind_words())
            .collect()
    }

    /// Districts, towns, landmarks and departments.
    pub fn place_words(&self) -> Vec<&str> {
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
        let (prefill, emergencies) = self.read(&transcript);
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
        let location = location_of(&prefill);
        let urgency = if emergencies.is_empty() {
            Urgency::Normal
        } else {
            Urgency::Emergency
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
            emergency: emergencies.first().cloned(),
            emergencies,
            contacts,
            related_tickets: Vec::new(),
            transcript,
            prefill,
            restriction: None,
            transferred_from: None,
        }
    }

    /// Where the citizen's words say the matter is (district and address), if they do.
    pub fn location(&self, transcript: &[TranscriptSegment]) -> Option<Location> {
        location_of(&self.read(transcript).0)
    }

    /// [`Prefiller::location`] of a written text (a chat message, an SMS): the same
    /// place matching, the text taken as the citizen's one utterance.
    pub fn location_of_text(&self, text: &str) -> Option<Location> {
        let segment = TranscriptSegment {
            call_id: Uuid::nil(),
            speaker: contract::Speaker::Citizen,
            start_ms: 0,
            end_ms: 0,
            text: text.to_owned(),
            confidence: 1.0,
            deferred: false,
        };
        self.location(std::slice::from_ref(&segment))
    }

    /// The fields read out of the citizen's segments of a transcript.
    pub fn fields(&self, transcript: &[TranscriptSegment]) -> Vec<PrefillField> {
        self.read(transcript).0
    }

    /// The fields, and the Art. 15 emergencies: one per linkage target, in the order
    /// they were said.
    fn read(&self, transcript: &[TranscriptSegment]) -> (Vec<PrefillField>, Vec<EmergencyCue>) {
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
                    sounds: Sounds::new(&seg.text, Some(bounds)),
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
                        .filter_map(move |c| c.find(&s.sounds).map(|(at, fit)| (s, c, at, fit)))
                })
                .collect();
            if let Some(h) = hits.first()
                && best.as_ref().is_none_or(|b| hits.len() > b.1)
            {
                best = Some((*kind, hits.len(), *h));
            }
        }
        // Art. 15: each linkage target the citizen's segments need, from the first
        // segment that names it; the field's value is the kind of emergency, its span
        // the words heard.
        let mut emergencies: Vec<(&Said<'_>, Finding)> = Vec::new();
        for s in &said {
            let reading = self
                .classifier
                .read_emergencies(&s.seg.text, Medium::Speech);
            for f in reading.findings {
                if !emergencies.iter().any(|(_, e)| e.target == f.target) {
                    emergencies.push((s, f));
                }
            }
        }
        match (best, emergencies.first()) {
            (Some((kind, _, (s, c, at, fit))), _) => {
                out.push(field(
                    PrefillName::Kind,
                    kind_name(kind),
                    s,
                    at,
                    c.len(),
                    fit,
                ));
            }
            // Art. 8: an emergency with no other request named is a request for help.
            (None, Some((s, f))) => {
                let kind = kind_with_emergency(TicketKind::Unknown, true);
                out.push(field(
                    PrefillName::Kind,
                    kind_name(kind),
                    s,
                    f.at,
                    f.len,
                    finding_fit(f),
                ));
            }
            (None, None) => {}
        }
        for (s, f) in &emergencies {
            out.push(field(
                PrefillName::Emergency,
                f.kind.clone(),
                s,
                f.at,
                f.len,
                finding_fit(f),
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
            let end = s.sounds.chars[at..]
                .iter()
                .position(|c| "，。？！,.?!".contains(*c))
                .map_or(s.sounds.chars.len(), |p| at + p);
            let clause_start = s.sounds.chars[..at]
                .iter()
                .rposition(|c| "，。？！,.?!".contains(*c))
                .map_or(0, |p| p + 1);
            let value: String = s.sounds.chars[clause_start..end].iter().collect();
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
            if let Some((s, (at, fit))) =
                said.iter().find_map(|s| c.find(&s.sounds).map(|h| (s, h)))
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
            out.push(field(
                PrefillName::Summary,
                value,
                s,
                0,
                s.sounds.chars.len(),
                1.0,
            ));
        }
        let cues = emergencies.iter().map(|(_, f)| emergency_cue(f)).collect();
        (out, cues)
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
            Some("water_outage"),
            "停水: the kind of emergency"
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

    /// Issue 10: what whisper wrote for emergency words on short utterances.
    #[test]
    fn art15_homophones_from_transcripts_make_the_draft_urgent_with_its_kind() {
        let p = Prefiller::builtin();
        for (heard, kind) in [
            ("我家楼下找火了", "fire"),
            ("我家楼下找活了，快来人", "fire"),
            ("我家楼下潮火了", "fire"),
            ("喂，我家楼下澳火了", "fire"),
            ("我家厨房没机械路了", "gas_leak"),
            ("我家厨房没气泄露了", "gas_leak"),
            ("电梯里有人被捆了", "trapped"),
        ] {
            let d = p.draft_for_call(
                TicketRef("ZH1".into()),
                "k".into(),
                vec![],
                vec![seg(Speaker::Citizen, heard)],
                Utc::now(),
            );
            assert_eq!(d.urgency, Urgency::Emergency, "{heard}");
            let e = d.emergency.as_ref().expect("the cue on the draft");
            assert_eq!(e.kind, kind, "{heard}");
            assert_eq!(
                field(&d.prefill, PrefillName::Emergency).map(|x| x.value.as_str()),
                Some(kind)
            );
            assert_eq!(
                d.kind,
                TicketKind::Help,
                "Art. 8: an emergency alone is 求助: {heard}"
            );
            let span = &field(&d.prefill, PrefillName::Emergency)
                .expect("field")
                .span;
            let said: String = heard
                .chars()
                .skip(span.start)
                .take(span.end - span.start)
                .collect();
            assert_eq!(said, e.heard, "the span points at the words heard");
        }
    }

    #[test]
    fn a_named_request_keeps_its_kind_beside_an_emergency() {
        let p = Prefiller::builtin();
        let d = p.draft_for_call(
            TicketRef("ZH1".into()),
            "k".into(),
            vec![],
            vec![seg(Speaker::Citizen, "我要投诉，三灶镇又停水了")],
            Utc::now(),
        );
        assert_eq!(d.kind, TicketKind::Complaint);
        assert_eq!(
            d.emergency.map(|e| (e.kind, e.target)),
            Some(("water_outage".to_owned(), "水务局".to_owned()))
        );
    }
}
