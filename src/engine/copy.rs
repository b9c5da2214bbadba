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
use std::sync::Mutex;
use std::time::Instant;

use crate::codec::ChunkId;
use crate::engine::pack_sink::PackSink;
use crate::engine::parallel::map_entries;
use crate::engine::rekey::Rekey;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::{Index, Location};
use crate::repo::lock::LockKind;
use crate::repo::map::{Kind, MapEntry, map_name};
use crate::repo::snapshot::{Snapshot, sort_by_time};
use crate::repo::{BrokenManifest, BufPool, ChunkReader, PlainChunk, Repository};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Snapshots by id, prefix or `latest`; all when empty.
    pub snapshots: Vec<String>,
    /// Only the newest N of the selection.
    pub last: Option<usize>,
    /// Only snapshots with any of these tags.
    pub tags: Vec<String>,
    /// Only snapshots of this source path.
    pub source: Option<String>,
    /// Allow copying out of an encrypted repository into a plain one.
    pub decrypt: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CopiedSnapshot {
    pub snapshot: String,
    pub chunks_copied: u64,
    pub bytes_stored: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub to: String,
    /// The repositories have different keys (or one is not encrypted):
    /// chunks were opened, named and sealed anew.
    pub rekeyed: bool,
    pub copied: Vec<CopiedSnapshot>,
    /// Selected snapshots the other repository already has.
    pub already_there: Vec<String>,
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
    pub snapshot: String,
    pub error: String,
}

/// The snapshots the options select out of `repo.snapshots()`, oldest
/// first, and (when none are named) the manifests that cannot be read:
/// those are not copied and are named, the others are. A filter that
/// selects nothing is `NotFound` (most likely a typo), unless unreadable
/// manifests might have matched it.
pub fn select(
    repo: &Repository,
    (all, broken): (Vec<Snapshot>, Vec<BrokenManifest>),
    options: &CopyOptions,
) -> Result<(Vec<Snapshot>, Vec<BrokenManifest>)> {
    let (mut chosen, broken) = if options.snapshots.is_empty() {
        (all, broken)
    } else {
        let mut picked = Vec::new();
        for spec in &options.snapshots {
            let s = repo.resolve(spec)?;
            if !picked.iter().any(|p: &Snapshot| p.id == s.id) {
                picked.push(s);
            }
        }
        sort_by_time(&mut picked);
        (picked, Vec::new())
    };
    let had = chosen.len();
    if !options.tags.is_empty() {
        chosen.retain(|s| s.tags.iter().any(|t| options.tags.contains(t)));
    }
    if let Some(source) = &options.source {
        let wanted = crate::repo::absolute(std::path::Path::new(source))
            .display()
            .to_string();
        chosen.retain(|s| s.source.path == *source || s.source.path == wanted);
    }
    // Nothing selected out of snapshots that exist: a mistyped filter is
    // more likely than a wish to copy nothing.
    if chosen.is_empty() && had > 0 && broken.is_empty() {
        return Err(Error::not_found(format!(
            "no snapshot matches {}; nothing was copied",
            filter_text(options)
        ))
        .hint("`platter snapshots` lists the snapshots with their tags and sources"));
    }
    if let Some(n) = options.last {
        let skip = chosen.len().saturating_sub(n);
        chosen.drain(..skip);
    }
    Ok((chosen, broken))
}

/// The tag and source filters, as given on the command line.
fn filter_text(options: &CopyOptions) -> String {
    let tags: Vec<String> = options.tags.iter().map(|t| format!("--tag {t}")).collect();
    let mut parts = Vec::new();
    match tags.len() {
        0 => {}
        1 => parts.push(tags.join("")),
        _ => parts.push(format!("any of {}", tags.join(", "))),
    }
    if let Some(source) = &options.source {
        parts.push(format!("--source {source}"));
    }
    parts.join(" and ")
}

