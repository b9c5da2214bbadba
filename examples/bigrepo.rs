//! Writes a plain repository of a stated shape, for measuring how commands
//! scale with repository size (issue 18; `bench/scale.sh` drives it and
//! `tests/it/scale.rs` uses it at a small size).
//!
//! ```text
//! cargo run --release --example bigrepo -- --chunks N [--index-files F] \
//!     [--snapshots S] [--small-image FILE] OUT
//! ```
//!
//! Every file is written by the library's own writers (`PackWriter`,
//! `Repository::write_index`, `MapWriter`, `Repository::commit_snapshot`),
//! in a backup's commit order, so the repository is consistent by
//! construction: `verify`, `restore` and `prune` see every map entry backed
//! by an index entry and a pack blob, and a change of format in those
//! writers reaches the generator by itself.
//!
//! Shape:
//! - `N` unique chunks of 64 KiB (the smallest chunk size), each 64 KiB of
//!   zeros but for a 24-byte head ("bigrepo\0", a counter, the seed); lz4
//!   stores one in about 280 bytes, so 10^7 chunks cost about 2.8 GB of packs.
//! - `F` index files (default N/2000, as after thousands of small backups),
//!   each naming one pack of N/F consecutive chunks.
//! - `S` snapshots (default N/1000), snapshot j using chunks
//!   [j*N/S, (j+1)*N/S) as data entries of a map (1000 entries, 48 KB), one
//!   an hour from 2020-01-01, from 100 sources `/bigrepo/disk-NN`: every
//!   index entry is used by exactly one snapshot.
//! - One more snapshot, the newest, tagged `small`: 4 MiB (64 entries), three
//!   in four data chunks picked across the whole repository, one in four
//!   zeros. `--small-image FILE` writes its source bytes there, for a
//!   byte-exact check of its restore.
//!
//! What costs time: per chunk a BLAKE3 of 64 KiB, an xxh3 fingerprint and an
//! lz4 pass over mostly zeros. The BLAKE3 is computed from the first 1 KiB
//! (BLAKE3 chunk) alone, since the subtrees of zeros to its right are the
//! same for every chunk (`ZeroTail`; checked against `blake3::hash` on a
//! sample); the rest runs on every core. Files are written without fsync
//! (`FastDir`, the local backend but for that; one `sync` at the end): a
//! generated repository is scratch, and 30,000 fsyncs would cost more than
//! the data.
//!
//! The last line printed is `small=<id> chunks=.. index_files=.. snapshots=..
//! packs=.. shape=.. seconds=..`, for scripts.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use clap::Parser;

use platter::codec::{ChunkId, Compression, Scratch, fingerprint, store};
use platter::error::{Error, Result};
use platter::interrupt::Registration;
use platter::repo::backend::{Backend, Listed, LocalBackend, NewFile, StoredFile, TEMP_PREFIX};
use platter::repo::keys::NoPassphrase;
use platter::repo::map::{MapEntry, MapHeader, MapWriter};
use platter::repo::pack::{PACK_TARGET, PackWriter};
use platter::repo::snapshot::{BackupStats, MapRef, Snapshot, SourceInfo};
use platter::repo::{NewKey, Repository, SnapshotId};

const CHUNK: usize = 64 << 10;
/// BLAKE3's own chunk (not ours): 1 KiB.
const KIB: usize = blake3::CHUNK_LEN;
const HEAD: &[u8; 8] = b"bigrepo\0";
const SMALL_ENTRIES: u64 = 64;
/// 2020-01-01T00:00:00Z.
const EPOCH: u64 = 1_577_836_800;
/// The version of what this generator writes for given arguments:
/// `bench/scale.sh` reuses a repository only if its stamp names this one.
/// Bump it with any change to the bytes or the shape written.
const SHAPE: u32 = 1;

