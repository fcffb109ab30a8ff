//! What can go wrong between LogStream and the broker, in words a person can act on.

use super::{endpoint::EndpointError, management::ManagementError};

/// An existing exchange or queue declared with different immutable arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{object_kind} {name} already exists with a different {argument} ({detail}); RabbitMQ cannot change it in place: delete the {object_kind} (after draining it) or restore the previous setting"
)]
pub struct TopologyConflict {
    /// `queue` or `exchange`.
    pub object_kind: String,
    /// Name of the object.
    pub name: String,
    /// The argument that differs, e.g. `x-max-priority` (or `type`, `durable`).
    pub argument: String,
    /// The broker's words about the two values.
    pub detail: String,
}

impl TopologyConflict {
    /// Reads RabbitMQ's `PRECONDITION_FAILED - inequivalent arg '<arg>' for <kind> '<name>' in
    /// vhost '<vhost>': <detail>` reply text.
    pub fn from_reply_text(text: &str) -> Option<Self> {
        let rest = text.split_once("inequivalent arg '")?.1;
        let (argument, rest) = rest.split_once('\'')?;
        let rest = rest.trim_start().strip_prefix("for ")?;
        let (object_kind, rest) = rest.split_once(" '")?;
        let (name, rest) = rest.split_once('\'')?;
        let detail = rest.split_once("': ").map_or("", |(_, d)| d).trim();
        Some(Self {
            object_kind: object_kind.trim().to_owned(),
            name: name.to_owned(),
            argument: argument.to_owned(),
            detail: detail.to_owned(),
        })
    }
}

/// Failures of broker administration.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The Secret's coordinates do not parse.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The broker refused the user name or password.
    #[error("broker {endpoint} refused the credentials of user {user:?}: {reason}")]
    AccessRefused {
        /// Redacted endpoint.
        endpoint: String,
        /// The user name.
        user: String,
        /// The broker's words.
        reason: String,
    },
    /// The virtual host does not exist or the user may not use it.
    #[error(
        "broker {endpoint}: virtual host {vhost:?} does not exist or user {user:?} has no access to it ({reason})"
    )]
    VhostNotAllowed {
        /// Redacted endpoint.
        endpoint: String,
        /// The vhost.
        vhost: String,
        /// The user name.
        user: String,
        /// The broker's words.
        reason: String,
    },
    /// No connection (refused, timed out, TLS, DNS).
    #[error("broker {endpoint} is unreachable: {reason}")]
    Unreachable {
        /// Redacted endpoint.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// An existing object's immutable arguments differ from the plan.
    #[error(transparent)]
    Conflict(#[from] TopologyConflict),
    /// Any other AMQP failure.
    #[error("failed to {action} {object}: {reason}")]
    Amqp {
        /// What LogStream was doing, e.g. `declare queue`.
        action: &'static str,
        /// The object's name.
        object: String,
        /// The broker's or client's words.
        reason: String,
    },
    /// The management API failed.
    #[error(transparent)]
    Management(#[from] ManagementError),
}

impl BrokerError {
    /// A short stable label for metrics, events and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Endpoint(_) => "InvalidBrokerEndpoint",
            Self::AccessRefused { .. } => "AccessRefused",
            Self::VhostNotAllowed { .. } => "VhostNotAllowed",
            Self::Unreachable { .. } => "BrokerUnreachable",
            Self::Conflict(_) => "TopologyConflict",
            Self::Amqp { .. } => "BrokerError",
            Self::Management(ManagementError::Unauthorized { .. }) => "AccessRefused",
            Self::Management(ManagementError::Unreachable { .. }) => "ManagementUnreachable",
            Self::Management(_) => "ManagementError",
        }
    }

    /// True when retrying later may help (as opposed to needing a spec or Secret change).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Amqp { .. }
                | Self::Management(
                    ManagementError::Unreachable { .. } | ManagementError::Status { .. }
                )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rabbitmq_inequivalent_arg_replies() {
        let c = TopologyConflict::from_reply_text(
            "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'logstream.ns.p.o' in vhost '/': received the value '3' of type 'long' but current is the value '10' of type 'long'",
        )
        .unwrap();
        assert_eq!(c.object_kind, "queue");
        assert_eq!(c.name, "logstream.ns.p.o");
        assert_eq!(c.argument, "x-max-priority");
        assert!(
            c.detail.starts_with("received the value '3'"),
            "{}",
            c.detail
        );
        let text = c.to_string();
        assert!(
            text.starts_with(
                "queue logstream.ns.p.o already exists with a different x-max-priority"
            ),
            "{text}"
        );

        let e = TopologyConflict::from_reply_text(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost 'v': received 'topic' but current is 'direct'",
        )
        .unwrap();
        assert_eq!(
            (e.object_kind.as_str(), e.name.as_str(), e.argument.as_str()),
            ("exchange", "logs", "type")
        );
        assert!(
            TopologyConflict::from_reply_text("PRECONDITION_FAILED - queue 'q' in use").is_none()
        );
    }
}
