//! Chunk maps: one per snapshot, one fixed-size entry per chunk position.
//!
//! ```text
//! offset  size   field
//! 0       8      magic "PLTRMAP\0"
//! 8       4      format version (1)
//! 12      4      entry length (48)
//! 16      8      chunk size
//! 24      8      source size in bytes
//! 32      8      number of entries n = ceil(source size / chunk size)
//! 40      32     snapshot id
//! 72      4      flags: 1 = sealed (encrypted repository), else 0
//! 76      4      crc32 of bytes 0..76
//! 80      48*n   entries: kind u8 (0 zero, 1 data, 2 unused) | reserved [7] |
//!                fingerprint u64 (xxh3-64, data only) | chunk id [32] (data only)
//! ...     4      crc32 of the entry bytes as stored
//! ...     4      magic "MEND"
//! ```
//!
//! When sealed, the entries are sealed in blocks of 4096 (the last one may
//! be shorter), block k for the place "maps/<snapshot id>#k", so each block
//! takes 28 more bytes and a map can still be read a block at a time.
//!
//! Entry i covers bytes [i*chunk, min((i+1)*chunk, size)). Every map is
//! complete, so a snapshot never depends on another one. Entries are read in
//! blocks, so memory does not grow with the disk.

use crate::codec::{ChunkId, Sealing, crc32};
use crate::error::{Error, Result};
use crate::repo::backend::{Backend, NewFile, StoredFile};
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::{SnapshotId, sealed};

const MAGIC: &[u8; 8] = b"PLTRMAP\0";
const END_MAGIC: &[u8; 4] = b"MEND";
const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 80;
pub const ENTRY_LEN: u64 = 48;
const BLOCK_ENTRIES: u64 = 4096;
const SEALED: u32 = 1;

/// The fingerprint of a data entry whose chunk was not read whole when
/// the entry was written: "unknown", never equal to a chunk's. A backup
/// compares it with nothing and hashes the chunk again.
pub const FINGERPRINT_UNKNOWN: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All bytes zero: nothing stored, restored as a hole or zeros.
    Zero = 0,
    /// Stored as chunk `id`.
    Data = 1,
    /// Free space: not read, not stored, restored as zeros.
    Unused = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    pub kind: Kind,
    pub fingerprint: u64,
    pub id: ChunkId,
}

impl MapEntry {
    pub const ZERO: MapEntry = MapEntry {
        kind: Kind::Zero,
        fingerprint: 0,
        id: ChunkId([0; 32]),
    };

    pub const UNUSED: MapEntry = MapEntry {
        kind: Kind::Unused,
        fingerprint: 0,
        id: ChunkId([0; 32]),
    };

    pub fn data(id: ChunkId, fingerprint: u64) -> MapEntry {
        MapEntry {
            kind: Kind::Data,
            fingerprint,
            id,
        }
    }
}

/// Whether `head` (a file's first bytes) starts a sealed map.
pub fn is_sealed(head: &[u8]) -> bool {
    head.len() >= 76 && head.starts_with(MAGIC) && FieldReader::new(&head[72..]).u32() == SEALED
}

/// The place block `k` of a sealed map is sealed for.
fn block_place(snapshot: &SnapshotId, k: u64) -> String {
    format!("{}#{k}", crate::repo::names::map_name(snapshot))
}

/// Geometry of a map, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    pub chunk_size: u64,
    pub source_size: u64,
    pub entries: u64,
    pub snapshot: SnapshotId,
    /// Entries sealed in blocks (set by `MapWriter::create`).
    pub sealed: bool,
}

impl MapHeader {
    pub fn new(chunk_size: u64, source_size: u64, snapshot: SnapshotId) -> MapHeader {
        MapHeader {
            chunk_size,
            source_size,
            entries: source_size.div_ceil(chunk_size),
            snapshot,
            sealed: false,
        }
    }

    fn blocks(&self) -> u64 {
        self.entries.div_ceil(BLOCK_ENTRIES)
    }

    fn overhead(&self) -> u64 {
        if self.sealed {
            crate::codec::seal::SEAL_OVERHEAD as u64
        } else {
            0
        }
    }

    /// Where block `k` (entries from k*4096) is stored.
    fn block_offset(&self, k: u64) -> u64 {
        HEADER_LEN + k * (BLOCK_ENTRIES * ENTRY_LEN + self.overhead())
    }

    /// Where the stored entries end (and the tail begins).
    fn entries_end(&self) -> u64 {
        HEADER_LEN + self.entries * ENTRY_LEN + self.blocks() * self.overhead()
    }

