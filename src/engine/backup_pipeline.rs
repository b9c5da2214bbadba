//! The backup pipeline: one reader, a pool of workers, one writer.
//!
//! ```text
//! reader ──jobs──▶ workers (fingerprint, zero check, id, delta, lz4, seal) ──results──▶ writer
//!   ▲                                                                     │
//!   └──────────────────────── free slots (the in-flight bound) ───────────┘
//! ```
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
//! (`codec::delta`, `delta_over`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::codec::{self, Blob, ChunkId, Compression, Scratch, Sealing};
use crate::disk::Source;
use crate::disk::free_space::Ranges;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::backend::Backend;
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapHeader, MapReader, MapWriter};
use crate::repo::pack::{PackEntry, PackWriter};
use crate::repo::snapshot::BackupStats;
use crate::repo::{BufPool, ChunkReader, PackId};

pub struct PipelineInput<'a> {
    pub source: &'a Source,
    /// Byte ranges no filesystem uses: chunks wholly inside are not read.
    pub free: &'a Ranges,
    pub backend: &'a dyn Backend,
    pub sealing: &'a Sealing,
    pub index: &'a Index,
    pub parent: Option<MapReader>,
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
        /// Bytes of the parent's chunk read back to try a delta.
        base_read: u64,
    },
    /// Reading the source failed, or sealing did (the system's random
    /// generator).
    Failed(Error),
}

struct Done {
    pos: u64,
    outcome: Outcome,
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
            let (parent, unused) = (input.parent, input.free);
            scope.spawn(move || {
                read_loop(
                    source, unused, header, parent, &free_rx, &job_tx, stop, progress,
                )
            })
        };
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let pool = BufPool::new(input.header.chunk_size as usize, 1);
            let reader = ChunkReader::new(input.backend, input.sealing.clone(), pool, input.index);
            let mut store = Store {
                source: input.source,
                index: input.index,
                pending: &pending,
                compression: input.compression,
                sealing: input.sealing,
                bases: input.deltas.then_some(reader),
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
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(Error::internal("reader panicked")));
        // A reader failure is the root cause of whatever the writer saw.
        let (map, packs, stats) = match (read, written) {
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(w)) => w,
        };
        Ok(PipelineOutput { map, packs, stats })
    })
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    source: &Source,
    unused: &Ranges,
    header: MapHeader,
    mut parent: Option<MapReader>,
    free: &Receiver<Slot>,
    jobs: &Sender<Job>,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<()> {
    for pos in 0..header.entries {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(slot) = free.recv() else {
            break;
        };
        let start = pos * header.chunk_size;
        let len = header.chunk_len(pos);
        let parent_entry = match parent.as_mut().map(|map| map.entry(pos)) {
            None => None,
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                // On any doubt about the parent, read and hash everything.
                progress.warn(&format!(
                    "stopped using the parent for change tracking at chunk {pos}: {e}"
                ));
                parent = None;
                None
            }
        };
        let skip = if unused.covers(start, start + len) {
            Skip::Free
        } else if source.is_hole(start, start + len)? {
            Skip::Hole
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
    Ok(())
}

/// What a worker needs to read, name and store new chunks.
struct Store<'a> {
    source: &'a Source,
    index: &'a Index,
    /// New chunks some worker is storing in this backup.
    pending: &'a Mutex<HashSet<ChunkId>>,
    compression: Compression,
    sealing: &'a Sealing,
    /// Reads the parent's chunks back, when deltas are made.
    bases: Option<ChunkReader<'a>>,
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
        let outcome = match skip {
            Skip::Hole => Outcome::Hole,
            Skip::Free => Outcome::Free(len),
            Skip::No => {
                // Every byte is overwritten by the read: resize only when
                // the length changes (the last chunk), so nothing is
                // zero-filled.
                slot.plain.resize(len as usize, 0);
                match store.source.read_at(&mut slot.plain, start) {
                    Ok(()) => classify(&mut slot, parent, store),
                    Err(e) => Outcome::Failed(e),
                }
            }
        };
        if done.send(Done { pos, outcome, slot }).is_err() {
            return;
        }
    }
}

fn classify(slot: &mut Slot, parent: Option<MapEntry>, store: &mut Store<'_>) -> Outcome {
    let index = store.index;
    let plain = &slot.plain[..];
    let fingerprint = codec::fingerprint(plain);
    // The parent's chunk must still be indexed: a lost pack or index file
    // must not be inherited when the source still has the data.
    if let Some(p) = parent
        && p.kind == Kind::Data
        && p.fingerprint == fingerprint
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
    let (base, base_read) = match parent {
        Some(p) if p.kind == Kind::Data => delta_over(&p.id, slot, store),
        _ => (None, 0),
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
            base_read,
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// Writes into the slot's `delta` the chunk's delta over a base when
/// deltas are made: the parent snapshot's chunk at its position if it is
/// stored whole, else the base that chunk is a delta over (deltas never
/// chain, so changes accumulate over one base until they pass half of the
/// chunk, and the chunk is stored whole again). The base must have the
/// chunk's length and read back intact. Returns the base used, if any,
/// and the bytes read back.
fn delta_over(parent: &ChunkId, slot: &mut Slot, store: &mut Store<'_>) -> (Option<ChunkId>, u64) {
    let Some(reader) = store.bases.as_mut() else {
        return (None, 0);
    };
    let index = store.index;
    let base_id = match index.base_of(parent) {
        None => *parent,
        Some(base) => *base,
    };
    let fits = (index.get(&base_id))
        .is_some_and(|loc| !loc.encoded.is_delta() && loc.plain_len as usize == slot.plain.len());
    if !fits {
        return (None, 0);
    }
    // A base that does not read back intact is no base: the chunk is
    // stored whole (verify names the damage).
    let read = reader.read_indexed(&base_id, || Error::internal("base left the index"));
    let Ok(base) = read else {
        return (None, 0);
    };
    let made = codec::delta::encode(&base_id, &base, &slot.plain, &mut slot.delta);
    (made.then_some(base_id), base.len() as u64)
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
        stats.bytes_read += u64::from(plain_len);
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
                    stats.bytes_read += item.slot.plain.len() as u64;
                    MapEntry::ZERO
                }
                Outcome::Unchanged(e) => {
                    stats.chunks_unchanged += 1;
                    stats.bytes_read += item.slot.plain.len() as u64;
                    e
                }
                Outcome::Dedup(e) => {
                    stats.chunks_dedup += 1;
                    stats.bytes_read += item.slot.plain.len() as u64;
                    e
                }
                Outcome::Failed(e) => return Err(e),
                Outcome::New {
                    entry,
                    stored,
                    base,
                    base_read,
                } => {
                    let packs = Packs {
                        backend,
                        sealing,
                        open: &mut pack,
                        commit: &commit_tx,
                    };
                    stats.bytes_base_read += base_read;
                    packs.store(entry, (&stored, base), &item.slot, &mut stats)?
                }
            };
            stats.chunks += 1;
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
