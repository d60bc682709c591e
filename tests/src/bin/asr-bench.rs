//! Speech benchmark (docs/benchmarks.md): what each decoding choice costs in accuracy
//! and speed, and the live transcription pipeline against whisper.cpp run directly, in
//! the same run, on the same audio and model.
//!
//! ```text
//! cargo build --release -p e2e --bin asr-bench
//! target/release/asr-bench --sections accuracy --decodings 1000,10000,30000,30000:f
//! target/release/asr-bench --sections live --calls 1,2,3
//! ```
//!
//! 1. **Accuracy** (`--sections accuracy`): the short set (tests/fixtures/speech/short,
//!    `--set tune` by default; `held` only for the final score) through the engine, once
//!    per decoding in `--decodings` (`<min_window_ms>[:b<beam>][:f]`, `f` for the
//!    temperature fallback): pooled CER against the text, segments that still repeat
//!    themselves, loops the guard removed, the Art. 15 kind and the district the
//!    prefill reads from each transcript against the set's labels, and the decode time.
//! 2. **Throughput**: the Kokoro fixtures (tests/fixtures/speech, 8 kHz mu-law as a
//!    phone delivers them) pushed through the tap as fast as it takes them: upsampling,
//!    VAD, queue, engine. Beside it, whisper.cpp through whisper-rs's raw calls (no VAD,
//!    no queue, one state) on each whole file upsampled the same way, with the chosen
//!    window, and again with whisper.cpp's default 30 s window. Reported as audio
//!    seconds per wall second and the ratio.
//! 3. **Live**: `calls` concurrent calls, each playing a citizen in real time, 20 ms
//!    frames: `--live-audio short` (default) is eight utterances of the short set back
//!    to back (1 s apart, nonstop talk), `complaint` is call-complaint.wav (two long
//!    utterances). End-of-utterance to segment latency (p50, p95), the deferred count,
//!    CER. The largest count with nothing deferred is what this machine sustains live.
//!
//! The decoding settings (`--min-window-ms`, `--beam-size`, `--temperature-fallback`)
//! are the gateway's `[asr]` keys of the same names and apply to throughput and live.
//! On a GPU machine (the `cuda` build), `--workers` decoding states share the GPU and
//! `--cpu-only` runs the same binary on the CPU for the baseline; `RUST_LOG=info` shows
//! whisper.cpp's backend choice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use asr::stream::{AsrTap, StreamConfig};
use asr::whisper::{Decoding, EngineArgs, WhisperConfig, WhisperEngine};
use clap::Parser;
use contract::{AudioTap, CallAudioInfo, Speaker, TicketRef, TranscriptSegment, TranscriptSink};
use whisper_rs::{WhisperContext, WhisperContextParameters};

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
    /// The speech fixtures (tests/fixtures/speech; the short set is its `short/`).
    #[arg(long, default_value_os_t = fixtures())]
    fixtures: PathBuf,
    /// Silence that ends an utterance, in milliseconds.
    #[arg(long, default_value_t = 500)]
    end_silence_ms: u64,
    /// Longest window before a cut at a pause, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    window_ms: u64,
    /// Longest initial prompt (primer and hotwords), in characters, as `[asr]
    /// prompt_chars` (the gateway's default fills whisper's 223 tokens).
    #[arg(long, default_value_t = asr::AsrConfig::DEFAULT_PROMPT_CHARS)]
    prompt_chars: usize,
    /// Concurrent live calls to try, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    calls: Vec<usize>,
    /// What to run: accuracy, throughput, live.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "accuracy,throughput,live"
    )]
    sections: Vec<Section>,
    /// Decodings to score: `<min_window_ms>[:b<beam>][:f]`.
    #[arg(long, value_delimiter = ',', default_value = "1000,30000")]
    decodings: Vec<String>,
    /// The part of the short set to score: tune, held (the final score only), all.
    #[arg(long, default_value = "tune")]
    set: String,
    /// The live calls' citizen: short (eight short utterances back to back) or
    /// complaint (call-complaint.wav).
    #[arg(long, default_value = "short")]
    live_audio: String,
    /// The hotwords' order in the prompt: gateway (Art. 15 and kind cues, then places)
    /// or places-first.
    #[arg(long, default_value = "gateway")]
    hotwords: String,
    /// Another first sentence for the prompt than the gateway's primer (to measure one).
    #[arg(long)]
    primer: Option<String>,
    /// Print each scored utterance (id, CER, heard, said) to stderr.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Accuracy,
    Throughput,
    Live,
}

