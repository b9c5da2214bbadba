//! ext2/ext3/ext4: free space from the block bitmaps.
//!
//! Superblock, then the group descriptors (32 or `s_desc_size` bytes;
//! meta_bg places them per metagroup), then per group its block bitmap
//! (one bit per cluster; bigalloc clusters are several blocks). A group
//! with BLOCK_UNINIT has no bitmap on disk: only metadata is used there.
//! Every piece of metadata (superblock copies, descriptor tables, bitmaps,
//! inode tables) counts as used whatever the bitmap says, and so does
//! anything after the filesystem's last block. A filesystem that is not
//! clean, needs journal recovery, uses features not understood here, or
//! whose bitmaps disagree with its descriptors' free counts is refused
//! (the caller copies it whole).

use super::{Ranges, Region, le16, le32};
use crate::error::{Error, Result};

const SB: u64 = 1024;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
/// Every incompatible feature whose on-disk allocation is understood.
const INCOMPAT_KNOWN: u32 = bits(&[
    0x1, 0x2, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x1000, 0x2000, 0x4000, 0x8000, 0x10000,
    0x20000,
]);
/// Read-only features whose allocation is understood: sparse_super,
/// large_file, btree_dir, huge_file, gdt_csum, dir_nlink, extra_isize,
/// quota, bigalloc, metadata_csum, readonly, project, shared_blocks,
/// verity, orphan_present. Not: has_snapshot, replica, and unknown ones.
const RO_KNOWN: u32 = bits(&[
    0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x100, 0x200, 0x400, 0x1000, 0x2000, 0x4000, 0x8000,
    0x10000,
]);
/// Snapshot exclude bitmaps change what is allocated.
const COMPAT_EXCLUDE_BITMAP: u32 = 0x100;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_SPARSE_SUPER: u32 = 0x1;
const RO_GDT_CSUM: u32 = 0x10;
const RO_BIGALLOC: u32 = 0x200;
const RO_METADATA_CSUM: u32 = 0x400;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const BG_BLOCK_UNINIT: u16 = 0x2;
const MAX_GROUPS: u64 = 1 << 22;

/// The feature flags in `list`, or-ed together.
const fn bits(list: &[u32]) -> u32 {
    let mut all = 0;
    let mut i = 0;
    while i < list.len() {
        all |= list[i];
        i += 1;
    }
    all
}

fn bad(why: impl Into<String>) -> Error {
    Error::corrupt(why.into())
}

struct Geometry {
    block: u64,
    cluster: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    groups: u64,
    desc_size: u64,
    meta_bg: bool,
    first_meta_bg: u64,
    reserved_gdt: u64,
    sparse_super: bool,
    sparse_super2: Option<[u64; 2]>,
    uninit_valid: bool,
    inode_table_blocks: u64,
    checksum: Checksum,
}

/// How group descriptors are checksummed.
enum Checksum {
    None,
    /// gdt_csum: crc16 over the UUID, the group number and the descriptor.
    Crc16 {
        uuid: [u8; 16],
    },
    /// metadata_csum: crc32c from the filesystem's seed, low 16 bits.
    Crc32c {
        seed: u32,
    },
}

/// Linux's crc32c: no inversion before or after (`crc32c` inverts both).
fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Linux's crc16 (reflected 0x8005, no final inversion) from ~0 over
/// `parts` in order.
fn crc16_of(parts: &[&[u8]]) -> u16 {
    const ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);
    let mut d = ARC.digest_with_initial(!0);
    for part in parts {
        d.update(part);
    }
    d.finalize()
}

impl Checksum {
    /// The descriptor checksum the superblock `sb` says is in use.
    fn read(sb: &[u8], incompat: u32, ro_compat: u32) -> Checksum {
        if ro_compat & RO_METADATA_CSUM != 0 {
            Checksum::Crc32c {
                seed: if incompat & INCOMPAT_CSUM_SEED != 0 {
                    le32(sb, 0x270) as u32
                } else {
                    crc32c_raw(!0, &sb[0x68..0x78])
                },
            }
        } else if ro_compat & RO_GDT_CSUM != 0 {
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&sb[0x68..0x78]);
            Checksum::Crc16 { uuid }
        } else {
            Checksum::None
        }
    }

    /// Whether group `g`'s descriptor `d` carries the right checksum.
    fn holds(&self, g: u64, d: &[u8]) -> bool {
        let stored = le16(d, 0x1E) as u16;
        let group = (g as u32).to_le_bytes();
        let (head, tail) = (&d[..0x1E], &d[0x20..]);
        match self {
            Checksum::None => true,
            Checksum::Crc16 { uuid } => crc16_of(&[uuid, &group, head, tail]) == stored,
            Checksum::Crc32c { seed } => {
                let mut c = crc32c_raw(*seed, &group);
                c = crc32c_raw(c, head);
                c = crc32c_raw(c, &[0, 0]);
                c = crc32c_raw(c, tail);
                (c & 0xFFFF) as u16 == stored
            }
        }
    }
}

