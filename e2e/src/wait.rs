//! Waiting on a condition with a deadline: poll, and fail with the last observation when the
//! deadline passes.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_secs(2);

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
pub struct Timeout {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub waited: Duration,
    /// The last observation (or error) of the condition.
    pub last: String,
}

/// Polls `check` every `interval` until it returns `Ok(Ok(value))` or `timeout` passes;
/// `Ok(Err(observation))` and errors mean "not yet", and the last one is kept for the timeout
/// message.
pub fn until<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<Result<T, String>, E>,
) -> Result<T, Timeout> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(seen)) => seen,
            Err(e) => format!("error: {e}"),
        };
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Timeout {
                what: what.to_owned(),
                waited,
                last,
            });
        }
        std::thread::sleep(interval.min(timeout - waited));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds_and_reports_the_last_observation_on_timeout() {
        let mut n = 0;
        let got = until::<_, String>(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                Ok(if n >= 3 { Ok(n) } else { Err(format!("n={n}")) })
            },
        );
        assert_eq!(got.unwrap(), 3);
        let err = until::<(), String>(
            "never",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || Ok(Err("still no".into())),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("timed out after"));
        assert!(
            err.to_string()
                .ends_with("waiting for never; last seen: still no")
        );
    }
}
