//! Phone calls end to end: the real gateway between sipp playing the citizen's trunk and
//! sipp playing the agent side, with RTP both ways, a real tansu broker, the recordings
//! read back and the contacts consumed from Kafka.

use std::time::Duration;

use anyhow::{Result, bail};
use e2e::sip::*;
use e2e::*;
use serde_json::Value;

const SIPP_WAIT: Duration = Duration::from_secs(60);

fn start(opts: impl FnOnce(&mut SipOptions)) -> Result<(Broker, Gateway, u16)> {
    start_gateway(opts, "info,channel_sip=debug")
}

fn phases(contacts: &[Value]) -> Vec<String> {
    contacts
        .iter()
        .map(|c| c["content"]["phase"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn ended(contacts: &[Value]) -> &Value {
    contacts
        .iter()
        .find(|c| c["content"]["phase"] == "ended")
        .map(|c| &c["content"])
        .unwrap_or(&Value::Null)
}

#[test]
fn basic_call_records_both_directions_and_emits_contacts() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-call.xml", "+86 138 0013 8000", &["-d", "3000"]),
    )?;

    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(
        phases(&contacts),
        ["offered", "answered", "ended"],
        "{contacts:#?}"
    );
    let call_id = &contacts[0]["content"]["call_id"];
    let ticket = &contacts[0]["ticket_ref"];
    for c in &contacts {
        assert_eq!(&c["content"]["call_id"], call_id);
        assert_eq!(&c["ticket_ref"], ticket);
        assert_eq!(c["citizen"]["kind"], "phone_number");
        assert_eq!(c["citizen"]["value"], "13800138000", "normalised caller id");
        assert_eq!(c["content"]["trunk"], "carrier-a");
        assert_eq!(c["content"]["dialled"], "12345");
    }
    assert_eq!(contacts[1]["content"]["agent"], "agent1001");
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "talked");
    assert_eq!(end["ended_by"], "citizen");
    let talk = end["talk_ms"].as_u64().unwrap_or_default();
    assert!((2500..=4500).contains(&talk), "talk_ms {talk}");
    assert!(end["duration_ms"].as_u64().unwrap_or_default() >= talk);

    // The recording: stereo, as long as the conversation, the citizen's 440 Hz tone on
    // the left and the agent's 880 Hz tone on the right.
    let name = end["recording"].as_str().unwrap_or_default();
    assert_eq!(
        name,
        format!("{}.wav", call_id.as_str().unwrap_or_default())
    );
    let rec = Recording::open(&gw.recordings_dir().join(name))?;
    assert_eq!(rec.rate, 8000);
    assert!((2.5..=4.5).contains(&rec.seconds()), "{} s", rec.seconds());
    rec.assert_tones_both_ways(3000.0);
    assert!(
        !gw.log().contains("13800138000"),
        "caller numbers never reach the log"
    );
    Ok(())
}

#[test]
fn cancel_before_answer_releases_agent_leg() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-ring-cancel.xml", &[]),
        ("citizen-cancel.xml", "13800138001", &["-d", "1000"]),
    )?;
    let contacts = call_contacts(&broker, 2)?;
    assert_eq!(phases(&contacts), ["offered", "ended"]);
    assert_eq!(ended(&contacts)["outcome"], "caller_cancelled");
    assert_eq!(ended(&contacts)["ended_by"], "citizen");
    Ok(())
}

#[test]
fn agent_busy_falls_back_to_a_recorded_message() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    // The prompt and the tone take about 3.6 s; the citizen speaks for 3 s after them.
    call_through(
        &gw,
        agent_port,
        ("agent-busy.xml", &[]),
        ("citizen-call.xml", "13800138002", &["-d", "6600"]),
    )?;
    let contacts = call_contacts(&broker, 2)?;
    assert_eq!(phases(&contacts), ["offered", "ended"]);
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "message_recorded");
    assert_eq!(end["sip_status"], 486, "why no agent took it");
    let message = end["talk_ms"].as_u64().unwrap_or_default();
    assert!((2000..=4000).contains(&message), "message of {message} ms");
    let rec = Recording::open(
        &gw.recordings_dir()
            .join(end["recording"].as_str().unwrap_or_default()),
    )?;
    // The gateway's prompt is on the agent channel first, then the citizen speaks.
    let (prompt_start, prompt_len) = sound_span(&rec.right, 8000);
    assert!(
        prompt_start < 1.0 && prompt_len > 2.5,
        "prompt at {prompt_start} s for {prompt_len} s"
    );
    let tail = &rec.left[rec.left.len() - 8000..];
    assert!(rms(tail) > 3000.0, "the citizen's message is recorded");
    Ok(())
}

#[test]
fn no_answer_falls_back_after_the_ring_timeout() -> Result<()> {
    let (broker, gw, agent_port) = start(|s| s.ring_timeout_secs = 2)?;
    // The agent side rings until the gateway gives up and cancels it.
    call_through(
        &gw,
        agent_port,
        ("agent-ring-cancel.xml", &[]),
        ("citizen-call.xml", "13800138003", &["-d", "5000"]),
    )?;
    let contacts = call_contacts(&broker, 2)?;
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "message_recorded");
    assert_eq!(end["sip_status"], 408);
    Ok(())
}

#[test]
fn reject_fallback_passes_busy_back_to_the_caller() -> Result<()> {
    let (broker, gw, agent_port) = start(|s| s.fallback = "reject".into())?;
    let agent = Sipp::agent("agent-busy.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let invite = raw.invite(
        "reject-1@test",
        "z9hG4bKreject1",
        "13800138004",
        Some(40_000),
    );
    raw.send(invite.as_bytes())?;
    let got = raw.recv_final(Duration::from_secs(10));
    assert_eq!(got.last().and_then(|m| status_of(m)), Some(486), "{got:?}");
    raw.send(
        raw.ack_failure(&invite, got.last().map(String::as_str).unwrap_or(""))
            .as_bytes(),
    )?;
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 2)?;
    assert_eq!(ended(&contacts)["outcome"], "unanswered");
    Ok(())
}

