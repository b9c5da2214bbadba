//! FAT12/16/32: free space from the allocation table.
//!
//! The reserved sectors, every FAT and the FAT12/16 root directory are
//! used; of the data area, a cluster is free when its entry is zero in
//! every copy of the FAT (a disagreement counts as used). Sectors after
//! the last cluster, and anything after the filesystem's end, stay used.

use super::{Ranges, Region, le16, le32};
use crate::disk::layout::is_sector_size;
use crate::error::{Error, Result};

/// The FAT entry of `cluster` in one table; an entry past the table's end
/// reads as used.
fn entry(fat: &[u8], bits: u32, cluster: u64) -> u64 {
    let (at, len) = match bits {
        12 => (cluster + cluster / 2, 2),
        16 => (cluster * 2, 2),
        _ => (cluster * 4, 4),
    };
    let Some(raw) = fat.get(at as usize..(at + len) as usize) else {
        return u64::MAX;
    };
    match bits {
        12 if cluster.is_multiple_of(2) => le16(raw, 0) & 0xFFF,
        12 => le16(raw, 0) >> 4,
        16 => le16(raw, 0),
        _ => le32(raw, 0) & 0x0FFF_FFFF,
    }
}

/// The boot sector's geometry, checked, in sectors.
struct Geometry {
    sector: u64,
    per_cluster: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
    data_start: u64,
    clusters: u64,
    bits: u32,
    fat32: bool,
}

impl Geometry {
    fn read(bs: &[u8], len: u64) -> Result<Geometry> {
        let sector = le16(bs, 0x0B);
        let per_cluster = u64::from(bs[0x0D]);
        let reserved = le16(bs, 0x0E);
        let fats = u64::from(bs[0x10]);
        let root_entries = le16(bs, 0x11);
        let total = match le16(bs, 0x13) {
            0 => le32(bs, 0x20),
            n => n,
        };
        let fat32 = le16(bs, 0x16) == 0;
        let fat_sectors = if fat32 {
            le32(bs, 0x24)
        } else {
            le16(bs, 0x16)
        };
        if !is_sector_size(sector)
            || !per_cluster.is_power_of_two()
            || reserved == 0
            || !(1..=2).contains(&fats)
            || fat_sectors == 0
        {
            return Err(Error::corrupt("its boot sector's geometry is impossible"));
        }
        if total.saturating_mul(sector) > len {
            return Err(Error::corrupt(format!(
                "it claims {total} sectors, more than its {len}-byte partition"
            )));
        }
        let root_sectors = (root_entries * 32).div_ceil(sector);
        let data_start = reserved + fats * fat_sectors + root_sectors;
        let Some(data) = total.checked_sub(data_start) else {
            return Err(Error::corrupt("its data area starts after its end"));
        };
        let clusters = data / per_cluster;
        let bits = match clusters {
            _ if fat32 => 32,
            0..4085 => 12,
            _ => 16,
        };
        if (clusters + 2) * u64::from(bits) / 8 > fat_sectors * sector {
            return Err(Error::corrupt("its FAT is too small for its clusters"));
        }
        Ok(Geometry {
            sector,
            per_cluster,
            reserved,
            fats,
            fat_sectors,
            data_start,
            clusters,
            bits,
            fat32,
        })
    }
}

/// Free byte ranges of the FAT filesystem in `r`.
pub fn free_ranges(r: &Region) -> Result<Ranges> {
    let bs = r.read(0, 512)?;
    let geo = Geometry::read(&bs, r.len)?;
    let fat_bytes = geo.fat_sectors * geo.sector;
    let tables: Vec<Vec<u8>> = (0..geo.fats)
        .map(|i| {
            r.read(
                (geo.reserved + i * geo.fat_sectors) * geo.sector,
                fat_bytes as usize,
            )
        })
        .collect::<Result<_>>()?;
    check_tables(&bs, &geo, &tables)?;
    Ok(free_clusters(&geo, &tables))
}

/// Refuses tables that do not match the boot sector, or a filesystem
/// that was not cleanly unmounted.
fn check_tables(bs: &[u8], geo: &Geometry, tables: &[Vec<u8>]) -> Result<()> {
    let bits = geo.bits;
    // The first entry repeats the media byte: a cheap check that this is
    // the table the boot sector describes.
    let media = u64::from(bs[0x15]);
    if tables.iter().any(|t| entry(t, bits, 0) & 0xFF != media) {
        return Err(Error::corrupt(
            "its FAT does not start with the boot sector's media byte",
        ));
    }
    // Not cleanly unmounted: the dirty bit of the boot sector, or the
    // "clean shutdown" bit of FAT entry 1 cleared (FAT16 and FAT32).
    let dirty_flag = bs[if geo.fat32 { 0x41 } else { 0x25 }] & 1 != 0;
    let clean_bit = match bits {
        16 => 0x8000,
        32 => 0x0800_0000,
        _ => 0,
    };
    if dirty_flag
        || tables
            .iter()
            .any(|t| entry(t, bits, 1) & clean_bit != clean_bit)
    {
        return Err(Error::corrupt(
            "it is marked dirty (mounted, or not cleanly unmounted): run fsck.fat",
        ));
    }
    Ok(())
}

/// The clusters free in every copy of the FAT, as byte ranges.
fn free_clusters(geo: &Geometry, tables: &[Vec<u8>]) -> Ranges {
    let (bits, clusters) = (geo.bits, geo.clusters);
    let cluster_bytes = geo.per_cluster * geo.sector;
    let base = geo.data_start * geo.sector;
    let mut free = Vec::new();
    let mut run: Option<u64> = None;
    for c in 2..clusters + 3 {
        let is_free = c < clusters + 2 && tables.iter().all(|t| entry(t, bits, c) == 0);
        match (is_free, run) {
            (true, None) => run = Some(c),
            (false, Some(a)) => {
                free.push((
                    base + (a - 2) * cluster_bytes,
                    base + (c - 2) * cluster_bytes,
                ));
                run = None;
            }
            _ => {}
        }
    }
    Ranges::new(free)
}
