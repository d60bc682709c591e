//! The command line: `check-config` accepts a valid config and names what is wrong with
//! an invalid one, without starting anything.

use std::process::Command;

use e2e::gateway_binary;

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(gateway_binary())
        .arg("check-config")
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the gateway binary (cargo build -p gateway)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

const DEV: &str = include_str!("../../deploy/config/dev.toml");
const DEV_ENV: [(&str, &str); 5] = [
    ("GATEWAY_CITIZEN_KEY_SECRET", "0123456789abcdef0123456789"),
    ("GATEWAY_SMS_SECRET_DEV", "0123456789abcdef0123456789"),
    ("GATEWAY_ADMIN_TOKEN", "0123456789abcdef0123456789"),
    ("GATEWAY_AGENT_FEED_SECRET", "0123456789abcdef0123456789"),
    ("GATEWAY_LINKAGE_SECRET", "0123456789abcdef0123456789"),
];

#[test]
fn the_dev_config_is_valid() {
    let (ok, text) = check(DEV, &DEV_ENV);
    assert!(ok, "{text}");
    assert!(
        text.contains("valid") && text.contains("chat, sms, phone"),
        "{text}"
    );
}

#[test]
fn a_missing_secret_is_named() {
    let (ok, text) = check(DEV, &DEV_ENV[..2]);
    assert!(!ok);
    assert!(text.contains("GATEWAY_ADMIN_TOKEN"), "{text}");
}

#[test]
fn a_typo_in_a_field_is_refused() {
    let bad = DEV.replace("max_frame_bytes", "max_frame_byte");
    let (ok, text) = check(&bad, &DEV_ENV);
    assert!(!ok);
    assert!(text.contains("max_frame_byte"), "{text}");
}

#[test]
fn an_out_of_range_value_says_which_field() {
    let bad = DEV.replace("partitions = 3", "partitions = 0");
    let (ok, text) = check(&bad, &DEV_ENV);
    assert!(!ok);
    assert!(text.contains("kafka.partitions"), "{text}");
}

#[test]
fn mint_token_makes_a_linkage_operator_token_in_the_documented_format() {
    use hmac::{Hmac, Mac};
    let secret = "0123456789abcdef0123456789";
    let out = Command::new(gateway_binary())
        .args(["mint-token", "--scope", "linkage", "--subject", "119:op1"])
        .args(["--secret-env", "LINKAGE_SECRET", "--valid-secs", "600"])
        .env_clear()
        .env("LINKAGE_SECRET", secret)
        .output()
        .expect("run the gateway binary (cargo build -p gateway)");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (rest, mac) = token.rsplit_once('.').expect("subject.expiry.mac");
    let (subject, expiry) = rest.rsplit_once('.').expect("subject.expiry");
    assert_eq!(subject, "119:op1");
    let expiry: u64 = expiry.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    // docs/routing.md: hex HMAC-SHA256(secret, "linkage:<subject>.<expiry>").
    let mut want = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    want.update(format!("linkage:{rest}").as_bytes());
    assert_eq!(mac, hex::encode(want.finalize().into_bytes()));
    // A missing secret is refused, not an empty key.
    let bad = Command::new(gateway_binary())
        .args(["mint-token", "--scope", "agent", "--subject", "agent1001"])
        .args(["--secret-env", "NOT_SET"])
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}
