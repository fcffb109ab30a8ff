//! Copies of failed deliveries: to a retry step or to the dead-letter queue, through the
//! default exchange, with the failure recorded in the `x-logstream-*` headers
//! ([`headers::failure_copy`]), and confirmed by the broker before the original is ACKed.

use std::time::Duration;

use lapin::{BasicProperties, Channel};
use logstream_api::contract::HEADER_ATTEMPT;
use logstream_broker::{
    PublishOutcome,
    headers::{self, HEADER_DELIVERY_COUNT},
    publish_confirmed,
};

use super::retry_ladder::DeliveryHistory;

/// Reads what a delivery's headers and flags say about its past.
pub fn history(properties: &BasicProperties, redelivered: bool) -> DeliveryHistory {
    let count = |name: &str| {
        properties
            .headers()
            .as_ref()
            .and_then(|h| headers::count(h, name))
    };
    DeliveryHistory {
        recorded_failures: count(HEADER_ATTEMPT).unwrap_or(0),
        redelivered,
        delivery_count: count(HEADER_DELIVERY_COUNT),
    }
}

/// Publishes copies on a channel in confirm mode.
#[derive(Clone, Debug)]
pub struct Republisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Republisher {
    /// Uses `channel`, which must be in confirm mode; a confirm that takes longer than
    /// `confirm_timeout` is [`PublishOutcome::Unconfirmed`].
    pub fn new(channel: Channel, confirm_timeout: Duration) -> Self {
        Self {
            channel,
            confirm_timeout,
        }
    }

    /// True while the channel is open.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes `body` to `queue` through the default exchange and waits for the confirm.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> PublishOutcome {
        publish_confirmed(
            &self.channel,
            "",
            queue,
            body,
            properties,
            self.confirm_timeout,
        )
        .await
        .unwrap_or_else(|e| PublishOutcome::Lost {
            reason: e.to_string(),
            after_close: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;

    #[test]
    fn history_reads_attempts_and_delivery_counts_of_any_integer_type() {
        let with = |name: &str, value| {
            let mut h = FieldTable::default();
            h.insert(name.into(), value);
            BasicProperties::default().with_headers(h)
        };
        assert_eq!(
            history(&with(HEADER_ATTEMPT, AMQPValue::LongInt(3)), false),
            DeliveryHistory {
                recorded_failures: 3,
                redelivered: false,
                delivery_count: None
            }
        );
        assert_eq!(
            history(
                &with(HEADER_ATTEMPT, AMQPValue::LongString("4".into())),
                true
            )
            .recorded_failures,
            4
        );
        assert_eq!(
            history(
                &with(HEADER_DELIVERY_COUNT, AMQPValue::LongLongInt(2)),
                true
            )
            .delivery_count,
            Some(2)
        );
        assert_eq!(
            history(&with(HEADER_ATTEMPT, AMQPValue::LongInt(-1)), false).recorded_failures,
            0
        );
        assert_eq!(
            history(&BasicProperties::default(), false),
            DeliveryHistory::default()
        );
    }
}
