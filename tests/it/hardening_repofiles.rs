//! Repository files that are not what they should be, and a repository
//! whose filesystem is full: a FIFO, a link, a folder or a stray name where
//! a repository file belongs is named for what it is and never waited on;
//! the half-written lock of a killed command is cleared; the "busy" hint
//! names the command that helps; on a full filesystem, reading commands go
//! on unlocked and `forget --prune` frees space without breaking prune's
//! order.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::common::{
    CHUNK, Image, Mounted, Rng, Run, Sandbox, have, is_temporary, platter, random_name, system,
    urandom_file,
};

/// Runs `platter -r REPO ARGS...`, killing it (and failing the test) if it
/// has not finished within `limit`: a command that waits forever on a
/// repository file is the bug these tests look for.
fn run_within(sandbox: &Sandbox, args: &[&str], limit: Duration) -> Run {
    let out_path = sandbox.path(&format!("out-{}", random_name()));
    let err_path = sandbox.path(&format!("err-{}", random_name()));
    let mut child = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .args(args)
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot start platter");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "`platter {}` still runs after {limit:?}: it hangs",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        command: args.join(" "),
        code: status.code(),
        stdout: fs::read_to_string(out_path).unwrap(),
        stderr: fs::read_to_string(err_path).unwrap(),
    }
}

/// A name in the form of a repository id (64 hex digits) starting with `prefix`.
fn id_name(prefix: &str) -> String {
    let mut name = prefix.to_string();
    while name.len() < 64 {
        name.push_str(&random_name());
    }
    name.truncate(64);
    name
}

fn mkfifo(path: &Path) {
    system("mkfifo", &[path.as_os_str()]);
}

