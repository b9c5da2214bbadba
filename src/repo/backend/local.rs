//! A repository in a folder of a local filesystem.
//!
//! A new file is written under a temporary name, made durable, and renamed
//! into place, so a reader sees a file whole or not at all. Opening never
//! blocks and never follows a link: a FIFO, a device, a directory or a
//! symbolic link where a repository file should be is reported as damage
//! naming what it is (a symlink to /dev/zero would read forever, a FIFO
//! would wait forever for a writer), and no read goes past the size the
//! open file had.
//!
//! A temporary name carries its writer (host, pid, start time; see
//! `owner`), so that an unfinished write left by a killed command can be
//! removed without ever taking the file of a writer that is about to
//! rename it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, NewFile, StoredFile, TEMP_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::interrupt::{self, Registration};
use crate::os::{self, AlignedBuf};
use crate::owner;

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

    /// A new file under a temporary name; `direct` asks for writes that
    /// bypass the page cache where the filesystem allows.
    fn create_file(&self, name: &str, direct: bool) -> Result<Box<dyn NewFile>> {
        let path = self.path(name);
        let dir = path
            .parent()
            .ok_or_else(|| Error::bad_input(format!("bad repository file name {name}")))?
            .to_path_buf();
        if !dir.is_dir() {
            if let Ok(meta) = fs::symlink_metadata(&dir) {
                let what = if meta.is_file() {
                    "a file"
                } else {
                    file_type_name(meta.file_type())
                };
                return Err(Error::corrupt(format!(
                    "{} is {what}, where the repository keeps a folder",
                    dir.display()
                ))
                .hint("move it away (platter makes the folder again); then run `platter verify`"));
            }
            fs::create_dir_all(&dir).at("create directory", &dir)?;
            // Make every new level durable, up to the repository root.
            let mut level = dir.as_path();
            while let Some(up) = level.parent() {
                sync_dir(up)?;
                if up == self.root {
                    break;
                }
                level = up;
            }
        }
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{base}-{}-{}",
            owner::this_writer(),
            crate::repo::random_hex(8)
        ));
        let cleanup = interrupt::remove_on_interrupt(&temp);
        let direct = if direct {
            os::open_direct(&temp, true).and_then(|file| DirectWriter::new(file).ok())
        } else {
            None
        };
        let sink = match direct {
            Some(writer) => Sink::Direct(writer),
            None => {
                // Not create_new: a direct open may have created it already.
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&temp)
                    .at("create", &temp)?;
                Sink::Buffered(BufWriter::with_capacity(1 << 20, file))
            }
        };
        Ok(Box::new(LocalNewFile {
            out: Some(sink),
            _cleanup: cleanup,
            temp,
            path,
            dir,
            written: 0,
            flushed: 0,
        }))
    }
}

/// Whether an unfinished write named `file` (in `dir`) will never be
/// finished: its writer is gone, or, when that cannot be told, it has not
/// changed for `owner::ABANDONED_AFTER`.
fn abandoned(file: &str, path: &Path) -> bool {
    let record = file
        .strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(_, rest)| rest.rsplit_once('-'))
        .map(|(record, _)| record);
    owner::left_behind(record, path)
}

