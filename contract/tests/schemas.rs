//! The JSON Schemas under `docs/schemas/` are generated from the Rust types. This test
//! fails when they are stale; `UPDATE_SCHEMAS=1 cargo test -p hotline-contract --test
//! schemas` writes them anew.

use std::path::PathBuf;

use hotline_contract::{Contact, EventType, TicketDraft};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

fn check(event_type: EventType, schema: schemars::Schema) {
    let path = schema_dir().join(event_type.schema_file());
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("$id".into(), event_type.dataschema().into());
    }
    let fresh = serde_json::to_string_pretty(&value).expect("schemas serialise") + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(schema_dir()).expect("create docs/schemas");
        std::fs::write(&path, &fresh).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p hotline-contract --test schemas` and commit it",
        path.display()
    );
}

#[test]
fn contact_schema_is_current() {
    check(EventType::Contact, schemars::schema_for!(Contact));
}

#[test]
fn ticket_draft_schema_is_current() {
    check(EventType::TicketDraft, schemars::schema_for!(TicketDraft));
}

#[test]
fn example_contact_validates_against_its_schema_shape() {
    // The committed schema must list every field a v1 contact requires.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("contact.v1.json")).expect("schema present"),
    )
    .expect("schema is JSON");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for field in [
        "schema_version",
        "id",
        "ticket_ref",
        "channel",
        "received_at",
        "citizen",
        "content",
    ] {
        assert!(required.contains(&field), "{field} missing from required");
    }
}

#[test]
fn restriction_schema_is_current() {
    check(
        EventType::Restriction,
        schemars::schema_for!(hotline_contract::RestrictionChange),
    );
}

#[test]
fn audit_schema_is_current() {
    check(
        EventType::Audit,
        schemars::schema_for!(hotline_contract::AuditEvent),
    );
}

#[test]
fn urgent_notice_schema_is_current() {
    check(
        EventType::Notice,
        schemars::schema_for!(hotline_contract::NoticeEvent),
    );
}

#[test]
fn outbound_sms_schemas_are_current() {
    check(
        EventType::OutboundSms,
        schemars::schema_for!(hotline_contract::OutboundSms),
    );
    check(
        EventType::SmsStatus,
        schemars::schema_for!(hotline_contract::SmsStatus),
    );
}

#[test]
fn ticket_status_schema_is_current() {
    check(
        EventType::TicketStatus,
        schemars::schema_for!(hotline_contract::TicketStatus),
    );
}

#[test]
fn revisit_schemas_are_current() {
    check(
        EventType::RevisitCall,
        schemars::schema_for!(hotline_contract::RevisitCall),
    );
    check(
        EventType::RevisitResult,
        schemars::schema_for!(hotline_contract::RevisitResult),
    );
}

#[test]
fn chat_outbound_schemas_are_current() {
    check(
        EventType::ChatOutbound,
        schemars::schema_for!(hotline_contract::ChatOutbound),
    );
    check(
        EventType::ChatOutboundStatus,
        schemars::schema_for!(hotline_contract::ChatOutboundStatus),
    );
}
