//! GPT: a header at LBA 1 and a backup at the disk's end, each with a CRC
//! over itself and over its partition entry array.
//!
//! Parsed here rather than with the `gpt` crate: on hostile headers that
//! crate panics (entry sizes other than 128, which the spec allows),
//! allocates `entries x size` bytes before any check, looks for the backup
//! only at the last LBA (not where the primary says, so a grown disk with
//! a damaged primary cannot be read), and does not fall back to the backup
//! array when the primary array is damaged. All of these are needed here.

use super::{Disk, GptInfo, Layout, Partition, Table, le, mbr, names};
use crate::error::Result;

pub const HEADER_SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER_SIZE: u32 = 92;
/// No real table is larger; anything above is damage, not read.
const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// The fields of a header that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

/// The CRC32 of a header of `size` bytes, with its CRC field as zeros.
pub fn header_crc(sector: &[u8], size: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&sector[..16]);
    h.update(&[0; 4]);
    h.update(&sector[20..size]);
    h.finalize()
}

/// Sectors an entry array of `entries` x `entry_size` bytes takes.
pub fn array_sectors(entries: u32, entry_size: u32, sector: u32) -> u64 {
    (u64::from(entries) * u64::from(entry_size)).div_ceil(u64::from(sector))
}

impl Header {
    /// Checks the header in `sector`, read from `lba` of a disk of
    /// `disk_sectors` sectors. The error says what is wrong.
    pub fn parse(
        sector: &[u8],
        lba: u64,
        disk_sectors: u64,
    ) -> std::result::Result<Header, String> {
        if &sector[..8] != HEADER_SIGNATURE {
            return Err("no GPT signature".into());
        }
        let size = le::u32(sector, 12);
        if size < MIN_HEADER_SIZE || size as usize > sector.len() {
            return Err(format!("header size {size} is impossible"));
        }
        if header_crc(sector, size as usize) != le::u32(sector, 16) {
            return Err("header CRC mismatch".into());
        }
        let h = Header {
            size,
            my_lba: le::u64(sector, 24),
            alternate_lba: le::u64(sector, 32),
            first_usable: le::u64(sector, 40),
            last_usable: le::u64(sector, 48),
            disk_guid: sector[56..72].try_into().unwrap_or([0; 16]),
            entries_lba: le::u64(sector, 72),
            entries: le::u32(sector, 80),
            entry_size: le::u32(sector, 84),
            entries_crc: le::u32(sector, 88),
        };
        if h.my_lba != lba {
            return Err(format!(
                "header says it is at LBA {}, found at LBA {lba}",
                h.my_lba
            ));
        }
        if h.entry_size < 128 || !h.entry_size.is_power_of_two() {
            return Err(format!(
                "entry size {} is not 128 times a power of two",
                h.entry_size
            ));
        }
        let array_bytes = u64::from(h.entries) * u64::from(h.entry_size);
        if array_bytes > MAX_ARRAY_BYTES {
            return Err(format!(
                "{} entries of {} bytes is too large a table",
                h.entries, h.entry_size
            ));
        }
        let sectors = array_bytes.div_ceil(sector.len() as u64);
        if h.entries_lba == 0 || h.entries_lba.saturating_add(sectors) > disk_sectors {
            return Err(format!(
                "entry array at LBA {} lies outside the disk",
                h.entries_lba
            ));
        }
        if h.first_usable > h.last_usable.saturating_add(1)
            || h.first_usable < 2
            || h.last_usable >= h.my_lba.max(h.alternate_lba)
        {
            return Err(format!(
                "usable sectors {}..{} are impossible",
                h.first_usable, h.last_usable
            ));
        }
        Ok(h)
    }

    pub fn array_len(&self) -> usize {
        self.entries as usize * self.entry_size as usize
    }
}

