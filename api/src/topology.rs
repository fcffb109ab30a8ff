//! The topology plan: the exchanges, queues and bindings a pipeline needs, as plain data.
//!
//! [`plan`] is a pure function of (namespace, name, spec). The operator, `logstream dev` and
//! the tests apply the same plan to a broker; nothing here talks to one.

use std::collections::BTreeMap;

use crate::{
    naming::PipelineNames,
    pipeline::{ExchangeType, LogPipelineSpec, OutputSpec, QueueType},
    validate::{ValidationErrors, parse_header_binding, validate},
};

/// Queue argument names LogStream sets.
pub mod args {
    /// Queue type (`classic` or `quorum`).
    pub const QUEUE_TYPE: &str = "x-queue-type";
    /// Highest priority of a classic queue.
    pub const MAX_PRIORITY: &str = "x-max-priority";
    /// Quorum queues: deliveries before the broker dead-letters a message.
    pub const DELIVERY_LIMIT: &str = "x-delivery-limit";
    /// Exchange that dead letters go to.
    pub const DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
    /// Routing key of dead letters.
    pub const DEAD_LETTER_ROUTING_KEY: &str = "x-dead-letter-routing-key";
    /// Per-queue message TTL in milliseconds.
    pub const MESSAGE_TTL: &str = "x-message-ttl";
    /// Most messages the queue holds.
    pub const MAX_LENGTH: &str = "x-max-length";
    /// What happens beyond `x-max-length`.
    pub const OVERFLOW: &str = "x-overflow";
    /// The overflow behaviour that refuses publishes instead of dropping messages.
    pub const REJECT_PUBLISH: &str = "reject-publish";
    /// Like [`REJECT_PUBLISH`], and what is refused is also dead-lettered: what a classic
    /// queue refuses from another queue's dead-lettering (a retry whose wait ended) is then
    /// kept instead of dropped.
    pub const REJECT_PUBLISH_DLX: &str = "reject-publish-dlx";
    /// Quorum queues: how the broker dead-letters (`at-most-once` by default).
    pub const DEAD_LETTER_STRATEGY: &str = "x-dead-letter-strategy";
    /// The dead-letter strategy that keeps a dead letter in its source queue until the target
    /// queue confirmed it (the broker retries), instead of dropping it when it cannot be
    /// routed or is refused. Needs [`OVERFLOW`] `reject-publish`, else the broker silently
    /// falls back to at-most-once.
    pub const AT_LEAST_ONCE: &str = "at-least-once";
    /// Headers exchanges: `all` or `any`.
    pub const MATCH: &str = "x-match";
}

/// A queue or binding argument value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ArgValue {
    /// A signed integer (`long` on the wire).
    Int(i64),
    /// A string (`longstr` on the wire).
    Str(String),
}

impl From<&str> for ArgValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for ArgValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

/// Arguments of a queue or binding, ordered by name.
pub type Arguments = BTreeMap<String, ArgValue>;

/// An exchange to declare (always durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangePlan {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    pub kind: ExchangeType,
}

/// What a queue is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRole {
    /// The queue the output's workers consume.
    Main,
    /// Retry step `n` (0-based): holds failed messages for `backoff[n]`.
    Retry(usize),
    /// The dead-letter queue.
    DeadLetter,
}

/// A queue to declare (always durable, never exclusive or auto-delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePlan {
    /// Queue name.
    pub name: String,
    /// The output it belongs to.
    pub output: String,
    /// What it is for.
    pub role: QueueRole,
    /// Declaration arguments; all of them are immutable on the broker.
    pub arguments: Arguments,
}

/// A binding of a queue to an exchange.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BindingPlan {
    /// Source exchange.
    pub exchange: String,
    /// Destination queue.
    pub queue: String,
    /// Routing key or pattern (empty for fanout and headers exchanges).
    pub routing_key: String,
    /// Binding arguments (header matches for headers exchanges).
    pub arguments: Arguments,
}

/// Everything one pipeline needs on the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyPlan {
    /// Virtual host of every object: [`LogPipelineSpec::vhost`] as planned; a caller that has
    /// read the broker Secret replaces it with [`LogPipelineSpec::vhost_with`].
    pub vhost: String,
    /// Names of this pipeline's objects.
    pub names: PipelineNames,
    /// Exchanges: the pipeline's exchange, then the dead-letter exchange.
    pub exchanges: Vec<ExchangePlan>,
    /// Queues: per output, the main queue, the retry steps, then the dead-letter queue.
    pub queues: Vec<QueuePlan>,
    /// Bindings: per output, the main queue's bindings, then the dead-letter binding.
    pub bindings: Vec<BindingPlan>,
}

