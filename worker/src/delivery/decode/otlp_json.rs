//! OTLP logs in their JSON encoding, read into the protobuf types so that both encodings take
//! one path. Both JSON dialects are read: the OTLP/JSON of the specification (integer enums,
//! hex trace and span ids) and protobuf's canonical JSON mapping, which the OpenTelemetry SDKs'
//! `MessageToJson` and the Collector's `otlp_json` encoding write (enum names such as
//! `SEVERITY_NUMBER_WARN`, 64-bit integers as strings, ids in base64); field names in
//! lowerCamelCase or snake_case.

use base64::Engine;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, LogsData, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use serde_json::{Map, Value};

use crate::delivery::envelope::EnvelopeError;

/// True when a JSON object is an OTLP `LogsData` (it has `resourceLogs`).
pub fn is_otlp(object: &Map<String, Value>) -> bool {
    object.contains_key("resourceLogs") || object.contains_key("resource_logs")
}

/// Reads an OTLP JSON `LogsData`.
pub fn logs_data(object: &Map<String, Value>) -> Result<LogsData, EnvelopeError> {
    let resource_logs = list(object, "resourceLogs", "resource_logs", "")?
        .iter()
        .enumerate()
        .map(|(i, r)| resource_logs(r, &format!("resourceLogs[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(LogsData { resource_logs })
}

fn resource_logs(value: &Value, at: &str) -> Result<ResourceLogs, EnvelopeError> {
    let o = object(value, at)?;
    let resource = match field(o, "resource", "resource") {
        Some(r) => {
            let at = format!("{at}.resource");
            Some(Resource {
                attributes: key_values(object(r, &at)?, &at)?,
                ..Default::default()
            })
        }
        None => None,
    };
    let scope_logs = list(o, "scopeLogs", "scope_logs", at)?
        .iter()
        .enumerate()
        .map(|(i, s)| scope_logs(s, &format!("{at}.scopeLogs[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(ResourceLogs {
        resource,
        scope_logs,
        ..Default::default()
    })
}

fn scope_logs(value: &Value, at: &str) -> Result<ScopeLogs, EnvelopeError> {
    let o = object(value, at)?;
    let scope = match field(o, "scope", "scope") {
        Some(s) => {
            let at = format!("{at}.scope");
            let so = object(s, &at)?;
            Some(InstrumentationScope {
                name: string(so, "name", "name", &at)?,
                version: string(so, "version", "version", &at)?,
                attributes: key_values(so, &at)?,
                ..Default::default()
            })
        }
        None => None,
    };
    let log_records = list(o, "logRecords", "log_records", at)?
        .iter()
        .enumerate()
        .map(|(i, r)| log_record(r, &format!("{at}.logRecords[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(ScopeLogs {
        scope,
        log_records,
        ..Default::default()
    })
}

fn log_record(value: &Value, at: &str) -> Result<LogRecord, EnvelopeError> {
    let o = object(value, at)?;
    let severity_number = match field(o, "severityNumber", "severity_number") {
        None | Some(Value::Null) => 0,
        Some(Value::String(name)) => SeverityNumber::from_str_name(name)
            .map(|s| i64::from(s as i32))
            .or_else(|| name.parse().ok())
            .ok_or_else(|| invalid(at, "severityNumber", "is not a severity"))?,
        Some(n) => integer(n).ok_or_else(|| invalid(at, "severityNumber", "is not a severity"))?,
    };
    Ok(LogRecord {
        time_unix_nano: unsigned(o, "timeUnixNano", "time_unix_nano", at)?,
        observed_time_unix_nano: unsigned(
            o,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            at,
        )?,
        severity_number: i32::try_from(severity_number)
            .map_err(|_| invalid(at, "severityNumber", "is out of range"))?,
        severity_text: string(o, "severityText", "severity_text", at)?,
        body: field(o, "body", "body")
            .map(|b| any_value(b, &format!("{at}.body")))
            .transpose()?,
        attributes: key_values(o, at)?,
        flags: u32::try_from(unsigned(o, "flags", "flags", at)?)
            .map_err(|_| invalid(at, "flags", "is out of range"))?,
        trace_id: id(o, "traceId", "trace_id", 16, at)?,
        span_id: id(o, "spanId", "span_id", 8, at)?,
        event_name: string(o, "eventName", "event_name", at)?,
        ..Default::default()
    })
}

fn key_values(o: &Map<String, Value>, at: &str) -> Result<Vec<KeyValue>, EnvelopeError> {
    list(o, "attributes", "attributes", at)?
        .iter()
        .enumerate()
        .map(|(i, kv)| key_value(kv, &format!("{at}.attributes[{i}]")))
        .collect()
}

fn key_value(value: &Value, at: &str) -> Result<KeyValue, EnvelopeError> {
    let o = object(value, at)?;
    Ok(KeyValue {
        key: string(o, "key", "key", at)?,
        value: field(o, "value", "value")
            .map(|v| any_value(v, &format!("{at}.value")))
            .transpose()?,
        ..Default::default()
    })
}

fn any_value(value: &Value, at: &str) -> Result<AnyValue, EnvelopeError> {
    use any_value::Value as V;
    let o = object(value, at)?;
    let Some((key, inner)) = o.iter().next() else {
        return Ok(AnyValue { value: None });
    };
    let bad = |what: &str| invalid(at, key, what);
    let value = match key.as_str() {
        "stringValue" | "string_value" => V::StringValue(
            inner
                .as_str()
                .ok_or_else(|| bad("is not a string"))?
                .to_owned(),
        ),
        "boolValue" | "bool_value" => {
            V::BoolValue(inner.as_bool().ok_or_else(|| bad("is not a boolean"))?)
        }
        "intValue" | "int_value" => {
            V::IntValue(integer(inner).ok_or_else(|| bad("is not an integer"))?)
        }
        "doubleValue" | "double_value" => V::DoubleValue(
            match inner {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| bad("is not a number"))?,
        ),
        "arrayValue" | "array_value" => V::ArrayValue(ArrayValue {
            values: list(object(inner, at)?, "values", "values", at)?
                .iter()
                .enumerate()
                .map(|(i, v)| any_value(v, &format!("{at}.{key}.values[{i}]")))
                .collect::<Result<_, _>>()?,
        }),
        "kvlistValue" | "kvlist_value" => V::KvlistValue(KeyValueList {
            values: list(object(inner, at)?, "values", "values", at)?
                .iter()
                .enumerate()
                .map(|(i, v)| key_value(v, &format!("{at}.{key}.values[{i}]")))
                .collect::<Result<_, _>>()?,
        }),
        "bytesValue" | "bytes_value" => V::BytesValue(
            inner
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| bad("is not base64"))?,
        ),
        _ => return Err(bad("is not an OTLP value")),
    };
    Ok(AnyValue { value: Some(value) })
}

fn field<'a>(o: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel).or_else(|| o.get(snake))
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, EnvelopeError> {
    value.as_object().ok_or_else(|| EnvelopeError::Otlp {
        reason: format!("OTLP JSON: {} is not an object", path(at, "")),
    })
}

fn list<'a>(
    o: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
    at: &str,
) -> Result<&'a [Value], EnvelopeError> {
    match field(o, camel, snake) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(at, camel, "is not an array")),
    }
}

