//! Transcribes WAV files (mono; 8 kHz mu-law or PCM as a phone delivers them, or 16 kHz
//! PCM) with the gateway's engine, decoding settings and prompt, one line per file:
//! `file<TAB>seconds<TAB>confidence<TAB>text`. For checking a model by ear and eye.
//!
//! The prompt is the gateway's: the Simplified primer, then routing's hotwords (Art. 15
//! cues, request kinds, places, departments) up to `--prompt-chars`, as
//! `[asr] prompt_chars` gives it. `--show-prompt` prints it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use asr::{TranscriptionEngine, Utterance};
use clap::Parser;

/// Transcribe WAV files with whisper as the gateway runs it.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    engine: asr::whisper::EngineArgs,
    /// The initial prompt instead of the gateway's.
    #[arg(long)]
    prompt: Option<String>,
    /// Longest gateway prompt, in characters (`[asr] prompt_chars`).
    #[arg(long, default_value_t = asr::AsrConfig::DEFAULT_PROMPT_CHARS)]
    prompt_chars: usize,
    /// Print the prompt used to stderr.
    #[arg(long)]
    show_prompt: bool,
    /// WAV files.
    files: Vec<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let prefiller = routing::Prefiller::shared();
    let mut cfg = args
        .engine
        .config(&prefiller.hotwords(), args.prompt_chars, 1, 0);
    if let Some(prompt) = &args.prompt {
        cfg.initial_prompt.clone_from(prompt);
    }
    let prompt = cfg.initial_prompt.clone();
    let engine = asr::whisper::WhisperEngine::load(cfg)?;
    if args.show_prompt {
        eprintln!(
            "prompt ({} characters, {} tokens): {prompt}",
            prompt.chars().count(),
            engine.prompt_tokens()
        );
    }
    for file in &args.files {
        let wav = hound::WavReader::open(file).map(|w| w.spec()).ok();
        let samples = match wav {
            Some(spec) if spec.sample_rate == 16_000 => {
                if spec.channels != 1
                    || spec.bits_per_sample != 16
                    || spec.sample_format != hound::SampleFormat::Int
                {
                    bail!("{}: need 16-bit PCM mono", file.display());
                }
                hound::WavReader::open(file)?
                    .samples::<i16>()
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("read {}", file.display()))?
            }
            _ => asr::resample::Upsampler::default().process(&e2e::speech::read_8k(file)?),
        };
        let secs = samples.len() as f64 / 16_000.0;
        let seg = engine
            .transcribe(Utterance {
                speaker: asr::Speaker::Citizen,
                start_ms: 0,
                samples,
            })
            .await?;
        println!(
            "{}\t{secs:.2}\t{:.2}\t{}",
            file.display(),
            seg.confidence,
            seg.text
        );
    }
    Ok(())
}
