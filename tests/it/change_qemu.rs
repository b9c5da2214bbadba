//! QEMU dirty bitmaps as a change source, for real: qcow2 images made and
//! written with qemu-img and qemu-io, backed up as their guest's disk over
//! NBD (qemu-nbd), incrementals that read only what the parent's bitmap
//! marks, and the scan, with the reason, whenever the bitmap is missing,
//! of another snapshot, marked in use, or the image is held by a running
//! QEMU. The expected bytes are always `qemu-img convert -O raw`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use serde_json::Value;

use platter::codec::Compression;
use platter::engine::backup::{BackupOptions, backup};
use platter::engine::change_source::Request;
use platter::progress::Quiet;
use platter::repo::backend::{Fault, FaultPlan, FaultyBackend, MemoryBackend, SharedBackend, Step};
use platter::repo::keys::NoPassphrase;
use platter::repo::{NewKey, Repository};

use super::common::{CHUNK, Rng, Run, Sandbox, have, sh, system};

const NEEDS: &[&str] = &["qemu-img", "qemu-nbd", "qemu-io"];
const MIB: u64 = 1 << 20;

/// A qcow2 image of `size` bytes with some data, beside the sandbox's repo.
fn qcow2(sandbox: &Sandbox, name: &str, size: u64) -> PathBuf {
    let path = sandbox.path(name);
    system(
        "qemu-img",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            path.as_os_str(),
            size.to_string().as_ref(),
        ],
    );
    qemu_io(
        &path,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 2M 700k",
            "write -P 0x33 3900k 64k",
        ],
    );
    path
}

/// Runs qemu-io commands on an offline image (they mark its bitmaps).
fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args: Vec<&OsStr> = vec!["-f".as_ref(), "qcow2".as_ref()];
    for c in commands {
        args.extend(["-c".as_ref(), OsStr::new(c)]);
    }
    args.push(image.as_os_str());
    system("qemu-io", &args);
}

/// The guest's disk as qemu-img sees it.
fn guest_bytes(image: &Path, share: bool) -> Vec<u8> {
    let raw = image.with_extension(format!("raw-{}", super::common::random_name()));
    let mut args: Vec<&OsStr> = vec!["convert".as_ref()];
    if share {
        args.push("-U".as_ref());
    }
    args.extend([
        "-O".as_ref(),
        "raw".as_ref(),
        image.as_os_str(),
        raw.as_os_str(),
    ]);
    system("qemu-img", &args);
    let bytes = fs::read(&raw).expect("the converted image");
    fs::remove_file(&raw).expect("remove the converted image");
    bytes
}

/// The image's bitmaps: (name, in use).
fn bitmaps(image: &Path) -> Vec<(String, bool)> {
    let json = system(
        "qemu-img",
        &[
            "info".as_ref(),
            "-U".as_ref(),
            "--output=json".as_ref(),
            image.as_os_str(),
        ],
    );
    let v: Value = serde_json::from_str(&json).expect("qemu-img info JSON");
    v.pointer("/format-specific/data/bitmaps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| {
            let in_use = b["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "in-use"));
            (b["name"].as_str().unwrap_or_default().to_string(), in_use)
        })
        .collect()
}

