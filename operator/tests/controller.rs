//! The reconcile against a mock Kubernetes API (every call checked: method, URI with its
//! `fieldManager`, JSON body) and the real RabbitMQ (a vhost and a user of its own per test).

mod support;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{ByteString, jiff::Timestamp};
use kube::runtime::controller::Action;
use logstream_api::{LogPipeline, plan, worker_config::WorkerConfig};
use logstream_broker::BrokerAdmin;
use logstream_operator::{
    controller::{Context, Error, error_policy, reconcile},
    metrics::Metrics,
    settings::Settings,
};
use serde_json::{Value, json};
use support::{
    TestUser, TestVhost,
    api::{Calls, Expect, MockApi, status_error, status_ok},
    encode, endpoint, eventually, logs, publish,
};

const NS: &str = "games";
const NAME: &str = "game-logs";
const UID: &str = "5d9b2c1e-7a4f-4b8e-9c3d-000000000042";
const NOW: &str = "2026-01-02T03:04:05Z";
const SSA: &str = "?&force=true&fieldManager=logstream-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/games/events?";
const QUEUE: &str = "logstream.games.game-logs.security";

/// One test's broker side (vhost, user) and the calls the operator made.
struct Fixture {
    vhost: TestVhost,
    user: TestUser,
    calls: Calls,
}

impl Fixture {
    async fn new(label: &str) -> Self {
        logs::capture();
        let vhost = TestVhost::new(label).await;
        let user = TestUser::new(&vhost).await;
        Self {
            vhost,
            user,
            calls: Calls::default(),
        }
    }

    /// The AMQP URI of the test user on the test vhost, with `password`.
    fn uri(&self, password: &str) -> String {
        let a = endpoint().amqp();
        format!(
            "amqp://{}:{}@{}:{}/{}",
            encode(&self.user.name),
            encode(password),
            a.authority.host,
            a.authority.port,
            encode(&self.vhost.name)
        )
    }

    /// The redacted endpoint, as status and events show it.
    fn shown(&self) -> String {
        let a = endpoint().amqp();
        format!(
            "amqp://{}:***@{}:{}/{}",
            self.user.name,
            a.authority.host,
            a.authority.port,
            encode(&self.vhost.name)
        )
    }

    /// The user's broker Secret `rabbitmq`, holding `uri` with `password`.
    fn secret(&self, password: &str) -> Value {
        let mut data = json!({"uri": b64(&self.uri(password))});
        // A broker under test whose management API is not at <AMQP host>:15672 (the RabbitMQ 4
        // run) is named in the Secret, as a user would name it.
        if logstream_testkit::management_addr().is_some() {
            data["managementUri"] = b64(endpoint().management().base.as_str());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rabbitmq", "namespace": NS, "resourceVersion": "3"},
            "data": data
        })
    }

    fn serve(&self, scenario: Vec<Expect>) -> MockApi {
        MockApi::serve(scenario, self.calls.clone())
    }

    async fn admin(&self) -> BrokerAdmin {
        BrokerAdmin::connect(&endpoint(), &self.vhost.name)
            .await
            .unwrap()
    }

    async fn queues(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .vhost
            .management
            .queues(&self.vhost.name)
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.name)
            .collect();
        names.sort();
        names
    }

    async fn exchanges(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .vhost
            .management
            .exchanges(&self.vhost.name)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with("logstream."))
            .collect();
        names.sort();
        names
    }

    /// The password appears in no call the operator made (it copies no credential: the
    /// workers read the user's Secret by key) and in no log line.
    fn assert_password_never_shown(&self) {
        let password = &self.user.password;
        let forms = [password.clone(), encode(password), b64_text(password)];
        let calls = self.calls.lock().unwrap().clone();
        for call in &calls {
            for form in &forms {
                assert!(
                    !call.text.contains(form.as_str()) && !call.uri.contains(form.as_str()),
                    "{} {} shows the password: {}",
                    call.method,
                    call.uri,
                    call.text
                );
            }
        }
        let logged = logs::text();
        assert!(!logged.is_empty(), "the operator logged nothing");
        for form in &forms {
            assert!(
                !logged.contains(form.as_str()),
                "the logs show the password"
            );
        }
        assert!(!calls.is_empty(), "the operator made no call to scan");
    }
}

fn b64(text: &str) -> Value {
    serde_json::to_value(ByteString(text.as_bytes().to_vec())).unwrap()
}

fn b64_text(text: &str) -> String {
    b64(text).as_str().unwrap().to_owned()
}

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(
        Context::new(
            client,
            Settings::default(),
            Arc::new(Metrics::default()),
            Some("test-operator".into()),
        )
        .with_clock(Arc::new(now)),
    )
}

fn spec() -> Value {
    json!({
        "broker": {"secretRef": {"name": "rabbitmq"}},
        "outputs": [{"name": "security", "bindings": ["*.auth.*"], "sink": {"stdout": {}}}]
    })
}

fn object(spec: &Value, finalizers: bool, deleting: bool, status: Option<&Value>) -> Value {
    let mut p = json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "100"},
        "spec": spec,
    });
    if finalizers {
        p["metadata"]["finalizers"] = json!(["logstream.io/broker-cleanup"]);
    }
    if deleting {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-02T03:00:00Z");
    }
    if let Some(status) = status {
        p["status"] = status.clone();
    }
    p
}

fn pipeline(value: &Value) -> Arc<LogPipeline> {
    Arc::new(serde_json::from_value(value.clone()).unwrap())
}

