//! The seam every channel passes a citizen's words through before it records them.
//!
//! For each text a citizen sends (a chat message, an SMS, a citizen's utterance of a
//! call as text), the channel asks [`Screen::screen`] which events the words make beside
//! their contact: an Art. 15 urgent notice (a new one, or an update of the open one), an
//! Art. 9 restriction *proposal* on abusive words (never a block: a person confirms it).
//! The channel records them in the same submission as the contact, so they are durable
//! exactly when the words are, and tells [`Screen::recorded`] once they are.

use crate::event::{Contact, Event};

/// Screens citizens' words (the gateway's routing; nothing in unit tests).
pub trait Screen: Send + Sync + 'static {
    /// The events `text` (the words of `contact`) makes, to record with the contact.
    fn screen(&self, contact: &Contact, text: &str) -> Vec<Event>;

    /// Called once the submission that carried `events` is durable.
    fn recorded(&self, events: &[Event]);
}

/// Screens nothing (unit tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScreen;

impl Screen for NoScreen {
    fn screen(&self, _: &Contact, _: &str) -> Vec<Event> {
        Vec::new()
    }
    fn recorded(&self, _: &[Event]) {}
}
