//! Applying a [`TopologyPlan`] to a broker, idempotently, and removing it again.
//!
//! Declarations go over AMQP, so the broker itself checks that an existing object matches the
//! plan; a mismatch closes only the channel, which is replaced, and becomes a typed
//! [`TopologyConflict`] instead of a crash loop. The management API lists what exists (to tell
//! created from unchanged, and to find stale bindings and orphaned queues); without it the
//! declarations still happen and the report says what could not be checked.

use std::{collections::BTreeSet, fmt};

use lapin::{
    ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use logstream_api::{
    pipeline::{DeletionPolicy, ExchangeType},
    topology::{ArgValue, Arguments, BindingPlan, TopologyPlan},
};
use serde_json::Value;

mod listing;

use listing::Existing;
pub use listing::VhostListing;

use crate::{
    connection::{BrokerConnection, Purpose},
    endpoint::BrokerEndpoint,
    error::{self, BrokerError},
    management::{BindingInfo, ManagementClient, QueueStats},
};

/// One change [`BrokerAdmin::apply`] or [`BrokerAdmin::delete`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new exchange.
    ExchangeCreated(String),
    /// A new queue.
    QueueCreated(String),
    /// A new binding.
    BindingCreated(BindingPlan),
    /// A binding the plan no longer has.
    BindingRemoved(BindingPlan),
    /// A queue deleted (orphaned and empty, or by the deletion policy).
    QueueDeleted(String),
    /// An exchange deleted by the deletion policy.
    ExchangeDeleted(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExchangeCreated(n) => write!(f, "created exchange {n}"),
            Self::QueueCreated(n) => write!(f, "created queue {n}"),
            Self::BindingCreated(b) => write!(
                f,
                "bound {} to {} with {:?}",
                b.queue, b.exchange, b.routing_key
            ),
            Self::BindingRemoved(b) => write!(
                f,
                "unbound {} from {} ({:?})",
                b.queue, b.exchange, b.routing_key
            ),
            Self::QueueDeleted(n) => write!(f, "deleted queue {n}"),
            Self::ExchangeDeleted(n) => write!(f, "deleted exchange {n}"),
        }
    }
}

/// A queue LogStream no longer needs but kept because it holds messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedQueue {
    /// Queue name.
    pub name: String,
    /// Messages in it when it was checked.
    pub messages: u64,
}

/// What one apply or delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Changes, in the order they were made.
    pub changes: Vec<Change>,
    /// Queues kept because they hold messages.
    pub retained: Vec<RetainedQueue>,
    /// What could not be checked (e.g. the management API was unreachable).
    pub warnings: Vec<String>,
}

impl Report {
    /// True when nothing changed on the broker.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// An administrative AMQP connection to one vhost, plus its management API.
pub struct BrokerAdmin {
    connection: BrokerConnection,
    management: ManagementClient,
}

impl fmt::Debug for BrokerAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerAdmin({})", self.endpoint())
    }
}

/// Connection name of the operator's administrative connections in the management UI.
pub const ADMIN_CONNECTION_NAME: &str = "logstream-operator";

impl BrokerAdmin {
    /// Connects to `vhost` of the broker at `endpoint`.
    pub async fn connect(endpoint: &BrokerEndpoint, vhost: &str) -> Result<Self, BrokerError> {
        let endpoint = endpoint.with_vhost(vhost);
        let connection =
            BrokerConnection::open(&endpoint, ADMIN_CONNECTION_NAME, Purpose::Admin).await?;
        let management = ManagementClient::new(endpoint.management().clone());
        Ok(Self {
            connection,
            management,
        })
    }

    /// The management API of this broker.
    pub fn management(&self) -> &ManagementClient {
        &self.management
    }

    /// The AMQP connection.
    pub fn connection(&self) -> &BrokerConnection {
        &self.connection
    }

    /// The endpoint (redacted when displayed).
    pub fn endpoint(&self) -> &BrokerEndpoint {
        self.connection.endpoint()
    }

    /// The vhost this connection administers.
    pub fn vhost(&self) -> &str {
        self.connection.vhost()
    }

