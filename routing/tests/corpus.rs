//! Art. 15 recognition scored on the labelled corpus (`data/emergency-corpus`, issue 21):
//! the tuning parts (rules were changed while looking at them), the held-back part
//! (written by authors who never saw the rules, not read while they were written) and
//! whisper's transcripts of the speech fixtures. The figures are printed; the bounds
//! below are what was measured when the held-back part was scored (docs/routing.md), so
//! a change that loses ground fails here.

use std::path::Path;

use routing::{Classifier, Medium};

struct Row {
    id: String,
    targets: Vec<String>,
    text: String,
}

fn rows(file: &str) -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/emergency-corpus")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id\ttargets\tkinds\ttext\tnote"),
        "{file}: header"
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 5, "{file}: {l}");
            let mut targets: Vec<String> = match cols[1] {
                "-" => Vec::new(),
                t => t.split(',').map(str::to_owned).collect(),
            };
            targets.sort();
            Row {
                id: cols[0].to_owned(),
                targets,
                text: cols[3].to_owned(),
            }
        })
        .collect()
}

/// Recall (every target found), exact (no other target either), false notices.
#[derive(Debug, Default, Clone, Copy)]
struct Score {
    emergencies: usize,
    covered: usize,
    exact: usize,
    ordinary: usize,
    false_notices: usize,
}

impl Score {
    fn recall(&self) -> f64 {
        self.covered as f64 / self.emergencies.max(1) as f64
    }
    fn false_rate(&self) -> f64 {
        self.false_notices as f64 / self.ordinary.max(1) as f64
    }
}

fn score(files: &[&str], medium: Medium) -> (Score, Vec<String>) {
    let c = Classifier::builtin();
    let mut s = Score::default();
    let mut wrong = Vec::new();
    for file in files {
        for r in rows(file) {
            let mut got: Vec<String> = c
                .read_emergencies(&r.text, medium)
                .findings
                .into_iter()
                .map(|f| f.target)
                .collect();
            got.sort();
            if r.targets.is_empty() {
                s.ordinary += 1;
                if !got.is_empty() {
                    s.false_notices += 1;
                    wrong.push(format!("{}: false {got:?}", r.id));
                }
            } else {
                s.emergencies += 1;
                if r.targets.iter().all(|t| got.contains(t)) {
                    s.covered += 1;
                } else {
                    wrong.push(format!("{}: want {:?} got {got:?}", r.id, r.targets));
                }
                s.exact += usize::from(got == r.targets);
            }
        }
    }
    (s, wrong)
}

fn report(name: &str, s: &Score) {
    println!(
        "{name}: recall {}/{} ({:.1}%), exact {}/{}, false notices {}/{} ({:.1}%)",
        s.covered,
        s.emergencies,
        100.0 * s.recall(),
        s.exact,
        s.emergencies,
        s.false_notices,
        s.ordinary,
        100.0 * s.false_rate()
    );
}

#[test]
fn the_corpus_is_large_and_half_emergencies() {
    let all: Vec<Row> = [
        "tune.tsv",
        "tune2.tsv",
        "tune3.tsv",
        "tune4.tsv",
        "tune5.tsv",
        "held.tsv",
    ]
    .iter()
    .flat_map(|f| rows(f))
    .collect();
    assert!(all.len() >= 600, "{}", all.len());
    let emergencies = all.iter().filter(|r| !r.targets.is_empty()).count();
    assert_eq!(emergencies * 2, all.len(), "half emergencies");
    let held = rows("held.tsv").len();
    assert!(
        held * 4 >= all.len(),
        "a quarter held back: {held} of {}",
        all.len()
    );
    let mut ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "unique ids");
}

#[test]
fn art15_recognition_on_the_tuning_parts() {
    let (s, wrong) = score(
        &[
            "tune.tsv",
            "tune2.tsv",
            "tune3.tsv",
            "tune4.tsv",
            "tune5.tsv",
        ],
        Medium::Typed,
    );
    report("tuning parts", &s);
    assert!(s.recall() >= 0.99, "{wrong:#?}");
    assert!(s.false_rate() <= 0.01, "{wrong:#?}");
}

#[test]
fn art15_recognition_on_the_held_back_part() {
    let (s, wrong) = score(&["held.tsv"], Medium::Typed);
    report("held back", &s);
    assert!(s.covered >= HELD_COVERED, "{wrong:#?}");
    assert!(s.false_notices <= HELD_FALSE_NOTICES, "{wrong:#?}");
}

#[test]
fn art15_every_emergency_of_the_speech_fixtures_transcripts_is_recognised() {
    let (s, wrong) = score(&["speech.tsv"], Medium::Speech);
    report("speech fixtures' transcripts", &s);
    assert!(s.emergencies >= 25, "{s:?}");
    assert_eq!(s.covered, s.emergencies, "{wrong:#?}");
    assert_eq!(s.false_notices, 0, "{wrong:#?}");
}

/// Measured when the held-back part was scored, once, at commit 92d1fe7 (docs/routing.md):
/// 184 of 215 emergencies with every target (85.6%; issue 21 asks 99%), 14 of 215
/// ordinary texts with a notice (6.5%; issue 21 asks at most 1%). A floor against
/// losing ground, not the target.
const HELD_COVERED: usize = 184;
const HELD_FALSE_NOTICES: usize = 14;
