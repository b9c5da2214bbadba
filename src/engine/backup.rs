//! A backup: open the source, find the parent, run the pipeline, commit.
//!
//! The commit order is the repository's safety rule: packs (durable, by the
//! pipeline) → index → map → manifest → the change source's state (see
//! `change_source`: a new reflink shadow kept). A crash before the manifest
//! leaves only unreferenced files behind; earlier snapshots are never
//! touched, and neither is what the next backup's change source needs.
//!
//! With a change source, the pipeline reads only the chunks that may have
//! changed since the parent; with a reflink shadow it reads the shadow, known
//! as the image (`Source::known_as`), so the checks below apply to the
//! shadow, which nothing writes.
//!
//! A source in use by a writer (a read-write mount, a stacked device, a
//! process mapping it shared and writable: see `Source::writers`) is
//! refused before it is read (exit 5) and again before the commit, unless
//! `--allow-mounted`.
//!
//! A source that changes while it is read gives no snapshot: its size,
//! identity (inode, what its path names, a loop device's backing file) and
//! the ctime of an image file or of a loop device's backing file are
//! compared with how it was opened at the last moment before the manifest
//! is written, and whenever reading it fails (the change is then the
//! error). A write at the same size is accepted only with
//! `--allow-mounted`, which knowingly takes an inconsistent image; a change
//! of size or identity never is. What the
//! failed backup stored (packs, index, map) stays as an interrupted
//! backup's leftovers until `prune`.

use std::fmt::Display;
use std::path::Path;
use std::time::{Instant, SystemTime};

use crate::disk::free_space;
use crate::disk::layout::Layout;
use crate::disk::{Source, SourceIdentity};
use crate::engine::backup_pipeline::{self, PipelineInput};
use crate::engine::change_source::{Plan, PlanInput, Request};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::lock::LockKind;
use crate::repo::map::{MapHeader, MapReader};
use crate::repo::snapshot::{MapRef, Snapshot, SourceInfo};
use crate::repo::{Repository, SnapshotId};

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// Ignore the parent's fingerprints and hash every chunk.
    pub full: bool,
    /// Use this snapshot as the parent instead of finding one.
    pub parent: Option<String>,
    /// Back up only this partition of the source.
    pub partition: Option<u32>,
    /// Read every byte, free space too.
    pub raw: bool,
    /// Back up a filesystem that is mounted read-write (inconsistent).
    pub allow_mounted: bool,
    /// Which change source says what changed since the parent.
    pub change_source: Request,
}

pub fn backup(
    repo: &Repository,
    source_path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    backup_reporting(repo, source_path, options, progress).map(|b| b.snapshot)
}

/// [`backup`], also saying why a change source was not used.
pub fn backup_reporting(
    repo: &Repository,
    source_path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<Backup> {
    check_tags(&options.tags)?;
    if options.full && matches!(options.change_source, Request::Ranges(_)) {
        return Err(Error::bad_input(
            "--full reads every chunk, --changed-ranges reads only the changed ones: give one",
        )
        .hint("nothing was written"));
    }
    let started = Instant::now();
    let (mut source, mut layout, mut free) = open_source(source_path, options, progress)?;
    if let Request::Ranges(claim) = &options.change_source {
        claim.check_within(source.size())?;
    }
    let lock = super::lock_repo(repo, LockKind::Shared, "backup", progress)?;
    let info = source_info(source.identity());
    let chunk_size = repo.config().chunk_size;
    let parent = find_parent(repo, &info, options)?;
    let parent_map = parent_map(repo, parent.as_ref(), options, progress);
    let index = load_index(repo, progress)?;

    let id = SnapshotId::random();
    let plan = Plan::make(
        &PlanInput {
            request: &options.change_source,
            repo_id: &repo.config().repo_id,
            source: &source,
            parent: parent.as_ref(),
            parent_map: parent_map.is_some(),
            snapshot: id,
            full: options.full,
        },
        progress,
    );
    if let Some(copy) = plan.read_from() {
        // Read the copy (a reflinked shadow), known as the source.
        let identity = source.identity().clone();
        let (copy, copy_layout, copy_free) = open_source(copy, options, progress)?;
        (source, layout, free) = (copy.known_as(identity), copy_layout, copy_free);
    }
    let header = MapHeader::new(chunk_size, info.size, id);
    progress.start("backup", info.size);
    let out = backup_pipeline::run(PipelineInput {
        source: &source,
        free: &free,
        backend: repo.backend(),
        sealing: repo.sealing(),
        index: &index,
        parent: parent_map,
        changed: plan.changed.as_ref(),
        header,
        compression: repo.config().compression,
        deltas: repo.config().has(crate::repo::config::DELTAS),
        progress,
    });
    progress.finish();
    let out = out.map_err(|e| explain(&source, options, e))?;

    if !out.packs.is_empty() {
        lock.check_held()?;
        repo.write_index(&out.packs)?;
    }
    let map_blake3 = out.map.finish()?;
    let mut stats = out.stats;
    stats.duration_s = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        id,
        time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        parent: parent.map(|p| p.id),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        tags: options.tags.clone(),
        source: info,
        chunk_size,
        map: MapRef {
            entries: header.entries,
            blake3: map_blake3,
        },
        full: options.full,
        stats,
        platter_version: env!("CARGO_PKG_VERSION").to_string(),
        layout: serde_json::to_value(&layout).ok(),
        protected: false,
        change_source: plan.record.clone(),
        shadow: plan.shadow,
    };
    check_before_commit(&source, options, progress)?;
    lock.check_held()?;
    repo.commit_snapshot(&snapshot)?;
    let scan_reason = plan.scan_reason.clone();
    // Closed first: a qcow2 image's qemu-nbd holds the lock a new dirty
    // bitmap needs.
    drop(source);
    plan.commit(progress);
    Ok(Backup {
        snapshot,
        scan_reason,
    })
}

