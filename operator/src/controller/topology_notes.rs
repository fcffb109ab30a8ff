//! Events for what a broker apply changed or had to keep, and the words for a broker
//! [`Report`] that the cleanup's Events share.

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
    if !report.retained.is_empty() {
        ctx.publish(
            pipeline,
            EventType::Warning,
            "QueuesRetained",
            "ApplyTopology",
            retained_note(report),
        )
        .await;
    }
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

/// Words for the queues an apply or delete kept because they hold messages.
pub fn retained_note(report: &Report) -> String {
    let kept = report
        .retained
        .iter()
        .map(|q| {
            let plural = if q.messages == 1 { "" } else { "s" };
            format!("{} ({} message{plural})", q.name, q.messages)
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("kept queues that still hold messages: {kept}")
}
