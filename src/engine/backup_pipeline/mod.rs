//! The backup pipeline: one planner, a pool of workers, one writer.
//!
//! ```text
//! planner ──jobs──▶ workers (read, fingerprint, zero check, id, delta, lz4, seal) ──results──▶ writer
//!   ▲                                                                     │
//!   └──────────────────────── free slots (the in-flight bound) ───────────┘
//! ```
//!
//! The planner decides, chunk by chunk, what need not be read (free space,
//! holes, chunks a change source says did not change); the workers read
//! the rest, several at once (`fill`: the whole chunk, or only its changed
//! pages over the parent's chunk).
//!
//! A slot holds one chunk's buffers and travels around the loop, so the
//! number of slots bounds memory and nothing is allocated per chunk. The
//! writer appends new blobs to packs as results arrive, in any order, and
//! writes map entries in position order. Finished packs are made durable by
//! a committer thread while the writer goes on.
//!
//! In a repository with the `deltas` feature, a new chunk is compared page
//! by page with the parent's chunk at its position (or with that chunk's
//! own base, when it is a delta), read back from the repository, and
//! stored as the pages that changed when they are at most half of it
//! (`codec::delta`, `delta.rs`).

mod delta;
mod fill;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::codec::{self, Blob, ChunkId, Compression, Scratch, Sealing};
use crate::disk::Source;
use crate::disk::ranges::Ranges;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::backend::Backend;
use crate::repo::index::Index;
use crate::repo::map::{FINGERPRINT_UNKNOWN, Kind, MapEntry, MapHeader, MapReader, MapWriter};
use crate::repo::pack::{PackEntry, PackWriter};
use crate::repo::snapshot::BackupStats;
use crate::repo::{BufPool, ChunkReader, PackId, PlainChunk};

pub struct PipelineInput<'a> {
    pub source: &'a Source,
    /// Byte ranges no filesystem uses: chunks wholly inside are not read.
    pub free: &'a Ranges,
    pub backend: &'a dyn Backend,
    pub sealing: &'a Sealing,
    pub index: &'a Index,
    pub parent: Option<MapReader>,
    /// Ranges a change source says may have changed since the parent:
    /// chunks outside them keep the parent's entry unread. `None`: read
    /// every chunk.
    pub changed: Option<&'a Ranges>,
    pub header: MapHeader,
    pub compression: Compression,
    /// Whether new chunks may be stored as deltas over the parent's.
    pub deltas: bool,
    pub progress: &'a dyn Progress,
}

pub struct PipelineOutput {
    pub map: MapWriter,
    pub packs: Vec<(PackId, Vec<PackEntry>)>,
    pub stats: BackupStats,
}

/// One chunk's buffers. The chunk is read into a private buffer, so the
/// bytes that are fingerprinted, hashed, compressed and stored are the same
/// even when the source changes under a running backup.
struct Slot {
    plain: Vec<u8>,
    /// The chunk's delta over its parent's chunk, when it is stored so.
    delta: Vec<u8>,
    stored: Scratch,
}

struct Job {
    pos: u64,
    /// Where the chunk starts in the source.
    start: u64,
    len: u64,
    skip: Skip,
    parent: Option<MapEntry>,
    slot: Slot,
}

/// Why a chunk is not read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    No,
    Hole,
    Free,
    /// A change source says it did not change: the parent's entry.
    Unchanged(MapEntry),
}

enum Outcome {
    Hole,
    Free(u64),
    Zero,
    Unchanged(MapEntry),
    Dedup(MapEntry),
    New {
        entry: MapEntry,
        stored: Blob,
        /// Stored as a delta (in the slot's `delta`) over this chunk.
        base: Option<ChunkId>,
    },
    /// Reading the source failed, or sealing did (the system's random
    /// generator).
    Failed(Error),
}

struct Done {
    pos: u64,
    outcome: Outcome,
    /// What the worker read for it.
    read: fill::Read,
    slot: Slot,
}

