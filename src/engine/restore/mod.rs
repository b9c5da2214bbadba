//! A restore: check everything that can be checked before the first write
//! (the map, the index knows every chunk, the target is safe and large
//! enough for every partition), then write every chunk after checking it:
//! its BLAKE3 id, or for a raw chunk of an encrypted repository its seal
//! (see `ChunkReader`: a key holder sealed these bytes for this id; the
//! BLAKE3 itself is recomputed by `verify --read-data`). A whole disk restored onto a target of another size gets its
//! partition table fitted to the target (backup GPT moved to the end,
//! optionally the last partition grown); a block device is then asked to
//! re-read its partition table. One partition of a whole-disk snapshot
//! can be restored on its own.
//!
//! The target must not lie in the repository being read, nor in any other
//! platter repository: the engine names those places to the disk layer
//! (by device and inode number, see `RepositoryFiles`), which checks the
//! target, the file behind a loop device, and every folder above them.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use crate::codec::{self, ChunkId, Sealing};
use crate::disk::layout::{Layout, Table, TableFit, apply_fit, grow_next_step, plan_fit};
use crate::disk::{FileId, Forbidden, Target, TargetKind};
use crate::engine::parallel::map_entries;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::footprint::{Footprint, holds_repository};
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapReader};
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, ChunkReader, PlainChunk, Repository};

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Overwrite an existing image file.
    pub force: bool,
    /// Read the target back afterwards and compare.
    pub verify: bool,
    /// Write zeros where a chunk is damaged and go on; report every range.
    pub continue_on_error: bool,
    /// Restore only this partition of a whole-disk snapshot.
    pub partition: Option<u32>,
    /// Size of a new (or forced) image file; default the snapshot's size
    /// (or the partition's).
    pub file_size: Option<u64>,
    /// Extend the last partition's entry to the end of a larger target.
    pub grow_last_partition: bool,
}

/// A byte range of the target that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRange {
    pub offset: u64,
    pub len: u64,
    pub chunk: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub target: String,
    pub target_kind: String,
    pub size: u64,
    pub bytes_written: u64,
    pub chunks: u64,
    pub chunks_zero: u64,
    pub damaged: Vec<DamagedRange>,
    /// Some(true) when --verify read back every byte and it matched.
    pub verified: Option<bool>,
    /// The partition restored, with --partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Changes made to the partition table to fit the target, and what
    /// the user should do next.
    pub table_changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// Whether the kernel re-read the device's partition table (whole-disk
    /// restores onto block devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions_reread: Option<bool>,
    /// Problems that did not stop the restore.
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

/// Which bytes of the snapshot go to the target: `[start, start + len)`
/// of the snapshot lands at `[0, len)` of the target.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    len: u64,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// The map positions whose chunks overlap the window.
    fn positions(&self, chunk_size: u64) -> std::ops::Range<u64> {
        self.start / chunk_size..self.end().div_ceil(chunk_size)
    }

    /// The part of the chunk at `offset` (`len` bytes) inside the window:
    /// its range within the chunk, and where it goes on the target.
    fn clip(&self, offset: u64, len: u64) -> Option<(std::ops::Range<usize>, u64)> {
        let a = offset.max(self.start);
        let b = (offset + len).min(self.end());
        (a < b).then(|| ((a - offset) as usize..(b - offset) as usize, a - self.start))
    }
}

