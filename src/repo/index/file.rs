//! Index files: which pack holds each chunk, and where.
//!
//! Each backup writes one index file for the packs it wrote, after those
//! packs are durable. Everything here can be rebuilt from the packs' own
//! tables. A repository with the `sorted-index` feature writes version 3
//! (`sorted_file`); versions 1 and 2, below, are still read. In an
//! encrypted repository the whole file below is sealed (see `sealed`).
//!
//! ```text
//! offset  size   field
//! 0       8      magic "PLTRIDX\0"
//! 8       4      format version (1)
//! 12      4      number of packs p
//! 16      8      number of entries n
//! 24      32*p   pack ids
//! ...     64*n   entries: id [32] | pack number u32 (into the ids above) |
//!                encoding u32 | offset u64 | stored length u32 |
//!                plain length u32 | crc32 of stored bytes u32 | reserved u32
//! ...     32*d   version 2 only: the base chunk id of each delta entry
//!                (encodings 2 and 3), in the order of the entries
//! ...     4      crc32 of every byte before it
//! ...     4      magic "IEND"
//! ```
//!
//! Version 1 files hold no deltas; a file is written as version 2 only
//! when it holds one (repositories with the `deltas` feature), so an index
//! without deltas stays readable by a platter that predates them.

use crate::codec::{ChunkId, Encoded, Sealing, crc32};
use crate::error::{Error, Result};
use crate::repo::backend::{Backend, StoredFile};
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::index::sorted_file::{self, Opening};
use crate::repo::index::table::Table;
use crate::repo::pack::PackEntry;
use crate::repo::{IndexId, PackId, sealed};

pub const MAGIC: &[u8; 8] = b"PLTRIDX\0";
const END_MAGIC: &[u8; 4] = b"IEND";
const VERSION: u32 = 1;
/// Index files that name delta bases.
const DELTA_VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
pub const ENTRY_LEN: usize = 64;
/// The most packs one index file may name (64 MiB of pack ids, held while
/// it is read): a forged count must not make a reader allocate more.
pub const MAX_PACKS: u64 = 1 << 21;
/// Bytes read at once when streaming a version 1 or 2 file.
const SPAN: usize = 4 << 20;

/// Writes one index file covering `packs`; returns its id. `sorted`:
/// version 3 (the repository has the `sorted-index` feature).
pub fn write_index(
    backend: &dyn Backend,
    sealing: &Sealing,
    packs: &[(PackId, Vec<PackEntry>)],
    sorted: bool,
) -> Result<IndexId> {
    let mut bases = Vec::new();
    for e in packs.iter().flat_map(|(_, entries)| entries) {
        match (e.encoded.is_delta(), e.base) {
            (false, _) => {}
            (true, Some(base)) => bases.push(base),
            (true, None) => {
                return Err(Error::internal(format!(
                    "delta {} has no base to index",
                    e.id
                )));
            }
        }
    }
    if packs.len() as u64 > MAX_PACKS {
        let entries = packs.iter().map(|(_, e)| e.len() as u64).sum();
        return Err(sorted_file::too_large(packs.len() as u64, entries));
    }
    if sorted {
        let ids: Vec<PackId> = packs.iter().map(|(id, _)| *id).collect();
        let mut all: Vec<(u32, PackEntry)> = packs
            .iter()
            .enumerate()
            .flat_map(|(n, (_, entries))| entries.iter().map(move |e| (n as u32, *e)))
            .collect();
        all.sort_unstable_by_key(|(pack, e)| (e.id, *pack, e.offset));
        let bases = all
            .iter()
            .filter_map(|(_, e)| e.base.filter(|_| e.encoded.is_delta()));
        let counts = (all.len() as u64, bases.clone().count() as u64);
        return sorted_file::write(backend, sealing, &ids, counts, all.iter().copied(), bases);
    }
    let count: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(
        HEADER_LEN + packs.len() * 32 + count * ENTRY_LEN + bases.len() * 32 + 8,
    );
    out.put(MAGIC);
    out.put_u32(if bases.is_empty() {
        VERSION
    } else {
        DELTA_VERSION
    });
    out.put_u32(packs.len() as u32);
    out.put_u64(count as u64);
    for (id, _) in packs {
        out.put(id.as_bytes());
    }
    for (number, (_, entries)) in packs.iter().enumerate() {
        for e in entries {
            put_entry(&mut out, e, number as u32, 0);
        }
    }
    for base in &bases {
        out.put(&base.0);
    }
    let crc = crc32(&out);
    out.put_u32(crc);
    out.put(END_MAGIC);
    let id = IndexId::random();
    crate::repo::sealed::write(backend, sealing, &crate::repo::names::index_name(&id), &out)?;
    Ok(id)
}

