//! Crash safety and locks: a backup killed with SIGKILL at any moment must
//! leave a repository that opens, verifies clean (leftovers aside), restores
//! every earlier snapshot byte for byte and takes the next backup; a lock
//! left by a dead process must not block anyone for long.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::common::{
    CHUNK, Image, Rng, Sandbox, assert_file_is, files_under, is_temporary, spawn, urandom_file,
    wait_until,
};

/// When to kill a running backup.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    After(Duration),
    /// As soon as a new pack is committed (renamed into place), before any
    /// index names it.
    PackCommitted,
    /// Never: the backup runs to its end.
    Finished,
}

/// BLAKE3 of a file, streamed.
fn file_hash(path: &Path) -> String {
    let mut file = File::open(path).expect("cannot open file to hash");
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("cannot read file to hash");
        if n == 0 {
            return hasher.finalize().to_hex().to_string();
        }
        hasher.update(&buf[..n]);
    }
}

/// Runs `platter backup SOURCE` and kills it at `point`.
fn backup_killed_at(sandbox: &Sandbox, source: &Path, point: KillPoint) {
    let packs_before = sandbox.packs().len();
    let mut child = spawn(sandbox, &[OsStr::new("backup"), source.as_os_str()]);
    match point {
        KillPoint::After(delay) => std::thread::sleep(delay),
        KillPoint::PackCommitted => {
            let mut exited = None;
            let committed = wait_until(Duration::from_secs(60), || {
                exited = child.try_wait().expect("cannot poll backup");
                exited.is_some() || sandbox.packs().len() > packs_before
            });
            assert!(
                committed && exited.is_none(),
                "no pack was committed while the backup ran (exit {exited:?}): {}",
                fs::read_to_string(sandbox.path("stderr.log")).unwrap_or_default()
            );
        }
        KillPoint::Finished => {
            let status = child.wait().expect("cannot wait for backup");
            assert!(
                status.success(),
                "the uninterrupted backup failed: {status}"
            );
        }
    }
    child.kill().ok();
    child.wait().expect("cannot reap backup");
}

/// Snapshots that must survive: id and expected content (bytes or hash).
struct Survivors {
    small: Vec<(String, Vec<u8>)>,
    big: Vec<(String, String)>,
    stale_locks_cleared: usize,
}

/// Everything that must hold after a crash at `point`.
fn check_after_crash(sandbox: &Sandbox, big: &Path, survivors: &mut Survivors, point: KillPoint) {
    let locks = sandbox.repo.join("locks");
    let left_locks = files_under(&locks)
        .iter()
        .filter(|p| !is_temporary(p))
        .count();
    let verify = sandbox.run(["--json", "verify", "--read-data"]);
    verify.ok();
    let report = verify.json();
    assert_eq!(
        report["damage"],
        json!([]),
        "damage after a kill at {point:?}: {report:#}"
    );
    if left_locks > 0 {
        assert!(
            verify.stderr.contains("stale lock"),
            "verify did not say it cleared a stale lock: {}",
            verify.stderr
        );
        survivors.stale_locks_cleared += 1;
    }
    let after: Vec<PathBuf> = files_under(&locks)
        .into_iter()
        .filter(|p| !is_temporary(p))
        .collect();
    assert!(after.is_empty(), "locks left after verify: {after:?}");

    let ids = sandbox.snapshot_ids();
    for (id, _) in &survivors.small {
        assert!(
            ids.contains(id),
            "snapshot {id} vanished after a kill at {point:?}"
        );
    }
    for (id, _) in &survivors.big {
        assert!(
            ids.contains(id),
            "snapshot {id} vanished after a kill at {point:?}"
        );
    }
    for id in ids {
        let known = survivors.small.iter().any(|(s, _)| *s == id)
            || survivors.big.iter().any(|(s, _)| *s == id);
        if !known {
            // The kill came after the commit: it must be a whole snapshot.
            survivors.big.push((id, file_hash(big)));
        }
    }
    for (id, bytes) in &survivors.small {
        sandbox.assert_restores(id, bytes);
    }
    for (id, hash) in &survivors.big {
        let target = sandbox.path("big-restored.img");
        sandbox.restore(id, &target, &[]).ok();
        assert_eq!(&file_hash(&target), hash, "snapshot {id} restored wrong");
        fs::remove_file(&target).unwrap();
    }
}

/// The next backup after a crash must work: change the small image a bit,
/// back it up, and remember it as a survivor.
fn next_backup(sandbox: &Sandbox, small: &mut Image, rng: &mut Rng, survivors: &mut Survivors) {
    let at = rng.below(small.len() - 4096);
    small.write_random(rng, at, 4096);
    let summary = sandbox.backup(&small.path);
    let id = summary["snapshot"].as_str().unwrap().to_string();
    survivors.small.push((id, small.bytes.clone()));
}

