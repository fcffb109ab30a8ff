//! ACK bookkeeping of one consumer channel: which deliveries are still open, and the highest
//! delivery tag that one `basic.ack` with `multiple=true` may settle.
//!
//! Deliveries settle out of order (batches finish in any order, a duplicate is settled at
//! once). A multiple ACK up to tag `t` settles every unsettled delivery up to `t` on the
//! broker, so it is only sent up to the highest tag whose predecessors are all ACKed here.
//! A delivery given back to the queue (`basic.nack` with requeue) leaves the tracker at once,
//! and its NACK must be sent before any later multiple ACK, or that ACK would settle it.

use std::collections::VecDeque;

/// A delivery tag.
pub type DeliveryTag = u64;

/// Why a tag could not be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// Not delivered on this channel, or settled already.
    #[error("failed to settle delivery {0}: it is not open on this channel")]
    NotOpen(DeliveryTag),
    /// Tags must grow: a broker never reuses or reorders them on a channel.
    #[error("failed to track delivery {tag}: tags must grow, the last one was {last}")]
    OutOfOrder {
        /// The new tag.
        tag: DeliveryTag,
        /// The highest tag seen before.
        last: DeliveryTag,
    },
}

/// Open deliveries of one channel, in tag order.
#[derive(Debug, Default)]
pub struct AckTracker {
    open: VecDeque<Open>,
    last: DeliveryTag,
}

/// A delivery not yet settled on the wire.
#[derive(Clone, Copy, Debug)]
struct Open {
    tag: DeliveryTag,
    /// ACKed here, waiting for a multiple ACK to cover it.
    acked: bool,
}

impl AckTracker {
    /// An empty tracker for a new channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new delivery.
    pub fn delivered(&mut self, tag: DeliveryTag) -> Result<(), TrackerError> {
        if tag <= self.last {
            return Err(TrackerError::OutOfOrder {
                tag,
                last: self.last,
            });
        }
        self.last = tag;
        self.open.push_back(Open { tag, acked: false });
        Ok(())
    }

    /// Marks `tag` as ready to be ACKed.
    pub fn ack(&mut self, tag: DeliveryTag) -> Result<(), TrackerError> {
        match self.find(tag) {
            Some(i) if !self.open[i].acked => {
                self.open[i].acked = true;
                Ok(())
            }
            _ => Err(TrackerError::NotOpen(tag)),
        }
    }

    /// Removes `tag`, which the caller ACKs on its own (`multiple=false`) right now, ahead of
    /// the deliveries before it.
    pub fn ack_alone(&mut self, tag: DeliveryTag) -> Result<(), TrackerError> {
        self.requeue(tag)
    }

    /// Removes `tag`, which the caller gives back with `basic.nack` (requeue) right now.
    pub fn requeue(&mut self, tag: DeliveryTag) -> Result<(), TrackerError> {
        match self.find(tag) {
            Some(i) if !self.open[i].acked => {
                self.open.remove(i);
                Ok(())
            }
            _ => Err(TrackerError::NotOpen(tag)),
        }
    }

    /// The tag to send in one `basic.ack` with `multiple=true`, if any: the highest ACKed tag
    /// whose predecessors are all ACKed. Those deliveries leave the tracker.
    pub fn take_ackable(&mut self) -> Option<DeliveryTag> {
        let mut upto = None;
        while let Some(&Open { tag, acked: true }) = self.open.front() {
            upto = Some(tag);
            self.open.pop_front();
        }
        upto
    }

    /// Deliveries not yet settled on the wire (including ACKed ones waiting for their turn).
    pub fn open(&self) -> usize {
        self.open.len()
    }

    fn find(&self, tag: DeliveryTag) -> Option<usize> {
        self.open.binary_search_by_key(&tag, |o| o.tag).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(tags: impl IntoIterator<Item = DeliveryTag>) -> AckTracker {
        let mut t = AckTracker::new();
        for tag in tags {
            t.delivered(tag).unwrap();
        }
        t
    }

    #[test]
    fn acks_up_to_the_highest_contiguous_settled_tag() {
        let mut t = tracker(1..=5);
        t.ack(2).unwrap();
        t.ack(3).unwrap();
        assert_eq!(t.take_ackable(), None, "1 is still open");
        t.ack(1).unwrap();
        assert_eq!(t.take_ackable(), Some(3));
        assert_eq!(t.take_ackable(), None);
        t.ack(5).unwrap();
        t.ack(4).unwrap();
        assert_eq!(t.take_ackable(), Some(5));
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn a_requeued_delivery_no_longer_blocks_later_acks() {
        let mut t = tracker([10, 11, 12]);
        t.ack(11).unwrap();
        t.requeue(10).unwrap();
        assert_eq!(t.take_ackable(), Some(11));
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn a_delivery_acked_alone_leaves_at_once_and_is_never_acked_again() {
        let mut t = tracker([1, 2, 3]);
        t.ack_alone(2).unwrap();
        assert_eq!(t.ack(2), Err(TrackerError::NotOpen(2)));
        t.ack(3).unwrap();
        assert_eq!(t.take_ackable(), None, "1 is still open");
        t.ack(1).unwrap();
        assert_eq!(t.take_ackable(), Some(3));
    }

    #[test]
    fn a_delivery_settles_only_once() {
        let mut t = tracker([1, 2]);
        t.ack(1).unwrap();
        assert_eq!(t.ack(1), Err(TrackerError::NotOpen(1)));
        assert_eq!(t.requeue(1), Err(TrackerError::NotOpen(1)));
        assert_eq!(t.take_ackable(), Some(1));
        assert_eq!(t.ack(1), Err(TrackerError::NotOpen(1)));
        t.requeue(2).unwrap();
        assert_eq!(t.requeue(2), Err(TrackerError::NotOpen(2)));
        assert_eq!(t.ack(7), Err(TrackerError::NotOpen(7)));
    }

    #[test]
    fn tags_must_grow() {
        let mut t = tracker([5]);
        assert_eq!(
            t.delivered(5),
            Err(TrackerError::OutOfOrder { tag: 5, last: 5 })
        );
        assert!(t.delivered(6).is_ok());
    }
}
