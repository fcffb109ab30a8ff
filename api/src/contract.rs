//! The message contract between producers, workers and the CLI.
//!
//! Producers publish JSON logs (`{"ts", "level", "service", "message", ...}`), persistent, with
//! `message_id`, `timestamp`, `content_type` and a priority from the level and the pipeline's
//! queue type ([`Level::priority_on`]), under routing key `<service>.<level>`. Workers add the
//! `x-logstream-*` headers below when they republish a message to a retry step or to the
//! dead-letter queue.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::pipeline::QueueType;

/// Failed delivery attempts so far (an integer); absent on a first delivery.
pub const HEADER_ATTEMPT: &str = "x-logstream-attempt";
/// The last failure, in words.
pub const HEADER_ERROR: &str = "x-logstream-error";
/// The last failure's class: see [`ErrorClass`].
pub const HEADER_ERROR_CLASS: &str = "x-logstream-error-class";
/// When the first attempt failed (RFC 3339, UTC).
pub const HEADER_FIRST_FAILED_AT: &str = "x-logstream-first-failed-at";
/// The routing key the producer published with, so a replay can route the message again.
pub const HEADER_ORIGIN_ROUTING_KEY: &str = "x-logstream-origin-routing-key";
/// How many times the message was replayed from a dead-letter queue.
pub const HEADER_REPLAY_COUNT: &str = "x-logstream-replay-count";

