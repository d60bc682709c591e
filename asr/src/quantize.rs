//! A whisper.cpp ggml model, read back, and its weight matrices quantized to `q8_0`.
//!
//! Why: a quantized model is half the size of the f16 one (82 MB against 148 MB for
//! `base`), which is what fits where the f16 file does not (a machine that takes at
//! most 64 MiB, a small image, less memory per host). It is not reliably faster on the
//! development CPU (docs/benchmarks.md).
//!
//! `q8_0` is the one format taken: `asr/tests/model.rs` shows it says what f16 says.
//! Lower formats (q5, q4) were not tried.
//!
//! Why by hand: ggml's own quantizer (`ggml_quantize_chunk`) is reachable only through
//! FFI, and this workspace forbids `unsafe`; whisper.cpp's `quantize` tool is a C++
//! example outside the vendored sources. `q8_0` is small enough to write exactly:
//! blocks of 32 values, a f16 scale `d = max|x| / 127`, and `round(x / d)` as i8 (ggml's
//! `quantize_row_q8_0_ref`, rounding half away from zero as C's `roundf` does). The test
//! `q8_0_matches_ggml_reference_values` pins that arithmetic, and `asr/tests/model.rs`
//! checks the quantized `base` model transcribes like the f16 one.
//!
//! Which tensors: whisper.cpp creates every 2-D weight matrix in the model's weight type
//! and refuses a file whose tensor types differ from that, so all 2-D f16 tensors are
//! quantized; the conv kernels (3-D) stay f16 and the vectors and positional embeddings
//! stay f32, as whisper.cpp's own quantizer leaves them.

use std::io::Write;

use half::f16;

use crate::convert::ConvertError;

/// ggml's tensor type codes used here.
const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;
const GGML_TYPE_Q8_0: i32 = 8;
/// ggml's file type for "mostly q8_0", and the quantization version whisper.cpp's
/// quantizer folds into the header's ftype (`ftype + 1000 * GGML_QNT_VERSION`).
const GGML_FTYPE_MOSTLY_Q8_0: i32 = 7;
const GGML_QNT_VERSION: i32 = 2;
/// Values per q8_0 block, and the block's bytes (a f16 scale and 32 i8).
const QK8_0: usize = 32;
const Q8_0_BLOCK_BYTES: usize = 2 + QK8_0;

/// One tensor of a ggml file.
#[derive(Debug, Clone)]
pub struct GgmlTensor<'a> {
    /// whisper.cpp's name.
    pub name: String,
    /// Dimensions, innermost first (ggml's order).
    pub ne: Vec<usize>,
    /// ggml type code.
    pub ttype: i32,
    /// The stored bytes.
    pub data: &'a [u8],
}