/// The superblock's feature flags, once the state and the features are
/// ones whose allocation is understood.
struct Features {
    compat: u32,
    incompat: u32,
    ro_compat: u32,
}

impl Features {
    fn read(sb: &[u8]) -> Result<Features> {
        if le16(sb, 0x38) != 0xEF53 {
            return Err(bad("no ext superblock"));
        }
        let state = le16(sb, 0x3A);
        let compat = le32(sb, 0x5C) as u32;
        let incompat = le32(sb, 0x60) as u32;
        let ro_compat = le32(sb, 0x64) as u32;
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(Error::unsupported("an external journal device"));
        }
        if incompat & INCOMPAT_RECOVER != 0 {
            return Err(bad(
                "its journal needs recovery (mounted, or not cleanly unmounted)",
            ));
        }
        if state & 1 == 0 {
            return Err(bad(
                "it is not marked clean (mounted read-write, or not cleanly unmounted)",
            ));
        }
        if state & 2 != 0 {
            return Err(bad("it has errors recorded (run e2fsck)"));
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(Error::unsupported(format!(
                "incompatible features {:#x} are not understood",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        if ro_compat & !RO_KNOWN != 0 || compat & COMPAT_EXCLUDE_BITMAP != 0 {
            return Err(Error::unsupported(format!(
                "features {:#x} (read-only compatible) / {:#x} are not understood",
                ro_compat & !RO_KNOWN,
                compat & COMPAT_EXCLUDE_BITMAP
            )));
        }
        Ok(Features {
            compat,
            incompat,
            ro_compat,
        })
    }
}

impl Geometry {
    fn read(sb: &[u8], len: u64) -> Result<Geometry> {
        let Features {
            compat,
            incompat,
            ro_compat,
        } = Features::read(sb)?;
        let log_block = le32(sb, 0x18);
        if log_block > 6 {
            return Err(bad(format!("block size 2^(10+{log_block}) is impossible")));
        }
        let block = 1024u64 << log_block;
        let bigalloc = ro_compat & RO_BIGALLOC != 0;
        let cluster = if bigalloc {
            let log_cluster = le32(sb, 0x1C);
            if log_cluster < log_block || log_cluster > 30 {
                return Err(bad("impossible cluster size"));
            }
            1024u64 << log_cluster
        } else {
            block
        };
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(sb, 0x4) | if is64 { le32(sb, 0x150) << 32 } else { 0 };
        let first_data_block = le32(sb, 0x14);
        let blocks_per_group = le32(sb, 0x20);
        let clusters_per_group = if bigalloc {
            le32(sb, 0x24)
        } else {
            blocks_per_group
        };
        let per_cluster = cluster / block;
        if clusters_per_group == 0
            || clusters_per_group > 8 * block
            || blocks_per_group != clusters_per_group * per_cluster
            || first_data_block >= blocks
            || (bigalloc && first_data_block != 0)
        {
            return Err(bad("its block group geometry is impossible"));
        }
        if blocks.checked_mul(block).is_none_or(|b| b > len) {
            return Err(bad(format!(
                "it claims {blocks} blocks of {block} bytes, more than its {len}-byte partition"
            )));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        // mke2fs makes groups of at least 256 blocks; more groups than this
        // (512 TiB of 128 MiB groups) would only cost memory to read.
        if blocks_per_group < 256 || groups > MAX_GROUPS {
            return Err(Error::unsupported(format!(
                "{groups} block groups of {blocks_per_group} blocks"
            )));
        }
        let desc_size = if is64 { le16(sb, 0xFE) } else { 32 };
        if desc_size < 32 || !desc_size.is_power_of_two() || desc_size > block {
            return Err(bad(format!(
                "group descriptor size {desc_size} is impossible"
            )));
        }
        let inode_size = if le32(sb, 0x4C) == 0 {
            128
        } else {
            le16(sb, 0x58)
        };
        let inodes_per_group = le32(sb, 0x28);
        if inode_size == 0 || inodes_per_group == 0 {
            return Err(bad("impossible inode geometry"));
        }
        Ok(Geometry {
            block,
            cluster,
            blocks,
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            groups,
            desc_size,
            meta_bg: incompat & INCOMPAT_META_BG != 0,
            first_meta_bg: le32(sb, 0x104),
            reserved_gdt: le16(sb, 0xCE),
            sparse_super: ro_compat & RO_SPARSE_SUPER != 0,
            sparse_super2: (compat & COMPAT_SPARSE_SUPER2 != 0)
                .then(|| [le32(sb, 0x24C), le32(sb, 0x250)]),
            uninit_valid: ro_compat & (RO_GDT_CSUM | RO_METADATA_CSUM) != 0,
            inode_table_blocks: (inodes_per_group * inode_size).div_ceil(block),
            checksum: Checksum::read(sb, incompat, ro_compat),
        })
    }

    fn group_start(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    fn descs_per_block(&self) -> u64 {
        self.block / self.desc_size
    }

    /// Whether group `g` holds a copy of the superblock (and descriptors).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(backups) = self.sparse_super2 {
            return backups.contains(&g);
        }
        if !self.sparse_super {
            return true;
        }
        let power_of = |base: u64| {
            let mut n = g;
            while n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        };
        g == 1 || power_of(3) || power_of(5) || power_of(7)
    }

    /// Descriptor blocks before meta_bg takes over.
    fn plain_gdt_blocks(&self) -> u64 {
        let all = self.groups.div_ceil(self.descs_per_block());
        if self.meta_bg {
            all.min(self.first_meta_bg)
        } else {
            all
        }
    }

    /// The block the primary superblock is in: byte 1024 is block 1 of
    /// 1 KiB blocks (whatever `first_data_block` says, as with bigalloc).
    fn sb_block(&self) -> u64 {
        1024 / self.block
    }

    /// Where group `g`'s superblock copy is, from its first block.
    fn sb_offset(&self, g: u64) -> u64 {
        if g == 0 {
            self.sb_block() - self.first_data_block.min(self.sb_block())
        } else {
            0
        }
    }

    /// Block holding descriptor block `n` (the kernel's descriptor_loc).
    fn descriptor_block(&self, n: u64) -> u64 {
        if !self.meta_bg || n < self.first_meta_bg {
            return self.sb_block() + 1 + n;
        }
        let g = n * self.descs_per_block();
        self.group_start(g) + u64::from(self.has_super(g)) + self.sb_offset(g)
    }
}

/// Free byte ranges of the ext filesystem in `r`.
pub fn free_ranges(r: &Region) -> Result<Ranges> {
    let sb = r.read(SB, 1024)?;
    let geo = Geometry::read(&sb, r.len)?;
    let descs = Descriptors::read(r, &geo)?;
    let meta = metadata(&geo, &descs)?;
    let mut free = Vec::new();
    for g in 0..geo.groups {
        free.extend(group_free(r, &geo, g, descs.get(g))?);
    }
    // Free space inside the filesystem's blocks, minus every piece of
    // metadata; the rest of the partition stays used.
    let fs_end = geo.blocks * geo.block;
    let free = Ranges::new(free.into_iter().map(|(a, b)| (a, b.min(fs_end))).collect());
    Ok(free.without(&meta))
}

/// Every group descriptor, read from the descriptor blocks.
struct Descriptors {
    bytes: Vec<u8>,
    size: u64,
    /// 64-byte descriptors: fields have high halves.
    wide: bool,
}

impl Descriptors {
    fn read(r: &Region, geo: &Geometry) -> Result<Descriptors> {
        let desc_blocks = geo.groups.div_ceil(geo.descs_per_block());
        let mut bytes = Vec::with_capacity((desc_blocks * geo.block) as usize);
        for n in 0..desc_blocks {
            let at = geo.descriptor_block(n);
            if at >= geo.blocks {
                return Err(bad(format!(
                    "descriptor block {n} lies at block {at}, past the end"
                )));
            }
            bytes.extend(r.read(at * geo.block, geo.block as usize)?);
        }
        Ok(Descriptors {
            bytes,
            size: geo.desc_size,
            wide: geo.desc_size >= 64,
        })
    }

    fn get(&self, g: u64) -> Descriptor<'_> {
        Descriptor {
            d: &self.bytes[(g * self.size) as usize..((g + 1) * self.size) as usize],
            wide: self.wide,
        }
    }
}

/// One group descriptor.
struct Descriptor<'a> {
    d: &'a [u8],
    wide: bool,
}

impl Descriptor<'_> {
    /// A block number split into a low half at `lo` and a high half at `hi`.
    fn field32(&self, lo: usize, hi: usize) -> u64 {
        le32(self.d, lo) | if self.wide { le32(self.d, hi) << 32 } else { 0 }
    }

