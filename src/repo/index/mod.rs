//! The index: which pack holds each chunk, and where.
//!
//! The repository holds index files (`file`; version 3 in `sorted_file`);
//! a command does not load them. It opens the local cache (`cache`), which
//! keeps them merged into sorted tables (`table`) on this host, checked
//! against the repository's list of index files at every open, and looks
//! chunks up in those tables by small reads of their pages: memory does
//! not grow with the repository. Chunks a command adds itself
//! (`add_pack`) are held in memory on top.

pub mod cache;
mod file;
pub mod idset;
mod pages;
mod sorted_file;
pub mod table;
mod writer;

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

pub use file::{is_sorted_file, read_entries, write_index};
pub use sorted_file::{Opening, is_sealed};
use table::Table;
pub use writer::IndexWriter;

use crate::codec::{ChunkId, Encoded};
use crate::repo::PackId;
use crate::repo::pack::PackEntry;

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub encoded: Encoded,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    pub crc: u32,
}

impl Location {
    /// Where pack table entry `e` places its chunk, in pack number `pack`.
    pub fn of(e: &PackEntry, pack: u32) -> Location {
        Location {
            pack,
            encoded: e.encoded,
            offset: e.offset,
            stored_len: e.stored_len,
            plain_len: e.plain_len,
            crc: e.crc,
        }
    }

    /// The pack table entry this location repeats.
    pub fn entry(&self, id: ChunkId) -> PackEntry {
        PackEntry {
            id,
            encoded: self.encoded,
            offset: self.offset,
            stored_len: self.stored_len,
            plain_len: self.plain_len,
            crc: self.crc,
            base: None,
        }
    }
}

/// One stored copy of a chunk: where, and a delta's base.
type Copy = (Location, Option<ChunkId>);

/// All known chunks. Packs are numbered in `packs` so a location is small.
///
/// A chunk may be stored more than once (concurrent backups storing the
/// same chunk, a chunk stored again after its pack was lost). The copy
/// used is a whole one over a delta (a chunk some delta names as its base
/// must be found whole), then one in a pack that exists (when the packs
/// were looked at), then the first.
#[derive(Default)]
pub struct Index {
    tables: Vec<Arc<Table>>,
    /// Per table: its pack numbers in `packs`.
    remaps: Vec<Vec<u32>>,
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    /// Copies this process added: the first of each chunk, or a whole one
    /// over a delta.
    added: HashMap<ChunkId, Copy>,
    /// After `keep_packs`: whether each pack (by number) exists; chunks of
    /// the others, and deltas whose base that leaves without a whole copy,
    /// are gone. Packs numbered later were added by this process.
    present: Option<Vec<bool>>,
    /// After `prefer_packs`: packs whose copies come first.
    preferred: Option<Vec<bool>>,
}

impl Index {
    /// The index the cache's `tables` hold.
    pub fn from_tables(tables: Vec<Arc<Table>>) -> Index {
        let mut index = Index::default();
        for table in &tables {
            let remap = (table.packs().iter())
                .map(|(id, _)| index.number(*id))
                .collect();
            index.remaps.push(remap);
        }
        index.tables = tables;
        index
    }