    /// Byte length of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: u64) -> u64 {
        (self.source_size - i * self.chunk_size).min(self.chunk_size)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.put(MAGIC);
        out.put_u32(VERSION);
        out.put_u32(ENTRY_LEN as u32);
        out.put_u64(self.chunk_size);
        out.put_u64(self.source_size);
        out.put_u64(self.entries);
        out.put(self.snapshot.as_bytes());
        out.put_u32(if self.sealed { SEALED } else { 0 });
        let crc = crc32(&out);
        out.put_u32(crc);
        out
    }

    fn decode(buf: &[u8; HEADER_LEN as usize], what: &str) -> Result<MapHeader> {
        let damaged = |why: &str| Error::corrupt(format!("map {what} is damaged: {why}"));
        let mut r = FieldReader::new(buf);
        if &r.bytes::<8>() != MAGIC {
            return Err(damaged("bad magic"));
        }
        if crc32(&buf[..76]) != FieldReader::new(&buf[76..]).u32() {
            return Err(damaged("header checksum mismatch"));
        }
        let version = r.u32();
        if version != VERSION {
            return Err(Error::unsupported(format!(
                "map {what} has version {version}, this platter reads {VERSION}"
            )));
        }
        if u64::from(r.u32()) != ENTRY_LEN {
            return Err(damaged("unexpected entry length"));
        }
        let chunk_size = r.u64();
        let source_size = r.u64();
        let entries = r.u64();
        let snapshot = r.bytes::<32>();
        if chunk_size == 0 || entries != source_size.div_ceil(chunk_size) {
            return Err(damaged("entry count does not match size and chunk size"));
        }
        Ok(MapHeader {
            chunk_size,
            source_size,
            entries,
            snapshot: SnapshotId::from_bytes(snapshot),
            sealed: r.u32() == SEALED,
        })
    }
}

fn encode_entry(e: &MapEntry, out: &mut Vec<u8>) {
    out.put_u8(e.kind as u8);
    out.put_zeros(7);
    out.put_u64(e.fingerprint);
    out.put(&e.id.0);
}

fn decode_entry(buf: &[u8]) -> Option<MapEntry> {
    let mut r = FieldReader::new(buf);
    let kind = match r.u8() {
        0 => Kind::Zero,
        1 => Kind::Data,
        2 => Kind::Unused,
        _ => return None,
    };
    r.skip(7);
    Some(MapEntry {
        kind,
        fingerprint: r.u64(),
        id: ChunkId(r.bytes()),
    })
}

/// Streams a new map to a temporary file; `finish` commits it and returns
/// the BLAKE3 of the whole file, which the manifest records.
pub struct MapWriter {
    header: MapHeader,
    sealing: Sealing,
    file: Box<dyn NewFile>,
    /// Entries of the block being filled.
    buf: Vec<u8>,
    sealed: Vec<u8>,
    crc: crc32fast::Hasher,
    hash: blake3::Hasher,
    written: u64,
}

impl MapWriter {
    pub fn create(
        backend: &dyn Backend,
        sealing: &Sealing,
        header: MapHeader,
    ) -> Result<MapWriter> {
        let header = MapHeader {
            sealed: sealing.is_encrypted(),
            ..header
        };
        let file = backend.create(&crate::repo::names::map_name(&header.snapshot))?;
        let mut writer = MapWriter {
            header,
            sealing: sealing.clone(),
            file,
            buf: Vec::new(),
            sealed: Vec::new(),
            crc: crc32fast::Hasher::new(),
            hash: blake3::Hasher::new(),
            written: 0,
        };
        writer.write(&header.encode())?;
        Ok(writer)
    }

