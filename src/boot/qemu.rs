//! QEMU for `platter boot`: the programs it needs (each named with its
//! Debian package when missing), which firmware and accelerator to use,
//! and the command line.
//!
//! KVM is used only when it can really boot a guest. `/dev/kvm` opening is
//! not enough: on some hosts it is served by a KVM that runs only guests
//! made for it (kvm_pvm, a nested KVM without hardware virtualisation),
//! where an ordinary guest stops with "KVM internal error ... emulation
//! failure" in its boot loader. So the probe, which runs no guest and
//! cannot hang, asks for the hardware modules (kvm_intel or kvm_amd) as
//! well; anything else runs on TCG, QEMU's software CPU, which boots a
//! small Linux in seconds and anything else, more slowly.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::disk::layout::Layout;
use crate::error::{Error, Result};
use crate::os::find_program;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The EFI system partition's type: GPT's GUID, MBR's type byte.
const ESP_GPT: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ESP_MBR: &str = "0xef";
/// Where UEFI firmware looks for a loader on a disk it has no boot entry
/// for (the removable-media path): a VM's fresh firmware has none.
const FALLBACK_LOADER: &str = "::/EFI/BOOT/BOOTX64.EFI";

/// Split OVMF images (code read-only, variables copied), then the
/// one-file build; Debian's package ovmf ships both.
const OVMF_ONE_FILE: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];

pub struct Programs {
    system: PathBuf,
}

impl Programs {
    /// Every program a boot needs, or an error naming the package of the
    /// first one missing.
    pub fn find() -> Result<Programs> {
        let system = find_program("qemu-system-x86_64", "qemu-system-x86")?;
        find_program("qemu-img", crate::disk::overlay::QEMU_IMG_PACKAGE)?;
        Ok(Programs { system })
    }
}

/// UEFI when the layout has an EFI system partition holding the fallback
/// loader, else BIOS; with the reason.
pub fn firmware_for(layout: Option<&Layout>, folder: &Path) -> (Firmware, String) {
    let Some(layout) = layout else {
        return (
            Firmware::Bios,
            "no partition layout was recorded, so no EFI system partition".into(),
        );
    };
    let esps: Vec<u32> = layout
        .partitions
        .iter()
        .filter(|p| {
            p.type_id.eq_ignore_ascii_case(ESP_GPT) || p.type_id.eq_ignore_ascii_case(ESP_MBR)
        })
        .map(|p| p.number)
        .collect();
    if esps.is_empty() {
        return (
            Firmware::Bios,
            "the layout has no EFI system partition".into(),
        );
    }
    let Ok(mdir) = find_program("mdir", "mtools") else {
        return (
            Firmware::Uefi,
            format!(
                "partition {} is an EFI system partition (mtools is not installed to look for \
                 its loader)",
                esps[0]
            ),
        );
    };
    for n in &esps {
        let image = folder.join(format!("part{n}.img"));
        let found = std::process::Command::new(&mdir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i"])
            .arg(&image)
            .arg(FALLBACK_LOADER)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return (
                Firmware::Uefi,
                format!("EFI system partition {n} holds a loader (\\EFI\\BOOT\\BOOTX64.EFI)"),
            );
        }
    }
    (
        Firmware::Bios,
        format!(
            "EFI system partition {} holds no \\EFI\\BOOT\\BOOTX64.EFI (use --firmware uefi if \
             it boots another way)",
            esps[0]
        ),
    )
}

/// QEMU's arguments for `firmware`.
pub fn firmware_args(firmware: Firmware) -> Result<Vec<OsString>> {
    match firmware {
        // SeaBIOS, built into QEMU.
        Firmware::Bios => Ok(Vec::new()),
        Firmware::Uefi => OVMF_ONE_FILE
            .iter()
            .find(|f| Path::new(f).is_file())
            .map(|f| vec!["-bios".into(), (*f).into()])
            .ok_or_else(|| {
                Error::not_found(format!(
                    "UEFI firmware (OVMF) is not installed: none of {}",
                    OVMF_ONE_FILE.join(", ")
                ))
                .hint("install it: apt-get install ovmf (or boot with --firmware bios)")
            }),
    }
}

/// Whether /dev/kvm can be opened, as --accel kvm needs.
pub fn kvm_openable() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| {
            Error::io("use KVM", Path::new("/dev/kvm"), e)
                .hint("boot with --accel tcg (the software CPU)")
        })
}

/// KVM when it can boot an ordinary guest here, else TCG; with the reason.
pub fn probe_accel() -> (Accel, String) {
    if let Err(e) = kvm_openable() {
        return (
            Accel::Tcg,
            format!("the software CPU: {}", e.message().trim_end_matches(':')),
        );
    }
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .find(|m| Path::new("/sys/module").join(m).exists());
    match hardware {
        Some(module) => (
            Accel::Kvm,
            format!("/dev/kvm is hardware virtualisation ({module})"),
        ),
        None => (
            Accel::Tcg,
            "the software CPU: /dev/kvm is not backed by kvm_intel or kvm_amd, and other KVMs \
             (kvm_pvm) cannot boot an ordinary guest (--accel kvm tries anyway)"
                .into(),
        ),
    }
}

/// A QEMU command line.
pub struct Command {
    pub programs: Programs,
    pub accel: Accel,
    pub memory_mib: u64,
    pub firmware_args: Vec<OsString>,
    pub overlay: PathBuf,
    pub name: String,
    pub extra: Vec<OsString>,
}

impl Command {
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-name".into(),
            self.name.clone().into(),
            "-accel".into(),
            self.accel.name().into(),
            "-cpu".into(),
            match self.accel {
                Accel::Kvm => "host",
                Accel::Tcg => "max",
            }
            .into(),
            "-m".into(),
            self.memory_mib.to_string().into(),
        ];
        args.extend(self.firmware_args.iter().cloned());
        // IDE: every guest kernel and boot loader has a driver for it.
        let mut drive = b"file=".to_vec();
        drive.extend(escape_commas(self.overlay.as_os_str().as_bytes()));
        drive.extend(b",format=qcow2,if=ide,index=0,media=disk");
        args.push("-drive".into());
        args.push(OsString::from_vec(drive));
        args.extend(self.extra.iter().cloned());
        args
    }

    pub fn spawn(&self) -> Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.programs.system);
        cmd.args(self.args());
        // QEMU never outlives platter, even a platter killed with SIGKILL
        // or one whose interrupt watcher ran just before QEMU started: the
        // kernel sends it SIGTERM when the thread that started it ends.
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|e| Error::io("start QEMU", &self.programs.system, e))
    }
}

/// QEMU's option values separate fields with commas; a comma in a value
/// is written twice.
fn escape_commas(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    out
}

/// Stops QEMU (pid, or 0 for none): SIGTERM, which QEMU takes as a power
/// cut, then SIGKILL after 5 s. Whether it is gone.
pub fn stop(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill sends a signal to a process we started; no memory is
    // involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if gone_within(pid, Duration::from_secs(5)) {
        return true;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    gone_within(pid, Duration::from_secs(2))
}

/// Waits up to `limit` for process `pid` to be gone (reaped by the thread
/// that waits for it).
fn gone_within(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_a_path_are_doubled() {
        assert_eq!(escape_commas(b"/tmp/a,b/o.qcow2"), b"/tmp/a,,b/o.qcow2");
        assert_eq!(escape_commas(b"plain"), b"plain");
    }
}