#[test]
fn agent_hangs_up_and_the_citizen_gets_bye() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-hangs-up.xml", &["-d", "2000"]),
        ("citizen-waits-bye.xml", "13800138005", &[]),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "talked");
    assert_eq!(end["ended_by"], "agent");
    Ok(())
}

#[test]
fn invite_without_sdp_is_bridged_with_the_offer_in_the_answer() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-late-offer.xml", "13800138006", &["-d", "2500"]),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "talked");
    let rec = Recording::open(
        &gw.recordings_dir()
            .join(end["recording"].as_str().unwrap_or_default()),
    )?;
    let (left, right) = rec.middle();
    assert!(
        rms(&left) > 3000.0,
        "citizen audio relayed after the late offer"
    );
    assert!(rms(&right) > 3000.0, "agent audio relayed");
    Ok(())
}

#[test]
fn options_keepalive_is_answered_for_trunks_only() -> Result<()> {
    let (_broker, gw, _) = start(|_| {})?;
    Sipp::citizen(
        "citizen-options.xml",
        "127.0.0.1",
        gw.sip_port,
        "keepalive",
        &[],
    )?
    .expect_ok(SIPP_WAIT)?;
    let stranger = RawSip::new(UNKNOWN_TRUNK_IP, gw.sip_port)?;
    let options = format!(
        "OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKopt1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        stranger.local()
    );
    stranger.send(options.as_bytes())?;
    let resp = stranger.recv(Duration::from_secs(5)).unwrap_or_default();
    assert_eq!(status_of(&resp), Some(403), "{resp}");
    Ok(())
}

#[test]
fn codec_mismatch_gets_488_and_a_rejected_contact() -> Result<()> {
    let (broker, gw, _) = start(|_| {})?;
    Sipp::citizen(
        "citizen-g729.xml",
        "127.0.0.1",
        gw.sip_port,
        "13800138007",
        &[],
    )?
    .expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 1)?;
    assert_eq!(phases(&contacts), ["rejected"]);
    assert_eq!(contacts[0]["content"]["reason"], "no_common_codec");
    assert_eq!(contacts[0]["content"]["sip_status"], 488);
    Ok(())
}

#[test]
fn blocked_caller_hears_the_announcement_then_603() -> Result<()> {
    let (broker, gw, _) = start(|s| s.blocked_callers = vec!["13900000000".into()])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = rtp_socket()?;
    let rtp_port = rtp.local_addr()?.port();
    let invite = raw.invite(
        "blocked-1@test",
        "z9hG4bKblocked1",
        "+8613900000000",
        Some(rtp_port),
    );
    raw.send(invite.as_bytes())?;
    // Count the announcement's packets while waiting for the final response.
    let mut packets = 0usize;
    let mut responses = Vec::new();
    raw.sock.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        if let Ok((n, _)) = rtp.recv_from(&mut buf)
            && n == 172
            && buf[1] & 0x7f == 0
        {
            packets += 1;
        }
        if let Ok((n, _)) = raw.sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = status_of(&m).is_some_and(|s| s >= 200);
            responses.push(m);
            if done {
                break;
            }
        }
    }
    let codes: Vec<u16> = responses.iter().filter_map(|m| status_of(m)).collect();
    assert!(codes.contains(&183), "early media announced: {codes:?}");
    assert_eq!(codes.last(), Some(&603), "{codes:?}");
    let decline = responses.last().cloned().unwrap_or_default();
    let reason = header(&decline, "Reason").unwrap_or_default();
    assert!(
        reason.contains("cause=603") && reason.contains("Art. 9"),
        "{decline}"
    );
    assert!(
        packets >= 250,
        "the announcement played: {packets} packets of 20 ms"
    );
    raw.sock.set_nonblocking(false)?;
    raw.send(raw.ack_failure(&invite, &decline).as_bytes())?;
    let contacts = call_contacts(&broker, 2)?;
    assert_eq!(phases(&contacts), ["offered", "rejected"]);
    assert_eq!(contacts[1]["content"]["reason"], "blocked_caller");
    assert_eq!(contacts[1]["content"]["sip_status"], 603);
    let kept = std::fs::read_dir(gw.recordings_dir())?.count();
    assert_eq!(kept, 0, "a refused caller's announcement is not recorded");
    Ok(())
}

#[test]
fn unknown_trunk_gets_403_and_no_contact() -> Result<()> {
    let (broker, gw, _) = start(|_| {})?;
    Sipp::citizen(
        "citizen-forbidden.xml",
        UNKNOWN_TRUNK_IP,
        gw.sip_port,
        "13800138008",
        &[],
    )?
    .expect_ok(SIPP_WAIT)?;
    let records = consume(
        &broker.bootstrap(),
        CONTACTS,
        Duration::from_secs(3),
        |_| false,
    )?;
    assert!(
        records.iter().all(|r| r.value["channel"] != "phone"),
        "no contact for a refused trunk"
    );
    Ok(())
}

#[test]
fn digest_trunk_is_challenged_then_admitted() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = Sipp::citizen(
        "citizen-digest.xml",
        DIGEST_TRUNK_IP,
        gw.sip_port,
        "13800138009",
        &["-d", "1000", "-au", TRUNK_USER, "-ap", TRUNK_PASSWORD],
    )?;
    citizen.expect_ok(SIPP_WAIT)?;
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(contacts[0]["content"]["trunk"], TRUNK_USER);
    // A wrong password is challenged again, never admitted.
    let bad = Sipp::citizen(
        "citizen-digest.xml",
        DIGEST_TRUNK_IP,
        gw.sip_port,
        "13800138009",
        &["-d", "1000", "-au", TRUNK_USER, "-ap", "wrong-password-123"],
    )?;
    let r = bad.wait(Duration::from_secs(20))?;
    if r.ok() {
        bail!("a wrong password was admitted: {}", r.report());
    }
    Ok(())
}

