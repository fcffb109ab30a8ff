//! OpenTelemetry's log values and JSON, one conversion each way, for everything that reads or
//! writes OTLP: the worker (an OTLP log in, an OTLP/HTTP sink out) and the CLI (`logstream
//! produce --format otlp`, which publishes as the Collector's RabbitMQ exporter does). With the
//! `otlp` feature.
//!
//! JSON to OTLP: objects as key-value lists, integers as integers, other numbers as doubles,
//! null as an empty value. OTLP to JSON: strings, booleans, integers and doubles as themselves,
//! arrays as arrays, key-value lists as objects, bytes as base64.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use serde_json::{Map, Value};

/// Content type of OTLP protobuf, on AMQP messages and OTLP/HTTP requests alike.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// A JSON value as an OTLP value.
pub fn json_to_any(value: &Value) -> AnyValue {
    use any_value::Value as V;
    AnyValue {
        value: match value {
            Value::Null => None,
            Value::Bool(b) => Some(V::BoolValue(*b)),
            Value::Number(n) => Some(match n.as_i64() {
                Some(i) => V::IntValue(i),
                None => V::DoubleValue(n.as_f64().unwrap_or_default()),
            }),
            Value::String(s) => Some(V::StringValue(s.clone())),
            Value::Array(items) => Some(V::ArrayValue(ArrayValue {
                values: items.iter().map(json_to_any).collect(),
            })),
            Value::Object(m) => Some(V::KvlistValue(KeyValueList {
                values: key_values(m),
            })),
        },
    }
}

/// A JSON object's entries as OTLP attributes, in the object's order.
pub fn key_values(map: &Map<String, Value>) -> Vec<KeyValue> {
    map.iter().map(|(k, v)| key_value(k, v)).collect()
}

/// One attribute.
pub fn key_value(key: &str, value: &Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(json_to_any(value)),
        ..Default::default()
    }
}

/// A string as an OTLP value.
pub fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

/// OTLP attributes as a JSON object (a repeated key keeps its last value).
pub fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, any_to_json),
            )
        })
        .collect()
}

/// An OTLP value as JSON.
pub fn any_to_json(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // Profiles only: nothing to show for a log.
        Some(any_value::Value::StringValueStrindex(_)) | None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_goes_to_otlp_and_back_unchanged() {
        let value = json!({
            "s": "text", "b": true, "i": -3, "d": 1.5, "null": null,
            "list": [1, "two", {"three": 3}],
            "nested": {"k": "v"},
        });
        assert_eq!(any_to_json(&json_to_any(&value)), value);
    }

    #[test]
    fn integers_stay_integers_and_other_numbers_become_doubles() {
        use any_value::Value as V;
        assert_eq!(json_to_any(&json!(7)).value, Some(V::IntValue(7)));
        assert_eq!(json_to_any(&json!(0.25)).value, Some(V::DoubleValue(0.25)));
        assert_eq!(json_to_any(&Value::Null).value, None);
    }

    #[test]
    fn bytes_read_as_base64_and_a_repeated_key_keeps_its_last_value() {
        let bytes = AnyValue {
            value: Some(any_value::Value::BytesValue(vec![0xde, 0xad])),
        };
        assert_eq!(any_to_json(&bytes), json!("3q0="));
        let list = [key_value("k", &json!(1)), key_value("k", &json!(2))];
        assert_eq!(Value::Object(attributes(&list)), json!({"k": 2}));
    }
}
