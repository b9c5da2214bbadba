//! Sorted index files: format version 3, written in repositories with the
//! `sorted-index` feature. Entries are sorted by chunk id and stored in
//! blocks, each with its own crc32 and, in an encrypted repository, sealed
//! on its own; so a file is read a block at a time (memory does not grow
//! with it, even sealed), and its keys (the first id of each block) tell
//! which single block can hold a chunk.
//!
//! ```text
//! offset  size   field
//! 0       8      magic "PLTRIDX\0"
//! 8       4      format version (3)
//! 12      4      flags: 1 = sealed (encrypted repository), else 0
//! 16      4      number of packs p
//! 20      4      entries per block b (4096)
//! 24      8      number of entries n
//! 32      8      number of delta bases d
//! 40      4      crc32 of bytes 0..40
//! 44      .      head: p u32 | b u32 | n u64 | d u64 | the pack ids (32*p)
//! .       .      ceil(n/b) entry blocks of b entries (the last may hold
//!                fewer), sorted by chunk id; each entry as in version 1,
//!                64 bytes, its last u32 the entry's position among the
//!                bases (u32::MAX when it is not a delta)
//! .       .      ceil(d/b) base blocks: the base chunk id (32 bytes) of
//!                each delta entry, in the order of the entries
//! .       .      keys: the first chunk id of each entry block (32 bytes)
//! .       4      magic "IEND"
//! ```
//!
//! The head, every block and the keys ("parts") are each followed by the
//! crc32 of their stored bytes, so damage is told without the key. Sealed,
//! each part is sealed for its own place: "index/<id>#head", "#e<k>" for
//! entry block k, "#b<k>" for base block k and "#keys"; a part cannot be
//! moved, and the head repeats the counts, so they are authenticated and
//! a file cut to fewer blocks is refused.

use std::io::Write;

use crate::codec::{ChunkId, Sealing, crc32};
use crate::error::{Error, Result};
use crate::repo::backend::{Backend, StoredFile};
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::index::file::{ENTRY_LEN, MAGIC, MAX_PACKS, RawEntry, put_entry};
use crate::repo::pack::PackEntry;
use crate::repo::{IndexId, PackId, sealed};

pub const VERSION: u32 = 3;
const END_MAGIC: &[u8; 4] = b"IEND";
pub const FIXED_LEN: u64 = 44;
const HEAD_FIELDS: u64 = 24;
const PER_BLOCK: u32 = 4096;
/// The block sizes a reader accepts (bounds on what it allocates for a
/// block, and for the keys: 32 bytes per block).
const MIN_PER_BLOCK: u32 = 1 << 10;
const MAX_PER_BLOCK: u32 = 1 << 16;
/// The longest keys part a reader holds (`PER_BLOCK` entries a key: an
/// index of 8.6 billion chunks).
const MAX_KEYS: u64 = 64 << 20;
const SEALED: u32 = 1;
const NOT_DELTA: u32 = u32::MAX;

/// The counts that place every part of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    sealed: bool,
    packs: u32,
    per_block: u32,
    entries: u64,
    bases: u64,
}

impl Layout {
    fn overhead(&self) -> u64 {
        if self.sealed {
            crate::codec::seal::SEAL_OVERHEAD as u64
        } else {
            0
        }
    }

    /// The stored length of a part of `plain` bytes, with its crc32.
    fn part(&self, plain: u64) -> Option<u64> {
        plain.checked_add(self.overhead() + 4)
    }

    fn head_plain(&self) -> u64 {
        HEAD_FIELDS + 32 * u64::from(self.packs)
    }

    fn blocks(&self, items: u64) -> u64 {
        items.div_ceil(u64::from(self.per_block))
    }

    /// The items in block `k` of a region of `items`.
    fn in_block(&self, items: u64, k: u64) -> u64 {
        (items - k * u64::from(self.per_block)).min(u64::from(self.per_block))
    }

    /// The stored length of a region of `items` of `len` bytes in blocks.
    fn region(&self, items: u64, len: u64) -> Option<u64> {
        let per = u64::from(self.per_block);
        let full = (items / per).checked_mul(self.part(per.checked_mul(len)?)?)?;
        match items % per {
            0 => Some(full),
            rest => full.checked_add(self.part(rest * len)?),
        }
    }

