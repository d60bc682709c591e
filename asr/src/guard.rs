//! Guards against whisper's known failures on telephone audio.
//!
//! - **Text over silence.** Given noise or silence, whisper writes the subtitle credits
//!   and sign-offs it saw in training ("谢谢观看", "字幕由Amara.org社区提供"...). The
//!   voice-activity detector keeps most silence away; what slips through is dropped when
//!   whisper was unsure of its words (whisper.cpp's no-speech probability stays near zero
//!   under a prompt, so the mean token probability is the signal), when it repeats its
//!   prompt back, or when the whole text is a known phrase (`data/hallucinations.txt`,
//!   data not code, so operators can add what they see).
//! - **Traditional characters.** The Simplified primer makes whisper write Simplified
//!   Chinese, but not always: 樓 for 楼, 墻 for 墙 slip through on short utterances. The
//!   text goes through OpenCC's Traditional-to-Simplified conversion (`ferrous-opencc`,
//!   OpenCC's dictionaries in pure Rust), so that matching and the agent see one script.
//! - **Repetition loops.** Greedy decoding can fall into repeating what it just wrote,
//!   from one character to a whole sentence ("X。X。X…"), until the token budget ends
//!   (seen most with short utterances: whisper.cpp's issue 1951). Two checks, both on
//!   the text alone (0.17 ms for 201 characters without a loop, against seconds of
//!   decoding):
//!   - a unit of any length repeated back to back is collapsed to one copy: five copies
//!     of one character, three of 2-7 characters, two of 8 or more (loop copies of a
//!     long unit may differ by a homophone: up to one character in eight);
//!   - a clause (between sentence or clause marks) of 6 or more characters that repeats
//!     an earlier clause of the same utterance, or is a cut-off start of one, is
//!     dropped.
//!
//!   A person does repeat short things ("喂，喂", "救命啊救命啊", "好的好的"), and these
//!   stay. whisper's own loop check is the gzip compression ratio of the text (above 2.4
//!   it falls back to a higher temperature): it is blind to a sentence said twice or
//!   three times, whose ratio stays under 2.4 ([`compression_ratio`]; the unit tests
//!   show it), which is exactly the loop that short utterances fall into.

/// The known phrases, from `data/hallucinations.txt`.
fn phrases() -> impl Iterator<Item = &'static str> {
    include_str!("../data/hallucinations.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn is_punctuation(c: char) -> bool {
    c.is_whitespace()
        || c.is_ascii_punctuation()
        || "，。！？、；：“”‘’（）《》【】…—·～".contains(c)
}

/// The text in Simplified characters (OpenCC t2s). A few characters are Simplified
/// and Traditional at once, and t2s writes them the common way: 乾 of 乾务镇 becomes 干.
/// So the words in `keep` (the prompt's place names, spelled as the city spells them)
/// stay as they are where the text has them.
pub fn simplified<S: AsRef<str>>(text: &str, keep: &[S]) -> String {
    static T2S: std::sync::OnceLock<Option<ferrous_opencc::OpenCC>> = std::sync::OnceLock::new();
    let converter = T2S.get_or_init(|| {
        ferrous_opencc::OpenCC::from_config(ferrous_opencc::config::BuiltinConfig::T2s)
            .inspect_err(|e| {
                tracing::error!(error = %e, "OpenCC t2s does not load: Traditional characters stay")
            })
            .ok()
    });
    let Some(c) = converter else {
        return text.to_owned();
    };
    let converted = c.convert(text);
    let before: Vec<char> = text.chars().collect();
    let mut after: Vec<char> = converted.chars().collect();
    // t2s maps character for character (its phrase tables keep lengths); where it did
    // not, the conversion stands as it is.
    if before.len() == after.len() {
        for word in keep {
            let w: Vec<char> = word.as_ref().chars().collect();
            if w.is_empty() || w.len() > before.len() {
                continue;
            }
            for at in 0..=before.len() - w.len() {
                if before[at..at + w.len()] == w[..] {
                    after[at..at + w.len()].copy_from_slice(&w);
                }
            }
        }
    }
    after.into_iter().collect()
}

/// The text without punctuation and spaces, for comparisons.
pub fn bare(text: &str) -> String {
    text.chars().filter(|&c| !is_punctuation(c)).collect()
}

