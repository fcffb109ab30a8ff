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
    pipeline::OutputStatus, topology::QueueRole, validate::ValidationErrors,
};
use serde_json::{Value, json};

use logstream_broker::QueueStats;

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
pub struct Verdict {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// A plain sentence for a person.
    pub message: String,
}

impl Verdict {
    /// A `True` verdict.
    pub fn yes(reason: &str, message: impl Into<String>) -> Self {
        Self::new("True", reason, message)
    }

    /// A `False` verdict.
    pub fn no(reason: &str, message: impl Into<String>) -> Self {
        Self::new("False", reason, message)
    }

    /// An `Unknown` verdict: not checked because `because` failed first.
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
    pub broker: Verdict,
    /// TopologyReady.
    pub topology: Verdict,
    /// WorkersReady.
    pub workers: Verdict,
}

impl Conditions {
    /// The spec is invalid: nothing was contacted or applied. The message lists every
    /// problem with its field path.
    pub fn invalid_spec(errors: &ValidationErrors) -> Self {
        let because = "the spec is invalid";
        Self {
            broker: Verdict::not_checked(because),
            topology: Verdict::no(reasons::INVALID_SPEC, errors.to_string()),
            workers: Verdict::not_checked(because),
        }
    }

    /// The broker could not be logged in to (Secret missing or unreadable, refused,
    /// unreachable).
    pub fn broker_failed(reason: &str, message: impl Into<String>) -> Self {
        let because = "the broker is not reachable";
        Self {
            broker: Verdict::no(reason, message),
            topology: Verdict::not_checked(because),
            workers: Verdict::not_checked(because),
        }
    }