    fn entries_at(&self) -> u64 {
        FIXED_LEN + self.head_plain() + self.overhead() + 4
    }

    fn entry_block_at(&self, k: u64) -> u64 {
        self.entries_at() + k * (u64::from(self.per_block) * ENTRY_LEN as u64 + self.overhead() + 4)
    }

    fn bases_at(&self) -> u64 {
        self.entries_at() + self.region(self.entries, ENTRY_LEN as u64).unwrap_or(0)
    }

    fn base_block_at(&self, k: u64) -> u64 {
        self.bases_at() + k * (u64::from(self.per_block) * 32 + self.overhead() + 4)
    }

    fn keys_at(&self) -> u64 {
        self.bases_at() + self.region(self.bases, 32).unwrap_or(0)
    }

    /// The file's whole length; None when the counts cannot be real.
    fn total(&self) -> Option<u64> {
        FIXED_LEN
            .checked_add(self.part(self.head_plain())?)?
            .checked_add(self.region(self.entries, ENTRY_LEN as u64)?)?
            .checked_add(self.region(self.bases, 32)?)?
            .checked_add(self.part(self.blocks(self.entries).checked_mul(32)?)?)?
            .checked_add(4)
    }

    /// Whether a reader holds what these counts need: at most `MAX_PACKS`
    /// pack ids and `MAX_KEYS` of keys (the writer refuses to write more).
    fn within_limits(&self) -> bool {
        u64::from(self.packs) <= MAX_PACKS
            && self
                .blocks(self.entries)
                .checked_mul(32)
                .is_some_and(|keys| keys <= MAX_KEYS)
    }

    fn put_counts(&self, out: &mut Vec<u8>) {
        out.put_u32(self.packs);
        out.put_u32(self.per_block);
        out.put_u64(self.entries);
        out.put_u64(self.bases);
    }

    fn fixed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN as usize);
        out.put(MAGIC);
        out.put_u32(VERSION);
        out.put_u32(if self.sealed { SEALED } else { 0 });
        self.put_counts(&mut out);
        let crc = crc32(&out);
        out.put_u32(crc);
        out
    }
}

/// Writes parts to a new file: each sealed when the repository is
/// encrypted, and followed by its crc32.
struct PartWriter<'a> {
    out: Box<dyn crate::repo::backend::NewFile>,
    sealing: &'a Sealing,
    name: String,
    what: String,
    scratch: Vec<u8>,
}

impl PartWriter<'_> {
    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::storage("write", &self.what, e))
    }

    fn part(&mut self, place: &str, plain: &[u8]) -> Result<()> {
        let mut stored = std::mem::take(&mut self.scratch);
        let bytes = if self.sealing.is_encrypted() {
            let place = format!("{}#{place}", self.name);
            self.sealing.seal(place.as_bytes(), plain, &mut stored)?;
            &stored[..]
        } else {
            plain
        };
        let crc = crc32(bytes).to_le_bytes();
        let written = self.raw(bytes).and_then(|()| self.raw(&crc));
        self.scratch = stored;
        written
    }
}

