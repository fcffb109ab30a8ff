//! The CustomResourceDefinition of `LogPipeline`, as committed in `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::pipeline::LogPipeline;

/// Path of the generated CRD, relative to the repository root.
pub const CRD_PATH: &str = "crds/logstream.io_logpipelines.yaml";

/// The CustomResourceDefinition derived from the Rust types.
pub fn crd() -> CustomResourceDefinition {
    LogPipeline::crd()
}

/// The CRD as YAML, exactly as committed in [`CRD_PATH`].
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("a CRD always serializes to YAML");
    format!(
        "# Generated from the Rust types in api/src/pipeline.rs by\n# `cargo run -p logstream-operator --bin crdgen`. Do not edit by hand.\n{body}"
    )
}
