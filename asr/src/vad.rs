//! Voice-activity detection: cuts one speaker's 16 kHz stream into utterances.
//!
//! Energy-based, on 20 ms frames, with a noise floor that follows the line when nobody
//! speaks. Why not a neural VAD (Silero through whisper.cpp's VAD, or WebRTC's GMM):
//! telephone legs here carry one speaker each, already band-limited and mostly quiet
//! between turns, so level against the line's own floor separates speech well; it costs
//! nothing per frame on the media path and needs no second model. What a crude detector
//! lets through (a cough, a click) whisper turns into nothing and the guards drop.
//!
//! An utterance starts after `min_speech_ms` of frames above the threshold (with
//! `pre_roll_ms` of audio before it kept, so first syllables are not clipped) and ends
//! after `end_silence_ms` below it. One longer than `max_utterance_ms` is cut at the
//! quietest frame of its last second (a pause between phrases, most likely) and
//! continues as the next window: a long complaint reaches the screen in parts, each
//! soon after it was said, and no audio is lost at a cut.

use std::collections::VecDeque;

/// Samples per 20 ms frame at 16 kHz.
const FRAME: usize = 320;

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames must be this many dB above the noise floor to count as speech.
    pub threshold_db: f32,
    /// And at least this loud (dBFS), whatever the floor.
    pub min_level_dbfs: f32,
    /// Speech shorter than this is not an utterance.
    pub min_speech_ms: u64,
    /// Silence that ends an utterance.
    pub end_silence_ms: u64,
    /// Longest window before a cut.
    pub max_utterance_ms: u64,
    /// Audio kept before the detected start.
    pub pre_roll_ms: u64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold_db: 12.0,
            min_level_dbfs: -45.0,
            min_speech_ms: 160,
            end_silence_ms: 500,
            max_utterance_ms: 15_000,
            pre_roll_ms: 200,
        }
    }
}

/// An utterance found by the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// Offset of its first sample from the start of the stream, in milliseconds.
    pub start_ms: u64,
    /// 16 kHz samples.
    pub samples: Vec<i16>,
}

/// The detector of one speaker's stream.
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    /// The quietest frame energy that can be speech (`min_level_dbfs`), as mean square.
    min_energy: f32,
    /// How far above the floor a frame must be to count as voiced (`threshold_db`), as a
    /// power ratio. Both are worked out once here, not per frame.
    ratio: f32,
    /// Samples not yet a whole frame.
    pending: Vec<i16>,
    /// Offset of the next frame, in samples from the stream's start.
    at: u64,
    /// Noise floor, as mean square.
    floor: f32,
    /// Recent samples before speech starts (the pre-roll), whole frames.
    recent: VecDeque<i16>,
    /// Frames above threshold in a row, before an utterance starts.
    voiced_run: usize,
    /// The utterance being collected, and its start in samples.
    current: Option<(u64, Vec<i16>)>,
    /// Frames below threshold in a row inside an utterance.
    silent_run: usize,
}

/// The sample offset just after the quietest of the last `frames` whole frames of an
/// utterance (frames counted from its start).
fn quietest_frame_end(samples: &[i16], frames: usize) -> usize {
    let whole = samples.len() / FRAME;
    let from = whole.saturating_sub(frames).max(1);
    (from..whole)
        .min_by_key(|&f| {
            samples[f * FRAME..(f + 1) * FRAME]
                .iter()
                .map(|&s| i64::from(s).pow(2))
                .sum::<i64>()
        })
        .map_or(samples.len(), |f| (f + 1) * FRAME)
}

fn ms_to_frames(ms: u64) -> usize {
    (ms / 20).max(1) as usize
}

impl Vad {
    /// A detector with these settings.
    pub fn new(cfg: VadConfig) -> Vad {
        Vad {
            min_energy: (10f32.powf(cfg.min_level_dbfs / 20.0) * 32768.0).powi(2),
            ratio: 10f32.powf(cfg.threshold_db / 10.0),
            cfg,
            pending: Vec::with_capacity(FRAME),
            at: 0,
            floor: 0.0,
            recent: VecDeque::new(),
            voiced_run: 0,
            current: None,
            silent_run: 0,
        }
    }

