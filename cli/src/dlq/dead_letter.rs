//! A dead letter as a person reads it (reason, class, attempts, first failure, routing key,
//! body) and the replay filters. Pure; the headers are read with the broker crate's codec.

use lapin::{BasicProperties, types::FieldTable};
use logstream_api::contract::{
    ErrorClass, HEADER_ATTEMPT, HEADER_ERROR, HEADER_ERROR_CLASS, HEADER_FIRST_FAILED_AT,
    HEADER_REPLAY_COUNT,
};
use logstream_broker::headers::{self, deaths, origin_routing_key};
use serde::Serialize;

/// Characters of the body `dlq list` shows in its table.
pub const PREVIEW_CHARS: usize = 60;

/// What a dead letter says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The producer's message id.
    pub message_id: Option<String>,
    /// The last failure, in words.
    pub error: Option<String>,
    /// The last failure's class.
    pub class: Option<String>,
    /// Failed attempts.
    pub attempts: Option<i64>,
    /// When the first attempt failed.
    pub first_failed_at: Option<String>,
    /// The routing key to replay with, if one is known.
    pub routing_key: Option<String>,
    /// Replays so far.
    pub replay_count: i64,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl DeadLetter {
    /// Reads a dead letter of the output whose main queue is `main_queue`; queue names of the
    /// pipeline start with `prefix` (they are never an application's routing key).
    pub fn read(properties: &BasicProperties, body: &[u8], main_queue: &str, prefix: &str) -> Self {
        let empty = FieldTable::default();
        let headers = properties.headers().as_ref().unwrap_or(&empty);
        Self {
            message_id: properties.message_id().as_ref().map(|s| s.to_string()),
            error: error(headers, main_queue),
            class: headers::string(headers, HEADER_ERROR_CLASS),
            attempts: headers::int(headers, HEADER_ATTEMPT),
            first_failed_at: headers::string(headers, HEADER_FIRST_FAILED_AT),
            routing_key: origin_routing_key(headers, main_queue, prefix),
            replay_count: headers::int(headers, HEADER_REPLAY_COUNT).unwrap_or(0),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The body on one line, cut to `chars` characters.
    pub fn preview(&self, chars: usize) -> String {
        one_line(&self.body, chars)
    }
}

/// `text` on one line (control characters become spaces), cut to `chars` characters with an
/// ellipsis.
pub fn one_line(text: &str, chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Which dead letters a replay takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    reason: Option<String>,
    class: Option<ErrorClass>,
}

impl Filter {
    /// Dead letters whose error contains `reason` (case-insensitive) and whose class is
    /// `class`; `None` matches everything.
    pub fn new(reason: Option<&str>, class: Option<ErrorClass>) -> Self {
        Self {
            reason: reason.map(str::to_lowercase),
            class,
        }
    }

    /// True when `letter` passes every filter given.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let reason_ok = self.reason.as_ref().is_none_or(|wanted| {
            letter
                .error
                .as_ref()
                .is_some_and(|e| e.to_lowercase().contains(wanted))
        });
        let class_ok = self
            .class
            .is_none_or(|wanted| letter.class.as_deref() == Some(wanted.as_str()));
        reason_ok && class_ok
    }
}

