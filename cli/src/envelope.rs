//! A log as the message contract wants it on the wire: the JSON body, the routing key and the
//! AMQP properties (persistent, `message_id`, `timestamp`, `content_type`, priority from the
//! level and the pipeline's queue type); or as the OpenTelemetry Collector's RabbitMQ exporter
//! publishes it (a protobuf OTLP `LogsData`). Pure: the caller passes the clock and the message id.

use jiff::Timestamp;
use lapin::{BasicProperties, types::ShortString};
use logstream_api::{
    contract::{self, Level},
    otlp::{key_value, string_value},
    pipeline::QueueType,
};
use opentelemetry_proto::tonic::{
    logs::v1::{LogRecord, LogsData, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::{Map, Value};

use crate::args::{OTLP_ROUTING_KEY, ProduceFormat};

/// `app_id` of every message the CLI publishes, so a person reading a queue knows its source.
pub const APP_ID: &str = "logstream-cli";

/// Name of the field that pads a load run's bodies to `--size`.
pub const PAD_FIELD: &str = "pad";

/// One log ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// `<service>.<level>`.
    pub routing_key: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// AMQP properties.
    pub properties: BasicProperties,
}

/// A log read from input: its level, its service and its JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    /// The level (normalized).
    pub level: Level,
    /// The service.
    pub service: String,
    /// The body.
    pub body: Map<String, Value>,
}

/// Why a line of input is not a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Looks like JSON but does not parse.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A JSON object without the `message` every log needs.
    #[error("a log needs a \"message\" field")]
    NoMessage,
}

/// A fresh message id: 128 random bits as 32 hex digits.
pub fn new_message_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The body of a log built from flags: `{"ts", "level", "service", "message", ...fields}`.
pub fn log_body(
    service: &str,
    level: Level,
    message: &str,
    fields: &[(String, Value)],
    now: Timestamp,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("ts".into(), Value::String(rfc3339(now)));
    body.insert("level".into(), Value::String(level.to_string()));
    body.insert("service".into(), Value::String(service.to_owned()));
    body.insert("message".into(), Value::String(message.to_owned()));
    for (key, value) in fields {
        body.insert(key.clone(), value.clone());
    }
    body
}

/// Reads one line of `produce`'s stdin. A JSON object is the log itself (its `level` and
/// `service` win over the defaults, a missing `ts` is added); any other line is the `message`
/// of a log with the default service and level. Returns `None` for a blank line.
pub fn log_from_line(
    line: &str,
    default_service: &str,
    default_level: Level,
    fields: &[(String, Value)],
    now: Timestamp,
) -> Result<Option<Log>, EnvelopeError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if !line.starts_with('{') {
        return Ok(Some(Log {
            level: default_level,
            service: default_service.to_owned(),
            body: log_body(default_service, default_level, line, fields, now),
        }));
    }
    let mut body = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err(EnvelopeError::Json("not an object".into())),
        Err(e) => return Err(EnvelopeError::Json(e.to_string())),
    };
    if !body.contains_key("message") {
        return Err(EnvelopeError::NoMessage);
    }
    let level = body
        .get("level")
        .and_then(Value::as_str)
        .and_then(Level::parse_lenient)
        .unwrap_or(default_level);
    let service = body
        .get("service")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(default_service)
        .to_owned();
    body.insert("level".into(), Value::String(level.to_string()));
    body.insert("service".into(), Value::String(service.clone()));
    body.entry("ts")
        .or_insert_with(|| Value::String(rfc3339(now)));
    for (key, value) in fields {
        body.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Ok(Some(Log {
        level,
        service,
        body,
    }))
}

/// Adds a padding field so the serialized body is at least `size` bytes.
pub fn pad_to(body: &mut Map<String, Value>, size: usize) {
    let current = serde_json::to_vec(body).map_or(0, |b| b.len());
    // `,"pad":""` is what the field costs before its content.
    let overhead = PAD_FIELD.len() + 6;
    if current + overhead < size {
        body.insert(
            PAD_FIELD.into(),
            Value::String("x".repeat(size - current - overhead)),
        );
    }
}

/// The envelope of a log of `level` from `service` for a classic pipeline: [`envelope_on`]
/// with [`QueueType::Classic`].
pub fn envelope(
    service: &str,
    level: Level,
    body: &Map<String, Value>,
    message_id: String,
    now: Timestamp,
) -> Envelope {
    envelope_on(QueueType::Classic, service, level, body, message_id, now)
}

