//! The channel registry: one line per channel. To add a channel, write its crate
//! (implementing [`contract::Channel`]), add its config variant to
//! [`crate::config::ChannelsSection`] and one line here.

use contract::Channel;

use crate::config::ChannelsSection;

/// The configured channels, ready to build.
pub fn channels(config: &ChannelsSection) -> Vec<Box<dyn Channel>> {
    let mut out: Vec<Box<dyn Channel>> = Vec::new();
    if let Some(c) = &config.chat {
        out.push(Box::new(channel_chat::ChatChannel::new(c.clone())));
    }
    if let Some(c) = &config.sms {
        out.push(Box::new(channel_sms::SmsChannel::new(c.clone())));
    }
    if let Some(c) = &config.sip {
        out.push(Box::new(channel_sip::SipChannel::new(c.clone())));
    }
    out
}