#[test]
fn retransmitted_invite_is_absorbed_by_the_transaction_layer() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = rtp_socket()?;
    let invite = raw.invite(
        "retrans-1@test",
        "z9hG4bKretrans1",
        "13800138010",
        Some(rtp.local_addr()?.port()),
    );
    let mut answers = 0;
    let mut ok = None;
    for _ in 0..3 {
        raw.send(invite.as_bytes())?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let Some(m) = raw.recv(Duration::from_millis(if ok.is_some() { 300 } else { 2000 })) else {
            if ok.is_some() {
                break;
            }
            continue;
        };
        {
            answers += 1;
            if status_of(&m) == Some(200) {
                ok = Some(m);
            }
        }
    }
    let ok = ok.ok_or_else(|| anyhow::anyhow!("no 200 OK"))?;
    // 100 and 180 for the first INVITE, and the last response again for each of the two
    // retransmissions (§17.2.1), whatever it was by then.
    assert!(
        answers >= 4,
        "each retransmission got the last response again ({answers} responses)"
    );
    let to = header(&ok, "To").unwrap_or_default();
    let local = raw.local();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:12345@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{cseq};rport\r\nFrom: <sip:13800138010@carrier.example>;tag=raw1\r\nTo: {to}\r\nCall-ID: retrans-1@test\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            port = gw.sip_port
        )
    };
    raw.send(in_dialog("ACK", 1).as_bytes())?;
    std::thread::sleep(Duration::from_millis(500));
    raw.send(in_dialog("BYE", 2).as_bytes())?;
    let bye_ok = raw.recv_final(Duration::from_secs(5));
    assert!(
        bye_ok
            .iter()
            .any(|m| status_of(m) == Some(200) && m.contains("BYE")),
        "{bye_ok:?}"
    );
    // One call reached the agent side (sipp -m 1 fails on a second INVITE's dialog) and
    // one offer is on Kafka.
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    let offered = contacts
        .iter()
        .filter(|c| c["content"]["phase"] == "offered")
        .count();
    assert_eq!(offered, 1, "{contacts:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_desktop_gets_a_screen_pop_and_call_states() -> Result<()> {
    let (broker, gw, agent_port) = start(|s| s.agent_feed = true)?;
    let feed_url = format!("ws://127.0.0.1:{}/agent/feed", gw.http_port);

    // Without a valid token: 401, as a problem.
    let forged =
        desk_token("agent1001", Duration::from_secs(600)).replace("agent1001", "agent1002");
    match tokio_tungstenite::connect_async(format!("{feed_url}?access_token={forged}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => bail!("a forged token was accepted: {:?}", other.map(|_| ())),
    }
    let (mut desk, _) = tokio_tungstenite::connect_async(format!(
        "{feed_url}?access_token={}",
        desk_token("agent1001", Duration::from_secs(600))
    ))
    .await?;
    let (mut other_desk, _) = tokio_tungstenite::connect_async(format!(
        "{feed_url}?access_token={}",
        desk_token("agent2002", Duration::from_secs(600))
    ))
    .await?;

    for (round, earlier) in [(1, 0), (2, 1)] {
        let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
        let citizen = Sipp::citizen(
            "citizen-call.xml",
            "127.0.0.1",
            gw.sip_port,
            "13800138000",
            &["-d", "1000"],
        )?;
        let pop = next_event(&mut desk, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        assert_eq!(pop["type"], "screen_pop", "round {round}: {pop}");
        assert_eq!(pop["caller"], "138****8000", "masked (Art. 21)");
        assert_eq!(pop["earlier_calls"], earlier, "round {round}");
        assert_eq!(pop["trunk"], "carrier-a");
        assert!(
            pop["ticket_ref"]
                .as_str()
                .unwrap_or_default()
                .starts_with("ZH")
        );
        let mut states = Vec::new();
        while let Some(ev) = next_event(&mut desk, Duration::from_secs(10)).await {
            assert_eq!(ev["call_id"], pop["call_id"]);
            states.push(ev["state"].as_str().unwrap_or_default().to_owned());
            if ev["state"] == "ended" {
                assert_eq!(ev["outcome"], "talked");
                assert_eq!(ev["ended_by"], "citizen");
                break;
            }
        }
        assert_eq!(states, ["ringing", "answered", "ended"], "round {round}");
        tokio::task::spawn_blocking(move || -> Result<()> {
            citizen.expect_ok(SIPP_WAIT)?;
            agent.expect_ok(SIPP_WAIT)?;
            Ok(())
        })
        .await??;
    }
    assert!(
        next_event(&mut other_desk, Duration::from_millis(500))
            .await
            .is_none(),
        "another agent's desktop sees nothing of these calls"
    );
    let contacts = call_contacts(&broker, 6)?;
    assert_eq!(contacts.len(), 6);
    Ok(())
}

#[test]
fn sigterm_hangs_up_calls_in_progress_and_records_their_end() -> Result<()> {
    let (broker, mut gw, agent_port) = start(|_| {})?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = Sipp::citizen(
        "citizen-waits-bye.xml",
        "127.0.0.1",
        gw.sip_port,
        "13800138011",
        &[],
    )?;
    // Wait until the call is up.
    call_contacts(&broker, 2)?;
    assert!(
        gw.terminate(Duration::from_secs(20)),
        "the gateway exits cleanly within its grace period"
    );
    // Both legs got a BYE and answered it.
    citizen.expect_ok(SIPP_WAIT)?;
    agent.expect_ok(SIPP_WAIT)?;
    gw.restart()?;
    let contacts = call_contacts(&broker, 3)?;
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "shutdown", "{contacts:#?}");
    assert_eq!(end["ended_by"], "gateway");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls_is_bridged_and_answered_on_the_same_connection() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let (broker, gw, agent_port) = start(|s| s.tls = true)?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let mut tls = tls_connect(gw.sip_tls_port, &gw.dir().join("cert.pem")).await?;
    let rtp = rtp_socket()?;
    let rtp_port = rtp.local_addr()?.port();
    let local = "127.0.0.1:5999";
    let sdp = format!(
        "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let base = |method: &str, cseq: u32, to: &str, branch: &str| {
        format!(
            "{method} sip:12345@localhost;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{branch}\r\nFrom: <sip:13800138012@carrier.example>;tag=tls1\r\nTo: {to}\r\nCall-ID: tls-call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:13800138012@{local};transport=tls>\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = format!(
        "{}Record-Route: <sip:sbc.example;transport=tls;lr>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        base("INVITE", 1, "<sip:12345@localhost>", "tlsinv"),
        sdp.len()
    );
    tls.write_all(invite.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut ok = None;
    while let Some(m) = read_sip(&mut tls, &mut buf, Duration::from_secs(10)).await {
        if status_of(&m) == Some(200) {
            ok = Some(m);
            break;
        }
    }
    let ok = ok.ok_or_else(|| anyhow::anyhow!("no 200 over TLS"))?;
    assert_eq!(
        header(&ok, "Record-Route").as_deref(),
        Some("<sip:sbc.example;transport=tls;lr>"),
        "the 200 echoes the trunk's Record-Route (RFC 3261 §12.1.1)"
    );
    let contact = header(&ok, "Contact").unwrap_or_default();
    assert!(
        contact.contains("transport=tls"),
        "the gateway's Contact names TLS: {contact}"
    );
    let to = header(&ok, "To").unwrap_or_default();
    tls.write_all(format!("{}Content-Length: 0\r\n\r\n", base("ACK", 1, &to, "tlsack")).as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    tls.write_all(format!("{}Content-Length: 0\r\n\r\n", base("BYE", 2, &to, "tlsbye")).as_bytes())
        .await?;
    let bye_ok = read_sip(&mut tls, &mut buf, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert_eq!(status_of(&bye_ok), Some(200), "{bye_ok}");
    assert!(header(&bye_ok, "CSeq").unwrap_or_default().ends_with("BYE"));
    tokio::task::spawn_blocking(move || agent.expect_ok(SIPP_WAIT).map(|_| ())).await??;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(phases(&contacts), ["offered", "answered", "ended"]);
    assert_eq!(ended(&contacts)["ended_by"], "citizen");
    // A plaintext client on the TLS port never gets SIP through.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", gw.sip_tls_port)).await?;
    plain.write_all(invite.as_bytes()).await?;
    let mut pbuf = Vec::new();
    assert_eq!(
        read_sip(&mut plain, &mut pbuf, Duration::from_secs(3)).await,
        None
    );
    Ok(())
}

#[test]
fn dtmf_keys_are_captured_into_the_call_contact() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-dtmf.xml", "13800138013", &["-d", "500"]),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(ended(&contacts)["dtmf"], "15", "{contacts:#?}");
    Ok(())
}

#[test]
fn call_over_tcp_from_the_trunk_is_bridged() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        (
            "citizen-call.xml",
            "13800138014",
            &["-t", "t1", "-d", "1500"],
        ),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(phases(&contacts), ["offered", "answered", "ended"]);
    let rec = Recording::open(
        &gw.recordings_dir()
            .join(ended(&contacts)["recording"].as_str().unwrap_or_default()),
    )?;
    assert!(
        rms(&rec.left) > 1000.0 && rms(&rec.right) > 1000.0,
        "audio both ways"
    );
    Ok(())
}

#[test]
fn invites_beyond_a_trunks_rate_get_503_with_retry_after() -> Result<()> {
    let (_broker, gw, _) = start(|s| {
        s.invite_rate = 0.5;
        s.invite_burst = 2;
    })?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let mut finals = Vec::new();
    for i in 0..3 {
        let invite = raw.invite(
            &format!("rate-{i}@test"),
            &format!("z9hG4bKrate{i}"),
            "13800138015",
            Some(40_002),
        );
        raw.send(invite.as_bytes())?;
        std::thread::sleep(Duration::from_millis(100));
    }
    while let Some(m) = raw.recv(Duration::from_secs(2)) {
        if status_of(&m).is_some_and(|s| s >= 200) {
            finals.push(m);
        }
    }
    // The first two are admitted (they ring an agent side that is not there); the third
    // is over the burst. (Its 503 is retransmitted until ACKed: count calls, not
    // messages.)
    let refused: std::collections::BTreeSet<String> =
        finals.iter().filter_map(|m| header(m, "Call-ID")).collect();
    assert_eq!(
        refused.into_iter().collect::<Vec<_>>(),
        ["rate-2@test"],
        "{finals:?}"
    );
    assert_eq!(status_of(&finals[0]), Some(503));
    let retry: u64 = header(&finals[0], "Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry >= 1, "{}", finals[0]);
    Ok(())
}

#[test]
fn early_media_from_the_agent_side_reaches_the_citizen_before_the_answer() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    let agent = Sipp::agent("agent-early-media.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = rtp_socket()?;
    let invite = raw.invite(
        "early-1@test",
        "z9hG4bKearly1",
        "13800138016",
        Some(rtp.local_addr()?.port()),
    );
    raw.send(invite.as_bytes())?;
    raw.sock.set_nonblocking(true)?;
    let mut progress = None;
    let mut ok = None;
    let mut early_packets = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while ok.is_none() && std::time::Instant::now() < deadline {
        if let Ok((n, _)) = rtp.recv_from(&mut buf)
            && progress.is_some()
            && n > 12
        {
            early_packets += 1;
        }
        if let Ok((n, _)) = raw.sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            match status_of(&m) {
                Some(183) => progress = Some(m),
                Some(200) => ok = Some(m),
                _ => {}
            }
        }
    }
    raw.sock.set_nonblocking(false)?;
    let progress = progress.ok_or_else(|| anyhow::anyhow!("no 183 reached the citizen"))?;
    assert!(
        progress.contains("application/sdp") && progress.contains("m=audio"),
        "{progress}"
    );
    assert!(
        early_packets >= 25,
        "early media relayed before the answer: {early_packets} packets"
    );
    let ok = ok.ok_or_else(|| anyhow::anyhow!("no 200"))?;
    let to = header(&ok, "To").unwrap_or_default();
    let local = raw.local();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:12345@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{cseq}e;rport\r\nFrom: <sip:13800138016@carrier.example>;tag=raw1\r\nTo: {to}\r\nCall-ID: early-1@test\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            port = gw.sip_port
        )
    };
    raw.send(in_dialog("ACK", 1).as_bytes())?;
    std::thread::sleep(Duration::from_millis(300));
    raw.send(in_dialog("BYE", 2).as_bytes())?;
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(phases(&contacts), ["offered", "answered", "ended"]);
    Ok(())
}

/// An in-dialog request from the raw citizen of `call_id`, after the 200 `ok`.
#[allow(clippy::too_many_arguments)]
fn raw_in_dialog(
    raw: &RawSip,
    gw: &Gateway,
    ok: &str,
    call_id: &str,
    caller: &str,
    method: &str,
    cseq: u32,
    sdp_port: Option<u16>,
) -> String {
    let to = header(ok, "To").unwrap_or_default();
    let local = raw.local();
    let body = sdp_port.map_or(String::new(), |p| {
        format!(
            "v=0\r\no=t 1 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ip = local.ip()
        )
    });
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:12345@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{cseq}{call};rport\r\nFrom: <sip:{caller}@carrier.example>;tag=raw1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{caller}@{local}>\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {len}\r\n\r\n{body}",
        port = gw.sip_port,
        call = call_id.len(),
        len = body.len()
    )
}

/// Sends a raw INVITE and returns its 200 once the agent side answered.
fn raw_call_answered(raw: &RawSip, call_id: &str, caller: &str, rtp_port: u16) -> Result<String> {
    let invite = raw.invite(
        call_id,
        &format!("z9hG4bK{call_id}"),
        caller,
        Some(rtp_port),
    );
    raw.send(invite.as_bytes())?;
    let answers = raw.recv_final(Duration::from_secs(10));
    match answers.iter().find(|m| status_of(m) == Some(200)) {
        Some(ok) => Ok(ok.clone()),
        None => bail!("no 200 to the INVITE: {answers:?}"),
    }
}

/// The port of the first `m=audio` line of a message's SDP.
fn sdp_audio_port(message: &str) -> Option<u16> {
    message
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
}

/// Counts the RTP packets (longer than a header) that reach `sock` within `within`.
fn rtp_packets_within(sock: &std::net::UdpSocket, within: Duration) -> Result<usize> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while std::time::Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && len > 12
        {
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn in_dialog_options_info_and_a_reinvite_moving_the_media_are_answered() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let (call, caller) = ("dialog-1@test", "13800138020");
    let rtp = rtp_socket()?;
    let ok = raw_call_answered(&raw, call, caller, rtp.local_addr()?.port())?;
    let gw_media = sdp_audio_port(&ok).ok_or_else(|| anyhow::anyhow!("no SDP in {ok}"))?;
    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "ACK", 1, None).as_bytes())?;
    // Latch the citizen's first address with a few packets of our own.
    let mut packet = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
    packet.extend_from_slice(&[0xff; 160]);
    for _ in 0..5 {
        rtp.send_to(&packet, ("127.0.0.1", gw_media))?;
    }
    assert!(
        rtp_packets_within(&rtp, Duration::from_secs(2))? > 10,
        "the agent's audio reaches the citizen's first address"
    );

    for (cseq, method) in [(2, "OPTIONS"), (3, "INFO")] {
        raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, method, cseq, None).as_bytes())?;
        let answer = raw.recv_final(Duration::from_secs(5));
        assert!(
            answer
                .iter()
                .any(|m| status_of(m) == Some(200) && m.contains(method)),
            "{method} in the dialog gets 200: {answer:?}"
        );
    }

    // The citizen moves its media to another port with a re-INVITE: the gateway answers
    // with its own, unchanged media port and the agent's audio follows to the new port.
    let moved = rtp_socket()?;
    let reinvite = raw_in_dialog(
        &raw,
        &gw,
        &ok,
        call,
        caller,
        "INVITE",
        4,
        Some(moved.local_addr()?.port()),
    );
    raw.send(reinvite.as_bytes())?;
    let answer = raw.recv_final(Duration::from_secs(5));
    let re_ok = answer
        .iter()
        .find(|m| status_of(m) == Some(200))
        .ok_or_else(|| anyhow::anyhow!("no 200 to the re-INVITE: {answer:?}"))?;
    assert_eq!(sdp_audio_port(re_ok), Some(gw_media), "{re_ok}");
    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "ACK", 4, None).as_bytes())?;
    assert!(
        rtp_packets_within(&moved, Duration::from_secs(2))? > 10,
        "the agent's audio follows the re-INVITE to the new port"
    );
    let _ = rtp_packets_within(&rtp, Duration::from_millis(300))?;
    assert_eq!(
        rtp_packets_within(&rtp, Duration::from_secs(1))?,
        0,
        "nothing goes to the old port any more"
    );

    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "BYE", 5, None).as_bytes())?;
    let bye = raw.recv_final(Duration::from_secs(5));
    assert!(
        bye.iter()
            .any(|m| status_of(m) == Some(200) && m.contains("BYE")),
        "{bye:?}"
    );
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(phases(&contacts), ["offered", "answered", "ended"]);
    assert_eq!(ended(&contacts)["ended_by"], "citizen");
    Ok(())
}