fn backup_run(sandbox: &Sandbox, source: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec!["--json".as_ref(), "backup".as_ref(), source.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    sandbox.run(args)
}

fn counter(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {summary}"))
}

fn id(summary: &Value) -> &str {
    summary["snapshot"].as_str().expect("a snapshot id")
}

fn manifest(sandbox: &Sandbox, snapshot: &str) -> Value {
    let text = fs::read_to_string(sandbox.manifest_file(snapshot)).expect("no manifest");
    let doc: Value = serde_json::from_str(&text).expect("manifest is JSON");
    doc["body"].clone()
}

/// Asserts the scan was used, for a reason containing `why`, on stderr
/// and in --json.
fn assert_scanned(run: &Run, why: &str) -> Value {
    let summary = run.ok().json();
    assert!(
        summary["scan_reason"]
            .as_str()
            .is_some_and(|r| r.contains(why)),
        "{summary}"
    );
    assert!(run.stderr.contains(why), "{}", run.describe());
    assert_eq!(summary["change_source"], Value::Null, "{summary}");
    summary
}

// Pins: a qcow2 image is backed up as its guest's disk; with --change-source qemu-bitmap a bitmap of the snapshot (4 KiB granularity) is added after the commit, the next backup reads only what it marks (at most twice the change), records the source, swaps the bitmaps, and every snapshot restores as qemu-img converts the image.
#[test]
fn qemu_bitmap_incremental_reads_only_the_change_and_restores_the_guest() {
    let test = "qemu_bitmap_incremental_reads_only_the_change_and_restores_the_guest";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 16 * MIB + 4096 * 3);
    let first = backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"])
        .ok()
        .json();
    assert_eq!(counter(&first, "size"), 16 * MIB + 4096 * 3, "{first}");
    let full_bytes = guest_bytes(&image, false);
    let first_id = id(&first).to_string();
    let marks = bitmaps(&image);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(
        marks[0].0.starts_with("platter.") && marks[0].0.ends_with(&first_id),
        "{marks:?}"
    );
    // Another tool's bitmap is left alone.
    system(
        "qemu-img",
        &[
            "bitmap".as_ref(),
            "--add".as_ref(),
            image.as_os_str(),
            "theirs".as_ref(),
        ],
    );

    qemu_io(
        &image,
        &[
            "write -P 0x5a 5M 4k",
            "write -P 0x5b 12296k 12k",
            "write -z 3M 64k",
        ],
    );
    // Small writes: a bitmap of QEMU's default granularity (64 KiB) would
    // have 192 KiB read for them.
    let changed = 4096 + 12 * 1024 + 64 * 1024;
    let next = sandbox.backup(&image);
    assert_eq!(next["change_source"]["kind"], "qemu-bitmap", "{next}");
    assert_eq!(next["scan_reason"], Value::Null, "{next}");
    let read = counter(&next, "bytes_read");
    assert!(
        read > 0 && read <= 2 * changed,
        "read {read} for {changed}: {next}"
    );
    let recorded = manifest(&sandbox, id(&next));
    assert_eq!(
        recorded["change_source"]["kind"], "qemu-bitmap",
        "{recorded}"
    );
    let names: Vec<String> = bitmaps(&image).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"theirs".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(id(&next))), "{names:?}");

    sandbox.assert_restores(&first_id, &full_bytes);
    sandbox.assert_restores(id(&next), &guest_bytes(&image, false));
}

// Pins: a bitmap marked in use (QEMU crashed with the image open) gives a scan with the reason, and the backup after it trusts the new bitmap again.
#[test]
fn an_in_use_bitmap_gives_a_scan_with_the_reason() {
    let test = "an_in_use_bitmap_gives_a_scan_with_the_reason";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 16 * MIB);
    backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]).ok();
    // qemu-io aborts with the image open: its bitmaps stay in use.
    let crashed = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x77 2M 8k", "-c", "abort"])
        .arg(&image)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("qemu-io");
    assert!(!crashed.success());
    assert!(bitmaps(&image).iter().all(|(_, in_use)| *in_use));
    let summary = assert_scanned(&backup_run(&sandbox, &image, &[]), "marked in use");
    assert_eq!(counter(&summary, "bytes_read"), 16 * MIB, "{summary}");
    sandbox.assert_restores(id(&summary), &guest_bytes(&image, false));
    assert_eq!(bitmaps(&image).len(), 1, "the in-use bitmap was replaced");
    assert!(!bitmaps(&image)[0].1);

    qemu_io(&image, &["write -P 0x78 6M 4k"]);
    let next = sandbox.backup(&image);
    assert_eq!(next["change_source"]["kind"], "qemu-bitmap", "{next}");
    sandbox.assert_restores(id(&next), &guest_bytes(&image, false));
}

