//! Fitting a restored whole disk's partition table to a target of another
//! size: the GPT's backup header and entry array move to the target's end
//! and both headers are rewritten with fresh CRCs; optionally the last
//! partition grows to the end. Planned from the snapshot's layout before
//! anything is written, so a target that cannot hold every partition is
//! refused up front, naming the partition and by how much.

use super::gpt::{self, Header};
use super::{GptInfo, Layout, Partition, ReadAt, Table, is_sector_size};
use crate::error::{Error, Result};

/// Writes bytes of a disk or image.
pub trait WriteAt: ReadAt {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
}

/// What to change on the target after its bytes are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFit {
    change: Change,
    sector: u32,
    /// The partition grown to the end: (number, old sectors, new sectors).
    pub grown: Option<(u32, u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Gpt {
        /// Where the header to copy is: LBA 1, or the old backup when the
        /// snapshot's primary was damaged.
        from_lba: u64,
        old_backup_lba: u64,
        /// Sectors used by the source's partitions: an old backup header
        /// at or after this is stale table, not data.
        partitions_end: u64,
        new_last_lba: u64,
        array_sectors: u64,
        /// Index of the entry to extend to the last usable sector.
        grow: Option<usize>,
    },
    /// Extend the primary MBR entry in `slot` to `sectors`.
    Mbr { slot: usize, sectors: u32 },
}

fn not_fit(p: &Partition, sector: u64, target_size: u64, end_sector: u64) -> Error {
    let short = p.end().saturating_sub(end_sector).saturating_mul(sector);
    Error::bad_input(format!(
        "partition {} (sectors {}..{}) does not fit on the {} byte target: it is short by \
         {short} bytes ({} sectors)",
        p.number,
        p.start,
        p.end(),
        target_size,
        p.end().saturating_sub(end_sector)
    ))
    .hint("nothing was written; restore onto a larger target, or restore single partitions with --partition")
}

/// Plans the table changes for restoring `layout` onto `target_size`
/// bytes. `Ok(None)`: nothing to change. Errors when a partition does
/// not fit.
pub fn plan_fit(layout: &Layout, target_size: u64, grow_last: bool) -> Result<Option<TableFit>> {
    if !is_sector_size(u64::from(layout.sector_size)) {
        return Err(Error::corrupt(format!(
            "the snapshot's layout has an impossible sector size ({})",
            layout.sector_size
        )));
    }
    match (&layout.table, &layout.gpt) {
        (Table::Gpt, Some(g)) => plan_gpt(layout, g, target_size, grow_last),
        (Table::Mbr, _) => plan_mbr(layout, target_size, grow_last),
        _ => {
            if grow_last {
                return Err(Error::bad_input(
                    "the snapshot has no partition table, so there is no partition to grow",
                ));
            }
            Ok(None)
        }
    }
}

/// The partition that ends last, the one `--grow-last-partition` grows.
fn last_partition(layout: &Layout) -> Option<&Partition> {
    layout.partitions.iter().max_by_key(|p| p.end())
}

/// The GPT's backup moves to the target's end; the last partition may grow
/// to the new last usable sector.
fn plan_gpt(
    layout: &Layout,
    g: &GptInfo,
    target_size: u64,
    grow_last: bool,
) -> Result<Option<TableFit>> {
    let sector = u64::from(layout.sector_size);
    let target_sectors = target_size / sector;
    let array_sectors = gpt::array_sectors(g.entries, g.entry_size, layout.sector_size);
    let new_last_lba = target_sectors.saturating_sub(1);
    let last_usable = new_last_lba
        .checked_sub(array_sectors + 1)
        .filter(|&l| l + 1 >= g.first_usable_lba && g.first_usable_lba >= array_sectors + 2)
        .ok_or_else(|| {
            Error::bad_input(format!(
                "the {target_size} byte target is too small for the snapshot's GPT"
            ))
            .hint("nothing was written; restore onto a larger target")
        })?;
    for p in &layout.partitions {
        if p.end() > last_usable + 1 {
            return Err(not_fit(p, sector, target_size, last_usable + 1));
        }
    }
    let grown = last_partition(layout)
        .filter(|p| grow_last && p.end() < last_usable + 1)
        .map(|p| (p.number, p.sectors, last_usable + 1 - p.start));
    let grow = match grown {
        Some((n, _, _)) if n >= 1 && n <= g.entries => Some(n as usize - 1),
        Some((n, _, _)) => {
            return Err(Error::corrupt(format!(
                "the snapshot's layout numbers a partition {n}, outside its GPT's {} entries",
                g.entries
            )));
        }
        None => None,
    };
    if target_size == layout.disk_size && grown.is_none() && g.primary_ok && g.backup_ok {
        return Ok(None);
    }
    let from_lba = if g.primary_ok { 1 } else { g.backup_lba };
    if from_lba >= target_sectors {
        return Err(Error::unsupported(format!(
            "the snapshot's primary GPT is damaged and its backup (LBA {from_lba}) lies \
             past the end of the target"
        ))
        .hint("restore onto a target at least as large as the source"));
    }
    Ok(Some(TableFit {
        change: Change::Gpt {
            from_lba,
            old_backup_lba: g.backup_lba,
            partitions_end: layout
                .partitions
                .iter()
                .map(Partition::end)
                .max()
                .unwrap_or(0),
            new_last_lba,
            array_sectors,
            grow,
        },
        sector: layout.sector_size,
        grown,
    }))
}

