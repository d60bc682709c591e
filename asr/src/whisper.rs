//! The whisper.cpp engine (through whisper-rs).
//!
//! The model is loaded once; each worker owns a decoding state (whisper.cpp's KV cache
//! and compute buffers), so utterances never wait on a state being built. Inference runs
//! on tokio's blocking pool, bounded by `workers`; at most `queue` more utterances wait
//! for a worker, and beyond that [`AsrError::Busy`] tells the caller to defer (the
//! streaming layer then completes the utterance from the recording after the call).
//!
//! Decoding settings come from what telephone Mandarin needs, measured on short citizen
//! utterances (docs/benchmarks.md): language forced to `zh` (detection mislabels
//! narrowband Mandarin); whisper's full 30 s encoder window (a window fitted to a short
//! utterance repeats and mishears it), with a shorter one only while utterances wait
//! ([`Decoding::busy_window_ms`], the degraded mode); greedy decoding (beam search and
//! the temperature fallback, both bounded settings here, bought nothing measurable); no
//! conditioning on earlier text; an initial prompt in Simplified Chinese with the
//! domain's words, cut to the tokens whisper reads ([`fit_prompt`]); and a token budget
//! tied to the utterance's length so that a loop cannot run on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::guard;
use crate::{AsrError, Segment, TranscriptionEngine, Utterance};

/// The engine options the command-line tools share (`transcribe`, `asr-bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// The ggml model.
    #[arg(long, default_value = ".dev/models/ggml-base.bin")]
    pub model: PathBuf,
    /// CPU threads per decoding state.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// whisper.cpp's flash attention.
    #[arg(long)]
    pub flash_attn: bool,
    /// Leave the GPU alone (a `cuda` build's CPU baseline).
    #[arg(long)]
    pub cpu_only: bool,
    /// How utterances are decoded (the gateway's `[asr]` settings of the same names).
    #[command(flatten)]
    pub decoding: Decoding,
}

impl EngineArgs {
    /// The engine's settings: Mandarin, these options, the prompt made of `hotwords` as
    /// the gateway makes it (at most `prompt_chars`), and the rest as given.
    pub fn config(
        &self,
        hotwords: &[&str],
        prompt_chars: usize,
        workers: usize,
        queue: usize,
    ) -> WhisperConfig {
        WhisperConfig {
            model: self.model.clone(),
            language: "zh".into(),
            initial_prompt: crate::vocabulary::prompt_with(hotwords, prompt_chars),
            spellings: hotwords.iter().map(|w| (*w).to_owned()).collect(),
            workers,
            threads: self.threads,
            queue,
            use_gpu: !self.cpu_only,
            decoding: self.decoding,
            flash_attn: self.flash_attn,
        }
    }
}

/// How one utterance is decoded: the encoder's window, the search, the fallback.
/// docs/benchmarks.md measures each choice's accuracy and speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Decoding {
    /// The shortest encoder window, in milliseconds: an utterance shorter than this is
    /// encoded over this much (the rest silence), a longer one over its own length plus
    /// a second. 30000 is whisper's fixed window, the one its models were trained on;
    /// shorter windows are faster and, below what the models saw in training, fall
    /// into repeating and mishearing short utterances (whisper.cpp's issue 1951).
    #[arg(long, default_value_t = FULL_WINDOW_MS)]
    pub min_window_ms: u64,
    /// Beam width; 1 is greedy decoding.
    #[arg(long, default_value_t = 1)]
    pub beam_size: usize,
    /// whisper.cpp's temperature fallback: a decode whose mean log-probability is below
    /// -1 is decoded again at temperature 0.4, then 0.8 (the encoder's work is reused),
    /// each within the same token budget, so at most three decodes.
    #[arg(long)]
    pub temperature_fallback: bool,
    /// The degraded mode: while utterances wait for a worker, the window's floor falls
    /// to this many milliseconds, so that the backlog clears at some cost in accuracy
    /// (docs/benchmarks.md) instead of live text being deferred to after the call. At
    /// or above `min_window_ms`: no degraded mode.
    #[arg(long, default_value_t = BUSY_WINDOW_MS)]
    pub busy_window_ms: u64,
}

