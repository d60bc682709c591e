//! Fair shares of the call capacity, checked before the global limit (issue 14).
//!
//! A carrier trunk is one source address for every caller behind it, so a limit per
//! source cannot tell a looping PBX or an autodialer from the citizens calling through
//! the same carrier: a flood of 2,000 INVITEs a second from a handful of numbers spent
//! the trunk's whole INVITE rate and left 18% of the real callers answered. Admission is
//! therefore in this order, each step before any work is done for the call (no contact,
//! no media port):
//!
//! 1. **The calling number's share**: at most `number_max_calls` calls at once and
//!    `number_calls_per_minute` new ones (with a burst) from one number. A flood from a
//!    few numbers stops here, without spending the trunk's rate. Calls with no number
//!    (withheld) cannot be told apart and have only the trunk's share.
//! 2. **The trunk's share**: its INVITE rate (`invite_rate_per_second`, per trunk) and,
//!    where set, its own `max_calls`, so one trunk cannot take what another needs. A
//!    flood with random numbers is shed here, in proportion, with 503 and Retry-After.
//! 3. **The global limit**, `max_calls` less `priority_reserve`: the last places are kept
//!    for the priority lane.
//!
//! The **priority lane**: numbers in `priority_callers` (a known-good list: the linkage
//! centres' lines, hospitals' dispatch) and, for `emergency_priority_secs`, a number
//! whose call raised an Art. 15 urgent notice (calling back about the same emergency)
//! skip the number and trunk shares and may take the reserved places. The Art. 15 mark
//! lives in this gateway instance's memory: a callback reaching another instance has the
//! known-good list only.
//!
//! Numbers are held by their citizen key (Art. 21: the keyed hash, never the number).
//! The tables are bounded: beyond [`MAX_NUMBERS`] numbers, those with no call in
//! progress are forgotten (a random-number flood is then bounded by the trunk's share).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::rate::TokenBucket;
use tokio::time::Instant;

use crate::config::{AdmissionConfig, SipConfig};

/// Calling numbers tracked at most; beyond, idle ones are forgotten.
pub const MAX_NUMBERS: usize = 100_000;
/// Art. 15 marks kept at most; beyond, expired ones are dropped, then the oldest.
const MAX_MARKS: usize = 10_000;
/// Retry-After for a number or trunk at its number of calls at once: calls end in
/// seconds to minutes, and a trunk retrying sooner only gets the same answer.
const BUSY_RETRY_SECS: u64 = 5;

/// Why a call was not admitted; each is a 503 with Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The calling number has its calls at once, or started too many lately.
    Number { retry_secs: u64 },
    /// The trunk's INVITE rate is spent.
    TrunkRate { retry_secs: u64 },
    /// The trunk has its own `max_calls` in progress.
    TrunkShare,
}

impl Refused {
    /// The metric's `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Number { .. } => "number_share",
            Refused::TrunkRate { .. } => "rate",
            Refused::TrunkShare => "trunk_share",
        }
    }

    /// The Warning text of the 503.
    pub fn warning(self) -> &'static str {
        match self {
            Refused::Number { .. } => "too many calls from this calling number",
            Refused::TrunkRate { .. } => "call rate limit of this trunk exceeded",
            Refused::TrunkShare => "this trunk's share of the calls is in use",
        }
    }

    /// Seconds for the Retry-After header (RFC 3261 §21.5.4).
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refused::Number { retry_secs } | Refused::TrunkRate { retry_secs } => retry_secs.max(1),
            Refused::TrunkShare => BUSY_RETRY_SECS,
        }
    }
}

#[derive(Debug)]
struct Share {
    active: usize,
    bucket: TokenBucket,
}

#[derive(Debug, Default)]
struct Shares {
    numbers: HashMap<String, Share>,
    trunks: HashMap<String, Share>,
    /// Art. 15 marks: citizen key, and until when the number has the lane.
    marked: HashMap<String, Instant>,
}

