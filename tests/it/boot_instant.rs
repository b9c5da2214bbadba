//! Instant recovery: `platter boot` runs a snapshot as a VM on a qcow2
//! overlay over its mounted disk.img, and `restore --overlay` carries the
//! VM's writes to a disk. Each boot fixture (`fixtures/boot/build.sh`)
//! boots with `platter boot` under TCG until its marker shows on the serial
//! port, with the firmware chosen from the recorded layout, and leaves the
//! repository as it was; a kept overlay's writes restore to exactly what
//! the VM saw; overlays that are not this snapshot's are refused with
//! nothing written; Ctrl-C and SIGTERM during a boot leave no QEMU, no
//! mount, no temporary file and no lock.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::it::common::*;

/// What a boot test needs: the fixture builders' programs, QEMU and
/// qemu-img, and FUSE for the mount.
const NEEDS: &[&str] = &[
    "root",
    "qemu-system-x86_64",
    "qemu-img",
    "qemu-io",
    "fusermount3",
    "sgdisk",
    "sfdisk",
    "syslinux",
    "mcopy",
    "mdir",
    "mkfs.fat",
    "busybox",
    "cpio",
    "apt-get",
];

/// The marker the fixtures print, built from two parts so that this
/// source never holds it whole (as boot-check.sh does).
fn marker() -> String {
    format!("{}-{}", "BOOT-MARKER", "OK")
}

/// `platter -r REPO boot ARGS... -- QEMU ARGS` with a private TMPDIR (so
/// its temporary files can be counted) and the serial port in `serial`.
fn boot_command(sandbox: &Sandbox, tmp: &Path, serial: &Path, args: &[&OsStr]) -> Command {
    std::fs::create_dir_all(tmp).unwrap();
    let mut cmd = platter();
    cmd.arg("-r").arg(&sandbox.repo).arg("boot").args(args);
    cmd.args(["--accel", "tcg", "--memory", "256M", "--"]);
    cmd.args([
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
    ]);
    cmd.arg(format!("file:{}", serial.display()));
    cmd.env("TMPDIR", tmp);
    cmd
}

/// Runs a boot to its end (the fixture powers off after its marker);
/// returns its stderr.
fn boot_to_the_end(sandbox: &Sandbox, name: &str, args: &[&OsStr]) -> String {
    let tmp = sandbox.path(&format!("tmp-{name}"));
    let serial = sandbox.path(&format!("serial-{name}.log"));
    let started = std::time::Instant::now();
    let mut child = boot_command(sandbox, &tmp, &serial, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run platter boot");
    // A guest that hangs (a boot that went wrong) must not hang the suite.
    let ended = wait_until(Duration::from_secs(120), || {
        child.try_wait().is_ok_and(|s| s.is_some())
    });
    if !ended {
        // SAFETY: kill sends SIGTERM to the child we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let out = child
        .wait_with_output()
        .expect("cannot wait for platter boot");
    assert!(
        ended,
        "{name}: no end within 120 s: {}",
        tail(&std::fs::read(&serial).unwrap_or_default())
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let log = std::fs::read(&serial).unwrap_or_default();
    assert!(
        out.status.success(),
        "platter boot {name} failed: {stderr}\nserial log tail: {}",
        tail(&log)
    );
    assert!(
        String::from_utf8_lossy(&log).contains(&marker()),
        "{name}: no marker on the serial port: {}\n{stderr}",
        tail(&log)
    );
    eprintln!("{name}: booted in {:.1}s", started.elapsed().as_secs_f64());
    assert_nothing_left(sandbox, &tmp);
    stderr
}

fn tail(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// No temporary file in `tmp`, no platter mount, no lock, no QEMU of this
/// sandbox.
fn assert_nothing_left(sandbox: &Sandbox, tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let tmp_text = tmp.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&tmp_text)),
        "a mount is left under {tmp_text}:\n{mounts}"
    );
    let locks: Vec<_> = std::fs::read_dir(sandbox.repo.join("locks"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(locks.is_empty(), "locks left: {locks:?}");
    assert!(qemu_of(tmp).is_empty(), "QEMU is still running");
}

/// Pids of QEMU processes whose command line names `tmp`.
fn qemu_of(tmp: &Path) -> Vec<u32> {
    let needle = tmp.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("qemu-system") && c.contains(&needle)
            })
        })
        .collect()
}