/// Appends entry `e` of pack number `pack`; `reserved` fills the last field.
pub fn put_entry(out: &mut Vec<u8>, e: &PackEntry, pack: u32, reserved: u32) {
    out.put(&e.id.0);
    out.put_u32(pack);
    out.put_u32(e.encoded as u32);
    out.put_u64(e.offset);
    out.put_u32(e.stored_len);
    out.put_u32(e.plain_len);
    out.put_u32(e.crc);
    out.put_u32(reserved);
}

/// One entry's fields as stored.
pub struct RawEntry {
    pub pack: u32,
    pub reserved: u32,
    id: ChunkId,
    flags: u32,
    offset: u64,
    stored_len: u32,
    plain_len: u32,
    crc: u32,
}

impl RawEntry {
    /// Parses the `ENTRY_LEN` bytes of `raw`.
    pub fn parse(raw: &[u8]) -> RawEntry {
        let mut r = FieldReader::new(raw);
        RawEntry {
            id: ChunkId(r.bytes()),
            pack: r.u32(),
            flags: r.u32(),
            offset: r.u64(),
            stored_len: r.u32(),
            plain_len: r.u32(),
            crc: r.u32(),
            reserved: r.u32(),
        }
    }

    /// The pack table entry (without its base); None for an unknown encoding.
    pub fn entry(&self) -> Option<PackEntry> {
        Some(PackEntry {
            id: self.id,
            encoded: Encoded::from_flags(self.flags)?,
            offset: self.offset,
            stored_len: self.stored_len,
            plain_len: self.plain_len,
            crc: self.crc,
            base: None,
        })
    }
}

/// Writes one index file holding every entry of `table` (in its order);
/// returns its id. Sorted (version 3), the file is streamed block by
/// block; otherwise it is streamed in a plain repository and sealed whole
/// (its bytes held once) in an encrypted one.
pub fn write_index_from(
    backend: &dyn Backend,
    sealing: &Sealing,
    table: &Table,
    sorted: bool,
) -> Result<IndexId> {
    if table.packs().len() as u64 > MAX_PACKS {
        return Err(sorted_file::too_large(
            table.packs().len() as u64,
            table.entries(),
        ));
    }
    if sorted {
        let packs: Vec<PackId> = table.packs().iter().map(|(id, _)| *id).collect();
        let bases = table
            .iter()
            .filter(|(_, e)| e.encoded.is_delta())
            .map(|(_, e)| e.base.unwrap_or(ChunkId([0; 32])));
        let counts = (table.entries(), table.deltas());
        return sorted_file::write(backend, sealing, &packs, counts, table.iter(), bases);
    }
    let id = IndexId::random();
    let name = crate::repo::names::index_name(&id);
    let what = backend.describe(&name);
    if sealing.is_encrypted() {
        let mut whole = Vec::new();
        write_body(&mut whole, table).map_err(|e| Error::storage("write", &what, e))?;
        crate::repo::sealed::write(backend, sealing, &name, &whole)?;
        return Ok(id);
    }
    let mut file = backend.create(&name)?;
    write_body(&mut file, table).map_err(|e| Error::storage("write", &what, e))?;
    file.commit()?;
    Ok(id)
}

