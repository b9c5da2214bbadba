//! A repository held in memory: what tests use to fault a command at an
//! exact step (with `FaultyBackend`) and to check what it left, without a
//! disk. It keeps the guarantees of `Backend`: a file appears whole at
//! `commit` or never (a writer that is dropped, as a process that dies,
//! leaves nothing), `write_new` never replaces, a listing shows what was
//! committed before it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{Backend, NewFile, StoredFile};
use crate::error::{Error, Result};
use crate::interrupt::Registration;

/// Each file's bytes and when it was last written.
type Files = BTreeMap<String, (Arc<Vec<u8>>, SystemTime)>;

/// A repository in memory; clones share the same files.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    files: Arc<Mutex<Files>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn files(&self) -> Result<MutexGuard<'_, Files>> {
        self.files
            .lock()
            .map_err(|_| Error::internal("a thread panicked holding the memory repository"))
    }

    /// A new store holding copies of this one's files: the state to run
    /// a command from again.
    pub fn fork(&self) -> Result<MemoryBackend> {
        let files = self.files()?.clone();
        Ok(MemoryBackend {
            files: Arc::new(Mutex::new(files)),
        })
    }

    /// Every committed file with its bytes, for tests to compare or edit.
    pub fn snapshot_files(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        Ok(self
            .files()?
            .iter()
            .map(|(name, (bytes, _))| (name.clone(), bytes.to_vec()))
            .collect())
    }

    /// Replaces (or, with `None`, removes) a file as damage would.
    pub fn put(&self, name: &str, bytes: Option<Vec<u8>>) -> Result<()> {
        let mut files = self.files()?;
        match bytes {
            Some(bytes) => files.insert(name.to_string(), (Arc::new(bytes), SystemTime::now())),
            None => files.remove(name),
        };
        Ok(())
    }

    /// Makes a file look as if it was last written `by` earlier (a lock
    /// whose writer stopped refreshing it).
    pub fn age(&self, name: &str, by: Duration) -> Result<()> {
        if let Some((_, written)) = self.files()?.get_mut(name) {
            *written = written.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
        }
        Ok(())
    }
}

fn missing(what: &str, name: &str) -> Error {
    Error::storage(
        what,
        &format!("memory:{name}"),
        io::ErrorKind::NotFound.into(),
    )
}

impl Backend for MemoryBackend {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        Ok(Box::new(MemoryNewFile {
            store: self.clone(),
            name: name.to_string(),
            bytes: Vec::new(),
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>> {
        let file = self.files()?.get(name).cloned();
        match file {
            Some((bytes, written)) => Ok(Box::new(MemoryFile {
                bytes,
                written,
                name: name.to_string(),
            })),
            None => Err(missing("open", name)),
        }
    }

    /// Reads as an object store is read: neighbouring chunks at once.
    fn read_span(&self) -> u64 {
        8 << 20
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .files()?
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix))
            // Only what lies directly in `dir`: a deeper name shows as
            // its folder.
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.files()?.remove(name);
        Ok(())
    }

    fn remove_unfinished(&self, _dir: &str, _no_writers: bool) -> Result<Vec<String>> {
        // An unfinished write never shows here (see `MemoryNewFile`).
        Ok(Vec::new())
    }

    fn describe(&self, name: &str) -> String {
        format!("memory:{name}")
    }

    fn location(&self) -> String {
        "memory:".into()
    }

    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut files = self.files()?;
        if files.contains_key(name) {
            return Err(Error::bad_input(format!(
                "memory:{name} exists already: it was not replaced"
            )));
        }
        files.insert(
            name.to_string(),
            (Arc::new(bytes.to_vec()), SystemTime::now()),
        );
        Ok(())
    }

    fn remove_on_interrupt(&self, _name: &str) -> Option<Registration> {
        None
    }
}

/// A file being written: its bytes stay here until `commit`.
struct MemoryNewFile {
    store: MemoryBackend,
    name: String,
    bytes: Vec<u8>,
}

impl Write for MemoryNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewFile for MemoryNewFile {
    fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        this.store
            .files()?
            .insert(this.name, (Arc::new(this.bytes), SystemTime::now()));
        Ok(())
    }
}

struct MemoryFile {
    bytes: Arc<Vec<u8>>,
    written: SystemTime,
    name: String,
}

impl StoredFile for MemoryFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(start..end))
        {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(Error::corrupt(format!(
                "memory:{} ends before offset {} (it is {} bytes): the file was truncated",
                self.name,
                offset.saturating_add(buf.len() as u64),
                self.bytes.len()
            ))),
        }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn modified(&self) -> Option<SystemTime> {
        Some(self.written)
    }
}
