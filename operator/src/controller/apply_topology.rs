//! Applies a pipeline's topology plan to the broker: log in to its vhost, declare what is
//! missing, and list the vhost's queue statistics for the status, on one administrative
//! connection closed at the end.

use logstream_api::TopologyPlan;
use logstream_broker::{BrokerAdmin, BrokerError, BrokerSecret, QueueStats, Report};

use super::failure::Failure;
use crate::status::{ConditionState, Conditions};

/// A topology in place on the broker.
#[derive(Clone, Debug)]
pub struct AppliedTopology {
    /// Where the operator logged in, as whom (redacted): the BrokerReachable message.
    pub login: String,
    /// What is in place, and what could not be checked: the TopologyReady message.
    pub summary: String,
    /// What the apply changed or kept.
    pub report: Report,
    /// The vhost's queue statistics after the apply; `None` when the management API could
    /// not be read (the report then carries the warning).
    pub stats: Option<Vec<QueueStats>>,
}

impl AppliedTopology {
    /// The conditions of a pipeline whose topology is in place, `workers` being WorkersReady.
    pub fn conditions(&self, workers: ConditionState) -> Conditions {
        Conditions::applied(&self.login, &self.summary, workers)
    }
}

/// Logs in with `credentials`, applies `plan` and reads the vhost's queue statistics. The
/// failure tells a broker that refused or could not be reached (BrokerReachable) from a
/// topology that could not be applied after the login worked (TopologyReady).
pub async fn apply_topology(
    credentials: &BrokerSecret,
    plan: &TopologyPlan,
) -> Result<AppliedTopology, Failure> {
    let admin = BrokerAdmin::connect(&credentials.endpoint, &plan.vhost)
        .await
        .map_err(|e| Failure::topology(None, &plan.vhost, e))?;
    let login = format!(
        "logged in to {} as user {}",
        admin.endpoint(),
        admin.endpoint().username()
    );
    let applied = admin.apply_and_list(plan).await;
    admin.close().await;
    let (report, stats) = applied.map_err(|e| {
        // A connection lost halfway is a broker gone, not a topology problem.
        let reachable = !matches!(e, BrokerError::Unreachable { .. });
        Failure::topology(reachable.then_some(login.as_str()), &plan.vhost, e)
    })?;
    Ok(AppliedTopology {
        summary: summary(plan, &report),
        login,
        report,
        stats,
    })
}

fn summary(plan: &TopologyPlan, report: &Report) -> String {
    let mut message = format!(
        "exchange {}, {} queues and {} bindings are in place on vhost {}",
        plan.exchange().name,
        plan.queues.len(),
        plan.bindings.len(),
        plan.vhost
    );
    for warning in &report.warnings {
        message.push_str("; ");
        message.push_str(warning);
    }
    message
}
