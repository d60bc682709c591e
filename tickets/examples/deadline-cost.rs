//! The cost of one deadline computation (docs/benchmarks.md, "Ticket service"):
//!
//! ```text
//! cargo run --release -p tickets --example deadline-cost -- 1000000
//! ```
//!
//! Times `Calendar::deadline` for 10 and for 2 working days over receipt times spread
//! through 2026 (holidays included), against a baseline run in the same process: turning
//! the same instants into their Beijing date and weekday (the least any date rule does).
//! Prints nanoseconds per call and the ratio. Under callgrind the same binary gives
//! instruction counts that repeat: `valgrind --tool=callgrind target/release/examples/
//! deadline-cost 100000 deadline10` against `... 0 deadline10`.

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, Utc};
use tickets::Calendar;

fn instants(n: usize) -> Vec<DateTime<Utc>> {
    let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00+08:00")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    // A prime stride in minutes walks the whole year, every hour and weekday.
    (0..n)
        .map(|i| start + Duration::minutes((i as i64 * 7919) % (360 * 24 * 60)))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let only = args.next();
    let cal = Calendar::builtin();
    let times = instants(n.max(1));
    let run = |name: &str, f: &dyn Fn(DateTime<Utc>) -> u32| -> f64 {
        if only.as_deref().is_some_and(|o| o != name) {
            return f64::NAN;
        }
        let t = Instant::now();
        let mut acc = 0u32;
        for &at in times.iter().take(n) {
            acc = acc.wrapping_add(f(black_box(at)));
        }
        black_box(acc);
        t.elapsed().as_nanos() as f64 / n.max(1) as f64
    };
    let baseline = run("baseline", &|t| {
        let d = tickets::rules::beijing_date(t);
        d.weekday().num_days_from_monday() + d.ordinal()
    });
    let ten = run("deadline10", &|t| cal.deadline(t, 10).date.ordinal());
    let two = run("deadline2", &|t| cal.deadline(t, 2).date.ordinal());
    println!("calls: {n}");
    println!("baseline (Beijing date and weekday): {baseline:.1} ns");
    println!(
        "deadline, 10 working days: {ten:.1} ns ({:.1}x baseline)",
        ten / baseline
    );
    println!(
        "deadline, 2 working days: {two:.1} ns ({:.1}x baseline)",
        two / baseline
    );
}
