//! The audio-tap seam between voice channels and speech recognition.
//!
//! A voice channel (SIP, later WebRTC) decodes each direction of a call to 16-bit PCM and
//! hands it to the [`AudioTap`] the gateway was built with; the ASR crate implements the
//! tap. The tap is opened once per call and fed from the media path, so
//! [`CallAudio::push`] must never block: an implementation queues into a bounded buffer
//! and drops (and counts) what does not fit. The per-call recording is the complete
//! record; the tap is best effort.

use uuid::Uuid;

use crate::event::TicketRef;

/// Who is speaking in a call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// Receives the decoded audio of calls.
pub trait AudioTap: Send + Sync + 'static {
    /// Called when a call's media starts; `None` when the tap does not want this call.
    fn open(&self, call: &CallAudioInfo) -> Option<Box<dyn CallAudio>>;
}

/// One call's audio stream into the tap.
pub trait CallAudio: Send + 'static {
    /// Samples from `speaker`, the first of them `offset_ms` after the call's media
    /// started. Must not block.
    fn push(&mut self, speaker: Speaker, offset_ms: u64, samples: &[i16]);

    /// A DTMF digit the citizen pressed.
    fn dtmf(&mut self, _digit: char, _offset_ms: u64) {}

    /// The call's media ended.
    fn finish(self: Box<Self>);
}
