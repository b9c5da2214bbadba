//! The check, at every open of a repository whose config says it is not
//! encrypted, that it holds nothing only an encrypted repository has:
//! someone may have replaced the config to make new backups go in
//! unencrypted.
//!
//! Every manifest, index file, lock and map is looked at, so that planting
//! plain files in front of the sealed ones hides nothing. The names of
//! those this host found unsealed are kept in `unsealed.list` in the
//! repository's cache folder on this host (`index::cache`): each file's
//! head is read once per host, not at every open (25,000 reads at 10^4
//! snapshots). A file under a name not in the list is read; the list is
//! written only after a check that found nothing, and holds only what the
//! repository holds now. It is this host's own (a private folder): the
//! repository's writers cannot add to it. Where no cache folder can be
//! used, every file is read.

use std::collections::HashSet;
use std::path::Path;

use crate::error::Result;
use crate::repo::backend::{self, Backend};
use crate::repo::names::Folder;
use crate::repo::{map, pack, sealed};

pub(crate) const LIST: &str = "unsealed.list";
/// The most the list may hold (names of 80 bytes, a million of them).
const LIST_MAX: u64 = 80 << 20;

/// A file that only an encrypted repository has: anything in `keys/`, a
/// sealed manifest, index or lock file (unfinished writes included), a
/// sealed map, or, in a repository with no manifest, index file or map, a
/// sealed pack (the first of each `data/` folder).
pub fn sealed_evidence(backend: &dyn Backend, repo_id: &str) -> Result<Option<String>> {
    let names = |folder: &str| -> Result<Vec<String>> {
        let names = backend.list(folder)?;
        Ok(names.into_iter().map(|n| format!("{folder}/{n}")).collect())
    };
    // Every folder at once: a listing on a store far away takes tens of
    // milliseconds (about 45 ms on Garage).
    let folders = [
        Folder::Keys,
        Folder::Data,
        Folder::Snapshots,
        Folder::Index,
        Folder::Locks,
        Folder::Maps,
    ];
    let listed = backend::each_at_once(backend, &folders, |f| names(f.as_str()));
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut durable = false;
    for (folder, names) in folders.iter().zip(listed) {
        let names = names?;
        match folder {
            Folder::Keys => {
                if let Some(key) = names.into_iter().next() {
                    return Ok(Some(key));
                }
            }
            Folder::Data => dirs = names,
            _ => {
                // Locks come and go, and anyone can write one.
                durable |= *folder != Folder::Locks && !names.is_empty();
                files.extend(names);
            }
        }
    }
    // Packs are looked at only in a repository without manifests, index
    // files or maps: where those exist, every one is looked at, and a
    // repository that was encrypted has them all sealed (one able to
    // replace them all can replace packs too). A small read of a large
    // object is slow on some stores (about 45 ms on Garage).
    if !durable {
        for first in backend::each_at_once(backend, &dirs, |dir| names(dir)) {
            files.extend(first?.into_iter().min());
        }
    }
    let (dir, temporary) = crate::repo::index::cache::host_folder(repo_id, backend);
    let known = if temporary {
        HashSet::new()
    } else {
        read_list(&dir)
    };
    let new: Vec<&String> = files.iter().filter(|f| !known.contains(*f)).collect();
    let sealed = backend::each_at_once(backend, &new, |name| is_sealed(backend, name));
    if let Some((name, _)) = new.iter().zip(sealed).find(|(_, sealed)| *sealed) {
        return Ok(Some((*name).clone()));
    }
    if !temporary && (!new.is_empty() || known.len() != files.len()) {
        write_list(&dir, &files);
    }
    Ok(None)
}

/// Whether file `name` starts as a sealed file, pack or map does.
fn is_sealed(backend: &dyn Backend, name: &str) -> bool {
    let mut head = [0u8; map::HEADER_LEN as usize];
    // One request for the usual file, long enough for the whole head; a
    // shorter one is opened to learn its length.
    let n = if backend.read_at(name, &mut head, 0).is_ok() {
        head.len()
    } else {
        let Ok(file) = backend.open(name) else {
            return false;
        };
        let n = (file.len() as usize).min(head.len());
        if file.read_exact_at(&mut head[..n], 0).is_err() {
            return false;
        }
        n
    };
    sealed::is_sealed(&head[..n]) || pack::is_sealed(&head[..n]) || map::is_sealed(&head[..n])
}

/// The names in the list; none when it is missing or unreadable.
fn read_list(dir: &Path) -> HashSet<String> {
    let read = || -> Option<String> {
        use std::io::Read;
        let file = crate::repo::index::table::open_regular(&dir.join(LIST)).ok()?;
        let mut text = String::new();
        file.take(LIST_MAX).read_to_string(&mut text).ok()?;
        Some(text)
    };
    read()
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Replaces the list by `files` (a failure only costs reads next time).
fn write_list(dir: &Path, files: &[String]) {
    let tmp = dir.join(format!(
        "{LIST}.{}-{}",
        std::process::id(),
        crate::repo::id::random_hex(4)
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for f in files {
            writeln!(out, "{f}")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, dir.join(LIST))
    };
    if write().is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
