//! The header codec of LogStream's messages: the `x-logstream-*` failure record a worker
//! writes on a retry or dead-letter copy, the replay counter `dlq replay` adds, and what the
//! broker writes (`x-death`, `x-delivery-count`). Numbers are read whatever integer type (or
//! numeric string) a producer in another language used. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use logstream_api::contract::{
    DELIVERY_MODE_PERSISTENT, ErrorClass, HEADER_ATTEMPT, HEADER_ERROR, HEADER_ERROR_CLASS,
    HEADER_FIRST_FAILED_AT, HEADER_ORIGIN_ROUTING_KEY, HEADER_REPLAY_COUNT,
};

/// The broker's dead-lettering history header.
pub const X_DEATH: &str = "x-death";
/// The quorum queue header counting deliveries that ended unsettled.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";
/// Longest `x-logstream-error` value; longer reasons (a sink's error page) are cut.
pub const MAX_REASON_BYTES: usize = 1024;

/// Headers a replayed copy loses so that it starts fresh: LogStream's failure record and the
/// broker's dead-lettering history (`x-death` would otherwise keep growing and be counted).
pub const CLEARED_ON_REPLAY: [&str; 8] = [
    HEADER_ATTEMPT,
    HEADER_ERROR,
    HEADER_ERROR_CLASS,
    HEADER_FIRST_FAILED_AT,
    X_DEATH,
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
];

/// Why a delivery is copied to a retry step or the dead-letter queue.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The failure's class.
    pub class: ErrorClass,
    /// The failure in words.
    pub reason: &'a str,
    /// Failed attempts so far, this one included.
    pub attempt: u32,
}

/// Header `key` as text (long or short string, or UTF-8 bytes).
pub fn string(headers: &FieldTable, key: &str) -> Option<String> {
    headers.inner().get(key).and_then(value_string)
}

/// Header `key` as a number, whatever its integer type; a numeric string counts too.
pub fn int(headers: &FieldTable, key: &str) -> Option<i64> {
    headers.inner().get(key).and_then(value_int)
}

