//! `logstream status`: how each output of the pipelines on a vhost is doing, from one
//! management API request (`/api/queues/<vhost>`): ready and unacked messages, the oldest
//! message's age, retrying and dead-lettered messages, consumers, publish and ack rates.
//!
//! Queues are grouped by their names (`logstream.<ns>.<pipeline>.<output>[.retry.<i>|.dlq]`;
//! components never contain dots). With `--kubeconfig`, each output also shows its
//! LogPipeline's `Ready` condition and replicas from the cluster ([`crate::cluster`]).

use logstream_api::naming::{self, PREFIX};
use logstream_broker::{ManagementClient, QueueStats};
use serde::Serialize;

use crate::{Context, args::StatusArgs, error::CliError, table};

/// One output's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutputStatus {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pipeline.
    pub pipeline: String,
    /// Output.
    pub output: String,
    /// Messages ready in the main queue.
    pub ready: u64,
    /// Messages delivered to workers and not yet acknowledged.
    pub unacked: u64,
    /// Age of the oldest waiting message, seconds.
    pub oldest_age_seconds: Option<f64>,
    /// True when the age is estimated as backlog ÷ ack rate (the broker reported no head
    /// timestamp).
    pub age_estimated: bool,
    /// Messages waiting in the retry ladder.
    pub retrying: u64,
    /// Messages in the dead-letter queue (`None`: the DLQ does not exist).
    pub dead_lettered: Option<u64>,
    /// Consumers of the main queue (worker connections).
    pub consumers: u64,
    /// Messages published to the main queue per second.
    pub publish_rate: Option<f64>,
    /// Messages acknowledged from the main queue per second.
    pub ack_rate: Option<f64>,
    /// What the LogPipeline's status says, with `--kubeconfig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterView>,
}

/// Runs `status`.
pub async fn run(ctx: &Context, args: &StatusArgs) -> Result<(), CliError> {
    let (vhost, prefix, pipeline) = if args.pipeline.is_some() || ctx.broker.file.is_some() {
        let target = ctx.target(args.pipeline.as_deref())?;
        (target.vhost.clone(), target.names.prefix(), Some(target))
    } else if args.all_namespaces {
        (ctx.default_vhost(), format!("{PREFIX}."), None)
    } else {
        let namespace = ctx.namespace();
        (
            ctx.default_vhost(),
            format!("{PREFIX}.{}.", naming::component(&namespace)),
            None,
        )
    };
    let management = ManagementClient::new(ctx.endpoint(&vhost).management().clone());
    let queues = management.queues(&vhost).await?;
    let now = chrono::Utc::now().timestamp();
    let mut outputs = summarize(&queues, &prefix, now);
    if let Some(kubeconfig) = &args.kubeconfig {
        let namespace = if args.all_namespaces {
            None
        } else {
            Some(
                pipeline
                    .as_ref()
                    .map_or_else(|| ctx.namespace(), |t| t.namespace.clone()),
            )
        };
        let pipelines = crate::cluster::pipelines(kubeconfig, namespace.as_deref()).await?;
        crate::cluster::annotate(&mut outputs, &pipelines);
    }

    if outputs.is_empty() {
        if let Some(target) = pipeline {
            return Err(CliError::NotFound {
                kind: "pipeline",
                name: target.display_name(),
                vhost,
                hint: format!(
                    "no queue named {}* exists (is it deployed?)",
                    target.names.prefix()
                ),
            });
        }
        say!("no LogStream outputs with queues {prefix}* on vhost {vhost:?}");
        return Ok(());
    }
    if args.json {
        for output in &outputs {
            say!("{}", serde_json::json!(output));
        }
        return Ok(());
    }
    let mut headers = vec![
        "PIPELINE",
        "OUTPUT",
        "READY",
        "UNACKED",
        "OLDEST",
        "RETRYING",
        "DLQ",
        "CONSUMERS",
        "IN/S",
        "ACK/S",
    ];
    let with_cluster = args.kubeconfig.is_some();
    if with_cluster {
        headers.extend(["PIPELINE READY", "REPLICAS", "LAST SCALE"]);
    }
    let rows: Vec<Vec<String>> = outputs
        .iter()
        .map(|o| {
            let mut cells = row(o);
            if with_cluster {
                cells.extend(cluster_cells(o.cluster.as_ref()));
            }
            cells
        })
        .collect();
    say!("{}", table::render(&headers, &rows).trim_end());
    Ok(())
}

