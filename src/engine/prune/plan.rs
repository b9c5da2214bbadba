//! Deciding what prune does, by reading only.
//!
//! [`PrunePlan::build`] reads the manifests, maps, index and pack tables,
//! picks the live copy of every used chunk and decides each pack's fate.
//! It refuses (fail-closed) when a manifest, map or index file cannot be
//! read, since then it cannot tell what is needed. A pack whose table is
//! unreadable, or lists an entry the chunk reader would refuse, is left
//! alone and the index keeps naming the chunks it holds.

use std::collections::{HashMap, HashSet};

use super::PruneReport;
use crate::codec::ChunkId;
use crate::engine::in_use::{InUse, in_use};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::idset::{IdSet, IdSetBuilder};
use crate::repo::index::{Index, Location};
use crate::repo::names::{Folder, pack_name};
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, ChunkReader, PackId, Repository, SnapshotId, ids_in};

/// Pack tables read at once (each a request of its own: on a store far
/// away, several at once), and held together.
const TABLES_AT_ONCE: usize = 16;

/// Everything prune decided, before it changes anything.
///
/// Memory does not grow with the repository: the used chunks are an
/// `IdSet`, packs are looked at one batch of tables at a time, and the new
/// index is not held here: `execute` reads the tables of the packs that
/// stay again and feeds their live entries (`Live::entries`) to the index
/// writer. Only chunks with more than one stored copy (rare) are gathered.
pub(super) struct PrunePlan {
    pub(super) snapshots: usize,
    pub(super) chunks_used: usize,
    /// Used chunks that no pack holds.
    pub(super) chunks_missing: usize,
    /// Readable and unreadable packs.
    pub(super) packs_before: usize,
    /// Total length of the readable packs.
    pub(super) bytes_before: u64,
    /// Packs whose table cannot be read, for the report: they stay.
    pub(super) damaged_packs: Vec<String>,
    /// Total length of the packs that stay as they are.
    pub(super) kept_bytes: u64,
    /// Packs no snapshot uses, deleted once the new index is durable.
    pub(super) delete: Vec<DeadPack>,
    /// Mostly unused packs whose live chunks move to new packs.
    pub(super) repack: Vec<RepackPack>,
    /// Readable packs that stay as they are and hold live chunks: the new
    /// index names their live entries where they are.
    pub(super) kept: Vec<PackId>,
    /// Live chunks in packs whose table is unreadable: those packs stay,
    /// and the new index keeps naming these chunks there.
    pub(super) carried: Vec<(PackId, PackEntry)>,
    /// Which entries of a pack's table are live.
    pub(super) live: Live,
    /// Maps without a manifest (names in the repository).
    pub(super) stale_maps: Vec<String>,
    /// The index as prune found it: where repacking reads chunks from,
    /// deltas' bases included.
    pub(super) found: Index,
}

/// A pack with no live copy.
pub(super) struct DeadPack {
    pub(super) id: PackId,
    /// Whether an index file lists it: then it must stay until the new
    /// index is durable, even to make room for that index.
    pub(super) indexed: bool,
}

/// A pack to repack: its live entries, in offset order.
pub(super) struct RepackPack {
    pub(super) id: PackId,
    pub(super) len: u64,
    pub(super) live: Vec<PackEntry>,
}

impl RepackPack {
    /// What its live chunks take up stored.
    fn live_bytes(&self) -> u64 {
        self.live.iter().map(|e| u64::from(e.stored_len)).sum()
    }
}

/// What a readable pack holds: its length, the stored bytes of its
/// entries, and how many of them are live and their stored bytes.
struct Tally {
    id: PackId,
    len: u64,
    stored: u64,
    live: u64,
    live_bytes: u64,
}

/// One stored copy of a chunk: its pack, whether that pack's table is
/// readable, its entry.
#[derive(Clone, Copy)]
pub(super) struct StoredCopy {
    pack: PackId,
    readable: bool,
    entry: PackEntry,
}