fn fixtures() -> PathBuf {
    e2e::speech::fixtures()
}

fn read_ulaw(path: &Path) -> Result<Vec<i16>> {
    e2e::speech::read_8k(path)
}

/// `<min_window_ms>[:b<beam>][:f]`.
fn parse_decoding(spec: &str) -> Result<Decoding> {
    let mut parts = spec.split(':');
    let mut d = Decoding {
        min_window_ms: parts
            .next()
            .unwrap_or_default()
            .parse()
            .context(spec.to_owned())?,
        ..Decoding::default()
    };
    for p in parts {
        match p.strip_prefix('b') {
            Some(beam) => d.beam_size = beam.parse().context(spec.to_owned())?,
            None if p == "f" => d.temperature_fallback = true,
            None => bail!("decoding {spec}: {p} is neither b<beam> nor f"),
        }
    }
    d.validate().map_err(anyhow::Error::msg)?;
    Ok(d)
}

fn describe(d: &Decoding) -> String {
    let window = if d.min_window_ms >= asr::whisper::FULL_WINDOW_MS {
        "30 s (full)".to_owned()
    } else if d.min_window_ms <= 1000 {
        "fitted".to_owned()
    } else {
        format!("fitted, at least {} s", d.min_window_ms / 1000)
    };
    let search = if d.beam_size > 1 {
        format!("beam {}", d.beam_size)
    } else {
        "greedy".into()
    };
    let fallback = if d.temperature_fallback {
        ", fallback"
    } else {
        ""
    };
    format!("{window}, {search}{fallback}")
}

