//! Helpers shared by the api crate's integration tests: the committed CRD and a validator that
//! checks a manifest the way the API server would (OpenAPI schema, then CEL rules).

#![allow(dead_code)]

use std::{fs, path::PathBuf};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed CRD file, as text.
pub fn committed_crd_text() -> String {
    let path = repo_root().join(logstream_api::crd::CRD_PATH);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `openAPIV3Schema` of the committed CRD.
pub fn committed_schema() -> Value {
    let crd: Value = serde_yaml::from_str(&committed_crd_text()).expect("CRD is YAML");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every reason the API server would refuse `object` under the committed CRD: OpenAPI schema
/// violations first, then failed CEL rules. Each entry starts with the field path.
pub fn api_server_rejections(object: &Value) -> Vec<String> {
    let schema = committed_schema();
    let validator = jsonschema::draft4::new(&schema).expect("CRD schema compiles as JSON schema");
    let mut problems: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", dotted(&e.instance_path().to_string()), e))
        .collect();
    if let Err(errors) = kube::core::cel::Validator::new().validate(&schema, object, None) {
        problems.extend(errors.iter().map(|e| match e.field_path.as_str() {
            "" => e.message.clone(),
            path => format!("{path}: {}", e.message),
        }));
    }
    problems
}

/// `/spec/outputs/0/name` → `spec.outputs[0].name`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Every `*.yaml` under `examples/`, as (file name, text).
pub fn examples() -> Vec<(String, String)> {
    let dir = repo_root().join("examples");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("example is readable");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// The LogPipeline documents of a YAML text, as JSON values.
pub fn pipeline_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .filter(|v: &Value| v["kind"] == "LogPipeline")
        .collect()
}