/// What a file that is not a regular file is, for messages.
fn file_type_name(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// The error for something that is not a regular file where a repository
/// file should be.
fn not_a_file(path: &Path, what: &str) -> Error {
    Error::corrupt(format!(
        "{} is {what}, not a repository file",
        path.display()
    ))
    .hint(
        "platter writes only regular files here: put the real file in its place, or move \
         this away",
    )
}

impl Backend for LocalBackend {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.create_file(name, false)
    }

    fn create_large(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.create_file(name, true)
    }

    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>> {
        let path = self.path(name);
        // Not blocking (a FIFO would wait for a writer) and not following
        // a final symbolic link; what was opened is then checked on the
        // descriptor itself, so nothing can be swapped in between.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            // O_NOFOLLOW's ELOOP: the file itself is a link; a loop of
            // links higher up (the repository path) is the user's input.
            Err(e)
                if e.raw_os_error() == Some(libc::ELOOP)
                    && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                return Err(not_a_file(&path, "a symbolic link"));
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let meta = file.metadata().at("stat", &path)?;
        if !meta.file_type().is_file() {
            return Err(not_a_file(&path, file_type_name(meta.file_type())));
        }
        Ok(Box::new(LocalFile {
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
            path,
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            // A file where a folder was expected holds no entries.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Vec::new()),
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

    /// By the folder's entries' own metadata (not following links), not
    /// by opening each file: a folder of thousands of index files is
    /// listed at every open of the index.
    fn list_files(&self, dir: &str) -> Result<Vec<super::Listed>> {
        let path = self.path(dir);
        let mut out = Vec::new();
        for name in self.list(dir)? {
            match fs::symlink_metadata(path.join(&name)) {
                Ok(meta) if meta.file_type().is_file() => out.push(super::Listed {
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    name,
                    is_file: true,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Listed all the same (a link, a FIFO, a folder): reading
                // it says why.
                _ => out.push(super::Listed {
                    name,
                    len: 0,
                    modified: None,
                    is_file: false,
                }),
            }
        }
        Ok(out)
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

    fn remove_unfinished(&self, dir: &str, no_writers: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for file in self.list(dir)? {
            if !file.starts_with(TEMP_PREFIX) {
                continue;
            }
            // "" is the repository's own folder (a reserve or a config
            // being written).
            let name = if dir.is_empty() {
                file.clone()
            } else {
                format!("{dir}/{file}")
            };
            if no_writers || abandoned(&file, &self.path(&name)) {
                self.remove(&name)?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn keeps_reserve(&self) -> bool {
        true
    }

    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        let temp = self.path(&format!(
            "{TEMP_PREFIX}{name}-{}-{}",
            owner::this_writer(),
            crate::repo::random_hex(8)
        ));
        let _cleanup = interrupt::remove_on_interrupt(&temp);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .at("create", &temp)?;
            file.write_all(bytes).at("write", &temp)?;
            file.sync_all().at("sync", &temp)?;
            match os::rename_no_replace(&temp, &path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::bad_input(
                    format!("{} exists already: it was not replaced", path.display()),
                )),
                other => other.at("put in place", &path),
            }
        })();
        let _ = fs::remove_file(&temp);
        written?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    fn remove_on_interrupt(&self, name: &str) -> Option<Registration> {
        Some(interrupt::remove_on_interrupt(&self.path(name)))
    }
}

struct LocalNewFile {
    out: Option<Sink>,
    /// Removes the temporary file if the process is interrupted.
    _cleanup: Registration,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    written: u64,
    /// Bytes handed to the kernel's writeback so far (buffered sink).
    flushed: u64,
}

enum Sink {
    Buffered(BufWriter<File>),
    Direct(DirectWriter),
}

/// Writeback is started every this many bytes, so the disk works while the
/// CPU compresses and the final fsync finds little left to write.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Bytes a direct writer gathers before each write.
const DIRECT_BLOCK: usize = 4 << 20;

/// Direct-write buffers kept between packs: faulting in fresh memory costs
/// more than the writes themselves on some machines.
static SPARE_BUFFERS: std::sync::Mutex<Vec<AlignedBuf>> = std::sync::Mutex::new(Vec::new());
const SPARE_BUFFERS_KEPT: usize = 4;

fn take_buffer() -> io::Result<AlignedBuf> {
    let spare = SPARE_BUFFERS.lock().ok().and_then(|mut kept| kept.pop());
    match spare {
        Some(buf) => Ok(buf),
        None => AlignedBuf::new(DIRECT_BLOCK),
    }
}

fn keep_buffer(mut buf: AlignedBuf) {
    buf.clear();
    if let Ok(mut kept) = SPARE_BUFFERS.lock()
        && kept.len() < SPARE_BUFFERS_KEPT
    {
        kept.push(buf);
    }
}

/// Writes through O_DIRECT from page-aligned buffers: no page cache is
/// filled (or has to be reclaimed) for data nobody reads soon. Two buffers
/// take turns: one fills while a writer thread sends the other to disk, so
/// the caller only waits when the disk is slower than it. The last block
/// is padded for the write and the file cut back to its length.
struct DirectWriter {
    filling: AlignedBuf,
    to_disk: Option<crossbeam_channel::Sender<(AlignedBuf, u64)>>,
    spare: crossbeam_channel::Receiver<io::Result<AlignedBuf>>,
    thread: Option<std::thread::JoinHandle<File>>,
    pos: u64,
}

impl DirectWriter {
    fn new(file: File) -> io::Result<DirectWriter> {
        let (to_disk, jobs) = crossbeam_channel::bounded::<(AlignedBuf, u64)>(1);
        let (give_back, spare) = crossbeam_channel::bounded::<io::Result<AlignedBuf>>(2);
        give_back
            .send(take_buffer())
            .map_err(|_| io::Error::other("direct writer closed"))?;
        let thread = std::thread::spawn(move || {
            for (mut buf, pos) in jobs.iter() {
                let written = file.write_all_at(&buf, pos).map(|()| {
                    buf.clear();
                    buf
                });
                if give_back.send(written).is_err() {
                    break;
                }
            }
            file
        });
        Ok(DirectWriter {
            filling: take_buffer()?,
            to_disk: Some(to_disk),
            spare,
            thread: Some(thread),
            pos: 0,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.filling.fill(bytes);
            bytes = &bytes[n..];
            if self.filling.is_full() {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Hands the filled buffer to the writer thread and takes the other.
    fn send(&mut self) -> io::Result<()> {
        let closed = || io::Error::other("direct writer thread stopped");
        let next = self.spare.recv().map_err(|_| closed())??;
        let full = std::mem::replace(&mut self.filling, next);
        let len = full.len() as u64;
        self.to_disk
            .as_ref()
            .ok_or_else(closed)?
            .send((full, self.pos))
            .map_err(|_| closed())?;
        self.pos += len;
        Ok(())
    }

    fn finish(mut self) -> io::Result<File> {
        let len = self.pos + self.filling.len() as u64;
        if !self.filling.is_empty() {
            self.filling.pad();
            self.send()?;
        }
        drop(self.to_disk.take());
        // Collect both buffers: each reports its write's outcome.
        for outcome in self.spare.iter() {
            keep_buffer(outcome?);
        }
        keep_buffer(std::mem::replace(&mut self.filling, AlignedBuf::new(0)?));
        let file = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("direct writer finished twice"))?
            .join()
            .map_err(|_| io::Error::other("direct writer thread panicked"))?;
        file.set_len(len)?;
        Ok(file)
    }
}

impl Write for LocalNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.as_mut() {
            None => Err(io::Error::other("file already committed")),
            Some(Sink::Direct(out)) => {
                out.write(buf)?;
                self.written += buf.len() as u64;
                Ok(buf.len())
            }
            Some(Sink::Buffered(out)) => {
                let n = out.write(buf)?;
                self.written += n as u64;
                if self.written - self.flushed >= WRITEBACK_STEP {
                    out.flush()?;
                    os::start_writeback(out.get_ref(), self.flushed, self.written - self.flushed);
                    self.flushed = self.written;
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(Sink::Buffered(out)) => out.flush(),
            _ => Ok(()),
        }
    }
}

impl NewFile for LocalNewFile {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let committed = (|| {
            let file = match out {
                Sink::Buffered(out) => out
                    .into_inner()
                    .map_err(|e| Error::io("write", &self.temp, e.into_error()))?,
                Sink::Direct(out) => out.finish().at("write", &self.temp)?,
            };
            file.sync_all().at("sync", &self.temp)?;
            drop(file);
            fs::rename(&self.temp, &self.path).at("rename into place", &self.path)
        })();
        if committed.is_err() {
            // Not in place: the temporary file is garbage.
            let _ = fs::remove_file(&self.temp);
        }
        committed?;
        sync_dir(&self.dir)
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
    modified: Option<std::time::SystemTime>,
    path: PathBuf,
}

impl StoredFile for LocalFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        let truncated = || {
            Error::corrupt(format!(
                "{} ends before offset {} (it is {} bytes): the file was truncated",
                self.path.display(),
                end.map_or_else(|| "beyond 2^64".into(), |n| n.to_string()),
                self.len
            ))
        };
        // Never past the size it had when opened, even if it grew since.
        if end.is_none_or(|end| end > self.len) {
            return Err(truncated());
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated()
            } else {
                Error::io("read", &self.path, e)
            }
        })
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }
}

/// Makes a rename or unlink in `dir` durable. Opened as a directory, so
/// that whatever else stands there (a FIFO) fails at once instead of
/// blocking.
pub fn sync_dir(dir: &Path) -> Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)
}
