//! The LogPipeline status as plain data: four conditions with reasons and plain messages,
//! per-output figures from the management API and the Deployments, and the aggregate fields
//! behind the printer columns.
//!
//! The operator server-side applies the status under its field manager. It never writes an
//! output's `desiredReplicas`, `lastScaleTime` or `lastScaleReason`: those belong to the
//! autoscaler, which applies them under its own field manager into the same list-map entry.

use std::collections::HashMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use logstream_api::{
    LogPipelineSpec, LogPipelineStatus, TopologyPlan, naming::PipelineNames,
    pipeline::OutputStatus, validate::ValidationErrors,
};
use logstream_broker::{OutputQueues, OutputReading, QueueStats, format_age};
use serde_json::{Value, json};

/// Condition types, in the order they are reported.
pub mod types {
    /// The operator logged in to the broker's vhost.
    pub const BROKER_REACHABLE: &str = "BrokerReachable";
    /// Every exchange, queue and binding of the plan exists as planned.
    pub const TOPOLOGY_READY: &str = "TopologyReady";
    /// Every output's Deployment has all its replicas ready.
    pub const WORKERS_READY: &str = "WorkersReady";
    /// All of the above.
    pub const READY: &str = "Ready";
}

/// Condition reasons the operator itself sets (broker failures use
/// [`logstream_broker::BrokerError::category`]).
pub mod reasons {
    /// BrokerReachable: logged in.
    pub const CONNECTED: &str = "Connected";
    /// TopologyReady: the plan is in place.
    pub const TOPOLOGY_APPLIED: &str = "TopologyApplied";
    /// WorkersReady: every replica is ready.
    pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
    /// WorkersReady: some replicas are not ready (yet).
    pub const WORKERS_NOT_READY: &str = "WorkersNotReady";
    /// Ready: everything is.
    pub const READY: &str = "Ready";
    /// The spec has problems; nothing was applied.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// An earlier step failed, so this one was not checked.
    pub const NOT_CHECKED: &str = "NotChecked";
}

/// One condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// A plain sentence for a person.
    pub message: String,
}

impl ConditionState {
    /// A `True` condition.
    pub fn yes(reason: &str, message: impl Into<String>) -> Self {
        Self::new("True", reason, message)
    }

    /// A `False` condition.
    pub fn no(reason: &str, message: impl Into<String>) -> Self {
        Self::new("False", reason, message)
    }

    /// An `Unknown` condition: not checked because `because` failed first.
    pub fn not_checked(because: &str) -> Self {
        Self::new(
            "Unknown",
            reasons::NOT_CHECKED,
            format!("not checked: {because}"),
        )
    }

