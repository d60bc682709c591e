//! Short citizen utterances through real calls (issue 10): each utterance of the short
//! set (tests/fixtures/speech/short: one-sentence requests and emergencies, four Kokoro
//! voices, 8 kHz mu-law) is one call, played by sipp through the real gateway binary
//! with the real whisper model and the gateway's default decoding; what is checked is
//! the ticket draft on Kafka.
//!
//! - No segment repeats itself (whisper's loops on short utterances).
//! - The CER over the held-back quarter (never used to tune anything) and over the
//!   tuning part. Issue 10 asks for at most 8% on the held-back part; whisper base with
//!   the chosen decoding reached 0.131 to 0.150 there over five runs (0.079 to 0.085 on
//!   the tuning part, 2026-11-30; see `HELD_CER_BOUND` for why it varies):
//!   the errors left are whisper base choosing a same-sounding common word (咨询 as 自行,
//!   公积金 as 攻击金, 拒载 as 具在), which neither decoding settings nor the prompt moved
//!   (docs/benchmarks.md). So the bound below is a guard against regressions at the
//!   measured level, not the target; the target needs a stronger model than the
//!   registries carry, and stays open in the issue.
//! - Every emergency utterance's draft is urgent, with its kind of Art. 15 emergency.
//! - The district is right wherever one is said (directly or through a town).
//! - No ordinary request is made urgent, and the request kind (Art. 8) is right for
//!   nearly all.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::sip::*;
use e2e::speech::{Short, citizen_text, pooled_cer, repeats_itself, short_set};
use e2e::*;
use serde_json::Value;

/// Calls at once. Two utterances at a time keep the one worker busy without deferring
/// anything (queue 4); the degraded mode, which would decode the waiting one with a
/// shorter window, is off here (`busy_window_ms = 30000`), so that what is scored is
/// the gateway's own decoding. docs/benchmarks.md measures the degraded mode.
const AT_ONCE: usize = 2;

/// Regression bounds on the pooled CER, above the spread measured over runs of one
/// build on this machine. The first bounds (0.15, 0.09) sat just above one run (0.136,
/// 0.079) on the belief that greedy decoding repeats itself; CI then measured 0.150+ on
/// the held-back part. Two causes, both measured (2026-11-30):
/// - the VAD's frame grid followed the wall-clock instant the first RTP packet arrived,
///   so whisper heard utterances shifted by up to 20 ms from run to run. Fixed
///   (`asr::vad::Vad::seek`): the cut samples are now the same in every run (their
///   checksums, logged at debug, matched over all 52 calls of two runs);
/// - whisper.cpp with two threads decodes the same samples differently when the CPU is
///   contended (`asr-determinism` on the held-back cuts, 3 rounds with both cores busy:
///   one utterance of 13 came out two ways; idle, or with one thread under the same
///   load, none did). The gateway runs it beside
///   sipp and the relay, so the text varies by a few characters a run.
///
/// Over five runs: held back 0.136, 0.150+, 0.136, 0.131, 0.150, 0.146; tuning 0.079 to
/// 0.085. A held-back character is about 0.005: the bounds leave three characters above
/// the worst run held back, and about five on the tuning part. Issue 10's target for the
/// held-back part is 0.08.
const HELD_CER_BOUND: f64 = 0.165;
const TUNE_CER_BOUND: f64 = 0.095;

/// The caller number of the `i`-th utterance (one citizen per utterance).
fn caller(i: usize) -> String {
    format!("1390013{:04}", 1000 + i)
}

/// The written text, routed: the set's labels are what the rules say of the text as
/// written, so that a failure through calls is the recogniser's (or the matcher's
/// tolerance), not a wrong label.
#[test]
fn the_sets_labels_are_what_the_rules_say_of_the_written_text() -> Result<()> {
    let prefiller = routing::Prefiller::shared();
    for s in short_set()? {
        let draft = prefiller.draft_for_call(
            contract::TicketRef("label".into()),
            String::new(),
            Vec::new(),
            vec![citizen_segment(&s.text)],
            chrono::Utc::now(),
        );
        assert_eq!(
            draft.emergency.map(|e| e.kind),
            s.emergency,
            "{}: {}",
            s.id,
            s.text
        );
        assert_eq!(
            draft.location.and_then(|l| l.district),
            s.district,
            "{}: {}",
            s.id,
            s.text
        );
        assert_eq!(
            serde_json::to_value(draft.kind)?.as_str(),
            Some(s.kind.as_str()),
            "{}: {}",
            s.id,
            s.text
        );
    }
    Ok(())
}

fn citizen_segment(text: &str) -> contract::TranscriptSegment {
    contract::TranscriptSegment {
        call_id: uuid::Uuid::nil(),
        speaker: contract::Speaker::Citizen,
        start_ms: 0,
        end_ms: 0,
        text: text.into(),
        confidence: 0.9,
        deferred: false,
    }
}

