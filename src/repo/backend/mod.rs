//! The storage seam: the only code that touches repository files.
//!
//! A backend stores whole files under relative names ("data/ab/ab12...",
//! built by `names`). What every command relies on, and so what a backend
//! must guarantee (docs/FORMAT.md, "Storage"):
//! - a new file appears whole under its name when `commit` returns, or not
//!   at all; committed files are never modified in place;
//! - new names never collide (they are random ids); the few files that are
//!   replaced whole (a manifest rewritten by protect, a lock refreshed
//!   while held) are replaced atomically;
//! - `write_new` creates a file only if none has its name (the config;
//!   an object store without conditional writes can only look first, see
//!   `s3`);
//! - what this process committed reads back at once, and a listing shows
//!   every file whose commit returned before the listing began.
//!
//! `LocalBackend` keeps a repository in a folder; `MemoryBackend` keeps one
//! in memory and `FaultyBackend` wraps any backend to fail at a chosen
//! step, for tests that must not depend on timing.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::interrupt::Registration;

mod faults;
mod local;
mod memory;
mod s3;

pub use faults::{Fault, FaultPlan, FaultyBackend, Step};
pub use local::{LocalBackend, sync_dir};
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Location};

/// A file being written; it exists under its name only after `commit`.
pub trait NewFile: Write + Send {
    /// Makes the file durable and visible under its final name.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A committed file opened for reading at offsets.
pub trait StoredFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    fn len(&self) -> u64;
    /// When it was last written, by the store's clock (a file's mtime, an
    /// object's Last-Modified), where the store says.
    fn modified(&self) -> Option<std::time::SystemTime> {
        None
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub trait Backend: Send + Sync {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>>;
    /// Like `create`, for large files written once and rarely read soon
    /// (packs): the backend may bypass caches.
    fn create_large(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.create(name)
    }
    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>>;
    /// Names of the files in folder `dir` (not recursive), sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// `list`, with each file's length and the store's time of it; a file
    /// gone by the time it is looked at is left out, one that cannot be
    /// looked at has length 0 and no time. A store whose listing
    /// carries them (S3) answers with one request; here each file is
    /// opened.
    fn list_files(&self, dir: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        for name in self.list(dir)? {
            match self.open(&format!("{dir}/{name}")) {
                Ok(file) => out.push(Listed {
                    len: file.len(),
                    modified: file.modified(),
                    name,
                    is_file: true,
                }),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                // Listed all the same (a FIFO, a file that cannot be
                // opened): reading it says why.
                Err(_) => out.push(Listed {
                    name,
                    len: 0,
                    modified: None,
                    is_file: false,
                }),
            }
        }
        Ok(out)
    }
    fn remove(&self, name: &str) -> Result<()>;
    /// Removes the unfinished writes in folder `dir` that nobody will
    /// finish: those whose writer is gone from this host, or that have not
    /// changed for `owner::ABANDONED_AFTER` when their writer cannot be
    /// judged. With `no_writers` (the caller holds an exclusive lock, so
    /// nothing writes in `dir`), all of them. Returns their names.
    fn remove_unfinished(&self, dir: &str, no_writers: bool) -> Result<Vec<String>>;
    /// Where a name lives, for messages.
    fn describe(&self, name: &str) -> String;
    /// The repository as its user names it (a path), for messages.
    fn location(&self) -> String;
    /// The folder of a repository on a local filesystem; `None` for one
    /// stored elsewhere.
    fn local_root(&self) -> Option<&Path> {
        None
    }
    /// Writes a new file `name` whole, like `write_whole`, but fails (with
    /// `BadInput`) rather than replace one that exists: for the config of
    /// a new repository, which two `init`s must not both write.
    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Whether this store can fill up, so that a repository on it keeps a
    /// space reserve (see `names::RESERVE`).
    fn keeps_reserve(&self) -> bool {
        false
    }
    /// The repository this one would lie inside (a config in a folder
    /// above it), named as its user would; such nesting is refused, since
    /// the outer one's verify and prune would meet the inner one's files.
    /// Local folders are checked by `init` itself.
    fn enclosing_repository(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// For `init`: the bucket this repository would lie in, when the store
    /// keeps its objects in buckets and that one does not exist yet;
    /// `None` when it exists, or the store has no buckets.
    fn missing_bucket(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// For `init` only (every other command names a missing bucket): creates
    /// the bucket `missing_bucket` named, if the credentials may; `false`
    /// when it appeared meanwhile.
    fn create_bucket(&self) -> Result<bool> {
        Ok(false)
    }
    /// Requests worth having in flight at once: 1 for a local disk, more
    /// for a store far away (each request waits on the network).
    fn concurrency(&self) -> usize {
        1
    }
    /// The most bytes worth reading with one request that merges
    /// neighbouring chunks of a pack: 0 where a read per chunk costs nothing
    /// extra (a local disk); a store far away answers one large request
    /// much faster than many small ones.
    fn read_span(&self) -> u64 {
        0
    }
    /// The size at which packs are closed here, when not the default
    /// (`pack::PACK_TARGET`): a store that holds a pack in memory until its
    /// upload wants smaller ones.
    fn pack_target(&self) -> Option<u64> {
        None
    }
    /// Removes committed file `name` if the process is interrupted while
    /// the registration lives (a lock file); `None` where the backend
    /// cannot do that from a signal watcher.
    fn remove_on_interrupt(&self, name: &str) -> Option<Registration>;

    fn write_whole(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut file = self.create(name)?;
        file.write_all(bytes)
            .map_err(|e| Error::storage("write", &self.describe(name), e))?;
        file.commit()
    }

    /// Reads `buf.len()` bytes of file `name` at `offset`: one request
    /// where an `open` and a read would take two on a store far away. A
    /// file too short for the read is an error.
    fn read_at(&self, name: &str, buf: &mut [u8], offset: u64) -> Result<()> {
        self.open(name)?.read_exact_at(buf, offset)
    }

    fn read_whole(&self, name: &str) -> Result<Vec<u8>> {
        read_all(&*self.open(name)?, &self.describe(name))
    }
}

/// A file as `list_files` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name within the folder listed.
    pub name: String,
    pub len: u64,
    /// When the store wrote it, by the store's clock.
    pub modified: Option<std::time::SystemTime>,
    /// Whether it is a file (not a folder, a link or a FIFO planted in a
    /// local repository's folder).
    pub is_file: bool,
}

/// Every byte of an opened file (`what` names it in errors).
pub fn read_all(file: &dyn StoredFile, what: &str) -> Result<Vec<u8>> {
    let len =
        usize::try_from(file.len()).map_err(|_| Error::corrupt(format!("{what} is too large")))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Prefix of temporary files; anything named so is an unfinished write.
/// The full name is `.tmp-<final name>-<host tag>-<pid>-<start ticks>-<random>`.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A backend shared by a repository and what it hands out.
pub type SharedBackend = Arc<dyn Backend>;

/// How to reach a repository in object storage.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Requests in flight at once.
    pub connections: usize,
    /// A file naming the credentials; the environment's when `None`.
    pub credentials: Option<std::path::PathBuf>,
}

/// The backend of a repository as its user names it: `s3:...` for object
/// storage (see `S3Location`), reached as `access` says; anything else a
/// local folder.
pub fn open_location(text: &std::ffi::OsStr, access: &Access) -> Result<SharedBackend> {
    match text.to_str() {
        Some(url) if url.starts_with(s3::SCHEME) => Ok(Arc::new(S3Backend::open(
            &S3Location::parse(url)?,
            access.connections,
            access.credentials.as_deref(),
        )?)),
        _ => Ok(Arc::new(LocalBackend::new(Path::new(text)))),
    }
}

/// `f` over every item, up to `backend.concurrency()` at once (on this
/// thread alone for a local disk); the results in the items' order. For
/// the many small requests of opening a repository, which on a store far
/// away cost a round trip each.
pub fn each_at_once<T, R, F>(backend: &dyn Backend, items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let width = backend.concurrency().min(items.len());
    if width <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..width)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