    pub fn push(&mut self, entry: &MapEntry) -> Result<()> {
        encode_entry(entry, &mut self.buf);
        self.written += 1;
        if self.written.is_multiple_of(BLOCK_ENTRIES) {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Stores the filled block, sealed when the repository is encrypted.
    fn flush_block(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut block = std::mem::take(&mut self.buf);
        if self.header.sealed {
            let k = (self.written - 1) / BLOCK_ENTRIES;
            let place = block_place(&self.header.snapshot, k);
            self.sealing
                .seal(place.as_bytes(), &block, &mut self.sealed)?;
            std::mem::swap(&mut block, &mut self.sealed);
        }
        self.crc.update(&block);
        self.write(&block)?;
        block.clear();
        self.buf = block;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hash.update(bytes);
        let name = crate::repo::names::map_name(&self.header.snapshot);
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("write map", std::path::Path::new(&name), e))
    }

    pub fn finish(mut self) -> Result<String> {
        if self.written != self.header.entries {
            return Err(Error::internal(format!(
                "map has {} of {} entries",
                self.written, self.header.entries
            )));
        }
        self.flush_block()?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let mut tail = Vec::with_capacity(8);
        tail.put_u32(crc);
        tail.put(END_MAGIC);
        self.write(&tail)?;
        self.file.commit()?;
        Ok(self.hash.finalize().to_hex().to_string())
    }
}

/// Reads a committed map. `open` checks the whole file (header, checksum,
/// the manifest's BLAKE3) before anything uses an entry.
pub struct MapReader {
    header: MapHeader,
    sealing: Sealing,
    file: Box<dyn StoredFile>,
    what: String,
    block_start: u64,
    block: Vec<MapEntry>,
}

impl MapReader {
    pub fn open(
        backend: &dyn Backend,
        sealing: &Sealing,
        snapshot: &SnapshotId,
        expected_blake3: &str,
    ) -> Result<MapReader> {
        let reader = MapReader::open_stored(backend, sealing, snapshot)?;
        if reader.header.sealed != sealing.is_encrypted() {
            let what = format!("map {}", reader.what);
            return Err(sealed::mismatch(
                &what,
                reader.header.sealed,
                sealing.is_encrypted(),
            ));
        }
        if reader.check_stored()? != expected_blake3 {
            return Err(Error::corrupt(format!(
                "map {} does not match the BLAKE3 its snapshot manifest records",
                reader.what
            )));
        }
        Ok(reader)
    }

    /// Checks a map's stored bytes (header, length, crc32s) without the
    /// key and without its manifest; `sealed` says whether the repository
    /// is encrypted.
    pub fn check_without_key(
        backend: &dyn Backend,
        snapshot: &SnapshotId,
        sealed: bool,
    ) -> Result<()> {
        let reader = MapReader::open_stored(backend, &Sealing::plain(), snapshot)?;
        if reader.header.sealed != sealed {
            let what = format!("map {}", reader.what);
            return Err(sealed::mismatch(&what, reader.header.sealed, sealed));
        }
        reader.check_stored().map(|_| ())
    }

    /// Opens a map and checks its header and length.
    fn open_stored(
        backend: &dyn Backend,
        sealing: &Sealing,
        snapshot: &SnapshotId,
    ) -> Result<MapReader> {
        let name = crate::repo::names::map_name(snapshot);
        let file = backend.open(&name)?;
        let what = backend.describe(&name);
        let mut head = [0u8; HEADER_LEN as usize];
        if file.len() < HEADER_LEN {
            return Err(Error::corrupt(format!("map {what} is damaged: truncated")));
        }
        file.read_exact_at(&mut head, 0)?;
        let header = MapHeader::decode(&head, &what)?;
        if header.snapshot != *snapshot {
            return Err(Error::corrupt(format!(
                "map {what} belongs to another snapshot"
            )));
        }
        let blocks = header.blocks();
        let expected_len = header
            .entries
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(blocks.checked_mul(header.overhead())?))
            .and_then(|n| n.checked_add(HEADER_LEN + 8));
        if expected_len != Some(file.len()) {
            return Err(Error::corrupt(format!(
                "map {what} is damaged: {} bytes, its header implies {}",
                file.len(),
                expected_len.map_or("an impossible size".into(), |n| n.to_string())
            )));
        }
        Ok(MapReader {
            header,
            sealing: sealing.clone(),
            file,
            what,
            block_start: 0,
            block: Vec::new(),
        })
    }

