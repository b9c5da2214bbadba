//! `platter mount`: a repository's snapshots as read-only files, served by
//! FUSE (the fuser crate) from this process. [`mount`] mounts and returns
//! a [`Mounted`] guard that unmounts when dropped, so anything that needs
//! a snapshot as a file (`mount --files`, booting a snapshot) builds on it.
//!
//! Like the command line, this is an outer layer: it joins the engine's
//! random-access reader (`engine::image_reader`) with fuser (`fuse.rs`),
//! the tree of names (`tree.rs`, `names.rs`) and, for `--files`, the disk
//! layer's loop devices and mounts (`files.rs`).
//!
//! The mount holds a shared repository lock for its whole life (refreshed
//! like any long command's), so `prune` cannot delete packs under it.
//! Ctrl-C and SIGTERM unmount it (see `interrupt`): nothing is left
//! mounted, and the lock goes too.
//!
//! fuser opens /dev/fuse and mounts with the mount(2) system call when
//! run as root; for a user, mount(2) is refused and it asks the set-uid
//! fusermount3 helper (Debian package fuse3) instead, which needs /dev/fuse
//! open to users (Debian's default). It does not link libfuse.

mod files;
mod fuse;
mod names;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use files::{FileTrees, FilesystemState, mount_files};
pub use names::safe_component;
pub use tree::LayoutLines;

use crate::engine::image_reader::ImageReader;
use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::{Registration, call_on_interrupt};
use crate::repo::lock::LockKind;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotId};

pub struct MountOptions {
    /// Bytes of checked chunks kept in memory at most.
    pub cache_size: u64,
    /// The snapshots to show; `None` shows every snapshot, and those
    /// committed later too.
    pub snapshots: Option<Vec<Snapshot>>,
    /// How `layout.txt` shows a layout.
    pub layout_lines: LayoutLines,
}

/// A mounted repository; unmounted when dropped.
pub struct Mounted {
    mountpoint: PathBuf,
    tree: Arc<tree::Tree>,
    session: Option<fuser::BackgroundSession>,
    _on_interrupt: Registration,
    _lock: LockHolder,
}

