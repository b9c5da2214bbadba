//! Reading a snapshot as a disk is read: any byte range, at any time, in
//! any order, for `platter mount` (and what builds on it: booting a
//! snapshot). Every chunk goes through the same checked reader as a
//! restore (`ChunkReader`: its id, or the seal of an encrypted one, is
//! checked before a byte of it is served), and a read that touches a
//! damaged chunk fails whole, naming the chunk's byte range: a reader must
//! never get zeros, or a short read, where data was.
//!
//! Speed comes from three things: a bounded cache of checked chunks
//! (`cache.rs`, shared by every snapshot of the reader, so a chunk that
//! several snapshots share is fetched once), fetch threads that read
//! several chunks at once (`fetch.rs`: a read spanning chunks waits for
//! all of them together), and read-ahead: a reader that goes on where its
//! last read ended gets the next chunks fetched before it asks. Zero and
//! unused chunks cost nothing: they are zeros without any I/O.
//!
//! The reader starts with an empty index: its user lists the snapshots
//! it will read, then calls `load_index`, and calls it again before it
//! opens a snapshot committed since. An index file is durable before the
//! manifest that needs it, so an index loaded after a manifest was seen
//! knows every chunk of that snapshot.

mod cache;
mod fetch;

use std::sync::{Arc, Mutex, RwLock};

use cache::{ChunkCache, Claim};
use fetch::{Fetchers, Job, Shared};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapHeader, MapReader};
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, PlainChunk, Repository, SnapshotId};

/// Zeros served for zero and free chunks without allocating: the pages
/// are never written, so they all map the kernel's one zero page.
const ZEROS_LEN: usize = 1 << 20;

fn zeros() -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ZEROS.get_or_init(|| vec![0u8; ZEROS_LEN])
}

/// Chunks the cache must hold at least: what a read of two chunks and
/// read-ahead of two more need at once.
const MIN_CACHED_CHUNKS: u64 = 4;

/// Reads snapshots of one repository at random offsets (see the module
/// doc). Cheap to share: hand out `Arc`s.
pub struct ImageReader {
    shared: Arc<Shared>,
    fetchers: Fetchers,
    /// Chunks fetched ahead of a sequential reader.
    read_ahead: u64,
}

impl ImageReader {
    /// A reader of `repo` whose cache holds at most `cache_size` bytes of
    /// chunks (more only while many are being fetched at once).
    pub fn new(repo: Arc<Repository>, cache_size: u64) -> Result<ImageReader> {
        let chunk_size = repo.config().chunk_size;
        let chunks = cache_size / chunk_size;
        if chunks < MIN_CACHED_CHUNKS {
            return Err(Error::bad_input(format!(
                "a cache of {} holds fewer than {MIN_CACHED_CHUNKS} chunks of this repository \
                 ({} each)",
                crate::units::bytes(cache_size),
                crate::units::bytes(chunk_size)
            ))
            .hint(format!(
                "give --cache-size {} or more",
                crate::units::bytes(MIN_CACHED_CHUNKS * chunk_size)
            )));
        }
        let workers = crate::engine::reader_count(&repo);
        let shared = Arc::new(Shared {
            pool: BufPool::new(chunk_size as usize, workers),
            repo,
            index: RwLock::new(Arc::new(Index::default())),
            cache: ChunkCache::new(chunks as usize),
        });
        let fetchers = Fetchers::start(&shared, workers)?;
        Ok(ImageReader {
            shared,
            fetchers,
            // A quarter of the cache, at most 16 chunks: enough to keep
            // every fetch thread busy, never enough to push out what a
            // reader is using.
            read_ahead: (chunks / 4).clamp(1, 16),
        })
    }

    pub fn repository(&self) -> &Repository {
        &self.shared.repo
    }

    /// Loads the index: call it after listing the snapshots to read, and
    /// again before opening one committed since (the index files a
    /// snapshot needs are committed before its manifest).
    pub fn load_index(&self) -> Result<()> {
        let repo = &self.shared.repo;
        let (index, damaged) = repo.load_index()?;
        for (name, e) in damaged {
            crate::progress::Quiet.warn(&format!(
                "index file {} cannot be read ({e}): chunks only it names read as damaged",
                repo.describe(&name)
            ));
        }
        match self.shared.index.write() {
            Ok(mut held) => *held = Arc::new(index),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(index),
        }
        Ok(())
    }

    /// Opens snapshot `snap` for reading; its map is checked whole first.
    pub fn open(self: &Arc<Self>, snap: &Snapshot) -> Result<SnapshotImage> {
        let map = self.shared.repo.open_map(snap)?;
        Ok(SnapshotImage {
            reader: Arc::clone(self),
            snapshot: snap.id,
            header: *map.header(),
            map: Mutex::new(map),
        })
    }
}

