//! Failure classification of sink writes: what may succeed later (transient: retried through
//! the ladder) and what never will (permanent: dead-lettered at once).

use logstream_api::contract::ErrorClass;

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
