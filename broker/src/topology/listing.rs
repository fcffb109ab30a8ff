//! What exists on a whole vhost, from one listing that many first applies share.
//!
//! A first apply must know which of its pipeline's objects exist (a passive declare of a
//! missing one costs a channel) and which of its queues are orphans. Listing them with a name
//! filter costs the broker as much as listing the whole vhost (RabbitMQ filters after
//! gathering every queue), so a thousand first applies on a shared vhost cost in proportion
//! to the square of its size. One listing of the vhost serves them all instead, provided it
//! began after each pipeline's previous apply ended: only a pipeline's own applies create its
//! objects, so such a listing holds every orphan it can have.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use logstream_api::topology::TopologyPlan;

use crate::management::{ManagementClient, ManagementError, QueueStats};

/// The exchanges and queues of one vhost, as listed from [`started`](Self::started) on.
/// Kept compact (names, and each queue's message count), as the operator keeps the last one:
/// 10,000 queues take about 0.6 MB.
#[derive(Debug)]
pub struct VhostListing {
    started: Instant,
    exchanges: BTreeSet<String>,
    /// Queue names and their messages (ready plus unacknowledged), by name.
    queues: BTreeMap<String, Option<u64>>,
}

impl VhostListing {
    /// Lists every exchange and queue of `vhost` (names, and the queues' message counts), in
    /// pages of 500.
    pub async fn read(management: &ManagementClient, vhost: &str) -> Result<Self, ManagementError> {
        let started = Instant::now();
        let exchanges = management.exchange_names(vhost).await?;
        let queues = management
            .queue_names(vhost)
            .await?
            .into_iter()
            .map(|q| (q.name, q.messages))
            .collect();
        Ok(Self {
            started,
            exchanges,
            queues,
        })
    }

    /// When the listing began: it shows every object that existed then and was not deleted
    /// while it ran.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The names of the queues listed, in order.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// What of `plan`'s pipeline the listing shows.
    pub(super) fn existing(&self, plan: &TopologyPlan) -> Existing {
        let prefix = plan.names.prefix();
        Existing {
            exchanges: plan
                .exchanges
                .iter()
                .filter(|e| self.exchanges.contains(&e.name))
                .map(|e| e.name.clone())
                .collect(),
            queues: self
                .queues
                .range(prefix.clone()..)
                .take_while(|(name, _)| name.starts_with(&prefix))
                .map(|(name, &messages)| QueueStats {
                    messages,
                    ..QueueStats::named(name)
                })
                .collect(),
        }
    }
}

/// What of a pipeline exists on the broker before a full apply, as the management API lists
/// it: a passive declare of a missing object costs a channel, which the broker closes.
pub(super) struct Existing {
    /// The plan's exchanges that exist.
    pub(super) exchanges: BTreeSet<String>,
    /// The queues whose names start with the pipeline's prefix.
    pub(super) queues: Vec<QueueStats>,
}

impl Existing {
    /// What of `plan`'s pipeline exists on `vhost`, through the management API (two
    /// requests, filtered to the pipeline's names); `None` when it cannot be read.
    pub(super) async fn list(
        management: &ManagementClient,
        vhost: &str,
        plan: &TopologyPlan,
    ) -> Option<Self> {
        let names: Vec<&str> = plan.exchanges.iter().map(|e| e.name.as_str()).collect();
        let exchanges = management.existing_exchanges(vhost, &names).await.ok()?;
        let queues = management
            .queues_with_prefix(vhost, &plan.names.prefix())
            .await
            .ok()?;
        Some(Self { exchanges, queues })
    }
}
