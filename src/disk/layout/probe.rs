//! What a partition (or a whole disk without a table) holds, told by the
//! magic numbers at its start. Pure functions on the first
//! [`PROBE_LEN`] bytes: they never panic, whatever the bytes.
//!
//! Names follow blkid (`lsblk -f`): ext2/3/4, vfat, exfat, ntfs, xfs,
//! btrfs, swap, crypto_LUKS, LVM2_member, iso9660.

use super::{is_sector_size, le};

/// How many bytes from the start of a region the probes look at (btrfs
/// keeps its superblock at 64 KiB).
pub const PROBE_LEN: usize = 0x11000;

/// A filesystem or other known content, with what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Content {
    /// blkid's name: "ext4", "vfat", "swap", ...
    pub fstype: String,
    /// A variant where it matters: "FAT32", "LUKS2", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The size the filesystem says it has, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes its allocation structures say are used (of its partition),
    /// when they were read (see `disk::free_space`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// Why its free space was not read and it is copied whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_whole: Option<String>,
}

impl Content {
    fn new(fstype: &str) -> Content {
        Content {
            fstype: fstype.to_string(),
            version: None,
            label: None,
            uuid: None,
            size: None,
            used: None,
            copied_whole: None,
        }
    }
}

/// Identifies the content whose first bytes are `head` (shorter when the
/// region is shorter than [`PROBE_LEN`]).
pub fn probe(head: &[u8]) -> Option<Content> {
    // Swap last: its signature sits deep in its first page, where another
    // filesystem may hold file data that happens to match.
    [luks, xfs, btrfs, ext, lvm, ntfs, exfat, fat, iso9660, swap]
        .iter()
        .find_map(|p| p(head))
}

/// Whether sector 0 is a filesystem's boot sector rather than an MBR
/// (a "superfloppy": a filesystem on the whole disk). Both end in 55 AA.
pub fn is_boot_sector_filesystem(head: &[u8]) -> bool {
    ntfs(head).is_some() || exfat(head).is_some() || fat(head).is_some()
}

fn bytes(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes(b, at, 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes(b, at, 8)?.try_into().ok()?))
}

fn has(b: &[u8], at: usize, magic: &[u8]) -> bool {
    bytes(b, at, magic.len()) == Some(magic)
}

/// A label stored as fixed-width text, padded with NULs or spaces.
fn text(b: &[u8], at: usize, len: usize) -> Option<String> {
    let raw = bytes(b, at, len)?;
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// A 16-byte UUID in the usual 8-4-4-4-12 form; all zeros is none.
fn uuid(b: &[u8], at: usize) -> Option<String> {
    let raw = bytes(b, at, 16)?;
    if raw.iter().all(|&c| c == 0) {
        return None;
    }
    let h: String = raw.iter().map(|c| format!("{c:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn ext(b: &[u8]) -> Option<Content> {
    const SB: usize = 1024;
    if le::u16_at(b, SB + 0x38)? != 0xEF53 {
        return None;
    }
    let compat = le::u32_at(b, SB + 0x5C)?;
    let incompat = le::u32_at(b, SB + 0x60)?;
    let ro_compat = le::u32_at(b, SB + 0x64)?;
    // extents, 64bit, flex_bg; huge_file, gdt_csum, dir_nlink,
    // extra_isize, metadata_csum: features ext3 does not have.
    let ext4 = incompat & (0x40 | 0x80 | 0x200) != 0
        || ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400) != 0;
    let fstype = if ext4 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    let mut c = Content::new(fstype);
    let log_block = le::u32_at(b, SB + 0x18)?;
    if log_block <= 6 {
        let mut blocks = u64::from(le::u32_at(b, SB + 0x04)?);
        if incompat & 0x80 != 0 {
            blocks |= u64::from(le::u32_at(b, SB + 0x150)?) << 32;
        }
        c.size = blocks.checked_mul(1024 << log_block);
    }
    c.uuid = uuid(b, SB + 0x68);
    c.label = text(b, SB + 0x78, 16);
    Some(c)
}

fn fat(b: &[u8]) -> Option<Content> {
    if !matches!(b.first()?, 0xEB | 0xE9) || !has(b, 510, &[0x55, 0xAA]) {
        return None;
    }
    let sector = u64::from(le::u16_at(b, 0x0B)?);
    let per_cluster = u64::from(*b.get(0x0D)?);
    let reserved = u64::from(le::u16_at(b, 0x0E)?);
    let fats = u64::from(*b.get(0x10)?);
    let root_entries = u64::from(le::u16_at(b, 0x11)?);
    if !is_sector_size(sector)
        || !per_cluster.is_power_of_two()
        || reserved == 0
        || !(1..=2).contains(&fats)
    {
        return None;
    }
    let total = match le::u16_at(b, 0x13)? {
        0 => u64::from(le::u32_at(b, 0x20)?),
        n => u64::from(n),
    };
    // A FAT32 boot sector has no 16-bit FAT size (blkid's rule too);
    // FAT12 and FAT16 differ by cluster count alone (the spec's rule).
    let fat32 = le::u16_at(b, 0x16)? == 0;
    let fat_size = if fat32 {
        u64::from(le::u32_at(b, 0x24)?)
    } else {
        u64::from(le::u16_at(b, 0x16)?)
    };
    if total == 0 || fat_size == 0 {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(sector);
    let data = total.checked_sub(reserved + fats * fat_size + root_sectors)?;
    let (version, ext_at) = match data / per_cluster {
        _ if fat32 => ("FAT32", 0x40),
        0..4085 => ("FAT12", 0x24),
        _ => ("FAT16", 0x24),
    };
    let mut c = Content::new("vfat");
    c.version = Some(version.to_string());
    c.size = Some(total * sector);
    if *b.get(ext_at + 2)? == 0x29 {
        let serial = le::u32_at(b, ext_at + 3)?;
        c.uuid = Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF));
        c.label = text(b, ext_at + 7, 11).filter(|l| l != "NO NAME");
    }
    Some(c)
}

fn ntfs(b: &[u8]) -> Option<Content> {
    if !has(b, 3, b"NTFS    ") {
        return None;
    }
    let sector = u64::from(le::u16_at(b, 0x0B)?);
    let mut c = Content::new("ntfs");
    c.size = le::u64_at(b, 0x28)?.checked_mul(sector);
    c.uuid = Some(format!("{:016X}", le::u64_at(b, 0x48)?));
    Some(c)
}

fn exfat(b: &[u8]) -> Option<Content> {
    if !has(b, 3, b"EXFAT   ") {
        return None;
    }
    let mut c = Content::new("exfat");
    let shift = u32::from(*b.get(0x6C)?);
    if (9..=12).contains(&shift) {
        c.size = le::u64_at(b, 0x48)?.checked_mul(1 << shift);
    }
    let serial = le::u32_at(b, 0x64)?;
    c.uuid = Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF));
    Some(c)
}