// Pins: kill -9 of a full and of an incremental backup at many moments (and letting one finish) never harms the repository: verify is clean, earlier snapshots restore exactly, stale locks are cleared, the next backup works.
#[test]
fn killed_backups_never_harm_the_repository() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc4a5_0001);
    let mut small = Image::sparse(sandbox.path("small.img"), 30 * CHUNK + 77);
    small.write_random(&mut rng, 0, 9 * CHUNK);
    small.write_random(&mut rng, 20 * CHUNK + 1, 10 * CHUNK);
    let mut survivors = Survivors {
        small: Vec::new(),
        big: Vec::new(),
        stale_locks_cleared: 0,
    };
    next_backup(&sandbox, &mut small, &mut rng, &mut survivors);
    next_backup(&sandbox, &mut small, &mut rng, &mut survivors);

    let big = sandbox.path("big.img");
    urandom_file(&big, 300 << 20);
    let ms = |n| KillPoint::After(Duration::from_millis(n));
    // A pack commit first: a timed kill may come after the end, and then
    // the next backup of the same source stores nothing new.
    let full_backup_points = [
        KillPoint::PackCommitted,
        ms(20),
        ms(60),
        ms(150),
        ms(300),
        ms(1000),
        KillPoint::Finished,
    ];
    for point in full_backup_points {
        backup_killed_at(&sandbox, &big, point);
        check_after_crash(&sandbox, &big, &mut survivors, point);
        next_backup(&sandbox, &mut small, &mut rng, &mut survivors);
    }
    assert!(
        !survivors.big.is_empty(),
        "the finished backup is a snapshot"
    );

    // Now incrementals of the big source, with its first 100 MiB rewritten.
    let fresh = sandbox.path("fresh.bin");
    urandom_file(&fresh, 100 << 20);
    let mut out = fs::OpenOptions::new().write(true).open(&big).unwrap();
    std::io::copy(&mut File::open(&fresh).unwrap(), &mut out).unwrap();
    drop(out);
    for point in [KillPoint::PackCommitted, ms(300)] {
        backup_killed_at(&sandbox, &big, point);
        check_after_crash(&sandbox, &big, &mut survivors, point);
        next_backup(&sandbox, &mut small, &mut rng, &mut survivors);
    }
    assert!(
        survivors.stale_locks_cleared >= 2,
        "the kills never left a lock: the test did not hit a running backup"
    );
}

