//! The chat wire protocol: JSON text frames, and the close codes. Documented for client
//! authors in `docs/chat-protocol.md`.

use contract::TicketRef;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A frame from the citizen's client.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Opens a new session.
    Open {
        /// The client's visitor or account id (1-128 characters).
        visitor: String,
        /// A phone number the citizen gives for replies, if any.
        #[serde(default)]
        phone: Option<String>,
        /// The first message, sent with the open. A restricted citizen (Art. 9) gets a
        /// session only when this carries an Art. 15 emergency cue.
        #[serde(default)]
        message: Option<FirstMessage>,
    },
    /// Resumes a session with the token from its `session` frame.
    Resume {
        /// The resume token.
        token: String,
    },
    /// A message from the citizen.
    Message {
        /// The client's id for this message, echoed in its `ack` (1-64 characters).
        id: String,
        /// The text, UTF-8.
        text: String,
    },
    /// The citizen's answer to a `message` from the hotline that asked for a rating (the
    /// Art. 16 survey of one of their tickets). Recorded as a survey-reply contact of this
    /// session, acknowledged like a message; it adds nothing to this session's ticket.
    Rating {
        /// The client's id for it, echoed in its `ack` (1-64 characters; one id space
        /// with `message` ids).
        id: String,
        /// The `reference` of the message it answers (the ticket rated).
        reference: String,
        /// A digit 1 to 5 or the rating's words (1-16 characters).
        answer: String,
    },
    /// Ends the session: the ticket draft is emitted.
    End,
}

/// Most characters of a rating's `answer`.
pub const MAX_ANSWER_CHARS: usize = 16;

/// Whether `reference` has the shape of a ticket reference: 1 to 64 ASCII letters,
/// digits and '-'.
pub fn valid_reference(reference: &str) -> bool {
    (1..=64).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A rating's answer, trimmed, when it is one: 1 to [`MAX_ANSWER_CHARS`] characters, none
/// of them a control character. What it means (a digit, the words) is the ticket
/// service's to read.
pub fn valid_answer(answer: &str) -> Option<&str> {
    let answer = answer.trim();
    let n = answer.chars().count();
    ((1..=MAX_ANSWER_CHARS).contains(&n) && !answer.chars().any(char::is_control)).then_some(answer)
}

/// A message sent inside `open`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstMessage {
    /// The client's id for it, as in `message`.
    pub id: String,
    /// The text.
    pub text: String,
}

/// The close reason a restricted citizen reads (Art. 9), in Chinese, with the end of the
/// restriction in Beijing time and where emergencies go. It fits a close frame (123
/// bytes).
pub fn restricted_reason(until: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match until {
        Some(t) => {
            // China keeps UTC+8 all year (no daylight saving since 1991).
            let local = t + chrono::Duration::hours(8);
            format!(
                "您的热线使用受限至{}（北京时间）；紧急情况请拨110、119、120",
                local.format("%Y-%m-%d %H:%M")
            )
        }
        None => "您的热线使用受限；紧急情况请拨110、119、120".to_owned(),
    }
}

/// A frame to the citizen's client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The session is open (or resumed).
    Session {
        /// The session's id.
        session_id: Uuid,
        /// The ticket reference to quote (Art. 14 progress queries).
        ticket_ref: TicketRef,
        /// The token to resume this session after a disconnect. Keep it secret.
        resume_token: String,
        /// Whether this continues an earlier connection.
        resumed: bool,
        /// Sequence number of the last acknowledged message (0: none).
        last_seq: u32,
    },
    /// A message is durably recorded.
    Ack {
        /// The client's message id.
        id: String,
        /// The contact event's id.
        contact_id: Uuid,
        /// Position of the message within the session, from 1.
        seq: u32,
    },
    /// A message was not recorded; the socket stays open.
    Error {
        /// The client's message id, when the error is about one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Machine-readable code.
        code: &'static str,
        /// What happened and what to do.
        detail: String,
        /// Whether sending the same message again may succeed.
        retryable: bool,
    },
    /// A message from the hotline (the Art. 16 survey of one of the citizen's tickets),
    /// written to every session of the citizen connected at that moment.
    Message {
        /// What it is about (the ticket reference); a `rating` answering it names it.
        reference: String,
        /// Why: `survey`.
        purpose: String,
        /// The text, Simplified Chinese.
        text: String,
        /// Whether the client offers the five ratings (1 to 5) to answer with.
        asks_rating: bool,
    },
    /// The session ended; the ticket draft is recorded.
    Ended {
        /// The ticket reference.
        ticket_ref: TicketRef,
        /// How many messages the ticket carries.
        messages: u32,
    },
}

