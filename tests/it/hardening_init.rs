//! Creating a repository is all or nothing: never inside another one, never
//! twice under one name, and never half made when interrupted.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{FAST_KDF, Hold, Sandbox, have, held, in_call, run, traced_child};

/// Held at renameat2 (x86-64 number 316): the config being put in place
/// without replacing one, the last step of an init, with everything else
/// of the repository made.
const AT_CONFIG: Hold = Hold {
    traced: "renameat2,fsync",
    at: 316,
    once: false,
};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn init_args(password: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["init".into(), "--password-file".into(), password.into()];
    args.extend(FAST_KDF.iter().map(OsString::from));
    args
}

// Pins: init refuses a folder inside an existing repository (beside its folders, or inside one of them), exit 2, creating nothing.
#[test]
fn init_inside_a_repository_is_refused() {
    let sandbox = Sandbox::new();
    for inner in ["nested", "snapshots/inner", "data/x"] {
        let path = sandbox.repo.join(inner);
        run([
            OsString::from("-r"),
            path.clone().into(),
            "init".into(),
            "--plain".into(),
        ])
        .refused(2, "inside the platter repository");
        assert!(!path.exists(), "{inner} was created");
    }
    sandbox.run(["verify"]).ok();
}

// Pins: an init interrupted at its last step (SIGTERM while the config is put in place) leaves nothing: no repository, no hidden folder; a new init then works.
#[test]
fn an_interrupted_init_leaves_nothing() {
    if !have("an_interrupted_init_leaves_nothing", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let password = sandbox.path("pass");
    fs::write(&password, "one\n").unwrap();
    let before = names_in(&sandbox.path(""));
    let (code, stderr) = held(
        &sandbox,
        &init_args(&password),
        &AT_CONFIG,
        || names_in(&sandbox.path("")).len() > before.len(),
        Some(libc::SIGTERM),
    );
    assert_eq!(code, Some(143), "{stderr}");
    assert_eq!(names_in(&sandbox.path("")), before, "init left something");
    sandbox.run(init_args(&password)).ok();
    sandbox
        .run([
            "--password-file".as_ref(),
            password.as_os_str(),
            "snapshots".as_ref(),
        ])
        .ok();
}

// Pins: two inits of one new folder at once never both succeed: the one that finishes second is refused (busy) and leaves nothing; the repository opens with the winner's passphrase only.
#[test]
fn two_inits_of_one_folder_never_both_succeed() {
    if !have("two_inits_of_one_folder_never_both_succeed", &["strace"]) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let (first, second) = (sandbox.path("first"), sandbox.path("second"));
    fs::write(&first, "first\n").unwrap();
    fs::write(&second, "second\n").unwrap();
    let (code, stderr) = held(
        &sandbox,
        &init_args(&first),
        &AT_CONFIG,
        || {
            sandbox.run(init_args(&second)).ok();
            true
        },
        None,
    );
    assert_eq!(code, Some(5), "the held init also succeeded: {stderr}");
    assert!(stderr.contains("appeared"), "{stderr}");
    let hidden: Vec<_> = names_in(&sandbox.path(""))
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(
        hidden,
        Vec::<String>::new(),
        "the losing init left its folder"
    );
    assert_eq!(names_in(&sandbox.repo.join("keys")).len(), 1);
    sandbox
        .run([
            "--password-file".as_ref(),
            second.as_os_str(),
            "snapshots".as_ref(),
        ])
        .ok();
    sandbox
        .run([
            "--password-file".as_ref(),
            first.as_os_str(),
            "snapshots".as_ref(),
        ])
        .expect_code(8);
}

// Pins: two inits of one existing empty folder, where the loser made the folders and the winner wrote the config first: the loser removes only its own key file, never the folders or key of the repository that won, which then opens and backs up.
#[test]
fn the_loser_of_an_init_race_in_place_leaves_the_winner_whole() {
    if !have(
        "the_loser_of_an_init_race_in_place_leaves_the_winner_whole",
        &["strace"],
    ) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    fs::create_dir(&sandbox.repo).unwrap();
    let (loser, winner) = (sandbox.path("loser"), sandbox.path("winner"));
    fs::write(&loser, "loser\n").unwrap();
    fs::write(&winner, "winner\n").unwrap();
    // The winner is held at its first mkdir, after it found the folder
    // empty. Meanwhile the loser finds it empty too, makes every folder,
    // its key file and the reserve, and is held 10 s at its config; the
    // winner, let go, writes its config within those 10 s.
    let at_mkdir = Hold {
        traced: "mkdir",
        at: 83,
        once: true,
    };
    let mut loser_run = None;
    let (code, stderr) = held(
        &sandbox,
        &init_args(&winner),
        &at_mkdir,
        || {
            let child = Command::new("strace")
                .args(["-f", "-o", "/dev/null", "-e", "trace=renameat2"])
                .args(["-e", "inject=renameat2:delay_enter=10000000"])
                .arg(env!("CARGO_BIN_EXE_platter"))
                .arg("-r")
                .arg(&sandbox.repo)
                .args(init_args(&loser))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run strace");
            let started = Instant::now();
            while !traced_child(child.id()).is_some_and(|pid| in_call(pid, 316)) {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "the loser never got held"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            loser_run = Some(child);
            true
        },
        None,
    );
    assert_eq!(code, Some(0), "the winner failed: {stderr}");
    let lost = loser_run
        .expect("the loser ran")
        .wait_with_output()
        .unwrap();
    assert_ne!(lost.status.code(), Some(0), "both inits succeeded");
    assert_eq!(names_in(&sandbox.repo.join("keys")).len(), 1);
    let open = |pass: &Path| {
        sandbox.run([
            "--password-file".as_ref(),
            pass.as_os_str(),
            "snapshots".as_ref(),
        ])
    };
    open(&winner).ok();
    open(&loser).expect_code(8);
    let image = sandbox.path("disk.img");
    fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    sandbox
        .run([
            "--password-file".as_ref(),
            winner.as_os_str(),
            "backup".as_ref(),
            image.as_os_str(),
        ])
        .ok();
}
