//! The first half of a restore: everything that can be checked before the
//! first write, gathered into a [`RestorePlan`]. Building one writes
//! nothing to the target (a new image file exists only under a temporary
//! name, removed when the plan is dropped); every refusal happens here, in
//! this order: the snapshot and its map, the chunks the index must know,
//! the target (opened once, exclusively, with its size, read-only and
//! mount state checked by `Target::open`), then whether the snapshot fits
//! it and its filesystem has room. The plan keeps that open target, not a
//! path that could be mounted between planning and writing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{RestoreOptions, Window};
use crate::codec::ChunkId;
use crate::disk::layout::{Layout, Table, TableFit, plan_fit};
use crate::disk::{FileId, Forbidden, Target, TargetKind};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::footprint::{Footprint, holds_repository};
use crate::repo::index::Index;
use crate::repo::lock::RepoLock;
use crate::repo::map::{Kind, MapHeader, MapReader};
use crate::repo::snapshot::Snapshot;

/// A restore checked and ready to write: [`RestorePlan::execute`] consumes
/// it and is the only path that writes to the target.
pub struct RestorePlan<'a> {
    pub(super) repo: &'a Repository,
    pub(super) options: RestoreOptions,
    pub(super) started: Instant,
    pub(super) snap: Snapshot,
    pub(super) map: MapReader,
    pub(super) header: MapHeader,
    pub(super) index: Index,
    /// The snapshot's recorded layout, if usable.
    pub(super) layout: Option<Layout>,
    /// What of the snapshot goes to the target, fitted to it.
    pub(super) window: Window,
    /// What to change in the partition table after the data is written.
    pub(super) table_fit: Option<TableFit>,
    /// Opened and checked; nothing written to it yet.
    pub(super) target: Target,
    /// The name the user gave the target.
    pub(super) target_path: PathBuf,
    /// Problems that do not stop the restore.
    pub(super) warnings: Vec<String>,
    /// Held until the restore ends, so that no prune removes what it reads.
    pub(super) _lock: Option<RepoLock<'a>>,
}

impl<'a> RestorePlan<'a> {
    /// Checks everything that can be checked before the first write, and
    /// opens the target.
    pub fn new(
        repo: &'a Repository,
        spec: &str,
        target_path: &Path,
        options: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestorePlan<'a>> {
        let started = Instant::now();
        // Taking the lock and finding the snapshot and its map are
        // independent: on a store far away each is several round trips,
        // so they go side by side. Neither writes anything the other reads.
        let (lock, found) = std::thread::scope(|scope| {
            let finding = scope.spawn(|| {
                let snap = repo.resolve(spec)?;
                let map = repo.open_map(&snap).map_err(|e| {
                    e.context(format!("snapshot {} cannot be restored", snap.short_id()))
                })?;
                Ok((snap, map))
            });
            let lock = crate::engine::lock_for_reading(repo, "restore", progress);
            let found: Result<(Snapshot, MapReader)> = finding
                .join()
                .unwrap_or_else(|_| Err(Error::internal("finding the snapshot panicked")));
            (lock, found)
        });
        // A snapshot that is not there is the error to show, not the lock.
        let (snap, mut map) = found?;
        let lock = lock?;
        let header = *map.header();
        let mut warnings = Vec::new();
        let layout = snapshot_layout(&snap, &mut warnings);
        let window = choose_window(&snap, layout.as_ref(), options.partition)?;
        let (index, data) = check_chunks(repo, &snap, &mut map, window, options)?;
        let target = open_target(repo, target_path, window, options)?;
        let (window, table_fit) = choose_fit(&snap, layout.as_ref(), window, &target, options)?;
        check_room(&target, &data, window, table_fit.is_some())?;
        if window.len < header.source_size && options.partition.is_none() {
            warnings.push(format!(
                "the target is smaller than the snapshot: its last {} were not restored (outside \
                 every partition)",
                crate::units::bytes(header.source_size - window.len)
            ));
        }
        Ok(RestorePlan {
            repo,
            options: options.clone(),
            started,
            snap,
            map,
            header,
            index,
            layout,
            window,
            table_fit,
            target,
            target_path: target_path.to_path_buf(),
            warnings,
            _lock: lock,
        })
    }
}