/// The admission shares of one SIP channel.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    trunk_rate: f64,
    trunk_burst: u32,
    trunk_caps: HashMap<String, usize>,
    /// Citizen keys of `priority_callers`.
    priority: HashSet<String>,
    shares: Mutex<Shares>,
}

/// A call admitted through the shares: holds its places until dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    trunk: String,
    number: Option<String>,
    /// Whether the call came in on the priority lane (it may take reserved places).
    pub priority: bool,
}

impl Admitted {
    /// The call is refused after all (the gateway's own limit, or its shutdown): the
    /// number's token comes back, as it does when the trunk's share refuses, so that a
    /// citizen turned away by the gateway's state keeps the number's share for the retry.
    pub fn refused(self) {
        if let Some(key) = &self.number {
            lock(&self.admission.shares).give_back(key);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut shares = lock(&self.admission.shares);
        if let Some(t) = shares.trunks.get_mut(&self.trunk) {
            t.active = t.active.saturating_sub(1);
        }
        if let Some(n) = self.number.as_ref().and_then(|k| shares.numbers.get_mut(k)) {
            n.active = n.active.saturating_sub(1);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    /// The shares `cfg` sets; `priority_keys` are the citizen keys of its
    /// `admission.priority_callers` (keyed by the caller, who holds the secret).
    pub fn new(cfg: &SipConfig, priority_keys: HashSet<String>) -> Self {
        Admission {
            cfg: cfg.admission.clone(),
            trunk_rate: cfg.invite_rate_per_second,
            trunk_burst: cfg.invite_burst,
            trunk_caps: cfg
                .trunks
                .iter()
                .filter_map(|t| t.max_calls.map(|m| (t.name.clone(), m)))
                .collect(),
            priority: priority_keys,
            shares: Mutex::new(Shares::default()),
        }
    }

    /// Marks `number` (a citizen key) for the priority lane: its call raised an Art. 15
    /// urgent notice, and a call back about the same emergency must get through.
    pub fn mark_emergency(&self, number: &str) {
        let until = Instant::now() + Duration::from_secs(self.cfg.emergency_priority_secs);
        let mut shares = lock(&self.shares);
        if shares.marked.len() >= MAX_MARKS && !shares.marked.contains_key(number) {
            let now = Instant::now();
            shares.marked.retain(|_, t| *t > now);
            if shares.marked.len() >= MAX_MARKS {
                // Still full of live marks: the one that ends first goes.
                if let Some(k) = shares
                    .marked
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
                {
                    shares.marked.remove(&k);
                }
            }
        }
        shares.marked.insert(number.to_owned(), until);
    }

    /// Takes the shares of a new call on `trunk` from `number` (a citizen key; `None`
    /// when withheld). The global limit is the caller's to check after this, with
    /// [`Admitted::priority`].
    pub fn admit(self: &Arc<Self>, trunk: &str, number: Option<&str>) -> Result<Admitted, Refused> {
        let now = Instant::now();
        let mut shares = lock(&self.shares);
        let priority = number.is_some_and(|k| {
            self.priority.contains(k) || shares.marked.get(k).is_some_and(|t| *t > now)
        });
        if !priority && let Some(key) = number {
            if shares.numbers.len() >= MAX_NUMBERS && !shares.numbers.contains_key(key) {
                shares.forget_idle_numbers();
                if shares.numbers.len() > MAX_NUMBERS / 2 {
                    // Still half full of numbers that called lately: those with no call
                    // in progress go, their rate history with them. (Stopping at just
                    // under full would scan the whole table again a few INVITEs later.)
                    shares.numbers.retain(|_, s| s.active > 0);
                }
            }
            let share = shares
                .numbers
                .entry(key.to_owned())
                .or_insert_with(|| Share {
                    active: 0,
                    bucket: TokenBucket::new(
                        self.cfg.number_calls_per_minute / 60.0,
                        self.cfg.number_burst,
                    ),
                });
            if share.active >= self.cfg.number_max_calls {
                return Err(Refused::Number {
                    retry_secs: BUSY_RETRY_SECS,
                });
            }
            if !share.bucket.take() {
                return Err(Refused::Number {
                    retry_secs: share.bucket.retry_after_secs(),
                });
            }
        }
        let (rate, burst) = (self.trunk_rate, self.trunk_burst);
        let cap = self.trunk_caps.get(trunk).copied();
        let t = shares
            .trunks
            .entry(trunk.to_owned())
            .or_insert_with(|| Share {
                active: 0,
                bucket: TokenBucket::new(rate, burst),
            });
        if !priority {
            let refused = if cap.is_some_and(|c| t.active >= c) {
                Some(Refused::TrunkShare)
            } else if !t.bucket.take() {
                Some(Refused::TrunkRate {
                    retry_secs: t.bucket.retry_after_secs(),
                })
            } else {
                None
            };
            if let Some(refused) = refused {
                // The number's token was taken for a call that did not happen: a citizen
                // refused because the trunk was flooded keeps the right to call again.
                if let Some(key) = number {
                    shares.give_back(key);
                }
                return Err(refused);
            }
        }
        t.active += 1;
        if let Some(n) = number.and_then(|k| shares.numbers.get_mut(k)) {
            n.active += 1;
        }
        drop(shares);
        Ok(Admitted {
            admission: self.clone(),
            trunk: trunk.to_owned(),
            number: number.map(str::to_owned),
            priority,
        })
    }

    /// Places of `max_calls` a call may take: all of them on the priority lane, else all
    /// but the reserve.
    pub fn limit(&self, max_calls: usize, priority: bool) -> usize {
        if priority {
            max_calls
        } else {
            max_calls.saturating_sub(self.cfg.reserve(max_calls))
        }
    }

    /// Calling numbers tracked now (the bound's unit test reads it).
    pub fn tracked_numbers(&self) -> usize {
        lock(&self.shares).numbers.len()
    }

    /// Forgets what no longer limits anything (numbers with no call in progress and their
    /// rate spent no more, ended Art. 15 marks) and gives back the tables' room: after a
    /// flood of random numbers the table would otherwise keep a hundred thousand entries,
    /// and their pages, until the next flood.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut shares = lock(&self.shares);
        shares.forget_idle_numbers();
        shares.marked.retain(|_, t| *t > now);
        crate::shrink_sparse(&mut shares.numbers);
        crate::shrink_sparse(&mut shares.marked);
    }

    /// Runs [`Admission::sweep`] every [`SWEEP_EVERY`] until `stop`.
    pub async fn run_sweeps(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                () = stop.cancelled() => return,
            }
        }
    }
}

