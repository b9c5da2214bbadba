//! The kernel modules that go onto the medium: drivers for common disks,
//! buses, keyboards and network cards, and the filesystems USB backup
//! disks are formatted with, each with the modules it depends on (read
//! from its own `.modinfo`: a kernel package ships no modules.dep, depmod
//! makes that when installing). The init script loads them in the order
//! given here, dependencies first.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSection};

use crate::error::{Error, Result};

/// Modules wanted on the medium, with what each is for. A module the
/// kernel has built in needs no file; one the kernel lacks is reported.
pub const WANTED: &[(&str, &str)] = &[
    // Checksums the filesystems ask the kernel for by name when they load
    // (libcrc32c asks for "crc32c"): first, since the medium has no
    // modprobe for the kernel to call.
    ("crc32c_generic", "ext4 and btrfs checksums"),
    ("crc32c_intel", "fast ext4 and btrfs checksums"),
    ("xxhash_generic", "btrfs xxhash checksums"),
    ("blake2b_generic", "btrfs blake2b checksums"),
    ("sha256_generic", "btrfs sha256 checksums"),
    // Disks and buses.
    ("ahci", "SATA disks"),
    ("ata_piix", "older IDE/SATA controllers and QEMU's IDE"),
    ("nvme", "NVMe disks"),
    ("sd_mod", "SCSI, SATA and USB disks"),
    ("sr_mod", "CD drives"),
    ("virtio_pci", "virtual machines"),
    ("virtio_blk", "virtual machines' disks"),
    ("virtio_scsi", "virtual machines' SCSI disks"),
    ("vmw_pvscsi", "VMware disks"),
    ("hv_storvsc", "Hyper-V disks"),
    ("megaraid_sas", "MegaRAID controllers"),
    ("mpt3sas", "LSI SAS controllers"),
    ("mmc_block", "SD cards"),
    ("sdhci_pci", "SD card readers"),
    ("xhci_pci", "USB 3"),
    ("ehci_pci", "USB 2"),
    ("ohci_pci", "USB 1"),
    ("uhci_hcd", "USB 1"),
    ("usb_storage", "USB disks"),
    ("uas", "fast USB disks"),
    // Keyboards.
    ("usbhid", "USB keyboards"),
    ("hid_generic", "USB keyboards"),
    // Filesystems of repository disks.
    ("ext4", "ext2/3/4 filesystems"),
    ("xfs", "XFS filesystems"),
    ("btrfs", "btrfs filesystems"),
    ("vfat", "FAT filesystems"),
    ("nls_cp437", "FAT file names"),
    ("nls_iso8859_1", "FAT file names"),
    ("nls_utf8", "FAT file names"),
    ("exfat", "exFAT filesystems"),
    ("ntfs3", "NTFS filesystems"),
    // Network cards, for repositories on object storage.
    ("virtio_net", "virtual machines' network"),
    ("e1000", "Intel network cards (and QEMU's default)"),
    ("e1000e", "Intel network cards"),
    ("igb", "Intel server network cards"),
    ("igc", "Intel 2.5G network cards"),
    ("ixgbe", "Intel 10G network cards"),
    ("r8169", "Realtek network cards"),
    ("tg3", "Broadcom network cards"),
    ("vmxnet3", "VMware network"),
    ("hv_netvsc", "Hyper-V network"),
];

/// One module's file, ready for the initramfs.
pub struct Module {
    /// Its name, with `_` for `-` as the kernel knows it.
    pub name: String,
    /// The module, uncompressed.
    pub bytes: Vec<u8>,
}

pub struct Selection {
    /// The kernel release (the folder name under lib/modules).
    pub release: String,
    /// Every module to load, each after the ones it depends on.
    pub ordered: Vec<Module>,
    /// Wanted modules this kernel has neither built in nor as a file:
    /// (name, what it is for).
    pub absent: Vec<(&'static str, &'static str)>,
}