// Pins: every file an interrupted backup leaves (temporary pack and map, a committed pack no index names) is listed by verify as a leftover, not damage.
#[test]
fn interrupted_backup_files_are_listed_as_leftovers() {
    let sandbox = Sandbox::new();
    let big = sandbox.path("big.img");
    urandom_file(&big, 100 << 20);
    backup_killed_at(&sandbox, &big, KillPoint::PackCommitted);
    let strays: Vec<String> = files_under(&sandbox.repo)
        .iter()
        .map(|p| p.strip_prefix(&sandbox.repo).unwrap().display().to_string())
        .filter(|p| p != "config" && p != "reserve" && !p.starts_with("locks/"))
        .collect();
    assert!(
        strays.iter().any(|p| p.starts_with("maps/")) && strays.len() >= 2,
        "the kill left no unfinished map and pack: {strays:?}"
    );
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(report["damage"], json!([]), "{report:#}");
    let listed: Vec<&str> = report["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    let unlisted: Vec<&String> = strays
        .iter()
        .filter(|s| !listed.iter().any(|l| l.ends_with(s.as_str())))
        .collect();
    assert!(
        unlisted.is_empty(),
        "files of the interrupted backup that verify does not list: {unlisted:?}\n{report:#}"
    );
}

/// Starts a backup of a 64 MiB image, kills it while it holds its lock, and
/// returns the lock file it left.
fn leave_stale_lock(sandbox: &Sandbox) -> PathBuf {
    let big = sandbox.path("lock-holder.img");
    urandom_file(&big, 64 << 20);
    let mut child = spawn(sandbox, &[OsStr::new("backup"), big.as_os_str()]);
    let locks = sandbox.repo.join("locks");
    let held = wait_until(Duration::from_secs(30), || {
        files_under(&locks).iter().any(|p| !is_temporary(p))
    });
    let still_running = child.try_wait().expect("cannot poll backup").is_none();
    child.kill().ok();
    child.wait().expect("cannot reap backup");
    assert!(
        held && still_running,
        "the backup never held its lock while running"
    );
    let mut left: Vec<PathBuf> = files_under(&locks)
        .into_iter()
        .filter(|p| !is_temporary(p))
        .collect();
    assert_eq!(left.len(), 1, "expected the killed backup's lock: {left:?}");
    left.remove(0)
}

// Pins: a lock left by a backup killed with -9 is removed by the next backup, which says so and succeeds.
#[test]
fn lock_of_a_killed_backup_is_cleared_by_the_next_run() {
    let sandbox = Sandbox::new();
    let lock = leave_stale_lock(&sandbox);
    let mut rng = Rng::new(0xc4a5_0002);
    let small = Image::random(sandbox.path("small.img"), 3 * CHUNK + 1, &mut rng);
    let run = sandbox.run([OsStr::new("backup"), small.path.as_os_str()]);
    run.ok();
    assert!(run.stderr.contains("stale lock"), "{}", run.stderr);
    assert!(!lock.exists(), "the stale lock is still there");
    assert!(files_under(&sandbox.repo.join("locks")).is_empty());
}

// Pins: `platter unlock` removes the lock of a killed process by hand and names it in --json.
#[test]
fn unlock_removes_the_lock_of_a_killed_process() {
    let sandbox = Sandbox::new();
    let lock = leave_stale_lock(&sandbox);
    let report = sandbox.run(["--json", "unlock"]).ok().json();
    let name = format!("locks/{}", lock.file_name().unwrap().to_string_lossy());
    assert_eq!(report, json!({ "removed": [name] }));
    assert!(!lock.exists(), "unlock left the stale lock");
}

/// Process start time in clock ticks (field 22 of /proc/self/stat), which
/// a lock records to tell a live owner from a reused pid.
fn own_start_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Writes a lock file in the repository's format (a checksummed JSON
/// envelope, see src/repo/envelope.rs) held by this test process.
fn write_live_lock(sandbox: &Sandbox, kind: &str) -> PathBuf {
    let body = serde_json::to_string(&json!({
        "kind": kind,
        "hostname": nix::unistd::gethostname().unwrap().into_string().unwrap(),
        "pid": std::process::id(),
        "start_ticks": own_start_ticks(),
        "command": "test",
        "time": "2024-01-01T00:00:00Z",
    }))
    .unwrap();
    let text = format!(
        "{{\"platter\":\"lock\",\"version\":1,\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    let path = sandbox
        .repo
        .join("locks")
        .join(super::common::random_name().repeat(4));
    fs::write(&path, text).unwrap();
    path
}

// Pins: a live exclusive lock makes backup, restore and verify exit 5 without writing anything; `unlock` keeps a live lock, `unlock --all` removes it.
#[test]
fn live_exclusive_lock_makes_the_repository_busy() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc4a5_0003);
    let image = Image::random(sandbox.path("disk.img"), 5 * CHUNK + 3, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let lock = write_live_lock(&sandbox, "exclusive");
    let before = sandbox.repo_tree();

    sandbox
        .run([OsStr::new("backup"), image.path.as_os_str()])
        .refused(5, "in use");
    let target = sandbox.path("target.img");
    sandbox.restore(&id, &target, &[]).refused(5, "in use");
    assert!(!target.exists(), "a busy restore created its target");
    sandbox.run(["verify"]).refused(5, "in use");
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a refused command wrote to the repository"
    );

    let kept = sandbox.run(["--json", "unlock"]).ok().json();
    assert_eq!(kept, json!({ "removed": [] }), "unlock removed a live lock");
    assert!(lock.exists());
    let removed = sandbox.run(["--json", "unlock", "--all"]).ok().json();
    let name = format!("locks/{}", lock.file_name().unwrap().to_string_lossy());
    assert_eq!(removed, json!({ "removed": [name] }));
    sandbox.backup(&image.path);
}

// Pins: a live shared lock (another backup running) does not block a backup.
#[test]
fn live_shared_lock_does_not_block_a_backup() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc4a5_0004);
    let image = Image::random(sandbox.path("disk.img"), 5 * CHUNK + 3, &mut rng);
    let lock = write_live_lock(&sandbox, "shared");
    let summary: Value = sandbox.backup(&image.path);
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
    assert!(lock.exists(), "a live lock was removed");
}

// Pins: a restore into a new file that is killed midway leaves nothing under
// the target's name (the bytes go to a temporary name, renamed at the end),
// so a half-written image is never mistaken for a finished one.
#[test]
fn a_killed_restore_leaves_no_target_file() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc4a5_0007);
    let image = Image::random(sandbox.path("big.img"), 200 * 1024 * 1024, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = sandbox.path("restored.img");
    let mut child = spawn(
        &sandbox,
        &["restore".as_ref(), id.as_ref(), target.as_os_str()],
    );
    std::thread::sleep(Duration::from_millis(150));
    let finished = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    if finished {
        // Too fast to catch: then it must have completed properly.
        assert_file_is(&target, &image.bytes, "restore that finished");
    } else {
        assert!(!target.exists(), "a killed restore left {target:?} behind");
    }
    // A later restore to the same name succeeds.
    sandbox.restore(&id, &target, &[]).ok();
    assert_file_is(&target, &image.bytes, "restore after the killed one");
}