impl TopologyPlan {
    /// The pipeline's own exchange (the first one).
    pub fn exchange(&self) -> &ExchangePlan {
        &self.exchanges[0]
    }

    /// The queues of `output`.
    pub fn queues_of<'a>(&'a self, output: &'a str) -> impl Iterator<Item = &'a QueuePlan> + 'a {
        self.queues.iter().filter(move |q| q.output == output)
    }

    /// The queue of `output` with `role`.
    pub fn queue(&self, output: &str, role: QueueRole) -> Option<&QueuePlan> {
        self.queues
            .iter()
            .find(|q| q.output == output && q.role == role)
    }

    /// True when `queue` is one of this plan's queues.
    pub fn has_queue(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q.name == queue)
    }
}

/// Plans pipeline `name` in `namespace`. Fails with the spec's problems when it is invalid.
pub fn plan(
    namespace: &str,
    name: &str,
    spec: &LogPipelineSpec,
) -> Result<TopologyPlan, ValidationErrors> {
    validate(namespace, name, spec)?;
    let names = PipelineNames::new(namespace, name);
    let exchange_type = spec.exchange_type();
    let exchange = names.exchange(spec.exchange_name());
    let dlx = names.dead_letter_exchange();

    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for output in &spec.outputs {
        let main = names.main_queue(&output.name);
        queues.push(QueuePlan {
            name: main.clone(),
            output: output.name.clone(),
            role: QueueRole::Main,
            arguments: main_queue_arguments(spec, output, &names),
        });
        for (step, delay) in output.backoff().iter().enumerate() {
            let mut arguments = base_arguments(spec.queue_type());
            arguments.insert(
                args::MESSAGE_TTL.into(),
                ArgValue::Int(clamp_i64(delay.as_millis_u64())),
            );
            arguments.insert(args::DEAD_LETTER_EXCHANGE.into(), "".into());
            arguments.insert(args::DEAD_LETTER_ROUTING_KEY.into(), main.clone().into());
            at_least_once_dead_lettering(spec.queue_type(), &mut arguments);
            queues.push(QueuePlan {
                name: names.retry_queue(&output.name, step),
                output: output.name.clone(),
                role: QueueRole::Retry(step),
                arguments,
            });
        }
        let dlq = names.dead_letter_queue(&output.name);
        let mut arguments = base_arguments(spec.queue_type());
        arguments.insert(
            args::MAX_LENGTH.into(),
            ArgValue::Int(clamp_i64(output.dlq_max_length())),
        );
        arguments.insert(args::OVERFLOW.into(), args::REJECT_PUBLISH.into());
        queues.push(QueuePlan {
            name: dlq.clone(),
            output: output.name.clone(),
            role: QueueRole::DeadLetter,
            arguments,
        });

        for key in output.binding_keys(exchange_type) {
            bindings.push(main_binding(&exchange, exchange_type, &main, &key));
        }
        if bounded_classic(spec, output) {
            // What a full main queue refuses from its retry steps keeps the routing key the
            // retry step gave it (the main queue's name) and is kept in the DLQ.
            bindings.push(BindingPlan {
                exchange: dlx.clone(),
                queue: dlq.clone(),
                routing_key: main.clone(),
                arguments: Arguments::new(),
            });
        }
        bindings.push(BindingPlan {
            exchange: dlx.clone(),
            queue: dlq,
            routing_key: names.dead_letter_routing_key(&output.name),
            arguments: Arguments::new(),
        });
    }

    Ok(TopologyPlan {
        vhost: spec.vhost().to_owned(),
        names,
        exchanges: vec![
            ExchangePlan {
                name: exchange,
                kind: exchange_type,
            },
            ExchangePlan {
                name: dlx,
                kind: ExchangeType::Direct,
            },
        ],
        queues,
        bindings,
    })
}

fn base_arguments(queue_type: QueueType) -> Arguments {
    Arguments::from([(args::QUEUE_TYPE.to_owned(), queue_type.as_str().into())])
}