/// A sandbox with one snapshot of a small random image.
fn with_snapshot(seed: u64) -> (Sandbox, Image, String) {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(seed);
    let image = Image::random(sandbox.path("disk.img"), 5 * CHUNK + 77, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    (sandbox, image, id)
}

/// The one pack of a fresh sandbox's repository.
fn only_pack(sandbox: &Sandbox) -> PathBuf {
    let packs = sandbox.packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs[0].clone()
}

// Pins: a FIFO (or a link to /dev/zero) named like a repository file in snapshots/, index/, maps/, locks/ or data/xx/ never makes verify, snapshots, backup, restore or prune wait; verify names what it is.
#[test]
fn non_regular_repository_files_are_named_and_never_waited_on() {
    let (sandbox, image, id) = with_snapshot(0x4e0f_0001);
    let repo = &sandbox.repo;
    for dir in ["snapshots", "index", "maps", "locks"] {
        mkfifo(&repo.join(dir).join(id_name("")));
    }
    let pack = only_pack(&sandbox);
    let folder = pack.parent().unwrap();
    let prefix = folder.file_name().unwrap().to_string_lossy().into_owned();
    mkfifo(&folder.join(id_name(&prefix)));
    symlink("/dev/zero", repo.join("index").join(id_name(""))).unwrap();

    let limit = Duration::from_secs(30);
    let verify = run_within(&sandbox, &["verify"], limit);
    verify.expect_code(4);
    assert!(verify.stdout.contains("is a FIFO"), "{}", verify.stdout);
    assert!(
        verify.stdout.contains("is a symbolic link"),
        "{}",
        verify.stdout
    );
    run_within(&sandbox, &["snapshots"], limit);
    run_within(&sandbox, &["backup", image.path.to_str().unwrap()], limit);
    let target = sandbox.path("restored.img");
    let restore = run_within(&sandbox, &["restore", &id, target.to_str().unwrap()], limit);
    restore.ok();
    assert_eq!(fs::read(&target).unwrap(), fs::read(&image.path).unwrap());
    // The FIFO in locks/ is an unreadable lock: prune refuses, naming it.
    let prune = run_within(&sandbox, &["prune"], limit);
    assert!(matches!(prune.code, Some(4) | Some(5)), "{}", prune.stderr);
}

// Pins: a pack in the wrong data/xx folder is "misplaced", a pack path that is a directory is named a directory (not a truncated pack), and a map path that is a directory exits 4 like other map damage.
#[test]
fn misplaced_packs_and_folders_in_place_of_files_are_named_for_what_they_are() {
    let (sandbox, _image, id) = with_snapshot(0x4e0f_0002);
    let pack = only_pack(&sandbox);
    let name = pack.file_name().unwrap().to_owned();
    let prefix = &name.to_string_lossy()[..2];
    let other = if prefix == "00" { "01" } else { "00" };
    let wrong = sandbox.repo.join("data").join(other);
    fs::create_dir_all(&wrong).unwrap();
    fs::rename(&pack, wrong.join(&name)).unwrap();
    let verify = sandbox.run(["verify"]);
    verify.expect_code(4);
    assert!(
        verify.stdout.contains("misplaced pack"),
        "{}",
        verify.stdout
    );
    assert!(!verify.stdout.contains("cannot open"), "{}", verify.stdout);
    fs::rename(wrong.join(&name), &pack).unwrap();

    let kept = sandbox.path("pack.kept");
    fs::rename(&pack, &kept).unwrap();
    fs::create_dir(&pack).unwrap();
    let verify = sandbox.run(["verify"]);
    verify.expect_code(4);
    assert!(
        verify.stdout.contains("is a directory"),
        "{}",
        verify.stdout
    );
    assert!(!verify.stdout.contains("truncated"), "{}", verify.stdout);
    fs::remove_dir(&pack).unwrap();
    fs::rename(&kept, &pack).unwrap();

    let map = sandbox.map_file(&id);
    fs::rename(&map, &kept).unwrap();
    fs::create_dir(&map).unwrap();
    let target = sandbox.path("restored.img");
    sandbox
        .run([OsStr::new("restore"), id.as_ref(), target.as_os_str()])
        .refused(4, "is a directory");
}

// Pins: names that cannot be ids (README) in snapshots/, index/, maps/, locks/ and data/xx/ are leftovers everywhere: prune and backup go on and leave them, verify lists them as leftovers, not damage.
#[test]
fn names_that_are_not_ids_are_leftovers_in_every_folder() {
    let (sandbox, image, id) = with_snapshot(0x4e0f_0003);
    let folder = only_pack(&sandbox).parent().unwrap().to_path_buf();
    let strays: Vec<PathBuf> = ["snapshots", "index", "maps", "locks"]
        .iter()
        .map(|dir| sandbox.repo.join(dir).join("README"))
        .chain([
            folder.join("README"),
            sandbox.repo.join("index").join("A".repeat(64)),
        ])
        .collect();
    for stray in &strays {
        fs::write(stray, b"notes\n").unwrap();
    }
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(report["damage"], json!([]), "{report:#}");
    let leftovers = report["leftovers"].to_string();
    for stray in &strays {
        let name = stray.file_name().unwrap().to_string_lossy().into_owned();
        assert!(leftovers.contains(&name), "{name} not listed: {report:#}");
    }
    sandbox.run(["prune"]).ok();
    sandbox.backup(&image.path);
    sandbox.run(["forget", "--keep-last", "1", "--prune"]).ok();
    sandbox.run(["snapshots"]).ok();
    for stray in &strays {
        assert!(stray.exists(), "{} was removed", stray.display());
    }
    assert!(!sandbox.snapshot_ids().contains(&id));
    let latest = sandbox.snapshot_ids().pop().unwrap();
    sandbox.assert_restores(&latest, &fs::read(&image.path).unwrap());
}

/// Starts `platter -r REPO ARGS...` under strace with `inject` (e.g.
/// `rename:signal=SIGKILL:when=1`) and returns it. The repository is
/// opened once before, so that the renames counted are the command's own,
/// not those of this host's first look at it (`unsealed.list`).
fn under_strace(sandbox: &Sandbox, inject: &str, args: &[&str]) -> std::process::Child {
    sandbox.run(["snapshots"]).ok();
    Command::new("strace")
        .env("PLATTER_CACHE_DIR", super::common::test_cache_dir())
        .args(["-f", "-o", "/dev/null", "-e", "trace=rename"])
        .arg("-e")
        .arg(format!("inject={inject}"))
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start strace")
}

fn unfinished_locks(sandbox: &Sandbox) -> Vec<PathBuf> {
    super::common::files_under(&sandbox.repo.join("locks"))
        .into_iter()
        .filter(|p| is_temporary(p))
        .collect()
}

/// Kills a `verify` just before it renames its lock into place: what is
/// left is a half-written lock of a dead command.
fn leave_half_written_lock(sandbox: &Sandbox) -> PathBuf {
    let mut child = under_strace(sandbox, "rename:signal=SIGKILL:when=1", &["verify"]);
    child.wait().unwrap();
    let left = unfinished_locks(sandbox);
    assert_eq!(left.len(), 1, "the killed verify left {left:?}");
    left[0].clone()
}

// Pins: the half-written lock of a killed command is listed by verify until `unlock` or `prune` removes it; an unjudgeable one (old name, another host) goes only once it is an hour old.
#[test]
fn half_written_lock_of_a_killed_command_is_cleared_by_unlock_and_prune() {
    if !have("half_written_lock_of_a_killed_command", &["strace"]) {
        return;
    }
    let (sandbox, _image, _) = with_snapshot(0x4e0f_0004);
    let left = leave_half_written_lock(&sandbox);
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert!(
        report["leftovers"].to_string().contains(".tmp-"),
        "{report:#}"
    );
    let unlock = sandbox.run(["unlock"]);
    unlock.ok();
    assert!(
        !left.exists(),
        "unlock kept {}: {}",
        left.display(),
        unlock.stdout
    );
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(report["leftovers"], json!([]), "{report:#}");

    let left = leave_half_written_lock(&sandbox);
    sandbox.run(["prune"]).ok();
    assert!(!left.exists(), "prune kept {}", left.display());

    // A name that does not say who wrote it: judged by its age alone.
    let unknown =
        sandbox
            .repo
            .join("locks")
            .join(format!(".tmp-{}-{}", id_name(""), random_name()));
    fs::write(&unknown, b"{").unwrap();
    sandbox.run(["unlock", "--all"]).ok();
    assert!(
        unknown.exists(),
        "a fresh unfinished write of an unknown writer was removed"
    );
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options()
        .write(true)
        .open(&unknown)
        .unwrap()
        .set_modified(old)
        .unwrap();
    sandbox.run(["unlock"]).ok();
    assert!(
        !unknown.exists(),
        "an unfinished write untouched for 2 hours was kept"
    );
}

// Pins: `unlock --all` and `prune` never remove the lock file a live command is about to rename into place.
#[test]
fn live_writers_unfinished_lock_is_never_removed() {
    if !have("live_writers_unfinished_lock_is_never_removed", &["strace"]) {
        return;
    }
    let (sandbox, _image, _) = with_snapshot(0x4e0f_0005);
    let mut child = under_strace(&sandbox, "rename:delay_enter=3000000:when=1", &["verify"]);
    assert!(
        super::common::wait_until(Duration::from_secs(10), || !unfinished_locks(&sandbox)
            .is_empty()),
        "the paused verify wrote no lock"
    );
    let live = unfinished_locks(&sandbox).remove(0);
    sandbox.run(["unlock", "--all"]).ok();
    assert!(live.exists(), "unlock --all removed a live writer's lock");
    sandbox.run(["prune"]).ok();
    assert!(live.exists(), "prune removed a live writer's lock");
    let status = child.wait().unwrap();
    assert!(status.success(), "the paused verify failed: {status}");
}

/// Writes a lock file (the repository's checksummed JSON envelope) held by
/// `hostname` and pid `pid`.
fn write_lock(sandbox: &Sandbox, hostname: &str, pid: u32, start_ticks: u64) -> PathBuf {
    let body = serde_json::to_string(&json!({
        "kind": "shared",
        "hostname": hostname,
        "pid": pid,
        "start_ticks": start_ticks,
        "command": "backup",
        "time": "2024-01-01T00:00:00Z",
    }))
    .unwrap();
    let text = format!(
        "{{\"platter\":\"lock\",\"version\":1,\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    let path = sandbox.repo.join("locks").join(id_name(""));
    fs::write(&path, text).unwrap();
    path
}

fn own_start_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

// Pins: the "repository is busy" hint names what helps: `unlock --all` for an unreadable lock or another host's (naming the host), waiting or stopping the pid for a live local process.
#[test]
fn busy_hint_names_the_command_that_helps() {
    let (sandbox, _image, _) = with_snapshot(0x4e0f_0006);
    let junk = sandbox.repo.join("locks").join(id_name(""));
    fs::write(&junk, b"\x00\x01 not a lock").unwrap();
    let prune = sandbox.run(["prune"]);
    prune.refused(5, "unreadable lock");
    assert!(
        prune.stderr.contains("platter unlock --all"),
        "{}",
        prune.stderr
    );
    fs::remove_file(&junk).unwrap();

    let theirs = write_lock(&sandbox, "far-away-host", 4242, 1);
    let prune = sandbox.run(["prune"]);
    prune.refused(5, "far-away-host");
    assert!(
        prune.stderr.contains("held by host far-away-host"),
        "{}",
        prune.stderr
    );
    assert!(
        prune.stderr.contains("platter unlock --all"),
        "{}",
        prune.stderr
    );
    fs::remove_file(&theirs).unwrap();

    let me = std::process::id();
    let mine = write_lock(
        &sandbox,
        &nix::unistd::gethostname().unwrap().into_string().unwrap(),
        me,
        own_start_ticks(),
    );
    let prune = sandbox.run(["prune"]);
    prune.refused(5, &format!("pid {me}"));
    assert!(
        prune.stderr.contains(&format!("stop it (pid {me})")),
        "{}",
        prune.stderr
    );
    assert!(!prune.stderr.contains("unlock"), "{}", prune.stderr);
    fs::remove_file(&mine).unwrap();
}

/// Fills the filesystem of `dir` to the last byte with a file there.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut filler = fs::File::create(dir.join(format!("filler-{}", random_name()))).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    for size in [block.len(), 4096, 512, 1] {
        while filler.write_all(&block[..size]).is_ok() {}
    }
}