    fn number(&mut self, pack: PackId) -> u32 {
        *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        })
    }

    /// How many chunks this process added (held in memory).
    pub fn added_count(&self) -> usize {
        self.added.len()
    }

    /// Whether some chunk may have more than one copy (then it is worth
    /// looking at which packs exist: `prefer_packs`).
    pub fn may_have_doubles(&self) -> bool {
        self.tables.len() > 1 || self.tables.iter().any(|t| t.has_doubles())
    }

    /// Every copy of chunk `id`, in order.
    fn copies(&self, id: &ChunkId, mut each: impl FnMut(Copy)) {
        for (table, remap) in self.tables.iter().zip(&self.remaps) {
            for (pack, e) in table.find(id) {
                each((Location::of(&e, remap[pack as usize]), e.base));
            }
        }
        if let Some(copy) = self.added.get(id) {
            each(*copy);
        }
    }

    fn exists(&self, pack: u32) -> bool {
        (self.present.as_ref()).is_none_or(|p| p.get(pack as usize).copied().unwrap_or(true))
    }

    /// How good a copy is (higher is better), or `None` for one that is
    /// gone or cannot be read.
    fn rank(&self, (loc, base): &Copy) -> Option<u8> {
        if !self.exists(loc.pack) {
            return None;
        }
        let whole = !loc.encoded.is_delta();
        if !whole {
            let base = (*base)?;
            if self.present.is_some() && !self.whole_exists(&base) {
                return None;
            }
        }
        let preferred = (self.preferred.as_ref())
            .is_some_and(|p| p.get(loc.pack as usize).copied().unwrap_or(true));
        Some(u8::from(whole) * 2 + u8::from(preferred))
    }

    fn whole_exists(&self, id: &ChunkId) -> bool {
        let mut found = false;
        self.copies(id, |(loc, _)| {
            found |= !loc.encoded.is_delta() && self.exists(loc.pack);
        });
        found
    }

    /// The copy of `id` used, of the `copies` given.
    fn choose(&self, copies: impl IntoIterator<Item = Copy>) -> Option<Copy> {
        let mut best: Option<(u8, Copy)> = None;
        for copy in copies {
            if let Some(rank) = self.rank(&copy)
                && best.is_none_or(|(r, _)| rank > r)
            {
                best = Some((rank, copy));
            }
        }
        best.map(|(_, c)| c)
    }

    fn find(&self, id: &ChunkId) -> Option<Copy> {
        let mut all = Vec::new();
        self.copies(id, |c| all.push(c));
        self.choose(all)
    }

    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        self.find(id).map(|(loc, _)| loc)
    }

    /// The base chunk of delta `id` (`None` for a whole chunk).
    pub fn base_of(&self, id: &ChunkId) -> Option<ChunkId> {
        self.find(id).and_then(|(_, base)| base)
    }

    /// How many delta entries the index holds (copies included).
    pub fn delta_count(&self) -> u64 {
        let added = self
            .added
            .values()
            .filter(|(loc, _)| loc.encoded.is_delta());
        self.tables.iter().map(|t| t.deltas()).sum::<u64>() + added.count() as u64
    }

    /// Whether chunk `id` is stored whole (not as a delta): only such a
    /// chunk may be a delta's base, so deltas never chain.
    pub fn has_whole(&self, id: &ChunkId) -> bool {
        self.get(id).is_some_and(|loc| !loc.encoded.is_delta())
    }

    /// The index entry of chunk `id` as an index file holds it (with its
    /// base, for a delta).
    pub fn entry(&self, id: &ChunkId) -> Option<PackEntry> {
        let (loc, base) = self.find(id)?;
        Some(PackEntry {
            base,
            ..loc.entry(*id)
        })
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.find(id).is_some()
    }

    pub fn pack_id(&self, number: u32) -> &PackId {
        &self.packs[number as usize]
    }

    /// Every pack an index entry names.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Every chunk with the copy used, in chunk id order, read from the
    /// tables as it goes (memory does not grow with the index).
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        let mut sources: Vec<Box<dyn Iterator<Item = (ChunkId, Copy)> + '_>> = Vec::new();
        for (table, remap) in self.tables.iter().zip(&self.remaps) {
            sources.push(Box::new(table.iter().map(move |(pack, e)| {
                (e.id, (Location::of(&e, remap[pack as usize]), e.base))
            })));
        }
        let mut added: Vec<(ChunkId, Copy)> = self.added.iter().map(|(k, v)| (*k, *v)).collect();
        added.sort_by_key(|a| a.0);
        sources.push(Box::new(added.into_iter()));
        Walk::new(self, sources)
    }

    /// Forgets the chunks of packs not in `present`, and the deltas whose
    /// base that leaves without a whole copy (they cannot be rebuilt: a
    /// backup must store such a chunk again, not dedup against it);
    /// returns how many entries were in the packs that are gone.
    pub fn keep_packs(&mut self, present: &HashSet<PackId>) -> usize {
        let mask: Vec<bool> = self.packs.iter().map(|p| present.contains(p)).collect();
        let mut lost = 0;
        for (table, remap) in self.tables.iter().zip(&self.remaps) {
            for ((_, count), number) in table.packs().iter().zip(remap) {
                if !mask[*number as usize] {
                    lost += *count as usize;
                }
            }
        }
        lost += (self.added.values())
            .filter(|(loc, _)| !mask[loc.pack as usize])
            .count();
        self.present = Some(mask);
        lost
    }

    /// Copies in packs of `present` come before others of the same chunk.
    pub fn prefer_packs(&mut self, present: &HashSet<PackId>) {
        self.preferred = Some(self.packs.iter().map(|p| present.contains(p)).collect());
    }

    /// Adds the chunks of `pack`; returns how many of them the index
    /// already knew (the copy already there stays first).
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) -> usize {
        let number = self.number(pack);
        if let Some(mask) = &mut self.present {
            mask.resize(self.packs.len(), true);
        }
        if let Some(mask) = &mut self.preferred {
            mask.resize(self.packs.len(), true);
        }
        let mut doubles = 0;
        for e in entries {
            let loc = Location::of(e, number);
            // A delta whose base is unknown cannot be read: as if absent.
            let base = match (e.encoded.is_delta(), e.base) {
                (false, _) => None,
                (true, Some(base)) => Some(base),
                (true, None) => continue,
            };
            let mut known = false;
            self.copies(&e.id, |_| known = true);
            doubles += usize::from(known);
            match self.added.get_mut(&e.id) {
                None => {
                    self.added.insert(e.id, (loc, base));
                }
                Some(copy) => {
                    if copy.0.encoded.is_delta() && base.is_none() {
                        *copy = (loc, None);
                    }
                }
            }
        }
        doubles
    }
}