/// A quorum queue that dead-letters (a main queue to the DLQ, a retry step back to the main
/// queue) does it at least once: without this, a dead letter whose target is missing (a
/// main queue deleted by hand and not yet re-declared, a DLQ binding removed) is dropped. With
/// it, the source queue keeps the message (`messages_dlx` in the management API) and the
/// broker's dead-letter worker sends it again until the target confirms it. A target with
/// `reject-publish` that is full refuses it too, so a bound holds for dead letters as well
/// (at most once, a quorum queue takes them beyond its bound). Classic queues have no such
/// strategy (the broker refuses the argument).
fn at_least_once_dead_lettering(queue_type: QueueType, arguments: &mut Arguments) {
    if queue_type == QueueType::Quorum {
        arguments.insert(
            args::DEAD_LETTER_STRATEGY.into(),
            args::AT_LEAST_ONCE.into(),
        );
        arguments.insert(args::OVERFLOW.into(), args::REJECT_PUBLISH.into());
    }
}

fn main_queue_arguments(
    spec: &LogPipelineSpec,
    output: &OutputSpec,
    names: &PipelineNames,
) -> Arguments {
    let mut arguments = base_arguments(spec.queue_type());
    match spec.queue_type() {
        QueueType::Classic => {
            let levels = spec.priority_levels();
            if levels > 1 {
                arguments.insert(
                    args::MAX_PRIORITY.into(),
                    ArgValue::Int(i64::from(levels) - 1),
                );
            }
        }
        QueueType::Quorum => {
            arguments.insert(
                args::DELIVERY_LIMIT.into(),
                ArgValue::Int(i64::from(output.max_attempts())),
            );
        }
    }
    arguments.insert(
        args::DEAD_LETTER_EXCHANGE.into(),
        names.dead_letter_exchange().into(),
    );
    at_least_once_dead_lettering(spec.queue_type(), &mut arguments);
    if let Some(max) = output.max_backlog {
        arguments.insert(args::MAX_LENGTH.into(), ArgValue::Int(clamp_i64(max)));
        // A full classic queue drops what is dead-lettered into it, and a retry whose wait
        // ended is dead-lettered into the main queue. With `reject-publish-dlx` it is
        // dead-lettered on to the DLQ instead, keeping its routing key (the main queue's
        // name, bound to the DLQ); a producer's refused log keeps its own routing key, which
        // nothing on the dead-letter exchange is bound to, so only its nack is told. A full
        // quorum queue refuses it too, and its retry step keeps it until there is room (the
        // step dead-letters at least once).
        if spec.queue_type() == QueueType::Classic {
            arguments.insert(args::OVERFLOW.into(), args::REJECT_PUBLISH_DLX.into());
        }
    }
    if !bounded_classic(spec, output) {
        arguments.insert(
            args::DEAD_LETTER_ROUTING_KEY.into(),
            names.dead_letter_routing_key(&output.name).into(),
        );
    }
    arguments
}

/// A classic main queue with `maxBacklog`: see [`main_queue_arguments`].
fn bounded_classic(spec: &LogPipelineSpec, output: &OutputSpec) -> bool {
    spec.queue_type() == QueueType::Classic && output.max_backlog.is_some()
}