/// A JSON file name for qemu-img and qemu-io: `overlay` read over
/// `backing` (a raw file), or over nothing.
fn over(overlay: &Path, backing: Option<&Path>) -> String {
    let backing = match backing {
        Some(b) => serde_json::json!({"driver": "raw", "file": {"driver": "file", "filename": b}}),
        None => serde_json::Value::Null,
    };
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": {"driver": "file", "filename": overlay},
        "backing": backing,
    });
    format!("json:{spec}")
}

// Pins: the BIOS+GPT and UEFI+GPT fixtures boot with `platter boot` under TCG (SeaBIOS and OVMF chosen from the recorded layout), and afterwards the repository holds the same files and bytes, verify --read-data is clean, and no temporary file, mount, lock or QEMU is left.
#[test]
fn each_boot_fixture_boots_from_its_snapshot_and_the_repository_is_unchanged() {
    let test = "each_boot_fixture_boots_from_its_snapshot_and_the_repository_is_unchanged";
    if !have(test, NEEDS) {
        return;
    }
    for (fixture, firmware) in [("bios-gpt.img", "bios"), ("uefi-gpt.img", "uefi")] {
        let sandbox = Sandbox::new();
        let id = sandbox.snapshot_of(&boot_fixtures().join(fixture), &[]);
        let before = sandbox.repo_tree();
        let said = boot_to_the_end(&sandbox, fixture, &[id.as_ref()]);
        assert!(
            said.contains(&format!("with {firmware} firmware")),
            "{fixture}: {said}"
        );
        assert!(said.contains("the repository was not changed"), "{said}");
        assert_eq!(
            sandbox.repo_tree(),
            before,
            "{fixture}: the repository changed"
        );
        verify_clean(&sandbox.repo);
    }
}

// Pins: a boot with --keep-overlay keeps the guest's writes, and a second boot with the same file goes on from them; `restore --overlay` then gives a target equal to the overlay's view of the snapshot (data written, zeros written over data, the last sector), onto a new file and over an existing one, and the overlay file itself is not changed.
#[test]
fn a_kept_overlay_restores_to_exactly_what_the_vm_saw() {
    let test = "a_kept_overlay_restores_to_exactly_what_the_vm_saw";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let source = boot_fixtures().join("bios-mbr.img");
    let size = std::fs::metadata(&source).unwrap().len();
    let id = sandbox.snapshot_of(&source, &[]);
    let before = sandbox.repo_tree();
    let overlay = sandbox.path("recovered.qcow2");
    let said = boot_to_the_end(
        &sandbox,
        "bios-mbr",
        &[id.as_ref(), "--keep-overlay".as_ref(), overlay.as_os_str()],
    );
    assert!(said.contains("with bios firmware"), "{said}");
    assert!(said.contains("are kept in"), "{said}");
    assert_eq!(sandbox.repo_tree(), before, "the repository changed");

    // What a recovered server writes: new data (in the gap before the
    // partition, which booting does not read) ...
    let io = |commands: &str| {
        sh(&format!(
            "qemu-io {commands} '{}' >/dev/null",
            over(&overlay, None)
        ));
    };
    io("-c 'write -P 0xab 65536 200000'");
    // ... which a second boot with the same file goes on from (the overlay
    // is pointed at the new mount's disk.img) ...
    let said = boot_to_the_end(
        &sandbox,
        "bios-mbr-again",
        &[id.as_ref(), "--keep-overlay".as_ref(), overlay.as_os_str()],
    );
    assert!(said.contains("going on from an earlier boot"), "{said}");
    // ... then zeros over the boot files' data, and the very last sector.
    io(&format!(
        "-c 'write -z 4194304 1048576' -c 'write -P 0x5a {} 512'",
        size - 512
    ));
    let base = sandbox.path("base.img");
    sandbox.restore(&id, &base, &[]).ok();
    let expected = sandbox.path("expected.raw");
    system(
        "qemu-img",
        &[
            "convert".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            over(&overlay, Some(&base)).as_ref(),
            expected.as_os_str(),
        ],
    );
    let expected = std::fs::read(&expected).unwrap();
    let original = std::fs::read(&base).unwrap();
    assert_ne!(
        expected, original,
        "the writes changed nothing: the test would be vacuous"
    );
    assert!(
        original[4194304..5242880].iter().any(|&b| b != 0),
        "no data under the zeroed range"
    );
    let overlay_bytes = std::fs::read(&overlay).unwrap();

    let target = sandbox.path("target.img");
    let report = sandbox
        .restore(
            &id,
            &target,
            &["--overlay", overlay.to_str().unwrap(), "--verify"],
        )
        .ok()
        .json();
    assert_eq!(report["overlay"], overlay.display().to_string(), "{report}");
    assert_file_is(&target, &expected, "restore --overlay onto a new file");

    let existing = sandbox.path("existing.img");
    std::fs::write(&existing, vec![0xeeu8; size as usize]).unwrap();
    sandbox
        .restore(
            &id,
            &existing,
            &["--overlay", overlay.to_str().unwrap(), "--force"],
        )
        .ok();
    assert_file_is(
        &existing,
        &expected,
        "restore --overlay over an existing file",
    );

    assert_eq!(
        std::fs::read(&overlay).unwrap(),
        overlay_bytes,
        "the overlay changed"
    );
    assert_eq!(sandbox.repo_tree(), before, "the repository changed");
}

