//! A JSON log object normalized into the log the sink receives.
//!
//! A log is a UTF-8 JSON object with a string `message` (or `msg`, as pino, zap and bunyan
//! write it), no bigger than the output's limit; anything else is a permanent failure whose
//! reason goes into `x-logstream-error`. Every other field is kept as it is (a producer adding
//! a field never breaks a worker), `level` and `ts` are normalized (`time`, `timestamp` and
//! `@timestamp` are read as `ts`; pino's and bunyan's numeric levels are understood), and a
//! `logstream` object records where and when the log went through. Bodies in other shapes
//! (OTLP) are turned into such objects by [`super::decode`].

use jiff::Timestamp;
use logstream_api::contract::Level;
use serde_json::{Map, Value};

/// Field holding the log's text.
pub const FIELD_MESSAGE: &str = "message";
/// Where pino, zap and bunyan put the log's text; read as `message` when that is absent.
pub const FIELD_MSG: &str = "msg";
/// Fields read as `ts` when it is absent, first match wins: pino and bunyan write `time`,
/// Vector and many JSON loggers `timestamp`, Logstash and ECS `@timestamp`.
pub const TS_ALIASES: [&str; 3] = ["time", "timestamp", "@timestamp"];
/// Field holding the level; normalized to `trace|debug|info|warn|error|critical`.
pub const FIELD_LEVEL: &str = "level";
/// Field holding the time of the log; normalized to RFC 3339 UTC.
pub const FIELD_TS: &str = "ts";
/// Field holding the producing service.
pub const FIELD_SERVICE: &str = "service";
/// Field the worker adds: `{namespace, pipeline, output, attempt, received_at, message_id}`.
pub const FIELD_META: &str = "logstream";
/// Where an unparseable `ts` is kept when the log gets another time.
pub const FIELD_TS_RAW: &str = "ts_raw";
/// Where an unknown `level` word is kept when the log is read as `info`.
pub const FIELD_LEVEL_RAW: &str = "level_raw";
/// The service of a log that names none.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Why a body is not a log. Always permanent: the same bytes never decode later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Bigger than the output's `maxMessageBytes`.
    #[error("failed to decode log: body of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("failed to decode log: body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Not JSON.
    #[error("failed to decode log: body is not JSON ({reason})")]
    NotJson {
        /// The parser's complaint.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("failed to decode log: body is a JSON {kind}, not an object")]
    NotAnObject {
        /// What it is instead.
        kind: &'static str,
    },
    /// An object without `message` (or `msg`).
    #[error("failed to decode log: the object has no \"message\" (or \"msg\") field")]
    MissingMessage,
    /// `message` is not a string.
    #[error("failed to decode log: field \"{field}\" is a {kind}, not a string")]
    MessageNotString {
        /// `message` or `msg`.
        field: &'static str,
        /// What it is instead.
        kind: &'static str,
    },
    /// An OTLP payload that does not decode.
    #[error("failed to decode log: {reason}")]
    Otlp {
        /// What is wrong, starting with the encoding (`OTLP protobuf ...`, `OTLP JSON ...`).
        reason: String,
    },
}

/// What the worker knows about a delivery besides its body.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// Namespace of the pipeline.
    pub namespace: &'a str,
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Output name.
    pub output: &'a str,
    /// Delivery number of this attempt (1 on the first try).
    pub attempt: u32,
    /// The message id, or a hash of the body when the producer set none.
    pub id: &'a str,
    /// The delivery's AMQP `content_type`, which tells OTLP protobuf from JSON.
    pub content_type: Option<&'a str>,
    /// The AMQP `timestamp` property (seconds since the epoch), used when the log has no `ts`.
    pub amqp_timestamp: Option<u64>,
    /// When the worker received the delivery.
    pub received_at: Timestamp,
}

#[cfg(test)]
impl Origin<'static> {
    /// The delivery of the unit tests: output games/app/sec, message id `m-1`, first attempt,
    /// no content type and no AMQP timestamp, received at 2024-05-01T10:00:00Z.
    pub fn test() -> Self {
        Self {
            namespace: "games",
            pipeline: "app",
            output: "sec",
            attempt: 1,
            id: "m-1",
            content_type: None,
            amqp_timestamp: None,
            received_at: "2024-05-01T10:00:00Z".parse().expect("a valid time"),
        }
    }
}

/// A decoded, normalized log, ready for any sink.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// The normalized log as one line of compact JSON.
    pub json: String,
    /// Its level.
    pub level: Level,
    /// Its service (`unknown` when it names none).
    pub service: String,
    /// Its time.
    pub ts: Timestamp,
    /// Its id (message id, or body hash): the Elasticsearch `_id`.
    pub id: String,
}

