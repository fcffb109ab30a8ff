//! The dashboard page in a real headless Chromium, fed by a real autoscaler polling the real
//! broker: the page lists the pipeline, its numbers move as messages flow, and a scaling
//! decision arrives in the live stream with its reason. A screenshot is left in
//! `target/test-artifacts/dashboard-operator.png`.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use logstream_autoscaler::{
    OutputScaling, PipelineAutoscaler,
    dashboard::{self, Dashboard},
    shared::SharedAdmins,
    supervise,
};
use serde_json::Value;
use support::{
    ReplicaCounter, TestVhost,
    browser::{Browser, Tab, artifacts_dir},
    publish,
};
use tokio::sync::{broadcast, watch};

/// What the page shows for `test/app` › `o`, read from its DOM by the attributes the page
/// promises (docs/dashboard.md).
const READ_PAGE: &str = r#"(() => {
  const row = document.querySelector('tr.main-row[data-pipeline="test/app"][data-output="o"]');
  const detail = document.querySelector('tr.detail-row[data-pipeline="test/app"][data-output="o"]');
  const cell = (f) => row && row.querySelector(`td[data-field="${f}"]`)?.textContent;
  return {
    connection: document.getElementById('connection').dataset.state,
    pipelines: [...document.querySelectorAll('section.pipeline')].map((s) => s.dataset.pipeline),
    ready: cell('ready'),
    replicas: cell('replicas'),
    chart_points: detail ? detail.querySelector('svg[data-chart="ready"] polyline').getAttribute('points').split(' ').filter(Boolean).length : 0,
    samples: document.querySelectorAll('#stream-rates li[data-kind="sample"]').length,
    decisions: [...document.querySelectorAll('#stream-decisions li[data-kind="scale"]')]
      .map((li) => ({ source: li.dataset.source, reason: li.querySelector('.reason').textContent })),
  };
})()"#;

async fn read_page(browser: &mut Browser, tab: &Tab) -> Value {
    browser.eval(tab, READ_PAGE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_pipeline_moving_numbers_and_a_live_scaling_decision() {
    let vhost = TestVhost::new("dashboard-browser").await;
    let (pipeline, p, admin) = vhost
        .apply_manifest(
            "test",
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n      scaling: {minReplicas: 1, maxReplicas: 50, targetBacklogPerReplica: 100, pollInterval: 1s}\n",
        )
        .await;
    // The autoscaler below connects on its own, as in the operator.
    admin.close().await;

    // The autoscaler's records reach the dashboard exactly as in the operator and `dev`.
    let autoscaler = PipelineAutoscaler::new(
        "test/app",
        vhost.name.clone(),
        vec![
            OutputScaling::for_output(
                &p,
                "o",
                pipeline.spec.outputs[0].scaling_settings(),
                Box::new(ReplicaCounter(Arc::new(AtomicU32::new(1)))),
            )
            .unwrap(),
        ],
    );
    let dashboard = Arc::new(Dashboard::default());
    let (records, rx) = broadcast::channel(64);
    tokio::spawn(dashboard.clone().feed(rx, None));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(supervise(
        autoscaler,
        logstream_testkit::endpoint(),
        Arc::new(SharedAdmins::default()),
        stopped,
        records,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, dashboard::router(dashboard)).await });

    let mut browser = Browser::launch().await;
    let tab = browser.open(&url, 1280, 900).await;
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = read_page(&mut browser, &tab).await;
        if shown["connection"] == "open" && shown["ready"] == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        shown["pipelines"],
        serde_json::json!(["test/app"]),
        "{shown}"
    );
    assert_eq!(shown["ready"], "0", "an idle queue first: {shown}");
    assert_eq!(shown["connection"], "open", "{shown}");
    assert_eq!(shown["decisions"], serde_json::json!([]), "{shown}");
    let first_dom = browser.dom(&tab).await;

    // Messages flow in (nothing consumes them): the backlog grows past 100 per replica.
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = tokio::spawn({
        let publishing = publishing.clone();
        let exchange = p.exchange().name.clone();
        let (connection, channel) = vhost.confirm_channel().await;
        async move {
            let mut sent = 0u32;
            while publishing.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    assert!(
                        publish(&channel, &exchange, "api.info", b"{\"message\":\"hi\"}")
                            .await
                            .is_ack()
                    );
                }
                sent += 20;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(connection);
            sent
        }
    });

    // Without reloading, the page's figures move and a decision arrives over the stream.
    let (live, readings) = browser
        .until_live_decision(
            &tab,
            READ_PAGE,
            "ready",
            shown["ready"].clone(),
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await;
    publishing.store(false, Ordering::SeqCst);
    let sent = publisher.await.unwrap();

    // The page lists decisions newest first: the burst's first decision is the last live one.
    let decision = live["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|d| d["source"] == "live")
        .unwrap();
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("backlog ") && reason.contains(" at 100/replica: 1 → "),
        "{reason}"
    );
    assert!(live["samples"].as_u64().unwrap() >= 2, "{live}");
    assert!(live["chart_points"].as_u64().unwrap() >= 1, "{live}");
    assert_ne!(live["replicas"], "1", "{live}");
    println!("ready as the page showed it: {readings:?} ({sent} published)");
    println!("live decision: {reason}");

    let dir = artifacts_dir();
    browser
        .screenshot(&tab, &dir.join("dashboard-operator.png"))
        .await;
    std::fs::write(dir.join("dashboard-operator-1.html"), first_dom).unwrap();
    std::fs::write(
        dir.join("dashboard-operator-2.html"),
        browser.dom(&tab).await,
    )
    .unwrap();
    let _ = stop.send(true);
}
