//! A source to back up: an image file or a block device, opened read-only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::unistd::{Whence, lseek};

use crate::disk::layout::{Layout, ReadAt};
use crate::disk::{ioctl, sysfs};
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

pub struct Source {
    file: File,
    path: PathBuf,
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
        let is_device = kind.is_block_device();
        let (size, sector) = if is_device {
            let size = ioctl::device_size(&file).at("get the size of", path)?;
            let sector = ioctl::logical_sector_size(&file).at("get the sector size of", path)?;
            (size, sector)
        } else {
            (meta.len(), 512)
        };
        if size == 0 {
            return Err(Error::bad_input(format!(
                "{} is empty: there is nothing to back up",
                path.display()
            )));
        }
        let (serial, wwid, model) = if is_device {
            sysfs::block_dir(meta.rdev())
                .map(|dir| sysfs::hardware_identity(&dir))
                .unwrap_or_default()
        } else {
            (None, None, None)
        };
        // Advice only: the kernel may read ahead more aggressively.
        let _ = posix_fadvise(
            file.as_raw_fd(),
            0,
            0,
            PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        Ok(Source {
            file,
            path: canonical.clone(),
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
    /// reads as zeros without reading. Devices have no holes.
    pub fn is_hole(&self, start: u64, end: u64) -> bool {
        if self.identity.is_device {
            return false;
        }
        let (start, end) = (start + self.base, end + self.base);
        match lseek(self.file.as_raw_fd(), start as i64, Whence::SeekData) {
            Ok(next_data) => next_data as u64 >= end,
            // ENXIO: no data at or after `start`.
            Err(nix::errno::Errno::ENXIO) => true,
            // Filesystems without SEEK_DATA: assume data, read it.
            Err(_) => false,
        }
    }

    /// Fills `buf` from `offset`; a source that shrank is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::bad_input(format!(
                        "{} ended before offset {}: the source shrank during the backup",
                        self.path.display(),
                        offset + buf.len() as u64
                    ))
                } else {
                    Error::io("read", &self.path, e).context(format!("at offset {offset}"))
                }
            })
    }
}

impl ReadAt for Source {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Source::read_at(self, buf, offset)
    }
}
