//! How an [`Event`] travels on Kafka: CloudEvents 1.0, Kafka protocol binding, binary
//! content mode.
//!
//! The record value is the event's JSON (`content-type: application/json`); the
//! CloudEvents attributes travel as `ce_*` headers; the record key is the citizen's
//! pseudonymous key, which the binding's `partitionkey` extension repeats, so all of one
//! citizen's events land on one partition, in order. Headers never carry personal data
//! (Art. 21): the subject is the ticket reference, not the citizen.

use serde::{Deserialize, Serialize};

use crate::event::{Event, SCHEMA_VERSION};

/// The CloudEvents spec version written in `ce_specversion`.
pub const CE_SPECVERSION: &str = "1.0";

/// The event types, each on its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// [`crate::Contact`] events.
    Contact,
    /// [`crate::TicketDraft`] events.
    TicketDraft,
    /// [`crate::RestrictionChange`] events (a compacted topic).
    Restriction,
    /// [`crate::AuditEvent`] events.
    Audit,
    /// [`crate::NoticeEvent`] events.
    Notice,
    /// [`crate::OutboundSms`] requests.
    OutboundSms,
    /// [`crate::SmsStatus`] events.
    SmsStatus,
    /// [`crate::TicketStatus`] events (the ticket service's).
    TicketStatus,
    /// [`crate::RevisitCall`] requests (the ticket service's).
    RevisitCall,
    /// [`crate::RevisitResult`] events (the gateway's).
    RevisitResult,
    /// [`crate::ChatOutbound`] requests (the ticket service's).
    ChatOutbound,
    /// [`crate::ChatOutboundStatus`] events (the gateway's).
    ChatOutboundStatus,
}

impl EventType {
    /// The CloudEvents `type` attribute; the trailing `.v1` follows the schema version.
    pub fn ce_type(self) -> &'static str {
        match self {
            EventType::Contact => "cn.gov.zhuhai.12345.contact.v1",
            EventType::TicketDraft => "cn.gov.zhuhai.12345.ticket_draft.v1",
            EventType::Restriction => "cn.gov.zhuhai.12345.restriction.v1",
            EventType::Audit => "cn.gov.zhuhai.12345.audit.v1",
            EventType::Notice => "cn.gov.zhuhai.12345.urgent_notice.v1",
            EventType::OutboundSms => "cn.gov.zhuhai.12345.sms_outbound.v1",
            EventType::SmsStatus => "cn.gov.zhuhai.12345.sms_status.v1",
            EventType::TicketStatus => "cn.gov.zhuhai.12345.ticket_status.v1",
            EventType::RevisitCall => "cn.gov.zhuhai.12345.revisit_call.v1",
            EventType::RevisitResult => "cn.gov.zhuhai.12345.revisit_result.v1",
            EventType::ChatOutbound => "cn.gov.zhuhai.12345.chat_outbound.v1",
            EventType::ChatOutboundStatus => "cn.gov.zhuhai.12345.chat_outbound_status.v1",
        }
    }

    /// The CloudEvents `dataschema` attribute: the schema file under `docs/schemas/`.
    pub fn dataschema(self) -> &'static str {
        match self {
            EventType::Contact => "urn:12345:schema:contact:v1",
            EventType::TicketDraft => "urn:12345:schema:ticket_draft:v1",
            EventType::Restriction => "urn:12345:schema:restriction:v1",
            EventType::Audit => "urn:12345:schema:audit:v1",
            EventType::Notice => "urn:12345:schema:urgent_notice:v1",
            EventType::OutboundSms => "urn:12345:schema:sms_outbound:v1",
            EventType::SmsStatus => "urn:12345:schema:sms_status:v1",
            EventType::TicketStatus => "urn:12345:schema:ticket_status:v1",
            EventType::RevisitCall => "urn:12345:schema:revisit_call:v1",
            EventType::RevisitResult => "urn:12345:schema:revisit_result:v1",
            EventType::ChatOutbound => "urn:12345:schema:chat_outbound:v1",
            EventType::ChatOutboundStatus => "urn:12345:schema:chat_outbound_status:v1",
        }
    }

    /// The file name of the JSON Schema under `docs/schemas/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            EventType::Contact => "contact.v1.json",
            EventType::TicketDraft => "ticket_draft.v1.json",
            EventType::Restriction => "restriction.v1.json",
            EventType::Audit => "audit.v1.json",
            EventType::Notice => "urgent_notice.v1.json",
            EventType::OutboundSms => "sms_outbound.v1.json",
            EventType::SmsStatus => "sms_status.v1.json",
            EventType::TicketStatus => "ticket_status.v1.json",
            EventType::RevisitCall => "revisit_call.v1.json",
            EventType::RevisitResult => "revisit_result.v1.json",
            EventType::ChatOutbound => "chat_outbound.v1.json",
            EventType::ChatOutboundStatus => "chat_outbound_status.v1.json",
        }
    }
}

