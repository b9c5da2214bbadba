//! Carrying out a [`PrunePlan`], in the order the module doc gives: new
//! packs, the new index, the old index files, dead and repacked packs,
//! leftovers; each durable before the next.

use std::collections::HashSet;

use super::PruneReport;
use super::plan::{self, PrunePlan, RepackPack, location};
use crate::engine::pack_sink::{ClosedPack, PackSink};
use crate::engine::{out_of_space, remake_reserve};
use crate::error::Result;
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::names::{Folder, pack_name};
use crate::repo::pack;
use crate::repo::{BufPool, ChunkReader, PackId, Repository};

/// What repacking did.
struct Repacked {
    /// The new packs, durable, that no index names yet.
    written: Vec<ClosedPack>,
    /// For each pack of the plan's `repack`, whether its live chunks are
    /// now in `written` (else it stays as it is).
    moved: Vec<bool>,
}

impl PrunePlan {
    /// Does what the plan says; the caller holds an exclusive lock.
    pub(super) fn execute(
        mut self,
        repo: &Repository,
        progress: &dyn Progress,
    ) -> Result<PruneReport> {
        let mut report = self.report(false);
        let mut stale_maps = std::mem::take(&mut self.stale_maps);
        // 1. Repack: live chunks of mostly-dead packs into new packs.
        let repacked = repack(repo, &self.found, &self.repack, progress)?;
        report.packs_written = repacked.written.len();
        // 2. One index for every live chunk at its final place.
        // 3. The old index files go once it is durable. On a full
        // filesystem, room for it is made first with what no index names.
        let mut gone = HashSet::new();
        if let Err(e) = self.write_index(repo, &repacked) {
            if !out_of_space(&e) {
                return Err(e);
            }
            gone = self.make_room(repo, &mut stale_maps, &mut report, progress)?;
            self.write_index(repo, &repacked).map_err(|e| {
                e.hint(
                    "the repository's filesystem is too full even for the new index; nothing a \
                     snapshot needs was removed: free some space on it, then run `platter prune`",
                )
            })?;
        }
        // 4. Dead and repacked packs.
        let (done, stayed): (Vec<_>, Vec<_>) = self
            .repack
            .iter()
            .zip(&repacked.moved)
            .partition(|(_, moved)| **moved);
        let mut retired: Vec<PackId> = (self.delete.iter().map(|p| p.id))
            .chain(done.iter().map(|(p, _)| p.id))
            .collect();
        retired.sort_unstable();
        for id in retired.iter().filter(|id| !gone.contains(*id)) {
            repo.backend().remove(&pack_name(id))?;
        }
        report.packs_deleted = self.delete.len();
        report.packs_repacked = done.len();
        // 5. Leftovers of interrupted commands.
        remove_leftovers(repo, &mut stale_maps, &mut report)?;
        remake_reserve(repo, progress);
        let new_packs = repacked
            .written
            .iter()
            .map(|(id, _)| repo.backend().open(&pack_name(id)).map(|f| f.len()))
            .sum::<Result<u64>>()?;
        let stayed: Vec<&RepackPack> = stayed.into_iter().map(|(p, _)| p).collect();
        report.bytes_after = self.bytes_after(&stayed, new_packs);
        Ok(report)
    }

    /// Room for the new index on a full filesystem, made only with what no
    /// index names (a pack an index still names must stay until the new
    /// index is durable, or the next backup could dedup against a chunk
    /// that is gone): maps without a manifest, unfinished writes, dead
    /// packs that no index lists, and the space reserve. Returns the packs
    /// it deleted.
    fn make_room(
        &self,
        repo: &Repository,
        stale_maps: &mut Vec<String>,
        report: &mut PruneReport,
        progress: &dyn Progress,
    ) -> Result<HashSet<PackId>> {
        progress.warn(
            "the repository's filesystem is full: making room for the new index with files no \
             index names",
        );
        remove_leftovers(repo, stale_maps, report)?;
        let mut gone = HashSet::new();
        for pack in self.delete.iter().filter(|p| !p.indexed) {
            repo.backend().remove(&pack_name(&pack.id))?;
            gone.insert(pack.id);
        }
        repo.release_reserve()?;
        Ok(gone)
    }
}

impl PrunePlan {
    /// Writes the new index and removes the old index files: the live
    /// chunks of the packs that stay (their tables read again, a batch at
    /// a time), those of packs whose table cannot be read, and those of
    /// the packs to repack where they are now: in their pack if it could
    /// not be repacked, else in the new packs. Entries go to the index
    /// writer one at a time; none are gathered here.
    fn write_index(&self, repo: &Repository, repacked: &Repacked) -> Result<()> {
        let mut writer = repo.index_writer();
        plan::each_table(repo, &self.kept, |pack, read| {
            // Read when planning: a table that fails now is not left out
            // of the index (its chunks would be unindexed), nothing is.
            let (_, table) = read.map_err(|e| e.hint("nothing was removed"))?;
            for e in self.live.entries(&self.found, pack, &table) {
                writer.push(pack, &e)?;
            }
            Ok(())
        })?;
        for (pack, e) in &self.carried {
            writer.push(pack, e)?;
        }
        for (pack, _) in self
            .repack
            .iter()
            .zip(&repacked.moved)
            .filter(|(_, m)| !**m)
        {
            for e in &pack.live {
                writer.push(&pack.id, e)?;
            }
        }
        for (pack, entries) in &repacked.written {
            for e in entries {
                writer.push(pack, e)?;
            }
        }
        repo.replace_index_with(writer)
    }
}

