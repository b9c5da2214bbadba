//! `platter mount --files`: the filesystems inside a mounted snapshot's
//! partitions, mounted read-only under MOUNTPOINT/partN (or MOUNTPOINT/disk
//! for a snapshot that is one filesystem, without a partition table), so a
//! lost file is one `cp` away. Each partition file is attached to a read-only loop
//! device and mounted without journal replay (see `disk::fs_mount`); a
//! filesystem the kernel cannot mount is named and left as its image file.
//! Everything is unmounted and detached when the [`FileTrees`] is dropped
//! (before the mount it sits on), and on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};

use super::Mounted;
use super::tree::{mount_dir_name, partitions};
use crate::disk::layout::Layout;
use crate::disk::{LoopDevice, ReadOnlyMount, kernel_mounts};
use crate::error::{Error, Result};
use crate::repo::snapshot::Snapshot;

/// What became of one partition's filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilesystemState {
    /// `partN`, or `disk` for a filesystem that fills the image.
    pub name: String,
    /// The partition, or none for the whole image.
    pub partition: Option<u32>,
    /// The filesystem the backup found there, if any.
    pub fstype: Option<String>,
    /// The partition's image file in the mount.
    pub image: PathBuf,
    /// Where its files are, when mounted.
    pub mounted_at: Option<PathBuf>,
    /// Why it is not mounted.
    pub not_mounted: Option<String>,
}

/// The mounted filesystems of a snapshot; unmounted and detached on drop.
pub struct FileTrees {
    // Dropped in this order: filesystems, then their loop devices.
    mounts: Vec<ReadOnlyMount>,
    loops: Vec<LoopDevice>,
    pub filesystems: Vec<FilesystemState>,
}

/// Mounts the filesystems of every partition of `snap`, which `mounted`
/// shows, under its mount point.
pub fn mount_files(mounted: &Mounted, snap: &Snapshot) -> Result<FileTrees> {
    let folder = mounted.folder(&snap.id).ok_or_else(|| {
        Error::internal(format!("snapshot {} is not in the mount", snap.short_id()))
    })?;
    let layout = match snap.parsed_layout::<Layout>() {
        Some(Ok(layout)) => layout,
        _ => {
            return Err(Error::unsupported(format!(
                "snapshot {} has no recorded partition layout: there is no filesystem to mount",
                snap.short_id()
            ))
            .hint(format!(
                "its image is {}; mount without --files",
                folder.join("disk.img").display()
            )));
        }
    };
    let mut trees = FileTrees {
        mounts: Vec::new(),
        loops: Vec::new(),
        filesystems: Vec::new(),
    };
    let mut places: Vec<(u32, Option<String>, &str)> = partitions(snap, Some(&layout))
        .into_iter()
        .map(|(number, _, _)| {
            let fstype = layout
                .partition(number)
                .and_then(|p| p.content.as_ref())
                .map(|c| c.fstype.clone());
            (number, fstype, "")
        })
        .collect();
    if layout.partitions.is_empty() {
        // No table: the image itself may be one filesystem.
        let fstype = layout.content.as_ref().map(|c| c.fstype.clone());
        places.push((0, fstype, "disk.img"));
    }
    for (number, fstype, file) in places {
        let image = if file.is_empty() {
            folder.join(format!("part{number}.img"))
        } else {
            folder.join(file)
        };
        let mut state = FilesystemState {
            name: mount_dir_name(number),
            partition: (number != 0).then_some(number),
            fstype: fstype.clone(),
            image: image.clone(),
            mounted_at: None,
            not_mounted: None,
        };
        match fstype.as_deref() {
            None => state.not_mounted = Some("no filesystem was recognised in it".into()),
            Some("swap") => state.not_mounted = Some("it is swap space".into()),
            Some(fs) if !kernel_mounts(fs) => {
                state.not_mounted = Some(format!("this kernel has no {fs} driver"));
            }
            Some(fs) => match trees.mount_one(mounted, number, &image, fs) {
                Ok(point) => state.mounted_at = Some(point),
                Err(e) => state.not_mounted = Some(e.to_string()),
            },
        }
        trees.filesystems.push(state);
    }
    Ok(trees)
}

impl FileTrees {
    /// Attaches `image` and mounts its `fstype` filesystem at mount point
    /// folder `number` (see `mount_dir_name`); where it went.
    fn mount_one(
        &mut self,
        mounted: &Mounted,
        number: u32,
        image: &Path,
        fstype: &str,
    ) -> Result<PathBuf> {
        if !mounted.tree.add_mount_dir(number) {
            return Err(Error::unsupported(format!(
                "partition number {number} is too large for a mount point"
            )));
        }
        let point = mounted.mountpoint().join(mount_dir_name(number));
        let attached = LoopDevice::read_only(image).and_then(|device| {
            let fs = ReadOnlyMount::mount(device.path(), &point, fstype)?;
            Ok((device, fs))
        });
        match attached {
            Ok((device, fs)) => {
                self.loops.push(device);
                self.mounts.push(fs);
                Ok(point)
            }
            Err(e) => {
                mounted.tree.remove_mount_dir(number);
                Err(e)
            }
        }
    }
}

impl Drop for FileTrees {
    fn drop(&mut self) {
        // Filesystems first, newest first, then the devices under them.
        while let Some(fs) = self.mounts.pop() {
            drop(fs);
        }
        while let Some(device) = self.loops.pop() {
            drop(device);
        }
    }
}