/// The degraded mode's window floor by default: 15 s, the shortest measured with every
/// Art. 15 kind and district right on the short set's tuning part, at 0.6 of the full
/// window's decoding time (docs/benchmarks.md).
pub const BUSY_WINDOW_MS: u64 = 15_000;

/// whisper's fixed window: 30 s.
pub const FULL_WINDOW_MS: u64 = 30_000;

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            min_window_ms: FULL_WINDOW_MS,
            beam_size: 1,
            temperature_fallback: false,
            busy_window_ms: BUSY_WINDOW_MS,
        }
    }
}

impl Decoding {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(1_000..=FULL_WINDOW_MS).contains(&self.min_window_ms) {
            return Err("min_window_ms: must be 1000 to 30000".into());
        }
        if !(1..=8).contains(&self.beam_size) {
            return Err("beam_size: must be 1 to 8".into());
        }
        if !(1_000..=FULL_WINDOW_MS).contains(&self.busy_window_ms) {
            return Err("busy_window_ms: must be 1000 to 30000".into());
        }
        Ok(())
    }

    /// The decoding while utterances wait: the degraded mode's floor.
    pub fn degraded(&self) -> Decoding {
        Decoding {
            min_window_ms: self.busy_window_ms,
            ..*self
        }
    }

    /// Whether the degraded mode changes anything.
    pub fn has_degraded_mode(&self) -> bool {
        self.busy_window_ms < self.min_window_ms
    }

    /// whisper.cpp's parameters for the search and the fallback (the rest is the
    /// caller's).
    pub fn params(&self) -> FullParams<'static, 'static> {
        let mut p = FullParams::new(if self.beam_size > 1 {
            SamplingStrategy::BeamSearch {
                beam_size: self.beam_size as i32,
                patience: -1.0,
            }
        } else {
            SamplingStrategy::Greedy { best_of: 1 }
        });
        p.set_temperature(0.0);
        if self.temperature_fallback {
            // whisper.cpp decodes again at 0.4 and 0.8 when the mean log-probability is
            // under -1 (its entropy check needs more than 32 tokens, which a short
            // utterance rarely has; loops are the guard's). The token budget bounds each.
            p.set_temperature_inc(0.4);
            p.set_logprob_thold(-1.0);
        } else {
            p.set_temperature_inc(0.0);
        }
        p
    }

    /// Encoder positions for `samples` of 16 kHz audio: 50 a second (whisper's 20 ms
    /// frames), the utterance plus a second of margin, at least the floor, at most the
    /// full 1500; `None` for the full window (whisper.cpp's default).
    pub fn audio_ctx(&self, samples: usize) -> Option<i32> {
        let fitted = (samples as f64 / 16_000.0 + 1.0) * 50.0;
        let floor = self.min_window_ms as f64 / 1000.0 * 50.0;
        let ctx = fitted.max(floor).ceil();
        (ctx < 1500.0).then_some(ctx as i32)
    }
}

/// Settings of the whisper engine.
#[derive(Debug, Clone)]
pub struct WhisperConfig {
    /// The ggml model file.
    pub model: PathBuf,
    /// Spoken language, forced (ISO 639-1; `zh` for Mandarin).
    pub language: String,
    /// Text that primes the decoder: a Simplified Chinese sentence and the domain's
    /// vocabulary (emergency cues, request kinds, districts, streets, departments).
    pub initial_prompt: String,
    /// Words whose spelling the text keeps (the city's place names: see
    /// [`guard::simplified`]).
    pub spellings: Vec<String>,
    /// Utterances transcribed at once (each a blocking worker with its own state).
    pub workers: usize,
    /// CPU threads per worker.
    pub threads: usize,
    /// Utterances that may wait for a worker before `Busy`.
    pub queue: usize,
    /// Use the GPU when whisper.cpp was built with one (the `cuda` feature).
    pub use_gpu: bool,
    /// Window, search and fallback.
    pub decoding: Decoding,
    /// whisper.cpp's flash attention.
    pub flash_attn: bool,
}

