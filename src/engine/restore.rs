//! A restore: check everything that can be checked before the first write
//! (the map, the index knows every chunk, the target is safe and large
//! enough), then write every chunk after checking its crc32 and BLAKE3.

use std::path::Path;
use std::time::Instant;

use crate::codec::{self, ChunkId};
use crate::disk::{Target, TargetKind};
use crate::engine::parallel::map_entries;
use crate::error::{Error, Result};
use crate::progress::Progress;
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
    let mut map = repo
        .open_map(&snap)
        .map_err(|e| e.context(format!("snapshot {} cannot be restored", snap.short_id())))?;
    let header = *map.header();
    let _lock = super::lock_for_reading(repo, "restore", progress)?;
    let (index, damaged_index) = repo.load_index()?;
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
        .hint(if damaged_index.is_empty() {
            "nothing was written; run `platter verify` for the full list, or add \
             --continue-on-error to restore the rest with zeros there"
                .to_string()
        } else {
            format!(
                "nothing was written; index file(s) {} are damaged: run `platter rebuild-index`, \
                 then restore again",
                damaged_index
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }));
    }

    let target = Target::open(target_path, header.source_size, options.force)?;
    let result = write_all(repo, &snap, &mut map, &index, &target, options, progress);
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
        Some(read_back(&mut map, &target, &damaged, progress)?)
    } else {
        None
    };
    let kind = target.kind();
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

/// Workers read, decode and check chunks; this thread writes them, so the
/// target sees one writer.
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
    let (mut written, mut zero, mut damaged) = (0u64, 0u64, Vec::<DamagedRange>::new());
    progress.start("restore", header.source_size);
    let workers = super::worker_count();
    let pool = BufPool::new(header.chunk_size as usize, workers * 6);
    let ran = map_entries(
        map,
        workers,
        || ChunkReader::new(repo.backend(), pool.clone()),
        |reader, _, entry| fetch_chunk(reader, index, &entry),
        |pos, entry, fetched| {
            let offset = pos * header.chunk_size;
            let len = header.chunk_len(pos);
            match fetched {
                Ok(Some(plain)) if plain.len() as u64 == len => {
                    target.write_at(&plain, offset)?;
                    written += len;
                }
                Ok(Some(plain)) => {
                    return Err(Error::corrupt(format!(
                        "chunk {} is {} bytes but its place in the map is {len}",
                        entry.id,
                        plain.len()
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
                    return Err(e.context(format!(
                        "restoring snapshot {} stopped at offset {offset}",
                        snap.short_id()
                    )));
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
    let check = |buf: &mut Vec<u8>, pos: u64, entry: MapEntry| -> Result<()> {
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
    };
    let ran = map_entries(map, super::worker_count(), Vec::new, check, |_, _, r| r);
    progress.finish();
    ran.map(|()| true)
}
