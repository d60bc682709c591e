//! Live transcription of calls: the [`AudioTap`] the gateway hands to voice channels.
//!
//! Per call and per speaker, the 8 kHz tap is upsampled to 16 kHz and cut into
//! utterances by the [`Vad`]; this runs inside [`CallAudio::push`] on the media path and
//! costs a few multiplications per sample, never a wait. A finished utterance goes on the
//! call's small bounded queue to the call's transcriber task, which hands it to the
//! engine and the text to the channel's [`TranscriptSink`] (the agent's screen and Kafka)
//! as soon as it is decoded.
//!
//! Backpressure never reaches the call: when the call's queue is full, or the engine
//! answers `Busy` because every worker and its queue are taken, the utterance is
//! *deferred*: the sink hears of it at once (a placeholder, so the agent's screen shows
//! that live text is behind), and after the call the transcriber reads those spans back
//! from the call's recording and completes them, waiting for a worker as long as it
//! takes. The transcript that closes the call (for the ticket draft) therefore has every
//! utterance, live or late.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use contract::{AudioTap, CallAudio, CallAudioInfo, Speaker, TranscriptSegment, TranscriptSink};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::resample::Upsampler;
use crate::vad::{Detected, Vad, VadConfig};
use crate::{AsrError, TranscriptionEngine, Utterance};

/// Settings of live transcription.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    /// The voice-activity detector's settings.
    pub vad: VadConfig,
    /// Utterances of one call waiting for the engine before further ones are deferred.
    pub queue_per_call: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            vad: VadConfig::default(),
            queue_per_call: 4,
        }
    }
}

/// The tap: transcribes every call it is given.
pub struct AsrTap {
    engine: Arc<dyn TranscriptionEngine>,
    cfg: StreamConfig,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for AsrTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrTap").field("cfg", &self.cfg).finish()
    }
}

