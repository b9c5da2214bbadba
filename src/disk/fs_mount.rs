//! Mounting a filesystem read-only without changing a byte of it: no
//! journal replay (ext4 `noload`, xfs `norecovery`, btrfs
//! `rescue=nologreplay`), and for xfs `nouuid`, since a restored clone
//! shares its UUID with the disk it was taken from, which may be mounted
//! on this very host. Unmounted on drop and on Ctrl-C or SIGTERM.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::{Registration, call_on_interrupt};

/// The options that keep filesystem `fstype` from writing or replaying
/// anything when mounted read-only.
fn no_replay_options(fstype: &str) -> &'static str {
    match fstype {
        "ext3" | "ext4" => "noload",
        "xfs" => "norecovery,nouuid",
        "btrfs" => "rescue=nologreplay",
        _ => "",
    }
}

/// Whether the running kernel has a driver for `fstype`
/// (/proc/filesystems). ext2 and ext3 are served by the ext4 driver.
pub fn kernel_mounts(fstype: &str) -> bool {
    let Ok(known) = std::fs::read_to_string("/proc/filesystems") else {
        return false;
    };
    let has = |name: &str| {
        known
            .lines()
            .filter_map(|line| line.split_whitespace().last())
            .any(|n| n == name)
    };
    has(fstype) || (matches!(fstype, "ext2" | "ext3") && has("ext4"))
}

/// A filesystem mounted read-only; unmounted when dropped.
pub struct ReadOnlyMount {
    point: PathBuf,
    _on_interrupt: Registration,
}

impl ReadOnlyMount {
    /// Mounts the `fstype` filesystem on `device` at `point`, read-only,
    /// without journal replay, set-uid programs or device files.
    pub fn mount(device: &Path, point: &Path, fstype: &str) -> Result<ReadOnlyMount> {
        let c = |text: &[u8]| {
            CString::new(text).map_err(|_| Error::bad_input("a path holds a NUL byte"))
        };
        let (source, target) = (
            c(device.as_os_str().as_bytes())?,
            c(point.as_os_str().as_bytes())?,
        );
        let (kind, options) = (
            c(fstype.as_bytes())?,
            c(no_replay_options(fstype).as_bytes())?,
        );
        let undo = point.to_path_buf();
        let on_interrupt = call_on_interrupt(move || unmount(&undo));
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // SAFETY: every pointer is a NUL-terminated string that lives
        // until the call returns.
        let done = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                kind.as_ptr(),
                flags,
                options.as_ptr().cast(),
            )
        };
        if done != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "cannot mount the {fstype} filesystem of {} at {}: {e}",
                    device.display(),
                    point.display()
                ),
            ));
        }
        Ok(ReadOnlyMount {
            point: point.to_path_buf(),
            _on_interrupt: on_interrupt,
        })
    }

    pub fn point(&self) -> &Path {
        &self.point
    }
}

/// Unmounts `point`, lazily if something still uses it (a shell whose
/// current folder is inside): whether it is gone from the mount table.
pub fn unmount(point: &Path) -> bool {
    let Ok(target) = CString::new(point.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `target` is a NUL-terminated string that lives until the
    // calls return.
    unsafe {
        libc::umount2(target.as_ptr(), 0) == 0
            || libc::umount2(target.as_ptr(), libc::MNT_DETACH) == 0
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        unmount(&self.point);
    }
}
