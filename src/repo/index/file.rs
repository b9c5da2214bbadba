//! Index files: which pack holds each chunk, and where.
//!
//! Each backup writes one index file for the packs it wrote, after those
//! packs are durable. Everything here can be rebuilt from the packs' own
//! tables. In an encrypted repository the whole file below is sealed (see
//! `sealed`).
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
use crate::repo::backend::Backend;
use crate::repo::fields::{FieldReader, FieldWriter};
use crate::repo::index::table::Table;
use crate::repo::pack::PackEntry;
use crate::repo::{IndexId, PackId};

const MAGIC: &[u8; 8] = b"PLTRIDX\0";
const END_MAGIC: &[u8; 4] = b"IEND";
const VERSION: u32 = 1;
/// Index files that name delta bases.
const DELTA_VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
const ENTRY_LEN: usize = 64;

/// Writes one index file covering `packs`; returns its id.
pub fn write_index(
    backend: &dyn Backend,
    sealing: &Sealing,
    packs: &[(PackId, Vec<PackEntry>)],
) -> Result<IndexId> {
    let count: usize = packs.iter().map(|(_, e)| e.len()).sum();
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
            put_entry(&mut out, e, number as u32);
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

fn put_entry(out: &mut Vec<u8>, e: &PackEntry, pack: u32) {
    out.put(&e.id.0);
    out.put_u32(pack);
    out.put_u32(e.encoded as u32);
    out.put_u64(e.offset);
    out.put_u32(e.stored_len);
    out.put_u32(e.plain_len);
    out.put_u32(e.crc);
    out.put_u32(0);
}

/// Writes one index file holding every entry of `table` (in its order);
/// returns its id. In a plain repository the file is streamed to the
/// store, so memory does not grow with it; a sealed one is sealed whole
/// (its bytes are held once).
pub fn write_index_from(
    backend: &dyn Backend,
    sealing: &Sealing,
    table: &Table,
) -> Result<IndexId> {
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
        put_entry(&mut buf, &e, pack);
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

/// Parses one index file into (pack, entries) groups.
pub fn read_index(bytes: &[u8], what: &str) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let damaged = |why: &str| Error::corrupt(format!("index {what} is damaged: {why}"));
    if bytes.len() < HEADER_LEN + 8 {
        return Err(damaged("too short (truncated)"));
    }
    let mut r = FieldReader::new(bytes);
    if &r.bytes::<8>() != MAGIC {
        return Err(damaged("bad magic"));
    }
    let version = r.u32();
    if version != VERSION && version != DELTA_VERSION {
        return Err(Error::unsupported(format!(
            "index {what} has version {version}, this platter reads {VERSION} and {DELTA_VERSION}"
        )));
    }
    let pack_count = r.u32() as usize;
    let count = r.u64();
    let entries_end = (HEADER_LEN as u64)
        .checked_add(pack_count as u64 * 32)
        .and_then(|n| n.checked_add(count.checked_mul(ENTRY_LEN as u64)?));
    // The bases follow the entries: their number is that of the delta
    // entries, so the length is checked once the entries are read.
    if entries_end.is_none_or(|end| end.saturating_add(8) > bytes.len() as u64) {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    let body_end = bytes.len() - 8;
    let mut tail = FieldReader::new(&bytes[body_end..]);
    let crc = tail.u32();
    if &tail.bytes::<4>() != END_MAGIC || crc32(&bytes[..body_end]) != crc {
        return Err(damaged("checksum mismatch"));
    }
    let mut groups: Vec<(PackId, Vec<PackEntry>)> = (0..pack_count)
        .map(|_| (PackId::from_bytes(r.bytes::<32>()), Vec::new()))
        .collect();
    for i in 0..count {
        let id = ChunkId(r.bytes());
        let number = r.u32() as usize;
        let encoded = Encoded::from_flags(r.u32());
        let entry_offset = r.u64();
        let stored_len = r.u32();
        let plain_len = r.u32();
        let crc = r.u32();
        r.skip(4);
        let (Some(group), Some(encoded)) = (groups.get_mut(number), encoded) else {
            return Err(damaged(&format!(
                "entry {i} names an unknown pack or encoding"
            )));
        };
        if encoded.is_delta() && version == VERSION {
            return Err(damaged(&format!(
                "entry {i} is a delta, which a version {VERSION} index cannot hold"
            )));
        }
        group.1.push(PackEntry {
            id,
            encoded,
            offset: entry_offset,
            stored_len,
            plain_len,
            crc,
            base: None,
        });
    }
    let deltas = groups
        .iter()
        .flat_map(|(_, entries)| entries)
        .filter(|e| e.encoded.is_delta())
        .count();
    if entries_end.and_then(|end| end.checked_add(deltas as u64 * 32 + 8))
        != Some(bytes.len() as u64)
    {
        return Err(damaged("its length does not match its header (truncated?)"));
    }
    for e in groups
        .iter_mut()
        .flat_map(|(_, entries)| entries)
        .filter(|e| e.encoded.is_delta())
    {
        e.base = Some(ChunkId(r.bytes()));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::LocalBackend;
    use crate::repo::index::Index;

    fn entry(name: &[u8], offset: u64) -> PackEntry {
        PackEntry {
            id: ChunkId::of(name),
            encoded: Encoded::Lz4,
            offset,
            stored_len: 10,
            plain_len: 20,
            crc: 7,
            base: None,
        }
    }

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let packs = vec![
            (
                PackId::from_bytes([1; 32]),
                vec![entry(b"a", 16), entry(b"b", 26)],
            ),
            (PackId::from_bytes([2; 32]), vec![entry(b"c", 16)]),
        ];
        let id = write_index(&backend, &Sealing::plain(), &packs).unwrap();
        let bytes = backend
            .read_whole(&crate::repo::names::index_name(&id))
            .unwrap();
        assert_eq!(read_index(&bytes, "i").unwrap(), packs);
        for cut in 0..bytes.len() {
            assert!(
                read_index(&bytes[..cut], "i").is_err(),
                "cut at {cut} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(read_index(&bad, "i").is_err(), "flip at {i} accepted");
        }
        let mut index = Index::default();
        for (pack, entries) in &packs {
            index.add_pack(*pack, entries);
        }
        let loc = index.get(&ChunkId::of(b"c")).unwrap();
        assert_eq!(index.pack_id(loc.pack), &PackId::from_bytes([2; 32]));
        assert_eq!(index.iter().count(), 3);
    }

    fn delta(name: &[u8], base: &[u8], offset: u64) -> PackEntry {
        PackEntry {
            encoded: Encoded::DeltaRaw,
            base: Some(ChunkId::of(base)),
            ..entry(name, offset)
        }
    }

    #[test]
    fn index_files_with_deltas_name_their_bases() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        let packs = vec![
            (
                PackId::from_bytes([1; 32]),
                vec![entry(b"a", 16), delta(b"b", b"a", 26)],
            ),
            (PackId::from_bytes([2; 32]), vec![delta(b"c", b"a", 16)]),
        ];
        let id = write_index(&backend, &Sealing::plain(), &packs).unwrap();
        let bytes = backend
            .read_whole(&crate::repo::names::index_name(&id))
            .unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
        assert_eq!(read_index(&bytes, "i").unwrap(), packs);
        for cut in 0..bytes.len() {
            assert!(read_index(&bytes[..cut], "i").is_err(), "cut at {cut}");
        }
        // A delta without its base is never written.
        let mut orphan = packs.clone();
        orphan[1].1[0].base = None;
        assert!(write_index(&backend, &Sealing::plain(), &orphan).is_err());
        // Without deltas: version 1, readable by a platter before them.
        let plain = vec![(PackId::from_bytes([1; 32]), vec![entry(b"a", 16)])];
        let id = write_index(&backend, &Sealing::plain(), &plain).unwrap();
        let bytes = backend
            .read_whole(&crate::repo::names::index_name(&id))
            .unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    }
}