/// What an entry of a pack table is to prune, before chunks with several
/// copies are looked at.
enum Role {
    /// No snapshot uses the chunk.
    Unused,
    /// The index's copy of a used chunk (the index's entry, with a delta's
    /// base).
    Indexed(PackEntry),
    /// Another whole copy of a used chunk: the chunk has several copies.
    Other,
    /// A delta copy the index does not name: no copy (its base is
    /// unknown).
    None,
}

/// The chunks prune keeps and where: the used chunks, the bases of used
/// deltas (kept whole: a base's delta copy is no copy, so deltas never
/// chain), and the copy kept of each chunk stored more than once.
pub(super) struct Live {
    used: IdSet,
    bases: IdSet,
    /// The copy kept of each used chunk with several copies.
    several: HashMap<ChunkId, StoredCopy>,
}

impl Live {
    fn needed(&self, id: &ChunkId) -> bool {
        self.used.contains(id) || self.bases.contains(id)
    }

    /// Whether `loc`, a copy of `id`, is a delta of a chunk that must be
    /// kept whole.
    fn chains(&self, id: &ChunkId, loc: &Location) -> bool {
        loc.encoded.is_delta() && self.bases.contains(id)
    }

    fn role(&self, index: &Index, pack: &PackId, e: &PackEntry) -> Role {
        if !self.needed(&e.id) {
            return Role::Unused;
        }
        if let Some(loc) = index.get(&e.id)
            && index.pack_id(loc.pack) == pack
            && loc.offset == e.offset
            && !self.chains(&e.id, &loc)
        {
            // Only a delta's entry says more than its location (its base):
            // a whole chunk costs one lookup, not two.
            let entry = match loc.encoded.is_delta() {
                true => index.entry(&e.id).unwrap_or_else(|| loc.entry(e.id)),
                false => loc.entry(e.id),
            };
            return Role::Indexed(entry);
        }
        if e.encoded.is_delta() {
            Role::None
        } else {
            Role::Other
        }
    }

    /// The live entries of readable pack `pack`, whose table is `table`:
    /// each live chunk once, as the new index names it.
    pub(super) fn entries(
        &self,
        index: &Index,
        pack: &PackId,
        table: &[PackEntry],
    ) -> Vec<PackEntry> {
        let mut seen = HashSet::new();
        let mut live = Vec::new();
        for e in table {
            let kept = match self.several.get(&e.id) {
                Some(c) => {
                    (c.readable && c.pack == *pack && c.entry.offset == e.offset).then_some(c.entry)
                }
                None => match self.role(index, pack, e) {
                    Role::Indexed(entry) => Some(entry),
                    _ => None,
                },
            };
            if let Some(entry) = kept
                && seen.insert(e.id)
            {
                live.push(entry);
            }
        }
        live
    }
}

impl PrunePlan {
    /// Reads the repository and decides; writes nothing.
    pub(super) fn build(
        repo: &Repository,
        repack_percent: u8,
        progress: &dyn Progress,
    ) -> Result<PrunePlan> {
        let InUse {
            snapshots: snaps,
            chunks: used,
        } = in_use(repo).map_err(|e| {
            e.hint("nothing was removed; run `platter verify`, and repair (`platter repair --from COPY`) or forget that snapshot")
        })?;
        let (index, damaged) = repo.load_index_checked()?;
        if let Some((_, e)) = damaged.into_iter().next() {
            // The reader's error names the file.
            return Err(e.hint("nothing was removed; run `platter rebuild-index` first"));
        }
        // A used delta needs its base, kept whole.
        let mut bases = IdSetBuilder::new(repo);
        if index.delta_count() > 0 {
            for id in used.iter() {
                if let Some(base) = index.base_of(&id) {
                    bases.insert(base)?;
                }
            }
        }
        let bases = bases.finish()?;
        let extra_bases = bases.iter().filter(|id| !used.contains(id)).count();
        let chunks_used = used.len() as usize + extra_bases;
        let mut live = Live {
            used,
            bases,
            several: HashMap::new(),
        };
        let mut packs = look_at_packs(repo, &index, &live)?;
        let carried = choose_copies(repo, &index, &mut live, &mut packs, progress)?;
        let live_count: u64 = packs.tallies.iter().map(|t| t.live).sum();
        let found = (live_count as usize).saturating_add(carried.len());
        let mut plan = PrunePlan {
            snapshots: snaps.len(),
            chunks_used,
            chunks_missing: chunks_used.saturating_sub(found),
            packs_before: packs.tallies.len() + packs.unreadable.len(),
            bytes_before: packs.tallies.iter().map(|p| p.len).sum(),
            damaged_packs: std::mem::take(&mut packs.damaged),
            kept_bytes: 0,
            delete: Vec::new(),
            repack: Vec::new(),
            kept: Vec::new(),
            carried,
            live,
            stale_maps: stale_maps(repo, &snaps)?,
            found: Index::default(),
        };
        plan.decide(repo, &packs.tallies, &index, repack_percent)?;
        plan.found = index;
        Ok(plan)
    }

