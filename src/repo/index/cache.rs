//! The local index cache: the repository's index files merged into sorted
//! tables (see `table`) in a folder of this host, so that a command looks
//! chunks up in them instead of loading every index file.
//!
//! The folder is `$PLATTER_CACHE_DIR`, else `$XDG_CACHE_HOME/platter`,
//! else `~/.cache/platter` (`/var/cache/platter` for root without a
//! home; scheduled jobs use systemd's cache folder, `%C/platter`), one
//! subfolder per repository (its id and a
//! hash of where it is: a copy made with `cp` keeps the id). It holds
//! tables and `cache.json`, which names each table with the exact list of
//! index files (name, length and store time) it was built from. Every open
//! lists the repository's index files and checks that list: a table whose
//! files are no longer all there, as they were (after prune, repair, or in a
//! repository that is not the one the cache was built for), is dropped and
//! built again; index files no table covers yet become a new small table
//! (a layer), and layers are merged when there are more than
//! `MAX_LAYERS`, into the first table once they hold a quarter of its
//! entries. Building sorts in runs of `RUN_ENTRIES` entries written to
//! the cache folder, so memory stays flat however large the index is. An
//! index file adds its entries only once all of it has read.
//! `unsealed.list` (see `repo::unsealed`) lives in the same folder.
//!
//! The cache holds chunk ids, pack ids and places, never chunk data (in
//! an encrypted repository chunk ids are keyed hashes). Without a usable
//! cache folder, tables are built in a private temporary folder that is
//! removed at once (the mappings keep them until the command ends).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(test)]
use crate::codec::ChunkId;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::backend::{Backend, each_at_once};
use crate::repo::index::file::read_entries;
use crate::repo::index::sorted_file::Opening;
use crate::repo::index::table::{Table, TableWriter};
use crate::repo::pack::PackEntry;
use crate::repo::{Folder, PackId, Repository, id_files_in};

const MANIFEST: &str = "cache.json";
const MANIFEST_VERSION: u32 = 1;
/// Entries sorted in memory at once while building (about 32 MiB).
pub(super) const RUN_ENTRIES: usize = 1 << 18;
/// Index files up to this length are read whole, several at once.
const READ_AT_ONCE: u64 = 1 << 20;
/// Layers kept before they are merged.
const MAX_LAYERS: usize = 8;
/// Files of other processes older than this that no manifest names are
/// leftovers (a process killed while building).
const LEFTOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Manifest {
    version: u32,
    tables: Vec<Covered>,
}

/// A table and the index files it holds.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Covered {
    table: String,
    files: Vec<(String, Stamp)>,
}

/// What an index file looked like when a table was built from it: its
/// length and the store's time of it (nanoseconds since 1970, 0 when the
/// store gives none). A file rewritten in place is read again.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug,
)]
struct Stamp {
    len: u64,
    modified_ns: u64,
}

impl Stamp {
    fn of(f: &crate::repo::backend::Listed) -> Stamp {
        let modified_ns = (f.modified)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Stamp {
            len: f.len,
            modified_ns,
        }
    }
}

/// The tables that hold the repository's index, first the largest, and
/// the index files that could not be read (with why).
pub struct Opened {
    pub tables: Vec<Arc<Table>>,
    pub damaged: Vec<(String, Error)>,
}

/// The cache folder of `repo` on this host, and whether it is a private
/// temporary one.
fn folder(repo: &Repository) -> (PathBuf, bool) {
    host_folder(&repo.config().repo_id, repo.backend())
}

/// The cache folder on this host of the repository `backend` holds, of
/// id `repo_id` (made if missing), and whether it is a private temporary
/// one (not made yet).
pub fn host_folder(repo_id: &str, backend: &dyn Backend) -> (PathBuf, bool) {
    let root = std::env::var_os("PLATTER_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("platter"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join(".cache/platter"))
        })
        // A system service without a home folder.
        .or_else(|| {
            nix::unistd::geteuid()
                .is_root()
                .then(|| PathBuf::from("/var/cache/platter"))
        });
    // A local repository is named by its real path: `-r R` and `-r ./R`
    // share a cache.
    let local = (backend.local_root()).and_then(|r| std::fs::canonicalize(r).ok());
    let location = match &local {
        Some(path) => path.to_string_lossy().into_owned(),
        None => backend.location(),
    };
    let place = blake3::hash(location.as_bytes()).to_hex();
    let name = format!("{repo_id}-{}", &place[..12]);
    match root.map(|r| r.join(&name)) {
        // Never inside the repository itself: looked at before anything
        // is made there.
        Some(dir)
            if !local.as_ref().is_some_and(|r| may_be_inside(&dir, r))
                && make_private_dir(&dir).is_ok()
                && !std::fs::canonicalize(&dir)
                    .is_ok_and(|d| local.as_ref().is_some_and(|r| d.starts_with(r))) =>
        {
            (dir, false)
        }
        _ => (temporary_folder(), true),
    }
}