// Pins: restore --overlay refuses (exit 2, target not created) a qcow2 cut short after the VM wrote to it (it gave some of the writes, or none, and said it wrote them), a file that is not qcow2, a qcow2 over a disk.img of another size, one over a file that is not a disk.img, one made over another snapshot's folder, and --overlay with --partition; boot refuses a --keep-overlay file that exists but is not an overlay of this snapshot, or lies in a repository.
#[test]
fn an_overlay_that_is_not_this_snapshots_is_refused_and_nothing_is_written() {
    let test = "an_overlay_that_is_not_this_snapshots_is_refused_and_nothing_is_written";
    if !have(test, &["qemu-img", "qemu-io", "qemu-system-x86_64"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let size = 4 << 20;
    let source = sandbox.path("source.img");
    Image::random(source.clone(), size, &mut Rng::new(14));
    let id = sandbox.snapshot_of(&source, &[]);
    let short = &id[..8];
    let create = |name: &str, backing: &Path, bytes: u64| {
        std::fs::create_dir_all(backing.parent().unwrap()).unwrap();
        if !backing.exists() {
            std::fs::write(backing, vec![0u8; bytes as usize]).unwrap();
        }
        let path = sandbox.path(name);
        system(
            "qemu-img",
            &[
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                "-F".as_ref(),
                "raw".as_ref(),
                "-b".as_ref(),
                backing.as_os_str(),
                path.as_os_str(),
                bytes.to_string().as_ref(),
            ],
        );
        path
    };
    let folder =
        |short_id: &str| sandbox.path(&format!("m/2026-11-28_18-30-05_{short_id}_nightly"));
    let good = create("good.qcow2", &folder(short).join("disk.img"), size);
    let raw = sandbox.path("raw.img");
    std::fs::write(&raw, vec![1u8; size as usize]).unwrap();
    let wrong_size = create("wrong-size.qcow2", &sandbox.path("w/disk.img"), 2 * size);
    let other_file = create("other-file.qcow2", &sandbox.path("base.img"), size);
    let other_snapshot = create(
        "other-snapshot.qcow2",
        &folder("0123abcd").join("disk.img"),
        size,
    );
    // An overlay cut short after the VM wrote to it: its header still reads.
    let cut = create("cut.qcow2", &folder(short).join("disk.img"), size);
    let spec = format!(
        r#"json:{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}},"backing":null}}"#,
        cut.display()
    );
    system(
        "qemu-io",
        &[
            "-c".as_ref(),
            "write -P 0xab 65536 1000000".as_ref(),
            spec.as_ref(),
        ],
    );
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..300_000]).unwrap();
    let before = sandbox.repo_tree();
    let target = sandbox.path("target.img");
    for (overlay, mentions) in [
        (&cut, "is damaged"),
        (&raw, "not a qcow2 overlay"),
        (&wrong_size, "the disk it covers is"),
        (&other_file, "not a snapshot's disk.img"),
        (&other_snapshot, "made over snapshot 0123abcd"),
    ] {
        sandbox
            .restore(&id, &target, &["--overlay", overlay.to_str().unwrap()])
            .refused(2, mentions);
        assert!(!target.exists(), "{} wrote the target", overlay.display());
    }
    sandbox
        .restore(
            &id,
            &target,
            &["--overlay", good.to_str().unwrap(), "--partition", "1"],
        )
        .refused(2, "cannot go with --partition");
    assert!(!target.exists());
    // The good one is taken: the refusals above were for their reasons.
    sandbox
        .restore(&id, &target, &["--overlay", good.to_str().unwrap()])
        .ok();
    assert_file_is(
        &target,
        &std::fs::read(&source).unwrap(),
        "an empty overlay",
    );

    sandbox
        .run(["boot", &id, "--keep-overlay", raw.to_str().unwrap()])
        .refused(2, "not a qcow2 overlay");
    sandbox
        .run([
            "boot",
            &id,
            "--keep-overlay",
            other_snapshot.to_str().unwrap(),
        ])
        .refused(2, "made over snapshot 0123abcd");
    let in_repo = sandbox.repo.join("data").join("vm.qcow2");
    sandbox
        .run(["boot", &id, "--keep-overlay", in_repo.to_str().unwrap()])
        .refused(2, "inside the platter repository");
    assert_eq!(sandbox.repo_tree(), before, "the repository changed");
}

