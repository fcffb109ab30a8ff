//! `logstream status`: how each output of the pipelines on a vhost is doing, from one
//! management API request (`/api/queues/<vhost>`): ready and unacked messages, the oldest
//! message's age, retrying and dead-lettered messages, consumers, the sink as the queue shows
//! it (down when every worker has paused, holding its deliveries; where a quorum queue has
//! consumers, a second request, `/api/consumers/<vhost>`, tells paused workers the queue still
//! counts), publish and ack rates.
//!
//! Queues are grouped by their names (`logstream.<ns>.<pipeline>.<output>[.retry.<i>|.dlq]`;
//! components never contain dots). With `--kubeconfig`, each output also shows its
//! LogPipeline's `Ready` condition and replicas from the cluster ([`crate::cluster`]).

use jiff::Timestamp;
use logstream_api::naming::{self, PREFIX};
use logstream_broker::{ManagementClient, OutputQueues, OutputReading, QueueStats};
use serde_json::{Value, json};

use crate::{Context, args::StatusArgs, error::CliError, table};

/// One row of `logstream status`: an output and its figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusRow {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pipeline.
    pub pipeline: String,
    /// Output.
    pub output: String,
    /// Its queues' figures.
    pub reading: OutputReading,
    /// What the LogPipeline's status says, with `--kubeconfig`.
    pub cluster: Option<crate::cluster::ClusterView>,
}

impl StatusRow {
    /// The row as `--json` prints it (the keys docs/cli.md lists).
    pub fn to_json(&self) -> Value {
        let r = &self.reading;
        let mut row = json!({
            "namespace": self.namespace,
            "pipeline": self.pipeline,
            "output": self.output,
            "ready": r.ready.unwrap_or(0),
            "unacked": r.unacked.unwrap_or(0),
            "oldest_age_seconds": r.oldest_age.map(|a| a.seconds),
            "age_estimated": r.oldest_age.is_some_and(|a| a.estimated),
            "retrying": r.retrying.unwrap_or(0),
            "dead_lettered": r.dead_lettered,
            "consumers": r.consumers.unwrap_or(0),
            "sink": r.sink(),
            "publish_rate": r.publish_rate,
            "ack_rate": r.ack_rate,
        });
        if let Some(cluster) = &self.cluster {
            row["cluster"] = json!(cluster);
        }
        row
    }
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
    let mut queues = management.queues(&vhost).await?;
    // Whether the workers of a quorum queue paused (the queue still counts them).
    management.read_consuming(&vhost, &mut queues).await?;
    let mut outputs = summarize(&queues, &prefix, Timestamp::now());
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
            say!("{}", output.to_json());
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
        "SINK",
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

fn row(o: &StatusRow) -> Vec<String> {
    let r = &o.reading;
    let count = |n: Option<u64>| n.unwrap_or(0).to_string();
    let rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
    vec![
        format!("{}/{}", o.namespace, o.pipeline),
        o.output.clone(),
        count(r.ready),
        count(r.unacked),
        r.oldest_age
            .map_or_else(|| "-".to_owned(), |age| age.to_string()),
        count(r.retrying),
        r.dead_lettered
            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
        count(r.consumers),
        r.sink()
            .map_or_else(|| "-".to_owned(), |sink| sink.to_string()),
        rate(r.publish_rate),
        rate(r.ack_rate),
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

/// Groups the queues starting with `prefix` into outputs, sorted by pipeline and output, and
/// reads each at `now`.
pub fn summarize(queues: &[QueueStats], prefix: &str, now: Timestamp) -> Vec<StatusRow> {
    // Each output's queues, by (namespace, pipeline, output): sorted, and unique.
    let mut found: std::collections::BTreeMap<(&str, &str, &str), OutputQueues> =
        std::collections::BTreeMap::new();
    for queue in queues.iter().filter(|q| q.name.starts_with(prefix)) {
        let Some((ns, pipeline, output, role)) = parse_queue_name(&queue.name) else {
            continue;
        };
        let names = found.entry((ns, pipeline, output)).or_default();
        match role {
            Role::Main => queue.name.clone_into(&mut names.main),
            Role::Retry => names.retries.push(queue.name.clone()),
            Role::DeadLetter => queue.name.clone_into(&mut names.dead_letter),
        }
    }
    found
        .into_iter()
        .map(|((namespace, pipeline, output), names)| StatusRow {
            namespace: namespace.to_owned(),
            pipeline: pipeline.to_owned(),
            output: output.to_owned(),
            reading: OutputReading::read(queues, &names, now),
            cluster: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use logstream_broker::Age;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

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
        let outputs = summarize(&queues, "logstream.games.", at(1_042));
        assert_eq!(outputs.len(), 2);
        let archive = &outputs[0];
        assert_eq!(archive.output, "archive");
        assert_eq!(archive.reading.dead_lettered, None);
        assert_eq!(archive.reading.oldest_age, Some(Age::measured(0.0)));
        let security = &outputs[1];
        assert_eq!(
            security.to_json(),
            json!({
                "namespace": "games",
                "pipeline": "app",
                "output": "security",
                "ready": 1200,
                "unacked": 100,
                "oldest_age_seconds": 42.0,
                "age_estimated": false,
                "retrying": 6,
                "dead_lettered": 7,
                "consumers": 3,
                "sink": "up",
                "publish_rate": 900.0,
                "ack_rate": 850.5,
            })
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
                "up",
                "900.0",
                "850.5"
            ]
        );
        assert_eq!(summarize(&queues, "logstream.", at(0)).len(), 3);
    }

    #[test]
    fn without_a_head_timestamp_the_age_is_estimated_from_the_ack_rate() {
        let q = queue(json!({"name": "logstream.n.p.o", "messages_ready": 500,
            "message_stats": {"ack_details": {"rate": 50.0}}}));
        let out = &summarize(&[q], "logstream.", at(0))[0];
        assert_eq!(row(out)[4], "~10s");
        assert_eq!(out.to_json()["age_estimated"], true);
        let stalled = queue(json!({"name": "logstream.n.p.o", "messages_ready": 500}));
        let out = &summarize(&[stalled], "logstream.", at(0))[0];
        assert_eq!(row(out)[4], "-");
    }

    #[test]
    fn the_sink_is_down_when_no_worker_consumes_yet_deliveries_are_held() {
        let paused = queue(json!({"name": "logstream.n.p.o", "messages_ready": 900,
            "messages_unacknowledged": 200, "consumers": 0}));
        let out = &summarize(&[paused], "logstream.", at(0))[0];
        assert_eq!(row(out)[8], "down");
        assert_eq!(out.to_json()["sink"], "down");
        let idle = queue(json!({"name": "logstream.n.p.o", "messages_ready": 0,
            "messages_unacknowledged": 0, "consumers": 0}));
        let out = &summarize(&[idle], "logstream.", at(0))[0];
        assert_eq!(row(out)[8], "-", "no worker: nothing to say");
        assert_eq!(out.to_json()["sink"], Value::Null);
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
}
