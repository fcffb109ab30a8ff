//! Applies a pipeline's topology plan to the broker on the reconciles' shared administrative
//! connection of its vhost ([`super::broker_connections`]), and reads the queue statistics
//! for the status.
//!
//! The first apply of a plan in this process (a new or changed pipeline, or the first pass
//! after a start) is the full one: learn which of the pipeline's exchanges and queues exist
//! from a listing of the whole vhost that began after the pipeline's previous apply ended
//! (shared by the first applies on that vhost, [`super::broker_connections`]), so that
//! nothing is checked by a failed passive declare; declare; list the bindings of the queues
//! that existed to remove stale ones; and empty orphaned queues. A recheck of a plan already
//! applied only declares everything again over AMQP, which repairs drift (a queue deleted by
//! hand comes back) and lists nothing. The figures of both come from the vhost's statistics
//! the autoscalers share (`SharedQueueStats`, one paged listing per vhost and refresh), so a
//! thousand pipelines rechecked every 30 s add no management API request.

use std::sync::Arc;

use logstream_api::{TopologyPlan, digest};
use logstream_broker::{
    BrokerEndpoint, BrokerError, BrokerSecret, ManagementClient, QueueStats, Report,
};

use super::{context::Context, failure::Failure};
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
    /// Queue statistics after the apply (the pipeline's, or the whole vhost's); `None` when
    /// the management API could not be read (the report then carries the warning).
    pub stats: Option<Arc<Vec<QueueStats>>>,
    /// The management API client of the kept connection, for the reconcile's next steps
    /// (a client of their own would set up TLS and a connection pool every reconcile).
    pub management: ManagementClient,
}

impl AppliedTopology {
    /// The conditions of a pipeline whose topology is in place, `workers` being WorkersReady.
    pub fn conditions(&self, workers: ConditionState) -> Conditions {
        Conditions::applied(&self.login, &self.summary, workers)
    }
}

/// Logs in with `credentials`, applies `plan` of pipeline `key` (`namespace/name`) and
/// reads the queue statistics. The failure tells a broker that refused or could not be
/// reached (BrokerReachable) from a topology that could not be applied after the login
/// worked (TopologyReady).
pub async fn apply_topology(
    ctx: &Context,
    key: &str,
    credentials: &BrokerSecret,
    plan: &TopologyPlan,
) -> Result<AppliedTopology, Failure> {
    let endpoint = credentials.endpoint.with_vhost(&plan.vhost);
    let login = format!("logged in to {} as user {}", endpoint, endpoint.username());
    // Debug of the endpoint is redacted; the digest of the URI tells credentials apart.
    let fingerprint = digest::hex(&format!(
        "{plan:?}|{:?}|{}",
        endpoint,
        endpoint.amqp_uri_with_password()
    ));
    let recheck = ctx.was_applied(key, &fingerprint);
    if recheck
        && ctx
            .admins
            .first_applies_waiting(&credentials.endpoint, &plan.vhost)
            > 0
        && let Some(management) = ctx.admins.management(&credentials.endpoint, &plan.vhost)
    {
        // New pipelines wait for this vhost's connection: they go first, and this plan's
        // drift is checked at the next recheck.
        let mut report = Report::default();
        let stats = read_stats(ctx, &endpoint, &management, &mut report).await;
        return Ok(AppliedTopology {
            summary: summary(plan, &report),
            login,
            report,
            stats,
            management,
        });
    }
    let mut admin = ctx
        .admins
        .lock(&credentials.endpoint, &plan.vhost, !recheck)
        .await
        .map_err(|e| Failure::topology(None, &plan.vhost, e))?;
    let applied = if recheck {
        admin.redeclare(plan).await
    } else {
        match admin.listing_after(ctx.last_applied(key)).await {
            Ok(listing) => admin.apply_listed(plan, &listing).await,
            // Without the listing, each object is checked on its own.
            Err(e) => admin.apply_and_list(plan).await.map(|(mut report, _)| {
                report
                    .warnings
                    .insert(0, format!("the vhost could not be listed: {e}"));
                report
            }),
        }
    };
    if applied.is_err() {
        ctx.remember_failed_apply(key);
    }
    let mut report = applied.map_err(|e| {
        // A connection lost halfway is a broker gone, not a topology problem.
        let reachable = !matches!(e, BrokerError::Unreachable { .. });
        Failure::topology(reachable.then_some(login.as_str()), &plan.vhost, e)
    })?;
    let management = admin.management().clone();
    drop(admin);
    ctx.remember_applied(key, fingerprint);
    // The vhost's statistics the autoscalers share, read without holding the connection
    // from the next reconcile.
    let stats = read_stats(ctx, &endpoint, &management, &mut report).await;
    Ok(AppliedTopology {
        summary: summary(plan, &report),
        login,
        report,
        stats,
        management,
    })
}

/// The vhost's statistics the autoscalers share; `None`, with a warning in `report`, when
/// they cannot be read.
async fn read_stats(
    ctx: &Context,
    endpoint: &BrokerEndpoint,
    management: &ManagementClient,
    report: &mut Report,
) -> Option<Arc<Vec<QueueStats>>> {
    match ctx.stats.latest_or_fetch(endpoint, management).await {
        Ok(stats) => Some(stats),
        Err(e) => {
            report
                .warnings
                .push(format!("queue statistics could not be read: {e}"));
            None
        }
    }
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
