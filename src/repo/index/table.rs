//! A sorted table of index entries: the form of the index that is
//! searched without being loaded. Tables live only in the local cache
//! folder (see `cache`), are written whole by platter, and are never
//! changed in place: a new table gets a new name and an old one is only
//! ever unlinked, so a mapping of one stays valid (a repository file could
//! be cut short by another host, which would fault a mapping of it).
//!
//! ```text
//! entries  64*n   sorted by chunk id, the copies of one chunk adjacent:
//!                 id [32] | pack u32 (into the packs below) | encoding u32 |
//!                 offset u64 | stored length u32 | plain length u32 |
//!                 crc32 u32 | base u32 (into the bases below, or u32::MAX)
//! bases    32*d   the base chunk id of each delta entry
//! packs    40*p   pack id [32] | entries in this table u64
//! keys     8*k    the first 8 bytes (big-endian) of the id of every
//!                 `PAGE_ENTRIES`-th entry: k = ceil(n / PAGE_ENTRIES)
//! crcs     4*k    the crc32 of each page of entries (64, the last fewer)
//! footer   48     magic "PLTRTBL\0" | version u32 | flags u32 | n u64 |
//!                 d u64 | p u64 | crc32 of bases, packs, keys, crcs and
//!                 the footer's fields before it u32 | "TEND"
//! ```
//!
//! The keys are read into memory at open (8 bytes per 64 entries): a
//! lookup finds its 4 KiB page of entries there and reads that page with
//! pread. Lookups do not go through the mapping: on this kernel a fault on
//! a file mapping maps the whole large folio the page cache holds (ext4
//! writes folios of up to 2 MiB), so a few hundred random lookups through
//! a mapping made a whole table resident. Walks (`iter`) go through the
//! mapping and let the pages go behind them.
//!
//! Each page of entries is checked against its crc when it is read (a
//! lookup reads one page; a merge reads them all), so a damaged table is
//! found before a backup dedups against an entry it made up: the table is
//! then removed, and built again by the next command.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::codec::{ChunkId, crc32};
use crate::error::{Error, Result};
use crate::repo::PackId;
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::index::{file, pages};
use crate::repo::pack::PackEntry;

const MAGIC: &[u8; 8] = b"PLTRTBL\0";
const END_MAGIC: &[u8; 4] = b"TEND";
const VERSION: u32 = 3;
/// An entry is an index file's (`file::put_entry`), its last field the
/// entry's slot among the bases.
const ENTRY_LEN: u64 = file::ENTRY_LEN as u64;
const PACK_LEN: u64 = 40;
/// Entries per 4 KiB page, and per key.
const PAGE_ENTRIES: u64 = pages::PAGE / ENTRY_LEN;
const FOOTER_LEN: u64 = 48;
const NO_BASE: u32 = u32::MAX;
/// Flag: some chunk has more than one entry.
const DOUBLES: u32 = 1;
/// Entries walked before the pages behind them are let go (`iter`).
const RELEASE_EVERY: u64 = 1 << 16;

fn io_err<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(what, path, e)
}

/// Writes a table from entries handed in chunk id order.
pub struct TableWriter {
    path: PathBuf,
    out: BufWriter<File>,
    bases_path: PathBuf,
    bases: BufWriter<File>,
    packs: Vec<(PackId, u64)>,
    numbers: HashMap<PackId, u32>,
    keys: Vec<u64>,
    crcs: Vec<u32>,
    page: crc32fast::Hasher,
    entries: u64,
    deltas: u64,
    last: Option<ChunkId>,
    doubles: bool,
}

impl TableWriter {
    /// Starts table `path` (a new file; `path` with ".bases" appended is
    /// a scratch file for the bases until `finish`).
    pub fn create(path: &Path) -> Result<TableWriter> {
        let new = |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(io_err("create", p))
        };
        let mut bases_path = path.as_os_str().to_owned();
        bases_path.push(".bases");
        let bases_path = PathBuf::from(bases_path);
        let out = BufWriter::with_capacity(1 << 20, new(path)?);
        let bases = match new(&bases_path) {
            Ok(f) => BufWriter::new(f),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        Ok(TableWriter {
            path: path.to_owned(),
            out,
            bases_path,
            bases,
            packs: Vec::new(),
            numbers: HashMap::new(),
            keys: Vec::new(),
            crcs: Vec::new(),
            page: crc32fast::Hasher::new(),
            entries: 0,
            deltas: 0,
            last: None,
            doubles: false,
        })
    }

