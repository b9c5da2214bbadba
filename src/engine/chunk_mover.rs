//! Moving a snapshot's chunks into another repository, for copy (blobs as
//! they are stored, between equal keys), re-keyed copies (chunks opened,
//! named and sealed anew) and repair: workers fetch what the other
//! repository lacks, one thread stores it in packs, and each pack is
//! indexed as soon as it is durable, so an interrupted move does not move
//! it again. A snapshot's map is copied byte for byte and checked there.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::codec::ChunkId;
use crate::engine::pack_sink::PackSink;
use crate::engine::parallel::map_entries;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::{Index, Location};
use crate::repo::map::{Kind, MapEntry};
use crate::repo::names::map_name;
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, ChunkReader, PlainChunk, Repository, SnapshotId};

/// Why chunks move between two repositories.
#[derive(Debug, Clone, Copy)]
pub enum Pair {
    /// `copy`, out of an encrypted repository into a plain one only with
    /// `decrypt`.
    Copy { decrypt: bool },
    /// `repair` of the second repository from the first, its copy.
    Repair,
}

/// Refuses two repositories chunks cannot move between: the same one,
/// different chunk sizes (a map fits only its own), and keys the move
/// cannot bridge (repair takes stored chunks as they are, so it needs the
/// same key; copy into a plain repository needs `decrypt`).
pub fn check_pair(from: &Repository, to: &Repository, pair: Pair) -> Result<()> {
    if from.config().repo_id == to.config().repo_id {
        return Err(match pair {
            Pair::Copy { .. } => Error::bad_input(
                "the repository to copy to has the id of the one being copied from: it is the \
                 same repository, or a file copy of it (cp, rsync)",
            )
            .hint("name another repository with --to (a new one: `platter init`)"),
            Pair::Repair => Error::bad_input(
                "--from has the id of the repository being repaired: it is this repository, \
                 or a file copy of it (cp, rsync), which cannot be told apart from it",
            )
            .hint("name a copy made by `platter copy`; from a file copy, first `platter copy` its snapshots into a new repository and repair from that"),
        });
    }
    if from.config().chunk_size != to.config().chunk_size {
        return Err(Error::unsupported(format!(
            "the repositories cut disks into chunks of different sizes ({} and {}): a \
             snapshot's map only fits a repository with its chunk size, so neither holds \
             the other's snapshots",
            crate::units::bytes(from.config().chunk_size),
            crate::units::bytes(to.config().chunk_size)
        ))
        .hint(match pair {
            Pair::Copy { .. } => format!(
                "create the other repository with `platter init --chunk-size {}`",
                from.config().chunk_size
            ),
            Pair::Repair => "repair from a copy made by `platter copy` from this repository".into(),
        }));
    }
    match pair {
        Pair::Copy { decrypt } => {
            if from.sealing().is_encrypted() && !to.sealing().is_encrypted() && !decrypt {
                return Err(Error::bad_input(format!(
                    "{} is not encrypted: a copy there would hold the disks of this encrypted \
                     repository in the clear",
                    to.location()
                ))
                .hint("copy into an encrypted repository (`platter init`, optionally --copy-key-from this one), or give --decrypt if the clear copy is what you want"));
            }
        }
        Pair::Repair if !from.sealing().same_key(to.sealing()) => {
            return Err(Error::unsupported(
                "the repositories have different keys (or only one is encrypted), so chunks and \
                 maps cannot be taken from one into the other as they are",
            )
            .hint(
                "repair from a copy that shares this repository's key (made with \
                 `platter init --copy-key-from`); with only this copy, make one that does: \
                 `platter init --copy-key-from` this repository into a new folder, \
                 `platter copy` the snapshots from this copy into it, and repair from that",
            ));
        }
        Pair::Repair => {}
    }
    Ok(())
}

/// What moving one snapshot's chunks did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopiedSnapshot {
    pub snapshot: SnapshotId,
    pub chunks_copied: u64,
    pub bytes_stored: u64,
}

