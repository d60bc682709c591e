//! Art. 18's statistics: per handling unit and for the centre, per month or quarter, the
//! tickets received (by channel and kind), dispatched on time (Art. 8), handled on time
//! (Arts. 11, 12), overdue (the yellow and red cards of Art. 10), returns (Art. 10),
//! extensions (Art. 12), urges (Art. 14) and the satisfaction rate (Arts. 16, 17).
//!
//! Computed by two aggregate queries over the tickets received in the period (Beijing
//! days, Art. 22), so the figures are the database's at the moment of asking. "On time"
//! compares the Beijing date of the act with the deadline the calendar counted (so a
//! month with holidays is counted by its working days, not its weekdays). A unit is the
//! ticket's lead unit. The satisfaction rate is satisfied ratings (very satisfied,
//! satisfied, basically satisfied; the 24-hour default counts as satisfied) over all
//! ratings, the newest round's rating per ticket (Art. 17), leaving out ratings whose
//! appeal a supervisor upheld.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;

/// A reporting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First Beijing day.
    pub from: NaiveDate,
    /// The day after the last.
    pub until: NaiveDate,
}

impl Period {
    /// `2026-11` (a month) or `2026-Q4` (a quarter).
    pub fn parse(s: &str) -> Option<Period> {
        let (y, rest) = s.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(y) {
            return None;
        }
        let year: i32 = y.parse().ok().filter(|y| (2000..=2100).contains(y))?;
        let (first, months) = if let Some(q) = rest.strip_prefix('Q') {
            if !digits(q) {
                return None;
            }
            let q: u32 = q.parse().ok().filter(|q| (1..=4).contains(q))?;
            ((q - 1) * 3 + 1, 3)
        } else {
            if rest.len() != 2 || !digits(rest) {
                return None;
            }
            let m: u32 = rest.parse().ok().filter(|m| (1..=12).contains(m))?;
            (m, 1)
        };
        let from = NaiveDate::from_ymd_opt(year, first, 1)?;
        let until = from.checked_add_months(chrono::Months::new(months))?;
        Some(Period { from, until })
    }

    /// The period's name back (`2026-11`, `2026-Q4`).
    pub fn name(&self) -> String {
        let months = (self.until.year() - self.from.year()) * 12 + self.until.month() as i32
            - self.from.month() as i32;
        if months == 3 {
            format!("{}-Q{}", self.from.year(), (self.from.month() - 1) / 3 + 1)
        } else {
            format!("{}-{:02}", self.from.year(), self.from.month())
        }
    }

    fn bound(d: NaiveDate) -> DateTime<Utc> {
        let tz = chrono::FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }
}

/// One unit's (or the centre's) figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    /// The unit id; `centre` for the whole hotline.
    pub unit: String,
    /// Tickets received in the period.
    pub received: i64,
    /// By channel (phone, webrtc, chat, sms).
    pub by_channel: BTreeMap<String, i64>,
    /// By kind (Art. 8).
    pub by_kind: BTreeMap<String, i64>,
    /// Dispatched to a unit.
    pub dispatched: i64,
    /// Dispatched by the dispatch deadline (Art. 8).
    pub dispatched_on_time: i64,
    /// Replied by the unit.
    pub replied: i64,
    /// Replied by the handling deadline (Arts. 11, 12).
    pub handled_on_time: i64,
    /// Ever shown a yellow card (Art. 10).
    pub yellow_cards: i64,
    /// Ever shown a red card (Art. 10).
    pub red_cards: i64,
    /// Returns refused and recorded against the unit (Art. 10).
    pub returns: i64,
    /// Extensions granted (Art. 12).
    pub extensions: i64,
    /// Urges (Art. 14).
    pub urges: i64,
    /// Rated tickets counted (Arts. 16, 17).
    pub rated: i64,
    /// Of them, satisfied.
    pub satisfied: i64,
    /// `satisfied / rated`, when anything was rated.
    pub satisfaction_rate: Option<f64>,
}

/// The report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The period's name.
    pub period: String,
    /// First Beijing day.
    pub from: NaiveDate,
    /// Last Beijing day.
    pub to: NaiveDate,
    /// The centre's figures (every ticket, dispatched or not); asked for one unit, that
    /// unit's.
    pub centre: Figures,
    /// Each unit that led a ticket received in the period, by id (empty when asked for
    /// one unit).
    pub units: Vec<Figures>,
}

