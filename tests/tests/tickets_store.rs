//! The ticket service's store against a real PostgreSQL, with an injected clock: the
//! clocks of Arts. 10 and 22 at the instants a test chooses, two instances' worth of
//! stores on one database, and the once-only application of records.

use std::sync::Arc;

use contract::{Event, TicketKind};
use e2e::postgres::Postgres;
use e2e::tickets::{bj, draft};
use tickets::calendar::Calendar;
use tickets::repeat::RepeatParams;
use tickets::rules::{Command, Role};
use tickets::store::{Incoming, OutTopics, Store};
use tickets::units::Units;

const GROUP: &str = "ticket-service";
const CONTACTS: &str = "hotline.contacts.v1";
const DRAFTS: &str = "hotline.ticket-drafts.v1";

async fn store(pg: &Postgres, calendar: Calendar) -> Store {
    Store::connect(
        pg.url().parse().expect("url"),
        4,
        Arc::new(calendar),
        Arc::new(Units::builtin()),
        Arc::new(RepeatParams::builtin()),
        OutTopics {
            status: "status".into(),
            dead_letter: "dead".into(),
            ..OutTopics::default()
        },
        "/tickets/test".into(),
    )
    .await
    .expect("store")
}

fn record(event: Event, offset: i64) -> Incoming {
    let r = event.to_record("/gateway/test/sms").expect("record");
    Incoming {
        topic: DRAFTS.into(),
        partition: 0,
        offset,
        key: Some(r.key.into_bytes()),
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
        payload: Some(r.payload),
    }
}

fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql(sql).expect("psql").parse().expect("a count")
}

#[tokio::test]
async fn art10_cards_are_shown_once_however_many_instances_sweep() {
    let pg = Postgres::start().expect("postgres");
    let (a, b) = (
        store(&pg, Calendar::builtin()).await,
        store(&pg, Calendar::builtin()).await,
    );
    let d = draft(
        "k-card",
        "海澄路井盖丢失",
        TicketKind::Complaint,
        bj("2026-11-30T10:00:00"),
    );
    let r = d.ticket_ref.to_string();
    a.apply_batch(GROUP, CONTACTS, DRAFTS, &[record(d.into(), 0)], false)
        .await
        .expect("applied");
    a.command(
        &r,
        &Role::Agent("a1".into()),
        &Command::Dispatch {
            lead: "xiangzhou".into(),
            co_units: vec![],
        },
        bj("2026-11-30T11:00:00"),
    )
    .await
    .expect("dispatched");
    // Due Monday 14 December (10 working days from Tuesday 1 December).
    assert_eq!(
        a.ticket(&r)
            .await
            .expect("read")
            .expect("ticket")
            .handling_due,
        Some("2026-12-14".parse().expect("date"))
    );
    assert_eq!(
        a.sweep_cards(bj("2026-12-11T09:00:00"))
            .await
            .expect("sweep"),
        0
    );
    // The due day: both instances sweep at once; one yellow card.
    let (x, y) = tokio::join!(
        a.sweep_cards(bj("2026-12-14T00:00:05")),
        b.sweep_cards(bj("2026-12-14T00:00:05"))
    );
    assert_eq!(x.expect("sweep a") + y.expect("sweep b"), 1);
    assert_eq!(
        a.sweep_cards(bj("2026-12-14T18:00:00"))
            .await
            .expect("again"),
        0
    );
    // Overdue: one red card.
    let (x, y) = tokio::join!(
        a.sweep_cards(bj("2026-12-15T00:00:05")),
        b.sweep_cards(bj("2026-12-15T00:00:05"))
    );
    assert_eq!(x.expect("sweep a") + y.expect("sweep b"), 1);
    let history = a.history(&r).await.expect("history");
    let actions: Vec<&str> = history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        actions,
        ["registered", "dispatched", "yellow_card", "red_card"]
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM outbox WHERE topic = 'status'"),
        4,
        "one status event per transition"
    );
    assert_eq!(
        a.ticket(&r).await.expect("read").expect("ticket").card,
        "red"
    );
}

