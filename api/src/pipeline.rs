//! The `LogPipeline` custom resource (`logstream.io/v1alpha1`, short name `lp`).
//!
//! Every field's `///` doc becomes its description in the generated CRD. Optional fields stay
//! `Option`s without a schema default, so the API server never writes a default into the user's
//! object; the accessors below apply the defaults of [`crate::defaults`] when a field is read.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

mod sink;
mod status;

pub use sink::{
    Compression, FileSink, HeadersFrom, HttpAuth, HttpFormat, HttpSink, HttpTls, SinkSpec,
    StdoutSink,
};
pub use status::{LogPipelineStatus, OutputStatus};

/// A queue-backed log pipeline: one exchange that applications publish logs to, and for each
/// output a durable priority queue with a retry ladder, a dead-letter queue and an autoscaled
/// worker Deployment that writes the logs to a sink.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "logstream.io",
    version = "v1alpha1",
    kind = "LogPipeline",
    plural = "logpipelines",
    singular = "logpipeline",
    shortname = "lp",
    category = "logstream",
    namespaced,
    status = "LogPipelineStatus",
    derive = "PartialEq",
    doc = "A queue-backed log pipeline on RabbitMQ: an exchange, and per output a priority queue, a retry ladder, a dead-letter queue and an autoscaled worker Deployment.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the topology and every output's workers are ready"
    ),
    printcolumn(
        name = "Depth",
        type_ = "integer",
        json_path = ".status.depth",
        description = "Messages waiting in the main queues of all outputs"
    ),
    printcolumn(
        name = "Age",
        type_ = "string",
        json_path = ".status.oldestMessageAge",
        description = "Age of the oldest waiting message across outputs"
    ),
    printcolumn(
        name = "DLQ",
        type_ = "integer",
        json_path = ".status.deadLettered",
        description = "Messages in the dead-letter queues of all outputs"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicas",
        description = "Current/desired worker replicas across outputs"
    ),
    validation = Rule::new(
        "self.spec.outputs.all(o, size(self.metadata.name) + 1 + size(o.name) <= 63)"
    )
    .message("metadata.name and each outputs[].name, joined by '-', must fit in 63 characters: they name the output's worker Deployment and Service")
)]
#[serde(rename_all = "camelCase")]
pub struct LogPipelineSpec {
    /// The RabbitMQ broker the pipeline's topology lives on, and how to log in.
    pub broker: BrokerSpec,

    /// The exchange applications publish logs to. Defaults to a `topic` exchange named
    /// `logstream.<namespace>.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeSpec>,

    /// Queue type of every queue of the pipeline: `classic` (supports `x-max-priority`) or
    /// `quorum` (replicated; the broker also dead-letters after `retry.maxAttempts`
    /// deliveries). Default `classic`. Immutable once the queues exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<QueueType>,

    /// Message priorities of the main queues (classic queues only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PrioritySpec>,

    /// The outputs: each gets its own queue, retry ladder, dead-letter queue and worker
    /// Deployment, and receives the messages that match its bindings.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(o, self.exists_one(p, p.name == o.name))").message("output names must be unique"))]
    pub outputs: Vec<OutputSpec>,

    /// What happens on the broker when the LogPipeline is deleted: `Retain` keeps every
    /// exchange and queue, `DeleteIfEmpty` deletes the queues that hold no message and reports
    /// the others, `Delete` deletes everything. Default `Retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Where the broker is and which credentials to use. Set exactly one of `secretRef` and
/// `clusterRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.clusterRef)").message("set exactly one of secretRef and clusterRef"))]
pub struct BrokerSpec {
    /// A Secret in the pipeline's namespace with key `uri` (`amqp://` or `amqps://`, user and
    /// password percent-encoded) and optional `managementUri`; or keys `host`, `username`,
    /// `password` and optional `port`. Several nodes of a cluster are listed with commas
    /// (`amqp://user:password@rabbit-0:5672,rabbit-1:5672,rabbit-2:5672/vhost`, or `host:
    /// rabbit-0,rabbit-1,rabbit-2`) and tried in that order; on Kubernetes one Service in front
    /// of the nodes is simpler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,

    /// A `RabbitmqCluster` of the RabbitMQ Cluster Operator in the pipeline's namespace; the
    /// credentials come from its `<name>-default-user` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<LocalObjectRef>,