/// Writes a sorted index file: `packs` are the pack ids entries name by
/// number, `entries` yields the `n` entries in chunk id order and `bases`
/// the `d` base ids of the delta entries among them, in the same order.
/// Streams block by block, so memory does not grow with the file.
pub fn write(
    backend: &dyn Backend,
    sealing: &Sealing,
    packs: &[PackId],
    (n, d): (u64, u64),
    entries: impl Iterator<Item = (u32, PackEntry)>,
    bases: impl Iterator<Item = ChunkId>,
) -> Result<IndexId> {
    let layout = Layout {
        sealed: sealing.is_encrypted(),
        packs: u32::try_from(packs.len())
            .map_err(|_| Error::internal("more packs than an index file can name"))?,
        per_block: PER_BLOCK,
        entries: n,
        bases: d,
    };
    if d > u64::from(NOT_DELTA) {
        return Err(Error::internal("more deltas than an index file can name"));
    }
    // A file no reader would accept is not written.
    if !layout.within_limits() {
        return Err(too_large(packs.len() as u64, n));
    }
    let id = IndexId::random();
    let name = crate::repo::names::index_name(&id);
    let mut w = PartWriter {
        out: backend.create(&name)?,
        sealing,
        what: backend.describe(&name),
        name,
        scratch: Vec::new(),
    };
    w.raw(&layout.fixed())?;
    let mut head = Vec::with_capacity(layout.head_plain() as usize);
    layout.put_counts(&mut head);
    for pack in packs {
        head.put(pack.as_bytes());
    }
    w.part("head", &head)?;
    let per = PER_BLOCK as usize;
    let mut block: Vec<u8> = Vec::with_capacity(per * ENTRY_LEN);
    let mut keys: Vec<u8> = Vec::new();
    let (mut count, mut deltas, mut k) = (0u64, 0u64, 0u64);
    let mut last: Option<ChunkId> = None;
    for (pack, e) in entries {
        if pack >= layout.packs || last.is_some_and(|l| l > e.id) {
            return Err(Error::internal(format!(
                "index entry {count} is out of order or names no pack"
            )));
        }
        last = Some(e.id);
        if block.is_empty() {
            keys.put(&e.id.0);
        }
        let position = if e.encoded.is_delta() {
            deltas += 1;
            (deltas - 1) as u32
        } else {
            NOT_DELTA
        };
        put_entry(&mut block, &e, pack, position);
        count += 1;
        if block.len() == per * ENTRY_LEN {
            w.part(&format!("e{k}"), &block)?;
            block.clear();
            k += 1;
        }
    }
    if !block.is_empty() {
        w.part(&format!("e{k}"), &block)?;
    }
    let (mut based, mut k) = (0u64, 0u64);
    let mut block: Vec<u8> = Vec::with_capacity(per * 32);
    for base in bases {
        block.put(&base.0);
        based += 1;
        if block.len() == per * 32 {
            w.part(&format!("b{k}"), &block)?;
            block.clear();
            k += 1;
        }
    }
    if !block.is_empty() {
        w.part(&format!("b{k}"), &block)?;
    }
    if count != n || deltas != d || based != d {
        return Err(Error::internal(format!(
            "an index file of {n} entries and {d} deltas was handed {count} entries, {deltas} \
             deltas and {based} bases"
        )));
    }
    w.part("keys", &keys)?;
    w.raw(END_MAGIC)?;
    w.out.commit()?;
    Ok(id)
}

/// The error for an index file that would name more than a reader holds.
pub fn too_large(packs: u64, entries: u64) -> Error {
    Error::unsupported(format!(
        "an index file of {packs} packs and {entries} entries is more than a reader holds \
         ({MAX_PACKS} packs, {} entries): nothing was written",
        MAX_KEYS / 32 * u64::from(PER_BLOCK)
    ))
}

/// Whether `head` (a file's first bytes) starts a sorted index file.
pub fn is_sorted_file(head: &[u8]) -> bool {
    head.len() >= 12 && head.starts_with(MAGIC) && head[8..12] == VERSION.to_le_bytes()
}

/// Whether `head` (a file's first bytes) starts a sorted index file that
/// is sealed (of an encrypted repository), by a header that holds (a
/// damaged file is not taken for one).
pub fn is_sealed(head: &[u8]) -> bool {
    is_sorted_file(head)
        && head.get(12..16) == Some(&SEALED.to_le_bytes()[..])
        && head.get(..FIXED_LEN as usize).is_some_and(header_holds)
}

/// Whether the fixed header `head` (`FIXED_LEN` bytes) matches its crc32.
pub fn header_holds(head: &[u8]) -> bool {
    head.len() == FIXED_LEN as usize && crc32(&head[..40]).to_le_bytes() == head[40..44]
}

/// How a reader opens parts: with the repository's sealing, or without
/// the key (crc32s and lengths only, for a sealed file).
#[derive(Clone, Copy)]
pub enum Opening<'a> {
    With(&'a Sealing),
    WithoutKey { encrypted: bool },
}

impl Opening<'_> {
    fn encrypted(&self) -> bool {
        match self {
            Opening::With(s) => s.is_encrypted(),
            Opening::WithoutKey { encrypted } => *encrypted,
        }
    }
}

struct Reader<'a> {
    file: &'a dyn StoredFile,
    opening: Opening<'a>,
    layout: Layout,
    name: &'a str,
    what: &'a str,
    /// What was last read of the entry blocks and of the base blocks.
    windows: [Window; 2],
}