    fn new(status: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The four conditions of a LogPipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conditions {
    /// BrokerReachable.
    pub broker: ConditionState,
    /// TopologyReady.
    pub topology: ConditionState,
    /// WorkersReady.
    pub workers: ConditionState,
}

impl Conditions {
    /// The spec is invalid: nothing was contacted or applied. The message lists every
    /// problem with its field path.
    pub fn invalid_spec(errors: &ValidationErrors) -> Self {
        let because = "the spec is invalid";
        Self {
            broker: ConditionState::not_checked(because),
            topology: ConditionState::no(reasons::INVALID_SPEC, errors.to_string()),
            workers: ConditionState::not_checked(because),
        }
    }

    /// The broker could not be logged in to (Secret missing or unreadable, refused,
    /// unreachable).
    pub fn broker_failed(reason: &str, message: impl Into<String>) -> Self {
        let because = "the broker is not reachable";
        Self {
            broker: ConditionState::no(reason, message),
            topology: ConditionState::not_checked(because),
            workers: ConditionState::not_checked(because),
        }
    }

    /// Logged in, but the topology could not be applied (a conflict, a broker error).
    pub fn topology_failed(connected: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            broker: ConditionState::yes(reasons::CONNECTED, connected),
            topology: ConditionState::no(reason, message),
            workers: ConditionState::not_checked("the topology is not ready"),
        }
    }

    /// Logged in and the topology is in place; `workers` says how the workers are.
    pub fn applied(connected: &str, topology: &str, workers: ConditionState) -> Self {
        Self {
            broker: ConditionState::yes(reasons::CONNECTED, connected),
            topology: ConditionState::yes(reasons::TOPOLOGY_APPLIED, topology),
            workers,
        }
    }

    /// The Ready condition: `True` when the other three are, else `False` with the reason
    /// and message of the first `False` one (or of the first `Unknown` one when none failed).
    pub fn ready(&self) -> ConditionState {
        let all = [&self.broker, &self.topology, &self.workers];
        all.iter()
            .find(|v| v.status == "False")
            .or_else(|| all.iter().find(|v| !v.is_true()))
            .map_or_else(
                || {
                    ConditionState::yes(
                        reasons::READY,
                        "the topology is in place and every worker is ready",
                    )
                },
                |failing| ConditionState {
                    status: "False",
                    reason: failing.reason.clone(),
                    message: failing.message.clone(),
                },
            )
    }

    /// As Kubernetes conditions for `generation`. A condition keeps its
    /// `lastTransitionTime` from `previous` while its status stays the same.
    pub fn to_k8s(
        &self,
        generation: Option<i64>,
        previous: &[Condition],
        now: Timestamp,
    ) -> Vec<Condition> {
        let ready = self.ready();
        [
            (types::BROKER_REACHABLE, &self.broker),
            (types::TOPOLOGY_READY, &self.topology),
            (types::WORKERS_READY, &self.workers),
            (types::READY, &ready),
        ]
        .into_iter()
        .map(|(kind, state)| {
            let since = previous
                .iter()
                .find(|c| c.type_ == kind && c.status == state.status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: kind.to_owned(),
                status: state.status.to_owned(),
                reason: state.reason.clone(),
                message: state.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
    }
}

/// What is known about one output's Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReplicas {
    /// The output the Deployment works for.
    pub output: String,
    /// `spec.replicas` as the API server (and the autoscaler) left it.
    pub wanted: u32,
    /// `status.readyReplicas`.
    pub ready: u32,
}

/// The WorkersReady condition from each output's replicas.
pub fn workers_state(workers: &[WorkerReplicas]) -> ConditionState {
    let lagging: Vec<String> = workers
        .iter()
        .filter(|w| w.ready < w.wanted)
        .map(|w| {
            format!(
                "output {}: {}/{} replicas ready",
                w.output, w.ready, w.wanted
            )
        })
        .collect();
    if lagging.is_empty() {
        ConditionState::yes(
            reasons::WORKERS_AVAILABLE,
            format!(
                "every replica of the {} output{} is ready",
                workers.len(),
                if workers.len() == 1 { "" } else { "s" }
            ),
        )
    } else {
        ConditionState::no(reasons::WORKERS_NOT_READY, lagging.join("; "))
    }
}

/// The figures of every output of `plan`, read through [`OutputReading`] from the vhost's
/// queue statistics (`None` when the management API could not be read: figures stay absent,
/// never zero), and the Deployments' replicas.
pub fn output_figures(
    plan: &TopologyPlan,
    workers: &[WorkerReplicas],
    stats: Option<&[QueueStats]>,
    now: Timestamp,
) -> Vec<OutputStatus> {
    let stats = stats.unwrap_or_default();
    workers
        .iter()
        .map(|w| {
            let queues = OutputQueues::of(plan, &w.output).unwrap_or_default();
            let reading = OutputReading::read(stats, &queues, now);
            // The reading counts a queue without `message_stats` (no traffic yet) as 0/s;
            // the status leaves a rate the broker did not report out.
            let main = stats.iter().find(|q| q.name == queues.main);
            OutputStatus {
                name: w.output.clone(),
                ready: reading.ready,
                unacked: reading.unacked,
                consumers: reading.consumers,
                oldest_message_age_seconds: reading.oldest_age.map(|age| age.seconds),
                dead_lettered: reading.dead_lettered,
                publish_rate: main.and_then(QueueStats::publish_rate),
                ack_rate: main.and_then(QueueStats::ack_rate),
                replicas: Some(w.ready),
                queue: queues.main,
                ..OutputStatus::default()
            }
        })
        .collect()
}

/// One entry per output of `spec` with only its name and main queue: the status of a
/// reconcile that could not read figures. The entries stay (rather than vanish) because the
/// autoscaler may own fields in them, and an entry needs its `queue`.
pub fn bare_outputs(namespace: &str, pipeline: &str, spec: &LogPipelineSpec) -> Vec<OutputStatus> {
    let names = PipelineNames::new(namespace, pipeline);
    spec.outputs
        .iter()
        .map(|o| OutputStatus {
            name: o.name.clone(),
            queue: names.main_queue(&o.name),
            ..OutputStatus::default()
        })
        .collect()
}

/// The whole status the operator applies. `workers` are the Deployments' replica counts.
/// `previous` is the status as read with the pipeline: it gives the conditions their
/// transition times and the autoscaler's desired replica counts for the `replicas` column
/// (read, never written back; without them, a Deployment's `spec.replicas` is the desired
/// count).
pub fn build(
    generation: Option<i64>,
    conditions: &Conditions,
    outputs: Vec<OutputStatus>,
    workers: &[WorkerReplicas],
    previous: Option<&LogPipelineStatus>,
    now: Timestamp,
) -> LogPipelineStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let desired_by_autoscaler: HashMap<&str, u32> = previous
        .map(|s| s.outputs.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| Some((o.name.as_str(), o.desired_replicas?)))
        .collect();
    // An aggregate exists only when every output's figure does: a gap is not a zero.
    let known = !outputs.is_empty();
    let sum = |f: &dyn Fn(&OutputStatus) -> Option<u64>| -> Option<u64> {
        known.then(|| outputs.iter().map(f).sum()).flatten()
    };
    let depth = sum(&|o| o.ready);
    let dead_lettered = sum(&|o| o.dead_lettered);
    let oldest = outputs
        .iter()
        .map(|o| o.oldest_message_age_seconds)
        .collect::<Option<Vec<f64>>>()
        .filter(|_| known)
        .map(|ages| ages.into_iter().fold(0.0, f64::max));
    let replicas = outputs.iter().any(|o| o.replicas.is_some()).then(|| {
        let current: u64 = outputs
            .iter()
            .map(|o| u64::from(o.replicas.unwrap_or(0)))
            .sum();
        let desired: u64 = outputs
            .iter()
            .map(|o| {
                u64::from(
                    desired_by_autoscaler
                        .get(o.name.as_str())
                        .copied()
                        .or_else(|| {
                            workers
                                .iter()
                                .find(|w| w.output == o.name)
                                .map(|w| w.wanted)
                        })
                        .or(o.replicas)
                        .unwrap_or(0),
                )
            })
            .sum();
        format!("{current}/{desired}")
    });
    LogPipelineStatus {
        observed_generation: generation,
        conditions: conditions.to_k8s(generation, previous_conditions, now),
        depth,
        oldest_message_age: oldest.map(format_age),
        dead_lettered,
        replicas,
        outputs,
    }
}

/// The server-side apply body of `status`.
pub fn apply_body(status: &LogPipelineStatus) -> Value {
    json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use logstream_api::{manifest::parse_pipeline, plan, validate::FieldError};

    use super::*;

    fn now() -> Timestamp {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn queue(name: &str, ready: u64, head: Option<i64>, ack_rate: Option<f64>) -> QueueStats {
        let stats = ack_rate.map(|rate| json!({"ack_details": {"rate": rate}}));
        serde_json::from_value(json!({
            "name": name,
            "messages": ready,
            "messages_ready": ready,
            "messages_unacknowledged": 0,
            "consumers": 1,
            "head_message_timestamp": head,
            "message_stats": stats,
        }))
        .unwrap()
    }

    #[test]
    fn ready_follows_the_first_failing_condition() {
        let c = Conditions::broker_failed("AccessRefused", "broker refused user app");
        let ready = c.ready();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            ("False", "AccessRefused")
        );
        let invalid = Conditions::invalid_spec(&ValidationErrors(vec![FieldError {
            path: "spec.outputs[0].bindings".into(),
            message: "a direct exchange needs bindings".into(),
        }]));
        assert_eq!(
            invalid.ready().message,
            "spec.outputs[0].bindings: a direct exchange needs bindings"
        );
        assert_eq!(invalid.broker.status, "Unknown");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let earlier: Timestamp = "2025-12-31T00:00:00Z".parse().unwrap();
        let healthy = Conditions {
            broker: ConditionState::yes(reasons::CONNECTED, "ok"),
            topology: ConditionState::yes(reasons::TOPOLOGY_APPLIED, "ok"),
            workers: ConditionState::no(reasons::WORKERS_NOT_READY, "0/1"),
        };
        let first = healthy.to_k8s(Some(1), &[], earlier);
        let second = healthy.to_k8s(Some(2), &first, now());
        assert_eq!(second[0].last_transition_time, Time(earlier));
        assert_eq!(second[0].observed_generation, Some(2));
        let recovered = Conditions {
            workers: ConditionState::yes(reasons::WORKERS_AVAILABLE, "ok"),
            ..healthy
        };
        let third = recovered.to_k8s(Some(2), &second, now());
        assert_eq!(third[2].last_transition_time, Time(now()));
        assert_eq!(third[3].status, "True");
        assert_eq!(third[1].last_transition_time, Time(earlier));
    }

    fn two_outputs() -> TopologyPlan {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: p}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: a\n      sink: {stdout: {}}\n    - name: b\n      sink: {stdout: {}}\n",
        )
        .unwrap()
        .spec;
        plan("ns", "p", &spec).unwrap()
    }

