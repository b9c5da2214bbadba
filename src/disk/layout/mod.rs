//! A disk's layout: its partition table (MBR or GPT, or none) and what each
//! partition holds, and fitting a table to a target of another size
//! (`plan_fit`, then `apply_fit`, which rewrites the GPT headers and
//! tables and the protective MBR on the target). Reading a layout never
//! writes. Damaged or odd tables give warnings and as much of the layout
//! as can be trusted; hostile bytes never panic.

mod fit;
mod gpt;
pub(crate) mod le;
mod mbr;
mod names;
mod probe;

use crate::error::{Error, Result};

pub use fit::{TableFit, WriteAt, apply_fit, grow_next_step, plan_fit};
pub use probe::{Content, PROBE_LEN, probe as probe_content, swap_page};

/// More warnings than this about one table say nothing new.
const MAX_WARNINGS: usize = 32;

/// The logical sector sizes a disk can have. Any other size in a boot
/// sector or a snapshot's layout is damage.
pub const SECTOR_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// Whether `n` bytes is one of the [`SECTOR_SIZES`].
pub fn is_sector_size(n: u64) -> bool {
    SECTOR_SIZES.iter().any(|&s| u64::from(s) == n)
}

/// Reads bytes of a disk or image; `offset + buf.len()` is inside it.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
}

/// A disk as the table readers see it: bytes, size, sector size.
pub struct Disk<'a> {
    io: &'a dyn ReadAt,
    size: u64,
    sector: u32,
}

