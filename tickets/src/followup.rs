//! The follow-up rules, pure: what the citizen is texted after closure (Arts. 13, 16),
//! how a reply is read as a rating (Art. 16), when a survey defaults to satisfied
//! (Art. 16), when a revisit tries again or ends (Art. 17), and how long a unit may
//! appeal (Art. 17). The store ([`crate::store`]) applies them in its transactions; the
//! flows are in docs/tickets.md.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use contract::{Rating, RevisitCallOutcome, TicketKind};
use serde::Deserialize;

use crate::calendar::Calendar;

/// The shipped texts.
pub const DEFAULT_TEMPLATES: &str = include_str!("../data/followup.toml");

/// Failed revisit attempts after which the revisit ends (Art. 17: 三次以上联系不上的，结束回访).
pub const REVISIT_ATTEMPTS: u32 = 3;
/// Working days a unit has to appeal a dissatisfied rating (Art. 17).
pub const APPEAL_DAYS: u32 = 3;
/// Replies at most this long (white space and punctuation aside) that are not a rating
/// are taken as unclear replies to the survey ("好的", "7", "还行"); longer texts are new
/// requests ("路灯又坏了") and become tickets.
pub const REPLY_MAX_CHARS: usize = 4;

/// The texts (`data/followup.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// The result SMS (Art. 13).
    pub result: String,
    /// The survey (Art. 16).
    pub survey: String,
    /// The clarifying SMS after an unclear reply.
    pub clarify: String,
    /// Longest result quoted.
    pub result_chars: usize,
}

impl Templates {
    /// The shipped texts.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_TEMPLATES).unwrap_or_else(|e| panic!("shipped followup.toml: {e}"))
    }

    /// Parses and checks texts.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let t: Templates = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, s, needs) in [
            ("result", &t.result, &["{ref}", "{result}"][..]),
            ("survey", &t.survey, &["{ref}"][..]),
            ("clarify", &t.clarify, &["{ref}"][..]),
        ] {
            if s.trim().is_empty() || s.chars().count() > 500 {
                return Err(format!("{name}: 1 to 500 characters"));
            }
            if let Some(missing) = needs.iter().find(|n| !s.contains(**n)) {
                return Err(format!("{name} must contain {missing}"));
            }
        }
        if !(10..=500).contains(&t.result_chars) {
            return Err("result_chars: 10 to 500".into());
        }
        Ok(t)
    }

    /// The result SMS of `ticket_ref` with the unit's `result`.
    pub fn result_text(&self, ticket_ref: &str, result: &str) -> String {
        let folded = result.split_whitespace().collect::<Vec<_>>().join(" ");
        let quoted = if folded.chars().count() > self.result_chars {
            let mut s: String = folded.chars().take(self.result_chars - 1).collect();
            s.push('…');
            s
        } else {
            folded
        };
        self.result
            .replace("{ref}", ticket_ref)
            .replace("{result}", &quoted)
    }

    /// The survey of `ticket_ref`, answered within `window`.
    pub fn survey_text(&self, ticket_ref: &str, window: Duration) -> String {
        self.survey
            .replace("{ref}", ticket_ref)
            .replace("{window}", &window_hours(window))
    }

    /// The clarifying SMS.
    pub fn clarify_text(&self, ticket_ref: &str) -> String {
        self.clarify.replace("{ref}", ticket_ref)
    }
}

fn window_hours(window: Duration) -> String {
    let h = window.as_secs_f64() / 3600.0;
    if (h - h.round()).abs() < 1e-9 {
        format!("{}", h.round() as u64)
    } else {
        format!("{h:.1}")
    }
}

/// How revisits are made (Art. 17: 人工或智能外呼).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisitMode {
    /// The gateway calls and takes the rating by digit.
    Call,
    /// An agent calls; the revisit waits in the API's task list.
    Agent,
}

impl RevisitMode {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisitMode::Call => "call",
            RevisitMode::Agent => "agent",
        }
    }
}

/// The follow-up's settings.
#[derive(Debug, Clone)]
pub struct Params {
    /// The texts.
    pub templates: Templates,
    /// No valid reply within this counts as satisfied (Art. 16: 24 hours).
    pub survey_window: Duration,
    /// Automated calls or agents.
    pub revisit_mode: RevisitMode,
    /// The gap between failed revisit attempts.
    pub revisit_retry: Duration,
    /// A revisit call with no result after this counts as a failed attempt.
    pub revisit_result_timeout: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            templates: Templates::builtin(),
            survey_window: Duration::from_secs(24 * 3600),
            revisit_mode: RevisitMode::Call,
            revisit_retry: Duration::from_secs(2 * 3600),
            revisit_result_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// Whether a ticket of `kind` closed with `outcome` gets a survey (Art. 16): every
/// handled ticket (a unit's accepted reply, a consultation answered at once) but praise.
pub fn surveyed(kind: TicketKind, outcome: contract::Outcome) -> bool {
    kind != TicketKind::Praise
        && matches!(
            outcome,
            contract::Outcome::Resolved | contract::Outcome::Answered
        )
}

/// What an SMS from a citizen with a survey waiting is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// One of the five ratings.
    Rating(Rating),
    /// Short, but not a rating: asked again once.
    Unclear,
    /// A new request (long text): a ticket, not a reply.
    NotAReply,
}

