//! Scores the Art. 15 recogniser on a corpus file (routing/data/emergency-corpus):
//! `cargo run --release -p routing --example recognition-score -- FILE [--errors]`.

use routing::recognize::Medium;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("a corpus file");
    let errors = args.iter().any(|a| a == "--errors");
    let speech = args.iter().any(|a| a == "--speech");
    let text = std::fs::read_to_string(path).expect("readable corpus");
    // As the gateway reads: the shipped data with the place names (Prefiller::shared).
    let classifier = routing::Classifier::builtin();
    let r = classifier.recognizer();
    let (mut em, mut em_ok, mut em_cover, mut ord, mut ord_false) = (0, 0, 0, 0, 0);
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 {
            continue;
        }
        let (id, targets, text) = (cols[0], cols[1], cols[3]);
        let medium = if speech {
            Medium::Speech
        } else {
            Medium::Typed
        };
        let reading = classifier.read_emergencies(text, medium);
        let mut got: Vec<&str> = reading.findings.iter().map(|f| f.target.as_str()).collect();
        got.sort();
        let mut want: Vec<&str> = if targets == "-" {
            vec![]
        } else {
            targets.split(',').collect()
        };
        want.sort();
        let ok = got == want;
        if want.is_empty() {
            ord += 1;
            if !got.is_empty() {
                ord_false += 1;
            }
        } else {
            em += 1;
            if ok {
                em_ok += 1;
            }
            if want.iter().all(|w| got.contains(w)) {
                em_cover += 1;
            }
        }
        if errors && !ok {
            println!("{id}\twant {want:?} got {got:?}\t{text}");
            println!("    {}", r.words(text).join("/"));
            for f in &reading.findings {
                println!("    + {} {:?}", f.target, f.reasons);
            }
            for s in &reading.set_aside {
                println!("    - {} [{}]", s.reason, s.because);
            }
        }
    }
    println!(
        "{path}: emergencies {em_ok}/{em} exact ({:.1}%), {em_cover}/{em} every target ({:.1}%); ordinary {ord_false}/{ord} raised a notice ({:.1}%)",
        100.0 * em_ok as f64 / em.max(1) as f64,
        100.0 * em_cover as f64 / em.max(1) as f64,
        100.0 * ord_false as f64 / ord.max(1) as f64
    );
}
