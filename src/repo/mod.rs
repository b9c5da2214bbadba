//! The repository: where snapshots and their data live, and the rules that
//! keep it consistent (see docs/FORMAT.md for every byte).
//!
//! `Repository` opens or creates one, lists and resolves snapshots and
//! loads the index; `ChunkReader` reads chunks back. Writing a backup is
//! driven by the engine through `PackWriter`, `write_index`, `MapWriter`
//! and `commit_snapshot`, in that order, each durable before the next.

pub mod backend;
mod chunk_reader;
pub mod config;
pub(crate) mod envelope;
mod fields;
pub mod footprint;
mod id;
pub mod index;
mod init;
pub mod keys;
pub mod lock;
pub mod map;
pub mod names;
pub mod pack;
pub mod sealed;
pub mod snapshot;
pub mod test_result;
pub(crate) mod unsealed;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::codec::kdf::KdfParams;
use crate::codec::{MasterKey, Sealing};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use backend::{Backend, LocalBackend, SharedBackend};
use config::Config;
use index::Index;
use keys::PassphraseSource;

pub use chunk_reader::{BufPool, ChunkReader, PlainChunk, span_limit, spans};
pub use id::{IdBytes, IndexId, KeyId, LockId, PackId, SnapshotId, random_hex};
use names::{CONFIG, Folder, RESERVE, manifest_name};
use snapshot::Snapshot;

/// What a name found in one of the repository's folders is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileName {
    /// A repository file: 64 lower-case hex digits, as platter writes ids
    /// (in `data/xx/`, starting with that folder's two digits).
    Id(IdBytes),
    /// An unfinished write (`.tmp-...`), see `backend`.
    Unfinished,
    /// A pack id in the wrong `data/` folder: nothing finds it there.
    Misplaced,
    /// Anything else: not platter's.
    Foreign,
}

/// The one rule for names in `snapshots/`, `maps/`, `index/`, `locks/`,
/// `keys/` and `data/xx/` (`dir`): only an id names a repository file.
/// Readers skip every other name, verify lists them as leftovers (a
/// misplaced pack as damage), and prune leaves them alone: a file that is
/// not platter's may be someone's, and it costs prune nothing.
pub fn classify(dir: &str, file: &str) -> FileName {
    if file.starts_with(backend::TEMP_PREFIX) {
        return FileName::Unfinished;
    }
    let Some(id) = id::parse_hex_id(file) else {
        return FileName::Foreign;
    };
    match dir
        .strip_prefix(Folder::Data.as_str())
        .and_then(|d| d.strip_prefix('/'))
    {
        Some(folder) if !file.starts_with(folder) => FileName::Misplaced,
        _ => FileName::Id(id),
    }
}

/// The names in `folder` that are repository files (see `classify`),
/// sorted, as file names within it.
pub fn ids_in(backend: &dyn Backend, folder: Folder) -> Result<Vec<String>> {
    let mut names = backend.list(folder.as_str())?;
    names.retain(|file| matches!(classify(folder.as_str(), file), FileName::Id(_)));
    Ok(names)
}

/// `ids_in`, with each file's length and the store's time of it
/// (`Backend::list_files`).
pub fn id_files_in(backend: &dyn Backend, folder: Folder) -> Result<Vec<backend::Listed>> {
    let mut files = backend.list_files(folder.as_str())?;
    files.retain(|file| matches!(classify(folder.as_str(), &file.name), FileName::Id(_)));
    Ok(files)
}

const CONFIG_KIND: &str = "config";
pub const RESERVE_LEN: usize = 4 << 20;

pub struct Repository {
    backend: SharedBackend,
    config: Config,
    sealing: Sealing,
    /// The master key and the key file it was opened with (encrypted only).
    key: Option<(MasterKey, KeyId)>,
}

/// The key a new repository gets.
pub enum NewKey {
    Plain,
    /// Encrypted under `master` (fresh, or shared with another repository),
    /// with a first key file for `passphrase`.
    Encrypted {
        master: MasterKey,
        passphrase: Zeroizing<String>,
        kdf: KdfParams,
    },
}

