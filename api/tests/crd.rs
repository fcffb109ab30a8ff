//! The committed CRD is exactly what the Rust types generate, and it is a schema users can read.

mod common;

use logstream_api::crd::{CRD_PATH, crd_yaml};
use serde_json::Value;

#[test]
fn committed_crd_matches_the_rust_types() {
    let committed = common::committed_crd_text();
    let generated = crd_yaml();
    if committed != generated {
        let (line, (was, now)) = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                committed.lines().count().min(generated.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "{CRD_PATH} is stale: run `cargo run -p logstream-operator --bin crdgen` and commit it.\n\
             first difference at line {}:\n  committed: {was}\n  generated: {now}",
            line + 1
        );
    }
}

/// Walks our own part of the schema (Kubernetes' types, like ResourceRequirements and
/// Condition, bring their own docs) and returns the paths of properties without a description.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if path.ends_with(".resources") || path.ends_with(".conditions") {
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let sub_path = format!("{path}.{name}");
            if sub
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_has_a_description() {
    let mut missing = Vec::new();
    undocumented(&common::committed_schema(), "", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn printer_columns_and_short_name_are_declared() {
    let crd = logstream_api::crd::crd();
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["lp".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Depth", "Age", "DLQ", "Replicas"]);
}

#[test]
fn cel_rules_compile_and_fit_the_api_server_cost_budget() {
    use kube::core::cel::{compile_schema, estimate_rule_cost};

    fn rules(schema: &Value, out: &mut Vec<(String, Value)>) {
        for rule in schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((rule["rule"].as_str().unwrap().to_owned(), schema.clone()));
        }
        for key in ["properties"] {
            if let Some(props) = schema.get(key).and_then(Value::as_object) {
                for sub in props.values() {
                    rules(sub, out);
                }
            }
        }
        if let Some(items) = schema.get("items") {
            rules(items, out);
        }
    }

    let schema = common::committed_schema();
    let mut found = Vec::new();
    rules(&schema, &mut found);
    assert!(
        found.len() >= 6,
        "expected the CEL rules of the design, found {}",
        found.len()
    );
    for (rule, node) in found {
        let compiled = compile_schema(&node);
        assert!(
            !compiled.has_errors(),
            "rule {rule:?} does not compile: {:?}",
            compiled.compilation_errors()
        );
        // Scope analysis is left out: it mistakes comprehension variables (`o` in
        // `all(o, ...)`) for free ones.
        let warnings = estimate_rule_cost(&rule, &compiled);
        assert!(warnings.is_empty(), "rule {rule:?}: {warnings:?}");
    }
}
