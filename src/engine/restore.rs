//! A restore: check everything that can be checked before the first write
//! (the map, the index knows every chunk, the target is safe and large
//! enough), then write every chunk after checking its crc32 and BLAKE3.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::codec::{self, ChunkId};
use crate::disk::{Target, TargetKind};
use crate::engine::parallel::for_each_entry;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapHeader, MapReader};
use crate::repo::snapshot::Snapshot;
use crate::repo::{ChunkReader, Repository};

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Overwrite an existing image file.
    pub force: bool,
    /// Read the target back afterwards and compare.
    pub verify: bool,
    /// Write zeros where a chunk is damaged and go on; report every range.
    pub continue_on_error: bool,
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
    pub duration_s: f64,
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
    let mut map = MapReader::open(repo.backend(), &snap.raw_id()?, &snap.map.blake3)
        .map_err(|e| e.context(format!("snapshot {} cannot be restored", snap.short_id())))?;
    let header = *map.header();
    let _lock = super::lock_for_reading(repo, "restore", progress)?;
    let (index, _) = repo.load_index()?;
    let missing = missing_chunks(&mut map, &index)?;
    if let Some(&(pos, id)) = missing.first()
        && !options.continue_on_error
    {
        return Err(Error::corrupt(format!(
            "snapshot {} needs {} chunk(s) the repository does not have; the first, {id}, \
             holds bytes {}..{}",
            snap.short_id(),
            missing.len(),
            pos * header.chunk_size,
            pos * header.chunk_size + header.chunk_len(pos)
        ))
        .hint(
            "nothing was written; run `platter verify` for the full list, or add \
               --continue-on-error to restore the rest with zeros there",
        ));
    }

    let target = Target::open(target_path, header.source_size, options.force)?;
    let result = write_all(repo, &snap, &mut map, &index, &target, options, progress);
    let (written, zero, damaged) = match result {
        Ok(r) => r,
        Err(e) => {
            let kept = target.kind() != TargetKind::NewFile;
            target.discard_new_file();
            return Err(if kept {
                e.hint("the target was partly written and is not a usable copy")
            } else {
                e.hint("the partly written target file was removed")
            });
        }
    };
    target.sync()?;
    let verified = if options.verify {
        Some(read_back(&mut map, &target, &damaged, progress)?)
    } else {
        None
    };
    Ok(RestoreReport {
        snapshot: snap.id.clone(),
        target: target_path.display().to_string(),
        target_kind: match target.kind() {
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
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Data chunks of the map that the index does not know, in map order.
fn missing_chunks(map: &mut MapReader, index: &Index) -> Result<Vec<(u64, ChunkId)>> {
    let mut missing = Vec::new();
    for pos in 0..map.header().entries {
        let e = map.entry(pos)?;
        if e.kind == Kind::Data && !index.contains(&e.id) {
            missing.push((pos, e.id));
        }
    }
    Ok(missing)
}

type Written = (u64, u64, Vec<DamagedRange>);

fn write_all(
    repo: &Repository,
    snap: &Snapshot,
    map: &mut MapReader,
    index: &Index,
    target: &Target,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<Written> {
    let header = *map.header();
    let totals = Mutex::new((0u64, 0u64, Vec::<DamagedRange>::new()));
    progress.start("restore", header.source_size);
    let ran = for_each_entry(
        map,
        super::worker_count(),
        || ChunkReader::new(repo.backend()),
        |reader, pos, entry| {
            let offset = pos * header.chunk_size;
            let len = header.chunk_len(pos);
            let outcome = restore_chunk(reader, index, target, &header, pos, &entry);
            progress.advance(len);
            let mut totals = totals.lock().map_err(|_| poisoned())?;
            match outcome {
                Ok(true) => totals.0 += len,
                Ok(false) => totals.1 += 1,
                Err(e) if e.kind() == crate::ErrorKind::Corrupt && options.continue_on_error => {
                    target.zero_range(offset, len)?;
                    totals.2.push(DamagedRange {
                        offset,
                        len,
                        chunk: entry.id.to_hex(),
                        reason: e.message().to_string(),
                    });
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "restoring snapshot {} stopped at offset {offset}",
                        snap.short_id()
                    )));
                }
            }
            Ok(())
        },
    );
    progress.finish();
    ran?;
    let (written, zero, mut damaged) = totals.into_inner().map_err(|_| poisoned())?;
    damaged.sort_by_key(|d| d.offset);
    Ok((written, zero, damaged))
}

/// Writes one chunk; Ok(true) if data was written, Ok(false) for zeros.
fn restore_chunk(
    reader: &mut ChunkReader,
    index: &Index,
    target: &Target,
    header: &MapHeader,
    pos: u64,
    entry: &MapEntry,
) -> Result<bool> {
    let offset = pos * header.chunk_size;
    let len = header.chunk_len(pos);
    if entry.kind != Kind::Data {
        target.zero_range(offset, len)?;
        return Ok(false);
    }
    let loc = index
        .get(&entry.id)
        .ok_or_else(|| Error::corrupt(format!("chunk {} is not in the index", entry.id)))?;
    let buf = reader.read(&entry.id, index.pack_id(loc.pack), loc)?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(format!(
            "chunk {} is {} bytes but its place in the map is {len}",
            entry.id,
            buf.len()
        )));
    }
    target.write_at(buf, offset)?;
    Ok(true)
}

/// Reads the target back: every data chunk must hash to its id, every
/// other chunk must read as zeros (damaged ranges were zeroed).
fn read_back(
    map: &mut MapReader,
    target: &Target,
    damaged: &[DamagedRange],
    progress: &dyn Progress,
) -> Result<bool> {
    let header = *map.header();
    progress.start("verify", header.source_size);
    let ran = for_each_entry(map, super::worker_count(), Vec::new, |buf, pos, entry| {
        let offset = pos * header.chunk_size;
        let len = header.chunk_len(pos);
        buf.resize(len as usize, 0);
        target.read_at(buf, offset)?;
        progress.advance(len);
        let was_damaged = damaged.iter().any(|d| d.offset == offset);
        let ok = if entry.kind == Kind::Data && !was_damaged {
            ChunkId::of(buf) == entry.id
        } else {
            codec::is_zero(buf)
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
    });
    progress.finish();
    ran.map(|()| true)
}

fn poisoned() -> Error {
    Error::new(
        crate::ErrorKind::Io,
        "internal error: a restore worker panicked",
    )
}
