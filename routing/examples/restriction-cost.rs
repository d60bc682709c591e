//! What an Art. 9 admission check costs with a million restrictions in the book, and
//! what the book holds in memory, against a baseline in the same run (a plain
//! `HashSet<String>` of the same citizen keys, the simplest thing that could answer):
//! `cargo run --release -p routing --example restriction-cost`.
//!
//! Memory is the process's resident set before and after filling (Linux
//! `/proc/self/statm`), so it includes allocator overhead; lookups are timed over a
//! million keys, half restricted and half not, in a shuffled order.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Utc};
use contract::{CitizenKeyer, Evidence, ProposalSource, RestrictionReason};
use routing::restrictions::{Proposal, RestrictionBook};

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let keyer = CitizenKeyer::new(b"a-bench-secret-of-enough-length");
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
        .expect("literal")
        .with_timezone(&Utc);
    let citizens: Vec<_> = (0..2 * n)
        .map(|i| keyer.phone(&format!("1{:010}", i)).expect("valid number"))
        .collect();

    let before = rss_mib();
    let t = Instant::now();
    let mut book = RestrictionBook::new();
    for c in &citizens[..n] {
        let p = book
            .propose(
                Proposal {
                    citizen: c.clone(),
                    reason: RestrictionReason::InsultingStaff,
                    evidence: Evidence {
                        contacts: vec![contract::event::new_event_id()],
                        ticket_ref: None,
                        excerpt: Some("你们这帮废物".into()),
                    },
                    proposed_by: "agent-1001".into(),
                    source: ProposalSource::Staff,
                },
                now,
            )
            .expect("propose");
        let id = p.restriction_id;
        book.apply(p);
        let confirmed = book.confirm(id, "supervisor-7", now).expect("confirm");
        book.apply(confirmed);
    }
    let fill = t.elapsed();
    let book_mib = rss_mib() - before;

    let before = rss_mib();
    let baseline: HashSet<String> = citizens[..n].iter().map(|c| c.key.clone()).collect();
    let baseline_mib = rss_mib() - before;

    // Half restricted, half not, interleaved.
    let probes: Vec<&str> = (0..n)
        .map(|i| citizens[if i % 2 == 0 { i } else { n + i }].key.as_str())
        .collect();
    let later = now + chrono::Duration::days(1);
    let t = Instant::now();
    let mut hits = 0usize;
    for k in &probes {
        hits += usize::from(book.in_force(black_box(k), later).is_some());
    }
    let per_check = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    let mut base_hits = 0usize;
    for k in &probes {
        base_hits += usize::from(baseline.contains(black_box(*k)));
    }
    let per_base = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(hits, base_hits);
    println!(
        "{n} active restrictions, filled in {:.1} s",
        fill.as_secs_f64()
    );
    println!(
        "memory: book {book_mib:.0} MiB ({:.0} B per restriction); baseline set of keys {baseline_mib:.0} MiB",
        book_mib * 1024.0 * 1024.0 / n as f64
    );
    println!(
        "admission check: {per_check:.0} ns; baseline HashSet<String> lookup {per_base:.0} ns ({:.1}x)",
        per_check / per_base
    );
}
