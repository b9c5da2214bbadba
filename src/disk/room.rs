//! Whether a file target's filesystem has room for a restore, asked before
//! the first write so that a forced overwrite never runs out of space
//! halfway (leaving neither the old file nor the new one). Only data takes
//! space: zero chunks become holes (or zeros, where an existing file's
//! filesystem cannot punch holes). Overwriting a block the file owns alone
//! reuses it; on filesystems that copy on every write (btrfs), and over
//! blocks shared with another file (XFS reflinks), every byte written needs
//! a new block.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{FallocateFlags, fallocate};

use crate::disk::ioctl;

/// What a restore needs of its filesystem, in bytes.
pub(super) struct Need {
    /// Blocks the data fills.
    pub total: u64,
    /// Blocks of it that must be newly allocated.
    pub new: u64,
    /// Free for an unprivileged writer (`f_bavail`): root's reserve is
    /// not counted on.
    pub free: u64,
}

/// What writing `data` (the target's byte ranges that get data, sorted and
/// apart) within the first `span` bytes of `file` needs; `existing` when
/// the file's current blocks may be reused.
pub(super) fn need(
    file: &File,
    existing: bool,
    data: &[(u64, u64)],
    span: u64,
) -> io::Result<Need> {
    let whole;
    let data = if existing && !can_punch(file) {
        let end = data
            .last()
            .map_or(span, |&(offset, len)| span.max(offset + len));
        whole = [(0, end)];
        &whole[..]
    } else {
        data
    };
    let stat = nix::sys::statvfs::fstatvfs(file)?;
    // c_ulong and fsblkcnt_t are 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    let (block, available) = (
        u64::from(stat.fragment_size()).max(1),
        u64::from(stat.blocks_available()),
    );
    let free = available.saturating_mul(block);
    let total: u64 = data
        .iter()
        .map(|&(offset, len)| ((offset + len).div_ceil(block) - offset / block) * block)
        .sum();
    // Asking about extents costs a writeback: only when it matters.
    let reused = if existing && total > free {
        reusable_within(file, data)
    } else {
        0
    };
    Ok(Need {
        total,
        new: total.saturating_sub(reused),
        free,
    })
}

/// Bytes of `data` (sorted, apart) that land on blocks `file` already
/// owns alone, which an overwrite reuses in place: allocated and not
/// shared with another file (a reflink, a snapshot). On filesystems that
/// copy on every write (btrfs, ZFS, bcachefs) none.
fn reusable_within(file: &File, data: &[(u64, u64)]) -> u64 {
    let (Some(&(start, _)), Some(&(last, len))) = (data.first(), data.last()) else {
        return 0;
    };
    if always_copy_on_write(file) {
        return 0;
    }
    let reused = match ioctl::extents(file, start, last + len) {
        Ok(extents) => overlap(
            data,
            extents
                .iter()
                .filter(|e| !e.shared)
                .map(|e| (e.offset, e.len)),
        ),
        // No FIEMAP (tmpfs, some FUSE): no sharing to ask about either.
        Err(_) => allocated_within(file, data),
    };
    // Where a filesystem cannot tell, it reports all of the file as data.
    let allocated = file
        .metadata()
        .map_or(0, |m| m.blocks().saturating_mul(512));
    reused.min(allocated)
}

/// Bytes common to the sorted, apart ranges `a` and the sorted ranges `b`.
fn overlap(a: &[(u64, u64)], b: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    for (offset, len) in b {
        let end = offset.saturating_add(len);
        while i < a.len() && a[i].0 + a[i].1 <= offset {
            i += 1;
        }
        let mut j = i;
        while j < a.len() && a[j].0 < end {
            let (x, y) = (a[j].0.max(offset), (a[j].0 + a[j].1).min(end));
            sum += y.saturating_sub(x);
            j += 1;
        }
    }
    sum
}

/// Whether every overwrite needs new blocks, shared or not.
fn always_copy_on_write(file: &File) -> bool {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, FsType, fstatfs};
    // The kernel's magic numbers, in whatever integer this target's statfs
    // uses (a wrapped cast is how the kernel itself stores them there).
    let zfs = FsType(0x2fc1_2fc1 as _);
    let bcachefs = FsType(0xca45_1a4e_u32 as _);
    // Unknown: assume the worst.
    fstatfs(file).map_or(true, |s| {
        [BTRFS_SUPER_MAGIC, zfs, bcachefs].contains(&s.filesystem_type())
    })
}

/// Whether holes can be punched in `file`: a punch past its end changes
/// nothing where they can, and fails where they cannot.
fn can_punch(file: &File) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let Some(start) = meta
        .len()
        .checked_next_multiple_of(1 << 16)
        .and_then(|start| i64::try_from(start).ok())
    else {
        return false;
    };
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        start,
        1 << 16,
    )
    .is_ok()
}

/// Bytes of `ranges` the file already has blocks for (SEEK_DATA and
/// SEEK_HOLE).
fn allocated_within(file: &File, ranges: &[(u64, u64)]) -> u64 {
    use nix::unistd::{Whence, lseek};
    let fd = file;
    let mut sum = 0;
    for &(start, len) in ranges {
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let Ok(data) = lseek(fd, pos as i64, Whence::SeekData) else {
                break;
            };
            let data = data as u64;
            if data >= end {
                break;
            }
            let hole =
                lseek(fd, data as i64, Whence::SeekHole).map_or(end, |h| (h as u64).min(end));
            if hole <= data {
                break;
            }
            sum += hole - data;
            pos = hole;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlap_counts_common_bytes() {
        let a = [(0, 10), (20, 10), (40, 10)];
        assert_eq!(super::overlap(&a, [(5, 20)].into_iter()), 5 + 5);
        assert_eq!(super::overlap(&a, [(0, 100)].into_iter()), 30);
        assert_eq!(super::overlap(&a, [(10, 10), (30, 10)].into_iter()), 0);
        assert_eq!(
            super::overlap(&a, [(22, 2), (25, 30)].into_iter()),
            2 + 5 + 10
        );
        assert_eq!(super::overlap(&[], [(0, 5)].into_iter()), 0);
    }
}
