//! From a delivery's body to the logs it carries: one JSON log object (the message contract,
//! and what Vector, pino, zap or bunyan write), or an OTLP `LogsData` in protobuf or JSON (what
//! the OpenTelemetry Collector's RabbitMQ exporter publishes), one log per `LogRecord`.
//!
//! Which one is told by the AMQP `content_type` and, since the Collector sets none, by the body
//! itself: `application/x-protobuf` (or `application/protobuf`) is OTLP protobuf; a JSON object
//! with `resourceLogs` is OTLP JSON; another JSON object is a log; a body without a content type
//! that starts as a protobuf `LogsData` does (field 1) is read as one. Whatever does not decode
//! is a permanent failure of the whole delivery, since the same bytes never decode later.

pub mod otlp;
pub mod otlp_json;

use serde_json::Value;

use super::envelope::{self, EnvelopeError, LogRecord, Origin};

/// Content types of OTLP protobuf payloads.
pub const PROTOBUF_CONTENT_TYPES: [&str; 2] =
    [logstream_api::otlp::CONTENT_TYPE, "application/protobuf"];

/// The first byte of a protobuf `LogsData` that holds anything: field 1 (`resource_logs`),
/// length-delimited. A JSON text never starts with it.
const LOGS_DATA_FIRST_BYTE: u8 = 0x0a;

/// Decodes a delivery's `body` (at most `limit` bytes) into its logs, in order. An OTLP
/// payload without any `LogRecord` gives none: there is nothing to write.
pub fn decode(
    body: &[u8],
    limit: usize,
    origin: &Origin<'_>,
) -> Result<Vec<LogRecord>, EnvelopeError> {
    envelope::check_size(body, limit)?;
    let content_type = origin.content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let protobuf = match content_type.as_deref() {
        Some(c) if PROTOBUF_CONTENT_TYPES.contains(&c) => true,
        Some(c) if c.contains("json") => false,
        _ => body.first() == Some(&LOGS_DATA_FIRST_BYTE),
    };
    if protobuf {
        let data = otlp::decode_protobuf(body)?;
        return otlp::records(&data, origin);
    }
    match envelope::parse_json(body)? {
        Value::Object(fields) if otlp_json::is_otlp(&fields) => {
            let data = otlp_json::logs_data(&fields)?;
            otlp::records(&data, origin)
        }
        Value::Object(fields) => Ok(vec![envelope::normalize(fields, origin, None)?]),
        other => Err(EnvelopeError::NotAnObject {
            kind: envelope::kind(&other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value},
        logs::v1::{LogRecord as OtlpRecord, LogsData, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
    };
    use prost::Message;

    use super::*;

    const LIMIT: usize = 256 * 1024;

    fn origin(content_type: Option<&'static str>) -> Origin<'static> {
        Origin {
            content_type,
            ..Origin::test()
        }
    }

    fn logs_data(bodies: &[&str]) -> Vec<u8> {
        LogsData {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("checkout".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: bodies
                        .iter()
                        .map(|b| OtlpRecord {
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue((*b).into())),
                            }),
                            severity_number: 13,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn protobuf_is_told_by_its_content_type_or_its_first_byte() {
        let body = logs_data(&["a", "b"]);
        for content_type in [Some("application/x-protobuf"), None] {
            let records = decode(&body, LIMIT, &origin(content_type)).unwrap();
            assert_eq!(records.len(), 2, "{content_type:?}");
            assert_eq!(records[1].service, "checkout");
            assert_eq!(records[1].id, "m-1:1");
        }
        let err = decode(&body, LIMIT, &origin(Some("application/json"))).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::NotUtf8 { .. } | EnvelopeError::NotJson { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn json_logs_and_otlp_json_share_the_json_path() {
        let records = decode(br#"{"msg":"hi","level":30}"#, LIMIT, &origin(None)).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, "m-1");
        let otlp =
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
        let records = decode(otlp, LIMIT, &origin(Some("application/json"))).unwrap();
        assert_eq!(records.len(), 1);
        let v: Value = serde_json::from_str(&records[0].json).unwrap();
        assert_eq!(v["message"], "x");
    }

    #[test]
    fn an_otlp_payload_without_records_carries_no_log_and_garbage_is_refused() {
        let empty = LogsData::default().encode_to_vec();
        assert!(
            decode(&empty, LIMIT, &origin(Some("application/x-protobuf")))
                .unwrap()
                .is_empty()
        );
        let err = decode(b"\x0a\xff\xff", LIMIT, &origin(None)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to decode log: OTLP protobuf"),
            "{err}"
        );
        let err = decode(&[b'x'; 2000], 1024, &origin(None)).unwrap_err();
        assert!(matches!(err, EnvelopeError::TooLarge { .. }));
    }
}
