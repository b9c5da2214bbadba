//! The QEMU dirty bitmap change source: a persistent dirty bitmap per
//! (repository, snapshot) in a qcow2 image, read over NBD.
//!
//! A qcow2 image is always backed up as its guest's disk (see
//! `disk::qemu`), so that dirty bitmaps, which count guest offsets, and
//! the bytes backed up agree. After a snapshot's manifest is durable,
//! platter adds to the image a persistent bitmap named
//! `platter.<first 16 hex digits of the repository id>.<snapshot id>`
//! (`qemu-img bitmap --add`, 4 KiB per bit up to 128 GiB disks, see
//! `disk::qemu::bitmap_granularity`; QEMU marks in it every block written
//! from then on) and removes this repository's earlier ones; bitmaps of other
//! repositories and of other tools are never touched. The next backup
//! finds the bitmap of its parent, serves it with `qemu-nbd --bitmap`, and
//! asks NBD block status of `qemu:dirty-bitmap:NAME` over the whole
//! export: the dirty ranges are what may have changed.
//!
//! The bitmap is trusted only when it is the parent's by name and not
//! marked in use (a QEMU that crashed leaves it so: writes may be
//! missing). A missing bitmap, one of another snapshot, one in use, an
//! image a running VM holds (its lock), or a bitmap that does not read
//! gives a scan with the reason; an image whose lock is held is read
//! without locking and never written (no bitmap added or removed).
//!
//! Between the read and the new bitmap nothing may write the image: the
//! image file is stamped (inode, size, ctime) when the plan is made, and
//! the bitmap is added only if it is unchanged when the manifest is
//! durable and the backup's own qemu-nbd has let go of it (qemu-img then
//! takes the image's lock, which a VM started meanwhile holds: the bitmap
//! is then not added, and the next backup scans).

use std::path::{Path, PathBuf};

use super::Plan;
use crate::disk::Source;
use crate::disk::qemu;
use crate::disk::ranges::Ranges;
use crate::error::{Error, Result};
use crate::repo::SnapshotId;
use crate::repo::snapshot::{ChangeSourceRecord, Snapshot};

/// Everything the bitmap source needs from the backup.
pub struct Input<'a> {
    pub source: &'a Source,
    pub repo_id: &'a str,
    pub parent: Option<&'a Snapshot>,
    pub parent_map: bool,
    pub snapshot: SnapshotId,
    pub full: bool,
    /// Whether qemu-bitmap was asked for (else: only when this repository
    /// keeps a bitmap in the image).
    pub asked: bool,
}

/// The prefix of this repository's bitmaps.
fn prefix(repo_id: &str) -> String {
    format!("platter.{}.", repo_id.get(..16).unwrap_or(repo_id))
}

/// The bitmap of `snapshot` in this repository.
pub fn bitmap_name(repo_id: &str, snapshot: &SnapshotId) -> String {
    format!("{}{}", prefix(repo_id), snapshot.to_hex())
}

