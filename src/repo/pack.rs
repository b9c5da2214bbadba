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
//!                     when sealed, n FRAMEs in the clear, then the entries
//!                     sealed as one blob for the place "data/xx/<pack id>",
//!                     t = 16*n + 64*n + 28
//! T+t           4     n, the number of entries
//! T+t+4         4     crc32 of the table's stored bytes
//! T+t+8         8     magic "PLTRPEND"
//!
//! ENTRY: id [32] | encoding u32 (0 raw, 1 lz4, 2/3 a delta raw/lz4) | reserved u32 |
//!        offset u64 | stored length u32 | plain length u32 |
//!        crc32 of the stored bytes u32 | reserved u32
//! FRAME: offset u64 | stored length u32 | crc32 of the stored bytes u32
//!        (the same values as the entry's; lets the stored bytes be checked
//!        without the key)
//! ```
//!
//! The table makes a pack self-describing: the index can always be rebuilt
//! from the packs alone.

use std::path::Path;

use crate::codec::seal::SEAL_OVERHEAD;
use crate::codec::{ChunkId, Encoded, Sealing, crc32};
use crate::error::{Error, Result};
use crate::os::DIRECT_ALIGN;
use crate::repo::backend::{Backend, NewFile, StoredFile};
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::names::{Folder, pack_folder};
use crate::repo::{PackId, sealed};

const MAGIC: &[u8; 8] = b"PLTRPACK";
const END_MAGIC: &[u8; 8] = b"PLTRPEND";
const VERSION: u32 = 1;
const SEALED: u32 = 1;
/// A pack is closed once it holds this many bytes (unless its backend
/// asks for another size: see `target_for`).
pub const PACK_TARGET: u64 = 64 << 20;

/// The size at which packs written to `backend` are closed.
pub fn target_for(backend: &dyn Backend) -> u64 {
    backend.pack_target().unwrap_or(PACK_TARGET)
}

pub const HEADER_LEN: u64 = 16;
pub const ENTRY_LEN: usize = 64;
const FRAME_LEN: usize = 16;
/// No pack's table is larger: a pack closes at 64 MiB, and even 1-byte
/// blobs would need less than this.
const MAX_TABLE: u64 = 256 << 20;
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
    /// The chunk's length; a delta's payload length (`codec::delta`).
    pub plain_len: u32,
    pub crc: u32,
    /// A delta's base chunk, as index files name it. Pack tables do not
    /// hold it (the delta's payload does): `None` in an entry read from one.
    pub base: Option<ChunkId>,
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
            base: None,
        })
    }
}

impl PackEntry {
    /// Whether the entry's lengths can be those of a chunk of a repository
    /// with chunks of `chunk_size` sealed by `sealing`: at most a chunk of
    /// plain bytes; a raw blob exactly its plain bytes (and the seal); an
    /// lz4 blob at most lz4's bound for them (and the seal). The chunk
    /// reader checks every location with this before reading, and
    /// `rebuild-index` and `verify` every pack table entry, so that no
    /// index is built from an entry the reader would refuse.
    pub fn check_lengths(&self, chunk_size: u64, sealing: &Sealing) -> Result<(), String> {
        let plain = u64::from(self.plain_len);
        let stored = u64::from(self.stored_len);
        let seal = sealing.overhead() as u64;
        let most = if self.encoded.is_delta() {
            crate::codec::delta::max_payload(chunk_size)
        } else {
            chunk_size
        };
        let fits = plain <= most
            && match self.encoded.packing() {
                Encoded::Lz4 => {
                    let bound = lz4_flex::block::get_maximum_output_size(self.plain_len as usize);
                    stored <= bound as u64 + seal
                }
                _ => stored == plain + seal,
            };
        if fits {
            Ok(())
        } else {
            Err(format!(
                "claims {stored} stored / {plain} plain bytes ({}), which no chunk of at most \
                 {chunk_size} bytes can be",
                match self.encoded {
                    Encoded::Raw => "raw",
                    Encoded::Lz4 => "lz4",
                    Encoded::DeltaRaw => "a raw delta",
                    Encoded::DeltaLz4 => "an lz4 delta",
                }
            ))
        }
    }
}

