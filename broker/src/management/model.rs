//! What the management API answers, as LogStream reads it: a queue's statistics, its
//! bindings, an exchange.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One queue's statistics as the management API reports them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Declaration arguments.
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
    /// Ready plus unacknowledged messages.
    #[serde(default)]
    pub messages: Option<u64>,
    /// Messages ready for delivery.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Messages delivered and not acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    /// Quorum queues that dead-letter at least once: dead letters the queue still holds
    /// because their target has not confirmed them yet (it is missing, or full).
    #[serde(default)]
    pub messages_dlx: Option<u64>,
    /// Consumers.
    #[serde(default)]
    pub consumers: Option<u64>,
    /// `timestamp` property of the message at the head (seconds since the epoch); classic
    /// queues only, and only when producers set it.
    #[serde(default)]
    pub head_message_timestamp: Option<i64>,
    /// Rates.
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
    /// Consumers that take deliveries, from the vhost's consumer listing; read only for a
    /// queue that [may count paused workers](Self::may_count_paused_workers) (see
    /// [`ManagementClient::read_consuming`](super::ManagementClient::read_consuming)), `None`
    /// otherwise.
    #[serde(skip)]
    pub consuming: Option<u64>,
}

impl QueueStats {
    /// A queue named `name` with no figures.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: None,
            arguments: BTreeMap::new(),
            messages: None,
            messages_ready: None,
            messages_unacknowledged: None,
            messages_dlx: None,
            consumers: None,
            head_message_timestamp: None,
            message_stats: None,
            consuming: None,
        }
    }

    /// True for a quorum queue with consumers, or whose consumers the sample does not report
    /// yet (RabbitMQ 3.10 reports a new quorum queue's figures only after several seconds). A
    /// worker whose sink is down cancels its consumer and holds what it has; a quorum queue
    /// goes on counting the cancelled consumer while its channel holds deliveries (RabbitMQ
    /// 3.10 and 4.0.5 alike), so only the consumer listing tells a paused worker there. A
    /// classic queue stops counting it at once.
    pub fn may_count_paused_workers(&self) -> bool {
        self.kind.as_deref() == Some("quorum") && self.consumers != Some(0)
    }

    /// Messages published per second, if the broker reported it.
    pub fn publish_rate(&self) -> Option<f64> {
        self.message_stats
            .as_ref()?
            .publish_details
            .as_ref()
            .map(|d| d.rate)
    }

    /// Messages acknowledged per second, if the broker reported it.
    pub fn ack_rate(&self) -> Option<f64> {
        self.message_stats
            .as_ref()?
            .ack_details
            .as_ref()
            .map(|d| d.rate)
    }

    /// Messages delivered per second, if the broker reported it.
    pub fn deliver_rate(&self) -> Option<f64> {
        self.message_stats
            .as_ref()?
            .deliver_get_details
            .as_ref()
            .map(|d| d.rate)
    }

    /// Messages published into the queue since the broker's statistics began: 0 for a queue
    /// that never saw traffic (the broker then reports no `message_stats`).
    pub fn published_total(&self) -> u64 {
        self.message_stats
            .as_ref()
            .and_then(|m| m.publish)
            .unwrap_or(0)
    }

    /// Deliveries (consumed or fetched, redeliveries included) since the broker's statistics
    /// began; 0 for a queue that never saw traffic.
    pub fn delivered_total(&self) -> u64 {
        self.message_stats
            .as_ref()
            .and_then(|m| m.deliver_get)
            .unwrap_or(0)
    }
}

/// Rate figures of a queue, and the cumulative counts the rates are derived from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MessageStats {
    /// Messages published into the queue, cumulative.
    #[serde(default)]
    pub publish: Option<u64>,
    /// Deliveries and gets, cumulative (redeliveries count again).
    #[serde(default)]
    pub deliver_get: Option<u64>,
    /// Publishes.
    #[serde(default)]
    pub publish_details: Option<Rate>,
    /// Acknowledgements.
    #[serde(default)]
    pub ack_details: Option<Rate>,
    /// Deliveries and gets.
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
}

/// One consumer of the vhost's consumer listing, as far as LogStream reads it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ConsumerInfo {
    /// The queue it consumes from.
    pub queue: ConsumerQueue,
}

/// The queue of a [`ConsumerInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ConsumerQueue {
    /// Queue name.
    pub name: String,
}

/// A rate in messages per second.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Rate {
    /// Messages per second.
    pub rate: f64,
}

/// One binding.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BindingInfo {
    /// Source exchange (`""` is the default exchange).
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// Routing key.
    pub routing_key: String,
    /// Binding arguments.
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
}

/// One exchange.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ExchangeInfo {
    /// Exchange name.
    pub name: String,
    /// Exchange type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable or not.
    pub durable: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stats(value: Value) -> QueueStats {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_a_quorum_queue_with_consumers_may_count_paused_workers() {
        let held = json!({"name": "q", "type": "quorum", "consumers": 2,
            "messages_unacknowledged": 400});
        assert!(stats(held.clone()).may_count_paused_workers());
        let mut classic = held.clone();
        classic["type"] = json!("classic");
        assert!(!stats(classic).may_count_paused_workers());
        let mut no_type = held.clone();
        no_type.as_object_mut().unwrap().remove("type");
        assert!(!stats(no_type).may_count_paused_workers());
        let mut unsampled = held.clone();
        unsampled.as_object_mut().unwrap().remove("consumers");
        assert!(stats(unsampled).may_count_paused_workers());
        let mut no_consumer = held;
        no_consumer["consumers"] = json!(0);
        assert!(!stats(no_consumer).may_count_paused_workers());
        assert_eq!(
            stats(json!({"name": "q"})).consuming,
            None,
            "never read from JSON"
        );
    }
}
