//! `[channels.chat]`: limits of the chat channel, with documented defaults.

use serde::Deserialize;

/// Default WebSocket path.
pub const DEFAULT_PATH: &str = "/chat/ws";
/// Default largest text frame, in bytes (about 5,000 Chinese characters).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024;
/// Default sustained messages per second per session.
pub const DEFAULT_RATE_PER_SECOND: f64 = 5.0;
/// Default burst of messages above the sustained rate.
pub const DEFAULT_BURST: u32 = 20;
/// Default seconds without a frame from the citizen before the socket is closed.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Default seconds a session can be resumed after its last activity; then it ends and
/// its ticket draft is emitted.
pub const DEFAULT_RESUME_WINDOW_SECS: u64 = 1800;
/// Default most connected chat sockets.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default most sessions kept for resuming (connected or not).
pub const DEFAULT_MAX_RESUMABLE: usize = 100_000;

/// The chat channel's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Path of the WebSocket endpoint on the public port.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest text frame accepted, in bytes; a larger one closes the socket with 1009.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Sustained messages per second per session; faster closes the socket with 4429.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// Messages allowed in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Seconds of silence before the socket is closed with 4408 (the session stays
    /// resumable).
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Seconds after the last activity during which a session can be resumed.
    #[serde(default = "default_resume")]
    pub resume_window_secs: u64,
    /// Most connected sockets; the next one is closed with 1013.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Most sessions kept for resuming, connected or not; past it `open` is refused
    /// with 1013 until sessions end (bounds the memory a flood of opens can take).
    #[serde(default = "default_max_resumable")]
    pub max_resumable_sessions: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            path: default_path(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            rate_per_second: DEFAULT_RATE_PER_SECOND,
            burst: DEFAULT_BURST,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            resume_window_secs: DEFAULT_RESUME_WINDOW_SECS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_resumable_sessions: DEFAULT_MAX_RESUMABLE,
        }
    }
}

fn default_path() -> String {
    DEFAULT_PATH.to_owned()
}
fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_rate() -> f64 {
    DEFAULT_RATE_PER_SECOND
}
fn default_burst() -> u32 {
    DEFAULT_BURST
}
fn default_idle() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_resume() -> u64 {
    DEFAULT_RESUME_WINDOW_SECS
}
fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}
fn default_max_resumable() -> usize {
    DEFAULT_MAX_RESUMABLE
}

/// A chat setting out of range.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ChatConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl ChatConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ChatConfigError> {
        let err = |field, reason| Err(ChatConfigError { field, reason });
        if !self.path.starts_with('/') {
            return err("path", "must start with '/'");
        }
        if !(256..=1 << 20).contains(&self.max_frame_bytes) {
            return err("max_frame_bytes", "must be 256 to 1048576");
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= 1000.0) {
            return err("rate_per_second", "must be above 0 and at most 1000");
        }
        if self.burst == 0 {
            return err("burst", "must be at least 1");
        }
        if self.idle_timeout_secs == 0 {
            return err("idle_timeout_secs", "must be at least 1");
        }
        if self.resume_window_secs < self.idle_timeout_secs {
            return err(
                "resume_window_secs",
                "must be at least idle_timeout_secs, or idle sessions end before they can resume",
            );
        }
        if self.max_sessions == 0 {
            return err("max_sessions", "must be at least 1");
        }
        if self.max_resumable_sessions < self.max_sessions {
            return err(
                "max_resumable_sessions",
                "must be at least max_sessions: every connected session is resumable",
            );
        }
        Ok(())
    }
}
