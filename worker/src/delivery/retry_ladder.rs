//! Attempt arithmetic: how many deliveries of a message have failed, and where a failed one
//! goes next (a retry step or the dead-letter queue).
//!
//! `maxAttempts` counts deliveries. A message is dead-lettered at the failure of delivery
//! number `maxAttempts`; failure number `n` (1-based) waits in retry step `min(n - 1, steps - 1)`.
//!
//! A broker redelivery (the `redelivered` flag; on quorum queues also `x-delivery-count`) means
//! the worker that held the message died or lost its connection before settling it. Most such
//! messages were only waiting in that worker's prefetch, so a redelivery is not charged: the
//! message is restamped as a *suspect* (a copy to the main queue marked `x-logstream-suspect`,
//! attempts unchanged, the original ACKed). A suspect is written alone, at once. A suspect that
//! comes back redelivered was being written alone when its worker died: it kills workers. Then
//! its deaths are charged as failed attempts of class `redelivered`: the first one (in a batch)
//! and this one, then one per later death. So a message that kills every worker is written at
//! most `maxAttempts` times, while a healthy log becomes a charged suspect only if a worker dies
//! during the few milliseconds it is being written alone. Where a suspect's two charges would
//! not fit in `maxAttempts` any more, a redelivery is charged at once, as before suspects
//! existed. Classic and quorum queues are treated alike: the broker's count of a copy is never
//! needed, since every restamp is a new copy.

use logstream_api::contract::ErrorClass;

