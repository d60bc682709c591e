//! What Art. 15 recognition costs per text (issue 21 keeps it under 100 µs for a
//! 44-character text), typed and as a transcript, beside the sound-cue matching the
//! classifier used alone before issue 21 (the baseline, in the same run):
//! `cargo run --release -p routing --example emergency-cost`.
//! Instruction counts repeat where seconds do not:
//! `valgrind --tool=callgrind target/release/examples/emergency-cost --once`.

use std::hint::black_box;
use std::time::Instant;

use routing::Medium;

fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let classifier = routing::Classifier::builtin();
    // An ordinary complaint (nothing found: every rule is tried), and an emergency.
    let texts = [
        "你好，我要投诉，香洲区凤凰路有个工地每天晚上施工到十二点，噪音太大了，吵得我们睡不着觉。",
        "有个男的在我家门口砸门，手里拿着刀说要杀了我，我很害怕，快来人啊，在香洲区凤凰路。",
    ];
    let n: u32 = if once { 1 } else { 2000 };
    for text in texts {
        for copies in [1, 5] {
            let text = text.repeat(copies);
            let time = |f: &dyn Fn()| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed() / n
            };
            let typed = time(&|| {
                black_box(classifier.read_emergencies(black_box(&text), Medium::Typed));
            });
            let speech = time(&|| {
                black_box(classifier.read_emergencies(black_box(&text), Medium::Speech));
            });
            let sound_only = time(&|| {
                black_box(classifier.emergency_rules().detect(black_box(&text)));
            });
            println!(
                "{} characters: typed {typed:?}, transcript {speech:?}; sound cues alone (before issue 21) {sound_only:?}",
                text.chars().count()
            );
        }
    }
}