const CHANNELS: [&str; 4] = ["phone", "webrtc", "chat", "sms"];
const KINDS: [&str; 8] = [
    "consultation",
    "help",
    "complaint",
    "report",
    "suggestion",
    "praise",
    "correction",
    "unknown",
];

/// Computes the report for `period`, for one unit or all.
pub async fn report(pool: &PgPool, period: Period, unit: Option<&str>) -> sqlx::Result<Report> {
    let (from, until) = (Period::bound(period.from), Period::bound(period.until));
    // One pass over the period's tickets: the centre's row and one per lead unit.
    let rows = sqlx::query(
        "SELECT GROUPING(lead_unit) AS whole, lead_unit, \
           count(*) AS received, \
           count(first_dispatched_at) AS dispatched, \
           count(*) FILTER (WHERE (first_dispatched_at AT TIME ZONE 'Asia/Shanghai')::date <= dispatch_due) AS dispatched_on_time, \
           count(replied_at) AS replied, \
           count(*) FILTER (WHERE (replied_at AT TIME ZONE 'Asia/Shanghai')::date <= handling_due) AS handled_on_time, \
           count(yellow_at) AS yellow, count(red_at) AS red, \
           count(*) FILTER (WHERE yellow_at >= first_dispatched_at) AS unit_yellow, \
           count(*) FILTER (WHERE red_at >= first_dispatched_at) AS unit_red, \
           coalesce(sum(returns), 0)::bigint AS returns, \
           count(*) FILTER (WHERE extended) AS extensions, \
           coalesce(sum(urge_count), 0)::bigint AS urges, \
           count(*) FILTER (WHERE rating IS NOT NULL AND NOT rating_appealed) AS rated, \
           count(*) FILTER (WHERE rating IN ('very_satisfied', 'satisfied', 'basically_satisfied') AND NOT rating_appealed) AS satisfied \
         FROM tickets \
         WHERE received_at >= $1 AND received_at < $2 AND outcome IS DISTINCT FROM 'merged' \
           AND ($3::text IS NULL OR lead_unit = $3) \
         GROUP BY GROUPING SETS ((), (lead_unit))",
    )
    .bind(from)
    .bind(until)
    .bind(unit)
    .fetch_all(pool)
    .await?;
    let mut centre = Figures {
        unit: "centre".into(),
        ..Figures::default()
    };
    let mut units: BTreeMap<String, Figures> = BTreeMap::new();
    for r in &rows {
        let whole: i32 = r.get("whole");
        let lead: Option<String> = r.get("lead_unit");
        let f = match (whole, lead) {
            (1, _) => &mut centre,
            (_, Some(u)) => units.entry(u.clone()).or_insert_with(|| Figures {
                unit: u,
                ..Figures::default()
            }),
            // Tickets not dispatched (yet): the centre's only.
            (_, None) => continue,
        };
        f.received = r.get("received");
        f.dispatched = r.get("dispatched");
        f.dispatched_on_time = r.get("dispatched_on_time");
        f.replied = r.get("replied");
        f.handled_on_time = r.get("handled_on_time");
        // A unit answers for the cards of its time with the ticket; the centre for all
        // (the dispatch deadline's are its own, Art. 8).
        let (yellow, red) = if whole == 1 {
            ("yellow", "red")
        } else {
            ("unit_yellow", "unit_red")
        };
        f.yellow_cards = r.get(yellow);
        f.red_cards = r.get(red);
        f.returns = r.get("returns");
        f.extensions = r.get("extensions");
        f.urges = r.get("urges");
        f.rated = r.get("rated");
        f.satisfied = r.get("satisfied");
        f.satisfaction_rate = (f.rated > 0).then(|| f.satisfied as f64 / f.rated as f64);
    }
    let mix = sqlx::query(
        "SELECT GROUPING(lead_unit) AS whole, lead_unit, channel, kind, count(*) AS n \
         FROM tickets \
         WHERE received_at >= $1 AND received_at < $2 AND outcome IS DISTINCT FROM 'merged' \
           AND ($3::text IS NULL OR lead_unit = $3) \
         GROUP BY GROUPING SETS ((channel, kind), (lead_unit, channel, kind))",
    )
    .bind(from)
    .bind(until)
    .bind(unit)
    .fetch_all(pool)
    .await?;
    for f in std::iter::once(&mut centre).chain(units.values_mut()) {
        for c in CHANNELS {
            f.by_channel.insert(c.into(), 0);
        }
        for k in KINDS {
            f.by_kind.insert(k.into(), 0);
        }
    }
    for r in &mix {
        let whole: i32 = r.get("whole");
        let lead: Option<String> = r.get("lead_unit");
        let f = match (whole, lead) {
            (1, _) => &mut centre,
            (_, Some(u)) => match units.get_mut(&u) {
                Some(f) => f,
                None => continue,
            },
            (_, None) => continue,
        };
        let n: i64 = r.get("n");
        *f.by_channel.entry(r.get("channel")).or_insert(0) += n;
        *f.by_kind.entry(r.get("kind")).or_insert(0) += n;
    }
    let mut units: Vec<Figures> = units.into_values().collect();
    if let Some(u) = unit {
        // Asked for one unit: its own row only, as the report's total.
        centre = units.pop().unwrap_or(Figures {
            unit: u.to_owned(),
            by_channel: centre.by_channel,
            by_kind: centre.by_kind,
            ..Figures::default()
        });
        units.clear();
    }
    Ok(Report {
        period: period.name(),
        from: period.from,
        to: period.until.pred_opt().unwrap_or(period.until),
        centre,
        units,
    })
}

