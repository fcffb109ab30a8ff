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

    /// The RabbitMQ user of `output`'s workers when the pipeline asks for a user per output
    /// (`spec.broker.workerUsers`): `logstream.<ns>.<pipeline>.<output>.worker@<vhost>`.
    /// Users are broker-wide, so the vhost is part of the name.
    pub fn worker_user(&self, output: &str, vhost: &str) -> String {
        format!("{}.worker@{vhost}", self.main_queue(output))
    }
}

/// Longest Kubernetes name of a worker child (a Service name is a DNS-1035 label).
pub const MAX_CHILD_NAME_BYTES: usize = 63;

/// Name of an output's worker children (ConfigMap, Deployment, Service), unique for every
/// pair of valid pipeline and output names:
///
/// - `<pipeline>-<output>` when the output name has no `-` (the name then splits back at its
///   last `-`, so no two such pairs share it: `game-logs` + `security` is
///   `game-logs-security`);
/// - else `<pipeline>-<output>--<hash>`, with 8 hex digits of a hash of the pair and the
///   front cut so the whole fits 63 characters (`a` + `b-c` is `a-b-c--<hash>`, `a-b` + `c`
///   stays `a-b-c`). Split at its last `-`, such a name leaves a pipeline part that ends in
///   `-`, which no valid pipeline name does, so it never equals a name of the first form;
///   two names of this form differ unless their 32-bit hashes collide, which the operator
///   catches: it never takes over an object it did not create (`NameConflict`).
pub fn worker_child_name(pipeline: &str, output: &str) -> String {
    let joined = format!("{pipeline}-{output}");
    if !output.contains('-') {
        return joined;
    }
    let hash = fnv1a(format!("{pipeline}/{output}").as_bytes());
    let keep = joined.len().min(MAX_CHILD_NAME_BYTES - 10);
    format!("{}--{hash:08x}", &joined[..keep])
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
    fn worker_child_names_keep_dashless_outputs_and_tell_ambiguous_pairs_apart() {
        assert_eq!(
            worker_child_name("game-logs", "security"),
            "game-logs-security"
        );
        let (a, b) = (worker_child_name("a", "b-c"), worker_child_name("a-b", "c"));
        assert_eq!(b, "a-b-c");
        assert!(
            a.starts_with("a-b-c--") && a.len() == "a-b-c--".len() + 8,
            "{a}"
        );
        assert_ne!(a, b);
        assert_ne!(a, worker_child_name("a-b-c-", "x"));
        // The longest pair still fits a DNS label.
        let p = format!("p{}", "-x".repeat(11));
        let o = format!("o{}", "-y".repeat(19));
        assert_eq!(p.len() + 1 + o.len(), 63);
        let long = worker_child_name(&p, &o);
        assert_eq!(long.len(), 63, "{long}");
        assert_ne!(
            long,
            worker_child_name(&p, &format!("{}z", &o[..o.len() - 1]))
        );
    }

    #[test]
    fn worker_child_names_are_unique_for_every_split_of_a_dashed_name() {
        // Every (pipeline, output) pair whose `-` join is the same string, for several
        // strings: all their child names differ, and differ from every other string's.
        let mut seen = std::collections::BTreeMap::new();
        for joined in [
            "a-b-c",
            "a-b-c-d",
            "x--y-z",
            "log-s-t-r-e-a-m-9",
            "a-b-c--e",
        ] {
            for (i, _) in joined.match_indices('-') {
                let (p, o) = (&joined[..i], &joined[i + 1..]);
                let valid = |s: &str| !s.is_empty() && !s.starts_with('-') && !s.ends_with('-');
                if !valid(p) || !valid(o) || !p.starts_with(|c: char| c.is_ascii_lowercase()) {
                    continue;
                }
                let name = worker_child_name(p, o);
                assert!(name.len() <= MAX_CHILD_NAME_BYTES);
                if let Some(other) = seen.insert(name.clone(), (p.to_owned(), o.to_owned())) {
                    panic!("{name} is the name of both {other:?} and ({p:?}, {o:?})");
                }
            }
        }
        assert!(seen.len() >= 10, "{seen:?}");
    }

    #[test]
    fn worker_users_name_their_output_and_vhost() {
        let n = PipelineNames::new("games", "game-logs");
        assert_eq!(
            n.worker_user("security", "/"),
            "logstream.games.game-logs.security.worker@/"
        );
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
