//! The worker Deployment of one output.
//!
//! Hardened by default (non-root, read-only root filesystem, no capabilities, no privilege
//! escalation, RuntimeDefault seccomp, no service account token: the worker never calls the
//! Kubernetes API). `spec.replicas` is deliberately absent: replicas belong to the autoscaler
//! through the scale subresource, and a field this field manager never applies is a field it
//! never fights over. A new Deployment therefore starts at the API default of one replica.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;
use logstream_api::{
    defaults::{WORKER_PORT, WORKER_SHUTDOWN_GRACE},
    pipeline::{OutputSpec, SinkSpec},
    worker_config::{
        AMQP_PASSWORD_ENV, AMQP_URI_ENV, AMQP_USERNAME_ENV, CONFIG_DIR, CONFIG_FILE_NAME,
        SecretFiles, SecretUse,
    },
};

use super::{
    Owner, file_sink_dir, labels,
    secret::{PASSWORD_KEY, URI_KEY, USERNAME_KEY},
    worker_name,
};

/// Name of the worker container.
pub const CONTAINER: &str = "worker";
/// Name of the worker's HTTP port (metrics and probes).
pub const METRICS_PORT_NAME: &str = "metrics";
/// The user and group the worker runs as (the distroless `nonroot` user).
pub const WORKER_UID: i64 = 65532;
/// Seconds a worker pod gets to stop: the worker's own shutdown grace plus 5 s to exit.
pub const TERMINATION_GRACE_SECONDS: i64 = WORKER_SHUTDOWN_GRACE.as_std().as_secs() as i64 + 5;
/// Pod template annotation with the digest of the worker configuration: a changed
/// configuration rolls the pods, which read it only at start.
pub const CONFIG_DIGEST_ANNOTATION: &str = "logstream.io/config-digest";
/// Pod template annotation with the resourceVersion of the Secret the worker's broker
/// credentials come from: a changed Secret rolls the pods, which read it only at start.
pub const SECRET_VERSION_ANNOTATION: &str = "logstream.io/broker-secret-version";
/// Mode of the files of a Secret volume: readable by the worker's user and group only.
pub const SECRET_FILE_MODE: i32 = 0o440;

/// Where a worker's broker credentials come from: Secrets and keys, never a copied value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerBroker {
    /// `LOGSTREAM_AMQP_URI` from key `uri` of Secret `secret` (a broker Secret of the `uri`
    /// shape; the worker's configuration sets the vhost).
    UriKey {
        /// The Secret.
        secret: String,
    },
    /// `LOGSTREAM_AMQP_URI` is `uri`, which names only where the broker is, and
    /// `LOGSTREAM_AMQP_USERNAME` and `LOGSTREAM_AMQP_PASSWORD` come from keys `username` and
    /// `password` of Secret `secret` (a broker Secret of the `host`/`username`/`password`
    /// shape, or the output's worker-user Secret).
    UserKeys {
        /// `amqp(s)://host:port/`, without credentials.
        uri: String,
        /// The Secret.
        secret: String,
    },
}

impl WorkerBroker {
    /// The worker's environment variables.
    fn env(&self) -> Vec<EnvVar> {
        let from_key = |name: &str, secret: &str, key: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        match self {
            Self::UriKey { secret } => vec![from_key(AMQP_URI_ENV, secret, URI_KEY)],
            Self::UserKeys { uri, secret } => vec![
                EnvVar {
                    name: AMQP_URI_ENV.into(),
                    value: Some(uri.clone()),
                    ..EnvVar::default()
                },
                from_key(AMQP_USERNAME_ENV, secret, USERNAME_KEY),
                from_key(AMQP_PASSWORD_ENV, secret, PASSWORD_KEY),
            ],
        }
    }
}

