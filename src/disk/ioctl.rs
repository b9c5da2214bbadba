//! Block device ioctls, in one place.

use std::os::fd::AsRawFd;

// The kernel declares BLKGETSIZE64 with size_t (so the request number
// differs on 32-bit builds) but always writes a u64.
nix::ioctl_read_bad!(
    blkgetsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()),
    u64
);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
nix::ioctl_none_bad!(blkrrpart, nix::request_code_none!(0x12, 95));
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// Size in bytes of the block device open as `fd`.
pub fn device_size(fd: &impl AsRawFd) -> nix::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live local; the fd is open for the duration of the call.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Logical sector size of the block device open as `fd`.
pub fn logical_sector_size(fd: &impl AsRawFd) -> nix::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a
    // live local; the fd is open for the duration of the call.
    unsafe { blksszget(fd.as_raw_fd(), &mut size) }?;
    Ok(u32::try_from(size).unwrap_or(512))
}

/// Zeroes `len` bytes at `offset` on the device, letting the device do it.
pub fn zero_out(fd: &impl AsRawFd, offset: u64, len: u64) -> nix::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer,
    // which points at a live local; the fd is open for writing.
    unsafe { blkzeroout(fd.as_raw_fd(), &range) }?;
    Ok(())
}

/// Asks the kernel to re-read the partition table of the device open as
/// `fd` (after a whole disk was written).
pub fn reread_partitions(fd: &impl AsRawFd) -> nix::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is open.
    unsafe { blkrrpart(fd.as_raw_fd()) }?;
    Ok(())
}

nix::ioctl_read_bad!(blkroget, nix::request_code_none!(0x12, 94), libc::c_int);
nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);

/// Whether the block device open as `fd` is read-only (BLKROGET): a write
/// to it would fail at the first byte.
pub fn is_read_only(fd: &impl AsRawFd) -> nix::Result<bool> {
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at a
    // live local; the fd is open for the duration of the call.
    unsafe { blkroget(fd.as_raw_fd(), &mut ro) }?;
    Ok(ro != 0)
}

nix::ioctl_write_ptr_bad!(blkroset, nix::request_code_none!(0x12, 93), libc::c_int);

/// Marks the block device open as `fd` read-only (or writable again) in
/// the kernel (BLKROSET): no write reaches it, whatever mounts it.
pub fn set_read_only(fd: &impl AsRawFd, read_only: bool) -> nix::Result<()> {
    let ro = libc::c_int::from(read_only);
    // SAFETY: BLKROSET reads one int through the pointer, which points at a
    // live local; the fd is open for the duration of the call.
    unsafe { blkroset(fd.as_raw_fd(), &ro) }?;
    Ok(())
}

/// The kernel's `struct loop_info64` (linux/loop.h), field for field.
#[repr(C)]
pub struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    /// Sets the `LO_FLAGS_*` (attaching a device sets the rest to zeros).
    pub fn set_flags(&mut self, flags: u32) {
        self.lo_flags = flags;
    }

    /// Shows only `size` bytes of the backing file from `offset`.
    pub fn set_span(&mut self, offset: u64, size: u64) {
        self.lo_offset = offset;
        self.lo_sizelimit = size;
    }
}

/// What a loop device shows of its backing file: which file (the device
/// and inode numbers of the file, comparable with `stat`'s st_dev and
/// st_ino) and which byte range of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStatus {
    pub backing_dev: u64,
    pub backing_ino: u64,
    pub offset: u64,
    /// Bytes of the file the device shows; 0 means up to its end.
    pub size_limit: u64,
}

/// The backing file and range of the loop device open as `fd`; ENXIO when
/// the device has no file attached.
pub fn loop_status(fd: &impl AsRawFd) -> nix::Result<LoopStatus> {
    // SAFETY: LoopInfo64 is plain integers and byte arrays, for which all
    // zeros is a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through the
    // pointer, which points at a live local of that exact layout; the fd is
    // open for the duration of the call.
    unsafe { loop_get_status64(fd.as_raw_fd(), &mut info) }?;
    Ok(LoopStatus {
        backing_dev: info.lo_device,
        backing_ino: info.lo_inode,
        offset: info.lo_offset,
        size_limit: info.lo_sizelimit,
    })
}

/// The kernel's `struct fiemap` (linux/fiemap.h) followed by room for
/// [`FIEMAP_BATCH`] extents, as FS_IOC_FIEMAP wants them in one buffer.
#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; FIEMAP_BATCH],
}