/// Writes the bytes of an index file holding `table`'s entries to `out`.
fn write_body(out: &mut dyn std::io::Write, table: &Table) -> std::io::Result<()> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut flush = |buf: &mut Vec<u8>, last: bool| -> std::io::Result<()> {
        if buf.len() >= 1 << 20 || last {
            crc.update(buf);
            out.write_all(buf)?;
            buf.clear();
        }
        Ok(())
    };
    buf.put(MAGIC);
    buf.put_u32(if table.deltas() == 0 {
        VERSION
    } else {
        DELTA_VERSION
    });
    buf.put_u32(table.packs().len() as u32);
    buf.put_u64(table.entries());
    for (pack, _) in table.packs() {
        buf.put(pack.as_bytes());
        flush(&mut buf, false)?;
    }
    let mut written = 0u64;
    for (pack, e) in table.iter() {
        put_entry(&mut buf, &e, pack, 0);
        written += 1;
        flush(&mut buf, false)?;
    }
    for (_, e) in table.iter().filter(|(_, e)| e.encoded.is_delta()) {
        let base = e
            .base
            .ok_or_else(|| std::io::Error::other(format!("delta {} has no base", e.id)))?;
        buf.put(&base.0);
        flush(&mut buf, false)?;
    }
    flush(&mut buf, true)?;
    if written != table.entries() {
        return Err(std::io::Error::other(
            "an index table entry could not be read back",
        ));
    }
    let crc = crc.finalize();
    let mut tail = Vec::with_capacity(8);
    tail.put_u32(crc);
    tail.put(END_MAGIC);
    out.write_all(&tail)
}

/// Reads index file `name` of `backend`, any version, handing each entry
/// to `f` with its pack. Nothing is held whole but a sealed file of
/// version 1 or 2 (sealed as one blob); without the key, only the
/// crc32s of a sealed file are checked and `f` is not called.
pub fn read_entries(
    backend: &dyn Backend,
    opening: Opening<'_>,
    name: &str,
    f: &mut dyn FnMut(&PackId, PackEntry) -> Result<()>,
) -> Result<()> {
    let file = backend.open(name)?;
    let what = backend.describe(name);
    let mut head = [0u8; 12];
    let short = file.len() < head.len() as u64;
    if !short {
        file.read_exact_at(&mut head, 0)?;
    }
    if !short && sorted_file::is_sorted_file(&head) {
        return sorted_file::read(&*file, opening, name, &what, f);
    }
    match opening {
        Opening::With(sealing) if sealing.is_encrypted() => {
            let bytes = crate::repo::backend::read_all(&*file, &what)?;
            let plain = sealed::decode(sealing, name, bytes, &format!("index {what}"))?;
            read_unsorted(&InMemory(&plain), &what, f)
        }
        Opening::WithoutKey { encrypted: true } => {
            let bytes = crate::repo::backend::read_all(&*file, &what)?;
            sealed::check_without_key(&bytes, &format!("index {what}"))
        }
        _ if !short && sealed::is_sealed(&head) => {
            Err(sealed::mismatch(&format!("index {what}"), true, false))
        }
        _ => read_unsorted(&*file, &what, f),
    }
}

/// Whether index file `name` is sorted (version 3), by its header (and
/// the header's crc32: a flipped version byte does not make one).
pub fn is_sorted_file(backend: &dyn Backend, name: &str) -> Result<bool> {
    let file = backend.open(name)?;
    let mut head = [0u8; sorted_file::FIXED_LEN as usize];
    if file.len() < head.len() as u64 {
        return Ok(false);
    }
    file.read_exact_at(&mut head, 0)?;
    Ok(sorted_file::is_sorted_file(&head) && sorted_file::header_holds(&head))
}