/// The walk of `Index::iter`: the tables' and the added copies merged by
/// chunk id, one chunk at a time.
struct Walk<'a> {
    index: &'a Index,
    sources: Vec<Box<dyn Iterator<Item = (ChunkId, Copy)> + 'a>>,
    heads: Vec<Option<(ChunkId, Copy)>>,
    heap: BinaryHeap<std::cmp::Reverse<(ChunkId, usize)>>,
}

impl<'a> Walk<'a> {
    fn new(
        index: &'a Index,
        mut sources: Vec<Box<dyn Iterator<Item = (ChunkId, Copy)> + 'a>>,
    ) -> Walk<'a> {
        let mut heap = BinaryHeap::new();
        let heads: Vec<_> = sources
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let head = s.next();
                if let Some((id, _)) = &head {
                    heap.push(std::cmp::Reverse((*id, i)));
                }
                head
            })
            .collect();
        Walk {
            index,
            sources,
            heads,
            heap,
        }
    }

    fn advance(&mut self, i: usize) -> Option<Copy> {
        let (_, copy) = self.heads[i].take()?;
        self.heads[i] = self.sources[i].next();
        if let Some((id, _)) = &self.heads[i] {
            self.heap.push(std::cmp::Reverse((*id, i)));
        }
        Some(copy)
    }
}

impl Iterator for Walk<'_> {
    type Item = (ChunkId, Location);

    fn next(&mut self) -> Option<(ChunkId, Location)> {
        loop {
            let std::cmp::Reverse((id, first)) = self.heap.pop()?;
            let mut copies: Vec<Copy> = self.advance(first).into_iter().collect();
            while let Some(std::cmp::Reverse((next, i))) = self.heap.peek().copied()
                && next == id
            {
                self.heap.pop();
                // Keep the order of the sources among equal ids.
                copies.extend(self.advance(i));
            }
            if let Some((loc, _)) = self.index.choose(copies) {
                return Some((id, loc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole chunk's entry (also for the tests of `file`).
    pub(super) fn entry(name: &[u8], offset: u64) -> PackEntry {
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

    /// A delta's entry over the chunk `base`.
    pub(super) fn delta(name: &[u8], base: &[u8], offset: u64) -> PackEntry {
        PackEntry {
            encoded: Encoded::DeltaRaw,
            base: Some(ChunkId::of(base)),
            ..entry(name, offset)
        }
    }

    #[test]
    fn a_whole_copy_wins_over_a_delta_and_orphan_deltas_are_dropped() {
        let (p1, p2) = (PackId::from_bytes([1; 32]), PackId::from_bytes([2; 32]));
        let mut index = Index::default();
        // Chunk b first seen as a delta over a, then whole elsewhere.
        index.add_pack(p1, &[entry(b"a", 16), delta(b"b", b"a", 26)]);
        assert_eq!(index.base_of(&ChunkId::of(b"b")), Some(ChunkId::of(b"a")));
        assert!(!index.has_whole(&ChunkId::of(b"b")));
        assert_eq!(
            index.add_pack(p2, &[entry(b"b", 16), delta(b"a", b"b", 26)]),
            2
        );
        assert!(index.has_whole(&ChunkId::of(b"b")));
        assert_eq!(index.base_of(&ChunkId::of(b"b")), None);
        // ... and a delta copy never replaces a whole one: no cycle.
        assert!(index.has_whole(&ChunkId::of(b"a")));
        assert_eq!(index.entry(&ChunkId::of(b"a")).unwrap().base, None);
        // A delta whose base's pack is gone is gone too.
        let mut index = Index::default();
        index.add_pack(p1, &[entry(b"a", 16)]);
        index.add_pack(p2, &[delta(b"c", b"a", 16), entry(b"d", 26)]);
        let present: std::collections::HashSet<PackId> = [p2].into();
        assert_eq!(index.keep_packs(&present), 1);
        assert!(!index.contains(&ChunkId::of(b"c")));
        assert!(index.contains(&ChunkId::of(b"d")));
    }
}