    /// Virtual host of every object of the pipeline. Default: the vhost in the broker
    /// Secret's `uri` when it names one, else `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub vhost: Option<String>,

    /// Give each output's workers a RabbitMQ user of their own instead of the Secret's user:
    /// it may consume only the output's main queue and publish only through the default
    /// exchange (its retry and dead-letter copies), and may declare, bind or delete nothing.
    /// The operator creates the users through the management API (the Secret's user needs
    /// the `administrator` tag), keeps each password in a Secret it owns, and deletes the
    /// user with its output or pipeline. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_users: Option<bool>,

    /// TLS of an `amqps://` broker (and of its management API over `https`): the CA the
    /// broker's certificate is checked against and the client certificate to show. Default:
    /// the system's trusted CAs, no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTls>,
}

/// TLS to the broker. Secrets use the keys cert-manager writes; they may be the broker Secret
/// itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.insecureSkipVerify) || !self.insecureSkipVerify").message("insecureSkipVerify is not supported for the broker: name the CA that signed its certificate in caSecretRef"))]
pub struct BrokerTls {
    /// A Secret whose key `ca.crt` (PEM) holds the CA certificates the broker's certificate is
    /// checked against, instead of the system's trusted CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,

    /// A Secret with the client certificate shown to the broker (for a broker that requires
    /// one, `ssl_options.fail_if_no_peer_cert = true`): keys `tls.crt` and `tls.key` (PEM), as
    /// a `kubernetes.io/tls` Secret holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<LocalObjectRef>,

    /// Must be false or absent: the broker's certificate is always checked (the field keeps
    /// the shape of an HTTP sink's `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A reference to an object in the LogPipeline's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The exchange applications publish to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// Exchange name. Default `logstream.<namespace>.<name>`. Names starting with `amq.` are
    /// reserved by RabbitMQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub name: Option<String>,

    /// Exchange type: `direct`, `topic`, `fanout` or `headers`. Default `topic`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ExchangeType>,
}

/// RabbitMQ exchange types.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = field_doc_wins)]
pub enum ExchangeType {
    /// Routes on an exact routing-key match.
    Direct,
    /// Routes on routing-key patterns (`*` one word, `#` any words).
    #[default]
    Topic,
    /// Routes every message to every output.
    Fanout,
    /// Routes on message headers; bindings are written `key=value,key=value`.
    Headers,
}

impl ExchangeType {
    /// The name RabbitMQ uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Topic => "topic",
            Self::Fanout => "fanout",
            Self::Headers => "headers",
        }
    }
}

/// RabbitMQ queue types LogStream declares.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = field_doc_wins)]
pub enum QueueType {
    /// Single-node queues with `x-max-priority` priorities.
    #[default]
    Classic,
    /// Replicated Raft queues with a broker-side delivery limit.
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

/// Message priorities.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrioritySpec {
    /// Number of priority levels of classic main queues (`x-max-priority` = levels - 1);
    /// 1 turns priorities off. Default 4, so `critical` (3) overtakes `error` (2), `warn` (1)
    /// and everything else (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub levels: Option<u8>,
}

/// What to do with the broker objects when the LogPipeline is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[schemars(transform = field_doc_wins)]
pub enum DeletionPolicy {
    /// Keep every exchange and queue.
    #[default]
    Retain,
    /// Delete queues that hold no message; keep and report the others.
    DeleteIfEmpty,
    /// Delete every exchange and queue, with the messages in them.
    Delete,
}

/// One destination of the pipeline's logs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Output name: a DNS label of at most 40 characters. Part of the queue, Deployment and
    /// Service names.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Which messages reach this output. For `topic` exchanges, routing-key patterns
    /// (default `["#"]`: every message); for `direct`, exact routing keys (required); for
    /// `headers`, `key=value[,key=value]` matches on all listed headers (default: every
    /// message). Not allowed with `fanout`, which routes every message everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("bindings must not be empty; leave the field out to receive every message"))]
    pub bindings: Option<Vec<String>>,

    /// Retry ladder for transient sink failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,

    /// The dead-letter queue that holds what can never succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,

    /// Most messages the main queue holds; beyond it the broker refuses publishes
    /// (producers get negative confirms: backpressure instead of loss). A retry whose wait
    /// ends while the queue is full is kept: in the DLQ on classic queues, in the main queue
    /// on quorum queues. Default: unbounded. Immutable once the queue exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_backlog: Option<u64>,

    /// Where the worker writes logs: exactly one of `stdout`, `file` and `http`.
    pub sink: SinkSpec,

    /// The worker Deployment's consumption settings and pod resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSpec>,

    /// How the worker Deployment scales with the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
}

