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
use crate::repo::index::{Index, Location};
use crate::repo::names::{Folder, pack_name};
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, ChunkReader, PackId, Repository, SnapshotId, ids_in};

/// Everything prune decided, before it changes anything.
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
    /// The new index for the live chunks that stay where they are.
    pub(super) index: HashMap<PackId, Vec<PackEntry>>,
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

/// A readable pack and its table.
struct PackInfo {
    id: PackId,
    len: u64,
    entries: Vec<PackEntry>,
}

/// One stored copy of a chunk: its pack, that pack's place in the list
/// of readable packs (none when its table is unreadable), its entry.
#[derive(Clone, Copy)]
struct StoredCopy {
    pack: PackId,
    at: Option<usize>,
    entry: PackEntry,
}

/// The copy of each used chunk that prune keeps.
struct LiveCopies {
    /// In a readable pack: that pack's place in the list, and its entry.
    live: HashMap<ChunkId, (usize, PackEntry)>,
    /// In a pack whose table is unreadable: that pack stays, and the
    /// index keeps naming the chunk there.
    carried: Vec<(PackId, PackEntry)>,
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
        if let Some((name, e)) = damaged.first() {
            return Err(Error::corrupt(format!("index {name} is damaged: {e}"))
                .hint("nothing was removed; run `platter rebuild-index` first"));
        }
        // A used delta needs its base, kept whole.
        let bases: HashSet<ChunkId> = used.iter().filter_map(|id| index.base_of(id)).collect();
        let mut used = used;
        used.extend(bases.iter().copied());
        let (packs, unreadable, damaged_packs) = read_packs(repo)?;
        let copies = stored_copies(&index, (&used, &bases), &packs, &unreadable);
        let live = choose_live(repo, &index, &copies, progress);
        let mut plan = PrunePlan {
            snapshots: snaps.len(),
            chunks_used: used.len(),
            chunks_missing: used.len() - live.live.len() - live.carried.len(),
            packs_before: packs.len() + unreadable.len(),
            bytes_before: packs.iter().map(|p| p.len).sum(),
            damaged_packs,
            kept_bytes: 0,
            delete: Vec::new(),
            repack: Vec::new(),
            index: HashMap::new(),
            stale_maps: stale_maps(repo, &snaps)?,
            found: Index::default(),
        };
        plan.decide(&packs, &index, live, repack_percent);
        plan.found = index;
        Ok(plan)
    }

    /// Each readable pack's fate, by the share of it that is dead, and
    /// where the new index puts each live chunk that does not move.
    fn decide(
        &mut self,
        packs: &[PackInfo],
        index: &Index,
        copies: LiveCopies,
        repack_percent: u8,
    ) {
        let mut live_at: Vec<Vec<PackEntry>> = vec![Vec::new(); packs.len()];
        for (p, e) in copies.live.values() {
            live_at[*p].push(*e);
        }
        for (pack, e) in copies.carried {
            self.index.entry(pack).or_default().push(e);
        }
        let indexed: HashSet<&PackId> = index.packs().iter().collect();
        for (pack, mut live) in packs.iter().zip(live_at) {
            // Dead bytes are those of entries no snapshot uses here; the
            // header and table do not count.
            let live_bytes: u64 = live.iter().map(|e| u64::from(e.stored_len)).sum();
            let stored: u64 = pack.entries.iter().map(|e| u64::from(e.stored_len)).sum();
            let unused = u128::from(stored.saturating_sub(live_bytes));
            if live_bytes != 0 && unused * 100 >= u128::from(repack_percent) * u128::from(stored) {
                live.sort_by_key(|e| e.offset);
                self.repack.push(RepackPack {
                    id: pack.id,
                    len: pack.len,
                    live,
                });
                continue;
            }
            if !live.is_empty() {
                self.index.entry(pack.id).or_default().extend(live);
            }
            if live_bytes == 0 {
                self.delete.push(DeadPack {
                    id: pack.id,
                    indexed: indexed.contains(&pack.id),
                });
            } else {
                self.kept_bytes += pack.len;
            }
        }
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

/// Every committed pack with its table, the packs whose table cannot be
/// read (those are left alone), and those described for the report.
fn read_packs(repo: &Repository) -> Result<(Vec<PackInfo>, HashSet<PackId>, Vec<String>)> {
    let backend = repo.backend();
    let mut packs = Vec::new();
    let mut unreadable = HashSet::new();
    let mut damaged = Vec::new();
    let mut ids: Vec<PackId> = repo.packs_on_disk()?.into_iter().collect();
    ids.sort_unstable();
    // Each table is a request of its own: on a store far away, several at
    // once.
    let tables = crate::repo::backend::each_at_once(backend, &ids, |id| {
        // A table entry the chunk reader would refuse makes the table
        // damaged: the pack stays as it is, as one that cannot be read.
        repo.read_pack_table(id).and_then(|(len, entries)| {
            for (i, e) in entries.iter().enumerate() {
                e.check_lengths(repo.config().chunk_size, repo.sealing())
                    .map_err(|why| Error::corrupt(format!("table entry {i} {why}")))?;
            }
            Ok((len, entries))
        })
    });
    for (id, read) in ids.into_iter().zip(tables) {
        let name = pack_name(&id);
        match read {
            Ok((len, entries)) => packs.push(PackInfo { id, len, entries }),
            // The store is out of reach: stop before deciding anything.
            Err(e) if e.is_transient() => return Err(e.hint("nothing was removed")),
            Err(e) => {
                damaged.push(format!("{}: {e}", backend.describe(&name)));
                unreadable.insert(id);
            }
        }
    }
    Ok((packs, unreadable, damaged))
}

/// Every copy of every used chunk: the index's first (also in a pack whose
/// table cannot be read), then those the pack tables list. A delta a pack
/// table lists but no index names is no copy (its base is unknown), and a
/// chunk in `bases` (the base of a used delta) has only whole copies, so
/// deltas never chain.
fn stored_copies(
    index: &Index,
    (used, bases): (&HashSet<ChunkId>, &HashSet<ChunkId>),
    packs: &[PackInfo],
    unreadable: &HashSet<PackId>,
) -> HashMap<ChunkId, Vec<StoredCopy>> {
    let at: HashMap<PackId, usize> = packs.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut copies: HashMap<ChunkId, Vec<StoredCopy>> = HashMap::new();
    for (id, loc) in index.iter().filter(|(id, _)| used.contains(id)) {
        let pack = *index.pack_id(loc.pack);
        let known = at.get(&pack).is_some_and(|&p| {
            packs[p]
                .entries
                .iter()
                .any(|e| e.id == id && e.offset == loc.offset)
        });
        let chains = loc.encoded.is_delta() && bases.contains(&id);
        if (known || unreadable.contains(&pack)) && !chains {
            copies.entry(id).or_default().push(StoredCopy {
                pack,
                at: at.get(&pack).copied(),
                entry: index.entry(&id).unwrap_or_else(|| loc.entry(id)),
            });
        }
    }
    for (p, pack) in packs.iter().enumerate() {
        let copies_here = pack
            .entries
            .iter()
            .filter(|e| used.contains(&e.id) && !e.encoded.is_delta());
        for e in copies_here {
            let list = copies.entry(e.id).or_default();
            if !list
                .iter()
                .any(|c| c.pack == pack.id && c.entry.offset == e.offset)
            {
                list.push(StoredCopy {
                    pack: pack.id,
                    at: Some(p),
                    entry: *e,
                });
            }
        }
    }
    copies
}

/// The live copy of each chunk: the first, unless another copy exists and
/// the first does not read back intact (then the first intact one).
fn choose_live(
    repo: &Repository,
    index: &Index,
    copies: &HashMap<ChunkId, Vec<StoredCopy>>,
    progress: &dyn Progress,
) -> LiveCopies {
    let mut chosen = LiveCopies {
        live: HashMap::new(),
        carried: Vec::new(),
    };
    let pool = BufPool::new(repo.config().chunk_size as usize, 1);
    let mut reader = repo.chunk_reader(pool, index);
    for (id, list) in copies {
        let copy = choose_copy(repo, &mut reader, id, list, progress);
        match copy.at {
            Some(p) => {
                chosen.live.insert(*id, (p, copy.entry));
            }
            None => chosen.carried.push((copy.pack, copy.entry)),
        }
    }
    chosen
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