/// A GUID as printed by sgdisk and blkid: the first three fields are
/// little-endian on disk.
pub fn guid_text(b: &[u8]) -> String {
    let hex = |r: &[u8]| r.iter().map(|c| format!("{c:02X}")).collect::<String>();
    let rev = |r: &[u8]| r.iter().rev().copied().collect::<Vec<u8>>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&rev(&b[0..4])),
        hex(&rev(&b[4..6])),
        hex(&rev(&b[6..8])),
        hex(&b[8..10]),
        hex(&b[10..16])
    )
}

/// A header and its entry array, both checked.
struct Checked {
    header: Header,
    array: Vec<u8>,
}

/// Reads and checks the header at `lba` and its array.
fn read_table(disk: &Disk, lba: u64) -> Result<std::result::Result<Checked, String>> {
    let Some(sector) = disk.read_sector(lba)? else {
        return Ok(Err(format!("LBA {lba} is past the end of the disk")));
    };
    let header = match Header::parse(&sector, lba, disk.sectors()) {
        Ok(h) => h,
        Err(why) => return Ok(Err(why)),
    };
    let at = header.entries_lba * u64::from(disk.sector);
    let array = disk.read(at, header.array_len())?.unwrap_or_default();
    if array.len() != header.array_len() || crc32fast::hash(&array) != header.entries_crc {
        return Ok(Err("partition entry array CRC mismatch".into()));
    }
    Ok(Ok(Checked { header, array }))
}

/// The primary table and the backup, each checked, and the LBA the
/// backup was read from.
struct Tables {
    primary: std::result::Result<Checked, String>,
    backup: std::result::Result<Checked, String>,
    backup_at: u64,
}

fn read_tables(disk: &Disk, last: u64) -> Result<Tables> {
    let primary = read_table(disk, 1)?;
    // The backup lives where the primary says; on a disk that was grown
    // (or a damaged primary) it may also be found at the last sector.
    let mut backup_at = match &primary {
        Ok(p) if p.header.alternate_lba <= last => p.header.alternate_lba,
        _ => last,
    };
    let mut backup = read_table(disk, backup_at)?;
    if backup.is_err()
        && backup_at != last
        && let Ok(b) = read_table(disk, last)?
    {
        backup_at = last;
        backup = Ok(b);
    }
    Ok(Tables {
        primary,
        backup,
        backup_at,
    })
}

/// The GPT of `disk`, if it has one with at least one valid header.
/// Damage is named in the layout's warnings, or in `notes` when no
/// header is usable.
pub fn read(disk: &Disk, notes: &mut Vec<String>) -> Result<Option<Layout>> {
    let last = disk.sectors().saturating_sub(1);
    let Some(sector1) = disk.read_sector(1)? else {
        return Ok(None);
    };
    let Tables {
        primary,
        backup,
        backup_at,
    } = read_tables(disk, last)?;
    if primary.is_err() && backup.is_err() && &sector1[..8] != HEADER_SIGNATURE {
        return Ok(None);
    }
    // A GPT counts only if sector 0 points at it (an 0xEE entry), as the
    // kernel and blkid decide; an MBR with partitions of its own and no
    // 0xEE entry makes it a leftover of an earlier partitioning. Without
    // any MBR it can only be the GPT.
    let sector0 = disk.read_sector(0)?.unwrap_or_default();
    if mbr::has_entries(&sector0) && !mbr::is_protective(&sector0) {
        notes.push(
            "a GPT was found too, but the MBR does not point at it (no 0xEE entry): it is a \
             leftover of an earlier partitioning and is ignored"
                .into(),
        );
        return Ok(None);
    }
    let mut warnings = std::mem::take(notes);
    let chosen = match (&primary, &backup) {
        (Ok(p), _) => p,
        (Err(why), Ok(b)) => {
            warnings.push(format!(
                "the primary GPT is damaged ({why}); the layout comes from the backup at LBA {backup_at}"
            ));
            b
        }
        (Err(p), Err(b)) => {
            notes.push(format!(
                "the disk has a GPT signature but no usable GPT (primary: {p}; backup: {b})"
            ));
            return Ok(None);
        }
    };
    let notes = compare(&primary, &backup, backup_at, last, &mut warnings);
    let mut table_sectors = vec![(0, chosen.header.first_usable)];
    if let Ok(b) = &backup {
        table_sectors.push((b.header.entries_lba, backup_at.saturating_add(1)));
    }
    let h = &chosen.header;
    let partitions = partitions(h, &chosen.array, &mut warnings);
    if !mbr::is_protective(&sector0) {
        warnings.push("the GPT has no protective MBR in sector 0".into());
    }
    Ok(Some(Layout {
        table: Table::Gpt,
        sector_size: disk.sector,
        disk_size: disk.size,
        disk_id: Some(guid_text(&h.disk_guid)),
        gpt: Some(GptInfo {
            first_usable_lba: h.first_usable,
            last_usable_lba: h.last_usable,
            backup_lba: if backup.is_ok() {
                backup_at
            } else {
                h.alternate_lba
            },
            entries: h.entries,
            entry_size: h.entry_size,
            primary_ok: primary.is_ok(),
            backup_ok: backup.is_ok(),
        }),
        partitions,
        content: None,
        boot_code: sector0.len() >= 440 && sector0[..440].iter().any(|&b| b != 0),
        warnings,
        notes,
        table_sectors,
    }))
}

