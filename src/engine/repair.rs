//! Repairing a repository from a copy of it (`platter copy` made one):
//! damaged or lost chunks, maps and manifests are fetched from the other
//! repository, checked, and written anew here. Chunks go into new packs
//! and one new index names every chunk at its good place before the old
//! index files are removed; the damaged copies become dead space for
//! `prune`. Runs under an exclusive lock.

use std::collections::HashSet;
use std::time::Instant;

use crate::codec::ChunkId;
use crate::engine::chunk_mover::{Pair, check_pair, copy_map};
use crate::engine::in_use::in_use;
use crate::engine::pack_sink::PackSink;
use crate::engine::verify::{Problem, VerifyOptions, verify_locked};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::lock::LockKind;
use crate::repo::names::Folder;
use crate::repo::pack::PackEntry;
use crate::repo::{BufPool, PackId, Repository, SnapshotId};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// What verify found before the repair.
    pub damage: Vec<Problem>,
    pub chunks_repaired: Vec<ChunkId>,
    pub maps_repaired: Vec<SnapshotId>,
    pub manifests_repaired: Vec<SnapshotId>,
    /// Damaged chunks the other repository does not have intact either.
    pub chunks_unrepairable: Vec<ChunkId>,
    /// Snapshots whose damaged map the other repository lacks intact too.
    pub maps_unrepairable: Vec<SnapshotId>,
    /// Snapshots whose unreadable manifest the other repository lacks.
    pub manifests_unrepairable: Vec<SnapshotId>,
    pub bytes_stored: u64,
    pub duration_s: f64,
}

pub fn repair(
    repo: &Repository,
    from: &Repository,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let started = Instant::now();
    check_pair(from, repo, Pair::Repair)?;
    let _lock = super::lock_repo(repo, LockKind::Exclusive, "repair", progress)?;
    let _from_lock = super::lock_for_reading(from, "repair (source)", progress)?;
    let mut report = RepairReport::default();
    // Manifests and maps first: they say which chunks matter.
    repair_manifests(repo, from, &mut report)?;
    repair_maps(repo, from, &mut report)?;
    let found = verify_locked(
        repo,
        &VerifyOptions {
            read_data: true,
            snapshots: Vec::new(),
        },
        progress,
    )?;
    report.damage = found.damage.clone();
    // What is used decides what is worth mending; where that is unknown
    // (a manifest or map neither here nor in the copy is readable), every
    // damaged chunk is mended rather than one a snapshot needs skipped.
    let used = match in_use(repo) {
        Ok(in_use) => Some(in_use.chunks),
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            progress.warn(&format!(
                "{e}: repairing every damaged chunk, whether or not a snapshot uses it"
            ));
            None
        }
        Err(e) => return Err(e),
    };
    let (index, _) = repo.load_index_checked()?;
    // Damaged or lost chunks, and every chunk of a pack whose table is
    // unreadable (its data may be fine, but nothing can rebuild its index
    // entries): only those some snapshot uses, when that is known.
    let mut bad: HashSet<ChunkId> = found
        .damage
        .iter()
        .flat_map(|p| p.chunks.iter())
        .copied()
        .collect();
    bad.extend(chunks_in_unreadable_packs(repo, &index)?);
    if let Some(used) = used {
        bad.retain(|id| used.contains(id));
    }
    if bad.is_empty() {
        report.duration_s = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let (from_index, _) = from.load_index()?;
    let pool = BufPool::new(repo.config().chunk_size as usize, 2);
    let mut local = repo.chunk_reader(pool.clone(), &index);
    let mut reader = from.chunk_reader(pool, &from_index);
    let mut sink = PackSink::new(repo.backend(), repo.sealing(), repo.config().compression);
    let mut written = Vec::new();
    let mut ids: Vec<ChunkId> = bad.into_iter().collect();
    ids.sort();
    for id in ids {
        // An intact copy here (a chunk whose pack table is damaged) is as
        // good as the other repository's.
        let here = local.read_indexed(&id, || Error::not_found("not indexed here"));
        let fetched = here.or_else(|_| {
            reader.read_indexed(&id, || Error::not_found("not in the other repository"))
        });
        match fetched {
            Ok(plain) => {
                if let Some(pack) = sink.add(id, &plain)? {
                    written.push(pack);
                }
                report.chunks_repaired.push(id);
            }
            Err(e) => {
                progress.warn(&format!("chunk {id} cannot be repaired: {e}"));
                report.chunks_unrepairable.push(id);
            }
        }
    }
    if let Some(pack) = sink.close()? {
        written.push(pack);
    }
    report.bytes_stored = sink.stored_bytes;
    if !written.is_empty() {
        reindex(repo, &written)?;
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One new index: every chunk where the index had it, except the repaired
/// ones, which are where `written` put them. Then the old index files go.
/// The entries are sorted on disk as they come (`IndexWriter`): memory
/// does not grow with the index.
fn reindex(repo: &Repository, written: &[(PackId, Vec<PackEntry>)]) -> Result<()> {
    let (index, _) = repo.load_index_checked()?;
    let repaired: HashSet<ChunkId> = written
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| e.id))
        .collect();
    let present = repo.packs_on_disk()?;
    let mut writer = repo.index_writer();
    for (id, loc) in index.iter().filter(|(id, _)| !repaired.contains(id)) {
        let pack = index.pack_id(loc.pack);
        if present.contains(pack) {
            writer.push(pack, &index.entry(&id).unwrap_or_else(|| loc.entry(id)))?;
        }
    }
    for (pack, entries) in written {
        for e in entries {
            writer.push(pack, e)?;
        }
    }
    repo.replace_index_with(writer)
}

