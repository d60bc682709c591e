//! Guards against whisper's known failures on telephone audio.
//!
//! - **Text over silence.** Given noise or silence, whisper writes the subtitle credits
//!   and sign-offs it saw in training ("谢谢观看", "字幕由Amara.org社区提供"...). The
//!   voice-activity detector keeps most silence away; what slips through is dropped when
//!   whisper was unsure of its words (whisper.cpp's no-speech probability stays near zero
//!   under a prompt, so the mean token probability is the signal), when it repeats its
//!   prompt back, or when the whole text is a known phrase (`data/hallucinations.txt`,
//!   data not code, so operators can add what they see).
//! - **Repetition loops.** Greedy decoding can fall into repeating a phrase until the
//!   token budget ends. A unit of 1-16 characters repeated back to back (five times for a
//!   single character, three for longer units) is collapsed to one copy.

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

/// The text without punctuation and spaces, for comparisons.
pub fn bare(text: &str) -> String {
    text.chars().filter(|&c| !is_punctuation(c)).collect()
}

/// Collapses back-to-back repetitions of a unit of 1-16 characters.
pub fn collapse_repetitions(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < chars.len() {
        for len in 1..=16.min((chars.len() - i) / 2) {
            let unit = &chars[i..i + len];
            let mut k = 1;
            while i + (k + 1) * len <= chars.len() && &chars[i + k * len..i + (k + 1) * len] == unit
            {
                k += 1;
            }
            let threshold = if len == 1 { 5 } else { 3 };
            if k >= threshold {
                out.extend(unit);
                i += k * len;
                continue 'outer;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Below this mean token probability a decoded utterance is taken for invented text.
/// Measured on the converted whisper base: Kokoro speech decodes at 0.76-0.90 (clean and
/// telephone band), silence and line noise at 0.22-0.46 (`asr/tests/model.rs`).
pub const MIN_CONFIDENCE: f32 = 0.5;

/// The text to keep from one decoded utterance: `no_speech` is whisper's probability
/// that there was no speech, `confidence` the mean token probability, `prompt` the
/// decoder's initial prompt (whisper repeats it back over silence).
pub fn clean(text: &str, no_speech: f32, confidence: f32, prompt: &str) -> String {
    let mut text = text.trim().to_owned();
    if confidence < MIN_CONFIDENCE || (no_speech > 0.6 && confidence < 0.7) {
        return String::new();
    }
    // The prompt's first sentence is the primer; echoes of it are invented text. The
    // hotwords after it are not checked: a citizen may well say just "香洲区".
    let primer = bare(prompt.split('。').next().unwrap_or_default());
    let b = bare(&text);
    if !b.is_empty()
        && !primer.is_empty()
        && ((b.chars().count() >= 4 && primer.contains(&b)) || crate::score::cer(&b, &primer) < 0.5)
    {
        return String::new();
    }
    for p in phrases() {
        if bare(&text) == bare(p) {
            return String::new();
        }
        if text.contains(p) {
            text = text.replace(p, "");
        }
    }
    collapse_repetitions(text.trim())
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
        assert_eq!(clean("谢谢观看。", 0.1, 0.9, prompt), "");
        assert_eq!(clean("字幕由Amara.org社区提供", 0.1, 0.9, prompt), "");
        assert_eq!(clean("停水两天了", 0.0, 0.3, prompt), "", "unsure");
        assert_eq!(
            clean("停水两天了", 0.9, 0.6, prompt),
            "",
            "no speech and unsure"
        );
        assert_eq!(
            clean("停水两天了", 0.9, 0.8, prompt),
            "停水两天了",
            "sure words stay even when whisper doubts there was speech"
        );
        assert_eq!(
            clean("这些人是普通话的句子。", 0.0, 0.8, prompt),
            "",
            "the prompt echoed"
        );
        assert_eq!(
            clean("普通话的句子", 0.0, 0.8, prompt),
            "",
            "a part of the primer echoed"
        );
        assert_eq!(
            clean("金湾区", 0.0, 0.8, prompt),
            "金湾区",
            "a hotword said is speech"
        );
        assert_eq!(
            clean("我要投诉噪音。谢谢观看", 0.0, 0.9, prompt),
            "我要投诉噪音。",
            "a sign-off inside real speech is cut out"
        );
    }
}