/// The snapshot's layout, if it recorded one that this version can read
/// and that is consistent; otherwise none, with a warning.
fn snapshot_layout(snap: &Snapshot, warnings: &mut Vec<String>) -> Option<Layout> {
    let layout: Layout = match serde_json::from_value(snap.layout.clone()?) {
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
    if !matches!(l.sector_size, 512 | 1024 | 2048 | 4096) {
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

pub fn restore(
    repo: &Repository,
    spec: &str,
    target_path: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let snap = repo.resolve(spec)?;
    let mut map = repo
        .open_map(&snap)
        .map_err(|e| e.context(format!("snapshot {} cannot be restored", snap.short_id())))?;
    let header = *map.header();
    let _lock = super::lock_for_reading(repo, "restore", progress)?;
    let mut warnings = Vec::new();
    let layout = snapshot_layout(&snap, &mut warnings);
    let window = choose_window(&snap, layout.as_ref(), options.partition)?;
    let (index, damaged_index) = repo.load_index()?;
    let Survey { missing, data } = survey(&mut map, &index, window.positions(header.chunk_size))?;
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

    let mut target = Target::open(
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
    let (window, table_fit) = choose_fit(&snap, layout.as_ref(), window, &target, options)?;
    let mut writes = in_window(&data, window);
    if table_fit.is_some() {
        // Fitting the table rewrites the target's end (the backup GPT:
        // at most 1 MiB, see layout_problem), after the data.
        writes = with_tail(writes, target.size(), 1 << 20);
    }
    target.check_room(&writes, window.len)?;
    target.prepare()?;
    if window.len < header.source_size && options.partition.is_none() {
        warnings.push(format!(
            "the target is smaller than the snapshot: its last {} were not restored (outside \
             every partition)",
            crate::units::bytes(header.source_size - window.len)
        ));
    }
    let result = write_all(repo, &mut map, &index, &target, window, options, progress)
        .map_err(|e| e.context(format!("restoring snapshot {}", snap.short_id())));
    let (written, zero, damaged) = match result {
        Ok(r) => r,
        Err(e) => {
            // Dropping a new-file target removes it.
            return Err(if target.kind() != TargetKind::NewFile {
                e.hint("the target was partly written and is not a usable copy")
            } else {
                e.hint("the partly written target file was removed")
            });
        }
    };
    target.sync()?;
    let verified = if options.verify {
        target.drop_cache();
        let pool = BufPool::new(header.chunk_size as usize, 2);
        let fetch = |id: &ChunkId| -> Result<PlainChunk> {
            let loc = index
                .get(id)
                .ok_or_else(|| Error::corrupt(format!("chunk {id} is not in the index")))?;
            repo.chunk_reader(pool.clone())
                .read(id, index.pack_id(loc.pack), loc)
        };
        Some(read_back(
            &mut map,
            &target,
            window,
            &damaged,
            repo.sealing(),
            &fetch,
            progress,
        )?)
    } else {
        None
    };
    let mut table_changes = Vec::new();
    let mut next_step = None;
    if let (Some(plan), Some(layout)) = (&table_fit, &layout) {
        apply_fit(&target, plan)?;
        target.sync()?;
        table_changes = describe_fit(layout, plan, target.size());
        let after = Layout::read(&target, target.size(), layout.sector_size, true)?;
        let clean = after
            .gpt
            .as_ref()
            .is_none_or(|g| g.primary_ok && g.backup_ok);
        if !clean || after.partitions.len() != layout.partitions.len() {
            return Err(Error::corrupt(format!(
                "after fitting the partition table to the target, it does not read back \
                 cleanly: {}",
                after.warnings.join("; ")
            )));
        }
        if let Some((number, _, _)) = plan.grown {
            let fstype = layout
                .partition(number)
                .and_then(|p| p.content.as_ref())
                .map(|c| c.fstype.as_str());
            next_step = Some(grow_command(target_path, number, target.kind(), fstype));
        }
    }
    let kind = target.kind();
    let mut partitions_reread = None;
    if kind == TargetKind::BlockDevice
        && options.partition.is_none()
        && layout.as_ref().is_some_and(|l| l.table != Table::None)
    {
        let failed = target.reread_partitions();
        partitions_reread = Some(failed.is_none());
        warnings.extend(failed);
    }
    target.finish()?;
    Ok(RestoreReport {
        snapshot: snap.id.clone(),
        target: target_path.display().to_string(),
        target_kind: match kind {
            TargetKind::NewFile => "new file",
            TargetKind::ExistingFile => "existing file",
            TargetKind::BlockDevice => "block device",
        }
        .to_string(),
        size: header.source_size,
        bytes_written: written,
        chunks: header.entries,
        chunks_zero: zero,
        damaged,
        verified,
        partition: options.partition,
        table_changes,
        next_step,
        partitions_reread,
        warnings,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// What a planned table change did, in words.
fn describe_fit(layout: &Layout, plan: &TableFit, target_size: u64) -> Vec<String> {
    let sector = u64::from(layout.sector_size);
    let mut out = Vec::new();
    if layout.table == Table::Gpt && target_size != layout.disk_size {
        out.push(format!(
            "moved the backup GPT to the target's last sector (LBA {}) and rewrote both headers",
            target_size / sector - 1
        ));
    } else if layout.table == Table::Gpt {
        out.push("rewrote both GPT headers and tables from the snapshot's intact one".into());
    }
    if let Some((number, old, new)) = plan.grown {
        out.push(format!(
            "grew partition {number} from {old} to {new} sectors ({} to {})",
            crate::units::bytes(old * sector),
            crate::units::bytes(new * sector)
        ));
    }
    out
}

/// The command that grows the filesystem in the grown partition `number`
/// of the restored target.
fn grow_command(target: &Path, number: u32, kind: TargetKind, fstype: Option<&str>) -> String {
    // /dev/disk/by-id/... names partitions differently: name the device.
    let t = std::fs::canonicalize(target)
        .unwrap_or_else(|_| target.to_path_buf())
        .display()
        .to_string();
    if kind == TargetKind::BlockDevice {
        let sep = if t.ends_with(|c: char| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        grow_next_step(fstype, &format!("{t}{sep}{number}"))
    } else {
        format!(
            "losetup --find --show --partscan {t} (prints /dev/loopX), then {}",
            grow_next_step(fstype, &format!("/dev/loopXp{number}"))
        )
    }
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

type Written = (u64, u64, Vec<DamagedRange>);

/// Workers read, decode and check chunks; this thread writes them, so the
/// target sees one writer.
fn write_all(
    repo: &Repository,
    map: &mut MapReader,
    index: &Index,
    target: &Target,
    window: Window,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Written> {
    let header = *map.header();
    let (mut written, mut zero, mut damaged) = (0u64, 0u64, Vec::<DamagedRange>::new());
    progress.start("restore", window.len);
    let workers = super::worker_count();
    let pool = BufPool::new(header.chunk_size as usize, workers * 6);
    let ran = map_entries(
        map,
        window.positions(header.chunk_size),
        workers,
        || repo.chunk_reader(pool.clone()),
        |reader, _, entry| fetch_chunk(reader, index, &entry),
        |pos, entry, fetched| {
            let (part, offset) = window
                .clip(pos * header.chunk_size, header.chunk_len(pos))
                .ok_or_else(|| Error::internal("chunk outside the window"))?;
            let len = part.len() as u64;
            match fetched {
                Ok(Some(plain)) if plain.len() as u64 == header.chunk_len(pos) => {
                    target.write_at(&plain[part], offset)?;
                    written += len;
                }
                Ok(Some(plain)) => {
                    return Err(Error::corrupt(format!(
                        "chunk {} is {} bytes but its place in the map is {}",
                        entry.id,
                        plain.len(),
                        header.chunk_len(pos)
                    )));
                }
                Ok(None) => {
                    target.zero_range(offset, len)?;
                    zero += 1;
                }
                Err(e) if e.kind() == crate::ErrorKind::Corrupt && options.continue_on_error => {
                    target.zero_range(offset, len)?;
                    damaged.push(DamagedRange {
                        offset,
                        len,
                        chunk: entry.id.to_hex(),
                        reason: e.message().to_string(),
                    });
                }
                Err(e) => {
                    return Err(e.context(format!("stopped at target offset {offset}")));
                }
            }
            progress.advance(len);
            Ok(())
        },
    );
    progress.finish();
    ran?;
    damaged.sort_by_key(|d| d.offset);
    Ok((written, zero, damaged))
}

/// A checked chunk's bytes, or `None` for a zero or unused chunk.
fn fetch_chunk(
    reader: &mut ChunkReader,
    index: &Index,
    entry: &MapEntry,
) -> Result<Option<PlainChunk>> {
    if entry.kind != Kind::Data {
        return Ok(None);
    }
    let loc = index
        .get(&entry.id)
        .ok_or_else(|| Error::corrupt(format!("chunk {} is not in the index", entry.id)))?;
    reader
        .read(&entry.id, index.pack_id(loc.pack), loc)
        .map(Some)
}

/// Reads the target back: every data chunk must hash to its id (a chunk
/// cut by the window's edge is compared with the stored chunk), every
/// other chunk must read as zeros (damaged ranges were zeroed).
fn read_back(
    map: &mut MapReader,
    target: &Target,
    window: Window,
    damaged: &[DamagedRange],
    sealing: &Sealing,
    fetch: &(dyn Fn(&ChunkId) -> Result<PlainChunk> + Sync),
    progress: &dyn Progress,
) -> Result<bool> {
    let header = *map.header();
    progress.start("verify", window.len);
    let check = |buf: &mut Vec<u8>, pos: u64, entry: MapEntry| -> Result<()> {
        let chunk_len = header.chunk_len(pos);
        let Some((part, offset)) = window.clip(pos * header.chunk_size, chunk_len) else {
            return Ok(());
        };
        let len = part.len() as u64;
        buf.resize(len as usize, 0);
        target.read_at(buf, offset)?;
        progress.advance(len);
        let was_damaged = damaged.iter().any(|d| d.offset == offset);
        let ok = if entry.kind != Kind::Data || was_damaged {
            codec::is_zero(buf)
        } else if len == chunk_len {
            sealing.chunk_id(buf) == entry.id
        } else {
            fetch(&entry.id)?[part] == buf[..]
        };
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "read-back check failed: the target's bytes {offset}..{} differ from the snapshot",
                offset + len
            ))
            .hint("the target device may be failing; try another target"))
        }
    };
    let ran = map_entries(
        map,
        window.positions(header.chunk_size),
        super::worker_count(),
        Vec::new,
        check,
        |_, _, r| r,
    );
    progress.finish();
    ran.map(|()| true)
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