/// An MBR needs no change unless the last partition, a primary one, grows.
fn plan_mbr(layout: &Layout, target_size: u64, grow_last: bool) -> Result<Option<TableFit>> {
    let sector = u64::from(layout.sector_size);
    let target_sectors = target_size / sector;
    for p in &layout.partitions {
        if p.end() > target_sectors {
            return Err(not_fit(p, sector, target_size, target_sectors));
        }
    }
    if !grow_last {
        return Ok(None);
    }
    let Some(p) = last_partition(layout) else {
        return Err(Error::bad_input(
            "the snapshot's MBR has no partition to grow",
        ));
    };
    if p.mbr_kind.as_deref() != Some("primary") {
        return Err(Error::unsupported(format!(
            "the last partition ({}) is {} partition; growing it means growing \
             the extended partition and its logical partitions together",
            p.number,
            if p.is_extended() {
                "an extended"
            } else {
                "a logical"
            }
        ))
        .hint("restore without --grow-last-partition, then grow them with fdisk or parted"));
    }
    if !(1..=4).contains(&p.number) {
        return Err(Error::corrupt(format!(
            "the snapshot's layout numbers a primary MBR partition {}",
            p.number
        )));
    }
    // MBR entries count sectors in 32 bits.
    let end = target_sectors.min(u64::from(u32::MAX));
    if end <= p.end() {
        return Ok(None);
    }
    Ok(Some(TableFit {
        change: Change::Mbr {
            slot: p.number as usize - 1,
            sectors: (end - p.start) as u32,
        },
        sector: layout.sector_size,
        grown: Some((p.number, p.sectors, end - p.start)),
    }))
}

