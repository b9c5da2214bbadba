//! The FUSE side of a mount: fuser's `Filesystem` over the tree
//! (`tree.rs`) and the snapshot reader (`engine::image_reader`). Read-only
//! throughout: an open for writing is EROFS.
//!
//! A read that touches a chunk that cannot be read (damaged, missing, or
//! in a store out of reach) fails whole with EIO, never with a short
//! reply, which the kernel would take as the end of the file and fill
//! with zeros. The chunk's byte range is logged once per file, so the
//! user learns which range is lost while the rest stays readable.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use super::names::Node;
use super::tree::{Content, Kind, SnapFolder, Tree};
use crate::engine::image_reader::SnapshotImage;
use crate::printable::to_stderr;

/// How long the kernel may keep what it was told: short, since the root
/// changes when snapshots are committed or forgotten.
const TTL: Duration = Duration::from_secs(1);

/// Kernel read-ahead for the image files, in bytes.
const KERNEL_READ_AHEAD: u32 = 1 << 20;

/// An open image file.
struct Handle {
    image: Arc<SnapshotImage>,
    /// Where the file starts in the image, and its length.
    offset: u64,
    len: u64,
    /// Where the last read ended, to tell a sequential reader.
    last_end: AtomicU64,
    name: String,
}

pub struct SnapshotFs {
    tree: Arc<Tree>,
    uid: u32,
    gid: u32,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    /// Damaged ranges already logged: (file, offset in the file).
    logged: Mutex<HashSet<(String, u64)>>,
}

impl SnapshotFs {
    pub fn new(tree: Arc<Tree>) -> SnapshotFs {
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        SnapshotFs {
            tree,
            uid,
            gid,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            logged: Mutex::new(HashSet::new()),
        }
    }

    fn attr(&self, node: Node) -> Option<FileAttr> {
        let (kind, size, time) = match node {
            Node::Root => (Kind::Dir, 0, self.tree.started),
            Node::Latest => (
                Kind::Link,
                self.tree.latest()?.len() as u64,
                self.tree.started,
            ),
            Node::MountDir(n) => {
                if !self.tree.has_mount_dir(n) {
                    return None;
                }
                (Kind::Dir, 0, self.tree.started)
            }
            Node::Folder(k) => (Kind::Dir, 0, taken(&*self.tree.folder(k)?)),
            Node::Layout(k) | Node::Disk(k) | Node::Part(k, _) => {
                let folder = self.tree.folder(k)?;
                let size = match &folder.file(node)?.content {
                    Content::Text(text) => text.len() as u64,
                    Content::Image { len, .. } => *len,
                };
                (Kind::File, size, taken(&folder))
            }
        };
        let (kind, perm) = match kind {
            Kind::Dir => (FileType::Directory, 0o555),
            Kind::File => (FileType::RegularFile, 0o444),
            Kind::Link => (FileType::Symlink, 0o777),
        };
        Some(FileAttr {
            ino: INodeNo(node.ino()),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        })
    }

