//! Finding repositories on the attached disks without writing to them:
//! each filesystem's device is marked read-only in the kernel first, and
//! mounted read-only without journal replay (ext4 `noload`, xfs
//! `norecovery`, btrfs `rescue=nologreplay`). A repository is looked for
//! at the top of each filesystem and a few folders down.
//!
//! Once the user has chosen, `keep_only` unmounts every other filesystem
//! and makes its device writable again, so no target is mounted.

use std::fs;
use std::path::{Path, PathBuf};

use super::disks::Disk;
use crate::disk::layout::{Content, PROBE_LEN, probe_content};
use crate::disk::{ReadOnlyMount, kernel_mounts, set_read_only};
use crate::interrupt::{Registration, call_on_interrupt};
use crate::repo::footprint::holds_repository;

/// Where discovery mounts filesystems.
const MOUNTS: &str = "/run/rescue/fs";
/// Folders below a filesystem's top that are searched.
const DEPTH: usize = 3;
/// Folders looked into per filesystem at most (a full disk of photos
/// must not keep the menu waiting).
const FOLDERS: usize = 2000;

/// A repository found on a disk.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where it is now (under the discovery mount).
    pub path: PathBuf,
    /// Its folder inside its filesystem ("/backups/repo").
    pub inner: String,
    /// The device holding the filesystem (/dev/sdb1).
    pub device: PathBuf,
    /// The disk that device is on (sdb): never a target.
    pub disk: String,
    pub fstype: String,
    pub label: Option<String>,
}

struct Mounted {
    mount: ReadOnlyMount,
    device: PathBuf,
    /// Makes the device writable again on Ctrl-C or SIGTERM (a menu
    /// interrupted at a question must not leave a target read-only).
    _writable_again: Registration,
}

/// The filesystems discovery mounted; unmounted (and their devices made
/// writable again) when dropped.
#[derive(Default)]
pub struct Discovery {
    mounted: Vec<Mounted>,
    /// Findings a person should see: filesystems that could not be read.
    pub notes: Vec<String>,
    /// Disks with a filesystem that could not be searched: one may hold a
    /// repository, so the menu says so beside them as targets.
    pub unreadable: Vec<String>,
}

impl Discovery {
    /// Mounts every filesystem this kernel can read on `disks` (not the
    /// medium, not CD drives) and lists the repositories on them.
    pub fn run(disks: &[Disk]) -> (Discovery, Vec<Found>) {
        let mut discovery = Discovery::default();
        let mut found = Vec::new();
        let _ = fs::create_dir_all(MOUNTS);
        for disk in disks.iter().filter(|d| !d.is_medium && !d.is_cd_drive()) {
            let devices: Vec<String> = if disk.partitions.is_empty() {
                vec![disk.name.clone()]
            } else {
                disk.partitions.clone()
            };
            for name in devices {
                let device = Path::new("/dev").join(&name);
                let Some(content) = probe_device(&device) else {
                    continue;
                };
                let fstype = match content.fstype.as_str() {
                    "ntfs" => "ntfs3".to_string(),
                    other => other.to_string(),
                };
                if ![
                    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs3",
                ]
                .contains(&fstype.as_str())
                {
                    continue;
                }
                if !kernel_mounts(&fstype) {
                    discovery.notes.push(format!(
                        "{name}: {fstype} is not readable by this medium's kernel"
                    ));
                    discovery.unreadable.push(disk.name.clone());
                    continue;
                }
                let point = Path::new(MOUNTS).join(&name);
                let _ = fs::create_dir_all(&point);
                if let Err(e) = mark_read_only(&device, true) {
                    discovery.notes.push(format!(
                        "{name}: not searched (cannot make it read-only: {e})"
                    ));
                    continue;
                }
                let undo = device.clone();
                let writable_again =
                    call_on_interrupt(move || mark_read_only(&undo, false).is_ok());
                match ReadOnlyMount::mount(&device, &point, &fstype) {
                    Ok(mount) => {
                        for (path, inner) in repositories_in(mount.point()) {
                            found.push(Found {
                                path,
                                inner,
                                device: device.clone(),
                                disk: disk.name.clone(),
                                fstype: fstype.clone(),
                                label: content.label.clone(),
                            });
                        }
                        discovery.mounted.push(Mounted {
                            mount,
                            device: device.clone(),
                            _writable_again: writable_again,
                        });
                    }
                    Err(e) => {
                        let _ = mark_read_only(&device, false);
                        discovery.notes.push(format!("{name}: {}", e.message()));
                        discovery.unreadable.push(disk.name.clone());
                    }
                }
            }
        }
        (discovery, found)
    }

    /// Unmounts every filesystem but the one on `device` (the chosen
    /// repository's), and makes their devices writable again.
    pub fn keep_only(&mut self, device: Option<&Path>) {
        let (keep, drop): (Vec<Mounted>, Vec<Mounted>) = std::mem::take(&mut self.mounted)
            .into_iter()
            .partition(|m| Some(m.device.as_path()) == device);
        for m in drop {
            release(m);
        }
        self.mounted = keep;
    }
}

fn release(m: Mounted) {
    drop(m.mount);
    let _ = mark_read_only(&m.device, false);
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for m in std::mem::take(&mut self.mounted) {
            release(m);
        }
    }
}

fn mark_read_only(device: &Path, read_only: bool) -> std::io::Result<()> {
    let file = fs::File::open(device)?;
    set_read_only(&file, read_only).map_err(std::io::Error::from)
}

fn probe_device(device: &Path) -> Option<Content> {
    use std::io::Read;
    let file = fs::File::open(device).ok()?;
    let mut head = Vec::with_capacity(PROBE_LEN);
    file.take(PROBE_LEN as u64).read_to_end(&mut head).ok()?;
    probe_content(&head)
}

/// Repositories at `top` and up to [`DEPTH`] folders below, with their
/// paths inside the filesystem. Symbolic links are not followed.
fn repositories_in(top: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut queue = vec![(top.to_path_buf(), 0usize)];
    let mut looked = 0;
    while let Some((dir, depth)) = queue.pop() {
        looked += 1;
        if looked > FOLDERS {
            break;
        }
        if holds_repository(&dir) {
            let inner = dir
                .strip_prefix(top)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_default();
            found.push((dir, inner));
            continue;
        }
        if depth == DEPTH {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut subs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subs.sort();
        subs.reverse();
        queue.extend(subs.into_iter().map(|s| (s, depth + 1)));
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_found_a_few_folders_down_and_not_inside_each_other() {
        let top = tempfile::tempdir().unwrap();
        let make = |rel: &str| {
            let dir = top.path().join(rel);
            for sub in ["data", "index", "maps", "snapshots"] {
                fs::create_dir_all(dir.join(sub)).unwrap();
            }
            fs::write(dir.join("config"), b"{}").unwrap();
        };
        make("backups/laptop");
        make("a/b/c/too-deep");
        make("repo");
        make("repo/data/nested");
        let found: Vec<String> = repositories_in(top.path())
            .into_iter()
            .map(|(_, inner)| inner)
            .collect();
        assert_eq!(found, vec!["/backups/laptop", "/repo"]);
    }
}
