//! Per-output broker users (`spec.broker.workerUsers`) on the real broker: what such a user
//! may and may not do with the permissions the operator gives it, and its life with the
//! output (created by a reconcile, deleted when the output is removed), every API call
//! checked on a mock API server.

mod support;

use std::sync::Arc;

use k8s_openapi::{ByteString, jiff::Timestamp};
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use logstream_api::{LogPipeline, plan};
use logstream_broker::{BrokerAdmin, BrokerConnection, BrokerError, Purpose};
use logstream_operator::{
    controller::{Context, reconcile, worker_users::permissions},
    metrics::Metrics,
    settings::Settings,
};
use serde_json::{Value, json};
use support::{
    TestVhost,
    api::{Calls, Expect, MockApi, status_error, status_ok},
    encode, endpoint, publish, unique,
};

const NS: &str = "games";
const NAME: &str = "game-logs";
const UID: &str = "5d9b2c1e-7a4f-4b8e-9c3d-000000000077";
const SSA: &str = "?&force=true&fieldManager=logstream-operator";

fn spec(outputs: &[&str], worker_users: bool) -> Value {
    json!({
        "broker": {"secretRef": {"name": "rabbitmq"}, "workerUsers": worker_users},
        "outputs": outputs.iter().map(|o| json!({"name": o, "sink": {"stdout": {}}})).collect::<Vec<_>>()
    })
}

fn object(spec: &Value) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1,
                     "resourceVersion": "100", "finalizers": ["logstream.io/broker-cleanup"]},
        "spec": spec,
    })
}

/// The topology of `outputs` declared on `vhost` as the operator would.
async fn topology(vhost: &TestVhost, outputs: &[&str]) -> logstream_api::TopologyPlan {
    let lp: LogPipeline = serde_json::from_value(object(&spec(outputs, true))).unwrap();
    let mut p = plan(NS, NAME, &lp.spec).unwrap();
    p.vhost.clone_from(&vhost.name);
    let admin = BrokerAdmin::connect(&endpoint(), &vhost.name)
        .await
        .unwrap();
    admin.apply(&p).await.unwrap();
    admin.close().await;
    p
}

