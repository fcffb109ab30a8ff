//! Which pipeline a command means, and the broker names that follow from it.
//!
//! With `-f <manifest>`, the LogPipeline is read and planned, so a custom exchange name, the
//! vhost and the outputs are known exactly. Without it, names follow the naming convention
//! for `<namespace>/<pipeline>` and the broker tells whether they exist.

use std::path::Path;

use logstream_api::{manifest::parse_pipelines, naming::PipelineNames, pipeline::QueueType, plan};

use crate::{
    args::{BrokerArgs, DEFAULT_NAMESPACE},
    error::CliError,
};

/// A pipeline on a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pipeline name.
    pub name: String,
    /// Its broker names.
    pub names: PipelineNames,
    /// The exchange applications publish to.
    pub exchange: String,
    /// The vhost of its objects.
    pub vhost: String,
    /// The queue type, when a manifest said it.
    pub queue_type: Option<QueueType>,
    /// Outputs, when a manifest said which exist.
    outputs: Option<Vec<String>>,
}

impl Target {
    /// Resolves `pipeline` (optional only with a one-pipeline manifest) from the command line;
    /// `uri_vhost` is the vhost of the AMQP URI, used when neither `--vhost` nor the manifest
    /// names one.
    pub fn resolve(
        args: &BrokerArgs,
        pipeline: Option<&str>,
        uri_vhost: &str,
    ) -> Result<Self, CliError> {
        match &args.file {
            Some(path) => Self::from_manifest(args, path, pipeline),
            None => {
                let name = pipeline.ok_or_else(|| {
                    CliError::Usage("name the pipeline (or give its manifest with -f)".into())
                })?;
                let namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
                let names = PipelineNames::new(namespace, name);
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    exchange: names.exchange(None),
                    names,
                    vhost: args.vhost.clone().unwrap_or_else(|| uri_vhost.to_owned()),
                    queue_type: None,
                    outputs: None,
                })
            }
        }
    }

    fn from_manifest(
        args: &BrokerArgs,
        path: &Path,
        pipeline: Option<&str>,
    ) -> Result<Self, CliError> {
        let shown = path.display().to_string();
        let fail = |reason: String| CliError::Manifest {
            path: shown.clone(),
            reason,
        };
        let yaml = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let mut all = parse_pipelines(&yaml).map_err(|e| fail(e.to_string()))?;
        let found: Vec<String> = all
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        let index = match pipeline {
            Some(name) => found.iter().position(|n| n == name).ok_or_else(|| {
                fail(format!(
                    "it holds no LogPipeline named {name:?} (found: {})",
                    found.join(", ")
                ))
            })?,
            None if all.len() == 1 => 0,
            None => {
                return Err(CliError::Usage(format!(
                    "{shown} holds several pipelines ({}): name one",
                    found.join(", ")
                )));
            }
        };
        let resource = all.swap_remove(index);
        let name = resource.metadata.name.clone().unwrap_or_default();
        let namespace = args
            .namespace
            .clone()
            .or_else(|| resource.metadata.namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let planned = plan(&namespace, &name, &resource.spec)
            .map_err(|e| fail(format!("pipeline {name:?} is invalid: {e}")))?;
        Ok(Self {
            exchange: planned.exchange().name.clone(),
            vhost: args.vhost.clone().unwrap_or_else(|| planned.vhost.clone()),
            queue_type: Some(resource.spec.queue_type()),
            outputs: Some(
                resource
                    .spec
                    .outputs
                    .iter()
                    .map(|o| o.name.clone())
                    .collect(),
            ),
            names: planned.names,
            namespace,
            name,
        })
    }

    /// `namespace/name`, for messages.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Fails when the manifest says the pipeline has no output `output`.
    pub fn check_output(&self, output: &str) -> Result<(), CliError> {
        match &self.outputs {
            Some(known) if !known.iter().any(|o| o == output) => Err(CliError::UnknownOutput {
                pipeline: self.display_name(),
                output: output.to_owned(),
                known: known.join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// Hint for a queue or exchange of this pipeline that the broker does not have.
    pub fn missing_hint(&self) -> String {
        let mut hint = format!(
            "is pipeline {} deployed, with this output, on this vhost?",
            self.display_name()
        );
        if self.outputs.is_none() {
            hint.push_str(" (pass -f <manifest> when it names its own exchange or vhost)");
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn args(file: Option<&Path>, namespace: Option<&str>, vhost: Option<&str>) -> BrokerArgs {
        BrokerArgs {
            amqp: crate::args::DEFAULT_AMQP_URI.into(),
            management: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            vhost: vhost.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            file: file.map(Path::to_path_buf),
        }
    }

    /// A manifest file, deleted on drop.
    struct Manifest(std::path::PathBuf);

    impl Manifest {
        fn with(content: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "logstream-cli-test-{}.yaml",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(content.as_bytes()))
                .unwrap();
            Self(path)
        }
    }

    impl Drop for Manifest {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const TWO: &str = "apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata: {name: games, namespace: prod}
spec:
  broker: {secretRef: {name: r}, vhost: logs}
  exchange: {name: game-logs}
  outputs:
    - {name: security, sink: {stdout: {}}}
    - {name: archive, sink: {stdout: {}}}
---
apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata: {name: other}
spec:
  broker: {secretRef: {name: r}}
  outputs: [{name: o, sink: {stdout: {}}}]
";

    #[test]
    fn without_a_manifest_names_follow_the_convention() {
        let t = Target::resolve(&args(None, None, None), Some("app"), "/").unwrap();
        assert_eq!(t.exchange, "logstream.default.app");
        assert_eq!(t.vhost, "/");
        assert_eq!(
            t.names.dead_letter_queue("out"),
            "logstream.default.app.out.dlq"
        );
        assert!(t.check_output("anything").is_ok());
        let t = Target::resolve(&args(None, Some("ns"), Some("v")), Some("app"), "/").unwrap();
        assert_eq!(
            (t.exchange.as_str(), t.vhost.as_str()),
            ("logstream.ns.app", "v")
        );
        assert!(matches!(
            Target::resolve(&args(None, None, None), None, "/"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn a_manifest_gives_the_custom_exchange_vhost_namespace_and_outputs() {
        let file = Manifest::with(TWO);
        let t = Target::resolve(&args(Some(&file.0), None, None), Some("games"), "/").unwrap();
        assert_eq!(t.exchange, "game-logs");
        assert_eq!(t.vhost, "logs");
        assert_eq!(t.namespace, "prod");
        assert_eq!(
            t.names.main_queue("security"),
            "logstream.prod.games.security"
        );
        assert!(t.check_output("archive").is_ok());
        let err = t.check_output("audit").unwrap_err().to_string();
        assert_eq!(
            err,
            "pipeline prod/games has no output \"audit\" (its outputs: security, archive)"
        );
    }

    #[test]
    fn a_manifest_of_several_pipelines_needs_a_name() {
        let file = Manifest::with(TWO);
        let err = Target::resolve(&args(Some(&file.0), None, None), None, "/").unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err}");
        let err = Target::resolve(&args(Some(&file.0), None, None), Some("nope"), "/")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no LogPipeline named \"nope\" (found: games, other)"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_manifests_are_reported_with_their_path() {
        let missing = Path::new("/nonexistent/pipeline.yaml");
        let err = Target::resolve(&args(Some(missing), None, None), None, "/")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to read manifest /nonexistent/pipeline.yaml"),
            "{err}"
        );
        let file = Manifest::with("kind: ConfigMap\n");
        let err = Target::resolve(&args(Some(&file.0), None, None), None, "/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no LogPipeline document"), "{err}");
    }
}
