//! The second half of a restore: [`RestorePlan::execute`], the only path
//! that writes to the target. It writes every chunk after checking it,
//! syncs, reads the target back (with --verify), fits the partition table
//! to the target, asks a device to re-read its table, and gives a new file
//! its name. A failure on the way leaves a new file removed (dropping the
//! target does that) and says an existing target is partly written.

use std::path::Path;

use super::plan::RestorePlan;
use super::spans::{self, Job, Places, Span};
use super::{DamagedRange, RestoreReport, Window};
use crate::codec::{self, ChunkId, Sealing};
use crate::disk::layout::{Layout, Table, TableFit, apply_fit, grow_next_step};
use crate::disk::{Target, TargetKind};
use crate::engine::parallel::{fan_out, map_entries};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapHeader, MapReader};
use crate::repo::{BufPool, PlainChunk};

impl RestorePlan<'_> {
    /// Writes the planned restore and reports what it did.
    pub fn execute(mut self, progress: &dyn Progress) -> Result<RestoreReport> {
        self.target.prepare()?;
        let written = self.write(progress)?;
        self.target.sync()?;
        let verified = if self.options.verify {
            Some(self.verify(&written.damaged, progress)?)
        } else {
            None
        };
        let (table_changes, next_step) = self.fit_table()?;
        let partitions_reread = self.reread_partitions();
        let kind = self.target.kind();
        self.target.finish()?;
        Ok(RestoreReport {
            snapshot: self.snap.id,
            target: self.target_path.display().to_string(),
            overlay: None,
            overlay_bytes: None,
            target_kind: match kind {
                TargetKind::NewFile => "new file",
                TargetKind::ExistingFile => "existing file",
                TargetKind::BlockDevice => "block device",
            }
            .to_string(),
            size: self.header.source_size,
            bytes_written: written.bytes,
            chunks: self.header.entries,
            chunks_zero: written.zero_chunks,
            damaged: written.damaged,
            verified,
            partition: self.options.partition,
            table_changes,
            next_step,
            partitions_reread,
            warnings: self.warnings,
            duration_s: self.started.elapsed().as_secs_f64(),
        })
    }

    /// Writes every chunk in the window; a failure says what became of
    /// the target.
    fn write(&mut self, progress: &dyn Progress) -> Result<Written> {
        let result = write_all(
            self.repo,
            &mut self.map,
            &self.index,
            &self.target,
            self.window,
            self.options.continue_on_error,
            progress,
        )
        .map_err(|e| e.context(format!("restoring snapshot {}", self.snap.short_id())));
        // Dropping a new-file target (with the plan) removes it.
        result.map_err(|e| {
            if self.target.kind() != TargetKind::NewFile {
                e.hint("the target was partly written and is not a usable copy")
            } else {
                e.hint("the partly written target file was removed")
            }
        })
    }

    /// Reads the written target back and compares it with the snapshot.
    fn verify(&mut self, damaged: &[DamagedRange], progress: &dyn Progress) -> Result<bool> {
        self.target.drop_cache();
        let pool = BufPool::new(self.header.chunk_size as usize, 2);
        let (repo, index) = (self.repo, &self.index);
        let fetch = |id: &ChunkId| -> Result<PlainChunk> {
            repo.chunk_reader(pool.clone(), index)
                .read_indexed(id, || not_indexed(id))
        };
        read_back(
            &mut self.map,
            &self.target,
            self.window,
            damaged,
            repo.sealing(),
            &fetch,
            progress,
        )
    }

    /// Fits the partition table to the target, after its data, and checks
    /// that it reads back cleanly: what changed, and what the user should
    /// do next.
    fn fit_table(&self) -> Result<(Vec<String>, Option<String>)> {
        let (Some(plan), Some(layout)) = (&self.table_fit, &self.layout) else {
            return Ok((Vec::new(), None));
        };
        let target = &self.target;
        apply_fit(target, plan)?;
        target.sync()?;
        let table_changes = describe_fit(layout, plan, target.size());
        let after = Layout::read(target, target.size(), layout.sector_size, true)?;
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
        let next_step = plan.grown.map(|(number, _, _)| {
            let fstype = layout
                .partition(number)
                .and_then(|p| p.content.as_ref())
                .map(|c| c.fstype.as_str());
            grow_command(&self.target_path, number, target.kind(), fstype)
        });
        Ok((table_changes, next_step))
    }

    /// After a whole disk with a partition table went onto a block device,
    /// asks the kernel to re-read the table: whether it did (a failure is
    /// also a warning), or `None` when there was nothing to re-read.
    fn reread_partitions(&mut self) -> Option<bool> {
        let has_table = self.layout.as_ref().is_some_and(|l| l.table != Table::None);
        if self.target.kind() != TargetKind::BlockDevice
            || self.options.partition.is_some()
            || !has_table
        {
            return None;
        }
        let failed = self.target.reread_partitions();
        let reread = failed.is_none();
        self.warnings.extend(failed);
        Some(reread)
    }
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

