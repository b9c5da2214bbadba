//! Attaching an image file to a loop device, so the kernel can mount or
//! check the filesystem inside it: read-only for `platter mount --files`
//! (the partition files of a mounted snapshot), writable and limited to a
//! partition's bytes for a job's restore test (a journal may be replayed
//! on its scratch copy).
//!
//! The device is set up in one step (LOOP_CONFIGURE) with auto-clear, so
//! the kernel detaches it by itself once the last user (a filesystem
//! mounted from it, this process) lets go; `LoopDevice` detaches it on
//! drop too, and on Ctrl-C or SIGTERM (see `interrupt`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::ioctl::LoopInfo64;
use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::{Registration, call_on_interrupt};

/// The kernel's `struct loop_config` (linux/loop.h, Linux 5.8 and later).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);

/// Attempts at finding a free device: another process may take the one
/// the kernel named before we configure it.
const ATTEMPTS: usize = 10;

/// A loop device showing a file; detached when dropped.
pub struct LoopDevice {
    path: PathBuf,
    device: File,
    _on_interrupt: Registration,
}

impl LoopDevice {
    /// Attaches `image` read-only to a free loop device.
    pub fn read_only(image: &Path) -> Result<LoopDevice> {
        let backing = File::open(image).map_err(|e| Error::io("open", image, e))?;
        LoopDevice::attach(image, &backing, LO_FLAGS_READ_ONLY, None)
    }

    /// Attaches `image` writable to a free loop device, showing only
    /// `size` bytes from `offset` when `span` is given.
    pub fn writable(image: &Path, span: Option<(u64, u64)>) -> Result<LoopDevice> {
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|e| Error::io("open", image, e))?;
        LoopDevice::attach(image, &backing, 0, span)
    }

    fn attach(
        image: &Path,
        backing: &File,
        flags: u32,
        span: Option<(u64, u64)>,
    ) -> Result<LoopDevice> {
        let control = File::open("/dev/loop-control").map_err(|e| {
            Error::io("open", Path::new("/dev/loop-control"), e)
                .hint("attaching a loop device needs root and the loop driver")
        })?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a
            // device number; the fd is open for the call.
            let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot find a free loop device: {e}"),
                )
            })?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let undo = path.clone();
            let on_interrupt = call_on_interrupt(move || detach(&undo));
            match configure(&device, backing, flags, span) {
                Ok(()) => {
                    return Ok(LoopDevice {
                        path,
                        device,
                        _on_interrupt: on_interrupt,
                    });
                }
                // Someone else took it meanwhile: ask again.
                Err(nix::errno::Errno::EBUSY) => last = Some(nix::errno::Errno::EBUSY),
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "cannot attach {} to loop device {}: {e}",
                            image.display(),
                            path.display()
                        ),
                    ));
                }
            }
        }
        Err(Error::busy(format!(
            "cannot attach {} to a loop device: every free one was taken by someone else \
             first ({})",
            image.display(),
            last.map_or_else(String::new, |e| e.to_string())
        ))
        .hint("try again"))
    }

    /// The device, e.g. /dev/loop3.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn configure(
    device: &File,
    backing: &File,
    flags: u32,
    span: Option<(u64, u64)>,
) -> nix::Result<()> {
    // SAFETY: LoopConfig is plain integers and byte arrays, for which all
    // zeros is a valid value.
    let mut config: LoopConfig = unsafe { std::mem::zeroed() };
    config.fd = backing.as_raw_fd() as u32;
    config.info.set_flags(flags | LO_FLAGS_AUTOCLEAR);
    if let Some((offset, size)) = span {
        config.info.set_span(offset, size);
    }
    // SAFETY: LOOP_CONFIGURE reads one struct loop_config through the
    // pointer, which points at a live local of that exact layout; both
    // fds are open for the call (the kernel takes its own reference to
    // the backing file).
    unsafe { loop_configure(device.as_raw_fd(), &config) }.map(|_| ())
}

/// Detaches the loop device at `path`; whether it is detached now.
fn detach(path: &Path) -> bool {
    match File::open(path) {
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is open for the
        // call.
        Ok(device) => unsafe { loop_clr_fd(device.as_raw_fd()) }.is_ok(),
        Err(_) => false,
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: as in `detach`. A device still in use (a filesystem
        // that could not be unmounted) fails with EBUSY and is detached
        // by auto-clear when its last user lets go.
        let _ = unsafe { loop_clr_fd(self.device.as_raw_fd()) };
    }
}