fn string(
    o: &Map<String, Value>,
    camel: &str,
    snake: &str,
    at: &str,
) -> Result<String, EnvelopeError> {
    match field(o, camel, snake) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(at, camel, "is not a string")),
    }
}

fn unsigned(
    o: &Map<String, Value>,
    camel: &str,
    snake: &str,
    at: &str,
) -> Result<u64, EnvelopeError> {
    match field(o, camel, snake) {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| invalid(at, camel, "is not an unsigned integer"))
}

/// A JSON integer, or a string holding one (protobuf's JSON mapping of 64-bit integers).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A trace or span id of `len` bytes: hex (OTLP/JSON) or base64 (protobuf's JSON mapping),
/// told apart by length.
fn id(
    o: &Map<String, Value>,
    camel: &str,
    snake: &str,
    len: usize,
    at: &str,
) -> Result<Vec<u8>, EnvelopeError> {
    let text = string(o, camel, snake, at)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = if text.len() == 2 * len && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..len)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
    } else {
        base64::engine::general_purpose::STANDARD.decode(&text).ok()
    };
    bytes.filter(|b| b.len() == len).ok_or_else(|| {
        invalid(
            at,
            camel,
            &format!("is not a {len}-byte id in hex or base64"),
        )
    })
}

fn invalid(at: &str, field: &str, what: &str) -> EnvelopeError {
    EnvelopeError::Otlp {
        reason: format!("OTLP JSON: {} {what}", path(at, field)),
    }
}

fn path(at: &str, field: &str) -> String {
    match (at.is_empty(), field.is_empty()) {
        (true, true) => "the payload".to_owned(),
        (true, false) => field.to_owned(),
        (false, true) => at.to_owned(),
        (false, false) => format!("{at}.{field}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<LogsData, EnvelopeError> {
        let value: Value = serde_json::from_str(text).unwrap();
        logs_data(value.as_object().unwrap())
    }

    #[test]
    fn the_specifications_otlp_json_is_read() {
        // Integer enums, hex ids, 64-bit integers as strings (as in the specification's example).
        let data = read(
            r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
            "scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
            "logRecords":[{"timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000000","severityNumber":10,"severityText":"Information",
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","body":{"stringValue":"Example log record"},
            "attributes":[{"key":"int.attribute","value":{"intValue":"10"}},{"key":"double.attribute","value":{"doubleValue":637.704}},
            {"key":"array.attribute","value":{"arrayValue":{"values":[{"stringValue":"many"},{"stringValue":"values"}]}}},
            {"key":"map.attribute","value":{"kvlistValue":{"values":[{"key":"some.map.key","value":{"stringValue":"some value"}}]}}}]}]}]}]}"#,
        )
        .unwrap();
        let scope = &data.resource_logs[0].scope_logs[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "my.library");
        let r = &scope.log_records[0];
        assert_eq!(r.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(r.severity_number, 10);
        assert_eq!(r.trace_id[0], 0x5b);
        assert_eq!(r.span_id.len(), 8);
        assert_eq!(r.attributes.len(), 4);
    }

    #[test]
    fn protobufs_canonical_json_mapping_is_read_too() {
        // What MessageToJson writes: enum names, base64 ids, snake_case accepted as well.
        let data = read(
            r#"{"resource_logs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"SEVERITY_NUMBER_WARN","traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXQ=","time_unix_nano":"1"}]}]}]}"#,
        )
        .unwrap();
        let r = &data.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.trace_id[0], 0x5b);
        assert_eq!(r.span_id[0], 0xee);
        assert_eq!(r.time_unix_nano, 1);
    }

    #[test]
    fn malformed_otlp_json_is_refused_with_the_path_of_the_problem() {
        let err =
            read(r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#)
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "failed to decode log: OTLP JSON: resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano is not an unsigned integer"
        );
        let err = read(r#"{"resourceLogs":{}}"#).unwrap_err().to_string();
        assert!(err.ends_with("resourceLogs is not an array"), "{err}");
        let err = read(r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"abc"}]}]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("traceId is not a 16-byte id"), "{err}");
    }
}
