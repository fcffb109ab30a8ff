//! OTLP logs in: a `LogsData` becomes one JSON log object per `LogRecord`, normalized like any
//! other log.
//!
//! Each log carries `message` (the body: its text, or the compact JSON of a structured body,
//! which is also kept as `body`), `level` (from `severity_number`, else `severity_text`),
//! `ts` (`time_unix_nano`, else `observed_time_unix_nano`), `service` (the resource's
//! `service.name`), and, when set, `severity_text`, `severity_number`, `attributes`,
//! `resource` (the resource's attributes), `scope` (`name`, `version`, `attributes`),
//! `trace_id` and `span_id` (hex), `flags`, `event_name` and `observed_ts`.

use jiff::Timestamp;
use logstream_api::{
    contract::Level,
    otlp::{any_to_json, attributes},
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpRecord, LogsData};
use prost::Message;
use serde_json::{Map, Value};

use crate::delivery::envelope::{self, EnvelopeError, LogRecord, Origin};

/// The resource attribute naming the service.
pub const SERVICE_NAME: &str = "service.name";

/// Reads a protobuf `LogsData` (the OTLP exporter's payload; `ExportLogsServiceRequest` has
/// the same wire form).
pub fn decode_protobuf(body: &[u8]) -> Result<LogsData, EnvelopeError> {
    LogsData::decode(body).map_err(|e| EnvelopeError::Otlp {
        reason: format!("OTLP protobuf LogsData does not decode ({e})"),
    })
}

/// The logs of `data`, in order, normalized. Each gets the id `<message id>:<index>` when
/// there are several.
pub fn records(data: &LogsData, origin: &Origin<'_>) -> Result<Vec<LogRecord>, EnvelopeError> {
    let count: usize = data
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let mut out = Vec::with_capacity(count);
    for resource_logs in &data.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = match resource.get(SERVICE_NAME) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref().map(|s| {
                let mut scope = Map::new();
                if !s.name.is_empty() {
                    scope.insert("name".into(), s.name.clone().into());
                }
                if !s.version.is_empty() {
                    scope.insert("version".into(), s.version.clone().into());
                }
                if !s.attributes.is_empty() {
                    scope.insert(
                        "attributes".into(),
                        Value::Object(attributes(&s.attributes)),
                    );
                }
                scope
            });
            for record in &scope_logs.log_records {
                let mut fields = log_object(record);
                if let Some(service) = &service {
                    fields.insert(envelope::FIELD_SERVICE.into(), service.clone().into());
                }
                if !resource.is_empty() {
                    fields.insert("resource".into(), Value::Object(resource.clone()));
                }
                if let Some(scope) = scope.as_ref().filter(|s| !s.is_empty()) {
                    fields.insert("scope".into(), Value::Object(scope.clone()));
                }
                let index = (count > 1).then_some(out.len());
                out.push(envelope::normalize(fields, origin, index)?);
            }
        }
    }
    Ok(out)
}

/// One `LogRecord` as a JSON log object (without resource and scope).
fn log_object(record: &OtlpRecord) -> Map<String, Value> {
    let mut fields = Map::new();
    let time = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|t| *t != 0)
        .and_then(rfc3339);
    if let Some(ts) = time {
        fields.insert(envelope::FIELD_TS.into(), ts.into());
    }
    if let Some(level) = Level::from_otlp(record.severity_number, &record.severity_text) {
        fields.insert(envelope::FIELD_LEVEL.into(), level.as_str().into());
    }
    let body = record.body.as_ref().map(any_to_json);
    let message = match &body {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    fields.insert(envelope::FIELD_MESSAGE.into(), message.into());
    if let Some(body) = body.filter(|b| !matches!(b, Value::String(_) | Value::Null)) {
        fields.insert("body".into(), body);
    }
    if !record.severity_text.is_empty() {
        fields.insert("severity_text".into(), record.severity_text.clone().into());
    }
    if record.severity_number != 0 {
        fields.insert("severity_number".into(), record.severity_number.into());
    }
    if !record.attributes.is_empty() {
        fields.insert(
            "attributes".into(),
            Value::Object(attributes(&record.attributes)),
        );
    }
    if !record.trace_id.is_empty() {
        fields.insert("trace_id".into(), hex(&record.trace_id).into());
    }
    if !record.span_id.is_empty() {
        fields.insert("span_id".into(), hex(&record.span_id).into());
    }
    if record.flags != 0 {
        fields.insert("flags".into(), record.flags.into());
    }
    if !record.event_name.is_empty() {
        fields.insert("event_name".into(), record.event_name.clone().into());
    }
    if record.time_unix_nano != 0
        && record.observed_time_unix_nano != 0
        && let Some(observed) = rfc3339(record.observed_time_unix_nano)
    {
        fields.insert("observed_ts".into(), observed.into());
    }
    fields
}

