//! Copies of deliveries, published through the default exchange and confirmed by the broker
//! before the original is ACKed: a failed one to a retry step or the dead-letter queue, with
//! the failure recorded in the `x-logstream-*` headers ([`headers::failure_copy`]); a
//! redelivered one back to the main queue as a suspect ([`suspect_copy`]); a held one back to
//! the main queue unchanged ([`returned_copy`]).

use std::time::Duration;

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, ShortString},
};
use logstream_api::contract::HEADER_ATTEMPT;
use logstream_broker::{
    PublishOutcome,
    headers::{self, HEADER_DELIVERY_COUNT},
    publish_confirmed,
};

use super::retry_ladder::DeliveryHistory;

/// Header marking a suspect: a message the broker redelivered (its worker died holding it),
/// written alone from then on. `0` until its deaths are charged, then `1`. (A worker header;
/// its home is the message contract, `logstream_api::contract`, once the API takes it.)
pub const HEADER_SUSPECT: &str = "x-logstream-suspect";

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
        redelivered: redelivered || count(HEADER_DELIVERY_COUNT).is_some_and(|n| n > 0),
        suspect: count(HEADER_SUSPECT),
    }
}

/// The properties of a copy that goes back to the main queue as it came (a held delivery put
/// back before the broker's consumer timeout): every property and header kept, attempts
/// unchanged, without the broker's `x-delivery-count` and a per-message `expiration`, and with
/// the producer's routing key recorded (the copy travels under the queue's name).
pub fn returned_copy(original: &BasicProperties, routing_key: &str) -> BasicProperties {
    headers::copy_of(original, routing_key, |_| {})
}

/// The properties of a suspect copy of a redelivery: as [`returned_copy`], marked
/// [`HEADER_SUSPECT`] (`charged`: 0 or 1).
pub fn suspect_copy(
    original: &BasicProperties,
    routing_key: &str,
    charged: u32,
) -> BasicProperties {
    headers::copy_of(original, routing_key, |h| {
        h.insert(
            ShortString::from(HEADER_SUSPECT),
            AMQPValue::LongLongInt(i64::from(charged)),
        );
    })
}

/// `properties` (a retry or dead-letter copy's) marked as a charged suspect.
pub fn mark_charged_suspect(properties: BasicProperties) -> BasicProperties {
    let mut h = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    h.insert(ShortString::from(HEADER_SUSPECT), AMQPValue::LongLongInt(1));
    properties.with_headers(FieldTable::from(h))
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
    use logstream_api::contract::HEADER_ORIGIN_ROUTING_KEY;

    use super::*;

    #[test]
    fn history_reads_attempts_redeliveries_and_suspects_of_any_integer_type() {
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
                suspect: None
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
        // A quorum queue's count says "redelivered" even where the flag does not.
        assert!(
            history(
                &with(HEADER_DELIVERY_COUNT, AMQPValue::LongLongInt(2)),
                false
            )
            .redelivered
        );
        assert!(
            !history(
                &with(HEADER_DELIVERY_COUNT, AMQPValue::LongLongInt(0)),
                false
            )
            .redelivered
        );
        assert_eq!(
            history(&with(HEADER_SUSPECT, AMQPValue::ShortShortUInt(1)), false).suspect,
            Some(1)
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

    #[test]
    fn returned_and_suspect_copies_keep_everything_but_the_brokers_count_and_expiry() {
        let mut h = FieldTable::default();
        h.insert(HEADER_ATTEMPT.into(), AMQPValue::LongLongInt(2));
        h.insert(HEADER_DELIVERY_COUNT.into(), AMQPValue::LongLongInt(1));
        h.insert("x-producer".into(), AMQPValue::LongString("kept".into()));
        let original = BasicProperties::default()
            .with_headers(h)
            .with_message_id("m-1".into())
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_expiration("60000".into());
        let returned = returned_copy(&original, "api.error");
        let headers = returned.headers().clone().unwrap();
        assert_eq!(headers::count(&headers, HEADER_ATTEMPT), Some(2));
        assert_eq!(headers::count(&headers, HEADER_DELIVERY_COUNT), None);
        assert_eq!(headers::count(&headers, HEADER_SUSPECT), None);
        assert_eq!(
            headers::string(&headers, "x-producer").as_deref(),
            Some("kept")
        );
        assert_eq!(
            headers::string(&headers, HEADER_ORIGIN_ROUTING_KEY).as_deref(),
            Some("api.error")
        );
        assert_eq!(returned.message_id().as_ref().unwrap().as_str(), "m-1");
        assert_eq!(*returned.priority(), Some(3));
        assert_eq!(*returned.timestamp(), Some(1_700_000_000));
        assert_eq!(*returned.delivery_mode(), Some(2));
        assert!(returned.content_type().is_some());
        assert_eq!(*returned.expiration(), None);

        let suspect = suspect_copy(&original, "api.error", 0);
        let headers = suspect.headers().clone().unwrap();
        assert_eq!(headers::count(&headers, HEADER_SUSPECT), Some(0));
        assert_eq!(
            headers::count(&headers, HEADER_ATTEMPT),
            Some(2),
            "nothing charged"
        );
        let charged = mark_charged_suspect(suspect);
        assert_eq!(
            headers::count(charged.headers().as_ref().unwrap(), HEADER_SUSPECT),
            Some(1)
        );
    }
}