fn refused(result: Result<impl Sized, lapin::Error>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: allowed"),
        Err(e) => assert!(
            e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"),
            "{what}: {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_user_consumes_only_its_queue_publishes_its_copies_and_declares_nothing() {
    let vhost = TestVhost::new("wu-perms").await;
    let plan = topology(&vhost, &["security", "audit"]).await;
    let main = plan.names.main_queue("security");
    let user = unique("worker");
    let password = unique("pw");
    let management = vhost.management.clone();
    management.put_user(&user, &password, "").await.unwrap();
    management
        .put_permissions(&vhost.name, &user, &permissions(&main))
        .await
        .unwrap();
    let as_worker = endpoint()
        .with_credentials(&user, &password)
        .with_vhost(&vhost.name);

    // What the worker does at start and at work: passive checks of its queues, consume its
    // queue, publish retry and dead-letter copies through the default exchange.
    let connection = BrokerConnection::open(&as_worker, "worker-test", Purpose::Messages)
        .await
        .unwrap();
    for queue in [
        main.clone(),
        plan.names.retry_queue("security", 0),
        plan.names.dead_letter_queue("security"),
    ] {
        connection
            .require_queue(&queue)
            .await
            .unwrap_or_else(|e| panic!("passive check of {queue}: {e}"));
    }
    let consume = connection.channel().await.unwrap();
    consume
        .basic_consume(
            main.as_str().into(),
            "own".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume its own main queue");
    let confirm = connection.confirm_channel().await.unwrap();
    for copy in [
        plan.names.retry_queue("security", 0),
        plan.names.dead_letter_queue("security"),
    ] {
        assert!(
            publish(&confirm, "", &copy, b"{}").await.is_ack(),
            "publish a copy to {copy}"
        );
    }

    // Another output's queue: not even a consumer.
    let other = plan.names.main_queue("audit");
    let ch = connection.channel().await.unwrap();
    refused(
        ch.basic_consume(
            other.as_str().into(),
            "other".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
        "consume another output's queue",
    );
    // Declare, bind, delete: nothing, not even its own queue.
    let ch = connection.channel().await.unwrap();
    refused(
        ch.queue_declare(
            "logstream.games.game-logs.new".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await,
        "declare a queue",
    );
    let ch = connection.channel().await.unwrap();
    refused(
        ch.exchange_declare(
            "logstream.games.game-logs.x".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
        "declare an exchange",
    );
    let ch = connection.channel().await.unwrap();
    refused(
        ch.queue_bind(
            main.as_str().into(),
            plan.exchange().name.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await,
        "bind its own queue",
    );
    for queue in [main.clone(), other.clone()] {
        let ch = connection.channel().await.unwrap();
        refused(
            ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await,
            "delete a queue",
        );
    }
    connection.close().await;
    management.delete_user(&user).await.unwrap();
}

fn b64(text: &str) -> Value {
    serde_json::to_value(ByteString(text.as_bytes().to_vec())).unwrap()
}

/// A reply echoing an applied or created object with a resourceVersion and uid.
fn echo(version: &'static str) -> impl Fn(&Value) -> Value + Send + 'static {
    move |body| {
        let mut answer = body.clone();
        answer["metadata"]["resourceVersion"] = json!(version);
        answer["metadata"]["uid"] = json!(format!("uid-{version}"));
        answer
    }
}

fn absent(api: &str, kind: &str, name: &str) -> Expect {
    Expect::new("GET", format!("{api}/namespaces/{NS}/{kind}/{name}")).respond(
        404,
        status_error(404, "NotFound", &format!("{kind} \"{name}\" not found")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_creates_the_worker_user_and_pruning_the_output_deletes_it() {
    let vhost = TestVhost::new("wu-life").await;
    // The pipeline's Secret names a user that may create users (administrator).
    let admin_user = unique("admin");
    let admin_password = unique("pw");
    vhost
        .management
        .put_user(&admin_user, &admin_password, "administrator")
        .await
        .unwrap();
    vhost
        .management
        .grant_all(&vhost.name, &admin_user)
        .await
        .unwrap();
    let a = endpoint().amqp();
    let uri = format!(
        "amqp://{}:{}@{}:{}/{}",
        encode(&admin_user),
        encode(&admin_password),
        a.authority.host,
        a.authority.port,
        encode(&vhost.name)
    );
    let mut data = json!({"uri": b64(&uri)});
    if logstream_testkit::management_addr().is_some() {
        data["managementUri"] = b64(endpoint().management().base.as_str());
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "rabbitmq", "namespace": NS, "resourceVersion": "3"}, "data": data});
    let security = spec(&["security"], true);
    let user = format!("logstream.games.game-logs.security.worker@{}", vhost.name);
    let user_secret = "game-logs-security-broker-user";
    let created: Arc<std::sync::Mutex<Option<Value>>> = Arc::default();
    let keep = created.clone();
    let scenario = vec![
        Expect::new("GET", format!("/api/v1/namespaces/{NS}/secrets/rabbitmq"))
            .respond(200, secret.clone()),
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/games/events?")
            .any_body()
            .reply_with(Value::clone),
        absent("/api/v1", "configmaps", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/configmaps/game-logs-security{SSA}"),
        )
        .any_body()
        .reply_with(echo("8")),
        absent("/api/v1", "secrets", user_secret),
        Expect::new("POST", format!("/api/v1/namespaces/{NS}/secrets?"))
            .any_body()
            .checking(move |body| {
                assert_eq!(body["metadata"]["name"], user_secret);
                assert_eq!(body["immutable"], true);
                assert_eq!(
                    body["metadata"]["ownerReferences"],
                    json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "game-logs-security", "uid": "uid-8"}])
                );
                *keep.lock().unwrap() = Some(body.clone());
            })
            .reply_with(echo("9")),
        absent("/apis/apps/v1", "deployments", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/apis/apps/v1/namespaces/{NS}/deployments/game-logs-security{SSA}"),
        )
        .any_body()
        .checking(move |body| {
            let env = &body["spec"]["template"]["spec"]["containers"][0]["env"];
            let key = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": user_secret, "key": key}}});
            assert_eq!(env[1], key("LOGSTREAM_AMQP_USERNAME", "username"));
            assert_eq!(env[2], key("LOGSTREAM_AMQP_PASSWORD", "password"));
            assert_eq!(
                body["spec"]["template"]["metadata"]["annotations"]["logstream.io/broker-secret-version"],
                "9"
            );
        })
        .reply_with(echo("10")),
        absent("/api/v1", "services", "game-logs-security"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/services/game-logs-security{SSA}"),
        )
        .any_body()
        .reply_with(echo("11")),
        Expect::new(
            "GET",
            format!(
                "/apis/apps/v1/namespaces/{NS}/deployments?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dlogstream-operator%2Clogstream.io%2Fpipeline%3D{NAME}"
            ),
        )
        .respond(200, json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": []})),
        Expect::new(
            "PATCH",
            format!("/apis/logstream.io/v1alpha1/namespaces/{NS}/logpipelines/{NAME}/status{SSA}"),
        )
        .any_body()
        .reply_with({
            let answer = object(&security);
            move |_| answer.clone()
        }),
    ];
    let api = MockApi::serve(scenario, Calls::default());
    let ctx = Arc::new(
        Context::new(
            api.client.clone(),
            Settings::default(),
            Arc::new(Metrics::default()),
            None,
        )
        .with_clock(Arc::new(Timestamp::now)),
    );
    let p: Arc<LogPipeline> = Arc::new(serde_json::from_value(object(&security)).unwrap());
    reconcile(p, ctx.clone()).await.unwrap();
    api.done().await;

    // The user exists with the generated password and may consume its queue.
    let body = created.lock().unwrap().clone().unwrap();
    let text = |key: &str| {
        let ByteString(bytes) = serde_json::from_value(body["data"][key].clone()).unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(text("username"), user);
    let password = text("password");
    let as_worker = endpoint()
        .with_credentials(&user, &password)
        .with_vhost(&vhost.name);
    let connection = BrokerConnection::open(&as_worker, "worker-test", Purpose::Messages)
        .await
        .unwrap();
    connection
        .require_queue("logstream.games.game-logs.security")
        .await
        .unwrap();
    connection.close().await;

    // The output is removed: its children are deleted, and so is its broker user.
    let listed = json!({
        "metadata": {"name": "game-logs-security", "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "logstream-operator",
                       "logstream.io/pipeline": NAME, "logstream.io/output": "security"},
            "ownerReferences": [{"apiVersion": "logstream.io/v1alpha1", "kind": "LogPipeline",
                                 "name": NAME, "uid": UID, "controller": true}]},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "worker",
            "env": [{"name": "LOGSTREAM_AMQP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": user_secret, "key": "password"}}}]}]}}}
    });
    let only_audit = spec(&["audit"], true);
    let mut scenario = vec![
        Expect::new("GET", format!("/api/v1/namespaces/{NS}/secrets/rabbitmq"))
            .respond(200, secret),
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/games/events?")
            .any_body()
            .reply_with(Value::clone),
        absent("/api/v1", "configmaps", "game-logs-audit"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/configmaps/game-logs-audit{SSA}"),
        )
        .any_body()
        .reply_with(echo("12")),
        absent("/api/v1", "secrets", "game-logs-audit-broker-user"),
        Expect::new("POST", format!("/api/v1/namespaces/{NS}/secrets?"))
            .any_body()
            .reply_with(echo("13")),
        absent("/apis/apps/v1", "deployments", "game-logs-audit"),
        Expect::new(
            "PATCH",
            format!("/apis/apps/v1/namespaces/{NS}/deployments/game-logs-audit{SSA}"),
        )
        .any_body()
        .reply_with(echo("14")),
        absent("/api/v1", "services", "game-logs-audit"),
        Expect::new(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/services/game-logs-audit{SSA}"),
        )
        .any_body()
        .reply_with(echo("15")),
        Expect::new(
            "GET",
            format!(
                "/apis/apps/v1/namespaces/{NS}/deployments?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dlogstream-operator%2Clogstream.io%2Fpipeline%3D{NAME}"
            ),
        )
        .respond(200, json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": [listed]})),
    ];
    for (path, kind) in [
        ("apis/apps/v1", "deployments"),
        ("api/v1", "configmaps"),
        ("api/v1", "services"),
    ] {
        scenario.push(
            Expect::new(
                "DELETE",
                format!("/{path}/namespaces/{NS}/{kind}/game-logs-security?"),
            )
            .body(json!({"propagationPolicy": "Background"}))
            .respond(200, status_ok()),
        );
    }
    scenario.extend([
        Expect::new("POST", "/apis/events.k8s.io/v1/namespaces/games/events?")
            .any_body()
            .reply_with(Value::clone),
        Expect::new(
            "PATCH",
            format!("/apis/logstream.io/v1alpha1/namespaces/{NS}/logpipelines/{NAME}/status{SSA}"),
        )
        .any_body()
        .reply_with({
            let answer = object(&only_audit);
            move |_| answer.clone()
        }),
    ]);
    let api = MockApi::serve(scenario, Calls::default());
    let ctx = Arc::new(Context::new(
        api.client.clone(),
        Settings::default(),
        Arc::new(Metrics::default()),
        None,
    ));
    let p: Arc<LogPipeline> = Arc::new(serde_json::from_value(object(&only_audit)).unwrap());
    reconcile(p, ctx).await.unwrap();
    api.done().await;
    match BrokerConnection::open(&as_worker, "worker-test", Purpose::Messages).await {
        Err(BrokerError::AccessRefused { .. }) => {}
        other => panic!("the deleted user logged in: {:?}", other.map(|_| ())),
    }
    for output in ["audit"] {
        let user = format!("logstream.games.game-logs.{output}.worker@{}", vhost.name);
        vhost.management.delete_user(&user).await.unwrap();
    }
    vhost.management.delete_user(&admin_user).await.unwrap();
}
