//! The pipeline's derived broker Secret: one normalized `uri` key (the pipeline's vhost, user
//! and password percent-encoded), whatever shape the user's Secret had. Workers read it
//! through `secretKeyRef`; it never appears in a ConfigMap, a log, an Event or the status.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{Owner, broker_secret_name, labels};
use logstream_broker::BrokerEndpoint;

/// Key of the AMQP URI in the derived Secret.
pub const URI_KEY: &str = "uri";

/// The Secret `<pipeline>-broker` with `endpoint`'s URI on `vhost`.
pub fn broker_secret(owner: &Owner, endpoint: &BrokerEndpoint, vhost: &str) -> Secret {
    let uri = endpoint.with_vhost(vhost).amqp_uri_with_password();
    Secret {
        metadata: owner.metadata(
            broker_secret_name(&owner.pipeline),
            labels::broker_secret(&owner.pipeline),
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            URI_KEY.to_owned(),
            ByteString(uri.into_bytes()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::fixtures::{owner, owner_references};

    #[test]
    fn derived_secret_holds_the_normalized_uri_on_the_pipeline_vhost() {
        let endpoint =
            BrokerEndpoint::from_parts("rabbit.games.svc", None, "app", "p@ss/w", false, None)
                .unwrap();
        let secret = broker_secret(&owner(), &endpoint, "logs/prod");
        assert_eq!(
            serde_json::to_value(&secret).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": "game-logs-broker",
                    "namespace": "games",
                    "labels": {
                        "app.kubernetes.io/component": "broker-credentials",
                        "app.kubernetes.io/instance": "game-logs",
                        "app.kubernetes.io/managed-by": "logstream-operator",
                        "app.kubernetes.io/name": "logstream-worker",
                        "logstream.io/pipeline": "game-logs"
                    },
                    "ownerReferences": owner_references()
                },
                // base64 of amqp://app:p%40ss%2Fw@rabbit.games.svc:5672/logs%2Fprod
                "data": {"uri": "YW1xcDovL2FwcDpwJTQwc3MlMkZ3QHJhYmJpdC5nYW1lcy5zdmM6NTY3Mi9sb2dzJTJGcHJvZA=="}
            })
        );
    }
}