/// A chunk a worker fetched for the other repository: its id there, and
/// what to store.
pub(super) struct Fetched {
    pub id: ChunkId,
    pub blob: Moving,
}

pub(super) enum Moving {
    /// Its stored bytes, checked, to store as they are (same key), and a
    /// delta's base (which the other repository holds whole).
    Stored(Vec<u8>, Location, Option<ChunkId>),
    /// Its plain bytes, to compress and seal there.
    Plain(PlainChunk),
}

/// Two repositories snapshots move between: the one they come from with
/// its index, the one they go to, and where progress is shown.
pub struct Between<'a> {
    pub from: &'a Repository,
    pub to: &'a Repository,
    pub source_index: &'a Index,
    pub progress: &'a dyn Progress,
}

/// Moves the chunks of `snap` that the other repository lacks. For each
/// data entry, `fetch` runs on a worker, given whether an id is already
/// there (or on its way); `noted` sees each fetched chunk's entry and new
/// id on this thread. Each pack is indexed as soon as it is durable, so an
/// interrupted copy does not move it again.
pub(super) fn move_chunks<F, N>(
    between: &Between,
    (snap, label): (&Snapshot, &str),
    index: &mut Index,
    fetch: F,
    mut noted: N,
) -> Result<CopiedSnapshot>
where
    F: Fn(&mut ChunkReader, &MapEntry, &There) -> Result<Option<Fetched>> + Sync,
    N: FnMut(&MapEntry, &ChunkId),
{
    let Between {
        from, to, progress, ..
    } = *between;
    let mut map = from.open_map(snap)?;
    let header = *map.header();
    // Chunks this copy is moving now.
    let have: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    let there = There {
        index,
        moving: &have,
    };
    let mut sink = PackSink::new(to.backend(), to.sealing(), to.config().compression);
    let mut closed = Vec::new();
    let mut chunks = 0u64;
    progress.start(label, header.source_size);
    let readers = super::reader_count(from);
    let pool = BufPool::new(header.chunk_size as usize, readers * 6);
    let ran = map_entries(
        &mut map,
        0..header.entries,
        readers,
        || from.chunk_reader(pool.clone(), between.source_index),
        |reader, _, entry| match entry.kind {
            Kind::Data => fetch(reader, &entry, &there),
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
                        Moving::Stored(bytes, loc, base) => {
                            sink.add_stored(f.id, (loc.encoded, *base), bytes, loc.plain_len)?
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
        snapshot: snap.id,
        chunks_copied: chunks,
        bytes_stored: sink.stored_bytes,
    })
}

/// What the repository copied into holds, as a fetch sees it.
pub(super) struct There<'x> {
    index: &'x Index,
    /// Chunks this copy is moving now.
    moving: &'x Mutex<HashSet<ChunkId>>,
}

impl There<'_> {
    /// Whether chunk `id` is there, or on its way.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.index.contains(id)
            || self
                .moving
                .lock()
                .map(|set| set.contains(id))
                .unwrap_or(false)
    }

    /// Whether chunk `id` is there, stored whole: what a delta copied as
    /// it is needs as its base.
    pub fn has_whole(&self, id: &ChunkId) -> bool {
        self.index.has_whole(id)
    }
}

/// The error for chunk `id` missing from the index of the repository
/// copied from.
pub(super) fn not_in_source(id: &ChunkId) -> Error {
    Error::corrupt(format!(
        "chunk {id} is in no index of the repository copied from"
    ))
}

/// A snapshot's map is the same file in every repository that holds the
/// snapshot: copies its bytes, then opens it there, which checks them
/// against the manifest's BLAKE3.
pub(super) fn copy_map(from: &Repository, to: &Repository, snap: &Snapshot) -> Result<()> {
    let name = map_name(&snap.id);
    let bytes = from.backend().read_whole(&name)?;
    to.backend().write_whole(&name, &bytes)?;
    to.open_map(snap).map(|_| ())
}
