//! The announcements the gateway plays to citizens, built into the binary.
//!
//! The WAVs under `channels/sip/prompts/` are made from text by `deploy/make-prompts.sh`
//! (espeak-ng, 8 kHz mono 16-bit) and checked in, so a gateway never starts without
//! them. The relay encodes them to the call's codec as it plays.

use std::io::Cursor;
use std::sync::Arc;

use crate::media::RATE;

const BLOCKED: &[u8] = include_bytes!("../prompts/blocked.wav");
const LEAVE_MESSAGE: &[u8] = include_bytes!("../prompts/leave-message.wav");
const NOTICE: &[u8] = include_bytes!("../prompts/notice.wav");
const NOTICE_END: &[u8] = include_bytes!("../prompts/notice-end.wav");
const NOTICE_ACKNOWLEDGED: &[u8] = include_bytes!("../prompts/notice-acknowledged.wav");
const REVISIT: &[u8] = include_bytes!("../prompts/revisit.wav");
const REVISIT_THANKS: &[u8] = include_bytes!("../prompts/revisit-thanks.wav");
/// The characters a ticket reference's tail is read with: 0-9, then A-F.
const CHARS: [(char, &[u8]); 16] = [
    ('0', include_bytes!("../prompts/char-0.wav")),
    ('1', include_bytes!("../prompts/char-1.wav")),
    ('2', include_bytes!("../prompts/char-2.wav")),
    ('3', include_bytes!("../prompts/char-3.wav")),
    ('4', include_bytes!("../prompts/char-4.wav")),
    ('5', include_bytes!("../prompts/char-5.wav")),
    ('6', include_bytes!("../prompts/char-6.wav")),
    ('7', include_bytes!("../prompts/char-7.wav")),
    ('8', include_bytes!("../prompts/char-8.wav")),
    ('9', include_bytes!("../prompts/char-9.wav")),
    ('A', include_bytes!("../prompts/char-A.wav")),
    ('B', include_bytes!("../prompts/char-B.wav")),
    ('C', include_bytes!("../prompts/char-C.wav")),
    ('D', include_bytes!("../prompts/char-D.wav")),
    ('E', include_bytes!("../prompts/char-E.wav")),
    ('F', include_bytes!("../prompts/char-F.wav")),
];
/// How many of a ticket reference's last characters the linkage call reads out (its
/// random part; the operator finds the whole reference on the linkage platform).
pub const TICKET_TAIL: usize = 10;

/// The announcements, as 8 kHz samples.
#[derive(Debug, Clone)]
pub struct Prompts {
    /// To a caller refused admission (Art. 9).
    pub blocked: Arc<[i16]>,
    /// Before recording a message when no agent can take the call.
    pub leave_message: Arc<[i16]>,
    /// The tone after which the message is recorded: 400 ms of 1 kHz.
    pub beep: Arc<[i16]>,
    /// Art. 15: the start of an escalation call's notice, up to the ticket's tail.
    pub notice: Arc<[i16]>,
    /// After the ticket: how to acknowledge (press 1).
    pub notice_end: Arc<[i16]>,
    /// Once 1 is pressed.
    pub notice_acknowledged: Arc<[i16]>,
    /// Art. 17: the revisit call's question (the five ratings, by digit).
    pub revisit: Arc<[i16]>,
    /// Once the citizen has rated.
    pub revisit_thanks: Arc<[i16]>,
    chars: Vec<(char, Arc<[i16]>)>,
}

/// A prompt that does not decode as 8 kHz mono 16-bit PCM.
#[derive(Debug, thiserror::Error)]
#[error("built-in prompt {name} is unusable: {reason}")]
pub struct PromptError {
    name: &'static str,
    reason: String,
}

fn decode(name: &'static str, bytes: &[u8]) -> Result<Arc<[i16]>, PromptError> {
    let err = |reason: String| PromptError { name, reason };
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| err(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != RATE || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(err(format!("{spec:?}; want 8 kHz mono 16-bit")));
    }
    reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::from)
        .map_err(|e| err(e.to_string()))
}

impl Prompts {
    /// Decodes the built-in prompts.
    pub fn load() -> Result<Self, PromptError> {
        let beep: Vec<i16> = (0..RATE as usize * 2 / 5)
            .map(|n| {
                let t = n as f64 / f64::from(RATE);
                (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
            })
            .collect();
        Ok(Prompts {
            blocked: decode("blocked", BLOCKED)?,
            leave_message: decode("leave-message", LEAVE_MESSAGE)?,
            beep: Arc::from(beep),
            notice: decode("notice", NOTICE)?,
            notice_end: decode("notice-end", NOTICE_END)?,
            notice_acknowledged: decode("notice-acknowledged", NOTICE_ACKNOWLEDGED)?,
            revisit: decode("revisit", REVISIT)?,
            revisit_thanks: decode("revisit-thanks", REVISIT_THANKS)?,
            chars: CHARS
                .iter()
                .map(|(c, bytes)| Ok((*c, decode("char", bytes)?)))
                .collect::<Result<_, PromptError>>()?,
        })
    }

    /// The whole notice an escalation call plays: the start, the last
    /// [`TICKET_TAIL`] characters of the ticket reference one by one (with a short pause
    /// between them), and how to acknowledge.
    pub fn notice_for(&self, ticket_ref: &str) -> Arc<[i16]> {
        let gap = vec![0i16; RATE as usize / 10];
        let tail: Vec<char> = ticket_ref.chars().collect();
        let tail = &tail[tail.len().saturating_sub(TICKET_TAIL)..];
        let mut out: Vec<i16> = self.notice.to_vec();
        out.extend_from_slice(&gap);
        for c in tail {
            if let Some((_, samples)) = self
                .chars
                .iter()
                .find(|(k, _)| k == &c.to_ascii_uppercase())
            {
                out.extend_from_slice(samples);
                out.extend_from_slice(&gap);
            }
        }
        out.extend_from_slice(&self.notice_end);
        Arc::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_decode_and_carry_sound() {
        let p = Prompts::load().expect("prompts");
        for (name, samples) in [
            ("blocked", &p.blocked),
            ("leave", &p.leave_message),
            ("notice", &p.notice),
            ("notice-end", &p.notice_end),
            ("revisit", &p.revisit),
            ("revisit-thanks", &p.revisit_thanks),
        ] {
            assert!(
                samples.len() > RATE as usize,
                "{name} shorter than a second"
            );
            let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
            assert!(loud > samples.len() / 10, "{name} is mostly silence");
        }
    }

    #[test]
    fn art15_the_notice_reads_the_tickets_tail() {
        let p = Prompts::load().expect("prompts");
        let short = p.notice_for("ZH");
        let long = p.notice_for("ZH20261130ABCDEF0123");
        // Ten characters of at least a fifth of a second each, with their pauses.
        assert!(
            long.len() >= short.len() + TICKET_TAIL * RATE as usize / 5,
            "{} vs {}",
            long.len(),
            short.len()
        );
        assert!(long.len() < short.len() + TICKET_TAIL * RATE as usize * 2);
    }
}
