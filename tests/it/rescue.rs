//! The rescue medium (`platter rescue build`), built here from Debian
//! packages and booted in QEMU with the software CPU: it reaches its menu
//! as a CD and as a raw disk under SeaBIOS and OVMF; an unattended medium
//! restores a boot fixture from a repository on a second disk onto an
//! empty third disk, which then boots alone and holds the snapshot's
//! bytes; the menu is driven once through the serial console; and an
//! unattended restore that cannot succeed says why and writes nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{FAST_KDF, Sandbox, boot_fixtures, boots, have, run, sh};

const NEEDS: &[&str] = &[
    "root",
    "qemu-system-x86_64",
    "grub-mkrescue",
    "xorriso",
    "mformat",
    "apt-get",
    "dpkg-deb",
    "mkfs.ext4",
    "mkfs.xfs",
    "mkfs.btrfs",
    "loop devices",
    "sfdisk",
    "busybox",
    "cpio",
];

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const PASSPHRASE: &str = "correct horse battery staple";
/// The serial number the target disk is given (and named by).
const TARGET_SERIAL: &str = "PLATTER-TARGET-1";
/// Seconds a boot may take to the menu or a restore to its end under TCG
/// on a loaded CI machine (each takes 15 to 40 s when alone).
const LIMIT: Duration = Duration::from_secs(240);

fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rescue");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds a medium (one build at a time: they share the package cache).
fn medium(name: &str, extra: &[&str]) -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = dir().join(format!("{name}.iso"));
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rescue-cache");
    let started = Instant::now();
    let mut args = vec![
        "rescue".as_ref(),
        "build".as_ref(),
        "--force".as_ref(),
        "--cache".as_ref(),
        cache.as_os_str(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run(args).ok();
    let size = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "medium {name}: {:.1} MiB, built in {:.1}s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    assert!(
        size <= 120 << 20,
        "the medium is {size} bytes, over 120 MiB"
    );
    out
}

/// A virtual machine whose serial console is read into `log` as it comes.
struct Vm {
    child: Child,
    input: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    started: Instant,
    name: String,
}

impl Vm {
    fn start(name: &str, args: &[String]) -> Vm {
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-machine",
                "graphics=off",
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                    log.lock().unwrap().push_str(&text);
                }
            });
        }
        Vm {
            input: child.stdin.take(),
            child,
            log,
            started: Instant::now(),
            name: name.to_string(),
        }
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for `text` on the console after byte `from` of the log; the
    /// log's length after it. Panics with the log's tail on a timeout or
    /// when QEMU ends first.
    fn wait_for(&mut self, text: &str, from: usize) -> usize {
        let limit = Instant::now() + LIMIT;
        loop {
            let log = self.text();
            if let Some(at) = log.get(from..).and_then(|rest| rest.find(text)) {
                return from + at + text.len();
            }
            let ended = self.child.try_wait().unwrap().is_some();
            if ended || Instant::now() > limit {
                let tail: String = log
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "{}: {} waiting for {text:?} after {:.0}s; console:\n{tail}",
                    self.name,
                    if ended { "QEMU ended" } else { "timed out" },
                    self.started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types bytes on the serial console as they are (Ctrl-C is 0x03).
    fn send_raw(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().unwrap();
        input.write_all(bytes).unwrap();
        input.flush().unwrap();
    }

    /// Types a line on the serial console.
    fn send(&mut self, line: &str) {
        let input = self.input.as_mut().unwrap();
        input.write_all(line.as_bytes()).unwrap();
        input.write_all(b"\r").unwrap();
        input.flush().unwrap();
    }

    /// Waits for the guest to power off or reboot (-no-reboot ends QEMU).
    fn wait_end(&mut self) {
        let limit = Instant::now() + LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < limit,
                "{}: QEMU did not end:\n{}",
                self.name,
                self.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drive(file: &Path, extra: &str) -> Vec<String> {
    let id = format!("d{}", super::common::random_name());
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id={id}", file.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive={id}{extra}"),
    ]
}

/// The plain (interactive) medium, built once for the tests that use it.
fn plain_medium() -> &'static Path {
    static ISO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ISO.get_or_init(|| medium("plain", &[]))
}

fn boots_to_menu(test: &str, as_cd: bool, uefi: bool) {
    if !have(test, NEEDS) || (uefi && !Path::new(OVMF).exists() && !have(test, &["OVMF.fd"])) {
        return;
    }
    let iso = plain_medium();
    let mut args: Vec<String> = Vec::new();
    if uefi {
        args.extend(["-bios".into(), OVMF.into()]);
    }
    if as_cd {
        args.extend(["-cdrom".into(), iso.display().to_string()]);
    } else {
        args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=ide,snapshot=on", iso.display()),
        ]);
    }
    let mut vm = Vm::start(test, &args);
    let at = vm.wait_for("== platter rescue: restore a disk", 0);
    vm.wait_for("Choice:", at);
    let log = vm.text();
    assert!(
        log.lines().any(|l| l.contains("[this rescue medium]")),
        "the medium was not recognised:\n{log}"
    );
    eprintln!(
        "{test}: menu after {:.1}s ({}, {})",
        vm.seconds(),
        if as_cd { "CD" } else { "raw disk" },
        if uefi { "OVMF" } else { "SeaBIOS" }
    );
}

