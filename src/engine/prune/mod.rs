//! Removing data no snapshot needs, under an exclusive lock.
//!
//! Each chunk that a snapshot uses has one live copy: where the index puts
//! it (or, for a chunk only an unindexed pack holds, the first such copy).
//! A pack with no live copy is deleted; a pack that is mostly dead has its
//! live chunks read, checked and written into new packs, then is deleted;
//! the rest stay. The order keeps every needed chunk reachable whenever the
//! process dies:
//!
//! 1. new packs are written and made durable;
//! 2. one new index naming every live chunk where it will be is written;
//! 3. the old index files are removed (now redundant);
//! 4. only then are dead and repacked packs deleted;
//! 5. maps without a manifest and unfinished writes go last.
//!
//! Until step 3 ends the old index files still point at packs that all
//! exist; from step 2 on the new index alone is complete.
//!
//! A full filesystem does not change that order. Repacking that runs out of
//! room is dropped (its new packs, which no index names, go; the packs stay
//! as they are). A new index that does not fit gets room from what no index
//! names (maps without a manifest, unfinished writes, dead packs no index
//! lists, the space reserve) and is written again; a pack an index names is
//! never deleted before the new index is durable, or the next backup could
//! dedup against a chunk that is gone. Names that are not platter's are
//! left alone.
//!
//! Prune decides first and acts second. `plan` only reads: it builds a
//! `PrunePlan` holding every decision (packs to delete, packs to repack
//! with the entries they keep, packs that stay, which entries of a pack's
//! table are live, maps to remove, bytes before and after). A dry run
//! reports that plan and drops it; only `execute`, which consumes the plan
//! and is the one part handed the repository to write, changes anything.
//!
//! Memory does not grow with the repository: the used chunks are an exact
//! on-disk set (`IdSet`), the index is looked up where it is mapped (the
//! pages touched let go as it goes), pack tables are read a batch at a
//! time, only chunks stored more than once are gathered, and the new index
//! is fed to the index writer entry by entry from the tables of the packs
//! that stay, read again when it is written.

use std::time::Instant;

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::LockKind;

mod execute;
mod plan;

use plan::PrunePlan;

#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Report what would happen; change nothing.
    pub dry_run: bool,
    /// Repack a pack when at least this percentage of it is unused.
    pub repack_percent: u8,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            dry_run: false,
            repack_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub chunks_used: usize,
    pub packs_before: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub maps_removed: usize,
    /// Restore test results whose snapshot is gone.
    pub tests_removed: usize,
    pub unfinished_removed: usize,
    /// Packs that could not be read and were left as they are.
    pub damaged_packs: Vec<String>,
    /// Used chunks that no pack holds (`verify` names their snapshots).
    pub chunks_missing: usize,
    pub duration_s: f64,
}

/// Prunes under its own exclusive lock.
pub fn prune(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let _lock = super::lock_repo(repo, LockKind::Exclusive, "prune", progress)?;
    prune_locked(repo, options, progress)
}

/// Prunes; the caller holds an exclusive lock. A dry run stops at the
/// plan: nothing is written.
pub fn prune_locked(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    let plan = PrunePlan::build(repo, options.repack_percent, progress)?;
    let mut report = if options.dry_run {
        plan.dry_run_report()
    } else {
        let mut report = plan.execute(repo, progress)?;
        report.tests_removed = remove_orphan_tests(repo)?;
        report
    };
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Removes the restore test results of snapshots that are gone (a
/// manifest that is there but unreadable keeps its result).
fn remove_orphan_tests(repo: &Repository) -> Result<usize> {
    let live: std::collections::HashSet<crate::repo::SnapshotId> =
        crate::repo::ids_in(repo.backend(), crate::repo::names::Folder::Snapshots)?
            .iter()
            .filter_map(|name| crate::repo::SnapshotId::parse(name))
            .collect();
    crate::repo::test_result::remove_orphans(repo, &live)
}
