//! `helm template` of the chart, read back as JSON values (one per manifest).

use serde_json::Value;

use crate::{chart_dir, tools};

/// Release name and namespace every render uses; the operator's objects are then named
/// `logstream-operator`, like `rbac::CLUSTER_ROLE_NAME`.
pub const RELEASE: &str = "logstream";
/// Namespace of the rendered release.
pub const NAMESPACE: &str = "logstream-system";

/// Why the chart could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The tool is missing or did not start.
    #[error(transparent)]
    Tool(#[from] tools::ToolError),
    /// helm refused (its stderr says why).
    #[error("failed to render the chart: helm template {args:?} said: {stderr}")]
    Helm {
        /// The arguments after `helm template`.
        args: Vec<String>,
        /// helm's complaint.
        stderr: String,
    },
    /// The output is not YAML (or has duplicate keys).
    #[error("failed to read the rendered manifests: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The chart rendered with `extra` arguments (`-f file`, `--set k=v`, `--include-crds`),
/// as text.
pub fn template_text(extra: &[&str]) -> Result<String, RenderError> {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let out = tools::run("helm", &args)?;
    if !out.status.success() {
        return Err(RenderError::Helm {
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every manifest of a multi-document YAML text (empty documents left out).
pub fn documents(text: &str) -> Result<Vec<Value>, RenderError> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The chart rendered with `extra` arguments, as manifests.
pub fn template(extra: &[&str]) -> Result<Vec<Value>, RenderError> {
    documents(&template_text(extra)?)
}

/// The one manifest of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// Every manifest of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}
