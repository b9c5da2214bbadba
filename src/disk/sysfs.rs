//! What the kernel says about a block device: its sysfs folder, hardware
//! identity, mounts, holders and loop devices; and which filesystem type
//! is mounted where (/proc/self/mountinfo).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The sysfs folder of the block device with device number `rdev`.
pub fn block_dir(rdev: u64) -> Option<PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Serial, WWID and model of a device; a partition reports its disk's.
pub fn hardware_identity(dir: &Path) -> (Option<String>, Option<String>, Option<String>) {
    let disk = if dir.join("partition").exists() {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let first = |names: &[&str]| names.iter().find_map(|n| read_trimmed(&disk.join(n)));
    (
        first(&["device/serial", "serial"]),
        first(&["wwid", "device/wwid"]),
        first(&["device/model"]),
    )
}

/// Device numbers of the device and of each of its partitions.
fn device_and_partitions(dir: &Path, rdev: u64) -> Vec<(u32, u32)> {
    let mut out = vec![(libc::major(rdev), libc::minor(rdev))];
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let sub = entry.path();
            if sub.join("partition").exists()
                && let Some(dev) = read_trimmed(&sub.join("dev"))
                && let Some((a, b)) = dev.split_once(':')
                && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            {
                out.push((a, b));
            }
        }
    }
    out
}

/// Mount points of the device or any of its partitions.
pub fn mounts_of_device(dir: &Path, rdev: u64) -> Vec<String> {
    mounts_with_mode(dir, rdev)
        .into_iter()
        .map(|(point, _)| point)
        .collect()
}

/// Mount points of the device or any of its partitions, each with whether
/// it is mounted read-write.
pub fn mounts_with_mode(dir: &Path, rdev: u64) -> Vec<(String, bool)> {
    let devices = device_and_partitions(dir, rdev);
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let majmin = fields.nth(2)?;
            let point = fields.nth(1)?;
            let options = fields.next()?;
            let (a, b) = majmin.split_once(':')?;
            let dev = (a.parse().ok()?, b.parse().ok()?);
            let rw = options.split(',').any(|o| o == "rw");
            devices.contains(&dev).then(|| (unescape_mount(point), rw))
        })
        .collect()
}

/// Is the device (or a partition of it) used by another device (LVM, RAID,
/// dm-crypt)?
pub fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = fs::read_dir(dir) {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("partition").exists()),
        );
    }
    for d in dirs {
        if let Ok(entries) = fs::read_dir(d.join("holders")) {
            out.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    out
}

/// The file behind a loop device, if `device` is one.
pub fn loop_backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_string_lossy().into_owned();
    let backing = read_trimmed(&Path::new("/sys/block").join(name).join("loop/backing_file"))?;
    Some(PathBuf::from(backing.trim_end_matches(" (deleted)")))
}

/// Loop devices whose backing file is `file`.
pub fn loops_backed_by(file: &Path) -> Vec<String> {
    let Ok(meta) = fs::metadata(file) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let backing = read_trimmed(&entry.path().join("loop/backing_file"))?;
            let backing = fs::metadata(backing.trim_end_matches(" (deleted)")).ok()?;
            (backing.dev() == meta.dev() && backing.ino() == meta.ino())
                .then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

/// An attached loop device: its sysfs folder, device node and number.
pub struct AttachedLoop {
    pub dir: PathBuf,
    pub node: PathBuf,
    pub rdev: u64,
}

/// Every loop device with a file attached (its sysfs folder has `loop/`
/// only while one is).
pub fn attached_loops() -> Vec<AttachedLoop> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            if !dir.join("loop").is_dir() {
                return None;
            }
            let dev = read_trimmed(&dir.join("dev"))?;
            let (a, b) = dev.split_once(':')?;
            let rdev = libc::makedev(a.parse().ok()?, b.parse().ok()?);
            let node = Path::new("/dev").join(entry.file_name());
            Some(AttachedLoop { dir, node, rdev })
        })
        .collect()
}

/// The file attached to the loop device whose sysfs folder is `dir`, as
/// the kernel names it (the name it was attached under).
pub fn attached_file(dir: &Path) -> Option<PathBuf> {
    let backing = read_trimmed(&dir.join("loop/backing_file"))?;
    Some(PathBuf::from(backing.trim_end_matches(" (deleted)")))
}

/// The type of the filesystem whose device number is `dev` (a file's
/// st_dev), as mounted: tells devtmpfs from tmpfs, which statfs cannot.
pub fn fstype_of(dev: u64) -> Option<String> {
    fstype_in(&fs::read_to_string("/proc/self/mountinfo").ok()?, dev)
}

fn fstype_in(mountinfo: &str, dev: u64) -> Option<String> {
    let wanted = (libc::major(dev), libc::minor(dev));
    mountinfo.lines().find_map(|line| {
        let (mount, rest) = line.split_once(" - ")?;
        let (a, b) = mount.split(' ').nth(2)?.split_once(':')?;
        let dev: (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
        (dev == wanted).then(|| rest.split(' ').next().map(str::to_string))?
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filesystem_type_is_found_by_device_number() {
        let info = "22 1 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=4k\n\
                    23 22 0:21 / /dev/shm rw shared:3 - tmpfs tmpfs rw\n";
        assert_eq!(
            super::fstype_in(info, libc::makedev(0, 5)).as_deref(),
            Some("devtmpfs")
        );
        assert_eq!(
            super::fstype_in(info, libc::makedev(0, 21)).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(super::fstype_in(info, libc::makedev(8, 1)), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(super::unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(super::unescape_mount("/plain"), "/plain");
    }
}
