//! Speech benchmark (docs/benchmarks.md): the live transcription pipeline against
//! whisper.cpp run directly, in the same run, on the same audio and model.
//!
//! ```text
//! cargo build --release -p e2e --bin asr-bench
//! target/release/asr-bench --model .dev/models/ggml-base.bin --calls 1,2,3,4
//! ```
//!
//! 1. **Throughput**: the Kokoro fixtures (tests/fixtures/speech, 8 kHz mu-law as a
//!    phone delivers them) pushed through the tap as fast as it takes them: upsampling,
//!    VAD, queue, engine. Beside it, whisper.cpp through whisper-rs's raw calls (no VAD,
//!    no queue, one state) on each whole file upsampled the same way, with the gateway's
//!    decoding settings, and again with whisper.cpp's default 30 s window. Reported as
//!    audio seconds per wall second and the ratio.
//! 2. **Live**: `calls` concurrent calls, each playing call-complaint.wav (two
//!    utterances, 16 s) in real time, 20 ms frames: end-of-utterance to segment latency
//!    (p50, p95) and the deferred count. The largest count with nothing deferred is what
//!    this machine sustains live.
//!
//! On a GPU machine (the `cuda` build), `--workers` decoding states share the GPU and
//! `--cpu-only` runs the same binary on the CPU for the baseline; `RUST_LOG=info` shows
//! whisper.cpp's backend choice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use asr::stream::{AsrTap, StreamConfig};
use asr::whisper::{EngineArgs, WhisperConfig, WhisperEngine};
use clap::Parser;
use contract::{AudioTap, CallAudioInfo, Speaker, TicketRef, TranscriptSegment, TranscriptSink};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

#[derive(Parser)]
struct Args {
    /// Model, threads (both paths), flash attention (the pipeline only), CPU only.
    #[command(flatten)]
    engine: EngineArgs,
    /// Decoding states for the live calls (the gateway's `[asr] workers`).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Utterances waiting for a state before the engine is busy (`[asr] queue`).
    #[arg(long, default_value_t = 4)]
    queue: usize,
    /// Live calls start this far apart, in milliseconds.
    #[arg(long, default_value_t = 300)]
    stagger_ms: u64,
    /// The speech fixtures (tests/fixtures/speech).
    #[arg(long, default_value_os_t = fixtures())]
    fixtures: PathBuf,
    /// Silence that ends an utterance, in milliseconds.
    #[arg(long, default_value_t = 500)]
    end_silence_ms: u64,
    /// Longest window before a cut at a pause, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    window_ms: u64,
    /// Longest initial prompt (primer and hotwords), in characters; the gateway's is 150.
    #[arg(long, default_value_t = 150)]
    prompt_chars: usize,
    /// Concurrent live calls to try, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    calls: Vec<usize>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/speech")
}

/// The samples of an 8 kHz mu-law WAV (hound reads PCM only).
fn read_ulaw(path: &Path) -> Result<Vec<i16>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let at = bytes
        .windows(4)
        .position(|w| w == b"data")
        .context("no data chunk")?;
    let len =
        u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
    let data = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
    let mut out = Vec::with_capacity(data.len());
    channel_sip::g711::decode(channel_sip::g711::PCMU, data, &mut out);
    Ok(out)
}

const FILES: [&str; 7] = [
    "complaint_noise",
    "fire_emergency",
    "water_outage",
    "consult_social_security",
    "suggestion_bus",
    "praise_staff",
    "agent_greeting",
];

#[derive(Default)]
struct Collected {
    segments: Vec<(Instant, TranscriptSegment)>,
    complete: bool,
}

struct Sink(Arc<Mutex<Collected>>);

impl TranscriptSink for Sink {
    fn segment(&self, s: TranscriptSegment) {
        if let Ok(mut c) = self.0.lock() {
            c.segments.push((Instant::now(), s));
        }
    }
    fn complete(&self, _t: Vec<TranscriptSegment>) {
        if let Ok(mut c) = self.0.lock() {
            c.complete = true;
        }
    }
}