#[test]
fn calls_beyond_capacity_get_503_and_a_silent_call_is_hung_up() -> Result<()> {
    let (broker, gw, agent_port) = start(|o| {
        o.max_calls = 1;
        o.media_timeout_secs = 5;
    })?;
    // The agent side answers and sends no audio; the citizen sends none either.
    let agent = Sipp::agent("bench-agent-short.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let (call, caller) = ("silent-1@test", "13800138021");
    let rtp = rtp_socket()?;
    let ok = raw_call_answered(&raw, call, caller, rtp.local_addr()?.port())?;
    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "ACK", 1, None).as_bytes())?;

    // A second call while the first is up: 503 with Retry-After, and no contact.
    let second = RawSip::new("127.0.0.1", gw.sip_port)?;
    let invite = second.invite(
        "full-1@test",
        "z9hG4bKfull1",
        "13800138022",
        Some(rtp.local_addr()?.port()),
    );
    second.send(invite.as_bytes())?;
    let answer = second.recv_final(Duration::from_secs(5));
    let refused = answer.last().cloned().unwrap_or_default();
    assert_eq!(status_of(&refused), Some(503), "{answer:?}");
    assert!(header(&refused, "Retry-After").is_some(), "{refused}");
    second.send(second.ack_failure(&invite, &refused).as_bytes())?;

    // Silence both ways: the gateway hangs the first call up on both legs.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut bye = None;
    while bye.is_none() && std::time::Instant::now() < deadline {
        if let Some(m) = raw.recv(Duration::from_millis(500))
            && m.starts_with("BYE ")
        {
            bye = Some(m);
        }
    }
    let bye = bye.ok_or_else(|| anyhow::anyhow!("no BYE for a silent call"))?;
    let via = header(&bye, "Via").unwrap_or_default();
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "From").unwrap_or_default(),
        header(&bye, "To").unwrap_or_default(),
        header(&bye, "CSeq").unwrap_or_default(),
    );
    raw.send(reply.as_bytes())?;
    agent.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(
        phases(&contacts),
        ["offered", "answered", "ended"],
        "{contacts:#?}"
    );
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "media_timeout", "{end:#}");
    assert_eq!(end["ended_by"], "gateway");
    Ok(())
}

