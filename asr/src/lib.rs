//! Speech to text for the voice channels (docs/asr.md).
//!
//! This crate owns:
//! - the [`TranscriptionEngine`] seam (one utterance of 16 kHz PCM in, text with timing
//!   and confidence out) and its whisper.cpp implementation ([`whisper`]), with the
//!   guards against whisper's known failures ([`guard`]);
//! - live streaming of calls ([`stream`]): the `AudioTap` voice channels feed, with the
//!   upsampler ([`resample`]), the voice-activity detector ([`vad`]) and deferral to the
//!   recording when the engine is busy;
//! - the `[asr]` configuration ([`config`]);
//! - the CTranslate2-to-ggml model converter ([`convert`], binary `ct2-to-ggml`), its
//!   q8_0 quantizer ([`quantize`]) and the
//!   character error rate the tests and benchmarks score with ([`score`]).

use async_trait::async_trait;

pub mod config;
pub mod convert;
pub mod guard;
pub mod quantize;
pub mod resample;
pub mod score;
pub mod stream;
pub mod vad;
pub mod vocabulary;
pub mod whisper;

pub use config::AsrConfig;
pub use contract::Speaker;

/// One utterance to transcribe.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// Who spoke it.
    pub speaker: Speaker,
    /// Offset of its first sample from the start of the call, in milliseconds.
    pub start_ms: u64,
    /// 16 kHz mono samples.
    pub samples: Vec<i16>,
}

/// A transcribed utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Who spoke it.
    pub speaker: Speaker,
    /// Start, from the start of the call, in milliseconds.
    pub start_ms: u64,
    /// End, from the start of the call, in milliseconds.
    pub end_ms: u64,
    /// The text, Simplified Chinese.
    pub text: String,
    /// The engine's confidence, 0 to 1.
    pub confidence: f32,
    /// The engine wrote a repetition loop, which the guard removed from `text`.
    pub looped: bool,
}

/// Why an utterance was not transcribed.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// Every worker is busy: the caller defers the utterance (it is completed from the
    /// recording after the call).
    #[error("all transcription workers are busy")]
    Busy,
    /// The engine failed on this input.
    #[error("transcription failed: {0}")]
    Engine(String),
    /// The model could not be loaded.
    #[error("speech model: {0}")]
    Model(String),
}

/// A speech-to-text engine.
#[async_trait]
pub trait TranscriptionEngine: Send + Sync + 'static {
    /// Transcribes one utterance.
    async fn transcribe(&self, utterance: Utterance) -> Result<Segment, AsrError>;
}