/// Moves the live chunks of the packs to repack into new packs, each
/// checked against its id. A pack with a chunk that fails its check stays
/// as it is; on a full filesystem they all do.
fn repack(
    repo: &Repository,
    index: &Index,
    packs: &[RepackPack],
    progress: &dyn Progress,
) -> Result<Repacked> {
    let total: u64 = packs
        .iter()
        .flat_map(|p| &p.live)
        .map(|e| u64::from(e.plain_len))
        .sum();
    progress.start("repack", total);
    let pool = BufPool::new(repo.config().chunk_size as usize, 2);
    let mut reader = repo.chunk_reader(pool, index);
    let mut done = Repacked {
        written: Vec::new(),
        moved: vec![false; packs.len()],
    };
    let moving = move_live_chunks(repo, packs, &mut reader, &mut done, progress);
    progress.finish();
    match moving {
        Ok(()) => {}
        Err(e) if out_of_space(&e) => {
            // No index names the new packs, and every live chunk is still
            // in its old pack: dropping them loses nothing.
            for (id, _) in done.written.drain(..) {
                repo.backend().remove(&pack_name(&id))?;
            }
            done.moved.fill(false);
            progress.warn(
                "the repository's filesystem has no room to repack: packs that are partly \
                 unused stay as they are (`platter prune` repacks them once there is space)",
            );
        }
        Err(e) => return Err(e),
    }
    Ok(done)
}

/// Reads the live chunks of each pack and writes them into new packs,
/// which it adds to `done`, marking the packs it moved. Chunks move as they
/// are stored (checked on the way, not compressed or sealed again): a
/// pack's worth of them is held at its stored size, not its plain size.
fn move_live_chunks(
    repo: &Repository,
    packs: &[RepackPack],
    reader: &mut ChunkReader,
    done: &mut Repacked,
    progress: &dyn Progress,
) -> Result<()> {
    let mut sink = PackSink::new(repo.backend(), repo.sealing(), repo.config().compression);
    for (p, pack) in packs.iter().enumerate() {
        let read: Result<Vec<_>> = (pack.live.iter())
            .map(|e| {
                let loc = location(e);
                reader
                    .read_stored(&e.id, &pack.id, &loc)
                    .map(|stored| (e, stored))
            })
            .collect();
        let chunks = match read {
            Ok(chunks) => chunks,
            Err(err) => {
                progress.warn(&format!(
                    "keeping pack {} as it is: {err}",
                    repo.describe(&pack_name(&pack.id))
                ));
                continue;
            }
        };
        for (e, stored) in chunks {
            progress.advance(u64::from(e.plain_len));
            if let Some(closed) =
                sink.add_stored(e.id, (e.encoded, e.base), &stored, e.plain_len)?
            {
                done.written.push(closed);
            }
        }
        done.moved[p] = true;
    }
    if let Some(closed) = sink.close()? {
        done.written.push(closed);
    }
    Ok(())
}

/// The plan's maps without a manifest (each once), and unfinished writes:
/// nothing else writes (the lock is exclusive), so none of them is in
/// progress, except in `locks/`, where others write their lock before
/// they look at ours: there only those whose writer is gone go. Names
/// that are not platter's are left alone (see `repo::classify`).
fn remove_leftovers(
    repo: &Repository,
    stale_maps: &mut Vec<String>,
    report: &mut PruneReport,
) -> Result<()> {
    let backend = repo.backend();
    for name in std::mem::take(stale_maps) {
        backend.remove(&name)?;
        report.maps_removed += 1;
    }
    // "" is the repository's own folder: a killed command's reserve or
    // config being written is 4 MiB on the very disk that filled up.
    let mut dirs: Vec<String> = vec![String::new()];
    dirs.extend(
        [
            Folder::Snapshots,
            Folder::Maps,
            Folder::Index,
            Folder::Keys,
            Folder::Tests,
        ]
        .map(|f| f.as_str().into()),
    );
    dirs.extend(pack::pack_folders(backend)?);
    for dir in dirs {
        report.unfinished_removed += backend.remove_unfinished(&dir, true)?.len();
    }
    report.unfinished_removed += backend
        .remove_unfinished(Folder::Locks.as_str(), false)?
        .len();
    Ok(())
}
