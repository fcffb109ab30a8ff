//! `logstream status --kubeconfig`: the broker's figures per output joined with what the
//! LogPipeline status in the cluster says (a fake API server over HTTP, the real broker).

mod support;

use logstream_testkit::fake_api::FakeApi;
use serde_json::{Value, json};
use support::{NAMESPACE, PIPELINE, PipelineVhost};

fn pipeline_with_status() -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": PIPELINE, "namespace": NAMESPACE, "uid": "u1", "generation": 1},
        "spec": {"broker": {"secretRef": {"name": "r"}}, "outputs": [{"name": "out", "sink": {"stdout": {}}}]},
        "status": {
            "observedGeneration": 1,
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "WorkersNotReady",
                "message": "1 of 3 workers ready", "lastTransitionTime": "2026-01-02T03:04:05Z"
            }],
            "outputs": [{
                "name": "out", "queue": "logstream.test.app.out", "replicas": 1,
                "desiredReplicas": 3, "lastScaleReason": "backlog 1473 at 500/replica: 1 → 3"
            }]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_a_kubeconfig_adds_the_pipelines_condition_and_replicas() {
    let vhost = PipelineVhost::new("status-cluster").await;
    let fake = FakeApi::start(vec![pipeline_with_status()], Vec::new()).await;
    let dir = std::env::temp_dir().join(support::unique("logstream-status-kube"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = fake.kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().unwrap();

    let run = vhost
        .logstream(&["status", "--kubeconfig", kubeconfig, "--json"])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let row: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(row["output"], "out");
    assert_eq!(
        row["cluster"],
        json!({
            "pipeline_ready": "False (WorkersNotReady)",
            "replicas": 1,
            "desired_replicas": 3,
            "last_scale_reason": "backlog 1473 at 500/replica: 1 → 3"
        })
    );

    let table = vhost
        .logstream(&["status", "--kubeconfig", kubeconfig])
        .await;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("PIPELINE READY"), "{}", table.stdout);
    assert!(table.stdout.contains("1/3"), "{}", table.stdout);

    // A cluster that cannot be reached: one line, exit 2.
    drop(fake);
    let broken = dir.join("broken");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: \"http://127.0.0.1:1\"}\nusers:\n- name: x\n  user: {}\ncontexts:\n- name: x\n  context: {cluster: x, user: x}\ncurrent-context: x\n",
    )
    .unwrap();
    let failed = vhost
        .logstream(&["status", "--kubeconfig", broken.to_str().unwrap()])
        .await;
    assert_eq!(failed.code, 2, "{failed:?}");
    assert_eq!(failed.stderr.lines().count(), 1, "{failed:?}");
    assert!(
        failed.stderr.contains("failed to list LogPipelines"),
        "{failed:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