/// Decodes `body` (at most `limit` bytes), a JSON log object, into a log.
pub fn decode(body: &[u8], limit: usize, origin: &Origin<'_>) -> Result<LogRecord, EnvelopeError> {
    check_size(body, limit)?;
    match parse_json(body)? {
        Value::Object(fields) => normalize(fields, origin, None),
        other => Err(EnvelopeError::NotAnObject { kind: kind(&other) }),
    }
}

/// Refuses a body over `limit` bytes before anything reads it.
pub fn check_size(body: &[u8], limit: usize) -> Result<(), EnvelopeError> {
    if body.len() > limit {
        return Err(EnvelopeError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Parses a UTF-8 JSON body.
pub fn parse_json(body: &[u8]) -> Result<Value, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|e| EnvelopeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    serde_json::from_str(text).map_err(|e| EnvelopeError::NotJson {
        reason: e.to_string(),
    })
}

/// Normalizes one log object of a delivery. `index` is its position when the delivery carries
/// several logs (OTLP): it then gets its own id, `<message id>:<index>`, so that sinks keyed
/// by id (Elasticsearch) store each once.
pub fn normalize(
    mut fields: Map<String, Value>,
    origin: &Origin<'_>,
    index: Option<usize>,
) -> Result<LogRecord, EnvelopeError> {
    match fields.get(FIELD_MESSAGE) {
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(EnvelopeError::MessageNotString {
                field: FIELD_MESSAGE,
                kind: kind(other),
            });
        }
        None => match fields.remove(FIELD_MSG) {
            Some(Value::String(msg)) => {
                fields.insert(FIELD_MESSAGE.to_owned(), Value::String(msg));
            }
            Some(other) => {
                return Err(EnvelopeError::MessageNotString {
                    field: FIELD_MSG,
                    kind: kind(&other),
                });
            }
            None => return Err(EnvelopeError::MissingMessage),
        },
    }

    let level = normalize_level(&mut fields);
    let ts = normalize_ts(&mut fields, origin);
    let service = match fields.get(FIELD_SERVICE) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => UNKNOWN_SERVICE.to_owned(),
    };
    fields.insert(FIELD_META.to_owned(), meta(origin, index));
    let json = Value::Object(fields).to_string();
    Ok(LogRecord {
        json,
        level,
        service,
        ts,
        id: match index {
            Some(i) => format!("{}:{i}", origin.id),
            None => origin.id.to_owned(),
        },
    })
}

fn normalize_level(fields: &mut Map<String, Value>) -> Level {
    let (parsed, keep_raw) = match fields.get(FIELD_LEVEL) {
        Some(Value::String(s)) => (Level::parse_lenient(s), false),
        // pino and bunyan: the number is kept, the word is what sinks group by.
        Some(Value::Number(n)) => (n.as_f64().map(numeric_level), true),
        _ => (None, false),
    };
    let level = parsed.unwrap_or(Level::Info);
    if (parsed.is_none() || keep_raw)
        && let Some(raw) = fields.remove(FIELD_LEVEL)
        && !raw.is_null()
    {
        fields.insert(FIELD_LEVEL_RAW.to_owned(), raw);
    }
    fields.insert(
        FIELD_LEVEL.to_owned(),
        Value::String(level.as_str().to_owned()),
    );
    level
}

/// pino's and bunyan's numeric levels: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60
/// fatal (critical); numbers between two levels count as the lower one.
pub fn numeric_level(n: f64) -> Level {
    match n {
        n if n >= 60.0 => Level::Critical,
        n if n >= 50.0 => Level::Error,
        n if n >= 40.0 => Level::Warn,
        n if n >= 30.0 => Level::Info,
        n if n >= 20.0 => Level::Debug,
        _ => Level::Trace,
    }
}

fn normalize_ts(fields: &mut Map<String, Value>, origin: &Origin<'_>) -> Timestamp {
    if !fields.contains_key(FIELD_TS)
        && let Some(alias) = TS_ALIASES.iter().find(|a| fields.contains_key(**a))
        && let Some(value) = fields.remove(*alias)
    {
        fields.insert(FIELD_TS.to_owned(), value);
    }
    let parsed = fields.get(FIELD_TS).and_then(parse_ts);
    let ts = parsed.unwrap_or_else(|| {
        origin
            .amqp_timestamp
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(origin.received_at)
    });
    if parsed.is_none()
        && let Some(raw) = fields.remove(FIELD_TS)
        && !raw.is_null()
    {
        fields.insert(FIELD_TS_RAW.to_owned(), raw);
    }
    fields.insert(FIELD_TS.to_owned(), Value::String(ts.to_string()));
    ts
}

