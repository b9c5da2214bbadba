//! A fault at every step, deterministically: repositories in memory behind
//! a backend that fails at the Nth step that writes (`FaultyBackend`). For
//! backup, copy, prune and repair, a clean run is recorded first; then each
//! of its writing steps is faulted in turn, once as an error the command
//! sees (a full disk, a lost connection) and once as the process dying
//! there. After each: the repository opens, `verify --read-data` finds no
//! damage, every snapshot that existed restores byte for byte, and a rerun
//! completes and restores.

use std::path::Path;
use std::sync::Arc;

use platter::codec::Compression;
use platter::engine::backup::{BackupOptions, backup};
use platter::engine::copy::{CopyOptions, copy};
use platter::engine::prune::{PruneOptions, prune};
use platter::engine::repair::repair;
use platter::engine::restore::{RestoreOptions, restore};
use platter::engine::verify::{VerifyOptions, verify};
use platter::progress::Quiet;
use platter::repo::backend::{Fault, FaultPlan, FaultyBackend, MemoryBackend, SharedBackend, Step};
use platter::repo::keys::NoPassphrase;
use platter::repo::names::Folder;
use platter::repo::{NewKey, Repository};

use super::common::*;

/// A memory store and an image file beside it.
struct Bench {
    dir: tempfile::TempDir,
    rng: Rng,
}

