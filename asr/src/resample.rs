//! 8 kHz telephone audio to the 16 kHz whisper wants.
//!
//! Written here rather than taken from a resampling crate: the ratio is fixed at exactly
//! 2, the input arrives as 20 ms RTP frames per call and direction, and each stream needs
//! a few samples of history across frames. A zero-stuffing interpolator with a
//! windowed-sinc half-band low-pass is a dozen lines; a general resampler (rubato) works
//! in fixed-size chunks and would add buffering and latency for no gain.

/// Taps of the half-band filter (odd, so it has a centre).
const TAPS: usize = 31;

/// Streaming 2x upsampler with state across calls to [`Upsampler::process`].
///
/// Polyphase: of the zero-stuffed stream's products, half are with zeros, and of the
/// half-band filter's odd taps all but the centre are zero. So each input sample costs
/// 16 multiply-adds for the even output and one for the odd: this runs on the media
/// path for every call and direction.
#[derive(Debug, Clone)]
pub struct Upsampler {
    /// The even taps (h[0], h[2], ... h[30]), applied to the last 16 inputs.
    even: [f32; PHASE],
    /// The centre tap, h[15].
    centre: f32,
    /// The last 16 inputs, newest last.
    history: [f32; PHASE],
}

/// Inputs one phase of the filter spans.
const PHASE: usize = TAPS / 2 + 1;

/// The windowed-sinc half-band low-pass: cut-off at 4 kHz of 16 kHz, gain 2 to make up
/// for the inserted zeros, Blackman window.
fn coefficients() -> [f32; TAPS] {
    let mut coeffs = [0f32; TAPS];
    let mid = (TAPS / 2) as f32;
    for (i, c) in coeffs.iter_mut().enumerate() {
        let x = i as f32 - mid;
        let sinc = if x == 0.0 {
            1.0
        } else {
            (std::f32::consts::PI * x / 2.0).sin() / (std::f32::consts::PI * x / 2.0)
        };
        let w = 0.42 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (TAPS - 1) as f32).cos()
            + 0.08 * (4.0 * std::f32::consts::PI * i as f32 / (TAPS - 1) as f32).cos();
        *c = sinc * w;
    }
    coeffs
}

impl Default for Upsampler {
    fn default() -> Self {
        let h = coefficients();
        let mut even = [0f32; PHASE];
        for (k, e) in even.iter_mut().enumerate() {
            *e = h[2 * k];
        }
        Upsampler {
            even,
            centre: h[TAPS / 2],
            history: [0.0; PHASE],
        }
    }
}

impl Upsampler {
    /// Twice as many samples out as in. The filter delays the output by `TAPS / 2`
    /// output samples (under a millisecond).
    pub fn process(&mut self, input: &[i16]) -> Vec<i16> {
        let mut out = Vec::with_capacity(input.len() * 2);
        self.process_into(input, &mut out);
        out
    }

    /// As [`Upsampler::process`], appending to `out` (a buffer the caller reuses, so the
    /// media path allocates nothing per packet).
    pub fn process_into(&mut self, input: &[i16], out: &mut Vec<i16>) {
        out.reserve(input.len() * 2);
        for &s in input {
            self.history.copy_within(1.., 0);
            self.history[PHASE - 1] = f32::from(s);
            // y[2n] = sum over even taps h[2k] * x[n - (15 - k)]; the newest input meets
            // the last even tap.
            let y0: f32 = self
                .history
                .iter()
                .zip(self.even.iter().rev())
                .map(|(x, h)| x * h)
                .sum();
            // y[2n+1] = h[15] * x[n - 7].
            let y1 = self.centre * self.history[PHASE - 1 - TAPS / 4];
            for y in [y0, y1] {
                out.push(y.round().clamp(-32768.0, 32767.0) as i16);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, rate: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (10_000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate).sin()) as i16)
            .collect()
    }

    fn rms(s: &[i16]) -> f32 {
        (s.iter().map(|&x| f32::from(x).powi(2)).sum::<f32>() / s.len() as f32).sqrt()
    }

    #[test]
    fn a_tone_keeps_its_level_and_frequency_at_twice_the_rate() {
        let mut up = Upsampler::default();
        let input = tone(1000.0, 8000.0, 8000);
        // In 20 ms frames, as RTP brings it.
        let out: Vec<i16> = input.chunks(160).flat_map(|c| up.process(c)).collect();
        assert_eq!(out.len(), 16_000);
        let body = &out[1000..15_000];
        let expected = tone(1000.0, 16_000.0, 16_000);
        assert!(
            (rms(body) / rms(&expected[1000..15_000]) - 1.0).abs() < 0.05,
            "level kept"
        );
        // Zero crossings: 2 per cycle, 1000 cycles a second.
        let crossings = body.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        let per_sec = crossings as f32 / (body.len() as f32 / 16_000.0) / 2.0;
        assert!((per_sec - 1000.0).abs() < 10.0, "{per_sec} Hz");
    }

    /// The plain zero-stuff-and-filter the polyphase form must equal.
    fn direct_form(input: &[i16]) -> Vec<i16> {
        let h = coefficients();
        let mut z = vec![0f32; TAPS - 1];
        for &s in input {
            z.push(f32::from(s));
            z.push(0.0);
        }
        (TAPS - 1..z.len())
            .map(|m| {
                let y: f32 = (0..TAPS).map(|i| h[i] * z[m - i]).sum();
                y.round().clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    #[test]
    fn the_polyphase_form_equals_zero_stuffing_and_filtering() {
        let input: Vec<i16> = tone(700.0, 8000.0, 800)
            .into_iter()
            .zip(tone(2900.0, 8000.0, 800))
            .map(|(a, b)| a / 2 + b / 2)
            .collect();
        let mut up = Upsampler::default();
        let fast: Vec<i16> = input.chunks(37).flat_map(|c| up.process(c)).collect();
        let slow = direct_form(&input);
        assert_eq!(fast.len(), slow.len());
        let worst = fast
            .iter()
            .zip(&slow)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap_or(0);
        assert!(worst <= 1, "differs by {worst}");
    }

    #[test]
    fn images_above_four_kilohertz_are_suppressed() {
        // A 3 kHz tone zero-stuffed has an image at 13 kHz; after filtering, the output
        // must look like a clean 3 kHz tone: compare against the ideal one.
        let mut up = Upsampler::default();
        let out = up.process(&tone(3000.0, 8000.0, 4000));
        let body = &out[200..7800];
        let crossings = body.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        let per_sec = crossings as f32 / (body.len() as f32 / 16_000.0) / 2.0;
        assert!((per_sec - 3000.0).abs() < 30.0, "{per_sec} Hz");
    }
}
