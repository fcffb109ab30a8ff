//! Broker object names of a pipeline: `logstream.<namespace>.<pipeline>.<output>[.retry.<i>|.dlq]`.
//!
//! Dots separate the components, so each component is sanitized to `[A-Za-z0-9_-]` (a
//! Kubernetes name's `.` becomes `_`, which Kubernetes names cannot contain, so two different
//! names never collide). The fixed prefix keeps LogStream's objects apart from everything else
//! on the vhost, and a pipeline's objects all start with [`PipelineNames::prefix`].

/// First component of every broker object LogStream declares.
pub const PREFIX: &str = "logstream";
/// Longest name RabbitMQ accepts for an exchange or a queue, in bytes.
pub const MAX_BROKER_NAME_BYTES: usize = 255;
/// Longest sanitized component; with these caps every name fits [`MAX_BROKER_NAME_BYTES`].
const MAX_COMPONENT_BYTES: usize = 72;

/// The broker names of one pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineNames {
    namespace: String,
    pipeline: String,
}

impl PipelineNames {
    /// Names for pipeline `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: component(namespace),
            pipeline: component(name),
        }
    }

    /// `logstream.<ns>.<pipeline>.`: every object of this pipeline starts with it.
    pub fn prefix(&self) -> String {
        format!("{PREFIX}.{}.{}.", self.namespace, self.pipeline)
    }

    /// The exchange applications publish to: `spec_name` when the spec sets one, else
    /// `logstream.<ns>.<pipeline>`.
    pub fn exchange(&self, spec_name: Option<&str>) -> String {
        spec_name.map_or_else(
            || format!("{PREFIX}.{}.{}", self.namespace, self.pipeline),
            str::to_owned,
        )
    }

    /// The dead-letter exchange: `logstream.<ns>.<pipeline>.dlx`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}dlx", self.prefix())
    }

    /// The main queue of `output`.
    pub fn main_queue(&self, output: &str) -> String {
        format!("{}{}", self.prefix(), component(output))
    }

    /// Retry step `step` (0-based) of `output`.
    pub fn retry_queue(&self, output: &str, step: usize) -> String {
        format!("{}.retry.{step}", self.main_queue(output))
    }

    /// The dead-letter queue of `output`.
    pub fn dead_letter_queue(&self, output: &str) -> String {
        format!("{}.dlq", self.main_queue(output))
    }

    /// The routing key of `output`'s dead letters on the dead-letter exchange.
    pub fn dead_letter_routing_key(&self, output: &str) -> String {
        component(output)
    }
}

/// Sanitizes one name component: characters outside `[A-Za-z0-9_-]` become `_`; a component
/// longer than 72 bytes keeps its first 63 bytes and gets `-` plus 8 hex digits of a hash of
/// the whole, so long names stay distinct and stable.
pub fn component(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_COMPONENT_BYTES {
        return clean;
    }
    format!(
        "{}-{:08x}",
        &clean[..MAX_COMPONENT_BYTES - 9],
        fnv1a(raw.as_bytes())
    )
}

/// 32-bit FNV-1a: small, stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design_table() {
        let n = PipelineNames::new("games", "game-logs");
        assert_eq!(n.exchange(None), "logstream.games.game-logs");
        assert_eq!(n.exchange(Some("custom")), "custom");
        assert_eq!(n.dead_letter_exchange(), "logstream.games.game-logs.dlx");
        assert_eq!(
            n.main_queue("security"),
            "logstream.games.game-logs.security"
        );
        assert_eq!(
            n.retry_queue("security", 2),
            "logstream.games.game-logs.security.retry.2"
        );
        assert_eq!(
            n.dead_letter_queue("security"),
            "logstream.games.game-logs.security.dlq"
        );
        assert_eq!(n.prefix(), "logstream.games.game-logs.");
    }

    #[test]
    fn dots_and_odd_characters_are_sanitized_without_collisions() {
        assert_eq!(component("a.b"), "a_b");
        assert_eq!(component("weird name/#*"), "weird_name___");
        let dotted = PipelineNames::new("ns", "a.b").main_queue("o");
        let nested = PipelineNames::new("ns.a", "b").main_queue("o");
        assert_ne!(dotted, nested);
        assert_eq!(dotted.split('.').count(), 4);
    }

    #[test]
    fn longest_names_fit_rabbitmq_limit_and_stay_distinct() {
        let long_a = "a".repeat(253);
        let long_b = format!("{}b", "a".repeat(252));
        let ns = "n".repeat(63);
        let out = "o".repeat(253);
        let a = PipelineNames::new(&ns, &long_a);
        let b = PipelineNames::new(&ns, &long_b);
        for name in [
            a.retry_queue(&out, 15),
            a.dead_letter_queue(&out),
            a.dead_letter_exchange(),
        ] {
            assert!(name.len() <= MAX_BROKER_NAME_BYTES, "{} bytes", name.len());
        }
        assert_ne!(a.main_queue("x"), b.main_queue("x"));
        assert_eq!(component(&long_a), component(&long_a));
    }
}