impl Bench {
    fn new(seed: u64) -> Bench {
        Bench {
            dir: tempfile::tempdir().expect("a temporary folder"),
            rng: Rng::new(seed),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A new plain repository in memory.
    fn repository(&self) -> MemoryBackend {
        let store = MemoryBackend::new();
        Repository::init_in(shared(&store), CHUNK, Compression::Lz4, NewKey::Plain)
            .expect("init in memory");
        store
    }

    /// An image of `chunks` chunks, some random, some zero.
    fn image(&mut self, name: &str, chunks: u64) -> Image {
        let mut image = Image::random(self.path(name), chunks * CHUNK + 123, &mut self.rng);
        image.write_zeros(CHUNK, 2 * CHUNK);
        image
    }
}

fn shared(store: &MemoryBackend) -> SharedBackend {
    Arc::new(store.clone())
}

fn open(backend: SharedBackend) -> platter::Result<Repository> {
    Repository::open_in(backend, &NoPassphrase)
}

fn backup_of(repo: &Repository, image: &Image) -> platter::Result<String> {
    backup(repo, &image.path, &BackupOptions::default(), &Quiet).map(|s| s.id.to_hex())
}

/// What a finished process leaves that the next one sees as stale: locks
/// it could not remove (their pid is gone), which the next command or
/// `unlock` removes. This test process lives on, so they go here.
fn bury(store: &MemoryBackend) {
    let files = store.snapshot_files().expect("the store");
    for name in files
        .keys()
        .filter(|n| n.starts_with(Folder::Locks.as_str()))
    {
        store.put(name, None).expect("the store");
    }
}

/// The repository opens, verify --read-data finds no damage, and each of
/// `kept` (snapshot id, bytes) restores byte for byte.
fn assert_whole(store: &MemoryBackend, kept: &[(String, Vec<u8>)], scratch: &Path, what: &str) {
    let repo = open(shared(store)).unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
    let options = VerifyOptions {
        read_data: true,
        snapshots: Vec::new(),
    };
    let report = verify(&repo, &options, &Quiet).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        report.damage.is_empty(),
        "{what}: damage {:?}",
        report.damage
    );
    for (id, bytes) in kept {
        let target = scratch.join(format!("restored-{}", random_name()));
        restore(&repo, id, &target, &RestoreOptions::default(), &Quiet)
            .unwrap_or_else(|e| panic!("{what}: snapshot {id} does not restore: {e}"));
        assert_file_is(&target, bytes, &format!("{what}: snapshot {id}"));
        std::fs::remove_file(&target).expect("remove a restored file");
    }
}

/// Runs `command` over a faulty view of a fork of `base`, once with no
/// fault to count its writing steps, then once per step and fault. After
/// each fault, `check` gets the forked store.
fn at_every_write(
    base: &MemoryBackend,
    command: &dyn Fn(&SharedBackend) -> platter::Result<()>,
    check: &dyn Fn(&MemoryBackend, String),
) -> usize {
    let clean = base.fork().expect("fork");
    let counting = FaultyBackend::new(shared(&clean), None);
    command(&(counting.clone() as SharedBackend)).expect("the command without a fault");
    let writes: Vec<(Step, String)> = counting
        .steps()
        .into_iter()
        .filter(|(step, _)| step.writes())
        .collect();
    assert!(!writes.is_empty(), "the command wrote nothing");
    // The counts the closing notes quote (`-- --nocapture`).
    eprintln!("{} writing steps, each faulted twice", writes.len());
    for (at, (step, name)) in writes.iter().enumerate() {
        for fault in [Fault::Fail, Fault::Die] {
            let store = base.fork().expect("fork");
            let plan = FaultPlan {
                at,
                counts: Step::writes,
                fault,
            };
            let faulty = FaultyBackend::new(shared(&store), Some(plan));
            // A fault after the commit (releasing the lock) may leave the
            // command successful; before it, it must not.
            let _outcome = command(&(faulty.clone() as SharedBackend));
            let what = format!("{fault:?} at write {at} ({step:?} {name})");
            assert!(faulty.struck(), "{what}: the fault never struck");
            // The command's process is over either way.
            bury(&store);
            check(&store, what);
        }
    }
    writes.len()
}

// Pins: a backup faulted at any of its writing steps, by an error or by the process dying there, leaves a repository that verifies without damage, in which the earlier snapshot restores byte for byte, and a rerun succeeds and restores.
#[test]
fn a_backup_faulted_at_any_write_harms_nothing() {
    let mut bench = Bench::new(0xfa_0001);
    let base = bench.repository();
    let mut image = bench.image("disk.img", 24);
    let first = backup_of(&open(shared(&base)).expect("open"), &image).expect("first backup");
    let kept = vec![(first, image.bytes.clone())];
    image.write_random(&mut bench.rng, 5 * CHUNK, 7 * CHUNK);
    let scratch = bench.path("");
    let writes = at_every_write(
        &base,
        &|backend| backup_of(&open(backend.clone())?, &image).map(drop),
        &|store, what| {
            assert_whole(store, &kept, &scratch, &what);
            let rerun = backup_of(&open(shared(store)).expect("open"), &image)
                .unwrap_or_else(|e| panic!("{what}: the rerun failed: {e}"));
            let mut all = kept.clone();
            all.push((rerun, image.bytes.clone()));
            assert_whole(store, &all, &scratch, &format!("{what}, after the rerun"));
        },
    );
    assert!(writes >= 5, "only {writes} writing steps");
}

// Pins: a copy faulted at any writing step in the repository it copies into leaves that repository without damage, its snapshots restore, and a rerun copies the rest.
#[test]
fn a_copy_faulted_at_any_write_harms_nothing() {
    let mut bench = Bench::new(0xfa_0002);
    let here = bench.repository();
    let there = bench.repository();
    let mut image = bench.image("disk.img", 20);
    let repo = open(shared(&here)).expect("open");
    let mut taken = Vec::new();
    for round in 0..3 {
        if round > 0 {
            image.write_random(&mut bench.rng, (round * 6) * CHUNK, 4 * CHUNK);
        }
        taken.push((
            backup_of(&repo, &image).expect("backup"),
            image.bytes.clone(),
        ));
    }
    let options = |ids: &[&(String, Vec<u8>)]| CopyOptions {
        selection: platter::engine::snapshots::Selection {
            ids: ids.iter().map(|(id, _)| id.clone()).collect(),
            ..Default::default()
        },
        ..CopyOptions::default()
    };
    copy(
        &repo,
        &open(shared(&there)).expect("open"),
        &options(&[&taken[0]]),
        &Quiet,
    )
    .expect("the first copy");
    let scratch = bench.path("");
    at_every_write(
        &there,
        &|backend| {
            copy(
                &repo,
                &open(backend.clone())?,
                &CopyOptions::default(),
                &Quiet,
            )
            .map(drop)
        },
        &|store, what| {
            assert_whole(store, &taken[..1], &scratch, &what);
            copy(
                &repo,
                &open(shared(store)).expect("open"),
                &CopyOptions::default(),
                &Quiet,
            )
            .unwrap_or_else(|e| panic!("{what}: the rerun failed: {e}"));
            assert_whole(store, &taken, &scratch, &format!("{what}, after the rerun"));
        },
    );
}

// Pins: a prune faulted at any writing step (repacking, the new index, removing packs and maps) leaves every remaining snapshot restorable and the repository without damage, and a rerun completes.
#[test]
fn a_prune_faulted_at_any_write_harms_nothing() {
    let mut bench = Bench::new(0xfa_0003);
    let base = bench.repository();
    let repo = open(shared(&base)).expect("open");
    let mut image = bench.image("disk.img", 24);
    let mut taken = Vec::new();
    for round in 0..4 {
        if round > 0 {
            image.write_random(&mut bench.rng, (round * 5) * CHUNK, 6 * CHUNK);
        }
        taken.push((
            backup_of(&repo, &image).expect("backup"),
            image.bytes.clone(),
        ));
    }
    // The first and third go: their chunks are partly shared, partly not,
    // so prune both deletes and repacks.
    let (all, _) = repo.snapshots().expect("snapshots");
    for gone in [&taken[0].0, &taken[2].0] {
        let snap = all
            .iter()
            .find(|s| s.id.to_hex() == *gone)
            .expect("a snapshot");
        repo.remove_snapshot(snap).expect("remove a snapshot");
    }
    let kept = vec![taken[1].clone(), taken[3].clone()];
    let options = PruneOptions {
        dry_run: false,
        repack_percent: 1,
    };
    let scratch = bench.path("");
    let writes = at_every_write(
        &base,
        &|backend| prune(&open(backend.clone())?, &options, &Quiet).map(drop),
        &|store, what| {
            assert_whole(store, &kept, &scratch, &what);
            prune(&open(shared(store)).expect("open"), &options, &Quiet)
                .unwrap_or_else(|e| panic!("{what}: the rerun failed: {e}"));
            assert_whole(store, &kept, &scratch, &format!("{what}, after the rerun"));
        },
    );
    assert!(writes >= 3, "only {writes} writing steps");
}

// Pins: a repair faulted at any writing step leaves the damage it was mending as it was (never more), and a rerun repairs it: verify clean, every snapshot restores.
#[test]
fn a_repair_faulted_at_any_write_harms_nothing() {
    let mut bench = Bench::new(0xfa_0004);
    let base = bench.repository();
    let copy_store = bench.repository();
    let repo = open(shared(&base)).expect("open");
    let mut image = bench.image("disk.img", 16);
    let mut taken = Vec::new();
    for round in 0..2 {
        if round > 0 {
            image.write_random(&mut bench.rng, 4 * CHUNK, 4 * CHUNK);
        }
        taken.push((
            backup_of(&repo, &image).expect("backup"),
            image.bytes.clone(),
        ));
    }
    let other = open(shared(&copy_store)).expect("open");
    copy(&repo, &other, &CopyOptions::default(), &Quiet).expect("copy");
    // Lose a pack here.
    let files = base.snapshot_files().expect("files");
    let pack = files
        .keys()
        .find(|n| n.starts_with(Folder::Data.as_str()))
        .expect("a pack");
    base.put(pack, None).expect("remove a pack");
    let damaged = |store: &MemoryBackend| {
        let options = VerifyOptions {
            read_data: true,
            snapshots: Vec::new(),
        };
        let report = verify(&open(shared(store)).expect("open"), &options, &Quiet).expect("verify");
        report.damage.len()
    };
    let before = damaged(&base);
    assert!(before > 0, "the lost pack is not damage");
    let scratch = bench.path("");
    at_every_write(
        &base,
        &|backend| repair(&open(backend.clone())?, &other, &Quiet).map(drop),
        &|store, what| {
            assert!(damaged(store) <= before, "{what}: more damage than before");
            repair(&open(shared(store)).expect("open"), &other, &Quiet)
                .unwrap_or_else(|e| panic!("{what}: the rerun failed: {e}"));
            assert_whole(store, &taken, &scratch, &format!("{what}, after the rerun"));
        },
    );
}

// Pins: a store that goes out of reach at any step of verify --read-data or of a restore stops the command with a transient I/O error (exit 6), never a report of damage (the data is fine, only unreachable; a hostile session saw an outage reported as 40 damaged packs).
#[test]
fn an_outage_is_never_reported_as_damage() {
    let mut bench = Bench::new(0xfa_0005);
    let base = bench.repository();
    let mut image = bench.image("disk.img", 24);
    let repo = open(shared(&base)).expect("open");
    backup_of(&repo, &image).expect("backup");
    image.write_random(&mut bench.rng, 3 * CHUNK, 9 * CHUNK);
    let id = backup_of(&repo, &image).expect("backup");
    let verify_all = VerifyOptions {
        read_data: true,
        snapshots: Vec::new(),
    };
    let opens = |run: &dyn Fn(&Repository)| {
        let counting = FaultyBackend::new(shared(&base), None);
        run(&open(counting.clone() as SharedBackend).expect("open"));
        counting
            .steps()
            .iter()
            .filter(|(s, _)| *s == Step::Open)
            .count()
    };
    let target = bench.path("restored.img");
    let verify_run = |repo: &Repository| drop(verify(repo, &verify_all, &Quiet));
    let restore_run = |repo: &Repository| {
        let _ = std::fs::remove_file(&target);
        drop(restore(
            repo,
            &id,
            &target,
            &RestoreOptions::default(),
            &Quiet,
        ));
    };
    for (what, run) in [
        ("verify", &verify_run as &dyn Fn(&Repository)),
        ("restore", &restore_run),
    ] {
        let steps = opens(run);
        for at in 0..steps {
            let plan = FaultPlan {
                at,
                counts: |s| s == Step::Open,
                fault: Fault::Outage,
            };
            let faulty = FaultyBackend::new(shared(&base), Some(plan));
            let Ok(repo) = open(faulty.clone() as SharedBackend) else {
                continue;
            };
            let _ = std::fs::remove_file(&target);
            let outcome = match what {
                "verify" => verify(&repo, &verify_all, &Quiet).map(|r| r.damage.len()),
                _ => restore(&repo, &id, &target, &RestoreOptions::default(), &Quiet)
                    .map(|r| r.damaged.len()),
            };
            match outcome {
                Err(e) => assert!(e.is_transient(), "{what}, outage at open {at}: {e}"),
                Ok(damage) => assert!(
                    !faulty.struck() || damage == 0,
                    "{what}, outage at open {at}: reported {damage} damage"
                ),
            }
        }
    }
}

/// The pack that holds chunk `bytes` and where in it, from the index.
fn stored_at(repo: &Repository, bytes: &[u8]) -> (String, platter::repo::index::Location) {
    let (index, _) = repo.load_index().expect("the index");
    let id = platter::codec::ChunkId::of(bytes);
    let loc = index.get(&id).expect("the chunk is indexed");
    (
        platter::repo::names::pack_name(index.pack_id(loc.pack)),
        loc,
    )
}

// Pins: on a store read in spans (neighbouring chunks of a pack with one read), a damaged chunk in the middle of a span damages exactly its own range, and a pack cut short damages exactly the chunks past the cut; every other byte restores.
#[test]
fn a_span_read_names_exactly_the_damaged_chunks() {
    let mut bench = Bench::new(0x5ba7);
    let store = bench.repository();
    let image = bench.image("span.img", 24);
    let repo = open(shared(&store)).expect("open");
    let id = backup_of(&repo, &image).expect("backup");
    let len = image.bytes.len();
    let range = |k: u64| (k * CHUNK) as usize..(((k + 1) * CHUNK) as usize).min(len);
    let chunk = |k: u64| &image.bytes[range(k)];
    // Damage chunk 10 (the middle of a span), and cut the pack inside chunk 20.
    let (pack, middle) = stored_at(&repo, chunk(10));
    let (cut_pack, cut) = stored_at(&repo, chunk(20));
    assert_eq!(pack, cut_pack, "the test wants both chunks in one pack");
    let mut bytes = store.snapshot_files().expect("the store")[&pack].clone();
    bytes[(middle.offset + 7) as usize] ^= 0x10;
    bytes.truncate((cut.offset + 5) as usize);
    store.put(&pack, Some(bytes)).expect("the store");
    let target = bench.path("restored.img");
    let options = RestoreOptions {
        continue_on_error: true,
        ..RestoreOptions::default()
    };
    let report = restore(&repo, &id, &target, &options, &Quiet).expect("restore goes on");
    let damaged: Vec<u64> = report.damaged.iter().map(|d| d.offset / CHUNK).collect();
    // Chunks lie in a pack in the order they were stored, which is not
    // always the image's: every chunk of that pack past the cut is gone.
    // (Chunks 1 and 2 are zeros, stored nowhere.)
    let expected: Vec<u64> = (0..25)
        .filter(|&k| k != 1 && k != 2)
        .filter(|&k| {
            let (in_pack, loc) = stored_at(&repo, chunk(k));
            k == 10 || (in_pack == pack && loc.offset >= cut.offset)
        })
        .collect();
    assert_eq!(damaged, expected, "{:?}", report.damaged);
    let mut want = image.bytes.clone();
    for &k in &expected {
        want[range(k)].fill(0);
    }
    assert_file_is(&target, &want, "the restore around the damage");
}
