//! Small operating-system helpers shared by the repository (packs, a new
//! repository's config) and the disk layer (targets): writeback hints,
//! direct I/O, and renaming without replacing. A leaf module: it knows
//! neither layer.

use std::fs::File;
use std::io;
use std::ops::Deref;

/// Asks the kernel to start writing [offset, offset+len) to disk without
/// waiting. Only a hint: durability still comes from fsync.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
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

/// Alignment that direct I/O needs for memory, file offsets and lengths:
/// the page size, which covers 512- and 4096-byte logical sectors.
pub const DIRECT_ALIGN: usize = 4096;

/// Whether a write of `buf` at `offset` can bypass the page cache.
pub fn direct_aligned(buf: &[u8], offset: u64) -> bool {
    (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        && offset.is_multiple_of(DIRECT_ALIGN as u64)
        && buf.len().is_multiple_of(DIRECT_ALIGN)
        && !buf.is_empty()
}

/// Opens `path` for writing with O_DIRECT, or `None` where the filesystem
/// does not support it (tmpfs, some network filesystems).
pub fn open_direct(path: &std::path::Path, create_new: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).custom_flags(libc::O_DIRECT);
    if create_new {
        options.create_new(true);
    }
    options.open(path).ok()
}

/// Page-aligned memory that can be handed to direct I/O.
pub struct AlignedBuf {
    map: memmap2::MmapMut,
    len: usize,
}

impl AlignedBuf {
    pub fn new(capacity: usize) -> io::Result<AlignedBuf> {
        let map = memmap2::MmapOptions::new()
            .len(capacity.max(DIRECT_ALIGN))
            .map_anon()?;
        Ok(AlignedBuf { map, len: 0 })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Appends as much of `bytes` as fits; returns how much did.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.capacity() - self.len);
        self.map[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Pads with zeros to the next multiple of `DIRECT_ALIGN`.
    pub fn pad(&mut self) {
        let padded = self.len.next_multiple_of(DIRECT_ALIGN).min(self.capacity());
        self.map[self.len..padded].fill(0);
        self.len = padded;
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the length to `len` (at most the capacity) and hands out the
    /// bytes to overwrite; they hold whatever was there before.
    pub fn reuse_as(&mut self, len: usize) -> &mut [u8] {
        self.len = len.min(self.capacity());
        &mut self.map[..self.len]
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

/// Renames `from` to `to` unless `to` exists (then EEXIST and nothing
/// changes). RENAME_NOREPLACE where the filesystem has it; else a hard
/// link, which fails just the same if the name is taken; else (FAT and
/// exFAT have no hard links) a look before an ordinary rename, the only
/// way left, racy only against another writer of the same new name.
pub fn rename_no_replace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use nix::errno::Errno;
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Err(Errno::EINVAL | Errno::ENOSYS) => {}
        other => return other.map_err(std::io::Error::from),
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => return std::fs::remove_file(from),
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            return Err(e);
        }
        Err(_) => {}
    }
    if to.symlink_metadata().is_ok() {
        return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
    }
    std::fs::rename(from, to)
}

/// What a leftover of a killed writer is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// A file (a restore's hidden target).
    File,
    /// A folder, removed with all it holds (an init's staging folder).
    Folder,
}

/// Removes the leftovers of writers that were killed (SIGKILL, a crash, a
/// power cut): entries of `dir` of the kind given named
/// `PREFIX<writer record>-<rest>` (see `owner::this_writer`) whose writer
/// is gone from this host, or, when that cannot be told (another host on a
/// shared folder, an older name), that have not changed for an hour. A
/// live writer's entry is left alone; one that cannot be removed stays,
/// hidden, for the next try.
pub fn remove_leftovers_of_dead(dir: &std::path::Path, prefix: &str, kind: Leftover) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        // host-pid-ticks, then what makes the name unique.
        let record = rest.rsplit_once('-').map(|(record, _)| record);
        let of_kind = entry.file_type().is_ok_and(|t| match kind {
            Leftover::File => t.is_file(),
            Leftover::Folder => t.is_dir(),
        });
        if of_kind && crate::owner::left_behind(record, &entry.path()) {
            let _ = match kind {
                Leftover::File => std::fs::remove_file(entry.path()),
                Leftover::Folder => std::fs::remove_dir_all(entry.path()),
            };
        }
    }
}

/// `program` found in PATH, else an error naming the Debian package.
pub fn find_program(program: &str, package: &str) -> crate::error::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            crate::error::Error::not_found(format!(
                "{program} is not installed (not found in PATH)"
            ))
            .hint(format!("install it: apt-get install {package}"))
        })
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let refused = super::rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        std::fs::remove_file(&b).unwrap();
        super::rename_no_replace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }
}
