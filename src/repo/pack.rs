//! Packs: append-only files of stored chunks with a table at the end.
//!
//! ```text
//! offset        size  field
//! 0             8     magic "PLTRPACK"
//! 8             4     format version (1)
//! 12            4     flags: 1 = sealed (encrypted repository), else 0
//! 16            ...   blobs (each is a chunk, lz4 or raw, then sealed when
//!                     encrypted); unsealed raw blobs of 256 KiB or more
//!                     start at a multiple of 4096, zeros between
//! T             t     table: one entry per blob (see ENTRY below), t = 64*n;
//!                     when sealed, the entries sealed as one blob for the
//!                     place "data/xx/<pack id>", t = 64*n + 28
//! T+t           4     n, the number of entries
//! T+t+4         4     crc32 of the table's stored bytes
//! T+t+8         8     magic "PLTRPEND"
//!
//! ENTRY: id [32] | encoding u32 (0 raw, 1 lz4) | reserved u32 |
//!        offset u64 | stored length u32 | plain length u32 |
//!        crc32 of the stored bytes u32 | reserved u32
//! ```
//!
//! The table makes a pack self-describing: the index can always be rebuilt
//! from the packs alone.

use std::path::Path;

use crate::codec::{ChunkId, Encoded, Sealing, crc32};
use crate::error::{Error, Result};
use crate::os::DIRECT_ALIGN;
use crate::repo::backend::{Backend, NewFile, ReadAt};
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::{RawId, hex_id};

const MAGIC: &[u8; 8] = b"PLTRPACK";
const END_MAGIC: &[u8; 8] = b"PLTRPEND";
const VERSION: u32 = 1;
const SEALED: u32 = 1;
pub const HEADER_LEN: u64 = 16;
pub const ENTRY_LEN: usize = 64;
pub const FOOTER_LEN: u64 = 16;

/// Raw blobs this large start at a multiple of `DIRECT_ALIGN` in the pack,
/// so a restore can hand their mapped bytes straight to direct I/O. The
/// padding costs at most 1.6% of such a blob.
const ALIGN_RAW_FROM: usize = 256 * 1024;
static ZEROS: [u8; DIRECT_ALIGN] = [0; DIRECT_ALIGN];

/// Where one chunk lives inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub encoded: Encoded,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    pub crc: u32,
}

impl PackEntry {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.put(&self.id.0);
        out.put_u32(self.encoded as u32);
        out.put_u32(0);
        out.put_u64(self.offset);
        out.put_u32(self.stored_len);
        out.put_u32(self.plain_len);
        out.put_u32(self.crc);
        out.put_u32(0);
    }

    /// Parses one 64-byte entry; `None` when the encoding is unknown.
    pub fn read_from(buf: &[u8]) -> Option<PackEntry> {
        let mut r = FieldReader::new(buf);
        let id = ChunkId(r.bytes());
        let encoded = Encoded::from_flags(r.u32())?;
        r.skip(4);
        let offset = r.u64();
        let stored_len = r.u32();
        let plain_len = r.u32();
        let crc = r.u32();
        Some(PackEntry {
            id,
            encoded,
            offset,
            stored_len,
            plain_len,
            crc,
        })
    }
}