// Pins: a missing bitmap, and a bitmap of another snapshot than the parent, each give a scan with the reason.
#[test]
fn a_missing_bitmap_or_one_of_another_snapshot_gives_a_scan_with_the_reason() {
    let test = "a_missing_bitmap_or_one_of_another_snapshot_gives_a_scan_with_the_reason";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 8 * MIB);
    let first = backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"])
        .ok()
        .json();
    qemu_io(&image, &["write -P 0x44 1M 4k"]);
    sandbox.backup(&image);
    // The parent given is the first snapshot; the bitmap is the second's.
    let run = backup_run(&sandbox, &image, &["--parent", id(&first)]);
    let summary = assert_scanned(&run, "not the one of parent");
    sandbox.assert_restores(id(&summary), &guest_bytes(&image, false));

    for (name, _) in bitmaps(&image) {
        system(
            "qemu-img",
            &[
                "bitmap".as_ref(),
                "--remove".as_ref(),
                image.as_os_str(),
                name.as_ref(),
            ],
        );
    }
    qemu_io(&image, &["write -P 0x45 2M 4k"]);
    let run = backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]);
    let summary = assert_scanned(&run, "no dirty bitmap of parent");
    sandbox.assert_restores(id(&summary), &guest_bytes(&image, false));
}

/// A QEMU holding the image open for writing (as a running VM does) until
/// dropped.
struct Holder(Child);

impl Holder {
    fn new(image: &Path) -> Holder {
        let mut child = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "sleep 60000"])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-io");
        let held = super::common::wait_until(std::time::Duration::from_secs(30), || {
            !Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(image)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("qemu-img")
                .success()
        });
        assert!(
            held,
            "qemu-io never took the image's lock (it exited: {:?})",
            child.try_wait()
        );
        // It marks the bitmaps in use once it has the lock.
        let marked = super::common::wait_until(std::time::Duration::from_secs(10), || {
            let now = bitmaps(image);
            !now.is_empty() && now.iter().all(|(_, in_use)| *in_use)
        });
        assert!(marked, "qemu-io never marked the bitmaps in use");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Pins: an image a running QEMU holds (its lock) is read without locking, backed up with a scan whose reason says so, and not written: its bitmaps stay as they were.
#[test]
fn an_image_held_by_a_running_qemu_is_scanned_and_not_written() {
    let test = "an_image_held_by_a_running_qemu_is_scanned_and_not_written";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 8 * MIB);
    backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]).ok();
    qemu_io(&image, &["write -P 0x46 1M 4k"]);
    let holder = Holder::new(&image);
    let before = bitmaps(&image);
    let expected = guest_bytes(&image, true);
    let file_before = fs::read(&image).expect("the image");
    let run = backup_run(&sandbox, &image, &[]);
    let summary = assert_scanned(&run, "its lock is held");
    assert_eq!(bitmaps(&image), before);
    assert!(
        fs::read(&image).expect("the image") == file_before,
        "the image was written"
    );
    drop(holder);
    sandbox.assert_restores(id(&summary), &expected);
}

// Pins: reflink on a qcow2 image and qemu-bitmap on a raw image each scan with the reason; a raw image is still backed up as its bytes.
#[test]
fn change_sources_that_do_not_fit_the_image_scan_with_the_reason() {
    let test = "change_sources_that_do_not_fit_the_image_scan_with_the_reason";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 4 * MIB);
    sandbox.backup(&image);
    let run = backup_run(&sandbox, &image, &["--change-source", "reflink"]);
    assert_scanned(&run, "use --change-source qemu-bitmap");
    let raw = sandbox.path("disk.img");
    let mut rng = Rng::new(0x9e_0001);
    let bytes = rng.bytes(4 * CHUNK as usize + 17);
    fs::write(&raw, &bytes).expect("write the raw image");
    let run = backup_run(&sandbox, &raw, &["--change-source", "qemu-bitmap"]);
    let summary = assert_scanned(&run, "not one");
    assert_eq!(counter(&summary, "size"), bytes.len() as u64);
    sandbox.assert_restores(id(&summary), &bytes);
}