// Pins: without qemu-system-x86_64 on PATH, boot fails at once (exit 3) naming the Debian package to install, and mounts nothing.
#[test]
fn boot_without_qemu_names_the_package_to_install() {
    let sandbox = Sandbox::new();
    let source = sandbox.path("source.img");
    Image::random(source.clone(), 1 << 20, &mut Rng::new(3));
    let id = sandbox.snapshot_of(&source, &[]);
    let empty = sandbox.path("no-programs");
    std::fs::create_dir(&empty).unwrap();
    let out = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .args(["boot", &id])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let run = Run::from_output("platter boot (no QEMU on PATH)".into(), out);
    run.refused(3, "qemu-system-x86");
}

// Pins: SIGINT (Ctrl-C) and SIGTERM while QEMU runs end the boot with 130 and 143, stopping QEMU, unmounting the snapshot and leaving no temporary file and no lock; a QEMU that fails fails the boot (exit 6) the same clean way; the repository is unchanged.
#[test]
fn ctrl_c_and_sigterm_during_a_boot_leave_no_qemu_mount_or_lock() {
    let test = "ctrl_c_and_sigterm_during_a_boot_leave_no_qemu_mount_or_lock";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let id = sandbox.snapshot_of(&boot_fixtures().join("uefi-gpt.img"), &[]);
    let before = sandbox.repo_tree();
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let tmp = sandbox.path(&format!("tmp-{code}"));
        let serial = sandbox.path(&format!("serial-{code}.log"));
        let child = boot_command(&sandbox, &tmp, &serial, &[id.as_ref()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || !qemu_of(&tmp).is_empty()),
            "QEMU did not start"
        );
        // SAFETY: kill sends a signal to the child we started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("interrupted by"), "{stderr}");
        assert_nothing_left(&sandbox, &tmp);
    }
    // A QEMU that fails (an argument it does not know) fails the boot,
    // with everything undone as well.
    let tmp = sandbox.path("tmp-bad-argument");
    let out = boot_command(
        &sandbox,
        &tmp,
        &sandbox.path("serial-bad.log"),
        &[id.as_ref()],
    )
    .arg("-no-such-option")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("platter: error (I/O error): QEMU exited with code 1"),
        "{stderr}"
    );
    assert_nothing_left(&sandbox, &tmp);
    assert_eq!(sandbox.repo_tree(), before, "the repository changed");
    verify_clean(&sandbox.repo);
}

