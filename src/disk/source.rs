//! A source to back up: an image file or a block device, opened read-only.
//!
//! A source must not change while it is read: a file that shrinks reads as
//! holes past its new end, one replaced by a rename is not the file backed
//! up, and either way the snapshot would be silently wrong. So `open` notes
//! what can be seen of the source from outside its bytes (a `Stamp`: the
//! inode, the size, for a file its ctime, for a loop device its backing file,
//! its range and the file's size), and [`Source::changes`] compares that with the source as it
//! is now, on the open descriptor and on the path. The engine asks just
//! before it commits, and whenever reading fails. A block device's ctime
//! does not follow writes to it, so writes to a device are not seen here
//! (a mounted one is refused before the backup starts, see `writers`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::unistd::{Whence, lseek};

use crate::disk::ioctl::{self, LoopStatus};
use crate::disk::layout::{Layout, ReadAt};
use crate::disk::sysfs;
use crate::error::{Error, IoContext, Result};

/// Who a source is, for finding the parent of the next backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    pub path: String,
    pub is_device: bool,
    pub size: u64,
    pub logical_sector_size: u32,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub model: Option<String>,
    /// The partition of the file or disk at `path` that is the source,
    /// when one was chosen (`--partition N`).
    pub partition: Option<u32>,
}

/// What can be seen of an open source from outside its bytes: what must
/// stay the same while it is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Device and inode of the open file or device node.
    dev: u64,
    ino: u64,
    /// The device number of a block device; 0 (which no block device
    /// has) for an image file.
    rdev: u64,
    /// Bytes of the whole file or device (not only a partition of it).
    size: u64,
    /// Status change time (seconds, nanoseconds) of an image file: any
    /// write or truncate moves it. None for a device, whose node's ctime
    /// does not follow writes to the device.
    ctime: Option<(i64, i64)>,
    /// The backing file and range of a loop device.
    backing: Option<LoopStatus>,
    /// The size of a loop device's backing file, when sysfs names it: the
    /// device keeps its size when the file shrinks, and its end then fails
    /// to read or reads stale cached data.
    backing_size: Option<u64>,
}

/// How a source changed while it was being backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChange {
    /// Its size in bytes went from the first to the second.
    Size(u64, u64),
    /// Its path names something else now, or nothing; says which.
    Replaced(&'static str),
    /// An image file was written to (or truncated and grown back, or its
    /// attributes changed): its ctime moved.
    Modified,
    /// A loop device shows another file, or another range of its file, or
    /// none; says what.
    Backing(String),
}

impl SourceChange {
    /// Whether this is only a write to the same file at the same size,
    /// which `--allow-mounted` accepts (an inconsistent image, knowingly).
    pub fn is_write(&self) -> bool {
        matches!(self, SourceChange::Modified)
    }
}

impl std::fmt::Display for SourceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceChange::Size(from, to) => write!(f, "its size went from {from} to {to} bytes"),
            SourceChange::Replaced(what) => write!(f, "it was replaced ({what})"),
            SourceChange::Modified => f.write_str(
                "it was written to (its ctime moved: a write, a truncate, or a change of its \
                 attributes)",
            ),
            SourceChange::Backing(what) => write!(f, "its loop device {what}"),
        }
    }
}

/// The major device number of loop devices (linux/major.h).
const LOOP_MAJOR: u32 = 7;

