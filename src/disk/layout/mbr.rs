//! The MBR partition table: four primary entries in sector 0, and for an
//! extended partition a chain of EBRs, each holding one logical partition
//! and a link to the next. Chains that loop, leave the disk or run long
//! end with a warning, never a hang or a panic.

use std::collections::HashSet;

use super::{Disk, Partition, le, names};
use crate::error::Result;

/// Linux numbers logical partitions from 5 whatever the primaries are.
const FIRST_LOGICAL: u32 = 5;
/// More logical partitions than any tool makes: the chain is damaged.
const MAX_LOGICAL: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Entry {
    status: u8,
    code: u8,
    start: u64,
    sectors: u64,
}

const EMPTY: Entry = Entry {
    status: 0,
    code: 0,
    start: 0,
    sectors: 0,
};

fn entries(sector: &[u8]) -> [Entry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        Entry {
            status: e[0],
            code: e[4],
            start: u64::from(le::u32(e, 8)),
            sectors: u64::from(le::u32(e, 12)),
        }
    })
}

/// Whether sector 0 (at least 512 bytes) carries an MBR partition table:
/// the 55 AA signature and sane status bytes.
pub fn is_mbr(sector0: &[u8]) -> bool {
    sector0.len() >= 512
        && sector0[510..512] == [0x55, 0xAA]
        && entries(sector0)
            .iter()
            .all(|e| matches!(e.status, 0x00 | 0x80))
}

/// Whether the MBR is a GPT's protective (or hybrid) MBR: an 0xEE entry.
pub fn is_protective(sector0: &[u8]) -> bool {
    is_mbr(sector0) && entries(sector0).iter().any(|e| e.code == 0xEE)
}

/// Whether the MBR has at least one partition entry in use.
pub fn has_entries(sector0: &[u8]) -> bool {
    is_mbr(sector0)
        && entries(sector0)
            .iter()
            .any(|e| e.code != 0 && e.sectors != 0)
}

/// The disk signature (bytes 440..444), as fdisk prints it.
pub fn disk_id(sector0: &[u8]) -> String {
    let id = le::u32(sector0, 440);
    format!("0x{id:08x}")
}

/// Reads the primary and logical partitions. Problems that still leave a
/// readable table are pushed to `warnings`.
/// The sectors of EBRs it reads go to `tables`.
pub fn read(
    disk: &Disk,
    sector0: &[u8],
    warnings: &mut Vec<String>,
    tables: &mut Vec<(u64, u64)>,
) -> Result<Vec<Partition>> {
    let mut parts = Vec::new();
    let mut extended = None;
    for (i, e) in entries(sector0).iter().enumerate() {
        if e.code == 0 || e.sectors == 0 {
            continue;
        }
        let mut p = partition(i as u32 + 1, e, e.start);
        if names::mbr_is_extended(e.code) {
            p.mbr_kind = Some("extended".into());
            if extended.is_some() {
                warnings.push(format!(
                    "partition {} is a second extended partition; its logical partitions are not read",
                    p.number
                ));
            } else {
                extended = Some((e.start, e.sectors));
            }
        }
        parts.push(p);
    }
    if let Some((start, sectors)) = extended {
        logical(disk, start, sectors, &mut parts, warnings, tables)?;
    }
    Ok(parts)
}

fn partition(number: u32, e: &Entry, start: u64) -> Partition {
    Partition {
        number,
        start,
        sectors: e.sectors,
        type_id: format!("0x{:02x}", e.code),
        type_name: names::mbr_type(e.code).to_string(),
        guid: None,
        name: None,
        bootable: e.status == 0x80,
        attributes: 0,
        mbr_kind: Some("primary".into()),
        content: None,
    }
}

/// Follows the EBR chain of the extended partition at `ext_start`.
fn logical(
    disk: &Disk,
    ext_start: u64,
    ext_sectors: u64,
    parts: &mut Vec<Partition>,
    warnings: &mut Vec<String>,
    tables: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut number = FIRST_LOGICAL;
    loop {
        if !seen.insert(ebr) || seen.len() > MAX_LOGICAL {
            warnings.push(format!(
                "the chain of logical partitions loops or runs past {MAX_LOGICAL} entries at \
                 sector {ebr}; the rest is not read"
            ));
            return Ok(());
        }
        tables.push((ebr, ebr.saturating_add(1)));
        let Some(sector) = disk.read_sector(ebr)? else {
            warnings.push(format!(
                "the extended partition's table at sector {ebr} is past the end of the disk"
            ));
            return Ok(());
        };
        if sector[510..512] != [0x55, 0xAA] {
            warnings.push(format!(
                "the extended partition's table at sector {ebr} has no 55 AA signature; \
                 logical partitions from {number} on are not read"
            ));
            return Ok(());
        }
        // The kernel takes the logical partition and the link to the next
        // EBR from whichever slots hold them; so does this.
        let slots = entries(&sector);
        let used = |e: &&Entry| e.code != 0 && e.sectors != 0;
        let this = slots
            .iter()
            .filter(used)
            .find(|e| !names::mbr_is_extended(e.code))
            .copied()
            .unwrap_or(EMPTY);
        let next = slots
            .iter()
            .filter(used)
            .find(|e| names::mbr_is_extended(e.code))
            .copied()
            .unwrap_or(EMPTY);
        if this.code != 0 {
            let mut p = partition(number, &this, ebr.saturating_add(this.start));
            p.mbr_kind = Some("logical".into());
            if p.end() > ext_start.saturating_add(ext_sectors) {
                warnings.push(format!(
                    "logical partition {number} ends past the end of its extended partition"
                ));
            }
            parts.push(p);
            number += 1;
        }
        if next.code == 0 {
            return Ok(());
        }
        ebr = ext_start.saturating_add(next.start);
    }
}