/// Whether `name` is one of the `data/` folders packs live in (two hex
/// digits); anything else there is not platter's.
pub fn is_pack_folder(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn pack_name(id: &RawId) -> String {
    let hex = hex_id(id);
    format!("data/{}/{hex}", &hex[..2])
}

/// Writes one pack. Blobs are streamed to a temporary file; `finish` appends
/// the table and makes the pack durable under its final name.
pub struct PackWriter {
    id: RawId,
    sealing: Sealing,
    file: Box<dyn NewFile>,
    entries: Vec<PackEntry>,
    offset: u64,
}

impl PackWriter {
    /// A new pack; its blobs must be sealed by `sealing` (see
    /// `codec::store`), and its table will be.
    pub fn create(backend: &dyn Backend, sealing: &Sealing) -> Result<PackWriter> {
        let id = crate::repo::random_id();
        let mut file = backend.create_large(&pack_name(&id))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.put(MAGIC);
        header.put_u32(VERSION);
        header.put_u32(if sealing.is_encrypted() { SEALED } else { 0 });
        write_all(&mut *file, &header, &id)?;
        Ok(PackWriter {
            id,
            sealing: sealing.clone(),
            file,
            entries: Vec::new(),
            offset: HEADER_LEN,
        })
    }

    pub fn add(
        &mut self,
        id: ChunkId,
        encoded: Encoded,
        stored: &[u8],
        plain_len: u32,
    ) -> Result<PackEntry> {
        let unsealed_raw = encoded == Encoded::Raw && stored.len() == plain_len as usize;
        if unsealed_raw && stored.len() >= ALIGN_RAW_FROM {
            let pad = self.offset.next_multiple_of(DIRECT_ALIGN as u64) - self.offset;
            write_all(&mut *self.file, &ZEROS[..pad as usize], &self.id)?;
            self.offset += pad;
        }
        write_all(&mut *self.file, stored, &self.id)?;
        let entry = PackEntry {
            id,
            encoded,
            offset: self.offset,
            stored_len: stored.len() as u32,
            plain_len,
            crc: crc32(stored),
        };
        self.offset += stored.len() as u64;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Bytes in the pack so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the table and commits the pack. Returns its id and entries.
    pub fn finish(mut self) -> Result<(RawId, Vec<PackEntry>)> {
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 16);
        for entry in &self.entries {
            entry.write_to(&mut table);
        }
        if self.sealing.is_encrypted() {
            let plain = std::mem::take(&mut table);
            let place = pack_name(&self.id);
            self.sealing.seal(place.as_bytes(), &plain, &mut table)?;
        }
        let crc = crc32(&table);
        table.put_u32(self.entries.len() as u32);
        table.put_u32(crc);
        table.put(END_MAGIC);
        write_all(&mut *self.file, &table, &self.id)?;
        self.file.commit()?;
        Ok((self.id, self.entries))
    }
}

fn write_all(file: &mut dyn NewFile, bytes: &[u8], id: &RawId) -> Result<()> {
    file.write_all(bytes)
        .map_err(|e| Error::io("write pack", Path::new(&pack_name(id)), e))
}

/// Reads and checks the table of pack `id`, opening its seal in an
/// encrypted repository. Every entry must lie between the header and the
/// table.
pub fn read_table(
    file: &dyn ReadAt,
    sealing: &Sealing,
    id: &RawId,
    what: &str,
) -> Result<Vec<PackEntry>> {
    let len = file.len();
    if len < HEADER_LEN + FOOTER_LEN {
        return Err(Error::corrupt(format!(
            "pack {what} is {len} bytes, too short to be a pack: it was truncated"
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(Error::corrupt(format!(
            "pack {what} does not start with the pack magic"
        )));
    }
    let mut head = FieldReader::new(&header[8..]);
    let version = head.u32();
    if version != VERSION {
        return Err(Error::unsupported(format!(
            "pack {what} has format version {version}, this platter reads {VERSION}"
        )));
    }
    let sealed = head.u32() == SEALED;
    if sealed != sealing.is_encrypted() {
        return Err(Error::corrupt(format!(
            "pack {what} is {}, but the repository is {}: it was damaged or put there from elsewhere",
            if sealed { "sealed" } else { "not sealed" },
            if sealing.is_encrypted() {
                "encrypted"
            } else {
                "not encrypted"
            }
        )));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut footer, len - FOOTER_LEN)?;
    let mut r = FieldReader::new(&footer);
    let count = u64::from(r.u32());
    let table_crc = r.u32();
    if &r.bytes::<8>() != END_MAGIC {
        return Err(Error::corrupt(format!(
            "pack {what} does not end with the table magic: it was truncated or overwritten"
        )));
    }
    let table_len = count * ENTRY_LEN as u64 + sealing.overhead() as u64;
    let table_start = (len - FOOTER_LEN)
        .checked_sub(table_len)
        .filter(|&start| start >= HEADER_LEN)
        .ok_or_else(|| {
            Error::corrupt(format!(
                "pack {what} claims {count} entries, more than its {len} bytes can hold"
            ))
        })?;
    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, table_start)?;
    if crc32(&table) != table_crc {
        return Err(Error::corrupt(format!(
            "pack {what} has a damaged table (crc32 mismatch)"
        )));
    }
    let table = if sealed {
        sealing
            .open_in_place(pack_name(id).as_bytes(), &mut table)
            .map_err(|e| Error::corrupt(format!("pack {what}: its table {}", e.message())))?
    } else {
        &table[..]
    };
    let mut entries = Vec::with_capacity(count as usize);
    for (i, raw) in table.chunks_exact(ENTRY_LEN).enumerate() {
        let entry = PackEntry::read_from(raw).ok_or_else(|| {
            Error::corrupt(format!(
                "pack {what}: table entry {i} has an unknown encoding"
            ))
        })?;
        let end = entry.offset.checked_add(u64::from(entry.stored_len));
        if entry.offset < HEADER_LEN || end.is_none_or(|end| end > table_start) {
            return Err(Error::corrupt(format!(
                "pack {what}: table entry {i} points outside the pack's data"
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::LocalBackend;

    fn write_pack(backend: &LocalBackend) -> (RawId, Vec<PackEntry>) {
        let mut w = PackWriter::create(backend, &Sealing::plain()).unwrap();
        w.add(ChunkId::of(b"one"), Encoded::Raw, b"one", 3).unwrap();
        w.add(ChunkId::of(b"two"), Encoded::Raw, b"two!", 4)
            .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_pack_reads_back_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let (id, entries) = write_pack(&backend);
        let file = backend.open(&pack_name(&id)).unwrap();
        assert_eq!(
            read_table(file.as_ref(), &Sealing::plain(), &id, "p").unwrap(),
            entries
        );
        assert_eq!(entries[1].offset, HEADER_LEN + 3);
    }

    #[test]
    fn every_truncation_and_table_flip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let (id, _) = write_pack(&backend);
        let name = pack_name(&id);
        let good = backend.read_whole(&name).unwrap();
        let table_start = good.len() - FOOTER_LEN as usize - 2 * ENTRY_LEN;
        for cut in 0..good.len() {
            backend.write_whole(&name, &good[..cut]).unwrap();
            let file = backend.open(&name).unwrap();
            assert!(
                read_table(file.as_ref(), &Sealing::plain(), &id, "p").is_err(),
                "cut at {cut} accepted"
            );
        }
        for i in (0..12).chain(table_start..good.len()) {
            let mut bad = good.clone();
            bad[i] ^= 1;
            backend.write_whole(&name, &bad).unwrap();
            let file = backend.open(&name).unwrap();
            assert!(
                read_table(file.as_ref(), &Sealing::plain(), &id, "p").is_err(),
                "flip at {i} accepted"
            );
        }
    }
}