/// Picks the wanted modules and their dependencies from the unpacked
/// kernel package at `tree`.
pub fn select(tree: &Path) -> Result<Selection> {
    let base = tree.join("lib/modules");
    let release = fs::read_dir(&base)
        .map_err(|e| Error::io("list", &base, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| base.join(name).join("kernel").is_dir())
        .ok_or_else(|| {
            Error::not_found(format!(
                "the kernel package has no modules under {}",
                base.display()
            ))
            .hint("name a Debian kernel image package with --kernel-package")
        })?;
    let root = base.join(&release);
    let mut files = HashMap::new();
    index(&root.join("kernel"), &mut files)?;
    let builtin = builtin_names(&root.join("modules.builtin"));
    let mut walk = Walk {
        files: &files,
        builtin: &builtin,
        done: HashSet::new(),
        ordered: Vec::new(),
    };
    let mut absent = Vec::new();
    for &(name, what) in WANTED {
        if builtin.contains(name) {
            continue;
        }
        if files.contains_key(name) {
            walk.visit(name, 0)?;
        } else {
            absent.push((name, what));
        }
    }
    Ok(Selection {
        release,
        ordered: walk.ordered,
        absent,
    })
}

struct Walk<'a> {
    files: &'a HashMap<String, PathBuf>,
    builtin: &'a HashSet<String>,
    done: HashSet<String>,
    ordered: Vec<Module>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str, depth: usize) -> Result<()> {
        if self.done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if depth > 32 {
            return Err(Error::corrupt(format!(
                "kernel module {name}: its dependencies go deeper than 32 (a cycle?)"
            )));
        }
        let Some(path) = self.files.get(name) else {
            return Err(Error::not_found(format!(
                "the kernel package lacks module {name}, which another wanted module needs"
            )));
        };
        let bytes = uncompressed(path)?;
        let (depends, soft) = modinfo(&bytes, path)?;
        // Marked before its dependencies are visited, so a cycle ends.
        self.done.insert(name.to_string());
        for dep in &depends {
            self.visit(dep, depth + 1)?;
        }
        // Soft dependencies name modules or aliases ("crc32c"); only the
        // ones that are module names are followed, and the checksum
        // modules those aliases stand for are wanted by name above.
        for dep in soft {
            if self.files.contains_key(&dep) {
                self.visit(&dep, depth + 1)?;
            }
        }
        self.ordered.push(Module {
            name: name.to_string(),
            bytes,
        });
        Ok(())
    }
}

/// The kernel's spelling of a module name.
fn normal(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its file name (`ext4.ko`, `nls_iso8859-1.ko.xz`).
fn module_name(file: &str) -> Option<String> {
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(normal(stem))
}

fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            index(&path, files)?;
        } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
            files.insert(name, path);
        }
    }
    Ok(())
}

fn builtin_names(list: &Path) -> HashSet<String> {
    fs::read_to_string(list)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| module_name(line.rsplit('/').next()?))
        .collect()
}

/// A module file's bytes, decompressed with the host's xz or zstd when
/// the package compressed it.
fn uncompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return fs::read(path).map_err(|e| Error::io("read", path, e));
    };
    super::host::output(
        &format!("{tool} -dc {name}"),
        Command::new(tool).arg("-dc").arg(path),
    )
    .map_err(|e| e.hint(format!("is {tool} installed, and the package cache whole?")))
}

/// The modules a module depends on, and those it names as soft
/// dependencies, from its `.modinfo` section.
fn modinfo(bytes: &[u8], path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let bad = |why: String| Error::corrupt(format!("kernel module {}: {why}", path.display()));
    let file = object::File::parse(bytes).map_err(|e| bad(format!("not an ELF file ({e})")))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let data = section
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo ({e})")))?;
    let mut depends = Vec::new();
    let mut soft = Vec::new();
    for entry in data.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some(list) = entry.strip_prefix("depends=") {
            depends.extend(list.split(',').filter(|n| !n.is_empty()).map(normal));
        } else if let Some(list) = entry.strip_prefix("softdep=") {
            soft.extend(
                list.split_whitespace()
                    .filter(|w| !w.ends_with(':'))
                    .map(normal),
            );
        }
    }
    Ok((depends, soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_spelled_as_the_kernel_does() {
        assert_eq!(
            module_name("nls_iso8859-1.ko").as_deref(),
            Some("nls_iso8859_1")
        );
        assert_eq!(module_name("ext4.ko.xz").as_deref(), Some("ext4"));
        assert_eq!(module_name("modules.dep"), None);
    }

    #[test]
    fn a_file_that_is_not_elf_is_named_not_panicked_on() {
        let e = modinfo(b"\x7fELF garbage", Path::new("x.ko")).unwrap_err();
        assert!(e.message().contains("x.ko"), "{}", e.message());
    }
}
