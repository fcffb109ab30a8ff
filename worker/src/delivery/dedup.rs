//! The dedup cache: message ids (or body hashes) of logs this worker wrote recently.
//!
//! Bounded twice: an id is forgotten after the window, and the oldest ids go first when the
//! cache is full. Ids are stored as 128-bit hashes, so memory does not depend on how long the
//! producers' ids are (under 100 bytes per entry, table and age queue together).
//!
//! The hash is the first 128 bits of SHA-256: the same on every build, Rust version and
//! machine, which matters because it leaves the process (the `message_id` of a log without one,
//! the shared store's keys, an Elasticsearch `_id`).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// A message's identity: its `message_id`, or its body when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DedupKey(u128);

impl DedupKey {
    /// The key of a message with `message_id` (when set and non-empty) and `body`.
    pub fn of(message_id: Option<&str>, body: &[u8]) -> Self {
        match message_id.filter(|id| !id.is_empty()) {
            Some(id) => Self::hash(b'i', id.as_bytes()),
            None => Self::hash(b'b', body),
        }
    }

    fn hash(kind: u8, bytes: &[u8]) -> Self {
        // The kind byte keeps an id apart from a body with the same bytes.
        let digest = Sha256::new()
            .chain_update([kind])
            .chain_update(bytes)
            .finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self(u128::from_be_bytes(first))
    }

    /// The key as 32 hex digits: a stable id for a message that has no `message_id`.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// Recently written messages, bounded by count and age.
#[derive(Debug)]
pub struct DedupCache {
    capacity: usize,
    window: Duration,
    seen: HashMap<DedupKey, Instant>,
    order: VecDeque<(DedupKey, Instant)>,
}

impl DedupCache {
    /// A cache of at most `capacity` ids, each remembered for `window`. A capacity of 0
    /// disables dedup.
    pub fn new(capacity: usize, window: Duration) -> Self {
        Self {
            capacity,
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `key` was written less than the window ago.
    pub fn contains(&mut self, key: DedupKey, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(&key)
    }

    /// Remembers that `key` was written at `now`.
    pub fn insert(&mut self, key: DedupKey, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.expire(now);
        self.seen.insert(key, now);
        self.order.push_back((key, now));
        while self.seen.len() > self.capacity {
            self.pop_oldest();
        }
        // An id written again leaves a stale entry in `order`; keep that queue bounded too.
        while self.order.len() > 2 * self.capacity {
            self.pop_oldest();
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, at)) = self.order.pop_front() {
            // Only the entry's latest insertion removes it.
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> DedupKey {
        DedupKey::of(Some(&format!("id-{n}")), b"")
    }

    #[test]
    fn keys_come_from_the_message_id_or_else_the_body() {
        assert_eq!(DedupKey::of(Some("a"), b"x"), DedupKey::of(Some("a"), b"y"));
        assert_ne!(DedupKey::of(Some("a"), b"x"), DedupKey::of(Some("b"), b"x"));
        assert_eq!(DedupKey::of(None, b"x"), DedupKey::of(Some(""), b"x"));
        assert_ne!(DedupKey::of(None, b"x"), DedupKey::of(None, b"y"));
        // An id that equals another message's body is still a different message.
        assert_ne!(DedupKey::of(Some("x"), b""), DedupKey::of(None, b"x"));
        assert_eq!(DedupKey::of(None, b"x").to_hex().len(), 32);
    }

    #[test]
    fn keys_are_the_same_on_every_build() {
        // SHA-256 of "i" ++ "id-1" and of "b" ++ "{}", first 16 bytes (as `sha256sum` prints
        // them): fixed forever, since
        // the hex of a body hash is a log's message id and the shared store's key.
        assert_eq!(
            DedupKey::of(Some("id-1"), b"ignored").to_hex(),
            "e6d7df9517bc6c75706f9442c96545b4"
        );
        assert_eq!(
            DedupKey::of(None, b"{}").to_hex(),
            "ef2a875407aca2dd75a7a1dccc3b2029"
        );
    }

    #[test]
    fn remembers_written_ids_for_the_window_only() {
        let start = Instant::now();
        let mut cache = DedupCache::new(10, Duration::from_secs(60));
        assert!(!cache.contains(key(1), start));
        cache.insert(key(1), start);
        assert!(cache.contains(key(1), start + Duration::from_secs(59)));
        assert!(!cache.contains(key(1), start + Duration::from_secs(60)));
        assert!(cache.is_empty());
    }

    #[test]
    fn forgets_the_oldest_ids_beyond_capacity() {
        let now = Instant::now();
        let mut cache = DedupCache::new(3, Duration::from_secs(60));
        for n in 0..5 {
            cache.insert(key(n), now);
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains(key(0), now) && !cache.contains(key(1), now));
        assert!((2..5).all(|n| cache.contains(key(n), now)));
    }

    #[test]
    fn rewriting_an_id_restarts_its_window() {
        let start = Instant::now();
        let mut cache = DedupCache::new(3, Duration::from_secs(10));
        cache.insert(key(1), start);
        cache.insert(key(1), start + Duration::from_secs(8));
        assert!(cache.contains(key(1), start + Duration::from_secs(12)));
        assert!(!cache.contains(key(1), start + Duration::from_secs(18)));
        for _ in 0..100 {
            cache.insert(key(2), start + Duration::from_secs(9));
        }
        assert!(cache.order.len() <= 6, "stale entries stay bounded");
    }

    #[test]
    fn zero_capacity_disables_dedup() {
        let now = Instant::now();
        let mut cache = DedupCache::new(0, Duration::from_secs(60));
        cache.insert(key(1), now);
        assert!(!cache.contains(key(1), now));
    }
}
