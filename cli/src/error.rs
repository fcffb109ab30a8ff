//! What can make a `logstream` command fail, and the exit code each failure maps to.
//!
//! Exit codes are every LogStream binary's ([`logstream_api::exit`]): 0 success, 1 a usage
//! mistake (bad flag, bad value, a question that cannot be asked without a terminal), 2 a
//! runtime failure (the broker refused, is unreachable, or does not know the pipeline).
//! Messages are one line, name the object, and never contain a password.

use logstream_broker::{BrokerError, ManagementError};

use logstream_api::exit;

/// Exit code of a usage mistake.
pub const EXIT_USAGE: u8 = exit::USAGE;
/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = exit::FAILURE;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    /// The manifest given with `-f` cannot be read or does not hold the pipeline.
    #[error("failed to read manifest {path}: {reason}")]
    Manifest {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to or administering the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The management API failed.
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// The pipeline's manifest has no such output.
    #[error("pipeline {pipeline} has no output {output:?} (its outputs: {known})")]
    UnknownOutput {
        /// `namespace/name`.
        pipeline: String,
        /// The output asked for.
        output: String,
        /// The outputs it has.
        known: String,
    },
    /// A queue or exchange the command needs does not exist on the broker.
    #[error("{kind} {name} does not exist on vhost {vhost:?}: {hint}")]
    NotFound {
        /// `queue` or `exchange`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The vhost looked in.
        vhost: String,
        /// What the user probably needs to do.
        hint: String,
    },
    /// An AMQP operation failed after the connection was open.
    #[error("failed to {action} {object}: {reason}")]
    Amqp {
        /// What was being done, e.g. `publish to`.
        action: &'static str,
        /// On which object.
        object: String,
        /// The broker's or client's words.
        reason: String,
    },
    /// The Kubernetes API could not be read (`status --kubeconfig`).
    #[error("{0}")]
    Kubernetes(String),
    /// Reading input or writing output failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The command ran to its end but some of its work did not happen (messages nacked,
    /// returned or not replayed); the summary was already printed.
    #[error("{0}")]
    Incomplete(String),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Broker(BrokerError::NameTooLong { .. }) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// `e`, with `hint` (what the user probably needs to do) when it says that a queue or
    /// exchange does not exist.
    pub fn with_hint(e: BrokerError, hint: &str) -> Self {
        match e {
            BrokerError::NotFound { kind, name, vhost } => Self::NotFound {
                kind,
                name,
                vhost,
                hint: hint.to_owned(),
            },
            other => Self::Broker(other),
        }
    }

    /// An AMQP failure of `action` on `object`.
    pub fn amqp(action: &'static str, object: &str, e: &lapin::Error) -> Self {
        Self::Amqp {
            action,
            object: object.to_owned(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_mistakes_exit_1_and_everything_else_exits_2() {
        assert_eq!(CliError::Usage("bad".into()).exit_code(), 1);
        assert_eq!(CliError::Incomplete("lost 1".into()).exit_code(), 2);
        let not_found = CliError::NotFound {
            kind: "queue",
            name: "q".into(),
            vhost: "/".into(),
            hint: "deploy it".into(),
        };
        assert_eq!(not_found.exit_code(), 2);
        assert_eq!(
            not_found.to_string(),
            "queue q does not exist on vhost \"/\": deploy it"
        );
    }
}