/// Indexed chunks of packs whose table cannot be read.
fn chunks_in_unreadable_packs(repo: &Repository, index: &Index) -> Result<Vec<ChunkId>> {
    let mut bad_packs = HashSet::new();
    for pack in index.packs() {
        if repo.read_pack_table(pack).is_err() {
            bad_packs.insert(*pack);
        }
    }
    Ok(index
        .iter()
        .filter(|(_, loc)| bad_packs.contains(index.pack_id(loc.pack)))
        .map(|(id, _)| id)
        .collect())
}

/// Unreadable or lost manifests whose snapshot the other repository has.
fn repair_manifests(repo: &Repository, from: &Repository, report: &mut RepairReport) -> Result<()> {
    let (snaps, broken) = repo.snapshots()?;
    // A map whose manifest is gone: an interrupted backup, or a lost
    // manifest, which the other repository may have (then it was committed).
    let known: std::collections::HashSet<SnapshotId> = snaps
        .iter()
        .map(|s| s.id)
        .chain(broken.iter().map(|b| b.id))
        .collect();
    let lost: Vec<SnapshotId> = crate::repo::ids_in(repo.backend(), Folder::Maps)?
        .iter()
        .filter_map(|file| SnapshotId::parse(file))
        .filter(|id| !known.contains(id))
        .collect();
    for id in lost {
        if let Ok(snap) = from.resolve(&id.to_hex())
            && snap.id == id
        {
            repo.commit_snapshot(&snap)?;
            report.manifests_repaired.push(snap.id);
        }
    }
    for b in broken {
        if let Ok(snap) = from.resolve(&b.id.to_hex())
            && snap.id == b.id
        {
            repo.commit_snapshot(&snap)?;
            report.manifests_repaired.push(snap.id);
        } else {
            report.manifests_unrepairable.push(b.id);
        }
    }
    Ok(())
}

/// Maps that fail their checks, copied from the other repository when its
/// map passes them (a snapshot's map is the same file in every copy).
fn repair_maps(repo: &Repository, from: &Repository, report: &mut RepairReport) -> Result<()> {
    let (snaps, _) = repo.snapshots()?;
    for snap in snaps.iter().filter(|s| repo.open_map(s).is_err()) {
        if from.open_map(snap).is_ok() {
            copy_map(from, repo, snap)?;
            report.maps_repaired.push(snap.id);
        } else {
            report.maps_unrepairable.push(snap.id);
        }
    }
    Ok(())
}
