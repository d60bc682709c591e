//! Speech to text for the voice channels.
//!
//! This crate owns the seam a voice channel's audio tap feeds: a [`TranscriptionEngine`]
//! takes one utterance of 16 kHz mono PCM and returns text with timing and confidence.
//! The whisper-rs engine, the voice-activity detector and the model converter arrive
//! with the speech-to-ticket issue; until then the gateway runs without ASR.

use async_trait::async_trait;

pub mod config;
pub mod convert;
pub mod guard;
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
