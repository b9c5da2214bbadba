//! Ctrl-C and SIGTERM: an interrupted command removes its own unfinished
//! files and its lock, says so, exits 128 + the signal, and leaves every
//! committed snapshot as it was. The signal arrives at an exact step: strace
//! holds the command for a second at every data write and sync, the test
//! sends the signal while it is held in its first write, and the command
//! must end before its next write or sync is let through.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::common::{
    CHUNK, Hold, Image, Rng, Sandbox, files_under, have, held, is_temporary, on_a_terminal,
};

/// At its first data write (a pack or a target), with syncs held too.
const AT_FIRST_WRITE: Hold = Hold {
    traced: "pwrite64,fsync,fdatasync",
    at: 18,
    once: false,
};

/// Runs `platter -r REPO ARGS` under strace held as `hold` says, and
/// sends `signal` to platter (not to strace) while it is held in its first
/// write; `ready` checks first that the unfinished file exists. Returns
/// platter's exit code and stderr.
fn interrupted_at_first_write(
    sandbox: &Sandbox,
    args: &[OsString],
    ready: impl FnOnce() -> bool,
    signal: libc::c_int,
) -> (Option<i32>, String) {
    held(sandbox, args, &AT_FIRST_WRITE, ready, Some(signal))
}

fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// No unfinished file and no lock of a run is left in the repository.
fn assert_nothing_left(sandbox: &Sandbox) {
    let temporary: Vec<_> = files_under(&sandbox.repo)
        .into_iter()
        .filter(|p| is_temporary(p))
        .collect();
    assert_eq!(
        temporary,
        Vec::<PathBuf>::new(),
        "unfinished files were left"
    );
    assert_eq!(locks(sandbox), Vec::<PathBuf>::new(), "a lock was left");
}

fn locks(sandbox: &Sandbox) -> Vec<PathBuf> {
    files_under(&sandbox.repo.join("locks"))
}

// Pins: Ctrl-C, SIGTERM or SIGQUIT during a restore to a new file removes the hidden full-size temporary file and the lock, says "interrupted", and exits 130 / 143.
#[test]
fn an_interrupted_restore_leaves_no_temporary_target_and_no_lock() {
    if !have("signals during restore", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x519);
    let image = Image::random(sandbox.path("disk.img"), 16 * CHUNK + 5, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let out_dir = sandbox.path("out");
    fs::create_dir(&out_dir).unwrap();
    for (signal, code, name) in [
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGQUIT, 131, "SIGQUIT"),
    ] {
        let args: Vec<OsString> = vec![
            "restore".into(),
            id.clone().into(),
            out_dir.join("disk.img").into(),
        ];
        let (exit, stderr) = interrupted_at_first_write(
            &sandbox,
            &args,
            || !hidden_files(&out_dir).is_empty() && !locks(&sandbox).is_empty(),
            signal,
        );
        assert_eq!(exit, Some(code), "{stderr}");
        assert!(
            stderr.contains(&format!("interrupted by {name}")),
            "{stderr}"
        );
        assert_eq!(
            fs::read_dir(&out_dir).unwrap().count(),
            0,
            "left in the target folder"
        );
        assert_eq!(locks(&sandbox), Vec::<PathBuf>::new(), "a lock was left");
    }
    sandbox.assert_restores(&id, &image.bytes);
}

