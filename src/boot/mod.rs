//! `platter boot`: instant recovery. A snapshot boots as a virtual machine
//! in seconds, without a restore: the snapshot is mounted (the mount
//! library, in a private temporary folder), a qcow2 overlay is made over
//! its `disk.img` (`disk::overlay`), and QEMU runs on the overlay. The
//! guest reads the snapshot through the mount's checked reader and writes
//! only to the overlay: the repository is never written (the mount is
//! read-only, and the overlay names `disk.img` as a read-only backing file).
//!
//! Like `mount`, this is an outer layer: it joins the mount with QEMU
//! (`qemu.rs`: the programs, firmware, accelerator and command line).
//!
//! `--keep-overlay FILE` keeps the overlay; given an overlay an earlier
//! boot of the same snapshot kept (checked as `restore --overlay` checks
//! one), the guest goes on from its writes: the overlay's recorded backing
//! file, the earlier boot's private mount, is replaced by this one's.
//!
//! Everything it makes is undone when QEMU exits, on Ctrl-C and on SIGTERM,
//! in the reverse order of making: QEMU is stopped, the overlay removed
//! (unless `--keep-overlay` asked to keep it), the snapshot unmounted, the
//! repository's lock released and the temporary folder removed. The
//! registrations with `interrupt` are made in making order for that.

mod check;
mod qemu;

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

pub use check::{BootCheck, BootWatch};
pub use qemu::{Accel, Firmware};

use crate::disk::layout::Layout;
use crate::disk::overlay;
use crate::engine::restore::check_overlay;
use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::{self, Registration};
use crate::mount::{LayoutLines, MountOptions, Mounted, mount};
use crate::repo::footprint::repository_around;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotId};

pub struct BootOptions {
    /// `None`: UEFI when the layout has an EFI system partition with a
    /// loader, else BIOS.
    pub firmware: Option<Firmware>,
    /// `None`: KVM when it can boot a guest here, else TCG.
    pub accel: Option<Accel>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Keep the overlay (the guest's writes) at this path; it must not
    /// exist yet.
    pub keep_overlay: Option<PathBuf>,
    /// Further QEMU arguments, passed as they are.
    pub qemu_args: Vec<OsString>,
    /// Bytes of checked chunks the mount keeps in memory at most.
    pub cache_size: u64,
    /// How the mount's `layout.txt` shows a layout.
    pub layout_lines: LayoutLines,
}

/// Why each choice was made, for the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootPlan {
    pub snapshot: SnapshotId,
    pub firmware: Firmware,
    pub firmware_reason: String,
    pub accel: Accel,
    pub accel_reason: String,
    /// The overlay QEMU writes to.
    pub overlay: PathBuf,
    /// Whether the overlay stays after QEMU exits.
    pub overlay_kept: bool,
    /// Whether the overlay was kept by an earlier boot, whose writes the
    /// guest sees again.
    pub overlay_resumed: bool,
    /// The snapshot's image, read-only, in the private mount.
    pub disk_image: PathBuf,
    pub size: u64,
    /// Why the guest may not boot (a partition's snapshot, no boot code).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BootReport {
    #[serde(flatten)]
    pub plan: BootPlan,
    /// Bytes the overlay held when QEMU exited (the guest's writes).
    pub overlay_bytes: u64,
    pub duration_s: f64,
}

/// A snapshot mounted with its overlay made, ready to boot. Dropping it
/// undoes everything (the overlay stays only if it is to be kept).
pub struct Prepared {
    plan: BootPlan,
    qemu: qemu::Command,
    // Dropped in this order: the QEMU stopper, the mount, then the scratch
    // folder (the mount point is inside it).
    qemu_pid: Arc<AtomicI32>,
    _stop_qemu: Registration,
    mounted: Option<Mounted>,
    _scratch: Scratch,
}