/// What a delivery says about its past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryHistory {
    /// `x-logstream-attempt`: failed attempts recorded by the workers that republished it.
    pub recorded_failures: u32,
    /// The broker redelivered it: the `redelivered` flag, or a quorum queue's
    /// `x-delivery-count` above 0.
    pub redelivered: bool,
    /// `x-logstream-suspect`: `None` for a message never redelivered; `Some(0)` for a suspect
    /// whose deaths were not charged yet, `Some(1)` once they were.
    pub suspect: Option<u32>,
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
    /// `failed_before + 1`). A suspect is written `alone`: in a batch of its own, at once.
    Process {
        /// Failed attempts before this delivery.
        failed_before: u32,
        /// Write it in a batch of one, without waiting for a batch to fill.
        alone: bool,
    },
    /// A redelivery, probably held in a dead worker's prefetch: do not write it; restamp it
    /// as a suspect, charging nothing.
    Suspect,
    /// A redelivered suspect: it was being written alone when its worker died. Do not write
    /// it; republish it where the [`Route`] says (class `redelivered`), still a suspect.
    Charged(Route),
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
        let recorded = history.recorded_failures;
        if !history.redelivered {
            return Admission::Process {
                failed_before: recorded,
                alone: history.suspect.is_some(),
            };
        }
        match history.suspect {
            // Room for the two charges a suspect may need later: suspect it.
            None if recorded.saturating_add(2) <= self.max_attempts => Admission::Suspect,
            None => Admission::Charged(self.after_failure(recorded, ErrorClass::Redelivered)),
            // The first death (in a batch) and this one (alone).
            Some(0) => Admission::Charged(self.charge(recorded.saturating_add(2))),
            Some(_) => Admission::Charged(self.charge(recorded.saturating_add(1))),
        }
    }

    /// Where a message goes once `attempt` attempts failed.
    fn charge(&self, attempt: u32) -> Route {
        if attempt >= self.max_attempts {
            Route::DeadLetter { attempt }
        } else {
            Route::Retry {
                step: self.step_for(attempt),
                attempt,
            }
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
            Admission::Process {
                failed_before: 2,
                alone: false
            }
        );
        let suspect = DeliveryHistory {
            suspect: Some(0),
            ..history
        };
        assert_eq!(
            ladder.admit(suspect),
            Admission::Process {
                failed_before: 2,
                alone: true
            }
        );
    }

    #[test]
    fn a_redelivery_becomes_a_suspect_and_is_charged_nothing() {
        let ladder = Ladder::new(3, 3);
        let redelivered = |recorded| DeliveryHistory {
            recorded_failures: recorded,
            redelivered: true,
            suspect: None,
        };
        assert_eq!(ladder.admit(redelivered(0)), Admission::Suspect);
        assert_eq!(ladder.admit(redelivered(1)), Admission::Suspect);
        // No room left for a suspect's two charges: charged at once.
        assert_eq!(
            ladder.admit(redelivered(2)),
            Admission::Charged(Route::DeadLetter { attempt: 3 })
        );
    }

    #[test]
    fn a_redelivered_suspect_is_charged_its_batched_death_and_its_own() {
        let ladder = Ladder::new(5, 3);
        let suspect = |recorded, charged| DeliveryHistory {
            recorded_failures: recorded,
            redelivered: true,
            suspect: Some(charged),
        };
        assert_eq!(
            ladder.admit(suspect(0, 0)),
            Admission::Charged(Route::Retry {
                step: 1,
                attempt: 2
            })
        );
        assert_eq!(
            ladder.admit(suspect(2, 1)),
            Admission::Charged(Route::Retry {
                step: 2,
                attempt: 3
            })
        );
        assert_eq!(
            ladder.admit(suspect(4, 1)),
            Admission::Charged(Route::DeadLetter { attempt: 5 })
        );
    }

    #[test]
    fn a_message_that_kills_every_worker_is_written_at_most_max_attempts_times() {
        // Each written delivery kills its worker; the broker redelivers it to the next one,
        // which restamps it (a new copy: the broker's count starts again).
        for max in 1..=6 {
            for earlier in 0..max {
                let ladder = Ladder::new(max, 3);
                let mut copy = DeliveryHistory {
                    recorded_failures: earlier,
                    redelivered: false,
                    suspect: None,
                };
                let mut writes = earlier;
                let dead_letter = loop {
                    assert!(
                        writes <= max,
                        "max {max}, earlier {earlier}: {writes} writes"
                    );
                    match ladder.admit(copy) {
                        Admission::Process { .. } => writes += 1,
                        other => panic!("a fresh copy is written, got {other:?}"),
                    }
                    match ladder.admit(DeliveryHistory {
                        redelivered: true,
                        ..copy
                    }) {
                        Admission::Suspect => copy.suspect = Some(0),
                        Admission::Charged(Route::Retry { attempt, .. }) => {
                            copy.recorded_failures = attempt;
                            copy.suspect = Some(1);
                        }
                        Admission::Charged(Route::DeadLetter { attempt }) => break attempt,
                        other => panic!("a redelivery is never written, got {other:?}"),
                    }
                };
                assert!(
                    writes <= max,
                    "max {max}, earlier {earlier}: {writes} writes"
                );
                assert!(dead_letter >= max);
            }
        }
    }

    #[test]
    fn a_healthy_log_caught_in_dead_workers_prefetch_is_never_charged() {
        let ladder = Ladder::new(3, 3);
        let mut copy = DeliveryHistory::default();
        for _ in 0..10 {
            // Held (not written) by a worker that died: redelivered, restamped as a suspect.
            let redelivered = DeliveryHistory {
                redelivered: true,
                suspect: None,
                ..copy
            };
            assert_eq!(ladder.admit(redelivered), Admission::Suspect);
            copy.suspect = Some(0);
            // The suspect is written alone, successfully: nothing was ever charged.
            assert_eq!(
                ladder.admit(copy),
                Admission::Process {
                    failed_before: 0,
                    alone: true
                }
            );
            copy.suspect = None;
        }
    }

    #[test]
    fn degenerate_ladders_are_raised_to_one() {
        let ladder = Ladder::new(0, 0);
        assert_eq!(ladder.max_attempts(), 1);
        assert_eq!(ladder.step_for(7), 0);
    }
}