fn row(o: &OutputStatus) -> Vec<String> {
    let age = match o.oldest_age_seconds {
        None => "-".to_owned(),
        Some(age) if o.age_estimated => format!("~{}", human_age(age)),
        Some(age) => human_age(age),
    };
    let rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    vec![
        format!("{}/{}", o.namespace, o.pipeline),
        o.output.clone(),
        o.ready.to_string(),
        o.unacked.to_string(),
        age,
        o.retrying.to_string(),
        o.dead_lettered
            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
        o.consumers.to_string(),
        rate(o.publish_rate),
        rate(o.ack_rate),
    ]
}

fn cluster_cells(view: Option<&crate::cluster::ClusterView>) -> [String; 3] {
    let Some(view) = view else {
        return ["-".into(), "-".into(), "-".into()];
    };
    let count = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    [
        view.pipeline_ready.clone(),
        format!("{}/{}", count(view.replicas), count(view.desired_replicas)),
        view.last_scale_reason.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// What a LogStream queue name says about itself.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Main,
    Retry,
    DeadLetter,
}

/// Reads `logstream.<ns>.<pipeline>.<output>[.retry.<i>|.dlq]`.
fn parse_queue_name(name: &str) -> Option<(&str, &str, &str, Role)> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let parts: Vec<&str> = rest.split('.').collect();
    match parts.as_slice() {
        [ns, p, o] => Some((ns, p, o, Role::Main)),
        [ns, p, o, "dlq"] => Some((ns, p, o, Role::DeadLetter)),
        [ns, p, o, "retry", step] if step.parse::<usize>().is_ok() => Some((ns, p, o, Role::Retry)),
        _ => None,
    }
}

/// Groups the queues starting with `prefix` into outputs, sorted by pipeline and output.
/// `now` is the current time in seconds since the epoch.
pub fn summarize(queues: &[QueueStats], prefix: &str, now: i64) -> Vec<OutputStatus> {
    let mut outputs: Vec<OutputStatus> = Vec::new();
    for queue in queues.iter().filter(|q| q.name.starts_with(prefix)) {
        let Some((ns, pipeline, output, role)) = parse_queue_name(&queue.name) else {
            continue;
        };
        let index = match outputs
            .iter()
            .position(|o| o.namespace == ns && o.pipeline == pipeline && o.output == output)
        {
            Some(i) => i,
            None => {
                outputs.push(OutputStatus {
                    namespace: ns.to_owned(),
                    pipeline: pipeline.to_owned(),
                    output: output.to_owned(),
                    ..OutputStatus::default()
                });
                outputs.len() - 1
            }
        };
        let status = &mut outputs[index];
        match role {
            Role::Main => {
                status.ready = queue.messages_ready.unwrap_or(0);
                status.unacked = queue.messages_unacknowledged.unwrap_or(0);
                status.consumers = queue.consumers.unwrap_or(0);
                status.publish_rate = queue.publish_rate();
                status.ack_rate = queue.ack_rate();
                (status.oldest_age_seconds, status.age_estimated) = oldest_age(queue, now);
            }
            Role::Retry => status.retrying += queue.messages.unwrap_or(0),
            Role::DeadLetter => status.dead_lettered = Some(queue.messages.unwrap_or(0)),
        }
    }
    outputs.sort_by(|a, b| {
        (&a.namespace, &a.pipeline, &a.output).cmp(&(&b.namespace, &b.pipeline, &b.output))
    });
    outputs
}

