//! What can go wrong between LogStream and the broker, in words a person can act on, and the
//! one place that reads lapin's errors: a wrong password, a missing vhost, an unreachable
//! broker, a missing queue (`NOT_FOUND`) and a changed argument (`PRECONDITION_FAILED`) are
//! told apart here and nowhere else.

use lapin::{
    ErrorKind,
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
};

use crate::{endpoint::BrokerEndpoint, endpoint::EndpointError, management::ManagementError};

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
    /// No connection (refused, timed out, DNS, lost).
    #[error("broker {endpoint} is unreachable: {reason}")]
    Unreachable {
        /// Redacted endpoint.
        endpoint: String,
        /// What failed (per host, for a broker of several).
        reason: String,
    },
    /// The TLS handshake failed: the broker's certificate is not trusted (a wrong or missing
    /// CA), or the broker refused the client's (a missing or unknown client certificate).
    #[error("broker {endpoint}: {reason}")]
    Tls {
        /// Redacted endpoint.
        endpoint: String,
        /// What failed, in words (per host, for a broker of several).
        reason: String,
    },
    /// A queue or exchange does not exist (`NOT_FOUND`).
    #[error("{kind} {name} does not exist on vhost {vhost:?}")]
    NotFound {
        /// `queue` or `exchange`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The vhost looked in.
        vhost: String,
    },
    /// An existing object's immutable arguments differ from the plan (`PRECONDITION_FAILED`
    /// naming the argument).
    #[error(transparent)]
    Conflict(#[from] TopologyConflict),
    /// A name longer than AMQP's 255-byte short strings.
    #[error("{what} {start:?}... is longer than 255 bytes")]
    NameTooLong {
        /// `queue`, `exchange` or `routing key`.
        what: &'static str,
        /// Its first characters.
        start: String,
    },
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
            Self::Tls { .. } => "BrokerTlsFailed",
            Self::NotFound { .. } => "NotFound",
            Self::Conflict(_) => "TopologyConflict",
            Self::NameTooLong { .. } => "InvalidName",
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

/// Reads a failed connection attempt to `endpoint`: a refused login, a vhost the user may not
/// use, or else an unreachable broker.
pub fn connect_error(endpoint: &BrokerEndpoint, e: &lapin::Error) -> BrokerError {
    let shown = endpoint.to_string();
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        let reason = amqp.get_message().to_string();
        match amqp.kind() {
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                return BrokerError::VhostNotAllowed {
                    endpoint: shown,
                    vhost: endpoint.vhost().to_owned(),
                    user: endpoint.username().to_owned(),
                    reason,
                };
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return BrokerError::AccessRefused {
                    endpoint: shown,
                    user: endpoint.username().to_owned(),
                    reason,
                };
            }
            _ => {}
        }
    }
    let reason = e.to_string();
    if let Some(tls) = tls_failure(&reason) {
        return BrokerError::Tls {
            endpoint: shown,
            reason: tls,
        };
    }
    if reset_without_client_cert(endpoint, &reason) {
        return BrokerError::Unreachable {
            endpoint: shown,
            reason: format!("{reason}{RESET_WITHOUT_CLIENT_CERT}"),
        };
    }
    // RabbitMQ answers a failed login by closing the socket during the handshake; lapin reports
    // that as an I/O error that mentions the authentication step.
    if reason.contains("ACCESS_REFUSED") || reason.to_ascii_lowercase().contains("authentication") {
        return BrokerError::AccessRefused {
            endpoint: shown,
            user: endpoint.username().to_owned(),
            reason,
        };
    }
    BrokerError::Unreachable {
        endpoint: shown,
        reason,
    }
}

/// What a reset TLS connection without a client certificate adds to its reason. A broker that
/// requires a client certificate sends a fatal alert and closes; when the client has already
/// written its AMQP header by then, the kernel answers with a reset that can overtake the
/// alert, so the client sees only the reset. The error stays transient (a restarting broker
/// resets connections too) but says what is the likely cause.
pub(crate) const RESET_WITHOUT_CLIENT_CERT: &str = " during or right after the TLS handshake, \
    and no client certificate was given: does the broker require a client certificate?";

/// `reason` is a reset of a TLS connection to `endpoint` made without a client certificate.
fn reset_without_client_cert(endpoint: &BrokerEndpoint, reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    endpoint.is_tls()
        && !endpoint.tls().has_client_cert()
        && (lower.contains("connection reset") || lower.contains("broken pipe"))
}

/// rustls's words for a failed handshake, as one sentence that says which side refused:
/// `None` when `reason` is not a TLS failure.
pub(crate) fn tls_failure(reason: &str) -> Option<String> {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") {
        let detail = reason
            .split_once("invalid peer certificate")
            .map_or(reason, |(_, d)| d.trim_start_matches(':').trim());
        return Some(format!(
            "its TLS certificate is not trusted ({detail}): is the CA that signed it the one given?"
        ));
    }
    if lower.contains("received fatal alert") {
        let detail = reason
            .split_once("received fatal alert")
            .map_or(reason, |(_, d)| d.trim_start_matches(':').trim());
        let hint = if lower.contains("certificaterequired") || lower.contains("handshakefailure") {
            ": does it require a client certificate?"
        } else if lower.contains("badcertificate")
            || lower.contains("unknownca")
            || lower.contains("certificateunknown")
        {
            ": does it trust the CA of the client certificate?"
        } else {
            ""
        };
        return Some(format!(
            "it refused the TLS handshake (fatal alert {detail}){hint}"
        ));
    }
    None
}

