//! A target to restore onto: a new image file, an existing file (only when
//! forced), or a block device. Every check happens before the first byte
//! is written: a mounted, busy or too small target is refused with the
//! reason and what to do.
//!
//! Where a target may be (not inside a repository, not another name of a
//! mounted filesystem) is decided in `place`, whether its filesystem has
//! room in `room`. A new file where a device was meant (devtmpfs /dev), a
//! size no file can have, and a new file name ending in `/` are refused
//! here.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FallocateFlags, fallocate};

use crate::disk::layout::{ReadAt, WriteAt};
use crate::disk::place::{self, FileId, Forbidden};
use crate::disk::{ioctl, room, sysfs};
use crate::error::{Error, IoContext, Result};
use crate::interrupt::{self, Registration};
use crate::os;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Created by this restore, sparse: zero chunks stay holes.
    NewFile,
    /// An existing file, overwritten because the user said --force.
    ExistingFile,
    BlockDevice,
}

pub struct Target {
    /// Bytes the target holds.
    size: u64,
    /// A device's logical sector size; files have none of their own.
    sector_size: Option<u32>,
    /// An existing file gets its new size only once every check passed
    /// (see [`Target::prepare`]), so a refusal leaves it as it was.
    resize_pending: bool,
    file: File,
    /// The same target opened with O_DIRECT, where supported: aligned
    /// chunks bypass the page cache (nothing to reclaim, a short final
    /// sync); the rest goes through `file`.
    direct: Option<File>,
    /// Where the bytes go now: for a new file, a temporary name beside
    /// the one the user gave, renamed by `finish`, so that an interrupted
    /// restore never leaves a file that looks complete.
    path: PathBuf,
    /// The name the user gave.
    final_path: PathBuf,
    kind: TargetKind,
    /// A new file got its final name; until then, dropping the target
    /// removes the temporary file.
    named: bool,
    /// What an interruption must clean up or tell: the temporary file of
    /// a new target, or that an existing one is partly written.
    on_interrupt: Option<Registration>,
}