/// A committed backup.
pub struct Backup {
    pub snapshot: Snapshot,
    /// Why a change source that was asked for or found was not used.
    pub scan_reason: Option<String>,
}

/// Opens the source (or its partition), reads its layout and, unless
/// every byte is to be read, its filesystems' free space; refuses a source
/// in use by a writer (unless --allow-mounted).
fn open_source(
    source_path: &Path,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Source, Layout, free_space::Ranges)> {
    let mut source = Source::open(source_path)?;
    if let Some(n) = options.partition {
        source = source.into_partition(n)?;
    }
    let mut layout = source.layout().map_err(|e| explain(&source, options, e))?;
    for w in &layout.warnings {
        progress.warn(&format!("layout of {}: {w}", source_path.display()));
    }
    let mounted = refuse_writers(&source, options, Writers::Before)?;
    // Free space of known filesystems is neither read nor stored; a
    // mounted filesystem's bitmaps are not trusted.
    if !source.table_warnings().is_empty() && !options.raw {
        progress.warn(&format!(
            "the partition table of {} has problems ({}): every byte of the partition is copied",
            source_path.display(),
            source.table_warnings().join("; ")
        ));
    }
    let free = if options.raw || !mounted.is_empty() || !source.table_warnings().is_empty() {
        free_space::Ranges::default()
    } else {
        free_space::free_ranges(&mut layout, &source).map_err(|e| explain(&source, options, e))?
    };
    Ok((source, layout, free))
}