    /// Moves the stream's position to `offset_ms` if audio was missing (packet loss,
    /// silence suppression, the ringing before the first packet): the gap counts as
    /// silence.
    ///
    /// The silence is cut a little short (under one frame) so that the audio after the
    /// gap starts a frame. Where a frame boundary falls within the audio then depends on
    /// the packets, not on the wall-clock instant the first one arrived: without this, the
    /// same call gave whisper utterances shifted by up to 20 ms from run to run, and the
    /// short set's CER moved by more than a point between two runs of the same build.
    pub fn seek(&mut self, offset_ms: u64) -> Vec<Detected> {
        let target = offset_ms * 16;
        let mut out = Vec::new();
        let now = self.at + self.pending.len() as u64;
        if target > now + FRAME as u64 {
            let gap = ((target - now) as usize).min(16_000 * 5);
            let gap = gap - (self.pending.len() + gap) % FRAME;
            out.extend(self.push(&vec![0; gap]));
            debug_assert!(self.pending.is_empty());
            self.at = target;
        }
        out
    }

    /// Feeds samples; returns the utterances that ended. This runs on the media path
    /// for every packet of every call, so it allocates nothing between utterances (frames
    /// are read in place, the pre-roll is one ring of samples) and, within one, only when
    /// the utterance's buffer grows (amortized). `asr::stream`'s tests count this.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Detected> {
        let mut out = Vec::new();
        self.pending.extend_from_slice(samples);
        // Taken out of `self` for the loop, which needs `&mut self`; given back after.
        let pending = std::mem::take(&mut self.pending);
        let whole = pending.len() - pending.len() % FRAME;
        for frame in pending[..whole].chunks_exact(FRAME) {
            if let Some(d) = self.frame(frame) {
                out.push(d);
            }
        }
        self.pending = pending;
        self.pending.drain(..whole);
        out
    }

    /// Ends the stream: the utterance in progress, if any.
    pub fn flush(&mut self) -> Option<Detected> {
        let (start, mut samples) = self.current.take()?;
        samples.append(&mut self.pending);
        (samples.len() >= ms_to_frames(self.cfg.min_speech_ms) * FRAME).then_some(Detected {
            start_ms: start / 16,
            samples,
        })
    }

    fn frame(&mut self, frame: &[i16]) -> Option<Detected> {
        let energy = frame.iter().map(|&s| f32::from(s).powi(2)).sum::<f32>() / FRAME as f32;
        let voiced = energy > self.min_energy && energy > self.floor * self.ratio;
        let start = self.at;
        self.at += FRAME as u64;
        match self.current.as_mut() {
            None => {
                if !voiced {
                    // The floor follows the line between utterances: fast down, slow up.
                    self.floor = if energy < self.floor || self.floor == 0.0 {
                        energy
                    } else {
                        0.95 * self.floor + 0.05 * energy
                    };
                }
                self.voiced_run = if voiced { self.voiced_run + 1 } else { 0 };
                self.recent.extend(frame);
                let keep = (ms_to_frames(self.cfg.pre_roll_ms)
                    + ms_to_frames(self.cfg.min_speech_ms))
                    * FRAME;
                if self.recent.len() > keep {
                    self.recent.drain(..self.recent.len() - keep);
                }
                if self.voiced_run >= ms_to_frames(self.cfg.min_speech_ms) {
                    let n = self.recent.len() as u64;
                    let first = start + FRAME as u64 - n;
                    let samples: Vec<i16> = self.recent.drain(..).collect();
                    self.current = Some((first, samples));
                    self.silent_run = 0;
                    self.voiced_run = 0;
                }
                None
            }
            Some((first, samples)) => {
                samples.extend_from_slice(frame);
                self.silent_run = if voiced { 0 } else { self.silent_run + 1 };
                let long = samples.len() as u64 >= self.cfg.max_utterance_ms * 16;
                if self.silent_run >= ms_to_frames(self.cfg.end_silence_ms) || long {
                    let first = *first;
                    let (_, mut samples) = self.current.take()?;
                    if long {
                        // Cut at the quietest frame of the last second (a pause between
                        // phrases, most likely) and go on with the rest as the next
                        // window, so no audio is lost at the cut.
                        let cut = quietest_frame_end(&samples, ms_to_frames(1000));
                        let rest = samples.split_off(cut);
                        self.current = Some((first + cut as u64, rest));
                    } else {
                        // Drop the trailing silence but for 200 ms.
                        let keep_tail = ms_to_frames(200) * FRAME;
                        let trailing = self.silent_run * FRAME;
                        samples.truncate(samples.len() - trailing.saturating_sub(keep_tail));
                        self.silent_run = 0;
                    }
                    return Some(Detected {
                        start_ms: first / 16,
                        samples,
                    });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amp: f32) -> Vec<i16> {
        (0..ms * 16)
            .map(|i| (amp * (i as f32 * 0.2).sin()) as i16)
            .collect()
    }

    fn hiss(ms: u64, amp: i16, seed: &mut u32) -> Vec<i16> {
        (0..ms * 16)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((*seed >> 16) as i16) % amp.max(1)
            })
            .collect()
    }

    #[test]
    fn two_utterances_with_a_pause_come_out_as_two_with_their_times() {
        let mut vad = Vad::new(VadConfig::default());
        let mut seed = 7;
        let mut out = Vec::new();
        // 1 s of line hiss, 2 s of "speech", 1 s of hiss, 1.5 s of speech, 1 s of hiss,
        // pushed in 20 ms RTP-sized pieces.
        let mut stream = hiss(1000, 100, &mut seed);
        stream.extend(tone(2000, 8000.0));
        stream.extend(hiss(1000, 100, &mut seed));
        stream.extend(tone(1500, 8000.0));
        stream.extend(hiss(1000, 100, &mut seed));
        for chunk in stream.chunks(320) {
            out.extend(vad.push(chunk));
        }
        assert!(vad.flush().is_none());
        assert_eq!(
            out.len(),
            2,
            "{:?}",
            out.iter().map(|d| d.start_ms).collect::<Vec<_>>()
        );
        // Starts a little before the speech (pre-roll), lengths cover the speech.
        assert!(
            (700..=1000).contains(&out[0].start_ms),
            "{}",
            out[0].start_ms
        );
        assert!(
            (3700..=4000).contains(&out[1].start_ms),
            "{}",
            out[1].start_ms
        );
        let len0 = out[0].samples.len() as u64 / 16;
        assert!((2000..=2700).contains(&len0), "{len0} ms");
    }

    #[test]
    fn quiet_line_noise_is_no_utterance_and_a_long_talk_is_cut_in_windows() {
        let mut vad = Vad::new(VadConfig::default());
        let mut seed = 1;
        assert!(vad.push(&hiss(3000, 300, &mut seed)).is_empty());
        // 32 s of talk with a quiet 20 ms gap at 14.5 s: the first window is cut there.
        let mut talk = tone(14_500, 8000.0);
        talk.extend(vec![0i16; 320]);
        talk.extend(tone(17_480, 8000.0));
        let out = vad.push(&talk);
        assert_eq!(out.len(), 2, "15 s windows");
        let cut = out[0].samples.len();
        // The gap is at 3 s of hiss + 14.5 s of talk on the stream's clock.
        let cut_at = out[0].start_ms + cut as u64 / 16;
        assert!((17_500..=17_540).contains(&cut_at), "cut at {cut_at} ms");
        assert_eq!(out[1].start_ms, out[0].start_ms + cut as u64 / 16, "no gap");
        let rest = vad.flush().expect("the rest");
        let total: usize = out.iter().map(|d| d.samples.len()).sum::<usize>() + rest.samples.len();
        assert!(total >= 32_000 * 16, "no audio lost at the cuts: {total}");
    }

    #[test]
    fn a_gap_in_the_stream_counts_as_silence() {
        let mut vad = Vad::new(VadConfig::default());
        assert!(vad.push(&tone(1000, 8000.0)).is_empty());
        let out = vad.seek(3000);
        assert_eq!(out.len(), 1, "the gap ended the utterance");
        let next = vad.push(&tone(1000, 8000.0));
        assert!(next.is_empty());
        let last = vad.flush().expect("second");
        assert!((2700..=3100).contains(&last.start_ms), "{}", last.start_ms);
    }

    /// The same call's audio, its first packet placed at different wall-clock
    /// milliseconds (as `media.rs` places it), is cut into the same samples: what
    /// whisper hears does not depend on when the first packet came.
    #[test]
    fn where_the_first_packet_lands_does_not_change_the_utterance() {
        let mut seed = 11;
        let mut speech = hiss(300, 100, &mut seed);
        speech.extend(tone(1200, 6000.0));
        speech.extend(hiss(150, 100, &mut seed));
        speech.extend(tone(800, 7000.0));
        speech.extend(hiss(900, 100, &mut seed));
        let heard = |first_ms: u64| {
            let mut vad = Vad::new(VadConfig::default());
            let mut out = Vec::new();
            for (k, packet) in speech.chunks(320).enumerate() {
                out.extend(vad.seek(first_ms + 20 * k as u64));
                out.extend(vad.push(packet));
            }
            out.extend(vad.flush());
            out
        };
        let base = heard(3000);
        assert_eq!(base.len(), 1, "one utterance");
        for first_ms in [3001, 3007, 3013, 3019, 4242] {
            let other = heard(first_ms);
            assert_eq!(other.len(), 1);
            assert!(
                other[0].samples == base[0].samples,
                "first packet at {first_ms} ms: a different cut"
            );
            let moved = other[0].start_ms as i64 - base[0].start_ms as i64;
            assert!(
                (moved - (first_ms as i64 - 3000)).abs() < 20,
                "times follow the stream: moved {moved} ms"
            );
        }
    }
}
