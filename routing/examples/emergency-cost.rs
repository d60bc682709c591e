//! What finding an Art. 15 cue by sound costs per text, against the plain substring
//! search the classifier used before (the baseline, in the same run):
//! `cargo run --release -p routing --example emergency-cost`.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let rules = routing::Classifier::builtin();
    let rules = rules.emergency_rules();
    // An ordinary complaint: no cue, so both the same-sound and the near-sound passes run.
    let one =
        "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了，吵得我们睡不着觉。";
    let cues: Vec<&str> = routing::DEFAULT_CUES
        .lines()
        .filter(|l| l.starts_with("cues"))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .collect();
    for copies in [1, 5] {
        let text = one.repeat(copies);
        let n = 2000u32;
        let t = Instant::now();
        for _ in 0..n {
            black_box(rules.detect(black_box(&text)));
        }
        let by_sound = t.elapsed() / n;
        let t = Instant::now();
        for _ in 0..n {
            black_box(cues.iter().any(|c| black_box(&text).contains(c)));
        }
        let substring = t.elapsed() / n;
        println!(
            "{} characters: by sound {by_sound:?}, substring {substring:?} ({} cues), ratio {:.0}",
            text.chars().count(),
            cues.len(),
            by_sound.as_secs_f64() / substring.as_secs_f64().max(1e-12)
        );
    }
}