// Pins: restore --overlay onto a block device (a loop device larger than the snapshot) writes the snapshot and the overlay's clusters there, equal to the overlay's view (qemu-img convert), the rest of the device untouched by the overlay.
#[test]
fn restore_overlay_onto_a_block_device_equals_the_overlays_view() {
    let test = "restore_overlay_onto_a_block_device_equals_the_overlays_view";
    if !have(
        test,
        &["root", "loop devices", "losetup", "qemu-img", "qemu-io"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let size: u64 = 4 << 20;
    let source = sandbox.path("source.img");
    Image::random(source.clone(), size, &mut Rng::new(41));
    let id = sandbox.snapshot_of(&source, &[]);
    let backing = sandbox.path(&format!("m/2026-11-28_18-30-05_{}/disk.img", &id[..8]));
    std::fs::create_dir_all(backing.parent().unwrap()).unwrap();
    std::fs::copy(&source, &backing).unwrap();
    let overlay = sandbox.path("vm.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -F raw -b '{}' '{o}'
         qemu-io -c 'write -P 0xcd 100000 300000' -c 'write -z 3145728 65536' '{o}' >/dev/null",
        backing.display(),
        o = overlay.display()
    ));
    let expected = sandbox.path("expected.raw");
    system(
        "qemu-img",
        &[
            "convert".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            overlay.as_os_str(),
            expected.as_os_str(),
        ],
    );
    let expected = std::fs::read(&expected).unwrap();
    assert_ne!(
        expected,
        std::fs::read(&source).unwrap(),
        "vacuous: no writes"
    );
    std::fs::remove_dir_all(sandbox.path("m")).unwrap();

    let device_file = sandbox.path("device.img");
    Image::sparse(device_file.clone(), 2 * size);
    let device = LoopDevice::attach(&device_file);
    sandbox
        .restore(&id, &device.path, &["--overlay", overlay.to_str().unwrap()])
        .ok();
    let on_device = device.contents();
    assert_bytes_equal(
        &on_device[..size as usize],
        &expected,
        "the device's first bytes",
    );
    assert!(
        on_device[size as usize..].iter().all(|&b| b == 0),
        "past the snapshot"
    );
}

// Pins: booting a snapshot of one partition warns, before QEMU starts, that it holds no partition table or boot loader; a fixture's whole disk gets no such warning.
#[test]
fn booting_a_partition_snapshot_warns_that_it_will_likely_not_boot() {
    let test = "booting_a_partition_snapshot_warns_that_it_will_likely_not_boot";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let fixture = boot_fixtures().join("bios-mbr.img");
    let whole = sandbox.snapshot_of(&fixture, &[]);
    let part = sandbox.snapshot_of(&fixture, &["--partition", "1"]);
    for (id, warned) in [(&part, true), (&whole, false)] {
        let tmp = sandbox.path(&format!("tmp-{id}"));
        // QEMU refuses the argument at once: no guest runs.
        let out = boot_command(&sandbox, &tmp, &sandbox.path("serial.log"), &[id.as_ref()])
            .arg("-no-such-option")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{stderr}");
        assert_eq!(
            stderr.contains("warning: snapshot") && stderr.contains("of partition 1 alone"),
            warned,
            "{stderr}"
        );
        assert_nothing_left(&sandbox, &tmp);
    }
}

/// `platter -r REPO [--json] boot ID --accel tcg --memory 256M --expect
/// TEXT --timeout LIMIT` with a private TMPDIR (`--json` when it is to
/// pass).
fn boot_test(sandbox: &Sandbox, tmp: &Path, id: &str, expect: &str, limit: &str) -> Run {
    std::fs::create_dir_all(tmp).unwrap();
    let mut cmd = platter();
    cmd.arg("-r").arg(&sandbox.repo);
    if expect == marker() && limit != "1s" {
        cmd.arg("--json");
    }
    cmd.args(["boot", id]);
    cmd.args([
        "--accel",
        "tcg",
        "--memory",
        "256M",
        "--expect",
        expect,
        "--timeout",
        limit,
    ]);
    cmd.env("TMPDIR", tmp);
    let out = cmd.output().expect("cannot run platter boot");
    Run::from_output(format!("platter boot {id} --expect {expect:?}"), out)
}

// Pins: `boot --expect` is a boot test: exit 0 once the text shows on the
// serial console (the guest then stopped, nothing left behind); a guest
// that stops without showing it, or a time limit that runs out, is exit 4
// quoting the console's last lines, with no QEMU, mount or file left.
#[test]
fn a_boot_test_passes_at_the_expected_text_and_fails_with_the_console_tail() {
    let test = "a_boot_test_passes_at_the_expected_text_and_fails_with_the_console_tail";
    if !have(test, NEEDS) {
        return;
    }
    let sandbox = Sandbox::new();
    let id = sandbox.snapshot_of(&boot_fixtures().join("bios-gpt.img"), &[]);
    let before = sandbox.repo_tree();
    let tmp = sandbox.path("tmp-test");
    let passed = boot_test(&sandbox, &tmp, &id, &marker(), "120s")
        .ok()
        .json();
    assert!(passed["seen_after_s"].as_f64().unwrap() > 0.0, "{passed}");
    assert_eq!(passed["expected"], marker().as_str(), "{passed}");
    assert_nothing_left(&sandbox, &tmp);

    let never = format!("{}-{}", "NEVER", "SHOWN");
    let failed = boot_test(&sandbox, &tmp, &id, &never, "120s");
    failed.expect_code(4);
    let said = failed.describe();
    assert!(said.contains("before the guest stopped"), "{said}");
    // The console's last lines, the fixture's marker among them.
    assert!(said.contains(&format!("| {}", marker())), "{said}");
    assert_nothing_left(&sandbox, &tmp);

    let late = boot_test(&sandbox, &tmp, &id, &marker(), "1s");
    late.expect_code(4);
    assert!(
        late.describe().contains("within 1 s"),
        "{}",
        late.describe()
    );
    assert!(qemu_of(&tmp).is_empty(), "QEMU was left running");
    assert_nothing_left(&sandbox, &tmp);
    assert_eq!(sandbox.repo_tree(), before, "the repository changed");
}
