//! Converts a CTranslate2 (faster-whisper) Whisper model to the ggml file whisper.cpp
//! loads. See `asr::convert` for why and how; `deploy/fetch-model.sh` runs it.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Convert a CTranslate2 Whisper model (model.bin + vocabulary.txt) to ggml (f16).
#[derive(Parser)]
struct Args {
    /// The CTranslate2 model.bin.
    #[arg(long)]
    model: PathBuf,
    /// The vocabulary.txt beside it.
    #[arg(long)]
    vocabulary: PathBuf,
    /// Where to write the ggml file.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model =
        std::fs::read(&args.model).with_context(|| format!("read {}", args.model.display()))?;
    let vocabulary = std::fs::read_to_string(&args.vocabulary)
        .with_context(|| format!("read {}", args.vocabulary.display()))?;
    // Written beside the target and renamed, so a failed run leaves no half model where
    // the gateway looks for one.
    let tmp = args.out.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let summary =
        asr::convert::convert(&model, &vocabulary, &mut BufWriter::new(file)).context("convert")?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("rename to {}", args.out.display()))?;
    println!(
        "wrote {}: {} tensors, {} tokens, {:?}",
        args.out.display(),
        summary.tensors,
        summary.tokens,
        summary.hparams
    );
    Ok(())
}
