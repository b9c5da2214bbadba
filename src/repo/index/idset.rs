//! Sets of chunk ids that may be larger than memory: the chunks snapshots
//! use (verify, prune). Ids are gathered in memory up to `RUN_IDS`; past
//! that, sorted runs go to the repository's cache folder (never /tmp,
//! often memory itself) and are merged into one sorted file, which is
//! mapped and unlinked at once (nothing is left behind, whatever happens
//! to the process). Membership reads the one 4 KiB page of ids that keys
//! held in memory (8 bytes per 128 ids) point to, with pread (see the
//! index table for why not through the mapping); a walk goes through the
//! mapping in id order and lets the pages go behind it. Exact: never a filter, which could say
//! "present" for a chunk that is not.

use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::ChunkId;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::index::pages;

/// Ids held in memory before a run is written (32 MiB).
const RUN_IDS: usize = 1 << 20;
/// Ids walked before the pages behind them are let go.
const RELEASE_EVERY: u64 = 1 << 16;
/// Ids per 4 KiB page, and per key.
const PAGE_IDS: u64 = pages::PAGE / 32;

/// Gathers ids into an `IdSet`.
pub struct IdSetBuilder<'a> {
    dir: Option<(PathBuf, bool)>,
    scratch: Box<dyn Fn() -> Result<(PathBuf, bool)> + 'a>,
    ids: Vec<ChunkId>,
    runs: Vec<PathBuf>,
}

impl<'a> IdSetBuilder<'a> {
    /// A builder whose runs (if it needs any) go to `repo`'s cache folder.
    pub fn new(repo: &'a Repository) -> IdSetBuilder<'a> {
        IdSetBuilder::in_folder(move || super::cache::scratch_folder(repo))
    }

    fn in_folder(scratch: impl Fn() -> Result<(PathBuf, bool)> + 'a) -> IdSetBuilder<'a> {
        IdSetBuilder {
            dir: None,
            scratch: Box::new(scratch),
            ids: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn insert(&mut self, id: ChunkId) -> Result<()> {
        self.ids.push(id);
        if self.ids.len() >= RUN_IDS {
            self.spill()?;
        }
        Ok(())
    }

    fn folder(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            self.dir = Some((self.scratch)()?);
        }
        Ok(self
            .dir
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_default())
    }

    fn spill(&mut self) -> Result<()> {
        self.ids.sort_unstable();
        self.ids.dedup();
        let path = self.folder()?.join(format!(
            "ids-{}-{}",
            std::process::id(),
            crate::repo::id::random_hex(8)
        ));
        self.runs.push(path.clone());
        write_ids(&path, self.ids.drain(..))
    }

    /// The set of every id inserted.
    pub fn finish(mut self) -> Result<IdSet> {
        if self.runs.is_empty() {
            let mut ids = std::mem::take(&mut self.ids);
            ids.sort_unstable();
            ids.dedup();
            return Ok(IdSet::Memory(ids));
        }
        if !self.ids.is_empty() {
            self.spill()?;
        }
        let path = self.folder()?.join(format!(
            "ids-{}-{}",
            std::process::id(),
            crate::repo::id::random_hex(8)
        ));
        let merged = merge_runs(&self.runs, &path);
        let set = merged.and_then(|keys| IdSet::map(&path, keys));
        let _ = std::fs::remove_file(&path);
        set
    }
}

impl Drop for IdSetBuilder<'_> {
    fn drop(&mut self) {
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
        }
        if let Some((dir, true)) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write_ids(path: &Path, ids: impl Iterator<Item = ChunkId>) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for id in ids {
        out.write_all(&id.0)
            .map_err(|e| Error::io("write", path, e))?;
    }
    out.flush().map_err(|e| Error::io("write", path, e))
}

/// Merges sorted runs into `out`, each id once; returns the keys of its
/// pages (the first 8 bytes of every `PAGE_IDS`-th id), gathered as they
/// are written.
fn merge_runs(runs: &[PathBuf], out: &Path) -> Result<Vec<u64>> {
    let mut readers = Vec::with_capacity(runs.len());
    for run in runs {
        let f = std::fs::File::open(run).map_err(|e| Error::io("open", run, e))?;
        readers.push((BufReader::with_capacity(1 << 18, f), run));
    }
    let next = |r: &mut (BufReader<std::fs::File>, &PathBuf)| -> Result<Option<ChunkId>> {
        let mut id = [0u8; 32];
        match r.0.read_exact(&mut id) {
            Ok(()) => Ok(Some(ChunkId(id))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io("read", r.1, e)),
        }
    };
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(id) = next(r)? {
            heap.push(std::cmp::Reverse((id, i)));
        }
    }
    let mut last: Option<ChunkId> = None;
    let (mut keys, mut written) = (Vec::new(), 0u64);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| Error::io("create", out, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    while let Some(std::cmp::Reverse((id, i))) = heap.pop() {
        if last != Some(id) {
            w.write_all(&id.0).map_err(|e| Error::io("write", out, e))?;
            if written.is_multiple_of(PAGE_IDS) {
                keys.push(pages::key(&id));
            }
            written += 1;
            last = Some(id);
        }
        if let Some(next_id) = next(&mut readers[i])? {
            heap.push(std::cmp::Reverse((next_id, i)));
        }
    }
    w.flush().map_err(|e| Error::io("write", out, e))?;
    Ok(keys)
}

/// A sorted set of chunk ids, in memory or mapped from a file that is
/// already unlinked.
pub enum IdSet {
    Memory(Vec<ChunkId>),
    Mapped {
        file: std::fs::File,
        map: memmap2::Mmap,
        len: u64,
        /// The first 8 bytes of every `PAGE_IDS`-th id.
        keys: Vec<u64>,
    },
}

impl IdSet {
    fn map(path: &Path, keys: Vec<u64>) -> Result<IdSet> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("look at", path, e))?
            .len();
        if bytes == 0 {
            return Ok(IdSet::Memory(Vec::new()));
        }
        // SAFETY: the file was written whole by this process in its
        // private folder, and is unlinked right after this call: no other
        // process can open, change or truncate it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
        let len = bytes / 32;
        if keys.len() as u64 != len.div_ceil(PAGE_IDS) {
            return Err(Error::internal("a sorted id file does not match its keys"));
        }
        Ok(IdSet::Mapped {
            file,
            map,
            len,
            keys,
        })
    }

