//! A target to restore onto: a new image file, an existing file (only when
//! forced), or a block device. Every check happens before the first byte
//! is written: a mounted, busy or too small target is refused with the
//! reason and what to do.
//!
//! Some places must never be written, whatever path reaches them: the
//! caller names them through [`Forbidden`] (it knows what a repository is;
//! this layer does not), and a target asks about the file it would write
//! (a loop device: the file behind it) and every folder above that file,
//! by device and inode number, so that symbolic links, bind mounts and hard
//! links change nothing. A loop device is also refused while another loop
//! device shows an overlapping range of the same file and is mounted or in
//! use. A file target needs room on its filesystem for every byte of data
//! the restore writes (checked before writing, so a forced overwrite never
//! runs out of space halfway and leaves neither the old file nor the new
//! one). A new file where a device was meant (devtmpfs /dev) is refused.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FallocateFlags, fallocate};

use crate::disk::layout::{ReadAt, WriteAt};
use crate::disk::{ioctl, sysfs};
use crate::error::{Error, IoContext, Result};
use crate::os;

/// A file or folder by identity: the same whichever path, symbolic link,
/// bind mount or hard link reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Where a restore must not write, as the caller sees it.
pub trait Forbidden {
    /// What the existing file `id` is, if writing to it would destroy
    /// something (e.g. "a file of the repository R being restored from").
    fn file(&self, id: FileId) -> Option<String>;
    /// What the folder `dir` (identity `id`) is, if nothing may be written
    /// inside it.
    fn folder(&self, dir: &Path, id: FileId) -> Option<String>;
}

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
            if let Some(what) = forbidden_place(path, None, forbidden) {
                return Err(refuse_place(path, &what));
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
        if let Some(what) = forbidden_place(path, Some(FileId::of(&meta)), forbidden) {
            return Err(refuse_place(path, &what));
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
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = path.with_file_name(format!(
            ".{}.platter-{}-{stamp}",
            name.to_string_lossy(),
            std::process::id()
        ));
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
        let status = if libc::major(rdev) == LOOP_MAJOR {
            ioctl::loop_status(&file).ok()
        } else {
            None
        };
        if let Some(status) = &status {
            check_loop_backing(path, rdev, status, forbidden)?;
        }
        check_loop_peers(path, rdev, status.as_ref())?;
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
        })
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Gives an existing file its new size: the first change to it, made
    /// after every check passed.
    pub fn prepare(&mut self) -> Result<()> {
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
        let whole;
        let data = if self.kind == TargetKind::ExistingFile && !can_punch(&self.file) {
            let end = data
                .last()
                .map_or(span, |&(offset, len)| span.max(offset + len));
            whole = [(0, end)];
            &whole[..]
        } else {
            data
        };
        let stat = nix::sys::statvfs::fstatvfs(&self.file)
            .map_err(io::Error::from)
            .at("query the free space for", &self.final_path)?;
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
        if total <= free {
            return Ok(());
        }
        let reused = if self.kind == TargetKind::ExistingFile {
            reusable_within(&self.file, data)
        } else {
            0
        };
        let new = total.saturating_sub(reused);
        if new <= free {
            return Ok(());
        }
        Err(Error::bad_input(format!(
            "not enough space for target {}: the restore writes {} of data{}, and its \
             filesystem has {} free (short by {})",
            self.final_path.display(),
            crate::units::bytes(total),
            if reused > 0 {
                format!(
                    ", {} of it to new blocks",
                    crate::units::bytes(new)
                )
            } else {
                String::new()
            },
            crate::units::bytes(free),
            crate::units::bytes(new - free)
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
                self.file.as_raw_fd(),
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
            self.file.as_raw_fd(),
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
        let renamed = nix::fcntl::renameat2(
            None,
            &self.path,
            None,
            &self.final_path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        );
        let renamed = match renamed {
            // Filesystems without RENAME_NOREPLACE: a hard link fails just
            // the same if the name was taken meanwhile.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                fs::hard_link(&self.path, &self.final_path)
                    .and_then(|()| fs::remove_file(&self.path))
            }
            other => other.map_err(io::Error::from),
        };
        renamed.map_err(|e| Error::io("rename into place", &self.final_path, e))?;
        self.named = true;
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

/// The major number of loop devices.
const LOOP_MAJOR: u32 = 7;

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
            "target {} would be {size} bytes ({}), too large for a file on its filesystem",
            path.display(),
            crate::units::bytes(size)
        ))
        .hint("nothing was written; give a smaller --size, or restore onto another filesystem");
    }
    Error::io("size target", path, e)
}

/// What forbids writing the file at `path` (identity `id` if it exists):
/// the file itself, or a folder above it, symbolic links resolved.
fn forbidden_place(path: &Path, id: Option<FileId>, forbidden: &dyn Forbidden) -> Option<String> {
    if let Some(what) = id.and_then(|id| forbidden.file(id)) {
        return Some(what);
    }
    let dir = match fs::canonicalize(path) {
        Ok(real) => real.parent()?.to_path_buf(),
        Err(_) => {
            let parent = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // A missing folder is reported when the file is created.
            fs::canonicalize(parent).ok()?
        }
    };
    dir.ancestors().find_map(|folder| {
        let meta = fs::metadata(folder).ok()?;
        forbidden.folder(folder, FileId::of(&meta))
    })
}