    /// Checks the entries' crc32; returns the BLAKE3 of the whole file.
    fn check_stored(&self) -> Result<String> {
        let mut hash = blake3::Hasher::new();
        let mut crc = crc32fast::Hasher::new();
        let entries_end = self.header.entries_end();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        let len = self.file.len();
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], pos)?;
            hash.update(&buf[..n]);
            let lo = pos.max(HEADER_LEN).min(pos + n as u64);
            let hi = (pos + n as u64).min(entries_end).max(lo);
            crc.update(&buf[(lo - pos) as usize..(hi - pos) as usize]);
            pos += n as u64;
        }
        let mut tail = [0u8; 8];
        self.file.read_exact_at(&mut tail, entries_end)?;
        let stored = FieldReader::new(&tail).u32();
        if &tail[4..] != END_MAGIC || stored != crc.finalize() {
            return Err(Error::corrupt(format!(
                "map {} is damaged: entry checksum mismatch",
                self.what
            )));
        }
        Ok(hash.finalize().to_hex().to_string())
    }

    pub fn header(&self) -> &MapHeader {
        &self.header
    }

    /// Entry `i`. Fast for forward scans: entries are read a block at a time.
    /// Adds the id of every data chunk of the map to `ids`.
    pub fn add_data_ids(&mut self, ids: &mut std::collections::HashSet<ChunkId>) -> Result<()> {
        for pos in 0..self.header().entries {
            let e = self.entry(pos)?;
            if e.kind == Kind::Data {
                ids.insert(e.id);
            }
        }
        Ok(())
    }

    pub fn entry(&mut self, i: u64) -> Result<MapEntry> {
        if i >= self.header.entries {
            return Err(Error::bad_input(format!("map entry {i} is out of range")));
        }
        if i < self.block_start || i >= self.block_start + self.block.len() as u64 {
            self.load_block(i - i % BLOCK_ENTRIES)?;
        }
        Ok(self.block[(i - self.block_start) as usize])
    }

    fn load_block(&mut self, start: u64) -> Result<()> {
        let count = (self.header.entries - start).min(BLOCK_ENTRIES);
        let k = start / BLOCK_ENTRIES;
        let mut buf = vec![0u8; (count * ENTRY_LEN + self.header.overhead()) as usize];
        self.file
            .read_exact_at(&mut buf, self.header.block_offset(k))?;
        let plain = if self.header.sealed {
            let place = block_place(&self.header.snapshot, k);
            self.sealing
                .open_in_place(place.as_bytes(), &mut buf)
                .map_err(|e| {
                    Error::corrupt(format!("map {}: block {k} {}", self.what, e.message()))
                })?
        } else {
            &buf[..]
        };
        self.block.clear();
        for (i, raw) in plain.chunks_exact(ENTRY_LEN as usize).enumerate() {
            let entry = decode_entry(raw).ok_or_else(|| {
                Error::corrupt(format!(
                    "map {} is damaged: entry {} has an unknown kind",
                    self.what,
                    start + i as u64
                ))
            })?;
            self.block.push(entry);
        }
        self.block_start = start;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::LocalBackend;

    #[test]
    fn maps_round_trip_and_any_damage_is_caught() {
        let master = crate::codec::MasterKey::generate().unwrap();
        for sealing in [Sealing::plain(), Sealing::encrypted(&master)] {
            round_trip(&sealing);
        }
    }

    fn round_trip(sealing: &Sealing) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let snap = SnapshotId::from_bytes([9; 32]);
        let header = MapHeader::new(65536, 65536 * 5000 + 17, snap);
        let entries: Vec<MapEntry> = (0..header.entries)
            .map(|i| match i % 3 {
                0 => MapEntry::ZERO,
                1 => MapEntry::data(ChunkId::of(&i.to_le_bytes()), i * 7),
                _ => MapEntry::UNUSED,
            })
            .collect();
        let mut w = MapWriter::create(&backend, sealing, header).unwrap();
        for e in &entries {
            w.push(e).unwrap();
        }
        let blake = w.finish().unwrap();
        let mut r = MapReader::open(&backend, sealing, &snap, &blake).unwrap();
        assert_eq!(r.header().entries, header.entries);
        assert_eq!(r.header().sealed, sealing.is_encrypted());
        assert_eq!(header.chunk_len(header.entries - 1), 17);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(&r.entry(i as u64).unwrap(), e);
        }
        assert!(r.entry(header.entries).is_err());

        let name = crate::repo::names::map_name(&snap);
        let good = backend.read_whole(&name).unwrap();
        if sealing.is_encrypted() {
            let id = ChunkId::of(&1u64.to_le_bytes());
            assert!(!good.windows(32).any(|w| w == id.0), "ids show through");
            let plain = Sealing::plain();
            assert!(MapReader::open(&backend, &plain, &snap, &blake).is_err());
        }
        for i in [0, 20, 72, 77, 80, 81, 5000, good.len() - 5, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            backend.write_whole(&name, &bad).unwrap();
            assert!(
                MapReader::open(&backend, sealing, &snap, &blake).is_err(),
                "flip at {i} accepted"
            );
        }
        backend
            .write_whole(&name, &good[..good.len() - 48])
            .unwrap();
        assert!(MapReader::open(&backend, sealing, &snap, &blake).is_err());
        backend.write_whole(&name, &good).unwrap();
        assert!(
            MapReader::open(&backend, sealing, &SnapshotId::from_bytes([8; 32]), &blake).is_err()
        );
    }
}
