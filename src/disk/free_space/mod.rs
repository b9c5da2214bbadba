//! Free space: which bytes of a source no filesystem uses, read from each
//! filesystem's own allocation structures (one file per filesystem), so a
//! backup neither reads nor stores them. Everything else of a source is
//! used: the gaps between partitions, unknown filesystems, and any
//! filesystem whose structures look wrong, which is then copied raw with a
//! note saying why. Nothing that is not understood is skipped.

mod ext;
mod fat;
mod swap;

use crate::disk::layout::{Content, Layout, ReadAt, Table, le};
pub use crate::disk::ranges::Ranges;
use crate::error::{Error, Result};

/// Little-endian fields of structures read whole (fixed-size buffers),
/// widened for the byte arithmetic of the free-space readers.
fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(le::u16(b, at))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(le::u32(b, at))
}

/// A window of a disk: reads at `offset + at`, never past `len`.
struct Region<'a> {
    io: &'a dyn ReadAt,
    offset: u64,
    len: u64,
}

impl Region<'_> {
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let end = at.checked_add(len as u64).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(Error::corrupt(format!(
                "a structure at byte {at} ({len} bytes) lies past the end of the {}-byte filesystem",
                self.len
            )));
        }
        let mut buf = vec![0u8; len];
        self.io.read_at(&mut buf, self.offset + at)?;
        Ok(buf)
    }
}

/// What one filesystem's allocation says: its free byte ranges (relative
/// to its start), or why it is copied whole.
pub enum Usage {
    Mapped { free: Ranges },
    Raw { why: String },
}

/// The usage of the filesystem `content` names, in `len` bytes at
/// `offset` of `io`. Errors reading the disk are errors; anything odd in
/// the filesystem is `Raw`.
pub fn usage(content: &Content, io: &dyn ReadAt, offset: u64, len: u64) -> Result<Usage> {
    let region = Region { io, offset, len };
    let mapped = match content.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => ext::free_ranges(&region),
        "vfat" => fat::free_ranges(&region),
        "swap" => swap::free_ranges(&region),
        other => {
            return Ok(Usage::Raw {
                why: format!("the free space of {other} is not read"),
            });
        }
    };
    match mapped {
        Ok(free) => Ok(Usage::Mapped { free }),
        Err(e)
            if e.kind() == crate::ErrorKind::Corrupt
                || e.kind() == crate::ErrorKind::Unsupported =>
        {
            Ok(Usage::Raw {
                why: e.message().to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Free space of every understood filesystem of a source, from its
/// layout: absolute byte ranges that no filesystem uses. Each content in
/// the layout gets its used bytes, or why it is copied whole. A table with
/// problems (overlaps, partitions past the end) is copied whole.
pub fn free_ranges(layout: &mut Layout, io: &dyn ReadAt) -> Result<Ranges> {
    let mut free = Vec::new();
    if layout.table != Table::None && !layout.warnings.is_empty() {
        for c in layout
            .partitions
            .iter_mut()
            .filter_map(|p| p.content.as_mut())
        {
            c.copied_whole = Some("the partition table has problems".into());
        }
        return Ok(Ranges::default());
    }
    let disk_size = layout.disk_size;
    if let Some(c) = layout.content.as_mut() {
        record(c, io, 0, disk_size, &mut free)?;
    }
    let spans: Vec<Option<(u64, u64)>> = layout
        .partitions
        .iter()
        .map(|p| layout.partition_bytes(p.number))
        .collect();
    for (p, span) in layout.partitions.iter_mut().zip(spans) {
        if let (false, Some(c), Some((offset, len))) = (p.is_extended(), p.content.as_mut(), span) {
            record(c, io, offset, len, &mut free)?;
        }
    }
    // The table's own sectors (an EBR may sit inside a partition's span).
    let sector = u64::from(layout.sector_size);
    let tables = Ranges::new(
        layout
            .table_sectors
            .iter()
            .map(|&(a, b)| (a.saturating_mul(sector), b.saturating_mul(sector)))
            .collect(),
    );
    Ok(Ranges::new(free).without(&tables))
}

fn record(
    content: &mut Content,
    io: &dyn ReadAt,
    offset: u64,
    len: u64,
    free: &mut Vec<(u64, u64)>,
) -> Result<()> {
    match usage(content, io, offset, len)? {
        Usage::Mapped { free: f } => {
            content.used = Some(len - f.total());
            free.extend(f.shifted(offset));
        }
        Usage::Raw { why } => content.copied_whole = Some(why),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Mem(Vec<u8>);

    impl ReadAt for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            let at = offset as usize;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
    }

    fn content(fstype: &str) -> Content {
        serde_json::from_value(serde_json::json!({ "fstype": fstype })).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Hostile superblocks, descriptors, boot sectors and tables: an
        /// answer (mapped or whole), never a panic; free space always
        /// inside the filesystem.
        #[test]
        fn hostile_filesystems_never_panic(
            head in proptest::collection::vec(any::<u8>(), 4096),
            fill in any::<u8>(),
            ext_clean in any::<bool>(),
        ) {
            let mut disk = vec![fill; 1 << 20];
            disk[..4096].copy_from_slice(&head);
            if ext_clean {
                disk[1024 + 0x38] = 0x53;
                disk[1024 + 0x39] = 0xEF;
                disk[1024 + 0x3A] = 1;
                disk[1024 + 0x60..1024 + 0x64].copy_from_slice(&0x40u32.to_le_bytes());
            }
            let io = Mem(disk);
            for fstype in ["ext4", "vfat", "swap"] {
                if let Ok(Usage::Mapped { free }) = usage(&content(fstype), &io, 0, 1 << 20) {
                    prop_assert!(free.as_slice().iter().all(|&(a, b)| a < b && b <= 1 << 20));
                }
            }
        }
    }
}