/// Whether `path` (which may not exist yet) may lie in folder `inside`
/// (canonical): where its deepest existing ancestor is, or anywhere when
/// it climbs with `..`.
fn may_be_inside(path: &Path, inside: &Path) -> bool {
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return true;
    }
    path.ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find_map(|a| std::fs::canonicalize(a).ok())
        .is_none_or(|a| a.starts_with(inside))
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A folder that is not ours (or not a folder) is not used.
    let meta = std::fs::symlink_metadata(dir)?;
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::other("not a folder of this user"));
    }
    Ok(())
}

/// Opens the cache of `repo`, bringing it up to date with the index files
/// the repository holds now.
pub fn open(repo: &Repository, fresh: bool) -> Result<Opened> {
    let (dir, temporary) = folder(repo);
    if !temporary {
        let opened = match open_in(repo, &dir, fresh) {
            // A damaged table (found while merging it) is built again.
            Err(e) if e.kind() == ErrorKind::Corrupt && !fresh => open_in(repo, &dir, true),
            other => other,
        };
        match opened {
            // The cache folder's disk may be full or failing: the index
            // is built where it can be, as below.
            Err(e) if e.kind() == ErrorKind::Io && !e.is_transient() => {}
            done => return done,
        }
    }
    let temp = temporary_folder();
    make_private_dir(&temp).map_err(|e| Error::io("create", &temp, e))?;
    let result = open_in(repo, &temp, true);
    // The tables stay mapped; nothing is left behind.
    let _ = std::fs::remove_dir_all(&temp);
    result
}

/// A private folder for sorting on disk (`idset`): the cache folder of
/// `repo` where it can be used, else a new temporary one. The second
/// value says whether the folder is temporary (the caller removes it).
pub fn scratch_folder(repo: &Repository) -> Result<(PathBuf, bool)> {
    let (dir, temporary) = folder(repo);
    if temporary {
        make_private_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
    }
    Ok((dir, temporary))
}

fn temporary_folder() -> PathBuf {
    std::env::temp_dir().join(format!(
        "platter-cache-{}-{}",
        std::process::id(),
        crate::repo::id::random_hex(8)
    ))
}

/// Opens the cache in `dir`; with `fresh`, every index file is read again
/// and the tables built from them replace the cache's.
fn open_in(repo: &Repository, dir: &Path, fresh: bool) -> Result<Opened> {
    let listed: HashMap<String, Stamp> = id_files_in(repo.backend(), Folder::Index)?
        .into_iter()
        .map(|f| (Folder::Index.file(&f.name), Stamp::of(&f)))
        .collect();
    let old = read_manifest(dir);
    // Every table's files must all be there, as they were.
    let still = old
        .tables
        .iter()
        .all(|t| (t.files.iter()).all(|(name, stamp)| listed.get(name) == Some(stamp)));
    let mut kept: Vec<(Covered, Arc<Table>)> = Vec::new();
    if still && !fresh {
        for covered in &old.tables {
            match Table::open(&dir.join(&covered.table)) {
                Ok(t) => kept.push((covered.clone(), Arc::new(t))),
                Err(_) => {
                    kept.clear();
                    break;
                }
            }
        }
    }
    let known: std::collections::HashSet<&String> = kept
        .iter()
        .flat_map(|(c, _)| c.files.iter().map(|(n, _)| n))
        .collect();
    let mut new: Vec<(String, Stamp)> = listed
        .iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(n, l)| (n.clone(), *l))
        .collect();
    new.sort();
    let mut damaged = Vec::new();
    let mut changed = kept.len() != old.tables.len();
    if !new.is_empty() {
        let (path, files) = build(repo, dir, &new, &mut damaged)?;
        if files.is_empty() {
            // Every new file was damaged: a table of no file would never
            // be let go by a manifest.
            let _ = std::fs::remove_file(&path);
        } else {
            let table = Arc::new(Table::open(&path)?);
            kept.push((
                Covered {
                    table: file_name(&path),
                    files,
                },
                table,
            ));
            changed = true;
        }
    }
    if needs_merge(&kept) {
        kept = merge_layers(dir, kept)?;
        changed = true;
    }
    if changed {
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            tables: kept.iter().map(|(c, _)| c.clone()).collect(),
        };
        // Without its manifest the cache is only slower next time.
        if write_manifest(dir, &manifest).is_ok() {
            remove_leftovers(dir, &old, &manifest);
        }
    }
    Ok(Opened {
        tables: kept.into_iter().map(|(_, t)| t).collect(),
        damaged,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The most a manifest may hold: about 150 bytes per index file, for a
/// million of them.
const MANIFEST_MAX: u64 = 256 << 20;

fn read_manifest(dir: &Path) -> Manifest {
    let read = || -> Option<Vec<u8>> {
        use std::io::Read;
        let file = super::table::open_regular(&dir.join(MANIFEST)).ok()?;
        let mut bytes = Vec::new();
        file.take(MANIFEST_MAX).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    };
    read()
        .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
        .filter(|m| m.version == MANIFEST_VERSION)
        .unwrap_or_default()
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let tmp = dir.join(format!(
        "{MANIFEST}.{}-{}",
        std::process::id(),
        crate::repo::id::random_hex(4)
    ));
    let bytes = serde_json::to_vec(manifest)
        .map_err(|e| Error::internal(format!("cannot encode the cache manifest: {e}")))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST))
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", &dir.join(MANIFEST), e)
    })
}