    /// Each readable pack's fate, by the share of it that is dead; the
    /// live entries of the packs to repack.
    fn decide(
        &mut self,
        repo: &Repository,
        tallies: &[Tally],
        index: &Index,
        repack_percent: u8,
    ) -> Result<()> {
        let indexed: HashSet<&PackId> = index.packs().iter().collect();
        for pack in tallies {
            // Dead bytes are those of entries no snapshot uses here; the
            // header and table do not count.
            let unused = u128::from(pack.stored.saturating_sub(pack.live_bytes));
            if pack.live_bytes != 0
                && unused * 100 >= u128::from(repack_percent) * u128::from(pack.stored)
            {
                let (_, table) = read_table(repo, &pack.id)?;
                let mut live = self.live.entries(index, &pack.id, &table);
                live.sort_by_key(|e| e.offset);
                self.repack.push(RepackPack {
                    id: pack.id,
                    len: pack.len,
                    live,
                });
                continue;
            }
            if pack.live_bytes == 0 {
                self.delete.push(DeadPack {
                    id: pack.id,
                    indexed: indexed.contains(&pack.id),
                });
            } else {
                self.kept.push(pack.id);
                self.kept_bytes += pack.len;
            }
        }
        Ok(())
    }

    /// The report of the run without writing anything: repacked chunks
    /// are counted at their stored size.
    pub(super) fn dry_run_report(&self) -> PruneReport {
        let moved = self.repack.iter().map(RepackPack::live_bytes).sum();
        PruneReport {
            packs_deleted: self.delete.len(),
            packs_repacked: self.repack.len(),
            bytes_after: self.bytes_after(&[], moved),
            ..self.report(true)
        }
    }

    /// The report's fields that the plan alone decides.
    pub(super) fn report(&self, dry_run: bool) -> PruneReport {
        PruneReport {
            dry_run,
            snapshots: self.snapshots,
            chunks_used: self.chunks_used,
            packs_before: self.packs_before,
            bytes_before: self.bytes_before,
            damaged_packs: self.damaged_packs.clone(),
            chunks_missing: self.chunks_missing,
            ..PruneReport::default()
        }
    }

    /// The repository's packs once done: those kept, the packs to repack
    /// that `stayed` as they are after all, and `new_packs` bytes of new
    /// packs.
    pub(super) fn bytes_after(&self, stayed: &[&RepackPack], new_packs: u64) -> u64 {
        self.kept_bytes + stayed.iter().map(|p| p.len).sum::<u64>() + new_packs
    }
}

/// Maps whose snapshot has no manifest.
fn stale_maps(repo: &Repository, snaps: &[Snapshot]) -> Result<Vec<String>> {
    let keep: HashSet<SnapshotId> = snaps.iter().map(|s| s.id).collect();
    Ok(ids_in(repo.backend(), Folder::Maps)?
        .into_iter()
        .filter(|file| SnapshotId::parse(file).is_some_and(|id| !keep.contains(&id)))
        .map(|file| Folder::Maps.file(&file))
        .collect())
}