/// Copies of a unit of `len` characters that make a loop: a person says a word five
/// times ("好好好好好" is rare, a loop of one character is not), a short phrase up to
/// twice ("救命啊救命啊"), but not a long clause twice in one breath.
fn loop_copies(len: usize) -> usize {
    match len {
        1 => 5,
        2..=7 => 3,
        _ => 2,
    }
}

/// Whether `b` is a loop's copy of `a` (same length): equal, or for units of 8 or more
/// characters, at most one character in eight different (whisper's copies of a long
/// unit drift by a homophone now and then).
fn same_unit(a: &[char], b: &[char]) -> bool {
    if a.len() < 8 {
        return a == b;
    }
    let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
    differ * 8 <= a.len()
}

/// Collapses back-to-back repetitions of a unit of any length to one copy
/// ([`loop_copies`] says how many copies make a loop).
pub fn collapse_repetitions(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < chars.len() {
        for len in 1..=(chars.len() - i) / 2 {
            let unit = &chars[i..i + len];
            let mut k = 1;
            while i + (k + 1) * len <= chars.len()
                && same_unit(unit, &chars[i + k * len..i + (k + 1) * len])
            {
                k += 1;
            }
            if k >= loop_copies(len) {
                out.extend(unit);
                i += k * len;
                // A loop cut off by the token budget leaves the start of one more copy.
                let rest = chars.len() - i;
                let cut = (1..len.min(rest + 1))
                    .rev()
                    .find(|&m| m >= 4 && same_unit(&unit[..m], &chars[i..i + m]));
                if let Some(m) = cut {
                    i += m;
                }
                continue 'outer;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Shortest clause (bare characters) that counts as a repeated sentence when it comes
/// again: shorter ones ("喂，喂", "快来，快来") are what people repeat.
pub const MIN_REPEATED_CLAUSE: usize = 6;

fn is_clause_mark(c: char) -> bool {
    "，。！？；,.!?;…".contains(c)
}

/// Drops each clause of [`MIN_REPEATED_CLAUSE`] or more characters that repeats an
/// earlier clause of the text (compared without punctuation, allowing one character in
/// five to differ), or is the cut-off start of one (a loop ended by the token budget).
pub fn drop_repeated_clauses(text: &str) -> String {
    let mut kept: Vec<Vec<char>> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut clause = String::new();
    let mut flush = |clause: &mut String, out: &mut String| {
        let b: Vec<char> = bare(clause).chars().collect();
        let repeat = b.len() >= MIN_REPEATED_CLAUSE
            && kept.iter().any(|k| {
                // Against the earlier clause, or its start when this one is shorter.
                let earlier: String = k[..b.len().min(k.len())].iter().collect();
                let this: String = b.iter().collect();
                crate::score::cer(&earlier, &this) <= 0.2
            });
        if !repeat {
            out.push_str(clause);
            if b.len() >= MIN_REPEATED_CLAUSE {
                kept.push(b);
            }
        }
        clause.clear();
    };
    for c in text.chars() {
        clause.push(c);
        if is_clause_mark(c) {
            flush(&mut clause, &mut out);
        }
    }
    flush(&mut clause, &mut out);
    out
}

/// The text with loops removed (both checks above), and whether there was one.
pub fn remove_loops(text: &str) -> (String, bool) {
    let collapsed = collapse_repetitions(text);
    let cleaned = drop_repeated_clauses(&collapsed);
    let looped = bare(&cleaned).chars().count() < bare(text).chars().count();
    (cleaned, looped)
}

/// whisper's loop check: the text's UTF-8 length over its zlib-compressed length
/// (OpenAI whisper falls back to a higher temperature above 2.4). Kept to compare with
/// ours (see the module's doc) and logged with each decode.
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(text.as_bytes());
    let packed = z.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f32 / packed.max(1) as f32
}

/// Below this mean token probability a decoded utterance is taken for invented text.
/// Measured on the converted whisper base: Kokoro speech decodes at 0.76-0.90 (clean and
/// telephone band), silence and line noise at 0.22-0.46 (`asr/tests/model.rs`).
pub const MIN_CONFIDENCE: f32 = 0.5;

/// What [`clean`] kept of a decoded utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The text to use; empty when nothing was said.
    pub text: String,
    /// A repetition loop was removed from it.
    pub looped: bool,
}

impl Cleaned {
    fn nothing() -> Cleaned {
        Cleaned {
            text: String::new(),
            looped: false,
        }
    }
}

/// The text to keep from one decoded utterance: `no_speech` is whisper's probability
/// that there was no speech, `confidence` the mean token probability, `prompt` the
/// decoder's initial prompt (whisper repeats it back over silence), `spellings` the
/// words whose spelling is kept (see [`simplified`]).
pub fn clean(
    text: &str,
    no_speech: f32,
    confidence: f32,
    prompt: &str,
    spellings: &[String],
) -> Cleaned {
    if confidence < MIN_CONFIDENCE || (no_speech > 0.6 && confidence < 0.7) {
        return Cleaned::nothing();
    }
    let mut text = simplified(text.trim(), spellings);
    // The prompt's first sentence is the primer; echoes of it are invented text. The
    // hotwords after it are not checked: a citizen may well say just "香洲区".
    let primer = bare(prompt.split('。').next().unwrap_or_default());
    let b = bare(&text);
    if !b.is_empty()
        && !primer.is_empty()
        && ((b.chars().count() >= 4 && primer.contains(&b)) || crate::score::cer(&b, &primer) < 0.5)
    {
        return Cleaned::nothing();
    }
    for p in phrases() {
        if bare(&text) == bare(p) {
            return Cleaned::nothing();
        }
        if text.contains(p) {
            text = text.replace(p, "");
        }
    }
    let (text, looped) = remove_loops(text.trim());
    Cleaned { text, looped }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_collapse_and_ordinary_text_stays() {
        assert_eq!(
            collapse_repetitions("我家楼下着火了着火了着火了着火了"),
            "我家楼下着火了"
        );
        assert_eq!(collapse_repetitions("好好好好好好好好好"), "好");
        assert_eq!(
            collapse_repetitions("谢谢谢谢"),
            "谢谢谢谢",
            "thanks twice is speech, not a loop"
        );
        assert_eq!(
            collapse_repetitions("香洲区凤凰路噪音太大了"),
            "香洲区凤凰路噪音太大了"
        );
    }

    #[test]
    fn known_phrases_and_unsure_silence_are_dropped() {
        let prompt = "以下是普通话的句子。香洲区、金湾区。";
        assert_eq!(clean("谢谢观看。", 0.1, 0.9, prompt, &[]).text, "");
        assert_eq!(
            clean("字幕由Amara.org社区提供", 0.1, 0.9, prompt, &[]).text,
            ""
        );
        assert_eq!(
            clean("停水两天了", 0.0, 0.3, prompt, &[]).text,
            "",
            "unsure"
        );
        assert_eq!(
            clean("停水两天了", 0.9, 0.6, prompt, &[]).text,
            "",
            "no speech and unsure"
        );
        assert_eq!(
            clean("停水两天了", 0.9, 0.8, prompt, &[]).text,
            "停水两天了",
            "sure words stay even when whisper doubts there was speech"
        );
        assert_eq!(
            clean("这些人是普通话的句子。", 0.0, 0.8, prompt, &[]).text,
            "",
            "the prompt echoed"
        );
        assert_eq!(
            clean("普通话的句子", 0.0, 0.8, prompt, &[]).text,
            "",
            "a part of the primer echoed"
        );
        assert_eq!(
            clean("金湾区", 0.0, 0.8, prompt, &[]).text,
            "金湾区",
            "a hotword said is speech"
        );
        assert_eq!(
            clean("我要投诉噪音。谢谢观看", 0.0, 0.9, prompt, &[]).text,
            "我要投诉噪音。",
            "a sign-off inside real speech is cut out"
        );
    }

    /// Whole sentences repeated, as whisper wrote them for short utterances with the
    /// fitted window (issue 10): 17-40 characters, two or three copies, with and without
    /// punctuation, the last copy cut off by the token budget or drifting by a homophone.
    #[test]
    fn a_repeated_sentence_of_any_length_is_kept_once() {
        let twenty = "金湾区三灶镇整片停水了，到现在还没来水。"; // 18 bare characters
        let thirty = "我想咨询一下，孩子上小学需要什么材料，在哪里报名，几月份开始？";
        let forty = "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了，吵得我们睡不着。";
        for (sentence, copies) in [
            (twenty, 2),
            (twenty, 3),
            (thirty, 2),
            (forty, 2),
            (forty, 3),
        ] {
            let looped = sentence.repeat(copies);
            let (text, found) = remove_loops(&looped);
            assert_eq!(text, sentence, "{copies} copies of {sentence}");
            assert!(found);
        }
        // No punctuation between the copies, and the last one cut off.
        let s = "香洲区吉大有栋居民楼着火了快来救火";
        let (text, found) = remove_loops(&format!("{s}{s}{s}香洲区吉大有栋"));
        assert_eq!(text, s);
        assert!(found);
        // A copy that drifts by a homophone (着火 -> 找火) is still a copy.
        let (text, _) = remove_loops("香洲区吉大有栋居民楼着火了。香洲区吉大有栋居民楼找火了。");
        assert_eq!(text, "香洲区吉大有栋居民楼着火了。");
        // Punctuated copies with the last one cut off by the token budget.
        let (text, _) = remove_loops(
            "斗门区有个小孩落水了，快来救命！斗门区有个小孩落水了，快来救命！斗门区有个小孩",
        );
        assert_eq!(text, "斗门区有个小孩落水了，快来救命！");
    }

    #[test]
    fn what_people_repeat_is_kept() {
        for said in [
            "喂，喂，你好，我要反映一个问题。",
            "喂喂喂，听得到吗？",
            "救命啊救命啊，快来人啊，快来人啊！",
            "好的好的，谢谢谢谢。",
            "快点快点，着火了！",
            "我要投诉楼下的烧烤店，我要投诉楼下的歌厅。",
        ] {
            let (text, found) = remove_loops(said);
            assert_eq!(text, said);
            assert!(!found, "{said}");
        }
    }

    /// whisper's own check (compression ratio above 2.4) does not see a sentence said
    /// two or three times; ours does. It does see a long run of one short phrase.
    #[test]
    fn whisper_compression_ratio_misses_repeated_sentences() {
        let s = "金湾区三灶镇整片停水了，到现在还没来水。";
        for copies in [2, 3] {
            let ratio = compression_ratio(&s.repeat(copies));
            assert!(ratio < 2.4, "{copies} copies: {ratio}");
            assert!(remove_loops(&s.repeat(copies)).1);
        }
        assert!(compression_ratio(&"着火了".repeat(20)) > 2.4);
        assert!(compression_ratio(s) < 1.5);
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn a_loop_is_reported_by_clean() {
        let prompt = "以下是普通话的句子。";
        let c = clean(
            "香洲区梅华这边大面积停电了。香洲区梅华这边大面积停电了。",
            0.0,
            0.9,
            prompt,
            &[],
        );
        assert_eq!(c.text, "香洲区梅华这边大面积停电了。");
        assert!(c.looped);
        let c = clean("香洲区梅华这边大面积停电了。", 0.0, 0.9, prompt, &[]);
        assert!(!c.looped);
    }

    #[test]
    fn traditional_characters_become_simplified() {
        assert_eq!(simplified::<&str>("樓下有人打架", &[]), "楼下有人打架");
        assert_eq!(
            simplified::<&str>("有一面圍墻倒塌了", &[]),
            "有一面围墙倒塌了"
        );
        let s = "香洲区吉大有栋居民楼着火了，快来救火！";
        assert_eq!(simplified::<&str>(s, &[]), s, "Simplified text stays");
        // 乾 is also Simplified, in the town's name: the prompt spells it.
        assert_eq!(
            simplified::<&str>("斗门区乾务镇停电了", &[]),
            "斗门区干务镇停电了"
        );
        assert_eq!(
            simplified("斗门区乾务镇停電了", &["斗门区", "乾务镇"]),
            "斗门区乾务镇停电了"
        );
        let prompt = "以下是普通话的句子。着火、横琴。";
        let spellings = ["乾务镇".to_owned()];
        assert_eq!(
            clean("樓下有人打架", 0.0, 0.9, prompt, &spellings).text,
            "楼下有人打架"
        );
        assert_eq!(
            clean("乾务镇停電了", 0.0, 0.9, prompt, &spellings).text,
            "乾务镇停电了"
        );
    }
}
