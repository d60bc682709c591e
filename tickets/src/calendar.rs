//! Working days and deadlines (Art. 22).
//!
//! Every deadline in the measures counts working days from the *next* working day after
//! the day a ticket was received: received on day D, day 1 is the first working day after
//! D. Days are Beijing dates (China keeps UTC+8 all year). Working days are Monday to
//! Friday, except the year's public holidays, plus the weekend make-up workdays (调休),
//! as the State Council's notice for the year lists them: data files under
//! `data/holidays/`, one per year. A day in a year without a file counts plain weekdays,
//! and a deadline that relied on one is *provisional*: the service marks it, counts it in
//! a metric, and recomputes it once the year's notice is added.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc, Weekday};
use serde::Deserialize;

/// The shipped years.
pub const SHIPPED_YEARS: [&str; 1] = [include_str!("../data/holidays/2026.toml")];

/// A holiday file that does not parse or contradicts itself.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// Not TOML of the expected shape.
    #[error("holiday file does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// Dates outside the file's year, a reversed range, a day both rest and work, a year
    /// given twice.
    #[error("holiday file is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    source: String,
    holiday: Vec<HolidayFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    name: String,
    /// First and last rest day, inclusive.
    rest: [NaiveDate; 2],
    /// Weekend days worked instead.
    work: Vec<NaiveDate>,
}

#[derive(Debug, Clone, Default)]
struct Year {
    rest: BTreeSet<NaiveDate>,
    work: BTreeSet<NaiveDate>,
}

/// Whether a day is worked, and whether that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// A working day.
    pub working: bool,
    /// Its year has no holiday file: judged by the weekday alone.
    pub provisional: bool,
}

/// A deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The last day (Beijing date): due by its end.
    pub date: NaiveDate,
    /// The instant it passes: the end of `date` in Beijing, in UTC.
    pub due: DateTime<Utc>,
    /// A day counted on the way lies in a year without a holiday file.
    pub provisional: bool,
}

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
}

/// Beijing time (UTC+8, no daylight saving since 1991).
fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!("valid offset"))
}

impl Calendar {
    /// The calendar of the shipped years.
    pub fn builtin() -> Self {
        Self::from_toml(&SHIPPED_YEARS).unwrap_or_else(|e| unreachable!("shipped holidays: {e}"))
    }

    /// A calendar of these year files.
    pub fn from_toml(files: &[&str]) -> Result<Self, CalendarError> {
        let mut years = BTreeMap::new();
        for text in files {
            let f: YearFile = toml::from_str(text)?;
            if f.source.trim().is_empty() {
                return Err(CalendarError::Inconsistent(format!(
                    "{}: name the notice in `source`",
                    f.year
                )));
            }
            let mut y = Year::default();
            for h in &f.holiday {
                let [first, last] = h.rest;
                if first > last || first.year() != f.year || last.year() != f.year {
                    return Err(CalendarError::Inconsistent(format!(
                        "{} {}: rest {first}..{last} is not a range within the year",
                        f.year, h.name
                    )));
                }
                let mut d = first;
                loop {
                    y.rest.insert(d);
                    match d.succ_opt() {
                        Some(next) if d < last => d = next,
                        _ => break,
                    }
                }
                for w in &h.work {
                    if w.year() != f.year || !matches!(w.weekday(), Weekday::Sat | Weekday::Sun) {
                        return Err(CalendarError::Inconsistent(format!(
                            "{} {}: make-up workday {w} is not a weekend day of the year",
                            f.year, h.name
                        )));
                    }
                    y.work.insert(*w);
                }
            }
            if let Some(d) = y.rest.intersection(&y.work).next() {
                return Err(CalendarError::Inconsistent(format!(
                    "{d} is both rest and work"
                )));
            }
            if years.insert(f.year, y).is_some() {
                return Err(CalendarError::Inconsistent(format!(
                    "year {} given twice",
                    f.year
                )));
            }
        }
        Ok(Calendar { years })
    }

    /// Whether `date` is a working day.
    pub fn day(&self, date: NaiveDate) -> Day {
        let weekday = !matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        match self.years.get(&date.year()) {
            Some(y) => Day {
                working: y.work.contains(&date) || (weekday && !y.rest.contains(&date)),
                provisional: false,
            },
            None => Day {
                working: weekday,
                provisional: true,
            },
        }
    }

    /// The deadline `working_days` working days after a ticket received at `received`
    /// (Art. 22: day 1 is the first working day after the Beijing date of receipt).
    pub fn deadline(&self, received: DateTime<Utc>, working_days: u32) -> Deadline {
        let mut date = received.with_timezone(&beijing()).date_naive();
        let mut provisional = false;
        let mut counted = 0;
        while counted < working_days {
            date = date.succ_opt().unwrap_or(date);
            let d = self.day(date);
            provisional |= d.provisional;
            if d.working {
                counted += 1;
            }
        }
        let end = date
            .succ_opt()
            .and_then(|next| next.and_hms_opt(0, 0, 0))
            .and_then(|midnight| midnight.and_local_timezone(beijing()).single())
            .map(|t| t.with_timezone(&Utc) - chrono::Duration::seconds(1))
            .unwrap_or(received);
        Deadline {
            date,
            due: end,
            provisional,
        }
    }

