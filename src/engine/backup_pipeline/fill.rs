//! How a worker reads a chunk: whole from the source, or, when a change
//! source says only a few of its pages changed, those pages over the
//! parent's chunk read back from the repository (or over zeros, when the
//! parent's chunk was zeros).

use super::Store;
use crate::error::{Error, Result};
use crate::repo::PlainChunk;
use crate::repo::map::{Kind, MapEntry};

/// What was read for one chunk, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Read {
    /// From the source.
    pub source: u64,
    /// Parent chunks from the repository.
    pub base: u64,
}

/// A filled chunk: what was read, and the parent's chunk when it was read
/// back (a delta may be made over it without reading it again).
pub(super) struct Filled {
    pub read: Read,
    pub parent_chunk: Option<PlainChunk>,
}

/// Pages of a chunk that a change source says changed are read from the
/// source over the parent's chunk when they are at most this share of it
/// (in 1/8): beyond that, reading the chunk whole costs less than reading
/// the parent's chunk back out of the repository.
const PAGES_OVER_BASE_EIGHTHS: u64 = 4;

/// Granularity of those reads: a page, the unit filesystems and change
/// sources track.
const PAGE: u64 = 4096;

/// Fills `plain` with the chunk at `start`, `len` bytes long.
pub(super) fn fill(
    plain: &mut Vec<u8>,
    (start, len): (u64, u64),
    parent: Option<MapEntry>,
    store: &mut Store<'_>,
) -> Result<Filled> {
    if let Some(filled) = pages_over_base(plain, (start, len), parent, store)? {
        return Ok(filled);
    }
    // Every byte is overwritten by the read: resize only when the length
    // changes (the last chunk), so nothing is zero-filled.
    plain.resize(len as usize, 0);
    store.source.read_at(plain, start)?;
    Ok(Filled {
        read: Read {
            source: len,
            base: 0,
        },
        parent_chunk: None,
    })
}

/// Reads only the pages a change source says changed, over the parent's
/// chunk from the repository, when those pages are few and the parent's
/// chunk reads back with the chunk's length; `None`: read it whole.
fn pages_over_base(
    plain: &mut Vec<u8>,
    (start, len): (u64, u64),
    parent: Option<MapEntry>,
    store: &mut Store<'_>,
) -> Result<Option<Filled>> {
    let (Some(changed), Some(entry)) = (store.changed, parent) else {
        return Ok(None);
    };
    let zeros = entry.kind == Kind::Zero;
    if !zeros && (entry.kind != Kind::Data || !store.index.contains(&entry.id)) {
        return Ok(None);
    }
    let pages = changed.pages_within(start, start + len, PAGE);
    let changed_bytes: u64 = pages.iter().map(|&(a, b)| b - a).sum();
    if changed_bytes * 8 > len * PAGES_OVER_BASE_EIGHTHS {
        return Ok(None);
    }
    if zeros {
        // The parent's chunk was zeros: the base costs no read (a guest
        // writing into a region it had never written).
        plain.clear();
        plain.resize(len as usize, 0);
        for (a, b) in pages {
            let at = (a - start) as usize..(b - start) as usize;
            store.source.read_at(&mut plain[at], a)?;
        }
        return Ok(Some(Filled {
            read: Read {
                source: changed_bytes,
                base: 0,
            },
            parent_chunk: None,
        }));
    }
    // A parent's chunk that does not read back (a damaged pack) is no
    // reason to fail: the source still has every byte.
    let missing = || Error::internal("an indexed chunk vanished from the index");
    let Ok(base) = store.repo.read_indexed(&entry.id, missing) else {
        return Ok(None);
    };
    if base.len() as u64 != len {
        return Ok(None);
    }
    plain.clear();
    plain.extend_from_slice(&base);
    for (a, b) in pages {
        let at = (a - start) as usize..(b - start) as usize;
        store.source.read_at(&mut plain[at], a)?;
    }
    Ok(Some(Filled {
        read: Read {
            source: changed_bytes,
            base: len,
        },
        parent_chunk: Some(base),
    }))
}
