//! The reflink change source: a shadow of an image file per (repository,
//! snapshot), next to the image, on XFS or btrfs.
//!
//! A shadow is named `.<image name>.platter-shadow.<first 16 hex digits of
//! the repository id>.<snapshot id>` in the image's folder (FICLONE works
//! only within one filesystem). It holds what the snapshot read: a backup
//! clones the image into a new shadow first (`….tmp` until committed),
//! compares the parent's shadow with it (see `disk::shadow`), and reads the
//! new shadow, never the image, so a VM writing meanwhile can neither tear
//! the snapshot nor slip a write past the next backup. After the manifest
//! is durable the new shadow is renamed into place and the old one removed;
//! a failed or interrupted backup leaves the old one as it was (its
//! temporary shadow is removed then, or by the next backup).
//!
//! A shadow is trusted only if it is still the file its snapshot made: the
//! manifest records its inode, size and modification time (`shadow`), and a
//! shadow that is not a regular file with one link, is the image itself,
//! or differs from that record (replaced, linked, rewritten, cloned over)
//! gives a scan with the reason. So does an image whose size changed while
//! its shadow was taken (the backup then fails as for any source that
//! changed).
//!
//! A shadow costs no space when taken, then pins every block the image
//! overwrites until the next backup replaces it: about the size of what
//! changed between two backups.

use std::path::{Path, PathBuf};

use super::Plan;
use crate::disk::Source;
use crate::disk::ranges::Ranges;
use crate::disk::shadow;
use crate::error::Result;
use crate::repo::SnapshotId;
use crate::repo::snapshot::{ChangeSourceRecord, ShadowStamp, Snapshot};

const MARK: &str = ".platter-shadow.";
const TEMPORARY: &str = ".tmp";

/// The shadows of one image in one repository.
struct Shadows {
    dir: PathBuf,
    /// `.<image name>.platter-shadow.<repo>.`
    prefix: String,
    /// Committed shadows: (snapshot id, path).
    committed: Vec<(SnapshotId, PathBuf)>,
    /// Leftovers of backups that did not commit.
    temporary: Vec<PathBuf>,
}

impl Shadows {
    /// The shadows of `image` for repository `repo_id`; `None` when the
    /// image's name or folder cannot hold any.
    fn find(image: &Path, repo_id: &str) -> Option<Shadows> {
        let dir = image.parent()?.to_path_buf();
        let name = image.file_name()?.to_str()?;
        let prefix = format!(".{name}{MARK}{}.", repo_id.get(..16)?);
        let mut committed = Vec::new();
        let mut temporary = Vec::new();
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let file = entry.file_name();
            let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
                continue;
            };
            if rest.ends_with(TEMPORARY) {
                temporary.push(entry.path());
            } else if let Some(id) = SnapshotId::parse(rest) {
                committed.push((id, entry.path()));
            }
        }
        Some(Shadows {
            dir,
            prefix,
            committed,
            temporary,
        })
    }

    fn path(&self, snapshot: &SnapshotId, temporary: bool) -> PathBuf {
        let tail = if temporary { TEMPORARY } else { "" };
        self.dir
            .join(format!("{}{}{tail}", self.prefix, snapshot.to_hex()))
    }
}

/// Everything the reflink source needs from the backup.
pub struct Input<'a> {
    pub image: &'a Source,
    pub repo_id: &'a str,
    pub parent: Option<&'a Snapshot>,
    /// Whether the parent's map can be used (else every chunk is read).
    pub parent_map: bool,
    pub snapshot: SnapshotId,
    pub full: bool,
    /// Whether reflink was asked for (else: only when a shadow exists).
    pub asked: bool,
}