#[test]
fn rescue_medium_boots_to_its_menu_as_a_cd_under_seabios() {
    boots_to_menu(
        "rescue_medium_boots_to_its_menu_as_a_cd_under_seabios",
        true,
        false,
    );
}

#[test]
fn rescue_medium_boots_to_its_menu_as_a_disk_under_seabios() {
    boots_to_menu(
        "rescue_medium_boots_to_its_menu_as_a_disk_under_seabios",
        false,
        false,
    );
}

#[test]
fn rescue_medium_boots_to_its_menu_as_a_cd_under_ovmf() {
    boots_to_menu(
        "rescue_medium_boots_to_its_menu_as_a_cd_under_ovmf",
        true,
        true,
    );
}

#[test]
fn rescue_medium_boots_to_its_menu_as_a_disk_under_ovmf() {
    boots_to_menu(
        "rescue_medium_boots_to_its_menu_as_a_disk_under_ovmf",
        false,
        true,
    );
}

/// A machine to restore: a repository disk (MBR, one partition with a
/// filesystem `fs` holding an encrypted repository at /backups/repo with a
/// snapshot of the BIOS boot fixture) and an empty target disk of
/// `target_mib` MiB.
struct Machine {
    sandbox: Sandbox,
    fixture: Vec<u8>,
    repo_disk: PathBuf,
    target: PathBuf,
    passphrase: PathBuf,
}

fn machine(target_mib: u64, fs: &str) -> Machine {
    let sandbox = Sandbox::without_repo();
    let fixture_path = boot_fixtures().join("bios-mbr.img");
    let fixture = std::fs::read(&fixture_path).unwrap();
    let root = sandbox.path("fs");
    let repo = root.join("backups/repo");
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let passphrase = sandbox.path("passphrase");
    std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    let platter = |args: &[&str]| {
        let mut all = vec![
            "-r".as_ref(),
            repo.as_os_str(),
            "--password-file".as_ref(),
            passphrase.as_os_str(),
        ];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        run(all).ok();
    };
    let mut init = vec!["init", "--chunk-size", "64K"];
    init.extend(FAST_KDF);
    platter(&init);
    platter(&["backup", fixture_path.to_str().unwrap()]);
    let repo_disk = sandbox.path("repo-disk.img");
    // 320 MiB: xfs wants 300 at least.
    sh(&format!(
        "truncate -s 321M {d}; printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q {d}",
        d = repo_disk.display()
    ));
    if fs == "ext4" {
        sh(&format!(
            "mkfs.ext4 -q -F -L backups -E offset=1048576 -d {root} {d} 320M",
            d = repo_disk.display(),
            root = root.display()
        ));
    } else {
        // Through a loop device on the partition's bytes: mkfs, then copy
        // the repository in.
        let point = sandbox.path("mnt");
        std::fs::create_dir_all(&point).unwrap();
        sh(&format!(
            "dev=$(losetup --find --show --offset 1048576 --sizelimit {size} {d}); \
             trap 'umount {p} 2>/dev/null || true; losetup -d $dev' EXIT; \
             mkfs.{fs} -q -L backups $dev; mount $dev {p}; cp -a {root}/. {p}/; umount {p}",
            size = 320u64 << 20,
            d = repo_disk.display(),
            p = point.display(),
            root = root.display()
        ));
    }
    let target = sandbox.path("target.img");
    sh(&format!("truncate -s {target_mib}M {}", target.display()));
    Machine {
        sandbox,
        fixture,
        repo_disk,
        target,
        passphrase,
    }
}

