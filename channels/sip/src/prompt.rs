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

/// The announcements, as 8 kHz samples.
#[derive(Debug, Clone)]
pub struct Prompts {
    /// To a caller refused admission (Art. 9).
    pub blocked: Arc<[i16]>,
    /// Before recording a message when no agent can take the call.
    pub leave_message: Arc<[i16]>,
    /// The tone after which the message is recorded: 400 ms of 1 kHz.
    pub beep: Arc<[i16]>,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_decode_and_carry_sound() {
        let p = Prompts::load().expect("prompts");
        for (name, samples) in [("blocked", &p.blocked), ("leave", &p.leave_message)] {
            assert!(
                samples.len() > RATE as usize,
                "{name} shorter than a second"
            );
            let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
            assert!(loud > samples.len() / 10, "{name} is mostly silence");
        }
    }
}