/// A whisper.cpp ggml model file, read back.
#[derive(Debug, Clone)]
pub struct GgmlFile<'a> {
    /// The magic and the 11 hyper-parameters (the last is the ftype).
    pub header: [i32; 12],
    /// The mel filterbank: bands, FFT bins, values.
    pub filters: (usize, usize, Vec<f32>),
    /// The BPE tokens' bytes.
    pub tokens: Vec<Vec<u8>>,
    /// The tensors, in file order.
    pub tensors: Vec<GgmlTensor<'a>>,
    /// The bytes from after the header to the first tensor (filters and tokens).
    prelude: &'a [u8],
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ConvertError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| ConvertError::Malformed {
                at: self.at,
                what: format!("{what} ({n} bytes) past the end of the ggml file"),
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32, ConvertError> {
        let s = self.take(4, what)?;
        Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn count(&mut self, what: &str) -> Result<usize, ConvertError> {
        let at = self.at;
        usize::try_from(self.i32(what)?).map_err(|_| ConvertError::Malformed {
            at,
            what: format!("{what} is negative"),
        })
    }
}

/// Bytes per element row of `n` values of ggml type `ttype`, or `None` for a type this
/// reader does not know.
fn row_bytes(ttype: i32, n: usize) -> Option<usize> {
    match ttype {
        GGML_TYPE_F32 => n.checked_mul(4),
        GGML_TYPE_F16 => n.checked_mul(2),
        GGML_TYPE_Q8_0 if n.is_multiple_of(QK8_0) => Some(n / QK8_0 * Q8_0_BLOCK_BYTES),
        _ => None,
    }
}

impl<'a> GgmlFile<'a> {
    /// Reads a whisper.cpp ggml model (f32, f16 or q8_0 tensors).
    pub fn parse(b: &'a [u8]) -> Result<Self, ConvertError> {
        let mut c = Cursor { b, at: 0 };
        let mut header = [0i32; 12];
        for (k, h) in header.iter_mut().enumerate() {
            *h = c.i32(if k == 0 { "magic" } else { "hyper-parameter" })?;
        }
        if header[0] as u32 != 0x6767_6d6c {
            return Err(ConvertError::Unsupported(
                "not a ggml file (no ggml magic)".into(),
            ));
        }
        let start = c.at;
        let (n_mel, n_fft) = (c.count("mel bands")?, c.count("fft bins")?);
        let filter_bytes = n_mel
            .checked_mul(n_fft)
            .and_then(|n| n.checked_mul(4))
            .unwrap_or(usize::MAX);
        let filters = c
            .take(filter_bytes, "mel filters")?
            .chunks_exact(4)
            .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .collect();
        let n_tokens = c.count("token count")?;
        let mut tokens = Vec::with_capacity(n_tokens);
        for _ in 0..n_tokens {
            let len = c.count("token length")?;
            tokens.push(c.take(len, "token")?.to_vec());
        }
        let prelude = &b[start..c.at];
        let mut tensors = Vec::new();
        while c.at < b.len() {
            let at = c.at;
            let n_dims = c.count("tensor rank")?;
            let name_len = c.count("tensor name length")?;
            let ttype = c.i32("tensor type")?;
            let ne = (0..n_dims)
                .map(|_| c.count("tensor dimension"))
                .collect::<Result<Vec<_>, _>>()?;
            let name = String::from_utf8_lossy(c.take(name_len, "tensor name")?).into_owned();
            let n_rows = ne.iter().skip(1).try_fold(1usize, |a, &d| a.checked_mul(d));
            let bytes = ne
                .first()
                .and_then(|&n0| row_bytes(ttype, n0))
                .and_then(|r| r.checked_mul(n_rows?))
                .ok_or_else(|| ConvertError::Malformed {
                    at,
                    what: format!(
                        "tensor {name}: type {ttype} with dimensions {ne:?} is not one this reader knows"
                    ),
                })?;
            let data = c.take(bytes, &name)?;
            tensors.push(GgmlTensor {
                name,
                ne,
                ttype,
                data,
            });
        }
        Ok(GgmlFile {
            header,
            filters: (n_mel, n_fft, filters),
            tokens,
            tensors,
            prelude,
        })
    }
}

/// One row of f32 values to q8_0 blocks, appended to `out`; `x.len()` is a multiple of 32.
pub fn quantize_row_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // `round` rounds half away from zero, as `roundf` does in ggml's reference; the
        // cast saturates, and |x * id| <= 127 by construction.
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

/// q8_0 blocks back to f32 (for tests and checks).
pub fn dequantize_q8_0(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(Q8_0_BLOCK_BYTES)
        .flat_map(|blk| {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            blk[2..].iter().map(move |&q| f32::from(q as i8) * d)
        })
        .collect()
}

/// What a quantization wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Of which quantized to q8_0.
    pub quantized: usize,
}

