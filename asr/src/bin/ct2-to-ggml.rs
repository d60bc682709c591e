//! Converts a CTranslate2 (faster-whisper) Whisper model to the ggml file whisper.cpp
//! loads, and optionally quantizes its weight matrices to q8_0. See `asr::convert` and
//! `asr::quantize` for why and how; `deploy/fetch-model.sh` runs it.
//!
//! ```text
//! ct2-to-ggml --model model.bin --vocabulary vocabulary.txt --out ggml-base.bin
//! ct2-to-ggml --ggml ggml-base.bin --quantize q8_0 --out ggml-base-q8_0.bin
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Quantize {
    /// 8-bit blocks of 32 with a f16 scale (half the f16 size, the same accuracy).
    #[value(name = "q8_0")]
    Q8_0,
}

/// Convert a CTranslate2 Whisper model (model.bin + vocabulary.txt) to ggml (f16), or
/// quantize a ggml f16 model.
#[derive(Parser)]
struct Args {
    /// The CTranslate2 model.bin.
    #[arg(long, requires = "vocabulary", conflicts_with = "ggml")]
    model: Option<PathBuf>,
    /// The vocabulary.txt beside it.
    #[arg(long)]
    vocabulary: Option<PathBuf>,
    /// A ggml f16 model to quantize instead of converting (needs --quantize).
    #[arg(long, requires = "quantize")]
    ggml: Option<PathBuf>,
    /// Quantize the weight matrices.
    #[arg(long, value_enum)]
    quantize: Option<Quantize>,
    /// Where to write the ggml file.
    #[arg(long)]
    out: PathBuf,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut ggml = match (&args.model, &args.vocabulary, &args.ggml) {
        (Some(model), Some(vocabulary), None) => {
            let model = read(model)?;
            let vocabulary = String::from_utf8(read(vocabulary)?).context("vocabulary.txt")?;
            let mut out = Vec::new();
            let summary =
                asr::convert::convert(&model, &vocabulary, &mut out).context("convert")?;
            println!(
                "converted: {} tensors, {} tokens, {:?}",
                summary.tensors, summary.tokens, summary.hparams
            );
            out
        }
        (None, None, Some(ggml)) => read(ggml)?,
        _ => bail!("give --model and --vocabulary, or --ggml with --quantize"),
    };
    if let Some(Quantize::Q8_0) = args.quantize {
        let mut out = Vec::with_capacity(ggml.len() / 2);
        let s = asr::quantize::quantize_q8_0(&ggml, &mut out).context("quantize")?;
        println!("quantized {} of {} tensors to q8_0", s.quantized, s.tensors);
        ggml = out;
    }
    // Written beside the target and renamed, so a failed run leaves no half model where
    // the gateway looks for one.
    let tmp = args.out.with_extension("partial");
    std::fs::write(&tmp, &ggml).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("rename to {}", args.out.display()))?;
    println!("wrote {} ({} bytes)", args.out.display(), ggml.len());
    Ok(())
}
