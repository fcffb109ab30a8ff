//! Failure classification of sink writes: what may succeed later (transient) and what never
//! will (permanent), and whom a failed write blames: the sink (it is down or misconfigured:
//! every log would fail alike) or the logs it carried.

use logstream_api::contract::ErrorClass;

use super::SinkFailure;

/// Statuses that refuse the request for where it went or who sent it, not for what it carried:
/// 401 and 403 (credentials), 404 (a wrong URL). Answered to every log, they mean the sink is
/// misconfigured, not that the logs are bad.
pub const MISCONFIGURED_STATUSES: [u16; 3] = [401, 403, 404];

/// Whom a failed write blames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The sink is down, overloaded or misconfigured: any log would have failed. Charging the
    /// logs an attempt would dead-letter healthy logs during an outage.
    Sink,
    /// The sink answered and refused what it was sent: some log in the batch is bad.
    Logs,
}

/// Whom `failure` of a whole write blames: transient failures (refused connections, timeouts,
/// 408, 429, 5xx) and the misconfiguration statuses blame the sink; other permanent failures
/// (400, 413, 422, ...) blame the logs.
pub fn blame(failure: &SinkFailure) -> Blame {
    let misconfigured = failure
        .status
        .is_some_and(|s| MISCONFIGURED_STATUSES.contains(&s));
    if failure.class == ErrorClass::Transient || misconfigured {
        Blame::Sink
    } else {
        Blame::Logs
    }
}

/// How an HTTP sink's answer settles the logs it carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: written.
    Written,
    /// Not written; `class` says whether trying again may help.
    Failed(ErrorClass),
}

/// Classifies an HTTP status: 2xx written; 408, 429 and 5xx transient (the server is busy,
/// down or timed out); every other status (other 4xx, unexpected 1xx and 3xx) permanent, since
/// sending the same request again gets the same answer.
pub fn http_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Written,
        408 | 429 | 500..=599 => StatusClass::Failed(ErrorClass::Transient),
        _ => StatusClass::Failed(ErrorClass::Permanent),
    }
}

/// The class of a request that got no HTTP answer: refused connections, resets, DNS failures
/// and timeouts are transient; a request that could not even be built is permanent.
pub fn transport_failure(could_not_build_request: bool) -> ErrorClass {
    if could_not_build_request {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_throttling_and_timeouts_are_transient() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert_eq!(
                http_status(status),
                StatusClass::Failed(ErrorClass::Transient),
                "{status}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_permanent() {
        for status in [400, 401, 403, 404, 409, 413, 422, 301, 100] {
            assert_eq!(
                http_status(status),
                StatusClass::Failed(ErrorClass::Permanent),
                "{status}"
            );
        }
    }

    #[test]
    fn outages_and_misconfiguration_blame_the_sink_other_refusals_the_logs() {
        let answered = |class, status| SinkFailure {
            class,
            reason: String::new(),
            status: Some(status),
        };
        assert_eq!(blame(&SinkFailure::transient("refused")), Blame::Sink);
        for status in [503, 429, 408] {
            assert_eq!(blame(&answered(ErrorClass::Transient, status)), Blame::Sink);
        }
        for status in MISCONFIGURED_STATUSES {
            assert_eq!(blame(&answered(ErrorClass::Permanent, status)), Blame::Sink);
        }
        for status in [400, 409, 413, 422] {
            assert_eq!(blame(&answered(ErrorClass::Permanent, status)), Blame::Logs);
        }
        assert_eq!(blame(&SinkFailure::permanent("not JSON")), Blame::Logs);
    }

    #[test]
    fn success_is_any_2xx() {
        for status in [200, 201, 202, 204] {
            assert_eq!(http_status(status), StatusClass::Written);
        }
    }

    #[test]
    fn requests_without_an_answer_are_transient_unless_unbuildable() {
        assert_eq!(transport_failure(false), ErrorClass::Transient);
        assert_eq!(transport_failure(true), ErrorClass::Permanent);
    }
}
