//! The worker meets the log shippers, through the real broker to a real sink: OTLP logs as the
//! OpenTelemetry Collector's RabbitMQ exporter publishes them (protobuf built from the official
//! definitions, with or without a content type; JSON as the Python SDK's protobuf classes write
//! it), pino, zap, bunyan and Vector events; a delivery carrying several logs is settled once,
//! from all of them; and the OTLP/HTTP sink, gzip-compressed, against a server that decodes
//! the protobuf and answers partial success.

mod support;

use std::{
    io::Read,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use lapin::BasicProperties;
use logstream_api::{
    contract::{HEADER_ERROR, HEADER_ERROR_CLASS},
    pipeline::{Compression, HttpFormat, HttpSink, SinkSpec},
};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    logs::v1::{LogRecord, LogsData, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::Value;
use support::{
    PipelineOptions, Reply, SinkServer, TestDir, TestPipeline, TestVhost, WorkerProcess,
    eventually, log_properties, message_of, publish,
};

const SETTLED: Duration = Duration::from_secs(60);

async fn settled(worker: &WorkerProcess, outcome: &str, n: f64) {
    eventually(
        SETTLED,
        &format!("{n} deliveries settled as {outcome}"),
        || async {
            let value = worker
                .metric("logstream_messages_total", &[("outcome", outcome)])
                .await?;
            (value >= n).then_some(())
        },
    )
    .await;
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A `LogsData` of `service` with one record per `(severity number, body)`.
fn logs_data(service: &str, records: &[(i32, &str)]) -> LogsData {
    LogsData {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    attribute(
                        "service.name",
                        any_value::Value::StringValue(service.into()),
                    ),
                    attribute(
                        "k8s.pod.name",
                        any_value::Value::StringValue(format!("{service}-0")),
                    ),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                log_records: records
                    .iter()
                    .enumerate()
                    .map(|(i, (severity, body))| LogRecord {
                        time_unix_nano: 1_714_557_600_000_000_000 + i as u64,
                        severity_number: *severity,
                        body: string(body),
                        attributes: vec![attribute("seq", any_value::Value::IntValue(i as i64))],
                        trace_id: vec![0x5b; 16],
                        span_id: vec![0xee; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The properties the Collector's RabbitMQ exporter sets: persistent, nothing else.
fn collector_properties() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn log_with_message<'a>(logs: &'a [Value], message: &str) -> &'a Value {
    logs.iter()
        .find(|l| message_of(l) == message)
        .unwrap_or_else(|| panic!("no log {message:?} among {logs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_protobuf_from_the_collector_becomes_one_log_per_record_with_its_resource() {
    let vhost = TestVhost::new("otlp-protobuf").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("otlp-protobuf");
    let (_connection, channel) = vhost.confirm_channel().await;
    // As the Collector publishes: no content type, no message id, routing key otlp_logs.
    let batch = logs_data("checkout", &[(9, "paid"), (13, "slow"), (21, "down")]);
    publish(
        &channel,
        pipeline.exchange(),
        "otlp_logs",
        &batch.encode_to_vec(),
        collector_properties(),
    )
    .await;
    // As `logstream produce --format otlp` publishes: with the protobuf content type.
    publish(
        &channel,
        pipeline.exchange(),
        "otlp_logs",
        &logs_data("cart", &[(17, "cart failed")]).encode_to_vec(),
        collector_properties().with_content_type("application/x-protobuf".into()),
    )
    .await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

    settled(&worker, "ok", 2.0).await;
    let logs = sink.written();
    assert_eq!(logs.len(), 4, "{logs:?}");
    let paid = log_with_message(&logs, "paid");
    assert_eq!(paid["service"], "checkout");
    assert_eq!(paid["level"], "info");
    assert_eq!(paid["ts"], "2024-05-01T10:00:00Z");
    assert_eq!(paid["resource"]["k8s.pod.name"], "checkout-0");
    assert_eq!(paid["scope"]["name"], "io.opentelemetry.test");
    assert_eq!(paid["attributes"]["seq"], 0);
    assert_eq!(paid["trace_id"], "5b".repeat(16));
    assert_eq!(log_with_message(&logs, "slow")["level"], "warn");
    assert_eq!(log_with_message(&logs, "down")["level"], "critical");
    let cart = log_with_message(&logs, "cart failed");
    assert_eq!(
        (cart["service"].as_str(), cart["level"].as_str()),
        (Some("cart"), Some("error"))
    );
    // Records of one delivery share its id (a hash of the body) and are told apart by index.
    let ids: Vec<&str> = ["paid", "slow", "down"]
        .iter()
        .map(|m| {
            log_with_message(&logs, m)["logstream"]["message_id"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(log_with_message(&logs, "down")["logstream"]["record"], 2);
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_of_the_python_sdk_reaches_the_sink_with_severity_trace_and_attributes() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/ensure-otlp-python.sh"
    );
    let ensured = Command::new(script)
        .output()
        .expect("run ensure-otlp-python.sh");
    assert!(
        ensured.status.success(),
        "ensure-otlp-python.sh failed: {}",
        String::from_utf8_lossy(&ensured.stderr)
    );
    let python = String::from_utf8(ensured.stdout).unwrap();
    let python = python.lines().last().unwrap().trim().to_owned();
    let generated = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/otlp_logs_json.py"
        ))
        .output()
        .expect("run the Python OTLP JSON generator");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let payload = generated.stdout;
    assert!(String::from_utf8_lossy(&payload).contains("SEVERITY_NUMBER_WARN"));

    let vhost = TestVhost::new("otlp-json").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("otlp-json");
    let (_connection, channel) = vhost.confirm_channel().await;
    publish(
        &channel,
        pipeline.exchange(),
        "otlp_logs",
        &payload,
        collector_properties().with_content_type("application/json".into()),
    )
    .await;
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

    settled(&worker, "ok", 1.0).await;
    let logs = sink.written();
    assert_eq!(logs.len(), 3, "{logs:?}");
    let levels: Vec<&str> = (0..3)
        .map(|i| {
            log_with_message(&logs, &format!("python log {i}"))["level"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(levels, ["info", "warn", "error"]);
    let warn = log_with_message(&logs, "python log 1");
    assert_eq!(warn["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(warn["span_id"], "eee19b7ec3c1b174");
    assert_eq!(warn["ts"], "2024-05-01T10:00:00.001Z");
    let error = log_with_message(&logs, "python log 2");
    assert_eq!(error["service"], "checkout");
    assert_eq!(error["resource"]["host.name"], "node-1");
    assert_eq!(error["scope"]["version"], "1.4.0");
    assert_eq!(error["attributes"]["http.status_code"], 502);
    assert_eq!(error["attributes"]["user"]["id"], 7);
    assert_eq!(error["attributes"]["tags"][0], "a");
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pino_zap_bunyan_and_vector_logs_are_written_not_dead_lettered() {
    let vhost = TestVhost::new("shippers").await;
    let pipeline = TestPipeline::declare(&vhost, &PipelineOptions::default()).await;
    let sink = SinkServer::accepting().await;
    let dir = TestDir::new("shippers");
    let (_connection, channel) = vhost.confirm_channel().await;
    let logs = [
        (
            "pino",
            r#"{"level":50,"time":1714557600123,"pid":42,"hostname":"web-1","service":"web","msg":"pino says"}"#,
        ),
        (
            "zap",
            r#"{"level":"warn","ts":1714557600.5,"caller":"main.go:12","msg":"zap says","service":"api"}"#,
        ),
        (
            "bunyan",
            r#"{"name":"jobs","hostname":"h","pid":1,"level":30,"msg":"bunyan says","time":"2024-05-01T10:00:00.250Z","v":0}"#,
        ),
        (
            "vector",
            r#"{"message":"vector says","timestamp":"2024-05-01T10:00:01Z","host":"node-2","source_type":"file","file":"/var/log/app.log"}"#,
        ),
    ];
    for (name, body) in logs {
        publish(
            &channel,
            pipeline.exchange(),
            &format!("{name}.info"),
            body.as_bytes(),
            log_properties(name, 0),
        )
        .await;
    }
    let worker = WorkerProcess::spawn(&dir, &vhost, &pipeline.config_for(&sink.url));

    settled(&worker, "ok", 4.0).await;
    let written = sink.written();
    let pino = log_with_message(&written, "pino says");
    assert_eq!(
        (pino["level"].as_str(), pino["level_raw"].as_i64()),
        (Some("error"), Some(50))
    );
    assert_eq!(pino["ts"], "2024-05-01T10:00:00.123Z");
    let zap = log_with_message(&written, "zap says");
    assert_eq!(
        (zap["level"].as_str(), zap["ts"].as_str()),
        (Some("warn"), Some("2024-05-01T10:00:00.5Z"))
    );
    assert_eq!(zap["caller"], "main.go:12");
    let bunyan = log_with_message(&written, "bunyan says");
    assert_eq!(
        (bunyan["level"].as_str(), bunyan["ts"].as_str()),
        (Some("info"), Some("2024-05-01T10:00:00.25Z"))
    );
    let vector = log_with_message(&written, "vector says");
    assert_eq!(vector["ts"], "2024-05-01T10:00:01Z");
    assert_eq!(vector["host"], "node-2");
    assert_eq!(
        worker
            .metric("logstream_messages_total", &[("outcome", "dead_lettered")])
            .await,
        Some(0.0)
    );
    assert_eq!(vhost.ready(&pipeline.config.dead_letter_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_the_sink_refuses_dead_letters_the_whole_delivery_it_came_in() {
    let vhost = TestVhost::new("otlp-settle").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            max_attempts: 1,
            ..PipelineOptions::default()
        },
    )
    .await;
    // Elasticsearch answers per item: the item of the log "bad" is refused (400).
    let sink = SinkServer::start(|logs| {
        let items: Vec<Value> = logs
            .iter()
            .map(|l| {
                let status = if message_of(l) == "bad" { 400 } else { 201 };
                serde_json::json!({"index": {"status": status, "error": {"type": "test_error"}}})
            })
            .collect();
        Reply {
            status: 200,
            body: serde_json::json!({"errors": true, "items": items}).to_string(),
        }
    })
    .await;
    let dir = TestDir::new("otlp-settle");
    let (_connection, channel) = vhost.confirm_channel().await;
    for (id, records) in [
        ("three-good", vec![(9, "g1"), (9, "g2"), (9, "g3")]),
        ("one-bad", vec![(9, "g4"), (17, "bad"), (9, "g5")]),
    ] {
        publish(
            &channel,
            pipeline.exchange(),
            "otlp_logs",
            &logs_data("svc", &records).encode_to_vec(),
            collector_properties()
                .with_content_type("application/x-protobuf".into())
                .with_message_id(id.into()),
        )
        .await;
    }
    let mut config = pipeline.config_for(&sink.url);
    config.sink = SinkSpec::Http(HttpSink {
        url: sink.url.clone(),
        format: Some(HttpFormat::Elasticsearch),
        ..HttpSink::default()
    });
    let worker = WorkerProcess::spawn(&dir, &vhost, &config);

    settled(&worker, "ok", 1.0).await;
    settled(&worker, "dead_lettered", 1.0).await;
    let dead = vhost.drain(&pipeline.config.dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "one delivery, not one per log");
    assert_eq!(dead[0].message_id().as_deref(), Some("one-bad"));
    assert_eq!(
        dead[0].header(HEADER_ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    // Each log has its own Elasticsearch id: <message id>:<index>.
    let g5 = log_with_message(&sink.written(), "g5").clone();
    assert_eq!(g5["logstream"]["message_id"], "one-bad");
    assert_eq!(g5["logstream"]["record"], 2);
}

/// What the OTLP test server saw: per request, each log's body and message id, and how many
/// of them it rejected.
#[derive(Default)]
struct OtlpSeen {
    requests: Vec<(Vec<(String, String)>, i64)>,
    gzip: Vec<bool>,
}

/// An OTLP/HTTP logs receiver on 127.0.0.1: decodes each `ExportLogsServiceRequest` (gzip or
/// not) and rejects, by partial success, the logs whose body starts with "reject".
async fn otlp_receiver() -> (String, Arc<Mutex<OtlpSeen>>, tokio::task::JoinHandle<()>) {
    async fn export(
        State(seen): State<Arc<Mutex<OtlpSeen>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (
        axum::http::StatusCode,
        [(&'static str, &'static str); 1],
        Vec<u8>,
    ) {
        let gzip = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        let mut raw = Vec::new();
        if gzip {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut raw)
                .unwrap();
        } else {
            raw = body.to_vec();
        }
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/x-protobuf"
        );
        let request = ExportLogsServiceRequest::decode(&raw[..]).expect("an OTLP export request");
        let mut logs = Vec::new();
        for resource in &request.resource_logs {
            for scope in &resource.scope_logs {
                for record in &scope.log_records {
                    let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    };
                    let id = record
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "logstream.message_id")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    logs.push((body, id));
                }
            }
        }
        let rejected = logs.iter().filter(|(b, _)| b.starts_with("reject")).count() as i64;
        let mut seen = seen.lock().unwrap();
        seen.requests.push((logs, rejected));
        seen.gzip.push(gzip);
        let answer = ExportLogsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: "timestamp too old".into(),
            }),
        };
        (
            axum::http::StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            answer.encode_to_vec(),
        )
    }
    let seen = Arc::new(Mutex::new(OtlpSeen::default()));
    let app = Router::new()
        .route("/v1/logs", post(export))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_sink_exports_gzipped_protobuf_and_dead_letters_a_partially_rejected_batch() {
    let vhost = TestVhost::new("otlp-sink").await;
    let pipeline = TestPipeline::declare(
        &vhost,
        &PipelineOptions {
            max_attempts: 1,
            batch_max: 10,
            linger: "500ms",
            ..PipelineOptions::default()
        },
    )
    .await;
    let (url, seen, task) = otlp_receiver().await;
    let dir = TestDir::new("otlp-sink");
    let mut config = pipeline.config_for(&url);
    config.sink = SinkSpec::Http(HttpSink {
        url: url.clone(),
        format: Some(HttpFormat::Otlp),
        compression: Some(Compression::Gzip),
        ..HttpSink::default()
    });
    let worker = WorkerProcess::spawn(&dir, &vhost, &config);
    worker.wait_ready().await;
    let (_connection, channel) = vhost.confirm_channel().await;
    let json = |message: &str| {
        serde_json::json!({"ts": "2024-05-01T10:00:00Z", "level": "info", "service": "api", "message": message})
            .to_string()
            .into_bytes()
    };

    // A batch the receiver takes whole.
    for i in 0..3 {
        let id = format!("good-{i}");
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            &json(&id),
            log_properties(&id, 0),
        )
        .await;
    }
    settled(&worker, "ok", 3.0).await;
    // A batch of which it rejects one log, without saying which.
    for id in ["fine-a", "reject-b", "fine-c"] {
        publish(
            &channel,
            pipeline.exchange(),
            "api.info",
            &json(id),
            log_properties(id, 0),
        )
        .await;
    }
    settled(&worker, "dead_lettered", 1.0).await;
    eventually(SETTLED, "every delivery settled", || async {
        let ok = worker
            .metric("logstream_messages_total", &[("outcome", "ok")])
            .await?;
        let dead = worker
            .metric("logstream_messages_total", &[("outcome", "dead_lettered")])
            .await?;
        (ok + dead >= 6.0).then_some(())
    })
    .await;

    let (in_rejected, requests, good) = {
        let seen = seen.lock().unwrap();
        assert!(seen.gzip.iter().all(|g| *g), "every request was gzipped");
        let mut in_rejected: Vec<String> = seen
            .requests
            .iter()
            .filter(|(_, rejected)| *rejected > 0)
            .flat_map(|(logs, _)| logs.iter().map(|(_, id)| id.clone()))
            .collect();
        in_rejected.sort();
        let good = seen
            .requests
            .iter()
            .filter(|(_, r)| *r == 0)
            .flat_map(|(l, _)| l)
            .count();
        (in_rejected, seen.requests.len(), good)
    };
    // Every log of a partially rejected request, and only those, is dead-lettered.
    assert!(
        in_rejected.contains(&"reject-b".to_owned()),
        "{in_rejected:?}"
    );
    let mut dead: Vec<String> = vhost
        .drain(&pipeline.config.dead_letter_queue)
        .await
        .iter()
        .map(|d| {
            assert_eq!(d.header(HEADER_ERROR_CLASS).as_deref(), Some("permanent"));
            let error = d.header(HEADER_ERROR).unwrap();
            assert!(
                error.contains("the OTLP endpoint rejected 1 of the")
                    && error.contains("timestamp too old"),
                "{error}"
            );
            d.message_id().unwrap()
        })
        .collect();
    dead.sort();
    assert_eq!(dead, in_rejected);
    println!(
        "OTLP sink: {requests} requests, {good} logs accepted, {} dead-lettered from partially rejected batches",
        dead.len()
    );
    task.abort();
}