#[test]
fn a_call_with_no_media_port_free_gets_503() -> Result<()> {
    // Four ports: one bridged call's two RTP/RTCP pairs.
    let (broker, gw, agent_port) = start(|o| o.media_ports = 4)?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let (call, caller) = ("ports-1@test", "13800138023");
    let rtp = rtp_socket()?;
    let ok = raw_call_answered(&raw, call, caller, rtp.local_addr()?.port())?;
    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "ACK", 1, None).as_bytes())?;

    let second = RawSip::new("127.0.0.1", gw.sip_port)?;
    let invite = second.invite(
        "ports-2@test",
        "z9hG4bKports2",
        "13800138024",
        Some(rtp.local_addr()?.port()),
    );
    second.send(invite.as_bytes())?;
    let answer = second.recv_final(Duration::from_secs(5));
    let refused = answer.last().cloned().unwrap_or_default();
    assert_eq!(status_of(&refused), Some(503), "{answer:?}");
    assert!(
        header(&refused, "Warning").is_some_and(|w| w.contains("media ports")),
        "{refused}"
    );
    assert_eq!(
        header(&refused, "Retry-After").as_deref(),
        Some("5"),
        "the trunk may try again shortly: {refused}"
    );
    second.send(second.ack_failure(&invite, &refused).as_bytes())?;

    raw.send(raw_in_dialog(&raw, &gw, &ok, call, caller, "BYE", 2, None).as_bytes())?;
    agent.expect_ok(SIPP_WAIT)?;
    // The refused call was offered (it is on record) and ended unanswered with 503.
    let contacts = call_contacts(&broker, 5)?;
    let refused_end = contacts
        .iter()
        .filter(|c| c["content"]["phase"] == "ended")
        .find(|c| c["content"]["sip_status"] == 503)
        .ok_or_else(|| anyhow::anyhow!("no ended contact with 503: {contacts:#?}"))?;
    assert_eq!(refused_end["content"]["outcome"], "unanswered");
    assert_eq!(refused_end["content"]["ended_by"], "gateway");
    Ok(())
}

