//! Copies of failed deliveries: to a retry step or to the dead-letter queue, through the
//! default exchange, with the `x-logstream-*` headers, and confirmed by the broker before the
//! original is ACKed.
//!
//! A copy keeps the original's properties (priority, message id, timestamp, content type and
//! the producer's headers), is persistent, and drops what must not travel with it: a
//! per-message `expiration` (it would silently drop the copy from the DLQ) and the quorum
//! queue's `x-delivery-count` (the copy is a new message; its failures are in
//! `x-logstream-attempt`).

use std::time::Duration;

use jiff::Timestamp;
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use logstream_api::contract::{
    DELIVERY_MODE_PERSISTENT, ErrorClass, HEADER_ATTEMPT, HEADER_ERROR, HEADER_ERROR_CLASS,
    HEADER_FIRST_FAILED_AT, HEADER_ORIGIN_ROUTING_KEY,
};

use crate::retry_ladder::DeliveryHistory;

/// The quorum queue header counting deliveries that ended unsettled.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";
/// Longest `x-logstream-error` value; longer reasons (a sink's error page) are cut.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a delivery is republished.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The failure's class.
    pub class: ErrorClass,
    /// The failure in words.
    pub reason: &'a str,
    /// Failed attempts so far, this one included.
    pub attempt: u32,
}

/// Reads what a delivery's headers and flags say about its past.
pub fn history(properties: &BasicProperties, redelivered: bool) -> DeliveryHistory {
    let headers = properties.headers().as_ref();
    let int = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_u32);
    DeliveryHistory {
        recorded_failures: int(HEADER_ATTEMPT).unwrap_or(0),
        redelivered,
        delivery_count: int(HEADER_DELIVERY_COUNT),
    }
}

/// The properties of a copy of a delivery (published by the producer with `routing_key`).
pub fn copy_properties(
    original: &BasicProperties,
    routing_key: &str,
    failure: &Failure<'_>,
    now: Timestamp,
) -> BasicProperties {
    let mut headers = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    headers.remove(HEADER_DELIVERY_COUNT);
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    headers.insert(
        ShortString::from(HEADER_ATTEMPT),
        AMQPValue::LongLongInt(i64::from(failure.attempt)),
    );
    headers.insert(
        ShortString::from(HEADER_ERROR),
        text(truncate(failure.reason, MAX_REASON_BYTES)),
    );
    headers.insert(
        ShortString::from(HEADER_ERROR_CLASS),
        text(failure.class.as_str()),
    );
    headers
        .entry(ShortString::from(HEADER_FIRST_FAILED_AT))
        .or_insert_with(|| text(&now.to_string()));
    headers
        .entry(ShortString::from(HEADER_ORIGIN_ROUTING_KEY))
        .or_insert_with(|| text(routing_key));

    let mut p = BasicProperties::default()
        .with_headers(FieldTable::from(headers))
        .with_delivery_mode(DELIVERY_MODE_PERSISTENT);
    if let Some(v) = original.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = original.priority() {
        p = p.with_priority(*v);
    }
    if let Some(v) = original.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = original.reply_to() {
        p = p.with_reply_to(v.clone());
    }
    if let Some(v) = original.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = original.user_id() {
        p = p.with_user_id(v.clone());
    }
    if let Some(v) = original.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = original.cluster_id() {
        p = p.with_cluster_id(v.clone());
    }
    p
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n.max(0)).ok().or(Some(u32::MAX))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why a copy was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The broker answered with a negative confirm (e.g. a full DLQ with `reject-publish`) or
    /// returned the copy as unroutable (the queue does not exist).
    #[error("failed to publish a copy to queue {queue}: the broker refused it ({reason})")]
    Refused {
        /// Target queue.
        queue: String,
        /// What the broker said.
        reason: String,
    },
    /// No confirm came in time.
    #[error("failed to publish a copy to queue {queue}: no confirm within {timeout:?}")]
    Unconfirmed {
        /// Target queue.
        queue: String,
        /// How long the worker waited.
        timeout: Duration,
    },
    /// The channel or connection failed.
    #[error("failed to publish a copy to queue {queue}: {source}")]
    Channel {
        /// Target queue.
        queue: String,
        /// The AMQP error.
        source: lapin::Error,
    },
}

