//! The repository: where snapshots and their data live, and the rules that
//! keep it consistent (see docs/FORMAT.md for every byte).
//!
//! `Repository` opens or creates one, lists and resolves snapshots, loads
//! the index and reads chunks back. Writing a backup is driven by the engine
//! through `PackWriter`, `write_index`, `MapWriter` and `commit_snapshot`, in
//! that order, each durable before the next.

pub mod backend;
pub mod config;
mod envelope;
mod fields;
pub mod index;
pub mod lock;
pub mod map;
pub mod pack;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::codec::{self, ChunkId, Compression, Encoded};
use crate::error::{Error, ErrorKind, Result};
use crate::os::AlignedBuf;
use backend::{Backend, LocalBackend, ReadAt};
use config::Config;
use index::{Index, Location};
use snapshot::{Snapshot, manifest_name};

/// Random 256-bit ids name snapshots, packs, index files and locks, so that
/// writers never collide.
pub type RawId = [u8; 32];

pub fn random_id() -> RawId {
    let mut id = [0u8; 32];
    fill_random(&mut id);
    id
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    codec::hex(&buf)
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The kernel's generator does not fail on Linux once booted; fall
        // back to time and pid so ids still differ rather than aborting.
        let seed =
            blake3::hash(format!("{:?}{}", SystemTime::now(), std::process::id()).as_bytes());
        let mut reader = blake3::Hasher::new_keyed(seed.as_bytes()).finalize_xof();
        reader.fill(buf);
    }
}

pub fn hex_id(id: &RawId) -> String {
    codec::hex(id)
}

pub fn parse_id(text: &str) -> Option<RawId> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

const CONFIG: &str = "config";
const CONFIG_KIND: &str = "config";
const FOLDERS: [&str; 5] = ["snapshots", "maps", "index", "data", "locks"];

pub struct Repository {
    backend: LocalBackend,
    config: Config,
}

/// A snapshot manifest that could not be read.
pub struct BrokenManifest {
    pub name: String,
    pub error: Error,
}

