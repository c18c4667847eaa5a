//! A map whose entries go at a time given with each: what both processes keep for a while in
//! memory (the agent's answers to replayed requests, the portal's live reads of accounts and the
//! directories' policies). Expired entries are dropped in the order they expire, so each call
//! costs O(log n) however many entries there are: nothing scans them all.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

pub struct Expiring<K, V> {
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    map: HashMap<K, (i64, V)>,
    /// When each entry goes, soonest first. An entry put again leaves its earlier time here; it
    /// is skipped when it comes up (the map holds the later one).
    expiries: BinaryHeap<Reverse<(i64, K)>>,
}

impl<K, V> Default for Expiring<K, V> {
    fn default() -> Self {
        Expiring { inner: Mutex::new(Entries { map: HashMap::new(), expiries: BinaryHeap::new() }) }
    }
}

impl<K: Hash + Ord + Clone, V: Clone> Expiring<K, V> {
    fn entries(&self, now: i64) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Reverse((at, _))) = e.expiries.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((at, key))) = e.expiries.pop() {
                if e.map.get(&key).is_some_and(|(until, _)| *until == at) {
                    e.map.remove(&key);
                }
            }
        }
        e
    }

    /// The value kept for `key`, unless it expired.
    pub fn get(&self, key: &K, now: i64) -> Option<V> {
        self.entries(now).map.get(key).map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `key` until `until` (replacing what was kept).
    pub fn put(&self, key: K, value: V, until: i64, now: i64) {
        let mut e = self.entries(now);
        e.expiries.push(Reverse((until, key.clone())));
        e.map.insert(key, (until, value));
    }

    /// The value kept for `key`, or `make()` kept until `until`; and whether it was kept before.
    pub fn get_or_put(&self, key: &K, until: i64, now: i64, make: impl FnOnce() -> V) -> (V, bool) {
        let mut e = self.entries(now);
        if let Some((_, v)) = e.map.get(key) {
            return (v.clone(), true);
        }
        let v = make();
        e.expiries.push(Reverse((until, key.clone())));
        e.map.insert(key.clone(), (until, v.clone()));
        (v, false)
    }

    pub fn remove(&self, key: &K) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.remove(key);
    }

    /// How many entries are kept (expired ones included, until a call drops them).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_at_their_time_and_a_renewed_one_stays() {
        let c: Expiring<&str, u32> = Expiring::default();
        c.put("a", 1, 10, 0);
        c.put("b", 2, 20, 0);
        assert_eq!(c.get(&"a", 9), Some(1));
        // "a" is put again until 30: its first time (10) must not take the new value away.
        c.put("a", 3, 30, 9);
        assert_eq!(c.get(&"a", 15), Some(3));
        assert_eq!(c.get(&"b", 20), None, "gone at its time");
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&"a", 30), None);
        assert!(c.is_empty());
    }

    #[test]
    fn get_or_put_makes_once() {
        let c: Expiring<u8, u8> = Expiring::default();
        assert_eq!(c.get_or_put(&1, 5, 0, || 7), (7, false));
        assert_eq!(c.get_or_put(&1, 5, 1, || 8), (7, true));
        assert_eq!(c.get_or_put(&1, 9, 5, || 8), (8, false), "made again once the first expired");
        c.remove(&1);
        assert_eq!(c.get(&1, 6), None);
    }
}