/// The envelope of a log of `level` from `service` for a pipeline whose queues are
/// `queue_type`, which decides the priority ([`Level::priority_on`]).
pub fn envelope_on(
    queue_type: QueueType,
    service: &str,
    level: Level,
    body: &Map<String, Value>,
    message_id: String,
    now: Timestamp,
) -> Envelope {
    Envelope {
        routing_key: contract::routing_key(service, level),
        // A map of JSON values always serializes.
        body: serde_json::to_vec(body).unwrap_or_default(),
        properties: properties_on(queue_type, level, message_id, now),
    }
}

/// The envelope of a log in `format`: the message contract's (with the priority of
/// `queue_type`'s table), or the OTLP exporter's.
pub fn encode(
    format: ProduceFormat,
    queue_type: QueueType,
    service: &str,
    level: Level,
    body: &Map<String, Value>,
    message_id: String,
    now: Timestamp,
) -> Envelope {
    match format {
        ProduceFormat::Json => envelope_on(queue_type, service, level, body, message_id, now),
        ProduceFormat::Otlp => otlp_envelope(service, level, body, now),
    }
}

/// A log as the OpenTelemetry Collector's RabbitMQ exporter publishes it: a protobuf
/// `LogsData` (resource `service.name`, severity from the level, the message as the body, the
/// other fields as attributes), persistent, routing key `otlp_logs`. Unlike the exporter, which
/// sets no content type, `content_type` says `application/x-protobuf`.
pub fn otlp_envelope(
    service: &str,
    level: Level,
    body: &Map<String, Value>,
    now: Timestamp,
) -> Envelope {
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
    let time = text("ts")
        .parse::<Timestamp>()
        .unwrap_or(now)
        .as_nanosecond();
    let attributes = body
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "ts" | "level" | "service" | "message"))
        .map(|(k, v)| key_value(k, v))
        .collect();
    let record = LogRecord {
        time_unix_nano: u64::try_from(time).unwrap_or(0),
        observed_time_unix_nano: u64::try_from(now.as_nanosecond()).unwrap_or(0),
        severity_number: level.otlp_severity_number(),
        severity_text: level.as_str().to_uppercase(),
        body: Some(string_value(text("message"))),
        attributes,
        ..Default::default()
    };
    let data = LogsData {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![key_value(
                    "service.name",
                    &Value::String(service.to_owned()),
                )],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Envelope {
        routing_key: OTLP_ROUTING_KEY.to_owned(),
        body: data.encode_to_vec(),
        properties: BasicProperties::default()
            .with_delivery_mode(contract::DELIVERY_MODE_PERSISTENT)
            .with_content_type(ShortString::from(logstream_api::otlp::CONTENT_TYPE)),
    }
}

/// The AMQP properties the contract asks of a log of `level` for a pipeline whose queues are
/// `queue_type`.
pub fn properties_on(
    queue_type: QueueType,
    level: Level,
    message_id: String,
    now: Timestamp,
) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(contract::DELIVERY_MODE_PERSISTENT)
        .with_content_type(ShortString::from(contract::CONTENT_TYPE))
        .with_message_id(ShortString::from(message_id))
        .with_timestamp(u64::try_from(now.as_second()).unwrap_or(0))
        .with_priority(level.priority_on(queue_type))
        .with_app_id(ShortString::from(APP_ID))
}

/// RFC 3339 in UTC with milliseconds: `2026-05-01T12:00:00.123Z`.
pub fn rfc3339(at: Timestamp) -> String {
    format!("{at:.3}")
}