    /// Adds entry `e` of pack `pack`; ids must come in ascending order
    /// (equal ids, the copies of one chunk, one after the other).
    pub fn push(&mut self, pack: &PackId, e: &PackEntry) -> Result<()> {
        if let Some(last) = self.last {
            if e.id < last {
                return Err(Error::internal("index table entries out of order"));
            }
            self.doubles |= e.id == last;
        }
        self.last = Some(e.id);
        let number = match self.numbers.get(pack) {
            Some(n) => *n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push((*pack, 0));
                self.numbers.insert(*pack, n);
                n
            }
        };
        self.packs[number as usize].1 += 1;
        let base = match e.base.filter(|_| e.encoded.is_delta()) {
            Some(base) => {
                self.bases
                    .write_all(&base.0)
                    .map_err(io_err("write", &self.bases_path))?;
                self.deltas += 1;
                (self.deltas - 1) as u32
            }
            None => NO_BASE,
        };
        let mut rec = Vec::with_capacity(ENTRY_LEN as usize);
        file::put_entry(&mut rec, e, number, base);
        self.out
            .write_all(&rec)
            .map_err(io_err("write", &self.path))?;
        self.page.update(&rec);
        if self.entries.is_multiple_of(PAGE_ENTRIES) {
            self.keys.push(pages::key(&e.id));
        }
        self.entries += 1;
        if self.entries.is_multiple_of(PAGE_ENTRIES) {
            let page = std::mem::replace(&mut self.page, crc32fast::Hasher::new());
            self.crcs.push(page.finalize());
        }
        Ok(())
    }

    /// Completes the table and makes it durable; returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        let TableWriter {
            path,
            mut out,
            bases_path,
            bases,
            packs,
            keys,
            mut crcs,
            page,
            entries,
            deltas,
            doubles,
            ..
        } = self;
        let result = (|| {
            drop(
                bases
                    .into_inner()
                    .map_err(|e| Error::io("write", &bases_path, e.into_error()))?,
            );
            // Read back through a new descriptor (no seek: tests that hold
            // a command at its n-th lseek count on none here).
            let mut tail = std::fs::read(&bases_path).map_err(io_err("read", &bases_path))?;
            for (id, count) in &packs {
                tail.put(id.as_bytes());
                tail.put_u64(*count);
            }
            for k in keys {
                tail.put_u64(k);
            }
            if !entries.is_multiple_of(PAGE_ENTRIES) {
                crcs.push(page.finalize());
            }
            for c in crcs {
                tail.put_u32(c);
            }
            tail.put(MAGIC);
            tail.put_u32(VERSION);
            tail.put_u32(if doubles { DOUBLES } else { 0 });
            tail.put_u64(entries);
            tail.put_u64(deltas);
            tail.put_u64(packs.len() as u64);
            let crc = crc32(&tail);
            tail.put_u32(crc);
            tail.put(END_MAGIC);
            out.write_all(&tail).map_err(io_err("write", &path))?;
            let file = out
                .into_inner()
                .map_err(|e| Error::io("write", &path, e.into_error()))?;
            file.sync_all().map_err(io_err("write", &path))
        })();
        let _ = std::fs::remove_file(&bases_path);
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Drops the unfinished table and its scratch file.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.bases_path);
    }
}

/// One table, mapped.
pub struct Table {
    path: PathBuf,
    file: File,
    map: memmap2::Mmap,
    entries: u64,
    deltas: u64,
    packs: Vec<(PackId, u64)>,
    keys: Vec<u64>,
    crcs: Vec<u32>,
    doubles: bool,
}