// Pins: on a full repository filesystem restore and verify go on unlocked (with a warning), `forget --keep-last 1 --prune` frees space, a later backup succeeds, and every remaining snapshot restores byte for byte.
#[test]
fn full_repository_filesystem_still_restores_and_frees_space() {
    if !have(
        "full_repository_filesystem_still_restores_and_frees_space",
        &["root"],
    ) {
        return;
    }
    let mut sandbox = Sandbox::without_repo();
    let mount = Mounted::tmpfs(&sandbox.path("small"), "24m");
    sandbox.repo = mount.point.join("repo");
    sandbox.run(["init", "--plain", "--chunk-size", "64K"]).ok();
    let mut snapshots: Vec<(String, Vec<u8>)> = Vec::new();
    let mut failed = None;
    // One source (retention is per source), new contents each time.
    let image = sandbox.path("disk.img");
    for _ in 0..12 {
        urandom_file(&image, 3 << 20);
        let backup = sandbox.run([OsStr::new("--json"), "backup".as_ref(), image.as_os_str()]);
        if backup.code != Some(0) {
            failed = Some(backup);
            break;
        }
        let id = backup.json()["snapshot"].as_str().unwrap().to_string();
        snapshots.push((id, fs::read(&image).unwrap()));
    }
    let failed = failed.expect("the small filesystem never filled up");
    failed.expect_code(6);
    assert!(failed.stderr.contains("No space left"), "{}", failed.stderr);
    assert!(
        snapshots.len() >= 2,
        "only {} backups fitted",
        snapshots.len()
    );
    // Whatever the failed backup freed again is taken too: the disk is full.
    fill_up(&mount.point);

    for (id, bytes) in &snapshots {
        let target = sandbox.path("restored.img");
        let restore = sandbox.restore(id, &target, &[]);
        restore.ok();
        assert!(
            restore.stderr.contains("without a lock"),
            "{}",
            restore.stderr
        );
        super::common::assert_file_is(&target, bytes, id);
        fs::remove_file(&target).unwrap();
    }
    let verify = sandbox.run(["verify"]);
    verify.ok();
    assert!(
        verify.stderr.contains("without a lock"),
        "{}",
        verify.stderr
    );

    let forget = sandbox.run(["--json", "forget", "--keep-last", "1", "--prune"]);
    forget.ok();
    assert!(forget.stderr.contains("reserve"), "{}", forget.stderr);
    let report: Value = forget.json();
    assert!(
        report["prune"]["packs_deleted"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let keep = snapshots.pop().unwrap();
    urandom_file(&image, 3 << 20);
    let after = sandbox.snapshot_of(&image, &[]);
    let reserve = fs::metadata(sandbox.repo.join("reserve")).unwrap();
    assert_eq!(
        reserve.len(),
        4 << 20,
        "the space reserve was not made again"
    );
    assert_eq!(sandbox.snapshot_ids(), vec![keep.0.clone(), after.clone()]);
    sandbox.assert_restores(&keep.0, &keep.1);
    sandbox.assert_restores(&after, &fs::read(&image).unwrap());
    super::common::verify_clean(&sandbox.repo);
}

/// The packs in the repository now that were not in `before`.
fn new_packs(sandbox: &Sandbox, before: &[PathBuf]) -> Vec<PathBuf> {
    let now: Vec<PathBuf> = sandbox.packs();
    now.into_iter().filter(|p| !before.contains(p)).collect()
}

/// Runs `platter ARGS...` under strace with `inject`; returns its exit code.
fn code_under_strace(sandbox: &Sandbox, inject: &str, args: &[&str]) -> Option<i32> {
    under_strace(sandbox, inject, args).wait().unwrap().code()
}

// Pins: when the new index does not fit, prune deletes only what no index names (a pack no index lists, a map without a manifest, the space reserve) and retries; a pack an index still names stays until the new index is durable.
#[test]
fn prune_on_a_full_disk_frees_only_what_no_index_names_before_the_new_index() {
    if !have(
        "prune_on_a_full_disk_frees_only_what_no_index_names",
        &["strace"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x4e0f_0007);
    let mut image = Image::random(sandbox.path("disk.img"), 5 * CHUNK + 77, &mut rng);
    let forgotten = sandbox.snapshot_of(&image.path, &[]);
    let pack_a = new_packs(&sandbox, &[]);
    image.write_random(&mut rng, 0, 5 * CHUNK);
    let kept = sandbox.snapshot_of(&image.path, &[]);
    let kept_bytes = fs::read(&image.path).unwrap();
    // A pack no index lists (its index file lost, its snapshot forgotten).
    let before = sandbox.packs();
    let indexes = super::common::files_under(&sandbox.repo.join("index"));
    image.write_random(&mut rng, 0, 5 * CHUNK);
    let lost = sandbox.snapshot_of(&image.path, &[]);
    sandbox.run(["forget", &lost]).ok();
    for index in super::common::files_under(&sandbox.repo.join("index")) {
        if !indexes.contains(&index) {
            fs::remove_file(index).unwrap();
        }
    }
    let unindexed = new_packs(&sandbox, &before);
    assert_eq!(unindexed.len(), 1);
    // An interrupted backup: an indexed pack and a map no manifest names.
    let before = sandbox.packs();
    image.write_random(&mut rng, 0, 5 * CHUNK);
    let uncommitted = sandbox.snapshot_of(&image.path, &[]);
    fs::remove_file(sandbox.manifest_file(&uncommitted)).unwrap();
    let indexed_dead = new_packs(&sandbox, &before);
    assert_eq!(indexed_dead.len(), 1);
    let orphan_map = sandbox.map_file(&uncommitted);

    // The new index never fits (every rename after the lock's fails).
    let code = code_under_strace(
        &sandbox,
        "rename:error=ENOSPC:when=2+",
        &["forget", "--keep-last", "1", "--prune"],
    );
    assert_eq!(code, Some(6));
    assert!(!unindexed[0].exists(), "the pack no index lists was kept");
    assert!(!orphan_map.exists(), "the map without a manifest was kept");
    assert!(!sandbox.repo.join("reserve").exists());
    assert!(pack_a[0].exists(), "a pack the old index names went first");
    assert!(
        indexed_dead[0].exists(),
        "a pack the old index names went first"
    );
    super::common::verify_clean(&sandbox.repo);
    assert_eq!(sandbox.snapshot_ids(), vec![kept.clone()]);
    assert!(!sandbox.map_file(&forgotten).exists());
    sandbox.assert_restores(&kept, &kept_bytes);

    // It fits once room is made: the prune completes.
    let code = code_under_strace(&sandbox, "rename:error=ENOSPC:when=2", &["prune"]);
    assert_eq!(code, Some(0));
    assert!(!pack_a[0].exists() && !indexed_dead[0].exists());
    assert!(
        sandbox.repo.join("reserve").exists(),
        "the reserve was not made again"
    );
    super::common::verify_clean(&sandbox.repo);
    sandbox.assert_restores(&kept, &kept_bytes);
}

// Pins: init writes a 4 MiB space reserve with real blocks, verify does not call it a leftover, and a repository without one (made before it existed) gets one from the next command that writes.
#[test]
fn every_repository_keeps_a_space_reserve() {
    use std::os::unix::fs::MetadataExt;
    let (sandbox, image, _) = with_snapshot(0x4e0f_0008);
    let reserve = sandbox.repo.join("reserve");
    let meta = fs::metadata(&reserve).expect("init made no reserve");
    assert_eq!(meta.len(), 4 << 20);
    assert!(meta.blocks() * 512 >= 4 << 20, "the reserve is sparse");
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(report["leftovers"], json!([]), "{report:#}");
    fs::remove_file(&reserve).unwrap();
    sandbox.run(["verify"]).ok();
    assert!(!reserve.exists(), "a reading command wrote the reserve");
    sandbox.backup(&image.path);
    assert_eq!(fs::metadata(&reserve).unwrap().len(), 4 << 20);
}

// Pins: a file where the repository keeps a folder (`locks`) is named as damage (exit 4) with what to do, not "cannot create directory: File exists" (exit 6).
#[test]
fn a_file_in_place_of_a_repository_folder_is_named() {
    let (sandbox, image, _) = with_snapshot(0x5f_0c);
    let locks = sandbox.repo.join("locks");
    fs::remove_dir(&locks).unwrap();
    fs::write(&locks, b"not a folder").unwrap();
    sandbox
        .run([OsStr::new("backup"), image.path.as_os_str()])
        .refused(4, "is a file, where the repository keeps a folder");
    fs::remove_file(&locks).unwrap();
    sandbox.backup(&image.path);
}

// Pins: prune removes the unfinished writes a killed command left in the repository's own folder (a reserve or config being written: 4 MiB on a disk that may be full) and in keys/ (an encrypted repository's), not only in the data folders.
#[test]
fn prune_removes_unfinished_writes_in_the_root_and_keys() {
    let plain = Sandbox::new();
    let encrypted = Sandbox::encrypted();
    let left = [
        plain.repo.join(".tmp-reserve-00000000-1-1-dead"),
        encrypted.repo.join("keys/.tmp-key-00000000-1-1-dead"),
    ];
    for file in &left {
        fs::write(file, vec![0u8; 4096]).unwrap();
    }
    plain.run(["prune"]).ok();
    encrypted.run(["prune"]).ok();
    for file in &left {
        assert!(!file.exists(), "prune left {}", file.display());
    }
    assert!(plain.repo.join("config").exists());
}

// Pins: a folder planted in index/ is not taken for an index file:
// rebuild-index replaces the index files and leaves it (verify names it),
// instead of failing half way on removing it.
#[test]
fn rebuild_index_leaves_a_folder_in_index_alone() {
    let sandbox = Sandbox::new();
    let image = sandbox.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(0x1d0));
    sandbox.backup(&image);
    let planted = sandbox.repo.join("index").join("a".repeat(64));
    fs::create_dir(&planted).unwrap();
    let report = sandbox.run(["--json", "rebuild-index"]).ok().json();
    assert_eq!(report["removed_index_files"], 1, "{report:#}");
    assert!(planted.is_dir());
    sandbox.assert_restores("latest", &fs::read(&image).unwrap());
    let verify = sandbox.run(["--json", "verify"]).expect_code(4).json();
    assert!(verify.to_string().contains("directory"), "{verify:#}");
}

// Pins: a cache folder (PLATTER_CACHE_DIR) inside the repository is not
// used, and nothing is made there.
#[test]
fn a_cache_folder_inside_the_repository_writes_nothing_there() {
    let sandbox = Sandbox::new();
    let image = sandbox.path("disk.img");
    Image::random(image.clone(), 2 * CHUNK, &mut Rng::new(0x1d1));
    sandbox.backup(&image);
    let before = sandbox.repo_tree();
    for inside in [sandbox.repo.join("index"), sandbox.repo.clone()] {
        let out = super::common::platter()
            .env("PLATTER_CACHE_DIR", &inside)
            .arg("-r")
            .arg(&sandbox.repo)
            .arg("snapshots")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "something was made in the repository"
    );
}
