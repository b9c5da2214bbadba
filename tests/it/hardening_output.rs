//! What reaches a person's terminal: names with newlines, escape sequences
//! or direction marks never break a row or drive the terminal, and new tags
//! cannot hold them at all.

use std::ffi::OsStr;
use std::fs;

use super::common::{CHUNK, Image, Rng, Sandbox, platter};

/// Control characters an attacker would use: a newline (false rows), an
/// ANSI clear-screen, the C1 CSI, a window-title OSC ended by BEL, and a
/// right-to-left override.
const HOSTILE: &str = "x\n\u{1b}[2J\u{9b}31m\u{1b}]0;pwned\u{7}\u{202e}gmi";

/// Whether `text` holds any character a terminal would act on, other
/// than the newlines that end lines.
fn acts_on_terminal(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        c != '\n'
            && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    })
}

// Pins: a tag with a newline, an escape, a C1 control or a bidi override (or an empty tag) is refused with exit 2 and nothing written.
#[test]
fn new_tags_with_control_characters_are_refused() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7a9);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let before = sandbox.repo_tree();
    for tag in [
        "two\nlines",
        "\u{1b}[2J",
        "csi\u{9b}",
        "evil\u{202e}txt",
        "",
    ] {
        let run = sandbox.run([
            OsStr::new("backup"),
            image.path.as_os_str(),
            "--tag".as_ref(),
            tag.as_ref(),
        ]);
        run.refused(2, "tag");
        assert_eq!(acts_on_terminal(&run.stderr), None, "{}", run.stderr);
    }
    assert_eq!(sandbox.repo_tree(), before, "a refused backup wrote");
    sandbox.snapshot_of(&image.path, &["--tag", "before upgrade"]);
}

// Pins: a source path holding control characters is printed escaped on one row by snapshots and show, in errors and hints too, while --json keeps it byte for byte.
#[test]
fn hostile_names_are_escaped_in_every_human_output() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7aa);
    let name = format!("disk{HOSTILE}.img");
    let image = Image::random(sandbox.path(&name), 3 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);

    let list = sandbox.run(["snapshots"]);
    list.ok();
    assert_eq!(acts_on_terminal(&list.stdout), None, "{}", list.stdout);
    assert_eq!(
        list.stdout.lines().count(),
        2,
        "a header and one row:\n{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("\\n\\u{1b}[2J\\u{9b}31m"),
        "{}",
        list.stdout
    );

    let show = sandbox.run(["show", &id]);
    show.ok();
    assert_eq!(acts_on_terminal(&show.stdout), None, "{}", show.stdout);

    let listed = sandbox.run(["--json", "snapshots"]).ok().json();
    let recorded = listed[0]["source"]["path"].as_str().unwrap_or_default();
    assert!(
        recorded.ends_with(&name),
        "--json changed the path: {recorded:?}"
    );

    // An error that names the hostile path: a new target in a folder
    // that does not exist.
    let missing = sandbox.path(&format!("no-such-folder{HOSTILE}"));
    let refused = sandbox.run([
        OsStr::new("restore"),
        id.as_ref(),
        missing.join("out.img").as_os_str(),
    ]);
    refused.refused(3, "no-such-folder");
    assert_eq!(
        acts_on_terminal(&refused.stderr),
        None,
        "{}",
        refused.stderr
    );

    // Hints stay on lines of their own.
    let busy = sandbox.run([OsStr::new("restore"), id.as_ref(), image.path.as_os_str()]);
    busy.refused(2, "refusing to overwrite");
    assert!(busy.stderr.contains("\n  hint: "), "{}", busy.stderr);
    assert_eq!(acts_on_terminal(&busy.stderr), None, "{}", busy.stderr);
    fs::remove_file(&image.path).unwrap();
}

// Pins: a refused chunk size names its real fault: 4 KiB is a power of two but too small; 96 KiB is in range but not a power of two.
#[test]
fn chunk_size_errors_say_what_is_wrong() {
    let sandbox = Sandbox::without_repo();
    let small = sandbox.run(["init", "--plain", "--chunk-size", "4K"]);
    small.refused(2, "outside 64 KiB to 16 MiB");
    assert!(
        !small.stderr.contains("not a power of two"),
        "{}",
        small.stderr
    );
    sandbox
        .run(["init", "--plain", "--chunk-size", "96K"])
        .refused(2, "is not a power of two");
    assert!(
        !sandbox.repo.exists(),
        "a refused init created the repository"
    );
}

// Pins: with --json an error is one JSON document on stdout whose context (what platter was doing) and hints are fields of their own, beside the human lines on stderr.
#[test]
fn json_errors_keep_context_and_hints_apart() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7ab);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    fs::remove_file(sandbox.map_file(&id)).unwrap();
    let target = sandbox.path("out.img");
    let run = sandbox.restore(&id, &target, &[]);
    run.refused(4, "map");
    let error = &run.json()["error"];
    assert_eq!(error["kind"], "corrupt", "{error}");
    let context = error["context"].as_array().expect("a context list");
    assert!(
        context
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.contains(&id[..8]))),
        "the context does not name the snapshot: {error}"
    );
    let hints = error["hints"].as_array().expect("a hint list");
    assert!(!hints.is_empty(), "{error}");
    for hint in hints {
        let hint = hint.as_str().unwrap();
        assert!(
            !error["message"].as_str().unwrap().contains(hint),
            "{error}"
        );
        assert!(
            run.stderr.contains(&format!("\n  hint: {hint}")),
            "{}",
            run.stderr
        );
    }
    assert!(!target.exists());
}