impl Table {
    /// Opens table `path`, checking its shape and footer.
    pub fn open(path: &Path) -> Result<Table> {
        let file = open_regular(path)?;
        let len = file.metadata().map_err(io_err("look at", path))?.len();
        let damaged = |why: &str| {
            Error::corrupt(format!(
                "index cache table {} is damaged: {why}",
                path.display()
            ))
        };
        if len < FOOTER_LEN {
            return Err(damaged("too short"));
        }
        // SAFETY: the table is a file of the private cache folder that
        // platter wrote whole, fsynced and never changes or truncates
        // afterwards (a newer table gets a new name; an old one is only
        // unlinked, which keeps this mapping's pages), so the mapped bytes
        // stay valid and unchanged for the mapping's lifetime.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err("map", path))?;
        let footer = &map[(len - FOOTER_LEN) as usize..];
        let mut r = FieldReader::new(footer);
        if &r.bytes::<8>() != MAGIC {
            return Err(damaged("bad magic"));
        }
        if r.u32() != VERSION {
            return Err(damaged("another version"));
        }
        let flags = r.u32();
        let (entries, deltas, pack_count) = (r.u64(), r.u64(), r.u64());
        let crc = r.u32();
        if &r.bytes::<4>() != END_MAGIC {
            return Err(damaged("bad end magic"));
        }
        let key_count = entries.div_ceil(PAGE_ENTRIES);
        let expected = entries
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(deltas.checked_mul(32)?))
            .and_then(|n| n.checked_add(pack_count.checked_mul(PACK_LEN)?))
            .and_then(|n| n.checked_add(key_count * 12 + FOOTER_LEN));
        if expected != Some(len) {
            return Err(damaged("its length does not match its footer"));
        }
        let tail_start = (entries * ENTRY_LEN) as usize;
        if crc32(&map[tail_start..(len - 8) as usize]) != crc {
            return Err(damaged("checksum mismatch"));
        }
        let packs_start = tail_start + (deltas * 32) as usize;
        let mut r = FieldReader::new(&map[packs_start..]);
        let packs = (0..pack_count)
            .map(|_| (PackId::from_bytes(r.bytes()), r.u64()))
            .collect();
        let keys: Vec<u64> = (0..key_count).map(|_| r.u64()).collect();
        let crcs: Vec<u32> = (0..key_count).map(|_| r.u32()).collect();
        if keys.windows(2).any(|w| w[0] > w[1]) {
            return Err(damaged("its keys are out of order"));
        }
        // Let go of the tail's pages (the keys are held in memory).
        pages::release(&map, tail_start as u64..len);
        Ok(Table {
            map,
            entries,
            deltas,
            packs,
            keys,
            crcs,
            doubles: flags & DOUBLES != 0,
            file,
            path: path.to_owned(),
        })
    }

    /// How many entries the table holds (copies included).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// The packs this table names, with how many of its entries each holds.
    pub fn packs(&self) -> &[(PackId, u64)] {
        &self.packs
    }

    /// Whether some chunk has more than one entry here.
    pub fn has_doubles(&self) -> bool {
        self.doubles
    }

    /// Every entry of chunk `id` (none, usually one), with its pack
    /// number (into `packs`); entries whose encoding, pack or base is
    /// unknown are left out.
    pub fn find(&self, id: &ChunkId) -> Vec<(u32, PackEntry)> {
        let Some((first_page, records)) = pages::span(&self.keys, id, PAGE_ENTRIES, self.entries)
        else {
            return Vec::new();
        };
        let bytes = records.start * ENTRY_LEN..records.end * ENTRY_LEN;
        pages::read(&self.file, &self.map, bytes, |buf| {
            if !self.pages_intact(first_page, buf) {
                // Made up entries must not be believed (a backup would
                // dedup against a chunk the repository lacks): the chunk
                // looks missing here (a backup stores it again), and the
                // table goes, so the next command builds the cache again.
                self.discard();
                return Vec::new();
            }
            let record = ENTRY_LEN as usize;
            (pages::equal(buf, record, id))
                .filter_map(|i| self.decode(&buf[i * record..(i + 1) * record]))
                .collect()
        })
    }

    /// Whether the pages of entries in `buf`, from page `first`, match
    /// their crcs.
    fn pages_intact(&self, first: u64, buf: &[u8]) -> bool {
        buf.chunks(4096)
            .zip(first as usize..)
            .all(|(page, p)| self.crcs.get(p) == Some(&crc32(page)))
    }

    /// Removes the table's file: it is damaged, and the cache folder's
    /// next user builds the cache again (this process keeps its mapping).
    fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Entry `i`: its pack number (into `packs`) and the entry (with its
    /// base), read through the mapping. `None` for an entry whose
    /// encoding, pack or base is unknown.
    fn entry(&self, i: u64) -> Option<(u32, PackEntry)> {
        let at = (i * ENTRY_LEN) as usize;
        self.decode(&self.map[at..at + ENTRY_LEN as usize])
    }

    fn decode(&self, bytes: &[u8]) -> Option<(u32, PackEntry)> {
        let raw = file::RawEntry::parse(bytes);
        let mut entry = raw.entry()?;
        if raw.pack as usize >= self.packs.len() {
            return None;
        }
        entry.base = match (entry.encoded.is_delta(), raw.reserved) {
            (false, _) => None,
            (true, NO_BASE) => return None,
            (true, slot) if u64::from(slot) >= self.deltas => return None,
            (true, slot) => {
                let at = self.entries * ENTRY_LEN + u64::from(slot) * 32;
                let mut base = [0u8; 32];
                if std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut base, at).is_err() {
                    base.copy_from_slice(&self.map[at as usize..at as usize + 32]);
                }
                Some(ChunkId(base))
            }
        };
        Some((raw.pack, entry))
    }

    /// Every entry in id order. The pages walked are let go behind the
    /// walk, so a walk over a large table does not hold it in memory.
    pub fn iter(&self) -> impl Iterator<Item = (u32, PackEntry)> + '_ {
        (0..self.entries).filter_map(move |i| {
            if i > 0 && i % RELEASE_EVERY == 0 {
                self.release(i - RELEASE_EVERY..i);
            }
            self.entry(i)
        })
    }

    /// Every entry in id order, read with pread a little at a time (64
    /// KiB): for merging many tables at once, where a walk through each
    /// one's mapping would keep a large folio of each resident.
    pub fn read_all(&self) -> TableReader<'_> {
        TableReader {
            table: self,
            buf: Vec::new(),
            at: 0,
            next: 0,
        }
    }

    /// Lets the pages of entries `range` go from this process's memory
    /// (they stay in the page cache).
    fn release(&self, range: Range<u64>) {
        pages::release(&self.map, range.start * ENTRY_LEN..range.end * ENTRY_LEN);
    }
}

