//! Removing data no snapshot needs, under an exclusive lock.
//!
//! Each chunk that a snapshot uses has one live copy: where the index puts
//! it (or, for a chunk only an unindexed pack holds, the first such copy).
//! A pack with no live copy is deleted; a pack that is mostly dead has its
//! live chunks read, checked and written into new packs, then is deleted;
//! the rest stay. The order keeps every needed chunk reachable whenever the
//! process dies:
//!
//! 1. new packs are written and made durable;
//! 2. one new index naming every live chunk where it will be is written;
//! 3. the old index files are removed (now redundant);
//! 4. only then are dead and repacked packs deleted;
//! 5. maps without a manifest and unfinished writes go last.
//!
//! Until step 3 ends the old index files still point at packs that all
//! exist; from step 2 on the new index alone is complete.
//!
//! A full filesystem does not change that order. Repacking that runs out of
//! room is dropped (its new packs, which no index names, go; the packs stay
//! as they are). A new index that does not fit gets room from what no index
//! names (maps without a manifest, unfinished writes, dead packs no index
//! lists, the space reserve) and is written again; a pack an index names is
//! never deleted before the new index is durable, or the next backup could
//! dedup against a chunk that is gone. Names that are not platter's are
//! left alone.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::codec::ChunkId;
use crate::engine::pack_sink::{ClosedPack, PackSink};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Location;
use crate::repo::lock::LockKind;
use crate::repo::pack::{self, PackEntry, pack_name};
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, ChunkReader, RawId, Repository, ids_in};

#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Report what would happen; change nothing.
    pub dry_run: bool,
    /// Repack a pack when at least this percentage of it is unused.
    pub repack_percent: u8,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            dry_run: false,
            repack_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub chunks_used: usize,
    pub packs_before: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub maps_removed: usize,
    pub unfinished_removed: usize,
    /// Packs that could not be read and were left as they are.
    pub damaged_packs: Vec<String>,
    /// Used chunks that no pack holds (`verify` names their snapshots).
    pub chunks_missing: usize,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    Delete,
    Repack,
}

struct PackInfo {
    id: RawId,
    len: u64,
    entries: Vec<PackEntry>,
    action: Action,
}

/// Prunes under its own exclusive lock.
pub fn prune(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let _lock = super::lock_repo(repo, LockKind::Exclusive, "prune", progress)?;
    prune_locked(repo, options, progress)
}

