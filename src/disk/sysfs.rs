//! What the kernel says about a block device: its sysfs folder, hardware
//! identity, mounts, holders and loop devices; which filesystem type is
//! mounted where (/proc/self/mountinfo); and which processes map a file
//! shared and writable (/proc/PID/maps).
//!
//! A device's mounts and holders can be asked for a byte range of it: a
//! partition (or a loop device over a range of the same file) that shows
//! none of those bytes cannot change them.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes [start, end) of a device or file; `end` may be `u64::MAX`.
pub type Span = (u64, u64);

/// Every byte of a device or file.
pub const WHOLE: Span = (0, u64::MAX);

/// Whether two byte ranges share a byte.
pub fn overlaps(a: Span, b: Span) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The bytes of its file a loop device shows: from `offset`, `size_limit`
/// bytes, or (limit 0) up to the file's end.
pub fn loop_span(offset: u64, size_limit: u64) -> Span {
    match size_limit {
        0 => (offset, u64::MAX),
        limit => (offset, offset.saturating_add(limit)),
    }
}

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

/// The bytes of its disk the partition whose sysfs folder is `dir` shows
/// (sysfs counts in 512-byte units whatever the sector size); the whole
/// disk when sysfs does not say.
fn partition_span(dir: &Path) -> Span {
    let number = |name: &str| read_trimmed(&dir.join(name))?.parse::<u64>().ok();
    match (number("start"), number("size")) {
        (Some(start), Some(size)) => {
            let start = start.saturating_mul(512);
            (start, start.saturating_add(size.saturating_mul(512)))
        }
        _ => WHOLE,
    }
}

/// Sysfs folders of the partitions of the device at `dir` that show some
/// of its bytes `span`.
fn partitions_in(dir: &Path, span: Span) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|sub| sub.join("partition").exists() && overlaps(partition_span(sub), span))
        .collect()
}

/// Device numbers and kernel names of the device and of those of its
/// partitions that show some of its bytes `span`.
fn device_and_partitions(dir: &Path, rdev: u64, span: Span) -> Vec<((u32, u32), String)> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = vec![((libc::major(rdev), libc::minor(rdev)), name(dir))];
    for sub in partitions_in(dir, span) {
        if let Some(dev) = read_trimmed(&sub.join("dev"))
            && let Some((a, b)) = dev.split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            out.push(((a, b), name(&sub)));
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
    mounts_with_mode_in(dir, rdev, WHOLE)
}

/// Mount points of the device or of its partitions that show some of its
/// bytes `span`, each with whether it is mounted read-write.
pub fn mounts_with_mode_in(dir: &Path, rdev: u64, span: Span) -> Vec<(String, bool)> {
    // btrfs reports a device number of its own (0:N), so a mount is also
    // known by its source, /dev/NAME, when NAME is the device or one of
    // these partitions.
    let devices = device_and_partitions(dir, rdev, span);
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
            // After the optional fields: " - FSTYPE SOURCE SUPEROPTIONS".
            let source = line
                .split_once(" - ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .map(unescape_mount);
            let source = source
                .as_deref()
                .and_then(|s| s.strip_prefix("/dev/"))
                .filter(|name| !name.is_empty());
            devices
                .iter()
                .any(|(number, name)| *number == dev || Some(name.as_str()) == source)
                .then(|| (unescape_mount(point), rw))
        })
        .collect()
}

/// Is the device (or a partition of it) used by another device (LVM, RAID,
/// dm-crypt)?
pub fn holders(dir: &Path) -> Vec<String> {
    holders_in(dir, WHOLE)
}

/// Devices stacked on the device or on those of its partitions that show
/// some of its bytes `span`.
pub fn holders_in(dir: &Path, span: Span) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(partitions_in(dir, span));
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
            let backing = fs::metadata(attached_file(&entry.path())?).ok()?;
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
    // Bytes, not text: a file name need not be UTF-8.
    let mut name = fs::read(dir.join("loop/backing_file")).ok()?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    if name.ends_with(b" (deleted)") {
        name.truncate(name.len() - b" (deleted)".len());
    }
    (!name.is_empty()).then(|| PathBuf::from(OsString::from_vec(name)))
}

/// A shared, writable mapping of a file by some process: through it the
/// file's pages change without a write call, and a page already dirty
/// changes without moving the file's ctime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableMapping {
    pub pid: u32,
    /// The process's command name (/proc/PID/comm), if it could be read.
    pub command: Option<String>,
    /// The bytes of the file it maps.
    pub span: Span,
}