/// A byte range of an image that could not be read, and why.
#[derive(Debug)]
pub struct ReadFailure {
    /// The range of the image (`offset`, `len`) that cannot be read: the
    /// whole damaged chunk.
    pub range: (u64, u64),
    pub error: Error,
}

/// One snapshot's image, readable at any offset (see `ImageReader`).
pub struct SnapshotImage {
    reader: Arc<ImageReader>,
    snapshot: SnapshotId,
    header: MapHeader,
    map: Mutex<MapReader>,
}

/// A chunk a read needs: its position and where it is coming from.
enum Part {
    Zeros,
    Data(Arc<cache::Slot>),
}

impl SnapshotImage {
    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.header.source_size
    }

    pub fn snapshot(&self) -> &SnapshotId {
        &self.snapshot
    }

    /// Reads up to `len` bytes at `offset` (fewer only at the end of the
    /// image) and hands them to `take`: straight from the cached chunk
    /// when the range lies in one (a read of a kernel page or a FUSE
    /// request, nearly always), so they are not copied once more.
    /// `sequential` says the caller goes on where its last read ended, so
    /// the chunks after this read are fetched ahead. Any chunk of the
    /// range that cannot be read fails the whole read, and then `take` is
    /// not called.
    pub fn read_with<R>(
        &self,
        offset: u64,
        len: usize,
        sequential: bool,
        take: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ReadFailure> {
        let end = offset.saturating_add(len as u64).min(self.size());
        if offset >= end {
            return Ok(take(&[]));
        }
        let cs = self.header.chunk_size;
        let (first, last) = (offset / cs, (end - 1) / cs);
        let parts = self.claim(first..last + 1)?;
        if sequential {
            self.read_ahead(last + 1);
        }
        if let [part] = parts.as_slice() {
            let n = (end - offset) as usize;
            return match part {
                Part::Zeros if n <= ZEROS_LEN => Ok(take(&zeros()[..n])),
                Part::Zeros => Ok(take(&vec![0u8; n])),
                Part::Data(slot) => {
                    let plain = self.wait(first, slot)?;
                    let from = (offset - first * cs) as usize;
                    Ok(take(&plain[from..from + n]))
                }
            };
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (pos, part) in (first..=last).zip(parts) {
            let Part::Data(slot) = part else {
                continue;
            };
            let plain = self.wait(pos, &slot)?;
            let chunk_start = pos * cs;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + plain.len() as u64);
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                &plain[(from - chunk_start) as usize..(to - chunk_start) as usize],
            );
        }
        Ok(take(&out))
    }

    /// The checked chunk at position `pos`, once `slot` has it; it must be
    /// as long as its place in the map.
    fn wait(&self, pos: u64, slot: &cache::Slot) -> Result<Arc<PlainChunk>, ReadFailure> {
        let chunk_len = self.header.chunk_len(pos);
        let failed = |error: Error| ReadFailure {
            range: (pos * self.header.chunk_size, chunk_len),
            error,
        };
        let plain = slot.wait().map_err(|f| failed(f.to_error()))?;
        if plain.len() as u64 != chunk_len {
            return Err(failed(Error::corrupt(format!(
                "its chunk is {} bytes, but its place in the map is {chunk_len}",
                plain.len()
            ))));
        }
        Ok(plain)
    }

    /// The chunks at `positions`, each fetched (or being fetched) once.
    fn claim(&self, positions: std::ops::Range<u64>) -> Result<Vec<Part>, ReadFailure> {
        let mut parts = Vec::new();
        for pos in positions {
            let entry = self.entry(pos)?;
            if entry.kind != Kind::Data {
                parts.push(Part::Zeros);
                continue;
            }
            let slot = match self.reader.shared.cache.claim(&entry.id) {
                Claim::Known(slot) => slot,
                Claim::Fetch(slot) => {
                    self.reader.fetchers.demand(Job {
                        id: entry.id,
                        slot: Arc::clone(&slot),
                    });
                    slot
                }
            };
            parts.push(Part::Data(slot));
        }
        Ok(parts)
    }

    /// Starts fetching the data chunks from position `from` on that are
    /// not cached yet, as far as read-ahead goes.
    fn read_ahead(&self, from: u64) {
        let to = from
            .saturating_add(self.reader.read_ahead)
            .min(self.header.entries);
        let cache = &self.reader.shared.cache;
        for pos in from..to {
            let Ok(entry) = self.entry(pos) else {
                return;
            };
            if entry.kind != Kind::Data || cache.holds(&entry.id) {
                continue;
            }
            if let Claim::Fetch(slot) = cache.claim(&entry.id) {
                self.reader.fetchers.ahead(Job { id: entry.id, slot });
            }
        }
    }

    fn entry(&self, pos: u64) -> Result<crate::repo::map::MapEntry, ReadFailure> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(pos).map_err(|error| ReadFailure {
            range: (pos * self.header.chunk_size, self.header.chunk_len(pos)),
            error,
        })
    }
}