#[derive(Parser)]
#[command(about = "Write a plain platter repository of a stated shape (see the source)")]
struct Args {
    /// Unique chunks (index entries), each used by one snapshot
    #[arg(long)]
    chunks: u64,
    /// Index files (one pack each); default chunks/2000, at least 1
    #[arg(long)]
    index_files: Option<u64>,
    /// Snapshots besides the small one; default chunks/1000, at least 1
    #[arg(long)]
    snapshots: Option<u64>,
    /// Write the small snapshot's source bytes (4 MiB) to this file
    #[arg(long)]
    small_image: Option<PathBuf>,
    /// Mixed into every chunk: repositories with other seeds share no chunk
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads; default: every core
    #[arg(long)]
    threads: Option<usize>,
    /// The new repository (must not exist, or be an empty folder)
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("bigrepo: {e}");
        std::process::exit(e.kind().exit_code());
    }
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let n = args.chunks;
    let files = args.index_files.unwrap_or(n / 2000).max(1);
    let snaps = args.snapshots.unwrap_or(n / 1000).max(1);
    if n == 0 || files > n || snaps > n {
        return Err(Error::bad_input(
            "need --chunks >= 1, and no more index files or snapshots than chunks",
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    Repository::init(&args.out, CHUNK as u64, Compression::Lz4, NewKey::Plain)?;
    let repo = Repository::open_in(Arc::new(FastDir::new(&args.out)), &NoPassphrase)?;
    let sealing = repo.sealing().clone();
    let tail = ZeroTail::new();
    tail.check(args.seed)?;

    // Chunks, packs and index files: index file f holds chunks
    // [f*n/files, (f+1)*n/files).
    let mut chunks = vec![(ChunkId::default(), 0u64); n as usize];
    let packs = AtomicU64::new(0);
    {
        let mut rest: &mut [(ChunkId, u64)] = &mut chunks;
        let mut work = Vec::with_capacity(files as usize);
        for f in 0..files {
            let (lo, hi) = (f * n / files, (f + 1) * n / files);
            let (mine, more) = rest.split_at_mut((hi - lo) as usize);
            work.push((lo, mine));
            rest = more;
        }
        let work = Mutex::new(work.into_iter());
        let done = AtomicU64::new(0);
        each_thread(threads, || -> Result<()> {
            let mut plain = vec![0u8; CHUNK];
            let mut scratch = Scratch::default();
            loop {
                let Some((lo, out)) = work.lock().map_err(poisoned)?.next() else {
                    return Ok(());
                };
                let mut written = Vec::new();
                let mut pack = PackWriter::create(repo.backend(), &sealing)?;
                for (i, slot) in out.iter_mut().enumerate() {
                    let c = lo + i as u64;
                    fill(&mut plain, c, args.seed);
                    let id = tail.id(&plain);
                    if c.is_multiple_of(65_536) && id != ChunkId::of(&plain) {
                        return Err(Error::internal(format!("chunk {c}: fast BLAKE3 disagrees")));
                    }
                    let blob = store(&sealing, Compression::Lz4, &id, &plain, &mut scratch)?;
                    pack.add(id, blob.how, blob.bytes(&plain, &scratch), CHUNK as u32)?;
                    *slot = (id, fingerprint(&plain));
                    if pack.len() >= PACK_TARGET {
                        written.push(
                            std::mem::replace(
                                &mut pack,
                                PackWriter::create(repo.backend(), &sealing)?,
                            )
                            .finish()?,
                        );
                    }
                }
                if !pack.is_empty() {
                    written.push(pack.finish()?);
                }
                packs.fetch_add(written.len() as u64, Ordering::Relaxed);
                repo.write_index(&written)?;
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d.is_multiple_of((files / 10).max(1)) {
                    eprintln!(
                        "bigrepo: {d}/{files} index files ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        })?;
    }

    // Maps and manifests: snapshot j uses chunks [j*n/snaps, (j+1)*n/snaps).
    let next = AtomicU64::new(0);
    let hostname = "bigrepo".to_string();
    each_thread(threads, || -> Result<()> {
        loop {
            let j = next.fetch_add(1, Ordering::Relaxed);
            if j >= snaps {
                return Ok(());
            }
            let (lo, hi) = (j * n / snaps, (j + 1) * n / snaps);
            let entries = (lo..hi).map(|c| {
                let (id, fp) = chunks[c as usize];
                MapEntry::data(id, fp)
            });
            let source = format!("/bigrepo/disk-{:02}", j % 100);
            write_snapshot(&repo, &hostname, j, &source, "bigrepo", hi - lo, entries)?;
        }
    })?;

    // The small snapshot, newest of all.
    let pick = |i: u64| -> Option<u64> {
        (i % 4 != 3).then(|| (i * (n / SMALL_ENTRIES).max(1) + i * 7) % n)
    };
    let entries = (0..SMALL_ENTRIES).map(|i| match pick(i) {
        Some(c) => {
            let (id, fp) = chunks[c as usize];
            MapEntry::data(id, fp)
        }
        None => MapEntry::ZERO,
    });
    let small = write_snapshot(
        &repo,
        &hostname,
        snaps,
        "/bigrepo/small",
        "small",
        SMALL_ENTRIES,
        entries,
    )?;
    if let Some(path) = &args.small_image {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        let mut out = BufWriter::new(file);
        let mut plain = vec![0u8; CHUNK];
        for i in 0..SMALL_ENTRIES {
            match pick(i) {
                Some(c) => fill(&mut plain, c, args.seed),
                None => plain.fill(0),
            }
            out.write_all(&plain)
                .map_err(|e| Error::io("write", path, e))?;
        }
        out.flush().map_err(|e| Error::io("write", path, e))?;
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    println!(
        "small={small} chunks={n} index_files={files} snapshots={} packs={} shape={SHAPE} \
         seconds={:.1}",
        snaps + 1,
        packs.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Chunk `c`: zeros but for its head.
fn fill(plain: &mut [u8], c: u64, seed: u64) {
    plain[..8].copy_from_slice(HEAD);
    plain[8..16].copy_from_slice(&c.to_le_bytes());
    plain[16..24].copy_from_slice(&seed.to_le_bytes());
}

/// Writes snapshot number `j` (its time is `j` hours after EPOCH) with a
/// map of `count` entries; returns its id.
#[allow(clippy::too_many_arguments)]
fn write_snapshot(
    repo: &Repository,
    hostname: &str,
    j: u64,
    source: &str,
    tag: &str,
    count: u64,
    entries: impl Iterator<Item = MapEntry>,
) -> Result<SnapshotId> {
    let chunk_size = repo.config().chunk_size;
    let id = SnapshotId::random();
    let size = count * chunk_size;
    let header = MapHeader::new(chunk_size, size, id);
    let mut map = MapWriter::create(repo.backend(), repo.sealing(), header)?;
    let mut stats = BackupStats {
        bytes_read: size,
        chunks: count,
        ..BackupStats::default()
    };
    for e in entries {
        if e == MapEntry::ZERO {
            stats.chunks_zero += 1;
        } else {
            stats.chunks_new += 1;
        }
        map.push(&e)?;
    }
    let blake3 = map.finish()?;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH + j * 3600);
    let snap = Snapshot {
        id,
        time: humantime::format_rfc3339_micros(time).to_string(),
        parent: None,
        hostname: hostname.to_string(),
        tags: vec![tag.to_string()],
        source: SourceInfo {
            path: source.to_string(),
            kind: "file".to_string(),
            size,
            logical_sector_size: 512,
            serial: None,
            wwid: None,
            model: None,
            partition: None,
        },
        chunk_size,
        map: MapRef {
            entries: header.entries,
            blake3,
        },
        full: false,
        stats,
        platter_version: env!("CARGO_PKG_VERSION").to_string(),
        protected: false,
        change_source: None,
        shadow: None,
        layout: None,
    };
    repo.commit_snapshot(&snap)?;
    Ok(id)
}

/// Runs `work` on `threads` threads; the first error wins.
fn each_thread(threads: usize, work: impl Fn() -> Result<()> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let running: Vec<_> = (0..threads).map(|_| s.spawn(&work)).collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Error::internal("a worker panicked")))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    })
}

fn poisoned<T>(_: T) -> Error {
    Error::internal("a worker panicked")
}

/// BLAKE3 of a 64 KiB chunk that is zeros after its first KiB: the
/// chaining values of the zero subtrees beside the first KiB (of 1, 2, 4,
/// ... 32 KiB) are the same for every such chunk, so only the first KiB
/// is hashed and six parents merged.
struct ZeroTail {
    /// Right siblings of 1, 2, ... 16 KiB, merged below the root.
    right: Vec<ChainingValue>,
    /// The right half (32 KiB), merged at the root.
    top: ChainingValue,
}

impl ZeroTail {
    fn new() -> ZeroTail {
        let zeros = vec![0u8; CHUNK / 2];
        let subtree = |len: usize| {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(len as u64);
            h.update(&zeros[..len]);
            h.finalize_non_root()
        };
        let mut right = Vec::new();
        let mut len = KIB;
        while len < CHUNK / 2 {
            right.push(subtree(len));
            len *= 2;
        }
        ZeroTail {
            right,
            top: subtree(CHUNK / 2),
        }
    }

    fn id(&self, plain: &[u8]) -> ChunkId {
        let mut cv = blake3::Hasher::new()
            .update(&plain[..KIB])
            .finalize_non_root();
        for r in &self.right {
            cv = merge_subtrees_non_root(&cv, r, Mode::Hash);
        }
        ChunkId(*merge_subtrees_root(&cv, &self.top, Mode::Hash).as_bytes())
    }

    /// Checks `id` against the plain BLAKE3 on a few chunks.
    fn check(&self, seed: u64) -> Result<()> {
        let mut plain = vec![0u8; CHUNK];
        for c in [0, 1, 255, 256, 1 << 32, u64::MAX] {
            fill(&mut plain, c, seed);
            if self.id(&plain) != ChunkId::of(&plain) {
                return Err(Error::internal("the fast BLAKE3 of a chunk disagrees"));
            }
        }
        Ok(())
    }
}

/// The local backend of a repository folder, but that new files are
/// committed with a rename and no fsync (the generator syncs once at the
/// end).
struct FastDir {
    local: LocalBackend,
    root: PathBuf,
    unique: AtomicU64,
}

impl FastDir {
    fn new(root: &Path) -> FastDir {
        FastDir {
            local: LocalBackend::new(root),
            root: root.to_path_buf(),
            unique: AtomicU64::new(0),
        }
    }
}

struct FastFile {
    out: BufWriter<File>,
    temp: PathBuf,
    path: PathBuf,
}

impl Write for FastFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl NewFile for FastFile {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.temp, e))?;
        fs::rename(&self.temp, &self.path).map_err(|e| Error::io("rename", &self.path, e))
    }
}

impl Backend for FastDir {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        let path = self.root.join(name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        let n = self.unique.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{file_name}-bigrepo-{n}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        Ok(Box::new(FastFile {
            out: BufWriter::with_capacity(1 << 20, file),
            temp,
            path,
        }))
    }

    fn create_large(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.create(name)
    }

    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>> {
        self.local.open(name)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.local.list(dir)
    }

    fn list_files(&self, dir: &str) -> Result<Vec<Listed>> {
        self.local.list_files(dir)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.local.remove(name)
    }

    fn remove_unfinished(&self, dir: &str, no_writers: bool) -> Result<Vec<String>> {
        self.local.remove_unfinished(dir, no_writers)
    }

    fn describe(&self, name: &str) -> String {
        self.local.describe(name)
    }

    fn location(&self) -> String {
        self.local.location()
    }

    fn local_root(&self) -> Option<&Path> {
        self.local.local_root()
    }

    fn keeps_reserve(&self) -> bool {
        self.local.keeps_reserve()
    }

    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.local.write_new(name, bytes)
    }

    fn remove_on_interrupt(&self, name: &str) -> Option<Registration> {
        self.local.remove_on_interrupt(name)
    }

    fn read_at(&self, name: &str, buf: &mut [u8], offset: u64) -> Result<()> {
        self.local.read_at(name, buf, offset)
    }

    fn read_whole(&self, name: &str) -> Result<Vec<u8>> {
        self.local.read_whole(name)
    }
}