/// Prunes; the caller holds an exclusive lock.
pub fn prune_locked(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    let (snaps, broken) = repo.snapshots()?;
    if let Some(b) = broken.first() {
        return Err(Error::corrupt(format!(
            "snapshot manifest {} is unreadable ({}): prune cannot tell what it needs",
            repo.describe(&b.name),
            b.error
        ))
        .hint("nothing was removed; run `platter verify`, and remove or restore that manifest"));
    }
    report.snapshots = snaps.len();
    let mut used: HashSet<ChunkId> = HashSet::new();
    for snap in &snaps {
        let mut map = repo.open_map(snap).map_err(|e| {
            e.context(format!("snapshot {}", snap.short_id())).hint(
                "nothing was removed; prune needs every snapshot's map (see `platter verify`)",
            )
        })?;
        map.add_data_ids(&mut used)?;
    }
    report.chunks_used = used.len();
    let (index, damaged) = repo.load_index()?;
    if let Some((name, e)) = damaged.first() {
        return Err(Error::corrupt(format!("index {name} is damaged: {e}"))
            .hint("nothing was removed; run `platter rebuild-index` first"));
    }

    let (mut packs, unreadable) = read_packs(repo, &mut report)?;
    report.packs_before = packs.len() + unreadable.len();
    report.bytes_before = packs.iter().map(|p| p.len).sum::<u64>();

    // Every copy of every used chunk: the index's first (also in a pack
    // whose table cannot be read), then those the pack tables list.
    let at: HashMap<RawId, usize> = packs.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut copies: HashMap<ChunkId, Vec<StoredCopy>> = HashMap::new();
    for (id, loc) in index.iter().filter(|(id, _)| used.contains(id)) {
        let pack = *index.pack_id(loc.pack);
        let known = at.get(&pack).is_some_and(|&p| {
            packs[p]
                .entries
                .iter()
                .any(|e| e.id == *id && e.offset == loc.offset)
        });
        if known || unreadable.contains(&pack) {
            copies.entry(*id).or_default().push(StoredCopy {
                pack,
                at: at.get(&pack).copied(),
                entry: loc.entry(*id),
            });
        }
    }
    for (p, pack) in packs.iter().enumerate() {
        for e in pack.entries.iter().filter(|e| used.contains(&e.id)) {
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
    // The live copy: the first, unless another copy exists and the first
    // does not read back intact (then the first intact one).
    let mut live: HashMap<ChunkId, (usize, PackEntry)> = HashMap::new();
    let mut reader = repo.chunk_reader(BufPool::new(repo.config().chunk_size as usize, 1));
    let mut carried: Vec<(RawId, PackEntry)> = Vec::new();
    for (id, list) in &copies {
        let chosen = choose_copy(repo, &mut reader, id, list, progress);
        match chosen.at {
            Some(p) => {
                live.insert(*id, (p, chosen.entry));
            }
            // In a pack whose table is unreadable: that pack stays, and
            // the index keeps naming the chunk there.
            None => carried.push((chosen.pack, chosen.entry)),
        }
    }
    report.chunks_missing = used.len() - live.len() - carried.len();
    let mut live_bytes = vec![0u64; packs.len()];
    for (p, e) in live.values() {
        live_bytes[*p] += u64::from(e.stored_len);
    }
    for (p, pack) in packs.iter_mut().enumerate() {
        // Dead bytes are those of entries no snapshot uses here; the
        // header and table do not count.
        let stored: u64 = pack.entries.iter().map(|e| u64::from(e.stored_len)).sum();
        let unused = u128::from(stored.saturating_sub(live_bytes[p]));
        pack.action = if live_bytes[p] == 0 {
            Action::Delete
        } else if unused * 100 >= u128::from(options.repack_percent) * u128::from(stored) {
            Action::Repack
        } else {
            Action::Keep
        };
    }
    if options.dry_run {
        let moved: u64 = packs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.action == Action::Repack)
            .map(|(i, _)| live_bytes[i])
            .sum();
        report.packs_deleted = packs.iter().filter(|p| p.action == Action::Delete).count();
        report.packs_repacked = packs.iter().filter(|p| p.action == Action::Repack).count();
        report.bytes_after = packs
            .iter()
            .filter(|p| p.action == Action::Keep)
            .map(|p| p.len)
            .sum::<u64>()
            + moved;
        report.duration_s = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // 1. Repack: live chunks of mostly-dead packs into new packs.
    let (written, moved) = repack(repo, &mut packs, &live, progress)?;
    report.packs_written = written.len();
    // 2. One index for every live chunk at its final place.
    let mut groups: HashMap<RawId, Vec<PackEntry>> = HashMap::new();
    for (pack, e) in carried {
        groups.entry(pack).or_default().push(e);
    }
    for (id, (p, e)) in &live {
        match moved.get(id) {
            Some((new_pack, new_entry)) => groups.entry(*new_pack).or_default().push(*new_entry),
            None => groups.entry(packs[*p].id).or_default().push(*e),
        }
    }
    // 3. The old index files go once it is durable. On a full filesystem,
    // room for it is made first with what no index names.
    let groups: Vec<(RawId, Vec<PackEntry>)> = groups.into_iter().collect();
    let mut gone = HashSet::new();
    if let Err(e) = repo.replace_index(&groups) {
        if !super::out_of_space(&e) {
            return Err(e);
        }
        gone = make_room(repo, &snaps, &packs, &index, &mut report, progress)?;
        repo.replace_index(&groups).map_err(|e| {
            e.hint(
                "the repository's filesystem is too full even for the new index; nothing a \
                 snapshot needs was removed: free some space on it, then run `platter prune`",
            )
        })?;
    }
    // 4. Dead and repacked packs.
    for pack in packs.iter().filter(|p| p.action != Action::Keep) {
        if !gone.contains(&pack.id) {
            repo.backend().remove(&pack_name(&pack.id))?;
        }
        match pack.action {
            Action::Delete => report.packs_deleted += 1,
            _ => report.packs_repacked += 1,
        }
    }
    // 5. Leftovers of interrupted commands.
    remove_leftovers(repo, &snaps, &mut report)?;
    super::remake_reserve(repo, progress);
    report.bytes_after = packs
        .iter()
        .filter(|p| p.action == Action::Keep)
        .map(|p| p.len)
        .sum::<u64>()
        + written
            .iter()
            .map(|(id, _)| repo.backend().open(&pack_name(id)).map(|f| f.len()))
            .sum::<Result<u64>>()?;
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every committed pack with its table, and the packs whose table cannot
/// be read: those are left alone and named in the report.
fn read_packs(
    repo: &Repository,
    report: &mut PruneReport,
) -> Result<(Vec<PackInfo>, HashSet<RawId>)> {
    let backend = repo.backend();
    let mut packs = Vec::new();
    let mut unreadable = HashSet::new();
    let mut ids: Vec<RawId> = repo.packs_on_disk()?.into_iter().collect();
    ids.sort_unstable();
    for id in ids {
        let name = pack_name(&id);
        // A table entry the chunk reader would refuse makes the table
        // damaged: the pack stays as it is, as one that cannot be read.
        let read = repo.read_pack_table(&id).and_then(|(len, entries)| {
            for (i, e) in entries.iter().enumerate() {
                e.check_lengths(repo.config().chunk_size, repo.sealing())
                    .map_err(|why| Error::corrupt(format!("table entry {i} {why}")))?;
            }
            Ok((len, entries))
        });
        match read {
            Ok((len, entries)) => packs.push(PackInfo {
                id,
                len,
                entries,
                action: Action::Keep,
            }),
            Err(e) => {
                report
                    .damaged_packs
                    .push(format!("{}: {e}", backend.describe(&name)));
                unreadable.insert(id);
            }
        }
    }
    Ok((packs, unreadable))
}

/// One stored copy of a chunk: its pack, that pack's place in the list
/// of readable packs (none when its table is unreadable), its entry.
#[derive(Clone, Copy)]
struct StoredCopy {
    pack: RawId,
    at: Option<usize>,
    entry: PackEntry,
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
fn location(e: &PackEntry) -> Location {
    Location {
        pack: 0,
        encoded: e.encoded,
        offset: e.offset,
        stored_len: e.stored_len,
        plain_len: e.plain_len,
        crc: e.crc,
    }
}

type Moved = HashMap<ChunkId, (RawId, PackEntry)>;

/// Moves the live chunks of packs marked `Repack` into new packs, each
/// checked against its id. A pack with a chunk that fails its check is
/// kept as it is (its chunks stay where they are).
fn repack(
    repo: &Repository,
    packs: &mut [PackInfo],
    live: &HashMap<ChunkId, (usize, PackEntry)>,
    progress: &dyn Progress,
) -> Result<(Vec<ClosedPack>, Moved)> {
    let mut by_pack: HashMap<usize, Vec<PackEntry>> = HashMap::new();
    for (p, e) in live.values() {
        if packs[*p].action == Action::Repack {
            by_pack.entry(*p).or_default().push(*e);
        }
    }
    let total: u64 = by_pack
        .values()
        .flatten()
        .map(|e| u64::from(e.plain_len))
        .sum();
    progress.start("repack", total);
    let pool = BufPool::new(repo.config().chunk_size as usize, 2);
    let mut reader = repo.chunk_reader(pool);
    let mut written = Vec::new();
    let moving = move_live_chunks(repo, packs, by_pack, &mut reader, &mut written, progress);
    progress.finish();
    match moving {
        Ok(()) => {}
        Err(e) if super::out_of_space(&e) => {
            // No index names the new packs, and every live chunk is still
            // in its old pack: dropping them loses nothing.
            for (id, _) in written.drain(..) {
                repo.backend().remove(&pack_name(&id))?;
            }
            for pack in packs.iter_mut().filter(|p| p.action == Action::Repack) {
                pack.action = Action::Keep;
            }
            progress.warn(
                "the repository's filesystem has no room to repack: packs that are partly \
                 unused stay as they are (`platter prune` repacks them once there is space)",
            );
        }
        Err(e) => return Err(e),
    }
    let mut moved = Moved::new();
    for (pack, entries) in &written {
        for e in entries {
            moved.insert(e.id, (*pack, *e));
        }
    }
    Ok((written, moved))
}

/// Reads the live chunks of each pack in `by_pack` and writes them into
/// new packs, which it adds to `written`.
fn move_live_chunks(
    repo: &Repository,
    packs: &mut [PackInfo],
    mut by_pack: HashMap<usize, Vec<PackEntry>>,
    reader: &mut ChunkReader,
    written: &mut Vec<ClosedPack>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut sink = PackSink::new(repo.backend(), repo.sealing(), repo.config().compression);
    let mut order: Vec<usize> = by_pack.keys().copied().collect();
    order.sort_unstable();
    for p in order {
        let mut entries = by_pack.remove(&p).unwrap_or_default();
        entries.sort_by_key(|e| e.offset);
        let pack_id = packs[p].id;
        let mut chunks = Vec::with_capacity(entries.len());
        let mut failed = None;
        for e in &entries {
            match reader.read(&e.id, &pack_id, &location(e)) {
                Ok(plain) => chunks.push((e.id, plain)),
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        if let Some(err) = failed {
            progress.warn(&format!(
                "keeping pack {} as it is: {err}",
                repo.describe(&pack_name(&pack_id))
            ));
            packs[p].action = Action::Keep;
            continue;
        }
        for (id, plain) in chunks {
            progress.advance(plain.len() as u64);
            if let Some(closed) = sink.add(id, &plain)? {
                written.push(closed);
            }
        }
    }
    if let Some(closed) = sink.close()? {
        written.push(closed);
    }
    Ok(())
}

/// Room for the new index on a full filesystem, made only with what no
/// index names (a pack an index still names must stay until the new index
/// is durable, or the next backup could dedup against a chunk that is
/// gone): maps without a manifest, unfinished writes, dead packs that no
/// index lists, and the space reserve. Returns the packs it deleted.
fn make_room(
    repo: &Repository,
    snaps: &[Snapshot],
    packs: &[PackInfo],
    index: &crate::repo::index::Index,
    report: &mut PruneReport,
    progress: &dyn Progress,
) -> Result<HashSet<RawId>> {
    progress.warn(
        "the repository's filesystem is full: making room for the new index with files no \
         index names",
    );
    remove_leftovers(repo, snaps, report)?;
    let indexed: HashSet<&RawId> = index.packs().iter().collect();
    let mut gone = HashSet::new();
    for pack in packs
        .iter()
        .filter(|p| p.action == Action::Delete && !indexed.contains(&p.id))
    {
        repo.backend().remove(&pack_name(&pack.id))?;
        gone.insert(pack.id);
    }
    repo.release_reserve()?;
    Ok(gone)
}

/// Maps whose snapshot has no manifest, and unfinished writes: nothing
/// else writes (the lock is exclusive), so none of them is in progress,
/// except in `locks/`, where others write their lock before they look at
/// ours: there only those whose writer is gone go. Names that are not
/// platter's are left alone (see `repo::classify`).
fn remove_leftovers(repo: &Repository, snaps: &[Snapshot], report: &mut PruneReport) -> Result<()> {
    let backend = repo.backend();
    let keep: HashSet<String> = snaps.iter().map(|s| s.id.clone()).collect();
    for file in ids_in(backend, "maps")? {
        if !keep.contains(&file) {
            backend.remove(&format!("maps/{file}"))?;
            report.maps_removed += 1;
        }
    }
    let mut dirs: Vec<String> = ["snapshots", "maps", "index"].map(String::from).to_vec();
    dirs.extend(
        backend
            .list("data")?
            .into_iter()
            .filter(|d| pack::is_pack_folder(d))
            .map(|d| format!("data/{d}")),
    );
    for dir in dirs {
        report.unfinished_removed += backend.remove_unfinished(&dir, true)?.len();
    }
    report.unfinished_removed += backend.remove_unfinished("locks", false)?.len();
    Ok(())
}