/// Header `key` as a count: negative values are 0, values beyond `u32` are `u32::MAX`.
pub fn count(headers: &FieldTable, key: &str) -> Option<u32> {
    int(headers, key).map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A header value as text.
pub fn value_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

/// A header value as a number.
pub fn value_int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        // Producers in other languages sometimes send numbers as strings.
        AMQPValue::LongString(s) => s.to_string().trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// The broker's `x-death` records of a message, most recent first.
pub fn deaths(headers: &FieldTable) -> impl DoubleEndedIterator<Item = &FieldTable> {
    let all = match headers.inner().get(X_DEATH) {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice(),
        _ => &[],
    };
    all.iter().filter_map(|death| match death {
        AMQPValue::FieldTable(death) => Some(death),
        _ => None,
    })
}

/// The routing key the producer used: the worker's `x-logstream-origin-routing-key`, else the
/// oldest key the broker recorded in `x-death` when it dead-lettered the message from the main
/// queue, skipping the pipeline's own queue names (the keys of the retry ladder).
pub fn origin_routing_key(headers: &FieldTable, main_queue: &str, prefix: &str) -> Option<String> {
    if let Some(key) = string(headers, HEADER_ORIGIN_ROUTING_KEY) {
        return Some(key);
    }
    // The producer's key is on the oldest death.
    deaths(headers).rev().find_map(|death| {
        if string(death, "queue").as_deref() != Some(main_queue) {
            return None;
        }
        let Some(AMQPValue::FieldArray(keys)) = death.inner().get("routing-keys") else {
            return None;
        };
        keys.as_slice()
            .iter()
            .filter_map(value_string)
            .find(|key| !key.starts_with(prefix))
    })
}

/// The properties of a copy of a delivery (published by the producer with `routing_key`).
pub fn failure_copy(
    original: &BasicProperties,
    routing_key: &str,
    failure: &Failure<'_>,
    now: Timestamp,
) -> BasicProperties {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    copy_of(original, routing_key, |headers| {
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
    })
    .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
}

/// The properties of a copy of a delivery the producer published with `routing_key`: every
/// property but `expiration` (a copy must not expire where the original would not have), the
/// headers without the broker's `x-delivery-count`, with the producer's routing key recorded
/// (the copy travels under a queue's name), then changed by `edit`.
pub fn copy_of(
    original: &BasicProperties,
    routing_key: &str,
    edit: impl FnOnce(&mut BTreeMap<ShortString, AMQPValue>),
) -> BasicProperties {
    let mut headers = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    headers.remove(HEADER_DELIVERY_COUNT);
    headers
        .entry(ShortString::from(HEADER_ORIGIN_ROUTING_KEY))
        .or_insert_with(|| AMQPValue::LongString(LongString::from(routing_key)));
    edit(&mut headers);
    let mut p = BasicProperties::default().with_headers(FieldTable::from(headers));
    if let Some(v) = original.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = original.delivery_mode() {
        p = p.with_delivery_mode(*v);
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

/// The properties of a replayed copy: the original's (priority, message id, timestamp, ...),
/// without the failure headers, with the replay counter one higher, and with the origin routing
/// key recorded so a later dead-lettering still knows it.
pub fn replay_copy(original: &BasicProperties, routing_key: &str) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    let replays = headers
        .get(HEADER_REPLAY_COUNT)
        .and_then(value_int)
        .unwrap_or(0);
    headers.retain(|k, _| !CLEARED_ON_REPLAY.contains(&k.as_str()));
    headers.insert(
        HEADER_REPLAY_COUNT.into(),
        AMQPValue::LongLongInt(replays.saturating_add(1)),
    );
    headers.insert(
        HEADER_ORIGIN_ROUTING_KEY.into(),
        AMQPValue::LongString(LongString::from(routing_key)),
    );
    original.clone().with_headers(FieldTable::from(headers))
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    const MAIN: &str = "logstream.ns.app.out";
    const PREFIX: &str = "logstream.ns.app.";

    fn table_entries(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    fn death(queue: &str, keys: &[&str]) -> AMQPValue {
        death_for("rejected", queue, keys)
    }

    fn death_for(reason: &str, queue: &str, keys: &[&str]) -> AMQPValue {
        AMQPValue::FieldTable(table_entries(&[
            ("queue", long(queue)),
            ("reason", long(reason)),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(
                    keys.iter().map(|k| long(k)).collect::<Vec<_>>(),
                )),
            ),
        ]))
    }

    fn worker_dead_letter() -> BasicProperties {
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_headers(table_entries(&[
                (HEADER_ATTEMPT, AMQPValue::LongLongInt(5)),
                (
                    HEADER_ERROR,
                    long("sink answered HTTP 503 Service Unavailable"),
                ),
                (HEADER_ERROR_CLASS, long("transient")),
                (HEADER_FIRST_FAILED_AT, long("2026-05-01T12:00:00Z")),
                (HEADER_ORIGIN_ROUTING_KEY, long("api.critical")),
                ("trace-id", long("t-9")),
            ]))
    }

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
        let copy = failure_copy(&producer_properties(), "api.critical", &failure, now);
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
        let copy1 = failure_copy(&producer_properties(), "api.info", &f1, first);
        // Back from the retry queue, the delivery's routing key is the main queue's name.
        let f2 = Failure {
            class: ErrorClass::Permanent,
            reason: "400",
            attempt: 2,
        };
        let copy2 = failure_copy(&copy1, "logstream.ns.app.out", &f2, later);
        assert_eq!(text(&copy2, HEADER_FIRST_FAILED_AT), "2024-05-01T10:00:00Z");
        assert_eq!(text(&copy2, HEADER_ORIGIN_ROUTING_KEY), "api.info");
        assert_eq!(text(&copy2, HEADER_ERROR_CLASS), "permanent");
        assert_eq!(
            count(copy2.headers().as_ref().unwrap(), HEADER_ATTEMPT),
            Some(2)
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_BYTES);
        let failure = Failure {
            class: ErrorClass::Permanent,
            reason: &reason,
            attempt: 1,
        };
        let copy = failure_copy(
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
    fn without_the_origin_header_the_key_comes_from_the_main_queue_death() {
        // Most recent first: the main queue's second death (after a retry, keyed by the main
        // queue's own name), the retry step, then the main queue's first death.
        let headers = table_entries(&[(
            X_DEATH,
            AMQPValue::FieldArray(FieldArray::from(vec![
                death(MAIN, &["logstream.ns.app.out"]),
                death(
                    "logstream.ns.app.out.retry.0",
                    &["logstream.ns.app.out.retry.0"],
                ),
                death(MAIN, &["game.auth.error"]),
            ])),
        )]);
        assert_eq!(
            origin_routing_key(&headers, MAIN, PREFIX).as_deref(),
            Some("game.auth.error")
        );
        let only_ladder = table_entries(&[(
            X_DEATH,
            AMQPValue::FieldArray(FieldArray::from(vec![death(
                "logstream.ns.app.out.retry.0",
                &["logstream.ns.app.out.retry.0"],
            )])),
        )]);
        assert_eq!(origin_routing_key(&only_ladder, MAIN, PREFIX), None);
        assert_eq!(
            origin_routing_key(&FieldTable::default(), MAIN, PREFIX),
            None
        );
    }

    #[test]
    fn a_replayed_copy_starts_fresh_and_counts_the_replay() {
        let mut original = worker_dead_letter();
        let mut headers = original.headers().clone().unwrap();
        headers.insert(X_DEATH.into(), AMQPValue::FieldArray(FieldArray::default()));
        headers.insert(HEADER_REPLAY_COUNT.into(), AMQPValue::LongInt(2));
        original = original.with_headers(headers);

        let copy = replay_copy(&original, "api.critical");
        let h = copy.headers().as_ref().unwrap().inner();
        for cleared in CLEARED_ON_REPLAY {
            assert!(!h.contains_key(cleared), "{cleared} kept");
        }
        assert_eq!(h[HEADER_REPLAY_COUNT], AMQPValue::LongLongInt(3));
        assert_eq!(h[HEADER_ORIGIN_ROUTING_KEY], long("api.critical"));
        assert_eq!(h["trace-id"], long("t-9"));
        assert_eq!(copy.message_id(), original.message_id());
        assert_eq!(copy.priority(), &Some(3));
        assert_eq!(copy.timestamp(), &Some(1_700_000_000));

        let first = replay_copy(&BasicProperties::default(), "a.info");
        let h = first.headers().as_ref().unwrap().inner();
        assert_eq!(h[HEADER_REPLAY_COUNT], AMQPValue::LongLongInt(1));
    }

    #[test]
    fn numbers_are_read_whatever_their_integer_type() {
        let with = |value| table_of(&[("n", value)]);
        for (value, expected) in [
            (AMQPValue::LongInt(3), Some(3)),
            (AMQPValue::ShortShortUInt(7), Some(7)),
            (AMQPValue::LongLongInt(-1), Some(-1)),
            (AMQPValue::LongString("4".into()), Some(4)),
            (AMQPValue::ShortString(" 5 ".into()), Some(5)),
            (AMQPValue::Boolean(true), None),
        ] {
            assert_eq!(int(&with(value.clone()), "n"), expected, "{value:?}");
        }
        assert_eq!(count(&with(AMQPValue::LongInt(-1)), "n"), Some(0));
        assert_eq!(
            count(&with(AMQPValue::LongLongInt(i64::MAX)), "n"),
            Some(u32::MAX)
        );
        assert_eq!(count(&FieldTable::default(), "n"), None);
    }

    fn table_of(entries: &[(&str, AMQPValue)]) -> FieldTable {
        table_entries(entries)
    }
}
