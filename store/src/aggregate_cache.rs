//! The aggregates the executor folded last, kept in memory so that a command on a busy stream
//! reads only the events recorded since (usually none) instead of the whole stream.
//!
//! The cache never decides anything on its own: a load still asks the log for every event
//! after the cached version, and a command the executor decides on a cached state without
//! reading either appends at the cached version, which fails if the state is stale, or
//! (a refusal, or nothing to append) is checked against the log before it is answered. So a
//! cache entry can only make a command or a load cheaper, never older.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Streams kept by one executor: a user aggregate is one to a few kilobytes, so a full cache
/// of users stays in the tens of megabytes.
pub const CAPACITY: usize = 8_192;

/// A bounded map with approximate least-recently-used eviction: entries live in a young and an
/// old generation; when the young one fills, the old one is dropped and the young one ages.
/// A hit in the old generation moves the entry back to the young one.
pub struct AggregateCache<A> {
    generations: Arc<Mutex<Generations<A>>>,
    capacity: usize,
}

struct Generations<A> {
    young: HashMap<String, (A, u64)>,
    old: HashMap<String, (A, u64)>,
}

impl<A> Clone for AggregateCache<A> {
    fn clone(&self) -> Self {
        Self {
            generations: Arc::clone(&self.generations),
            capacity: self.capacity,
        }
    }
}

impl<A: Clone> AggregateCache<A> {
    pub fn new(capacity: usize) -> Self {
        Self {
            generations: Arc::new(Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            })),
            capacity: capacity.max(2),
        }
    }

    /// The aggregate and the stream version it was folded to.
    pub fn get(&self, id: &str) -> Option<(A, u64)> {
        let mut generations = self.lock();
        if let Some(entry) = generations.young.get(id) {
            return Some(entry.clone());
        }
        let entry = generations.old.remove(id)?;
        let found = entry.clone();
        self.insert_young(&mut generations, id.to_owned(), entry);
        Some(found)
    }

    /// Keeps `aggregate` as of `version`, unless a newer version is already kept (two
    /// commands on one stream may finish in either order).
    pub fn put(&self, id: &str, aggregate: A, version: u64) {
        let mut generations = self.lock();
        let newer_kept = generations
            .young
            .get(id)
            .or_else(|| generations.old.get(id))
            .is_some_and(|(_, kept)| *kept > version);
        if newer_kept {
            return;
        }
        generations.old.remove(id);
        self.insert_young(&mut generations, id.to_owned(), (aggregate, version));
    }

    fn insert_young(&self, generations: &mut Generations<A>, id: String, entry: (A, u64)) {
        if generations.young.len() >= self.capacity / 2 && !generations.young.contains_key(&id) {
            generations.old = std::mem::take(&mut generations.young);
        }
        generations.young.insert(id, entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<A>> {
        // The maps hold plain values: a panic elsewhere cannot leave them half-updated.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_found_until_two_generations_have_passed_without_a_hit() {
        let cache = AggregateCache::new(4);
        cache.put("a", 'a', 1);
        cache.put("b", 'b', 1);
        // The young generation is full: "a" and "b" age.
        cache.put("c", 'c', 1);
        assert_eq!(cache.get("a"), Some(('a', 1)), "a hit brings it back");
        // The young generation is full again: the old one, now only "b", is dropped.
        cache.put("d", 'd', 1);
        cache.put("e", 'e', 1);
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("a"), Some(('a', 1)));
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = AggregateCache::new(8);
        cache.put("a", "newer", 5);
        cache.put("a", "older", 4);
        assert_eq!(cache.get("a"), Some(("newer", 5)));
        cache.put("a", "newest", 6);
        assert_eq!(cache.get("a"), Some(("newest", 6)));
    }
}