#[test]
fn a_ringing_call_gets_503_when_the_gateway_shuts_down() -> Result<()> {
    let (broker, mut gw, agent_port) = start(|o| o.ring_timeout_secs = 60)?;
    let agent = Sipp::agent("agent-ring-cancel.xml", agent_port, &[])?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = rtp_socket()?;
    let invite = raw.invite(
        "ringing-1@test",
        "z9hG4bKringing1",
        "13800138025",
        Some(rtp.local_addr()?.port()),
    );
    raw.send(invite.as_bytes())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut ringing = false;
    while !ringing && std::time::Instant::now() < deadline {
        ringing = raw
            .recv(Duration::from_millis(500))
            .is_some_and(|m| status_of(&m) == Some(180));
    }
    assert!(ringing, "the citizen hears ringing first");
    assert!(
        gw.terminate(Duration::from_secs(20)),
        "the gateway exits cleanly within its grace period"
    );
    let answer = raw.recv_final(Duration::from_secs(2));
    let last = answer.last().cloned().unwrap_or_default();
    assert_eq!(status_of(&last), Some(503), "{answer:?}");
    // The agent side was cancelled (the scenario waits for the CANCEL).
    agent.expect_ok(SIPP_WAIT)?;
    gw.restart()?;
    let contacts = call_contacts(&broker, 2)?;
    assert_eq!(phases(&contacts), ["offered", "ended"], "{contacts:#?}");
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "shutdown");
    assert_eq!(end["sip_status"], 503);
    Ok(())
}

#[test]
fn a_recording_that_cannot_be_written_does_not_harm_the_call() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    // The recordings directory is replaced by a file: no WAV can be created there.
    let dir = gw.recordings_dir();
    std::fs::remove_dir_all(&dir)?;
    std::fs::write(&dir, b"not a directory")?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-call.xml", "+86 138 0013 8026", &["-d", "2000"]),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(phases(&contacts), ["offered", "answered", "ended"]);
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "talked", "{end:#}");
    assert!(
        end["recording"].is_null(),
        "no recording is claimed: {end:#}"
    );
    assert!(
        gw.log().contains("Cannot create the call recording"),
        "the failure is logged"
    );
    Ok(())
}

