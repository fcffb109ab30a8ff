//! Every metric the Grafana dashboard and the PrometheusRule use is exported by the worker
//! or the operator: the names are read from their real registries, not from a list.

use std::{collections::BTreeSet, fs, time::Duration};

use logstream_api::pipeline::OutputStatus;
use logstream_autoscaler::{Decision, ScaleRecord, Signals, serve::MetricsText};
use logstream_chart_tests::{
    chart_dir,
    metric_names::{exported_by, unknown, used_in},
    render::{of_kind, template},
};
use serde_json::Value;

/// The operator's exposition with every family observed once (prometheus-client shows a
/// labelled family only after a label set exists).
fn operator_exposition() -> String {
    let m = logstream_operator::metrics::Metrics::default();
    m.reconciled(Some("BrokerUnreachable"), Duration::from_millis(3));
    m.reconciled(None, Duration::from_millis(3));
    m.output(
        "ns",
        "p",
        &OutputStatus {
            name: "o".into(),
            ready: Some(1),
            oldest_message_age_seconds: Some(1.0),
            dead_lettered: Some(1),
            replicas: Some(1),
            ..OutputStatus::default()
        },
    );
    m.autoscaled(&ScaleRecord {
        pipeline: "ns/p".into(),
        output: "o".into(),
        queue: "q".into(),
        at: jiff::Timestamp::now(),
        decision: Decision {
            current: 1,
            desired: 2,
            recommended: 2,
            reason: "backlog 2000 at 1000/replica: 1 → 2".into(),
            signals: Signals::default(),
            metrics_missing: false,
        },
        reading: None,
        error: None,
    });
    m.set_leader(true);
    m.render()
}

fn worker_exposition() -> String {
    let m = logstream_worker::metrics::Metrics::new("p", "o");
    m.processing_seconds.observe(0.01);
    m.message_age_seconds.observe(0.5);
    m.render()
}

fn exported() -> BTreeSet<String> {
    let mut names = exported_by(&operator_exposition());
    names.extend(exported_by(&worker_exposition()));
    names
}

/// Every PromQL text of the dashboard: panel targets and template variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.extend(target["expr"].as_str().map(str::to_owned));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        exprs.extend(var["definition"].as_str().map(str::to_owned));
        exprs.extend(var["query"]["query"].as_str().map(str::to_owned));
    }
    exprs
}

#[test]
fn every_metric_of_the_dashboard_and_the_alerts_is_exported_by_the_worker_or_the_operator() {
    let exported = exported();
    // Both registries answered with what the dashboard builds on.
    for name in [
        "logstream_messages_total",
        "logstream_processing_seconds_bucket",
        "logstream_output_oldest_message_age_seconds",
        "logstream_reconciles_total",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }

    let text = fs::read_to_string(chart_dir().join("dashboards/logstream.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let exprs = dashboard_exprs(&dashboard);
    let panel_count = dashboard["panels"].as_array().map_or(0, Vec::len);
    assert!(exprs.len() > panel_count, "{exprs:?}");
    let mut used: BTreeSet<String> = exprs.iter().flat_map(|e| used_in(e)).collect();
    // Anything else in the JSON that looks like one of our names counts too.
    used.extend(used_in(&text));

    let docs = template(&["-f", "charts/logstream/ci/all-on-values.yaml"])
        .unwrap_or_else(|e| panic!("{e}"));
    let rule = of_kind(&docs, "PrometheusRule")[0];
    let mut alert_names = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            alert_names.extend(used_in(r["expr"].as_str().expect("expr")));
        }
    }
    assert!(alert_names.len() >= 3, "{alert_names:?}");
    used.extend(alert_names);

    let missing = unknown(&used, &exported);
    assert!(
        missing.is_empty(),
        "used by the dashboard or the alerts but exported by nobody: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn a_name_nobody_exports_is_caught() {
    let used: BTreeSet<String> =
        used_in("rate(logstream_messages_total[1m]) + logstream_queue_depth");
    assert_eq!(unknown(&used, &exported()), ["logstream_queue_depth"]);
}