// Pins: a backup that fails at any write before its manifest (a full disk, a lost store) leaves the parent's bitmap as it was, and no bitmap of its own.
#[test]
fn interrupted_qemu_bitmap_backup_leaves_the_parents_bitmap() {
    let test = "interrupted_qemu_bitmap_backup_leaves_the_parents_bitmap";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let image = qcow2(&sandbox, "vm.qcow2", 4 * MIB);
    let store = MemoryBackend::new();
    let shared = |s: &MemoryBackend| -> SharedBackend { Arc::new(s.clone()) };
    Repository::init_in(shared(&store), CHUNK, Compression::Lz4, NewKey::Plain).expect("init");
    let options = BackupOptions {
        change_source: Request::QemuBitmap,
        ..BackupOptions::default()
    };
    let repo = Repository::open_in(shared(&store), &NoPassphrase).expect("open");
    backup(&repo, &image, &options, &Quiet).expect("the first backup");
    drop(repo);
    let parents = bitmaps(&image);
    assert_eq!(parents.len(), 1);
    qemu_io(&image, &["write -P 0x47 1M 4k"]);

    let counting = FaultyBackend::new(shared(&store.fork().expect("fork")), None);
    let repo = Repository::open_in(counting.clone() as SharedBackend, &NoPassphrase).expect("open");
    backup(&repo, &image, &options, &Quiet).expect("a clean run");
    drop(repo);
    // That run moved the bitmaps on: put the parent's back.
    for (name, _) in bitmaps(&image) {
        system(
            "qemu-img",
            &[
                "bitmap".as_ref(),
                "--remove".as_ref(),
                image.as_os_str(),
                name.as_ref(),
            ],
        );
    }
    system(
        "qemu-img",
        &[
            "bitmap".as_ref(),
            "--add".as_ref(),
            image.as_os_str(),
            parents[0].0.as_ref(),
        ],
    );
    // A new write marks it, so each faulted run stores a chunk as the
    // counted one did.
    qemu_io(&image, &["write -P 0x48 1M 4k"]);
    let parents = bitmaps(&image);
    let writes: Vec<(Step, String)> = counting
        .steps()
        .into_iter()
        .filter(|(step, _)| step.writes())
        .collect();
    let manifest = writes
        .iter()
        .position(|(_, name)| name.starts_with("snapshots/"))
        .expect("the manifest is written");
    assert!(manifest > 0, "{writes:?}");
    for at in 0..=manifest {
        for fault in [Fault::Fail, Fault::Die] {
            let faulty = FaultyBackend::new(
                shared(&store.fork().expect("fork")),
                Some(FaultPlan {
                    at,
                    counts: Step::writes,
                    fault,
                }),
            );
            let outcome = Repository::open_in(faulty.clone() as SharedBackend, &NoPassphrase)
                .and_then(|repo| backup(&repo, &image, &options, &Quiet));
            assert!(
                outcome.is_err(),
                "a {fault:?} at write {at} ({:?}) let the backup succeed; writes: {writes:?}",
                writes[at]
            );
            assert_eq!(
                bitmaps(&image),
                parents,
                "after a {fault:?} at write {at} ({:?})",
                writes[at]
            );
        }
    }
}

