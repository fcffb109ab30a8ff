//! Sink write batching: a batch is written when it holds `max` items or when its first item
//! has waited `linger`, whichever comes first.

use std::time::{Duration, Instant};

/// Items waiting to be written together.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    max: usize,
    linger: Duration,
    deadline: Option<Instant>,
}

impl<T> Batcher<T> {
    /// Batches of at most `max` items (at least 1), written at the latest `linger` after
    /// their first item arrived.
    pub fn new(max: usize, linger: Duration) -> Self {
        Self {
            items: Vec::new(),
            max: max.max(1),
            linger,
            deadline: None,
        }
    }

    /// Adds `item` (arrived at `now`); returns the batch when it is full.
    pub fn push(&mut self, item: T, now: Instant) -> Option<Vec<T>> {
        if self.items.is_empty() {
            self.deadline = Some(now + self.linger);
        }
        self.items.push(item);
        (self.items.len() >= self.max).then(|| self.take())
    }

    /// When the current batch must be written, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes the current batch (possibly empty).
    pub fn take(&mut self) -> Vec<T> {
        self.deadline = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max))
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_is_handed_out_at_once() {
        let now = Instant::now();
        let mut b = Batcher::new(3, Duration::from_millis(50));
        assert_eq!(b.push(1, now), None);
        assert_eq!(b.push(2, now), None);
        assert_eq!(b.push(3, now), Some(vec![1, 2, 3]));
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn the_deadline_is_linger_after_the_first_item() {
        let start = Instant::now();
        let linger = Duration::from_millis(50);
        let mut b = Batcher::new(10, linger);
        assert_eq!(b.deadline(), None);
        b.push("a", start);
        b.push("b", start + Duration::from_millis(30));
        assert_eq!(b.deadline(), Some(start + linger));
        assert_eq!(b.take(), vec!["a", "b"]);
        assert_eq!(b.deadline(), None);
        b.push("c", start + Duration::from_millis(70));
        assert_eq!(
            b.deadline(),
            Some(start + Duration::from_millis(70) + linger)
        );
    }

    #[test]
    fn a_zero_size_means_one_item_per_batch() {
        let mut b = Batcher::new(0, Duration::ZERO);
        assert_eq!(b.push(7, Instant::now()), Some(vec![7]));
    }
}
