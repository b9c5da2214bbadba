//! The backup pipeline: one reader, a pool of workers, one writer.
//!
//! ```text
//! reader ──jobs──▶ workers (fingerprint, zero check, id, lz4, seal) ──results──▶ writer
//!   ▲                                                                     │
//!   └──────────────────────── free slots (the in-flight bound) ───────────┘
//! ```
//!
//! A slot holds one chunk's buffers and travels around the loop, so the
//! number of slots bounds memory and nothing is allocated per chunk. The
//! writer appends new blobs to packs as results arrive, in any order, and
//! writes map entries in position order. Finished packs are made durable by
//! a committer thread while the writer goes on.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::codec::{self, Blob, ChunkId, Compression, Scratch, Sealing};
use crate::disk::Source;
use crate::disk::free_space::Ranges;
use crate::engine::change_source::ChangedRanges;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::backend::Backend;
use crate::repo::index::Index;
use crate::repo::map::{FINGERPRINT_UNKNOWN, Kind, MapEntry, MapHeader, MapReader, MapWriter};
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
    /// Ranges a change source says may have changed since the parent:
    /// chunks outside them keep the parent's entry unread. `None`: read
    /// every chunk.
    pub changed: Option<&'a ChangedRanges>,
    pub header: MapHeader,
    pub compression: Compression,
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
    stored: Scratch,
}

struct Job {
    pos: u64,
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
    },
    /// Sealing failed (the system's random generator did).
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
            let (unused, index) = (input.free, input.index);
            let pool = BufPool::new(header.chunk_size as usize, 2);
            let parent = ParentTracking {
                map: input.parent,
                changed: input.changed,
                index,
                base: ChunkReader::new(input.backend, input.sealing.clone(), pool),
            };
            scope.spawn(move || {
                read_loop(
                    source, unused, header, parent, &free_rx, &job_tx, stop, progress,
                )
            })
        };
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let store = Store {
                index: input.index,
                pending: &pending,
                compression: input.compression,
                sealing: input.sealing,
            };
            scope.spawn(move || work_loop(&job_rx, &done_tx, &store));
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
        let (map, packs, mut stats, read) = match (read, written) {
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(read), Ok((map, packs, stats))) => (map, packs, stats, read),
        };
        // The reader knows what it read from the source; the writer counts
        // whole chunks.
        stats.bytes_read = read.source;
        stats.bytes_base = read.base;
        (stats.chunks_unread, stats.bytes_unread) = (read.chunks_unread, read.unread);
        Ok(PipelineOutput { map, packs, stats })
    })
}

/// What the reader knows of the parent: its map, and which ranges a
/// change source says may have changed since.
struct ParentTracking<'a> {
    map: Option<MapReader>,
    changed: Option<&'a ChangedRanges>,
    index: &'a Index,
    /// Reads the parent's chunks out of the repository, for chunks of
    /// which only the changed pages are read from the source.
    base: ChunkReader<'a>,
}

/// What the reader read, in bytes (and chunks not read).
#[derive(Default)]
struct ReadCounts {
    /// From the source.
    source: u64,
    /// Parent chunks from the repository, completing chunks of which only
    /// the changed pages were read from the source.
    base: u64,
    chunks_unread: u64,
    unread: u64,
}

/// Pages of a chunk that a change source says changed are read from the
/// source over the parent's chunk when they are at most this share of it
/// (in 1/8): beyond that, reading the chunk whole costs less than reading
/// the parent's chunk back out of the repository.
const PAGES_OVER_BASE_EIGHTHS: u64 = 4;

/// Granularity of those reads: a page, the unit filesystems and change
/// sources track.
const PAGE: u64 = 4096;

impl ParentTracking<'_> {
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

    /// Fills `plain` with the chunk at `[start, end)` by reading only the
    /// pages a change source says changed over the parent's chunk `parent`
    /// from the repository, when those pages are few and the parent's chunk
    /// reads back whole; counts what was read. False: read it whole.
    fn read_pages_over_base(
        &mut self,
        source: &Source,
        parent: Option<MapEntry>,
        (start, end): (u64, u64),
        plain: &mut Vec<u8>,
        counts: &mut ReadCounts,
    ) -> Result<bool> {
        let (Some(changed), Some(entry)) = (self.changed, parent) else {
            return Ok(false);
        };
        if entry.kind != Kind::Data || !self.index.contains(&entry.id) {
            return Ok(false);
        }
        let len = end - start;
        let pages = changed.pages_within(start, end, PAGE);
        let changed_bytes: u64 = pages.iter().map(|&(a, b)| b - a).sum();
        if changed_bytes * 8 > len * PAGES_OVER_BASE_EIGHTHS {
            return Ok(false);
        }
        // A parent's chunk that does not read back (a damaged pack) is no
        // reason to fail: the source still has every byte.
        let missing = || Error::internal("an indexed chunk vanished from the index");
        let Ok(base) = self.base.read_indexed(self.index, &entry.id, missing) else {
            return Ok(false);
        };
        if base.len() as u64 != len {
            return Ok(false);
        }
        plain.clear();
        plain.extend_from_slice(&base);
        for (a, b) in pages {
            let at = (a - start) as usize..(b - start) as usize;
            source.read_at(&mut plain[at], a)?;
        }
        counts.source += changed_bytes;
        counts.base += len;
        Ok(true)
    }
}

