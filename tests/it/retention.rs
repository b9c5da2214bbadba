//! Retention and space: `forget` by policy or name (protected snapshots
//! stay), `prune` frees what only forgotten snapshots used, a prune killed
//! at any moment never loses a chunk a remaining snapshot needs, and the
//! locks that let backups run side by side keep prune out while they run.
//! The policy's tables (which snapshot each rule keeps) are unit tests in
//! src/engine/retention/tests.rs, where times can be chosen.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;

/// Bytes of every pack in the repository.
fn pack_bytes(sandbox: &Sandbox) -> u64 {
    sandbox
        .packs()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Four snapshots of a 1 MiB image; each after the first rewrites the
/// same quarter with fresh random bytes, so each holds 4 chunks no other
/// snapshot has.
fn four_snapshots(sandbox: &Sandbox) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(0x7e_7a11);
    let mut image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let mut taken = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            image.write_random(&mut rng, 4 * CHUNK, 4 * CHUNK);
        }
        taken.push((sandbox.snapshot_of(&image.path, &[]), image.bytes.clone()));
    }
    taken
}

// Pins: forget --keep-last 1 --dry-run lists each snapshot with keep/remove and its reasons and changes nothing; the real run removes exactly those, the protected one stays, and protect --remove makes it forgettable.
#[test]
fn forget_keeps_what_the_policy_and_protection_say() {
    let sandbox = Sandbox::new();
    let taken = four_snapshots(&sandbox);
    let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
    sandbox.run(["protect", ids[0]]).ok();
    let before = sandbox.repo_tree();

    let dry = sandbox
        .run(["--json", "forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .json();
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a dry run changed the repository"
    );
    let decisions: Vec<(String, bool, Vec<String>)> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["snapshot"].as_str().unwrap().to_string(),
                d["keep"].as_bool().unwrap(),
                d["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            (ids[0].to_string(), true, vec!["protected".to_string()]),
            (ids[1].to_string(), false, vec![]),
            (ids[2].to_string(), false, vec![]),
            (ids[3].to_string(), true, vec!["last 1".to_string()]),
        ]
    );
    let text = sandbox
        .run(["forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .stdout
        .clone();
    assert!(
        text.contains("would remove") && text.contains("protected") && text.contains("last 1"),
        "{text}"
    );

    let done = sandbox
        .run(["--json", "forget", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(done["removed"], serde_json::json!([ids[1], ids[2]]));
    assert_eq!(sandbox.snapshot_ids(), [ids[0], ids[3]]);
    sandbox.assert_restores(ids[0], &taken[0].1);
    sandbox.assert_restores(ids[3], &taken[3].1);

    sandbox.run(["forget", ids[0]]).refused(2, "protected");
    sandbox.run(["protect", "--remove", ids[0]]).ok();
    sandbox.run(["forget", ids[0]]).ok();
    assert_eq!(sandbox.snapshot_ids(), [ids[3]]);
    sandbox.run(["forget"]).refused(2, "say what to keep");
    verify_clean(&sandbox.repo);
}

// Pins: after forgetting half the snapshots (forget --prune), prune shrinks the packs by about the bytes only they used (their chunks are random, so incompressible), every remaining snapshot restores, and verify --read-data is clean.
#[test]
fn prune_frees_what_only_forgotten_snapshots_used() {
    let sandbox = Sandbox::new();
    let taken = four_snapshots(&sandbox);
    let before = pack_bytes(&sandbox);
    // Snapshots 2 and 3 alone hold the quarters they wrote: 8 chunks.
    let forgot = sandbox
        .run([
            "--json",
            "forget",
            &taken[1].0,
            &taken[2].0,
            "--prune",
            "--repack-percent",
            "1",
        ])
        .ok()
        .json();
    let report = &forgot["prune"];
    let after = pack_bytes(&sandbox);
    let only_theirs = 8 * CHUNK;
    let freed = before - after;
    assert!(
        freed >= only_theirs && freed < only_theirs + 64 * 1024,
        "freed {freed} bytes, expected about {only_theirs}: {report:#}"
    );
    assert_eq!(
        report["bytes_before"].as_u64().unwrap() - report["bytes_after"].as_u64().unwrap(),
        freed
    );
    sandbox.assert_restores(&taken[0].0, &taken[0].1);
    sandbox.assert_restores(&taken[3].0, &taken[3].1);
    verify_clean(&sandbox.repo);
    // Nothing left to do: a second prune frees nothing.
    let again = sandbox.run(["--json", "prune"]).ok().json();
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["bytes_before"], again["bytes_after"]);
}

// Pins: prune killed with -9 at 16 moments spread over its run never loses a chunk a remaining snapshot needs: verify --read-data stays clean and every remaining snapshot restores byte for byte; the next prune completes.
#[test]
fn killed_prunes_never_lose_a_needed_chunk() {
    let template = Sandbox::new();
    let mut rng = Rng::new(0x7e_7a12);
    // Six snapshots of a 24 MiB image, each rewriting the same 4 MiB.
    // Forgetting the first leaves its pack mostly live (repacked); the
    // packs of the second and fourth die whole (deleted).
    let mut image = Image::random(template.path("disk.img"), 24 << 20, &mut rng);
    let mut taken = Vec::new();
    for round in 0..6u64 {
        if round > 0 {
            image.write_random(&mut rng, 4 << 20, 4 << 20);
        }
        taken.push((template.snapshot_of(&image.path, &[]), image.bytes.clone()));
    }
    template
        .run(["forget", &taken[0].0, &taken[1].0, &taken[3].0])
        .ok();
    let kept = [&taken[2], &taken[4], &taken[5]];

    // How long an uninterrupted prune takes, on a copy.
    let timing = template.path("timing");
    copy_dir(&template.repo, &timing);
    let started = Instant::now();
    run([
        OsStr::new("-r"),
        timing.as_os_str(),
        "prune".as_ref(),
        "--repack-percent".as_ref(),
        "1".as_ref(),
    ])
    .ok();
    let full = started.elapsed();

    // Kills spread over the prune's duration; a kill that comes after the
    // prune ended shrinks the spread (the machine may be faster now than
    // when it was timed), until 16 kills have hit a running prune.
    let (mut interrupted, mut rounds, mut spread) = (0u32, 0u32, full);
    while interrupted < 16 && rounds < 48 {
        rounds += 1;
        let sandbox = Sandbox::new();
        fs::remove_dir_all(&sandbox.repo).unwrap();
        copy_dir(&template.repo, &sandbox.repo);
        let delay = spread.mul_f64(f64::from(interrupted % 16) / 15.0);
        let mut child = spawn(
            &sandbox,
            &["prune".as_ref(), "--repack-percent".as_ref(), "1".as_ref()],
        );
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        } else {
            spread = spread.mul_f64(0.7);
        }
        let _ = child.kill();
        child.wait().unwrap();
        let report = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
        assert_eq!(
            report["damage"],
            Value::Array(vec![]),
            "after a kill at {delay:?}: {report:#}"
        );
        for (id, bytes) in kept {
            sandbox.assert_restores(id, bytes);
        }
        let finished = sandbox.run(["--json", "prune"]).ok().json();
        assert_eq!(finished["chunks_missing"], 0, "{finished}");
        verify_clean(&sandbox.repo);
    }
    eprintln!("prune took {full:?}; {interrupted} of {rounds} kills interrupted it");
    assert_eq!(
        interrupted, 16,
        "only {interrupted} of {rounds} kills hit a running prune ({full:?})"
    );
}

/// Copies a folder tree (a repository) with `cp -a`.
fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

// Pins: two backups into one repository at the same time both commit and both restore; a prune started while a backup holds the repository is refused as busy (exit 5) naming the backup, and works once it is done.
#[test]
fn backups_share_the_repository_and_keep_prune_out() {
    let sandbox = Sandbox::new();
    let a = sandbox.path("a.img");
    let b = sandbox.path("b.img");
    urandom_file(&a, 96 << 20);
    urandom_file(&b, 96 << 20);
    let log_b = fs::File::create(sandbox.path("b.log")).unwrap();
    let mut first = spawn(&sandbox, &["backup".as_ref(), a.as_os_str()]);
    let mut second = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("backup")
        .arg(&b)
        .stdout(std::process::Stdio::null())
        .stderr(log_b)
        .spawn()
        .unwrap();
    // Committed lock files (a `.tmp-` one is still being written).
    let locked = wait_until(Duration::from_secs(20), || {
        fs::read_dir(sandbox.repo.join("locks"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
            .unwrap_or(false)
    });
    assert!(locked, "no backup took a lock");
    let busy = sandbox.run(["prune"]);
    let still_running = first.try_wait().unwrap().is_none() || second.try_wait().unwrap().is_none();
    if still_running {
        busy.refused(5, "in use by `backup`");
    }
    assert!(
        first.wait().unwrap().success(),
        "{}",
        fs::read_to_string(sandbox.path("stderr.log")).unwrap_or_default()
    );
    assert!(
        second.wait().unwrap().success(),
        "{}",
        fs::read_to_string(sandbox.path("b.log")).unwrap_or_default()
    );
    assert_eq!(sandbox.snapshot_ids().len(), 2);
    let listed = sandbox.run(["--json", "snapshots"]).ok().json();
    for s in listed.as_array().unwrap() {
        let source = Path::new(s["source"]["path"].as_str().unwrap()).to_path_buf();
        let target = sandbox.path(&format!("{}.out", random_name()));
        sandbox
            .restore(s["id"].as_str().unwrap(), &target, &[])
            .ok();
        assert!(
            fs::read(&target).unwrap() == fs::read(&source).unwrap(),
            "{} restored wrong",
            source.display()
        );
        fs::remove_file(&target).unwrap();
    }
    sandbox.run(["prune"]).ok();
    verify_clean(&sandbox.repo);
}

// Pins: prune never drops a chunk that a snapshot needs when a chunk's indexed copy is damaged and another pack holds an intact copy (that copy is kept), or when a pack's table is unreadable (its index entries are carried over).
#[test]
fn prune_keeps_intact_duplicates_and_chunks_of_unreadable_packs() {
    let sandbox = Sandbox::new();
    let taken = four_snapshots(&sandbox);
    // A second copy of every pack under a new name: every chunk is stored
    // twice, as concurrent backups of the same data leave it.
    for pack in sandbox.packs() {
        let name = blake3::hash(pack.to_string_lossy().as_bytes())
            .to_hex()
            .to_string();
        let dir = sandbox.repo.join("data").join(&name[..2]);
        fs::create_dir_all(&dir).unwrap();
        fs::copy(&pack, dir.join(&name)).unwrap();
    }
    // Damage, in an indexed pack, one chunk of the first snapshot.
    let (pack, blob) = stored_chunk_of(&sandbox, &taken[0].0, |p| indexed_pack(&sandbox, p));
    flip_byte(&pack, blob.offset + 7);
    let report = sandbox.run(["--json", "prune"]).ok().json();
    assert!(report["packs_deleted"].as_u64().unwrap() >= 1, "{report:#}");
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }

    // Now make unreadable the table of the pack holding the intact copy
    // (a damaged copy may still be listed by another pack's table): prune
    // keeps what the index finds there, and never swaps in the bad copy.
    let pack = sandbox
        .packs()
        .into_iter()
        .find(|p| *p != pack && pack_table(p).iter().any(|b| b.id == blob.id))
        .expect("a pack with the intact copy");
    let len = fs::metadata(&pack).unwrap().len();
    flip_byte(&pack, len - 1);
    let report = sandbox.run(["--json", "prune"]).ok().json();
    assert_eq!(report["chunks_missing"], 0, "{report:#}");
    assert_eq!(
        report["damaged_packs"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

/// Whether some index file names this pack.
fn indexed_pack(sandbox: &Sandbox, pack: &Path) -> bool {
    let name = pack.file_name().unwrap().to_str().unwrap();
    let id: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    files_under(&sandbox.repo.join("index"))
        .iter()
        .any(|f| fs::read(f).unwrap().windows(32).any(|w| w == id.as_slice()))
}

// Pins: a keep count of 0 is refused (it would forget everything), and nothing is removed.
#[test]
fn a_keep_count_of_zero_is_refused() {
    let sandbox = Sandbox::new();
    four_snapshots(&sandbox);
    let before = sandbox.snapshot_ids();
    sandbox.run(["forget", "--keep-last", "0"]).expect_code(2);
    assert_eq!(sandbox.snapshot_ids(), before);
}
