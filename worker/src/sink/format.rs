//! Request bodies of the sinks, and the Elasticsearch bulk answer: pure functions of the batch.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    SinkFailure, SinkLabels,
    classify::{StatusClass, http_status},
};
use crate::delivery::envelope::LogRecord;

/// The gzip level of `compression: gzip`: 1, the fastest. On 1 KB logs it keeps three
/// quarters of what level 6 saves (4× smaller bodies instead of 5.7×) for an eighth of its
/// CPU, about what decoding the log costs (docs/benchmarks.md): a worker's CPU is what limits
/// its throughput.
pub const GZIP_LEVEL: u32 = 1;

/// `body` gzip-compressed at [`GZIP_LEVEL`] (`Content-Encoding: gzip`).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// One JSON object per line, each line ending in `\n`.
pub fn ndjson(batch: &[LogRecord]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|r| r.json.len() + 1).sum());
    for record in batch {
        body.extend_from_slice(record.json.as_bytes());
        body.push(b'\n');
    }
    body
}

/// A JSON array of the logs.
pub fn json_array(batch: &[LogRecord]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|r| r.json.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, record) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record.json.as_bytes());
    }
    body.push(b']');
    body
}

/// A Loki push request (`POST /loki/api/v1/push`): one stream per (level, service), labelled
/// with the namespace, pipeline and output too; each value is `[<ns timestamp>, <JSON line>]`,
/// in time order.
pub fn loki(batch: &[LogRecord], labels: &SinkLabels) -> Vec<u8> {
    let mut streams: BTreeMap<LokiStream<'_>, Vec<(i128, &str)>> = BTreeMap::new();
    for record in batch {
        streams
            .entry(LokiStream {
                level: record.level.as_str(),
                service: &record.service,
            })
            .or_default()
            .push((record.ts.as_nanosecond(), record.json.as_str()));
    }
    let streams: Vec<Value> = streams
        .into_iter()
        .map(|(LokiStream { level, service }, mut values)| {
            values.sort_by_key(|(ts, _)| *ts);
            serde_json::json!({
                "stream": {
                    "namespace": labels.namespace,
                    "pipeline": labels.pipeline,
                    "output": labels.output,
                    "level": level,
                    "service": service,
                },
                "values": values
                    .into_iter()
                    .map(|(ts, line)| [ts.to_string(), line.to_owned()])
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "streams": streams })
        .to_string()
        .into_bytes()
}

/// The labels that set one Loki stream apart from the others of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LokiStream<'a> {
    level: &'a str,
    service: &'a str,
}

/// An Elasticsearch bulk request: an `index` action with `_id` = the log's id before each log,
/// so a retried log overwrites itself instead of being stored twice. `index` names the target
/// index in each action; `None` leaves it to the URL (`/<index>/_bulk`).
pub fn elasticsearch_bulk(batch: &[LogRecord], index: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|r| r.json.len() + r.id.len() + 64).sum());
    for record in batch {
        let mut action = serde_json::Map::new();
        if let Some(index) = index {
            action.insert("_index".into(), index.into());
        }
        action.insert("_id".into(), record.id.as_str().into());
        body.extend_from_slice(
            serde_json::json!({ "index": action })
                .to_string()
                .as_bytes(),
        );
        body.push(b'\n');
        body.extend_from_slice(record.json.as_bytes());
        body.push(b'\n');
    }
    body
}

/// The index of logs sent to a bulk URL that names none (`.../_bulk`):
/// `logstream-<namespace>-<pipeline>-<output>` (lowercase, as index names must be).
pub fn default_index(labels: &SinkLabels) -> String {
    format!(
        "logstream-{}-{}-{}",
        labels.namespace, labels.pipeline, labels.output
    )
    .to_lowercase()
}

