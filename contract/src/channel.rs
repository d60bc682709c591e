//! The channel plug-in seam (after Vector's sources): every way a citizen reaches the
//! hotline is a [`Channel`]. The gateway builds each configured channel once with a
//! [`ChannelContext`], mounts the HTTP routes it returns on the public port and runs its
//! background tasks. Adding a channel is one crate implementing this trait plus one
//! registration line in the gateway's registry.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::AudioTap;
use crate::chat_out::SessionPush;
use crate::event::ChannelKind;
use crate::identity::CitizenKeyer;
use crate::intake::Intake;
use crate::notice::LinkageDialer;
use crate::restriction::Blocklist;
use crate::revisit::RevisitDialer;
use crate::screen::Screen;
use crate::sms::SmsSender;

/// An error building a channel, boxed because each channel has its own error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a channel gets from the gateway.
#[derive(Clone)]
pub struct ChannelContext {
    /// Where the channel hands its events; returns once they are durable.
    pub intake: Arc<dyn Intake>,
    /// Pseudonymises citizen identities.
    pub keyer: CitizenKeyer,
    /// Cancelled once when the gateway begins to shut down. A channel stops taking new
    /// work, tells connected citizens (a WebSocket close 1001) and lets in-flight
    /// submissions finish.
    pub shutdown: CancellationToken,
    /// Spawn per-connection tasks here: the gateway waits for them (up to its grace
    /// period) before it stops the outbox.
    pub tasks: TaskTracker,
    /// Where voice channels hand decoded call audio (speech recognition); `None` runs
    /// without.
    pub audio_tap: Option<Arc<dyn AudioTap>>,
    /// Who is restricted (Art. 9): every channel asks at admission. Answers come from
    /// memory (the restrictions topic, read by every instance) and never wait.
    pub blocklist: Arc<dyn Blocklist>,
    /// Screens every citizen text at once: the events it returns (an urgent notice, a
    /// restriction proposal) go into the same submission as the contact.
    pub screen: Arc<dyn Screen>,
    /// The linkage lines by target (`"120"` -> `sip:120@...`): where an agent may hand a
    /// live call (Art. 15, the 12345-110 linkage's one-key transfer).
    pub linkage_lines: Arc<std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for ChannelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext").finish_non_exhaustive()
    }
}

/// What a built channel hands back to the gateway.
#[derive(Default)]
pub struct ChannelParts {
    /// Routes to mount on the gateway's public HTTP port (paths are the channel's own,
    /// for example `/chat/ws`, `/sms/{carrier}/inbound`).
    pub router: Option<axum::Router>,
    /// Background tasks; each must return soon after `shutdown` is cancelled.
    pub tasks: Vec<BoxFuture<'static, ()>>,
    /// Places calls to linkage lines (Art. 15 escalation): the phone channel.
    pub dialer: Option<Arc<dyn LinkageDialer>>,
    /// Sends outbound texts: the SMS channel, when it has an outbound carrier.
    pub sms_sender: Option<Arc<dyn SmsSender>>,
    /// Places Art. 17 revisit calls to citizens: the phone channel, when it has a revisit
    /// route.
    pub revisit_dialer: Option<Arc<dyn RevisitDialer>>,
    /// Writes the ticket service's messages (the Art. 16 survey) into citizens' open
    /// chat sessions on this instance: the chat channel.
    pub session_push: Option<Arc<dyn SessionPush>>,
}

impl std::fmt::Debug for ChannelParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelParts")
            .field("router", &self.router.is_some())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// A way citizens reach the hotline.
#[async_trait]
pub trait Channel: Send + 'static {
    /// Which channel this is (labels metrics, names the CloudEvents source).
    fn kind(&self) -> ChannelKind;

    /// Builds the channel: restores its state through `ctx.intake`, and returns its
    /// routes and tasks. Errors here stop the gateway at start, with the error shown.
    async fn build(self: Box<Self>, ctx: ChannelContext) -> Result<ChannelParts, BoxError>;
}