/// The last failure in words: the worker's; and first, when the broker moved the letter here
/// because the main queue was full (`maxBacklog`) as the letter's retry wait ended, that (it
/// did not run out of attempts).
fn error(headers: &FieldTable, main_queue: &str) -> Option<String> {
    let worker = headers::string(headers, HEADER_ERROR);
    let Some(latest) = deaths(headers).next() else {
        return worker;
    };
    if headers::string(latest, "queue").as_deref() != Some(main_queue)
        || headers::string(latest, "reason").as_deref() != Some("maxlen")
    {
        return worker;
    }
    Some(match worker {
        Some(e) => {
            format!("main queue full (maxBacklog) when its retry wait ended; last error: {e}")
        }
        None => "main queue full (maxBacklog)".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldArray};
    use logstream_api::contract::HEADER_ORIGIN_ROUTING_KEY;
    use logstream_broker::headers::X_DEATH;

    use super::*;

    const MAIN: &str = "logstream.ns.app.out";
    const PREFIX: &str = "logstream.ns.app.";

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    fn death_for(reason: &str, queue: &str, keys: &[&str]) -> AMQPValue {
        AMQPValue::FieldTable(table(&[
            ("queue", text(queue)),
            ("reason", text(reason)),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(
                    keys.iter().map(|k| text(k)).collect::<Vec<_>>(),
                )),
            ),
        ]))
    }

    fn worker_dead_letter() -> BasicProperties {
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_headers(table(&[
                (HEADER_ATTEMPT, AMQPValue::LongLongInt(5)),
                (
                    HEADER_ERROR,
                    text("sink answered HTTP 503 Service Unavailable"),
                ),
                (HEADER_ERROR_CLASS, text("transient")),
                (HEADER_FIRST_FAILED_AT, text("2026-05-01T12:00:00Z")),
                (HEADER_ORIGIN_ROUTING_KEY, text("api.critical")),
                ("trace-id", text("t-9")),
            ]))
    }

    #[test]
    fn a_worker_dead_letter_reads_as_reason_class_attempts_and_key() {
        let letter = DeadLetter::read(&worker_dead_letter(), b"{\"message\":\"x\"}", MAIN, PREFIX);
        assert_eq!(
            letter,
            DeadLetter {
                message_id: Some("m-1".into()),
                error: Some("sink answered HTTP 503 Service Unavailable".into()),
                class: Some("transient".into()),
                attempts: Some(5),
                first_failed_at: Some("2026-05-01T12:00:00Z".into()),
                routing_key: Some("api.critical".into()),
                replay_count: 0,
                body: "{\"message\":\"x\"}".into(),
            }
        );
    }

    #[test]
    fn a_retry_the_full_main_queue_moved_here_says_so_before_its_last_error() {
        let mut headers = worker_dead_letter().headers().clone().unwrap();
        headers.insert(
            X_DEATH.into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death_for("maxlen", MAIN, &[MAIN]),
                death_for("expired", "logstream.ns.app.out.retry.0", &[]),
            ])),
        );
        let properties = worker_dead_letter().with_headers(headers.clone());
        let letter = DeadLetter::read(&properties, b"", MAIN, PREFIX);
        assert_eq!(
            letter.error.as_deref(),
            Some(
                "main queue full (maxBacklog) when its retry wait ended; last error: sink answered HTTP 503 Service Unavailable"
            )
        );
        assert!(Filter::new(Some("maxbacklog"), None).matches(&letter));
        assert_eq!(letter.routing_key.as_deref(), Some("api.critical"));

        let mut without_error = headers.inner().clone();
        without_error.remove(HEADER_ERROR);
        let letter = DeadLetter::read(
            &BasicProperties::default().with_headers(FieldTable::from(without_error)),
            b"",
            MAIN,
            PREFIX,
        );
        assert_eq!(
            letter.error.as_deref(),
            Some("main queue full (maxBacklog)")
        );

        // An older death of that kind is history: the latest is what moved it here.
        let headers = table(&[
            (HEADER_ERROR, text("bad JSON")),
            (
                X_DEATH,
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death_for("rejected", MAIN, &[MAIN]),
                    death_for("maxlen", MAIN, &[MAIN]),
                ])),
            ),
        ]);
        let letter = DeadLetter::read(
            &BasicProperties::default().with_headers(headers),
            b"",
            MAIN,
            PREFIX,
        );
        assert_eq!(letter.error.as_deref(), Some("bad JSON"));
    }

    #[test]
    fn filters_match_reason_substring_and_class() {
        let letter = DeadLetter::read(&worker_dead_letter(), b"", MAIN, PREFIX);
        assert!(Filter::default().matches(&letter));
        assert!(Filter::new(Some("http 503"), None).matches(&letter));
        assert!(!Filter::new(Some("timeout"), None).matches(&letter));
        assert!(Filter::new(None, Some(ErrorClass::Transient)).matches(&letter));
        assert!(!Filter::new(Some("503"), Some(ErrorClass::Permanent)).matches(&letter));
        let bare = DeadLetter::read(&BasicProperties::default(), b"", MAIN, PREFIX);
        assert!(!Filter::new(Some("503"), None).matches(&bare));
        assert!(!Filter::new(None, Some(ErrorClass::Transient)).matches(&bare));
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        let letter = DeadLetter::read(&BasicProperties::default(), "a\nb".as_bytes(), MAIN, PREFIX);
        assert_eq!(letter.preview(10), "a b");
        let long = DeadLetter::read(
            &BasicProperties::default(),
            "x".repeat(100).as_bytes(),
            MAIN,
            PREFIX,
        );
        let shown = long.preview(10);
        assert_eq!(shown.chars().count(), 10);
        assert!(shown.ends_with('…'));
    }
}