/// How often idle numbers are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Shares {
    /// Drops the numbers a new entry would stand for exactly: no call in progress and a
    /// full bucket.
    fn forget_idle_numbers(&mut self) {
        self.numbers
            .retain(|_, s| s.active > 0 || !s.bucket.is_full());
    }

    /// Gives `number` back the token a call refused after the number's check took.
    fn give_back(&mut self, number: &str) {
        if let Some(n) = self.numbers.get_mut(number) {
            n.bucket.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `number`'s whole burst (3, one call at a time) is admitted, and no more.
    fn assert_burst_whole(a: &Arc<Admission>, number: &str) {
        for i in 0..3 {
            drop(
                a.admit("a", Some(number))
                    .unwrap_or_else(|e| panic!("call {i}: {e:?}")),
            );
        }
        assert!(matches!(
            a.admit("a", Some(number)),
            Err(Refused::Number { .. })
        ));
    }

    /// The shares with the trunk's rate out of the way, to look at the number's alone.
    fn without_trunk_limit() -> Arc<Admission> {
        admission(|c| {
            c.invite_rate_per_second = 1e9;
            c.invite_burst = u32::MAX;
        })
    }

    fn admission(edit: impl FnOnce(&mut SipConfig)) -> Arc<Admission> {
        let mut cfg: SipConfig = toml::from_str(
            r#"
agent_target = "127.0.0.1:5080"
recordings_dir = "/tmp/unused"
invite_rate_per_second = 10.0
invite_burst = 10
trunks = [
  { name = "a", addresses = ["192.0.2.0/24"] },
  { name = "b", addresses = ["198.51.100.0/24"], max_calls = 2 },
]
[admission]
number_max_calls = 2
number_calls_per_minute = 6.0
number_burst = 3
priority_callers = ["13900000000"]
"#,
        )
        .expect("config");
        edit(&mut cfg);
        Arc::new(Admission::new(&cfg, HashSet::from(["vip".to_owned()])))
    }

    #[tokio::test(start_paused = true)]
    async fn one_number_gets_its_share_and_no_more_without_spending_the_trunks() {
        let a = admission(|_| {});
        let first = a.admit("a", Some("flood")).expect("first");
        let _second = a.admit("a", Some("flood")).expect("second");
        assert_eq!(
            a.admit("a", Some("flood")).unwrap_err(),
            Refused::Number { retry_secs: 5 },
            "two at once"
        );
        drop(first);
        let _third = a.admit("a", Some("flood")).expect("a place came free");
        // The burst of three is spent: the rate (6 a minute) decides.
        drop(_third);
        let refused = a.admit("a", Some("flood")).unwrap_err();
        assert_eq!(refused, Refused::Number { retry_secs: 10 });
        // The flood's refusals took nothing from the trunk: ten other callers in a row
        // (the trunk's burst, less the three the flood's number was admitted with).
        for i in 0..7 {
            let _ok = a
                .admit("a", Some(&format!("citizen-{i}")))
                .expect("another number");
        }
        assert!(matches!(
            a.admit("a", Some("citizen-x")),
            Err(Refused::TrunkRate { .. })
        ));
        tokio::time::advance(Duration::from_secs(10)).await;
        let _later = a.admit("a", Some("flood")).expect("ten seconds later");
    }

    #[tokio::test(start_paused = true)]
    async fn random_numbers_are_shed_by_the_trunk_rate_in_proportion() {
        let a = admission(|_| {});
        let mut admitted = 0;
        // 100 INVITEs a second for 5 s, each from a new number, against 10/s.
        for i in 0..500 {
            if a.admit("a", Some(&format!("random-{i}"))).is_ok() {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!((55..=62).contains(&admitted), "{admitted}: burst 10 + 10/s");
        // The other trunk's rate is its own.
        assert!(a.admit("b", Some("someone")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trunk_with_its_own_max_calls_is_held_to_it() {
        let a = admission(|_| {});
        let one = a.admit("b", Some("x")).expect("one");
        let _two = a.admit("b", Some("y")).expect("two");
        assert_eq!(a.admit("b", Some("z")).unwrap_err(), Refused::TrunkShare);
        assert!(a.admit("a", Some("z")).is_ok(), "the other trunk is not");
        drop(one);
        assert!(a.admit("b", Some("z")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn withheld_callers_have_the_trunks_share_only() {
        let a = admission(|_| {});
        let held: Vec<_> = (0..10)
            .map(|_| a.admit("a", None).expect("within the trunk's burst"))
            .collect();
        assert!(matches!(a.admit("a", None), Err(Refused::TrunkRate { .. })));
        drop(held);
    }

    /// Art. 15: the known-good list and a number marked by an urgent notice skip the
    /// shares and may take the reserved places; the mark ends.
    #[tokio::test(start_paused = true)]
    async fn art15_priority_lane_skips_the_shares_and_may_take_the_reserve() {
        let a = admission(|c| c.admission.priority_reserve = Some(1));
        assert_eq!(a.limit(4, false), 3);
        assert_eq!(a.limit(4, true), 4);
        let _held: Vec<_> = (0..2).map(|_| a.admit("a", Some("n")).unwrap()).collect();
        assert!(a.admit("a", Some("n")).is_err());
        let vip = a.admit("a", Some("vip")).expect("known-good list");
        assert!(vip.priority);
        a.mark_emergency("n");
        let callback = a.admit("a", Some("n")).expect("marked by an urgent notice");
        assert!(callback.priority);
        // The trunk's burst spent by others does not stop the lane either.
        for i in 0..20 {
            let _ = a.admit("a", Some(&format!("o{i}")));
        }
        assert!(a.admit("a", Some("vip")).is_ok());
        tokio::time::advance(Duration::from_secs(1801)).await;
        assert!(
            a.admit("a", Some("n")).is_err(),
            "the mark lasts emergency_priority_secs (default 30 minutes)"
        );
    }

    /// A citizen refused because the trunk's rate was spent (by a flood of random
    /// numbers) loses nothing of the number's own share.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_by_the_trunk_leaves_the_numbers_share_whole() {
        let a = admission(|_| {});
        for i in 0..10 {
            let _ = a
                .admit("a", Some(&format!("flood-{i}")))
                .expect("trunk burst");
        }
        for _ in 0..5 {
            assert!(matches!(
                a.admit("a", Some("citizen")),
                Err(Refused::TrunkRate { .. })
            ));
        }
        // One second later the trunk has 10 tokens again; the citizen's burst (3) is
        // whole, though it was refused five times.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_burst_whole(&a, "citizen");
    }

    /// A call the gateway's own limit refuses after the shares admitted it gives its
    /// number's token back.
    #[tokio::test(start_paused = true)]
    async fn a_call_refused_after_admission_gives_the_numbers_token_back() {
        let a = without_trunk_limit();
        for _ in 0..10 {
            a.admit("a", Some("citizen")).expect("admitted").refused();
        }
        // Ten refusals later the number's burst (3) is whole.
        assert_burst_whole(&a, "citizen");
    }

    /// After a flood of random numbers, the sweep forgets every number whose share is
    /// whole again and keeps those that still limit something.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_forgets_numbers_whose_share_is_whole_again() {
        let a = without_trunk_limit();
        for i in 0..1000 {
            let _ = a.admit("a", Some(&format!("r{i}")));
        }
        let held = a.admit("a", Some("in-call")).unwrap();
        for _ in 0..2 {
            drop(a.admit("a", Some("busy")).unwrap());
        }
        a.sweep();
        assert_eq!(a.tracked_numbers(), 1002, "nothing refilled yet");
        // A minute refills the random numbers' single token; "busy" took two of three
        // at 6 a minute: 20 s later it is whole too, but "in-call" has a call.
        tokio::time::advance(Duration::from_secs(11)).await;
        a.sweep();
        assert_eq!(
            a.tracked_numbers(),
            2,
            "busy is not yet whole, in-call is busy"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        a.sweep();
        assert_eq!(a.tracked_numbers(), 1, "the number with a call stays");
        drop(held);
        a.sweep();
        assert_eq!(a.tracked_numbers(), 0, "its call ended, its share whole");
        // The same number later starts from a whole share.
        for _ in 0..3 {
            drop(a.admit("a", Some("busy")).unwrap());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_number_table_is_bounded() {
        let a = without_trunk_limit();
        let keep = a.admit("a", Some("in-call")).unwrap();
        for i in 0..MAX_NUMBERS + 10 {
            let _ = a.admit("a", Some(&format!("r{i}")));
        }
        assert!(
            a.tracked_numbers() <= MAX_NUMBERS,
            "{}",
            a.tracked_numbers()
        );
        // A number with a call in progress is never forgotten: its second call is its
        // last place (number_max_calls = 2).
        let second = a
            .admit("a", Some("in-call"))
            .expect("second call of the number");
        assert_eq!(
            a.admit("a", Some("in-call")).unwrap_err(),
            Refused::Number { retry_secs: 5 }
        );
        drop((keep, second));
    }
}