/// Bytes read ahead of the parts asked for, so that a file on object
/// storage takes one request per `WINDOW` bytes, not one per block.
#[derive(Default)]
struct Window {
    start: u64,
    bytes: Vec<u8>,
}

const WINDOW: u64 = 4 << 20;

impl Reader<'_> {
    fn damaged(&self, why: &str) -> Error {
        Error::corrupt(format!("index {} is damaged: {why}", self.what))
    }

    /// Fills `buf` from `at`, through the window of its region (the entry
    /// blocks, or what follows them).
    fn read_at(&mut self, buf: &mut [u8], at: u64) -> Result<()> {
        let bases_at = self.layout.bases_at();
        let (window, end) = if at < bases_at {
            (&mut self.windows[0], bases_at)
        } else {
            (&mut self.windows[1], self.file.len())
        };
        let len = buf.len() as u64;
        if at < window.start || at + len > window.start + window.bytes.len() as u64 {
            let take = len.max(WINDOW.min(end.saturating_sub(at)));
            window.bytes.resize(take as usize, 0);
            self.file.read_exact_at(&mut window.bytes, at)?;
            window.start = at;
        }
        let from = (at - window.start) as usize;
        buf.copy_from_slice(&window.bytes[from..from + buf.len()]);
        Ok(())
    }

    /// Entry block `k`, as `part` reads it.
    fn entry_block(&mut self, k: u64, buf: &mut Vec<u8>) -> Result<bool> {
        let plain = self.layout.in_block(self.layout.entries, k) * ENTRY_LEN as u64;
        self.part(self.layout.entry_block_at(k), plain, &format!("e{k}"), buf)
    }

    /// Base block `k`, as `part` reads it.
    fn base_block(&mut self, k: u64, buf: &mut Vec<u8>) -> Result<bool> {
        let plain = self.layout.in_block(self.layout.bases, k) * 32;
        self.part(self.layout.base_block_at(k), plain, &format!("b{k}"), buf)
    }

    /// Reads the part of `plain` bytes at `at` into `buf`, checks its
    /// crc32 and opens it; returns whether `buf` now holds its plain bytes
    /// (false: sealed, and read without the key).
    fn part(&mut self, at: u64, plain: u64, place: &str, buf: &mut Vec<u8>) -> Result<bool> {
        let stored = (plain + self.layout.overhead()) as usize;
        buf.resize(stored + 4, 0);
        self.read_at(buf, at)?;
        let crc = u32::from_le_bytes([
            buf[stored],
            buf[stored + 1],
            buf[stored + 2],
            buf[stored + 3],
        ]);
        buf.truncate(stored);
        if crc32(buf) != crc {
            return Err(self.damaged(&format!("its part {place} fails its crc32")));
        }
        match self.opening {
            _ if !self.layout.sealed => Ok(true),
            Opening::WithoutKey { .. } => Ok(false),
            Opening::With(sealing) => {
                let place_name = format!("{}#{place}", self.name);
                let len = sealing
                    .open_in_place(place_name.as_bytes(), buf)
                    .map_err(|e| {
                        Error::corrupt(format!("index {} part {place} {}", self.what, e.message()))
                    })?
                    .len();
                let start = crate::codec::seal::NONCE_LEN;
                buf.copy_within(start..start + len, 0);
                buf.truncate(len);
                Ok(true)
            }
        }
    }
}