/// Reads a citizen's SMS as a survey reply (Art. 16): a digit 1 to 5 (full-width too),
/// or one of the five ratings in words, with white space and punctuation around it
/// ignored.
pub fn read_reply(text: &str) -> Reply {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            // Full-width digits, as Chinese phones often send them.
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            _ => c,
        })
        .filter(|c| !c.is_whitespace() && !is_punctuation(*c))
        .collect();
    if cleaned.is_empty() {
        return Reply::Unclear;
    }
    if cleaned.chars().count() == 1
        && let Some(d) = cleaned.chars().next().and_then(|c| c.to_digit(10))
    {
        return match Rating::from_digit(d as u8) {
            Some(r) => Reply::Rating(r),
            None => Reply::Unclear,
        };
    }
    if let Some(r) = Rating::ALL.into_iter().find(|r| r.zh() == cleaned) {
        return Reply::Rating(r);
    }
    if cleaned.chars().count() <= REPLY_MAX_CHARS {
        Reply::Unclear
    } else {
        Reply::NotAReply
    }
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || "。，！？、；：「」“”‘’（）【】《》…～·".contains(c)
}

/// The 24-hour default (Art. 16): a survey sent at `sent_at` and still unanswered at
/// `now` counts as satisfied once the window has passed.
pub fn survey_defaults(sent_at: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    now - sent_at >= chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX)
}

/// What follows a revisit attempt (Art. 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisitNext {
    /// The citizen rated again: the revisit is done.
    Done(Rating),
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Three failed attempts: the revisit ends.
    Ended,
}

/// After attempt number `attempt` ended with `outcome` at `now`.
pub fn revisit_next(
    attempt: u32,
    outcome: RevisitCallOutcome,
    rating: Option<Rating>,
    now: DateTime<Utc>,
    retry: Duration,
) -> RevisitNext {
    match (outcome, rating) {
        (RevisitCallOutcome::Rated, Some(r)) => RevisitNext::Done(r),
        _ if attempt >= REVISIT_ATTEMPTS => RevisitNext::Ended,
        _ => RevisitNext::Retry(
            now + chrono::Duration::from_std(retry).unwrap_or(chrono::Duration::hours(2)),
        ),
    }
}

/// The last Beijing day a unit may appeal a rating formed at `rated_at` (Art. 17: within
/// 3 working days, counted from the next working day, Art. 22).
pub fn appeal_until(calendar: &Calendar, rated_at: DateTime<Utc>) -> NaiveDate {
    calendar.deadline(rated_at, APPEAL_DAYS).date
}

