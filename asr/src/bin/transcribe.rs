//! Transcribes WAV files (16-bit PCM, mono, 8 or 16 kHz) with the gateway's engine and
//! settings, one line per file: `file<TAB>seconds<TAB>confidence<TAB>text`. For checking
//! a model by ear and eye, and for the speech benchmarks.

use std::path::PathBuf;

use anyhow::{Context, bail};
use asr::{TranscriptionEngine, Utterance};
use clap::Parser;

/// Transcribe WAV files with whisper as the gateway runs it.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    engine: asr::whisper::EngineArgs,
    /// The initial prompt (default: the gateway's).
    #[arg(long)]
    prompt: Option<String>,
    /// Encode whisper's full 30 s window instead of the utterance's length.
    #[arg(long)]
    full_window: bool,
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
    let prompt = args.prompt.unwrap_or_else(asr::vocabulary::default_prompt);
    let engine =
        asr::whisper::WhisperEngine::load(args.engine.config(prompt, 1, 0, !args.full_window))?;
    for file in &args.files {
        let mut wav =
            hound::WavReader::open(file).with_context(|| format!("open {}", file.display()))?;
        let spec = wav.spec();
        if spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            bail!("{}: need 16-bit PCM mono", file.display());
        }
        let samples: Vec<i16> = wav.samples::<i16>().collect::<Result<_, _>>()?;
        let samples = match spec.sample_rate {
            16_000 => samples,
            8_000 => asr::resample::Upsampler::default().process(&samples),
            r => bail!("{}: {r} Hz; need 8 or 16 kHz", file.display()),
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