pub struct Source {
    file: File,
    path: PathBuf,
    /// The source as it was opened: what [`Source::changes`] compares with.
    opened: Stamp,
    /// Where the source starts in `file`: 0, or a partition's offset.
    base: u64,
    /// Problems of the partition table this partition was found in.
    table_warnings: Vec<String>,
    identity: SourceIdentity,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::io("open source", path, e).hint("name an image file or a block device")
        })?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(Error::bad_input(format!(
                "{} is a directory; platter images block devices and image files",
                path.display()
            ))
            .hint("name the device (e.g. /dev/sdb) or an image file"));
        }
        if !kind.is_file() && !kind.is_block_device() {
            return Err(Error::bad_input(format!(
                "{} is neither an image file nor a block device",
                path.display()
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .at("open source", path)?;
        let canonical = std::fs::canonicalize(path).at("resolve", path)?;
        let opened = stamp(&file, path)?;
        let is_device = opened.rdev != 0;
        let size = opened.size;
        let sector = if is_device {
            ioctl::logical_sector_size(&file).at("get the sector size of", path)?
        } else {
            512
        };
        if size == 0 {
            return Err(Error::bad_input(format!(
                "{} is empty: there is nothing to back up",
                path.display()
            )));
        }
        let (serial, wwid, model) = if is_device {
            sysfs::block_dir(opened.rdev)
                .map(|dir| sysfs::hardware_identity(&dir))
                .unwrap_or_default()
        } else {
            (None, None, None)
        };
        // Advice only: the kernel may read ahead more aggressively. (The
        // change tests pause here with strace: keep it after the stamp.)
        let _ = posix_fadvise(
            file.as_raw_fd(),
            0,
            0,
            PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        Ok(Source {
            file,
            path: canonical.clone(),
            opened,
            base: 0,
            table_warnings: Vec::new(),
            identity: SourceIdentity {
                path: canonical.display().to_string(),
                is_device,
                size,
                logical_sector_size: sector,
                serial,
                wwid,
                model,
                partition: None,
            },
        })
    }

    /// Problems of the partition table a `--partition` source was cut
    /// from: its free space is then not trusted.
    pub fn table_warnings(&self) -> &[String] {
        &self.table_warnings
    }

    /// Who may be writing the source while it is read: read-write mounts
    /// of it, of a loop device over it (or over the same file as this loop
    /// device), and devices stacked on it (LVM, dm-crypt, RAID).
    pub fn writers(&self) -> Vec<String> {
        let mut devices: Vec<PathBuf> = Vec::new();
        if self.identity.is_device {
            devices.push(self.path.clone());
            if let Some(file) = sysfs::loop_backing_file(&self.path) {
                devices.extend(sysfs::loops_backed_by(&file).into_iter().map(PathBuf::from));
            }
        } else {
            devices.extend(
                sysfs::loops_backed_by(&self.path)
                    .into_iter()
                    .map(PathBuf::from),
            );
        }
        devices.retain(|d| d.exists());
        devices.sort();
        devices.dedup();
        let mut out = Vec::new();
        for d in devices {
            let Some((dir, rdev)) = std::fs::metadata(&d)
                .ok()
                .and_then(|m| Some((sysfs::block_dir(m.rdev())?, m.rdev())))
            else {
                continue;
            };
            out.extend(
                sysfs::mounts_with_mode(&dir, rdev)
                    .into_iter()
                    .filter(|(_, rw)| *rw)
                    .map(|(point, _)| format!("mounted read-write at {point}")),
            );
            out.extend(
                sysfs::holders(&dir)
                    .into_iter()
                    .map(|h| format!("held by {h} (LVM, dm-crypt or RAID)")),
            );
        }
        out
    }

    /// The layout (partition table, contents) of this source.
    pub fn layout(&self) -> Result<Layout> {
        Layout::read(
            self,
            self.identity.size,
            self.identity.logical_sector_size,
            self.identity.is_device,
        )
    }

    /// Narrows a whole-disk source to its partition `number`, found in
    /// its layout. Everything after reads only that partition.
    pub fn into_partition(mut self, number: u32) -> Result<Source> {
        let layout = self.layout()?;
        let (offset, len) = layout.partition_span(number, &self.path.display().to_string())?;
        self.base = offset;
        self.table_warnings = layout.warnings.clone();
        self.identity.size = len;
        self.identity.partition = Some(number);
        Ok(self)
    }
    pub fn identity(&self) -> &SourceIdentity {
        &self.identity
    }

    pub fn size(&self) -> u64 {
        self.identity.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [start, end) holds only holes of a sparse image file, so it
    /// reads as zeros without reading. Devices have no holes. Past the end
    /// of a file that shrank there is no hole but an error.
    pub fn is_hole(&self, start: u64, end: u64) -> Result<bool> {
        if self.identity.is_device {
            return Ok(false);
        }
        let (start, end) = (start + self.base, end + self.base);
        match lseek(self.file.as_raw_fd(), start as i64, Whence::SeekData) {
            Ok(next_data) => Ok(next_data as u64 >= end),
            // ENXIO: no data at or after `start`, or `start` is at or past
            // the end of the file, which then shrank: it was inside.
            Err(nix::errno::Errno::ENXIO) => {
                let now = self.current_size()?;
                if now < self.opened.size {
                    Err(self.changed(&SourceChange::Size(self.opened.size, now)))
                } else {
                    Ok(true)
                }
            }
            // Filesystems without SEEK_DATA: assume data, read it.
            Err(_) => Ok(false),
        }
    }

    /// Fills `buf` from `offset`; a source that shrank is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    match self.current_size() {
                        Ok(now) if now != self.opened.size => {
                            self.changed(&SourceChange::Size(self.opened.size, now))
                        }
                        _ => Error::corrupt(format!(
                            "{} changed during the backup: it ended before offset {}",
                            self.path.display(),
                            offset + buf.len() as u64
                        )),
                    }
                } else {
                    Error::io("read", &self.path, e).context(format!("at offset {offset}"))
                }
            })
    }

    /// How the source differs now from when it was opened, on the open
    /// descriptor (size; an image file's ctime; a loop device's backing
    /// file and range) and on its path, which must still name the same
    /// file or device. Empty when nothing changed.
    pub fn changes(&self) -> Result<Vec<SourceChange>> {
        let (was, now) = (self.opened, stamp(&self.file, &self.path)?);
        let mut out = Vec::new();
        if now.size != was.size {
            out.push(SourceChange::Size(was.size, now.size));
        } else if now.ctime != was.ctime {
            out.push(SourceChange::Modified);
        }
        if now.backing != was.backing {
            out.push(SourceChange::Backing(backing_change(
                was.backing,
                now.backing,
            )));
        } else if let (Some(status), Some(from), Some(to)) =
            (now.backing, was.backing_size, now.backing_size)
            && to < from
            && to < status.offset.saturating_add(was.size)
        {
            out.push(SourceChange::Backing(format!(
                "lost the end of its file (the file went from {from} to {to} bytes)"
            )));
        }
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) if self.identity.is_device => (!m.file_type().is_block_device()
                || m.rdev() != was.rdev)
                .then_some("its path names another device now"),
            Ok(m) => ((m.dev(), m.ino()) != (was.dev, was.ino))
                .then_some("its path names another file now: a rename or copy over it"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Some("its path no longer exists: renamed or deleted")
            }
            Err(e) => return Err(Error::io("inspect", &self.path, e)),
        };
        if let Some(what) = replaced {
            // Unlinking the file that was read moved its ctime too: the
            // replacement says all.
            out.retain(|c| !c.is_write());
            out.insert(0, SourceChange::Replaced(what));
        }
        Ok(out)
    }

    /// The size of the whole file or device now.
    fn current_size(&self) -> Result<u64> {
        stamp(&self.file, &self.path).map(|s| s.size)
    }

    /// The error for a change found while reading.
    fn changed(&self, change: &SourceChange) -> Error {
        Error::corrupt(format!(
            "{} changed during the backup: {change}",
            self.path.display()
        ))
    }
}