fn xfs(b: &[u8]) -> Option<Content> {
    if !has(b, 0, b"XFSB") {
        return None;
    }
    let mut c = Content::new("xfs");
    c.size = be64(b, 8)?.checked_mul(u64::from(be32(b, 4)?));
    c.uuid = uuid(b, 0x20);
    c.label = text(b, 0x6C, 12);
    Some(c)
}

fn btrfs(b: &[u8]) -> Option<Content> {
    const SB: usize = 0x10000;
    if !has(b, SB + 0x40, b"_BHRfS_M") {
        return None;
    }
    let mut c = Content::new("btrfs");
    c.uuid = uuid(b, SB + 0x20);
    c.size = le::u64_at(b, SB + 0x70);
    c.label = text(b, SB + 0x12B, 256);
    Some(c)
}

/// Signatures at the end of a swap area's first page: swap itself, and
/// what suspend-to-disk writes over it (a hibernation image, not swap).
const SWAP_SIGNATURES: [&[u8]; 6] = [
    b"SWAPSPACE2",
    b"SWAP-SPACE",
    b"S1SUSPEND\0",
    b"S2SUSPEND\0",
    b"ULSUSPEND\0",
    b"LINHIB0001",
];

/// A swap area: the first page size whose last 10 bytes hold any swap or
/// hibernation signature decides; the version must be 1. `version` is
/// "hibernated" when a hibernation image replaced the signature.
pub fn swap_page(b: &[u8]) -> Option<(u64, bool)> {
    let page = [4096usize, 8192, 16384, 32768, 65536]
        .into_iter()
        .find(|&p| SWAP_SIGNATURES.iter().any(|s| has(b, p - 10, s)))?;
    let plain = has(b, page - 10, b"SWAPSPACE2");
    (le::u32_at(b, 1024)? == 1 || !plain).then_some((page as u64, plain))
}

fn swap(b: &[u8]) -> Option<Content> {
    let (page, plain) = swap_page(b)?;
    let mut c = Content::new("swap");
    if plain {
        let last_page = u64::from(le::u32_at(b, 1024 + 4)?);
        c.size = (last_page + 1).checked_mul(page);
        c.uuid = uuid(b, 1024 + 12);
        c.label = text(b, 1024 + 28, 16);
    } else {
        c.version = Some("hibernated".into());
    }
    Some(c)
}

fn luks(b: &[u8]) -> Option<Content> {
    if !has(b, 0, b"LUKS\xBA\xBE") {
        return None;
    }
    let mut c = Content::new("crypto_LUKS");
    let version = u16::from_be_bytes(bytes(b, 6, 2)?.try_into().ok()?);
    c.version = Some(format!("LUKS{version}"));
    c.uuid = text(b, 0xA8, 40);
    if version == 2 {
        c.label = text(b, 0x18, 48);
    }
    Some(c)
}

fn lvm(b: &[u8]) -> Option<Content> {
    let at = (0..4)
        .map(|s| s * 512)
        .find(|&at| has(b, at, b"LABELONE") && has(b, at + 0x18, b"LVM2 001"))?;
    let mut c = Content::new("LVM2_member");
    c.uuid = text(b, at + 0x20, 32);
    Some(c)
}

fn iso9660(b: &[u8]) -> Option<Content> {
    if !has(b, 0x8001, b"CD001") {
        return None;
    }
    let mut c = Content::new("iso9660");
    c.label = text(b, 0x8028, 32);
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ext4_superblock() {
        let mut b = vec![0u8; PROBE_LEN];
        b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[1024 + 0x60] = 0x40; // extents
        b[1024 + 0x04..1024 + 0x08].copy_from_slice(&1000u32.to_le_bytes());
        b[1024 + 0x18] = 2; // 4096-byte blocks
        b[1024 + 0x78..1024 + 0x7D].copy_from_slice(b"root\0");
        let c = probe(&b).unwrap();
        assert_eq!(
            (c.fstype.as_str(), c.size, c.label.as_deref()),
            ("ext4", Some(4_096_000), Some("root"))
        );
    }

    #[test]
    fn zeros_and_short_input_are_unknown() {
        assert_eq!(probe(&[0u8; PROBE_LEN]), None);
        assert_eq!(probe(&[]), None);
        assert_eq!(probe(b"XFS"), None);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                     at in 0usize..PROBE_LEN) {
            let mut b = vec![0u8; PROBE_LEN];
            let end = (at + bytes.len()).min(PROBE_LEN);
            b[at..end].copy_from_slice(&bytes[..end - at]);
            let _ = probe(&b);
            let _ = probe(&b[..at]);
        }
    }
}