/// The 12345-110 linkage in the other direction: a caller 110 transfers to 12345 over
/// its trunk keeps its origin (History-Info, RFC 7044) on the call's contacts.
#[test]
fn a_call_transferred_by_110_keeps_its_origin() -> Result<()> {
    let (broker, gw, _) = start(|_| {})?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = rtp_socket()?;
    let invite = raw
        .invite(
            "transferred-1@test",
            "z9hG4bKtransfer1",
            "13800138123",
            Some(rtp.local_addr()?.port()),
        )
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nHistory-Info: <sip:110@police.example;cause=302>;index=1, <sip:12345@gw.example>;index=1.1\r\n",
        );
    raw.send(invite.as_bytes())?;
    let contacts = call_contacts(&broker, 1)?;
    assert_eq!(phases(&contacts)[0], "offered");
    assert_eq!(contacts[0]["content"]["origin"]["via"], "history_info");
    assert_eq!(contacts[0]["content"]["origin"]["from"], "110");
    assert_eq!(contacts[0]["content"]["origin"]["reason"], "302");
    Ok(())
}

/// A call between a sipp caller (440 Hz) and an agent (880 Hz), with a 120 linkage line
/// (660 Hz) ready: two seconds into the conversation the agent's desktop sends
/// `{"type": <command>, "call_id", "target": "120"}`. Returns the transfer states the
/// desktop saw, the call's `ended` contact and its recording.
async fn agent_hands_over(command: &str) -> Result<(Vec<String>, Value, Recording)> {
    let line_port = free_udp_tcp_port();
    let broker = Broker::start(Storage::Memory)?;
    let agent_port = free_udp_tcp_port();
    let mut sip = SipOptions::new(agent_port);
    sip.agent_feed = true;
    let gw = Gateway::start(
        &broker.bootstrap(),
        GatewayOptions {
            sip: Some(sip),
            linkage_targets: vec![(
                "120".into(),
                Some(format!("sip:120@127.0.0.1:{line_port}")),
                None,
            )],
            ..GatewayOptions::default()
        },
    )?;
    let (mut desk, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/agent/feed?access_token={}",
        gw.http_port,
        desk_token("agent1001", Duration::from_secs(600))
    ))
    .await?;
    let line = Sipp::agent("linkage-120.xml", line_port, &[])?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = Sipp::citizen(
        "citizen-call.xml",
        "127.0.0.1",
        gw.sip_port,
        "13800138066",
        &["-d", "9000"],
    )?;
    let mut call_id = None;
    while let Some(ev) = next_event(&mut desk, Duration::from_secs(20)).await {
        if ev["type"] == "call_state" && ev["state"] == "answered" {
            call_id = Some(ev["call_id"].clone());
            break;
        }
    }
    let call_id = call_id.ok_or_else(|| anyhow::anyhow!("no answered call on the screen"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    use futures::SinkExt;
    desk.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::json!({"type": command, "call_id": call_id, "target": "120"})
            .to_string()
            .into(),
    ))
    .await?;
    let mut states = Vec::new();
    while let Some(ev) = next_event(&mut desk, Duration::from_secs(20)).await {
        if ev["type"] == "transfer" {
            states.push(ev["state"].as_str().unwrap_or_default().to_owned());
            if ev["state"] != "calling" {
                break;
            }
        }
    }
    citizen.expect_ok(SIPP_WAIT)?;
    agent.expect_ok(SIPP_WAIT)?;
    line.expect_ok(SIPP_WAIT)?;
    let contacts = call_contacts(&broker, 3)?;
    let end = contacts[2]["content"].clone();
    assert_eq!(end["phase"], "ended");
    let rec = Recording::open(
        &gw.recordings_dir()
            .join(end["recording"].as_str().unwrap_or_default()),
    )?;
    Ok((states, end, rec))
}

/// Art. 15 and the 12345-110 linkage's one-key transfer: the agent hands the caller to
/// the 120 line from the call screen; the gateway calls it, bridges the caller to it in
/// the agent's place, and the recording keeps both (the agent, then 120).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hands_the_caller_to_120_and_the_recording_keeps_every_party() -> Result<()> {
    let (states, end, rec) = agent_hands_over("transfer").await?;
    assert_eq!(states, ["calling", "connected"]);
    assert_eq!(end["transferred_to"], "120", "{end}");
    // Right channel: the agent's 880 Hz before the transfer, 120's 660 Hz after it.
    let second = |s: f64| ((s * 8000.0) as usize, (s * 8000.0) as usize + 4000);
    let (a, b) = second(1.0);
    let (c, d) = second(rec.seconds() - 2.0);
    let (before, after) = (
        tone_hz(&rec.right[a..b], 8000),
        tone_hz(&rec.right[c..d], 8000),
    );
    assert!(
        (before - 880.0).abs() < 40.0,
        "the agent before: {before} Hz"
    );
    assert!((after - 660.0).abs() < 40.0, "120 after: {after} Hz");
    let caller = tone_hz(&rec.left[c..d], 8000);
    assert!(
        (caller - 440.0).abs() < 40.0,
        "the caller throughout: {caller} Hz"
    );
    Ok(())
}

/// The power of `hz` in `samples` (Goertzel), relative to the signal's.
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f64 = samples.iter().map(|x| f64::from(*x).powi(2)).sum();
    power / (total * samples.len() as f64 / 2.0).max(1.0)
}