/// The report as CSV: a header, then the centre's row and one per unit.
pub fn csv(report: &Report) -> String {
    let mut out = String::from("period,unit,received");
    for c in CHANNELS {
        out.push_str(&format!(",channel_{c}"));
    }
    for k in KINDS {
        out.push_str(&format!(",kind_{k}"));
    }
    out.push_str(",dispatched,dispatched_on_time,replied,handled_on_time,yellow_cards,red_cards,returns,extensions,urges,rated,satisfied,satisfaction_rate\r\n");
    for f in std::iter::once(&report.centre).chain(report.units.iter()) {
        out.push_str(&format!(
            "{},{},{}",
            report.period,
            csv_field(&f.unit),
            f.received
        ));
        for c in CHANNELS {
            out.push_str(&format!(",{}", f.by_channel.get(c).copied().unwrap_or(0)));
        }
        for k in KINDS {
            out.push_str(&format!(",{}", f.by_kind.get(k).copied().unwrap_or(0)));
        }
        out.push_str(&format!(
            ",{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            f.dispatched,
            f.dispatched_on_time,
            f.replied,
            f.handled_on_time,
            f.yellow_cards,
            f.red_cards,
            f.returns,
            f.extensions,
            f.urges,
            f.rated,
            f.satisfied,
            f.satisfaction_rate
                .map(|r| format!("{r:.4}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// RFC 4180 quoting where needed (unit ids are plain, but the file is for spreadsheets).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn art18_periods_are_months_and_quarters_of_beijing_days() {
        let m = Period::parse("2026-10").expect("month");
        assert_eq!(m.from, NaiveDate::from_ymd_opt(2026, 10, 1).expect("date"));
        assert_eq!(m.until, NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"));
        assert_eq!(m.name(), "2026-10");
        // The month starts at Beijing midnight: 16:00 UTC the day before.
        assert_eq!(
            Period::bound(m.from),
            Utc.with_ymd_and_hms(2026, 9, 30, 16, 0, 0)
                .single()
                .expect("t")
        );
        let q = Period::parse("2026-Q4").expect("quarter");
        assert_eq!(q.from, NaiveDate::from_ymd_opt(2026, 10, 1).expect("date"));
        assert_eq!(q.until, NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"));
        assert_eq!(q.name(), "2026-Q4");
        for bad in [
            "2026", "2026-13", "2026-Q5", "2026-1", "x-01", "2026-Q0", "1999-01", "2026-+1",
            "+2026-01", "2026-Q+1",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn art18_csv_has_a_row_per_unit_and_quotes_what_needs_it() {
        let r = Report {
            period: "2026-10".into(),
            from: NaiveDate::from_ymd_opt(2026, 10, 1).expect("date"),
            to: NaiveDate::from_ymd_opt(2026, 10, 31).expect("date"),
            centre: Figures {
                unit: "centre".into(),
                received: 3,
                rated: 2,
                satisfied: 1,
                satisfaction_rate: Some(0.5),
                ..Figures::default()
            },
            units: vec![Figures {
                unit: "a,b".into(),
                received: 1,
                ..Figures::default()
            }],
        };
        let text = csv(&r);
        let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split(',').collect();
        let centre: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), centre.len());
        assert_eq!(centre[1], "centre");
        assert_eq!(*centre.last().expect("rate"), "0.5000");
        assert!(lines[2].starts_with("2026-10,\"a,b\",1,"));
    }
}