fn owner_references() -> Value {
    json!([{
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "name": NAME,
        "uid": UID,
        "controller": true
    }])
}

fn worker_labels(output: &str) -> Value {
    json!({
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/managed-by": "logstream-operator",
        "app.kubernetes.io/name": "logstream-worker",
        "logstream.io/output": output,
        "logstream.io/pipeline": NAME
    })
}

fn event(type_: &str, reason: &str, action: &str, note: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "action": action,
        "reason": reason,
        "note": note,
        "eventTime": "<eventTime>",
        "metadata": {"name": "<name>", "namespace": NS},
        "regarding": {
            "apiVersion": "logstream.io/v1alpha1",
            "kind": "LogPipeline",
            "name": NAME,
            "namespace": NS,
            "uid": UID
        },
        "reportingController": "logstream-operator",
        "reportingInstance": "test-operator",
        "type": type_
    })
}

fn expect_event(type_: &str, reason: &str, action: &str, note: &str) -> Expect {
    Expect::new("POST", EVENTS)
        .body(event(type_, reason, action, note))
        .reply_with(Value::clone)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": NOW
    })
}

fn status_uri() -> String {
    format!("/apis/logstream.io/v1alpha1/namespaces/{NS}/logpipelines/{NAME}/status{SSA}")
}

fn status_body(status: Value) -> Value {
    json!({"apiVersion": "logstream.io/v1alpha1", "kind": "LogPipeline", "status": status})
}

/// The status apply; answered with the pipeline carrying that status.
fn expect_status(spec: &Value, status: Value) -> Expect {
    let answer_spec = spec.clone();
    Expect::new("PATCH", status_uri())
        .body(status_body(status))
        .reply_with(move |body| object(&answer_spec, true, false, body.get("status")))
}

/// The status and Warning Event of a reconcile that failed at `action` with `reason`:
/// `status` as expected, except the failing condition's (at `failing`) and Ready's message,
/// which, like the Event's note, only have to start with `prefix` (they end in a broker's or
/// API server's own words).
fn expect_failure(
    spec: &Value,
    status: Value,
    failing: usize,
    reason: &str,
    action: &str,
    prefix: &str,
) -> [Expect; 2] {
    const MESSAGES: [&str; 4] = [
        "/status/conditions/0/message",
        "/status/conditions/1/message",
        "/status/conditions/2/message",
        "/status/conditions/3/message",
    ];
    let messages = [MESSAGES[failing], MESSAGES[3]];
    let (check_prefix, prefix) = (prefix.to_owned(), prefix.to_owned());
    [
        expect_status(spec, status)
            .ignoring(&messages)
            .checking(move |body| {
                for pointer in messages {
                    let message = body.pointer(pointer).and_then(Value::as_str).unwrap();
                    assert!(message.starts_with(&check_prefix), "{message}");
                }
            }),
        Expect::new("POST", EVENTS)
            .body(event("Warning", reason, action, ""))
            .ignoring(&["/note"])
            .checking(move |body| {
                let note = body["note"].as_str().unwrap();
                assert!(note.starts_with(&prefix), "{note}");
            })
            .reply_with(Value::clone),
    ]
}

fn expect_secret_read(fixture: &Fixture, password: &str) -> Expect {
    Expect::new("GET", format!("/api/v1/namespaces/{NS}/secrets/rabbitmq"))
        .respond(200, fixture.secret(password))
}

