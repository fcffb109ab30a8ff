//! What the operator observed and did: the `status` of a `LogPipeline`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed and did.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `BrokerReachable`, `TopologyReady`, `WorkersReady` and `Ready`, with reasons and plain
    /// messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Per-output figures. A map keyed by `name`, so that the operator and the autoscaler
    /// each server-side apply their own fields of an output's entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub outputs: Vec<OutputStatus>,

    /// Messages waiting in the main queues of all outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,

    /// Age of the oldest waiting message across outputs, e.g. `4s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_message_age: Option<String>,

    /// Messages in the dead-letter queues of all outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,

    /// Current/desired worker replicas across outputs, e.g. `3/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<String>,
}

/// Figures of one output.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatus {
    /// Output name.
    pub name: String,
    /// Main queue name on the broker.
    pub queue: String,
    /// Messages ready for delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<u64>,
    /// Messages delivered and not yet acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacked: Option<u64>,
    /// Consumers on the main queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u64>,
    /// Age of the oldest waiting message, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_message_age_seconds: Option<f64>,
    /// Messages in the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    /// Messages published to the main queue per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<f64>,
    /// Messages acknowledged from the main queue per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_rate: Option<f64>,
    /// Worker replicas running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Worker replicas the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// When the autoscaler last changed the replica count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Why the autoscaler last changed the replica count, e.g. `age 41s over 30s: 3 → 7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
}