/// Whether `name` is one of the `data/` folders packs live in (two hex
/// digits); anything else there is not platter's.
pub fn is_pack_folder(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `head` (a file's first bytes) starts a sealed pack.
pub fn is_sealed(head: &[u8]) -> bool {
    head.len() >= HEADER_LEN as usize
        && head.starts_with(MAGIC)
        && FieldReader::new(&head[12..]).u32() == SEALED
}

/// One thing found in `data/` by `walk_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEntry {
    /// A name in `data/` that is not a pack folder: not platter's
    /// (its path, `data/<name>`).
    Foreign(String),
    /// A file in a pack folder.
    File(DataFile),
}

/// A file in one of the pack folders `data/xx/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its folder, `data/xx`.
    pub dir: String,
    /// Its name within `dir`.
    pub file: String,
    /// What its name says (see `repo::classify`).
    pub kind: crate::repo::FileName,
}

impl DataFile {
    /// Its path in the repository, `data/xx/<file>`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.file)
    }
}

/// The pack folders of `data/` (as paths `data/xx`), in listing order.
pub fn pack_folders(backend: &dyn Backend) -> Result<Vec<String>> {
    Ok(backend
        .list(Folder::Data.as_str())?
        .into_iter()
        .filter(|d| is_pack_folder(d))
        .map(|d| pack_folder(&d))
        .collect())
}

/// The one walk of `data/`: every folder that is not a pack folder, and
/// every file in the pack folders with its name classified, in listing
/// order (a foreign folder where it is listed, each pack folder's files
/// where the folder is).
pub fn walk_data(backend: &dyn Backend) -> Result<Vec<DataEntry>> {
    let dirs: Vec<String> = backend
        .list(Folder::Data.as_str())?
        .iter()
        .map(|dir| pack_folder(dir))
        .collect();
    let listed = super::backend::each_at_once(backend, &dirs, |dir| {
        if !is_pack_folder(&dir[Folder::Data.as_str().len() + 1..]) {
            return Ok(None);
        }
        backend.list(dir).map(Some)
    });
    let mut entries = Vec::new();
    for (dir, files) in dirs.into_iter().zip(listed) {
        let Some(files) = files? else {
            entries.push(DataEntry::Foreign(dir));
            continue;
        };
        for file in files {
            let kind = crate::repo::classify(&dir, &file);
            entries.push(DataEntry::File(DataFile {
                dir: dir.clone(),
                file,
                kind,
            }));
        }
    }
    Ok(entries)
}

/// Ids of the committed packs in `data/`.
pub fn packs_on_disk(backend: &dyn Backend) -> Result<std::collections::HashSet<PackId>> {
    Ok(walk_data(backend)?
        .into_iter()
        .filter_map(|entry| match entry {
            DataEntry::File(DataFile {
                kind: crate::repo::FileName::Id(id),
                ..
            }) => Some(PackId::from_bytes(id)),
            _ => None,
        })
        .collect())
}

/// Writes one pack. Blobs are streamed to a temporary file; `finish` appends
/// the table and makes the pack durable under its final name.
pub struct PackWriter {
    id: PackId,
    sealing: Sealing,
    file: Box<dyn NewFile>,
    entries: Vec<PackEntry>,
    offset: u64,
}