/// The TLS material of `endpoint` could not be turned into a client configuration.
pub fn tls_setup_error(endpoint: &BrokerEndpoint, e: &std::io::Error) -> BrokerError {
    BrokerError::Tls {
        endpoint: endpoint.to_string(),
        reason: format!("failed to set up TLS with the given CA and client certificate: {e}"),
    }
}

/// Every host of `endpoint` failed, each as `failures` says: one host's error as it is; for
/// several, one error naming each host and what it said (TLS when every host failed TLS,
/// else unreachable).
pub fn hosts_failed(
    endpoint: &BrokerEndpoint,
    mut failures: Vec<(crate::address::HostPort, BrokerError)>,
) -> BrokerError {
    if failures.len() == 1 {
        return failures.swap_remove(0).1;
    }
    let all_tls = failures
        .iter()
        .all(|(_, e)| matches!(e, BrokerError::Tls { .. }));
    let reasons: Vec<String> = failures
        .iter()
        .map(|(host, e)| match e {
            BrokerError::Unreachable { reason, .. } | BrokerError::Tls { reason, .. } => {
                format!("{host}: {reason}")
            }
            other => format!("{host}: {other}"),
        })
        .collect();
    let endpoint = endpoint.to_string();
    let reason = format!(
        "tried {} hosts in turn: {}",
        failures.len(),
        reasons.join("; ")
    );
    if all_tls {
        BrokerError::Tls { endpoint, reason }
    } else {
        BrokerError::Unreachable { endpoint, reason }
    }
}

/// Reads a failed operation (`action` on `object`, e.g. `declare queue` on its name) on a
/// connection to `endpoint` that was open: a changed argument, a closed connection, or else
/// the broker's or client's words. `NOT_FOUND` is left to the callers that expect it
/// ([`is_not_found`]), as they know what was looked for.
pub fn operation_error(
    endpoint: &BrokerEndpoint,
    connected: bool,
    action: &'static str,
    object: &str,
    e: &lapin::Error,
) -> BrokerError {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        let text = amqp.get_message().to_string();
        if let Some(conflict) = TopologyConflict::from_reply_text(&text) {
            return BrokerError::Conflict(conflict);
        }
        return BrokerError::Amqp {
            action,
            object: object.to_owned(),
            reason: text,
        };
    }
    if e.is_io_error() || !connected {
        return BrokerError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: format!("connection lost while trying to {action} {object}: {e}"),
        };
    }
    BrokerError::Amqp {
        action,
        object: object.to_owned(),
        reason: e.to_string(),
    }
}

/// True when the broker answered `NOT_FOUND` (a passive declare of a missing queue or
/// exchange, a publish to a missing exchange).
pub fn is_not_found(e: &lapin::Error) -> bool {
    soft_error(e) == Some(AMQPSoftError::NOTFOUND)
}

/// True when the broker answered `PRECONDITION_FAILED` (an inequivalent argument, a queue
/// that is not empty or an exchange that is in use).
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    soft_error(e) == Some(AMQPSoftError::PRECONDITIONFAILED)
}

fn soft_error(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// `s` as an AMQP short string (queue and exchange names and routing keys are at most 255
/// bytes); `what` names it in the error.
pub fn short_string(s: &str, what: &'static str) -> Result<lapin::types::ShortString, BrokerError> {
    lapin::types::ShortString::try_new(s).map_err(|_| BrokerError::NameTooLong {
        what,
        start: s.chars().take(40).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_which_side_refused() {
        assert_eq!(
            tls_failure("IO error: invalid peer certificate: UnknownIssuer").as_deref(),
            Some(
                "its TLS certificate is not trusted (UnknownIssuer): is the CA that signed it the one given?"
            )
        );
        assert_eq!(
            tls_failure("IO error: received fatal alert: CertificateRequired").as_deref(),
            Some(
                "it refused the TLS handshake (fatal alert CertificateRequired): does it require a client certificate?"
            )
        );
        assert_eq!(
            tls_failure("IO error: Connection refused (os error 111)"),
            None
        );
    }

    #[test]
    fn a_reset_tls_connection_without_a_client_certificate_asks_for_one() {
        let reset = "IO error: Connection reset by peer (os error 104)";
        let amqps = BrokerEndpoint::from_uri("amqps://u:p@h:5671/%2f", None).unwrap();
        assert!(reset_without_client_cert(&amqps, reset));
        assert!(!reset_without_client_cert(
            &amqps,
            "IO error: Connection refused (os error 111)"
        ));
        let plain = BrokerEndpoint::from_uri("amqp://u:p@h:5672/%2f", None).unwrap();
        assert!(!reset_without_client_cert(&plain, reset));
    }

    #[test]
    fn a_broker_of_several_hosts_names_each_host_tried() {
        let endpoint = BrokerEndpoint::from_uri("amqp://u:s3cret@a:1,b:2/%2f", None).unwrap();
        let failure = |reason: &str| BrokerError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: reason.into(),
        };
        let hosts = endpoint.hosts().to_vec();
        let e = hosts_failed(
            &endpoint,
            vec![
                (
                    hosts[0].clone(),
                    failure("Connection refused (os error 111)"),
                ),
                (hosts[1].clone(), failure("no answer within 10s")),
            ],
        );
        assert_eq!(
            e.to_string(),
            "broker amqp://u:***@a:1,b:2/%2F is unreachable: tried 2 hosts in turn: a:1: Connection refused (os error 111); b:2: no answer within 10s"
        );
        assert_eq!(e.category(), "BrokerUnreachable");
    }

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