/// 1. Accuracy: each decoding on the chosen part of the short set.
async fn accuracy(args: &Args) -> Result<()> {
    let set: Vec<e2e::speech::Short> = e2e::speech::short_set_in(&args.fixtures.join("short"))?
        .into_iter()
        .filter(|s| match args.set.as_str() {
            "held" => s.held,
            "all" => true,
            _ => !s.held,
        })
        .collect();
    let audio: Vec<Vec<i16>> = set
        .iter()
        .map(|s| read_ulaw(&s.wav()).map(|a| asr::resample::Upsampler::default().process(&a)))
        .collect::<Result<_>>()?;
    let audio_secs: f64 = audio.iter().map(|a| a.len() as f64 / 16_000.0).sum();
    let emergencies = set.iter().filter(|s| s.emergency.is_some()).count();
    let districts = set.iter().filter(|s| s.district.is_some()).count();
    let probe = WhisperEngine::load(engine_config(args, 0))?;
    println!(
        "\n## Accuracy: the short set ({}, {} utterances, {audio_secs:.1} s), prompt {} characters, {} tokens",
        args.set,
        set.len(),
        probe.prompt().chars().count(),
        probe.prompt_tokens()
    );
    if args.verbose {
        eprintln!("prompt: {}", probe.prompt());
    }
    drop(probe);
    println!(
        "| decoding | CER (pooled) | worst | repeating after the guard | loops removed | Art. 15 kind right (of {emergencies}) | false urgent | district right (of {districts}) | kind right | decode p50 / p95 | audio s / wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let prefiller = routing::Prefiller::shared();
    for spec in &args.decodings {
        let d = parse_decoding(spec)?;
        let mut cfg = engine_config(args, 0);
        cfg.workers = 1;
        cfg.decoding = d;
        let engine = WhisperEngine::load(cfg)?;
        let (mut heard, mut times) = (Vec::new(), Vec::new());
        let (mut repeating, mut loops, mut kind_right, mut false_urgent) = (0, 0, 0, 0);
        let (mut district_right, mut kinds_right) = (0, 0);
        let mut worst = (0.0, String::new());
        let started = Instant::now();
        for (s, a) in set.iter().zip(&audio) {
            let t = Instant::now();
            let seg = asr::TranscriptionEngine::transcribe(
                &engine,
                asr::Utterance {
                    speaker: Speaker::Citizen,
                    start_ms: 0,
                    samples: a.clone(),
                },
            )
            .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            loops += usize::from(seg.looped);
            repeating += usize::from(e2e::speech::repeats_itself(&seg.text));
            let cer = asr::score::cer(&s.text, &seg.text);
            if cer > worst.0 {
                worst = (cer, format!("{}: {}", s.id, seg.text));
            }
            let draft = prefiller.draft_for_call(
                TicketRef("bench".into()),
                String::new(),
                Vec::new(),
                vec![TranscriptSegment {
                    call_id: uuid::Uuid::nil(),
                    speaker: Speaker::Citizen,
                    start_ms: 0,
                    end_ms: 0,
                    text: seg.text.clone(),
                    confidence: seg.confidence,
                    deferred: false,
                }],
                chrono::Utc::now(),
            );
            let got_kind = draft.emergency.as_ref().map(|e| e.kind.clone());
            match &s.emergency {
                Some(want) => kind_right += usize::from(got_kind.as_ref() == Some(want)),
                None => false_urgent += usize::from(got_kind.is_some()),
            }
            if let Some(want) = &s.district {
                district_right += usize::from(
                    draft.location.as_ref().and_then(|l| l.district.as_ref()) == Some(want),
                );
            }
            let kind = serde_json::to_value(draft.kind)?;
            kinds_right += usize::from(kind.as_str() == Some(s.kind.as_str()));
            if args.verbose {
                let district = draft.location.as_ref().and_then(|l| l.district.clone());
                eprintln!(
                    "{}\t{cer:.3}\t{}\t{}\t{:?}/{:?}\t{:?}/{:?}",
                    s.id, seg.text, s.text, got_kind, s.emergency, district, s.district
                );
            }
            heard.push((s.text.as_str(), seg.text));
        }
        let wall = started.elapsed().as_secs_f64();
        let cer = e2e::speech::pooled_cer(heard.iter().map(|(r, h)| (*r, h.as_str())));
        println!(
            "| {} | {cer:.3} | {:.2} | {repeating} | {loops} | {kind_right} | {false_urgent} | {district_right} | {kinds_right} of {} | {:.0} / {:.0} ms | {:.2} |",
            describe(&d),
            worst.0,
            set.len(),
            percentile(&mut times.clone(), 0.5),
            percentile(&mut times, 0.95),
            audio_secs / wall
        );
        eprintln!("worst ({}): {}", describe(&d), worst.1);
    }
    Ok(())
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
    let words = hotwords(args);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    asr::vocabulary::prompt_with(&words, args.prompt_chars)
}

/// The gateway's hotwords, or the places before the cues (`--hotwords places-first`).
fn hotwords(args: &Args) -> Vec<String> {
    let p = routing::Prefiller::shared();
    let words = match args.hotwords.as_str() {
        "places-first" => p.place_words().into_iter().chain(p.cue_words()).collect(),
        _ => p.hotwords(),
    };
    words.into_iter().map(str::to_owned).collect()
}

fn engine_config(args: &Args, queue: usize) -> WhisperConfig {
    let words = hotwords(args);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut cfg = args
        .engine
        .config(&words, args.prompt_chars, args.workers, queue);
    if let Some(primer) = &args.primer {
        cfg.initial_prompt =
            cfg.initial_prompt
                .replacen(asr::vocabulary::SIMPLIFIED_PRIMER, primer, 1);
    }
    cfg
}

/// whisper.cpp directly: one whisper_full per file, with the chosen window (`fit`) or
/// whisper.cpp's own 30 s.
fn direct(args: &Args, audio: &[Vec<i16>], fit: bool) -> Result<f64> {
    let mut params = WhisperContextParameters::default();
    params.use_gpu(!args.engine.cpu_only);
    let ctx = WhisperContext::new_with_params(&args.engine.model, params)?;
    let mut state = ctx.create_state()?;
    // Built before the clock starts: only whisper.cpp's work is timed.
    let prompt = asr::whisper::fit_prompt(&ctx, &prompt(args));
    let started = Instant::now();
    for a in audio {
        let up = asr::resample::Upsampler::default().process(a);
        let pcm: Vec<f32> = up.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let mut p = args.engine.decoding.params();
        p.set_language(Some("zh"));
        p.set_n_threads(args.engine.threads as i32);
        p.set_no_context(true);
        p.set_single_segment(true);
        p.set_no_timestamps(true);
        p.set_initial_prompt(&prompt);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_special(false);
        if fit && let Some(ctx) = args.engine.decoding.audio_ctx(pcm.len()) {
            p.set_audio_ctx(ctx);
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
    args.engine
        .decoding
        .validate()
        .map_err(anyhow::Error::msg)?;
    println!(
        "asr-bench: model {}, {} threads, {} workers, {}; decoding for throughput and live: {}",
        args.engine.model.display(),
        args.engine.threads,
        args.workers,
        if args.engine.cpu_only {
            "CPU only"
        } else {
            "GPU if the build has one"
        },
        describe(&args.engine.decoding)
    );
    if args.sections.contains(&Section::Accuracy) {
        accuracy(&args).await?;
    }
    if args.sections.contains(&Section::Throughput) {
        throughput(&args).await?;
    }
    if args.sections.contains(&Section::Live) {
        live(&args).await?;
    }
    Ok(())
}

/// 2. Throughput: the pipeline against whisper.cpp direct.
async fn throughput(args: &Args) -> Result<()> {
    let audio: Vec<Vec<i16>> = FILES
        .iter()
        .map(|f| read_ulaw(&args.fixtures.join(format!("{f}.wav"))))
        .collect::<Result<_>>()?;
    let audio_secs: f64 = audio.iter().map(|a| a.len() as f64 / 8000.0).sum();
    println!(
        "\n## Throughput: {} files, {audio_secs:.1} s of audio (audio seconds per wall second)",
        audio.len()
    );
    let direct_fit = direct(args, &audio, true)?;
    let direct_full = direct(args, &audio, false)?;
    let engine: Arc<dyn asr::TranscriptionEngine> =
        Arc::new(WhisperEngine::load(engine_config(args, 64))?);
    let tap = AsrTap::new(
        engine,
        StreamConfig {
            queue_per_call: 64,
            ..StreamConfig::default()
        },
    );
    let started = Instant::now();
    let mut utterances = 0;
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
        utterances += c.lock().map(|c| c.segments.len()).unwrap_or(0);
    }
    let pipeline = started.elapsed().as_secs_f64();
    println!(
        "The pipeline's VAD made {utterances} utterances of the {} files (direct decodes each file once).",
        audio.len()
    );
    println!("| path | wall | audio s / wall s | pipeline ratio |");
    println!("|---|---|---|---|");
    println!(
        "| whisper.cpp direct, the chosen window | {direct_fit:.2} s | {:.2} | {:.2} |",
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
    Ok(())
}

/// 3. Live calls, paced in real time.
async fn live(args: &Args) -> Result<()> {
    let (call, _) = live_call(args, 0)?;
    println!(
        "\n## Live calls ({}, {:.1} s each, real time)",
        args.live_audio,
        call.len() as f64 / 8000.0
    );
    println!(
        "end silence {} ms, window {} ms, calls {} ms apart, queue {}",
        args.end_silence_ms, args.window_ms, args.stagger_ms, args.queue
    );
    println!("| calls | segments | deferred | degraded | latency p50 | latency p95 | mean CER |");
    println!("|---|---|---|---|---|---|---|");
    let mut sustained = 0;
    for &n in &args.calls {
        let whisper = Arc::new(WhisperEngine::load(engine_config(args, args.queue))?);
        let engine: Arc<dyn asr::TranscriptionEngine> = whisper.clone();
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
            // Each call its own stretch of the set, so that they do not say the same.
            let (call, said) = live_call(args, k)?;
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
                Ok::<_, anyhow::Error>((start, c.segments.clone(), said))
            }));
        }
        let mut latencies = Vec::new();
        let (mut segments, mut deferred) = (0, 0);
        let mut cer_sum = 0.0;
        for h in handles {
            let (start, segs, said) = h.await??;
            let text: String = segs
                .iter()
                .filter(|(_, s)| !s.text.is_empty())
                .map(|(_, s)| s.text.as_str())
                .collect();
            cer_sum += asr::score::cer(&said, &text);
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
            "| {n} | {segments} | {deferred} | {} | {:.0} ms | {:.0} ms | {:.3} |",
            whisper.degraded_decodes(),
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

/// A live call's citizen audio (8 kHz) and what it says: call-complaint.wav, or eight
/// utterances of the short set's tuning part from the `k`-th on, back to back.
fn live_call(args: &Args, k: usize) -> Result<(Vec<i16>, String)> {
    if args.live_audio == "complaint" {
        let call = read_ulaw(&args.fixtures.join("call-complaint.wav"))?;
        // What call-complaint.wav says (tests/fixtures/speech/sentences.tsv).
        let said = "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了，吵得我们睡不着觉。斗门区井岸镇已经停水两天了，整个小区都没有水，请问什么时候能恢复供水？";
        return Ok((call, said.to_owned()));
    }
    let tune: Vec<e2e::speech::Short> = e2e::speech::short_set_in(&args.fixtures.join("short"))?
        .into_iter()
        .filter(|s| !s.held)
        .collect();
    let (mut call, mut said) = (Vec::new(), String::new());
    for i in 0..8 {
        let s = &tune[(k * 8 + i) % tune.len()];
        call.extend(read_ulaw(&s.wav())?);
        said.push_str(&s.text);
    }
    Ok((call, said))
}