impl AsrTap {
    /// A tap over `engine`; call tasks are spawned on the current tokio runtime.
    pub fn new(engine: Arc<dyn TranscriptionEngine>, cfg: StreamConfig) -> AsrTap {
        AsrTap {
            engine,
            cfg,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// A span of one speaker's audio, in milliseconds from the start of the call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    speaker: Speaker,
    start_ms: u64,
    end_ms: u64,
}

impl Span {
    fn of(speaker: Speaker, d: &Detected) -> Span {
        Span {
            speaker,
            start_ms: d.start_ms,
            end_ms: d.start_ms + d.samples.len() as u64 / 16,
        }
    }
}

fn placeholder(call_id: Uuid, span: Span) -> TranscriptSegment {
    TranscriptSegment {
        call_id,
        speaker: span.speaker,
        start_ms: span.start_ms,
        end_ms: span.end_ms,
        text: String::new(),
        confidence: 0.0,
        deferred: true,
    }
}

impl AudioTap for AsrTap {
    fn open(
        &self,
        call: &CallAudioInfo,
        sink: Arc<dyn TranscriptSink>,
    ) -> Option<Box<dyn CallAudio>> {
        let (jobs, rx) = mpsc::channel(self.cfg.queue_per_call.max(1));
        let (done, finished) = oneshot::channel();
        self.runtime.spawn(transcriber(
            call.call_id,
            self.engine.clone(),
            sink.clone(),
            rx,
            finished,
            call.recording.clone(),
        ));
        metrics::gauge!("gateway_asr_live_calls").increment(1.0);
        Some(Box::new(CallStream {
            call_id: call.call_id,
            sink,
            jobs,
            done: Some(done),
            deferred: Vec::new(),
            legs: [Leg::new(self.cfg.vad), Leg::new(self.cfg.vad)],
        }))
    }
}

struct Leg {
    up: Upsampler,
    vad: Vad,
    /// The upsampled packet, reused.
    buf: Vec<i16>,
}

impl Leg {
    fn new(cfg: VadConfig) -> Leg {
        Leg {
            up: Upsampler::default(),
            vad: Vad::new(cfg),
            buf: Vec::with_capacity(640),
        }
    }

    /// One packet of 8 kHz audio at `offset_ms` into the call: upsampled and cut; the
    /// utterances that ended.
    fn feed(&mut self, offset_ms: u64, samples: &[i16]) -> Vec<Detected> {
        let mut found = self.vad.seek(offset_ms);
        self.buf.clear();
        self.up.process_into(samples, &mut self.buf);
        found.extend(self.vad.push(&self.buf));
        found
    }
}

fn index(s: Speaker) -> usize {
    match s {
        Speaker::Citizen => 0,
        Speaker::Agent => 1,
    }
}

/// One call's stream into the tap (on the media path: never waits).
struct CallStream {
    call_id: Uuid,
    sink: Arc<dyn TranscriptSink>,
    jobs: mpsc::Sender<Utterance>,
    done: Option<oneshot::Sender<Vec<Span>>>,
    deferred: Vec<Span>,
    legs: [Leg; 2],
}

impl CallStream {
    fn hand_over(&mut self, speaker: Speaker, d: Detected) {
        // What whisper will hear, as a checksum: two runs of one call must cut the same
        // samples (a difference once came from where the first packet fell on the clock).
        tracing::debug!(
            call = %self.call_id,
            ?speaker,
            start_ms = d.start_ms,
            samples = d.samples.len(),
            checksum = d.samples.iter().fold(0u64, |h, &s| h.wrapping_mul(31).wrapping_add(s as u16 as u64)),
            "Utterance cut"
        );
        let span = Span::of(speaker, &d);
        let utterance = Utterance {
            speaker,
            start_ms: d.start_ms,
            samples: d.samples,
        };
        if self.jobs.try_send(utterance).is_err() {
            self.defer(span);
        }
    }

    fn defer(&mut self, span: Span) {
        metrics::counter!("gateway_asr_deferred_total").increment(1);
        self.sink.segment(placeholder(self.call_id, span));
        self.deferred.push(span);
    }
}

impl CallAudio for CallStream {
    fn push(&mut self, speaker: Speaker, offset_ms: u64, samples: &[i16]) {
        for d in self.legs[index(speaker)].feed(offset_ms, samples) {
            self.hand_over(speaker, d);
        }
    }

    fn finish(mut self: Box<Self>) {
        for speaker in [Speaker::Citizen, Speaker::Agent] {
            if let Some(d) = self.legs[index(speaker)].vad.flush() {
                self.hand_over(speaker, d);
            }
        }
        let deferred = std::mem::take(&mut self.deferred);
        if let Some(done) = self.done.take() {
            let _ = done.send(deferred);
        }
        // Dropping `jobs` here tells the transcriber no more live utterances come.
    }
}

impl Drop for CallStream {
    /// Finished or dropped with a failed call: either way the call is no longer live.
    fn drop(&mut self) {
        metrics::gauge!("gateway_asr_live_calls").decrement(1.0);
    }
}

/// The call's transcriber: live utterances as they come, then the deferred ones from
/// the recording, then the whole transcript to the sink.
async fn transcriber(
    call_id: Uuid,
    engine: Arc<dyn TranscriptionEngine>,
    sink: Arc<dyn TranscriptSink>,
    mut jobs: mpsc::Receiver<Utterance>,
    finished: oneshot::Receiver<Vec<Span>>,
    recording: Option<PathBuf>,
) {
    let mut transcript = Vec::new();
    let mut late = Vec::new();
    while let Some(u) = jobs.recv().await {
        let span = Span {
            speaker: u.speaker,
            start_ms: u.start_ms,
            end_ms: u.start_ms + u.samples.len() as u64 / 16,
        };
        match engine.transcribe(u).await {
            Ok(seg) => {
                if let Some(seg) = heard(call_id, seg, false) {
                    sink.segment(seg.clone());
                    transcript.push(seg);
                }
            }
            Err(AsrError::Busy) => {
                metrics::counter!("gateway_asr_deferred_total").increment(1);
                sink.segment(placeholder(call_id, span));
                late.push(span);
            }
            Err(e) => {
                tracing::warn!(call = %call_id, error = %e, "An utterance could not be transcribed")
            }
        }
    }
    // The media ended (the stream was finished or dropped with the call).
    late.extend(finished.await.unwrap_or_default());
    if !late.is_empty() {
        match recording.as_deref().map(read_recording) {
            Some(Ok(channels)) => {
                for span in late {
                    let samples = cut(&channels, span);
                    if let Some(seg) = complete(&*engine, call_id, span, samples).await {
                        sink.segment(seg.clone());
                        transcript.push(seg);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(call = %call_id, error = %e, "Cannot read the recording to complete the transcript")
            }
            None => {
                tracing::warn!(call = %call_id, "Deferred utterances but no recording to complete them from")
            }
        }
    }
    transcript.sort_by_key(|s| (s.start_ms, index(s.speaker)));
    sink.complete(transcript);
}

/// The contract's segment of what the engine heard; `None` when it heard nothing.
fn heard(call_id: Uuid, seg: crate::Segment, deferred: bool) -> Option<TranscriptSegment> {
    (!seg.text.is_empty()).then_some(TranscriptSegment {
        call_id,
        speaker: seg.speaker,
        start_ms: seg.start_ms,
        end_ms: seg.end_ms,
        text: seg.text,
        confidence: seg.confidence,
        deferred,
    })
}

/// Transcribes a deferred span, waiting for a worker as long as it takes (the call is
/// over; nothing is harmed by waiting, and the transcript must be whole).
async fn complete(
    engine: &dyn TranscriptionEngine,
    call_id: Uuid,
    span: Span,
    samples: Vec<i16>,
) -> Option<TranscriptSegment> {
    let mut wait = Duration::from_millis(100);
    loop {
        let u = Utterance {
            speaker: span.speaker,
            start_ms: span.start_ms,
            samples: samples.clone(),
        };
        match engine.transcribe(u).await {
            Ok(seg) => return heard(call_id, seg, true),
            Err(AsrError::Busy) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::warn!(error = %e, "A deferred utterance could not be transcribed");
                return None;
            }
        }
    }
}

/// The recording's two channels (citizen, agent) at 8 kHz.
fn read_recording(path: &std::path::Path) -> Result<[Vec<i16>; 2], hound::Error> {
    let mut wav = hound::WavReader::open(path)?;
    let mut left = Vec::new();
    let mut right = Vec::new();
    for (i, s) in wav.samples::<i16>().enumerate() {
        if i % 2 == 0 {
            left.push(s?);
        } else {
            right.push(s?);
        }
    }
    Ok([left, right])
}

/// A span of the recording, upsampled to 16 kHz.
fn cut(channels: &[Vec<i16>; 2], span: Span) -> Vec<i16> {
    let ch = &channels[index(span.speaker)];
    let from = ((span.start_ms * 8) as usize).min(ch.len());
    let to = ((span.end_ms * 8) as usize).min(ch.len());
    Upsampler::default().process(&ch[from..to])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms packets of 8 kHz audio: `n` of a tone at `amp`, or of faint hiss at amp 0.
    fn packets(n: usize, amp: f32) -> Vec<Vec<i16>> {
        let mut seed = 7u32;
        (0..n)
            .map(|p| {
                (0..160)
                    .map(|i| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let hiss = ((seed >> 16) as i16) % 40;
                        let t = (p * 160 + i) as f32;
                        hiss + (amp * (t * 0.3).sin()) as i16
                    })
                    .collect()
            })
            .collect()
    }

    /// The tap runs for every RTP packet of every call on the media path: it must not
    /// allocate per packet. Counted with a counting allocator, on this thread only.
    #[test]
    fn the_media_path_allocates_nothing_per_packet_between_utterances() {
        let mut leg = Leg::new(VadConfig::default());
        let quiet = packets(600, 0.0);
        let talk = packets(250, 8000.0);
        let mut at = 0u64;
        let mut feed = |leg: &mut Leg, p: &[Vec<i16>]| {
            let mut found = 0;
            for packet in p {
                found += leg.feed(at, packet).len();
                at += 20;
            }
            found
        };
        // Warm up: the buffers reach their working size.
        assert_eq!(feed(&mut leg, &quiet[..100]), 0);
        let between = allocation_counter::measure(|| {
            assert_eq!(feed(&mut leg, &quiet[100..]), 0, "hiss is not speech");
        });
        assert_eq!(
            between.count_total, 0,
            "500 packets between utterances: {between:?}"
        );
        // Within an utterance only its growing buffer allocates: a handful of times for
        // 250 packets (doubling), never once a packet.
        let within = allocation_counter::measure(|| {
            assert_eq!(feed(&mut leg, &talk), 0, "5 s of talk has not ended yet");
        });
        assert!(
            within.count_total <= 16,
            "250 packets of speech: {within:?}"
        );
        // And the talk did make an utterance: the hiss after it ends it.
        assert_eq!(feed(&mut leg, &quiet[..50]), 1);
    }
}