/// Retry ladder: failed deliveries wait in retry queue `i` for `backoff[i]`, then return to
/// the main queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Deliveries before a message is dead-lettered, counting the first one and broker
    /// redeliveries after a worker died. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,

    /// Delay of each retry step (e.g. `[1s, 10s, 60s]`); attempts past the last step reuse
    /// it. Default `[1s, 10s, 60s]`. Each step is a queue whose TTL is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("backoff must list at least one delay"))]
    pub backoff: Option<Vec<Duration>>,
}

/// The dead-letter queue.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Most messages the DLQ holds; beyond it the broker refuses new dead letters, which stay
    /// in the main queue instead of being dropped. Default 1000000. Immutable once the queue
    /// exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length: Option<u64>,
}

/// The worker Deployment of one output.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.batch) || !has(self.batch.maxMessages) || !has(self.prefetch) || self.batch.maxMessages <= self.prefetch").message("batch.maxMessages must not exceed prefetch: a worker never holds more than prefetch messages"))]
pub struct WorkerSpec {
    /// Unacknowledged messages one worker holds (`basic.qos`). Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub prefetch: Option<u16>,

    /// Messages one worker processes in parallel. Default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub concurrency: Option<u32>,

    /// Sink write batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,

    /// Largest accepted message body in bytes; larger ones are dead-lettered. Default 262144.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 134217728))]
    pub max_message_bytes: Option<u32>,

    /// Worker container image. Default: the image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Duplicate suppression: a log whose message id (or, without one, body) was written within
    /// `window` is acknowledged without being written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupSpec>,
}

/// Duplicate suppression by message id. Each worker remembers the ids it wrote in its own
/// cache; with `redis`, the ids are also shared, so that an id written by any replica (or by a
/// worker that restarted) is not written again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DedupSpec {
    /// A shared dedup store on Redis, seen by every replica of the output. Without it, a
    /// duplicate is caught only when it reaches the worker process that wrote the first copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisDedupSpec>,

    /// Message ids one worker process remembers (oldest forgotten first); 0 turns the
    /// per-process cache off. Default 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000000))]
    pub capacity: Option<u32>,

    /// How long a written id is remembered, in the per-process cache and in Redis (the keys'
    /// time to live). Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Where the shared dedup store is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisDedupSpec {
    /// A Secret in the pipeline's namespace with key `url` (`redis://[user:password@]host:6379/0`,
    /// or `rediss://` for TLS). The URL is never written into the worker's configuration.
    pub secret_ref: LocalObjectRef,
}

/// Sink write batching: a batch is written when it is full or its first log waited `linger`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// Most logs in one write. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_messages: Option<u32>,

    /// Longest wait for a batch to fill. Default 50ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linger: Option<Duration>,
}

/// Autoscaling of one output's worker Deployment from queue depth and oldest-message age.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.minReplicas) ? self.minReplicas : 1) <= (has(self.maxReplicas) ? self.maxReplicas : 10)").message("minReplicas must not exceed maxReplicas (defaults: 1 and 10)"))]
pub struct ScalingSpec {
    /// Fewest replicas. 0 lets an idle output scale to zero. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: Option<u32>,

    /// Most replicas. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<u32>,

    /// Waiting messages one replica should carry. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_backlog_per_replica: Option<u32>,

    /// Age the oldest waiting message should stay under; the autoscaler adds replicas to
    /// drain the backlog before it gets older. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_age: Option<Duration>,

    /// How long a lower replica count must hold before the Deployment scales down.
    /// Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Duration>,

    /// How often queue statistics are read. Default 2s, at least 500ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
}

/// Drops an enum's own description from its schema, so the description of the field using the
/// enum stays in the CRD (kube's `Option<enum>` rewrite would otherwise replace it).
pub(crate) fn field_doc_wins(schema: &mut schemars::Schema) {
    schema.remove("description");
}