/// The plan for an image that may keep shadows.
pub fn plan(input: &Input<'_>) -> Plan {
    let image = input.image;
    let why_not = if image.identity().is_device {
        Some("reflink shadows are for image files; this is a block device")
    } else if image.identity().partition.is_some() {
        Some("reflink shadows track whole image files, not one partition (--partition)")
    } else {
        None
    };
    if let Some(why) = why_not {
        return Plan::scan(input.asked.then(|| why.to_string()));
    }
    let Some(shadows) = Shadows::find(image.path(), input.repo_id) else {
        return Plan::scan(input.asked.then(|| {
            format!(
                "cannot keep a reflink shadow of {} (its folder cannot be listed, or its name \
                 is not UTF-8)",
                image.path().display()
            )
        }));
    };
    if !input.asked && shadows.committed.is_empty() {
        return Plan::scan(None);
    }
    for stale in &shadows.temporary {
        let _ = std::fs::remove_file(stale);
    }
    let new = shadows.path(&input.snapshot, true);
    if let Err(e) = shadow::clone_file(image.path(), &new) {
        return Plan::scan(Some(format!(
            "cannot make a reflinked shadow of {} ({e}); reflink shadows need XFS or btrfs, \
             with the image on it",
            image.path().display()
        )));
    }
    let stamp = match stamp_of(&new) {
        Ok(stamp) if stamp.size == image.size() => stamp,
        made => {
            let _ = std::fs::remove_file(&new);
            // Read the image itself: the check before the commit fails
            // the backup if it changed.
            return Plan::scan(Some(match made {
                Ok(stamp) => format!(
                    "the image was {} bytes when opened and {} when its shadow was taken: it \
                     changed during the backup",
                    image.size(),
                    stamp.size
                ),
                Err(e) => format!("cannot inspect the new shadow: {e}"),
            }));
        }
    };
    let pending = Pending {
        new: new.clone(),
        keep: shadows.path(&input.snapshot, false),
        old: shadows.committed.iter().map(|(_, p)| p.clone()).collect(),
        dir: shadows.dir.clone(),
    };
    let (changed, why) = compare_with_parent(input, &shadows, &new);
    let record = changed.as_ref().map(|(ranges, old)| ChangeSourceRecord {
        kind: "reflink".into(),
        detail: format!(
            "shadow {} against {}: {} changed range(s), {} bytes",
            name_of(old),
            name_of(&pending.keep),
            ranges.as_slice().len(),
            ranges.total()
        ),
    });
    Plan {
        changed: changed.map(|(ranges, _)| ranges),
        record,
        scan_reason: why,
        shadow: Some(stamp),
        read_from: Some(new),
        pending: Some(Box::new(pending)),
        ..Plan::scan(None)
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// What changed since the parent's shadow, with that shadow; or why that
/// cannot be known (then every chunk is read).
fn compare_with_parent(
    input: &Input<'_>,
    shadows: &Shadows,
    new: &Path,
) -> (Option<(Ranges, PathBuf)>, Option<String>) {
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
    let Some((_, old)) = shadows.committed.iter().find(|(id, _)| *id == parent.id) else {
        let had: Vec<String> = shadows
            .committed
            .iter()
            .map(|(id, _)| id.prefix(8))
            .collect();
        return (
            None,
            Some(if had.is_empty() {
                format!(
                    "no reflink shadow of parent {} (the first backup with reflink makes one)",
                    parent.short_id()
                )
            } else {
                format!(
                    "the reflink shadow is of snapshot {}, not of parent {}",
                    had.join(", "),
                    parent.short_id()
                )
            }),
        );
    };
    let size = input.image.size();
    if let Err(why) = still_as_made(old, parent, input.image) {
        return (
            None,
            Some(format!(
                "the shadow of parent {} is not to be trusted: {why}",
                parent.short_id()
            )),
        );
    }
    match stamp_of(old) {
        Ok(s) if s.size == size => {}
        Ok(s) => {
            return (
                None,
                Some(format!(
                    "the shadow of parent {} is {} bytes, the image {size}",
                    parent.short_id(),
                    s.size
                )),
            );
        }
        Err(e) => {
            return (
                None,
                Some(format!(
                    "cannot inspect the shadow of parent {}: {e}",
                    parent.short_id()
                )),
            );
        }
    }
    match shadow::changed_between(old, new, size) {
        Ok(ranges) => (Some((Ranges::new(ranges), old.clone())), None),
        Err(e) => (None, Some(format!("cannot compare the shadows: {e}"))),
    }
}

/// A file's stamp, read without following a last symbolic link.
fn stamp_of(path: &Path) -> std::io::Result<ShadowStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok(ShadowStamp {
        inode: m.ino(),
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Whether the parent's shadow is still the file the parent's backup made:
/// a regular file with one link, not the image, with the recorded stamp.
fn still_as_made(old: &Path, parent: &Snapshot, image: &Source) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(recorded) = parent.shadow else {
        return Err("its snapshot recorded no shadow".into());
    };
    let m = std::fs::symlink_metadata(old).map_err(|e| e.to_string())?;
    if !m.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    if m.nlink() != 1 {
        return Err(format!("it has {} links", m.nlink()));
    }
    let image_meta = std::fs::metadata(image.path()).map_err(|e| e.to_string())?;
    if (m.dev(), m.ino()) == (image_meta.dev(), image_meta.ino()) {
        return Err("it is the image itself".into());
    }
    let now = stamp_of(old).map_err(|e| e.to_string())?;
    if now != recorded {
        return Err("it was replaced or written since it was made".into());
    }
    Ok(())
}

/// A new shadow waiting for its snapshot's manifest.
pub struct Pending {
    /// The temporary shadow, read by this backup.
    new: PathBuf,
    /// Its name once committed.
    keep: PathBuf,
    /// This repository's earlier shadows of the image, removed after.
    old: Vec<PathBuf>,
    dir: PathBuf,
}

impl Pending {
    /// Keeps the new shadow and removes the old ones: call only once the
    /// manifest is durable.
    pub fn commit(mut self) -> Result<()> {
        let new = std::mem::take(&mut self.new);
        std::fs::rename(&new, &self.keep)
            .map_err(|e| crate::error::Error::io("rename the new shadow", &new, e))?;
        sync_dir(&self.dir)?;
        for old in &self.old {
            let _ = std::fs::remove_file(old);
        }
        sync_dir(&self.dir)
    }
}

impl Drop for Pending {
    /// A backup that did not commit leaves no new shadow.
    fn drop(&mut self) {
        if !self.new.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.new);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| crate::error::Error::io("sync the folder", dir, e))
}

/// Removes this repository's shadows of `image` (`--change-source scan`),
/// once the manifest is durable: nothing pins the image's blocks any more.
pub struct Forget {
    shadows: Vec<PathBuf>,
}

impl Forget {
    pub fn of(image: &Source, repo_id: &str) -> Option<Forget> {
        let shadows = Shadows::find(image.path(), repo_id)?;
        let all: Vec<PathBuf> = shadows
            .committed
            .into_iter()
            .map(|(_, p)| p)
            .chain(shadows.temporary)
            .collect();
        (!all.is_empty()).then_some(Forget { shadows: all })
    }

    pub fn commit(self) {
        for s in &self.shadows {
            let _ = std::fs::remove_file(s);
        }
    }
}