/// Mounts the snapshots of `repo` at `mountpoint`, an empty folder.
pub fn mount(repo: Repository, mountpoint: &Path, options: MountOptions) -> Result<Mounted> {
    check_mountpoint(mountpoint)?;
    let repo = Arc::new(repo);
    let lock = LockHolder::take(Arc::clone(&repo))?;
    let reader = Arc::new(ImageReader::new(repo, options.cache_size)?);
    let tree = Arc::new(tree::Tree::new(
        reader,
        options.snapshots,
        options.layout_lines,
    )?);
    let point = mountpoint.to_path_buf();
    let on_interrupt = call_on_interrupt(move || unmount_fuse(&point));
    let config = session_config();
    let session = fuser::spawn_mount(
        fuse::SnapshotFs::new(Arc::clone(&tree)),
        mountpoint,
        &config,
    )
    .map_err(|e| mount_error(mountpoint, &e))?;
    Ok(Mounted {
        mountpoint: mountpoint.to_path_buf(),
        tree,
        session: Some(session),
        _on_interrupt: on_interrupt,
        _lock: lock,
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The folder of snapshot `id` in the mount, if shown.
    pub fn folder(&self, id: &SnapshotId) -> Option<PathBuf> {
        self.tree
            .folder_of(id)
            .map(|f| self.mountpoint.join(&f.name))
    }

    /// Names of the folders shown now, oldest first.
    pub fn folder_names(&self) -> Vec<(SnapshotId, String)> {
        self.tree
            .shown()
            .iter()
            .map(|f| (f.snap.id, f.name.clone()))
            .collect()
    }

    /// Waits until the mount is unmounted from outside (`umount`,
    /// `fusermount3 -u`).
    pub fn wait(&mut self) -> Result<()> {
        if let Some(session) = self.session.take() {
            session.join().map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("the mount at {} ended: {e}", self.mountpoint.display()),
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
        {
            // Busy (a shell inside it): detach it from the tree now; the
            // kernel lets go when its last user does.
            unmount_fuse(&self.mountpoint);
        }
    }
}

fn session_config() -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("platter".into()),
        fuser::MountOption::Subtype("platter".into()),
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::DefaultPermissions,
    ];
    // Several requests at once: the kernel's read-ahead and concurrent
    // readers each get a thread, and the fetch threads work for all.
    config.n_threads = Some(4);
    config.clone_fd = true;
    config
}

fn check_mountpoint(point: &Path) -> Result<()> {
    let meta = std::fs::metadata(point).map_err(|e| {
        let stale = e.raw_os_error() == Some(libc::ENOTCONN);
        let error = Error::io("use mount point", point, e);
        if stale {
            // A mount whose process was killed (SIGKILL) stays in the
            // mount table with nobody serving it.
            error.hint(format!(
                "a mount there lost its process: unmount it first (`umount {0}`, as a user \
                 `fusermount3 -u {0}`)",
                point.display()
            ))
        } else {
            error.hint("create it first (`mkdir`)")
        }
    })?;
    if !meta.is_dir() {
        return Err(Error::bad_input(format!(
            "mount point {} is not a folder",
            point.display()
        )));
    }
    // A mount in a repository hides what it covers from every command
    // (its locks, say, so that prune no longer sees who reads).
    if let Some(repo) = crate::repo::footprint::repository_around(point) {
        return Err(Error::bad_input(format!(
            "mount point {} is inside the platter repository {}",
            point.display(),
            repo.display()
        ))
        .hint("mount outside every repository"));
    }
    let empty = std::fs::read_dir(point)
        .map_err(|e| Error::io("read mount point", point, e))?
        .next()
        .is_none();
    if !empty {
        return Err(Error::bad_input(format!(
            "mount point {} is not empty: mounting would hide what it holds",
            point.display()
        ))
        .hint("use an empty folder"));
    }
    Ok(())
}

fn mount_error(point: &Path, e: &std::io::Error) -> Error {
    let error = Error::new(
        ErrorKind::Io,
        format!("cannot mount at {}: {e}", point.display()),
    );
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            error.hint("mounting needs /dev/fuse (the kernel's fuse module)")
        }
        std::io::ErrorKind::PermissionDenied => error.hint(
            "run it as root; a user needs /dev/fuse open to users (crw-rw-rw-, Debian's \
             default) and the fusermount3 helper (Debian package fuse3)",
        ),
        _ => error,
    }
}

/// Holds a shared repository lock on a thread of its own for as long as
/// it lives: the lock borrows the repository, which the mount's threads
/// share. The lock refreshes itself.
struct LockHolder {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LockHolder {
    fn take(repo: Arc<Repository>) -> Result<LockHolder> {
        let (taken_tx, taken) = crossbeam_channel::bounded::<Result<()>>(1);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("mount lock".into())
            .spawn(move || {
                let lock = crate::engine::lock_repo(
                    &repo,
                    LockKind::Shared,
                    "mount",
                    &crate::progress::Quiet,
                );
                match lock {
                    Ok(lock) => {
                        let _ = taken_tx.send(Ok(()));
                        // Until told to stop (or the holder is gone).
                        let _ = stopped.recv();
                        drop(lock);
                    }
                    Err(e) => {
                        let _ = taken_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the lock thread: {e}")))?;
        let holder = LockHolder {
            stop: Some(stop),
            thread: Some(thread),
        };
        taken
            .recv()
            .map_err(|_| Error::internal("the lock thread ended without a word"))??;
        Ok(holder)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Unmounts the FUSE mount at `point`: with umount(2) (root), else with
/// the fusermount3 helper; lazily if it is busy. Whether it is gone.
fn unmount_fuse(point: &Path) -> bool {
    if crate::disk::unmount(point) {
        return true;
    }
    std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(point)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