/// WebSocket close codes the chat channel uses.
pub mod close {
    /// The session ended normally.
    pub const NORMAL: u16 = 1000;
    /// The gateway is shutting down; resume later with the token.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that breaks RFC 6455 (masking, control frame rules...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame: only JSON text frames are understood.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame in the wrong state (a message before `open`, `open` twice).
    pub const POLICY: u16 = 1008;
    /// A frame larger than the configured limit.
    pub const TOO_BIG: u16 = 1009;
    /// Too many sessions now; try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A frame that is not a valid protocol frame (bad JSON, unknown type, bad field).
    pub const MALFORMED: u16 = 4400;
    /// A resume token that names no live session.
    pub const UNKNOWN_SESSION: u16 = 4401;
    /// No frame within the idle timeout; the session can be resumed.
    pub const IDLE: u16 = 4408;
    /// The session was resumed on another connection.
    pub const TAKEN_OVER: u16 = 4409;
    /// The citizen is restricted from the hotline (Art. 9); the reason says until when
    /// (Beijing time) and that emergencies go to 110, 119 or 120. An `open` whose first
    /// message carries an emergency cue is let in.
    pub const RESTRICTED: u16 = 4403;
    /// More messages than the rate limit allows.
    pub const RATE_LIMITED: u16 = 4429;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rating_frame_parses_and_unknown_fields_are_malformed() {
        let f: ClientFrame = serde_json::from_str(
            r#"{"type":"rating","id":"r1","reference":"ZH20261126A1B2C3D4E5","answer":"4"}"#,
        )
        .expect("a rating frame");
        assert!(matches!(
            f,
            ClientFrame::Rating { ref id, ref reference, ref answer }
                if id == "r1" && reference == "ZH20261126A1B2C3D4E5" && answer == "4"
        ));
        assert!(
            serde_json::from_str::<ClientFrame>(
                r#"{"type":"rating","id":"r1","reference":"ZH1","answer":"4","x":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"rating","id":"r1","answer":"4"}"#)
                .is_err()
        );
    }

    #[test]
    fn references_are_letters_digits_and_dashes_up_to_64() {
        assert!(valid_reference("ZH20261126A1B2C3D4E5"));
        assert!(valid_reference("zh-1"));
        assert!(valid_reference(&"A".repeat(64)));
        assert!(!valid_reference(&"A".repeat(65)));
        assert!(!valid_reference(""));
        assert!(!valid_reference("ZH 1"));
        assert!(!valid_reference("ZH/1"));
        assert!(!valid_reference("工单1"));
    }

    #[test]
    fn answers_are_a_digit_or_words_up_to_16_characters() {
        assert_eq!(valid_answer(" 4 "), Some("4"));
        assert_eq!(valid_answer("非常不满意"), Some("非常不满意"));
        assert_eq!(
            valid_answer(&"满".repeat(16)).map(|a| a.chars().count()),
            Some(16)
        );
        assert_eq!(valid_answer(&"满".repeat(17)), None);
        assert_eq!(valid_answer("  "), None);
        assert_eq!(valid_answer("4\u{7}"), None);
        assert_eq!(valid_answer("4\n5"), None);
    }

    #[test]
    fn message_frame_is_the_documented_json() {
        let f = ServerFrame::Message {
            reference: "ZH20261126A1B2C3D4E5".into(),
            purpose: "survey".into(),
            text: "请评价".into(),
            asks_rating: true,
        };
        assert_eq!(
            serde_json::to_string(&f).expect("json"),
            r#"{"type":"message","reference":"ZH20261126A1B2C3D4E5","purpose":"survey","text":"请评价","asks_rating":true}"#
        );
    }
}
