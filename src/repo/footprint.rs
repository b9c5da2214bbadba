//! What a repository occupies on a local filesystem, by identity (device
//! and inode numbers), and how to tell a folder that holds a repository.
//! The engine hands this to the disk layer so that a restore never writes
//! into a repository, whichever path, link or bind mount reaches it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::names::{CONFIG, Folder};

/// Every file and folder of a local repository, as (device, inode).
pub struct Footprint {
    pub root: PathBuf,
    pub files: HashSet<(u64, u64)>,
    pub folders: HashSet<(u64, u64)>,
}

impl Repository {
    /// Walks the repository's folder (a few thousand files at most),
    /// following no symbolic link: they lead out of it.
    pub fn footprint(&self) -> Result<Footprint> {
        let Some(root) = self.backend().local_root() else {
            // Stored elsewhere: nothing a restore could write into.
            return Ok(Footprint {
                root: PathBuf::from(self.location()),
                files: HashSet::new(),
                folders: HashSet::new(),
            });
        };
        let root = crate::repo::absolute(root);
        let meta = std::fs::metadata(&root).map_err(|e| Error::io("inspect", &root, e))?;
        let mut folders = HashSet::from([(meta.dev(), meta.ino())]);
        let mut files = HashSet::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            // A folder this process cannot list is one nothing is read
            // from either; the folders above it stay in the footprint.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let id = (meta.dev(), meta.ino());
                if meta.is_dir() {
                    if folders.insert(id) {
                        stack.push(entry.path());
                    }
                } else {
                    files.insert(id);
                }
            }
        }
        Ok(Footprint {
            root,
            files,
            folders,
        })
    }
}

/// Whether `dir` holds a platter repository: a config file beside the
/// repository's folders. A damaged config still counts; a file merely
/// named `config` does not.
pub fn holds_repository(dir: &Path) -> bool {
    dir.join(CONFIG)
        .symlink_metadata()
        .is_ok_and(|m| m.is_file())
        && [Folder::Data, Folder::Index, Folder::Maps, Folder::Snapshots]
            .iter()
            .all(|f| dir.join(f.as_str()).is_dir())
}

/// The platter repository that `path` (an existing folder, or a file in
/// one) lies in, if any: the nearest folder above it, itself included,
/// that holds one. Symbolic links are resolved first.
pub fn repository_around(path: &Path) -> Option<std::path::PathBuf> {
    let real = path.canonicalize().ok()?;
    real.ancestors()
        .find(|dir| holds_repository(dir))
        .map(Path::to_path_buf)
}
