//! What an apply or a delete did to the broker.

use std::fmt;

use logstream_api::topology::BindingPlan;

#[cfg(doc)]
use super::BrokerAdmin;

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