// Pins: a stderr that cannot be written (/dev/full) loses messages, never the work or the exit code: an error still exits with its kind's code (not a panic's 101), and a backup that warns still commits.
#[test]
fn an_unwritable_stderr_changes_no_exit_code() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7ac);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let missing = platter()
        .args(["-r", "/nonexistent/repo", "snapshots"])
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(missing.code(), Some(3));
    // A source whose layout warns: an MBR whose partition runs past the end.
    let mut sector = vec![0u8; 512];
    sector[446 + 4] = 0x83;
    sector[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    sector[446 + 12..446 + 16].copy_from_slice(&100_000u32.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    let mut disk = image.bytes.clone();
    disk[..512].copy_from_slice(&sector);
    fs::write(&image.path, &disk).unwrap();
    let warned = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("backup")
        .arg(&image.path)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains("warning"),
        "the backup gave no warning, so this test proves nothing"
    );
    let backup = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("backup")
        .arg(&image.path)
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(backup.code(), Some(0));
    assert_eq!(sandbox.snapshot_ids().len(), 2);
}

// Pins: a target name too long, or a symbolic link loop as target or repository path, is bad input (exit 2), and a target that is a running program (ETXTBSY, like an active swap file) is busy (exit 5), not an I/O error (6).
#[test]
fn unusable_names_and_files_in_use_get_their_own_exit_codes() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7ad);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let long = sandbox.path(&"a".repeat(300));
    sandbox
        .run([OsStr::new("restore"), id.as_ref(), long.as_os_str()])
        .refused(2, "too long");
    std::os::unix::fs::symlink("loop-b", sandbox.path("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", sandbox.path("loop-b")).unwrap();
    let looped = sandbox.path("loop-a").join("x.img");
    sandbox
        .run([OsStr::new("restore"), id.as_ref(), looped.as_os_str()])
        .refused(2, "symbolic links");
    // A repository path that is a loop of links is the user's input too,
    // not a repository file that is a link (damage).
    super::common::run([
        OsStr::new("-r"),
        sandbox.path("loop-a").as_os_str(),
        "snapshots".as_ref(),
    ])
    .refused(2, "symbolic links");
    let program = sandbox.path("sleeper");
    fs::copy("/bin/sleep", &program).unwrap();
    let mut running = std::process::Command::new(&program)
        .arg("30")
        .spawn()
        .unwrap();
    let busy = sandbox.run([
        OsStr::new("restore"),
        id.as_ref(),
        program.as_os_str(),
        "--force".as_ref(),
    ]);
    running.kill().ok();
    running.wait().ok();
    busy.refused(5, "busy");
}

// Pins: a passphrase source is read up to its first line only: /dev/zero is refused at once (exit 2), a command that goes on printing (`yes`) or leaves a child holding its output open gives its first line without waiting, bytes that are not UTF-8 are refused, and CRLF endings still work.
#[test]
fn passphrase_sources_are_read_only_up_to_their_first_line() {
    let sandbox = Sandbox::encrypted();
    let repo = sandbox.repo.to_str().unwrap().to_string();
    let bounded = |extra: &[&str]| {
        // timeout(1) exits 124 if platter were still reading after 20 s.
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_platter"))
            .args(["-r", &repo])
            .args(extra)
            .arg("snapshots")
            .env_remove("PLATTER_PASSWORD")
            .env_remove("PLATTER_PASSWORD_FILE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = bounded(&["--password-file", "/dev/zero"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("without ending a line"), "{stderr}");
    // Only the first line counts: a command that goes on printing is cut
    // off by SIGPIPE, and one whose child keeps its output open is not
    // waited for.
    let (code, stderr) = bounded(&["--password-command", "yes 'correct horse battery staple'"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = bounded(&[
        "--password-command",
        "echo 'correct horse battery staple'; sleep 60 2>/dev/null &",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    // Bytes that are not text are refused, not changed into another
    // passphrase that someone else's bytes could also become.
    let (code, stderr) = bounded(&["--password-command", "printf 'k\\377\\n'"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    let (code, stderr) = bounded(&[
        "--password-command",
        "printf 'correct horse battery staple\\r\\n'",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

// Pins: a backup whose lock cannot be removed at the end (EIO injected into its one unlink) still exits 0 with its snapshot, and warns that the lock stays and how it goes away.
#[test]
fn a_lock_that_cannot_be_released_is_warned_about() {
    if !super::common::have(
        "a_lock_that_cannot_be_released_is_warned_about",
        &["strace"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x7ae);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let out = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=unlink,unlinkat"])
        .args(["-e", "inject=unlink,unlinkat:error=EIO:when=1"])
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("backup")
        .arg(&image.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("could not release the repository lock"),
        "{stderr}"
    );
    assert_eq!(sandbox.snapshot_ids().len(), 1);
}

// Pins: with --json, a command line clap refuses is also one JSON error document on stdout (exit 2); and a reader that goes away (`| true`) no longer turns an error's exit code into 0.
#[test]
fn json_usage_errors_and_closed_pipes_keep_their_exit_codes() {
    let usage = super::common::run(["--json", "forget", "--keep-last", "x"]);
    usage.expect_code(2);
    let doc = usage.json();
    assert_eq!(doc["error"]["kind"], "bad_input", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--keep-last"),
        "{doc}"
    );
    // stdout is a pipe whose reader is already gone: every write fails
    // with EPIPE, with no race.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array, which lives.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made by pipe and are owned here
    // alone; the read end is closed at once.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    let closed = platter()
        .args(["-r", "/nonexistent/repo", "--json", "snapshots"])
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(closed.code(), Some(3));
}
