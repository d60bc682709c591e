//! The speech fixtures (tests/fixtures/speech): reading their audio, and the short set
//! with what each utterance says and what its ticket draft must show.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// tests/fixtures/speech.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech")
}

/// tests/fixtures/speech/short.
pub fn short_fixtures() -> PathBuf {
    fixtures().join("short")
}

/// The samples of a WAV file at 8 kHz as a phone delivers them: 8-bit mu-law (what
/// sipp plays; hound reads PCM only) or 16-bit PCM.
pub fn read_8k(path: &Path) -> Result<Vec<i16>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let chunk = |id: &[u8]| -> Option<&[u8]> {
        let mut at = 12;
        while at + 8 <= bytes.len() {
            let len =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
                    as usize;
            let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
            if &bytes[at..at + 4] == id {
                return Some(body);
            }
            at += 8 + len + len % 2;
        }
        None
    };
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        bail!("{}: not a WAV file", path.display());
    }
    let fmt = chunk(b"fmt ").context("no fmt chunk")?;
    let data = chunk(b"data").context("no data chunk")?;
    if fmt.len() < 16 {
        bail!("{}: short fmt chunk", path.display());
    }
    let format = u16::from_le_bytes([fmt[0], fmt[1]]);
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    if channels != 1 || rate != 8000 {
        bail!(
            "{}: {channels} channels at {rate} Hz; need mono 8 kHz",
            path.display()
        );
    }
    let mut out = Vec::with_capacity(data.len());
    match (format, bits) {
        (7, 8) => {
            channel_sip::g711::decode(channel_sip::g711::PCMU, data, &mut out);
        }
        (1, 16) => out.extend(
            data.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        ),
        _ => bail!(
            "{}: format {format} with {bits} bits; need mu-law or 16-bit PCM",
            path.display()
        ),
    }
    Ok(out)
}

/// One utterance of the short set (`short/sentences.tsv`).
#[derive(Debug, Clone)]
pub struct Short {
    /// The folder it is in.
    pub dir: PathBuf,
    /// The file's name without `.wav`.
    pub id: String,
    /// The Kokoro voice.
    pub voice: String,
    /// Held back from every tuning decision, scored only at the end (`held`), or used
    /// to tune (`tune`).
    pub held: bool,
    /// The Art. 15 kind of emergency it names (`fire`...), if any.
    pub emergency: Option<String>,
    /// The district it names, directly or through a town, if any.
    pub district: Option<String>,
    /// The request's kind (Art. 8).
    pub kind: String,
    /// What it says.
    pub text: String,
}

impl Short {
    /// The 8 kHz mu-law recording.
    pub fn wav(&self) -> PathBuf {
        self.dir.join(format!("{}.wav", self.id))
    }
}

/// The short set, in file order.
pub fn short_set() -> Result<Vec<Short>> {
    short_set_in(&short_fixtures())
}

/// The short set in `dir` (another checkout's, on a device machine).
pub fn short_set_in(dir: &Path) -> Result<Vec<Short>> {
    let path = dir.join("sentences.tsv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty sentences.tsv")?
        .split('\t')
        .collect();
    let want = [
        "id",
        "voice",
        "set",
        "emergency",
        "district",
        "kind",
        "text",
    ];
    if header != want {
        bail!("sentences.tsv: header {header:?}, want {want:?}");
    }
    let opt = |s: &str| (s != "-").then(|| s.to_owned());
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [id, voice, set, emergency, district, kind, text] = f[..] else {
                bail!("sentences.tsv: {l:?} has {} columns", f.len());
            };
            if set != "tune" && set != "held" {
                bail!("sentences.tsv: set {set:?} of {id}");
            }
            Ok(Short {
                dir: dir.to_owned(),
                id: id.into(),
                voice: voice.into(),
                held: set == "held",
                emergency: opt(emergency),
                district: opt(district),
                kind: kind.into(),
                text: text.into(),
            })
        })
        .collect()
}

/// The citizen's words in a call draft's transcript, joined.
pub fn citizen_text(draft: &serde_json::Value) -> String {
    draft["transcript"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["speaker"] == "citizen")
        .filter_map(|s| s["text"].as_str())
        .collect()
}

/// Pooled character error rate: all edits over all reference characters.
pub fn pooled_cer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (mut edits, mut chars) = (0.0, 0usize);
    for (reference, heard) in pairs {
        let n = asr::guard::bare(reference).chars().count();
        edits += asr::score::cer(reference, heard) * n as f64;
        chars += n;
    }
    if chars == 0 {
        0.0
    } else {
        edits / chars as f64
    }
}

/// Whether a transcript segment repeats itself: a clause of 6 or more characters that
/// comes twice, or any 8 characters that come twice. Written apart from the guard's
/// code on purpose: it checks what the guard should have removed.
pub fn repeats_itself(text: &str) -> bool {
    let clauses: Vec<String> = text
        .split(|c: char| "，。！？；,.!?;".contains(c))
        .map(asr::guard::bare)
        .filter(|c| c.chars().count() >= 6)
        .collect();
    if clauses
        .iter()
        .enumerate()
        .any(|(i, c)| clauses[..i].contains(c))
    {
        return true;
    }
    let b: Vec<char> = asr::guard::bare(text).chars().collect();
    (0..b.len().saturating_sub(8))
        .any(|i| (i + 8..=b.len().saturating_sub(8)).any(|j| b[i..i + 8] == b[j..j + 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_set_is_what_its_readme_says() -> Result<()> {
        let set = short_set()?;
        assert!(set.len() >= 40, "at least 40 utterances: {}", set.len());
        let held = set.iter().filter(|s| s.held).count();
        assert_eq!(held, set.len() / 4, "a quarter held back");
        // Every fourth, chosen once (README).
        for (i, s) in set.iter().enumerate() {
            assert_eq!(s.held, i % 4 == 3, "{}", s.id);
        }
        let voices: std::collections::HashSet<&str> =
            set.iter().map(|s| s.voice.as_str()).collect();
        assert!(voices.len() >= 3, "{voices:?}");
        for s in &set {
            let audio = read_8k(&s.wav())?;
            let secs = audio.len() as f64 / 8000.0;
            // 2-6 s of speech with 0.4 s of silence before and 0.6 s after.
            assert!((3.0..=7.0).contains(&secs), "{}: {secs} s", s.id);
        }
        Ok(())
    }

    #[test]
    fn the_repeat_check_sees_repeats_and_not_ordinary_speech() {
        assert!(repeats_itself(
            "金湾区三灶镇整片停水了。金湾区三灶镇整片停水了。"
        ));
        assert!(repeats_itself("香洲区吉大有栋居民楼香洲区吉大有栋居民楼"));
        assert!(!repeats_itself("喂，喂，我家楼下着火了，快来救火！"));
        assert!(!repeats_itself("金湾区三灶镇整片停水了，到现在还没来水。"));
    }
}