/// The whisper.cpp engine.
pub struct WhisperEngine {
    /// The prompt's length in tokens.
    prompt_tokens: usize,
    /// In the degraded mode (utterances were waiting at the last decode's start).
    degraded: Arc<std::sync::atomic::AtomicBool>,
    /// Utterances decoded in the degraded mode.
    degraded_decodes: std::sync::atomic::AtomicU64,
    ctx: Arc<WhisperContext>,
    states: Arc<Mutex<Vec<WhisperState>>>,
    workers: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Shared with the decoding tasks (the prompt and the spellings are read, never
    /// copied, per utterance).
    cfg: Arc<WhisperConfig>,
}

impl std::fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperEngine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn prompt_tokens(ctx: &WhisperContext, prompt: &str) -> usize {
    ctx.tokenize(prompt, 4096).map_or(usize::MAX, |t| t.len())
}

/// `prompt` cut to what whisper reads: the last n_text_ctx/2 - 1 tokens (223). A longer
/// prompt would lose its start, the Simplified primer (whisper.cpp's `max_prompt_ctx`),
/// so it loses its last hotwords instead, until it fits.
pub fn fit_prompt(ctx: &WhisperContext, prompt: &str) -> String {
    let budget = usize::try_from(ctx.n_text_ctx() / 2 - 1).unwrap_or(0);
    crate::vocabulary::fit(prompt, |p| prompt_tokens(ctx, p) <= budget)
}

/// Sends whisper.cpp's and ggml's own log lines to `tracing` (targets
/// `whisper_rs::whisper_logging_hook` and `whisper_rs::ggml_logging_hook`) instead of
/// stderr. Idempotent.
pub fn route_logs_to_tracing() {
    whisper_rs::install_logging_hooks();
}

impl WhisperEngine {
    /// Loads the model and makes one decoding state per worker.
    pub fn load(cfg: WhisperConfig) -> Result<WhisperEngine, AsrError> {
        route_logs_to_tracing();
        if !cfg.model.is_file() {
            return Err(AsrError::Model(format!(
                "{} does not exist; run deploy/fetch-model.sh",
                cfg.model.display()
            )));
        }
        if whisper_rs::get_lang_id(&cfg.language).is_none() {
            return Err(AsrError::Model(format!(
                "language {:?} is not one whisper knows",
                cfg.language
            )));
        }
        let mut params = WhisperContextParameters::default();
        params.use_gpu(cfg.use_gpu);
        params.flash_attn(cfg.flash_attn);
        let path = cfg.model.to_string_lossy().into_owned();
        let ctx = WhisperContext::new_with_params(&path, params)
            .map_err(|e| AsrError::Model(format!("cannot load {path}: {e}")))?;
        let workers = cfg.workers.max(1);
        let states = (0..workers)
            .map(|_| ctx.create_state())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AsrError::Model(format!("cannot make a decoding state: {e}")))?;
        let mut cfg = cfg;
        let fitted = fit_prompt(&ctx, &cfg.initial_prompt);
        if fitted != cfg.initial_prompt {
            tracing::info!(
                chars = fitted.chars().count(),
                "The speech prompt was cut to the tokens whisper reads"
            );
            cfg.initial_prompt = fitted;
        }
        let prompt_tokens = prompt_tokens(&ctx, &cfg.initial_prompt);
        tracing::info!(model = %path, workers, threads = cfg.threads, prompt_tokens, "Speech model loaded");
        Ok(WhisperEngine {
            prompt_tokens,
            degraded: Arc::default(),
            degraded_decodes: Default::default(),
            ctx: Arc::new(ctx),
            states: Arc::new(Mutex::new(states)),
            workers: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + cfg.queue)),
            cfg: Arc::new(cfg),
        })
    }

    /// The initial prompt's length in whisper's tokens (it reads at most 223).
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Utterances decoded in the degraded mode so far.
    pub fn degraded_decodes(&self) -> u64 {
        self.degraded_decodes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The initial prompt, as cut to fit ([`fit_prompt`]).
    pub fn prompt(&self) -> &str {
        &self.cfg.initial_prompt
    }

    /// Says when the degraded mode starts and ends (once each way, not per utterance).
    fn note_degraded(&self, now: bool) {
        use std::sync::atomic::Ordering;
        if self.degraded.swap(now, Ordering::Relaxed) != now {
            let floor_ms = self.cfg.decoding.busy_window_ms;
            if now {
                tracing::warn!(
                    floor_ms,
                    "Speech recognition is behind: decoding with the shorter window (degraded mode, less accurate) until it catches up"
                );
            } else {
                tracing::info!("Speech recognition caught up: back to the full decoding window");
            }
            metrics::gauge!("gateway_asr_degraded").set(f64::from(u8::from(now)));
        }
    }

    /// Utterances waiting for a worker or being transcribed.
    pub fn in_flight(&self) -> usize {
        self.cfg.workers.max(1) + self.cfg.queue - self.admitted.available_permits()
    }
}

