//! Copying snapshots into a second repository (the 3-2-1 rule's second and
//! offsite copies). A copied snapshot keeps its id, so a later copy sees it
//! is there. Only chunks the other repository lacks move; each is read back
//! and checked against its id on the way.
//!
//! Between repositories with the same key (or both plain), chunks keep
//! their ids and blobs move as they are stored, and the map is the same
//! file. Otherwise every chunk is opened, named and sealed anew for the
//! other repository ("re-keyed"), and the map is rewritten with the new
//! ids (see `rekey`).
//!
//! Per snapshot, the order is a backup's: packs (each indexed as soon as it
//! is durable, so an interrupted copy resumes without moving them again),
//! then the map, then the manifest. A snapshot exists there only once all
//! of its data does.

use std::collections::HashSet;
use std::time::Instant;

pub use crate::engine::chunk_mover::CopiedSnapshot;
use crate::engine::chunk_mover::{
    Between, Fetched, Moving, Pair, check_pair, copy_map, move_chunks, not_in_source,
};
use crate::engine::rekey::Rekey;
use crate::engine::snapshots::{Selected, Selection, select_from};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::config::DELTAS;
use crate::repo::index::Index;
use crate::repo::lock::LockKind;
use crate::repo::snapshot::Snapshot;
use crate::repo::{BrokenManifest, Repository, SnapshotId};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// The snapshots to copy (every one by default).
    pub selection: Selection,
    /// Allow copying out of an encrypted repository into a plain one.
    pub decrypt: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub to: String,
    /// The repositories have different keys (or one is not encrypted):
    /// chunks were opened, named and sealed anew.
    pub rekeyed: bool,
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the other repository already has.
    pub already_there: Vec<SnapshotId>,
    pub chunks_copied: u64,
    /// Bytes stored in the other repository (after its compression).
    pub bytes_stored: u64,
    /// Snapshots that could not be copied because data they need is
    /// damaged here; the others were copied.
    pub failed: Vec<FailedCopy>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedCopy {
    pub snapshot: SnapshotId,
    pub error: String,
}

pub fn copy(
    from: &Repository,
    to: &Repository,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    check_pair(
        from,
        to,
        Pair::Copy {
            decrypt: options.decrypt,
        },
    )?;
    let _from_lock = super::lock_for_reading(from, "copy", progress)?;
    let to_lock = super::lock_repo(to, LockKind::Shared, "copy", progress)?;
    let (all_here, broken) = from.snapshots()?;
    let existed = !all_here.is_empty();
    let selected = select_from(from, all_here.clone(), broken, &options.selection)?;
    selected.require_some(&options.selection, existed, "nothing was copied")?;
    let Selected {
        snapshots: chosen,
        broken,
    } = selected;
    let (there_list, _) = to.snapshots()?;
    let there: HashSet<SnapshotId> = there_list.iter().map(|s| s.id).collect();
    let (source_index, damaged) = from.load_index()?;
    let (mut index, _) = to.load_index()?;
    const REOPEN_AFTER: usize = 1 << 18;
    index.keep_packs(&to.packs_on_disk()?);

    let mut rekey = if from.sealing().same_key(to.sealing()) {
        None
    } else {
        Some(Rekey::new(&all_here, &there_list))
    };
    let mut report = CopyReport {
        to: to.location(),
        rekeyed: rekey.is_some(),
        ..CopyReport::default()
    };
    warn_unreadable(from, (broken, &damaged), &mut report, progress);
    let between = Between {
        from,
        to,
        source_index: &source_index,
        progress,
    };
    for snap in chosen {
        if there.contains(&snap.id) {
            report.already_there.push(snap.id);
            continue;
        }
        let copied = match &mut rekey {
            None => copy_one(&between, &snap, &mut index),
            Some(rekey) => rekey
                .learn_from_common(from, to, &snap)
                .and_then(|()| rekey.copy_one(&between, &snap, &mut index)),
        }
        .and_then(|(copied, manifest)| {
            // Its chunks are in no snapshot there until the manifest is:
            // if our lock went, a prune may have taken them.
            to_lock.check_held()?;
            to.commit_snapshot(&manifest)?;
            Ok(copied)
        });
        let copied = match copied {
            Ok(c) => c,
            // Damage here spoils this snapshot only: go on with the rest.
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                progress.warn(&format!("snapshot {} was not copied: {e}", snap.short_id()));
                report.failed.push(FailedCopy {
                    snapshot: snap.id,
                    error: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e.context(format!("copying snapshot {}", snap.short_id()))),
        };
        report.chunks_copied += copied.chunks_copied;
        report.bytes_stored += copied.bytes_stored;
        report.copied.push(copied);
        // What this copy stored is held in memory on top of the index it
        // opened; the index files it wrote hold it too, so the index is
        // opened again (through the cache) before that grows large.
        if index.added_count() > REOPEN_AFTER {
            index = to.load_index()?.0;
            index.keep_packs(&to.packs_on_disk()?);
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Names what cannot be read here: manifests (those snapshots fail) and
/// index files (the chunks they described look missing: the snapshots
/// that need them fail one by one, the others are copied).
fn warn_unreadable(
    from: &Repository,
    (broken, damaged_index): (Vec<BrokenManifest>, &[(String, Error)]),
    report: &mut CopyReport,
    progress: &dyn Progress,
) {
    // The reader's error names the file.
    for (_, e) in damaged_index {
        progress.warn(&format!(
            "{e}: snapshots that need the chunks it described will not be copied; run \
             `platter rebuild-index` here first"
        ));
    }
    for b in broken {
        let error = b.error.to_string();
        progress.warn(&format!(
            "manifest {} was not copied: {error}",
            from.describe(&b.name)
        ));
        report.failed.push(FailedCopy {
            snapshot: b.id,
            error,
        });
    }
}

/// Copies one snapshot's missing blobs between repositories with the same
/// key, as they are stored, then its map; returns the manifest to commit.
fn copy_one(
    between: &Between,
    snap: &Snapshot,
    index: &mut Index,
) -> Result<(CopiedSnapshot, Snapshot)> {
    let label = format!("copy {}", snap.short_id());
    let copied = move_chunks(
        between,
        (snap, &label),
        index,
        |reader, entry, there| {
            if there.has(&entry.id) {
                return Ok(None);
            }
            let base = between.source_index.base_of(&entry.id);
            let deltas_there = between.to.config().has(DELTAS);
            if base.is_some_and(|base| !deltas_there || !there.has_whole(&base)) {
                // A delta goes as it is only into a repository that has
                // deltas, over a base stored whole there; otherwise the
                // chunk goes whole.
                let plain = reader.read_indexed(&entry.id, || not_in_source(&entry.id))?;
                return Ok(Some(Fetched {
                    id: entry.id,
                    blob: Moving::Plain(plain),
                }));
            }
            let (stored, loc) =
                reader.read_stored_indexed(&entry.id, || not_in_source(&entry.id))?;
            Ok(Some(Fetched {
                id: entry.id,
                blob: Moving::Stored(stored, loc, base),
            }))
        },
        |_, _| {},
    )?;
    copy_map(between.from, between.to, snap)?;
    Ok((copied, snap.clone()))
}
