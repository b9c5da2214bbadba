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
