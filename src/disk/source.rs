//! A source to back up: an image file or a block device, opened read-only.
//! A qcow2 image file is read as the disk its guest sees (its virtual size,
//! through qemu-nbd: see `disk::qemu`), never as the file's own bytes; the
//! checks for changes below stay on the file.
//!
//! A source is known by its canonical path (see `SourceIdentity`), which is
//! recorded as text: a path that is not UTF-8 is refused, as two such
//! names could be recorded as the same text and their backups mixed. A
//! device named by a stable link, `/dev/disk/by-id/...` (any
//! `/dev/disk/by-*`), is recorded by that link as given: `/dev/sdb` may
//! be another disk after the next boot, the link follows the disk, and the
//! recorded path is how a later backup finds its parent.
//!
//! A source must not change while it is read: a file that shrinks reads as
//! holes past its new end, one replaced by a rename is not the file backed
//! up, and either way the snapshot would be silently wrong. So `open` notes
//! what can be seen of the source from outside its bytes (a `Stamp`: the
//! inode, the size, for a file its ctime, for a loop device its backing
//! file, its range, and that file's size and ctime), and
//! [`Source::changes`] compares that with the source as it is now, on the
//! open descriptor and on the path. The engine asks just before it commits,
//! and whenever reading fails. A block device's ctime does not follow
//! writes to it, so writes to a device that is not a loop device are not
//! seen here; and a write through a page of a shared mapping that is
//! already dirty moves no ctime at all. Of those writers, the ones that can
//! be seen are refused before the backup starts and again before it
//! commits, see `writers`: a read-write mount, a stacked device, a process
//! that maps the source shared and writable. A program writing a block
//! device with plain writes (`dd`, a VM on a raw disk) is not seen.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::unistd::{Whence, lseek};

use crate::disk::ioctl::{self, LoopStatus};
use crate::disk::layout::{Layout, ReadAt};
use crate::disk::qemu;
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
    /// The size of a loop device's backing file, when it could be opened:
    /// the device keeps its size when the file shrinks, and its end then
    /// fails to read or reads stale cached data.
    backing_size: Option<u64>,
    /// The ctime of a loop device's backing file, when it is a regular
    /// file that could be opened: a write through the device moves it once
    /// the write reaches the file.
    backing_ctime: Option<(i64, i64)>,
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
    /// A loop device's backing file was written to (through the device or
    /// not): its ctime moved.
    BackingModified,
}

impl SourceChange {
    /// Whether this is only a write to the same file at the same size,
    /// which `--allow-mounted` accepts (an inconsistent image, knowingly).
    pub fn is_write(&self) -> bool {
        matches!(self, SourceChange::Modified | SourceChange::BackingModified)
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
            SourceChange::BackingModified => f.write_str(
                "its loop device's backing file was written to (its ctime moved: a write \
                 through the device or to the file, or a change of its attributes)",
            ),
        }
    }
}

/// The major device number of loop devices (linux/major.h).
const LOOP_MAJOR: u32 = 7;