/// Every shared, writable mapping of the file with device `dev` and inode
/// `ino` (as stat gives them) that covers some of its bytes `span`, by any
/// process whose maps this process may read. The mapped name is also
/// checked with stat, for filesystems (btrfs subvolumes) whose stat device
/// differs from the one the maps show.
pub fn writable_mappings(dev: u64, ino: u64, span: Span) -> Vec<WritableMapping> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = fs::read(entry.path().join("maps")) else {
            continue;
        };
        let mapped: Vec<Span> = parse_maps(&maps)
            .into_iter()
            .filter(|m| {
                m.ino == ino
                    && overlaps(m.span, span)
                    && (m.dev == (libc::major(dev), libc::minor(dev))
                        || fs::metadata(&m.name)
                            .is_ok_and(|meta| (meta.dev(), meta.ino()) == (dev, ino)))
            })
            .map(|m| m.span)
            .collect();
        let Some(span) = mapped
            .into_iter()
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        else {
            continue;
        };
        let command = read_trimmed(&entry.path().join("comm"));
        out.push(WritableMapping { pid, command, span });
    }
    out
}

/// One line of /proc/PID/maps that maps a file shared and writable.
#[derive(Debug, PartialEq, Eq)]
struct MapsLine {
    dev: (u32, u32),
    ino: u64,
    span: Span,
    name: PathBuf,
}

/// The shared, writable file mappings of a /proc/PID/maps text:
/// `START-END PERMS OFFSET MAJ:MIN INODE NAME`, numbers in hex but the inode.
fn parse_maps(text: &[u8]) -> Vec<MapsLine> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.splitn(6, |&b| b == b' ');
            let mut next = || std::str::from_utf8(fields.next()?).ok();
            let (range, perms, offset, dev, ino) = (next()?, next()?, next()?, next()?, next()?);
            let perms = perms.as_bytes();
            if perms.len() < 4 || perms[1] != b'w' || perms[3] != b's' {
                return None;
            }
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            let (start, end) = range.split_once('-')?;
            let len = hex(end)?.checked_sub(hex(start)?)?;
            let offset = hex(offset)?;
            let (major, minor) = dev.split_once(':')?;
            let ino: u64 = ino.parse().ok()?;
            let name = fields.next().unwrap_or_default();
            let name = name
                .iter()
                .skip_while(|&&b| b == b' ')
                .copied()
                .collect::<Vec<u8>>();
            let name = name
                .strip_suffix(b" (deleted)")
                .map(<[u8]>::to_vec)
                .unwrap_or(name);
            Some(MapsLine {
                dev: (
                    u32::from_str_radix(major, 16).ok()?,
                    u32::from_str_radix(minor, 16).ok()?,
                ),
                ino,
                span: (offset, offset.saturating_add(len)),
                name: PathBuf::from(OsString::from_vec(name)),
            })
        })
        .filter(|m| m.ino != 0)
        .collect()
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
    fn only_shared_writable_file_mappings_are_read_from_maps() {
        let maps = b"7f0000000000-7f0000002000 rw-s 00001000 08:01 1234                       /srv/vm\xff.img\n\
7f0000002000-7f0000003000 r--s 00000000 08:01 1234                       /srv/vm.img\n\
7f0000003000-7f0000004000 rw-p 00000000 08:01 1234                       /srv/vm.img\n\
7f0000004000-7f0000005000 rw-s 00000000 00:01 0                          /dev/zero (deleted)\n\
7f0000005000-7f0000006000 rw-s 00000000 103:02 99 /a b (deleted)\n\
garbage line\n";
        let lines = super::parse_maps(maps);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].dev, (8, 1));
        assert_eq!(lines[0].ino, 1234);
        assert_eq!(lines[0].span, (0x1000, 0x3000));
        assert_eq!(
            lines[0].name.as_os_str().as_encoded_bytes(),
            b"/srv/vm\xff.img"
        );
        assert_eq!(lines[1].dev, (0x103, 2));
        assert_eq!(lines[1].name, std::path::PathBuf::from("/a b"));
    }

    #[test]
    fn spans_overlap_only_when_they_share_a_byte() {
        assert!(super::overlaps((0, 10), (9, 20)));
        assert!(!super::overlaps((0, 10), (10, 20)));
        assert!(super::overlaps(
            super::loop_span(100, 0),
            (1 << 40, u64::MAX)
        ));
        assert!(!super::overlaps(super::loop_span(100, 50), (150, 200)));
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(super::unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(super::unescape_mount("/plain"), "/plain");
    }
}
