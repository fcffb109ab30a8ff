//! What a log costs on the way in and out, per 1 KB log, measured side by side in one process:
//!
//! - **out**: for each HTTP format (json, ndjson, loki, elasticsearch, otlp), the bytes a batch
//!   of 100 logs puts on the wire and the worker CPU to build that body, without and with gzip
//!   (`sink.http.compression`);
//! - **in**: the decode cost per log of a JSON log, of OTLP protobuf (`LogsData` of 100
//!   records, as the Collector's exporter batches) and of OTLP JSON (the same, as protobuf's
//!   JSON mapping writes it).
//!
//! The logs are realistic text (words, ids, numbers), not padding, so gzip sees what it would
//! see in production. CPU is the bench thread's own CPU time (`/proc/thread-self/schedstat`:
//! other processes on a shared machine do not count) on a CPU-bound loop (no I/O), best of
//! `LOGSTREAM_BENCH_ROUNDS` rounds (default 5). gzip runs at the sink's level (1) and, for
//! comparison, at level 6 (zlib's default). Run with `make bench-sink-encoding`
//! (or `cargo bench -p logstream-worker --bench sink_encoding`); the table goes to stdout.

use std::time::Instant;

use jiff::Timestamp;
use logstream_worker::{
    delivery::{
        decode,
        envelope::{LogRecord, Origin},
    },
    sink::{SinkLabels, format, otlp},
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value},
    logs::v1::{LogRecord as OtlpRecord, LogsData, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::{Value, json};

const BATCH: usize = 100;
const TARGET_BYTES: usize = 1024;

const WORDS: [&str; 32] = [
    "request",
    "user",
    "payment",
    "failed",
    "retry",
    "timeout",
    "order",
    "cart",
    "session",
    "token",
    "accepted",
    "checkout",
    "database",
    "query",
    "slow",
    "cache",
    "miss",
    "hit",
    "upstream",
    "gateway",
    "latency",
    "ms",
    "queue",
    "worker",
    "shipped",
    "invoice",
    "refund",
    "login",
    "logout",
    "region",
    "eu-west-1",
    "pod",
];

/// A small deterministic generator, so every run measures the same logs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn origin(i: usize) -> (String, Timestamp) {
    (
        format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
        "2026-05-01T10:00:00Z".parse().unwrap(),
    )
}

/// The producer's body of log `i`: about 1 KB once the worker added its `logstream` object.
fn producer_log(rng: &mut Lcg, i: usize) -> Value {
    let levels = ["info", "info", "info", "warn", "error"];
    let service = ["api", "checkout", "auth"][i % 3];
    let mut log = json!({
        "ts": format!("2026-05-01T10:00:{:02}.{:03}Z", i % 60, rng.next() % 1000),
        "level": levels[i % levels.len()],
        "service": service,
        "message": format!("{} {}", rng.words(6), rng.next() % 10_000),
        "trace_id": format!("{:016x}{:016x}", rng.next(), rng.next()),
        "user": {"id": rng.next() % 100_000, "region": "eu-west-1"},
        "http": {"method": "POST", "path": format!("/v1/orders/{}", rng.next() % 1_000_000), "status": 200 + (rng.next() % 4) * 100, "duration_ms": rng.next() % 900},
    });
    let mut detail = String::new();
    while log.to_string().len() + detail.len() + 200 < TARGET_BYTES {
        detail.push_str(&rng.words(1));
        detail.push(' ');
    }
    log["detail"] = detail.trim_end().into();
    log
}

fn decoded_batch() -> Vec<LogRecord> {
    let mut rng = Lcg(7);
    (0..BATCH)
        .map(|i| {
            let body = producer_log(&mut rng, i).to_string();
            let (id, received_at) = origin(i);
            let origin = Origin {
                namespace: "games",
                pipeline: "app",
                output: "out",
                attempt: 1,
                id: &id,
                content_type: Some("application/json"),
                amqp_timestamp: None,
                received_at,
            };
            decode::decode(body.as_bytes(), 1 << 20, &origin)
                .unwrap()
                .remove(0)
        })
        .collect()
}