/// The stamp of the source open as `file` (named `path` in errors).
fn stamp(file: &File, path: &Path) -> Result<Stamp> {
    let meta = file.metadata().at("inspect", path)?;
    if meta.file_type().is_block_device() {
        let size = ioctl::device_size(file).at("get the size of", path)?;
        // Only loop devices are asked: other drivers may give the request
        // number another meaning. Unbound (ENXIO) reads as no backing file.
        let backing = if libc::major(meta.rdev()) == LOOP_MAJOR {
            ioctl::loop_status(file).ok()
        } else {
            None
        };
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            rdev: meta.rdev(),
            size,
            ctime: None,
            backing,
            backing_size: backing.and_then(|b| backing_file_size(meta.rdev(), &b)),
        })
    } else {
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            rdev: 0,
            size: meta.len(),
            ctime: Some((meta.ctime(), meta.ctime_nsec())),
            backing: None,
            backing_size: None,
        })
    }
}

/// The size of the file behind the loop device `rdev`, when the file its
/// sysfs folder names is the one `status` says the device shows.
fn backing_file_size(rdev: u64, status: &LoopStatus) -> Option<u64> {
    let dir = sysfs::block_dir(rdev)?;
    let name = std::fs::read_to_string(dir.join("loop/backing_file")).ok()?;
    let meta = std::fs::metadata(name.trim_end_matches('\n')).ok()?;
    ((meta.dev(), meta.ino()) == (status.backing_dev, status.backing_ino)).then_some(meta.len())
}