// Pins: for random write patterns (data, zeros, discards, across chunk edges and the last partial chunk), qemu-bitmap incrementals restore exactly what scan incrementals of the same image restore, which is the guest's disk, and read no more.
#[test]
fn qemu_bitmap_incrementals_equal_scan_incrementals() {
    let test = "qemu_bitmap_incrementals_equal_scan_incrementals";
    if !have(test, NEEDS) {
        return;
    }
    let tracked = Sandbox::new();
    let scanned = Sandbox::new();
    let size = 6 * MIB + 3 * 4096;
    let image = qcow2(&tracked, "vm.qcow2", size);
    backup_run(&tracked, &image, &["--change-source", "qemu-bitmap"]).ok();
    scanned.backup(&image);
    let mut rng = Rng::new(0x9e_0002);
    for round in 0..5 {
        let mut commands = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let len = 512 * (1 + rng.below(300));
            let offset = (rng.below(size - len) / 512) * 512;
            commands.push(match rng.below(3) {
                0 => format!("write -P {} {offset} {len}", 1 + rng.below(250)),
                1 => format!("write -z {offset} {len}"),
                _ => format!("discard {offset} {len}"),
            });
        }
        // Sometimes the very end.
        if rng.below(2) == 0 {
            commands.push(format!("write -P 0x99 {} 4096", size - 4096));
        }
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        qemu_io(&image, &commands);
        let expected = guest_bytes(&image, false);
        let a = tracked.backup(&image);
        let b = scanned.backup(&image);
        assert_eq!(
            a["change_source"]["kind"], "qemu-bitmap",
            "round {round}: {a}"
        );
        assert!(
            counter(&a, "bytes_read") <= counter(&b, "bytes_read"),
            "round {round}: {a} {b}"
        );
        tracked.assert_restores(id(&a), &expected);
        scanned.assert_restores(id(&b), &expected);
    }
    let _ = sh("true");
}

// Pins: a file with the qcow2 magic that qemu-img cannot open is refused as bad input (exit 2), with the way to find out why, and nothing is written.
#[test]
fn a_qcow2_image_qemu_cannot_open_is_refused_and_nothing_is_written() {
    let test = "a_qcow2_image_qemu_cannot_open_is_refused_and_nothing_is_written";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = sandbox.path("broken.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.resize(64 * 1024, 0xee);
    fs::write(&image, &bytes).expect("write the image");
    let before = super::common::tree(&sandbox.repo);
    let run = backup_run(&sandbox, &image, &[]);
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("qemu-img check"), "{}", run.describe());
    assert_eq!(super::common::tree(&sandbox.repo), before);
}

// Pins: an image written between the read and the commit (here: its ctime moved while platter stops its qemu-nbd, after the manifest) gets no bitmap for the new snapshot: the snapshot stands, the parent's bitmap stays, and the next backup scans with the reason instead of trusting a bitmap that missed the write.
#[test]
fn an_image_changed_before_its_bitmap_is_added_gets_none() {
    let test = "an_image_changed_before_its_bitmap_is_added_gets_none";
    if !have(test, &["qemu-img", "qemu-nbd", "qemu-io", "strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 4 * MIB);
    backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]).ok();
    let parents = bitmaps(&image);
    qemu_io(&image, &["write -P 0x49 1M 4k"]);
    // platter kills two qemu-nbd: the bitmap's, while planning, and the
    // guest's once the manifest is written; it is held in the second.
    let child = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=kill"])
        .args(["-e", "inject=kill:delay_enter=2000000:when=2"])
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .args(["--json", "backup"])
        .arg(&image)
        .env_remove("PLATTER_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace");
    let strace = child.id();
    // Held in the second kill, after the manifest: a poll can also catch
    // platter passing through the first one (slowly, under strace and a
    // loaded machine), so both are waited for together.
    let held = super::common::wait_until(std::time::Duration::from_secs(20), || {
        super::common::traced_child(strace).is_some_and(|pid| super::common::in_call(pid, 62))
            && sandbox.snapshot_ids().len() == 2
    });
    assert!(
        held,
        "platter was never held in kill with the new manifest written"
    );
    sh(&format!("touch '{}'", image.display()));
    let out = child.wait_with_output().expect("strace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no dirty bitmap could be added"),
        "{stderr}"
    );
    assert_eq!(bitmaps(&image), parents);
    let next = backup_run(&sandbox, &image, &[]);
    let summary = assert_scanned(&next, "not the one of parent");
    sandbox.assert_restores(id(&summary), &guest_bytes(&image, false));
}

/// Processes whose command line names `image` (a qemu-nbd serving it).
fn servers_of(image: &Path) -> Vec<String> {
    let name = image.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("qemu-nbd") && c.contains(&name))
        .collect()
}