    /// True while the AMQP connection is open.
    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.connection.close().await;
    }

    async fn channel(&self) -> Result<lapin::Channel, BrokerError> {
        self.connection.declaration_channel().await
    }

    fn amqp_error(&self, action: &'static str, object: &str, e: &lapin::Error) -> BrokerError {
        self.connection.error(action, object, e)
    }

    /// Messages and consumers of `queue` by passive declare; `None` when it does not exist.
    pub async fn queue_depth(
        &self,
        queue: &str,
    ) -> Result<Option<crate::connection::QueueDepth>, BrokerError> {
        self.connection.queue_depth(queue).await
    }

    async fn exchange_exists(&self, name: &str) -> Result<bool, BrokerError> {
        self.connection.exchange_exists(name).await
    }

    /// Declares every exchange, queue and binding of `plan` (a no-op for what already matches),
    /// removes bindings to the pipeline's queues that the plan no longer has, and deletes the
    /// pipeline's orphaned queues when they are empty (keeping and reporting the others).
    ///
    /// Fails with [`BrokerError::Conflict`] on the first object whose immutable arguments
    /// differ; the connection stays usable.
    pub async fn apply(&self, plan: &TopologyPlan) -> Result<Report, BrokerError> {
        self.apply_and_list(plan).await.map(|(report, _)| report)
    }

    /// [`apply`](Self::apply), also returning the pipeline's queues as the management API
    /// listed them before the declares (without the orphans deleted here, and without the
    /// queues created here), for the status figures: the listing the orphan check needs
    /// anyway. `None` when it could not be had (the report then carries the warning).
    pub async fn apply_and_list(
        &self,
        plan: &TopologyPlan,
    ) -> Result<(Report, Option<Vec<QueueStats>>), BrokerError> {
        // The pipeline's own objects, two filtered requests; `None` when they cannot be read
        // (then each object is checked by passive declare).
        let before = Existing::list(&self.management, self.vhost(), plan).await;
        self.apply_over(plan, before).await
    }

    /// [`apply`](Self::apply), learning what exists from `listing` (of this vhost, begun
    /// after the pipeline's previous apply ended) instead of listing the pipeline's objects.
    pub async fn apply_listed(
        &self,
        plan: &TopologyPlan,
        listing: &VhostListing,
    ) -> Result<Report, BrokerError> {
        self.apply_over(plan, Some(listing.existing(plan)))
            .await
            .map(|(report, _)| report)
    }

    /// Applies `plan` over `before`, what of it existed (`None`: checked object by object).
    async fn apply_over(
        &self,
        plan: &TopologyPlan,
        before: Option<Existing>,
    ) -> Result<(Report, Option<Vec<QueueStats>>), BrokerError> {
        self.connection.renew_declaration_channel().await;
        let mut report = Report::default();
        let created = self
            .declare_objects(plan, before.as_ref(), &mut report)
            .await?;

        // A queue created just now has no bindings to list.
        let existing = match self
            .bindings_of(
                plan.bindings
                    .iter()
                    .map(|b| &b.queue)
                    .filter(|q| !created.contains(*q)),
            )
            .await
        {
            Ok(listed) => Some(owned_bindings(plan, listed)),
            Err(e) => {
                report.warnings.push(format!(
                    "bindings were declared but stale ones could not be looked for: {e}"
                ));
                None
            }
        };
        for binding in &plan.bindings {
            let known = existing.as_ref().is_some_and(|set| set.contains(binding));
            if known {
                continue;
            }
            self.bind(binding).await?;
            if existing.is_some() {
                report.changes.push(Change::BindingCreated(binding.clone()));
            }
        }
        if let Some(existing) = &existing {
            let wanted: BTreeSet<&BindingPlan> = plan.bindings.iter().collect();
            for stale in existing.iter().filter(|b| !wanted.contains(b)) {
                self.unbind(stale).await?;
                report.changes.push(Change::BindingRemoved(stale.clone()));
            }
        }

        // The declares create no orphans, so the listing from before them finds every one;
        // a queue they created is missing from it and has no figures until the next listing
        // (the broker has none to give in its first seconds anyway).
        let listed = before.map(|before| before.queues);
        let queues = self.remove_orphans(plan, listed, &mut report).await?;
        Ok((report, queues))
    }

    /// Declares `plan` again without listing anything through the management API: for a
    /// plan already applied, to repair drift (a queue, exchange or binding deleted by hand
    /// comes back; immutable arguments are checked again by the broker). Bindings are
    /// declared again as they are idempotent; a binding of a queue that had to be created is
    /// reported as created, the others cannot be told apart without a listing.
    pub async fn redeclare(&self, plan: &TopologyPlan) -> Result<Report, BrokerError> {
        self.connection.renew_declaration_channel().await;
        let mut report = Report::default();
        let created = self.declare_objects(plan, None, &mut report).await?;
        for binding in &plan.bindings {
            self.bind(binding).await?;
            if created.contains(&binding.queue) {
                report.changes.push(Change::BindingCreated(binding.clone()));
            }
        }
        Ok(report)
    }

    /// Declares every exchange and queue of `plan`, reporting what was created; returns the
    /// names of the queues created. What existed before comes from `listed` when there is a
    /// listing, else from a passive declare per object.
    async fn declare_objects(
        &self,
        plan: &TopologyPlan,
        listed: Option<&Existing>,
        report: &mut Report,
    ) -> Result<BTreeSet<String>, BrokerError> {
        for exchange in &plan.exchanges {
            let existed = match listed {
                Some(listed) => listed.exchanges.contains(&exchange.name),
                None => self.exchange_exists(&exchange.name).await?,
            };
            let ch = self.channel().await?;
            ch.exchange_declare(
                exchange.name.as_str().into(),
                exchange_kind(exchange.kind),
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.amqp_error("declare exchange", &exchange.name, &e))?;
            if !existed {
                report
                    .changes
                    .push(Change::ExchangeCreated(exchange.name.clone()));
            }
        }

        let mut created = BTreeSet::new();
        for queue in &plan.queues {
            let existed = match listed {
                Some(listed) => listed.queues.iter().any(|q| q.name == queue.name),
                None => self.queue_depth(&queue.name).await?.is_some(),
            };
            let ch = self.channel().await?;
            ch.queue_declare(
                queue.name.as_str().into(),
                QueueDeclareOptions::durable(),
                field_table(&queue.arguments),
            )
            .await
            .map_err(|e| self.amqp_error("declare queue", &queue.name, &e))?;
            if !existed {
                report
                    .changes
                    .push(Change::QueueCreated(queue.name.clone()));
                created.insert(queue.name.clone());
            }
        }
        Ok(created)
    }

    /// The bindings of `queues` (each listed once), through the management API: one small
    /// request per queue instead of every binding of a shared vhost.
    async fn bindings_of<'a>(
        &self,
        queues: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<BindingInfo>, crate::management::ManagementError> {
        let queues: BTreeSet<&String> = queues.into_iter().collect();
        let mut all = Vec::new();
        for queue in queues {
            all.extend(self.management.queue_bindings(self.vhost(), queue).await?);
        }
        Ok(all)
    }

    async fn bind(&self, binding: &BindingPlan) -> Result<(), BrokerError> {
        let ch = self.channel().await?;
        ch.queue_bind(
            binding.queue.as_str().into(),
            binding.exchange.as_str().into(),
            binding.routing_key.as_str().into(),
            QueueBindOptions::default(),
            field_table(&binding.arguments),
        )
        .await
        .map_err(|e| self.amqp_error("bind queue", &binding.queue, &e))
    }

    async fn unbind(&self, binding: &BindingPlan) -> Result<(), BrokerError> {
        let ch = self.channel().await?;
        ch.queue_unbind(
            binding.queue.as_str().into(),
            binding.exchange.as_str().into(),
            binding.routing_key.as_str().into(),
            field_table(&binding.arguments),
        )
        .await
        .map_err(|e| self.amqp_error("unbind queue", &binding.queue, &e))
    }

    /// Deletes the pipeline's queues that are not in the plan (outputs or retry steps that
    /// were removed) when they are empty; keeps the others and reports them. Returns the
    /// pipeline's queues that remain, as `listed` (still current) or as listed here.
    async fn remove_orphans(
        &self,
        plan: &TopologyPlan,
        listed: Option<Vec<QueueStats>>,
        report: &mut Report,
    ) -> Result<Option<Vec<QueueStats>>, BrokerError> {
        let listing = match listed {
            Some(queues) => Ok(queues),
            None => {
                self.management
                    .queues_with_prefix(self.vhost(), &plan.names.prefix())
                    .await
            }
        };
        let queues = match listing {
            Ok(q) => q,
            Err(e) => {
                report
                    .warnings
                    .push(format!("orphaned queues could not be looked for: {e}"));
                return Ok(None);
            }
        };
        let mut remaining = Vec::with_capacity(queues.len());
        let mut retained = Vec::new();
        for queue in queues {
            if plan.has_queue(&queue.name) {
                remaining.push(queue);
                continue;
            }
            let orphan = queue;
            match self.delete_queue(&orphan.name, true).await {
                Ok(Some(_)) => report
                    .changes
                    .push(Change::QueueDeleted(orphan.name.clone())),
                Ok(None) => {}
                // The broker refuses to delete a queue that holds messages.
                Err(BrokerError::Amqp { .. }) => {
                    report.retained.push(RetainedQueue {
                        name: orphan.name.clone(),
                        messages: orphan.messages.unwrap_or_default(),
                    });
                    retained.push(orphan.name.clone());
                    remaining.push(orphan);
                }
                Err(e) => {
                    report.warnings.push(format!(
                        "orphaned queue {} could not be deleted: {e}",
                        orphan.name
                    ));
                    remaining.push(orphan);
                }
            }
        }
        // A kept queue stops receiving: its bindings are the plan's no more.
        match self.bindings_of(&retained).await {
            Ok(listed) => {
                for stale in owned_bindings(plan, listed) {
                    self.unbind(&stale).await?;
                    report.changes.push(Change::BindingRemoved(stale));
                }
            }
            Err(e) => report.warnings.push(format!(
                "bindings of kept orphaned queues could not be looked for: {e}"
            )),
        }
        Ok(Some(remaining))
    }

    /// Deletes `queue`; with `if_empty`, the broker refuses when it holds messages. `Ok(None)`
    /// when it did not exist.
    async fn delete_queue(&self, queue: &str, if_empty: bool) -> Result<Option<u64>, BrokerError> {
        if self.queue_depth(queue).await?.is_none() {
            return Ok(None);
        }
        let ch = self.channel().await?;
        ch.queue_delete(
            queue.into(),
            QueueDeleteOptions {
                if_empty,
                ..QueueDeleteOptions::default()
            },
        )
        .await
        .map(|deleted| Some(u64::from(deleted)))
        .map_err(|e| self.amqp_error("delete queue", queue, &e))
    }

    /// Removes the pipeline's broker objects as `policy` says: `Retain` touches nothing,
    /// `DeleteIfEmpty` deletes the queues that hold no message (reporting the others) and
    /// then the exchanges no queue is bound to any more, `Delete` deletes every queue with
    /// its messages and then the unused exchanges. Exchanges still used by someone else (a
    /// shared, user-named exchange) are kept.
    pub async fn delete(
        &self,
        plan: &TopologyPlan,
        policy: DeletionPolicy,
    ) -> Result<Report, BrokerError> {
        let mut report = Report::default();
        if policy == DeletionPolicy::Retain {
            return Ok(report);
        }
        self.connection.renew_declaration_channel().await;
        let if_empty = policy == DeletionPolicy::DeleteIfEmpty;
        let prefix = plan.names.prefix();
        let mut queues: BTreeSet<String> = plan.queues.iter().map(|q| q.name.clone()).collect();
        match self
            .management
            .queues_with_prefix(self.vhost(), &prefix)
            .await
        {
            Ok(all) => queues.extend(all.into_iter().map(|q| q.name)),
            Err(e) => report
                .warnings
                .push(format!("orphaned queues could not be looked for: {e}")),
        }
        for queue in &queues {
            match self.delete_queue(queue, if_empty).await {
                Ok(Some(_)) => report.changes.push(Change::QueueDeleted(queue.clone())),
                Ok(None) => {}
                Err(BrokerError::Amqp { .. }) if if_empty => {
                    let messages = self.queue_depth(queue).await?.map_or(0, |d| d.ready);
                    report.retained.push(RetainedQueue {
                        name: queue.clone(),
                        messages,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        // The dead-letter exchange first: the pipeline's exchange may be shared.
        for exchange in plan.exchanges.iter().rev() {
            if !self.exchange_exists(&exchange.name).await? {
                continue;
            }
            let ch = self.channel().await?;
            let deleted = ch
                .exchange_delete(
                    exchange.name.as_str().into(),
                    ExchangeDeleteOptions {
                        if_unused: true,
                        ..ExchangeDeleteOptions::default()
                    },
                )
                .await;
            match deleted {
                Ok(()) => report
                    .changes
                    .push(Change::ExchangeDeleted(exchange.name.clone())),
                // In use: bound to a retained queue or to another pipeline's queues.
                Err(e) if error::is_precondition_failed(&e) => {}
                Err(e) => return Err(self.amqp_error("delete exchange", &exchange.name, &e)),
            }
        }
        Ok(report)
    }
}

fn exchange_kind(kind: ExchangeType) -> ExchangeKind {
    match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
        ExchangeType::Headers => ExchangeKind::Headers,
    }
}

/// Plan arguments as an AMQP table.
pub fn field_table(arguments: &Arguments) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            ArgValue::Int(n) => AMQPValue::LongLongInt(*n),
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        };
        table.insert(ShortString::from(key.as_str()), value);
    }
    table
}

/// The bindings that lead to the pipeline's queues (planned or orphaned) from a named
/// exchange, as plan bindings. LogStream owns these queues and so all of their bindings.
fn owned_bindings(plan: &TopologyPlan, all: Vec<BindingInfo>) -> BTreeSet<BindingPlan> {
    let prefix = plan.names.prefix();
    all.into_iter()
        .filter(|b| {
            b.destination_type == "queue"
                && !b.source.is_empty()
                && b.destination.starts_with(&prefix)
        })
        .map(|b| BindingPlan {
            exchange: b.source,
            queue: b.destination,
            routing_key: b.routing_key,
            arguments: b
                .arguments
                .into_iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => ArgValue::Str(s),
                        Value::Number(n) => ArgValue::Int(n.as_i64()?),
                        _ => return None,
                    };
                    Some((k, v))
                })
                .collect(),
        })
        .collect()
}