/// A Kafka record, ready to produce; the topic is chosen by [`EventType`] from config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which topic it goes to.
    pub event_type: EventType,
    /// The record key: the citizen's pseudonymous key.
    pub key: String,
    /// Kafka headers (`ce_*` and `content-type`), in order.
    pub headers: Vec<(String, String)>,
    /// The record value: the event's JSON. Encoded as one byte string, not a sequence
    /// of numbers, so the outbox journal reads and writes it in one copy.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Event {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::Contact(_) => EventType::Contact,
            Event::TicketDraft(_) => EventType::TicketDraft,
            Event::Restriction(_) => EventType::Restriction,
            Event::Audit(_) => EventType::Audit,
            Event::Notice(_) => EventType::Notice,
            Event::OutboundSms(_) => EventType::OutboundSms,
            Event::SmsStatus(_) => EventType::SmsStatus,
            Event::TicketStatus(_) => EventType::TicketStatus,
            Event::RevisitCall(_) => EventType::RevisitCall,
            Event::RevisitResult(_) => EventType::RevisitResult,
            Event::ChatOutbound(_) => EventType::ChatOutbound,
            Event::ChatOutboundStatus(_) => EventType::ChatOutboundStatus,
        }
    }

    /// Encodes the event as a Kafka record with its CloudEvents envelope.
    ///
    /// `source` is the CloudEvents `source`, a URI reference naming the gateway instance
    /// and channel (for example `/gateway/gw-1/chat`).
    pub fn to_record(&self, source: &str) -> Result<Record, serde_json::Error> {
        let owned_subject;
        let (id, time, subject, key, payload) = match self {
            Event::Contact(c) => (
                c.id,
                c.received_at,
                c.ticket_ref.as_str(),
                c.citizen.key.as_str(),
                serde_json::to_vec(c)?,
            ),
            Event::TicketDraft(d) => (
                d.id,
                d.created_at,
                d.ticket_ref.as_str(),
                d.citizen_key.as_str(),
                serde_json::to_vec(d)?,
            ),
            Event::Restriction(r) => {
                owned_subject = r.restriction_id.to_string();
                (
                    r.id,
                    r.changed_at,
                    owned_subject.as_str(),
                    r.citizen_key.as_str(),
                    serde_json::to_vec(r)?,
                )
            }
            Event::Audit(a) => (
                a.id,
                a.at,
                a.subject.as_str(),
                a.citizen_key.as_str(),
                serde_json::to_vec(a)?,
            ),
            // Keyed by the notice, not the citizen: a notice's events stay on one
            // partition, whose owner runs the notice's clock.
            Event::Notice(n) => {
                owned_subject = n.notice_id.to_string();
                (
                    n.id,
                    n.at,
                    owned_subject.as_str(),
                    owned_subject.as_str(),
                    serde_json::to_vec(n)?,
                )
            }
            // Keyed by what it is about (the notice, the ticket): one matter's texts stay in
            // order on one partition (a ticket's result before its survey); the number is
            // personal data and stays in the payload.
            Event::OutboundSms(r) => (
                r.id,
                r.requested_at,
                r.reference.as_str(),
                r.reference.as_str(),
                serde_json::to_vec(r)?,
            ),
            Event::SmsStatus(st) => {
                owned_subject = st.request_id.to_string();
                (
                    st.id,
                    st.at,
                    st.reference.as_str(),
                    owned_subject.as_str(),
                    serde_json::to_vec(st)?,
                )
            }
            Event::TicketStatus(t) => (
                t.id,
                t.at,
                t.ticket_ref.as_str(),
                t.citizen_key.as_str(),
                serde_json::to_vec(t)?,
            ),
            // Keyed by the ticket: its attempts stay in order on one partition, and the
            // number stays in the payload (Art. 21).
            Event::RevisitCall(c) => (
                c.id,
                c.requested_at,
                c.ticket_ref.as_str(),
                c.ticket_ref.as_str(),
                serde_json::to_vec(c)?,
            ),
            Event::RevisitResult(r) => (
                r.id,
                r.at,
                r.ticket_ref.as_str(),
                r.ticket_ref.as_str(),
                serde_json::to_vec(r)?,
            ),
            // Keyed by the ticket, like the SMS requests; the citizen key is in the payload
            // (it picks the sessions) and is pseudonymous.
            Event::ChatOutbound(m) => (
                m.id,
                m.requested_at,
                m.reference.as_str(),
                m.reference.as_str(),
                serde_json::to_vec(m)?,
            ),
            Event::ChatOutboundStatus(st) => (
                st.id,
                st.at,
                st.reference.as_str(),
                st.reference.as_str(),
                serde_json::to_vec(st)?,
            ),
        };
        let event_type = self.event_type();
        let headers = vec![
            ("ce_specversion".to_owned(), CE_SPECVERSION.to_owned()),
            ("ce_id".to_owned(), id.to_string()),
            ("ce_source".to_owned(), source.to_owned()),
            ("ce_type".to_owned(), event_type.ce_type().to_owned()),
            (
                "ce_time".to_owned(),
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            ("ce_subject".to_owned(), subject.to_owned()),
            (
                "ce_dataschema".to_owned(),
                event_type.dataschema().to_owned(),
            ),
            ("ce_partitionkey".to_owned(), key.to_owned()),
            ("ce_schemaversion".to_owned(), SCHEMA_VERSION.to_string()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        Ok(Record {
            event_type,
            key: key.to_owned(),
            headers,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;
    use chrono::Utc;

    fn contact() -> Contact {
        Contact {
            schema_version: SCHEMA_VERSION,
            id: new_event_id(),
            ticket_ref: TicketRef("ZH20261126ABCDEF0123".into()),
            channel: ChannelKind::Sms,
            received_at: Utc::now(),
            citizen: CitizenIdentity {
                kind: IdentityKind::PhoneNumber,
                value: "13800001234".into(),
                key: "k1".into(),
            },
            reply_paths: vec![ReplyPath::Sms {
                number: "13800001234".into(),
            }],
            content: ContactContent::Text {
                text: "路灯坏了".into(),
            },
            channel_ref: Some("m-1".into()),
            sequence: 1,
            rejected: None,
            restriction: None,
        }
    }

    #[test]
    fn headers_carry_cloudevents_attributes_and_no_personal_data() {
        let c = contact();
        let record = Event::from(c.clone())
            .to_record("/gateway/t/sms")
            .expect("serializable");
        let h = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(h("ce_id"), Some(c.id.to_string()));
        assert_eq!(
            h("ce_type").as_deref(),
            Some("cn.gov.zhuhai.12345.contact.v1")
        );
        assert_eq!(h("ce_partitionkey").as_deref(), Some("k1"));
        assert_eq!(record.key, "k1");
        for (_, v) in &record.headers {
            assert!(!v.contains("13800001234"), "personal data in header {v}");
        }
        let back: Contact = serde_json::from_slice(&record.payload).expect("round trip");
        assert_eq!(back, c);
    }
}
