//! The autoscaler against a mock Kubernetes API (every call checked: method, URI with its
//! `fieldManager`, JSON body) and the real RabbitMQ: a backlog becomes a patch of the
//! Deployment's scale subresource, and the reporter writes the autoscaler's status fields
//! and an Event under its own field manager.

mod support;

use std::sync::Arc;

use logstream_api::manifest::parse_pipeline;
use logstream_autoscaler::serve::MetricsText;
use logstream_autoscaler::{OutputScaling, PipelineAutoscaler, dashboard::Dashboard};
use logstream_broker::BrokerAdmin;
use logstream_operator::{
    metrics::Metrics,
    scaling::{Autoscalers, DeploymentScale},
};
use serde_json::{Value, json};
use support::{
    TestVhost,
    api::{Calls, Expect, MockApi},
    endpoint, publish,
};

const SCALE: &str = "/apis/apps/v1/namespaces/games/deployments/game-logs-security/scale";

fn scale(replicas: u32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "game-logs-security", "namespace": "games"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas}
    })
}

async fn backlog(label: &str, messages: usize) -> (TestVhost, logstream_api::TopologyPlan) {
    let vhost = TestVhost::new(label).await;
    let (_, p, admin) = vhost
        .apply_manifest(
            "games",
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: game-logs, namespace: games}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: security\n      sink: {stdout: {}}\n      scaling: {minReplicas: 1, maxReplicas: 8, targetBacklogPerReplica: 100}\n",
        )
        .await;
    admin.close().await;
    let (_conn, channel) = vhost.confirm_channel().await;
    for _ in 0..messages {
        assert!(
            publish(
                &channel,
                &p.exchange().name,
                "api.info",
                b"{\"message\":\"hi\"}"
            )
            .await
            .is_ack()
        );
    }
    (vhost, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_patches_the_deployments_scale_subresource() {
    let (vhost, p) = backlog("autoscaler-api", 450).await;
    let calls = Calls::default();
    let api = MockApi::serve(
        vec![
            Expect::new("GET", SCALE).respond(200, scale(1)),
            Expect::new(
                "PATCH",
                format!("{SCALE}?&fieldManager=logstream-autoscaler"),
            )
            .body(json!({"spec": {"replicas": 5}}))
            .respond(200, scale(5)),
        ],
        calls.clone(),
    );
    let target = DeploymentScale::new(api.client.clone(), "games", "game-logs-security");
    let pipeline = parse_pipeline(
        "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: game-logs}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: security\n      sink: {stdout: {}}\n      scaling: {minReplicas: 1, maxReplicas: 8, targetBacklogPerReplica: 100}\n",
    )
    .unwrap();
    let settings = pipeline.spec.outputs[0].scaling_settings();
    let mut autoscaler = PipelineAutoscaler::new(
        "games/game-logs",
        vhost.name.clone(),
        vec![OutputScaling::for_output(&p, "security", settings, Box::new(target)).unwrap()],
    );
    let admin = BrokerAdmin::connect(&endpoint(), &vhost.name)
        .await
        .unwrap();
    let records = autoscaler.poll(&admin).await;
    api.done().await;
    assert!(records[0].scaled(), "{:?}", records[0]);
    assert_eq!(
        records[0].decision.reason,
        "backlog 450 at 100/replica: 1 → 5"
    );

    // The patch is a JSON merge patch of the one field.
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].text, r#"{"spec":{"replicas":5}}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_writes_the_autoscalers_status_fields_and_an_event() {
    let (vhost, p) = backlog("autoscaler-report", 450).await;
    let status_uri = "/apis/logstream.io/v1alpha1/namespaces/games/logpipelines/game-logs/status?&force=true&fieldManager=logstream-autoscaler";
    let calls = Calls::default();
    let api = MockApi::serve(
        vec![
            Expect::new("GET", SCALE).respond(200, scale(1)),
            Expect::new(
                "PATCH",
                format!("{SCALE}?&fieldManager=logstream-autoscaler"),
            )
            .body(json!({"spec": {"replicas": 5}}))
            .respond(200, scale(5)),
            Expect::new("PATCH", status_uri)
                .body(json!({
                    "apiVersion": "logstream.io/v1alpha1",
                    "kind": "LogPipeline",
                    "status": {
                        "outputs": [{
                            "name": "security",
                            "queue": "logstream.games.game-logs.security",
                            "desiredReplicas": 5,
                            "lastScaleReason": "backlog 450 at 100/replica: 1 → 5"
                        }],
                        "conditions": [{
                            "type": "ScalingActive",
                            "status": "True",
                            "reason": "QueueReadable",
                            "message": "output security: scaling on queue depth and message age"
                        }]
                    }
                }))
                .ignoring(&[
                    "/status/outputs/0/lastScaleTime",
                    "/status/conditions/0/lastTransitionTime",
                ])
                .checking(|body| {
                    let time = body
                        .pointer("/status/outputs/0/lastScaleTime")
                        .and_then(Value::as_str)
                        .unwrap();
                    assert!(
                        time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
                        "{time}"
                    );
                })
                .respond(200, json!({})),
            Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/games/events?")
                .any_body()
                .checking(|body| {
                    assert_eq!(body["reason"], "Scaled");
                    assert_eq!(body["type"], "Normal");
                    assert_eq!(
                        body["note"],
                        "output security: backlog 450 at 100/replica: 1 → 5"
                    );
                    assert_eq!(body["regarding"]["name"], "game-logs");
                    assert_eq!(body["regarding"]["uid"], "uid-1");
                })
                .reply_with(Value::clone),
        ],
        calls.clone(),
    );
    let pipeline: logstream_api::LogPipeline = serde_json::from_value(json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": "game-logs", "namespace": "games", "uid": "uid-1"},
        "spec": {
            "broker": {"secretRef": {"name": "r"}},
            "outputs": [{
                "name": "security",
                "sink": {"stdout": {}},
                "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetBacklogPerReplica": 100}
            }]
        }
    }))
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let autoscalers = Arc::new(Autoscalers::new(api.client.clone()));
    let reporter = tokio::spawn(
        autoscalers
            .clone()
            .report(metrics.clone(), Some("test".into())),
    );
    // The dashboard as the operator binary feeds it.
    let dashboard = Arc::new(Dashboard::default());
    tokio::spawn(
        dashboard
            .clone()
            .feed(autoscalers.subscribe(), Some(autoscalers.removals())),
    );
    let shown = |dashboard: &Dashboard| -> Vec<String> {
        dashboard
            .snapshot()
            .pipelines
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    autoscalers.ensure(&pipeline, &p, &endpoint());
    assert_eq!(autoscalers.running(), vec!["games/game-logs".to_owned()]);
    api.done().await;
    assert_eq!(shown(&dashboard), ["games/game-logs"]);

    let text = metrics.render();
    assert!(
        text.contains(
            "logstream_scalings_total{namespace=\"games\",pipeline=\"game-logs\",output=\"security\",direction=\"up\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "logstream_output_desired_replicas{namespace=\"games\",pipeline=\"game-logs\",output=\"security\"} 5"
    ));
    autoscalers.stop("games", "game-logs");
    assert!(autoscalers.running().is_empty());
    // The stopped pipeline leaves the dashboard, and no late record brings it back (two
    // poll intervals of the default 2 s).
    support::eventually(
        std::time::Duration::from_secs(5),
        "the dashboard to forget the pipeline",
        || async { shown(&dashboard).is_empty().then_some(()) },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(shown(&dashboard).is_empty(), "{:?}", shown(&dashboard));
    reporter.abort();
    drop(vhost);
}