impl Target {
    /// Opens `path` after every safety check. A new or forced existing
    /// file will be `file_size` bytes long; a device keeps its size. The
    /// caller checks that [`Target::size`] is enough and that there is
    /// room ([`Target::check_room`]), then calls [`Target::prepare`]
    /// before writing.
    pub fn open(
        path: &Path,
        file_size: u64,
        force: bool,
        forbidden: &dyn Forbidden,
    ) -> Result<Target> {
        let meta = match fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                let why = if names_a_folder(path) {
                    "ends with a slash, but names a file, not a folder"
                } else {
                    "has a part before its last name that is a file, not a folder"
                };
                return Err(Error::bad_input(format!("target {} {why}", path.display()))
                    .hint("nothing was written; name the file without a trailing slash"));
            }
            Err(e) => return Err(Error::io("inspect target", path, e)),
        };
        if meta.is_none() && fs::symlink_metadata(path).is_ok() {
            return Err(Error::bad_input(format!(
                "target {} is a symbolic link to nothing",
                path.display()
            ))
            .hint("remove the link or name another file"));
        }
        let Some(meta) = meta else {
            if names_a_folder(path) {
                return Err(Error::bad_input(format!(
                    "target {} ends with a slash (or a dot): it names a folder, and there is none",
                    path.display()
                ))
                .hint(
                    "nothing was written; leave out the trailing slash to create an image file",
                ));
            }
            check_file_size(path, file_size)?;
            if let Some(what) = place::forbidden_place(path, None, forbidden) {
                return Err(place::refuse_place(path, &what));
            }
            return Self::create_new(path, file_size);
        };
        let kind = meta.file_type();
        if kind.is_block_device() {
            return Self::open_device(path, meta.rdev(), forbidden);
        }
        if kind.is_dir() {
            return Err(
                Error::bad_input(format!("target {} is a directory", path.display()))
                    .hint("name a new image file inside it, e.g. DIR/disk.img"),
            );
        }
        if !kind.is_file() {
            return Err(Error::bad_input(format!(
                "target {} is neither a file nor a block device",
                path.display()
            )));
        }
        if let Some(what) = place::forbidden_place(path, Some(FileId::of(&meta)), forbidden) {
            return Err(place::refuse_place(path, &what));
        }
        if !force {
            return Err(Error::bad_input(format!(
                "target {} exists ({} bytes); refusing to overwrite it",
                path.display(),
                meta.len()
            ))
            .hint("add --force to overwrite it, or name a new file"));
        }
        check_file_size(path, file_size)?;
        let loops = sysfs::loops_backed_by(path);
        if !loops.is_empty() {
            return Err(Error::busy(format!(
                "target {} is attached as {}",
                path.display(),
                loops.join(", ")
            ))
            .hint("unmount and detach it first (`losetup -d`), or restore onto the loop device itself"));
        }
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .open(path)
            .at("open target", path)?;
        Ok(Target {
            size: file_size,
            sector_size: None,
            resize_pending: true,
            file,
            direct: os::open_direct(path, false),
            path: path.to_path_buf(),
            final_path: path.to_path_buf(),
            kind: TargetKind::ExistingFile,
            named: true,
            on_interrupt: None,
        })
    }

    fn create_new(path: &Path, size: u64) -> Result<Target> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_meta = match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => meta,
            _ => {
                return Err(Error::not_found(format!(
                    "the folder of target {} does not exist",
                    path.display()
                )));
            }
        };
        // /dev holds device nodes, made by the kernel: a new regular file
        // there is a mistyped device name, and would live in RAM.
        if sysfs::fstype_of(dir_meta.dev()).as_deref() == Some("devtmpfs") {
            return Err(Error::not_found(format!(
                "device {} does not exist",
                path.display()
            ))
            .hint("nothing was written; list the disks with `lsblk`, or name an image file on a real filesystem"));
        }
        let name = path
            .file_name()
            .ok_or_else(|| Error::bad_input(format!("target {} names no file", path.display())))?;
        // What killed restores to this name left (their pid is gone).
        os::remove_leftovers_of_dead(
            dir,
            &temp_prefix(&name.to_string_lossy()),
            os::Leftover::File,
        );
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = path.with_file_name(format!(
            "{}{}-{stamp}",
            temp_prefix(&name.to_string_lossy()),
            crate::owner::this_writer()
        ));
        let on_interrupt = interrupt::remove_on_interrupt(&temp);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&temp)
            .at("create target", &temp)?;
        if let Err(e) = file.set_len(size) {
            let _ = fs::remove_file(&temp);
            return Err(size_error(path, size, e));
        }
        Ok(Target {
            size,
            sector_size: None,
            resize_pending: false,
            file,
            direct: os::open_direct(&temp, false),
            path: temp,
            final_path: path.to_path_buf(),
            kind: TargetKind::NewFile,
            named: false,
            on_interrupt: Some(on_interrupt),
        })
    }

    fn open_device(path: &Path, rdev: u64, forbidden: &dyn Forbidden) -> Result<Target> {
        if let Some(dir) = sysfs::block_dir(rdev) {
            let mounts = sysfs::mounts_of_device(&dir, rdev);
            if !mounts.is_empty() {
                return Err(Error::busy(format!(
                    "target {} is mounted at {}",
                    path.display(),
                    mounts.join(", ")
                ))
                .hint("unmount it first (`umount`); restoring under a mounted filesystem would destroy it"));
            }
            let holders = sysfs::holders(&dir);
            if !holders.is_empty() {
                return Err(Error::busy(format!(
                    "target {} is in use by {}",
                    path.display(),
                    holders.join(", ")
                ))
                .hint("stop what holds it (LVM, RAID, dm-crypt) first"));
            }
        }
        // O_EXCL on a block device fails with EBUSY while anything else
        // holds it exclusively (a mount, swap, another exclusive opener), and
        // keeps others from claiming it while we write.
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    Error::busy(format!(
                        "target {} is held open exclusively by another program (mounted, swap, or in use)",
                        path.display()
                    ))
                    .hint("find the user with `lsblk` or `fuser -v`, and stop it")
                } else {
                    Error::io("open target", path, e)
                }
            })?;
        if ioctl::is_read_only(&file).at("query the read-only flag of", path)? {
            return Err(Error::bad_input(format!(
                "target {} is a read-only device: nothing can be restored onto it",
                path.display()
            ))
            .hint("nothing was written; make it writable (`blockdev --setrw`, `losetup` without -r, the write-protect switch) or choose another target"));
        }
        let status = if libc::major(rdev) == place::LOOP_MAJOR {
            ioctl::loop_status(&file).ok()
        } else {
            None
        };
        if let Some(status) = &status {
            place::check_loop_backing(path, rdev, status, forbidden)?;
        }
        place::check_loop_peers(path, rdev, status.as_ref())?;
        let size = ioctl::device_size(&file).at("get the size of", path)?;
        let sector = ioctl::logical_sector_size(&file).at("get the sector size of", path)?;
        Ok(Target {
            size,
            sector_size: Some(sector),
            resize_pending: false,
            file,
            direct: os::open_direct(path, false),
            path: path.to_path_buf(),
            final_path: path.to_path_buf(),
            kind: TargetKind::BlockDevice,
            named: true,
            on_interrupt: None,
        })
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Gives an existing file its new size: the first change to it, made
    /// after every check passed.
    pub fn prepare(&mut self) -> Result<()> {
        if self.kind != TargetKind::NewFile {
            self.on_interrupt = Some(interrupt::note_on_interrupt(format!(
                "{} was partly written and is not a usable copy: restore it again",
                self.final_path.display()
            )));
        }
        if self.resize_pending {
            self.file
                .set_len(self.size)
                .map_err(|e| size_error(&self.final_path, self.size, e))?;
            self.resize_pending = false;
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Serial, WWN and model of the device open as the target (by the
    /// device number of the open file, not its name); none for a file.
    pub fn hardware_identity(&self) -> (Option<String>, Option<String>, Option<String>) {
        self.file
            .metadata()
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .and_then(|m| sysfs::block_dir(m.rdev()))
            .map(|dir| sysfs::hardware_identity(&dir))
            .unwrap_or((None, None, None))
    }

    pub fn sector_size(&self) -> Option<u32> {
        self.sector_size
    }

    /// Refuses a target smaller than `needed` bytes (`what` they are for).
    pub fn check_holds(&self, needed: u64, what: &str) -> Result<()> {
        if self.size >= needed {
            return Ok(());
        }
        Err(Error::bad_input(format!(
            "target {} is {} bytes, smaller than {what} ({needed} bytes, short by {})",
            self.final_path.display(),
            self.size,
            needed - self.size
        ))
        .hint("nothing was written; restore onto a target at least that large"))
    }

    /// Refuses a file target whose filesystem has no room for the data the
    /// restore writes: `data` lists the target's byte ranges that get data
    /// (sorted, apart), within the `span` bytes from the start that the
    /// restore writes; the rest of the span becomes holes, or zeros where
    /// an existing file's filesystem cannot punch holes. Overwriting a
    /// block the file owns alone costs nothing; on copy-on-write
    /// filesystems (btrfs), and over blocks shared with another file
    /// (XFS reflinks), every byte written needs a new block. Checked
    /// before the first write, so a refusal leaves an existing file as it
    /// was.
    pub fn check_room(&self, data: &[(u64, u64)], span: u64) -> Result<()> {
        if self.kind == TargetKind::BlockDevice {
            return Ok(());
        }
        let existing = self.kind == TargetKind::ExistingFile;
        let need = room::need(&self.file, existing, data, span)
            .at("query the free space for", &self.final_path)?;
        if need.new <= need.free {
            return Ok(());
        }
        Err(Error::bad_input(format!(
            "not enough space for target {}: the restore writes {} of data{}, and its \
             filesystem has {} free (short by {})",
            self.final_path.display(),
            crate::units::bytes(need.total),
            if need.new < need.total {
                format!(", {} of it to new blocks", crate::units::bytes(need.new))
            } else {
                String::new()
            },
            crate::units::bytes(need.free),
            crate::units::bytes(need.new - need.free)
        ))
        .hint("nothing was written; free space there, or restore onto another filesystem (zero chunks stay holes and take no space)"))
    }

    /// Asks the kernel to re-read a device's partition table, so the new
    /// partitions appear. `Some(reason)` when it could not.
    pub fn reread_partitions(&self) -> Option<String> {
        if self.kind != TargetKind::BlockDevice {
            return None;
        }
        ioctl::reread_partitions(&self.file).err().map(|e| {
            format!(
                "the kernel did not re-read the partition table of {} ({e}); run `partprobe {}` \
                 or replug the disk before using its partitions",
                self.final_path.display(),
                self.final_path.display()
            )
        })
    }

    /// Writes `buf` at `offset` and starts its writeback, so the disk works
    /// while later chunks are decoded and the final sync is short.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let fail = |e| Error::io("write", &self.path, e).context(format!("at offset {offset}"));
        if let Some(direct) = &self.direct
            && os::direct_aligned(buf, offset)
        {
            return direct.write_all_at(buf, offset).map_err(fail);
        }
        self.file.write_all_at(buf, offset).map_err(fail)?;
        os::start_writeback(&self.file, offset, buf.len() as u64);
        Ok(())
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            Error::io("read back", &self.path, e).context(format!("at offset {offset}"))
        })
    }

    /// Makes [offset, offset+len) read as zeros: nothing to do on a new
    /// sparse file, a punched hole on an existing file, BLKZEROOUT on a
    /// device, and plain zeros where those are not supported.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        let done = match self.kind {
            TargetKind::NewFile => true,
            TargetKind::ExistingFile => fallocate(
                &self.file,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset as i64,
                len as i64,
            )
            .is_ok(),
            TargetKind::BlockDevice => ioctl::zero_out(&self.file, offset, len).is_ok(),
        };
        if !done {
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(zeros.len() as u64) as usize;
                self.write_at(&zeros[..n], pos)?;
                pos += n as u64;
            }
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        if let Some(direct) = &self.direct {
            direct.sync_all().at("sync", &self.path)?;
        }
        self.file.sync_all().at("sync", &self.path)
    }

    /// Drops the target's cached pages (after `sync`), so that a read-back
    /// reads what the device holds, not what the page cache remembers.
    pub fn drop_cache(&self) {
        // Advice only: if the kernel declines, the read-back still checks
        // every byte, from the cache.
        let _ = nix::fcntl::posix_fadvise(
            &self.file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }

    /// Completes a restore: a new file gets its final name (never replacing
    /// a file that appeared meanwhile), durably. A target dropped without
    /// this (a failed restore) leaves no new file behind.
    pub fn finish(mut self) -> Result<()> {
        if self.named {
            return Ok(());
        }
        os::rename_no_replace(&self.path, &self.final_path)
            .map_err(|e| Error::io("rename into place", &self.final_path, e))?;
        self.named = true;
        self.on_interrupt = None;
        let dir = self
            .final_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .at("sync directory", dir)
    }
}