fn rfc3339(nanos: u64) -> Option<String> {
    Timestamp::from_nanosecond(i128::from(nanos))
        .ok()
        .map(|t| t.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{
            AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
        },
        logs::v1::{ResourceLogs, ScopeLogs},
        resource::v1::Resource,
    };

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            content_type: Some("application/x-protobuf"),
            amqp_timestamp: Some(1_700_000_000),
            ..Origin::test()
        }
    }

    #[test]
    fn a_log_record_keeps_resource_scope_attributes_and_trace_context() {
        use any_value::Value as V;
        let data = LogsData {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", V::StringValue("checkout".into())),
                        kv("k8s.pod.name", V::StringValue("checkout-7d9".into())),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app.logger".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    log_records: vec![OtlpRecord {
                        time_unix_nano: 1_700_000_000_123_456_789,
                        observed_time_unix_nano: 1_700_000_001_000_000_000,
                        severity_number: 17,
                        severity_text: "ERROR".into(),
                        body: Some(AnyValue {
                            value: Some(V::StringValue("payment failed".into())),
                        }),
                        attributes: vec![
                            kv("http.status_code", V::IntValue(502)),
                            kv("retry", V::BoolValue(true)),
                            kv("ratio", V::DoubleValue(0.5)),
                            kv(
                                "tags",
                                V::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(V::StringValue("a".into())),
                                    }],
                                }),
                            ),
                            kv(
                                "user",
                                V::KvlistValue(KeyValueList {
                                    values: vec![kv("id", V::IntValue(7))],
                                }),
                            ),
                            kv("raw", V::BytesValue(vec![1, 2, 3])),
                        ],
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        flags: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let records = records(&data, &origin()).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            (r.level, r.service.as_str(), r.id.as_str()),
            (Level::Error, "checkout", "m-1")
        );
        assert_eq!(r.ts.as_nanosecond(), 1_700_000_000_123_456_789);
        let v: Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["message"], "payment failed");
        assert_eq!(v["level"], "error");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["observed_ts"], "2023-11-14T22:13:21Z");
        assert_eq!(v["severity_text"], "ERROR");
        assert_eq!(v["severity_number"], 17);
        assert_eq!(v["resource"]["k8s.pod.name"], "checkout-7d9");
        assert_eq!(v["scope"]["name"], "app.logger");
        assert_eq!(v["scope"]["version"], "1.2");
        assert_eq!(v["attributes"]["http.status_code"], 502);
        assert_eq!(v["attributes"]["retry"], true);
        assert_eq!(v["attributes"]["ratio"], 0.5);
        assert_eq!(v["attributes"]["tags"][0], "a");
        assert_eq!(v["attributes"]["user"]["id"], 7);
        assert_eq!(v["attributes"]["raw"], "AQID");
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], "0101010101010101");
        assert_eq!(v["flags"], 1);
        assert_eq!(v["logstream"]["pipeline"], "app");
    }

    #[test]
    fn a_structured_body_is_kept_and_becomes_the_message_text() {
        let data = LogsData {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        OtlpRecord {
                            body: Some(AnyValue {
                                value: Some(any_value::Value::KvlistValue(KeyValueList {
                                    values: vec![kv(
                                        "event",
                                        any_value::Value::StringValue("login".into()),
                                    )],
                                })),
                            }),
                            ..Default::default()
                        },
                        OtlpRecord::default(),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let records = records(&data, &origin()).unwrap();
        let v: Value = serde_json::from_str(&records[0].json).unwrap();
        assert_eq!(v["message"], r#"{"event":"login"}"#);
        assert_eq!(v["body"]["event"], "login");
        assert_eq!(records[0].service, envelope::UNKNOWN_SERVICE);
        assert_eq!(records[0].level, Level::Info);
        assert_eq!(
            v["ts"], "2023-11-14T22:13:20Z",
            "the AMQP timestamp without OTLP times"
        );
        let empty: Value = serde_json::from_str(&records[1].json).unwrap();
        assert_eq!(empty["message"], "");
        assert_eq!(records[1].id, "m-1:1");
    }
}