/// The snapshot's layout, if it recorded one that this version can read
/// and that is consistent; otherwise none, with a warning.
fn snapshot_layout(snap: &Snapshot, warnings: &mut Vec<String>) -> Option<Layout> {
    let layout: Layout = match snap.parsed_layout()? {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!(
                "the snapshot's recorded layout is unreadable ({e}); ignored"
            ));
            return None;
        }
    };
    match layout_problem(&layout, snap.source.size) {
        None => Some(layout),
        Some(why) => {
            warnings.push(format!(
                "the snapshot's recorded layout is inconsistent ({why}); ignored"
            ));
            None
        }
    }
}

/// What makes a recorded layout unusable for fitting a target, if anything.
fn layout_problem(l: &Layout, source_size: u64) -> Option<String> {
    if !crate::disk::layout::is_sector_size(u64::from(l.sector_size)) {
        return Some(format!("sector size {}", l.sector_size));
    }
    if l.disk_size != source_size {
        return Some(format!(
            "disk size {} for a {source_size}-byte source",
            l.disk_size
        ));
    }
    if let Some(g) = &l.gpt
        && (g.entry_size < 128
            || !g.entry_size.is_power_of_two()
            || u64::from(g.entries) * u64::from(g.entry_size) > 1 << 20)
    {
        return Some(format!(
            "{} GPT entries of {} bytes",
            g.entries, g.entry_size
        ));
    }
    let max_number = match (&l.table, &l.gpt) {
        (Table::Gpt, Some(g)) => g.entries,
        (Table::Gpt, None) => return Some("a GPT without its geometry".into()),
        _ => u32::MAX,
    };
    l.partitions
        .iter()
        .find(|p| {
            p.number == 0
                || p.number > max_number
                || (p.mbr_kind.as_deref() == Some("primary") && p.number > 4)
                || p.start.checked_add(p.sectors).is_none()
        })
        .map(|p| format!("partition number {} at sector {}", p.number, p.start))
}

/// The part of the snapshot to restore: one partition, or everything.
fn choose_window(
    snap: &Snapshot,
    layout: Option<&Layout>,
    partition: Option<u32>,
) -> Result<Window> {
    let Some(n) = partition else {
        return Ok(Window {
            start: 0,
            len: snap.source.size,
        });
    };
    if let Some(whole) = snap.source.partition {
        return Err(Error::bad_input(format!(
            "snapshot {} is already of one partition (partition {whole} of {})",
            snap.short_id(),
            snap.source.path
        ))
        .hint("restore it without --partition"));
    }
    let layout = layout.ok_or_else(|| {
        Error::unsupported(format!(
            "snapshot {} has no recorded partition table (made by an older platter)",
            snap.short_id()
        ))
        .hint("restore the whole disk, then copy the partition from it")
    })?;
    let (start, len) = layout.partition_span(n, &format!("snapshot {}", snap.short_id()))?;
    Ok(Window { start, len })
}

/// Loads the index and refuses a snapshot whose chunks in `window` it does
/// not all know (unless --continue-on-error). Returns the index and the
/// snapshot's byte ranges that hold data.
fn check_chunks(
    repo: &Repository,
    snap: &Snapshot,
    map: &mut MapReader,
    window: Window,
    options: &RestoreOptions,
) -> Result<(Index, Vec<(u64, u64)>)> {
    let header = *map.header();
    let (index, damaged_index) = repo.load_index()?;
    let Survey { missing, data } = survey(map, &index, window.positions(header.chunk_size))?;
    if let Some(&(pos, id)) = missing.first()
        && !options.continue_on_error
    {
        return Err(Error::corrupt(format!(
            "snapshot {} needs {} chunk(s) that no index file names; the first, {id}, \
             holds bytes {}..{}",
            snap.short_id(),
            missing.len(),
            pos * header.chunk_size,
            pos * header.chunk_size + header.chunk_len(pos)
        ))
        .hint(missing_chunks_hint(repo, &index, &damaged_index)?));
    }
    Ok((index, data))
}

/// Opens the target after every check `Target::open` makes, and refuses
/// --size for a device.
fn open_target(
    repo: &Repository,
    target_path: &Path,
    window: Window,
    options: &RestoreOptions,
) -> Result<Target> {
    let target = Target::open(
        target_path,
        options.file_size.unwrap_or(window.len),
        options.force,
        &RepositoryFiles(repo.footprint()?),
    )?;
    if options.file_size.is_some() && target.kind() == TargetKind::BlockDevice {
        return Err(Error::bad_input(format!(
            "--size is for image files; the device {} keeps its size ({})",
            target_path.display(),
            crate::units::bytes(target.size())
        ))
        .hint("nothing was written; leave out --size"));
    }
    if let Some(expect) = &options.expect {
        check_expected(&target, target_path, expect)?;
    }
    Ok(target)
}