impl Machine {
    /// QEMU arguments: the medium as the first (boot) disk, then the
    /// repository's disk, then the target with its serial.
    fn args(&self, iso: &Path) -> Vec<String> {
        let mut args = drive(iso, ",bootindex=0");
        args[1].push_str(",snapshot=on");
        args.extend(drive(&self.repo_disk, ""));
        args.extend(drive(&self.target, &format!(",serial={TARGET_SERIAL}")));
        args
    }

    fn target_is_untouched(&self) {
        let bytes = std::fs::read(&self.target).unwrap();
        assert!(bytes.iter().all(|b| *b == 0), "the target was written to");
    }
}

#[test]
fn an_unattended_medium_restores_a_disk_that_then_boots_alone() {
    let test = "an_unattended_medium_restores_a_disk_that_then_boots_alone";
    if !have(test, NEEDS) {
        return;
    }
    let m = machine(128, "btrfs");
    let iso = medium(
        "unattended",
        &[
            "--unattended",
            "--repo-path",
            "/backups/repo",
            "--target",
            &format!("serial:{TARGET_SERIAL}"),
            "--passphrase-file",
            m.passphrase.to_str().unwrap(),
            "--then",
            "poweroff",
        ],
    );
    let mut vm = Vm::start(test, &m.args(&iso));
    let at = vm.wait_for("platter rescue: target:", 0);
    let restore_began = vm.seconds();
    vm.wait_for("platter rescue: unattended restore done", at);
    vm.wait_end();
    eprintln!(
        "{test}: boot to restore {restore_began:.1}s, restore and power-off {:.1}s",
        vm.seconds() - restore_began
    );
    let log = vm.text();
    assert!(log.contains("read back and verified"), "{log}");
    let restored = std::fs::read(&m.target).unwrap();
    let n = m.fixture.len();
    assert!(
        restored[..n] == m.fixture[..],
        "the restored disk differs from the snapshot"
    );
    assert!(
        restored[n..].iter().all(|b| *b == 0),
        "bytes past the snapshot were written"
    );
    eprintln!("{test}: {}", boots(&m.target, "bios"));
    drop(m.sandbox);
}