/// The head message's age where the broker reports its timestamp, else backlog ÷ ack rate
/// (Little's law) when messages are being acknowledged, else unknown. An empty queue is 0.
fn oldest_age(queue: &QueueStats, now: i64) -> (Option<f64>, bool) {
    let ready = queue.messages_ready.unwrap_or(0);
    if ready == 0 {
        return (Some(0.0), false);
    }
    if let Some(head) = queue.head_message_timestamp {
        return (Some((now - head).max(0) as f64), false);
    }
    match queue.ack_rate() {
        Some(rate) if rate > 0.0 => (Some(ready as f64 / rate), true),
        _ => (None, false),
    }
}

/// `42s`, `3m05s`, `2h10m`.
pub fn human_age(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn queue(value: serde_json::Value) -> QueueStats {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn queues_are_grouped_into_outputs_with_their_ladder_and_dlq() {
        let queues = vec![
            queue(
                json!({"name": "logstream.games.app.security", "messages": 1300,
                "messages_ready": 1200, "messages_unacknowledged": 100, "consumers": 3,
                "head_message_timestamp": 1_000,
                "message_stats": {"publish_details": {"rate": 900.0}, "ack_details": {"rate": 850.5}}}),
            ),
            queue(json!({"name": "logstream.games.app.security.retry.0", "messages": 4})),
            queue(json!({"name": "logstream.games.app.security.retry.1", "messages": 2})),
            queue(json!({"name": "logstream.games.app.security.dlq", "messages": 7})),
            queue(
                json!({"name": "logstream.games.app.archive", "messages": 0, "messages_ready": 0}),
            ),
            queue(json!({"name": "logstream.other.app.x", "messages": 5})),
            queue(json!({"name": "unrelated", "messages": 5})),
        ];
        let outputs = summarize(&queues, "logstream.games.", 1_042);
        assert_eq!(outputs.len(), 2);
        let archive = &outputs[0];
        assert_eq!(archive.output, "archive");
        assert_eq!(archive.dead_lettered, None);
        assert_eq!(archive.oldest_age_seconds, Some(0.0));
        let security = &outputs[1];
        assert_eq!(
            *security,
            OutputStatus {
                namespace: "games".into(),
                pipeline: "app".into(),
                output: "security".into(),
                ready: 1200,
                unacked: 100,
                oldest_age_seconds: Some(42.0),
                age_estimated: false,
                retrying: 6,
                dead_lettered: Some(7),
                consumers: 3,
                publish_rate: Some(900.0),
                ack_rate: Some(850.5),
                cluster: None,
            }
        );
        assert_eq!(
            row(security),
            [
                "games/app",
                "security",
                "1200",
                "100",
                "42s",
                "6",
                "7",
                "3",
                "900.0",
                "850.5"
            ]
        );
        assert_eq!(summarize(&queues, "logstream.", 0).len(), 3);
    }

    #[test]
    fn without_a_head_timestamp_the_age_is_estimated_from_the_ack_rate() {
        let q = queue(json!({"name": "logstream.n.p.o", "messages_ready": 500,
            "message_stats": {"ack_details": {"rate": 50.0}}}));
        assert_eq!(oldest_age(&q, 0), (Some(10.0), true));
        let stalled = queue(json!({"name": "logstream.n.p.o", "messages_ready": 500}));
        assert_eq!(oldest_age(&stalled, 0), (None, false));
        let out = &summarize(&[q], "logstream.", 0)[0];
        assert_eq!(row(out)[4], "~10s");
    }

    #[test]
    fn queue_names_are_read_by_their_components() {
        assert_eq!(
            parse_queue_name("logstream.ns.p.o.retry.12"),
            Some(("ns", "p", "o", Role::Retry))
        );
        assert_eq!(
            parse_queue_name("logstream.ns.p.dlq"),
            Some(("ns", "p", "dlq", Role::Main))
        );
        assert_eq!(parse_queue_name("logstream.ns.p.o.retry.x"), None);
        assert_eq!(parse_queue_name("logstreamx.ns.p.o"), None);
    }

    #[test]
    fn ages_read_like_durations() {
        assert_eq!(human_age(4.2), "4s");
        assert_eq!(human_age(185.0), "3m05s");
        assert_eq!(human_age(7_800.0), "2h10m");
    }
}