/// Refuses a target that is not the disk `expect` describes: checked on
/// the device now held open exclusively, so nothing can swap it after.
fn check_expected(target: &Target, path: &Path, expect: &super::ExpectedDisk) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::bad_input(format!(
            "target {} is not the disk expected: {why}",
            path.display()
        ))
        .hint("nothing was written; disk names can change when disks come and go: look again (e.g. `lsblk -o NAME,SIZE,SERIAL,WWN`)"))
    };
    if target.kind() != TargetKind::BlockDevice {
        return refuse("it is not a block device".into());
    }
    if let Some(size) = expect.size
        && target.size() != size
    {
        return refuse(format!("its size is {} bytes, not {size}", target.size()));
    }
    if let Some(serial) = &expect.serial {
        let (have_serial, have_wwn, _) = target.hardware_identity();
        if have_serial.as_deref() != Some(serial) && have_wwn.as_deref() != Some(serial) {
            return refuse(format!(
                "its serial is {} and its WWN {}, not {serial:?}",
                have_serial.as_deref().unwrap_or("unknown"),
                have_wwn.as_deref().unwrap_or("unknown")
            ));
        }
    }
    Ok(())
}

/// How much to write and what to change in the table, for this target;
/// refuses a target that cannot hold the snapshot.
fn choose_fit(
    snap: &Snapshot,
    layout: Option<&Layout>,
    window: Window,
    target: &Target,
    options: &RestoreOptions,
) -> Result<(Window, Option<TableFit>)> {
    if let Some(n) = options.partition {
        if options.grow_last_partition {
            return Err(Error::bad_input(
                "--grow-last-partition is for whole-disk restores, not --partition",
            ));
        }
        target.check_holds(window.len, &format!("partition {n}"))?;
        return Ok((window, None));
    }
    let Some(layout) = layout.filter(|l| l.table != Table::None) else {
        if options.grow_last_partition {
            return Err(Error::bad_input(format!(
                "snapshot {} has no partition table, so there is no partition to grow",
                snap.short_id()
            )));
        }
        target.check_holds(window.len, "the snapshot")?;
        return Ok((window, None));
    };
    if let Some(sector) = target.sector_size()
        && sector != layout.sector_size
    {
        return Err(Error::unsupported(format!(
            "the snapshot's partition table counts {}-byte sectors, but the target has \
             {sector}-byte sectors: every partition would start and end in the wrong place",
            layout.sector_size
        ))
        .hint(
            "nothing was written; restore onto a disk with the same logical sector size, or \
               restore single partitions (--partition N) into partitions made on the target",
        ));
    }
    if target.size() < layout.disk_size && !layout.warnings.is_empty() {
        return Err(Error::bad_input(format!(
            "the target is smaller than the snapshot, and the snapshot's partition table has \
             problems ({}): what lies outside its partitions may matter",
            layout.warnings.join("; ")
        ))
        .hint("nothing was written; restore onto a target at least as large as the source"));
    }
    let table_fit = plan_fit(layout, target.size(), options.grow_last_partition)?;
    let len = window.len.min(target.size());
    Ok((Window { start: 0, len }, table_fit))
}

/// Refuses a file target whose filesystem has no room for what the restore
/// writes: the snapshot's `data` in `window`, and with a table to fit, the
/// target's end.
fn check_room(target: &Target, data: &[(u64, u64)], window: Window, fit: bool) -> Result<()> {
    let mut writes = in_window(data, window);
    if fit {
        // Fitting the table rewrites the target's end (the backup GPT:
        // at most 1 MiB, see layout_problem), after the data.
        writes = with_tail(writes, target.size(), 1 << 20);
    }
    target.check_room(&writes, window.len)
}

/// What the chunks at some positions of a map need.
struct Survey {
    /// Data chunks the index does not know, in map order.
    missing: Vec<(u64, ChunkId)>,
    /// The snapshot's byte ranges that hold data chunks (the rest is
    /// zeros and stays holes), merged, in order.
    data: Vec<(u64, u64)>,
}

