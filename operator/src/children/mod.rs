//! The Kubernetes objects a LogPipeline owns, built as plain typed structs: no client, no
//! I/O, so each builder is tested by comparing its whole JSON.
//!
//! Per output: a ConfigMap with the worker configuration, a worker Deployment and a metrics
//! Service, all named [`worker_name`]; with `spec.broker.workerUsers`, also a Secret with the
//! output's broker user. The workers read the broker credentials from the user's own Secret
//! (or that one) by `secretKeyRef`: the operator copies no credential.

pub mod config_map;
pub mod deployment;
pub mod labels;
pub mod secret;
pub mod service;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt, api::ObjectMeta};
use logstream_api::{
    LogPipeline, LogPipelineSpec,
    pipeline::SinkSpec,
    validate::{FieldError, ValidationErrors},
    worker_config::CONFIG_DIR,
};

pub use config_map::config_map;
pub use deployment::{WorkerBroker, WorkerPod, deployment};
pub use secret::worker_user_secret;
pub use service::service;

/// Where the children go and who owns them.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// Namespace of the LogPipeline and of every child.
    pub namespace: String,
    /// Name of the LogPipeline.
    pub pipeline: String,
    /// The controller owner reference every child carries.
    pub reference: OwnerReference,
}

impl Owner {
    /// The owner of `pipeline`'s children; `None` for an object the API server never returns
    /// (without namespace, name or uid).
    pub fn of(pipeline: &LogPipeline) -> Option<Self> {
        Some(Self {
            namespace: pipeline.namespace()?,
            pipeline: pipeline.meta().name.clone()?,
            reference: pipeline.controller_owner_ref(&())?,
        })
    }

    /// Metadata of a child called `name` with `labels`.
    fn metadata(
        &self,
        name: String,
        labels: std::collections::BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Name of an output's ConfigMap, Deployment and Service: `<pipeline>-<output>`, with a
/// hash suffix where that could be another pair's name
/// ([`logstream_api::naming::worker_child_name`]).
pub fn worker_name(pipeline: &str, output: &str) -> String {
    logstream_api::naming::worker_child_name(pipeline, output)
}

/// Name of the Secret with an output's broker user (`spec.broker.workerUsers`).
pub fn worker_user_secret_name(pipeline: &str, output: &str) -> String {
    format!("{}-broker-user", worker_name(pipeline, output))
}

/// Checks what only matters on Kubernetes (beyond [`logstream_api::validate`]): a file sink
/// writes to an emptyDir mounted at the file's directory, which must be neither the root
/// (the root filesystem is read-only) nor the configuration directory.
pub fn check(spec: &LogPipelineSpec) -> Result<(), ValidationErrors> {
    let errors: Vec<FieldError> = spec
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, output)| {
            let SinkSpec::File(file) = &output.sink else {
                return None;
            };
            let dir = file_sink_dir(&file.path);
            let clash = dir == "/"
                || dir == CONFIG_DIR
                || dir.starts_with(&format!("{CONFIG_DIR}/"))
                || CONFIG_DIR.starts_with(&format!("{dir}/"));
            clash.then(|| FieldError {
                path: format!("spec.outputs[{i}].sink.file.path"),
                message: format!(
                    "{:?}: the file's directory must not be / (the worker's root filesystem is read-only) nor contain or lie in {CONFIG_DIR} (the worker's configuration); use e.g. /var/log/logstream/{}.jsonl",
                    file.path, output.name
                ),
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// The directory of an absolute file path (`/` for a file at the root).
pub fn file_sink_dir(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A pipeline as the API server returns it, for the builder tests.

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::{Value, json};

    use super::Owner;

    /// The `ownerReferences` every child of [`owner`] carries, as JSON.
    pub fn owner_references() -> Value {
        json!([{
            "apiVersion": "logstream.io/v1alpha1",
            "kind": "LogPipeline",
            "name": "game-logs",
            "uid": "0b6f7a8e-1111-4c2d-9e3f-000000000001",
            "controller": true
        }])
    }

    /// The labels of the worker children of [`owner`]'s output `security`, as JSON.
    pub fn worker_labels() -> Value {
        json!({
            "app.kubernetes.io/component": "worker",
            "app.kubernetes.io/instance": "game-logs",
            "app.kubernetes.io/managed-by": "logstream-operator",
            "app.kubernetes.io/name": "logstream-worker",
            "logstream.io/output": "security",
            "logstream.io/pipeline": "game-logs"
        })
    }

    pub fn owner() -> Owner {
        Owner {
            namespace: "games".into(),
            pipeline: "game-logs".into(),
            reference: OwnerReference {
                api_version: "logstream.io/v1alpha1".into(),
                kind: "LogPipeline".into(),
                name: "game-logs".into(),
                uid: "0b6f7a8e-1111-4c2d-9e3f-000000000001".into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use logstream_api::manifest::parse_pipeline;

    use super::*;

    #[test]
    fn file_sinks_need_a_writable_directory_of_their_own() {
        assert_eq!(file_sink_dir("/var/log/app.jsonl"), "/var/log");
        assert_eq!(file_sink_dir("/app.jsonl"), "/");
        let spec = |path: &str| {
            parse_pipeline(&format!(
                "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: p}}\nspec:\n  broker: {{secretRef: {{name: r}}}}\n  outputs:\n    - name: ok\n      sink: {{stdout: {{}}}}\n    - name: f\n      sink: {{file: {{path: {path:?}}}}}\n"
            ))
            .unwrap()
            .spec
        };
        assert!(check(&spec("/var/log/logstream/f.jsonl")).is_ok());
        for bad in ["/f.jsonl", "/etc/logstream/f.jsonl", "/etc/f.jsonl"] {
            let err = check(&spec(bad)).unwrap_err();
            assert_eq!(err.0[0].path, "spec.outputs[1].sink.file.path", "{bad}");
        }
    }
}
