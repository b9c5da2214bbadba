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

pub type Fetched = Result<Arc<PlainChunk>, Failure>;

/// One chunk, fetched or being fetched.
pub struct Slot {
    state: Mutex<Option<Fetched>>,
    settled: Condvar,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: Mutex::new(None),
            settled: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, Option<Fetched>> {
        // A panic while holding it left a value or None: both consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the chunk is fetched (or failed).
    pub fn wait(&self) -> Fetched {
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

struct Entry {
    slot: Arc<Slot>,
    last_used: u64,
}

pub struct ChunkCache {
    entries: Mutex<HashMap<ChunkId, Entry>>,
    tick: std::sync::atomic::AtomicU64,
    /// Chunks kept at most (fetched ones; more while many are in flight).
    capacity: usize,
}

/// What `ChunkCache::claim` found.
pub enum Claim {
    /// Fetched, or being fetched by someone else: wait on it.
    Known(Arc<Slot>),
    /// New: the caller must fetch it and `settle` the slot.
    Fetch(Arc<Slot>),
}

impl ChunkCache {
    pub fn new(capacity: usize) -> ChunkCache {
        ChunkCache {
            entries: Mutex::new(HashMap::new()),
            tick: std::sync::atomic::AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<ChunkId, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of chunk `id`, made (and so to be fetched by the caller)
    /// if there is none.
    pub fn claim(&self, id: &ChunkId) -> Claim {
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
    pub fn settle(&self, id: &ChunkId, slot: &Arc<Slot>, fetched: Fetched) {
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
fn evict_one(entries: &mut HashMap<ChunkId, Entry>) {
    let oldest = entries
        .iter()
        .filter(|(_, e)| e.slot.is_settled_ok())
        .min_by_key(|(_, e)| e.last_used)
        .map(|(id, _)| *id);
    if let Some(id) = oldest {
        entries.remove(&id);
    }
}
