//! The Helm chart: lint, renders with default and all-on values validated against the
//! Kubernetes schemas, CRDs and RBAC kept equal to the code, a strict values schema, and the
//! operator, RabbitMQ and monitoring objects shaped as the operator and workers need.

use std::{collections::BTreeMap, fs};

use k8s_openapi::ByteString;
use logstream_chart_tests::{
    chart_dir,
    render::{self, NAMESPACE, RELEASE, find, of_kind, template, template_text},
    tools, workspace_root,
};
use logstream_operator::{
    children::{deployment::METRICS_PORT_NAME, labels},
    rbac,
};
use serde_json::{Value, json};

const ALL_ON: &str = "charts/logstream/ci/all-on-values.yaml";

/// Kinds whose schemas kubernetes-validate does not ship (prometheus-operator CRDs): it
/// can only report them as unknown. Their shape is checked by the tests below instead.
const NOT_VALIDATABLE: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];

fn helm_ok(args: &[&str]) -> String {
    let out = tools::run("helm", args).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn render(extra: &[&str]) -> Vec<Value> {
    template(extra).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn helm_lint_passes_with_default_and_all_on_values() {
    let chart = chart_dir().display().to_string();
    let out = helm_ok(&["lint", "--strict", &chart]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = helm_ok(&["lint", "--strict", &chart, "-f", ALL_ON]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// Validates `text` (rendered manifests) with kubernetes-validate for `version`; returns
/// the resources it passed.
fn validate(text: &str, version: &str, label: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("logstream-chart-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{label}.yaml"));
    fs::write(&file, text).unwrap();
    let file = file.display().to_string();
    let out = tools::run(
        "kubernetes-validate",
        &["--strict", "--kubernetes-version", version, &file],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate {version} refused the {label} render:\n{report}"
    );
    for line in report.lines().filter(|l| l.contains("WARN")) {
        assert!(
            NOT_VALIDATABLE
                .iter()
                .any(|k| line.contains(&format!("kind {k} "))),
            "unexpected warning for {version}: {line}"
        );
    }
    report
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .filter_map(|l| l.split(" passed for resource ").nth(1))
        .filter_map(|l| l.split(" against version").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_rendered_manifest_is_valid_for_kubernetes_1_33_and_the_newest_schemas() {
    let newest = tools::newest_validate_version().unwrap_or_else(|e| panic!("{e}"));
    let newest_minor: u32 = newest
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        newest_minor >= 33,
        "kubernetes-validate ships {newest} only"
    );
    for (label, extra) in [
        ("default", vec!["--include-crds"]),
        ("all-on", vec!["--include-crds", "-f", ALL_ON]),
    ] {
        let text = template_text(&extra).unwrap_or_else(|e| panic!("{e}"));
        let docs = render::documents(&text).unwrap_or_else(|e| panic!("{e}"));
        let checkable = docs
            .iter()
            .filter(|d| !NOT_VALIDATABLE.iter().any(|k| d["kind"] == *k))
            .count();
        for version in ["1.33.0", newest.as_str()] {
            let passed = validate(&text, version, label);
            assert_eq!(
                passed.len(),
                checkable,
                "{label} render for {version}: passed {passed:?} of {checkable}"
            );
        }
        if label == "all-on" {
            for kind in NOT_VALIDATABLE.iter().chain(&["StatefulSet", "ConfigMap"]) {
                assert_eq!(of_kind(&docs, kind).len(), 1, "one {kind} when all is on");
            }
        }
    }
}

#[test]
fn the_charts_crds_are_identical_to_crds_dir() {
    let names = |dir: std::path::PathBuf| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let source = workspace_root().join("crds");
    let chart = chart_dir().join("crds");
    assert_eq!(
        names(chart.clone()),
        names(source.clone()),
        "charts/logstream/crds must hold exactly the files of crds/ (cp crds/*.yaml charts/logstream/crds/)"
    );
    for name in names(source.clone()) {
        assert_eq!(
            fs::read_to_string(chart.join(&name)).unwrap(),
            fs::read_to_string(source.join(&name)).unwrap(),
            "charts/logstream/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/logstream/crds/"
        );
    }
}

/// True when `rules` grant `verb` on Secrets.
fn grants_on_secrets(rules: &Value, verb: &str) -> bool {
    rules.as_array().into_iter().flatten().any(|r| {
        r["apiGroups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == ""))
            && r["resources"]
                .as_array()
                .is_some_and(|res| res.iter().any(|x| x == "secrets" || x == "*"))
            && r["verbs"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v == verb || v == "*"))
    })
}

#[test]
fn the_cluster_role_grants_exactly_the_operators_permissions() {
    let docs = render(&[]);
    let role = find(&docs, "ClusterRole", rbac::CLUSTER_ROLE_NAME)
        .expect("a ClusterRole named like rbac::CLUSTER_ROLE_NAME");
    let code = serde_json::to_value(rbac::rules(rbac::Place::Pipelines)).unwrap();
    assert_eq!(
        role["rules"], code,
        "the chart's ClusterRole differs from rbac::rules(): run `make rbac`"
    );
    let binding = find(&docs, "ClusterRoleBinding", rbac::CLUSTER_ROLE_NAME).unwrap();
    assert_eq!(binding["roleRef"]["name"], rbac::CLUSTER_ROLE_NAME);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "logstream-operator", "namespace": NAMESPACE}])
    );
    assert!(find(&docs, "ServiceAccount", "logstream-operator").is_some());
    let leader = find(&docs, "Role", "logstream-operator-leader-election").expect("Lease Role");
    assert_eq!(leader["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        leader["rules"],
        serde_json::to_value(rbac::rules(rbac::Place::OperatorNamespace)).unwrap()
    );
    assert!(
        of_kind(&docs, "Role").len() == 1,
        "no pipeline Roles without watchNamespaces"
    );

    // The file the templates read is rbacgen's output, byte for byte.
    let generated =
        fs::read_to_string(chart_dir().join("files/rbac.yaml")).expect("files/rbac.yaml");
    let expected = format!(
        "{}\n{}",
        rbac::RULES_FILE_HEADER,
        serde_yaml::to_string(&rbac::rules_file()).unwrap()
    );
    assert_eq!(
        generated, expected,
        "charts/logstream/files/rbac.yaml is stale: run `make rbac`"
    );
}

#[test]
fn with_watch_namespaces_the_operator_gets_roles_there_only_and_never_lists_or_watches_secrets() {
    let docs = render(&["-f", ALL_ON]);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "no cluster-wide rights with watchNamespaces"
    );
    let code = serde_json::to_value(rbac::rules(rbac::Place::Pipelines)).unwrap();
    let mut namespaces = Vec::new();
    for role in of_kind(&docs, "Role") {
        if role["metadata"]["name"] == "logstream-operator" {
            assert_eq!(role["rules"], code);
            namespaces.push(role["metadata"]["namespace"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(namespaces, ["logs", "audit"]);
    let bindings: Vec<&str> = of_kind(&docs, "RoleBinding")
        .iter()
        .filter(|b| b["metadata"]["name"] == "logstream-operator")
        .map(|b| b["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(bindings, ["logs", "audit"]);
    let deploy = find(&docs, "Deployment", "logstream-operator").unwrap();
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--namespace=logs,audit"), "{args}");

    // Neither install may list, watch, patch or delete Secrets.
    for docs in [render(&[]), docs] {
        for role in of_kind(&docs, "ClusterRole")
            .into_iter()
            .chain(of_kind(&docs, "Role"))
        {
            for verb in ["list", "watch", "patch", "update", "delete"] {
                assert!(
                    !grants_on_secrets(&role["rules"], verb),
                    "{} {} grants {verb} on Secrets",
                    role["kind"],
                    role["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn network_policies_cover_the_operator_the_workers_and_rabbitmq() {
    let docs = render(&["-f", ALL_ON]);
    let operator = find(&docs, "NetworkPolicy", "logstream-operator").expect("operator policy");
    let egress = operator["spec"]["egress"].to_string();
    for port in ["443", "6443", "5672", "15672", "53"] {
        assert!(
            egress.contains(&format!("\"port\":{port}")),
            "{port}: {egress}"
        );
    }
    let workers: Vec<&str> = of_kind(&docs, "NetworkPolicy")
        .iter()
        .filter(|p| p["metadata"]["name"] == "logstream-workers")
        .map(|p| p["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["logs", "audit"]);
    let worker = of_kind(&docs, "NetworkPolicy")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "logstream-workers")
        .unwrap();
    let selected = worker["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap();
    let worker_labels = labels::output("p", "o");
    for (k, v) in selected {
        assert_eq!(worker_labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    assert!(find(&docs, "NetworkPolicy", "logstream-rabbitmq").is_some());
    let off = render(&["--set", "networkPolicy.enabled=false"]);
    assert!(of_kind(&off, "NetworkPolicy").is_empty());
}

#[test]
fn values_schema_rejects_wrong_types_unknown_keys_and_bad_enums() {
    for (set, complaint) in [
        ("replicaCount=abc", "/replicaCount"),
        ("operator.leaderElection=maybe", "/operator/leaderElection"),
        ("rabbitmq.enabld=true", "enabld"),
        ("service.type=Ingress", "/service/type"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.recheckInterval=soon", "/operator/recheckInterval"),
    ] {
        match template(&["--set", set]) {
            Ok(_) => panic!("--set {set} rendered; the schema should refuse it"),
            Err(render::RenderError::Helm { stderr, .. }) => {
                assert!(
                    stderr.contains("values don't meet the specifications of the schema")
                        && stderr.contains(complaint),
                    "--set {set}: {stderr}"
                );
            }
            Err(other) => panic!("{other}"),
        }
    }
    // The same keys with good values render.
    render(&["--set", "replicaCount=3", "--set", "service.type=NodePort"]);
}

#[test]
fn two_replicas_without_leader_election_are_refused() {
    let err = template(&["--set", "operator.leaderElection=false"]).unwrap_err();
    assert!(err.to_string().contains("leaderElection"), "{err}");
    render(&[
        "--set",
        "operator.leaderElection=false",
        "--set",
        "replicaCount=1",
    ]);
}

#[test]
fn the_operator_runs_two_hardened_replicas_with_leader_election_and_probes() {
    let docs = render(&[]);
    let deploy = find(&docs, "Deployment", "logstream-operator").expect("operator Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "logstream-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--leader-election=true"), "{args:?}");
    assert!(
        args.contains(&"--worker-image=ghcr.io/logstream-io/logstream-worker:0.1.0"),
        "{args:?}"
    );
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                &e["valueFrom"]["fieldRef"]["fieldPath"],
            )
        })
        .collect();
    assert_eq!(env["POD_NAME"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );

    let service = find(&docs, "Service", "logstream-operator").expect("operator Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    // Nothing optional by default.
    for kind in NOT_VALIDATABLE
        .iter()
        .chain(&["StatefulSet", "ConfigMap", "Secret"])
    {
        assert!(of_kind(&docs, kind).is_empty(), "no {kind} by default");
    }
}

fn secret_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    let data: BTreeMap<String, ByteString> =
        serde_json::from_value(secret["data"].clone()).expect("Secret data in base64");
    data.into_iter().map(|(k, v)| (k, v.0)).collect()
}

#[test]
fn the_bundled_rabbitmq_comes_with_a_broker_secret_the_operator_can_read() {
    let docs = render(&["-f", ALL_ON]);
    let sts = find(&docs, "StatefulSet", "logstream-rabbitmq").expect("RabbitMQ StatefulSet");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "rabbitmq:4.1-management");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c.get("env").is_none(), "no Secret in the environment");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "8Gi"
    );
    let service = find(&docs, "Service", "logstream-rabbitmq").unwrap();
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ports[0]["port"], 5672);
    assert_eq!(ports[1]["port"], 15672);

    let generated = secret_data(find(&docs, "Secret", "logstream-rabbitmq").unwrap());
    let password = String::from_utf8(generated["password"].clone()).unwrap();
    assert_eq!(password.len(), 32);

    let broker = secret_data(find(&docs, "Secret", "rabbitmq").expect("broker Secret"));
    let creds = logstream_broker::secret::from_secret_data("rabbitmq", &broker)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(creds.vhost.as_deref(), Some("/"));
    let host = format!("logstream-rabbitmq.{NAMESPACE}.svc");
    assert_eq!(
        creds.endpoint.to_string(),
        format!("amqp://logstream:***@{host}:5672/%2F")
    );
    assert_eq!(creds.endpoint.amqp().authority.userinfo.password, password);
    assert_eq!(
        creds.endpoint.management().base.as_str(),
        format!("http://{host}:15672/")
    );
    // Every render without a cluster generates a fresh password (lookup finds nothing); on a
    // cluster, lookup keeps the first one.
    let again =
        secret_data(find(&render(&["-f", ALL_ON]), "Secret", "logstream-rabbitmq").unwrap());
    assert_ne!(again["password"], generated["password"]);
    let template = fs::read_to_string(chart_dir().join("templates/rabbitmq-secrets.yaml")).unwrap();
    assert!(
        template.contains("lookup \"v1\" \"Secret\""),
        "the password must survive upgrades"
    );
}

#[test]
fn the_pod_monitor_selects_worker_pods_by_the_labels_the_operator_gives_them() {
    let docs = render(&["-f", ALL_ON]);
    let monitor = &of_kind(&docs, "PodMonitor")[0];
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let worker_labels = labels::output("any-pipeline", "any-output");
    assert!(!wanted.is_empty());
    for (k, v) in wanted {
        assert_eq!(
            worker_labels.get(k).map(String::as_str),
            v.as_str(),
            "worker pods carry no label {k}={v}"
        );
    }
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"],
        METRICS_PORT_NAME
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["logs", "audit"])
    );

    let service_monitor = &of_kind(&docs, "ServiceMonitor")[0];
    let operator = find(&docs, "Service", "logstream-operator").unwrap();
    assert_eq!(
        service_monitor["spec"]["selector"]["matchLabels"],
        operator["spec"]["selector"]
    );
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "http");
    for kind in NOT_VALIDATABLE {
        let obj = &of_kind(&docs, kind)[0];
        assert_eq!(obj["apiVersion"], "monitoring.coreos.com/v1", "{kind}");
        assert_eq!(obj["metadata"]["labels"]["release"], "prometheus", "{kind}");
    }
}

#[test]
fn the_prometheus_rule_alerts_on_dlq_growth_age_over_slo_and_an_unreachable_broker() {
    let docs = render(&["-f", ALL_ON]);
    let rule = &of_kind(&docs, "PrometheusRule")[0];
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alert = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    assert!(
        alert("LogStreamDeadLetterQueueGrowing")["expr"]
            .as_str()
            .unwrap()
            .contains("[10m]")
    );
    assert!(
        alert("LogStreamOldestMessageOverSLO")["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 60")
    );
    // The reason label value is the operator's error category for an unreachable broker.
    assert!(
        alert("LogStreamBrokerUnreachable")["expr"]
            .as_str()
            .unwrap()
            .contains("reason=\"BrokerUnreachable\"")
    );
    for r in rules {
        assert!(
            r["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{r}"
        );
    }
}

#[test]
fn the_grafana_dashboard_is_a_sidecar_configmap_with_the_promised_panels() {
    let docs = render(&["-f", ALL_ON]);
    let cm =
        find(&docs, "ConfigMap", &format!("{RELEASE}-dashboard")).expect("dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["logstream.json"].as_str().unwrap()).expect("JSON");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Throughput by outcome",
        "Oldest message age vs SLO",
        "Queue depth",
        "Dead-letter queue",
        "Worker replicas",
        "Processing latency",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    assert!(render(&[]).iter().all(|d| d["kind"] != "ConfigMap"));
}