/// The reader of `Table::read_all`.
pub struct TableReader<'a> {
    table: &'a Table,
    buf: Vec<u8>,
    /// The entry number of `buf`'s first entry.
    at: u64,
    next: u64,
}

/// Entries read at once by a `TableReader`.
const READ_ENTRIES: u64 = 1024;

impl Iterator for TableReader<'_> {
    type Item = Result<(u32, PackEntry)>;

    fn next(&mut self) -> Option<Result<(u32, PackEntry)>> {
        loop {
            let t = self.table;
            if self.next >= t.entries {
                return None;
            }
            let held = self.buf.len() as u64 / ENTRY_LEN;
            if self.next >= self.at + held {
                let count = READ_ENTRIES.min(t.entries - self.next);
                self.buf.resize((count * ENTRY_LEN) as usize, 0);
                self.at = self.next;
                let offset = self.at * ENTRY_LEN;
                if let Err(e) =
                    std::os::unix::fs::FileExt::read_exact_at(&t.file, &mut self.buf, offset)
                {
                    self.next = t.entries;
                    return Some(Err(Error::io("read", &t.path, e)));
                }
                // Reads start at whole pages (READ_ENTRIES is a multiple).
                if !t.pages_intact(self.at / PAGE_ENTRIES, &self.buf) {
                    self.next = t.entries;
                    t.discard();
                    return Some(Err(Error::corrupt(format!(
                        "index cache table {} is damaged: a page of entries fails its crc32",
                        t.path.display()
                    ))));
                }
            }
            let i = ((self.next - self.at) * ENTRY_LEN) as usize;
            self.next += 1;
            // An entry that does not decode was never written (the
            // writer checks them): skipped as `iter` does.
            if let Some(found) = t.decode(&self.buf[i..i + ENTRY_LEN as usize]) {
                return Some(Ok(found));
            }
        }
    }
}