/// Publishes copies on a channel in confirm mode.
#[derive(Clone, Debug)]
pub struct Republisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Republisher {
    /// Uses `channel`, which must be in confirm mode; a confirm that takes longer than
    /// `confirm_timeout` counts as a refusal.
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
    ) -> Result<(), CopyError> {
        let channel_error = |source| CopyError::Channel {
            queue: queue.to_owned(),
            source,
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                options,
                body,
                properties,
            )
            .await
            .map_err(channel_error)?;
        let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| CopyError::Unconfirmed {
                queue: queue.to_owned(),
                timeout: self.confirm_timeout,
            })?
            .map_err(channel_error)?;
        let refused = |reason: String| CopyError::Refused {
            queue: queue.to_owned(),
            reason,
        };
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(refused(format!(
                "returned as unroutable: {}",
                returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(refused(
                "negative confirm; a full queue with x-overflow=reject-publish refuses publishes"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(p: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
        p.headers().as_ref()?.inner().get(name)
    }

    fn text(p: &BasicProperties, name: &str) -> String {
        match header(p, name) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("{name}: {other:?}"),
        }
    }

    fn producer_properties() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("trace-id".into(), AMQPValue::LongString("abc".into()));
        headers.insert(HEADER_DELIVERY_COUNT.into(), AMQPValue::LongInt(2));
        BasicProperties::default()
            .with_priority(3)
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_expiration("60000".into())
            .with_app_id("api".into())
            .with_headers(headers)
    }

    #[test]
    fn a_copy_keeps_the_originals_properties_and_records_the_failure() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        let failure = Failure {
            class: ErrorClass::Transient,
            reason: "sink answered 503",
            attempt: 1,
        };
        let copy = copy_properties(&producer_properties(), "api.critical", &failure, now);
        assert_eq!(copy.priority(), &Some(3));
        assert_eq!(copy.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(copy.timestamp(), &Some(1_700_000_000));
        assert_eq!(
            copy.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(copy.app_id().as_ref().map(|s| s.as_str()), Some("api"));
        assert_eq!(copy.delivery_mode(), &Some(2), "copies are persistent");
        assert_eq!(copy.expiration(), &None, "a TTL would drop the copy");
        assert_eq!(header(&copy, HEADER_DELIVERY_COUNT), None);
        assert_eq!(text(&copy, "trace-id"), "abc");
        assert_eq!(
            header(&copy, HEADER_ATTEMPT),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert_eq!(text(&copy, HEADER_ERROR), "sink answered 503");
        assert_eq!(text(&copy, HEADER_ERROR_CLASS), "transient");
        assert_eq!(text(&copy, HEADER_FIRST_FAILED_AT), "2024-05-01T10:00:00Z");
        assert_eq!(text(&copy, HEADER_ORIGIN_ROUTING_KEY), "api.critical");
    }

    #[test]
    fn later_copies_keep_the_first_failure_time_and_the_producers_routing_key() {
        let first: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
        let later: Timestamp = "2024-05-01T10:05:00Z".parse().unwrap();
        let f1 = Failure {
            class: ErrorClass::Transient,
            reason: "503",
            attempt: 1,
        };
        let copy1 = copy_properties(&producer_properties(), "api.info", &f1, first);
        // Back from the retry queue, the delivery's routing key is the main queue's name.
        let f2 = Failure {
            class: ErrorClass::Permanent,
            reason: "400",
            attempt: 2,
        };
        let copy2 = copy_properties(&copy1, "logstream.ns.app.out", &f2, later);
        assert_eq!(text(&copy2, HEADER_FIRST_FAILED_AT), "2024-05-01T10:00:00Z");
        assert_eq!(text(&copy2, HEADER_ORIGIN_ROUTING_KEY), "api.info");
        assert_eq!(text(&copy2, HEADER_ERROR_CLASS), "permanent");
        assert_eq!(history(&copy2, false).recorded_failures, 2);
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_BYTES);
        let failure = Failure {
            class: ErrorClass::Permanent,
            reason: &reason,
            attempt: 1,
        };
        let copy = copy_properties(
            &BasicProperties::default(),
            "k",
            &failure,
            Timestamp::UNIX_EPOCH,
        );
        let kept = text(&copy, HEADER_ERROR);
        assert_eq!(kept.len(), MAX_REASON_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));
    }

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