/// A snapshot manifest that could not be read.
pub struct BrokenManifest {
    pub id: SnapshotId,
    pub name: String,
    pub error: Error,
}

impl Repository {
    /// Reads and checks a repository's config, and nothing else: no key
    /// is needed (for checking stored bytes without it).
    pub fn read_config(backend: &dyn Backend) -> Result<Config> {
        let bytes = match backend.read_whole(CONFIG) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound || e.os_code() == Some(libc::ENOTDIR) => {
                // In object storage, a missing bucket looks like a missing
                // config: a listing tells them apart.
                if backend.local_root().is_none()
                    && let Err(listed) = backend.list("")
                {
                    return Err(listed);
                }
                let why = match backend.local_root() {
                    Some(path) if path.is_dir() => {
                        "is not a platter repository (it has no config file)"
                    }
                    Some(path) if path.exists() => "is a file, not a platter repository",
                    Some(_) => "does not exist",
                    None => "is not a platter repository (it has no config file)",
                };
                return Err(Error::not_found(format!("{} {why}", backend.location()))
                    .hint("check --repo / PLATTER_REPO, or create one with `platter init`"));
            }
            Err(e) => return Err(e),
        };
        let what = backend.describe(CONFIG);
        let (config, version): (Config, u32) = envelope::open_versioned(
            CONFIG_KIND,
            config::FORMAT_VERSION..=config::FEATURES_FORMAT_VERSION,
            &bytes,
            &what,
        )?;
        config.validate(version)?;
        Ok(config)
    }

    /// Opens the repository in folder `path`; `passphrase` is asked only
    /// if it is encrypted.
    pub fn open(path: &Path, passphrase: &dyn PassphraseSource) -> Result<Repository> {
        Repository::open_in(Arc::new(LocalBackend::new(path)), passphrase)
    }

    /// Opens the repository `backend` holds.
    pub fn open_in(
        backend: SharedBackend,
        passphrase: &dyn PassphraseSource,
    ) -> Result<Repository> {
        let config = Repository::read_config(&*backend)?;
        let what = backend.describe(CONFIG);
        let (sealing, key) = if config.encryption.is_some() {
            let slots = keys::list(&*backend)?;
            let pass = passphrase.passphrase()?;
            let (master, slot) = keys::unlock(&*backend, &config.repo_id, slots, &pass)?;
            (Sealing::encrypted(&master), Some((master, slot.id)))
        } else if let Some(sealed) = unsealed::sealed_evidence(&*backend, &config.repo_id)? {
            // Someone may have replaced the config to make new backups
            // go in unencrypted.
            return Err(Error::corrupt(format!(
                "{what} says the repository is not encrypted, but it holds key files or \
                 sealed files ({}): the config was damaged or replaced",
                backend.describe(&sealed)
            ))
            .hint("put back the config from a copy of this repository"));
        } else if passphrase.expects_encryption() {
            return Err(Error::bad_input(format!(
                "{} is not encrypted, but a passphrase was given for it: if it was encrypted, \
                 someone replaced it to make your backups go in unencrypted",
                backend.location()
            ))
            .hint("if it was made with `init --plain`, give no passphrase for it (unset PLATTER_PASSWORD, PLATTER_PASSWORD_FILE)"));
        } else {
            (Sealing::plain(), None)
        };
        Ok(Repository {
            backend,
            config,
            sealing,
            key,
        })
    }

    /// The same open repository, a second time (for something that takes
    /// ownership of one, such as a boot, while this one stays in use).
    pub fn duplicate(&self) -> Repository {
        Repository {
            backend: Arc::clone(&self.backend),
            config: self.config.clone(),
            sealing: self.sealing.clone(),
            key: self.key.as_ref().map(|(k, id)| (k.duplicate(), *id)),
        }
    }

    /// This open repository as it is with `config` (after `upgrade`
    /// rewrote it).
    pub fn with_config(&self, config: Config) -> Repository {
        Repository {
            config,
            ..self.duplicate()
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How this repository names chunks and seals what it stores.
    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// The master key and the key file that opened it (encrypted only).
    pub fn key(&self) -> Option<(&MasterKey, &KeyId)> {
        self.key.as_ref().map(|(k, slot)| (k, slot))
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The backend, for a thread that outlives a borrow (a lock's
    /// refresher).
    pub fn shared_backend(&self) -> SharedBackend {
        Arc::clone(&self.backend)
    }

    /// The repository as its user names it (a path), for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// All readable snapshots, oldest first (by the time taken, equal times
    /// by id), and the manifests that are not.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<BrokenManifest>)> {
        let mut good = Vec::new();
        let mut broken = Vec::new();
        let ids: Vec<SnapshotId> = ids_in(self.backend(), Folder::Snapshots)?
            .iter()
            .filter_map(|file| SnapshotId::parse(file))
            .collect();
        let read = backend::each_at_once(self.backend(), &ids, |id| {
            let name = manifest_name(id);
            self.read_sealed(&name).and_then(|bytes| {
                let snap = Snapshot::decode(&bytes, &self.backend.describe(&name))?;
                if snap.id != *id {
                    return Err(Error::corrupt(format!(
                        "{} holds the manifest of snapshot {}",
                        self.backend.describe(&name),
                        snap.id
                    )));
                }
                Ok(snap)
            })
        });
        for (id, loaded) in ids.into_iter().zip(read) {
            match loaded {
                Ok(snap) => good.push(snap),
                // The store is out of reach: nothing is known of it.
                Err(e) if e.is_transient() => return Err(e),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => broken.push(BrokenManifest {
                    id,
                    name: manifest_name(&id),
                    error,
                }),
            }
        }
        snapshot::sort_by_time(&mut good);
        Ok((good, broken))
    }

    /// Finds a snapshot by full id, unique prefix, or `latest`: the newest
    /// readable snapshot by the time it was taken. Manifests that cannot be
    /// read are skipped for `latest`, with a warning naming them (one
    /// damaged manifest must not make every snapshot unreachable by name,
    /// nor may it pass unseen); a named one that cannot be read fails with
    /// its own error (damaged, or of a newer format).
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        let (snaps, broken) = self.snapshots()?;
        if spec == "latest" {
            let latest = snaps
                .into_iter()
                .next_back()
                .ok_or_else(|| match broken.first() {
                    Some(b) => Error::new(
                        b.error.kind(),
                        format!("the repository has no readable snapshot: {}", b.error),
                    )
                    .hint(
                        "run `platter verify`; `platter repair --from COPY` brings manifests back",
                    ),
                    None => Error::not_found("the repository has no snapshots yet")
                        .hint("create one with `platter backup SOURCE`"),
                })?;
            for b in &broken {
                crate::progress::Quiet.warn(&format!(
                    "`latest` is snapshot {}, the newest readable one; manifest {} cannot be \
                     read and may be newer: {}",
                    latest.short_id(),
                    self.describe(&b.name),
                    b.error
                ));
            }
            return Ok(latest);
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::bad_input(format!(
                "{spec:?} is not a snapshot id: use an id, a unique prefix of one, or `latest`"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let mut matches: Vec<Snapshot> = snaps
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&spec))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => {
                let damaged = broken.iter().find(|b| b.id.to_hex().starts_with(&spec));
                match damaged {
                    Some(b) => Err(Error::new(b.error.kind(), b.error.message())),
                    None => Err(Error::not_found(format!("no snapshot matches {spec:?}"))
                        .hint("`platter snapshots` lists them")),
                }
            }
            n => Err(Error::bad_input(format!(
                "{spec:?} matches {n} snapshots ({}): give more digits",
                matches
                    .iter()
                    .map(|s| s.id.prefix(12))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The snapshots `specs` name (see `resolve`), in the order first
    /// named, each once however often it is named. The first spec that
    /// does not resolve is the error.
    pub fn resolve_each(&self, specs: &[String]) -> Result<Vec<Snapshot>> {
        let mut out: Vec<Snapshot> = Vec::new();
        for spec in specs {
            let snap = self.resolve(spec)?;
            if !out.iter().any(|s| s.id == snap.id) {
                out.push(snap);
            }
        }
        Ok(out)
    }

    /// Opens the index through the local cache (see `index::cache`).
    /// Damaged index files are returned separately; the chunks they
    /// described then look missing, which verify reports. Where a chunk is
    /// stored twice, a copy in a pack that exists wins over one in a pack
    /// that is gone (the packs are listed only then).
    pub fn load_index(&self) -> Result<(Index, Vec<(String, Error)>)> {
        self.open_index(false)
    }

    /// `load_index`, reading every index file again instead of trusting
    /// the cache (which is then rebuilt from them): for the commands that
    /// check the repository or decide what to delete (verify, prune,
    /// repair), so damage to an index file is never hidden by a cache
    /// built before it.
    pub fn load_index_checked(&self) -> Result<(Index, Vec<(String, Error)>)> {
        self.open_index(true)
    }

    fn open_index(&self, fresh: bool) -> Result<(Index, Vec<(String, Error)>)> {
        let opened = index::cache::open(self, fresh)?;
        let mut index = Index::from_tables(opened.tables);
        if index.may_have_doubles() {
            index.prefer_packs(&self.packs_on_disk()?);
        }
        Ok((index, opened.damaged))
    }

    /// Names of the committed index files: files only, so that a folder
    /// or FIFO planted in `index/` is never taken for one to replace
    /// (verify names it).
    pub fn index_files(&self) -> Result<Vec<String>> {
        Ok(id_files_in(self.backend(), Folder::Index)?
            .into_iter()
            .filter(|f| f.is_file)
            .map(|f| Folder::Index.file(&f.name))
            .collect())
    }

    /// Replaces every index file by the one `writer` gathered (for prune,
    /// repair and rebuild-index, under an exclusive lock). The new file is
    /// durable before any old one goes: a crash leaves both, never neither.
    pub fn replace_index_with(&self, writer: index::IndexWriter<'_>) -> Result<()> {
        self.replace_index_files(writer, &self.index_files()?)
    }

    /// Replaces index files `old` by the one `writer` gathered, durable
    /// before any of them goes.
    pub fn replace_index_files(
        &self,
        writer: index::IndexWriter<'_>,
        old: &[String],
    ) -> Result<()> {
        let new = names::index_name(&writer.finish()?);
        for name in old.iter().filter(|n| **n != new) {
            self.backend.remove(name)?;
        }
        Ok(())
    }

    /// A writer of one new index file, fed entry by entry.
    pub fn index_writer(&self) -> index::IndexWriter<'_> {
        index::IndexWriter::new(self)
    }

    /// Opens a snapshot's map, checked whole and against its manifest and
    /// the config (chunk size, source size, entry count).
    pub fn open_map(&self, snap: &Snapshot) -> Result<map::MapReader> {
        let id = snap.id;
        let map = map::MapReader::open(self.backend(), &self.sealing, &id, &snap.map.blake3)
            .map_err(|e| match e.kind() {
                // Its manifest names it: a missing map is damage, as a
                // cut one is (exit 3 is for what the user named).
                ErrorKind::NotFound => Error::corrupt(format!(
                    "the map of snapshot {} is missing ({})",
                    snap.short_id(),
                    self.describe(&names::map_name(&id))
                ))
                .hint(format!(
                    "bring it back with `platter repair --from COPY`, or `platter forget {}` \
                     if no copy has it",
                    snap.short_id()
                )),
                _ => e,
            })?;
        let h = map.header();
        if h.chunk_size != self.config.chunk_size
            || snap.chunk_size != self.config.chunk_size
            || h.source_size != snap.source.size
            || h.entries != snap.map.entries
        {
            return Err(Error::corrupt(format!(
                "the map of snapshot {} disagrees with its manifest or the repository config",
                snap.short_id()
            )));
        }
        Ok(map)
    }

    /// Ids of the committed packs in `data/`.
    pub fn packs_on_disk(&self) -> Result<std::collections::HashSet<PackId>> {
        pack::packs_on_disk(self.backend())
    }

    /// Writes a manifest: the commit point of a backup.
    pub fn commit_snapshot(&self, snap: &Snapshot) -> Result<()> {
        sealed::write(
            self.backend(),
            &self.sealing,
            &manifest_name(&snap.id),
            &snap.encode()?,
        )
    }

    /// Reads a whole manifest, index or lock file, opening its seal when
    /// the repository is encrypted.
    pub fn read_sealed(&self, name: &str) -> Result<Vec<u8>> {
        sealed::read(self.backend(), &self.sealing, name)
    }

    /// Writes an index file naming `packs` (durable before it returns).
    pub fn write_index(&self, packs: &[(PackId, Vec<pack::PackEntry>)]) -> Result<IndexId> {
        index::write_index(self.backend(), &self.sealing, packs, self.sorted_index())
    }

    /// Whether index files are written sorted (version 3).
    pub fn sorted_index(&self) -> bool {
        self.config.has(config::SORTED_INDEX)
    }

    /// Reads and checks the table of pack `id`; returns the pack's length
    /// and its entries.
    pub fn read_pack_table(&self, id: &PackId) -> Result<(u64, Vec<pack::PackEntry>)> {
        let name = names::pack_name(id);
        let file = self.backend.open(&name)?;
        let entries = pack::read_table(&*file, &self.sealing, id, &self.describe(&name))?;
        Ok((file.len(), entries))
    }

    /// Replaces the config whole (`upgrade`, under an exclusive lock): the
    /// one time a config changes after `init`.
    pub fn rewrite_config(&self, config: &Config) -> Result<()> {
        config.validate(config.version())?;
        let bytes = envelope::seal(CONFIG_KIND, config.version(), config)?;
        self.backend.write_whole(CONFIG, &bytes)
    }

    /// A reader of this repository's chunks, placed by `index` (this
    /// repository's).
    pub fn chunk_reader<'a>(&'a self, pool: BufPool, index: &'a Index) -> ChunkReader<'a> {
        ChunkReader::new(self.backend(), self.sealing.clone(), pool, index)
    }

    /// Removes a snapshot: its manifest first (from then on it does not
    /// exist), then its map. Its chunks stay until `prune`.
    pub fn remove_snapshot(&self, snap: &Snapshot) -> Result<()> {
        self.backend.remove(&manifest_name(&snap.id))?;
        self.backend.remove(&names::map_name(&snap.id))
    }

    pub fn describe(&self, name: &str) -> String {
        self.backend.describe(name)
    }

    /// Makes the space reserve if it is missing or short; returns whether
    /// it made one. Fails (out of space) where there is no room for it.
    pub fn make_reserve(&self) -> Result<bool> {
        if !self.backend.keeps_reserve() {
            return Ok(false);
        }
        match self.backend.open(RESERVE) {
            Ok(file) if file.len() == RESERVE_LEN as u64 => Ok(false),
            _ => write_reserve(self.backend()).map(|()| true),
        }
    }

    /// Deletes the space reserve; returns whether there was one.
    pub fn release_reserve(&self) -> Result<bool> {
        match self.backend.open(RESERVE) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            _ => self.backend.remove(RESERVE).map(|()| true),
        }
    }
}

/// Writes the space reserve: zeros, written out (not a sparse file), so
/// that deleting it frees real blocks.
fn write_reserve(backend: &dyn Backend) -> Result<()> {
    backend.write_whole(RESERVE, &vec![0u8; RESERVE_LEN])
}

/// Canonical absolute form of a user-given path, for identity and messages.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_name_repository_files() {
        let id = "ab".repeat(32);
        assert!(matches!(classify("snapshots", &id), FileName::Id(_)));
        assert!(matches!(classify("data/ab", &id), FileName::Id(_)));
        assert_eq!(classify("data/cd", &id), FileName::Misplaced);
        assert_eq!(classify("index", &id.to_uppercase()), FileName::Foreign);
        assert_eq!(classify("index", "README"), FileName::Foreign);
        assert_eq!(classify("locks", &id[..62]), FileName::Foreign);
        assert_eq!(
            classify("locks", &format!(".tmp-{id}-x")),
            FileName::Unfinished
        );
    }
}
