//! Hostile and malformed SIP: each message gets its right response or is dropped, the
//! sockets keep working, and a normal call still succeeds afterwards.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Result;
use e2e::sip::*;

fn request(method_line: &str, headers: &[&str], body: &str) -> String {
    let mut s = format!("{method_line}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

const VIA: &str = "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKhostile;rport";
const FROM: &str = "From: <sip:13800138000@carrier.example>;tag=h1";
const TO: &str = "To: <sip:12345@gw>";
const CSEQ: &str = "CSeq: 1 OPTIONS";
const LEN0: &str = "Content-Length: 0";

fn call_id(n: usize) -> String {
    format!("Call-ID: hostile-{n}")
}

#[test]
fn malformed_sip_gets_its_response_or_is_dropped_and_calls_still_work() -> Result<()> {
    let (_broker, gw, agent_port) = start_gateway(|_| {}, "info")?;
    let raw = RawSip::new("127.0.0.1", gw.sip_port)?;
    let huge = format!("X-Huge: {}", "a".repeat(20_000));
    let many: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let folded = request(
        "OPTIONS sip:12345@gw SIP/2.0",
        &[
            "v: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKfold;rport",
            "f: <sip:a@b>;tag=f1",
            "t: <sip:12345@gw>",
            "i: folded-1",
            "Subject: a header",
            "  folded onto two lines",
            CSEQ,
            "l: 0",
        ],
        "",
    );
    let mut many_headers = vec![
        VIA.to_owned(),
        FROM.into(),
        TO.into(),
        call_id(9),
        CSEQ.into(),
    ];
    many_headers.extend(many);
    many_headers.push(LEN0.into());
    let many_refs: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "bad start line",
            request(
                "OPTIONS sip:12345@gw",
                &[VIA, FROM, TO, &call_id(1), CSEQ, LEN0],
                "",
            )
            .into_bytes(),
            Some(400),
        ),
        (
            "wrong version",
            request(
                "OPTIONS sip:12345@gw SIP/3.0",
                &[VIA, FROM, TO, &call_id(2), CSEQ, LEN0],
                "",
            )
            .into_bytes(),
            Some(505),
        ),
        (
            "missing Call-ID",
            request(
                "OPTIONS sip:12345@gw SIP/2.0",
                &[VIA, FROM, TO, CSEQ, LEN0],
                "",
            )
            .into_bytes(),
            Some(400),
        ),
        (
            "missing CSeq",
            request(
                "OPTIONS sip:12345@gw SIP/2.0",
                &[VIA, FROM, TO, &call_id(3), LEN0],
                "",
            )
            .into_bytes(),
            Some(400),
        ),
        (
            "missing Via",
            request(
                "OPTIONS sip:12345@gw SIP/2.0",
                &[FROM, TO, &call_id(4), CSEQ, LEN0],
                "",
            )
            .into_bytes(),
            None,
        ),
        (
            "huge header",
            request(
                "OPTIONS sip:12345@gw SIP/2.0",
                &[VIA, FROM, TO, &call_id(5), CSEQ, &huge, LEN0],
                "",
            )
            .into_bytes(),
            Some(513),
        ),
        (
            "too many headers",
            request("OPTIONS sip:12345@gw SIP/2.0", &many_refs, "").into_bytes(),
            Some(400),
        ),
        (
            "Content-Length beyond the body",
            request(
                "OPTIONS sip:12345@gw SIP/2.0",
                &[VIA, FROM, TO, &call_id(6), CSEQ, "Content-Length: 500"],
                "short",
            )
            .into_bytes(),
            Some(400),
        ),
        (
            "unknown method",
            request(
                "FROB sip:12345@gw SIP/2.0",
                &[VIA, FROM, TO, &call_id(7), "CSeq: 1 FROB", LEN0],
                "",
            )
            .into_bytes(),
            Some(501),
        ),
        (
            "garbage bytes",
            vec![
                0x16, 0x03, 0x01, 0xff, 0x00, 0x41, 0x0d, 0x0a, 0x0d, 0x0a, 0x99,
            ],
            None,
        ),
        ("folded and compact headers", folded.into_bytes(), Some(200)),
    ];
    for (name, bytes, expect) in &cases {
        raw.send(bytes)?;
        let got = raw.recv(Duration::from_millis(if expect.is_some() {
            3000
        } else {
            700
        }));
        let code = got.as_deref().and_then(status_of);
        assert_eq!(code, *expect, "{name}: got {got:?}");
        if let (Some(resp), Some(c)) = (&got, expect)
            && *c >= 400
        {
            assert!(
                header(resp, "Warning").is_some_and(|w| w.starts_with("399 ")),
                "{name}: a Warning says why: {resp}"
            );
        }
    }

    // TCP: a message in three pieces is framed into one; a stream cut mid-message is
    // closed without an answer; a message without Content-Length gets 400 and the
    // connection is closed (a stream cannot be resynchronised).
    let options_tcp = request(
        "OPTIONS sip:12345@gw SIP/2.0",
        &[
            "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp1",
            FROM,
            TO,
            "Call-ID: tcp-1",
            CSEQ,
            LEN0,
        ],
        "",
    );
    let mut tcp = tcp_connect(gw.sip_port)?;
    let b = options_tcp.as_bytes();
    for piece in [&b[..10], &b[10..60], &b[60..]] {
        tcp.write_all(piece)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf)?;
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(200));

    let mut cut = tcp_connect(gw.sip_port)?;
    cut.write_all(&b[..b.len() / 2])?;
    drop(cut);

    let mut no_len = tcp_connect(gw.sip_port)?;
    no_len.write_all(
        request(
            "OPTIONS sip:12345@gw SIP/2.0",
            &[
                "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp2",
                FROM,
                TO,
                "Call-ID: tcp-2",
                CSEQ,
            ],
            "",
        )
        .as_bytes(),
    )?;
    let n = no_len.read(&mut buf)?;
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), Some(400));
    let closed = no_len.read(&mut buf)?;
    assert_eq!(closed, 0, "the connection is closed after a framing error");

    // After all that, a normal call works.
    call_through(
        &gw,
        agent_port,
        ("agent-answer.xml", &[]),
        ("citizen-call.xml", "13800138000", &["-d", "1000"]),
    )?;
    Ok(())
}
