//! `logstream produce` against the real broker: the message contract, the level mix of a load
//! run, and every log accounted for (confirmed, nacked, returned).

mod support;

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use logstream_api::contract::Level;
use serde_json::Value;
use support::{PipelineVhost, body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_of_100k_is_confirmed_in_full_with_the_requested_level_mix_and_priorities() {
    let vhost = PipelineVhost::new("load").await;
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--count",
            "100000",
            "--levels",
            "info=90,warn=7,error=2.9,critical=0.1",
            "--service",
            "api,auth",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("sent 100000, confirmed 100000, nacked 0, returned 0, unconfirmed 0 in"),
        "{}",
        run.stdout
    );
    eprintln!("{}", run.stdout.trim());

    let messages = vhost
        .consume(&vhost.main_queue(), 100_000, Duration::from_secs(60))
        .await;
    let mut per_level: BTreeMap<Level, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    for m in &messages {
        let json: Value = serde_json::from_slice(&m.body).unwrap();
        let level: Level = json["level"].as_str().unwrap().parse().unwrap();
        let service = json["service"].as_str().unwrap();
        *per_level.entry(level).or_default() += 1;
        let p = &m.properties;
        assert_eq!(p.priority(), &Some(level.priority()), "priority of {level}");
        assert_eq!(
            m.routing_key.as_str(),
            format!("{service}.{level}"),
            "routing key"
        );
        assert_eq!(p.delivery_mode(), &Some(2));
        assert!(p.timestamp().is_some());
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert!(json["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
        assert!(ids.insert(p.message_id().clone().expect("message id").to_string()));
    }
    let expected = [
        (Level::Info, 0.90),
        (Level::Warn, 0.07),
        (Level::Error, 0.029),
        (Level::Critical, 0.001),
    ];
    for (level, share) in expected {
        let got = per_level.get(&level).copied().unwrap_or(0) as f64 / 100_000.0;
        eprintln!(
            "{level}: {:.3} % (asked {:.3} %)",
            got * 100.0,
            share * 100.0
        );
        assert!(
            (got - share).abs() <= 0.01,
            "{level}: {got} vs requested {share}"
        );
    }
    assert_eq!(per_level.len(), 4, "{per_level:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_log_from_flags_follows_the_message_contract() {
    let vhost = PipelineVhost::new("single").await;
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--service",
            "api",
            "--level",
            "critical",
            "-m",
            "db down",
            "--field",
            "code=500",
            "--field",
            "host=db-1",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let messages = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let json: Value = serde_json::from_str(&body(m)).unwrap();
    assert_eq!(json["message"], "db down");
    assert_eq!(json["level"], "critical");
    assert_eq!(json["service"], "api");
    assert_eq!(json["code"], 500);
    assert_eq!(json["host"], "db-1");
    assert_eq!(m.routing_key.as_str(), "api.critical");
    assert_eq!(m.properties.priority(), &Some(3));
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str().len()),
        Some(32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_otlp_publishes_protobuf_logs_data_as_the_collectors_exporter_does() {
    use opentelemetry_proto::tonic::{common::v1::any_value, logs::v1::LogsData};
    use prost::Message;
    // An output bound to the exporter's routing key only.
    let vhost = PipelineVhost::with_pipeline(
        "otlp",
        "  outputs:\n    - {name: out, bindings: [otlp_logs], sink: {stdout: {}}}\n",
    )
    .await;
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--format",
            "otlp",
            "--service",
            "checkout",
            "--level",
            "error",
            "-m",
            "payment failed",
            "--field",
            "order=42",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let messages = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.routing_key, "otlp_logs");
    assert_eq!(
        m.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/x-protobuf")
    );
    assert_eq!(m.properties.delivery_mode(), &Some(2));
    assert_eq!(m.properties.message_id(), &None, "the exporter sets none");
    let data = LogsData::decode(&m.body[..]).expect("a protobuf LogsData");
    let resource = &data.resource_logs[0];
    let service = &resource.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(any_value::Value::StringValue("checkout".into()))
    );
    let record = &resource.scope_logs[0].log_records[0];
    assert_eq!(record.severity_number, 17);
    assert_eq!(
        record.body.as_ref().unwrap().value,
        Some(any_value::Value::StringValue("payment failed".into()))
    );
    assert_eq!(record.attributes[0].key, "order");

    // --routing-key replaces the key of either format.
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--routing-key",
            "otlp_logs",
            "--service",
            "api",
            "-m",
            "json too",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let messages = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(messages[0].routing_key, "otlp_logs");
    assert!(body(&messages[0]).contains("\"json too\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_from_stdin_are_published_and_bad_lines_are_reported() {
    let vhost = PipelineVhost::new("stdin").await;
    let input = concat!(
        "{\"level\":\"error\",\"service\":\"auth\",\"message\":\"bad token\",\"user\":\"ann\"}\n",
        "{not json\n",
        "plain text line\n",
        "\n",
        "{\"level\":\"info\"}\n",
    );
    let run = vhost
        .logstream_with_stdin(&["produce", "app", "--service", "shell"], Some(input))
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("line 2: skipped: invalid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("line 5: skipped: a log needs a \"message\" field"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .trim_end()
            .ends_with("2 input lines were not logs and were skipped"),
        "{}",
        run.stderr
    );
    let messages = vhost.drain(&vhost.main_queue()).await;
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(keys, ["auth.error", "shell.info"]);
    let first: Value = serde_json::from_str(&body(&messages[0])).unwrap();
    assert_eq!(first["user"], "ann");
    assert!(first["ts"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_logs_are_counted_as_returned_and_fail_the_run() {
    let vhost = PipelineVhost::with_pipeline(
        "returned",
        "  outputs:\n    - {name: out, bindings: [\"#.critical\"], sink: {stdout: {}}}\n",
    )
    .await;
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--count",
            "40",
            "--levels",
            "info=3,critical=1",
        ])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout
            .starts_with("sent 40, confirmed 10, nacked 0, returned 30, unconfirmed 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(
            "30 of 40 logs were not accepted by the broker: returned as unroutable (NO_ROUTE)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(vhost.ready(&vhost.main_queue()).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_refused_by_a_full_queue_are_counted_as_nacked() {
    let vhost = PipelineVhost::with_pipeline(
        "nacked",
        "  outputs:\n    - {name: out, maxBacklog: 5, sink: {stdout: {}}}\n",
    )
    .await;
    let run = vhost
        .logstream(&["produce", "app", "--count", "20", "--window", "1"])
        .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout
            .starts_with("sent 20, confirmed 5, nacked 15, returned 0, unconfirmed 0"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("refused them (nack)"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_load_run_keeps_its_rate_and_pads_bodies() {
    let vhost = PipelineVhost::new("paced").await;
    let started = std::time::Instant::now();
    let run = vhost
        .logstream(&[
            "produce",
            "app",
            "--rate",
            "200",
            "--burst",
            "50",
            "--duration",
            "1s",
            "--size",
            "512",
        ])
        .await;
    let elapsed = started.elapsed();
    assert_eq!(run.code, 0, "{run:?}");
    // Bursts of 50 at 0, 250, 500 and 750 ms inside the one-second run.
    assert!(
        run.stdout.starts_with("sent 200, confirmed 200"),
        "{}",
        run.stdout
    );
    assert!(elapsed.as_secs_f64() >= 0.75, "{elapsed:?}");
    let messages = vhost.drain(&vhost.main_queue()).await;
    assert_eq!(messages.len(), 200);
    assert!(messages.iter().all(|m| m.body.len() == 512));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_load_run_and_every_sent_log_is_still_accounted_for() {
    let vhost = PipelineVhost::new("ctrl-c").await;
    let child = support::command(&[
        "--vhost",
        &vhost.name,
        "-n",
        "test",
        "produce",
        "app",
        "--rate",
        "200",
        "--duration",
        "60s",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let main = vhost.main_queue();
    support::eventually(
        Duration::from_secs(30),
        "the run to be under way",
        || async { (vhost.ready(&main).await >= 50).then_some(()) },
    )
    .await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-s", "INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stopped within 10 s of Ctrl-C")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sent: u32 = stdout
        .strip_prefix("sent ")
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary: {stdout}"));
    assert!(
        stdout.starts_with(&format!("sent {sent}, confirmed {sent}, nacked 0")),
        "{stdout}"
    );
    assert!(sent < 12_000, "stopped early: {sent}");
    assert_eq!(vhost.ready(&main).await, u64::from(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_whose_exchange_disappears_stops_and_fails_with_the_reason() {
    let vhost = PipelineVhost::new("gone").await;
    let child = support::command(&[
        "--vhost",
        &vhost.name,
        "-n",
        "test",
        "produce",
        "app",
        "--rate",
        "500",
        "--duration",
        "60s",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let main = vhost.main_queue();
    support::eventually(
        Duration::from_secs(30),
        "the run to be under way",
        || async { (vhost.ready(&main).await >= 50).then_some(()) },
    )
    .await;
    let connection = vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            vhost.exchange().as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("stopped soon after the exchange went away")
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