// Pins: a backup killed outright while it reads a qcow2 image leaves no qemu-nbd behind (the kernel ends it with platter) and the parent's bitmap as it was.
#[test]
fn a_killed_backup_leaves_no_qemu_nbd_behind() {
    let test = "a_killed_backup_leaves_no_qemu_nbd_behind";
    if !have(test, &["qemu-img", "qemu-nbd", "qemu-io", "strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 4 * MIB);
    backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]).ok();
    let parents = bitmaps(&image);
    qemu_io(&image, &["write -P 0x4a 1M 4k"]);
    // Held in its first connection to its qemu-nbd. strace follows platter
    // alone (no -f): a qemu-nbd left behind must fail the test, not hang it.
    let mut child = Command::new("strace")
        .args(["-o", "/dev/null", "-e", "trace=connect"])
        .args(["-e", "inject=connect:delay_enter=2000000:when=1"])
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("backup")
        .arg(&image)
        .env_remove("PLATTER_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    let strace = child.id();
    let mut platter = None;
    let held = super::common::wait_until(std::time::Duration::from_secs(20), || {
        platter = super::common::traced_child(strace)
            .filter(|&pid| super::common::in_call(pid, 42) && !servers_of(&image).is_empty());
        platter.is_some()
    });
    assert!(held, "platter was never held connecting to its qemu-nbd");
    let pid = platter.expect("held");
    // SAFETY: kill has no memory effects; the pid is platter's, a child of
    // the strace this test started and still waits for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = child.wait().expect("strace");
    assert!(!status.success());
    let gone = super::common::wait_until(std::time::Duration::from_secs(10), || {
        servers_of(&image).is_empty()
    });
    assert!(gone, "left running: {:?}", servers_of(&image));
    assert_eq!(bitmaps(&image), parents);
    assert_eq!(sandbox.snapshot_ids().len(), 1);
    let next = sandbox.backup(&image);
    assert_eq!(next["change_source"]["kind"], "qemu-bitmap", "{next}");
    sandbox.assert_restores(id(&next), &guest_bytes(&image, false));
}

// Pins: a disabled bitmap (not recording writes) and an image that reads through a backing file (whose writes no bitmap of the image sees) each give a scan with the reason, and the restore equals the guest's disk (both were trusted before: restores lacked the writes).
#[test]
fn disabled_bitmaps_and_backing_files_give_a_scan_with_the_reason() {
    let test = "disabled_bitmaps_and_backing_files_give_a_scan_with_the_reason";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = qcow2(&sandbox, "vm.qcow2", 8 * MIB);
    backup_run(&sandbox, &image, &["--change-source", "qemu-bitmap"]).ok();
    let (name, _) = bitmaps(&image).remove(0);
    let disable = Command::new("qemu-img")
        .args(["bitmap", "--disable"])
        .arg(&image)
        .arg(&name)
        .status()
        .expect("qemu-img");
    assert!(disable.success());
    qemu_io(&image, &["write -P 0x5d 3M 4k"]);
    let summary = assert_scanned(&backup_run(&sandbox, &image, &[]), "disabled");
    sandbox.assert_restores(id(&summary), &guest_bytes(&image, false));

    let back = qcow2(&sandbox, "back.qcow2", 8 * MIB);
    let over = sandbox.path("over.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&back)
        .arg(&over)
        .status()
        .expect("qemu-img");
    assert!(made.success());
    qemu_io(&over, &["write -P 0x22 0 1M"]);
    let first = backup_run(&sandbox, &over, &["--change-source", "qemu-bitmap"]);
    assert_scanned(&first, "backing file");
    qemu_io(&back, &["write -P 0x33 4M 1M"]);
    let summary = assert_scanned(
        &backup_run(&sandbox, &over, &["--change-source", "qemu-bitmap"]),
        "backing file",
    );
    sandbox.assert_restores(id(&summary), &guest_bytes(&over, false));
}
