//! Checking a repository: its structure always, every stored byte with
//! `read_data`. Each problem names the file, the chunks, and the snapshots
//! (and byte ranges of their sources) it affects. Files that no snapshot
//! needs, as an interrupted backup leaves them, are leftovers, not damage.
//!
//! Structure means: every manifest field (`Snapshot::decode`, and the
//! layout here), every map against its manifest, and every pack table
//! against the index both ways, with each entry's lengths checked as the
//! chunk reader checks them, so that what verify passes, restore reads,
//! and what `rebuild-index` would build is known beforehand.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::codec::ChunkId;
use crate::engine::snapshots::{Selection, select_from};
use crate::engine::verify_report::problem;
pub use crate::engine::verify_report::{AffectedRange, Problem, VerifyReport};
use crate::error::{ErrorKind, Result};
use crate::progress::Progress;
use crate::repo::backend::TEMP_PREFIX;
use crate::repo::index::idset::{IdSet, IdSetBuilder};
use crate::repo::index::{Index, Location};
use crate::repo::map::Kind;
use crate::repo::names::{Folder, pack_name};
use crate::repo::pack::{self, DataEntry, FOOTER_LEN};
use crate::repo::snapshot::Snapshot;
use crate::repo::{BufPool, FileName, PackId, Repository, SnapshotId, classify};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Read every chunk and check its crc32 and BLAKE3.
    pub read_data: bool,
    /// Only these snapshots (ids, prefixes, `latest`); all when empty.
    pub snapshots: Vec<String>,
}

pub fn verify(
    repo: &Repository,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let _lock = super::lock_for_reading(repo, "verify", progress)?;
    verify_locked(repo, options, progress)
}