    /// The years the calendar knows.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    /// A Beijing wall-clock time as UTC.
    fn bj(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("{s}+08:00"))
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn art22_holidays_rest_and_make_up_weekends_work() {
        let c = Calendar::builtin();
        assert!(!c.day(date("2026-10-01")).working, "National Day");
        assert!(!c.day(date("2026-10-07")).working);
        assert!(c.day(date("2026-10-10")).working, "a make-up Saturday");
        assert!(c.day(date("2026-09-20")).working, "a make-up Sunday");
        assert!(
            !c.day(date("2026-02-16")).working,
            "Spring Festival on a Monday"
        );
        assert!(c.day(date("2026-11-30")).working, "an ordinary Monday");
        assert!(!c.day(date("2026-11-29")).working, "an ordinary Sunday");
        assert!(!c.day(date("2026-11-30")).provisional);
    }

    #[test]
    fn art22_counting_starts_the_working_day_after_receipt() {
        let c = Calendar::builtin();
        // Received Monday 30 November: day 1 is Tuesday, a consultation (2 days) is due
        // Wednesday 2 December, at 23:59:59 Beijing time.
        let d = c.deadline(bj("2026-11-30T10:00:00"), 2);
        assert_eq!(d.date, date("2026-12-02"));
        assert_eq!(d.due, bj("2026-12-02T23:59:59"));
        assert!(!d.provisional);
        // Received late on Sunday (a rest day) still counts from Monday.
        assert_eq!(
            c.deadline(bj("2026-11-29T23:30:00"), 1).date,
            date("2026-11-30")
        );
        // A UTC time that is already the next day in Beijing.
        let utc_evening = DateTime::parse_from_rfc3339("2026-11-29T17:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(c.deadline(utc_evening, 1).date, date("2026-12-01"));
    }

    #[test]
    fn art22_deadlines_step_over_holidays_and_count_make_up_days() {
        let c = Calendar::builtin();
        // Friday 13 February, before Spring Festival: the make-up Saturday 14th is day 1,
        // the festival rests 15-23, Tuesday 24th is day 2.
        assert_eq!(
            c.deadline(bj("2026-02-13T09:00:00"), 2).date,
            date("2026-02-24")
        );
        // Wednesday 30 September, 10 working days: 1-7 October rest; 8, 9, 10 (make-up
        // Saturday), 12-16, 19, 20.
        assert_eq!(
            c.deadline(bj("2026-09-30T16:00:00"), 10).date,
            date("2026-10-20")
        );
    }

    #[test]
    fn art22_a_contact_at_2359_on_the_day_before_a_holiday() {
        let c = Calendar::builtin();
        // 23:59 Beijing on Wednesday 30 September, the eve of National Day: still
        // received on the 30th, so day 1 is the first working day after the holiday
        // (Thursday 8 October); one second later (1 October) it is the same day 1.
        let eve = c.deadline(bj("2026-09-30T23:59:00"), 1);
        assert_eq!(eve.date, date("2026-10-08"));
        assert_eq!(
            c.deadline(bj("2026-10-01T00:00:01"), 1).date,
            date("2026-10-08")
        );
        // A consultation (2 working days) from the eve: 8 and 9 October.
        assert_eq!(
            c.deadline(bj("2026-09-30T23:59:00"), 2).date,
            date("2026-10-09")
        );
        // And the same minute in UTC (15:59Z) is still the 30th in Beijing.
        let utc = DateTime::parse_from_rfc3339("2026-09-30T15:59:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(c.deadline(utc, 1).date, date("2026-10-08"));
    }

    #[test]
    fn art22_a_year_without_its_notice_counts_weekdays_and_is_provisional() {
        let c = Calendar::builtin();
        let d = c.deadline(bj("2026-12-30T10:00:00"), 3);
        // 31 December (Thu), then 2027: 1 January (Fri) counted as a weekday, 4 January.
        assert_eq!(d.date, date("2027-01-04"));
        assert!(d.provisional, "2027's notice is not in the data");
        assert!(c.day(date("2027-01-01")).provisional);
        assert!(!c.deadline(bj("2026-12-01T10:00:00"), 3).provisional);
    }

    #[test]
    fn bad_holiday_files_are_refused() {
        let reversed = "year = 2026\nsource = \"x\"\n[[holiday]]\nname = \"a\"\nrest = [\"2026-05-05\", \"2026-05-01\"]\nwork = []\n";
        assert!(Calendar::from_toml(&[reversed]).is_err());
        let weekday_work = "year = 2026\nsource = \"x\"\n[[holiday]]\nname = \"a\"\nrest = [\"2026-05-01\", \"2026-05-05\"]\nwork = [\"2026-05-06\"]\n";
        assert!(Calendar::from_toml(&[weekday_work]).is_err());
        assert!(Calendar::from_toml(&[SHIPPED_YEARS[0], SHIPPED_YEARS[0]]).is_err());
        assert!(Calendar::from_toml(&["year = 2026"]).is_err());
    }

    proptest::proptest! {
        /// Whatever the receipt time, the deadline is a working day after the receipt's
        /// Beijing date, with exactly `n` working days in between, the last one included.
        #[test]
        fn art22_a_deadline_is_the_nth_working_day_after_receipt(
            secs in 1_767_225_600i64..1_798_761_600, // 2026 (UTC)
            n in 1u32..15,
        ) {
            let c = Calendar::builtin();
            let received = DateTime::from_timestamp(secs, 0).expect("in range");
            let d = c.deadline(received, n);
            proptest::prop_assert!(c.day(d.date).working);
            let start = received.with_timezone(&beijing()).date_naive();
            let mut day = start;
            let mut count = 0;
            while day < d.date {
                day = day.succ_opt().expect("a next day");
                if c.day(day).working {
                    count += 1;
                }
            }
            proptest::prop_assert_eq!(count, n);
            proptest::prop_assert!(d.due > received);
        }
    }
}