#[async_trait]
impl TranscriptionEngine for WhisperEngine {
    async fn transcribe(&self, utterance: Utterance) -> Result<Segment, AsrError> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            metrics::counter!("gateway_asr_busy_total").increment(1);
            return Err(AsrError::Busy);
        };
        metrics::gauge!("gateway_asr_queue_depth").set(self.in_flight() as f64);
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AsrError::Engine("engine closed".into()))?;
        let states = self.states.clone();
        let ctx = self.ctx.clone();
        let cfg = self.cfg.clone();
        let mut decoding = cfg.decoding;
        if decoding.has_degraded_mode() {
            // Others wait behind this one: decode faster until the backlog clears.
            let behind = self.in_flight() > self.cfg.workers.max(1);
            self.note_degraded(behind);
            if behind {
                decoding = decoding.degraded();
                metrics::counter!("gateway_asr_degraded_total").increment(1);
                self.degraded_decodes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let result = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            // A worker permit guarantees a state is free.
            let mut state = states
                .lock()
                .map_err(|_| AsrError::Engine("state pool poisoned".into()))?
                .pop()
                .ok_or_else(|| AsrError::Engine("no free decoding state".into()))?;
            let out = run(&ctx, &mut state, &cfg, decoding, &utterance);
            if let Ok(mut pool) = states.lock() {
                pool.push(state);
            }
            out
        })
        .await
        .map_err(|e| AsrError::Engine(format!("worker panicked: {e}")))?;
        metrics::gauge!("gateway_asr_queue_depth").set(self.in_flight() as f64);
        result
    }
}

/// Most tokens whisper may write for `samples` of 16 kHz audio: Mandarin speech runs at
/// about 4-6 characters a second and a character is one or two tokens; 8 tokens a second
/// plus a margin leaves room for fast talkers and none for a loop.
fn token_budget(samples: usize) -> i32 {
    let secs = samples as f64 / 16_000.0;
    (secs * 8.0 + 12.0).min(220.0) as i32
}

/// Below this RMS level (about -50 dBFS) an utterance is not decoded at all: a line's
/// hiss, not a voice (speech on a phone line sits around -20 to -30 dBFS).
const MIN_RMS: f64 = 100.0;

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