/// Reads a `ts`: an RFC 3339 string, or a number of seconds, milliseconds, microseconds or
/// nanoseconds since the epoch (told apart by magnitude, as log shippers do).
fn parse_ts(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(s) => s.trim().parse::<Timestamp>().ok(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // Integers exactly: an f64 cannot hold epoch nanoseconds.
                let scale: i128 = match i.unsigned_abs() {
                    a if a < 100_000_000_000 => 1_000_000_000,
                    a if a < 100_000_000_000_000 => 1_000_000,
                    a if a < 100_000_000_000_000_000 => 1_000,
                    _ => 1,
                };
                return Timestamp::from_nanosecond(i128::from(i) * scale).ok();
            }
            let v = n.as_f64()?;
            let scale = match v.abs() {
                a if a < 1e11 => 1e9,
                a if a < 1e14 => 1e6,
                a if a < 1e17 => 1e3,
                _ => 1.0,
            };
            let nanos = v * scale;
            if !nanos.is_finite() {
                return None;
            }
            // `as` saturates; out-of-range times are refused by jiff below.
            Timestamp::from_nanosecond(nanos as i128).ok()
        }
        _ => None,
    }
}

fn meta(origin: &Origin<'_>, index: Option<usize>) -> Value {
    let mut m = Map::new();
    m.insert("namespace".into(), origin.namespace.into());
    m.insert("pipeline".into(), origin.pipeline.into());
    m.insert("output".into(), origin.output.into());
    m.insert("attempt".into(), origin.attempt.into());
    m.insert(
        "received_at".into(),
        Value::String(origin.received_at.to_string()),
    );
    m.insert("message_id".into(), origin.id.into());
    if let Some(i) = index {
        m.insert("record".into(), i.into());
    }
    Value::Object(m)
}