/// Bytes in memory, read as a stored file.
struct InMemory<'a>(&'a [u8]);

impl StoredFile for InMemory<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.0.get(start..).and_then(|rest| rest.get(..buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(Error::corrupt("read past the end of an index file")),
        }
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// Reads a version 1 or 2 file a span at a time: once for its crc32,
/// then for its entries (each delta's base read from where it lies).
fn read_unsorted(
    file: &dyn StoredFile,
    what: &str,
    f: &mut dyn FnMut(&PackId, PackEntry) -> Result<()>,
) -> Result<()> {
    let damaged = |why: &str| Error::corrupt(format!("index {what} is damaged: {why}"));
    let len = file.len();
    if len < (HEADER_LEN + 8) as u64 {
        return Err(damaged("too short (truncated)"));
    }
    let body_end = len - 8;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)?;
    let mut r = FieldReader::new(&header);
    if &r.bytes::<8>() != MAGIC {
        return Err(damaged("bad magic"));
    }
    let version = r.u32();
    let mut buf = vec![0u8; SPAN];
    if version != VERSION && version != DELTA_VERSION {
        // A version byte that was flipped is damage, not a newer format.
        if !crc_holds(file, &mut buf)? {
            return Err(damaged("checksum mismatch"));
        }
        return Err(Error::unsupported(format!(
            "index {what} has version {version}, this platter reads {VERSION}, {DELTA_VERSION} \
             and {}",
            sorted_file::VERSION
        )));
    }
    let pack_count = u64::from(r.u32());
    let count = r.u64();
    if pack_count > MAX_PACKS {
        return Err(damaged(
            "it names more packs than an index file holds (its header was forged or damaged)",
        ));
    }
    // The bases follow the entries, one per delta entry.
    let entries_at = HEADER_LEN as u64 + pack_count * 32;
    let bases_at = count
        .checked_mul(ENTRY_LEN as u64)
        .and_then(|n| n.checked_add(entries_at))
        .filter(|end| *end <= body_end)
        .ok_or_else(|| damaged("its length does not match its header (truncated?)"))?;
    if !(body_end - bases_at).is_multiple_of(32) {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    let base_count = (body_end - bases_at) / 32;
    if !crc_holds(file, &mut buf)? {
        return Err(damaged("checksum mismatch"));
    }
    let mut packs: Vec<PackId> = Vec::with_capacity(pack_count as usize);
    for at in (0..pack_count).step_by(SPAN / 32) {
        let n = (pack_count - at).min((SPAN / 32) as u64) as usize;
        file.read_exact_at(&mut buf[..n * 32], HEADER_LEN as u64 + at * 32)?;
        packs.extend(
            (buf[..n * 32].chunks_exact(32))
                .map(|c| PackId::from_bytes(c.try_into().unwrap_or([0; 32]))),
        );
    }
    let mut bases = Window::default();
    let mut deltas = 0u64;
    let per_span = (SPAN / ENTRY_LEN) as u64;
    let mut i = 0u64;
    while i < count {
        let n = (count - i).min(per_span) as usize;
        file.read_exact_at(&mut buf[..n * ENTRY_LEN], entries_at + i * ENTRY_LEN as u64)?;
        for raw in buf[..n * ENTRY_LEN].chunks_exact(ENTRY_LEN) {
            let raw = RawEntry::parse(raw);
            let (Some(pack), Some(mut e)) = (packs.get(raw.pack as usize), raw.entry()) else {
                return Err(damaged(&format!(
                    "entry {i} names an unknown pack or encoding"
                )));
            };
            if e.encoded.is_delta() {
                if version == VERSION {
                    return Err(damaged(&format!(
                        "entry {i} is a delta, which a version {VERSION} index cannot hold"
                    )));
                }
                if deltas >= base_count {
                    return Err(damaged("its length does not match its header (truncated?)"));
                }
                e.base = Some(bases.get(file, bases_at, deltas)?);
                deltas += 1;
            }
            f(pack, e)?;
            i += 1;
        }
    }
    if deltas != base_count {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    Ok(())
}

/// Whether a version 1 or 2 file (at least 8 bytes) ends with the crc32
/// of every byte before it and its end magic; `buf` is scratch.
fn crc_holds(file: &dyn StoredFile, buf: &mut [u8]) -> Result<bool> {
    let body_end = file.len() - 8;
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0u64;
    while at < body_end {
        let n = (body_end - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    let mut tail = [0u8; 8];
    file.read_exact_at(&mut tail, body_end)?;
    Ok(&tail[4..] == END_MAGIC && tail[..4] == crc.finalize().to_le_bytes())
}

/// The span of base ids last read from a version 2 file.
#[derive(Default)]
struct Window {
    first: u64,
    ids: Vec<u8>,
}

impl Window {
    /// Base number `n` of the bases at `at` (there are at least n + 1).
    fn get(&mut self, file: &dyn StoredFile, at: u64, n: u64) -> Result<ChunkId> {
        let held = (self.ids.len() / 32) as u64;
        if n < self.first || n >= self.first + held {
            let bases = (file.len() - 8 - at) / 32;
            let take = (bases - n).min((SPAN / 32) as u64) as usize;
            self.ids.resize(take * 32, 0);
            file.read_exact_at(&mut self.ids, at + n * 32)?;
            self.first = n;
        }
        let start = ((n - self.first) * 32) as usize;
        let mut id = [0u8; 32];
        id.copy_from_slice(&self.ids[start..start + 32]);
        Ok(ChunkId(id))
    }
}

/// Entries gathered into (pack, entries) groups, packs in the order they
/// first come.
pub fn groups_of(
    entries: impl IntoIterator<Item = (PackId, PackEntry)>,
) -> Vec<(PackId, Vec<PackEntry>)> {
    let mut groups: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut at: std::collections::HashMap<PackId, usize> = Default::default();
    for (pack, e) in entries {
        let i = *at.entry(pack).or_insert_with(|| {
            groups.push((pack, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(e);
    }
    groups
}

/// Reads a whole index file into (pack, entries) groups, in the order
/// of its entries.
#[cfg(test)]
pub fn read_groups(
    backend: &dyn Backend,
    sealing: &Sealing,
    name: &str,
) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let mut all = Vec::new();
    read_entries(backend, Opening::With(sealing), name, &mut |pack, e| {
        all.push((*pack, e));
        Ok(())
    })?;
    Ok(groups_of(all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MasterKey;
    use crate::repo::backend::LocalBackend;
    use crate::repo::index::Index;
    use crate::repo::index::tests::{delta, entry};

    /// Groups in one order, whatever order a file keeps them in.
    fn canonical(mut groups: Vec<(PackId, Vec<PackEntry>)>) -> Vec<(PackId, Vec<PackEntry>)> {
        groups.sort_by_key(|(id, _)| *id);
        for (_, entries) in &mut groups {
            entries.sort_by_key(|e| e.offset);
        }
        groups
    }

    fn sealings() -> Vec<Sealing> {
        vec![
            Sealing::plain(),
            Sealing::encrypted(&MasterKey::generate().unwrap()),
        ]
    }

    /// Every cut and every flipped byte of the file `name` is refused.
    fn any_damage_is_refused(
        dir: &std::path::Path,
        backend: &LocalBackend,
        s: &Sealing,
        name: &str,
    ) {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                read_groups(backend, s, name).is_err(),
                "cut at {cut} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                read_groups(backend, s, name).is_err(),
                "flip at {i} accepted"
            );
            let without = Opening::WithoutKey {
                encrypted: s.is_encrypted(),
            };
            assert!(
                read_entries(backend, without, name, &mut |_, _| Ok(())).is_err(),
                "flip at {i} accepted without the key"
            );
        }
        std::fs::write(&path, &bytes).unwrap();
    }

    #[test]
    fn index_files_of_every_version_round_trip_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let with_deltas = vec![
            (
                PackId::from_bytes([1; 32]),
                vec![entry(b"a", 16), delta(b"b", b"a", 26)],
            ),
            (PackId::from_bytes([2; 32]), vec![delta(b"c", b"a", 16)]),
        ];
        let without = vec![
            (
                PackId::from_bytes([1; 32]),
                vec![entry(b"a", 16), entry(b"b", 26)],
            ),
            (PackId::from_bytes([2; 32]), vec![entry(b"c", 16)]),
        ];
        for s in sealings() {
            for (packs, version) in [(&without, 1), (&with_deltas, 2), (&with_deltas, 3)] {
                let id = write_index(&backend, &s, packs, version == 3).unwrap();
                let name = crate::repo::names::index_name(&id);
                let stored = std::fs::read(dir.path().join(&name)).unwrap();
                if !s.is_encrypted() {
                    let v = u32::from_le_bytes(stored[8..12].try_into().unwrap());
                    assert_eq!(v, version);
                }
                let read = read_groups(&backend, &s, &name).unwrap();
                assert_eq!(
                    canonical(read),
                    canonical(packs.clone()),
                    "version {version}"
                );
                let without_key = Opening::WithoutKey {
                    encrypted: s.is_encrypted(),
                };
                read_entries(&backend, without_key, &name, &mut |_, _| Ok(())).unwrap();
                any_damage_is_refused(dir.path(), &backend, &s, &name);
            }
        }
        // A delta without its base is never written.
        let mut orphan = with_deltas.clone();
        orphan[1].1[0].base = None;
        assert!(write_index(&backend, &Sealing::plain(), &orphan, false).is_err());
        assert!(write_index(&backend, &Sealing::plain(), &orphan, true).is_err());
        let mut index = Index::default();
        for (pack, entries) in &without {
            index.add_pack(*pack, entries);
        }
        let loc = index.get(&ChunkId::of(b"c")).unwrap();
        assert_eq!(index.pack_id(loc.pack), &PackId::from_bytes([2; 32]));
        assert_eq!(index.iter().count(), 3);
    }

    #[test]
    fn sorted_files_span_blocks_and_their_sealed_blocks_cannot_move() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        // Two full blocks and a short one; every third entry a delta.
        let entries: Vec<PackEntry> = (0..9000u64)
            .map(|i| match i % 3 {
                0 => delta(&i.to_le_bytes(), b"base", i * 10),
                _ => entry(&i.to_le_bytes(), i * 10),
            })
            .collect();
        let packs = vec![
            (PackId::from_bytes([1; 32]), entries[..5000].to_vec()),
            (PackId::from_bytes([2; 32]), entries[5000..].to_vec()),
        ];
        for s in sealings() {
            let id = write_index(&backend, &s, &packs, true).unwrap();
            let name = crate::repo::names::index_name(&id);
            let mut ids = Vec::new();
            read_entries(&backend, Opening::With(&s), &name, &mut |_, e| {
                ids.push(e.id);
                Ok(())
            })
            .unwrap();
            assert!(ids.is_sorted(), "entries come in chunk id order");
            let read = read_groups(&backend, &s, &name).unwrap();
            assert_eq!(canonical(read), canonical(packs.clone()));
            if !s.is_encrypted() {
                continue;
            }
            // Blocks 0 and 1 are the same length: swapped, each is
            // refused for the place it now sits in.
            let path = dir.path().join(&name);
            let bytes = std::fs::read(&path).unwrap();
            let block = 4096 * ENTRY_LEN + crate::codec::seal::SEAL_OVERHEAD + 4;
            let head = 44 + 24 + 2 * 32 + crate::codec::seal::SEAL_OVERHEAD + 4;
            let mut swapped = bytes.clone();
            swapped[head..head + block].copy_from_slice(&bytes[head + block..head + 2 * block]);
            swapped[head + block..head + 2 * block].copy_from_slice(&bytes[head..head + block]);
            std::fs::write(&path, &swapped).unwrap();
            let refused = read_groups(&backend, &s, &name).unwrap_err();
            assert!(
                refused.message().contains("part e0"),
                "{}",
                refused.message()
            );
            // Without the key the crc32s hold: the swap is not storage damage.
            let without = Opening::WithoutKey { encrypted: true };
            read_entries(&backend, without, &name, &mut |_, _| Ok(())).unwrap();
            // A file of another repository's key is refused too.
            std::fs::write(&path, &bytes).unwrap();
            let other = Sealing::encrypted(&MasterKey::generate().unwrap());
            assert!(read_groups(&backend, &other, &name).is_err());
            // And in a plain repository, as sealed where nothing is.
            assert!(read_groups(&backend, &Sealing::plain(), &name).is_err());
        }
    }

    // Forged counts that agree with a (sparse) file's length are refused
    // before anything of their size is allocated or read.
    #[test]
    fn forged_counts_are_refused_before_they_cost_memory() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let sparse = |name: &str, head: &[u8], len: u64, end: &[u8]| {
            let path = dir.path().join("index").join(name);
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(len).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(head, 0).unwrap();
            f.write_all_at(end, len - end.len() as u64).unwrap();
            format!("index/{name}")
        };
        let v3 = |packs: u32, per: u32, n: u64| {
            let mut h = Vec::new();
            h.put(MAGIC);
            h.put_u32(3);
            h.put_u32(0);
            h.put_u32(packs);
            h.put_u32(per);
            h.put_u64(n);
            h.put_u64(0);
            let crc = crc32(&h);
            h.put_u32(crc);
            h
        };
        let blocks = |n: u64, per: u64| n.div_ceil(per);
        // 2^32 - 1 packs: 128 GiB of pack ids.
        let p = u64::from(u32::MAX);
        let len = 44 + (24 + 32 * p + 4) + (32 * blocks(0, 4096) + 4) + 4;
        let name = sparse("a", &v3(u32::MAX, 4096, 0), len, b"IEND");
        // 2^31 entries in blocks of one: 64 GiB of keys.
        let n = 1u64 << 31;
        let len2 = 44 + 28 + n * (64 + 4) + (32 * n + 4) + 4;
        let name2 = sparse("b", &v3(0, 1, n), len2, b"IEND");
        // A version 1 file naming 2^26 packs and no entry (2 GiB).
        let mut h = Vec::new();
        h.put(MAGIC);
        h.put_u32(1);
        h.put_u32(1 << 26);
        h.put_u64(0);
        let name3 = sparse("c", &h, 24 + 32 * (1 << 26) + 8, b"\0\0\0\0IEND");
        for name in [name, name2, name3] {
            let started = std::time::Instant::now();
            let e = read_groups(&backend, &Sealing::plain(), &name).unwrap_err();
            assert!(e.message().contains("damaged"), "{name}: {}", e.message());
            assert!(started.elapsed().as_secs() < 5, "{name} was read");
        }
    }

    // What a reader would refuse is never written: the writer fails first
    // and leaves no file.
    #[test]
    fn an_index_file_no_reader_would_accept_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let packs = vec![PackId::from_bytes([1; 32]); MAX_PACKS as usize + 1];
        let none = std::iter::empty();
        let e = sorted_file::write(
            &backend,
            &Sealing::plain(),
            &packs,
            (0, 0),
            none,
            std::iter::empty(),
        )
        .unwrap_err();
        assert!(
            e.message().contains("more than a reader holds"),
            "{}",
            e.message()
        );
        assert!(backend.list("index").unwrap().is_empty());
    }
}