#[test]
fn short_utterances_through_calls_are_heard_once_and_routed() -> Result<()> {
    let set = short_set()?;
    let (broker, gw, agent_port) = start_gateway(
        |s| {
            s.asr = true;
            s.asr_busy_window_ms = Some(30_000);
        },
        "info",
    )?;
    assert!(
        !gw.log().contains("SPEECH RECOGNITION IS OFF"),
        "the model loads (deploy/fetch-model.sh): {}",
        gw.log()
    );
    let calls = set.len().to_string();
    let agent = Sipp::agent(
        "agent-listens.xml",
        agent_port,
        &["-m", &calls, "-timeout", "900s"],
    )?;
    for (batch, chunk) in set.chunks(AT_ONCE).enumerate() {
        let citizens = chunk
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let secs = e2e::speech::read_8k(&s.wav())?.len() as u64 / 8;
                // On the line until a second after the utterance.
                let hold = (secs + 1000).to_string();
                Sipp::citizen_saying(
                    &s.wav(),
                    gw.sip_port,
                    &caller(batch * AT_ONCE + j),
                    &["-d", &hold],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        for c in citizens {
            c.expect_ok(Duration::from_secs(60))?;
        }
    }
    agent.expect_ok(Duration::from_secs(60))?;

    // One draft per call, matched to its utterance by the caller's citizen key.
    let keyer = contract::CitizenKeyer::new(CITIZEN_SECRET.as_bytes());
    let by_key: HashMap<String, &Short> = set
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = keyer.phone(&caller(i)).context("a phone number")?.key;
            Ok((key, s))
        })
        .collect::<Result<_>>()?;
    let drafts = consume(&broker.bootstrap(), DRAFTS, Duration::from_secs(300), |r| {
        r.iter().filter(|r| r.value["channel"] == "phone").count() >= set.len()
    })?;
    let mut heard: HashMap<&str, (String, &Value)> = HashMap::new();
    for r in drafts.iter().filter(|r| r.value["channel"] == "phone") {
        let key = r.value["citizen_key"].as_str().unwrap_or_default();
        let s = by_key.get(key).context("a draft of no call of the set")?;
        heard.insert(s.id.as_str(), (citizen_text(&r.value), &r.value));
    }
    assert_eq!(heard.len(), set.len(), "one draft per call");

    let mut failures = Vec::new();
    let mut kinds_right = 0;
    for s in &set {
        let (text, draft) = &heard[s.id.as_str()];
        let cer = asr::score::cer(&s.text, text);
        println!(
            "{}\t{}\t{cer:.3}\t{text}\t| {}",
            s.id,
            if s.held { "held" } else { "tune" },
            s.text
        );
        for seg in draft["transcript"].as_array().into_iter().flatten() {
            let t = seg["text"].as_str().unwrap_or_default();
            if repeats_itself(t) {
                failures.push(format!("{}: a segment repeats itself: {t}", s.id));
            }
        }
        let emergency = draft["emergency"]["kind"].as_str();
        match &s.emergency {
            Some(want) => {
                if draft["urgency"] != "emergency" || emergency != Some(want.as_str()) {
                    failures.push(format!(
                        "{}: Art. 15 {want} heard as {:?} (urgency {}): {text}",
                        s.id, emergency, draft["urgency"]
                    ));
                }
            }
            None => {
                if draft["urgency"] != "normal" {
                    failures.push(format!("{}: made urgent by {emergency:?}: {text}", s.id));
                }
            }
        }
        if let Some(want) = &s.district
            && draft["location"]["district"].as_str() != Some(want.as_str())
        {
            failures.push(format!(
                "{}: district {want} heard as {}: {text}",
                s.id, draft["location"]["district"]
            ));
        }
        kinds_right += usize::from(draft["kind"].as_str() == Some(s.kind.as_str()));
    }
    let cer = |held: bool| {
        pooled_cer(
            set.iter()
                .filter(|s| s.held == held)
                .map(|s| (s.text.as_str(), heard[s.id.as_str()].0.as_str())),
        )
    };
    let (held, tune) = (cer(true), cer(false));
    println!(
        "pooled CER: held back {held:.3}, tuning part {tune:.3}; kind right {kinds_right} of {}",
        set.len()
    );
    // Measured 0.131 to 0.150 held back, 0.079 to 0.085 tuning over five runs (the
    // issue's target, 0.08, is not met: see the module's doc).
    if held > HELD_CER_BOUND || tune > TUNE_CER_BOUND {
        failures.push(format!(
            "CER {held:.3} held back (bound {HELD_CER_BOUND}), {tune:.3} tuning part (bound {TUNE_CER_BOUND})"
        ));
    }
    // Art. 8 kinds come from cue words the recogniser must hear; one in ten may be
    // misheard into another kind or none.
    if kinds_right * 10 < set.len() * 9 {
        failures.push(format!("kind right for {kinds_right} of {}", set.len()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