/// The JSON type of `value`, in words.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 256 * 1024;

    fn origin() -> Origin<'static> {
        Origin {
            attempt: 2,
            amqp_timestamp: Some(1_700_000_000),
            ..Origin::test()
        }
    }

    fn decoded(body: &str) -> (LogRecord, Value) {
        let record = decode(body.as_bytes(), LIMIT, &origin()).unwrap();
        let value = serde_json::from_str(&record.json).unwrap();
        (record, value)
    }

    #[test]
    fn keeps_unknown_fields_and_adds_where_the_log_went() {
        let (record, v) = decoded(
            r#"{"ts":"2024-05-01T09:59:59.5+02:00","level":"WARNING","service":"api","message":"hi","user":{"id":7},"tags":["a"]}"#,
        );
        assert_eq!(v["message"], "hi");
        assert_eq!(v["user"]["id"], 7);
        assert_eq!(v["tags"][0], "a");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["ts"], "2024-05-01T07:59:59.5Z");
        assert_eq!(v["logstream"]["pipeline"], "app");
        assert_eq!(v["logstream"]["output"], "sec");
        assert_eq!(v["logstream"]["attempt"], 2);
        assert_eq!(v["logstream"]["message_id"], "m-1");
        assert_eq!(v["logstream"]["received_at"], "2024-05-01T10:00:00Z");
        assert_eq!(record.level, Level::Warn);
        assert_eq!(record.service, "api");
        assert_eq!(record.id, "m-1");
        assert!(!record.json.contains('\n'), "one line per log");
    }

    #[test]
    fn numeric_times_are_read_by_magnitude() {
        for ts in [
            "1700000000",
            "1700000000000",
            "1700000000000000",
            "1700000000000000000",
        ] {
            let (record, v) = decoded(&format!(r#"{{"ts":{ts},"message":"m"}}"#));
            assert_eq!(v["ts"], "2023-11-14T22:13:20Z", "{ts}");
            assert_eq!(record.ts.as_second(), 1_700_000_000);
        }
    }

    #[test]
    fn a_missing_or_unreadable_time_falls_back_and_is_kept() {
        let (_, v) = decoded(r#"{"message":"m"}"#);
        assert_eq!(v["ts"], "2023-11-14T22:13:20Z", "from the AMQP timestamp");
        let (_, v) = decoded(r#"{"message":"m","ts":"yesterday"}"#);
        assert_eq!(v["ts"], "2023-11-14T22:13:20Z");
        assert_eq!(v["ts_raw"], "yesterday");
        let mut no_amqp = origin();
        no_amqp.amqp_timestamp = None;
        let record = decode(br#"{"message":"m"}"#, LIMIT, &no_amqp).unwrap();
        assert_eq!(record.ts, no_amqp.received_at);
    }

    #[test]
    fn unknown_levels_become_info_and_are_kept() {
        let (record, v) = decoded(r#"{"message":"m","level":"loud","service":" "}"#);
        assert_eq!(record.level, Level::Info);
        assert_eq!(v["level"], "info");
        assert_eq!(v["level_raw"], "loud");
        assert_eq!(record.service, UNKNOWN_SERVICE);
        let (_, v) = decoded(r#"{"message":"m"}"#);
        assert_eq!(v["level"], "info");
        assert!(v.get("level_raw").is_none());
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        let o = origin();
        let cases: [(&[u8], EnvelopeError); 6] = [
            (
                b"{\"message\": \"caf\xff\"}",
                EnvelopeError::NotUtf8 { offset: 16 },
            ),
            (b"[1, 2]", EnvelopeError::NotAnObject { kind: "array" }),
            (b"\"text\"", EnvelopeError::NotAnObject { kind: "string" }),
            (b"{\"text\": \"x\"}", EnvelopeError::MissingMessage),
            (
                b"{\"message\": 42}",
                EnvelopeError::MessageNotString {
                    field: "message",
                    kind: "number",
                },
            ),
            (
                b"{\"msg\": null}",
                EnvelopeError::MessageNotString {
                    field: "msg",
                    kind: "null",
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(decode(body, LIMIT, &o).unwrap_err(), expected);
        }
        let err = decode(b"{\"message\": ", LIMIT, &o).unwrap_err();
        assert!(matches!(err, EnvelopeError::NotJson { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("failed to decode log: body is not JSON (")
        );
    }

    #[test]
    fn bodies_over_the_limit_are_refused_before_parsing() {
        let body = format!(r#"{{"message":"{}"}}"#, "x".repeat(2000));
        let err = decode(body.as_bytes(), 1024, &origin()).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::TooLarge {
                size: body.len(),
                limit: 1024
            }
        );
        assert!(err.to_string().contains("over the limit of 1024 bytes"));
        assert!(decode(body.as_bytes(), body.len(), &origin()).is_ok());
    }

    #[test]
    fn pino_logs_are_read_with_their_numeric_level_msg_and_epoch_millisecond_time() {
        let (record, v) = decoded(
            r#"{"level":50,"time":1700000000123,"pid":7,"hostname":"h","msg":"db down","service":"api"}"#,
        );
        assert_eq!(record.level, Level::Error);
        assert_eq!(v["level"], "error");
        assert_eq!(v["level_raw"], 50);
        assert_eq!(v["message"], "db down");
        assert!(v.get("msg").is_none() && v.get("time").is_none(), "{v}");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["pid"], 7);
        for (n, level) in [
            (10, Level::Trace),
            (20, Level::Debug),
            (30, Level::Info),
            (40, Level::Warn),
            (60, Level::Critical),
            (35, Level::Info),
        ] {
            let (record, _) = decoded(&format!(r#"{{"level":{n},"msg":"m"}}"#));
            assert_eq!(record.level, level, "{n}");
        }
    }

    #[test]
    fn zap_bunyan_and_shipper_time_fields_are_read_as_ts() {
        // zap: epoch seconds as a float in `ts`, `msg`.
        let (record, v) =
            decoded(r#"{"level":"warn","ts":1700000000.5,"caller":"main.go:12","msg":"slow"}"#);
        assert_eq!(
            (record.level, v["message"].as_str()),
            (Level::Warn, Some("slow"))
        );
        assert_eq!(v["ts"], "2023-11-14T22:13:20.5Z");
        // bunyan: `time` as RFC 3339.
        let (_, v) = decoded(
            r#"{"v":0,"level":30,"name":"app","time":"2024-05-01T10:00:00.250Z","msg":"hi"}"#,
        );
        assert_eq!(v["ts"], "2024-05-01T10:00:00.25Z");
        // Vector: `timestamp`; Logstash and ECS: `@timestamp`.
        let (_, v) = decoded(r#"{"message":"m","timestamp":"2024-05-01T10:00:00Z","host":"h"}"#);
        assert_eq!(v["ts"], "2024-05-01T10:00:00Z");
        let (_, v) = decoded(r#"{"message":"m","@timestamp":"2024-05-01T10:00:01Z"}"#);
        assert_eq!(v["ts"], "2024-05-01T10:00:01Z");
        // `ts` wins; the others stay as they are.
        let (_, v) = decoded(r#"{"message":"m","ts":"2024-05-01T10:00:02Z","time":"x"}"#);
        assert_eq!(
            (v["ts"].as_str(), v["time"].as_str()),
            (Some("2024-05-01T10:00:02Z"), Some("x"))
        );
        // `message` wins over `msg`, which is then kept.
        let (_, v) = decoded(r#"{"message":"m","msg":"other"}"#);
        assert_eq!(
            (v["message"].as_str(), v["msg"].as_str()),
            (Some("m"), Some("other"))
        );
    }

    #[test]
    fn a_log_of_a_several_log_delivery_gets_its_own_id() {
        let fields = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
        let record = normalize(fields, &origin(), Some(3)).unwrap();
        assert_eq!(record.id, "m-1:3");
        let v: Value = serde_json::from_str(&record.json).unwrap();
        assert_eq!(v["logstream"]["message_id"], "m-1");
        assert_eq!(v["logstream"]["record"], 3);
    }
}