fn survey(map: &mut MapReader, index: &Index, positions: std::ops::Range<u64>) -> Result<Survey> {
    let header = *map.header();
    let mut missing = Vec::new();
    let mut data: Vec<(u64, u64)> = Vec::new();
    for pos in positions.start..positions.end.min(header.entries) {
        let e = map.entry(pos)?;
        if e.kind != Kind::Data {
            continue;
        }
        if !index.contains(&e.id) {
            missing.push((pos, e.id));
        }
        let (offset, len) = (pos * header.chunk_size, header.chunk_len(pos));
        match data.last_mut() {
            Some((start, run)) if *start + *run == offset => *run += len,
            _ => data.push((offset, len)),
        }
    }
    Ok(Survey { missing, data })
}

/// The target's byte ranges that `window` makes of the snapshot's `ranges`.
fn in_window(ranges: &[(u64, u64)], window: Window) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .filter_map(|&(offset, len)| {
            let a = offset.max(window.start);
            let b = (offset + len).min(window.end());
            (a < b).then(|| (a - window.start, b - a))
        })
        .collect()
}

/// `ranges` (sorted, apart) and the last `len` bytes of a `size`-byte
/// target, merged.
fn with_tail(mut ranges: Vec<(u64, u64)>, size: u64, len: u64) -> Vec<(u64, u64)> {
    let mut start = size.saturating_sub(len);
    while let Some(&(offset, run)) = ranges.last() {
        if offset + run < start {
            break;
        }
        start = start.min(offset);
        ranges.pop();
    }
    ranges.push((start, size - start));
    ranges
}

/// What to do about chunks no index names: rebuild the index when an
/// index file is damaged or a pack is in none (an index file was lost, the
/// data is likely all there); otherwise look for the damage.
fn missing_chunks_hint(
    repo: &Repository,
    index: &Index,
    damaged_index: &[(String, Error)],
) -> Result<String> {
    if !damaged_index.is_empty() {
        let names: Vec<&str> = damaged_index.iter().map(|(n, _)| n.as_str()).collect();
        return Ok(format!(
            "nothing was written; index file(s) {} are damaged: run `platter rebuild-index`, \
             then restore again",
            names.join(", ")
        ));
    }
    let indexed: HashSet<_> = index.packs().iter().collect();
    let unindexed = repo
        .packs_on_disk()?
        .iter()
        .filter(|p| !indexed.contains(p))
        .count();
    Ok(if unindexed > 0 {
        format!(
            "nothing was written; {unindexed} pack(s) are in no index file (an index file was \
             lost?): run `platter rebuild-index`, then restore again"
        )
    } else {
        "nothing was written; run `platter verify` for the full list, or add \
         --continue-on-error to restore the rest with zeros there"
            .to_string()
    })
}

/// What a restore must not write into: every file and folder of the
/// repository it reads, and any folder that holds a platter repository.
struct RepositoryFiles(Footprint);

impl Forbidden for RepositoryFiles {
    fn file(&self, id: FileId) -> Option<String> {
        self.0.files.contains(&(id.dev, id.ino)).then(|| {
            format!(
                "a file of the repository {} being restored from",
                self.0.root.display()
            )
        })
    }

    fn folder(&self, dir: &Path, id: FileId) -> Option<String> {
        if self.0.folders.contains(&(id.dev, id.ino)) {
            return Some(format!(
                "inside the repository {} being restored from",
                self.0.root.display()
            ));
        }
        holds_repository(dir).then(|| format!("inside the platter repository {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Window, in_window, with_tail};

    #[test]
    fn data_ranges_are_clipped_to_the_window() {
        let ranges = [(0, 10), (20, 10), (40, 10)];
        let window = Window { start: 25, len: 20 };
        assert_eq!(in_window(&ranges, window), vec![(0, 5), (15, 5)]);
    }

    #[test]
    fn the_tail_merges_with_what_it_overlaps() {
        assert_eq!(with_tail(vec![(0, 10)], 100, 5), vec![(0, 10), (95, 5)]);
        assert_eq!(
            with_tail(vec![(0, 10), (90, 8)], 100, 5),
            vec![(0, 10), (90, 10)]
        );
        assert_eq!(with_tail(vec![(0, 8)], 8, 5), vec![(0, 8)]);
        assert_eq!(with_tail(vec![], 3, 5), vec![(0, 3)]);
    }
}
