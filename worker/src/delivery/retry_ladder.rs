//! Attempt arithmetic: how many deliveries of a message have failed, and where a failed one
//! goes next (a retry step or the dead-letter queue).
//!
//! `maxAttempts` counts deliveries. A message is dead-lettered at the failure of delivery
//! number `maxAttempts`; failure number `n` (1-based) waits in retry step `min(n - 1, steps - 1)`.
//! A broker redelivery is a failed attempt of its own (class `redelivered`): the worker that
//! held the message died, maybe because of the message. Quorum queues count those in the
//! `x-delivery-count` header; classic queues only set the `redelivered` flag, which cannot
//! count, so such a delivery is *restamped*: republished to the ladder with the failure
//! recorded in `x-logstream-attempt`, and not written. Either way a message that kills every
//! worker reaches the dead-letter queue after at most `maxAttempts` writes.

use logstream_api::contract::ErrorClass;

/// What a delivery says about its past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryHistory {
    /// `x-logstream-attempt`: failed attempts recorded by the workers that republished it.
    pub recorded_failures: u32,
    /// The broker's `redelivered` flag.
    pub redelivered: bool,
    /// `x-delivery-count` (quorum queues): deliveries of this copy that ended unsettled.
    pub delivery_count: Option<u32>,
}

/// Where a failed attempt sends the message: the next retry step, or the dead-letter queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Republish to retry step `step` with `x-logstream-attempt` = `attempt`.
    Retry {
        /// 0-based retry step.
        step: usize,
        /// Failed attempts so far, including this one.
        attempt: u32,
    },
    /// Republish to the dead-letter queue with `x-logstream-attempt` = `attempt`.
    DeadLetter {
        /// Failed attempts so far, including this one.
        attempt: u32,
    },
}

impl Route {
    /// Failed attempts recorded on the copy.
    pub fn attempt(self) -> u32 {
        match self {
            Self::Retry { attempt, .. } | Self::DeadLetter { attempt } => attempt,
        }
    }
}

/// What to do with a delivery before writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Write it; `failed_before` attempts failed before this one (it is delivery number
    /// `failed_before + 1`).
    Process {
        /// Failed attempts before this delivery.
        failed_before: u32,
    },
    /// A broker redelivery: do not write it; republish it where the [`Route`] says (class
    /// `redelivered`) so that the failed attempt is counted.
    Redelivered(Route),
}

/// One output's retry ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ladder {
    max_attempts: u32,
    steps: usize,
}

