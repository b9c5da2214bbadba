//! The chunks a random-access reader keeps: a bounded set of checked
//! chunks, keyed by chunk id (so a chunk shared by several snapshots, or
//! by several places of one, is fetched once), with the chunks being
//! fetched right now in it too, so that two readers of one chunk wait for
//! one fetch instead of making two.
//!
//! A failed fetch is handed to everyone waiting for it and then
//! forgotten: the next read tries again (a store that was out of reach may
//! answer now; a damaged chunk fails again, at the cost of one read).
//! Eviction takes the least recently used chunk that is not being fetched;
//! chunks in flight count against the bound but are never evicted.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::codec::ChunkId;
use crate::error::{Error, ErrorKind};
use crate::repo::PlainChunk;

/// Why a fetch failed, kept so that every waiter gets the same error.
#[derive(Debug, Clone)]
pub struct Failure {
    kind: ErrorKind,
    message: String,
    transient: bool,
}

impl Failure {
    pub fn from_error(e: &Error) -> Failure {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
            transient: e.is_transient(),
        }
    }

    pub fn to_error(&self) -> Error {
        let e = Error::new(self.kind, self.message.clone());
        if self.transient { e.transient() } else { e }
    }
}

/// A fetched chunk (`PlainChunk`; any type in tests), or why not.
pub type Fetched<T = PlainChunk> = Result<Arc<T>, Failure>;

/// One chunk, fetched or being fetched.
pub struct Slot<T = PlainChunk> {
    state: Mutex<Option<Fetched<T>>>,
    settled: Condvar,
}

impl<T> Slot<T> {
    fn new() -> Slot<T> {
        Slot {
            state: Mutex::new(None),
            settled: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, Option<Fetched<T>>> {
        // A panic while holding it left a value or None: both consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the chunk is fetched (or failed).
    pub fn wait(&self) -> Fetched<T> {
        let mut state = self.state();
        loop {
            if let Some(fetched) = state.as_ref() {
                return fetched.clone();
            }
            state = self.settled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn is_settled_ok(&self) -> bool {
        matches!(*self.state(), Some(Ok(_)))
    }
}

struct Entry<T> {
    slot: Arc<Slot<T>>,
    last_used: u64,
}

pub struct ChunkCache<T = PlainChunk> {
    entries: Mutex<HashMap<ChunkId, Entry<T>>>,
    tick: std::sync::atomic::AtomicU64,
    /// Chunks kept at most (fetched ones; more while many are in flight).
    capacity: usize,
}

/// What `ChunkCache::claim` found.
pub enum Claim<T = PlainChunk> {
    /// Fetched, or being fetched by someone else: wait on it.
    Known(Arc<Slot<T>>),
    /// New: the caller must fetch it and `settle` the slot.
    Fetch(Arc<Slot<T>>),
}

impl<T> ChunkCache<T> {
    pub fn new(capacity: usize) -> ChunkCache<T> {
        ChunkCache {
            entries: Mutex::new(HashMap::new()),
            tick: std::sync::atomic::AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<ChunkId, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of chunk `id`, made (and so to be fetched by the caller)
    /// if there is none.
    pub fn claim(&self, id: &ChunkId) -> Claim<T> {
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(id) {
            entry.last_used = now;
            return Claim::Known(Arc::clone(&entry.slot));
        }
        if entries.len() >= self.capacity {
            evict_one(&mut entries);
        }
        let slot = Arc::new(Slot::new());
        entries.insert(
            *id,
            Entry {
                slot: Arc::clone(&slot),
                last_used: now,
            },
        );
        Claim::Fetch(slot)
    }

    /// Whether chunk `id` is fetched or being fetched.
    pub fn holds(&self, id: &ChunkId) -> bool {
        self.entries().contains_key(id)
    }

    /// Hands the fetch of `id` to everyone waiting on `slot`; a failure is
    /// forgotten, so that the next read tries again.
    pub fn settle(&self, id: &ChunkId, slot: &Arc<Slot<T>>, fetched: Fetched<T>) {
        let failed = fetched.is_err();
        *slot.state() = Some(fetched);
        slot.settled.notify_all();
        if failed {
            let mut entries = self.entries();
            if entries.get(id).is_some_and(|e| Arc::ptr_eq(&e.slot, slot)) {
                entries.remove(id);
            }
        }
    }
}

/// Drops the least recently used fetched chunk, if any is not in flight.
fn evict_one<T>(entries: &mut HashMap<ChunkId, Entry<T>>) {
    let oldest = entries
        .iter()
        .filter(|(_, e)| e.slot.is_settled_ok())
        .min_by_key(|(_, e)| e.last_used)
        .map(|(id, _)| *id);
    if let Some(id) = oldest {
        entries.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn fetch(cache: &ChunkCache<u32>, n: u8) -> Arc<Slot<u32>> {
        match cache.claim(&id(n)) {
            Claim::Fetch(slot) => slot,
            Claim::Known(_) => panic!("chunk {n} was already there"),
        }
    }

    #[test]
    fn a_chunk_is_fetched_once_and_the_least_recently_used_goes_first() {
        let cache = ChunkCache::<u32>::new(2);
        for n in [1, 2] {
            let slot = fetch(&cache, n);
            cache.settle(&id(n), &slot, Ok(Arc::new(u32::from(n))));
        }
        // 1 is used again, so 2 is the one to go.
        assert!(matches!(cache.claim(&id(1)), Claim::Known(_)));
        let slot = fetch(&cache, 3);
        cache.settle(&id(3), &slot, Ok(Arc::new(3)));
        assert!(cache.holds(&id(1)) && cache.holds(&id(3)) && !cache.holds(&id(2)));
    }

    #[test]
    fn a_chunk_in_flight_is_never_evicted_and_a_failure_is_forgotten() {
        let cache = ChunkCache::<u32>::new(1);
        let pending = fetch(&cache, 1);
        // Over the bound rather than dropping what a reader waits for.
        let other = fetch(&cache, 2);
        assert!(cache.holds(&id(1)) && cache.holds(&id(2)));
        let failure = Failure::from_error(&Error::corrupt("damaged"));
        cache.settle(&id(1), &pending, Err(failure));
        assert!(pending.wait().is_err());
        assert!(!cache.holds(&id(1)), "a failed fetch must be tried again");
        cache.settle(&id(2), &other, Ok(Arc::new(2)));
        assert_eq!(other.wait().ok().as_deref(), Some(&2));
    }
}