/// Removes the tables `old` named and `new` does not (a process that
/// still maps one keeps its pages), and files no manifest names that are
/// old enough that no process can be building them still (left by a
/// process killed while building).
fn remove_leftovers(dir: &Path, old: &Manifest, new: &Manifest) {
    let named: std::collections::HashSet<&str> =
        new.tables.iter().map(|t| t.table.as_str()).collect();
    for t in old
        .tables
        .iter()
        .filter(|t| !named.contains(t.table.as_str()))
    {
        let _ = std::fs::remove_file(dir.join(&t.table));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == MANIFEST || name == crate::repo::unsealed::LIST || named.contains(name.as_str())
        {
            continue;
        }
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > LEFTOVER_AFTER);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn new_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("{kind}-{}", crate::repo::id::random_hex(8)))
}

/// Builds one table from index files `files` (name, length); returns it
/// and the files it holds. Files that cannot be read are added to
/// `damaged`, and those gone meanwhile are left out.
fn build(
    repo: &Repository,
    dir: &Path,
    files: &[(String, Stamp)],
    damaged: &mut Vec<(String, Error)>,
) -> Result<(PathBuf, Vec<(String, Stamp)>)> {
    let mut runs: Vec<PathBuf> = Vec::new();
    let cleanup = |runs: &[PathBuf]| {
        for r in runs {
            let _ = std::fs::remove_file(r);
        }
    };
    let mut buffer: Vec<(PackId, PackEntry)> = Vec::new();
    let mut covered = Vec::new();
    // A run that cannot be written is this host's failure, not damage of
    // the index file being read: it ends the build.
    let cache_failed = std::cell::Cell::new(false);
    let spill = |buffer: &mut Vec<(PackId, PackEntry)>, runs: &mut Vec<PathBuf>| {
        if buffer.len() >= RUN_ENTRIES {
            let run = write_run(dir, buffer).inspect_err(|_| cache_failed.set(true))?;
            runs.push(run);
        }
        Ok::<(), Error>(())
    };
    let batch = repo.backend().concurrency().max(1) * 2;
    for group in files.chunks(batch) {
        // Small files are read at once, a batch in parallel; a large one
        // (after prune) is streamed into the runs, one at a time.
        let read = each_at_once(repo.backend(), group, |(name, stamp)| {
            if stamp.len > READ_AT_ONCE {
                return Ok(None);
            }
            let mut entries = Vec::new();
            let read = read_entries(
                repo.backend(),
                Opening::With(repo.sealing()),
                name,
                &mut |p, e| {
                    entries.push((*p, e));
                    Ok(())
                },
            );
            read.map(|()| Some(entries))
        });
        for ((name, len), found) in group.iter().zip(read) {
            let found = match found {
                Ok(Some(entries)) => entries.into_iter().try_for_each(|entry| {
                    buffer.push(entry);
                    spill(&mut buffer, &mut runs)
                }),
                Ok(None) => {
                    // A streamed file's entries count only once all of it
                    // has read: until then they go to runs of their own.
                    if !buffer.is_empty() {
                        match write_run(dir, &mut buffer) {
                            Ok(run) => runs.push(run),
                            Err(e) => {
                                cleanup(&runs);
                                return Err(e);
                            }
                        }
                    }
                    let mut own = Vec::new();
                    let read = read_entries(
                        repo.backend(),
                        Opening::With(repo.sealing()),
                        name,
                        &mut |p, e| {
                            buffer.push((*p, e));
                            spill(&mut buffer, &mut own)
                        },
                    );
                    if read.is_err() {
                        buffer.clear();
                        cleanup(&own);
                    } else {
                        runs.extend(own);
                    }
                    read
                }
                Err(e) => Err(e),
            };
            match found {
                Ok(()) => covered.push((name.clone(), *len)),
                Err(e) if e.is_transient() || cache_failed.get() => {
                    cleanup(&runs);
                    return Err(e);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => damaged.push((name.clone(), e)),
            }
        }
    }
    let result = if runs.is_empty() {
        write_run(dir, &mut buffer)
    } else {
        match write_run(dir, &mut buffer) {
            Ok(last) => {
                runs.push(last);
                merge_files(dir, &runs)
            }
            Err(e) => Err(e),
        }
    };
    cleanup(&runs);
    Ok((result?, covered))
}

/// Sorts `buffer` into a new table and empties it. Copies of one chunk
/// are ordered by pack and offset (in place: no second buffer).
pub(super) fn write_run(dir: &Path, buffer: &mut Vec<(PackId, PackEntry)>) -> Result<PathBuf> {
    let room = |e: Error| {
        e.hint(format!(
            "sorting the index needs room in {} (the cache folder): free space there, or point \
             PLATTER_CACHE_DIR at a folder with room",
            dir.display()
        ))
    };
    buffer.sort_unstable_by_key(|a| (a.1.id, a.0, a.1.offset));
    let mut w = TableWriter::create(&new_path(dir, "table")).map_err(room)?;
    for (pack, e) in buffer.iter() {
        if let Err(err) = w.push(pack, e) {
            w.abandon();
            return Err(room(err));
        }
    }
    buffer.clear();
    w.finish().map_err(room)
}

/// Merges tables `paths` into a new one (copies of one chunk in the order
/// of the tables).
pub(super) fn merge_files(dir: &Path, paths: &[PathBuf]) -> Result<PathBuf> {
    let tables = paths
        .iter()
        .map(|p| Table::open(p).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    merge_tables(dir, &tables)
}

fn merge_tables(dir: &Path, tables: &[Arc<Table>]) -> Result<PathBuf> {
    let mut w = TableWriter::create(&new_path(dir, "table"))?;
    let result = merge(tables, |pack, e| w.push(pack, e));
    match result {
        Ok(()) => w.finish(),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

/// Hands `each` every entry of `tables` in chunk id order (ties in the
/// order of the tables).
pub fn merge(
    tables: &[Arc<Table>],
    mut each: impl FnMut(&PackId, &PackEntry) -> Result<()>,
) -> Result<()> {
    // Read with pread, a little of each table at a time: dozens of runs
    // are merged at once, and a walk through each one's mapping would keep
    // a large page-cache folio of each resident.
    let mut iters: Vec<_> = tables.iter().map(|t| t.read_all()).collect();
    let mut heap = BinaryHeap::new();
    let mut heads: Vec<Option<(u32, PackEntry)>> = Vec::with_capacity(iters.len());
    for (i, it) in iters.iter_mut().enumerate() {
        let head = it.next().transpose()?;
        if let Some((_, e)) = &head {
            heap.push(Reverse((e.id, i)));
        }
        heads.push(head);
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        if let Some((pack, e)) = heads[i].take() {
            each(&tables[i].packs()[pack as usize].0, &e)?;
        }
        heads[i] = iters[i].next().transpose()?;
        if let Some((_, e)) = &heads[i] {
            heap.push(Reverse((e.id, i)));
        }
    }
    Ok(())
}

/// Whether the layers are too many, or large enough to merge into the
/// first table.
fn needs_merge(kept: &[(Covered, Arc<Table>)]) -> bool {
    let layers = kept.len().saturating_sub(1);
    let first = kept.first().map_or(0, |(_, t)| t.entries());
    let in_layers: u64 = kept.iter().skip(1).map(|(_, t)| t.entries()).sum();
    layers > MAX_LAYERS || (layers > 0 && in_layers.saturating_mul(4) >= first)
}

/// Merges the layers (and the first table too when they have grown to a
/// quarter of it).
fn merge_layers(
    dir: &Path,
    kept: Vec<(Covered, Arc<Table>)>,
) -> Result<Vec<(Covered, Arc<Table>)>> {
    let first = kept.first().map_or(0, |(_, t)| t.entries());
    let in_layers: u64 = kept.iter().skip(1).map(|(_, t)| t.entries()).sum();
    let from = if in_layers.saturating_mul(4) >= first {
        0
    } else {
        1
    };
    let (mut out, merging): (Vec<_>, Vec<_>) =
        kept.into_iter().enumerate().partition(|(i, _)| *i < from);
    let tables: Vec<Arc<Table>> = merging.iter().map(|(_, (_, t))| t.clone()).collect();
    let path = merge_tables(dir, &tables)?;
    // The merged tables go (their mappings stay valid); one that an old
    // manifest named goes again harmlessly when the manifest changes.
    for (_, (c, _)) in &merging {
        let _ = std::fs::remove_file(dir.join(&c.table));
    }
    let files = merging
        .iter()
        .flat_map(|(_, (c, _))| c.files.iter().cloned())
        .collect();
    out.push((
        0,
        (
            Covered {
                table: file_name(&path),
                files,
            },
            Arc::new(Table::open(&path)?),
        ),
    ));
    Ok(out.into_iter().map(|(_, k)| k).collect())
}

/// Chunk ids in order, for tests of the merge.
#[cfg(test)]
fn ids(tables: &[Arc<Table>]) -> Vec<ChunkId> {
    let mut out = Vec::new();
    merge(tables, |_, e| {
        out.push(e.id);
        Ok(())
    })
    .unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoded;

    fn entry(n: u32) -> PackEntry {
        PackEntry {
            id: ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes()),
            encoded: Encoded::Raw,
            offset: u64::from(n),
            stored_len: 1,
            plain_len: 1,
            crc: 0,
            base: None,
        }
    }

    #[test]
    fn runs_merge_into_one_sorted_table_keeping_every_copy() {
        let dir = tempfile::tempdir().unwrap();
        let pack = PackId::from_bytes([3; 32]);
        let mut a: Vec<_> = (0..500).map(|n| (pack, entry(n))).collect();
        let mut b: Vec<_> = (400..900).map(|n| (pack, entry(n))).collect();
        let runs = vec![
            write_run(dir.path(), &mut a).unwrap(),
            write_run(dir.path(), &mut b).unwrap(),
        ];
        let merged = Table::open(&merge_files(dir.path(), &runs).unwrap()).unwrap();
        assert_eq!(merged.entries(), 1000);
        assert!(merged.has_doubles());
        let all = ids(&[Arc::new(merged)]);
        assert!(all.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn a_damaged_large_index_file_adds_nothing_and_the_cache_does_not_grow() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            &dir.path().join("repo"),
            1 << 20,
            crate::codec::Compression::Lz4,
            crate::repo::NewKey::Plain,
        )
        .unwrap();
        let pack = PackId::from_bytes([3; 32]);
        // Streamed (over READ_AT_ONCE), in five blocks: damaged in the
        // last, after four blocks of entries were read.
        let large = repo
            .write_index(&[(pack, (0..20_000).map(entry).collect())])
            .unwrap();
        let small = repo
            .write_index(&[(pack, (20_000..20_010).map(entry).collect())])
            .unwrap();
        let path = dir
            .path()
            .join("repo")
            .join(crate::repo::names::index_name(&large));
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 > READ_AT_ONCE);
        let at = bytes.len() - 300;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let cache = folder(&repo).0;
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let opened = open(&repo, false).unwrap();
            assert_eq!(opened.damaged.len(), 1);
            let held: u64 = opened.tables.iter().map(|t| t.entries()).sum();
            assert_eq!(held, 10, "entries of the damaged file were kept");
            let index = crate::repo::index::Index::from_tables(opened.tables);
            assert!(
                index.get(&entry(0).id).is_none(),
                "an entry of the damaged file"
            );
            assert!(index.get(&entry(20_005).id).is_some());
            let size: u64 = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            sizes.push(size);
        }
        assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
        let _ = std::fs::remove_dir_all(&cache);
        let _ = small;
    }
}