    /// The entries of directory `node`, after `.` and `..`.
    fn entries(&self, node: Node) -> Option<Vec<(Node, Kind, String)>> {
        match node {
            Node::Root => Some(self.tree.root_entries()),
            Node::MountDir(_) => Some(Vec::new()),
            Node::Folder(k) => {
                let folder = self.tree.folder(k)?;
                Some(
                    folder
                        .files
                        .iter()
                        .map(|f| (f.node, Kind::File, f.name.clone()))
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// Logs, once per file and range, that a read failed.
    fn log_failure(&self, handle: &Handle, range: (u64, u64), why: &str) {
        // The range as the file sees it.
        let start = range.0.saturating_sub(handle.offset);
        let end = (range.0 + range.1)
            .saturating_sub(handle.offset)
            .min(handle.len);
        let first = self
            .logged
            .lock()
            .map(|mut l| l.insert((handle.name.clone(), start)))
            .unwrap_or(true);
        if first {
            to_stderr(&format!(
                "platter: {}: bytes {start}..{end} cannot be read, reads there fail with EIO: {why}",
                handle.name
            ));
        }
    }

    fn open_image(&self, folder: &SnapFolder, node: Node) -> Result<Handle, Errno> {
        let file = folder.file(node).ok_or(Errno::ENOENT)?;
        let Content::Image { offset, len } = file.content else {
            return Err(Errno::EINVAL);
        };
        let name = format!("{}/{}", folder.name, file.name);
        let image = self.tree.image(folder).map_err(|e| {
            to_stderr(&format!("platter: {name} cannot be opened: {e}"));
            Errno::EIO
        })?;
        Ok(Handle {
            image,
            offset,
            len,
            last_end: AtomicU64::new(u64::MAX),
            name,
        })
    }
}

fn taken(folder: &SnapFolder) -> SystemTime {
    folder
        .snap
        .parsed_time()
        .map_or(SystemTime::UNIX_EPOCH, SystemTime::from)
}

impl Filesystem for SnapshotFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // As much as the kernel allows, up to 1 MiB.
        if let Err(most) = config.set_max_readahead(KERNEL_READ_AHEAD) {
            let _ = config.set_max_readahead(most);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(entries) = Node::from_ino(parent.0).and_then(|n| self.entries(n)) else {
            return reply.error(Errno::ENOENT);
        };
        let found = entries
            .into_iter()
            .find(|(_, _, n)| OsStr::new(n) == name)
            .and_then(|(node, _, _)| self.attr(node));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Node::from_ino(ino.0).and_then(|n| self.attr(n)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match (Node::from_ino(ino.0), self.tree.latest()) {
            (Some(Node::Latest), Some(name)) => reply.data(name.as_bytes()),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let node = Node::from_ino(ino.0);
        let handle = match node {
            Some(node @ (Node::Disk(k) | Node::Part(k, _))) => match self.tree.folder(k) {
                Some(folder) => self.open_image(&folder, node),
                None => Err(Errno::ENOENT),
            },
            Some(Node::Layout(_)) => {
                return reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            }
            _ => Err(Errno::ENOENT),
        };
        match handle {
            Ok(handle) => {
                let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut handles) = self.handles.lock() {
                    handles.insert(fh, Arc::new(handle));
                }
                // A snapshot never changes: what the kernel cached stays true.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        if let Some(Node::Layout(k)) = Node::from_ino(ino.0) {
            let text = self
                .tree
                .folder(k)
                .and_then(|f| match &f.file(Node::Layout(k))?.content {
                    Content::Text(text) => Some(Arc::clone(text)),
                    Content::Image { .. } => None,
                });
            return match text {
                Some(text) => {
                    let start = (offset as usize).min(text.len());
                    let end = start.saturating_add(size as usize).min(text.len());
                    reply.data(&text[start..end])
                }
                None => reply.error(Errno::ENOENT),
            };
        }
        let handle = self.handles.lock().ok().and_then(|h| h.get(&fh.0).cloned());
        let Some(handle) = handle else {
            return reply.error(Errno::EBADF);
        };
        if offset >= handle.len {
            return reply.data(&[]);
        }
        let len = u64::from(size).min(handle.len - offset);
        let previous = handle.last_end.swap(offset + len, Ordering::Relaxed);
        let sequential = previous == offset;
        // The bytes go to the kernel straight from the cached chunk.
        let mut reply = Some(reply);
        let read =
            handle
                .image
                .read_with(handle.offset + offset, len as usize, sequential, |bytes| {
                    if let Some(reply) = reply.take() {
                        reply.data(bytes);
                    }
                });
        if let Err(failure) = read {
            let e = &failure.error;
            let next = if e.is_transient() {
                "the store is out of reach; reads there fail until it answers again"
            } else {
                "`platter verify --read-data` lists every damaged chunk, `platter repair \
                 --from COPY` mends them"
            };
            self.log_failure(&handle, failure.range, &format!("{e}; {next}"));
            if let Some(reply) = reply.take() {
                reply.error(Errno::EIO);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut handles) = self.handles.lock() {
            handles.remove(&fh.0);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = Node::from_ino(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(entries) = self.entries(node) else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all = vec![
            (node, Kind::Dir, ".".to_string()),
            (Node::Root, Kind::Dir, "..".to_string()),
        ];
        all.extend(entries);
        for (i, (node, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            let kind = match kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
                Kind::Link => FileType::Symlink,
            };
            if reply.add(INodeNo(node.ino()), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}
