//! The Secret holding an output's own broker user (`spec.broker.workerUsers`): keys
//! `username` and `password`, which the workers read through `secretKeyRef`. The operator
//! creates it once with a generated password and never rewrites it; it is owned by the
//! output's ConfigMap, so it goes when the output (pruned) or the pipeline goes.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::api::ObjectMeta;

use super::{Owner, labels, worker_user_secret_name};

/// Key of the user name in a broker Secret of the `host`/`username`/`password` shape and in
/// the worker-user Secret.
pub const USERNAME_KEY: &str = "username";
/// Key of the password (same shapes).
pub const PASSWORD_KEY: &str = "password";
/// Key of the AMQP URI in a broker Secret of the `uri` shape.
pub const URI_KEY: &str = "uri";

/// The Secret of `output`'s broker user `username` with `password`, owned by `config_map`
/// (the output's ConfigMap, as the API server returned it).
pub fn worker_user_secret(
    owner: &Owner,
    output: &str,
    config_map: OwnerReference,
    username: &str,
    password: &str,
) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(worker_user_secret_name(&owner.pipeline, output)),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels::worker_user(&owner.pipeline, output)),
            owner_references: Some(vec![config_map]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (USERNAME_KEY.to_owned(), bytes(username)),
            (PASSWORD_KEY.to_owned(), bytes(password)),
        ])),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// A new random password: 64 hex digits from two v4 UUIDs (244 random bits).
pub fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::fixtures::owner;

    #[test]
    fn worker_user_secret_is_immutable_labelled_and_owned_by_the_outputs_config_map() {
        let cm = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "game-logs-security".into(),
            uid: "cm-uid".into(),
            ..OwnerReference::default()
        };
        let secret = worker_user_secret(&owner(), "security", cm, "u", "p");
        assert_eq!(
            serde_json::to_value(&secret).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "immutable": true,
                "metadata": {
                    "name": "game-logs-security-broker-user",
                    "namespace": "games",
                    "labels": {
                        "app.kubernetes.io/component": "broker-user",
                        "app.kubernetes.io/instance": "game-logs",
                        "app.kubernetes.io/managed-by": "logstream-operator",
                        "app.kubernetes.io/name": "logstream-worker",
                        "logstream.io/output": "security",
                        "logstream.io/pipeline": "game-logs"
                    },
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "game-logs-security", "uid": "cm-uid"}]
                },
                "data": {"username": "dQ==", "password": "cA=="}
            })
        );
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