pub fn run(input: PipelineInput<'_>) -> Result<PipelineOutput> {
    let workers = super::worker_count();
    let slots = super::chunks_in_flight(input.header.chunk_size, workers);
    let (free_tx, free_rx) = bounded::<Slot>(slots);
    for _ in 0..slots {
        let slot = Slot {
            plain: Vec::new(),
            delta: Vec::new(),
            stored: Scratch::default(),
        };
        free_tx
            .send(slot)
            .map_err(|_| Error::internal("slot pool closed"))?;
    }
    let (job_tx, job_rx) = bounded::<Job>(slots);
    let (done_tx, done_rx) = bounded::<Done>(slots);
    let pending: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    let stop = AtomicBool::new(false);
    let map = MapWriter::create(input.backend, input.sealing, input.header)?;

    std::thread::scope(|scope| {
        let reader = {
            let (free_rx, job_tx, stop) = (free_rx.clone(), job_tx, &stop);
            let (source, header, progress) = (input.source, input.header, input.progress);
            let planned = Planned {
                map: input.parent,
                changed: input.changed,
                index: input.index,
                unused: input.free,
            };
            scope.spawn(move || {
                plan_loop(source, header, planned, &free_rx, &job_tx, stop, progress)
            })
        };
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let pool = BufPool::new(input.header.chunk_size as usize, 1);
            let reader = ChunkReader::new(input.backend, input.sealing.clone(), pool, input.index);
            let mut store = Store {
                source: input.source,
                changed: input.changed,
                index: input.index,
                pending: &pending,
                compression: input.compression,
                sealing: input.sealing,
                deltas: input.deltas,
                repo: reader,
            };
            scope.spawn(move || work_loop(&job_rx, &done_tx, &mut store));
        }
        drop(job_rx);
        drop(done_tx);
        let written = write_loop(
            input.backend,
            input.sealing,
            map,
            &done_rx,
            &free_tx,
            input.header.entries,
        );
        if written.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Unblock the reader if it waits for a slot, then drain workers.
        drop(free_tx);
        drop(done_rx);
        let planned = reader
            .join()
            .unwrap_or_else(|_| Err(Error::internal("planner panicked")));
        // A planner failure is the root cause of whatever the writer saw.
        let (map, packs, mut stats, unread) = match (planned, written) {
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(unread), Ok((map, packs, stats))) => (map, packs, stats, unread),
        };
        (stats.chunks_unread, stats.bytes_unread) = unread;
        Ok(PipelineOutput { map, packs, stats })
    })
}

/// What the planner needs: the parent's map, a change source's ranges,
/// the index, and the source's free space.
struct Planned<'a> {
    map: Option<MapReader>,
    changed: Option<&'a Ranges>,
    index: &'a Index,
    unused: &'a Ranges,
}

impl Planned<'_> {
    /// The parent's entry for `[start, end)` when a change source says
    /// those bytes did not change and the entry stands for them without
    /// reading: zeros, or data whose chunk is still indexed. (An unused
    /// entry was never read, so it says nothing about the bytes.)
    fn unchanged(&self, parent: Option<MapEntry>, start: u64, end: u64) -> Option<MapEntry> {
        let changed = self.changed?;
        let entry = parent?;
        let stands = match entry.kind {
            Kind::Zero => true,
            Kind::Data => self.index.contains(&entry.id),
            Kind::Unused => false,
        };
        (stands && !changed.overlaps(start, end)).then_some(entry)
    }
}

/// Decides for each chunk whether it must be read; returns how many chunks
/// (and bytes) a change source let it keep from the parent unread.
fn plan_loop(
    source: &Source,
    header: MapHeader,
    mut parent: Planned<'_>,
    free: &Receiver<Slot>,
    jobs: &Sender<Job>,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let mut unread = (0u64, 0u64);
    for pos in 0..header.entries {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(slot) = free.recv() else {
            break;
        };
        let start = pos * header.chunk_size;
        let len = header.chunk_len(pos);
        let parent_entry = match parent.map.as_mut().map(|map| map.entry(pos)) {
            None => None,
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                // On any doubt about the parent, read and hash everything.
                progress.warn(&format!(
                    "stopped using the parent for change tracking at chunk {pos}: {e}"
                ));
                parent.map = None;
                None
            }
        };
        let skip = if parent.unused.covers(start, start + len) {
            Skip::Free
        } else if source.is_hole(start, start + len)? {
            Skip::Hole
        } else if let Some(entry) = parent.unchanged(parent_entry, start, start + len) {
            unread.0 += 1;
            unread.1 += len;
            Skip::Unchanged(entry)
        } else {
            Skip::No
        };
        // The worker reads the chunk: several reads at once copy out of
        // the page cache (or keep a fast disk busy) faster than one.
        progress.advance(len);
        let job = Job {
            pos,
            start,
            len,
            skip,
            parent: parent_entry,
            slot,
        };
        if jobs.send(job).is_err() {
            break;
        }
    }
    Ok(unread)
}

/// What a worker needs to read, name and store new chunks.
struct Store<'a> {
    source: &'a Source,
    changed: Option<&'a Ranges>,
    index: &'a Index,
    /// New chunks some worker is storing in this backup.
    pending: &'a Mutex<HashSet<ChunkId>>,
    compression: Compression,
    sealing: &'a Sealing,
    /// Whether new chunks may be stored as deltas.
    deltas: bool,
    /// Reads the parent's chunks back out of the repository.
    repo: ChunkReader<'a>,
}