/// Reads and checks the table of pack `id`: its length and entries. A
/// table entry the chunk reader would refuse makes the table damaged (the
/// pack stays as it is, as one that cannot be read).
pub(super) fn read_table(repo: &Repository, id: &PackId) -> Result<(u64, Vec<PackEntry>)> {
    repo.read_pack_table(id).and_then(|(len, entries)| {
        for (i, e) in entries.iter().enumerate() {
            e.check_lengths(repo.config().chunk_size, repo.sealing())
                .map_err(|why| Error::corrupt(format!("table entry {i} {why}")))?;
        }
        Ok((len, entries))
    })
}

/// Calls `each` with the table of every pack of `ids`, in order, reading
/// `TABLES_AT_ONCE` at a time; stops at the first error `each` returns.
pub(super) fn each_table(
    repo: &Repository,
    ids: &[PackId],
    mut each: impl FnMut(&PackId, Result<(u64, Vec<PackEntry>)>) -> Result<()>,
) -> Result<()> {
    for batch in ids.chunks(TABLES_AT_ONCE) {
        let tables =
            crate::repo::backend::each_at_once(repo.backend(), batch, |id| read_table(repo, id));
        for (id, read) in batch.iter().zip(tables) {
            each(id, read)?;
        }
    }
    Ok(())
}

/// What the pack tables say.
struct Packs {
    /// Each readable pack, in pack id order, with the copies the index
    /// names in it of used chunks counted as live.
    tallies: Vec<Tally>,
    /// Packs whose table cannot be read (they are left alone).
    unreadable: HashSet<PackId>,
    /// Those, described for the report.
    damaged: Vec<String>,
    /// Whole copies of used chunks besides the index's, in pack id order
    /// then table order.
    others: Vec<(PackId, PackEntry)>,
}

/// Reads every committed pack's table, a batch at a time, counting the
/// live entries of each and gathering the copies of used chunks other
/// than the index's.
fn look_at_packs(repo: &Repository, index: &Index, live: &Live) -> Result<Packs> {
    let backend = repo.backend();
    let mut packs = Packs {
        tallies: Vec::new(),
        unreadable: HashSet::new(),
        damaged: Vec::new(),
        others: Vec::new(),
    };
    let mut ids: Vec<PackId> = repo.packs_on_disk()?.into_iter().collect();
    ids.sort_unstable();
    each_table(repo, &ids, |id, read| {
        match read {
            Ok((len, entries)) => {
                let mut tally = Tally {
                    id: *id,
                    len,
                    stored: 0,
                    live: 0,
                    live_bytes: 0,
                };
                let mut seen = HashSet::new();
                for e in &entries {
                    tally.stored += u64::from(e.stored_len);
                    match live.role(index, id, e) {
                        Role::Indexed(entry) => {
                            if seen.insert(e.id) {
                                tally.live += 1;
                                tally.live_bytes += u64::from(entry.stored_len);
                            }
                        }
                        Role::Other => packs.others.push((*id, *e)),
                        Role::Unused | Role::None => {}
                    }
                }
                packs.tallies.push(tally);
            }
            // The store is out of reach: stop before deciding anything.
            Err(e) if e.is_transient() => return Err(e.hint("nothing was removed")),
            Err(e) => {
                packs
                    .damaged
                    .push(format!("{}: {e}", backend.describe(&pack_name(id))));
                packs.unreadable.insert(*id);
            }
        }
        Ok(())
    })?;
    Ok(packs)
}