/// This thread's CPU time so far, in nanoseconds (`/proc/thread-self/schedstat`), so that
/// other processes on a shared machine do not inflate the figures; wall time where it is
/// missing.
fn thread_cpu_ns(started: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| started.elapsed().as_nanos() as f64)
}

/// CPU nanoseconds per call of `f`, best of `rounds` rounds of `iterations` calls.
fn time_per_call(rounds: usize, iterations: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut sink = 0usize;
    let mut best = f64::MAX;
    let epoch = Instant::now();
    for _ in 0..rounds {
        let started = thread_cpu_ns(epoch);
        for _ in 0..iterations {
            sink = sink.wrapping_add(f());
        }
        best = best.min((thread_cpu_ns(epoch) - started) / iterations as f64);
    }
    std::hint::black_box(sink);
    best
}

fn otlp_logs_data(rng: &mut Lcg) -> LogsData {
    let text = |s: String| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        })
    };
    let attr = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    LogsData {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    attr(
                        "service.name",
                        any_value::Value::StringValue("checkout".into()),
                    ),
                    attr(
                        "k8s.pod.name",
                        any_value::Value::StringValue("checkout-7d9f".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..BATCH)
                    .map(|i| {
                        let mut record = OtlpRecord {
                            time_unix_nano: 1_777_629_600_000_000_000 + i as u64,
                            severity_number: 9,
                            severity_text: "INFO".into(),
                            body: text(rng.words(8)),
                            attributes: vec![
                                attr(
                                    "user.id",
                                    any_value::Value::IntValue((rng.next() % 100_000) as i64),
                                ),
                                attr("http.method", any_value::Value::StringValue("POST".into())),
                                attr(
                                    "http.route",
                                    any_value::Value::StringValue(format!(
                                        "/v1/orders/{}",
                                        rng.next() % 1_000_000
                                    )),
                                ),
                                attr("http.status_code", any_value::Value::IntValue(200)),
                            ],
                            trace_id: rng.next().to_be_bytes().repeat(2),
                            span_id: rng.next().to_be_bytes().to_vec(),
                            ..Default::default()
                        };
                        // Pad with words to about 1 KB of OTLP per record.
                        let mut detail = String::new();
                        while record.encoded_len() + detail.len() + 16 < TARGET_BYTES - 200 {
                            detail.push_str(&rng.words(1));
                            detail.push(' ');
                        }
                        record
                            .attributes
                            .push(attr("detail", any_value::Value::StringValue(detail)));
                        record
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `data` in protobuf's JSON mapping (camelCase, 64-bit integers as strings, ids in base64
/// would be the Python form; the specification's hex ids are written here).
fn otlp_json(data: &LogsData) -> Vec<u8> {
    use logstream_api::otlp::any_to_json;
    let kvs = |list: &[KeyValue]| -> Value {
        list.iter()
            .map(|kv| {
                let v = kv.value.as_ref().map(any_to_json).unwrap_or(Value::Null);
                let typed = match v {
                    Value::String(s) => json!({"stringValue": s}),
                    Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
                    other => json!({"stringValue": other.to_string()}),
                };
                json!({"key": kv.key, "value": typed})
            })
            .collect()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let r = &data.resource_logs[0];
    json!({"resourceLogs": [{
        "resource": {"attributes": kvs(&r.resource.as_ref().unwrap().attributes)},
        "scopeLogs": [{"logRecords": r.scope_logs[0].log_records.iter().map(|l| json!({
            "timeUnixNano": l.time_unix_nano.to_string(),
            "severityNumber": l.severity_number,
            "severityText": l.severity_text,
            "body": {"stringValue": l.body.as_ref().map(any_to_json).unwrap_or_default()},
            "attributes": kvs(&l.attributes),
            "traceId": hex(&l.trace_id),
            "spanId": hex(&l.span_id),
        })).collect::<Vec<_>>()}]
    }]})
    .to_string()
    .into_bytes()
}

/// gzip at level 6 (zlib's default), for comparison with the sink's level 1.
fn gzip_6(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

fn main() {
    let rounds: usize = std::env::var("LOGSTREAM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let batch = decoded_batch();
    let labels = SinkLabels {
        namespace: "games".into(),
        pipeline: "app".into(),
        output: "out".into(),
    };
    let avg_log = batch.iter().map(|r| r.json.len()).sum::<usize>() / batch.len();
    println!(
        "Sink bodies, per log, batches of {BATCH} logs of {avg_log} bytes of JSON each (thread CPU time, best of {rounds} rounds):\n"
    );
    println!(
        "| format | bytes/log | gzip bytes/log | ratio | CPU/log | CPU/log with gzip | gzip -6 bytes/log | CPU/log with gzip -6 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    type Encoder<'a> = Box<dyn Fn(&[LogRecord]) -> Vec<u8> + 'a>;
    let formats: Vec<(&str, Encoder<'_>)> = vec![
        ("json", Box::new(format::json_array)),
        ("ndjson", Box::new(format::ndjson)),
        ("loki", Box::new(|b| format::loki(b, &labels))),
        (
            "elasticsearch",
            Box::new(|b| format::elasticsearch_bulk(b, None)),
        ),
        ("otlp", Box::new(|b| otlp::export_request(b, &labels))),
    ];
    let iterations = 200;
    for (name, encode) in &formats {
        let plain = encode(&batch);
        let zipped = format::gzip(&plain);
        let cpu = time_per_call(rounds, iterations, || encode(&batch).len()) / BATCH as f64;
        let cpu_gzip = time_per_call(rounds, iterations, || format::gzip(&encode(&batch)).len())
            / BATCH as f64;
        let six = gzip_6(&plain);
        let cpu_six =
            time_per_call(rounds, iterations, || gzip_6(&encode(&batch)).len()) / BATCH as f64;
        println!(
            "| {name} | {:.0} | {:.0} | {:.1}× | {:.2} µs | {:.2} µs | {:.0} | {:.2} µs |",
            plain.len() as f64 / BATCH as f64,
            zipped.len() as f64 / BATCH as f64,
            plain.len() as f64 / zipped.len() as f64,
            cpu / 1000.0,
            cpu_gzip / 1000.0,
            six.len() as f64 / BATCH as f64,
            cpu_six / 1000.0,
        );
    }

    println!("\nDecoding, per log (thread CPU time, best of {rounds} rounds):\n");
    println!("| payload | bytes/log | decode CPU/log |");
    println!("| --- | ---: | ---: |");
    let mut rng = Lcg(11);
    let json_bodies: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| producer_log(&mut rng, i).to_string().into_bytes())
        .collect();
    let (id, received_at) = origin(0);
    let origin_with = |content_type| Origin {
        namespace: "games",
        pipeline: "app",
        output: "out",
        attempt: 1,
        id: &id,
        content_type,
        amqp_timestamp: None,
        received_at,
    };
    let json_origin = origin_with(Some("application/json"));
    let per_log = time_per_call(rounds, iterations, || {
        json_bodies
            .iter()
            .map(|b| decode::decode(b, 1 << 20, &json_origin).unwrap().len())
            .sum()
    }) / BATCH as f64;
    let json_bytes = json_bodies.iter().map(Vec::len).sum::<usize>() / BATCH;
    println!(
        "| JSON log (one per message) | {json_bytes} | {:.2} µs |",
        per_log / 1000.0
    );
    let data = otlp_logs_data(&mut rng);
    let protobuf = data.encode_to_vec();
    let proto_origin = origin_with(Some("application/x-protobuf"));
    let per_log = time_per_call(rounds, iterations, || {
        decode::decode(&protobuf, 1 << 24, &proto_origin)
            .unwrap()
            .len()
    }) / BATCH as f64;
    println!(
        "| OTLP protobuf (LogsData of {BATCH}) | {} | {:.2} µs |",
        protobuf.len() / BATCH,
        per_log / 1000.0
    );
    let json = otlp_json(&data);
    let otlp_json_origin = origin_with(Some("application/json"));
    let per_log = time_per_call(rounds, iterations, || {
        decode::decode(&json, 1 << 24, &otlp_json_origin)
            .unwrap()
            .len()
    }) / BATCH as f64;
    println!(
        "| OTLP JSON (LogsData of {BATCH}) | {} | {:.2} µs |",
        json.len() / BATCH,
        per_log / 1000.0
    );
}