/// Warns about a damaged backup, arrays that differ, and a disk whose size
/// is not the one the primary header says; returns the notes (a grown
/// disk is harmless).
fn compare(
    primary: &std::result::Result<Checked, String>,
    backup: &std::result::Result<Checked, String>,
    backup_at: u64,
    last: u64,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    if let (Ok(_), Err(why)) = (primary, backup) {
        warnings.push(format!(
            "the backup GPT at LBA {backup_at} is damaged or missing ({why})"
        ));
    }
    if let (Ok(p), Ok(b)) = (primary, backup)
        && p.array != b.array
    {
        warnings.push("the primary and backup GPT entry arrays differ; showing the primary".into());
    }
    let mut notes = Vec::new();
    if let Ok(p) = primary
        && p.header.alternate_lba != last
    {
        let text = format!(
            "the GPT says the disk ends at LBA {}, but it ends at LBA {last}",
            p.header.alternate_lba
        );
        // A grown disk is common and harmless; a cut one is not.
        if p.header.alternate_lba < last {
            notes.push(format!("{text} (the disk was grown)"));
        } else {
            warnings.push(format!("{text} (the image was cut short)"));
        }
    }
    notes
}

/// The partitions of a checked entry array: every entry whose type GUID is
/// not zero. One outside the usable area is kept, with a warning.
fn partitions(h: &Header, array: &[u8], warnings: &mut Vec<String>) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last_lba) = (le::u64(e, 32), le::u64(e, 40));
        let number = i as u32 + 1;
        if last_lba < first || first < h.first_usable || last_lba > h.last_usable {
            warnings.push(format!(
                "partition {number} (sectors {first}..={last_lba}) lies outside the usable area \
                 {}..={} or ends before it starts",
                h.first_usable, h.last_usable
            ));
        }
        let type_id = guid_text(&e[..16]);
        let attributes = le::u64(e, 48);
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| le::u16(c, 0))
            .take_while(|&c| c != 0)
            .collect();
        let name = String::from_utf16_lossy(&name);
        partitions.push(Partition {
            number,
            start: first,
            sectors: last_lba.saturating_sub(first).saturating_add(1),
            type_name: names::gpt_type(&type_id).to_string(),
            type_id,
            guid: Some(guid_text(&e[16..32])),
            name: (!name.is_empty()).then_some(name),
            bootable: attributes & 0x4 != 0,
            attributes,
            mbr_kind: None,
            content: None,
        });
    }
    partitions
}