pub struct Source {
    file: File,
    path: PathBuf,
    /// A loop device's backing file (an O_PATH descriptor, for fstat), when
    /// it could be opened: it stays the file the device showed when opened,
    /// whatever happens to its name.
    backing_file: Option<File>,
    /// The source as it was opened: what [`Source::changes`] compares with.
    opened: Stamp,
    /// Where the source starts in `file`: 0, or a partition's offset.
    base: u64,
    /// Problems of the partition table this partition was found in.
    table_warnings: Vec<String>,
    identity: SourceIdentity,
    /// A qcow2 image file's guest view, read instead of the file's bytes
    /// (see `disk::qemu`); the checks for changes stay on the file.
    guest: Option<Box<qemu::Guest>>,
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
        let Some(name) = canonical.to_str() else {
            return Err(not_utf8(path, &canonical));
        };
        let name = match path.to_str() {
            Some(given) if given.starts_with(STABLE_LINKS) && kind.is_block_device() => {
                given.to_string()
            }
            _ => name.to_string(),
        };
        let mut opened = stamp(&file, path, None)?;
        let backing_file = opened
            .backing
            .and_then(|status| open_backing_file(opened.rdev, &status));
        if backing_file.is_some() {
            opened = stamp(&file, path, backing_file.as_ref())?;
        }
        let is_device = opened.rdev != 0;
        // A qcow2 image is backed up as the disk its guest sees.
        let guest = if !is_device && qemu::is_qcow2(&file) {
            Some(Box::new(qemu::Guest::open(&canonical).map_err(|e| {
                e.context(format!(
                    "{} is a qcow2 image: platter reads its guest's disk through qemu-nbd",
                    path.display()
                ))
            })?))
        } else {
            None
        };
        let size = guest.as_ref().map_or(opened.size, |g| g.size());
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
        let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
        Ok(Source {
            file,
            path: canonical,
            backing_file,
            opened,
            base: 0,
            table_warnings: Vec::new(),
            guest,
            identity: SourceIdentity {
                path: name,
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

    /// Who may be writing the source while it is read, each said in a
    /// few words: read-write mounts and stacked devices (LVM, dm-crypt,
    /// RAID) of it, of those of its partitions that hold some of its bytes,
    /// and of other loop devices over an overlapping range of the same
    /// file; and processes that map those bytes shared and writable (a
    /// write through a page of such a mapping that is already dirty moves
    /// no ctime, so [`Source::changes`] cannot see it).
    pub fn writers(&self) -> Vec<String> {
        let span = (self.base, self.base.saturating_add(self.identity.size));
        let mut out = Vec::new();
        if self.identity.is_device {
            if let Some(dir) = sysfs::block_dir(self.opened.rdev) {
                out.extend(device_uses(&dir, self.opened.rdev, span));
            }
            out.extend(mappers(self.opened.dev, self.opened.ino, span));
        }
        // The file whose bytes these are, and which of them: the image
        // file, or the file behind a loop device.
        let file = match self.opened.backing {
            Some(status) => {
                let shown = sysfs::loop_span(status.offset, status.size_limit);
                let at = |n: u64| status.offset.saturating_add(n).min(shown.1);
                Some((
                    (status.backing_dev, status.backing_ino),
                    (at(span.0), at(span.1)),
                ))
            }
            None if !self.identity.is_device => Some(((self.opened.dev, self.opened.ino), span)),
            None => None,
        };
        if let Some(((dev, ino), span)) = file {
            out.extend(other_loops_over(self.opened.rdev, (dev, ino), span));
            out.extend(mappers(dev, ino, span));
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

    /// This source, known as the source `identity` names: for a copy made
    /// to be read in its place (a reflinked shadow of an image file), so
    /// that the snapshot is of the image and its parent is found by it.
    /// Reading, and the checks for changes and writers, stay on this copy.
    pub fn known_as(mut self, identity: SourceIdentity) -> Source {
        self.identity = identity;
        self
    }

    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// The guest view a qcow2 image file is read through, when it is one.
    pub fn guest(&self) -> Option<&qemu::Guest> {
        self.guest.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [start, end) holds only holes of a sparse image file, so it
    /// reads as zeros without reading. Devices have no holes. Past the end
    /// of a file that shrank there is no hole but an error.
    pub fn is_hole(&self, start: u64, end: u64) -> Result<bool> {
        // A qcow2 guest's unallocated clusters come back over NBD as holes,
        // without data on the wire.
        if self.identity.is_device || self.guest.is_some() {
            return Ok(false);
        }
        let (start, end) = (start + self.base, end + self.base);
        match lseek(&self.file, start as i64, Whence::SeekData) {
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
        if let Some(guest) = &self.guest {
            return guest.read_at(buf, self.base + offset);
        }
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
        if self.backing_file.is_some() {
            // Writes through a loop device wait in its page cache until they
            // are flushed to its file, and only then move the file's ctime.
            // A flush error belongs to whoever wrote; reading goes on.
            let _ = self.file.sync_data();
        }
        let (was, now) = (
            self.opened,
            stamp(&self.file, &self.path, self.backing_file.as_ref())?,
        );
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
        } else if now.backing_ctime != was.backing_ctime {
            out.push(SourceChange::BackingModified);
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
        stamp(&self.file, &self.path, None).map(|s| s.size)
    }

    /// The error for a change found while reading.
    fn changed(&self, change: &SourceChange) -> Error {
        Error::corrupt(format!(
            "{} changed during the backup: {change}",
            self.path.display()
        ))
    }
}

/// The stamp of the source open as `file` (named `path` in errors); for a
/// loop device, `backing_file` is its backing file (see `open_backing_file`).
fn stamp(file: &File, path: &Path, backing_file: Option<&File>) -> Result<Stamp> {
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
        let backing_meta = backing_file.and_then(|f| f.metadata().ok());
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            rdev: meta.rdev(),
            size,
            ctime: None,
            backing,
            backing_size: backing_meta.as_ref().map(|m| m.len()),
            backing_ctime: backing_meta.map(|m| (m.ctime(), m.ctime_nsec())),
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
            backing_ctime: None,
        })
    }
}

/// The file behind the loop device `rdev`, opened for fstat only
/// (O_PATH: no read permission needed, no effect on the file), when the
/// name its sysfs folder gives still leads to the regular file `status`
/// says the device shows.
fn open_backing_file(rdev: u64, status: &LoopStatus) -> Option<File> {
    let name = sysfs::attached_file(&sysfs::block_dir(rdev)?)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(name)
        .ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && (meta.dev(), meta.ino()) == (status.backing_dev, status.backing_ino))
        .then_some(file)
}

/// Read-write mounts and stacked devices of the block device `rdev`
/// (sysfs folder `dir`) and of those of its partitions that show some of
/// its bytes `span`.
fn device_uses(dir: &Path, rdev: u64, span: sysfs::Span) -> Vec<String> {
    let mut out: Vec<String> = sysfs::mounts_with_mode_in(dir, rdev, span)
        .into_iter()
        .filter(|(_, rw)| *rw)
        .map(|(point, _)| format!("mounted read-write at {point}"))
        .collect();
    out.extend(
        sysfs::holders_in(dir, span)
            .into_iter()
            .map(|h| format!("held by {h} (LVM, dm-crypt or RAID)")),
    );
    out
}

/// Uses (as `device_uses`) of every loop device but `rdev` that shows some
/// of the bytes `span` of the file `id` (device, inode).
fn other_loops_over(rdev: u64, id: (u64, u64), span: sysfs::Span) -> Vec<String> {
    let mut out = Vec::new();
    for peer in sysfs::attached_loops() {
        if peer.rdev == rdev {
            continue;
        }
        let Some(status) = File::open(&peer.node)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.rdev() == peer.rdev))
            .and_then(|f| ioctl::loop_status(&f).ok())
        else {
            continue;
        };
        let shown = sysfs::loop_span(status.offset, status.size_limit);
        if (status.backing_dev, status.backing_ino) != id || !sysfs::overlaps(shown, span) {
            continue;
        }
        // The shared bytes, as offsets in the peer device.
        let (start, end) = (span.0.max(shown.0), span.1.min(shown.1));
        let local = (start - shown.0, end - shown.0);
        out.extend(
            device_uses(&peer.dir, peer.rdev, local)
                .into_iter()
                .map(|usage| {
                    format!(
                        "{} (bytes {start}..{end} of the same file) {usage}",
                        peer.node.display()
                    )
                }),
        );
    }
    out
}

/// Processes that map some of the bytes `span` of the file `dev`, `ino`
/// shared and writable.
fn mappers(dev: u64, ino: u64, span: sysfs::Span) -> Vec<String> {
    sysfs::writable_mappings(dev, ino, span)
        .into_iter()
        .map(|m| {
            format!(
                "mapped shared and writable by process {} ({})",
                m.pid,
                m.command.as_deref().unwrap_or("command unknown")
            )
        })
        .collect()
}

/// Where udev keeps links that name a disk by what it is, not where it is.
const STABLE_LINKS: &str = "/dev/disk/by-";

/// The error for a source whose canonical path is not UTF-8.
fn not_utf8(given: &Path, canonical: &Path) -> Error {
    Error::bad_input(format!(
        "source {}: its real path {} is not valid UTF-8; platter records a source by its path \
         as text, and two such paths could be recorded alike, mixing their backups and \
         retention",
        escaped(given.as_os_str().as_bytes()),
        escaped(canonical.as_os_str().as_bytes())
    ))
    .hint(
        "nothing was written; give the file a UTF-8 name (`mv`, or a hard link: `ln OLD NEW`), \
         or attach it to a loop device (`losetup -r -f --show FILE`) and back up the device; a \
         symbolic link does not help, as platter records where it leads",
    )
}

/// `bytes` as text, each byte that is not part of valid UTF-8 as `\xNN`.
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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
