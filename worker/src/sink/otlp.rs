//! OTLP/HTTP out: a batch as one protobuf `ExportLogsServiceRequest`, and the answer's
//! partial success read back.
//!
//! Each log becomes a `LogRecord`: `time_unix_nano` from `ts`, `observed_time_unix_nano` from
//! `observed_ts` (else when the worker received it), severity from `level` (or the
//! `severity_number`/`severity_text` an OTLP log came with), the body from `message` (or the
//! structured `body` an OTLP log came with), trace context from `trace_id`/`span_id`/`flags`,
//! and every other field as an attribute: the entries of an `attributes` object as they are,
//! other fields under their own name (objects as key-value lists), the worker's `logstream`
//! object as `logstream.attempt`, `logstream.message_id`, ... Logs are grouped by resource
//! (the `resource` an OTLP log came with, plus `service.name` and `logstream.namespace`,
//! `logstream.pipeline`, `logstream.output`) and by scope.

use std::collections::BTreeMap;

use logstream_api::otlp::{json_to_any, key_value, key_values, string_value};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::InstrumentationScope,
    logs::v1::{LogRecord as OtlpRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::{Map, Value};

use super::{SinkFailure, SinkLabels};
use crate::delivery::envelope::{self, LogRecord};

/// The path OTLP/HTTP receivers take logs on; a sink URL without a path gets it.
pub const LOGS_PATH: &str = "/v1/logs";

/// Fields that become parts of the `LogRecord` rather than attributes.
const RECORD_FIELDS: [&str; 14] = [
    envelope::FIELD_MESSAGE,
    envelope::FIELD_LEVEL,
    envelope::FIELD_TS,
    envelope::FIELD_SERVICE,
    envelope::FIELD_META,
    "body",
    "severity_text",
    "severity_number",
    "trace_id",
    "span_id",
    "flags",
    "event_name",
    "observed_ts",
    "attributes",
];

/// The `ExportLogsServiceRequest` of `batch`, encoded.
pub fn export_request(batch: &[LogRecord], labels: &SinkLabels) -> Vec<u8> {
    // (resource, scope) → records, both keyed by their JSON so that equal ones group.
    let mut groups: BTreeMap<String, (Resource, BTreeMap<String, ScopeLogs>)> = BTreeMap::new();
    for record in batch {
        let fields = match serde_json::from_str::<Value>(&record.json) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        };
        let resource = resource(&fields, record, labels);
        let resource_key = serde_json::to_string(&resource).unwrap_or_default();
        let scope = fields.get("scope").cloned().unwrap_or(Value::Null);
        let scope_key = scope.to_string();
        let (_, scopes) = groups.entry(resource_key).or_insert_with(|| {
            let attributes = match &resource {
                Value::Object(m) => key_values(m),
                _ => Vec::new(),
            };
            (
                Resource {
                    attributes,
                    ..Default::default()
                },
                BTreeMap::new(),
            )
        });
        scopes
            .entry(scope_key)
            .or_insert_with(|| ScopeLogs {
                scope: scope.as_object().map(instrumentation_scope),
                ..Default::default()
            })
            .log_records
            .push(log_record(&fields, record));
    }
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_values()
            .map(|(resource, scopes)| ResourceLogs {
                resource: Some(resource),
                scope_logs: scopes.into_values().collect(),
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Reads a 2xx answer to a batch of `n` logs. An empty or full-success answer writes every
/// log. A partial success that rejected logs does not say which: every log of the batch is
/// then a permanent failure, so that none of the rejected ones is ACKed unwritten (the
/// others were stored, and are stored again if the dead letters are replayed). An answer
/// that does not decode is taken as success: the status said so, and OTLP receivers may
/// answer with an empty or JSON body.
pub fn settle(answer: &[u8], n: usize) -> Result<Option<Vec<Option<SinkFailure>>>, String> {
    let Ok(response) = ExportLogsServiceResponse::decode(answer) else {
        return Ok(None);
    };
    match response.partial_success {
        Some(partial) if partial.rejected_log_records > 0 => {
            let reason = format!(
                "the OTLP endpoint rejected {} of the {n} logs of this batch without saying which{}; every log of the batch is dead-lettered so that no rejected log is lost",
                partial.rejected_log_records,
                if partial.error_message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", partial.error_message)
                }
            );
            Ok(Some(vec![Some(SinkFailure::permanent(reason)); n]))
        }
        Some(partial) if !partial.error_message.is_empty() => Err(partial.error_message),
        _ => Ok(None),
    }
}

fn resource(fields: &Map<String, Value>, record: &LogRecord, labels: &SinkLabels) -> Value {
    let mut attributes = match fields.get("resource") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    attributes.insert("service.name".into(), record.service.clone().into());
    attributes.insert(
        "logstream.namespace".into(),
        labels.namespace.clone().into(),
    );
    attributes.insert("logstream.pipeline".into(), labels.pipeline.clone().into());
    attributes.insert("logstream.output".into(), labels.output.clone().into());
    Value::Object(attributes)
}

fn instrumentation_scope(scope: &Map<String, Value>) -> InstrumentationScope {
    let text = |key: &str| {
        scope
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    InstrumentationScope {
        name: text("name"),
        version: text("version"),
        attributes: match scope.get("attributes") {
            Some(Value::Object(m)) => key_values(m),
            _ => Vec::new(),
        },
        ..Default::default()
    }
}

fn log_record(fields: &Map<String, Value>, record: &LogRecord) -> OtlpRecord {
    let nanos = |t: jiff::Timestamp| u64::try_from(t.as_nanosecond()).unwrap_or(0);
    let observed = fields
        .get("observed_ts")
        .or_else(|| {
            fields
                .get(envelope::FIELD_META)
                .and_then(|m| m.get("received_at"))
        })
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .map_or(0, nanos);
    let severity_number = fields
        .get("severity_number")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_else(|| record.level.otlp_severity_number());
    let severity_text = fields
        .get("severity_text")
        .and_then(Value::as_str)
        .unwrap_or(record.level.as_str())
        .to_owned();
    let body = match fields.get("body") {
        Some(body) => json_to_any(body),
        None => string_value(
            fields
                .get(envelope::FIELD_MESSAGE)
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
    };
    let mut attributes = Vec::new();
    if let Some(Value::Object(own)) = fields.get("attributes") {
        attributes.extend(key_values(own));
    }
    for (key, value) in fields {
        if !RECORD_FIELDS.contains(&key.as_str()) && key != "resource" && key != "scope" {
            attributes.push(key_value(key, value));
        }
    }
    if let Some(Value::Object(meta)) = fields.get(envelope::FIELD_META) {
        for (key, value) in meta {
            if !matches!(key.as_str(), "namespace" | "pipeline" | "output") {
                attributes.push(key_value(&format!("logstream.{key}"), value));
            }
        }
    }
    let id = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .and_then(unhex)
            .unwrap_or_default()
    };
    OtlpRecord {
        time_unix_nano: nanos(record.ts),
        observed_time_unix_nano: observed,
        severity_number,
        severity_text,
        body: Some(body),
        attributes,
        flags: fields
            .get("flags")
            .and_then(Value::as_u64)
            .and_then(|f| u32::try_from(f).ok())
            .unwrap_or(0),
        trace_id: id("trace_id"),
        span_id: id("span_id"),
        event_name: fields
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        ..Default::default()
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsPartialSuccess, common::v1::any_value,
    };

    use super::*;
    use crate::delivery::{
        decode,
        envelope::{self, Origin},
    };

    fn labels() -> SinkLabels {
        SinkLabels {
            namespace: "games".into(),
            pipeline: "app".into(),
            output: "otel".into(),
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            output: "otel",
            ..Origin::test()
        }
    }

    fn attribute<'a>(record: &'a OtlpRecord, key: &str) -> Option<&'a any_value::Value> {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn json_logs_become_log_records_grouped_by_service() {
        let batch: Vec<LogRecord> = [
            r#"{"ts":"2024-05-01T09:00:00Z","level":"error","service":"api","message":"boom","user":{"id":7},"code":500}"#,
            r#"{"ts":"2024-05-01T09:00:01Z","level":"info","service":"auth","message":"ok"}"#,
            r#"{"ts":"2024-05-01T09:00:02Z","level":"warn","service":"api","message":"slow"}"#,
        ]
        .iter()
        .map(|body| envelope::decode(body.as_bytes(), 1 << 20, &origin()).unwrap())
        .collect();
        let request =
            ExportLogsServiceRequest::decode(&export_request(&batch, &labels())[..]).unwrap();
        assert_eq!(request.resource_logs.len(), 2);
        let api = &request.resource_logs[0];
        let service = api
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .unwrap();
        assert_eq!(
            service.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("api".into()))
        );
        let records = &api.scope_logs[0].log_records;
        assert_eq!(records.len(), 2);
        let boom = &records[0];
        assert_eq!(boom.severity_number, 17);
        assert_eq!(boom.severity_text, "error");
        assert_eq!(
            boom.time_unix_nano,
            u64::try_from(
                "2024-05-01T09:00:00Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .as_nanosecond()
            )
            .unwrap()
        );
        assert_eq!(
            boom.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("boom".into()))
        );
        assert_eq!(
            attribute(boom, "code"),
            Some(&any_value::Value::IntValue(500))
        );
        assert!(matches!(
            attribute(boom, "user"),
            Some(any_value::Value::KvlistValue(_))
        ));
        assert_eq!(
            attribute(boom, "logstream.message_id"),
            Some(&any_value::Value::StringValue("m-1".into()))
        );
        assert_eq!(records[1].severity_number, 13);
    }

    #[test]
    fn otlp_logs_go_out_as_they_came_in() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}},{"key":"host.name","value":{"stringValue":"h1"}}]},
            "scopeLogs":[{"scope":{"name":"lib","version":"2"},"logRecords":[{"timeUnixNano":"1700000000000000001","severityNumber":18,"severityText":"ERROR2",
            "body":{"kvlistValue":{"values":[{"key":"event","value":{"stringValue":"login"}}]}},
            "attributes":[{"key":"http.method","value":{"stringValue":"GET"}}],"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","flags":1}]}]}]}"#;
        let batch = decode::decode(body, 1 << 20, &origin()).unwrap();
        let request =
            ExportLogsServiceRequest::decode(&export_request(&batch, &labels())[..]).unwrap();
        let resource = &request.resource_logs[0];
        let keys: Vec<&str> = resource
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "host.name",
                "logstream.namespace",
                "logstream.output",
                "logstream.pipeline",
                "service.name"
            ]
        );
        let scope = &resource.scope_logs[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "lib");
        let r = &scope.log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(
            (r.severity_number, r.severity_text.as_str()),
            (18, "ERROR2")
        );
        assert!(matches!(
            r.body.as_ref().unwrap().value,
            Some(any_value::Value::KvlistValue(_))
        ));
        assert_eq!(
            attribute(r, "http.method"),
            Some(&any_value::Value::StringValue("GET".into()))
        );
        assert_eq!(r.trace_id[0], 0x5b);
        assert_eq!(r.span_id.len(), 8);
        assert_eq!(r.flags, 1);
        assert!(attribute(r, "resource").is_none() && attribute(r, "scope").is_none());
    }

    #[test]
    fn a_partial_success_dead_letters_the_whole_batch_and_a_full_one_writes_it() {
        let answer = |rejected: i64, message: &str| {
            ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message.into(),
                }),
            }
            .encode_to_vec()
        };
        let items = settle(&answer(2, "too old"), 5).unwrap().unwrap();
        assert_eq!(items.len(), 5);
        let failure = items[4].as_ref().unwrap();
        assert_eq!(
            failure.class,
            logstream_api::contract::ErrorClass::Permanent
        );
        assert!(failure.reason.starts_with("the OTLP endpoint rejected 2 of the 5 logs of this batch without saying which (too old)"), "{}", failure.reason);
        assert_eq!(settle(&answer(0, ""), 5), Ok(None));
        assert_eq!(settle(&answer(0, "slow down"), 5), Err("slow down".into()));
        assert_eq!(settle(b"", 5), Ok(None));
    }
}
