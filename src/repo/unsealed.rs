//! The check, at every open of a repository whose config says it is not
//! encrypted, that it holds nothing only an encrypted repository has:
//! someone may have replaced the config to make new backups go in
//! unencrypted.
//!
//! Every manifest, index file, lock and map is looked at, so that planting
//! plain files in front of the sealed ones hides nothing. The files this
//! host found unsealed are kept in `unsealed.list` in the repository's
//! cache folder on this host (`index::cache`), each by its name, length
//! and store time: each file's head is read once per host, not at every
//! open (25,000 reads at 10^4 snapshots). A file not in the list as it is
//! now (a new name, or another length or time) is read; the list is
//! written only after a check that found nothing, and holds only what the
//! repository holds now. It is this host's own (a private folder): the
//! repository's writers cannot add to it. Where no cache folder can be
//! used, every file is read.

use std::collections::HashSet;
use std::path::Path;

use crate::error::Result;
use crate::repo::backend::{self, Backend};
use crate::repo::names::Folder;
use crate::repo::{index, map, pack, sealed};

pub(crate) const LIST: &str = "unsealed.list";
/// The most of the list that is read (lines of about 100 bytes: 160,000
/// files); the files beyond are read again.
const LIST_MAX: u64 = 16 << 20;
/// The longest line of the list that is believed.
const LINE_MAX: usize = 512;

/// A file that only an encrypted repository has: anything in `keys/`, a
/// sealed manifest, index or lock file (unfinished writes included), a
/// sealed map, or, in a repository with no manifest, index file or map, a
/// sealed pack (the first of each `data/` folder).
pub fn sealed_evidence(backend: &dyn Backend, repo_id: &str) -> Result<Option<String>> {
    let names = |folder: &str| -> Result<Vec<String>> {
        let names = backend.list(folder)?;
        Ok(names.into_iter().map(|n| format!("{folder}/{n}")).collect())
    };
    // A file as the list knows it: its length and time, then its name.
    let stamped = |folder: &str| -> Result<Vec<String>> {
        Ok(backend
            .list_files(folder)?
            .into_iter()
            .map(|f| {
                let ns = (f.modified)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{} {ns} {folder}/{}", f.len, f.name)
            })
            .collect())
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
    let listed = backend::each_at_once(backend, &folders, |f| match f {
        Folder::Keys | Folder::Data => names(f.as_str()),
        _ => stamped(f.as_str()),
    });
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
        for first in backend::each_at_once(backend, &dirs, |dir| stamped(dir)) {
            files.extend(first?.into_iter().min_by(|a, b| name_of(a).cmp(name_of(b))));
        }
    }
    let (dir, temporary) = crate::repo::index::cache::host_folder(repo_id, backend);
    let known = if temporary {
        HashSet::new()
    } else {
        read_list(&dir)
    };
    let new: Vec<&String> = files.iter().filter(|f| !known.contains(*f)).collect();
    let sealed = backend::each_at_once(backend, &new, |f| is_sealed(backend, name_of(f)));
    if let Some((file, _)) = new.iter().zip(sealed).find(|(_, sealed)| *sealed) {
        return Ok(Some(name_of(file).to_string()));
    }
    if !temporary && (!new.is_empty() || known.len() != files.len()) {
        write_list(&dir, &files);
    }
    Ok(None)
}

/// The name in a line of the list ("LEN NS NAME").
fn name_of(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap_or(line)
}

/// Whether file `name` starts as a sealed file, pack, map or index file
/// (version 3, sealed a part at a time) does.
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
    let head = &head[..n];
    sealed::is_sealed(head)
        || pack::is_sealed(head)
        || map::is_sealed(head)
        || index::is_sealed(head)
}

/// The lines of the list, up to `LIST_MAX` bytes; none when it is
/// missing or unreadable. A line too long or not text is left out.
fn read_list(dir: &Path) -> HashSet<String> {
    use std::io::BufRead;
    let Ok(file) = crate::repo::index::table::open_regular(&dir.join(LIST)) else {
        return HashSet::new();
    };
    let mut lines = std::io::BufReader::new(std::io::Read::take(file, LIST_MAX));
    let mut known = HashSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return known,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') && line.len() <= LINE_MAX {
            line.pop();
            if let Ok(text) = std::str::from_utf8(&line) {
                known.insert(text.to_string());
            }
        }
    }
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
