//! A call over IPv6 (issue 14): a sipp trunk on `::1` calls the gateway's IPv6 listener
//! with a `c=IN IP6` offer, and the call is bridged to an agent side on IPv4
//! (127.0.0.1), relayed and recorded like one over IPv4 (tests/tests/sip.rs
//! `basic_call_records_both_directions_and_emits_contacts`). Each leg's SIP and media are
//! in its peer's family: the citizen's 200 names the gateway as `[::1]` with
//! `c=IN IP6 ::1`, the agent's INVITE as 127.0.0.1 with `c=IN IP4 127.0.0.1`.
//!
//! Needs IPv6 on loopback (`ip -6 addr show lo` lists `::1`); without it the test says so
//! and passes without a call, since there is nothing it could check.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use e2e::sip::*;
use e2e::*;

const SIPP_WAIT: Duration = Duration::from_secs(60);

fn loopback_has_ipv6() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// The SIP messages in a sipp message trace that start with `start`.
fn messages_starting<'a>(trace: &'a str, start: &str) -> Vec<&'a str> {
    trace
        .split("\n\n")
        .filter(|m| m.lines().any(|l| l.trim_start().starts_with(start)))
        .collect()
}

#[test]
fn a_call_from_an_ipv6_trunk_is_bridged_relayed_and_recorded() -> Result<()> {
    if !loopback_has_ipv6() {
        eprintln!("no IPv6 on loopback (::1): nothing to test here");
        return Ok(());
    }
    let (broker, gw, agent_port) = start_gateway(|o| o.ipv6 = true, "info,channel_sip=debug")?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = Sipp::citizen_v6(
        "citizen-call.xml",
        gw.sip_port,
        "+86 138 0013 8000",
        &["-d", "3000"],
    )?;
    let citizen = citizen.expect_ok(SIPP_WAIT)?;
    let agent = agent.expect_ok(SIPP_WAIT)?;

    // The citizen's leg is IPv6 throughout: the gateway's 200 has its Contact in brackets
    // (RFC 3261 §25.1) and its SDP answer in IP6 (RFC 8866 §5.7)...
    let ok = messages_starting(&citizen.messages, "SIP/2.0 200");
    let Some(answer) = ok.iter().find(|m| m.contains("application/sdp")) else {
        bail!("no 200 with SDP to the citizen: {}", citizen.messages);
    };
    assert!(answer.contains("@[::1]:"), "Contact towards IPv6: {answer}");
    assert!(answer.contains("c=IN IP6 ::1"), "IPv6 media: {answer}");
    // ...while the agent side, on IPv4, sees an IPv4 gateway.
    let invites = messages_starting(&agent.messages, "INVITE ");
    let Some(invite) = invites.first() else {
        bail!("no INVITE at the agent side: {}", agent.messages);
    };
    assert!(
        invite.contains("c=IN IP4 127.0.0.1"),
        "IPv4 media: {invite}"
    );
    assert!(
        !invite.contains("[::1]"),
        "nothing IPv6 to the agent: {invite}"
    );

    let contacts = call_contacts(&broker, 3)?;
    let phases: Vec<&str> = contacts
        .iter()
        .map(|c| c["content"]["phase"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(phases, ["offered", "answered", "ended"], "{contacts:#?}");
    for c in &contacts {
        assert_eq!(c["content"]["trunk"], "carrier-v6", "the trunk of ::1/128");
        assert_eq!(c["citizen"]["value"], "13800138000");
    }
    assert_eq!(contacts[1]["content"]["agent"], "agent1001");
    let end = &contacts[2]["content"];
    assert_eq!(end["outcome"], "talked");
    assert_eq!(end["ended_by"], "citizen");
    let talk = end["talk_ms"].as_u64().unwrap_or_default();
    assert!((2500..=4500).contains(&talk), "talk_ms {talk}");

    // Relayed and recorded both ways: the citizen's 440 Hz, which came over IPv6, on the
    // left; the agent's 880 Hz, over IPv4, on the right.
    let name = end["recording"].as_str().unwrap_or_default();
    let rec = Recording::open(&gw.recordings_dir().join(name))?;
    assert!((2.5..=4.5).contains(&rec.seconds()), "{} s", rec.seconds());
    rec.assert_tones_both_ways(3000.0);
    assert!(
        !gw.log().contains("13800138000"),
        "caller numbers never reach the log"
    );
    Ok(())
}

/// `scenario` (in tests/sipp) without its RTP stream, written to `dir`: for a side that
/// only echoes what reaches it (sipp `-rtp_echo`).
fn silent_copy(scenario: &str, dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(sipp_dir().join(scenario))?;
    if !text.contains("rtp_stream=") {
        bail!("{scenario} no longer plays a stream");
    }
    let silent: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("rtp_stream="))
        .collect();
    let path = dir.join(scenario);
    std::fs::write(&path, silent.join("\n"))?;
    Ok(path.display().to_string())
}

/// The tones of the middle half of a call's recording, left (what came from the
/// citizen) and right (from the agent side).
fn recorded_tones(gw: &Gateway, broker: &Broker, calls: usize, caller: &str) -> Result<(f64, f64)> {
    let contacts = call_contacts(broker, calls * 3)?;
    let Some(end) = contacts
        .iter()
        .find(|c| c["content"]["phase"] == "ended" && c["citizen"]["value"] == caller)
    else {
        bail!("no ended contact: {contacts:#?}");
    };
    assert_eq!(end["content"]["trunk"], "carrier-v6");
    let name = end["content"]["recording"].as_str().unwrap_or_default();
    let rec = Recording::open(&gw.recordings_dir().join(name))?;
    let (left, right) = rec.middle();
    assert!(
        rms(&left) > 1000.0 && rms(&right) > 1000.0,
        "both channels carry signal: {} {}",
        rms(&left),
        rms(&right)
    );
    Ok((tone_hz(&left, 8000), tone_hz(&right, 8000)))
}

/// The relay forwards each way between the IPv6 and the IPv4 leg, not only records:
/// a side that plays nothing and echoes what reaches it (sipp `-rtp_echo`) sends the
/// other side's tone back, so its channel of the recording carries the other's tone.
#[test]
fn rtp_is_relayed_both_ways_between_the_ipv6_and_the_ipv4_leg() -> Result<()> {
    if !loopback_has_ipv6() {
        eprintln!("no IPv6 on loopback (::1): nothing to test here");
        return Ok(());
    }
    let (broker, gw, agent_port) = start_gateway(|o| o.ipv6 = true, "info,channel_sip=debug")?;
    let dir = tempfile::tempdir()?;

    // IPv6 citizen to IPv4 agent: the agent echoes the citizen's 440 Hz.
    let echo_agent = silent_copy("agent-answer.xml", dir.path())?;
    let agent = Sipp::agent(&echo_agent, agent_port, &["-rtp_echo"])?;
    let citizen = Sipp::citizen_v6(
        "citizen-call.xml",
        gw.sip_port,
        "13800138001",
        &["-d", "3000"],
    )?;
    citizen.expect_ok(SIPP_WAIT)?;
    agent.expect_ok(SIPP_WAIT)?;
    let (left, right) = recorded_tones(&gw, &broker, 1, "13800138001")?;
    assert!(
        (400.0..480.0).contains(&left),
        "citizen channel at {left} Hz"
    );
    assert!(
        (400.0..480.0).contains(&right),
        "the agent side echoed the citizen's tone: {right} Hz"
    );

    // IPv4 agent to IPv6 citizen: the citizen echoes the agent's 880 Hz.
    let echo_citizen = silent_copy("citizen-call.xml", dir.path())?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = Sipp::citizen_v6(
        &echo_citizen,
        gw.sip_port,
        "13800138002",
        &["-d", "3000", "-rtp_echo"],
    )?;
    citizen.expect_ok(SIPP_WAIT)?;
    agent.expect_ok(SIPP_WAIT)?;
    let (left, right) = recorded_tones(&gw, &broker, 2, "13800138002")?;
    assert!(
        (820.0..940.0).contains(&right),
        "agent channel at {right} Hz"
    );
    assert!(
        (820.0..940.0).contains(&left),
        "the citizen echoed the agent's tone: {left} Hz"
    );
    Ok(())
}