impl PackWriter {
    /// A new pack; its blobs must be sealed by `sealing` (see
    /// `codec::store`), and its table will be.
    pub fn create(backend: &dyn Backend, sealing: &Sealing) -> Result<PackWriter> {
        let id = PackId::random();
        let mut file = backend.create_large(&crate::repo::names::pack_name(&id))?;
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

    /// Appends a whole chunk's blob.
    pub fn add(
        &mut self,
        id: ChunkId,
        encoded: Encoded,
        stored: &[u8],
        plain_len: u32,
    ) -> Result<PackEntry> {
        self.append(id, encoded, stored, plain_len, None)
    }

    /// Appends a delta's blob (`encoded` is a delta encoding, `payload_len`
    /// the delta payload's length) over chunk `base`.
    pub fn add_delta(
        &mut self,
        id: ChunkId,
        encoded: Encoded,
        stored: &[u8],
        payload_len: u32,
        base: ChunkId,
    ) -> Result<PackEntry> {
        self.append(id, encoded, stored, payload_len, Some(base))
    }

    fn append(
        &mut self,
        id: ChunkId,
        encoded: Encoded,
        stored: &[u8],
        plain_len: u32,
        base: Option<ChunkId>,
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
            base,
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
    pub fn finish(mut self) -> Result<(PackId, Vec<PackEntry>)> {
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 16);
        for entry in &self.entries {
            entry.write_to(&mut table);
        }
        if self.sealing.is_encrypted() {
            // Frames in the clear, so that stored bytes can be checked
            // without the key; then the entries, sealed.
            let entries = std::mem::take(&mut table);
            for entry in &self.entries {
                table.put_u64(entry.offset);
                table.put_u32(entry.stored_len);
                table.put_u32(entry.crc);
            }
            let mut sealed = Vec::new();
            let place = crate::repo::names::pack_name(&self.id);
            self.sealing.seal(place.as_bytes(), &entries, &mut sealed)?;
            table.put(&sealed);
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

fn write_all(file: &mut dyn NewFile, bytes: &[u8], id: &PackId) -> Result<()> {
    file.write_all(bytes).map_err(|e| {
        Error::io(
            "write pack",
            Path::new(&crate::repo::names::pack_name(id)),
            e,
        )
    })
}

/// Where a blob lies in a pack and the crc32 of its stored bytes: what can
/// be checked without the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub stored_len: u32,
    pub crc: u32,
}

impl From<&PackEntry> for Frame {
    fn from(e: &PackEntry) -> Frame {
        Frame {
            offset: e.offset,
            stored_len: e.stored_len,
            crc: e.crc,
        }
    }
}

/// A pack's table as stored, checked against its crc32.
struct RawTable {
    sealed: bool,
    count: usize,
    /// Where the table starts: every blob must end before it.
    start: u64,
    bytes: Vec<u8>,
}

impl RawTable {
    fn read(file: &dyn StoredFile, what: &str) -> Result<RawTable> {
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
        let sealed = match head.u32() {
            0 => false,
            SEALED => true,
            other => {
                return Err(Error::corrupt(format!(
                    "pack {what} has unknown flags {other:#x}"
                )));
            }
        };
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
        let table_len = if sealed {
            count * (FRAME_LEN + ENTRY_LEN) as u64 + SEAL_OVERHEAD as u64
        } else {
            count * ENTRY_LEN as u64
        };
        if table_len > MAX_TABLE {
            return Err(Error::corrupt(format!(
                "pack {what} claims {count} entries, more than any pack holds"
            )));
        }
        let start = (len - FOOTER_LEN)
            .checked_sub(table_len)
            .filter(|&start| start >= HEADER_LEN)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "pack {what} claims {count} entries, more than its {len} bytes can hold"
                ))
            })?;
        let mut bytes = vec![0u8; table_len as usize];
        file.read_exact_at(&mut bytes, start)?;
        if crc32(&bytes) != table_crc {
            return Err(Error::corrupt(format!(
                "pack {what} has a damaged table (crc32 mismatch)"
            )));
        }
        Ok(RawTable {
            sealed,
            count: count as usize,
            start,
            bytes,
        })
    }

    /// The frames: stored before the sealed entries, or taken from the
    /// plain entries. Each must lie between the header and the table.
    fn frames(&self, what: &str) -> Result<Vec<Frame>> {
        let mut frames = Vec::with_capacity(self.count);
        for i in 0..self.count {
            let frame = if self.sealed {
                let mut r = FieldReader::new(&self.bytes[i * FRAME_LEN..]);
                Frame {
                    offset: r.u64(),
                    stored_len: r.u32(),
                    crc: r.u32(),
                }
            } else {
                let mut r = FieldReader::new(&self.bytes[i * ENTRY_LEN + 40..]);
                let offset = r.u64();
                let stored_len = r.u32();
                r.skip(4);
                Frame {
                    offset,
                    stored_len,
                    crc: r.u32(),
                }
            };
            let end = frame.offset.checked_add(u64::from(frame.stored_len));
            if frame.offset < HEADER_LEN || end.is_none_or(|end| end > self.start) {
                return Err(Error::corrupt(format!(
                    "pack {what}: table entry {i} points outside the pack's data"
                )));
            }
            frames.push(frame);
        }
        Ok(frames)
    }
}

