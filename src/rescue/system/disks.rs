//! The disks of the machine the medium booted on, read from sysfs (the
//! medium has no udev). Kernel names (sda, vda) and their order change
//! between boots, so a disk is named to a person, and to an unattended
//! restore, by its serial or WWN and its size.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Disk {
    /// The kernel's name: sda, vda, nvme0n1.
    pub name: String,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// A CD drive or a disk the kernel reports read-only: never a target.
    pub read_only: bool,
    /// Holds the medium this system booted from.
    pub is_medium: bool,
    /// It, or a partition of it, is mounted (the repository's filesystem,
    /// or something mounted in the shell): never a target.
    pub mounted: bool,
    /// Partitions, by kernel name (sda1, nvme0n1p2), in sysfs order.
    pub partitions: Vec<String>,
}

/// Kernel names of CD drives (sr0): never searched, never a target.
fn is_cd_name(name: &str) -> bool {
    name.starts_with("sr")
}

impl Disk {
    pub fn is_cd_drive(&self) -> bool {
        is_cd_name(&self.name)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// Whether `text` is this disk's serial or WWN.
    pub fn answers_to(&self, text: &str) -> bool {
        self.serial.as_deref() == Some(text) || self.wwn.as_deref() == Some(text)
    }

    /// Serial, else WWN: what `restore --expect-serial` checks.
    pub fn identity(&self) -> Option<&str> {
        self.serial.as_deref().or(self.wwn.as_deref())
    }

    /// One line for a person: name, size, model, serial.
    pub fn describe(&self) -> String {
        let mut line = format!("{:<8} {:>10}", self.name, crate::units::bytes(self.size));
        if let Some(model) = &self.model {
            line.push_str(&format!("  {}", crate::printable::printable(model)));
        }
        match (&self.serial, &self.wwn) {
            (Some(s), _) => line.push_str(&format!("  serial {}", crate::printable::printable(s))),
            (None, Some(w)) => line.push_str(&format!("  wwn {}", crate::printable::printable(w))),
            (None, None) => line.push_str("  (no serial)"),
        }
        if self.is_medium {
            line.push_str("  [this rescue medium]");
        } else if self.read_only {
            line.push_str("  [read-only]");
        } else if self.mounted {
            line.push_str("  [mounted]");
        }
        line
    }
}

/// Kinds of block device that are never disks to list: loop devices,
/// RAM disks, compressed swap, device-mapper and RAID (built on disks).
fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
        || is_nvme_path(name)
}

/// A hidden path of a multipath NVMe namespace (nvme0c0n1): the disk is
/// nvme0n1.
fn is_nvme_path(name: &str) -> bool {
    name.strip_prefix("nvme").is_some_and(|rest| {
        let mut parts = rest.split(['c', 'n']);
        rest.contains('c') && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Every disk, with `volume_id` (from the kernel command line) marking
/// the rescue medium.
pub fn list(volume_id: Option<&str>) -> Vec<Disk> {
    let mut disks = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return disks;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_virtual(&name) {
            continue;
        }
        let dir = entry.path();
        let number = |file: &str| {
            fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let size = number("size").unwrap_or(0).saturating_mul(512);
        if size == 0 && !is_cd_name(&name) {
            // An empty card reader slot.
            continue;
        }
        let (serial, wwn, model) = crate::disk::hardware_identity(&dir);
        let mut partitions: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("partition").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        partitions.sort_by_key(|p| (p.len(), p.clone()));
        let path = Path::new("/dev").join(&name);
        let is_medium = volume_id.is_some_and(|id| read_volume_id(&path).as_deref() == Some(id));
        let mounted = fs::read_to_string(dir.join("dev"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(':')?;
                Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
            })
            .is_some_and(|rdev| !crate::disk::mounts_of_device(&dir, rdev).is_empty());
        disks.push(Disk {
            read_only: is_cd_name(&name) || number("ro") == Some(1),
            name,
            size,
            model,
            serial,
            wwn,
            is_medium,
            mounted,
            partitions,
        });
    }
    disks.sort_by_key(|d| (d.name.len(), d.name.clone()));
    disks
}

/// The ISO 9660 volume id on a device (at byte 32808 of its primary
/// volume descriptor), as the hybrid medium has it whether burnt to a CD
/// or written to a stick.
pub fn read_volume_id(device: &Path) -> Option<String> {
    let mut file = fs::File::open(device).ok()?;
    let mut head = vec![0u8; 32768 + 2048];
    file.read_exact(&mut head).ok()?;
    volume_id_of(&head)
}

fn volume_id_of(head: &[u8]) -> Option<String> {
    let pvd = head.get(32768..32768 + 2048)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    let id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_id_is_read_from_the_primary_descriptor_only() {
        let mut head = vec![0u8; 32768 + 2048];
        assert_eq!(volume_id_of(&head), None);
        head[32768] = 1;
        head[32769..32774].copy_from_slice(b"CD001");
        head[32808..32840].copy_from_slice(b"PLATTER_RESCUE_0123456789       ");
        assert_eq!(
            volume_id_of(&head).as_deref(),
            Some("PLATTER_RESCUE_0123456789")
        );
        assert_eq!(volume_id_of(&head[..100]), None);
    }

    #[test]
    fn loop_and_ram_devices_are_not_disks() {
        assert!(is_virtual("loop3") && is_virtual("ram0") && is_virtual("dm-1"));
        assert!(!is_virtual("sda") && !is_virtual("nvme0n1") && !is_virtual("vdb"));
        assert!(is_virtual("nvme0c0n1") && !is_virtual("nvme1n2"));
    }
}