/// The `content_type` producers set.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP `delivery_mode` of a persistent message.
pub const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// Severity of a log, normalized from what producers write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Finest detail.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation; also what an unknown or missing level becomes.
    Info,
    /// Something unexpected that did not fail.
    Warn,
    /// A failure.
    Error,
    /// A failure that needs a person now; processed first.
    Critical,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 6] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Critical,
    ];

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }

    /// AMQP priority of a log of this level on a pipeline whose queues are `queue_type`.
    ///
    /// | level | classic | quorum |
    /// | --- | --- | --- |
    /// | critical | 3 | 6 |
    /// | error | 2 | 5 |
    /// | warn | 1 | 1 |
    /// | info, debug, trace | 0 | 0 |
    ///
    /// A classic queue orders by priority up to its `x-max-priority` (3 with the default four
    /// levels) and treats anything higher as that maximum. A quorum queue on RabbitMQ 4.0–4.2
    /// has two classes, normal (0–4) and high (5 and above), served 2:1 while both wait: the
    /// quorum table puts critical and error logs in the high class. RabbitMQ 3.x quorum queues
    /// ignore priorities. One table cannot serve both types: the quorum values on a classic
    /// queue with four levels make critical and error one class (both capped at 3), the classic
    /// values on a quorum queue leave every log in the normal class.
    pub fn priority_on(self, queue_type: QueueType) -> u8 {
        match (self, queue_type) {
            (Self::Critical, QueueType::Classic) => 3,
            (Self::Critical, QueueType::Quorum) => 6,
            (Self::Error, QueueType::Classic) => 2,
            (Self::Error, QueueType::Quorum) => 5,
            (Self::Warn, _) => 1,
            (Self::Info | Self::Debug | Self::Trace, _) => 0,
        }
    }

    /// AMQP priority of a log of this level on a classic pipeline (critical 3, error 2, warn 1,
    /// otherwise 0): [`priority_on`](Self::priority_on) for a publisher that does not know the
    /// queue type.
    pub fn priority(self) -> u8 {
        self.priority_on(QueueType::Classic)
    }

    /// Normalizes what producers write (`WARNING`, `fatal`, `err`, `notice`, ...). Unknown
    /// words give `None`; callers treat them as [`Level::Info`].
    pub fn parse_lenient(raw: &str) -> Option<Self> {
        let level = match raw.trim().to_ascii_lowercase().as_str() {
            "trace" | "verbose" => Self::Trace,
            "debug" | "dbg" => Self::Debug,
            "info" | "information" | "informational" | "notice" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" | "err" => Self::Error,
            "critical" | "crit" | "fatal" | "panic" | "alert" | "emerg" | "emergency" => {
                Self::Critical
            }
            _ => return None,
        };
        Some(level)
    }

    /// The OpenTelemetry severity number of this level: the first of its range (TRACE 1,
    /// DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21).
    pub fn otlp_severity_number(self) -> i32 {
        match self {
            Self::Trace => 1,
            Self::Debug => 5,
            Self::Info => 9,
            Self::Warn => 13,
            Self::Error => 17,
            Self::Critical => 21,
        }
    }

    /// The level of an OpenTelemetry severity: numbers 1-4 trace, 5-8 debug, 9-12 info, 13-16
    /// warn, 17-20 error, 21-24 (fatal) critical; without a number, the severity text read
    /// leniently (`WARNING`, `fatal`, ...); else none.
    pub fn from_otlp(severity_number: i32, severity_text: &str) -> Option<Self> {
        match severity_number {
            1..=4 => Some(Self::Trace),
            5..=8 => Some(Self::Debug),
            9..=12 => Some(Self::Info),
            13..=16 => Some(Self::Warn),
            17..=20 => Some(Self::Error),
            21..=24 => Some(Self::Critical),
            _ => Self::parse_lenient(severity_text),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_lenient(s).ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// A level word LogStream does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected trace, debug, info, warn, error or critical)")]
pub struct UnknownLevel(pub String);

/// The routing key of a log: `<service>.<level>`. An empty service becomes `unknown`.
pub fn routing_key(service: &str, level: Level) -> String {
    let service = service.trim();
    let service = if service.is_empty() {
        "unknown"
    } else {
        service
    };
    format!("{service}.{level}")
}

/// Why a delivery failed, as written in [`HEADER_ERROR_CLASS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// May succeed later (sink 5xx, 429, timeout, refused connection): retried.
    Transient,
    /// Can never succeed (malformed log, sink 4xx): dead-lettered at once.
    Permanent,
    /// The broker redelivered the message because the worker holding it died.
    Redelivered,
}

impl ErrorClass {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Redelivered => "redelivered",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transient" => Ok(Self::Transient),
            "permanent" => Ok(Self::Permanent),
            "redelivered" => Ok(Self::Redelivered),
            other => Err(format!(
                "unknown error class {other:?} (expected transient, permanent or redelivered)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_severities_map_onto_levels() {
        for (number, text, expected) in [
            (1, "", Some(Level::Trace)),
            (8, "", Some(Level::Debug)),
            (9, "", Some(Level::Info)),
            (14, "", Some(Level::Warn)),
            (20, "", Some(Level::Error)),
            (21, "", Some(Level::Critical)),
            (24, "", Some(Level::Critical)),
            (0, "WARNING", Some(Level::Warn)),
            (0, "fatal", Some(Level::Critical)),
            (0, "", None),
        ] {
            assert_eq!(Level::from_otlp(number, text), expected, "{number} {text}");
        }
        for level in Level::ALL {
            assert_eq!(
                Level::from_otlp(level.otlp_severity_number(), ""),
                Some(level)
            );
        }
    }

    #[test]
    fn priorities_follow_the_contract() {
        assert_eq!(Level::Critical.priority(), 3);
        assert_eq!(Level::Error.priority(), 2);
        assert_eq!(Level::Warn.priority(), 1);
        for level in [Level::Info, Level::Debug, Level::Trace] {
            assert_eq!(level.priority(), 0);
        }
        for level in Level::ALL {
            assert_eq!(level.priority(), level.priority_on(QueueType::Classic));
        }
    }

    /// RabbitMQ 4.0–4.2 quorum queues serve priority 5 and above first (2:1), and 0–4 as one
    /// normal class.
    const QUORUM_HIGH_CLASS: u8 = 5;

    #[test]
    fn on_quorum_queues_critical_and_error_land_in_the_high_class_and_the_rest_below_it() {
        let quorum = |level: Level| level.priority_on(QueueType::Quorum);
        assert_eq!(quorum(Level::Critical), 6);
        assert_eq!(quorum(Level::Error), 5);
        assert_eq!(quorum(Level::Warn), 1);
        for level in Level::ALL {
            let high = quorum(level) >= QUORUM_HIGH_CLASS;
            assert_eq!(high, level >= Level::Error, "{level}");
        }
        // Ordered like the classic table: a more severe level never gets a lower priority.
        for pair in Level::ALL.windows(2) {
            assert!(quorum(pair[0]) <= quorum(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn levels_are_normalized_from_common_spellings() {
        assert_eq!(Level::parse_lenient("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse_lenient(" Fatal "), Some(Level::Critical));
        assert_eq!(Level::parse_lenient("err"), Some(Level::Error));
        assert_eq!(Level::parse_lenient("notice"), Some(Level::Info));
        assert_eq!(Level::parse_lenient("loud"), None);
        assert!(
            "loud"
                .parse::<Level>()
                .unwrap_err()
                .to_string()
                .contains("loud")
        );
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
    }

    #[test]
    fn routing_key_is_service_dot_level() {
        assert_eq!(routing_key("api", Level::Error), "api.error");
        assert_eq!(
            routing_key("game.auth", Level::Critical),
            "game.auth.critical"
        );
        assert_eq!(routing_key("  ", Level::Info), "unknown.info");
    }

    #[test]
    fn error_classes_round_trip() {
        for class in [
            ErrorClass::Transient,
            ErrorClass::Permanent,
            ErrorClass::Redelivered,
        ] {
            assert_eq!(class.as_str().parse::<ErrorClass>(), Ok(class));
        }
        assert!("maybe".parse::<ErrorClass>().is_err());
    }
}