/// What the writing did.
#[derive(Default)]
struct Written {
    /// Bytes of data written.
    bytes: u64,
    /// Zero (or unused) chunks, left as zeros.
    zero_chunks: u64,
    /// Ranges zeroed for damaged chunks (--continue-on-error), in order.
    damaged: Vec<DamagedRange>,
}

/// Workers read, decode and check chunks, neighbouring ones of a pack with
/// one read (`spans.rs`); this thread writes them, so the target sees one
/// writer.
fn write_all(
    repo: &crate::repo::Repository,
    map: &mut MapReader,
    index: &Index,
    target: &Target,
    window: Window,
    continue_on_error: bool,
    progress: &dyn Progress,
) -> Result<Written> {
    let header = *map.header();
    let mut writer = ChunkWriter {
        target,
        window,
        header,
        continue_on_error,
        written: Written::default(),
    };
    progress.start("restore", window.len);
    let workers = crate::engine::reader_count(repo);
    let pool = BufPool::new(header.chunk_size as usize, workers * 6);
    let limit = crate::repo::span_limit(repo.backend(), workers);
    let positions = window.positions(header.chunk_size);
    let ran = fan_out(
        |send| spans::feed(map, positions, index, limit, send),
        workers,
        || repo.chunk_reader(pool.clone(), index),
        |reader, job, give| match job {
            Job::Zeros(places) => {
                give((places, Ok(None)));
            }
            Job::Unindexed(id, places) => {
                give((places, Err(not_indexed(&id))));
            }
            Job::Span(Span {
                pack,
                chunks,
                mut places,
            }) => reader.read_span(&pack, &chunks, &mut |i, chunk| {
                let places = places.get_mut(i).map(std::mem::take).unwrap_or_default();
                give((places, chunk.map(Some)))
            }),
        },
        |(places, fetched)| writer.place_all(places, fetched, progress),
    );
    progress.finish();
    ran?;
    let mut written = writer.written;
    written.damaged.sort_by_key(|d| d.offset);
    Ok(written)
}

/// Puts fetched chunks on the target, one at a time, and counts them.
struct ChunkWriter<'t> {
    target: &'t Target,
    window: Window,
    header: MapHeader,
    continue_on_error: bool,
    written: Written,
}

impl ChunkWriter<'_> {
    /// Writes a fetched chunk (or zeros) at each of its places; a damaged
    /// chunk stops the restore unless --continue-on-error.
    fn place_all(
        &mut self,
        places: Places,
        fetched: Result<Option<PlainChunk>>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let fetched = match fetched {
            Err(e) if e.kind() != crate::ErrorKind::Corrupt || !self.continue_on_error => {
                let chunk_size = self.header.chunk_size;
                let offset = places
                    .first()
                    .and_then(|(pos, _)| {
                        let len = self.header.chunk_len(*pos);
                        self.window.clip(pos * chunk_size, len)
                    })
                    .map_or(0, |(_, offset)| offset);
                return Err(e.context(format!(
                    "stopped on the chunk at target offset {offset} (chunks are written out of \
                     order: the bytes before it are not all written)"
                )));
            }
            fetched => fetched,
        };
        let fetched = fetched.as_ref().map(Option::as_ref).map_err(Error::message);
        for (pos, entry) in places {
            let len = self.place(pos, &entry, fetched)?;
            progress.advance(len);
        }
        Ok(())
    }

    /// Writes the part inside the window of the chunk at map position
    /// `pos`: its bytes, zeros for a zero chunk, or zeros for a damaged one
    /// (`Err`, with why). Returns the bytes of the target it covered.
    fn place(
        &mut self,
        pos: u64,
        entry: &MapEntry,
        fetched: std::result::Result<Option<&PlainChunk>, &str>,
    ) -> Result<u64> {
        let header = &self.header;
        let (part, offset) = self
            .window
            .clip(pos * header.chunk_size, header.chunk_len(pos))
            .ok_or_else(|| Error::internal("chunk outside the window"))?;
        let len = part.len() as u64;
        match fetched {
            Ok(Some(plain)) if plain.len() as u64 == header.chunk_len(pos) => {
                self.target.write_at(&plain[part], offset)?;
                self.written.bytes += len;
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
                self.target.zero_range(offset, len)?;
                self.written.zero_chunks += 1;
            }
            Err(reason) => {
                self.target.zero_range(offset, len)?;
                self.written.damaged.push(DamagedRange {
                    offset,
                    len,
                    chunk: entry.id,
                    reason: reason.to_string(),
                });
            }
        }
        Ok(len)
    }
}

/// The error for a chunk of the snapshot that the index lacks.
fn not_indexed(id: &ChunkId) -> Error {
    Error::corrupt(format!("chunk {id} is not in the index"))
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
        crate::engine::worker_count(),
        Vec::new,
        check,
        |_, _, r| r,
    );
    progress.finish();
    ran.map(|()| true)
}