/// Writes `model` (an f16 ggml whisper model) to `out` with every 2-D f16 tensor in q8_0.
pub fn quantize_q8_0(model: &[u8], out: &mut impl Write) -> Result<QuantizeSummary, ConvertError> {
    let g = GgmlFile::parse(model)?;
    if g.header[11] % 1000 != 1 {
        return Err(ConvertError::Unsupported(format!(
            "ggml ftype {} (quantizing starts from an f16 model)",
            g.header[11]
        )));
    }
    for h in &g.header[..11] {
        out.write_all(&h.to_le_bytes())?;
    }
    out.write_all(&(GGML_FTYPE_MOSTLY_Q8_0 + 1000 * GGML_QNT_VERSION).to_le_bytes())?;
    out.write_all(g.prelude)?;
    let mut quantized = 0;
    let mut buf = Vec::new();
    for t in &g.tensors {
        let q = t.ttype == GGML_TYPE_F16 && t.ne.len() == 2;
        if q && !t.ne[0].is_multiple_of(QK8_0) {
            return Err(ConvertError::Tensor(format!(
                "{}: rows of {} values cannot be cut into q8_0 blocks of {QK8_0}",
                t.name, t.ne[0]
            )));
        }
        let (ttype, data) = if q {
            buf.clear();
            let values: Vec<f32> = t
                .data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            for row in values.chunks_exact(t.ne[0]) {
                quantize_row_q8_0(row, &mut buf);
            }
            quantized += 1;
            (GGML_TYPE_Q8_0, buf.as_slice())
        } else {
            (t.ttype, t.data)
        };
        for v in [t.ne.len(), t.name.len()] {
            out.write_all(&(v as i32).to_le_bytes())?;
        }
        out.write_all(&ttype.to_le_bytes())?;
        for &d in &t.ne {
            out.write_all(&(d as i32).to_le_bytes())?;
        }
        out.write_all(t.name.as_bytes())?;
        out.write_all(data)?;
    }
    out.flush()?;
    Ok(QuantizeSummary {
        tensors: g.tensors.len(),
        quantized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_matches_ggml_reference_values() {
        // One block with max |x| = 127, so d = 1 and each value is rounded half away
        // from zero, as C's roundf does (0.5 -> 1, -0.5 -> -1, 2.5 -> 3, not 2).
        let mut x = vec![0f32; 32];
        x[..6].copy_from_slice(&[127.0, -127.0, 0.5, -0.5, 2.5, 1.49]);
        let mut out = Vec::new();
        quantize_row_q8_0(&x, &mut out);
        assert_eq!(out.len(), 34);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]), f16::from_f32(1.0));
        let q: Vec<i8> = out[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(&q[..6], &[127, -127, 1, -1, 3, 1]);
        assert!(q[6..].iter().all(|&v| v == 0));
        // An all-zero block has scale 0 and zeros, not NaN.
        let mut z = Vec::new();
        quantize_row_q8_0(&[0.0; 32], &mut z);
        assert!(z.iter().all(|&b| b == 0));
    }

    #[test]
    fn q8_0_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut q = Vec::new();
        quantize_row_q8_0(&x, &mut q);
        let back = dequantize_q8_0(&q);
        for (blk, bb) in x.chunks(32).zip(back.chunks(32)) {
            let step = blk.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, b) in blk.iter().zip(bb) {
                // Half a step, plus the f16 rounding of the scale.
                assert!((a - b).abs() <= step * 0.5 + a.abs() * 1e-3, "{a} -> {b}");
            }
        }
    }

    /// A ggml file with one matrix, one conv kernel and one vector.
    fn tiny_ggml(cols: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let mut header = [0i32; 12];
        header[0] = 0x6767_6d6c_u32 as i32;
        header[11] = 1;
        for h in header {
            b.extend_from_slice(&h.to_le_bytes());
        }
        for v in [1i32, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 8]); // the filters: 1 x 2 f32
        b.extend_from_slice(&1i32.to_le_bytes());
        b.extend_from_slice(&2i32.to_le_bytes());
        b.extend_from_slice(b"hi");
        let mut tensor = |name: &str, ne: &[usize], ttype: i32, data: Vec<u8>| {
            for v in [ne.len() as i32, name.len() as i32, ttype] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for &d in ne {
                b.extend_from_slice(&(d as i32).to_le_bytes());
            }
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&data);
        };
        let f16s = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| f16::from_f32(i as f32 / 16.0 - 1.0).to_le_bytes())
                .collect()
        };
        tensor("m.weight", &[cols, 2], GGML_TYPE_F16, f16s(cols * 2));
        tensor("conv.weight", &[3, 2, 2], GGML_TYPE_F16, f16s(12));
        tensor("m.bias", &[2], GGML_TYPE_F32, vec![0; 8]);
        b
    }

    #[test]
    fn matrices_become_q8_0_and_the_rest_is_copied() {
        let src = tiny_ggml(64);
        let mut out = Vec::new();
        let s = quantize_q8_0(&src, &mut out).expect("quantize");
        assert_eq!(
            s,
            QuantizeSummary {
                tensors: 3,
                quantized: 1
            }
        );
        let g = GgmlFile::parse(&out).expect("parse the quantized file");
        assert_eq!(g.header[11], 2007, "ftype q8_0 with quantization version 2");
        assert_eq!(g.tokens, vec![b"hi".to_vec()]);
        let src = GgmlFile::parse(&src).expect("parse");
        let m = &g.tensors[0];
        assert_eq!((m.ttype, m.ne.clone()), (GGML_TYPE_Q8_0, vec![64, 2]));
        let want: Vec<f32> = src.tensors[0]
            .data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        // The largest value is 7, so a step is 7 / 127 and an error at most half that.
        for (a, b) in want.iter().zip(dequantize_q8_0(m.data)) {
            assert!((a - b).abs() <= 7.0 / 254.0 + 1e-3, "{a} -> {b}");
        }
        for k in 1..3 {
            assert_eq!(g.tensors[k].ttype, src.tensors[k].ttype);
            assert_eq!(g.tensors[k].data, src.tensors[k].data);
        }
    }

    #[test]
    fn rows_that_do_not_fill_blocks_and_quantized_input_are_refused() {
        let err = quantize_q8_0(&tiny_ggml(48), &mut Vec::new()).expect_err("48 columns");
        assert!(err.to_string().contains("blocks of 32"), "{err}");
        let mut once = Vec::new();
        quantize_q8_0(&tiny_ggml(64), &mut once).expect("quantize");
        let err = quantize_q8_0(&once, &mut Vec::new()).expect_err("already q8_0");
        assert!(err.to_string().contains("f16 model"), "{err}");
        let err = quantize_q8_0(&tiny_ggml(64)[..100], &mut Vec::new()).expect_err("truncated");
        assert!(err.to_string().contains("past the end"), "{err}");
        // Absurd dimensions are an error, not a panic or a huge allocation.
        let mut huge = tiny_ggml(64);
        let at = 48 + 8 + 8 + 4 + 4 + 2 + 12; // the first tensor's dimensions
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        huge[at + 4..at + 8].copy_from_slice(&i32::MAX.to_le_bytes());
        let err = GgmlFile::parse(&huge).expect_err("overflowing dimensions");
        assert!(err.to_string().contains("m.weight"), "{err}");
    }
}