impl Repository {
    /// Creates a repository in `path`, which must not exist or be empty.
    pub fn init(path: &Path, chunk_size: u64, compression: Compression) -> Result<Repository> {
        config::check_chunk_size(chunk_size)?;
        match std::fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    let what = if path.join(CONFIG).exists() {
                        "is already a platter repository"
                    } else {
                        "is not empty and is not a platter repository"
                    };
                    return Err(Error::bad_input(format!("{} {what}", path.display()))
                        .hint("name a new or empty directory"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    backend::sync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::bad_input(format!(
                    "{} is a file, not a directory",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io("read", path, e)),
        }
        let backend = LocalBackend::new(path);
        for folder in FOLDERS {
            let dir = path.join(folder);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        backend::sync_dir(path)?;
        let config = Config {
            repo_id: random_hex(32),
            chunk_size,
            compression,
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        // The config is written last: a directory without one is no repository.
        backend.write_whole(
            CONFIG,
            &envelope::seal(CONFIG_KIND, config::FORMAT_VERSION, &config)?,
        )?;
        Ok(Repository { backend, config })
    }

    pub fn open(path: &Path) -> Result<Repository> {
        let backend = LocalBackend::new(path);
        let bytes = match backend.read_whole(CONFIG) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound || e.os_code() == Some(libc::ENOTDIR) => {
                let why = if path.is_dir() {
                    "is not a platter repository (it has no config file)"
                } else if path.exists() {
                    "is a file, not a platter repository"
                } else {
                    "does not exist"
                };
                return Err(Error::not_found(format!("{} {why}", path.display()))
                    .hint("check --repo / PLATTER_REPO, or create one with `platter init`"));
            }
            Err(e) => return Err(e),
        };
        let what = backend.describe(CONFIG);
        let config: Config = envelope::open(CONFIG_KIND, config::FORMAT_VERSION, &bytes, &what)?;
        config.validate()?;
        Ok(Repository { backend, config })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn backend(&self) -> &dyn Backend {
        &self.backend
    }

    pub fn root(&self) -> &Path {
        self.backend.root()
    }

    /// All readable snapshots, oldest first, and the manifests that are not.
    pub fn snapshots(&self) -> Result<(Vec<Snapshot>, Vec<BrokenManifest>)> {
        let mut good = Vec::new();
        let mut broken = Vec::new();
        for file in self.backend.list("snapshots")? {
            if file.starts_with('.') {
                continue;
            }
            let name = manifest_name(&file);
            let loaded = self.backend.read_whole(&name).and_then(|bytes| {
                let snap = Snapshot::decode(&bytes, &self.backend.describe(&name))?;
                if snap.id != file {
                    return Err(Error::corrupt(format!(
                        "{} holds the manifest of snapshot {}",
                        self.backend.describe(&name),
                        snap.id
                    )));
                }
                Ok(snap)
            });
            match loaded {
                Ok(snap) => good.push(snap),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => broken.push(BrokenManifest { name, error }),
            }
        }
        good.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok((good, broken))
    }

    /// Finds a snapshot by full id, unique prefix, or `latest`.
    pub fn resolve(&self, spec: &str) -> Result<Snapshot> {
        let (snaps, broken) = self.snapshots()?;
        if spec == "latest" {
            if let Some(b) = broken.first() {
                return Err(Error::corrupt(format!(
                    "cannot tell which snapshot is the latest: {}",
                    b.error
                ))
                .hint(
                    "name the snapshot by its id (`platter snapshots` lists the readable ones)",
                ));
            }
            return snaps.into_iter().next_back().ok_or_else(|| {
                Error::not_found("the repository has no snapshots yet")
                    .hint("create one with `platter backup SOURCE`")
            });
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::bad_input(format!(
                "{spec:?} is not a snapshot id: use an id, a unique prefix of one, or `latest`"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let mut matches: Vec<Snapshot> = snaps
            .into_iter()
            .filter(|s| s.id.starts_with(&spec))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => {
                let damaged = broken
                    .iter()
                    .find(|b| b.name.trim_start_matches("snapshots/").starts_with(&spec));
                match damaged {
                    Some(b) => Err(Error::corrupt(b.error.message().to_string())),
                    None => Err(Error::not_found(format!("no snapshot matches {spec:?}"))
                        .hint("`platter snapshots` lists them")),
                }
            }
            n => Err(Error::bad_input(format!(
                "{spec:?} matches {n} snapshots ({}): give more digits",
                matches
                    .iter()
                    .map(|s| &s.id[..s.id.len().min(12)])
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Loads every index file. Damaged index files are returned separately;
    /// the chunks they described then look missing, which verify reports.
    /// Where a chunk is stored twice, a copy in a pack that exists wins over
    /// one in a pack that is gone.
    pub fn load_index(&self) -> Result<(Index, Vec<(String, Error)>)> {
        let mut groups = Vec::new();
        let mut damaged = Vec::new();
        for file in self.backend.list("index")? {
            if file.starts_with('.') {
                continue;
            }
            let name = format!("index/{file}");
            let what = self.backend.describe(&name);
            match self
                .backend
                .read_whole(&name)
                .and_then(|bytes| index::read_index(&bytes, &what))
            {
                Ok(found) => groups.extend(found),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => damaged.push((name, e)),
            }
        }
        let present = self.packs_on_disk()?;
        groups.sort_by_key(|(pack, _)| !present.contains(pack));
        let mut index = Index::default();
        for (pack, entries) in groups {
            index.add_pack(pack, &entries);
        }
        Ok((index, damaged))
    }

    /// Opens a snapshot's map, checked whole and against its manifest and
    /// the config (chunk size, source size, entry count).
    pub fn open_map(&self, snap: &Snapshot) -> Result<map::MapReader> {
        let map = map::MapReader::open(&self.backend, &snap.raw_id()?, &snap.map.blake3)?;
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
    pub fn packs_on_disk(&self) -> Result<std::collections::HashSet<RawId>> {
        let mut ids = std::collections::HashSet::new();
        for dir in self.backend.list("data")? {
            for file in self.backend.list(&format!("data/{dir}"))? {
                if let Some(id) = parse_id(&file) {
                    ids.insert(id);
                }
            }
        }
        Ok(ids)
    }

    /// Writes a manifest: the commit point of a backup.
    pub fn commit_snapshot(&self, snap: &Snapshot) -> Result<()> {
        self.backend
            .write_whole(&manifest_name(&snap.id), &snap.encode()?)
    }

    pub fn describe(&self, name: &str) -> String {
        self.backend.describe(name)
    }
}

/// Reads chunks out of packs, keeping recently used packs open.
pub struct ChunkReader<'a> {
    backend: &'a dyn Backend,
    pool: BufPool,
    open: Vec<(RawId, Box<dyn ReadAt>)>,
    stored: Vec<u8>,
    always_crc: bool,
}

/// A chunk's checked plain bytes, in a page-aligned buffer (so it can go to
/// direct I/O) that returns to its pool when dropped.
pub struct PlainChunk(PooledBuf);

impl std::ops::Deref for PlainChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Page-aligned buffers for decoded chunks, reused across chunks and
/// threads: fresh memory is costly to fault in, and aligned buffers can go
/// to direct I/O.
#[derive(Clone)]
pub struct BufPool {
    give: crossbeam_channel::Sender<AlignedBuf>,
    take: crossbeam_channel::Receiver<AlignedBuf>,
    size: usize,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> BufPool {
        let (give, take) = crossbeam_channel::bounded(keep);
        BufPool { give, take, size }
    }

    fn get(&self) -> Result<PooledBuf> {
        let buf = match self.take.try_recv() {
            Ok(buf) => buf,
            Err(_) => AlignedBuf::new(self.size)
                .map_err(|e| Error::io("allocate", Path::new("a chunk buffer"), e))?,
        };
        Ok(PooledBuf {
            buf: Some(buf),
            home: self.give.clone(),
        })
    }
}

pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    home: crossbeam_channel::Sender<AlignedBuf>,
}

impl PooledBuf {
    fn reuse_as(&mut self, len: usize) -> &mut [u8] {
        match self.buf.as_mut() {
            Some(buf) => buf.reuse_as(len),
            None => &mut [],
        }
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // A full pool just frees the buffer.
            let _ = self.home.try_send(buf);
        }
    }
}

const OPEN_PACKS: usize = 8;

impl<'a> ChunkReader<'a> {
    /// A reader whose decoded chunks come from `pool`.
    pub fn new(backend: &'a dyn Backend, pool: BufPool) -> ChunkReader<'a> {
        ChunkReader {
            backend,
            pool,
            open: Vec::new(),
            stored: Vec::new(),
            always_crc: false,
        }
    }

    /// Also checks every chunk's crc32 (verify does: it checks the recorded
    /// checksums too, not only the data).
    pub fn checking_crc(mut self) -> ChunkReader<'a> {
        self.always_crc = true;
        self
    }

    /// Reads chunk `id`, decodes it and checks its BLAKE3; returns its plain
    /// bytes. Any mismatch, and any failure to read the pack, is `Corrupt`
    /// naming the pack and offset. The BLAKE3 check catches every change,
    /// so the crc32 is only computed when it fails (or with
    /// `checking_crc`), to tell storage damage (crc32 fails too) from a
    /// wrong index.
    pub fn read(&mut self, id: &ChunkId, pack: &RawId, loc: &Location) -> Result<PlainChunk> {
        let name = pack::pack_name(pack);
        let what = format!(
            "chunk {id} in pack {} at offset {}",
            self.backend.describe(&name),
            loc.offset
        );
        let plain_len = loc.plain_len as usize;
        if plain_len > self.pool.size || loc.stored_len as usize > self.pool.size.saturating_mul(2)
        {
            return Err(Error::corrupt(format!(
                "{what} claims {} stored / {plain_len} plain bytes, more than a chunk can be",
                loc.stored_len
            )));
        }
        let mut plain = self.pool.get()?;
        let raw = loc.encoded == Encoded::Raw && loc.stored_len == loc.plain_len;
        // A raw chunk is read straight into its (aligned) plain buffer.
        let mut stored = std::mem::take(&mut self.stored);
        let read = if raw {
            self.read_stored(pack, &name, loc, plain.reuse_as(plain_len))
        } else {
            stored.resize(loc.stored_len as usize, 0);
            self.read_stored(pack, &name, loc, &mut stored)
        };
        let always_crc = self.always_crc;
        let check = |stored: &[u8], plain: Option<&[u8]>, decoded: Result<()>| -> Result<()> {
            let damaged = |why: &str| {
                if codec::crc32(stored) != loc.crc {
                    Error::corrupt(format!(
                        "{what} fails its crc32: the stored bytes are damaged"
                    ))
                } else {
                    Error::corrupt(format!("{what} {why}"))
                }
            };
            if always_crc && codec::crc32(stored) != loc.crc {
                return Err(damaged("fails its crc32"));
            }
            decoded.map_err(|e| damaged(e.message()))?;
            if ChunkId::of(plain.unwrap_or(stored)) != *id {
                return Err(damaged("does not match its BLAKE3 id"));
            }
            Ok(())
        };
        let result = read.map_err(|e| e.context(&what)).and_then(|()| {
            if raw {
                check(&plain, None, Ok(()))
            } else {
                let decoded = codec::decode(loc.encoded, &stored, plain.reuse_as(plain_len));
                check(&stored, Some(&plain), decoded)
            }
        });
        self.stored = stored;
        result.map(|()| PlainChunk(plain))
    }

    /// Reads the stored bytes of a chunk; a pack that ends early or cannot
    /// be read makes the chunk damaged (so a restore can go on without it).
    fn read_stored(
        &mut self,
        pack: &RawId,
        name: &str,
        loc: &Location,
        out: &mut [u8],
    ) -> Result<()> {
        let file = self.pack_file(pack, name)?;
        let end = loc.offset.checked_add(out.len() as u64);
        if end.is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "it lies beyond the end of the pack ({} bytes): the pack was truncated",
                file.len()
            )));
        }
        file.read_exact_at(out, loc.offset).map_err(|e| {
            if e.kind() == ErrorKind::Corrupt {
                e
            } else {
                Error::corrupt(format!("it cannot be read: {e}"))
            }
        })
    }

    fn pack_file(&mut self, pack: &RawId, name: &str) -> Result<&dyn ReadAt> {
        if let Some(pos) = self.open.iter().position(|(id, _)| id == pack) {
            let entry = self.open.remove(pos);
            self.open.push(entry);
        } else {
            let file = self.backend.open(name).map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::corrupt(format!("pack {} is missing", self.backend.describe(name)))
                } else {
                    e
                }
            })?;
            if self.open.len() >= OPEN_PACKS {
                self.open.remove(0);
            }
            self.open.push((*pack, file));
        }
        match self.open.last() {
            Some((_, file)) => Ok(file.as_ref()),
            None => Err(Error::new(
                ErrorKind::Io,
                "internal error: pack cache is empty",
            )),
        }
    }
}

/// Canonical absolute form of a user-given path, for identity and messages.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