/// Mounts `snap` of `repo` privately and makes its overlay (or points a
/// kept one at the new mount): everything up to starting QEMU. A refusal
/// leaves nothing behind: what was made is undone as the error returns.
pub fn prepare(repo: Repository, snap: Snapshot, options: BootOptions) -> Result<Prepared> {
    let programs = qemu::Programs::find()?;
    // An overlay kept by an earlier boot of this snapshot goes on.
    let resumed = match &options.keep_overlay {
        Some(keep) => check_kept_overlay(keep, &snap)?,
        None => false,
    };
    let layout = match snap.parsed_layout::<Layout>() {
        Some(Ok(layout)) => Some(layout),
        _ => None,
    };
    let scratch = Scratch::make()?;
    let mounted = mount(
        repo,
        &scratch.mountpoint,
        MountOptions {
            cache_size: options.cache_size,
            snapshots: Some(vec![snap.clone()]),
            layout_lines: options.layout_lines,
        },
    )?;
    let folder = mounted.folder(&snap.id).ok_or_else(|| {
        Error::internal(format!("snapshot {} is not in its mount", snap.short_id()))
    })?;
    let disk_image = folder.join("disk.img");
    let (firmware, firmware_reason) = match options.firmware {
        Some(f) => (f, "chosen with --firmware".to_string()),
        None => qemu::firmware_for(layout.as_ref(), &folder),
    };
    let firmware_args = qemu::firmware_args(firmware)?;
    let (accel, accel_reason) = match options.accel {
        Some(Accel::Kvm) => {
            qemu::kvm_openable()?;
            (Accel::Kvm, "chosen with --accel".to_string())
        }
        Some(Accel::Tcg) => (Accel::Tcg, "chosen with --accel".to_string()),
        None => qemu::probe_accel(),
    };
    let (overlay_path, overlay_kept) = match &options.keep_overlay {
        Some(keep) => (keep.clone(), true),
        None => (scratch.dir.join("overlay.qcow2"), false),
    };
    // A kept overlay is removed only if this command fails before QEMU
    // runs; once the guest ran, its writes are what was asked for.
    let overlay_guard = if resumed {
        // Its recorded backing file was the earlier boot's mount.
        overlay::rebase_unchecked(&overlay_path, &disk_image)?;
        None
    } else {
        let guard = OverlayGuard::new(&overlay_path);
        overlay::create(&disk_image, &overlay_path)?;
        Some(guard)
    };
    let qemu = qemu::Command {
        programs,
        accel,
        memory_mib: options.memory_mib,
        firmware_args,
        overlay: overlay_path.clone(),
        name: format!("platter-{}", snap.short_id()),
        extra: options.qemu_args,
    };
    let qemu_pid = Arc::new(AtomicI32::new(0));
    let stop_qemu = {
        let pid = Arc::clone(&qemu_pid);
        interrupt::call_on_interrupt(move || qemu::stop(pid.load(Ordering::SeqCst)))
    };
    if let Some(guard) = overlay_guard {
        guard.disarm();
    }
    Ok(Prepared {
        plan: BootPlan {
            snapshot: snap.id,
            firmware,
            firmware_reason,
            accel,
            accel_reason,
            overlay: overlay_path,
            overlay_kept,
            overlay_resumed: resumed,
            disk_image,
            size: snap.source.size,
            warnings: doubts(&snap, layout.as_ref(), firmware),
        },
        qemu,
        qemu_pid,
        _stop_qemu: stop_qemu,
        mounted: Some(mounted),
        _scratch: scratch,
    })
}

impl Prepared {
    pub fn plan(&self) -> &BootPlan {
        &self.plan
    }

    /// The private folder (mount point, overlay unless kept).
    fn scratch_dir(&self) -> &Path {
        &self._scratch.dir
    }

    /// Runs QEMU until it exits, then undoes everything.
    pub fn run(mut self) -> Result<BootReport> {
        let started = Instant::now();
        if interrupt::exit_is_pending() {
            // Interrupted while preparing: the watcher is undoing it all.
            loop {
                std::thread::park();
            }
        }
        let mut child = self.qemu.spawn()?;
        self.qemu_pid.store(child.id() as i32, Ordering::SeqCst);
        let status = child.wait();
        self.qemu_pid.store(0, Ordering::SeqCst);
        if interrupt::exit_is_pending() {
            // The interrupt watcher stops QEMU, unmounts and removes
            // everything, then exits with the signal's code: touching the
            // same things from here would race it.
            loop {
                std::thread::park();
            }
        }
        let status = status
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot wait for QEMU to exit: {e}")))?;
        if !status.success() {
            // Everything is undone by the drops; QEMU said why on stderr.
            return Err(Error::new(
                ErrorKind::Io,
                match status.code() {
                    Some(code) => format!("QEMU exited with code {code} (its messages are above)"),
                    None => format!("QEMU was ended by a signal ({status})"),
                },
            )
            .hint("check the QEMU arguments after `--`; the repository was not changed"));
        }
        let overlay_bytes = std::fs::metadata(&self.plan.overlay)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        drop(self.mounted.take());
        Ok(BootReport {
            plan: self.plan.clone(),
            overlay_bytes,
            duration_s: started.elapsed().as_secs_f64(),
        })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // The mount goes before the folder it is in (Scratch's drop).
        drop(self.mounted.take());
    }
}

