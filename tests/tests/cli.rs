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