// Pins: SIGTERM during a backup removes its unfinished pack and its lock, exits 143, and the repository verifies clean with every earlier snapshot intact.
#[test]
fn an_interrupted_backup_leaves_no_unfinished_files() {
    if !have("signals during backup", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x51a);
    let mut image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let first = sandbox.snapshot_of(&image.path, &[]);
    let kept = image.bytes.clone();
    image.write_random(&mut rng, 0, 8 * CHUNK);
    let data = sandbox.repo.join("data");
    let unfinished = || files_under(&data).iter().any(|p| is_temporary(p));
    let args: Vec<OsString> = vec!["backup".into(), image.path.clone().into()];
    let (exit, stderr) = interrupted_at_first_write(
        &sandbox,
        &args,
        || unfinished() && !locks(&sandbox).is_empty(),
        libc::SIGTERM,
    );
    assert_eq!(exit, Some(143), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_nothing_left(&sandbox);
    let verify = sandbox.run(["verify", "--read-data"]);
    verify.ok();
    assert!(!verify.stdout.contains("LEFTOVER"), "{}", verify.stdout);
    assert_eq!(sandbox.snapshot_ids(), vec![first.clone()]);
    sandbox.assert_restores(&first, &kept);
}

// Pins: an interrupted restore onto an existing file (--force) says that the file was partly written.
#[test]
fn an_interrupted_restore_over_an_existing_file_says_it_is_partly_written() {
    if !have("signals during restore", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x51b);
    let image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let target = sandbox.path("old.img");
    fs::write(&target, vec![7u8; 4096]).unwrap();
    let args: Vec<OsString> = vec![
        "restore".into(),
        id.into(),
        target.clone().into(),
        "--force".into(),
    ];
    let (exit, stderr) = interrupted_at_first_write(
        &sandbox,
        &args,
        || !locks(&sandbox).is_empty(),
        libc::SIGINT,
    );
    assert_eq!(exit, Some(130), "{stderr}");
    assert!(stderr.contains("partly written"), "{stderr}");
    assert_eq!(locks(&sandbox), Vec::<PathBuf>::new(), "a lock was left");
}

// Pins: the hidden temporary file a SIGKILLed restore leaves is removed by the next restore to the same target, and a live restore's file is not.
#[test]
fn the_next_restore_removes_what_a_killed_restore_left() {
    if !have("signals during restore", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x51c);
    let image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let out_dir = sandbox.path("out");
    fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("disk.img");
    let args: Vec<OsString> = vec!["restore".into(), id.clone().into(), target.clone().into()];
    let (exit, _) = interrupted_at_first_write(
        &sandbox,
        &args,
        || !hidden_files(&out_dir).is_empty(),
        libc::SIGKILL,
    );
    assert_eq!(exit, None, "SIGKILL cannot be caught");
    let left = hidden_files(&out_dir);
    assert_eq!(left.len(), 1, "the killed restore left its file: {left:?}");
    // A file of a live writer (this test's own pid) must stay.
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    let live = out_dir.join(format!(".{name}.platter-{}-1", std::process::id()));
    fs::write(&live, b"in use").unwrap();
    sandbox
        .run([OsString::from("restore"), id.into(), target.clone().into()])
        .ok();
    assert_eq!(
        hidden_files(&out_dir),
        vec![live],
        "what stays beside the target"
    );
    assert_eq!(fs::read(&target).unwrap(), image.bytes);
}

/// Runs `platter -r REPO init` on a pseudo-terminal from a bash that first
/// runs `setup`; once the passphrase prompt is on the screen with echo
/// off, runs `act` (see `on_a_terminal`). Returns everything the terminal
/// showed, which ends with platter's exit code (`EXIT=N`) and the
/// terminal's mode afterwards (`stty -a`).
fn at_the_prompt(sandbox: &Sandbox, setup: &str, act: &str) -> String {
    let command = format!(
        "{setup} {} -r {} init --kdf-memory 8M --kdf-iterations 1; echo EXIT=$?; stty -a",
        env!("CARGO_BIN_EXE_platter"),
        sandbox.repo.display()
    );
    on_a_terminal(&sandbox.path("pty"), &command, &[("new passphrase", act)])
}

// Pins: Ctrl-C at the passphrase prompt (echo off) exits 130 and gives the terminal its echo back.
#[test]
fn ctrl_c_at_the_passphrase_prompt_gives_the_terminal_its_echo_back() {
    if !have("ctrl-c at the prompt", &["script"]) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let out = at_the_prompt(&sandbox, "", "printf '\\003' >&3");
    assert!(out.contains("EXIT=130"), "{out}");
    assert!(out.contains("interrupted by SIGINT"), "{out}");
    let mode = out.rsplit("EXIT=130").next().unwrap_or_default();
    assert!(
        mode.split_whitespace().any(|w| w == "echo"),
        "echo stayed off: {out}"
    );
    assert!(
        !sandbox.repo.exists(),
        "an interrupted init created the repository"
    );
}

// Pins: a platter started with SIGHUP ignored (nohup) keeps ignoring it; SIGTERM still ends it with 143.
#[test]
fn sighup_stays_ignored_under_nohup() {
    if !have("nohup", &["script"]) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let out = at_the_prompt(
        &sandbox,
        "trap \"\" HUP;",
        "kill -HUP $pid; sleep 0.5; kill -0 $pid && touch $out.alive; kill -TERM $pid",
    );
    assert!(
        sandbox.path("pty/out.alive").exists(),
        "SIGHUP ended it: {out}"
    );
    assert!(out.contains("EXIT=143"), "{out}");
}

// Pins: a file size limit (ulimit -f, systemd's LimitFSIZE) makes a restore or a backup fail with a message and no leftovers, instead of SIGXFSZ killing it silently (exit 153) with its temporary files and lock left behind.
#[test]
fn a_file_size_limit_is_an_error_not_a_silent_kill() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x51d);
    let image = Image::random(sandbox.path("disk.img"), 32 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let limited = |args: &str| {
        // ulimit -f counts 1 KiB blocks: 512 KiB, less than the 2 MiB image.
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -f 512; exec {} -r {} {args}",
                env!("CARGO_BIN_EXE_platter"),
                sandbox.repo.display()
            ))
            .output()
            .expect("cannot run bash")
    };
    let out_dir = sandbox.path("out");
    fs::create_dir(&out_dir).unwrap();
    let restore = limited(&format!(
        "restore {id} {}",
        out_dir.join("disk.img").display()
    ));
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(matches!(restore.status.code(), Some(2 | 6)), "{restore:?}");
    assert!(stderr.contains("too large"), "{stderr}");
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "left in the target folder"
    );

    let mut changed = image.bytes.clone();
    rng.fill(&mut changed);
    fs::write(&image.path, &changed).unwrap();
    let backup = limited(&format!("backup {}", image.path.display()));
    assert_eq!(backup.status.code(), Some(6), "{backup:?}");
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(stderr.contains("File too large"), "{stderr}");
    assert_nothing_left(&sandbox);
    assert_eq!(sandbox.snapshot_ids(), vec![id]);
}

// Pins: a backup whose lock is removed while it runs (`unlock --all`, after which a prune could delete what it stored) commits nothing: it fails with exit 5 saying its lock was removed, before its index and manifest.
#[test]
fn a_backup_whose_lock_was_removed_commits_nothing() {
    if !have(
        "a_backup_whose_lock_was_removed_commits_nothing",
        &["strace"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x51e);
    let image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let args: Vec<OsString> = vec!["backup".into(), image.path.clone().into()];
    let (code, stderr) = held(
        &sandbox,
        &args,
        &AT_FIRST_WRITE,
        || {
            let had_lock = !locks(&sandbox).is_empty();
            sandbox.run(["unlock", "--all"]).ok();
            had_lock && locks(&sandbox).is_empty()
        },
        None,
    );
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("was removed while it ran"), "{stderr}");
    assert_eq!(sandbox.snapshot_ids(), Vec::<String>::new());
    assert!(
        files_under(&sandbox.repo.join("index")).is_empty(),
        "an index was written"
    );
}