/// Verifies; the caller holds a lock.
pub fn verify_locked(
    repo: &Repository,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut report = VerifyReport::default();
    let mut bad_chunks: HashMap<ChunkId, usize> = HashMap::new();

    let (snaps, all_ids) = check_snapshots(repo, &options.snapshots, &mut report)?;
    let (index, damaged_index) = repo.load_index_checked()?;
    for (name, e) in damaged_index {
        report
            .damage
            .push(problem(repo.describe(&name), e.message()));
    }
    let in_tables_only = check_packs(repo, &index, &mut report, &mut bad_chunks)?;
    check_features(repo, &index, &mut report);
    let mut referenced = check_maps(repo, &snaps, &index, &mut report)?;
    check_bases(
        repo,
        &index,
        &mut referenced.used,
        &mut report,
        &mut bad_chunks,
    );
    report_unindexed(
        repo,
        referenced.missing,
        &in_tables_only,
        &mut report,
        &mut bad_chunks,
    );
    if options.read_data {
        read_data(
            repo,
            &index,
            &referenced.used,
            options,
            progress,
            &mut report,
            &mut bad_chunks,
        )?;
    }
    if options.snapshots.is_empty() {
        report_unused(repo, &index, &referenced.used, &mut report);
    }
    find_stray_files(repo, &all_ids, &mut report)?;
    if !bad_chunks.is_empty() {
        spread_to_deltas(&index, &referenced.used, &mut bad_chunks, &mut report);
        attribute(repo, &snaps, &bad_chunks, &mut report)?;
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every manifest: an unreadable one is damage, a readable one has its
/// layout checked. Returns the selected snapshots (`specs`; all when
/// empty) and the ids of every manifest, readable or not.
fn check_snapshots(
    repo: &Repository,
    specs: &[String],
    report: &mut VerifyReport,
) -> Result<(Vec<Snapshot>, HashSet<SnapshotId>)> {
    let (all, broken) = repo.snapshots()?;
    let all_ids: HashSet<SnapshotId> = all
        .iter()
        .map(|s| s.id)
        .chain(broken.iter().map(|b| b.id))
        .collect();
    for b in broken {
        report
            .damage
            .push(problem(repo.describe(&b.name), b.error.message()));
    }
    let selection = Selection {
        ids: specs.to_vec(),
        ..Selection::default()
    };
    let snaps = select_from(repo, all, Vec::new(), &selection)?.snapshots;
    report.snapshots = snaps.len();
    for snap in &snaps {
        check_layout(repo, snap, report);
    }
    Ok((snaps, all_ids))
}

/// The data chunks the selected snapshots' maps use.
struct Referenced {
    used: Used,
    /// Those no index names.
    missing: HashSet<ChunkId>,
}

/// The chunks in use: those maps name (a set that may be larger than
/// memory), and the bases of used deltas.
struct Used {
    maps: IdSet,
    bases: HashSet<ChunkId>,
}

impl Used {
    fn contains(&self, id: &ChunkId) -> bool {
        self.maps.contains(id) || self.bases.contains(id)
    }

    /// The chunks maps name, in id order (bases not included).
    fn named(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.maps.iter()
    }
}

/// Reads each selected snapshot's map; one that cannot be read is damage
/// to the whole snapshot.
fn check_maps(
    repo: &Repository,
    snaps: &[Snapshot],
    index: &Index,
    report: &mut VerifyReport,
) -> Result<Referenced> {
    let mut missing = HashSet::new();
    let mut used = IdSetBuilder::new(repo);
    for snap in snaps {
        match repo.open_map(snap) {
            Ok(mut map) => {
                for pos in 0..map.header().entries {
                    let e = map.entry(pos)?;
                    if e.kind == Kind::Data {
                        if !index.contains(&e.id) {
                            missing.insert(e.id);
                        }
                        used.insert(e.id)?;
                    }
                }
            }
            Err(e) => report.damage.push(Problem {
                affects: vec![AffectedRange {
                    snapshot: snap.id,
                    offset: 0,
                    len: snap.source.size,
                }],
                ..problem(
                    repo.describe(&crate::repo::names::map_name(&snap.id)),
                    e.message(),
                )
            }),
        }
    }
    Ok(Referenced {
        used: Used {
            maps: used.finish()?,
            bases: HashSet::new(),
        },
        missing,
    })
}

/// Chunks that snapshots use and no index names are one problem, which
/// says how many of them pack tables list (`rebuild-index` finds those).
fn report_unindexed(
    repo: &Repository,
    missing: HashSet<ChunkId>,
    in_tables_only: &HashSet<ChunkId>,
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
) {
    if missing.is_empty() {
        return;
    }
    let mut ids: Vec<ChunkId> = missing.into_iter().collect();
    ids.sort();
    let at = report.damage.len();
    let tabled = ids.iter().filter(|id| in_tables_only.contains(id)).count();
    let what = if tabled == 0 {
        format!(
            "{} chunk(s) used by snapshots are in no index (lost pack or index)",
            ids.len()
        )
    } else {
        format!(
            "{} chunk(s) used by snapshots are in no index (lost pack or index); pack \
             tables list {tabled} of them: run `platter rebuild-index`",
            ids.len()
        )
    };
    report.damage.push(Problem {
        chunks: ids.clone(),
        ..problem(repo.describe(Folder::Index.as_str()), &what)
    });
    for id in ids {
        bad_chunks.insert(id, at);
    }
}

/// Deltas in a repository whose config does not name the `deltas` feature
/// (a config edited or put back from before `upgrade`): a platter that
/// predates deltas would read the repository as damaged, and prune it.
fn check_features(repo: &Repository, index: &Index, report: &mut VerifyReport) {
    let deltas = index.delta_count();
    if deltas > 0 && !repo.config().has(crate::repo::config::DELTAS) {
        report.damage.push(problem(
            repo.describe(crate::repo::names::CONFIG),
            &format!(
                "the index holds {deltas} delta chunk(s), but the config does not name the \
                 `deltas` format feature (it was replaced or edited); run `platter upgrade` so \
                 that a platter without deltas refuses this repository"
            ),
        ));
    }
}

/// A used delta's base counts as used, and must be indexed whole: a delta
/// whose base is missing or is itself a delta cannot be rebuilt.
fn check_bases(
    repo: &Repository,
    index: &Index,
    used: &mut Used,
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
) {
    if index.delta_count() == 0 {
        return;
    }
    let (mut bases, mut broken) = (HashSet::new(), Vec::new());
    for id in used.named() {
        match index.base_of(&id) {
            Some(base) if index.has_whole(&base) => {
                bases.insert(base);
            }
            Some(_) => broken.push(id),
            None => {}
        }
    }
    used.bases = bases;
    if broken.is_empty() {
        return;
    }
    broken.sort();
    let at = report.damage.len();
    let what = format!(
        "{} chunk(s) used by snapshots are deltas whose base is not stored whole (lost, or \
         itself a delta): they cannot be rebuilt",
        broken.len()
    );
    report.damage.push(Problem {
        chunks: broken.clone(),
        ..problem(repo.describe(Folder::Index.as_str()), &what)
    });
    for id in broken {
        bad_chunks.insert(id, at);
    }
}

/// A delta cannot be rebuilt when its base is damaged: each used delta
/// over a damaged chunk joins that chunk's problem.
fn spread_to_deltas(
    index: &Index,
    used: &Used,
    bad_chunks: &mut HashMap<ChunkId, usize>,
    report: &mut VerifyReport,
) {
    if index.delta_count() == 0 {
        return;
    }
    let mut spread: Vec<(ChunkId, usize)> = used
        .named()
        .filter(|id| !bad_chunks.contains_key(id))
        .filter_map(|id| Some((id, *bad_chunks.get(&index.base_of(&id)?)?)))
        .collect();
    spread.sort();
    for (id, at) in spread {
        bad_chunks.insert(id, at);
        let chunks = &mut report.damage[at].chunks;
        chunks.push(id);
        chunks.sort();
    }
}

/// Indexed chunks no snapshot uses: leftovers (only said when every
/// snapshot was checked).
fn report_unused(repo: &Repository, index: &Index, referenced: &Used, report: &mut VerifyReport) {
    let unused = index
        .iter()
        .filter(|(id, _)| !referenced.contains(id))
        .count();
    if unused > 0 {
        report.leftovers.push(problem(
            repo.describe(Folder::Index.as_str()),
            &format!("{unused} stored chunk(s) are used by no snapshot (an interrupted backup?)"),
        ));
    }
}

/// The one manifest field the repository layer cannot read: the source's
/// layout, which is the disk layer's. A restore ignores one it cannot read
/// (the whole disk still restores, but cannot be fitted to another size
/// or cut to one partition), so it is damage here.
fn check_layout(repo: &Repository, snap: &Snapshot, report: &mut VerifyReport) {
    if let Some(Err(e)) = snap.parsed_layout::<crate::disk::layout::Layout>() {
        report.damage.push(problem(
            repo.describe(&crate::repo::names::manifest_name(&snap.id)),
            &format!(
                "its recorded layout is unreadable ({e}): a restore of snapshot {} ignores \
                 it, so it cannot fit the disk to another size or restore one partition",
                snap.short_id()
            ),
        ));
    }
}

/// Unfinished writes in any folder, and maps whose snapshot never got its
/// manifest: what an interrupted backup leaves behind.
fn find_stray_files(
    repo: &Repository,
    snapshot_ids: &HashSet<SnapshotId>,
    report: &mut VerifyReport,
) -> Result<()> {
    for folder in [
        Folder::Snapshots,
        Folder::Maps,
        Folder::Index,
        Folder::Locks,
        Folder::Keys,
    ] {
        let dir = folder.as_str();
        for file in repo.backend().list(dir)? {
            let name = folder.file(&file);
            if file.starts_with(TEMP_PREFIX) {
                report.leftovers.push(problem(
                    repo.describe(&name),
                    "unfinished write of an interrupted command",
                ));
            } else if classify(dir, &file) == FileName::Foreign {
                report
                    .leftovers
                    .push(problem(repo.describe(&name), "not a platter file"));
            } else if folder == Folder::Maps
                && SnapshotId::parse(&file).is_some_and(|id| !snapshot_ids.contains(&id))
            {
                report.leftovers.push(problem(
                    repo.describe(&name),
                    "map of a snapshot that was never committed (an interrupted backup)",
                ));
            }
        }
    }
    Ok(())
}

/// Every pack's table must be intact and agree with the index; every index
/// entry must point into an existing pack. Unindexed packs are leftovers.
/// Returns the chunks that pack tables list (with lengths the reader
/// accepts) and no index does: `rebuild-index` would index them.
fn check_packs(
    repo: &Repository,
    index: &Index,
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
) -> Result<HashSet<ChunkId>> {
    let on_disk = packs_on_disk(repo, report)?;
    report.packs = on_disk.len();
    let mut in_tables_only = HashSet::new();

    // How many chunks the index places in each pack: a pack whose table
    // confirms that many (and disagrees on none) is whole, and its chunks
    // are never listed. Only the others' are gathered (a second walk).
    let mut placed = vec![0u64; index.packs().len()];
    let mut chunks = 0;
    for (_, loc) in index.iter() {
        placed[loc.pack as usize] += 1;
        chunks += 1;
    }
    report.chunks = chunks;
    let numbers: Vec<u32> = (0..index.packs().len() as u32).collect();
    let mut suspects = Vec::new();
    // Tables a batch at once: each is a request or two on a store far
    // away, and all of them at once would not fit in memory.
    for batch in numbers.chunks(repo.backend().concurrency().max(1) * 4) {
        let tables = crate::repo::backend::each_at_once(repo.backend(), batch, |n| {
            let id = index.pack_id(*n);
            on_disk.contains_key(id).then(|| repo.read_pack_table(id))
        });
        for (&n, table) in batch.iter().zip(tables) {
            let whole = match table {
                Some(Ok((_, entries))) => {
                    in_tables_only.extend(unindexed(repo, index, &entries));
                    confirms(repo, index, n, &entries) == Some(placed[n as usize])
                }
                // The store is out of reach: nothing is known about the pack.
                Some(Err(e)) if e.is_transient() => return Err(e),
                Some(Err(_)) => false,
                None => placed[n as usize] == 0,
            };
            if !whole {
                suspects.push(n);
            }
        }
    }
    let mut chunks_of: HashMap<u32, Vec<(ChunkId, Location)>> =
        suspects.iter().map(|n| (*n, Vec::new())).collect();
    if !suspects.is_empty() {
        for (id, loc) in index.iter() {
            if let Some(list) = chunks_of.get_mut(&loc.pack) {
                list.push((id, loc));
            }
        }
    }
    let tables = crate::repo::backend::each_at_once(repo.backend(), &suspects, |n| {
        let id = index.pack_id(*n);
        on_disk.contains_key(id).then(|| repo.read_pack_table(id))
    });
    for (n, table) in suspects.iter().zip(tables) {
        let pack_id = index.pack_id(*n);
        let name = pack_name(pack_id);
        let chunks = chunks_of.remove(n).unwrap_or_default();
        let (Some(&len), Some(table)) = (on_disk.get(pack_id), table) else {
            if !chunks.is_empty() {
                record(
                    report,
                    bad_chunks,
                    repo.describe(&name),
                    "pack is missing",
                    &chunks,
                );
            }
            continue;
        };
        match table {
            Ok((_, entries)) => {
                compare_table(repo, (&name, &entries), &chunks, report, bad_chunks);
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                let beyond: Vec<_> = chunks
                    .iter()
                    .copied()
                    .filter(|(_, loc)| {
                        loc.offset
                            .checked_add(u64::from(loc.stored_len) + FOOTER_LEN)
                            .is_none_or(|end| end > len)
                    })
                    .collect();
                report
                    .damage
                    .push(problem(repo.describe(&name), e.message()));
                if !beyond.is_empty() {
                    record(
                        report,
                        bad_chunks,
                        repo.describe(&name),
                        "chunks lie beyond the end of the pack (truncated)",
                        &beyond,
                    );
                }
            }
        }
    }
    let indexed: HashSet<&PackId> = index.packs().iter().collect();
    let strays: Vec<&PackId> = on_disk.keys().filter(|id| !indexed.contains(id)).collect();
    let tables =
        crate::repo::backend::each_at_once(repo.backend(), &strays, |id| repo.read_pack_table(id));
    for (id, table) in strays.into_iter().zip(tables) {
        report.leftovers.push(problem(
            repo.describe(&pack_name(id)),
            "pack is in no index (left by an interrupted backup, or its index file was lost)",
        ));
        if let Ok((_, entries)) = table {
            in_tables_only.extend(unindexed(repo, index, &entries));
        }
    }
    Ok(in_tables_only)
}

/// How many of the chunks the index places in pack number `n` its table
/// `entries` confirms, as `compare_table` would: `None` when the table
/// disagrees on one, or holds an entry no chunk can have (then the pack
/// is looked at closely).
fn confirms(repo: &Repository, index: &Index, n: u32, entries: &[pack::PackEntry]) -> Option<u64> {
    let chunk_size = repo.config().chunk_size;
    let mut table: HashMap<ChunkId, &pack::PackEntry> = HashMap::new();
    for e in entries {
        e.check_lengths(chunk_size, repo.sealing()).ok()?;
        table.insert(e.id, e);
    }
    let mut confirmed = 0;
    for (id, e) in table {
        let Some(loc) = index.get(&id).filter(|loc| loc.pack == n) else {
            continue;
        };
        let indexed = loc.entry(id);
        if indexed != *e || indexed.check_lengths(chunk_size, repo.sealing()).is_err() {
            return None;
        }
        confirmed += 1;
    }
    Some(confirmed)
}

/// The committed packs and their lengths. Unfinished packs and names that
/// are not platter's are leftovers; a misplaced pack or one that cannot be
/// opened is damage.
fn packs_on_disk(repo: &Repository, report: &mut VerifyReport) -> Result<HashMap<PackId, u64>> {
    let backend = repo.backend();
    let mut on_disk: HashMap<PackId, u64> = HashMap::new();
    let mut packs: Vec<(String, PackId)> = Vec::new();
    for entry in pack::walk_data(backend)? {
        let found = match entry {
            DataEntry::Foreign(dir) => {
                report
                    .leftovers
                    .push(problem(repo.describe(&dir), "not a platter file"));
                continue;
            }
            DataEntry::File(found) => found,
        };
        let name = found.path();
        let id = match found.kind {
            FileName::Id(id) => id,
            FileName::Unfinished => {
                report.leftovers.push(problem(
                    repo.describe(&name),
                    "unfinished pack of an interrupted backup",
                ));
                continue;
            }
            FileName::Misplaced => {
                report.damage.push(problem(
                    repo.describe(&name),
                    &format!(
                        "misplaced pack: it belongs in data/{}/ (move it there)",
                        &found.file[..2]
                    ),
                ));
                continue;
            }
            FileName::Foreign => {
                report
                    .leftovers
                    .push(problem(repo.describe(&name), "not a platter file"));
                continue;
            }
        };
        packs.push((name, PackId::from_bytes(id)));
    }
    // Every pack at once: an open is a request on a store far away.
    let opened = crate::repo::backend::each_at_once(backend, &packs, |(name, _)| {
        backend.open(name).map(|file| file.len())
    });
    for ((name, id), opened) in packs.into_iter().zip(opened) {
        match opened {
            Ok(len) => {
                on_disk.insert(id, len);
            }
            Err(e) => report
                .damage
                .push(problem(repo.describe(&name), e.message())),
        }
    }
    Ok(on_disk)
}

/// One pack's table against the index, both ways: an index entry the table
/// lacks or disagrees with, and an entry (of the table or the index) the
/// chunk reader would refuse, are damage. Chunks the index places in this
/// pack are unreadable when the index entry is impossible or the table
/// does not confirm it.
fn compare_table(
    repo: &Repository,
    (name, entries): (&str, &[pack::PackEntry]),
    chunks: &[(ChunkId, Location)],
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
) {
    let chunk_size = repo.config().chunk_size;
    let file = repo.describe(name);
    let mut impossible = Vec::new();
    let mut table: HashMap<ChunkId, &pack::PackEntry> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        match e.check_lengths(chunk_size, repo.sealing()) {
            Ok(()) => {
                table.insert(e.id, e);
            }
            Err(why) => impossible.push((e.id, format!("entry {i} (chunk {}) {why}", e.id))),
        }
    }
    if !impossible.is_empty() {
        // The table is damaged, but the index may still locate these
        // chunks correctly (`--read-data` reads them where it says).
        report.damage.push(problem(
            file.clone(),
            &format!(
                "the pack table has {} entries with lengths no chunk can have \
                 (`rebuild-index` leaves them out): {}",
                impossible.len(),
                impossible
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    let (mut unlisted, mut disagree, mut bad_index) = (Vec::new(), Vec::new(), Vec::new());
    for &(id, loc) in chunks {
        let indexed = loc.entry(id);
        if indexed.check_lengths(chunk_size, repo.sealing()).is_err() {
            bad_index.push((id, loc));
        }
        match table.get(&id) {
            Some(e) if **e != indexed => disagree.push((id, loc)),
            Some(_) => {}
            None if impossible.iter().any(|(bad, _)| *bad == id) => {}
            None => unlisted.push((id, loc)),
        }
    }
    let hint = "run `platter rebuild-index` if the pack table is right (`verify --read-data` \
                reads the chunks where the index says)";
    for (what, list) in [
        (
            format!("index entries no chunk can have; {hint}"),
            bad_index,
        ),
        (
            format!("the index names chunks this pack's table does not list; {hint}"),
            unlisted,
        ),
        (
            format!("pack table and index disagree on where chunks are or how long; {hint}"),
            disagree,
        ),
    ] {
        let list: Vec<_> = list
            .into_iter()
            .filter(|(id, _)| !bad_chunks.contains_key(id))
            .collect();
        if !list.is_empty() {
            record(report, bad_chunks, file.clone(), &what, &list);
        }
    }
}

/// Chunks of a pack table that no index names and whose entry the reader
/// would accept.
fn unindexed<'e>(
    repo: &'e Repository,
    index: &'e Index,
    entries: &'e [pack::PackEntry],
) -> impl Iterator<Item = ChunkId> + 'e {
    entries
        .iter()
        .filter(|e| !index.contains(&e.id))
        .filter(|e| {
            e.check_lengths(repo.config().chunk_size, repo.sealing())
                .is_ok()
        })
        .map(|e| e.id)
}

fn record(
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
    file: String,
    what: &str,
    chunks: &[(ChunkId, crate::repo::index::Location)],
) {
    let at = report.damage.len();
    let mut ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
    ids.sort();
    for id in &ids {
        bad_chunks.insert(*id, at);
    }
    report.damage.push(Problem {
        chunks: ids.clone(),
        ..problem(file, &format!("{what} ({} chunk(s) unreadable)", ids.len()))
    });
}

/// Chunks listed for reading at once (about 30 MiB): a larger repository
/// is read a batch of packs at a time, so the list does not grow with it.
const WORK_BATCH: u64 = 1 << 19;

/// Reads every chunk (of the selected snapshots), pack by pack in offset
/// order, on every core.
fn read_data(
    repo: &Repository,
    index: &Index,
    referenced: &Used,
    options: &VerifyOptions,
    progress: &dyn Progress,
    report: &mut VerifyReport,
    bad_chunks: &mut HashMap<ChunkId, usize>,
) -> Result<()> {
    let wanted = |id: &ChunkId| {
        (options.snapshots.is_empty() || referenced.contains(id)) && !bad_chunks.contains_key(id)
    };
    // First the chunks of each pack, then batches of whole packs.
    let mut per_pack = vec![0u64; index.packs().len()];
    let mut total = 0u64;
    for (_, loc) in index.iter().filter(|(id, _)| wanted(id)) {
        per_pack[loc.pack as usize] += 1;
        total += u64::from(loc.stored_len);
    }
    let mut batches: Vec<std::ops::Range<u32>> = Vec::new();
    let mut held = 0u64;
    for (pack, &n) in per_pack.iter().enumerate() {
        match batches.last_mut() {
            Some(last) if held + n <= WORK_BATCH => {
                last.end = pack as u32 + 1;
                held += n;
            }
            _ => {
                batches.push(pack as u32..pack as u32 + 1);
                held = n;
            }
        }
    }
    drop(per_pack);
    progress.start("verify", total);
    let found: Mutex<Vec<(ChunkId, u32, String)>> = Mutex::new(Vec::new());
    // The first failure of the store itself, which stops the check.
    let outage: Mutex<Option<crate::Error>> = Mutex::new(None);
    for batch in batches {
        let mut work: Vec<(ChunkId, crate::repo::index::Location)> = index
            .iter()
            .filter(|(id, loc)| batch.contains(&loc.pack) && wanted(id))
            .collect();
        work.sort_by_key(|(_, loc)| (loc.pack, loc.offset));
        read_work(repo, index, &work, (&found, &outage), progress);
        if outage.lock().is_ok_and(|o| o.is_some()) {
            break;
        }
    }
    progress.finish();
    if let Some(e) = outage.into_inner().ok().flatten() {
        return Err(e);
    }
    report.bytes_read = total;
    let mut found = found.into_inner().unwrap_or_default();
    found.sort_by_key(|f| f.0);
    for (id, pack, why) in found {
        bad_chunks.insert(id, report.damage.len());
        report.damage.push(Problem {
            chunks: vec![id],
            ..problem(repo.describe(&pack_name(index.pack_id(pack))), &why)
        });
    }
    Ok(())
}

/// Reads and checks the chunks of `work` (sorted by pack and offset) on
/// every core.
fn read_work(
    repo: &Repository,
    index: &Index,
    work: &[(ChunkId, crate::repo::index::Location)],
    findings: Findings,
    progress: &dyn Progress,
) {
    let readers = super::reader_count(repo);
    // Neighbouring chunks of a pack are read at once where a read costs a
    // request.
    let limit = crate::repo::span_limit(repo.backend(), readers);
    let cuts = crate::repo::spans(work.iter().map(|(_, loc)| loc), limit);
    let (tx, rx) = bounded::<&[(ChunkId, crate::repo::index::Location)]>(readers);
    let pool = BufPool::new(repo.config().chunk_size as usize, readers * 2);
    std::thread::scope(|scope| {
        for _ in 0..readers {
            let (rx, pool) = (rx.clone(), pool.clone());
            scope.spawn(move || {
                let mut reader = repo.chunk_reader(pool, index).thorough();
                for span in rx.iter() {
                    check_span(&mut reader, index, span, findings, progress);
                }
            });
        }
        drop(rx);
        for cut in cuts {
            if tx.send(&work[cut]).is_err() {
                break;
            }
        }
        drop(tx);
    });
}

/// What the readers of `read_data` share: the damaged chunks found (id,
/// pack number, why), and the first failure of the store itself.
type Findings<'f> = (
    &'f Mutex<Vec<(ChunkId, u32, String)>>,
    &'f Mutex<Option<crate::Error>>,
);

/// Reads and checks the chunks of one span (see `read_data`); stops at an
/// outage of the store, which it records.
fn check_span(
    reader: &mut crate::repo::ChunkReader,
    index: &Index,
    span: &[(ChunkId, crate::repo::index::Location)],
    (found, outage): Findings,
    progress: &dyn Progress,
) {
    let Some((_, first)) = span.first() else {
        return;
    };
    reader.read_span(index.pack_id(first.pack), span, &mut |i, read| {
        if outage.lock().is_ok_and(|o| o.is_some()) {
            return false;
        }
        let Some(&(id, loc)) = span.get(i) else {
            return false;
        };
        if let Err(e) = read {
            if e.is_transient() {
                if let Ok(mut o) = outage.lock() {
                    o.get_or_insert(e);
                }
                return false;
            }
            let why = if e.kind() == ErrorKind::Corrupt {
                e.message().to_string()
            } else {
                format!("cannot read: {e}")
            };
            if let Ok(mut f) = found.lock() {
                f.push((id, loc.pack, why));
            }
        }
        progress.advance(u64::from(loc.stored_len));
        true
    });
}

/// Second pass over the maps: which snapshots, at which offsets, need the
/// bad chunks. Adjacent positions are merged into one range.
fn attribute(
    repo: &Repository,
    snaps: &[Snapshot],
    bad_chunks: &HashMap<ChunkId, usize>,
    report: &mut VerifyReport,
) -> Result<()> {
    for snap in snaps {
        let Ok(mut map) = repo.open_map(snap) else {
            continue;
        };
        let header = *map.header();
        for pos in 0..header.entries {
            let e = map.entry(pos)?;
            if e.kind != Kind::Data {
                continue;
            }
            let Some(&at) = bad_chunks.get(&e.id) else {
                continue;
            };
            let offset = pos * header.chunk_size;
            let len = header.chunk_len(pos);
            let affects = &mut report.damage[at].affects;
            match affects.last_mut() {
                Some(last) if last.snapshot == snap.id && last.offset + last.len == offset => {
                    last.len += len;
                }
                _ => affects.push(AffectedRange {
                    snapshot: snap.id,
                    offset,
                    len,
                }),
            }
        }
    }
    Ok(())
}