/// What makes a boot unlikely to find anything to boot, said before QEMU
/// runs so that a firmware screen saying "no bootable device" is explained.
fn doubts(snap: &Snapshot, layout: Option<&Layout>, firmware: Firmware) -> Vec<String> {
    if let Some(n) = snap.source.partition {
        return vec![format!(
            "snapshot {} is of partition {n} alone, not a whole disk: it holds no partition table or boot loader of its disk, so it will likely not boot",
            snap.short_id()
        )];
    }
    match layout {
        Some(l) if firmware == Firmware::Bios && !l.boot_code => vec![format!(
            "the first sector of snapshot {} holds no boot code, so BIOS will likely find nothing to boot (--firmware uefi if it boots with UEFI)",
            snap.short_id()
        )],
        _ => Vec::new(),
    }
}

/// Whether `path`, given to --keep-overlay, is an overlay kept by an
/// earlier boot of `snap` (true) or a new file to make (false); refused if
/// it is anything else, if its folder does not exist, or if it lies in a
/// repository.
fn check_kept_overlay(path: &Path, snap: &Snapshot) -> Result<bool> {
    let exists = path.symlink_metadata().is_ok();
    if exists {
        check_overlay(path, snap).map_err(|e| {
            e.hint("--keep-overlay takes a new file, or one an earlier boot of this snapshot kept")
        })?;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::not_found(format!(
            "folder {} for the overlay does not exist",
            parent.display()
        ))
        .hint("create it first (`mkdir -p`)"));
    }
    // The guest's writes never go into a repository, this one or another.
    if let Some(repo) = repository_around(parent) {
        return Err(Error::bad_input(format!(
            "{} is inside the platter repository {}: the guest's writes would go into it",
            path.display(),
            repo.display()
        ))
        .hint("keep the overlay outside every repository"));
    }
    Ok(exists)
}

/// The private temporary folder: the mount point and, unless kept, the
/// overlay. Removed when dropped, and on an interruption (after the
/// unmount, which was registered later and so runs first).
struct Scratch {
    dir: PathBuf,
    mountpoint: PathBuf,
    _on_interrupt: Registration,
}

impl Scratch {
    fn make() -> Result<Scratch> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random)
            .map_err(|e| Error::internal(format!("no random numbers: {e}")))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("platter-boot-{}-{name}", std::process::id()));
        // Private (0700): it holds the snapshot's files while mounted.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::io("make a temporary folder", &dir, e)
                    .hint("set TMPDIR to a folder where one can be made")
            })?;
        let mountpoint = dir.join("mnt");
        let on_interrupt = {
            let dir = dir.clone();
            interrupt::call_on_interrupt(move || remove_scratch(&dir))
        };
        let scratch = Scratch {
            dir,
            mountpoint,
            _on_interrupt: on_interrupt,
        };
        std::fs::create_dir(&scratch.mountpoint)
            .map_err(|e| Error::io("make a mount point", &scratch.mountpoint, e))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_scratch(&self.dir);
    }
}

/// Removes what platter put in the scratch folder, and the folder: never
/// anything inside a mount point still mounted (rmdir fails on it).
fn remove_scratch(dir: &Path) -> bool {
    let _ = std::fs::remove_file(dir.join("overlay.qcow2"));
    let _ = std::fs::remove_file(dir.join(check::CONSOLE));
    let _ = std::fs::remove_dir(dir.join("mnt"));
    std::fs::remove_dir(dir).is_ok()
}

/// Removes a kept overlay if the command fails before QEMU starts.
struct OverlayGuard {
    path: PathBuf,
    armed: bool,
    _on_interrupt: Registration,
}

impl OverlayGuard {
    fn new(path: &Path) -> OverlayGuard {
        OverlayGuard {
            path: path.to_path_buf(),
            armed: true,
            _on_interrupt: interrupt::remove_on_interrupt(path),
        }
    }

    /// The overlay is made and QEMU is about to run: from now on a
    /// temporary one goes with the scratch folder and a kept one stays.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for OverlayGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