/// Boots an unattended medium built with `extra` that must fail with
/// `expected` in its message, and leave the target as it was.
fn unattended_failure(test: &str, target_mib: u64, extra: &[&str], expected: &str) {
    if !have(test, NEEDS) {
        return;
    }
    let m = machine(target_mib, "ext4");
    let mut args = vec!["--unattended", "--then", "poweroff"];
    args.extend_from_slice(extra);
    let wrong = m.sandbox.path("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == "WRONG" {
                wrong.display().to_string()
            } else if *a == "RIGHT" {
                m.passphrase.display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let iso = medium(test, &args);
    let mut vm = Vm::start(test, &m.args(&iso));
    let at = vm.wait_for("platter rescue: unattended restore FAILED", 0);
    vm.wait_for("Choice:", at);
    let log = vm.text();
    assert!(
        log.contains(expected),
        "expected {expected:?} on the console:\n{log}"
    );
    eprintln!("{test}: failed as expected after {:.1}s", vm.seconds());
    drop(vm);
    m.target_is_untouched();
}

#[test]
fn an_unattended_restore_with_a_wrong_passphrase_writes_nothing() {
    unattended_failure(
        "an_unattended_restore_with_a_wrong_passphrase_writes_nothing",
        128,
        &[
            "--repo-path",
            "/backups/repo",
            "--target",
            "serial:PLATTER-TARGET-1",
            "--passphrase-file",
            "WRONG",
        ],
        "wrong passphrase",
    );
}

#[test]
fn an_unattended_restore_from_a_missing_repository_writes_nothing() {
    unattended_failure(
        "an_unattended_restore_from_a_missing_repository_writes_nothing",
        128,
        &[
            "--repo-path",
            "/backups/elsewhere",
            "--target",
            "serial:PLATTER-TARGET-1",
            "--passphrase-file",
            "RIGHT",
        ],
        "no repository at /backups/elsewhere on any disk",
    );
}

#[test]
fn an_unattended_restore_onto_a_too_small_disk_writes_nothing() {
    unattended_failure(
        "an_unattended_restore_onto_a_too_small_disk_writes_nothing",
        32,
        &[
            "--repo-path",
            "/backups/repo",
            "--target",
            "serial:PLATTER-TARGET-1",
            "--passphrase-file",
            "RIGHT",
        ],
        "does not fit on the 33554432 byte target",
    );
}

#[test]
fn the_menu_restores_through_the_serial_console() {
    let test = "the_menu_restores_through_the_serial_console";
    if !have(test, NEEDS) {
        return;
    }
    let m = machine(128, "xfs");
    let iso = plain_medium();
    let mut vm = Vm::start(test, &m.args(iso));
    let mut at = vm.wait_for("Choice:", 0);
    vm.send("");
    at = vm.wait_for("Repository number [1]:", at);
    let listing = vm.text()[..at].to_string();
    assert!(
        listing.contains("/backups/repo on /dev/vdb1 (xfs"),
        "{listing}"
    );
    // Ctrl-C ends the menu (init starts it again): the device discovery
    // made read-only in the kernel is writable again.
    vm.send_raw(b"\x03");
    at = vm.wait_for("Choice:", at);
    vm.send("!");
    at = vm.wait_for("rescue# ", at);
    // The console echoes the command: the answer is computed so that
    // only the output holds the text waited for.
    vm.send("echo ro-is-$(cat /sys/block/vdb/vdb1/ro)-$((6*7)); exit");
    at = vm.wait_for("-42", at);
    let said = vm.text()[..at].to_string();
    assert!(
        said.ends_with("ro-is-0-42"),
        "after Ctrl-C: {}",
        said.chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    );
    at = vm.wait_for("Choice:", at);
    vm.send("");
    at = vm.wait_for("Repository number [1]:", at);
    vm.send("");
    at = vm.wait_for("Passphrase of the repository", at);
    vm.send("not it");
    at = vm.wait_for("Passphrase of the repository", at);
    vm.send(PASSPHRASE);
    at = vm.wait_for("Snapshot to restore", at);
    vm.send("");
    at = vm.wait_for("Target disk (its name", at);
    let offered = vm.text()[..at].to_string();
    let targets = offered
        .rsplit("Target disks:")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        targets.contains("vdc") && !targets.contains("vda ") && !targets.contains("vdb "),
        "{targets}"
    );
    vm.send("vdc");
    at = vm.wait_for("Extend the last partition", at);
    vm.send("y");
    at = vm.wait_for("Type vdc to go on", at);
    vm.send("vdc");
    at = vm.wait_for("Remove the rescue medium", at);
    vm.send("");
    vm.wait_end();
    let log = vm.text();
    assert!(log[..at].contains("read back and verified"), "{log}");
    eprintln!("{test}: whole session {:.1}s", vm.seconds());
    // The partition's bytes are the snapshot's; its table entry now runs
    // to the end of the larger disk.
    let restored = std::fs::read(&m.target).unwrap();
    let (start, end) = (1 << 20, m.fixture.len() - (1 << 20));
    assert!(
        restored[start..end] == m.fixture[start..end],
        "partition 1 differs from the snapshot's"
    );
    let table = sh(&format!("sfdisk -d {}", m.target.display()));
    let grown = (128u64 << 20) / 512 - 2048;
    assert!(
        table.replace(' ', "").contains(&format!("size={grown}")),
        "the partition was not grown to the end of the disk:\n{table}"
    );
}