    fn block_bitmap(&self) -> u64 {
        self.field32(0x0, 0x20)
    }

    fn free_count(&self) -> u64 {
        le16(self.d, 0xC)
            | if self.wide {
                le16(self.d, 0x2C) << 16
            } else {
                0
            }
    }

    fn flags(&self) -> u16 {
        le16(self.d, 0x12) as u16
    }
}

/// Metadata, as byte ranges: used whatever the bitmaps say. Checks each
/// descriptor's checksum on the way.
fn metadata(geo: &Geometry, descs: &Descriptors) -> Result<Ranges> {
    let mut meta: Vec<(u64, u64)> = vec![(0, geo.first_data_block.max(geo.sb_block()) + 1)];
    for g in 0..geo.groups {
        let d = descs.get(g);
        if !geo.checksum.holds(g, d.d) {
            return Err(bad(format!("group {g}'s descriptor fails its checksum")));
        }
        let inode_bitmap = d.field32(0x4, 0x24);
        let table = d.field32(0x8, 0x28);
        for (start, n) in [
            (d.block_bitmap(), 1),
            (inode_bitmap, 1),
            (table, geo.inode_table_blocks),
        ] {
            if start == 0 || start.saturating_add(n) > geo.blocks {
                return Err(bad(format!(
                    "group {g}'s metadata at block {start} lies outside the filesystem"
                )));
            }
            meta.push((start, start + n));
        }
        if geo.has_super(g) {
            let s = geo.group_start(g);
            let n = geo.sb_offset(g) + 1 + geo.plain_gdt_blocks() + geo.reserved_gdt;
            meta.push((s, s + n));
        }
    }
    if geo.meta_bg {
        let dpb = geo.descs_per_block();
        for n in geo.first_meta_bg..geo.groups.div_ceil(dpb) {
            let first = n * dpb;
            // The metagroup's descriptor block and its two backups.
            for g in [first, first + 1, first + dpb - 1] {
                if g < geo.groups {
                    let b = geo.group_start(g) + u64::from(geo.has_super(g)) + geo.sb_offset(g);
                    meta.push((b, b + 1));
                }
            }
        }
    }
    Ok(Ranges::new(
        meta.into_iter()
            .map(|(a, b)| (a * geo.block, b * geo.block))
            .collect(),
    ))
}