/// What the worker pod of one output is made of, besides the output's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPod<'a> {
    /// Container image.
    pub image: &'a str,
    /// Digest of the worker configuration file.
    pub config_digest: &'a str,
    /// Where the broker credentials come from.
    pub broker: &'a WorkerBroker,
    /// resourceVersion of the Secret the broker credentials come from, when known.
    pub secret_version: Option<&'a str>,
    /// The Secrets the worker reads as files (from its configuration): each is a Secret
    /// volume mounted read-only at its directory. The operator never reads them.
    pub secret_files: &'a BTreeMap<SecretUse, SecretFiles>,
}

/// The Deployment `<pipeline>-<output>`.
pub fn deployment(owner: &Owner, output: &OutputSpec, pod: &WorkerPod<'_>) -> Deployment {
    let name = worker_name(&owner.pipeline, &output.name);
    let labels = labels::output(&owner.pipeline, &output.name);
    let mut annotations = BTreeMap::from([(
        CONFIG_DIGEST_ANNOTATION.to_owned(),
        pod.config_digest.to_owned(),
    )]);
    if let Some(version) = pod.secret_version {
        annotations.insert(SECRET_VERSION_ANNOTATION.to_owned(), version.to_owned());
    }

    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let SinkSpec::File(file) = &output.sink {
        // The root filesystem is read-only: the file sink writes into an emptyDir.
        mounts.push(VolumeMount {
            name: "sink".into(),
            mount_path: file_sink_dir(&file.path).into(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "sink".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }

    for (use_, files) in pod.secret_files {
        let volume = format!("secret-{}", use_.as_str());
        mounts.push(VolumeMount {
            name: volume.clone(),
            mount_path: files.dir.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: volume,
            secret: Some(SecretVolumeSource {
                secret_name: Some(files.secret.clone()),
                default_mode: Some(SECRET_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let container = Container {
        name: CONTAINER.into(),
        image: Some(pod.image.into()),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE_NAME}"),
        ]),
        env: Some(pod.broker.env()),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: i32::from(WORKER_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: output.worker.as_ref().and_then(|w| w.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    Deployment {
        metadata: owner.metadata(name, labels.clone()),
        spec: Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(labels::selector(&owner.pipeline, &output.name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKER_UID),
                        run_as_group: Some(WORKER_UID),
                        fs_group: Some(WORKER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use logstream_api::manifest::parse_pipeline;
    use serde_json::json;

    use super::*;
    use crate::children::fixtures::{owner, owner_references, worker_labels};

    fn uri_key() -> WorkerBroker {
        WorkerBroker::UriKey {
            secret: "rabbitmq".into(),
        }
    }

    fn output(yaml: &str) -> OutputSpec {
        parse_pipeline(&format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: game-logs, namespace: games}}\nspec:\n  broker: {{secretRef: {{name: rabbitmq}}}}\n  outputs:\n    - {yaml}\n"
        ))
        .unwrap()
        .spec
        .outputs
        .remove(0)
    }

    #[test]
    fn worker_deployment_is_hardened_owned_and_leaves_replicas_to_the_autoscaler() {
        let o = output(
            "{name: security, sink: {http: {url: \"http://loki:3100/loki/api/v1/push\"}}, worker: {image: \"registry.example/worker:2\", resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}}}",
        );
        let d = deployment(
            &owner(),
            &o,
            &WorkerPod {
                image: "registry.example/worker:2",
                config_digest: "0123456789abcdef",
                broker: &WorkerBroker::UriKey {
                    secret: "rabbitmq".into(),
                },
                secret_version: Some("4711"),
                secret_files: &BTreeMap::new(),
            },
        );
        let probe = |path: &str, period: i64, failures: i64| {
            json!({
                "httpGet": {"path": path, "port": "metrics"},
                "periodSeconds": period,
                "timeoutSeconds": 2,
                "failureThreshold": failures
            })
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "game-logs-security",
                    "namespace": "games",
                    "labels": worker_labels(),
                    "ownerReferences": owner_references()
                },
                "spec": {
                    "selector": {"matchLabels": {
                        "logstream.io/output": "security",
                        "logstream.io/pipeline": "game-logs"
                    }},
                    "template": {
                        "metadata": {
                            "labels": worker_labels(),
                            "annotations": {
                                "logstream.io/broker-secret-version": "4711",
                                "logstream.io/config-digest": "0123456789abcdef"
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
                                "image": "registry.example/worker:2",
                                "args": ["--config", "/etc/logstream/worker.yaml"],
                                "env": [{
                                    "name": "LOGSTREAM_AMQP_URI",
                                    "valueFrom": {"secretKeyRef": {"name": "rabbitmq", "key": "uri"}}
                                }],
                                "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                                "livenessProbe": probe("/healthz", 10, 3),
                                "readinessProbe": probe("/readyz", 5, 2),
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"memory": "128Mi"}
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "runAsNonRoot": true,
                                    "capabilities": {"drop": ["ALL"]}
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/logstream", "readOnly": true}
                                ]
                            }],
                            "volumes": [
                                {"name": "config", "configMap": {"name": "game-logs-security"}}
                            ]
                        }
                    }
                }
            })
        );
    }

    #[test]
    fn file_sink_writes_into_an_empty_dir_at_the_file_directory() {
        let o = output("{name: security, sink: {file: {path: /var/log/logstream/security.jsonl}}}");
        let d = deployment(
            &owner(),
            &o,
            &WorkerPod {
                image: "img",
                config_digest: "d",
                broker: &uri_key(),
                secret_version: None,
                secret_files: &BTreeMap::new(),
            },
        );
        let pod = serde_json::to_value(d.spec.unwrap().template).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([
                {"name": "config", "mountPath": "/etc/logstream", "readOnly": true},
                {"name": "sink", "mountPath": "/var/log/logstream"}
            ])
        );
        assert_eq!(
            pod["spec"]["volumes"][1],
            json!({"name": "sink", "emptyDir": {}})
        );
        assert_eq!(
            pod["metadata"]["annotations"],
            json!({"logstream.io/config-digest": "d"})
        );
        assert!(pod["spec"]["containers"][0].get("resources").is_none());
    }

    #[test]
    fn secrets_the_worker_reads_are_read_only_secret_volumes_at_their_directories() {
        let o = output("{name: security, sink: {stdout: {}}}");
        let secrets = BTreeMap::from([(
            SecretUse::SinkAuth,
            SecretFiles::mounted("loki-auth", SecretUse::SinkAuth),
        )]);
        let d = deployment(
            &owner(),
            &o,
            &WorkerPod {
                image: "img",
                config_digest: "d",
                broker: &uri_key(),
                secret_version: None,
                secret_files: &secrets,
            },
        );
        let pod = serde_json::to_value(d.spec.unwrap().template).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][1],
            json!({"name": "secret-sink-auth", "mountPath": "/var/run/secrets/logstream/sink-auth", "readOnly": true})
        );
        assert_eq!(
            pod["spec"]["volumes"][1],
            json!({"name": "secret-sink-auth", "secret": {"secretName": "loki-auth", "defaultMode": 0o440}})
        );
    }

    #[test]
    fn user_keys_give_the_worker_a_uri_without_credentials_and_the_user_by_secret_key() {
        let o = output("{name: security, sink: {stdout: {}}}");
        let broker = WorkerBroker::UserKeys {
            uri: "amqps://rabbit.games.svc:5671/".into(),
            secret: "game-logs-security-broker-user".into(),
        };
        let d = deployment(
            &owner(),
            &o,
            &WorkerPod {
                image: "img",
                config_digest: "d",
                broker: &broker,
                secret_version: Some("12"),
                secret_files: &BTreeMap::new(),
            },
        );
        let pod = serde_json::to_value(d.spec.unwrap().template).unwrap();
        let key = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "game-logs-security-broker-user", "key": key}}});
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([
                {"name": "LOGSTREAM_AMQP_URI", "value": "amqps://rabbit.games.svc:5671/"},
                key("LOGSTREAM_AMQP_USERNAME", "username"),
                key("LOGSTREAM_AMQP_PASSWORD", "password")
            ])
        );
        assert_eq!(
            pod["metadata"]["annotations"]["logstream.io/broker-secret-version"],
            "12"
        );
    }
}