/// Reads the chunks; returns what it read, and what it kept from the
/// parent unread.
#[allow(clippy::too_many_arguments)]
fn read_loop(
    source: &Source,
    unused: &Ranges,
    header: MapHeader,
    mut parent: ParentTracking<'_>,
    free: &Receiver<Slot>,
    jobs: &Sender<Job>,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<ReadCounts> {
    let mut counts = ReadCounts::default();
    for pos in 0..header.entries {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut slot) = free.recv() else {
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
        let skip = if unused.covers(start, start + len) {
            Skip::Free
        } else if source.is_hole(start, start + len)? {
            Skip::Hole
        } else if let Some(entry) = parent.unchanged(parent_entry, start, start + len) {
            counts.chunks_unread += 1;
            counts.unread += len;
            // Nothing is read into the slot: the writer counts its length
            // as bytes read.
            slot.plain.clear();
            Skip::Unchanged(entry)
        } else {
            Skip::No
        };
        if skip == Skip::No
            && !parent.read_pages_over_base(
                source,
                parent_entry,
                (start, start + len),
                &mut slot.plain,
                &mut counts,
            )?
        {
            // Every byte is overwritten by the read: resize only when the
            // length changes (the last chunk), so nothing is zero-filled.
            slot.plain.resize(len as usize, 0);
            source.read_at(&mut slot.plain, start)?;
            counts.source += len;
        }
        progress.advance(len);
        let job = Job {
            pos,
            len,
            skip,
            parent: parent_entry,
            slot,
        };
        if jobs.send(job).is_err() {
            break;
        }
    }
    Ok(counts)
}

/// What a worker needs to name and store new chunks.
struct Store<'a> {
    index: &'a Index,
    /// New chunks some worker is storing in this backup.
    pending: &'a Mutex<HashSet<ChunkId>>,
    compression: Compression,
    sealing: &'a Sealing,
}

fn work_loop(jobs: &Receiver<Job>, done: &Sender<Done>, store: &Store<'_>) {
    for job in jobs.iter() {
        let Job {
            pos,
            len,
            skip,
            parent,
            mut slot,
        } = job;
        let outcome = match skip {
            Skip::Hole => Outcome::Hole,
            Skip::Free => Outcome::Free(len),
            Skip::Unchanged(entry) => Outcome::Unchanged(entry),
            Skip::No => classify(&mut slot, parent, store),
        };
        if done.send(Done { pos, outcome, slot }).is_err() {
            return;
        }
    }
}

fn classify(slot: &mut Slot, parent: Option<MapEntry>, store: &Store<'_>) -> Outcome {
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
    match codec::store(
        store.sealing,
        store.compression,
        &id,
        plain,
        &mut slot.stored,
    ) {
        Ok(stored) => Outcome::New { entry, stored },
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
        stored: &Blob,
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
        let bytes = stored.bytes(&slot.plain, &slot.stored);
        writer.add(entry.id, stored.how, bytes, plain_len)?;
        stats.chunks_new += 1;
        stats.bytes_read += u64::from(plain_len);
        stats.bytes_new += stored.len as u64;
        stats.bytes_new_plain += u64::from(plain_len);
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
                Outcome::New { entry, stored } => {
                    let packs = Packs {
                        backend,
                        sealing,
                        open: &mut pack,
                        commit: &commit_tx,
                    };
                    packs.store(entry, &stored, &item.slot, &mut stats)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_parent_fingerprint_never_matches() {
        assert!(!same_fingerprint(FINGERPRINT_UNKNOWN, FINGERPRINT_UNKNOWN));
        assert!(!same_fingerprint(FINGERPRINT_UNKNOWN, 7));
        assert!(same_fingerprint(7, 7));
        assert!(!same_fingerprint(7, 8));
    }
}
