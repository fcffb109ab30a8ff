//! Events for what a broker apply changed or had to keep. The cleanup's Events say what a
//! delete did with the same words ([`changes_note`], [`publish_retained`]).

use kube::runtime::events::EventType;
use logstream_api::LogPipeline;
use logstream_broker::Report;
use tracing::info;

use super::context::Context;

/// Publishes a Normal `TopologyChanged` Event listing what the apply changed, and a Warning
/// `QueuesRetained` Event for queues it kept because they hold messages; nothing when the
/// broker already matched the plan.
pub async fn publish(ctx: &Context, pipeline: &LogPipeline, report: &Report) {
    if !report.changes.is_empty() {
        let note = changes_note(report);
        info!(changes = %note, "topology changed");
        ctx.publish(
            pipeline,
            EventType::Normal,
            "TopologyChanged",
            "ApplyTopology",
            note,
        )
        .await;
    }
    publish_retained(ctx, pipeline, report, "ApplyTopology", "").await;
}

/// Publishes a Warning `QueuesRetained` Event naming the queues `report` kept because they
/// hold messages (nothing when it kept none), its note starting with `context`, as Event
/// `action`.
pub async fn publish_retained(
    ctx: &Context,
    pipeline: &LogPipeline,
    report: &Report,
    action: &str,
    context: &str,
) {
    if report.retained.is_empty() {
        return;
    }
    let kept = report
        .retained
        .iter()
        .map(|q| {
            let plural = if q.messages == 1 { "" } else { "s" };
            format!("{} ({} message{plural})", q.name, q.messages)
        })
        .collect::<Vec<_>>()
        .join(", ");
    ctx.publish(
        pipeline,
        EventType::Warning,
        "QueuesRetained",
        action,
        format!("{context}kept queues that still hold messages: {kept}"),
    )
    .await;
}

/// Every change of `report`, in order, separated by `; ` (empty when nothing changed).
pub fn changes_note(report: &Report) -> String {
    report
        .changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
