//! Smoothing of noisy per-second rates read from the broker.

/// An exponentially weighted moving average with a time constant, so that polls at uneven
/// intervals weigh by the time they cover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    time_constant_s: f64,
    value: Option<f64>,
    at_s: f64,
}

impl Ewma {
    /// An empty average that forgets with time constant `time_constant_s` seconds.
    pub fn new(time_constant_s: f64) -> Self {
        Self {
            time_constant_s,
            value: None,
            at_s: 0.0,
        }
    }

    /// Adds `sample` observed at `now_s`; the first sample is taken as it is.
    pub fn observe(&mut self, sample: f64, now_s: f64) {
        self.value = Some(match self.value {
            None => sample,
            Some(previous) => {
                let elapsed = (now_s - self.at_s).max(0.0);
                let keep = (-elapsed / self.time_constant_s).exp();
                keep * previous + (1.0 - keep) * sample
            }
        });
        self.at_s = now_s;
    }

    /// The current average, if any sample was seen.
    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_is_taken_as_is_and_later_ones_blend_by_elapsed_time() {
        let mut e = Ewma::new(10.0);
        assert_eq!(e.value(), None);
        e.observe(100.0, 0.0);
        assert_eq!(e.value(), Some(100.0));
        e.observe(0.0, 10.0);
        let v = e.value().unwrap();
        assert!((v - 100.0 * (-1.0f64).exp()).abs() < 1e-9, "{v}");
        // A long gap forgets almost everything.
        e.observe(50.0, 1000.0);
        assert!((e.value().unwrap() - 50.0).abs() < 1e-6);
    }
}