/// Free byte ranges of group `g` by its block bitmap (all of it without
/// one), checked against the descriptor's free count.
fn group_free(r: &Region, geo: &Geometry, g: u64, d: Descriptor) -> Result<Vec<(u64, u64)>> {
    let start = geo.group_start(g);
    let clusters = geo
        .clusters_per_group
        .min((geo.blocks - start).div_ceil(geo.cluster / geo.block));
    let free_count = d.free_count();
    if geo.uninit_valid && d.flags() & BG_BLOCK_UNINIT != 0 {
        if g == 0 {
            return Err(bad("group 0 claims to have no block bitmap"));
        }
        // No bitmap on disk: all but the metadata is free.
        return Ok(vec![(
            start * geo.block,
            start * geo.block + clusters * geo.cluster,
        )]);
    }
    let bitmap = r.read(d.block_bitmap() * geo.block, geo.block as usize)?;
    let mut free = Vec::new();
    let mut zeros = 0;
    let mut run: Option<u64> = None;
    for i in 0..=clusters {
        let used = i == clusters || bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0;
        match (used, run) {
            (false, None) => run = Some(i),
            (true, Some(a)) => {
                zeros += i - a;
                let base = start * geo.block;
                free.push((base + a * geo.cluster, base + i * geo.cluster));
                run = None;
            }
            _ => {}
        }
    }
    if zeros != free_count {
        return Err(bad(format!(
            "group {g}'s bitmap has {zeros} free clusters, its descriptor says {free_count}"
        )));
    }
    Ok(free)
}