fn main_binding(exchange: &str, kind: ExchangeType, queue: &str, key: &str) -> BindingPlan {
    let (routing_key, arguments) = match kind {
        ExchangeType::Headers => {
            let mut arguments = Arguments::from([(args::MATCH.to_owned(), "all".into())]);
            // Validation already rejected malformed bindings; an empty one matches everything.
            if !key.is_empty() {
                for (k, val) in parse_header_binding(key).unwrap_or_default() {
                    arguments.insert(k, ArgValue::Str(val));
                }
            }
            (String::new(), arguments)
        }
        ExchangeType::Fanout => (String::new(), Arguments::new()),
        ExchangeType::Direct | ExchangeType::Topic => (key.to_owned(), Arguments::new()),
    };
    BindingPlan {
        exchange: exchange.to_owned(),
        queue: queue.to_owned(),
        routing_key,
        arguments,
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_pipeline;

    fn spec(yaml_spec: &str) -> LogPipelineSpec {
        let yaml = format!(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: app}}\nspec:\n{yaml_spec}"
        );
        parse_pipeline(&yaml).unwrap().spec
    }

    fn int(n: i64) -> ArgValue {
        ArgValue::Int(n)
    }

    #[test]
    fn classic_output_gets_priority_queue_retry_ladder_and_bounded_dlq() {
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: sec\n      bindings: [\"*.auth.*\"]\n      retry: {backoff: [1s, 10s]}\n      deadLetter: {maxLength: 7}\n      sink: {stdout: {}}\n",
        );
        let p = plan("games", "app", &s).unwrap();
        assert_eq!(p.vhost, "/");
        assert_eq!(
            p.exchanges,
            [
                ExchangePlan {
                    name: "logstream.games.app".into(),
                    kind: ExchangeType::Topic
                },
                ExchangePlan {
                    name: "logstream.games.app.dlx".into(),
                    kind: ExchangeType::Direct
                },
            ]
        );
        let names: Vec<_> = p.queues.iter().map(|q| (q.name.as_str(), q.role)).collect();
        assert_eq!(
            names,
            [
                ("logstream.games.app.sec", QueueRole::Main),
                ("logstream.games.app.sec.retry.0", QueueRole::Retry(0)),
                ("logstream.games.app.sec.retry.1", QueueRole::Retry(1)),
                ("logstream.games.app.sec.dlq", QueueRole::DeadLetter),
            ]
        );
        let main = &p.queues[0].arguments;
        assert_eq!(main["x-queue-type"], "classic".into());
        assert_eq!(main["x-max-priority"], int(3));
        assert_eq!(
            main["x-dead-letter-exchange"],
            "logstream.games.app.dlx".into()
        );
        assert_eq!(main["x-dead-letter-routing-key"], "sec".into());
        assert!(!main.contains_key("x-max-length"));
        let retry = &p.queues[2].arguments;
        assert_eq!(retry["x-message-ttl"], int(10_000));
        assert_eq!(retry["x-dead-letter-exchange"], "".into());
        assert_eq!(
            retry["x-dead-letter-routing-key"],
            "logstream.games.app.sec".into()
        );
        let dlq = &p.queues[3].arguments;
        assert_eq!(dlq["x-max-length"], int(7));
        assert_eq!(dlq["x-overflow"], "reject-publish".into());
        assert_eq!(
            p.bindings,
            [
                BindingPlan {
                    exchange: "logstream.games.app".into(),
                    queue: "logstream.games.app.sec".into(),
                    routing_key: "*.auth.*".into(),
                    arguments: Arguments::new(),
                },
                BindingPlan {
                    exchange: "logstream.games.app.dlx".into(),
                    queue: "logstream.games.app.sec.dlq".into(),
                    routing_key: "sec".into(),
                    arguments: Arguments::new(),
                },
            ]
        );
    }

    fn arguments(pairs: &[(&str, ArgValue)]) -> Arguments {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn quorum_queues_get_a_delivery_limit_and_dead_letter_at_least_once() {
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  queueType: quorum\n  outputs:\n    - name: o\n      retry: {maxAttempts: 4}\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &s).unwrap();
        assert_eq!(
            p.queue("o", QueueRole::Main).unwrap().arguments,
            arguments(&[
                ("x-queue-type", "quorum".into()),
                ("x-delivery-limit", int(4)),
                ("x-dead-letter-exchange", "logstream.ns.app.dlx".into()),
                ("x-dead-letter-routing-key", "o".into()),
                ("x-dead-letter-strategy", "at-least-once".into()),
                ("x-overflow", "reject-publish".into()),
            ])
        );
        assert_eq!(
            p.queue("o", QueueRole::Retry(0)).unwrap().arguments,
            arguments(&[
                ("x-queue-type", "quorum".into()),
                ("x-message-ttl", int(1_000)),
                ("x-dead-letter-exchange", "".into()),
                ("x-dead-letter-routing-key", "logstream.ns.app.o".into()),
                ("x-dead-letter-strategy", "at-least-once".into()),
                ("x-overflow", "reject-publish".into()),
            ])
        );
        // The DLQ dead-letters nowhere: it only refuses beyond its bound.
        assert_eq!(
            p.queue("o", QueueRole::DeadLetter).unwrap().arguments,
            arguments(&[
                ("x-queue-type", "quorum".into()),
                ("x-max-length", int(1_000_000)),
                ("x-overflow", "reject-publish".into()),
            ])
        );
        assert_eq!(p.queues_of("o").count(), 5, "default ladder has 3 steps");
    }

    #[test]
    fn classic_queues_have_no_dead_letter_strategy() {
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &s).unwrap();
        assert!(
            p.queues
                .iter()
                .all(|q| !q.arguments.contains_key("x-dead-letter-strategy")),
            "the broker refuses x-dead-letter-strategy on classic queues"
        );
        assert_eq!(
            p.queue("o", QueueRole::Retry(0)).unwrap().arguments,
            arguments(&[
                ("x-queue-type", "classic".into()),
                ("x-message-ttl", int(1_000)),
                ("x-dead-letter-exchange", "".into()),
                ("x-dead-letter-routing-key", "logstream.ns.app.o".into()),
            ])
        );
    }

    fn dead_letter_bindings(p: &TopologyPlan) -> usize {
        p.bindings
            .iter()
            .filter(|b| b.exchange == p.names.dead_letter_exchange())
            .count()
    }

    #[test]
    fn max_backlog_bounds_a_classic_main_queue_and_sends_refused_retries_to_the_dlq() {
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  priority: {levels: 1}\n  outputs:\n    - name: o\n      maxBacklog: 100\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &s).unwrap();
        let main = &p.queue("o", QueueRole::Main).unwrap();
        let args = &main.arguments;
        assert_eq!(args["x-max-length"], int(100));
        assert_eq!(args["x-overflow"], "reject-publish-dlx".into());
        assert_eq!(
            args["x-dead-letter-exchange"],
            "logstream.ns.app.dlx".into()
        );
        assert!(
            !args.contains_key("x-dead-letter-routing-key"),
            "refused logs keep their routing key: {args:?}"
        );
        assert!(
            !args.contains_key("x-max-priority"),
            "one level means no priorities"
        );
        let dlq = &p.queue("o", QueueRole::DeadLetter).unwrap().name;
        let to_dlq: Vec<&str> = p
            .bindings
            .iter()
            .filter(|b| b.exchange == "logstream.ns.app.dlx" && &b.queue == dlq)
            .map(|b| b.routing_key.as_str())
            .collect();
        assert_eq!(to_dlq, [main.name.as_str(), "o"]);

        // Unbounded: the output's dead letters have their own routing key, one binding.
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &s).unwrap();
        let args = &p.queue("o", QueueRole::Main).unwrap().arguments;
        assert!(!args.contains_key("x-overflow") && !args.contains_key("x-max-length"));
        assert_eq!(args["x-dead-letter-routing-key"], "o".into());
        assert_eq!(dead_letter_bindings(&p), 1);
    }

    #[test]
    fn max_backlog_bounds_a_quorum_main_queue_with_reject_publish() {
        let s = spec(
            "  broker: {secretRef: {name: r}}\n  queueType: quorum\n  outputs:\n    - name: o\n      maxBacklog: 100\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &s).unwrap();
        assert_eq!(
            p.queue("o", QueueRole::Main).unwrap().arguments,
            arguments(&[
                ("x-queue-type", "quorum".into()),
                ("x-delivery-limit", int(5)),
                ("x-dead-letter-exchange", "logstream.ns.app.dlx".into()),
                ("x-dead-letter-routing-key", "o".into()),
                ("x-dead-letter-strategy", "at-least-once".into()),
                ("x-max-length", int(100)),
                ("x-overflow", "reject-publish".into()),
            ])
        );
        assert_eq!(dead_letter_bindings(&p), 1);
    }

    #[test]
    fn bindings_follow_the_exchange_type() {
        let topic = spec(
            "  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &topic).unwrap();
        assert_eq!(p.bindings[0].routing_key, "#");

        let fanout = spec(
            "  broker: {secretRef: {name: r}}\n  exchange: {name: logs, type: fanout}\n  outputs:\n    - name: a\n      sink: {stdout: {}}\n    - name: b\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &fanout).unwrap();
        let main: Vec<_> = p.bindings.iter().filter(|b| b.exchange == "logs").collect();
        assert_eq!(main.len(), 2);
        assert!(main.iter().all(|b| b.routing_key.is_empty()));

        let headers = spec(
            "  broker: {secretRef: {name: r}}\n  exchange: {type: headers}\n  outputs:\n    - name: o\n      bindings: [\"level=critical,service=api\"]\n      sink: {stdout: {}}\n",
        );
        let p = plan("ns", "app", &headers).unwrap();
        let args = &p.bindings[0].arguments;
        assert_eq!(args["x-match"], "all".into());
        assert_eq!(args["level"], "critical".into());
        assert_eq!(args["service"], "api".into());
    }

    #[test]
    fn an_invalid_spec_is_not_planned() {
        let direct = spec(
            "  broker: {secretRef: {name: r}}\n  exchange: {type: direct}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n",
        );
        let err = plan("ns", "app", &direct).unwrap_err();
        assert_eq!(err.0[0].path, "spec.outputs[0].bindings");
    }
}
