//! Writing one index file from entries handed in one at a time, in any
//! order (prune and repair write the whole index this way). Entries are
//! sorted in runs in the cache folder as the index cache's are, so memory
//! does not grow with the index; a small index is written from memory.

use std::path::PathBuf;

use crate::error::Result;
use crate::repo::index::cache::{RUN_ENTRIES, merge_files, scratch_folder, write_run};
use crate::repo::index::file::{groups_of, write_index_from};
use crate::repo::index::table::Table;
use crate::repo::pack::PackEntry;
use crate::repo::{IndexId, PackId, Repository};

/// An index file being gathered; `Repository::index_writer` makes one.
pub struct IndexWriter<'a> {
    repo: &'a Repository,
    buffer: Vec<(PackId, PackEntry)>,
    /// The scratch folder (and whether it is a temporary one), once a run
    /// is written.
    dir: Option<(PathBuf, bool)>,
    runs: Vec<PathBuf>,
}

impl<'a> IndexWriter<'a> {
    pub(in crate::repo) fn new(repo: &'a Repository) -> IndexWriter<'a> {
        IndexWriter {
            repo,
            buffer: Vec::new(),
            dir: None,
            runs: Vec::new(),
        }
    }

    /// Adds entry `e` of pack `pack` (a delta's entry with its base).
    pub fn push(&mut self, pack: &PackId, e: &PackEntry) -> Result<()> {
        self.buffer.push((*pack, *e));
        if self.buffer.len() >= RUN_ENTRIES {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if self.dir.is_none() {
            self.dir = Some(scratch_folder(self.repo)?);
        }
        let dir = self
            .dir
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_default();
        let run = write_run(&dir, &mut self.buffer)?;
        self.runs.push(run);
        Ok(())
    }

    /// Writes the index file (durable before it returns); returns its id.
    pub fn finish(mut self) -> Result<IndexId> {
        if self.runs.is_empty() {
            let groups = groups_of(self.buffer.drain(..));
            return self.repo.write_index(&groups);
        }
        self.spill()?;
        let dir = self
            .dir
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_default();
        let merged = merge_files(&dir, &self.runs)?;
        let table = Table::open(&merged);
        let _ = std::fs::remove_file(&merged);
        let sorted = self.repo.sorted_index();
        write_index_from(self.repo.backend(), self.repo.sealing(), &table?, sorted)
    }
}

impl Drop for IndexWriter<'_> {
    fn drop(&mut self) {
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
        }
        if let Some((dir, true)) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ChunkId, Encoded};
    use crate::repo::NewKey;

    #[test]
    fn a_large_index_is_written_from_sorted_runs_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            &dir.path().join("repo"),
            1 << 20,
            crate::codec::Compression::Lz4,
            NewKey::Plain,
        )
        .unwrap();
        let packs = [PackId::from_bytes([1; 32]), PackId::from_bytes([2; 32])];
        let n = RUN_ENTRIES as u32 + 500;
        let entry = |i: u32| PackEntry {
            id: ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            encoded: if i.is_multiple_of(1000) {
                Encoded::DeltaRaw
            } else {
                Encoded::Lz4
            },
            offset: u64::from(i),
            stored_len: 10,
            plain_len: 20,
            crc: i,
            base: i.is_multiple_of(1000).then_some(ChunkId([7; 32])),
        };
        let mut w = repo.index_writer();
        for i in 0..n {
            w.push(&packs[(i % 2) as usize], &entry(i)).unwrap();
        }
        let id = w.finish().unwrap();
        let name = crate::repo::names::index_name(&id);
        let read =
            crate::repo::index::file::read_groups(repo.backend(), repo.sealing(), &name).unwrap();
        let mut all: Vec<(PackId, PackEntry)> = read
            .into_iter()
            .flat_map(|(p, es)| es.into_iter().map(move |e| (p, e)))
            .collect();
        assert_eq!(all.len(), n as usize);
        all.sort_by_key(|(_, e)| e.crc);
        for (i, (pack, e)) in all.iter().enumerate() {
            assert_eq!(*e, entry(i as u32));
            assert_eq!(*pack, packs[i % 2]);
        }
        // The runs are gone.
        let (scratch, temporary) = scratch_folder(&repo).unwrap();
        let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir(&scratch);
        assert!(!temporary || std::fs::remove_dir(&scratch).is_err());
    }
}
