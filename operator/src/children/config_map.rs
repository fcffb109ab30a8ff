//! The ConfigMap holding one output's worker configuration file (no credentials).

use k8s_openapi::api::core::v1::ConfigMap;
use logstream_api::worker_config::{CONFIG_FILE_NAME, WorkerConfig};
use std::collections::BTreeMap;

use super::{Owner, labels, worker_name};

/// The ConfigMap `<pipeline>-<output>` with `config` under key `worker.yaml`.
pub fn config_map(owner: &Owner, config: &WorkerConfig) -> ConfigMap {
    ConfigMap {
        metadata: owner.metadata(
            worker_name(&owner.pipeline, &config.output),
            labels::output(&owner.pipeline, &config.output),
        ),
        data: Some(BTreeMap::from([(
            CONFIG_FILE_NAME.to_owned(),
            config.to_yaml(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use logstream_api::manifest::parse_pipeline;
    use serde_json::json;

    use super::*;
    use crate::children::fixtures::{owner, owner_references, worker_labels};

    #[test]
    fn holds_the_worker_configuration_and_is_owned_by_the_pipeline() {
        let p = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: game-logs, namespace: games}\nspec:\n  broker: {secretRef: {name: rabbitmq}}\n  outputs:\n    - name: security\n      sink: {stdout: {}}\n",
        )
        .unwrap();
        let config = WorkerConfig::for_output("games", "game-logs", &p.spec, "security").unwrap();
        let cm = config_map(&owner(), &config);
        assert_eq!(
            serde_json::to_value(&cm).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "game-logs-security",
                    "namespace": "games",
                    "labels": worker_labels(),
                    "ownerReferences": owner_references()
                },
                "data": {"worker.yaml": config.to_yaml()}
            })
        );
        let text = cm.data.unwrap()["worker.yaml"].clone();
        assert_eq!(WorkerConfig::from_yaml(&text).unwrap(), config);
        assert!(
            !text.contains("password") && !text.contains("amqp://"),
            "{text}"
        );
    }
}