/// What changed between two views of a loop device's backing file.
fn backing_change(was: Option<LoopStatus>, now: Option<LoopStatus>) -> String {
    match (was, now) {
        (Some(_), None) => "has no backing file any more".to_string(),
        (None, _) => "was attached to a file".to_string(),
        (Some(a), Some(b)) if (a.backing_dev, a.backing_ino) != (b.backing_dev, b.backing_ino) => {
            format!(
                "shows another file now (inode {} on device {:#x}, was inode {} on device {:#x})",
                b.backing_ino, b.backing_dev, a.backing_ino, a.backing_dev
            )
        }
        (Some(a), Some(b)) => format!(
            "shows another range of its file (offset {} -> {}, size limit {} -> {})",
            a.offset, b.offset, a.size_limit, b.size_limit
        ),
    }
}

impl ReadAt for Source {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Source::read_at(self, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const MIB: u64 = 1 << 20;

    /// A source over a new file of `data` MiB of data then `hole` MiB of
    /// hole, in its own folder.
    fn source(data: u64, hole: u64) -> (tempfile::TempDir, PathBuf, Source) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0x5a; (data * MIB) as usize]).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len((data + hole) * MIB)
            .unwrap();
        let source = Source::open(&path).unwrap();
        (dir, path, source)
    }

    /// Past a tick of the coarsest timestamp clock, so a change moves ctime
    /// on any kernel.
    fn later() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    #[test]
    fn an_untouched_source_has_no_changes_and_its_trailing_hole_is_a_hole() {
        let (_dir, _path, source) = source(1, 1);
        assert!(source.is_hole(MIB, 2 * MIB).unwrap());
        assert!(!source.is_hole(0, MIB).unwrap());
        let mut buf = [0u8; 16];
        source.read_at(&mut buf, 0).unwrap();
        assert_eq!(source.changes().unwrap(), Vec::new());
    }

    #[test]
    fn past_the_end_of_a_file_that_shrank_is_not_a_hole() {
        let (_dir, path, source) = source(2, 0);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(MIB)
            .unwrap();
        let e = source.is_hole(MIB + 4096, 2 * MIB).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains("from 2097152 to 1048576 bytes"), "{e}");
        let mut buf = [0u8; 4096];
        let e = source.read_at(&mut buf, MIB).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            source.changes().unwrap(),
            vec![SourceChange::Size(2 * MIB, MIB)]
        );
    }

    #[test]
    fn a_write_at_the_same_size_is_a_modification() {
        let (_dir, path, source) = source(1, 0);
        later();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"changed", 100)
            .unwrap();
        assert_eq!(source.changes().unwrap(), vec![SourceChange::Modified]);
        assert!(source.changes().unwrap()[0].is_write());
    }

    #[test]
    fn a_rename_over_the_path_or_its_removal_is_a_replacement() {
        let (dir, path, source) = source(1, 0);
        let other = dir.path().join("other.img");
        std::fs::copy(&path, &other).unwrap();
        later();
        std::fs::rename(&other, &path).unwrap();
        let changes = source.changes().unwrap();
        assert!(
            matches!(changes[..], [SourceChange::Replaced(w)] if w.contains("another file")),
            "{changes:?}"
        );
        assert!(!changes[0].is_write());
        std::fs::remove_file(&path).unwrap();
        let changes = source.changes().unwrap();
        assert!(
            matches!(changes[..], [SourceChange::Replaced(w)] if w.contains("no longer exists")),
            "{changes:?}"
        );
    }
}