/// The parent's map, for change tracking: none with --full, or (with a
/// warning) when it cannot be opened.
fn parent_map(
    repo: &Repository,
    parent: Option<&Snapshot>,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Option<MapReader> {
    let parent = parent.filter(|_| !options.full)?;
    match repo.open_map(parent) {
        Ok(map) => Some(map),
        Err(e) => {
            progress.warn(&format!(
                "cannot use parent {} for change tracking ({e}); reading and hashing everything",
                parent.short_id()
            ));
            None
        }
    }
}

/// The repository's index, without damaged index files and chunks whose
/// pack is gone (both with a warning): such chunks are stored again if the
/// source has them.
fn load_index(repo: &Repository, progress: &dyn Progress) -> Result<Index> {
    let (mut index, damaged) = repo.load_index()?;
    for (name, e) in &damaged {
        progress.warn(&format!("ignoring damaged index {name}: {e}"));
    }
    let lost = index.keep_packs(&repo.packs_on_disk()?);
    if lost > 0 {
        progress.warn(&format!(
            "{lost} indexed chunk(s) are in packs that are missing; they are stored again \
             where the source still holds them (run `platter verify`)"
        ));
    }
    Ok(index)
}

/// The last moment before the commit: the source must be as it was
/// opened, or the snapshot would not be what it says it is.
fn check_before_commit(
    source: &Source,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<()> {
    match compare_source(source, options)? {
        Verdict::Same => {}
        Verdict::Written(warning) => progress.warn(&warning),
        Verdict::Changed(e) => return Err(e),
    }
    // A writer that came during the backup (a mount, or a shared writable
    // mapping, through whose dirty pages writes move no ctime) may have
    // changed what was read without leaving a trace.
    refuse_writers(source, options, Writers::During).map(drop)
}

/// How the source compares with how it was opened.
enum Verdict {
    Same,
    /// Written to at the same size, which `--allow-mounted` accepts: the
    /// warning to give.
    Written(String),
    /// Changed in a way that fails the backup: the error to give.
    Changed(Error),
}

fn compare_source(source: &Source, options: &BackupOptions) -> Result<Verdict> {
    let changes = source.changes()?;
    if changes.is_empty() {
        return Ok(Verdict::Same);
    }
    if options.allow_mounted && changes.iter().all(|c| c.is_write()) {
        return Ok(Verdict::Written(format!(
            "{} was written to during the backup: the snapshot is inconsistent \
             (accepted because of --allow-mounted)",
            source.path().display()
        )));
    }
    Ok(Verdict::Changed(changed_error(source.path(), &changes)))
}

/// A failure while reading a source that changed is reported as that
/// change, its likely root cause; the failure itself stays in the
/// message, since it may have another cause (a full repository disk).
fn explain(source: &Source, options: &BackupOptions, e: Error) -> Error {
    match compare_source(source, options) {
        Ok(Verdict::Changed(change)) => {
            change.hint(format!("the backup stopped on: {}", e.message()))
        }
        _ => e,
    }
}

fn changed_error(path: &Path, changes: &[impl Display]) -> Error {
    let what: Vec<String> = changes.iter().map(ToString::to_string).collect();
    Error::corrupt(format!(
        "{} changed during the backup: {}; nothing was committed, no snapshot was made",
        path.display(),
        what.join("; ")
    ))
    .hint(
        "stop whatever writes to it (unmount it, stop the program or VM using it), or back up \
         a snapshot or copy of it (`cp --reflink`, an LVM or filesystem snapshot); what this \
         backup stored so far is removed by `platter prune`",
    )
}

fn source_info(id: &SourceIdentity) -> SourceInfo {
    SourceInfo {
        path: id.path.clone(),
        kind: if id.is_device { "block device" } else { "file" }.to_string(),
        size: id.size,
        logical_sector_size: id.logical_sector_size,
        serial: id.serial.clone(),
        wwid: id.wwid.clone(),
        model: id.model.clone(),
        partition: id.partition,
    }
}

/// The given parent, or the latest snapshot of the same source.
fn find_parent(
    repo: &Repository,
    info: &SourceInfo,
    options: &BackupOptions,
) -> Result<Option<Snapshot>> {
    if let Some(spec) = &options.parent {
        let parent = repo.resolve(spec)?;
        if parent.source.size != info.size {
            return Err(Error::bad_input(format!(
                "parent {} is of a {}-byte source, this source is {} bytes",
                parent.short_id(),
                parent.source.size,
                info.size
            ))
            .hint("omit --parent to let platter pick, or add --full"));
        }
        return Ok(Some(parent));
    }
    let (snaps, _) = repo.snapshots()?;
    Ok(snaps.into_iter().rev().find(|s| s.source.same_source(info)))
}

/// New tags are for people to read and type: no control characters (see
/// `crate::printable`), and none empty. Tags of snapshots copied from
/// elsewhere are kept as they are.
pub(crate) fn check_tags(tags: &[String]) -> Result<()> {
    for tag in tags {
        let why = if tag.is_empty() {
            "is empty"
        } else if tag.chars().any(crate::printable::is_control) {
            "holds control characters (newlines, escapes or direction marks)"
        } else {
            continue;
        };
        return Err(Error::bad_input(format!("tag \"{tag}\" {why}")).hint(
            "nothing was written; use printable text for tags (letters, digits, '-', '.', spaces)",
        ));
    }
    Ok(())
}

/// When writers of the source are looked for.
enum Writers {
    Before,
    /// Just before the commit: one that came meanwhile.
    During,
}

/// Refuses a source in use by a writer (mounted read-write, held, mapped
/// shared and writable), unless `--allow-mounted`; returns the writers.
fn refuse_writers(source: &Source, options: &BackupOptions, when: Writers) -> Result<Vec<String>> {
    let writers = source.writers();
    if writers.is_empty() || options.allow_mounted {
        return Ok(writers);
    }
    let (what, next) = match when {
        Writers::Before => ("is in use", "a backup of it would be inconsistent"),
        Writers::During => (
            "came into use during the backup",
            "nothing was committed, no snapshot was made",
        ),
    };
    Err(Error::busy(format!(
        "{} {what} ({}): {next}",
        source.path().display(),
        writers.join("; ")
    ))
    .hint("unmount it or remount it read-only (`mount -o remount,ro`), stop the program that maps it, or add --allow-mounted to take an inconsistent image anyway"))
}
