//! Rebuilding the index from the packs' own tables, for when an index file
//! is damaged or lost. The new index is durable before any old one is
//! removed, so a crash in between leaves a repository that still reads.
//!
//! A table entry gets into the new index only if the chunk reader would
//! accept it (`PackEntry::check_lengths`): a table with its crc32 fixed
//! after a change must not turn a chunk that reads into one that does not.
//! Entries that fail are named and left out, and then the old index files
//! that name their packs stay, since they may still locate those chunks
//! correctly.

use std::collections::HashSet;

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::index::{Index, Location, Opening, read_entries};
use crate::repo::lock::LockKind;
use crate::repo::pack::{DataEntry, walk_data};
use crate::repo::{BufPool, FileName, PackId, Repository};

#[derive(Debug, Default, serde::Serialize)]
pub struct RebuildReport {
    pub packs: usize,
    pub chunks: usize,
    /// Packs whose table could not be read: their chunks stay unindexed.
    pub unreadable: Vec<String>,
    /// Table entries the chunk reader would refuse, left out of the index.
    pub rejected: Vec<String>,
    pub removed_index_files: usize,
}

pub fn rebuild_index(repo: &Repository, progress: &dyn Progress) -> Result<RebuildReport> {
    let _lock = super::lock_repo(repo, LockKind::Exclusive, "rebuild-index", progress)?;
    let backend = repo.backend();
    let old = repo.index_files()?;
    let mut report = RebuildReport::default();
    // Entries are sorted on disk as they come (`IndexWriter`): memory
    // does not grow with the repository.
    let mut writer = repo.index_writer();
    // Packs whose chunks the new index may lack: their table could not be
    // read, or an entry of it was refused.
    let mut unsure: HashSet<PackId> = HashSet::new();
    let nothing = Index::default();
    let mut reader =
        repo.chunk_reader(BufPool::new(repo.config().chunk_size as usize, 1), &nothing);
    for entry in walk_data(backend)? {
        // Only packs in their own folder (the name rule readers follow);
        // verify names misplaced ones. A misplaced copy read at its
        // canonical place would be indexed twice, or blamed on the wrong
        // file and keep the old index files for good.
        let DataEntry::File(found) = entry else {
            continue;
        };
        let FileName::Id(id) = found.kind else {
            if found.kind == FileName::Misplaced {
                progress.warn(&format!(
                    "not indexing {}: a pack in the wrong data/ folder (move it to data/{}/)",
                    repo.describe(&found.path()),
                    found.file.get(..2).unwrap_or("")
                ));
            }
            continue;
        };
        let id = PackId::from_bytes(id);
        let name = found.path();
        let what = repo.describe(&name);
        match repo.read_pack_table(&id) {
            Ok((_, table)) => {
                report.packs += 1;
                for (i, mut e) in table.into_iter().enumerate() {
                    let checked = e
                        .check_lengths(repo.config().chunk_size, repo.sealing())
                        .and_then(|()| {
                            // A delta's base is in its blob, not the table.
                            if e.encoded.is_delta() {
                                let loc = Location::of(&e, 0);
                                let base = reader.delta_base(&e.id, &id, &loc);
                                e.base = Some(base.map_err(|err| err.message().to_string())?);
                            }
                            Ok(())
                        });
                    match checked {
                        Ok(()) => {
                            writer.push(&id, &e)?;
                            report.chunks += 1;
                        }
                        Err(why) => {
                            let entry =
                                format!("pack {what}: table entry {i} (chunk {}) {why}", e.id);
                            progress.warn(&format!("not indexing {entry}"));
                            report.rejected.push(entry);
                            unsure.insert(id);
                        }
                    }
                }
            }
            Err(e) => {
                progress.warn(&format!("skipping pack {what}: {e}"));
                report.unreadable.push(what);
                unsure.insert(id);
            }
        }
    }
    if report.packs == 0 {
        return Ok(report);
    }
    // The old files that may still describe packs that could not be read
    // now (a permission, a passing I/O error), or locate correctly chunks
    // whose table entry was refused, stay, and so do those that cannot be
    // read; the others go (so that rerunning while a pack is unreadable
    // does not add a whole index each time). Duplicates are harmless: the
    // first location wins.
    let replaced: Vec<String> = if unsure.is_empty() {
        old
    } else {
        old.into_iter()
            .filter(|name| !names_any(repo, name, &unsure))
            .collect()
    };
    repo.replace_index_files(writer, &replaced)?;
    report.removed_index_files = replaced.len();
    Ok(report)
}

/// Whether index file `name` names a pack of `packs`, or cannot be read.
fn names_any(repo: &Repository, name: &str, packs: &HashSet<PackId>) -> bool {
    let mut found = false;
    let read = read_entries(
        repo.backend(),
        Opening::With(repo.sealing()),
        name,
        &mut |p, _| {
            found |= packs.contains(p);
            Ok(())
        },
    );
    found || read.is_err()
}