    pub fn len(&self) -> u64 {
        match self {
            IdSet::Memory(ids) => ids.len() as u64,
            IdSet::Mapped { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn at(&self, i: u64) -> ChunkId {
        match self {
            IdSet::Memory(ids) => ids[i as usize],
            IdSet::Mapped { map, .. } => {
                let at = (i * 32) as usize;
                let mut id = [0u8; 32];
                id.copy_from_slice(&map[at..at + 32]);
                ChunkId(id)
            }
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        match self {
            IdSet::Memory(ids) => ids.binary_search(id).is_ok(),
            IdSet::Mapped {
                file,
                map,
                keys,
                len,
            } => {
                let Some((_, ids)) = pages::span(keys, id, PAGE_IDS, *len) else {
                    return false;
                };
                pages::read(file, map, ids.start * 32..ids.end * 32, |buf| {
                    !pages::equal(buf, 32, id).is_empty()
                })
            }
        }
    }

    /// Every id, in order.
    pub fn iter(&self) -> impl Iterator<Item = ChunkId> + '_ {
        (0..self.len()).map(move |i| {
            if i > 0 && i % RELEASE_EVERY == 0 {
                self.release(i - RELEASE_EVERY..i);
            }
            self.at(i)
        })
    }

    fn release(&self, range: std::ops::Range<u64>) {
        if let IdSet::Mapped { map, .. } = self {
            pages::release(map, range.start * 32..range.end * 32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn sets_larger_than_a_run_are_sorted_on_disk_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut b = IdSetBuilder::in_folder(move || Ok((path.clone(), false)));
        let n = RUN_IDS as u32 + 1000;
        // Every id twice, the second time in another run.
        for i in (0..n).chain(0..2000) {
            b.insert(id(i)).unwrap();
        }
        let set = b.finish().unwrap();
        assert!(matches!(set, IdSet::Mapped { .. }));
        assert_eq!(set.len(), u64::from(n));
        assert!(set.contains(&id(0)) && set.contains(&id(n - 1)));
        assert!(!set.contains(&id(n)));
        let all: Vec<ChunkId> = set.iter().collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        // Nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut small = IdSetBuilder::in_folder(|| Err(Error::internal("unused")));
        small.insert(id(1)).unwrap();
        small.insert(id(1)).unwrap();
        let small = small.finish().unwrap();
        assert_eq!(small.len(), 1);
        assert!(small.contains(&id(1)) && !small.contains(&id(2)));
    }
}