/// Reads a sorted index file, handing each entry to `f` with its pack, in
/// chunk id order; without the key, checks a sealed file's crc32s only.
pub fn read(
    file: &dyn StoredFile,
    opening: Opening<'_>,
    name: &str,
    what: &str,
    f: &mut dyn FnMut(&PackId, PackEntry) -> Result<()>,
) -> Result<()> {
    let damaged = |why: &str| Error::corrupt(format!("index {what} is damaged: {why}"));
    let mut fixed = [0u8; FIXED_LEN as usize];
    if file.len() < FIXED_LEN {
        return Err(damaged("too short (truncated)"));
    }
    file.read_exact_at(&mut fixed, 0)?;
    let mut r = FieldReader::new(&fixed);
    r.skip(12);
    let flags = r.u32();
    let layout = Layout {
        sealed: flags == SEALED,
        packs: r.u32(),
        per_block: r.u32(),
        entries: r.u64(),
        bases: r.u64(),
    };
    if r.u32() != crc32(&fixed[..40]) || (flags != 0 && flags != SEALED) {
        return Err(damaged("its header fails its crc32"));
    }
    if layout.sealed != opening.encrypted() {
        return Err(sealed::mismatch(
            &format!("index {what}"),
            layout.sealed,
            opening.encrypted(),
        ));
    }
    if !(MIN_PER_BLOCK..=MAX_PER_BLOCK).contains(&layout.per_block) {
        return Err(damaged("its block size is out of range"));
    }
    // Counts consistent with a long (perhaps sparse) file must still not
    // make a reader hold more than these.
    if !layout.within_limits() {
        return Err(damaged(
            "its counts are beyond what an index file holds (its header was forged or damaged)",
        ));
    }
    if layout.total() != Some(file.len()) {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    let mut reader = Reader {
        file,
        opening,
        layout,
        name,
        what,
        windows: Default::default(),
    };
    // Every part lies within the file's length, checked above: the
    // offsets below cannot overflow.
    let mut end = [0u8; 4];
    file.read_exact_at(&mut end, file.len() - 4)?;
    if &end != END_MAGIC {
        return Err(damaged("its end marker is missing"));
    }
    let mut head = Vec::new();
    let opened = reader.part(FIXED_LEN, layout.head_plain(), "head", &mut head)?;
    let entry_blocks = layout.blocks(layout.entries);
    let mut keys = Vec::new();
    reader.part(layout.keys_at(), entry_blocks * 32, "keys", &mut keys)?;
    let mut block = Vec::new();
    if !opened {
        for k in 0..entry_blocks {
            reader.entry_block(k, &mut block)?;
        }
        for k in 0..layout.blocks(layout.bases) {
            reader.base_block(k, &mut block)?;
        }
        return Ok(());
    }
    let mut counts = Vec::new();
    layout.put_counts(&mut counts);
    if head[..HEAD_FIELDS as usize] != counts[..] {
        return Err(damaged("its head does not repeat its header's counts"));
    }
    let packs: Vec<PackId> = head[HEAD_FIELDS as usize..]
        .chunks_exact(32)
        .map(|c| PackId::from_bytes(c.try_into().unwrap_or([0; 32])))
        .collect();
    let mut bases = Vec::new();
    let mut bases_block: Option<u64> = None;
    let (mut next_base, mut last) = (0u64, None::<ChunkId>);
    for k in 0..entry_blocks {
        reader.entry_block(k, &mut block)?;
        for (i, raw) in block.chunks_exact(ENTRY_LEN).enumerate() {
            let at = k * u64::from(layout.per_block) + i as u64;
            let raw = RawEntry::parse(raw);
            let (Some(pack), Some(mut e)) = (packs.get(raw.pack as usize), raw.entry()) else {
                return Err(damaged(&format!(
                    "entry {at} names an unknown pack or encoding"
                )));
            };
            if i == 0 && keys[k as usize * 32..][..32] != e.id.0 {
                return Err(damaged(&format!(
                    "its key of block {k} is not its first id"
                )));
            }
            if last.is_some_and(|l| l > e.id) {
                return Err(damaged(&format!("entry {at} is out of order")));
            }
            last = Some(e.id);
            match (e.encoded.is_delta(), raw.reserved) {
                (false, NOT_DELTA) => {}
                (true, position)
                    if u64::from(position) == next_base && next_base < layout.bases =>
                {
                    let j = next_base / u64::from(layout.per_block);
                    if bases_block != Some(j) {
                        reader.base_block(j, &mut bases)?;
                        bases_block = Some(j);
                    }
                    let within = (next_base % u64::from(layout.per_block)) as usize * 32;
                    let mut id = [0u8; 32];
                    id.copy_from_slice(&bases[within..within + 32]);
                    e.base = Some(ChunkId(id));
                    next_base += 1;
                }
                _ => return Err(damaged(&format!("entry {at} names no base or a wrong one"))),
            }
            f(pack, e)?;
        }
    }
    if next_base != layout.bases {
        return Err(damaged("it holds more bases than delta entries"));
    }
    Ok(())
}