    fn workers(output: &str, wanted: u32, ready: u32) -> WorkerReplicas {
        WorkerReplicas {
            output: output.into(),
            wanted,
            ready,
        }
    }

    #[test]
    fn figures_come_from_the_output_reading_and_unreported_rates_stay_absent() {
        let t = now().as_second();
        let queues = vec![
            queue("logstream.ns.p.a", 5, Some(t - 41), None),
            queue("logstream.ns.p.b", 500, None, Some(50.0)),
        ];
        let outputs = output_figures(
            &two_outputs(),
            &[workers("a", 1, 1), workers("b", 1, 1)],
            Some(&queues),
            now(),
        );
        assert_eq!(outputs[0].oldest_message_age_seconds, Some(41.0));
        assert_eq!(
            outputs[1].oldest_message_age_seconds,
            Some(10.0),
            "Little's law"
        );
        assert_eq!(
            (outputs[0].publish_rate, outputs[0].ack_rate),
            (None, None),
            "no message_stats: not reported"
        );
        assert_eq!(
            (outputs[1].publish_rate, outputs[1].ack_rate),
            (None, Some(50.0))
        );
        assert_eq!(outputs[0].dead_lettered, None, "no DLQ statistics");
    }

    #[test]
    fn aggregates_sum_outputs_and_keep_the_autoscalers_desired_count() {
        let plan = two_outputs();
        let t = now().as_second();
        let queues = vec![
            queue("logstream.ns.p.a", 10, Some(t - 4), None),
            queue("logstream.ns.p.a.dlq", 2, None, None),
            queue("logstream.ns.p.b", 5, Some(t - 70), None),
            queue("logstream.ns.p.b.dlq", 1, None, None),
        ];
        let replicas = vec![workers("a", 2, 2), workers("b", 1, 0)];
        let outputs = output_figures(&plan, &replicas, Some(&queues), now());
        let previous = LogPipelineStatus {
            outputs: vec![OutputStatus {
                name: "b".into(),
                desired_replicas: Some(4),
                ..OutputStatus::default()
            }],
            ..LogPipelineStatus::default()
        };
        let conditions = Conditions {
            broker: ConditionState::yes(reasons::CONNECTED, "ok"),
            topology: ConditionState::yes(reasons::TOPOLOGY_APPLIED, "ok"),
            workers: workers_state(&replicas),
        };
        let status = build(
            Some(3),
            &conditions,
            outputs,
            &replicas,
            Some(&previous),
            now(),
        );
        assert_eq!(status.depth, Some(15));
        assert_eq!(status.dead_lettered, Some(3));
        assert_eq!(status.oldest_message_age.as_deref(), Some("1m10s"));
        assert_eq!(
            status.replicas.as_deref(),
            Some("2/6"),
            "a: 2 of 2, b: 0 of 4"
        );
        assert_eq!(
            status.outputs[1].desired_replicas, None,
            "never written by the operator"
        );
        assert_eq!(status.conditions[2].message, "output b: 0/1 replicas ready");
        let body = apply_body(&status);
        assert_eq!(body["status"]["outputs"][0]["queue"], "logstream.ns.p.a");
        assert!(
            body["status"]["outputs"][1]
                .get("desiredReplicas")
                .is_none()
        );
    }

    #[test]
    fn figures_stay_absent_without_statistics() {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: p}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: a\n      sink: {stdout: {}}\n",
        )
        .unwrap()
        .spec;
        let plan = plan("ns", "p", &spec).unwrap();
        let replicas = vec![workers("a", 0, 0)];
        let outputs = output_figures(&plan, &replicas, None, now());
        assert_eq!(outputs[0].ready, None);
        let status = build(
            None,
            &Conditions::broker_failed("X", "y"),
            outputs,
            &replicas,
            None,
            now(),
        );
        assert_eq!((status.depth, status.oldest_message_age), (None, None));
        assert_eq!(status.replicas.as_deref(), Some("0/0"));

        let bare = bare_outputs("ns", "p", &spec);
        assert_eq!(bare[0].queue, "logstream.ns.p.a");
        let failed = build(
            None,
            &Conditions::broker_failed("X", "y"),
            bare,
            &[],
            None,
            now(),
        );
        assert_eq!(
            (failed.depth, failed.dead_lettered, failed.replicas),
            (None, None, None)
        );
    }
}