/// Reads and checks the table of pack `id`, opening its seal in an
/// encrypted repository. Every entry must lie between the header and the
/// table.
pub fn read_table(
    file: &dyn StoredFile,
    sealing: &Sealing,
    id: &PackId,
    what: &str,
) -> Result<Vec<PackEntry>> {
    let mut raw = RawTable::read(file, what)?;
    if raw.sealed != sealing.is_encrypted() {
        let what = format!("pack {what}");
        return Err(sealed::mismatch(&what, raw.sealed, sealing.is_encrypted()));
    }
    let frames = raw.frames(what)?;
    let entries_at = if raw.sealed { raw.count * FRAME_LEN } else { 0 };
    let table = if raw.sealed {
        sealing
            .open_in_place(
                crate::repo::names::pack_name(id).as_bytes(),
                &mut raw.bytes[entries_at..],
            )
            .map_err(|e| Error::corrupt(format!("pack {what}: its table {}", e.message())))?
    } else {
        &raw.bytes[..]
    };
    let mut entries = Vec::with_capacity(raw.count);
    for (i, (bytes, frame)) in table.chunks_exact(ENTRY_LEN).zip(&frames).enumerate() {
        let entry = PackEntry::read_from(bytes).ok_or_else(|| {
            Error::corrupt(format!(
                "pack {what}: table entry {i} has an unknown encoding"
            ))
        })?;
        if Frame::from(&entry) != *frame {
            return Err(Error::corrupt(format!(
                "pack {what}: table entry {i} disagrees with its frame"
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads and checks a pack's frames without the key (for checking stored
/// bytes where the passphrase is not known); also says whether the pack is
/// sealed.
pub fn read_frames(file: &dyn StoredFile, what: &str) -> Result<(bool, Vec<Frame>)> {
    let raw = RawTable::read(file, what)?;
    Ok((raw.sealed, raw.frames(what)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::LocalBackend;

    fn write_pack(backend: &LocalBackend) -> (PackId, Vec<PackEntry>) {
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
        let file = backend.open(&crate::repo::names::pack_name(&id)).unwrap();
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
        let name = crate::repo::names::pack_name(&id);
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

    #[test]
    fn entry_lengths_must_be_a_chunks() {
        let chunk = 64 * 1024;
        let entry = |encoded, stored_len, plain_len| PackEntry {
            id: ChunkId([3; 32]),
            encoded,
            offset: HEADER_LEN,
            stored_len,
            plain_len,
            crc: 0,
            base: None,
        };
        let plain = Sealing::plain();
        let sealed = Sealing::encrypted(&crate::codec::MasterKey::generate().unwrap());
        let seal = SEAL_OVERHEAD as u32;
        for (e, sealing, ok) in [
            (entry(Encoded::Raw, 65536, 65536), &plain, true),
            (entry(Encoded::Raw, 100, 100), &plain, true),
            (entry(Encoded::Raw, 100 + seal, 100), &sealed, true),
            (entry(Encoded::Lz4, 10, 65536), &plain, true),
            (entry(Encoded::Lz4, 10 + seal, 65536), &sealed, true),
            (entry(Encoded::Raw, 65537, 65537), &plain, false),
            (entry(Encoded::Raw, 100, u32::MAX), &plain, false),
            (entry(Encoded::Raw, 99, 100), &plain, false),
            (entry(Encoded::Raw, 100, 100), &sealed, false),
            (entry(Encoded::Lz4, u32::MAX, 100), &plain, false),
            (entry(Encoded::Lz4, 10, u32::MAX), &sealed, false),
            // A delta's plain length is its payload's: a little over a
            // chunk at most (every page, the base id, the page mask).
            (
                entry(Encoded::DeltaRaw, 65536 + 38, 65536 + 38),
                &plain,
                true,
            ),
            (
                entry(Encoded::DeltaRaw, 65536 + 39, 65536 + 39),
                &plain,
                false,
            ),
            (entry(Encoded::DeltaLz4, 100 + seal, 4200), &sealed, true),
            (entry(Encoded::DeltaLz4, 100, 70000), &plain, false),
        ] {
            assert_eq!(e.check_lengths(chunk, sealing).is_ok(), ok, "{e:?}");
        }
    }

    #[test]
    fn sealed_tables_open_with_the_key_and_frames_check_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let sealing = Sealing::encrypted(&crate::codec::MasterKey::generate().unwrap());
        let mut w = PackWriter::create(&backend, &sealing).unwrap();
        let one = w
            .add(ChunkId([1; 32]), Encoded::Raw, b"sealed one", 2)
            .unwrap();
        w.add(ChunkId([2; 32]), Encoded::Lz4, b"sealed two!", 5)
            .unwrap();
        let (id, entries) = w.finish().unwrap();
        let name = crate::repo::names::pack_name(&id);
        let file = backend.open(&name).unwrap();
        assert_eq!(read_table(&*file, &sealing, &id, "p").unwrap(), entries);
        let (sealed, frames) = read_frames(&*file, "p").unwrap();
        assert!(sealed);
        assert_eq!(frames[0], Frame::from(&one));
        assert!(read_table(&*file, &Sealing::plain(), &id, "p").is_err());
        assert!(read_table(&*file, &sealing, &PackId::from_bytes([9; 32]), "p").is_err());

        // The ids are sealed; changing a sealed byte, even with the table's
        // crc32 fixed, does not open.
        let good = backend.read_whole(&name).unwrap();
        assert!(!good.windows(32).any(|w| w == [2u8; 32]));
        let table_end = good.len() - FOOTER_LEN as usize;
        let mut bad = good.clone();
        bad[table_end - 20] ^= 1;
        let table_start = table_end - (2 * (FRAME_LEN + ENTRY_LEN) + SEAL_OVERHEAD);
        let crc = crc32(&bad[table_start..table_end]);
        bad[table_end + 4..table_end + 8].copy_from_slice(&crc.to_le_bytes());
        backend.write_whole(&name, &bad).unwrap();
        let file = backend.open(&name).unwrap();
        let err = read_table(&*file, &sealing, &id, "p").unwrap_err();
        assert!(err.message().contains("does not authenticate"), "{err}");
        assert!(read_frames(&*file, "p").unwrap().0, "frames need no key");
    }

    #[test]
    fn the_data_walk_classifies_every_name_in_listing_order() {
        use crate::repo::FileName;
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let (id, _) = write_pack(&backend);
        let hex = id.to_hex();
        let folder = format!("data/{}", &hex[..2]);
        let other = if &hex[..2] == "00" { "01" } else { "00" };
        let root = dir.path();
        std::fs::create_dir_all(root.join(format!("data/{other}"))).unwrap();
        std::fs::write(root.join(format!("data/{other}/{hex}")), b"x").unwrap();
        std::fs::write(root.join(format!("{folder}/.tmp-1")), b"x").unwrap();
        std::fs::write(root.join(format!("{folder}/notes")), b"x").unwrap();
        std::fs::create_dir_all(root.join("data/zz")).unwrap();
        let file = |dir: &str, file: &str, kind| {
            DataEntry::File(DataFile {
                dir: dir.to_string(),
                file: file.to_string(),
                kind,
            })
        };
        let mut want = vec![
            file(&folder, ".tmp-1", FileName::Unfinished),
            file(&folder, &hex, FileName::Id(*id.as_bytes())),
            file(&folder, "notes", FileName::Foreign),
        ];
        want.insert(
            if other == "00" { 0 } else { 3 },
            file(&format!("data/{other}"), &hex, FileName::Misplaced),
        );
        want.push(DataEntry::Foreign("data/zz".into()));
        assert_eq!(walk_data(&backend).unwrap(), want);
        let mut folders = vec![folder.clone(), format!("data/{other}")];
        folders.sort();
        assert_eq!(pack_folders(&backend).unwrap(), folders);
        assert_eq!(packs_on_disk(&backend).unwrap(), [id].into_iter().collect());
    }
}
