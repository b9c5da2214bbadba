//! Reflinked shadows of image files, and what changed between two of them.
//!
//! A shadow is a copy of an image file that shares all its blocks
//! (FICLONE, on XFS and btrfs): it costs no data at first, and it pins the
//! blocks the image later overwrites (copy on write gives the image new
//! ones), so a shadow costs what changed in the image since it was taken.
//!
//! Two shadows of the same image are compared block address by block
//! address: a byte range that sits at the same physical address in both is
//! the same blocks, and so the same bytes, since no one writes a shadow. The
//! SHARED flag alone proves nothing (user reflinks, snapshots and dedupe
//! share extents too), and extents whose address does not name the bytes
//! (ENCODED, UNKNOWN, DELALLOC, INLINE, NOT_ALIGNED, tail and encrypted
//! ones) count as changed. FIEMAP is asked with FIEMAP_FLAG_SYNC: without
//! it, a write still in the page cache shows the old, shared extent.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::disk::ioctl::{self, MappedExtent};
use crate::error::{Error, IoContext, Result};

/// Extents whose physical address does not say where the bytes are, or
/// whose bytes are not stored as they read.
const IN_DOUBT: u32 = ioctl::FIEMAP_EXTENT_UNKNOWN
    | ioctl::FIEMAP_EXTENT_DELALLOC
    | ioctl::FIEMAP_EXTENT_ENCODED
    | ioctl::FIEMAP_EXTENT_DATA_ENCRYPTED
    | ioctl::FIEMAP_EXTENT_NOT_ALIGNED
    | ioctl::FIEMAP_EXTENT_DATA_INLINE
    | ioctl::FIEMAP_EXTENT_DATA_TAIL;

/// Creates `dest` (which must not exist) as a reflinked copy of `image`.
/// On failure nothing is left at `dest`; the error's OS code tells a
/// filesystem without reflinks (EOPNOTSUPP, EINVAL, EXDEV) from others.
pub fn clone_file(image: &Path, dest: &Path) -> Result<()> {
    let src = File::open(image).at("open", image)?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .at("create the shadow", dest)?;
    let cloned = ioctl::clone_file(&out, &src)
        .map_err(|e| Error::io("reflink (FICLONE) into", dest, io::Error::from(e)))
        .and_then(|()| out.sync_all().at("sync the shadow", dest));
    if cloned.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    cloned
}

/// The byte ranges of `[0, len)` whose blocks differ between the shadows
/// `old` and `new` (sorted, merged).
pub fn changed_between(old: &Path, new: &Path, len: u64) -> Result<Vec<(u64, u64)>> {
    let old_extents = extents_of(old, len)?;
    let new_extents = extents_of(new, len)?;
    Ok(compare(&old_extents, &new_extents, len))
}

fn extents_of(path: &Path, len: u64) -> Result<Vec<MappedExtent>> {
    let file = File::open(path).at("open the shadow", path)?;
    let mut extents = ioctl::mapped_extents(&file, 0, len)
        .map_err(|e| Error::io("map the extents (FIEMAP) of", path, io::Error::from(e)))?;
    extents.sort_by_key(|e| e.logical);
    Ok(extents)
}

/// What a file holds at one offset: a hole, or an extent's byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Hole,
    Data { physical: u64, flags: u32 },
}

/// What `extents` hold at `pos` and where that stops; `next` is the first
/// extent that may hold `pos` or lie after it, and moves forward only.
fn at(extents: &[MappedExtent], next: &mut usize, pos: u64) -> (At, u64) {
    while extents
        .get(*next)
        .is_some_and(|e| e.logical.saturating_add(e.len) <= pos)
    {
        *next += 1;
    }
    match extents.get(*next) {
        Some(e) if e.logical <= pos => (
            At::Data {
                physical: e.physical.saturating_add(pos - e.logical),
                flags: e.flags,
            },
            e.logical.saturating_add(e.len),
        ),
        Some(e) => (At::Hole, e.logical),
        None => (At::Hole, u64::MAX),
    }
}

fn compare(old: &[MappedExtent], new: &[MappedExtent], len: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut i, mut j, mut pos) = (0, 0, 0);
    while pos < len {
        let (a, a_end) = at(old, &mut i, pos);
        let (b, b_end) = at(new, &mut j, pos);
        let end = a_end.min(b_end).min(len);
        let same = match (a, b) {
            (At::Hole, At::Hole) => true,
            (
                At::Data {
                    physical: p,
                    flags: f,
                },
                At::Data {
                    physical: q,
                    flags: g,
                },
            ) => {
                p == q
                    && (f | g) & IN_DOUBT == 0
                    && f & ioctl::FIEMAP_EXTENT_UNWRITTEN == g & ioctl::FIEMAP_EXTENT_UNWRITTEN
            }
            _ => false,
        };
        if !same {
            match out.last_mut() {
                Some(last) if last.1 == pos => last.1 = end,
                _ => out.push((pos, end)),
            }
        }
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(logical: u64, physical: u64, len: u64, flags: u32) -> MappedExtent {
        MappedExtent {
            logical,
            physical,
            len,
            flags,
        }
    }

    #[test]
    fn same_blocks_at_the_same_offsets_are_unchanged() {
        let a = [ext(0, 1000, 100, 0x2000), ext(200, 5000, 50, 0x2000)];
        // Split differently, same addresses.
        let b = [
            ext(0, 1000, 40, 0),
            ext(40, 1040, 60, 0),
            ext(200, 5000, 50, 1),
        ];
        assert_eq!(compare(&a, &b, 300), vec![]);
    }

    #[test]
    fn moved_blocks_holes_against_data_and_doubtful_extents_are_changed() {
        let old = [ext(0, 1000, 100, 0), ext(200, 5000, 100, 0)];
        let new = [
            ext(0, 1000, 10, 0),
            ext(10, 9000, 10, 0),
            ext(20, 1020, 80, 0),
            ext(100, 7000, 10, 0),
            ext(200, 5000, 50, ioctl::FIEMAP_EXTENT_DELALLOC),
            ext(250, 5050, 50, ioctl::FIEMAP_EXTENT_UNWRITTEN),
        ];
        assert_eq!(
            compare(&old, &new, 400),
            vec![(10, 20), (100, 110), (200, 300)]
        );
    }

    #[test]
    fn a_file_ending_in_a_hole_compares_to_its_length() {
        let old = [ext(0, 1000, 10, 0)];
        let new = [ext(0, 1000, 10, 0), ext(50, 3000, 10, 0)];
        assert_eq!(compare(&old, &new, 60), vec![(50, 60)]);
        assert_eq!(compare(&old, &old, 60), vec![]);
    }
}