fn read(io: &dyn WriteAt, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    io.read_at(&mut buf, offset)?;
    Ok(buf)
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A header sector based on `base`, with new positions and CRCs.
fn header_bytes(
    base: &[u8],
    h: &Header,
    my: u64,
    alternate: u64,
    entries_lba: u64,
    last_usable: u64,
    crc: u32,
) -> Vec<u8> {
    let mut b = base.to_vec();
    put64(&mut b, 24, my);
    put64(&mut b, 32, alternate);
    put64(&mut b, 48, last_usable);
    put64(&mut b, 72, entries_lba);
    put32(&mut b, 88, crc);
    let sum = gpt::header_crc(&b, h.size as usize);
    put32(&mut b, 16, sum);
    b
}

/// Applies a planned change to the target, which already holds the
/// snapshot's bytes. The backup table is written before the primary, so
/// an interruption leaves at least one valid table.
pub fn apply_fit(io: &dyn WriteAt, plan: &TableFit) -> Result<()> {
    let sector = u64::from(plan.sector);
    let ss = plan.sector as usize;
    match plan.change {
        Change::Mbr { slot, sectors } => {
            let mut mbr = read(io, 0, ss)?;
            put32(&mut mbr, 446 + 16 * slot + 12, sectors);
            io.write_at(&mbr, 0)
        }
        Change::Gpt {
            from_lba,
            old_backup_lba,
            partitions_end,
            new_last_lba,
            array_sectors,
            grow,
        } => {
            let base = read(io, from_lba * sector, ss)?;
            let h = Header::parse(&base, from_lba, new_last_lba + 1).map_err(|why| {
                Error::corrupt(format!(
                    "the restored GPT header at LBA {from_lba} is unusable: {why}"
                ))
            })?;
            if gpt::array_sectors(h.entries, h.entry_size, plan.sector) != array_sectors
                || grow.is_some_and(|i| i >= h.entries as usize)
            {
                return Err(Error::corrupt(format!(
                    "the restored GPT header at LBA {from_lba} does not match the snapshot's \
                     recorded layout ({} entries of {} bytes)",
                    h.entries, h.entry_size
                )));
            }
            // Where the primary array goes: where the primary header had it,
            // or (rebuilt from the backup) right before the first usable
            // sector, as tools that move it for boot loaders leave it.
            let primary_entries = if from_lba == 1 {
                h.entries_lba
            } else {
                h.first_usable.saturating_sub(array_sectors).max(2)
            };
            if primary_entries + array_sectors > h.first_usable {
                return Err(Error::corrupt(format!(
                    "the restored GPT's first usable sector ({}) leaves no room for its entry array",
                    h.first_usable
                )));
            }
            let mut array = read(io, h.entries_lba * sector, h.array_len())?;
            if crc32fast::hash(&array) != h.entries_crc {
                return Err(Error::corrupt(
                    "the restored GPT entry array fails its CRC check",
                ));
            }
            let last_usable = new_last_lba - array_sectors - 1;
            if let Some(i) = grow {
                let at = i * h.entry_size as usize + 40;
                put64(&mut array, at, last_usable);
            }
            let crc = crc32fast::hash(&array);
            let backup_entries = new_last_lba - array_sectors;
            io.write_at(&array, backup_entries * sector)?;
            let backup = header_bytes(&base, &h, new_last_lba, 1, backup_entries, last_usable, crc);
            io.write_at(&backup, new_last_lba * sector)?;
            if grow.is_some() || from_lba != 1 {
                io.write_at(&array, primary_entries * sector)?;
            }
            let primary = header_bytes(
                &base,
                &h,
                1,
                new_last_lba,
                primary_entries,
                last_usable,
                crc,
            );
            io.write_at(&primary, sector)?;
            fix_protective_mbr(io, ss, new_last_lba)?;
            // A stale header left mid-disk would confuse tools that look
            // for backups; it is outside every partition of the source.
            if old_backup_lba != new_last_lba
                && old_backup_lba >= partitions_end
                && old_backup_lba < backup_entries
            {
                io.write_at(&vec![0u8; ss], old_backup_lba * sector)?;
            }
            Ok(())
        }
    }
}

/// A protective MBR covers the whole disk (up to 2^32-1 sectors). Hybrid
/// MBRs (more entries than the 0xEE one) are left alone.
fn fix_protective_mbr(io: &dyn WriteAt, ss: usize, last_lba: u64) -> Result<()> {
    let mut mbr = read(io, 0, ss)?;
    let entry = |i: usize| &mbr[446 + 16 * i..462 + 16 * i];
    let protective = mbr[510..512] == [0x55, 0xAA]
        && entry(0)[4] == 0xEE
        && (1..4).all(|i| entry(i).iter().all(|&b| b == 0));
    if protective {
        put32(&mut mbr, 446 + 12, last_lba.min(u64::from(u32::MAX)) as u32);
        io.write_at(&mbr, 0)?;
    }
    Ok(())
}

/// The command that grows `content` to fill its partition, for the
/// message after --grow-last-partition.
pub fn grow_next_step(fstype: Option<&str>, partition_path: &str) -> String {
    match fstype {
        Some("ext2" | "ext3" | "ext4") => {
            format!("e2fsck -f {partition_path} && resize2fs {partition_path}")
        }
        Some("xfs") => format!("mount {partition_path} /mnt && xfs_growfs /mnt"),
        Some("btrfs") => format!("mount {partition_path} /mnt && btrfs filesystem resize max /mnt"),
        Some("ntfs") => format!("ntfsresize {partition_path}"),
        Some("vfat") => format!("fatresize -s max {partition_path}"),
        Some("swap") => format!(
            "mkswap {partition_path} (a new swap area; update /etc/fstab if it names the UUID)"
        ),
        Some("crypto_LUKS") => format!(
            "cryptsetup resize NAME (after opening {partition_path}), then grow what is inside"
        ),
        Some("LVM2_member") => format!("pvresize {partition_path}"),
        _ => format!("grow the filesystem on {partition_path} with its own tool"),
    }
}