#[tokio::test]
async fn art22_provisional_deadlines_are_recounted_when_the_year_is_added() {
    let pg = Postgres::start().expect("postgres");
    let a = store(&pg, Calendar::builtin()).await;
    let d = draft(
        "k-2027",
        "新年前的投诉",
        TicketKind::Complaint,
        bj("2026-12-30T10:00:00"),
    );
    let r = d.ticket_ref.to_string();
    a.apply_batch(GROUP, CONTACTS, DRAFTS, &[record(d.into(), 0)], false)
        .await
        .expect("applied");
    a.command(
        &r,
        &Role::Agent("a1".into()),
        &Command::Dispatch {
            lead: "doumen".into(),
            co_units: vec![],
        },
        bj("2026-12-30T11:00:00"),
    )
    .await
    .expect("dispatched");
    let t = a.ticket(&r).await.expect("read").expect("ticket");
    // 31 Dec, then 2027 counted as plain weekdays: 1, 4-8, 11-13 January.
    assert_eq!(t.handling_due, Some("2027-01-13".parse().expect("date")));
    assert!(t.due_provisional, "2027's notice is not in the data yet");
    // Nothing to recount while 2027 is still missing.
    assert_eq!(
        a.recompute_provisional(bj("2026-12-30T12:00:00"))
            .await
            .expect("recount"),
        0
    );
    // The year's notice arrives (New Year rest 1-3 January; a make-up Sunday the 4th is
    // not made up here): a service started with it recounts.
    let y2027 = "year = 2027\nsource = \"test notice\"\n[[holiday]]\nname = \"元旦\"\nrest = [\"2027-01-01\", \"2027-01-03\"]\nwork = []\n";
    let with_2027 =
        Calendar::from_toml(&[tickets::calendar::SHIPPED_YEARS[0], y2027]).expect("calendar");
    let b = store(&pg, with_2027).await;
    assert_eq!(
        b.recompute_provisional(bj("2026-12-31T09:00:00"))
            .await
            .expect("recount"),
        1
    );
    let t = b.ticket(&r).await.expect("read").expect("ticket");
    // 31 Dec; 1 Jan now rests: 4-8, 11-14 January.
    assert_eq!(t.handling_due, Some("2027-01-14".parse().expect("date")));
    assert!(!t.due_provisional);
    let actions: Vec<String> = b
        .history(&r)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(
        actions.last().map(String::as_str),
        Some("deadline_recomputed")
    );
}

#[tokio::test]
async fn every_record_counts_once_when_two_instances_apply_the_same_partition() {
    let pg = Postgres::start().expect("postgres");
    let (a, b) = (
        store(&pg, Calendar::builtin()).await,
        store(&pg, Calendar::builtin()).await,
    );
    let drafts: Vec<_> = (0..50)
        .map(|i| {
            draft(
                &format!("k-{i}"),
                &format!("第{i}号诉求"),
                TicketKind::Help,
                bj("2026-11-30T10:00:00"),
            )
        })
        .collect();
    let batch: Vec<Incoming> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| record(d.clone().into(), i as i64))
        .collect();
    // Both instances read the partition for a moment (ownership moving): both apply the
    // same records at once.
    let (x, y) = tokio::join!(
        a.apply_batch(GROUP, CONTACTS, DRAFTS, &batch, false),
        b.apply_batch(GROUP, CONTACTS, DRAFTS, &batch, false)
    );
    let (x, y) = (x.expect("a"), y.expect("b"));
    assert_eq!(x.applied + y.applied, 50, "{x:?} {y:?}");
    assert_eq!(x.behind + y.behind, 50, "the second found the offset moved");
    // The gateway's outbox delivering one event again under a new offset: dropped by
    // its ce_id.
    let again = a
        .apply_batch(
            GROUP,
            CONTACTS,
            DRAFTS,
            &[record(drafts[7].clone().into(), 50)],
            false,
        )
        .await
        .expect("redelivery");
    assert_eq!((again.applied, again.duplicates), (0, 1));
    // A stale reader handing over records past the committed offset (51): nothing is
    // applied, the offset does not move over the gap, the reader is told.
    let late = draft(
        "k-late",
        "晚到的",
        TicketKind::Help,
        bj("2026-11-30T10:00:00"),
    );
    let stale = a
        .apply_batch(
            GROUP,
            CONTACTS,
            DRAFTS,
            &[record(late.clone().into(), 60)],
            false,
        )
        .await
        .expect("stale read");
    assert!(stale.gap && stale.applied == 0, "{stale:?}");
    // Just sought to the committed offset, the log's own jump (compaction) is trusted.
    let sought = a
        .apply_batch(GROUP, CONTACTS, DRAFTS, &[record(late.into(), 60)], true)
        .await
        .expect("after a seek");
    assert!(!sought.gap && sought.applied == 1, "{sought:?}");
    assert_eq!(count(&pg, "SELECT count(*) FROM tickets"), 51);
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM ticket_history WHERE action = 'registered'"
        ),
        51
    );
    assert_eq!(
        count(
            &pg,
            "SELECT next_offset FROM consumer_offsets WHERE topic = 'hotline.ticket-drafts.v1' AND partition = 0"
        ),
        61
    );
}