impl Ladder {
    /// A ladder of `steps` retry queues for messages allowed `max_attempts` deliveries (both at
    /// least 1; smaller values are raised to 1).
    pub fn new(max_attempts: u32, steps: usize) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            steps: steps.max(1),
        }
    }

    /// Deliveries allowed.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Where a message goes after its attempt number `failed_before + 1` failed with `class`.
    pub fn after_failure(&self, failed_before: u32, class: ErrorClass) -> Route {
        let attempt = failed_before.saturating_add(1);
        if class == ErrorClass::Permanent || attempt >= self.max_attempts {
            Route::DeadLetter { attempt }
        } else {
            Route::Retry {
                step: self.step_for(attempt),
                attempt,
            }
        }
    }

    /// The retry step of failure number `attempt` (1-based): `min(attempt - 1, steps - 1)`.
    pub fn step_for(&self, attempt: u32) -> usize {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        index.min(self.steps - 1)
    }

    /// Decides what to do with a delivery given its history.
    pub fn admit(&self, history: DeliveryHistory) -> Admission {
        match history.delivery_count.filter(|&n| n > 0) {
            // Quorum queue: the broker counts the deliveries that died; nothing to restamp.
            Some(died) => {
                let failed = history.recorded_failures.saturating_add(died);
                if failed >= self.max_attempts {
                    Admission::Redelivered(Route::DeadLetter { attempt: failed })
                } else {
                    Admission::Process {
                        failed_before: failed,
                    }
                }
            }
            None if history.redelivered => Admission::Redelivered(
                self.after_failure(history.recorded_failures, ErrorClass::Redelivered),
            ),
            None => Admission::Process {
                failed_before: history.recorded_failures,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSIENT: ErrorClass = ErrorClass::Transient;

    #[test]
    fn transient_failures_climb_the_ladder_and_stay_on_its_last_step() {
        let ladder = Ladder::new(5, 2);
        assert_eq!(
            ladder.after_failure(0, TRANSIENT),
            Route::Retry {
                step: 0,
                attempt: 1
            }
        );
        assert_eq!(
            ladder.after_failure(1, TRANSIENT),
            Route::Retry {
                step: 1,
                attempt: 2
            }
        );
        assert_eq!(
            ladder.after_failure(3, TRANSIENT),
            Route::Retry {
                step: 1,
                attempt: 4
            }
        );
    }

    #[test]
    fn the_failure_of_delivery_number_max_attempts_dead_letters() {
        let ladder = Ladder::new(3, 3);
        let mut failed = 0;
        let mut deliveries = 0;
        loop {
            deliveries += 1;
            match ladder.after_failure(failed, TRANSIENT) {
                Route::Retry { attempt, .. } => failed = attempt,
                Route::DeadLetter { attempt } => {
                    assert_eq!(attempt, 3);
                    break;
                }
            }
        }
        assert_eq!(
            deliveries, 3,
            "a sink that always fails gets exactly maxAttempts tries"
        );
        assert_eq!(
            Ladder::new(1, 3).after_failure(0, TRANSIENT),
            Route::DeadLetter { attempt: 1 }
        );
    }

    #[test]
    fn permanent_failures_dead_letter_at_once() {
        assert_eq!(
            Ladder::new(5, 3).after_failure(0, ErrorClass::Permanent),
            Route::DeadLetter { attempt: 1 }
        );
    }

    #[test]
    fn fresh_deliveries_are_processed_with_their_recorded_failures() {
        let ladder = Ladder::new(5, 3);
        let history = DeliveryHistory {
            recorded_failures: 2,
            ..DeliveryHistory::default()
        };
        assert_eq!(
            ladder.admit(history),
            Admission::Process { failed_before: 2 }
        );
    }

    #[test]
    fn a_classic_redelivery_is_restamped_as_a_failed_attempt() {
        let ladder = Ladder::new(3, 3);
        let history = |recorded| DeliveryHistory {
            recorded_failures: recorded,
            redelivered: true,
            delivery_count: None,
        };
        assert_eq!(
            ladder.admit(history(0)),
            Admission::Redelivered(Route::Retry {
                step: 0,
                attempt: 1
            })
        );
        assert_eq!(
            ladder.admit(history(2)),
            Admission::Redelivered(Route::DeadLetter { attempt: 3 })
        );
    }

    #[test]
    fn a_message_that_kills_every_classic_worker_is_written_at_most_max_attempts_times() {
        // Each written delivery kills the worker; the broker redelivers it; the next worker
        // restamps it; the restamped copy is written again.
        let ladder = Ladder::new(4, 2);
        let mut recorded = 0;
        let mut writes = 0;
        loop {
            match ladder.admit(DeliveryHistory {
                recorded_failures: recorded,
                redelivered: false,
                delivery_count: None,
            }) {
                Admission::Process { .. } => writes += 1,
                other => panic!("a fresh copy is processed, got {other:?}"),
            }
            match ladder.admit(DeliveryHistory {
                recorded_failures: recorded,
                redelivered: true,
                delivery_count: None,
            }) {
                Admission::Redelivered(Route::Retry { attempt, .. }) => recorded = attempt,
                Admission::Redelivered(Route::DeadLetter { attempt }) => {
                    assert_eq!(attempt, 4);
                    break;
                }
                other => panic!("a redelivery is never written, got {other:?}"),
            }
        }
        assert_eq!(writes, 4);
    }

    #[test]
    fn quorum_delivery_counts_are_failed_attempts_without_restamping() {
        let ladder = Ladder::new(3, 3);
        let history = |count| DeliveryHistory {
            recorded_failures: 1,
            redelivered: true,
            delivery_count: Some(count),
        };
        assert_eq!(
            ladder.admit(history(1)),
            Admission::Process { failed_before: 2 }
        );
        assert_eq!(
            ladder.admit(history(2)),
            Admission::Redelivered(Route::DeadLetter { attempt: 3 })
        );
        // A zero count (as RabbitMQ 4 may send) is no information: the flag decides.
        assert_eq!(
            ladder.admit(history(0)),
            Admission::Redelivered(Route::Retry {
                step: 1,
                attempt: 2
            })
        );
    }

    #[test]
    fn degenerate_ladders_are_raised_to_one() {
        let ladder = Ladder::new(0, 0);
        assert_eq!(ladder.max_attempts(), 1);
        assert_eq!(ladder.step_for(7), 0);
    }
}
