//! The decoder's initial prompt.
//!
//! whisper writes Traditional characters for Mandarin unless the context it continues
//! is Simplified; a Simplified sentence first fixes that. Hotwords (the city's districts,
//! streets, departments) follow it so that whisper prefers the right homophones; the
//! gateway appends them from the routing vocabulary.

/// The Simplified sentence every prompt starts with.
pub const SIMPLIFIED_PRIMER: &str = "以下是普通话的句子。";

/// The primer alone.
pub fn default_prompt() -> String {
    SIMPLIFIED_PRIMER.to_owned()
}

/// The primer followed by `hotwords`, kept within `max_chars` characters (whisper uses
/// at most half its 448-token text context for the prompt; a Chinese character is one
/// or two tokens).
pub fn prompt_with(hotwords: &[&str], max_chars: usize) -> String {
    let mut p = default_prompt();
    for w in hotwords {
        if p.chars().count() + w.chars().count() + 1 > max_chars {
            break;
        }
        p.push_str(w);
        p.push('、');
    }
    if p.ends_with('、') {
        p.pop();
        p.push('。');
    }
    p
}

/// `prompt` without as many of its last words (after `、`) as it takes for `fits` to
/// hold; the primer always stays.
pub fn fit(prompt: &str, fits: impl Fn(&str) -> bool) -> String {
    let mut p = prompt.to_owned();
    while !fits(&p) {
        let body = p.trim_end_matches('。');
        let Some(cut) = body.rfind('、') else {
            // One hotword left: drop it too, keep the primer.
            return default_prompt();
        };
        p = format!("{}。", &body[..cut]);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotwords_follow_the_primer_within_the_limit() {
        let p = prompt_with(&["香洲区", "金湾区", "斗门区"], 20);
        assert_eq!(p, "以下是普通话的句子。香洲区、金湾区。");
    }

    #[test]
    fn a_prompt_too_long_loses_its_last_words_not_its_primer() {
        let p = "以下是普通话的句子。香洲区、金湾区、斗门区。";
        assert_eq!(fit(p, |_| true), p);
        let short = fit(p, |x| x.chars().count() <= 18);
        assert_eq!(short, "以下是普通话的句子。香洲区、金湾区。");
        assert_eq!(fit(p, |x| x.chars().count() <= 12), "以下是普通话的句子。");
        assert_eq!(fit(p, |_| false), "以下是普通话的句子。");
    }
}