/// Opens `path` for reading only if it is a regular file: not following a
/// final symbolic link, and without blocking on a FIFO.
pub fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("look at", path))?;
    if !meta.is_file() {
        return Err(Error::corrupt(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoded;

    fn entry(id: [u8; 32], encoded: Encoded, base: Option<ChunkId>) -> PackEntry {
        PackEntry {
            id: ChunkId(id),
            encoded,
            offset: u64::from(id[1]),
            stored_len: 3,
            plain_len: 4,
            crc: 5,
            base,
        }
    }

    #[test]
    fn tables_find_every_entry_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut w = TableWriter::create(&path).unwrap();
        let (p1, p2) = (PackId::from_bytes([1; 32]), PackId::from_bytes([2; 32]));
        let mut ids: Vec<[u8; 32]> = (0..600u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        ids.sort();
        for (i, id) in ids.iter().enumerate() {
            let e = if i % 7 == 0 {
                entry(*id, Encoded::DeltaLz4, Some(ChunkId(ids[0])))
            } else {
                entry(*id, Encoded::Lz4, None)
            };
            w.push(if i % 2 == 0 { &p1 } else { &p2 }, &e).unwrap();
        }
        // A second copy of the last chunk.
        w.push(&p1, &entry(ids[599], Encoded::Raw, None)).unwrap();
        assert!(w.push(&p1, &entry(ids[0], Encoded::Raw, None)).is_err());
        w.finish().unwrap();
        let t = Table::open(&path).unwrap();
        assert_eq!(t.entries(), 601);
        assert!(t.has_doubles());
        assert_eq!(t.packs(), &[(p1, 301), (p2, 300)]);
        for (i, id) in ids.iter().enumerate() {
            let found = t.find(&ChunkId(*id));
            assert_eq!(found.len(), if i == 599 { 2 } else { 1 });
            let (pack, e) = found[0];
            assert_eq!(pack, (i % 2) as u32);
            assert_eq!(e.base.is_some(), i % 7 == 0);
        }
        assert!(t.find(&ChunkId([0xff; 32])).is_empty());
        assert!(t.find(&ChunkId([0; 32])).is_empty());
        assert_eq!(t.iter().count(), 601);
        assert_eq!(t.read_all().filter(|e| e.is_ok()).count(), 601);
        let bytes = std::fs::read(&path).unwrap();
        // An entry changed: its page fails its crc, the lookup finds
        // nothing, a merge fails, and the table is removed.
        let mut bad = bytes.clone();
        bad[64 * 70 + 3] ^= 1;
        let p = dir.path().join("entry");
        std::fs::write(&p, &bad).unwrap();
        let damaged = Table::open(&p).unwrap();
        assert!(damaged.find(&ChunkId(ids[70])).is_empty());
        assert!(!p.exists(), "the damaged table stayed");
        assert!(damaged.read_all().any(|e| e.is_err()));
        // Not a regular file: refused, without blocking.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        assert!(Table::open(&fifo).is_err());
        let tail = 601 * 64;
        for i in (tail..bytes.len()).step_by(5) {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let p = dir.path().join(format!("bad{i}"));
            std::fs::write(&p, &bad).unwrap();
            assert!(Table::open(&p).is_err(), "flip at {i} accepted");
        }
        for cut in [0, 10, bytes.len() - 1] {
            let p = dir.path().join(format!("cut{cut}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(Table::open(&p).is_err(), "cut at {cut} accepted");
        }
    }
}