impl Disk<'_> {
    fn sectors(&self) -> u64 {
        self.size / u64::from(self.sector)
    }

    /// Up to `len` bytes at `offset`, shortened at the end of the disk;
    /// `None` when `offset` is past it.
    fn read(&self, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        if offset >= self.size {
            return Ok(None);
        }
        let len = (self.size - offset).min(len as u64) as usize;
        let mut buf = vec![0u8; len];
        self.io.read_at(&mut buf, offset)?;
        Ok(Some(buf))
    }

    /// One whole sector, or `None` past the end.
    fn read_sector(&self, lba: u64) -> Result<Option<Vec<u8>>> {
        let sector = u64::from(self.sector);
        match lba.checked_mul(sector) {
            Some(at) if at + sector <= self.size => self.read(at, self.sector as usize),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    None,
    Mbr,
    Gpt,
}

/// The GPT's own geometry, as its headers say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GptInfo {
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Where the backup header is (normally the disk's last sector).
    pub backup_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
    /// Whether each header and its entry array passed their CRC checks.
    pub primary_ok: bool,
    pub backup_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partition {
    /// As Linux numbers it: `/dev/sda<number>`.
    pub number: u32,
    /// First sector, in the table's sector size.
    pub start: u64,
    pub sectors: u64,
    /// "0x83" for MBR, the type GUID for GPT.
    pub type_id: String,
    pub type_name: String,
    /// GPT: the partition's own GUID and its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// MBR: the active flag. GPT: the "legacy BIOS bootable" attribute.
    #[serde(default)]
    pub bootable: bool,
    /// GPT attribute bits.
    #[serde(default)]
    pub attributes: u64,
    /// MBR: "primary", "extended" or "logical".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbr_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

impl Partition {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }

    pub fn is_extended(&self) -> bool {
        self.mbr_kind.as_deref() == Some("extended")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub table: Table,
    pub sector_size: u32,
    pub disk_size: u64,
    /// The GPT disk GUID, or the MBR disk signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt: Option<GptInfo>,
    pub partitions: Vec<Partition>,
    /// Without a table: what the whole disk holds (a filesystem image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Whether the first 440 bytes (an MBR's boot code) hold anything.
    #[serde(default)]
    pub boot_code: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Odd but harmless: a disk grown since its GPT was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Sectors `[start, end)` holding the partition table itself (MBR,
    /// EBRs, GPT headers and arrays): never free space.
    #[serde(skip)]
    pub table_sectors: Vec<(u64, u64)>,
}

impl Layout {
    /// Reads the layout of a disk of `size` bytes. `sector` is the
    /// device's logical sector size; for an image file (`sector_known`
    /// false) a GPT written for 4096-byte sectors is recognised too.
    pub fn read(io: &dyn ReadAt, size: u64, sector: u32, sector_known: bool) -> Result<Layout> {
        let mut tries = vec![sector];
        if !sector_known {
            tries.extend([512, 4096].into_iter().filter(|&s| s != sector));
        }
        let mut notes = Vec::new();
        for &s in &tries {
            let disk = Disk {
                io,
                size,
                sector: s,
            };
            if let Some(layout) = gpt::read(&disk, &mut notes)? {
                return layout.with_contents(&disk);
            }
        }
        let disk = Disk { io, size, sector };
        let head = disk.read(0, probe::PROBE_LEN)?.unwrap_or_default();
        let mut layout = Layout {
            table: Table::None,
            sector_size: sector,
            disk_size: size,
            disk_id: None,
            gpt: None,
            partitions: Vec::new(),
            content: None,
            boot_code: false,
            warnings: notes,
            notes: Vec::new(),
            table_sectors: Vec::new(),
        };
        // An MBR without partitions may be a boot sector in front of a
        // filesystem on the whole disk (GRUB's, on ext4): the filesystem
        // decides then.
        let fs_boot = probe::is_boot_sector_filesystem(&head);
        if head.len() >= 512
            && mbr::is_mbr(&head)
            && (mbr::has_entries(&head) || (!fs_boot && probe::probe(&head).is_none()))
        {
            if fs_boot {
                layout.warnings.push(
                    "sector 0 is both a filesystem's boot sector and a partition table; \
                     showing the table"
                        .into(),
                );
            }
            layout.table = Table::Mbr;
            layout.table_sectors.push((0, 1));
            layout.disk_id = Some(mbr::disk_id(&head));
            layout.boot_code = head[..440].iter().any(|&b| b != 0);
            if mbr::is_protective(&head) {
                layout.warnings.push(
                    "the MBR is a GPT protective MBR, but neither GPT header is valid; \
                     showing the MBR"
                        .into(),
                );
            }
            layout.partitions = mbr::read(
                &disk,
                &head,
                &mut layout.warnings,
                &mut layout.table_sectors,
            )?;
            return layout.with_contents(&disk);
        }
        layout.content = probe::probe(&head);
        Ok(layout)
    }

    /// Probes every partition's content and checks the partitions against
    /// the disk and each other.
    fn with_contents(mut self, disk: &Disk) -> Result<Layout> {
        let sector = u64::from(self.sector_size);
        let disk_sectors = disk.sectors();
        for p in &mut self.partitions {
            if p.end() > disk_sectors {
                self.warnings.push(format!(
                    "partition {} ends at sector {}, past the end of the disk ({} sectors)",
                    p.number,
                    p.end(),
                    disk_sectors
                ));
            }
            if p.is_extended() {
                continue;
            }
            let len = p
                .sectors
                .saturating_mul(sector)
                .min(probe::PROBE_LEN as u64);
            if let Some(at) = p.start.checked_mul(sector)
                && let Some(head) = disk.read(at, len as usize)?
            {
                p.content = probe::probe(&head);
            }
        }
        // Sorted by start, a partition overlaps an earlier one exactly when
        // it starts before the furthest end so far: one pass, one warning
        // per overlapping partition.
        let mut order: Vec<&Partition> = self.partitions.iter().collect();
        order.sort_by_key(|p| (p.start, p.end()));
        let mut furthest: Option<&Partition> = None;
        let mut overlaps = Vec::new();
        for b in order {
            if let Some(a) = furthest {
                let nested = (a.is_extended() && b.mbr_kind.as_deref() == Some("logical"))
                    || (b.is_extended() && a.mbr_kind.as_deref() == Some("logical"));
                if !nested && b.start < a.end() {
                    overlaps.push(format!(
                        "partitions {} and {} overlap (sectors {}..{} and {}..{})",
                        a.number,
                        b.number,
                        a.start,
                        a.end(),
                        b.start,
                        b.end()
                    ));
                }
            }
            // An extended partition contains its logical ones: the
            // furthest end that counts is that of a real partition.
            if furthest.is_none_or(|a| b.end() > a.end() || a.is_extended()) {
                furthest = Some(b);
            }
        }
        self.warnings.extend(overlaps);
        if self.warnings.len() > MAX_WARNINGS {
            let more = self.warnings.len() - MAX_WARNINGS;
            self.warnings.truncate(MAX_WARNINGS);
            self.warnings
                .push(format!("... and {more} more problems of this table"));
        }
        Ok(self)
    }

    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// The byte range `(offset, len)` of partition `number`, for backing
    /// up or restoring it alone: it must exist, hold data (not be an
    /// extended container) and end inside the disk. `what` names the disk
    /// in messages.
    pub fn partition_span(&self, number: u32, what: &str) -> Result<(u64, u64)> {
        let Some(part) = self.partition(number) else {
            let have: Vec<String> = self
                .partitions
                .iter()
                .map(|p| p.number.to_string())
                .collect();
            return Err(Error::not_found(format!(
                "{what} has no partition {number} (it has {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ))
            .hint(
                "`platter inspect` (a disk) or `platter show` (a snapshot) lists the partitions",
            ));
        };
        if part.is_extended() {
            return Err(Error::bad_input(format!(
                "partition {number} of {what} is an extended partition, a container of logical \
                 partitions"
            ))
            .hint("name a logical partition (5 and up) or the whole disk"));
        }
        self.partition_bytes(number)
            .filter(|&(o, l)| o.checked_add(l).is_some_and(|end| end <= self.disk_size))
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "partition {number} of {what} ends past the end of the disk"
                ))
                .hint("the partition table is damaged; use the whole disk instead")
            })
    }

    /// The byte range of partition `number` on the disk.
    pub fn partition_bytes(&self, number: u32) -> Option<(u64, u64)> {
        let p = self.partition(number)?;
        let sector = u64::from(self.sector_size);
        Some((p.start.checked_mul(sector)?, p.sectors.checked_mul(sector)?))
    }

    /// Runs of sectors outside every partition (and, for GPT, outside the
    /// tables): `(first sector, sectors)`. Boot loaders often live there.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let end = self.disk_size / u64::from(self.sector_size.max(1));
        let (mut at, stop) = match (&self.table, &self.gpt) {
            (Table::None, _) => return Vec::new(),
            (Table::Gpt, Some(g)) => (g.first_usable_lba, g.last_usable_lba.saturating_add(1)),
            _ => (1, end),
        };
        let mut spans: Vec<(u64, u64)> = self
            .partitions
            .iter()
            .filter(|p| !p.is_extended())
            .map(|p| (p.start, p.end()))
            .collect();
        spans.sort_unstable();
        let mut gaps = Vec::new();
        for (start, end) in spans {
            if start.min(stop) > at {
                gaps.push((at, start.min(stop) - at));
            }
            at = at.max(end);
        }
        if stop > at {
            gaps.push((at, stop - at));
        }
        gaps.retain(|&(_, n)| n > 0);
        gaps
    }
}

#[cfg(test)]
mod tests;