/// The bodies the reconcile applies for output `security` of [`spec`], and their answers:
/// the ConfigMap, the Deployment (answered with 1 wanted, 0 ready) and the Service, each read
/// first (not found: nobody else's object has the name); then the list of worker Deployments
/// (for pruning).
fn expect_children(fixture: &Fixture, spec_value: &Value, listed: Vec<Value>) -> Vec<Expect> {
    let lp: LogPipeline = serde_json::from_value(object(spec_value, true, false, None)).unwrap();
    let mut p = plan(NS, NAME, &lp.spec).unwrap();
    p.vhost.clone_from(&fixture.vhost.name);
    let config = WorkerConfig::from_plan(&p, NS, NAME, &lp.spec, "security").unwrap();
    let worker_yaml = config.to_yaml();
    assert!(
        worker_yaml.contains(&format!("vhost: {}", fixture.vhost.name)),
        "the vhost comes from the Secret's URI:\n{worker_yaml}"
    );
    let probe = |path: &str, period: i64, failures: i64| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures});
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "game-logs-security",
            "namespace": NS,
            "labels": worker_labels("security"),
            "ownerReferences": owner_references()
        },
        "data": {"worker.yaml": worker_yaml}
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "game-logs-security",
            "namespace": NS,
            "labels": worker_labels("security"),
            "ownerReferences": owner_references()
        },
        "spec": {
            "selector": {"matchLabels": {"logstream.io/output": "security", "logstream.io/pipeline": NAME}},
            "template": {
                "metadata": {
                    "labels": worker_labels("security"),
                    "annotations": {
                        "logstream.io/broker-secret-version": "3",
                        "logstream.io/config-digest": logstream_api::digest::hex(&worker_yaml)
                    }
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "worker",
                        "image": "ghcr.io/logstream-io/logstream-worker:0.1.0",
                        "args": ["--config", "/etc/logstream/worker.yaml"],
                        "env": [{
                            "name": "LOGSTREAM_AMQP_URI",
                            "valueFrom": {"secretKeyRef": {"name": "rabbitmq", "key": "uri"}}
                        }],
                        "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                        "livenessProbe": probe("/healthz", 10, 3),
                        "readinessProbe": probe("/readyz", 5, 2),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]}
                        },
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/logstream", "readOnly": true}]
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "game-logs-security"}}]
                }
            }
        }
    });
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "replicas belong to the autoscaler"
    );
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "game-logs-security",
            "namespace": NS,
            "labels": worker_labels("security"),
            "ownerReferences": owner_references()
        },
        "spec": {
            "selector": {"logstream.io/output": "security", "logstream.io/pipeline": NAME},
            "ports": [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
        }
    });
    vec![
        expect_absent("/api/v1", "configmaps", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/configmaps/game-logs-security{SSA}"),
        )
        .body(config_map)
        .reply_with(|body| with_version(body, "8")),
        expect_absent("/apis/apps/v1", "deployments", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/apis/apps/v1/namespaces/{NS}/deployments/game-logs-security{SSA}"),
        )
        .body(deployment)
        .reply_with(|body| {
            let mut d = with_version(body, "9");
            d["spec"]["replicas"] = json!(1);
            d["status"] = json!({"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1});
            d
        }),
        expect_absent("/api/v1", "services", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/services/game-logs-security{SSA}"),
        )
        .body(service)
        .reply_with(|body| with_version(body, "10")),
        Expect::new(
            "GET",
            format!(
                "/apis/apps/v1/namespaces/{NS}/deployments?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dlogstream-operator%2Clogstream.io%2Fpipeline%3D{NAME}"
            ),
        )
        .respond(
            200,
            json!({
                "apiVersion": "apps/v1",
                "kind": "DeploymentList",
                "metadata": {"resourceVersion": "11"},
                "items": listed
            }),
        ),
    ]
}

/// The read of child `kind/name` before its apply, answered "not found".
fn expect_absent(api: &str, kind: &str, name: &str) -> Expect {
    Expect::new("GET", format!("{api}/namespaces/{NS}/{kind}/{name}")).respond(
        404,
        status_error(404, "NotFound", &format!("{kind} \"{name}\" not found")),
    )
}

fn with_version(body: &Value, version: &str) -> Value {
    let mut answer = body.clone();
    answer["metadata"]["resourceVersion"] = json!(version);
    answer["metadata"]["uid"] = json!(format!("uid-{version}"));
    answer
}

/// The worker Deployment of `output` as a list answer shows it.
fn listed_deployment(output: &str) -> Value {
    json!({
        "metadata": {
            "name": format!("{NAME}-{output}"),
            "namespace": NS,
            "labels": worker_labels(output),
            "ownerReferences": owner_references()
        },
        "spec": {
            "selector": {"matchLabels": {"logstream.io/output": output, "logstream.io/pipeline": NAME}},
            "template": {"spec": {"containers": [{"name": "worker"}]}}
        }
    })
}

/// The creation of output `security`'s topology, as the TopologyChanged event words it.
fn created_note() -> String {
    [
        "created exchange logstream.games.game-logs",
        "created exchange logstream.games.game-logs.dlx",
        "created queue logstream.games.game-logs.security",
        "created queue logstream.games.game-logs.security.retry.0",
        "created queue logstream.games.game-logs.security.retry.1",
        "created queue logstream.games.game-logs.security.retry.2",
        "created queue logstream.games.game-logs.security.dlq",
        "bound logstream.games.game-logs.security to logstream.games.game-logs with \"*.auth.*\"",
        "bound logstream.games.game-logs.security.dlq to logstream.games.game-logs.dlx with \"security\"",
    ]
    .join("; ")
}

/// The calls of a reconcile that creates `spec`'s topology: the Secret read, the
/// TopologyChanged Event, then the children (with `listed` Deployments found).
fn expect_created(fixture: &Fixture, spec: &Value, listed: Vec<Value>) -> Vec<Expect> {
    let mut calls = vec![
        expect_secret_read(fixture, &fixture.user.password),
        expect_event(
            "Normal",
            "TopologyChanged",
            "ApplyTopology",
            &created_note(),
        ),
    ];
    calls.extend(expect_children(fixture, spec, listed));
    calls
}

/// The status patch of a healthy reconcile of `spec` ([`healthy_status`]), its live queue
/// figures only checked to be zero when present.
fn expect_healthy_status(fixture: &Fixture, spec: &Value) -> Expect {
    expect_status(spec, healthy_status(fixture))
        .ignoring(LIVE_FIGURES)
        .checking(live_figures_are_zero_if_present)
}

/// The status of a healthy reconcile of [`spec`] whose worker is not ready yet, with the
/// figures of an empty queue.
fn healthy_status(fixture: &Fixture) -> Value {
    let workers = "output security: 0/1 replicas ready";
    json!({
        "observedGeneration": 1,
        "conditions": [
            condition("BrokerReachable", "True", "Connected",
                &format!("logged in to {} as user {}", fixture.shown(), fixture.user.name)),
            condition("TopologyReady", "True", "TopologyApplied",
                &format!("exchange logstream.games.game-logs, 5 queues and 2 bindings are in place on vhost {}", fixture.vhost.name)),
            condition("WorkersReady", "False", "WorkersNotReady", workers),
            condition("Ready", "False", "WorkersNotReady", workers),
        ],
        "outputs": [{
            "name": "security",
            "queue": QUEUE,
            "ready": 0,
            "unacked": 0,
            "consumers": 0,
            "oldestMessageAgeSeconds": 0.0,
            "deadLettered": 0,
            "replicas": 0
        }],
        "depth": 0,
        "oldestMessageAge": "0s",
        "deadLettered": 0,
        "replicas": "0/1"
    })
}

/// Figures the management API fills in only after its first statistics round: absent or
/// zero right after the queues were created.
const LIVE_FIGURES: &[&str] = &[
    "/status/outputs/0/ready",
    "/status/outputs/0/unacked",
    "/status/outputs/0/consumers",
    "/status/outputs/0/oldestMessageAgeSeconds",
    "/status/outputs/0/deadLettered",
    "/status/depth",
    "/status/oldestMessageAge",
    "/status/deadLettered",
];

fn live_figures_are_zero_if_present(body: &Value) {
    for pointer in LIVE_FIGURES {
        if let Some(v) = body.pointer(pointer) {
            assert!(
                v == &json!(0) || v == &json!(0.0) || v == &json!("0s"),
                "{pointer} = {v} for an empty queue"
            );
        }
    }
}

/// Waits until the management API reports the figures of the output's main queue and DLQ.
async fn statistics_are_in(fixture: &Fixture) {
    eventually(Duration::from_secs(20), "queue statistics", || async move {
        let queues = fixture
            .vhost
            .management
            .queues(&fixture.vhost.name)
            .await
            .ok()?;
        let main = queues.iter().find(|q| q.name == QUEUE)?;
        let dlq = queues.iter().find(|q| q.name == format!("{QUEUE}.dlq"))?;
        (main.messages_ready.is_some()
            && main.messages_unacknowledged.is_some()
            && main.consumers.is_some()
            && dlq.messages.is_some())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pipeline_gets_a_finalizer_then_topology_children_and_status() {
    let f = Fixture::new("ctl-new").await;
    let spec = spec();

    // A pipeline the operator never saw: the finalizer comes first, alone.
    let fresh = object(&spec, false, false, None);
    let api = f.serve(vec![
        Expect::new(
            "PATCH",
            format!("/apis/logstream.io/v1alpha1/namespaces/{NS}/logpipelines/{NAME}?"),
        )
        .body(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["logstream.io/broker-cleanup"]}
        ]))
        .respond(200, object(&spec, true, false, None)),
    ]);
    let action = reconcile(pipeline(&fresh), context(api.client.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    api.done().await;
    assert!(
        f.queues().await.is_empty(),
        "nothing on the broker before the finalizer"
    );

    // With the finalizer: topology, events, children, status.
    let mut scenario = expect_created(&f, &spec, vec![listed_deployment("security")]);
    scenario.push(expect_healthy_status(&f, &spec));
    let api = f.serve(scenario);
    let ctx = context(api.client.clone());
    let action = reconcile(pipeline(&object(&spec, true, false, None)), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    api.done().await;
    assert_eq!(
        f.queues().await,
        [
            QUEUE.to_owned(),
            format!("{QUEUE}.dlq"),
            format!("{QUEUE}.retry.0"),
            format!("{QUEUE}.retry.1"),
            format!("{QUEUE}.retry.2"),
        ]
    );

    // The periodic recheck: nothing changes on the broker (no event), the figures are in.
    statistics_are_in(&f).await;
    let with_status = object(&spec, true, false, Some(&healthy_status(&f)));
    let mut scenario = vec![expect_secret_read(&f, &f.user.password)];
    scenario.extend(expect_children(
        &f,
        &spec,
        vec![listed_deployment("security")],
    ));
    scenario.push(expect_status(&spec, healthy_status(&f)));
    let api = f.serve(scenario);
    let action = reconcile(pipeline(&with_status), context(api.client.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    api.done().await;
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_with_the_field_path_and_gets_no_children() {
    let f = Fixture::new("ctl-invalid").await;
    let spec = json!({
        "broker": {"secretRef": {"name": "rabbitmq"}},
        "exchange": {"type": "direct"},
        "outputs": [{"name": "security", "sink": {"stdout": {}}}]
    });
    let problem = "spec.outputs[0].bindings: a direct exchange needs at least one routing key to bind the output's queue";
    let not_checked = "not checked: the spec is invalid";
    let api = f.serve(vec![
        expect_status(
            &spec,
            json!({
                "observedGeneration": 1,
                "conditions": [
                    condition("BrokerReachable", "Unknown", "NotChecked", not_checked),
                    condition("TopologyReady", "False", "InvalidSpec", problem),
                    condition("WorkersReady", "Unknown", "NotChecked", not_checked),
                    condition("Ready", "False", "InvalidSpec", problem),
                ],
                "outputs": [{"name": "security", "queue": QUEUE}]
            }),
        ),
        expect_event("Warning", "InvalidSpec", "Validate", problem),
    ]);
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::await_change(),
        "an invalid spec waits for a change instead of retrying"
    );
    assert!(
        f.queues().await.is_empty(),
        "nothing declared on the broker"
    );
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_and_retried_with_backoff() {
    let f = Fixture::new("ctl-nosecret").await;
    let spec = spec();
    let message = "failed to read Secret rabbitmq in namespace games: it does not exist";
    let not_checked = "not checked: the broker is not reachable";
    let scenario = |_: ()| {
        vec![
            Expect::new("GET", format!("/api/v1/namespaces/{NS}/secrets/rabbitmq")).respond(
                404,
                status_error(404, "NotFound", "secrets \"rabbitmq\" not found"),
            ),
            expect_status(
                &spec,
                json!({
                    "observedGeneration": 1,
                    "conditions": [
                        condition("BrokerReachable", "False", "SecretNotFound", message),
                        condition("TopologyReady", "Unknown", "NotChecked", not_checked),
                        condition("WorkersReady", "Unknown", "NotChecked", not_checked),
                        condition("Ready", "False", "SecretNotFound", message),
                    ],
                    "outputs": [{"name": "security", "queue": QUEUE}]
                }),
            ),
            expect_event("Warning", "SecretNotFound", "ReadBrokerSecret", message),
        ]
    };
    let api = f.serve(scenario(()));
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert_eq!(err.to_string(), message);
    assert_eq!(
        error_policy(p.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(10)),
        "the wait doubles while the Secret stays missing"
    );
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_makes_the_broker_unreachable_without_showing_the_password() {
    let f = Fixture::new("ctl-refused").await;
    let spec = spec();
    let wrong = format!("wr0ng-{}", f.user.password);
    let prefix = format!(
        "broker {} refused the credentials of user \"{}\"",
        f.shown(),
        f.user.name
    );
    let not_checked = "not checked: the broker is not reachable";
    let mut scenario = vec![expect_secret_read(&f, &wrong)];
    scenario.extend(expect_failure(
        &spec,
        json!({
            "observedGeneration": 1,
            "conditions": [
                condition("BrokerReachable", "False", "AccessRefused", "(checked)"),
                condition("TopologyReady", "Unknown", "NotChecked", not_checked),
                condition("WorkersReady", "Unknown", "NotChecked", not_checked),
                condition("Ready", "False", "AccessRefused", "(checked)"),
            ],
            "outputs": [{"name": "security", "queue": QUEUE}]
        }),
        0,
        "AccessRefused",
        "ApplyTopology",
        &prefix,
    ));
    let api = f.serve(scenario);
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert_eq!(err.category(), "AccessRefused", "{err}");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(5)),
        "a Secret change is not watched: retry with backoff"
    );
    assert!(f.queues().await.is_empty());
    f.assert_password_never_shown();
    let logged = logs::text();
    assert!(!logged.contains(&wrong), "the logs show the wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topology_conflict_is_a_condition_naming_the_argument_not_a_crash_loop() {
    let f = Fixture::new("ctl-conflict").await;
    let spec = spec();
    // Someone declared the main queue with other priorities.
    let lp: LogPipeline = serde_json::from_value(object(&spec, true, false, None)).unwrap();
    let mut args = plan(NS, NAME, &lp.spec).unwrap().queues[0]
        .arguments
        .clone();
    args.insert(
        "x-max-priority".into(),
        logstream_api::topology::ArgValue::Int(9),
    );
    let connection = f.vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            QUEUE.into(),
            lapin::options::QueueDeclareOptions::durable(),
            logstream_broker::topology::field_table(&args),
        )
        .await
        .unwrap();

    let topology_checked = |body: &Value| {
        let message = body
            .pointer("/status/conditions/1/message")
            .and_then(Value::as_str)
            .unwrap();
        assert!(
            message.starts_with(&format!(
                "queue {QUEUE} already exists with a different x-max-priority"
            )),
            "{message}"
        );
    };
    let not_checked = "not checked: the topology is not ready";
    let api = f.serve(vec![
        expect_secret_read(&f, &f.user.password),
        expect_status(
            &spec,
            json!({
                "observedGeneration": 1,
                "conditions": [
                    condition("BrokerReachable", "True", "Connected",
                        &format!("logged in to {} as user {}", f.shown(), f.user.name)),
                    condition("TopologyReady", "False", "TopologyConflict", "(checked)"),
                    condition("WorkersReady", "Unknown", "NotChecked", not_checked),
                    condition("Ready", "False", "TopologyConflict", "(checked)"),
                ],
                "outputs": [{"name": "security", "queue": QUEUE}]
            }),
        )
        .ignoring(&[
            "/status/conditions/1/message",
            "/status/conditions/3/message",
        ])
        .checking(topology_checked),
        Expect::new("POST", EVENTS)
            .body(event("Warning", "TopologyConflict", "ApplyTopology", ""))
            .ignoring(&["/note"])
            .checking(|body| {
                assert!(
                    body["note"].as_str().unwrap().contains("x-max-priority"),
                    "{body}"
                );
            })
            .reply_with(Value::clone),
    ]);
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert_eq!(err.category(), "TopologyConflict");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(30)),
        "checked again at the recheck interval, not in a hot loop"
    );
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_on_the_broker_is_recreated_by_the_next_reconcile() {
    let f = Fixture::new("ctl-drift").await;
    let spec = spec();
    let mut scenario = expect_created(&f, &spec, vec![listed_deployment("security")]);
    scenario.push(expect_healthy_status(&f, &spec));
    let api = f.serve(scenario);
    let p = pipeline(&object(&spec, true, false, None));
    reconcile(p.clone(), context(api.client.clone()))
        .await
        .unwrap();
    api.done().await;

    // Someone deletes the main queue (and with it its binding) by hand.
    let connection = f.vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(QUEUE.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
    assert!(!f.queues().await.contains(&QUEUE.to_owned()));

    let recreated = [
        format!("created queue {QUEUE}"),
        format!("bound {QUEUE} to logstream.games.game-logs with \"*.auth.*\""),
    ]
    .join("; ");
    let mut scenario = vec![
        expect_secret_read(&f, &f.user.password),
        expect_event("Normal", "TopologyChanged", "ApplyTopology", &recreated),
    ];
    scenario.extend(expect_children(
        &f,
        &spec,
        vec![listed_deployment("security")],
    ));
    scenario.push(expect_healthy_status(&f, &spec));
    let api = f.serve(scenario);
    reconcile(p, context(api.client.clone())).await.unwrap();
    api.done().await;

    let queues = f.vhost.management.queues(&f.vhost.name).await.unwrap();
    let main = queues.iter().find(|q| q.name == QUEUE).expect("recreated");
    assert_eq!(main.arguments["x-max-priority"], json!(3));
    let bindings = f.vhost.management.bindings(&f.vhost.name).await.unwrap();
    assert!(
        bindings
            .iter()
            .any(|b| b.destination == QUEUE && b.routing_key == "*.auth.*"),
        "the binding is back too"
    );
    // Messages published to the exchange reach the queue again.
    let (_c, confirm) = f.vhost.confirm_channel().await;
    let answer = publish(
        &confirm,
        "logstream.games.game-logs",
        "api.auth.login",
        b"{}",
    )
    .await;
    assert!(answer.is_ack());
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_removed_from_the_spec_loses_its_worker_children() {
    let f = Fixture::new("ctl-prune").await;
    let spec = spec();
    let mut scenario = expect_created(
        &f,
        &spec,
        vec![listed_deployment("security"), listed_deployment("audit")],
    );
    for (path, kind) in [
        ("apis/apps/v1", "deployments"),
        ("api/v1", "configmaps"),
        ("api/v1", "services"),
    ] {
        scenario.push(
            Expect::new(
                "DELETE",
                format!("/{path}/namespaces/{NS}/{kind}/game-logs-audit?"),
            )
            .body(json!({"propagationPolicy": "Background"}))
            .respond(200, status_ok()),
        );
    }
    scenario.push(expect_event(
        "Normal",
        "WorkersPruned",
        "PruneOutputs",
        "deleted Deployment, ConfigMap and Service game-logs-audit of removed output audit",
    ));
    scenario.push(expect_healthy_status(&f, &spec));
    let api = f.serve(scenario);
    reconcile(
        pipeline(&object(&spec, true, false, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap();
    api.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prune_is_reported_like_a_failed_child_and_retried_with_backoff() {
    let f = Fixture::new("ctl-prune-fails").await;
    let spec = spec();
    let mut scenario = expect_created(&f, &spec, vec![]);
    let list = scenario
        .pop()
        .expect("the list of worker Deployments comes last");
    scenario.push(Expect::new("GET", list.uri).respond(
        403,
        status_error(403, "Forbidden", "deployments.apps is forbidden"),
    ));
    scenario.extend(expect_failure(
        &spec,
        json!({
            "observedGeneration": 1,
            "conditions": [
                condition("BrokerReachable", "True", "Connected",
                    &format!("logged in to {} as user {}", f.shown(), f.user.name)),
                condition("TopologyReady", "True", "TopologyApplied",
                    &format!("exchange logstream.games.game-logs, 5 queues and 2 bindings are in place on vhost {}", f.vhost.name)),
                condition("WorkersReady", "False", "KubernetesApiError", "(checked)"),
                condition("Ready", "False", "KubernetesApiError", "(checked)"),
            ],
            "outputs": [{"name": "security", "queue": QUEUE}]
        }),
        2,
        "KubernetesApiError",
        "ApplyWorkers",
        &format!("failed to list the worker Deployments of {NS}/{NAME}: "),
    ));
    let api = f.serve(scenario);
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert_eq!(err.category(), "KubernetesApiError", "{err}");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(5))
    );
}

/// Declares the topology of [`spec`] with `policy` on the test vhost, as an earlier
/// reconcile would have, and puts one message into the main queue.
async fn existing_topology(f: &Fixture, spec: &Value) {
    let lp: LogPipeline = serde_json::from_value(object(spec, true, false, None)).unwrap();
    let mut p = plan(NS, NAME, &lp.spec).unwrap();
    p.vhost.clone_from(&f.vhost.name);
    let admin = f.admin().await;
    admin.apply(&p).await.unwrap();
    admin.close().await;
    let (_c, channel) = f.vhost.confirm_channel().await;
    let answer = publish(
        &channel,
        "logstream.games.game-logs",
        "api.auth.login",
        b"{}",
    )
    .await;
    assert!(answer.is_ack());
    eventually(
        Duration::from_secs(10),
        "the message in the queue",
        || async move {
            let admin = BrokerAdmin::connect(&endpoint(), &f.vhost.name)
                .await
                .ok()?;
            let depth = admin.queue_depth(QUEUE).await.ok()??;
            admin.close().await;
            (depth.ready == 1).then_some(())
        },
    )
    .await;
}

fn deleting_spec(policy: &str) -> Value {
    let mut spec = spec();
    spec["deletionPolicy"] = json!(policy);
    spec
}

fn expect_finalizer_removed(spec: &Value) -> Expect {
    Expect::new(
        "PATCH",
        format!("/apis/logstream.io/v1alpha1/namespaces/{NS}/logpipelines/{NAME}?"),
    )
    .body(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "logstream.io/broker-cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"}
    ]))
    .respond(200, object(spec, false, true, None))
}

async fn delete(f: &Fixture, spec: &Value, scenario: Vec<Expect>) {
    let api = f.serve(scenario);
    let action = reconcile(
        pipeline(&object(spec, true, true, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    api.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_retain_keeps_every_broker_object() {
    let f = Fixture::new("ctl-retain").await;
    let spec = deleting_spec("Retain");
    existing_topology(&f, &spec).await;
    let before = (f.queues().await, f.exchanges().await);
    delete(
        &f,
        &spec,
        vec![
            expect_event(
                "Normal",
                "BrokerObjectsRetained",
                "Cleanup",
                "deletionPolicy Retain: exchange logstream.games.game-logs and 5 queues stay on the broker",
            ),
            expect_finalizer_removed(&spec),
        ],
    )
    .await;
    assert_eq!((f.queues().await, f.exchanges().await), before);
    assert_eq!(before.0.len(), 5);
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_delete_if_empty_keeps_and_reports_queues_that_hold_messages() {
    let f = Fixture::new("ctl-ifempty").await;
    let spec = deleting_spec("DeleteIfEmpty");
    existing_topology(&f, &spec).await;
    let deleted = [
        format!("deleted queue {QUEUE}.dlq"),
        format!("deleted queue {QUEUE}.retry.0"),
        format!("deleted queue {QUEUE}.retry.1"),
        format!("deleted queue {QUEUE}.retry.2"),
        "deleted exchange logstream.games.game-logs.dlx".to_owned(),
    ]
    .join("; ");
    delete(
        &f,
        &spec,
        vec![
            expect_secret_read(&f, &f.user.password),
            expect_event(
                "Normal",
                "BrokerCleanedUp",
                "Cleanup",
                &format!("deletionPolicy DeleteIfEmpty: {deleted}"),
            ),
            expect_event(
                "Warning",
                "QueuesRetained",
                "Cleanup",
                &format!(
                    "deletionPolicy DeleteIfEmpty: kept queues that still hold messages: {QUEUE} (1 message)"
                ),
            ),
            expect_finalizer_removed(&spec),
        ],
    )
    .await;
    assert_eq!(f.queues().await, [QUEUE.to_owned()]);
    assert_eq!(
        f.exchanges().await,
        ["logstream.games.game-logs".to_owned()],
        "the exchange still routes to the kept queue"
    );
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_with_delete_removes_every_broker_object() {
    let f = Fixture::new("ctl-delete").await;
    let spec = deleting_spec("Delete");
    existing_topology(&f, &spec).await;
    let deleted = [
        format!("deleted queue {QUEUE}"),
        format!("deleted queue {QUEUE}.dlq"),
        format!("deleted queue {QUEUE}.retry.0"),
        format!("deleted queue {QUEUE}.retry.1"),
        format!("deleted queue {QUEUE}.retry.2"),
        "deleted exchange logstream.games.game-logs.dlx".to_owned(),
        "deleted exchange logstream.games.game-logs".to_owned(),
    ]
    .join("; ");
    delete(
        &f,
        &spec,
        vec![
            expect_secret_read(&f, &f.user.password),
            expect_event(
                "Normal",
                "BrokerCleanedUp",
                "Cleanup",
                &format!("deletionPolicy Delete: {deleted}"),
            ),
            expect_finalizer_removed(&spec),
        ],
    )
    .await;
    assert!(f.queues().await.is_empty());
    assert!(f.exchanges().await.is_empty());
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_after_the_secret_is_gone_uses_the_credentials_the_pipeline_was_applied_with() {
    // A namespace being deleted: the Secret goes before the LogPipeline's finalizer runs.
    let f = Fixture::new("ctl-gone").await;
    let spec = deleting_spec("Delete");
    let mut scenario = expect_created(&f, &spec, vec![listed_deployment("security")]);
    scenario.push(expect_healthy_status(&f, &spec));
    scenario.extend([
        Expect::new("GET", format!("/api/v1/namespaces/{NS}/secrets/rabbitmq")).respond(
            404,
            status_error(404, "NotFound", "secrets \"rabbitmq\" not found"),
        ),
        Expect::new("POST", EVENTS)
            .body(event("Normal", "BrokerCleanedUp", "Cleanup", ""))
            .ignoring(&["/note"])
            .reply_with(Value::clone),
        expect_finalizer_removed(&spec),
    ]);
    let api = f.serve(scenario);
    let ctx = context(api.client.clone());
    reconcile(pipeline(&object(&spec, true, false, None)), ctx.clone())
        .await
        .unwrap();
    assert_eq!(f.queues().await.len(), 5);
    let action = reconcile(pipeline(&object(&spec, true, true, None)), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    api.done().await;
    assert!(f.queues().await.is_empty());
    f.assert_password_never_shown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_reaches_logs_statuses_or_events() {
    // The whole life of a pipeline in one process: created, refused, deleted. Every body the
    // operator sent and every line it logged (all targets, TRACE) is scanned.
    let f = Fixture::new("ctl-secrets").await;
    let spec = deleting_spec("Delete");
    let mut scenario = expect_created(&f, &spec, vec![listed_deployment("security")]);
    scenario.push(expect_healthy_status(&f, &spec));
    let api = f.serve(scenario);
    reconcile(
        pipeline(&object(&spec, true, false, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap();
    api.done().await;

    let wrong = format!("wr0ng-{}", f.user.password);
    let api = f.serve(vec![
        expect_secret_read(&f, &wrong),
        Expect::new("PATCH", status_uri()).any_body().reply_with({
            let spec = spec.clone();
            move |body| object(&spec, true, false, body.get("status"))
        }),
        Expect::new("POST", EVENTS)
            .any_body()
            .reply_with(Value::clone),
    ]);
    reconcile(
        pipeline(&object(&spec, true, false, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap_err();
    api.done().await;

    let api = f.serve(vec![
        expect_secret_read(&f, &f.user.password),
        Expect::new("POST", EVENTS)
            .any_body()
            .reply_with(Value::clone),
        expect_finalizer_removed(&spec),
    ]);
    reconcile(
        pipeline(&object(&spec, true, true, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap();
    api.done().await;

    let calls = f.calls.lock().unwrap().clone();
    assert!(
        calls.iter().filter(|c| c.uri.contains("/status?")).count() >= 2
            && calls.iter().filter(|c| c.uri.starts_with(EVENTS)).count() >= 3,
        "statuses and events were produced and scanned"
    );
    f.assert_password_never_shown();
    assert!(!logs::text().contains(&wrong));
}

#[tokio::test]
async fn a_missing_crd_fails_startup_with_an_install_hint() {
    let api = MockApi::serve(
        vec![
            Expect::new("GET", "/apis/logstream.io/v1alpha1/logpipelines?&limit=1")
                .respond(404, json!("404 page not found")),
        ],
        Calls::default(),
    );
    let err = logstream_operator::startup::check_crd_installed(api.client.clone(), None)
        .await
        .unwrap_err();
    api.done().await;
    assert_eq!(
        err.to_string(),
        "CRD logpipelines.logstream.io is not installed: kubectl apply -f crds/logstream.io_logpipelines.yaml, or helm install logstream charts/logstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_name_taken_by_an_object_the_operator_did_not_make_is_a_name_conflict_not_a_takeover()
 {
    let f = Fixture::new("ctl-name-conflict").await;
    let spec = spec();
    let mut scenario = expect_created(&f, &spec, vec![]);
    // The ConfigMap's name is taken by someone else's ConfigMap: read, then left alone.
    scenario.truncate(2);
    scenario.push(
        Expect::new(
            "GET",
            format!("/api/v1/namespaces/{NS}/configmaps/game-logs-security"),
        )
        .respond(
            200,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "game-logs-security", "namespace": NS, "uid": "theirs",
                             "labels": {"app": "billing"}},
                "data": {"settings": "keep me"}
            }),
        ),
    );
    let message = "failed to apply ConfigMap games/game-logs-security: it exists and was not created by the LogStream operator for this output, so the operator leaves it alone (rename the output or the LogPipeline, or delete that ConfigMap)";
    scenario.extend(expect_failure(
        &spec,
        json!({
            "observedGeneration": 1,
            "conditions": [
                condition("BrokerReachable", "True", "Connected",
                    &format!("logged in to {} as user {}", f.shown(), f.user.name)),
                condition("TopologyReady", "True", "TopologyApplied",
                    &format!("exchange logstream.games.game-logs, 5 queues and 2 bindings are in place on vhost {}", f.vhost.name)),
                condition("WorkersReady", "False", "NameConflict", "(checked)"),
                condition("Ready", "False", "NameConflict", "(checked)"),
            ],
            "outputs": [{"name": "security", "queue": QUEUE}]
        }),
        2,
        "NameConflict",
        "ApplyWorkers",
        message,
    ));
    let api = f.serve(scenario);
    let ctx = context(api.client.clone());
    let p = pipeline(&object(&spec, true, false, None));
    let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
    api.done().await;
    assert_eq!(err.to_string(), message);
    assert_eq!(err.category(), "NameConflict");
    assert_eq!(
        error_policy(p, &err, ctx),
        Action::requeue(Duration::from_secs(30)),
        "checked again at the recheck interval: the user must act"
    );
    let calls = f.calls.lock().unwrap().clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.method == "PATCH" && c.uri.contains("configmaps")),
        "the other ConfigMap was not applied over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_of_another_pipeline_is_named_in_the_conflict() {
    let f = Fixture::new("ctl-name-other").await;
    let spec = spec();
    let mut scenario = expect_created(&f, &spec, vec![]);
    // The ConfigMap is ours; the Deployment belongs to output `security` of another
    // LogPipeline (a name collision of the old `<pipeline>-<output>` scheme).
    scenario.truncate(4);
    let mut theirs = listed_deployment("security");
    theirs["metadata"]["labels"]["logstream.io/pipeline"] = json!("game");
    theirs["metadata"]["ownerReferences"][0]["uid"] = json!("another-uid");
    scenario.push(
        Expect::new(
            "GET",
            format!("/apis/apps/v1/namespaces/{NS}/deployments/game-logs-security"),
        )
        .respond(200, theirs),
    );
    let message = "failed to apply Deployment games/game-logs-security: it exists and belongs to output security of LogPipeline game, so the operator leaves it alone (rename the output or the LogPipeline, or delete that Deployment)";
    scenario.extend(expect_failure(
        &spec,
        json!({
            "observedGeneration": 1,
            "conditions": [
                condition("BrokerReachable", "True", "Connected",
                    &format!("logged in to {} as user {}", f.shown(), f.user.name)),
                condition("TopologyReady", "True", "TopologyApplied",
                    &format!("exchange logstream.games.game-logs, 5 queues and 2 bindings are in place on vhost {}", f.vhost.name)),
                condition("WorkersReady", "False", "NameConflict", "(checked)"),
                condition("Ready", "False", "NameConflict", "(checked)"),
            ],
            "outputs": [{"name": "security", "queue": QUEUE}]
        }),
        2,
        "NameConflict",
        "ApplyWorkers",
        message,
    ));
    let api = f.serve(scenario);
    let err = reconcile(
        pipeline(&object(&spec, true, false, None)),
        context(api.client.clone()),
    )
    .await
    .unwrap_err();
    api.done().await;
    assert_eq!(err.to_string(), message);
}
