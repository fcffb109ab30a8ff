//! Issue 8, must show 1: `logstream dev` runs a pipeline with local workers on the real broker
//! and serves its dashboard; a headless Chromium (Debian's `chromium`, driven over the
//! DevTools protocol on a pipe) opens it. The page shows the pipeline, its numbers change as
//! messages flow, and a scaling decision arrives in the live stream with its reason. The
//! screenshot is left in `target/test-artifacts/dashboard.png`.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use logstream_testkit::browser::{Browser, Tab, artifacts_dir};
use serde_json::Value;
use support::{PipelineVhost, run_logstream};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What the page shows for `default/quickstart` › `stdout`, read by the attributes the page
/// promises (docs/dashboard.md).
const READ_PAGE: &str = r#"(() => {
  const sel = '[data-pipeline="default/quickstart"][data-output="stdout"]';
  const row = document.querySelector('tr.main-row' + sel);
  const detail = document.querySelector('tr.detail-row' + sel);
  const cell = (f) => row && row.querySelector(`td[data-field="${f}"]`)?.textContent;
  return {
    connection: document.getElementById('connection')?.dataset.state,
    pipelines: [...document.querySelectorAll('section.pipeline')].map((s) => s.dataset.pipeline),
    figures: row ? [cell('ready'), cell('unacked'), cell('processed'), cell('replicas')] : null,
    chart_points: detail ? detail.querySelector('svg[data-chart="ready"] polyline').getAttribute('points').split(' ').filter(Boolean).length : 0,
    samples: document.querySelectorAll('#stream-rates li[data-kind="sample"]').length,
    decisions: [...document.querySelectorAll('#stream-decisions li[data-kind="scale"]')]
      .map((li) => ({ source: li.dataset.source, reason: li.querySelector('.reason').textContent })),
  };
})()"#;

async fn read_page(browser: &mut Browser, tab: &Tab) -> Value {
    browser.eval(tab, READ_PAGE).await
}

/// The quickstart, polled every second, starting at zero workers, 100 messages per replica.
fn manifest(dir: &std::path::Path) -> PathBuf {
    support::quickstart_with(dir, |scaling| {
        scaling["minReplicas"] = 0.into();
        scaling["targetBacklogPerReplica"] = 100.into();
        scaling["pollInterval"] = "1s".into();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_dashboard_shows_the_pipeline_moving_numbers_and_a_live_scaling_decision() {
    let vhost = PipelineVhost::new("dashboard").await;
    let dir = std::env::temp_dir().join(support::unique("logstream-dashboard-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = manifest(&dir);
    let manifest = manifest.to_str().unwrap();
    let mut dev = support::dev_command(&vhost, manifest, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start logstream dev");
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("dashboard on ") {
                return url.to_owned();
            }
        }
        panic!("logstream dev ended without serving its dashboard");
    })
    .await
    .expect("logstream dev announces its dashboard within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // The page, before any message: the pipeline is listed, idle, and the stream is live.
    let mut browser = Browser::launch().await;
    let tab = browser.open(&url, 1280, 900).await;
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = read_page(&mut browser, &tab).await;
        if shown["connection"] == "open" && shown["figures"].is_array() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        shown["pipelines"],
        serde_json::json!(["default/quickstart"]),
        "{shown}"
    );
    assert_eq!(shown["connection"], "open", "{shown}");
    assert_eq!(shown["decisions"], serde_json::json!([]), "{shown}");
    let first_dom = browser.dom(&tab).await;

    // Messages flow: `logstream produce` publishes a burst; local workers start and drain it.
    let produce = tokio::spawn({
        let vhost = vhost.name.clone();
        let manifest = manifest.to_owned();
        async move {
            run_logstream(
                &[
                    "--vhost", &vhost, "produce", "-f", &manifest, "--count", "3000", "--rate",
                    "1000",
                ],
                None,
            )
            .await
        }
    });

    // Without reloading, the figures change and a decision arrives over the event stream.
    let (live, readings) = browser
        .until_live_decision(
            &tab,
            READ_PAGE,
            "figures",
            shown["figures"].clone(),
            Duration::from_secs(60),
            Duration::from_millis(250),
        )
        .await;
    let produced = produce.await.unwrap();
    assert_eq!(produced.code, 0, "{produced:?}");

    let decision = live["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["source"] == "live")
        .unwrap();
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains(" → "),
        "a decision reason names the change: {reason}"
    );
    assert!(live["samples"].as_u64().unwrap() >= 2, "{live}");
    assert!(live["chart_points"].as_u64().unwrap() >= 1, "{live}");
    println!(
        "figures as the page showed them [ready, unacked, processed/s, replicas]: {readings:?}"
    );
    println!("live decision: {reason}");

    let dir_out = artifacts_dir();
    browser
        .screenshot(&tab, &dir_out.join("dashboard.png"))
        .await;
    std::fs::write(dir_out.join("dashboard-1.html"), first_dom).unwrap();
    std::fs::write(dir_out.join("dashboard-2.html"), browser.dom(&tab).await).unwrap();
    println!("screenshot: {}", dir_out.join("dashboard.png").display());

    let pid = nix::unistd::Pid::from_raw(i32::try_from(dev.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(40), dev.wait())
        .await
        .expect("logstream dev stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
