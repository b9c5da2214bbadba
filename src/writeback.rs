//! A hint to the kernel's writeback, shared by the repository (packs) and
//! the disk layer (restore targets). A leaf module: it knows neither.

use std::fs::File;

/// Asks the kernel to start writing [offset, offset+len) to disk without
/// waiting. Only a hint: durability still comes from fsync.
pub fn start(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes a file descriptor, which `file` keeps
    // open for the call, and plain integers; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