    /// Logged in, but the topology could not be applied (a conflict, a broker error).
    pub fn topology_failed(connected: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            broker: Verdict::yes(reasons::CONNECTED, connected),
            topology: Verdict::no(reason, message),
            workers: Verdict::not_checked("the topology is not ready"),
        }
    }

    /// The Ready condition: `True` when the other three are, else `False` with the reason
    /// and message of the first `False` one (or of the first `Unknown` one when none failed).
    pub fn ready(&self) -> Verdict {
        let all = [&self.broker, &self.topology, &self.workers];
        all.iter()
            .find(|v| v.status == "False")
            .or_else(|| all.iter().find(|v| !v.is_true()))
            .map_or_else(
                || {
                    Verdict::yes(
                        reasons::READY,
                        "the topology is in place and every worker is ready",
                    )
                },
                |failing| Verdict {
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
        .map(|(kind, verdict)| {
            let since = previous
                .iter()
                .find(|c| c.type_ == kind && c.status == verdict.status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: kind.to_owned(),
                status: verdict.status.to_owned(),
                reason: verdict.reason.clone(),
                message: verdict.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
    }
}

/// What is known about one output's Deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerReplicas {
    /// `spec.replicas` as the API server (and the autoscaler) left it.
    pub wanted: u32,
    /// `status.readyReplicas`.
    pub ready: u32,
}

/// The WorkersReady verdict from each output's replicas.
pub fn workers_verdict(outputs: &[(String, WorkerReplicas)]) -> Verdict {
    let lagging: Vec<String> = outputs
        .iter()
        .filter(|(_, r)| r.ready < r.wanted)
        .map(|(name, r)| format!("output {name}: {}/{} replicas ready", r.ready, r.wanted))
        .collect();
    if lagging.is_empty() {
        Verdict::yes(
            reasons::WORKERS_AVAILABLE,
            format!(
                "every replica of the {} output{} is ready",
                outputs.len(),
                if outputs.len() == 1 { "" } else { "s" }
            ),
        )
    } else {
        Verdict::no(reasons::WORKERS_NOT_READY, lagging.join("; "))
    }
}

/// The figures of every output of `plan`, from the vhost's queue statistics (`None` when
/// the management API could not be read: figures stay absent, never zero) and the
/// Deployments' replicas.
pub fn output_figures(
    plan: &TopologyPlan,
    outputs: &[(String, WorkerReplicas)],
    queues: Option<&[QueueStats]>,
    now: Timestamp,
) -> Vec<OutputStatus> {
    let by_name: HashMap<&str, &QueueStats> = queues
        .unwrap_or_default()
        .iter()
        .map(|q| (q.name.as_str(), q))
        .collect();
    outputs
        .iter()
        .map(|(name, replicas)| {
            let queue = plan
                .queue(name, QueueRole::Main)
                .map(|q| q.name.clone())
                .unwrap_or_default();
            let main = by_name.get(queue.as_str());
            let dlq = plan
                .queue(name, QueueRole::DeadLetter)
                .and_then(|q| by_name.get(q.name.as_str()));
            OutputStatus {
                name: name.clone(),
                ready: main.and_then(|q| q.messages_ready),
                unacked: main.and_then(|q| q.messages_unacknowledged),
                consumers: main.and_then(|q| q.consumers),
                oldest_message_age_seconds: main.and_then(|q| oldest_message_age(q, now)),
                dead_lettered: dlq.and_then(|q| q.messages),
                publish_rate: main.and_then(|q| q.publish_rate()),
                ack_rate: main.and_then(|q| q.ack_rate()),
                replicas: Some(replicas.ready),
                queue,
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

/// Age of the oldest waiting message in seconds: from the broker's head message timestamp
/// where it reports one, else estimated by Little's law (backlog ÷ drain rate); 0 for an
/// empty queue; `None` when neither can be known.
pub fn oldest_message_age(queue: &QueueStats, now: Timestamp) -> Option<f64> {
    let ready = queue.messages_ready?;
    if ready == 0 {
        return Some(0.0);
    }
    if let Some(head) = queue.head_message_timestamp {
        let age = now.as_second().saturating_sub(head).max(0);
        return Some(age as f64);
    }
    let drain = queue.ack_rate().filter(|r| *r > 0.0)?;
    Some(ready as f64 / drain)
}

/// A short age for the printer column: `0s`, `42s`, `3m12s`, `2h5m`.
pub fn format_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
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
    workers: &[(String, WorkerReplicas)],
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
                                .find(|(name, _)| *name == o.name)
                                .map(|(_, r)| r.wanted)
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
            broker: Verdict::yes(reasons::CONNECTED, "ok"),
            topology: Verdict::yes(reasons::TOPOLOGY_APPLIED, "ok"),
            workers: Verdict::no(reasons::WORKERS_NOT_READY, "0/1"),
        };
        let first = healthy.to_k8s(Some(1), &[], earlier);
        let second = healthy.to_k8s(Some(2), &first, now());
        assert_eq!(second[0].last_transition_time, Time(earlier));
        assert_eq!(second[0].observed_generation, Some(2));
        let recovered = Conditions {
            workers: Verdict::yes(reasons::WORKERS_AVAILABLE, "ok"),
            ..healthy
        };
        let third = recovered.to_k8s(Some(2), &second, now());
        assert_eq!(third[2].last_transition_time, Time(now()));
        assert_eq!(third[3].status, "True");
        assert_eq!(third[1].last_transition_time, Time(earlier));
    }

    #[test]
    fn ages_come_from_the_head_timestamp_or_littles_law() {
        let t = now().as_second();
        assert_eq!(
            oldest_message_age(&queue("q", 0, None, None), now()),
            Some(0.0)
        );
        assert_eq!(
            oldest_message_age(&queue("q", 5, Some(t - 41), None), now()),
            Some(41.0)
        );
        assert_eq!(
            oldest_message_age(&queue("q", 500, None, Some(50.0)), now()),
            Some(10.0)
        );
        assert_eq!(
            oldest_message_age(&queue("q", 500, None, None), now()),
            None
        );
        assert_eq!(format_age(4.2), "4s");
        assert_eq!(format_age(192.0), "3m12s");
        assert_eq!(format_age(7500.0), "2h5m");
    }

    #[test]
    fn aggregates_sum_outputs_and_keep_the_autoscalers_desired_count() {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: p}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: a\n      sink: {stdout: {}}\n    - name: b\n      sink: {stdout: {}}\n",
        )
        .unwrap()
        .spec;
        let plan = plan("ns", "p", &spec).unwrap();
        let t = now().as_second();
        let queues = vec![
            queue("logstream.ns.p.a", 10, Some(t - 4), None),
            queue("logstream.ns.p.a.dlq", 2, None, None),
            queue("logstream.ns.p.b", 5, Some(t - 70), None),
            queue("logstream.ns.p.b.dlq", 1, None, None),
        ];
        let replicas = vec![
            (
                "a".to_owned(),
                WorkerReplicas {
                    wanted: 2,
                    ready: 2,
                },
            ),
            (
                "b".to_owned(),
                WorkerReplicas {
                    wanted: 1,
                    ready: 0,
                },
            ),
        ];
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
            broker: Verdict::yes(reasons::CONNECTED, "ok"),
            topology: Verdict::yes(reasons::TOPOLOGY_APPLIED, "ok"),
            workers: workers_verdict(&replicas),
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
        let replicas = vec![("a".to_owned(), WorkerReplicas::default())];
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
