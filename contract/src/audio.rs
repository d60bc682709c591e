//! The audio-tap seam between voice channels and speech recognition.
//!
//! A voice channel (SIP, later WebRTC) decodes each direction of a call to 16-bit PCM and
//! hands it to the [`AudioTap`] the gateway was built with; the ASR crate implements the
//! tap. The tap is opened once per call and fed from the media path, so
//! [`CallAudio::push`] must never block: an implementation queues into a bounded buffer
//! and drops (and counts) what does not fit. The per-call recording is the complete
//! record; the tap is best effort.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{TicketRef, TranscriptSegment};

/// Who is speaking in a call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The citizen's leg (left channel of the recording).
    Citizen,
    /// The agent's leg (right channel of the recording).
    Agent,
}

/// The call an audio stream belongs to.
#[derive(Debug, Clone)]
pub struct CallAudioInfo {
    /// The gateway's id of the call (the `call_id` of its contacts).
    pub call_id: Uuid,
    /// The ticket the call's contacts belong to.
    pub ticket_ref: TicketRef,
    /// Samples per second of the PCM pushed (8,000 for G.711).
    pub sample_rate: u32,
    /// The call's stereo recording (citizen left, agent right), complete once
    /// [`CallAudio::finish`] is called: what a tap that fell behind transcribes from.
    pub recording: Option<std::path::PathBuf>,
}

/// Receives the decoded audio of calls.
pub trait AudioTap: Send + Sync + 'static {
    /// Called when a call's media starts; `None` when the tap does not want this call.
    /// What the tap makes of the audio (transcript segments) goes to `sink`.
    fn open(
        &self,
        call: &CallAudioInfo,
        sink: Arc<dyn TranscriptSink>,
    ) -> Option<Box<dyn CallAudio>>;
}

/// Where a tap delivers a call's transcript; the voice channel implements it (the
/// agent's screen, contacts on Kafka, the ticket draft). Both methods must not block.
pub trait TranscriptSink: Send + Sync + 'static {
    /// A segment is ready: live, or `deferred` and completed after the call. A live
    /// segment with empty text and `deferred` set announces one that comes later.
    fn segment(&self, segment: TranscriptSegment);

    /// Every segment of the call is in (the deferred ones completed): the whole
    /// transcript in time order. Called once, after the call's media ended.
    fn complete(&self, transcript: Vec<TranscriptSegment>);
}

/// One call's audio stream into the tap.
pub trait CallAudio: Send + 'static {
    /// Samples from `speaker`, the first of them `offset_ms` after the call's media
    /// started. Must not block.
    fn push(&mut self, speaker: Speaker, offset_ms: u64, samples: &[i16]);

    /// A DTMF digit the citizen pressed.
    fn dtmf(&mut self, _digit: char, _offset_ms: u64) {}

    /// The call's media ended and its recording is complete.
    fn finish(self: Box<Self>);
}
