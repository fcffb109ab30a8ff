//! The Service exposing one output's worker metrics (port `metrics`), for Prometheus.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use logstream_api::defaults::WORKER_PORT;

use super::{Owner, deployment::METRICS_PORT_NAME, labels, worker_name};

/// The Service `<pipeline>-<output>` selecting the output's worker pods.
pub fn service(owner: &Owner, output: &str) -> Service {
    Service {
        metadata: owner.metadata(
            worker_name(&owner.pipeline, output),
            labels::output(&owner.pipeline, output),
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(&owner.pipeline, output)),
            ports: Some(vec![ServicePort {
                name: Some(METRICS_PORT_NAME.into()),
                port: i32::from(WORKER_PORT),
                target_port: Some(IntOrString::String(METRICS_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::fixtures::{owner, owner_references, worker_labels};

    #[test]
    fn metrics_service_selects_the_output_pods() {
        assert_eq!(
            serde_json::to_value(service(&owner(), "security")).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "game-logs-security",
                    "namespace": "games",
                    "labels": worker_labels(),
                    "ownerReferences": owner_references()
                },
                "spec": {
                    "selector": {"logstream.io/output": "security", "logstream.io/pipeline": "game-logs"},
                    "ports": [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
                }
            })
        );
    }
}