// Pins: the medium reaches a repository on S3 through its network (DHCP on a virtio card, QEMU's user network): the menu takes the URL and the keys, restores onto the empty disk, and the disk boots and holds the snapshot's bytes (issue 15: "DHCP networking for repositories on S3").
#[test]
fn the_menu_restores_from_s3_over_dhcp() {
    let test = "the_menu_restores_from_s3_over_dhcp";
    if !have(test, NEEDS) {
        return;
    }
    let fixture_path = boot_fixtures().join("bios-mbr.img");
    let Some(super::s3::OnS3 { url: repo, env }) =
        super::s3::repository_holding(test, &fixture_path)
    else {
        return;
    };
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in the cluster's variables"))
    };
    // QEMU's user network shows the host's 127.0.0.1 as 10.0.2.2.
    let guest_url = repo.replacen("127.0.0.1", "10.0.2.2", 1);
    assert_ne!(guest_url, repo);
    let sandbox = Sandbox::without_repo();
    let target = sandbox.path("target.img");
    sh(&format!("truncate -s 128M {}", target.display()));
    let iso = plain_medium();
    let mut args = drive(iso, ",bootindex=0");
    args[1].push_str(",snapshot=on");
    args.extend(drive(&target, &format!(",serial={TARGET_SERIAL}")));
    args.extend(["-nic".into(), "user,model=virtio-net-pci".into()]);
    let mut vm = Vm::start(test, &args);
    let mut at = vm.wait_for("Choice:", 0);
    vm.send(&guest_url);
    at = vm.wait_for("AWS_ACCESS_KEY_ID:", at);
    vm.send(&var("AWS_ACCESS_KEY_ID"));
    at = vm.wait_for("AWS_SECRET_ACCESS_KEY (not shown):", at);
    vm.send(&var("AWS_SECRET_ACCESS_KEY"));
    at = vm.wait_for("AWS_REGION", at);
    vm.send(&var("AWS_REGION"));
    at = vm.wait_for("Snapshot to restore", at);
    vm.send("");
    at = vm.wait_for("Target disk (its name", at);
    vm.send("vdb");
    at = vm.wait_for("Extend the last partition", at);
    vm.send("n");
    at = vm.wait_for("Type vdb to go on", at);
    vm.send("vdb");
    at = vm.wait_for("Remove the rescue medium", at);
    let log = vm.text();
    assert!(log[..at].contains("read back and verified"), "{log}");
    vm.send("");
    vm.wait_end();
    eprintln!("{test}: whole session {:.1}s", vm.seconds());
    let fixture = std::fs::read(&fixture_path).unwrap();
    let restored = std::fs::read(&target).unwrap();
    assert!(
        restored[..fixture.len()] == fixture[..],
        "the restored disk differs from the snapshot"
    );
    eprintln!("{test}: {}", boots(&target, "bios"));
}

// Pins: two builds sharing one cache take turns, the second saying it waits (hostile session: the second replaced the unpacked kernel the first was reading, and the first then blamed the kernel for a missing module).
#[test]
fn two_builds_sharing_a_cache_take_turns() {
    let test = "two_builds_sharing_a_cache_take_turns";
    if !have(test, NEEDS) {
        return;
    }
    // The shared cache is filled first, so neither build downloads.
    plain_medium();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rescue-cache");
    let build = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_platter"))
            .args(["rescue", "build", "--force", "--cache"])
            .arg(&cache)
            .arg(dir().join(format!("{name}.iso")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = build("turn-a");
    std::thread::sleep(Duration::from_millis(500));
    let second = build("turn-b");
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    for out in [&first, &second] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(
        said.contains("waiting for another `platter rescue build`"),
        "{said}"
    );
}