/// Picks the copy kept of each used chunk that has several (into
/// `live.several`, moving its count in `packs` to the pack of the copy
/// kept), and returns the live chunks in packs whose table is unreadable.
///
/// A chunk's copies are the index's (if its pack's table lists it there,
/// or cannot be read), then the whole copies the pack tables list. A delta
/// a pack table lists but no index names is no copy (its base is
/// unknown), and the base of a used delta has only whole copies, so
/// deltas never chain.
fn choose_copies(
    repo: &Repository,
    index: &Index,
    live: &mut Live,
    packs: &mut Packs,
    progress: &dyn Progress,
) -> Result<Vec<(PackId, PackEntry)>> {
    let at: HashMap<PackId, usize> = (packs.tallies.iter().enumerate())
        .map(|(i, t)| (t.id, i))
        .collect();
    let mut others = std::mem::take(&mut packs.others);
    others.sort_by_key(|(_, e)| e.id);
    // Tables of the packs holding the index's copy of such chunks.
    let mut tables: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    let pool = BufPool::new(repo.config().chunk_size as usize, 1);
    let mut reader = repo.chunk_reader(pool, index);
    let mut carried = Vec::new();
    for group in others.chunk_by(|a, b| a.1.id == b.1.id) {
        let id = group[0].1.id;
        let mut list: Vec<StoredCopy> = Vec::new();
        if let Some(loc) = index.get(&id).filter(|loc| !live.chains(&id, loc)) {
            let pack = *index.pack_id(loc.pack);
            let copy = StoredCopy {
                pack,
                readable: at.contains_key(&pack),
                entry: index.entry(&id).unwrap_or_else(|| loc.entry(id)),
            };
            if packs.unreadable.contains(&pack) {
                list.push(copy);
            } else if let Some(&p) = at.get(&pack) {
                if let std::collections::hash_map::Entry::Vacant(slot) = tables.entry(pack) {
                    slot.insert(read_table(repo, &pack)?.1);
                }
                let listed = (tables.get(&pack).into_iter().flatten())
                    .any(|e| e.id == id && e.offset == loc.offset);
                if listed {
                    // Counted as live where it is: it may not stay.
                    let t = &mut packs.tallies[p];
                    t.live -= 1;
                    t.live_bytes -= u64::from(copy.entry.stored_len);
                    list.push(copy);
                }
            }
        }
        for (pack, e) in group {
            if !list
                .iter()
                .any(|c| c.pack == *pack && c.entry.offset == e.offset)
            {
                list.push(StoredCopy {
                    pack: *pack,
                    readable: true,
                    entry: *e,
                });
            }
        }
        let copy = choose_copy(repo, &mut reader, &id, &list, progress);
        match at.get(&copy.pack) {
            Some(&p) if copy.readable => {
                let t = &mut packs.tallies[p];
                t.live += 1;
                t.live_bytes += u64::from(copy.entry.stored_len);
            }
            _ => carried.push((copy.pack, copy.entry)),
        }
        live.several.insert(id, copy);
    }
    drop(tables);
    // The index's copies in packs whose table cannot be read.
    if !packs.unreadable.is_empty() {
        for (id, loc) in index.iter() {
            let pack = *index.pack_id(loc.pack);
            if packs.unreadable.contains(&pack)
                && live.needed(&id)
                && !live.several.contains_key(&id)
                && !live.chains(&id, &loc)
            {
                carried.push((pack, index.entry(&id).unwrap_or_else(|| loc.entry(id))));
            }
        }
    }
    Ok(carried)
}

/// The copy to keep: the first, unless there are others (which prune may
/// delete) and it does not read back intact; then the first intact one.
fn choose_copy(
    repo: &Repository,
    reader: &mut ChunkReader,
    id: &ChunkId,
    list: &[StoredCopy],
    progress: &dyn Progress,
) -> StoredCopy {
    if list.len() == 1 {
        return list[0];
    }
    let mut intact = |c: &StoredCopy| reader.read(id, &c.pack, &location(&c.entry)).is_ok();
    if intact(&list[0]) {
        return list[0];
    }
    match list[1..].iter().find(|c| intact(c)) {
        Some(good) => {
            progress.warn(&format!(
                "chunk {id} is damaged in {}; keeping its intact copy in {}",
                repo.describe(&pack_name(&list[0].pack)),
                repo.describe(&pack_name(&good.pack))
            ));
            *good
        }
        None => {
            progress.warn(&format!("every stored copy of chunk {id} is damaged"));
            list[0]
        }
    }
}

/// Where a pack's table says a chunk is, for reading it from that pack.
pub(super) fn location(e: &PackEntry) -> Location {
    Location::of(e, 0)
}