/// This repository's bitmaps in the image: (name, in use).
fn ours<'a>(source: &'a Source, repo_id: &str) -> Vec<&'a qemu::Bitmap> {
    let prefix = prefix(repo_id);
    source
        .guest()
        .map(|g| {
            g.info()
                .bitmaps
                .iter()
                .filter(|b| b.name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The plan for a qcow2 image (a source with a guest view).
pub fn plan(input: &Input<'_>) -> Plan {
    let Some(guest) = input.source.guest() else {
        return Plan::scan(input.asked.then(|| {
            format!(
                "QEMU dirty bitmaps are kept in qcow2 image files; {} is not one",
                input.source.path().display()
            )
        }));
    };
    if input.source.identity().partition.is_some() {
        return Plan::scan(input.asked.then(|| {
            "QEMU dirty bitmaps track the whole image, not one partition (--partition)".to_string()
        }));
    }
    let ours = ours(input.source, input.repo_id);
    if !input.asked && ours.is_empty() {
        return Plan::scan(None);
    }
    let image = guest.image().to_path_buf();
    if let Some(why) = &guest.info().locked {
        return Plan::scan(Some(format!(
            "{} is in use (its lock is held, a running VM?: {why}); it is read without \
             locking, and no dirty bitmap is added or removed",
            image.display()
        )));
    }
    if let Some(backing) = &guest.info().backing {
        // Bitmaps see writes to this image only; its guest's disk also
        // changes with the backing file (written, or swapped by a rebase).
        return Plan::scan(Some(format!(
            "{} reads through the backing file {}, whose changes no dirty bitmap of the image \
             sees; no dirty bitmap is used or added",
            image.display(),
            crate::printable::printable(backing)
        )));
    }
    let stamp = match Stamp::of(&image) {
        Ok(s) => s,
        Err(e) => return Plan::scan(Some(format!("cannot inspect {}: {e}", image.display()))),
    };
    let pending = Pending {
        image: image.clone(),
        add: bitmap_name(input.repo_id, &input.snapshot),
        remove: ours.iter().map(|b| b.name.clone()).collect(),
        stamp,
        size: guest.size(),
    };
    let (changed, why) = compare_with_parent(input, &ours, &image);
    let record = changed.as_ref().map(|(ranges, name)| ChangeSourceRecord {
        kind: "qemu-bitmap".into(),
        detail: format!(
            "dirty bitmap {name} of {}: {} changed range(s), {} bytes",
            image.display(),
            ranges.as_slice().len(),
            ranges.total()
        ),
    });
    Plan {
        changed: changed.map(|(ranges, _)| ranges),
        record,
        scan_reason: why,
        qemu: Some(pending),
        ..Plan::scan(None)
    }
}

/// What changed since the parent, by the parent's bitmap, with its name;
/// or why that cannot be known.
fn compare_with_parent(
    input: &Input<'_>,
    ours: &[&qemu::Bitmap],
    image: &Path,
) -> (Option<(Ranges, String)>, Option<String>) {
    if input.full {
        return (None, None);
    }
    let Some(parent) = input.parent else {
        return (None, Some("no parent snapshot of this image yet".into()));
    };
    if !input.parent_map {
        return (
            None,
            Some(format!(
                "the map of parent {} cannot be read",
                parent.short_id()
            )),
        );
    }
    let name = bitmap_name(input.repo_id, &parent.id);
    let Some(bitmap) = ours.iter().find(|b| b.name == name) else {
        return (
            None,
            Some(if ours.is_empty() {
                format!(
                    "no dirty bitmap of parent {} in {} (the first backup with qemu-bitmap adds \
                     one)",
                    parent.short_id(),
                    image.display()
                )
            } else {
                let had: Vec<&str> = ours.iter().map(|b| b.name.as_str()).collect();
                format!(
                    "the image's dirty bitmap is {}, not the one of parent {} ({name})",
                    had.join(", "),
                    parent.short_id()
                )
            }),
        );
    };
    if !bitmap.enabled {
        return (
            None,
            Some(format!(
                "the dirty bitmap {name} is disabled (not recording writes: someone ran \
                 `qemu-img bitmap --disable`, or libvirt retired it), so writes may be missing \
                 from it"
            )),
        );
    }
    if bitmap.in_use {
        return (
            None,
            Some(format!(
                "the dirty bitmap {name} is marked in use: QEMU did not close {} cleanly (it \
                 crashed, or runs now), so writes may be missing from it",
                image.display()
            )),
        );
    }
    match qemu::dirty_ranges(image, &name, true) {
        Ok(ranges) => (Some((Ranges::new(ranges), name)), None),
        Err(e) => (
            None,
            Some(format!("cannot read the dirty bitmap {name}: {e}")),
        ),
    }
}

/// What can be seen of the image file from outside: it must not change
/// between the read and the new bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The new bitmap, waiting for its snapshot's manifest.
pub struct Pending {
    image: PathBuf,
    add: String,
    /// This repository's earlier bitmaps, removed after.
    remove: Vec<String>,
    stamp: Stamp,
    /// The guest disk's size.
    size: u64,
}

impl Pending {
    /// Adds the new bitmap and removes the old ones: call only once the
    /// manifest is durable and the backup's qemu-nbd is gone.
    pub fn commit(self) -> Result<()> {
        let now = Stamp::of(&self.image).map_err(|e| Error::io("inspect", &self.image, e))?;
        if now != self.stamp {
            return Err(Error::corrupt(format!(
                "{} changed after it was read (its inode, size or ctime moved), so a bitmap \
                 added now could miss those writes",
                self.image.display()
            )));
        }
        qemu::add_bitmap(&self.image, &self.add, qemu::bitmap_granularity(self.size))?;
        for old in self.remove.iter().filter(|n| **n != self.add) {
            qemu::remove_bitmap(&self.image, old)?;
        }
        Ok(())
    }
}

/// Removes this repository's bitmaps from the image (`--change-source
/// scan`), once the manifest is durable.
pub struct Forget {
    image: PathBuf,
    names: Vec<String>,
}

impl Forget {
    pub fn of(source: &Source, repo_id: &str) -> Option<Forget> {
        let guest = source.guest()?;
        if guest.info().locked.is_some() {
            return None;
        }
        let names: Vec<String> = ours(source, repo_id)
            .iter()
            .map(|b| b.name.clone())
            .collect();
        (!names.is_empty()).then(|| Forget {
            image: guest.image().to_path_buf(),
            names,
        })
    }

    pub fn commit(self) -> Result<()> {
        for name in &self.names {
            qemu::remove_bitmap(&self.image, name)?;
        }
        Ok(())
    }
}