fn work_loop(jobs: &Receiver<Job>, done: &Sender<Done>, store: &mut Store<'_>) {
    for job in jobs.iter() {
        let Job {
            pos,
            start,
            len,
            skip,
            parent,
            mut slot,
        } = job;
        let mut read = fill::Read::default();
        let outcome = match skip {
            Skip::Hole => Outcome::Hole,
            Skip::Free => Outcome::Free(len),
            Skip::Unchanged(entry) => Outcome::Unchanged(entry),
            Skip::No => match fill::fill(&mut slot.plain, (start, len), parent, store) {
                Ok(filled) => {
                    read = filled.read;
                    let parent_chunk = filled.parent_chunk;
                    classify(&mut slot, (parent, parent_chunk), store, &mut read.base)
                }
                Err(e) => Outcome::Failed(e),
            },
        };
        if done
            .send(Done {
                pos,
                outcome,
                read,
                slot,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Names and stores a read chunk; `parent_chunk` is the parent's chunk
/// when the worker read it back already, and `read_back` counts what it
/// reads back for a delta.
fn classify(
    slot: &mut Slot,
    (parent, parent_chunk): (Option<MapEntry>, Option<PlainChunk>),
    store: &mut Store<'_>,
    read_back: &mut u64,
) -> Outcome {
    let index = store.index;
    let plain = &slot.plain[..];
    let fingerprint = codec::fingerprint(plain);
    // The parent's chunk must still be indexed: a lost pack or index file
    // must not be inherited when the source still has the data.
    if let Some(p) = parent
        && p.kind == Kind::Data
        && same_fingerprint(p.fingerprint, fingerprint)
        && index.contains(&p.id)
    {
        return Outcome::Unchanged(p);
    }
    if codec::is_zero(plain) {
        return Outcome::Zero;
    }
    let id = store.sealing.chunk_id(plain);
    let entry = MapEntry::data(id, fingerprint);
    if index.contains(&id) {
        return Outcome::Dedup(entry);
    }
    let first = match store.pending.lock() {
        Ok(mut set) => set.insert(id),
        Err(poisoned) => poisoned.into_inner().insert(id),
    };
    if !first {
        return Outcome::Dedup(entry);
    }
    let base = match parent {
        Some(p) if p.kind == Kind::Data && store.deltas => {
            delta::over(&p.id, parent_chunk, slot, store, read_back)
        }
        _ => None,
    };
    let data = if base.is_some() {
        &slot.delta
    } else {
        &slot.plain
    };
    match codec::store(
        store.sealing,
        store.compression,
        &id,
        data,
        &mut slot.stored,
    ) {
        Ok(stored) => Outcome::New {
            entry,
            stored: if base.is_some() {
                stored.holding_delta()
            } else {
                stored
            },
            base,
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// Whether a parent's fingerprint shows the chunk unchanged. The
/// fingerprint `FINGERPRINT_UNKNOWN` (0) is written for a chunk whose bytes
/// were not all read, and is never equal to anything: such a chunk is
/// hashed again (older platters do the same by chance: 0 matches nothing
/// they compute but once in 2^64).
fn same_fingerprint(parent: u64, now: u64) -> bool {
    parent != FINGERPRINT_UNKNOWN && parent == now
}

type Written = (MapWriter, Vec<(PackId, Vec<PackEntry>)>, BackupStats);

/// Packs committed at once, at most.
const UPLOADS: usize = 4;

/// Where new chunks go: the pack being filled, opened on first use, and
/// the committer that finishes full ones in the background.
struct Packs<'a, 'p> {
    backend: &'a dyn Backend,
    sealing: &'a Sealing,
    open: &'p mut Option<PackWriter>,
    commit: &'p Sender<PackWriter>,
}

impl Packs<'_, '_> {
    /// Appends a new chunk to the open pack (handing it to the committer
    /// once full) and counts it; returns its map entry.
    fn store(
        self,
        entry: MapEntry,
        (stored, base): (&Blob, Option<ChunkId>),
        slot: &Slot,
        stats: &mut BackupStats,
    ) -> Result<MapEntry> {
        let writer = match self.open.as_mut() {
            Some(w) => w,
            None => self
                .open
                .insert(PackWriter::create(self.backend, self.sealing)?),
        };
        let plain_len = slot.plain.len() as u32;
        match base {
            Some(base) => {
                let payload_len = slot.delta.len() as u32;
                let bytes = stored.bytes(&slot.delta, &slot.stored);
                writer.add_delta(entry.id, stored.how, bytes, payload_len, base)?;
                stats.chunks_delta += 1;
                stats.bytes_new_plain += u64::from(payload_len);
            }
            None => {
                let bytes = stored.bytes(&slot.plain, &slot.stored);
                writer.add(entry.id, stored.how, bytes, plain_len)?;
                stats.bytes_new_plain += u64::from(plain_len);
            }
        }
        stats.chunks_new += 1;
        stats.bytes_new += stored.len as u64;
        if writer.len() >= crate::repo::pack::target_for(self.backend)
            && let Some(full) = self.open.take()
        {
            self.commit
                .send(full)
                .map_err(|_| Error::internal("pack committer stopped"))?;
        }
        Ok(entry)
    }
}

fn write_loop(
    backend: &dyn Backend,
    sealing: &Sealing,
    mut map: MapWriter,
    done: &Receiver<Done>,
    free: &Sender<Slot>,
    entries: u64,
) -> Result<Written> {
    let mut stats = BackupStats::default();
    let mut waiting: BTreeMap<u64, MapEntry> = BTreeMap::new();
    let mut next = 0u64;
    let mut pack: Option<PackWriter> = None;
    // Full packs are committed in the background, up to UPLOADS at once
    // where the backend takes that many. At most UPLOADS packs are closed
    // and not yet committed (being committed, or waiting): the loop waits
    // beyond that, so memory stays bounded when the store is slower than
    // the disk being read (a store that holds packs in memory holds at
    // most UPLOADS + 1).
    let committers = backend.concurrency().clamp(1, UPLOADS);
    let (commit_tx, commit_rx) = bounded::<PackWriter>(UPLOADS - committers);
    let (committed_tx, committed_rx) = unbounded::<Result<(PackId, Vec<PackEntry>)>>();
    let committer: Vec<std::thread::JoinHandle<()>> = (0..committers)
        .map(|_| {
            let (commit_rx, committed_tx) = (commit_rx.clone(), committed_tx.clone());
            std::thread::spawn(move || {
                for writer in commit_rx.iter() {
                    if committed_tx.send(writer.finish()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(committed_tx);
    let result = (|| -> Result<()> {
        while next < entries {
            let Ok(item) = done.recv() else {
                return Err(Error::internal("workers stopped early"));
            };
            let entry = match item.outcome {
                Outcome::Hole => {
                    stats.chunks_hole += 1;
                    MapEntry::ZERO
                }
                Outcome::Free(len) => {
                    stats.chunks_free += 1;
                    stats.bytes_free += len;
                    MapEntry::UNUSED
                }
                Outcome::Zero => {
                    stats.chunks_zero += 1;
                    MapEntry::ZERO
                }
                Outcome::Unchanged(e) => {
                    stats.chunks_unchanged += 1;
                    e
                }
                Outcome::Dedup(e) => {
                    stats.chunks_dedup += 1;
                    e
                }
                Outcome::Failed(e) => return Err(e),
                Outcome::New {
                    entry,
                    stored,
                    base,
                } => {
                    let packs = Packs {
                        backend,
                        sealing,
                        open: &mut pack,
                        commit: &commit_tx,
                    };
                    packs.store(entry, (&stored, base), &item.slot, &mut stats)?
                }
            };
            stats.chunks += 1;
            stats.bytes_read += item.read.source;
            stats.bytes_base += item.read.base;
            // The slot goes back before the map write so the reader never
            // waits on map I/O. A closed pool means the reader has stopped.
            let _ = free.send(item.slot);
            waiting.insert(item.pos, entry);
            while let Some(entry) = waiting.remove(&next) {
                map.push(&entry)?;
                next += 1;
            }
        }
        if let Some(last) = pack.take()
            && !last.is_empty()
        {
            commit_tx
                .send(last)
                .map_err(|_| Error::internal("pack committer stopped"))?;
        }
        Ok(())
    })();
    drop(commit_tx);
    let packs = committed_packs(result, committer, &committed_rx)?;
    Ok((map, packs, stats))
}

/// Waits for the committer to finish every pack handed to it; the first
/// error (the loop's, a pack's, or the committer's panic) wins.
fn committed_packs(
    result: Result<()>,
    committers: Vec<std::thread::JoinHandle<()>>,
    committed: &Receiver<Result<(PackId, Vec<PackEntry>)>>,
) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let joined: std::thread::Result<Vec<()>> = committers.into_iter().map(|c| c.join()).collect();
    let mut packs = Vec::new();
    let mut first_error = result.err();
    for pack in committed.iter() {
        match pack {
            Ok(p) => packs.push(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if joined.is_err() {
        first_error.get_or_insert(Error::internal("pack committer panicked"));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(packs),
    }
}