/// Art. 15, three-way: the agent adds the 120 line to the call; the gateway mixes the
/// three legs, and what the caller hears (the recording's right channel) holds the agent
/// and the line together, the caller's own channel unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_adds_120_to_a_three_way_call_and_the_gateway_mixes_it() -> Result<()> {
    let (states, end, rec) = agent_hands_over("conference").await?;
    assert_eq!(states, ["calling", "joined"]);
    assert_eq!(end["conferenced_with"], "120", "{end}");
    let at = |s: f64| ((s * 8000.0) as usize, (s * 8000.0) as usize + 8000);
    let (a, b) = at(1.0);
    let (c, d) = at(rec.seconds() - 2.5);
    let before = &rec.right[a..b];
    let after = &rec.right[c..d];
    let profile: Vec<String> = (0..rec.seconds() as usize)
        .map(|k| {
            let w = &rec.right[k * 8000..(k + 1) * 8000];
            format!(
                "{k}s: rms {:.0} 880 {:.2} 660 {:.2}",
                rms(w),
                tone_share(w, 880.0),
                tone_share(w, 660.0)
            )
        })
        .collect();
    assert!(
        tone_share(before, 880.0) > 0.5 && tone_share(before, 660.0) < 0.05,
        "the agent alone before: {profile:#?}"
    );
    assert!(
        tone_share(after, 880.0) > 0.3 && tone_share(after, 660.0) > 0.3,
        "the agent and 120 mixed after, each about half: {profile:#?}"
    );
    assert!(
        tone_share(&rec.left[c..d], 440.0) > 0.5,
        "the caller unchanged"
    );
    Ok(())
}

/// Every datagram `raw` receives within `within`.
fn drain(raw: &RawSip, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match raw.recv(left.max(Duration::from_millis(1))) {
            Some(m) => got.push(m),
            None => break,
        }
    }
    got
}

#[test]
fn a_source_outside_every_trunk_gets_one_answer_never_retransmitted() -> Result<()> {
    let (_broker, gw, _) = start(|_| {})?;
    let stranger = RawSip::new(UNKNOWN_TRUNK_IP, gw.sip_port)?;
    let invite = stranger.invite("stranger-1", "z9hG4bKstranger1", "13800000001", None);
    stranger.send(invite.as_bytes())?;
    // T1 is 500 ms: a retransmitted answer would come at 0.5, 1.5 and 3.5 s; a 100
    // Trying would come first. One small 403, nothing else: no reflection amplifier.
    let got = drain(&stranger, Duration::from_secs(4));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(status_of(&got[0]), Some(403), "{}", got[0]);
    // The INVITE retransmitted (the same transaction) is absorbed without an answer.
    stranger.send(invite.as_bytes())?;
    let again = drain(&stranger, Duration::from_secs(2));
    assert!(again.is_empty(), "{again:#?}");
    Ok(())
}

#[test]
fn an_answered_call_never_acked_is_ended_with_bye_at_64_t1() -> Result<()> {
    // T1 of 50 ms: 64*T1 is 3.2 s.
    let (_broker, gw, agent_port) = start(|s| s.t1_ms = 50)?;
    let agent = Sipp::agent("agent-answer.xml", agent_port, &[])?;
    let citizen = RawSip::new("127.0.0.1", gw.sip_port)?;
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let invite = citizen.invite(
        "no-ack-1",
        "z9hG4bKnoack1",
        "13800000002",
        Some(rtp.local_addr()?.port()),
    );
    citizen.send(invite.as_bytes())?;
    // 200s retransmitted, never ACKed; then the gateway's BYE (RFC 3261 §13.3.1.4).
    let got = drain(&citizen, Duration::from_secs(12));
    let oks = got.iter().filter(|m| status_of(m) == Some(200)).count();
    let bye = got.iter().find(|m| m.starts_with("BYE "));
    assert!(oks >= 2, "the 2xx is retransmitted until the ACK: {got:#?}");
    assert!(
        bye.is_some(),
        "a BYE after 64*T1 without an ACK: {got:#?}\n{}",
        gw.log()
    );
    agent.expect_ok(SIPP_WAIT)?;
    Ok(())
}

#[test]
fn stream_connections_are_capped_per_source_and_half_a_header_is_not_kept() -> Result<()> {
    use std::io::{Read, Write};
    // 8 connections per address; a begun message has 2 s to complete.
    let (_broker, gw, _) = start(|s| s.streams = Some((8, 2000)))?;
    let half = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;bra";
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.sip_port))?;
        c.set_read_timeout(Some(Duration::from_millis(50)))?;
        let _ = c.write_all(half.as_bytes());
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Is the connection closed (EOF or reset) or still open (a read timeout)?
    let closed = |c: &mut std::net::TcpStream| {
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let count_open = |held: &mut Vec<std::net::TcpStream>| {
        let mut n = 0;
        for c in held.iter_mut() {
            if !closed(c) {
                n += 1;
            }
        }
        n
    };
    assert_eq!(
        count_open(&mut held),
        8,
        "the ninth and later are closed at once"
    );
    // Half a header past the message timeout: every one is closed.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count_open(&mut held), 0, "half a header is not kept");
    // A whole message on a fresh connection is answered.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.sip_port))?;
    let local = c.local_addr()?;
    let options = format!(
        "OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcpopt\r\nFrom: <sip:x@carrier.example>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: tcp-opt-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    c.write_all(options.as_bytes())?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf)?;
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    Ok(())
}

#[test]
fn a_sip_i_multipart_invite_is_bridged_and_stays_up_until_bye() -> Result<()> {
    let (broker, gw, agent_port) = start(|_| {})?;
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-multipart.xml", "13800138010", &["-d", "3000"]),
    )?;
    let contacts = call_contacts(&broker, 3)?;
    assert_eq!(
        phases(&contacts),
        ["offered", "answered", "ended"],
        "{contacts:#?}"
    );
    let end = ended(&contacts);
    assert_eq!(end["outcome"], "talked");
    assert_eq!(end["ended_by"], "citizen", "up until the citizen's BYE");
    let talk = end["talk_ms"].as_u64().unwrap_or_default();
    assert!((2500..=4500).contains(&talk), "talk_ms {talk}");
    Ok(())
}
