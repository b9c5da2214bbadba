//! Where a target may be written. The caller names the places that must
//! never be written ([`Forbidden`]: it knows what a repository is; this
//! layer does not); a target's file (or the file behind a loop device) and
//! every folder above it are checked against them by device and inode
//! number, so that symbolic links, bind mounts and hard links change
//! nothing. A block device is also refused while a loop device shows some
//! of its bytes under another name (stacked on it, or an overlapping range
//! of the same file) and is mounted or in use: writing would destroy that
//! filesystem as surely as writing under a mount.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::disk::{ioctl, sysfs};
use crate::error::{Error, Result};

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

/// The major number of loop devices.
pub(super) const LOOP_MAJOR: u32 = 7;

/// What forbids writing the file at `path` (identity `id` if it exists):
/// the file itself, or a folder above it, symbolic links resolved.
pub(super) fn forbidden_place(
    path: &Path,
    id: Option<FileId>,
    forbidden: &dyn Forbidden,
) -> Option<String> {
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

pub(super) fn refuse_place(path: &Path, what: &str) -> Error {
    Error::bad_input(format!(
        "target {} is {what}: restoring there would destroy backups",
        path.display()
    ))
    .hint("nothing was written; choose a target outside every platter repository")
}

/// Refuses a loop device whose backing file may not be written.
pub(super) fn check_loop_backing(
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
pub(super) fn check_loop_peers(
    path: &Path,
    rdev: u64,
    status: Option<&ioctl::LoopStatus>,
) -> Result<()> {
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