fn run(
    ctx: &WhisperContext,
    state: &mut WhisperState,
    cfg: &WhisperConfig,
    d: Decoding,
    utterance: &Utterance,
) -> Result<Segment, AsrError> {
    let started = Instant::now();
    let audio_ms = utterance.samples.len() as u64 * 1000 / 16_000;
    if rms(&utterance.samples) < MIN_RMS {
        // Nothing a person said: do not give whisper the chance to invent something.
        return Ok(Segment {
            speaker: utterance.speaker,
            start_ms: utterance.start_ms,
            end_ms: utterance.start_ms + audio_ms,
            text: String::new(),
            confidence: 0.0,
            looped: false,
        });
    }
    let mut audio: Vec<f32> = utterance
        .samples
        .iter()
        .map(|&s| f32::from(s) / 32768.0)
        .collect();
    // whisper.cpp refuses under a second of audio; pad short utterances with silence.
    if audio.len() < 16_000 + 1_600 {
        audio.resize(16_000 + 1_600, 0.0);
    }
    let mut p = d.params();
    p.set_language(Some(&cfg.language));
    p.set_detect_language(false);
    p.set_translate(false);
    p.set_n_threads(cfg.threads.max(1) as i32);
    p.set_no_context(true);
    p.set_single_segment(true);
    p.set_no_timestamps(true);
    p.set_suppress_blank(true);
    p.set_suppress_nst(true);
    p.set_max_tokens(token_budget(utterance.samples.len()));
    if let Some(ctx) = d.audio_ctx(audio.len()) {
        p.set_audio_ctx(ctx);
    }
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
    if !cfg.initial_prompt.is_empty() {
        p.set_initial_prompt(&cfg.initial_prompt);
    }
    state
        .full(p, &audio)
        .map_err(|e| AsrError::Engine(format!("whisper_full: {e}")))?;
    let eot = ctx.token_eot();
    let mut text = String::new();
    let mut prob_sum = 0f32;
    let mut prob_n = 0u32;
    let mut no_speech = 0f32;
    for seg in state.as_iter() {
        text.push_str(
            &seg.to_str_lossy()
                .map_err(|e| AsrError::Engine(e.to_string()))?,
        );
        no_speech = no_speech.max(seg.no_speech_probability());
        for i in 0..seg.n_tokens() {
            if let Some(t) = seg.get_token(i)
                && t.token_id() < eot
            {
                prob_sum += t.token_probability();
                prob_n += 1;
            }
        }
    }
    let confidence = if prob_n == 0 {
        0.0
    } else {
        prob_sum / prob_n as f32
    };
    let elapsed = started.elapsed();
    metrics::histogram!("gateway_asr_real_time_factor")
        .record(elapsed.as_secs_f64() / (audio_ms.max(1) as f64 / 1000.0));
    let cleaned = guard::clean(
        &text,
        no_speech,
        confidence,
        &cfg.initial_prompt,
        &cfg.spellings,
    );
    tracing::debug!(
        no_speech,
        confidence,
        compression_ratio = guard::compression_ratio(&text),
        looped = cleaned.looped,
        raw = %text,
        "Decoded an utterance"
    );
    if cleaned.looped {
        metrics::counter!("gateway_asr_loops_total").increment(1);
    }
    Ok(Segment {
        speaker: utterance.speaker,
        start_ms: utterance.start_ms,
        end_ms: utterance.start_ms + audio_ms,
        text: cleaned.text,
        confidence,
        looped: cleaned.looped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_utterances_length_at_least_the_floor() {
        let full = Decoding::default();
        assert_eq!(full.audio_ctx(16_000 * 3), None, "30 s: whisper.cpp's own");
        let fitted = Decoding {
            min_window_ms: 1000,
            ..full
        };
        // 3 s and a second of margin, 50 positions a second.
        assert_eq!(fitted.audio_ctx(16_000 * 3), Some(200));
        let floor = Decoding {
            min_window_ms: 15_000,
            ..full
        };
        assert_eq!(floor.audio_ctx(16_000 * 3), Some(750));
        assert_eq!(
            floor.audio_ctx(16_000 * 20),
            Some(1050),
            "longer than the floor"
        );
        assert_eq!(
            floor.audio_ctx(16_000 * 29),
            None,
            "as long as the full window"
        );
    }

    #[test]
    fn the_degraded_mode_lowers_only_the_floor() {
        let d = Decoding::default();
        assert!(d.has_degraded_mode());
        let degraded = d.degraded();
        assert_eq!(degraded.min_window_ms, BUSY_WINDOW_MS);
        assert_eq!(
            (degraded.beam_size, degraded.temperature_fallback),
            (1, false)
        );
        let off = Decoding {
            busy_window_ms: FULL_WINDOW_MS,
            ..d
        };
        assert!(!off.has_degraded_mode());
        let fitted = Decoding {
            min_window_ms: 1000,
            ..d
        };
        assert!(
            !fitted.has_degraded_mode(),
            "already shorter than the degraded window"
        );
    }

    #[test]
    fn decoding_settings_out_of_range_are_refused() {
        let d = Decoding::default();
        assert!(d.validate().is_ok());
        for bad in [
            Decoding {
                min_window_ms: 500,
                ..d
            },
            Decoding {
                min_window_ms: 31_000,
                ..d
            },
            Decoding { beam_size: 0, ..d },
            Decoding { beam_size: 9, ..d },
            Decoding {
                busy_window_ms: 0,
                ..d
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