/// The kernel's `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

const FIEMAP_BATCH: usize = 256;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

// The request number is sized by the header alone (32 bytes); the extents
// follow it in the same buffer.
nix::ioctl_readwrite_bad!(
    fs_ioc_fiemap,
    nix::request_code_readwrite!(b'f', 11, 32),
    Fiemap
);

/// An extent of a file: its byte range, and whether its blocks are shared
/// with another file (reflinks, snapshots), so that writing over it needs
/// new blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub shared: bool,
}

/// An extent as FIEMAP tells it: where its bytes are in the file
/// (`logical`) and on the filesystem's device (`physical`), and the
/// kernel's `FIEMAP_EXTENT_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedExtent {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    pub flags: u32,
}

pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
pub const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x80;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x400;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// The allocated extents of the file open as `fd` within `[start, end)`,
/// after writing its dirty pages back (FIEMAP_FLAG_SYNC: before writeback
/// the kernel may still show a shared extent that a write already
/// replaced). EOPNOTSUPP where the filesystem has no FIEMAP (tmpfs).
pub fn extents(fd: &impl AsRawFd, start: u64, end: u64) -> nix::Result<Vec<Extent>> {
    Ok(mapped_extents(fd, start, end)?
        .into_iter()
        .map(|e| Extent {
            offset: e.logical,
            len: e.len,
            shared: e.flags & FIEMAP_EXTENT_SHARED != 0,
        })
        .collect())
}

/// Like [`extents`], with physical addresses and every flag: what a
/// comparison of two files' blocks needs.
pub fn mapped_extents(fd: &impl AsRawFd, start: u64, end: u64) -> nix::Result<Vec<MappedExtent>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: Fiemap is plain integers, for which all zeros is valid.
        let mut map: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
        map.fm_start = pos;
        map.fm_length = end - pos;
        map.fm_flags = FIEMAP_FLAG_SYNC;
        map.fm_extent_count = FIEMAP_BATCH as u32;
        // SAFETY: FS_IOC_FIEMAP reads the header and writes at most
        // fm_extent_count extents after it; the buffer holds exactly that
        // many, and the fd is open for the duration of the call.
        unsafe { fs_ioc_fiemap(fd.as_raw_fd(), &mut *map) }?;
        let mapped = (map.fm_mapped_extents as usize).min(FIEMAP_BATCH);
        if mapped == 0 {
            break;
        }
        let mut last = false;
        for e in &map.fm_extents[..mapped] {
            out.push(MappedExtent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                len: e.fe_length,
                flags: e.fe_flags,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let next = map.fm_extents[mapped - 1]
            .fe_logical
            .saturating_add(map.fm_extents[mapped - 1].fe_length);
        if last || next <= pos {
            break;
        }
        pos = next;
    }
    Ok(out)
}

// FICLONE is _IOW(0x94, 9, int): the argument is the source's descriptor,
// passed by value.
nix::ioctl_write_int_bad!(
    ficlone,
    nix::request_code_write!(0x94, 9, std::mem::size_of::<libc::c_int>())
);

/// Makes the file open for writing as `dest` share all the blocks of the
/// file open as `src` (a reflink: XFS, btrfs). The kernel writes `src`'s
/// dirty pages back first, so what `dest` holds is what a read of `src`
/// returned at that moment. EOPNOTSUPP or EINVAL where the filesystem
/// cannot share blocks, EXDEV across filesystems.
pub fn clone_file(dest: &impl AsRawFd, src: &impl AsRawFd) -> nix::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its integer argument
    // and reads no memory of ours; both descriptors are open for the
    // duration of the call.
    unsafe { ficlone(dest.as_raw_fd(), src.as_raw_fd()) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loop_info64_has_the_kernels_size() {
        // linux/loop.h: 5 x u64, 4 x u32, 64 + 64 + 32 bytes, 2 x u64.
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
    }

    #[test]
    fn fiemap_structs_have_the_kernels_sizes() {
        // linux/fiemap.h: a 32-byte header, 56-byte extents.
        assert_eq!(std::mem::size_of::<super::FiemapExtent>(), 56);
        assert_eq!(
            std::mem::size_of::<super::Fiemap>(),
            32 + 56 * super::FIEMAP_BATCH
        );
    }
}