/// When the result SMS stops being worth sending (Art. 13: within 1 working day of the
/// accepted reply): the end of that day, Beijing time.
pub fn result_expires(calendar: &Calendar, accepted_at: DateTime<Utc>) -> DateTime<Utc> {
    let day = calendar.deadline(accepted_at, 1).date;
    crate::rules::end_of_day(day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A wall clock that moves with tokio's (paused) clock.
    struct TokioClock {
        origin: DateTime<Utc>,
        start: tokio::time::Instant,
    }

    impl TokioClock {
        fn at(origin: DateTime<Utc>) -> Self {
            TokioClock {
                origin,
                start: tokio::time::Instant::now(),
            }
        }
        fn now(&self) -> DateTime<Utc> {
            self.origin + chrono::Duration::from_std(self.start.elapsed()).expect("a short test")
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        Utc.from_utc_datetime(&s.parse().expect("a datetime"))
    }

    #[test]
    fn art16_replies_read_as_ratings() {
        for (text, want) in [
            ("4", Reply::Rating(Rating::Dissatisfied)),
            (" 1 ", Reply::Rating(Rating::VerySatisfied)),
            ("２", Reply::Rating(Rating::Satisfied)),
            ("3。", Reply::Rating(Rating::BasicallySatisfied)),
            ("非常不满意", Reply::Rating(Rating::VeryDissatisfied)),
            ("不满意！", Reply::Rating(Rating::Dissatisfied)),
            ("满意", Reply::Rating(Rating::Satisfied)),
            ("6", Reply::Unclear),
            ("0", Reply::Unclear),
            ("好的", Reply::Unclear),
            ("45", Reply::Unclear),
            ("？", Reply::Unclear),
            ("还行吧", Reply::Unclear),
            ("路灯又坏了", Reply::NotAReply),
            (
                "我家门口的路灯又坏了，已经三天没有亮了，请尽快派人来修理",
                Reply::NotAReply,
            ),
        ] {
            assert_eq!(read_reply(text), want, "{text:?}");
        }
    }

    #[test]
    fn art16_praise_gets_no_survey() {
        use contract::Outcome;
        assert!(!surveyed(TicketKind::Praise, Outcome::Resolved));
        assert!(surveyed(TicketKind::Complaint, Outcome::Resolved));
        assert!(surveyed(TicketKind::Consultation, Outcome::Answered));
        assert!(!surveyed(TicketKind::Complaint, Outcome::NotAccepted));
        assert!(!surveyed(TicketKind::Complaint, Outcome::Merged));
    }

    #[tokio::test(start_paused = true)]
    async fn art16_no_reply_in_24_hours_counts_as_satisfied() {
        let window = Duration::from_secs(24 * 3600);
        let clock = TokioClock::at(utc("2026-12-01T02:00:00"));
        let sent = clock.now();
        tokio::time::sleep(Duration::from_secs(23 * 3600 + 59 * 60)).await;
        assert!(!survey_defaults(sent, clock.now(), window), "23:59 in");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(survey_defaults(sent, clock.now(), window), "24 hours in");
        // A shortened window (the tests' configuration) works the same.
        let short = Duration::from_secs(20);
        let sent = clock.now();
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert!(!survey_defaults(sent, clock.now(), short));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(survey_defaults(sent, clock.now(), short));
    }

    #[tokio::test(start_paused = true)]
    async fn art17_revisit_retries_twice_then_ends_after_three_failures() {
        let retry = Duration::from_secs(2 * 3600);
        let clock = TokioClock::at(utc("2026-12-01T02:00:00"));
        let mut attempt = 1;
        let mut times = vec![clock.now()];
        loop {
            match revisit_next(
                attempt,
                RevisitCallOutcome::NoAnswer,
                None,
                clock.now(),
                retry,
            ) {
                RevisitNext::Retry(at) => {
                    let wait = (at - clock.now()).to_std().expect("ahead");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    times.push(clock.now());
                }
                RevisitNext::Ended => break,
                RevisitNext::Done(_) => panic!("nobody rated"),
            }
        }
        assert_eq!(attempt, REVISIT_ATTEMPTS);
        assert_eq!(times.len(), 3);
        assert_eq!(times[2] - times[0], chrono::Duration::hours(4));
        // Busy and no digit are failures too; a digit ends it at once.
        assert!(matches!(
            revisit_next(1, RevisitCallOutcome::Busy, None, clock.now(), retry),
            RevisitNext::Retry(_)
        ));
        assert_eq!(
            revisit_next(3, RevisitCallOutcome::NoDigit, None, clock.now(), retry),
            RevisitNext::Ended
        );
        assert_eq!(
            revisit_next(
                2,
                RevisitCallOutcome::Rated,
                Some(Rating::Satisfied),
                clock.now(),
                retry
            ),
            RevisitNext::Done(Rating::Satisfied)
        );
    }

    #[test]
    fn art17_appeal_within_3_working_days() {
        let c = Calendar::builtin();
        // Rated Friday 2 October 2026, in the National Day holiday (1 to 7 October): the
        // count starts on Thursday 8 October, and Saturday 10 October is a make-up
        // working day, so the third working day is the 10th.
        assert_eq!(
            appeal_until(&c, utc("2026-10-02T02:00:00")),
            NaiveDate::from_ymd_opt(2026, 10, 10).expect("date")
        );
        // An ordinary week: rated Monday 30 November, appeal until Thursday 3 December.
        assert_eq!(
            appeal_until(&c, utc("2026-11-30T02:00:00")),
            NaiveDate::from_ymd_opt(2026, 12, 3).expect("date")
        );
    }

    #[test]
    fn art13_result_sms_names_the_ticket_and_expires_after_one_working_day() {
        let t = Templates::builtin();
        let text = t.result_text("ZH20261201ABCDEF0123", "已修复路灯");
        assert!(text.contains("ZH20261201ABCDEF0123") && text.contains("已修复路灯"));
        assert!(text.contains("查询"), "the progress-query hint");
        let long = "很".repeat(300);
        assert!(t.result_text("R", &long).chars().count() < 300);
        let c = Calendar::builtin();
        // Accepted Friday 4 December: sent by the end of Monday 7 December (Beijing).
        assert_eq!(
            result_expires(&c, utc("2026-12-04T03:00:00")),
            utc("2026-12-07T15:59:59")
        );
        assert!(
            t.survey_text("R", Duration::from_secs(86_400))
                .contains("24小时")
        );
        assert!(Templates::from_toml("result = \"x\"").is_err());
    }
}