fn refuse_place(path: &Path, what: &str) -> Error {
    Error::bad_input(format!(
        "target {} is {what}: restoring there would destroy backups",
        path.display()
    ))
    .hint("nothing was written; choose a target outside every platter repository")
}

/// Refuses a loop device whose backing file may not be written.
fn check_loop_backing(
    path: &Path,
    rdev: u64,
    status: &ioctl::LoopStatus,
    forbidden: &dyn Forbidden,
) -> Result<()> {
    let id = FileId {
        dev: status.backing_dev,
        ino: status.backing_ino,
    };
    let backing = sysfs::block_dir(rdev).and_then(|dir| sysfs::attached_file(&dir));
    let name = backing
        .as_ref()
        .map_or_else(|| format!("inode {}", id.ino), |b| b.display().to_string());
    let what = forbidden.file(id).or_else(|| {
        // The name the file was attached under may have moved on: trust it
        // only while it still leads to the same file.
        let backing = backing.as_deref()?;
        let same = fs::metadata(backing).is_ok_and(|m| FileId::of(&m) == id);
        same.then(|| forbidden_place(backing, Some(id), forbidden))?
    });
    match what {
        None => Ok(()),
        Some(what) => Err(Error::bad_input(format!(
            "target {} is a loop device on {name}, which is {what}: restoring there would \
             destroy backups",
            path.display()
        ))
        .hint("nothing was written; detach it (`losetup -d`) and choose another target")),
    }
}

/// Refuses a block device while another loop device shows some of its
/// bytes under another name and is mounted, held or open exclusively: a
/// loop device attached to the target itself (or to a partition of it),
/// or, for a loop device target (`status`), one showing an overlapping
/// range of the same file.
fn check_loop_peers(path: &Path, rdev: u64, status: Option<&ioctl::LoopStatus>) -> Result<()> {
    let range = |s: &ioctl::LoopStatus| {
        let end = match s.size_limit {
            0 => u64::MAX,
            limit => s.offset.saturating_add(limit),
        };
        (s.offset, end)
    };
    let target_dir = sysfs::block_dir(rdev);
    for peer in sysfs::attached_loops() {
        if peer.rdev == rdev {
            continue;
        }
        let on_target = sysfs::attached_file(&peer.dir)
            .and_then(|file| fs::metadata(file).ok())
            .filter(|m| m.file_type().is_block_device())
            .is_some_and(|m| {
                m.rdev() == rdev
                    || (target_dir.is_some()
                        && sysfs::block_dir(m.rdev())
                            .is_some_and(|dir| dir.parent() == target_dir.as_deref()))
            });
        let shared = if on_target {
            Some("the device itself".to_string())
        } else {
            status.and_then(|status| {
                let file = File::open(&peer.node).ok()?;
                if !file.metadata().is_ok_and(|m| m.rdev() == peer.rdev) {
                    return None;
                }
                let other = ioctl::loop_status(&file).ok()?;
                let ((start, end), (other_start, other_end)) = (range(status), range(&other));
                let same_file = (other.backing_dev, other.backing_ino)
                    == (status.backing_dev, status.backing_ino);
                let overlap = same_file && other_start < end && start < other_end;
                let end = other_end.min(end);
                overlap.then(|| {
                    format!(
                        "bytes {}..{} of the same file",
                        other_start.max(start),
                        if end == u64::MAX {
                            "its end".to_string()
                        } else {
                            end.to_string()
                        }
                    )
                })
            })
        };
        let Some(shared) = shared else {
            continue;
        };
        let mut uses: Vec<String> = sysfs::mounts_of_device(&peer.dir, peer.rdev)
            .into_iter()
            .map(|point| format!("mounted at {point}"))
            .collect();
        uses.extend(
            sysfs::holders(&peer.dir)
                .into_iter()
                .map(|holder| format!("used by {holder}")),
        );
        if uses.is_empty() && held_exclusively(&peer.node) {
            uses.push("held open exclusively".to_string());
        }
        if !uses.is_empty() {
            return Err(Error::busy(format!(
                "target {} is also reached through {} ({shared}), which is {}",
                path.display(),
                peer.node.display(),
                uses.join(", ")
            ))
            .hint("nothing was written; unmount and detach it first (`umount`, `losetup -d`): restoring would destroy its filesystem"));
        }
    }
    Ok(())
}

/// Whether something holds the block device `node` exclusively (a mount,
/// swap, another exclusive opener): an exclusive open of ours fails.
fn held_exclusively(node: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(node)
        .is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
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
        file.as_raw_fd(),
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
    let fd = file.as_raw_fd();
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
