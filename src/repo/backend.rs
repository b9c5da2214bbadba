//! The storage seam: the only code that touches repository files.
//!
//! A backend stores whole files under relative names ("data/ab/ab12...").
//! Committed files are never modified in place: a new file is written under
//! a temporary name, made durable, and renamed into place, so a reader sees a
//! file whole or not at all. This shape also fits object stores, where a
//! later backend will live beside `LocalBackend`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::os::MappedRange;

/// A file being written; it exists under its name only after `commit`.
pub trait NewFile: Write + Send {
    /// Makes the file durable and visible under its final name.
    fn commit(self: Box<Self>) -> Result<()>;
    /// Bytes written so far.
    fn written(&self) -> u64;
}

/// A committed file opened for reading at offsets.
pub trait ReadAt: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// [offset, offset+len) mapped without a copy, where the backend can.
    fn map_range(&self, _offset: u64, _len: usize) -> Option<MappedRange> {
        None
    }
}

pub trait Backend: Send + Sync {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>>;
    fn open(&self, name: &str) -> Result<Box<dyn ReadAt>>;
    /// Names of the files in folder `dir` (not recursive), sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    fn remove(&self, name: &str) -> Result<()>;
    fn exists(&self, name: &str) -> Result<bool>;
    /// Where a name lives, for messages.
    fn describe(&self, name: &str) -> String;

    fn write_whole(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut file = self.create(name)?;
        file.write_all(bytes)
            .map_err(|e| Error::io("write", Path::new(&self.describe(name)), e))?;
        file.commit()
    }

    fn read_whole(&self, name: &str) -> Result<Vec<u8>> {
        let file = self.open(name)?;
        let len = usize::try_from(file.len())
            .map_err(|_| Error::corrupt(format!("{} is too large", self.describe(name))))?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Prefix of temporary files; anything named so is an unfinished write.
pub const TEMP_PREFIX: &str = ".tmp-";

impl Backend for LocalBackend {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        let path = self.path(name);
        let dir = path
            .parent()
            .ok_or_else(|| Error::bad_input(format!("bad repository file name {name}")))?
            .to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).at("create directory", &dir)?;
            if let Some(up) = dir.parent() {
                sync_dir(up)?;
            }
        }
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{base}-{}",
            crate::repo::random_hex(8)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .at("create", &temp)?;
        Ok(Box::new(LocalNewFile {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            path,
            dir,
            written: 0,
            flushed: 0,
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn ReadAt>> {
        let path = self.path(name);
        let file = File::open(&path).at("open", &path)?;
        let len = file.metadata().at("stat", &path)?.len();
        Ok(Box::new(LocalFile { file, len, path }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &path, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.at("list", &path)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

struct LocalNewFile {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    written: u64,
    /// Bytes handed to the kernel's writeback so far.
    flushed: u64,
}

/// Writeback is started every this many bytes, so the disk works while the
/// CPU compresses and the final fsync finds little left to write.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Write for LocalNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("file already committed"))?;
        let n = out.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_STEP {
            out.flush()?;
            crate::os::start_writeback(out.get_ref(), self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl NewFile for LocalNewFile {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io("write", &self.temp, e.into_error()))?;
        file.sync_all().at("sync", &self.temp)?;
        drop(file);
        fs::rename(&self.temp, &self.path).at("rename into place", &self.path)?;
        sync_dir(&self.dir)
    }

    fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for LocalNewFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Not committed: the temporary file is garbage. Failure to remove
            // it is harmless; verify reports such files as leftovers.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

struct LocalFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl ReadAt for LocalFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt(format!(
                    "{} ends before offset {} (it is {} bytes): the file was truncated",
                    self.path.display(),
                    offset + buf.len() as u64,
                    self.len
                ))
            } else {
                Error::io("read", &self.path, e)
            }
        })
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn map_range(&self, offset: u64, len: usize) -> Option<MappedRange> {
        if len == 0 || offset.checked_add(len as u64)? > self.len {
            return None;
        }
        MappedRange::new(&self.file, offset, len).ok()
    }
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)
}