pub fn copy(
    from: &Repository,
    to: &Repository,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    if from.config().repo_id == to.config().repo_id {
        return Err(Error::bad_input(
            "the repository to copy to is the repository being copied from",
        )
        .hint("name another repository with --to"));
    }
    if from.config().chunk_size != to.config().chunk_size {
        return Err(Error::unsupported(format!(
            "the repositories cut disks into chunks of different sizes ({} here, {} there): \
             a snapshot's map only fits a repository with its chunk size",
            crate::units::bytes(from.config().chunk_size),
            crate::units::bytes(to.config().chunk_size)
        ))
        .hint(format!(
            "create the other repository with `platter init --chunk-size {}`",
            from.config().chunk_size
        )));
    }
    if from.sealing().is_encrypted() && !to.sealing().is_encrypted() && !options.decrypt {
        return Err(Error::bad_input(format!(
            "{} is not encrypted: a copy there would hold the disks of this encrypted \
             repository in the clear",
            to.root().display()
        ))
        .hint("copy into an encrypted repository (`platter init`, optionally --copy-key-from this one), or give --decrypt if the clear copy is what you want"));
    }
    let _from_lock = super::lock_for_reading(from, "copy", progress)?;
    let _to_lock = super::lock_repo(to, LockKind::Shared, "copy", progress)?;
    let listed = from.snapshots()?;
    let all_here = listed.0.clone();
    let (chosen, broken) = select(from, listed, options)?;
    let (there_list, _) = to.snapshots()?;
    let there: HashSet<String> = there_list.iter().map(|s| s.id.clone()).collect();
    let (source_index, damaged) = from.load_index()?;
    // The chunks a damaged index described look missing: the snapshots
    // that need them fail one by one below, the others are copied.
    for (name, e) in &damaged {
        progress.warn(&format!(
            "index {} is damaged ({e}): snapshots that need the chunks it described will not \
             be copied; run `platter rebuild-index` here first",
            from.describe(name)
        ));
    }
    let (mut index, _) = to.load_index()?;
    index.keep_packs(&to.packs_on_disk()?);

    let mut rekey = if from.sealing().same_key(to.sealing()) {
        None
    } else {
        Some(Rekey::new(&all_here, &there_list))
    };
    let mut report = CopyReport {
        to: to.root().display().to_string(),
        rekeyed: rekey.is_some(),
        ..CopyReport::default()
    };
    for b in broken {
        let error = b.error.to_string();
        progress.warn(&format!(
            "manifest {} was not copied: {error}",
            from.describe(&b.name)
        ));
        report.failed.push(FailedCopy {
            snapshot: b.name.trim_start_matches("snapshots/").to_string(),
            error,
        });
    }
    for snap in chosen {
        if there.contains(&snap.id) {
            report.already_there.push(snap.id);
            continue;
        }
        let copied = match &mut rekey {
            None => copy_one(from, to, &snap, &source_index, &mut index, progress),
            Some(rekey) => rekey.learn_from_common(from, to, &snap).and_then(|()| {
                rekey.copy_one(from, to, &snap, &source_index, &mut index, progress)
            }),
        };
        let copied = match copied {
            Ok(c) => c,
            // Damage here spoils this snapshot only: go on with the rest.
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => {
                progress.warn(&format!("snapshot {} was not copied: {e}", snap.short_id()));
                report.failed.push(FailedCopy {
                    snapshot: snap.id.clone(),
                    error: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e.context(format!("copying snapshot {}", snap.short_id()))),
        };
        report.chunks_copied += copied.chunks_copied;
        report.bytes_stored += copied.bytes_stored;
        report.copied.push(copied);
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Copies one snapshot between repositories with the same key: its
/// missing blobs as they are stored, its map, then its manifest.
fn copy_one(
    from: &Repository,
    to: &Repository,
    snap: &Snapshot,
    source_index: &Index,
    index: &mut Index,
    progress: &dyn Progress,
) -> Result<CopiedSnapshot> {
    let label = format!("copy {}", snap.short_id());
    let copied = move_chunks(
        (from, to, snap),
        index,
        (&label, progress),
        |reader, entry, known| {
            if known(&entry.id) {
                return Ok(None);
            }
            let loc = locate(source_index, &entry.id)?;
            let stored = reader.read_stored(&entry.id, source_index.pack_id(loc.pack), loc)?;
            Ok(Some(Fetched {
                id: entry.id,
                blob: Moving::Stored(stored, *loc),
            }))
        },
        |_, _| {},
    )?;
    copy_map(from, to, snap)?;
    to.commit_snapshot(snap)?;
    Ok(copied)
}

/// A chunk a worker fetched for the other repository: its id there, and
/// what to store.
pub(super) struct Fetched {
    pub id: ChunkId,
    pub blob: Moving,
}

pub(super) enum Moving {
    /// Its stored bytes, checked, to store as they are (same key).
    Stored(Vec<u8>, Location),
    /// Its plain bytes, to compress and seal there.
    Plain(PlainChunk),
}

/// Moves the chunks of `snap` that the other repository lacks. For each
/// data entry, `fetch` runs on a worker, given whether an id is already
/// there (or on its way); `noted` sees each fetched chunk's entry and new
/// id on this thread. Each pack is indexed as soon as it is durable, so an
/// interrupted copy does not move it again.
pub(super) fn move_chunks<F, N>(
    (from, to, snap): (&Repository, &Repository, &Snapshot),
    index: &mut Index,
    (label, progress): (&str, &dyn Progress),
    fetch: F,
    mut noted: N,
) -> Result<CopiedSnapshot>
where
    F: Fn(&mut ChunkReader, &MapEntry, &dyn Fn(&ChunkId) -> bool) -> Result<Option<Fetched>> + Sync,
    N: FnMut(&MapEntry, &ChunkId),
{
    let mut map = from.open_map(snap)?;
    let header = *map.header();
    // Chunks this copy is moving now.
    let have: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    let known = |id: &ChunkId| {
        index.contains(id) || have.lock().map(|set| set.contains(id)).unwrap_or(false)
    };
    let mut sink = PackSink::new(to.backend(), to.sealing(), to.config().compression);
    let mut closed = Vec::new();
    let mut chunks = 0u64;
    progress.start(label, header.source_size);
    let pool = BufPool::new(header.chunk_size as usize, super::worker_count() * 6);
    let ran = map_entries(
        &mut map,
        0..header.entries,
        super::worker_count(),
        || from.chunk_reader(pool.clone()),
        |reader, _, entry| match entry.kind {
            Kind::Data => fetch(reader, &entry, &known),
            _ => Ok(None),
        },
        |pos, entry, fetched: Result<Option<Fetched>>| {
            if let Some(f) = fetched? {
                noted(&entry, &f.id);
                let first = !index.contains(&f.id)
                    && have.lock().map(|mut set| set.insert(f.id)).unwrap_or(false);
                if first {
                    chunks += 1;
                    let added = match &f.blob {
                        Moving::Stored(bytes, loc) => {
                            sink.add_stored(f.id, loc.encoded, bytes, loc.plain_len)?
                        }
                        Moving::Plain(plain) => sink.add(f.id, plain)?,
                    };
                    if let Some(pack) = added {
                        to.write_index(std::slice::from_ref(&pack))?;
                        closed.push(pack);
                    }
                }
            }
            progress.advance(header.chunk_len(pos));
            Ok(())
        },
    );
    progress.finish();
    ran?;
    if let Some(pack) = sink.close()? {
        to.write_index(std::slice::from_ref(&pack))?;
        closed.push(pack);
    }
    for (id, entries) in &closed {
        index.add_pack(*id, entries);
    }
    Ok(CopiedSnapshot {
        snapshot: snap.id.clone(),
        chunks_copied: chunks,
        bytes_stored: sink.stored_bytes,
    })
}

/// Where the repository copied from keeps chunk `id`.
pub(super) fn locate<'i>(index: &'i Index, id: &ChunkId) -> Result<&'i Location> {
    index.get(id).ok_or_else(|| {
        Error::corrupt(format!(
            "chunk {id} is in no index of the repository copied from"
        ))
    })
}

/// A snapshot's map is the same file in every repository that holds the
/// snapshot: copies its bytes, then opens it there, which checks them
/// against the manifest's BLAKE3.
pub(super) fn copy_map(from: &Repository, to: &Repository, snap: &Snapshot) -> Result<()> {
    let name = map_name(&snap.raw_id()?);
    let bytes = from.backend().read_whole(&name)?;
    to.backend().write_whole(&name, &bytes)?;
    to.open_map(snap).map(|_| ())
}