/// `--field` values: JSON when they parse as JSON, else strings.
pub fn field_values(raw: &[(String, String)]) -> Vec<(String, Value)> {
    raw.iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value;

    use super::*;

    fn noon() -> Timestamp {
        "2026-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_log_follows_the_message_contract() {
        let fields = field_values(&[("code".into(), "500".into()), ("user".into(), "ann".into())]);
        let body = log_body("api", Level::Error, "boom", &fields, noon());
        let e = envelope("api", Level::Error, &body, "abc".into(), noon());
        assert_eq!(e.routing_key, "api.error");
        let json: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ts": "2026-05-01T12:00:00.000Z", "level": "error",
                "service": "api", "message": "boom", "code": 500, "user": "ann"})
        );
        let p = &e.properties;
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.priority(), &Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("abc"));
        assert_eq!(p.timestamp(), &Some(1_777_636_800));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
    }

    #[test]
    fn the_priority_follows_the_pipelines_queue_type() {
        let body = log_body("api", Level::Critical, "down", &[], noon());
        let priority = |queue_type| {
            *envelope_on(
                queue_type,
                "api",
                Level::Critical,
                &body,
                "id".into(),
                noon(),
            )
            .properties
            .priority()
        };
        assert_eq!(priority(QueueType::Classic), Some(3));
        assert_eq!(
            priority(QueueType::Quorum),
            Some(6),
            "RabbitMQ 4's high class"
        );
        assert_eq!(
            envelope("api", Level::Critical, &body, "id".into(), noon()),
            envelope_on(
                QueueType::Classic,
                "api",
                Level::Critical,
                &body,
                "id".into(),
                noon()
            )
        );
    }

    #[test]
    fn json_lines_keep_their_fields_and_win_over_defaults() {
        let Log {
            level,
            service,
            body,
        } = log_from_line(
            r#"{"level":"WARNING","service":"auth","message":"slow","ms":900}"#,
            "cli",
            Level::Info,
            &[],
            noon(),
        )
        .unwrap()
        .unwrap();
        assert_eq!((level, service.as_str()), (Level::Warn, "auth"));
        assert_eq!(body["level"], "warn");
        assert_eq!(body["ms"], 900);
        assert_eq!(body["ts"], "2026-05-01T12:00:00.000Z");
    }

    #[test]
    fn plain_lines_become_messages_and_bad_json_is_refused() {
        let Log {
            level,
            service,
            body,
        } = log_from_line("disk full", "cli", Level::Error, &[], noon())
            .unwrap()
            .unwrap();
        assert_eq!((level, service.as_str()), (Level::Error, "cli"));
        assert_eq!(body["message"], "disk full");
        assert_eq!(
            log_from_line("   ", "cli", Level::Info, &[], noon()),
            Ok(None)
        );
        assert!(matches!(
            log_from_line("{oops", "cli", Level::Info, &[], noon()),
            Err(EnvelopeError::Json(_))
        ));
        assert_eq!(
            log_from_line(r#"{"level":"info"}"#, "cli", Level::Info, &[], noon()),
            Err(EnvelopeError::NoMessage)
        );
    }

    #[test]
    fn padding_reaches_the_requested_size() {
        let mut body = log_body("api", Level::Info, "hi", &[], noon());
        pad_to(&mut body, 1024);
        assert_eq!(serde_json::to_vec(&body).unwrap().len(), 1024);
        let mut small = log_body("api", Level::Info, "hi", &[], noon());
        let before = serde_json::to_vec(&small).unwrap().len();
        pad_to(&mut small, 10);
        assert_eq!(serde_json::to_vec(&small).unwrap().len(), before);
    }

    #[test]
    fn message_ids_are_128_bit_hex_and_unique() {
        let a = new_message_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_message_id());
    }

    #[test]
    fn an_otlp_log_is_published_as_the_collectors_exporter_does() {
        let fields = field_values(&[("code".into(), "500".into())]);
        let body = log_body("api", Level::Error, "boom", &fields, noon());
        let e = encode(
            ProduceFormat::Otlp,
            QueueType::Quorum,
            "api",
            Level::Error,
            &body,
            "abc".into(),
            noon(),
        );
        assert_eq!(e.routing_key, "otlp_logs");
        let p = &e.properties;
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/x-protobuf")
        );
        assert_eq!(p.message_id(), &None);
        assert_eq!(p.priority(), &None);
        let data = LogsData::decode(&e.body[..]).unwrap();
        let resource = &data.resource_logs[0];
        assert_eq!(
            resource.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let record = &resource.scope_logs[0].log_records[0];
        assert_eq!(record.severity_number, 17);
        assert_eq!(record.severity_text, "ERROR");
        assert_eq!(
            record.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("boom".into()))
        );
        assert_eq!(record.time_unix_nano, 1_777_636_800_000_000_000);
        assert_eq!(record.attributes[0].key, "code");
        assert_eq!(
            record.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(500))
        );
    }
}