fn info() -> CallAudioInfo {
    CallAudioInfo {
        call_id: uuid::Uuid::new_v4(),
        ticket_ref: TicketRef("bench".into()),
        sample_rate: 8000,
        recording: None,
    }
}

async fn wait_complete(c: &Arc<Mutex<Collected>>) {
    while !c.lock().map(|c| c.complete).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The gateway's prompt: the primer and the routing vocabulary's hotwords.
fn prompt(args: &Args) -> String {
    asr::vocabulary::prompt_with(&routing::Prefiller::shared().hotwords(), args.prompt_chars)
}

fn engine_config(args: &Args, queue: usize) -> WhisperConfig {
    args.engine.config(prompt(args), args.workers, queue, true)
}

/// whisper.cpp directly: one whisper_full per file.
fn direct(args: &Args, audio: &[Vec<i16>], fit: bool) -> Result<f64> {
    let mut params = WhisperContextParameters::default();
    params.use_gpu(!args.engine.cpu_only);
    let ctx = WhisperContext::new_with_params(&args.engine.model, params)?;
    let mut state = ctx.create_state()?;
    // Built before the clock starts: only whisper.cpp's work is timed.
    let prompt = prompt(args);
    let started = Instant::now();
    for a in audio {
        let up = asr::resample::Upsampler::default().process(a);
        let pcm: Vec<f32> = up.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        p.set_language(Some("zh"));
        p.set_n_threads(args.engine.threads as i32);
        p.set_temperature_inc(0.0);
        p.set_no_context(true);
        p.set_single_segment(true);
        p.set_no_timestamps(true);
        p.set_initial_prompt(&prompt);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_special(false);
        if fit {
            p.set_audio_ctx(
                ((pcm.len() as f64 / 16_000.0 + 1.0) * 50.0)
                    .ceil()
                    .min(1500.0) as i32,
            );
        }
        state.full(p, &pcm)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    asr::whisper::route_logs_to_tracing();
    let audio: Vec<Vec<i16>> = FILES
        .iter()
        .map(|f| read_ulaw(&args.fixtures.join(format!("{f}.wav"))))
        .collect::<Result<_>>()?;
    let audio_secs: f64 = audio.iter().map(|a| a.len() as f64 / 8000.0).sum();
    println!(
        "asr-bench: {} files, {audio_secs:.1} s of audio, model {}, {} threads, {} workers, {}",
        audio.len(),
        args.engine.model.display(),
        args.engine.threads,
        args.workers,
        if args.engine.cpu_only {
            "CPU only"
        } else {
            "GPU if the build has one"
        }
    );

    // 1. Throughput.
    let direct_fit = direct(&args, &audio, true)?;
    let direct_full = direct(&args, &audio, false)?;
    let engine: Arc<dyn asr::TranscriptionEngine> =
        Arc::new(WhisperEngine::load(engine_config(&args, 64))?);
    let tap = AsrTap::new(
        engine,
        StreamConfig {
            queue_per_call: 64,
            ..StreamConfig::default()
        },
    );
    let started = Instant::now();
    for a in &audio {
        let c = Arc::new(Mutex::new(Collected::default()));
        let mut stream = tap
            .open(&info(), Arc::new(Sink(c.clone())))
            .context("tap")?;
        for (i, frame) in a.chunks(160).enumerate() {
            stream.push(Speaker::Citizen, i as u64 * 20, frame);
        }
        stream.finish();
        wait_complete(&c).await;
    }
    let pipeline = started.elapsed().as_secs_f64();
    println!("\n## Throughput (audio seconds per wall second)");
    println!("| path | wall | audio s / wall s | pipeline ratio |");
    println!("|---|---|---|---|");
    println!(
        "| whisper.cpp direct, gateway settings (fitted window) | {direct_fit:.2} s | {:.2} | {:.2} |",
        audio_secs / direct_fit,
        direct_fit / pipeline
    );
    println!(
        "| whisper.cpp direct, 30 s window (whisper.cpp default) | {direct_full:.2} s | {:.2} | {:.2} |",
        audio_secs / direct_full,
        direct_full / pipeline
    );
    println!(
        "| pipeline: tap, VAD, queue, engine | {pipeline:.2} s | {:.2} | 1.00 |",
        audio_secs / pipeline
    );

    // 2. Live calls, paced in real time.
    let call = read_ulaw(&args.fixtures.join("call-complaint.wav"))?;
    println!(
        "\n## Live calls (call-complaint.wav, {:.1} s, real time)",
        call.len() as f64 / 8000.0
    );
    // What call-complaint.wav says (tests/fixtures/speech/sentences.tsv).
    let said = "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了，吵得我们睡不着觉。斗门区井岸镇已经停水两天了，整个小区都没有水，请问什么时候能恢复供水？";
    println!(
        "end silence {} ms, window {} ms, calls {} ms apart, queue {}",
        args.end_silence_ms, args.window_ms, args.stagger_ms, args.queue
    );
    println!("| calls | segments | deferred | latency p50 | latency p95 | mean CER |");
    println!("|---|---|---|---|---|---|");
    let mut sustained = 0;
    for &n in &args.calls {
        let engine: Arc<dyn asr::TranscriptionEngine> =
            Arc::new(WhisperEngine::load(engine_config(&args, args.queue))?);
        let tap = Arc::new(AsrTap::new(
            engine,
            StreamConfig {
                vad: asr::vad::VadConfig {
                    end_silence_ms: args.end_silence_ms,
                    max_utterance_ms: args.window_ms,
                    ..asr::vad::VadConfig::default()
                },
                ..StreamConfig::default()
            },
        ));
        let stagger = args.stagger_ms;
        let mut handles = Vec::new();
        for k in 0..n {
            let tap = tap.clone();
            let call = call.clone();
            handles.push(tokio::spawn(async move {
                // Calls start apart, as they arrive in practice.
                tokio::time::sleep(Duration::from_millis(stagger * k as u64)).await;
                let c = Arc::new(Mutex::new(Collected::default()));
                let mut stream = tap
                    .open(&info(), Arc::new(Sink(c.clone())))
                    .context("tap")?;
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for (i, frame) in call.chunks(160).enumerate() {
                    tick.tick().await;
                    stream.push(Speaker::Citizen, i as u64 * 20, frame);
                }
                stream.finish();
                wait_complete(&c).await;
                let c = c.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                Ok::<_, anyhow::Error>((start, c.segments.clone()))
            }));
        }
        let mut latencies = Vec::new();
        let (mut segments, mut deferred) = (0, 0);
        let mut cer_sum = 0.0;
        for h in handles {
            let (start, segs) = h.await??;
            let text: String = segs
                .iter()
                .filter(|(_, s)| !s.text.is_empty())
                .map(|(_, s)| s.text.as_str())
                .collect();
            cer_sum += asr::score::cer(said, &text);
            for (at, s) in segs {
                if s.deferred {
                    deferred += usize::from(s.text.is_empty());
                    continue;
                }
                segments += 1;
                // The utterance's audio ended at end_ms (less the 200 ms of silence the
                // VAD keeps); its text arrived at `at`.
                let spoken_end = start + Duration::from_millis(s.end_ms.saturating_sub(200));
                latencies.push(at.saturating_duration_since(spoken_end).as_secs_f64() * 1000.0);
            }
        }
        if deferred == 0 {
            sustained = n;
        }
        println!(
            "| {n} | {segments} | {deferred} | {:.0} ms | {:.0} ms | {:.3} |",
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.95),
            cer_sum / n as f64
        );
    }
    println!("\nlive calls sustained with nothing deferred: {sustained}");
    if sustained == 0 {
        bail!("even one call deferred speech");
    }
    Ok(())
}
