//! `[asr]`: speech recognition of calls. Absent, calls are not transcribed.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::stream::{AsrTap, StreamConfig};
use crate::vad::VadConfig;
use crate::whisper::{Decoding, WhisperConfig, WhisperEngine};
use crate::{AsrError, vocabulary};

/// `[asr]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsrConfig {
    /// The ggml model file (`deploy/fetch-model.sh` puts whisper base there). When it is
    /// missing the gateway starts without speech recognition and says so loudly.
    pub model: PathBuf,
    /// Spoken language, forced: `zh` (detection mislabels telephone Mandarin).
    #[serde(default = "default_language")]
    pub language: String,
    /// Utterances transcribed at once. Default 1: on a small machine one worker with all
    /// cores beats two sharing them.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// CPU threads per worker. Default 2.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Utterances (of all calls) waiting for a worker before new ones are deferred to
    /// after their call. Default 4: more only adds latency to live text.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Utterances of one call waiting before its next ones are deferred. Default 4.
    #[serde(default = "default_queue_per_call")]
    pub queue_per_call: usize,
    /// Silence that ends an utterance, in milliseconds. Default 500.
    #[serde(default = "default_end_silence_ms")]
    pub end_silence_ms: u64,
    /// Longest initial prompt in characters: the Simplified primer, then as many of the
    /// routing vocabulary's words as fit (Art. 15 cues, request kinds, places,
    /// departments), and never more than the 223 tokens whisper reads (the engine cuts
    /// the last words). Longer primes homophones better and costs decoding time on every
    /// utterance (docs/benchmarks.md). Default 300: the whole token budget.
    #[serde(default = "default_prompt_chars")]
    pub prompt_chars: usize,
    /// Longest stretch of talk transcribed as one segment, in milliseconds; a longer one
    /// is cut at a pause and goes to the screen in parts. Default 15000.
    #[serde(default = "default_max_utterance_ms")]
    pub max_utterance_ms: u64,
    /// The shortest encoder window in milliseconds (see [`Decoding::min_window_ms`]).
    /// Default 30000, whisper's own: shorter windows repeat and mishear short
    /// utterances (docs/benchmarks.md).
    #[serde(default = "default_min_window_ms")]
    pub min_window_ms: u64,
    /// Beam width; 1 (default) is greedy.
    #[serde(default = "default_beam_size")]
    pub beam_size: usize,
    /// whisper.cpp's temperature fallback, bounded to two more decodes. Default false.
    #[serde(default)]
    pub temperature_fallback: bool,
    /// The degraded mode's window floor (see [`Decoding::busy_window_ms`]). Default
    /// 15000.
    #[serde(default = "default_busy_window_ms")]
    pub busy_window_ms: u64,
    /// Use the GPU when the gateway was built with the `cuda` feature. Default false.
    #[serde(default)]
    pub use_gpu: bool,
    /// whisper.cpp's flash attention. Default false.
    #[serde(default)]
    pub flash_attn: bool,
}

fn default_language() -> String {
    "zh".into()
}
fn default_workers() -> usize {
    1
}
fn default_threads() -> usize {
    2
}
fn default_queue() -> usize {
    4
}
fn default_queue_per_call() -> usize {
    4
}
fn default_end_silence_ms() -> u64 {
    500
}
fn default_prompt_chars() -> usize {
    AsrConfig::DEFAULT_PROMPT_CHARS
}
fn default_max_utterance_ms() -> u64 {
    15_000
}
fn default_min_window_ms() -> u64 {
    Decoding::default().min_window_ms
}
fn default_beam_size() -> usize {
    Decoding::default().beam_size
}
fn default_busy_window_ms() -> u64 {
    Decoding::default().busy_window_ms
}

impl AsrConfig {
    /// `prompt_chars` when the config does not say.
    pub const DEFAULT_PROMPT_CHARS: usize = 300;

    /// Checks the values; the model's presence is checked at start (a missing model is
    /// not fatal).
    pub fn validate(&self) -> Result<(), String> {
        if whisper_rs::get_lang_id(&self.language).is_none() {
            return Err(format!(
                "language {:?} is not one whisper knows",
                self.language
            ));
        }
        if !(1..=64).contains(&self.workers) {
            return Err("workers: must be 1 to 64".into());
        }
        if !(1..=64).contains(&self.threads) {
            return Err("threads: must be 1 to 64".into());
        }
        if self.queue > 10_000 || !(1..=64).contains(&self.queue_per_call) {
            return Err("queue: at most 10000; queue_per_call: 1 to 64".into());
        }
        if !(200..=3000).contains(&self.end_silence_ms) {
            return Err("end_silence_ms: must be 200 to 3000".into());
        }
        if !(10..=300).contains(&self.prompt_chars) {
            return Err("prompt_chars: must be 10 to 300 (whisper gives the prompt at most half its 448-token context)".into());
        }
        if !(2_000..=28_000).contains(&self.max_utterance_ms) {
            return Err(
                "max_utterance_ms: must be 2000 to 28000 (whisper hears 30 s at most)".into(),
            );
        }
        self.decoding().validate()
    }

    /// The decoding settings.
    pub fn decoding(&self) -> Decoding {
        Decoding {
            min_window_ms: self.min_window_ms,
            beam_size: self.beam_size,
            temperature_fallback: self.temperature_fallback,
            busy_window_ms: self.busy_window_ms,
        }
    }

    /// Loads the model and makes the tap voice channels feed; `hotwords` (places,
    /// departments) prime the decoder. Call on a blocking-capable thread inside a tokio
    /// runtime: loading reads the whole model.
    pub fn start(&self, hotwords: &[&str]) -> Result<Arc<AsrTap>, AsrError> {
        let engine = WhisperEngine::load(WhisperConfig {
            model: self.model.clone(),
            language: self.language.clone(),
            initial_prompt: vocabulary::prompt_with(hotwords, self.prompt_chars),
            spellings: hotwords.iter().map(|w| (*w).to_owned()).collect(),
            workers: self.workers,
            threads: self.threads,
            queue: self.queue,
            use_gpu: self.use_gpu,
            decoding: self.decoding(),
            flash_attn: self.flash_attn,
        })?;
        let stream = StreamConfig {
            vad: VadConfig {
                end_silence_ms: self.end_silence_ms,
                max_utterance_ms: self.max_utterance_ms,
                ..VadConfig::default()
            },
            queue_per_call: self.queue_per_call,
        };
        Ok(Arc::new(AsrTap::new(Arc::new(engine), stream)))
    }
}