/// The start of the temporary names of restores to a file named `name`;
/// the writer (`owner::this_writer`: host, pid, start time) and a stamp
/// follow.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.platter-")
}

/// Whether `path` can only name a folder: it ends with `/`, `/.` or `/..`.
fn names_a_folder(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    [&b"/"[..], b"/.", b"/.."]
        .iter()
        .any(|end| bytes.ends_with(end))
        || bytes == b"."
        || bytes == b".."
}

/// Refuses a file size no file can have (beyond off_t).
fn check_file_size(path: &Path, size: u64) -> Result<()> {
    if i64::try_from(size).is_ok() {
        return Ok(());
    }
    Err(Error::bad_input(format!(
        "target {} would be {size} bytes ({}), too large for any file (at most {} bytes)",
        path.display(),
        crate::units::bytes(size),
        i64::MAX
    ))
    .hint("nothing was written; give a smaller --size"))
}

/// The error for a file that cannot be given `size` bytes.
fn size_error(path: &Path, size: u64, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EFBIG) || e.kind() == io::ErrorKind::InvalidInput {
        return Error::bad_input(format!(
            "target {} would be {size} bytes ({}), too large for a file on its filesystem \
             (or above this process's file size limit, `ulimit -f`)",
            path.display(),
            crate::units::bytes(size)
        ))
        .hint("nothing was written; give a smaller --size, or restore onto another filesystem");
    }
    Error::io("size target", path, e)
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.named {
            // A new file that never got its name: a failed restore's
            // partial image. Failing to remove it leaves a hidden file.
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl ReadAt for Target {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Target::read_at(self, buf, offset)
    }
}

impl WriteAt for Target {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        Target::write_at(self, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_trailing_slash_or_dot_names_a_folder() {
        for folder in ["out.img/", "out.img/.", "a/..", ".", "..", "/"] {
            assert!(super::names_a_folder(Path::new(folder)), "{folder}");
        }
        for file in ["out.img", "dir/out.img", "dir/.hidden", "a.."] {
            assert!(!super::names_a_folder(Path::new(file)), "{file}");
        }
    }
}