#[derive(Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Reads a 2xx bulk answer for a batch of `n` logs: per log, `None` when it was stored, else
/// its failure (item 429 and 5xx transient, other item errors permanent). An answer that does
/// not say what happened to each log is a transient failure of the whole batch: logs are
/// indexed by id, so sending them again is safe.
pub fn elasticsearch_items(body: &[u8], n: usize) -> Result<Vec<Option<SinkFailure>>, SinkFailure> {
    let response: BulkResponse = serde_json::from_slice(body)
        .map_err(|e| SinkFailure::transient(format!("failed to read the bulk response: {e}")))?;
    if !response.errors {
        return Ok(vec![None; n]);
    }
    if response.items.len() != n {
        return Err(SinkFailure::transient(format!(
            "failed to read the bulk response: {} items for {n} logs",
            response.items.len()
        )));
    }
    Ok(response
        .items
        .iter()
        .map(|item| {
            let (action, result) = item.iter().next()?;
            match http_status(result.status) {
                StatusClass::Written => None,
                StatusClass::Failed(class) => Some(SinkFailure {
                    class,
                    reason: format!(
                        "bulk {action} answered {}: {}",
                        result.status,
                        result
                            .error
                            .as_ref()
                            .map_or_else(|| "no reason given".to_owned(), Value::to_string)
                    ),
                    status: Some(result.status),
                }),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use logstream_api::contract::{ErrorClass, Level};

    fn record(n: i64, level: Level, service: &str) -> LogRecord {
        LogRecord {
            json: format!(r#"{{"message":"m{n}"}}"#),
            level,
            service: service.into(),
            ts: Timestamp::from_second(1_700_000_000 + n).unwrap(),
            id: format!("id-{n}"),
        }
    }

    fn batch() -> Vec<LogRecord> {
        vec![
            record(2, Level::Info, "api"),
            record(1, Level::Info, "api"),
            record(3, Level::Critical, "auth"),
        ]
    }

    #[test]
    fn gzip_bodies_decompress_to_the_original() {
        use std::io::Read;
        let body = ndjson(&batch()).repeat(50);
        let compressed = gzip(&body);
        assert!(
            compressed.len() < body.len() / 5,
            "{} of {}",
            compressed.len(),
            body.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn json_and_ndjson_carry_every_log_in_order() {
        let array: Value = serde_json::from_slice(&json_array(&batch())).unwrap();
        assert_eq!(array[0]["message"], "m2");
        assert_eq!(array.as_array().unwrap().len(), 3);
        assert_eq!(
            String::from_utf8(ndjson(&batch())).unwrap(),
            "{\"message\":\"m2\"}\n{\"message\":\"m1\"}\n{\"message\":\"m3\"}\n"
        );
        assert_eq!(json_array(&[]), b"[]");
    }

    #[test]
    fn loki_groups_logs_into_labelled_streams_in_time_order() {
        let labels = SinkLabels {
            namespace: "games".into(),
            pipeline: "app".into(),
            output: "sec".into(),
        };
        let push: Value = serde_json::from_slice(&loki(&batch(), &labels)).unwrap();
        let streams = push["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        let info = streams
            .iter()
            .find(|s| s["stream"]["level"] == "info")
            .unwrap();
        assert_eq!(info["stream"]["service"], "api");
        assert_eq!(info["stream"]["pipeline"], "app");
        assert_eq!(info["values"][0][0], "1700000001000000000");
        assert_eq!(info["values"][0][1], r#"{"message":"m1"}"#);
        assert_eq!(info["values"][1][1], r#"{"message":"m2"}"#);
    }

    #[test]
    fn elasticsearch_bulk_indexes_each_log_under_its_id() {
        let body = String::from_utf8(elasticsearch_bulk(&batch()[..1], None)).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_id\":\"id-2\"}}\n{\"message\":\"m2\"}\n"
        );
        let body = String::from_utf8(elasticsearch_bulk(&batch()[..1], Some("logs"))).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_id\":\"id-2\",\"_index\":\"logs\"}}\n{\"message\":\"m2\"}\n"
        );
        let labels = SinkLabels {
            namespace: "games".into(),
            pipeline: "app".into(),
            output: "errors".into(),
        };
        assert_eq!(default_index(&labels), "logstream-games-app-errors");
    }

    #[test]
    fn bulk_item_errors_are_classified_per_log() {
        let answer = br#"{"took":3,"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":400,"error":{"type":"mapper_parsing_exception"}}},
            {"index":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"index":{"_id":"d","status":503}}]}"#;
        let items = elasticsearch_items(answer, 4).unwrap();
        assert_eq!(items[0], None);
        let bad = items[1].as_ref().unwrap();
        assert_eq!(bad.class, ErrorClass::Permanent);
        assert!(bad.reason.contains("400") && bad.reason.contains("mapper_parsing_exception"));
        assert_eq!(items[2].as_ref().unwrap().class, ErrorClass::Transient);
        assert_eq!(items[3].as_ref().unwrap().class, ErrorClass::Transient);
    }

    #[test]
    fn a_bulk_answer_without_errors_stores_everything() {
        let items = elasticsearch_items(br#"{"took":1,"errors":false,"items":[]}"#, 2).unwrap();
        assert_eq!(items, vec![None, None]);
    }

    #[test]
    fn an_unreadable_bulk_answer_fails_the_batch_transiently() {
        for answer in [&b"<html>"[..], br#"{"errors":true,"items":[]}"#] {
            let err = elasticsearch_items(answer, 2).unwrap_err();
            assert_eq!(err.class, ErrorClass::Transient);
        }
    }
}
