//! checkov over what LogStream puts into a cluster: the chart rendered with default and
//! all-on values, and the worker Deployment the operator builds. Every failed check must be
//! listed, with its reason, in docs/security.md ("Policy scan exceptions"); any other fails
//! the test. checkov comes from scripts/install-checkov.sh (`make checkov`, a prerequisite of
//! `make test`) into .tools/.

use std::{collections::BTreeSet, fs, path::Path};

use logstream_api::{manifest::parse_pipeline, worker_config::WorkerConfig};
use logstream_chart_tests::{render::template_text, tools, workspace_root};
use logstream_operator::children::{self, Owner, WorkerBroker, WorkerPod};
use serde_json::Value;

const ALL_ON: &str = "charts/logstream/ci/all-on-values.yaml";

/// One failed check on one resource: (check id, kind, name).
type Finding = (String, String, String);

/// The exceptions docs/security.md lists: rows `| CKV_… | Kind name | reason |`.
fn listed_exceptions() -> BTreeSet<Finding> {
    let text =
        fs::read_to_string(workspace_root().join("docs/security.md")).expect("docs/security.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let id = cells.get(1)?.trim_matches('`');
            if !id.starts_with("CKV") {
                return None;
            }
            let (kind, name) = cells.get(2)?.trim_matches('`').split_once(' ')?;
            assert!(
                cells.get(3).is_some_and(|r| r.len() > 10),
                "exception {id} on {kind} {name} gives no reason"
            );
            Some((
                id.to_owned(),
                kind.to_owned(),
                name.trim_matches('`').to_owned(),
            ))
        })
        .collect()
}

/// Runs checkov over `file`; returns (passed, failed findings).
fn scan(file: &Path) -> (usize, Vec<Finding>) {
    let path = file.display().to_string();
    let out = tools::run(
        "checkov",
        &[
            "-f",
            &path,
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
    )
    .unwrap_or_else(|e| panic!("{e} (checkov: `make checkov`, scripts/install-checkov.sh)"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov said no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match report {
        Value::Array(all) => all,
        one => vec![one],
    };
    let mut passed = 0;
    let mut failed = Vec::new();
    for r in &reports {
        passed += r["summary"]["passed"].as_u64().unwrap_or(0) as usize;
        for f in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let resource = f["resource"].as_str().unwrap_or_default();
            let kind = resource.split('.').next().unwrap_or_default().to_owned();
            let name = resource.splitn(3, '.').nth(2).unwrap_or_default();
            // Pods of a graph check are named after their owner and labels: keep the owner.
            let name = if kind == "Pod" {
                name.split('.').next().unwrap_or(name)
            } else {
                name
            }
            .to_owned();
            failed.push((
                f["check_id"].as_str().unwrap_or_default().to_owned(),
                kind,
                name,
            ));
        }
    }
    (passed, failed)
}

/// The worker Deployment the operator builds for an HTTP sink, as YAML.
fn worker_deployment_yaml() -> String {
    let p = parse_pipeline(
        "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: game-logs, namespace: games, uid: 0b6f7a8e-1111-4c2d-9e3f-000000000001}\nspec:\n  broker: {secretRef: {name: rabbitmq}}\n  outputs:\n    - name: security\n      sink: {http: {url: \"http://loki:3100/loki/api/v1/push\", format: loki}}\n",
    )
    .unwrap();
    let owner = Owner::of(&p).expect("namespace, name and uid");
    let config = WorkerConfig::for_output("games", "game-logs", &p.spec, "security").unwrap();
    let pod = WorkerPod {
        image: "ghcr.io/logstream-io/logstream-worker:0.1.0",
        config_digest: "0123456789abcdef",
        broker: &WorkerBroker::UriKey {
            secret: "rabbitmq".into(),
        },
        secret_version: Some("1"),
        secret_files: &config.secrets,
    };
    let deployment = children::deployment(&owner, &p.spec.outputs[0], &pod);
    serde_yaml::to_string(&deployment).unwrap()
}

#[test]
fn checkov_finds_nothing_but_the_exceptions_docs_security_md_lists() {
    let dir = std::env::temp_dir().join(format!("logstream-checkov-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let inputs = [
        (
            "chart, default values",
            template_text(&[]).unwrap_or_else(|e| panic!("{e}")),
        ),
        (
            "chart, all-on values",
            template_text(&["-f", ALL_ON]).unwrap_or_else(|e| panic!("{e}")),
        ),
        ("worker Deployment", worker_deployment_yaml()),
    ];
    let listed = listed_exceptions();
    let mut unlisted = Vec::new();
    let mut seen = BTreeSet::new();
    let mut summary = Vec::new();
    for (i, (label, text)) in inputs.iter().enumerate() {
        let file = dir.join(format!("scan-{i}.yaml"));
        fs::write(&file, text).unwrap();
        let (passed, failed) = scan(&file);
        assert!(
            passed > 20,
            "{label}: checkov checked almost nothing ({passed})"
        );
        summary.push(format!("{label}: {passed} passed, {} failed", failed.len()));
        for finding in failed {
            if listed.contains(&finding) {
                seen.insert(finding);
            } else {
                unlisted.push(format!(
                    "{label}: {} on {} {}",
                    finding.0, finding.1, finding.2
                ));
            }
        }
    }
    let _ = fs::remove_dir_all(&dir);
    println!("{}", summary.join("\n"));
    assert!(
        unlisted.is_empty(),
        "checks failed that docs/security.md does not list (fix them, or list them with the reason):\n{}",
        unlisted.join("\n")
    );
    let stale: Vec<&Finding> = listed.difference(&seen).collect();
    assert!(
        stale.is_empty(),
        "docs/security.md lists exceptions checkov no longer reports: {stale:?}"
    );
}
