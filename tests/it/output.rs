//! What the commands print: with `--json` exactly one JSON document on
//! stdout, whatever the command; and a reader that goes away early (`|
//! head -1`) is not an error.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::Stdio;

use serde_json::Value;

use super::common::{CHUNK, Image, Rng, Sandbox, platter};

// Pins: every command given --json (before or after the subcommand) prints exactly one JSON document on stdout.
#[test]
fn every_command_prints_one_json_document() {
    let sandbox = Sandbox::without_repo();
    let init = sandbox
        .run(["--json", "init", "--plain", "--chunk-size", "64K"])
        .ok()
        .json();
    assert_eq!(init["chunk_size"], CHUNK, "{init}");

    let mut rng = Rng::new(0x07_0001);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK + 1, &mut rng);
    let backup = sandbox
        .run([
            OsStr::new("backup"),
            image.path.as_os_str(),
            "--json".as_ref(),
        ])
        .ok()
        .json();
    let id = backup["snapshot"]
        .as_str()
        .expect("backup names its snapshot");

    let list = sandbox.run(["snapshots", "--json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let show = sandbox.run(["--json", "show", id]).ok().json();
    assert_eq!(show["id"], id, "{show}");
    let target = sandbox.path("out.img");
    let restore = sandbox.restore(id, &target, &[]).ok().json();
    assert_eq!(restore["snapshot"], id, "{restore}");
    for args in [
        vec!["--json", "verify"],
        vec!["verify", "--read-data", "--json"],
    ] {
        let verify = sandbox.run(args).ok().json();
        assert_eq!(verify["damage"], Value::Array(vec![]), "{verify}");
    }
    let unlock = sandbox.run(["--json", "unlock"]).ok().json();
    assert!(unlock["removed"].is_array(), "{unlock}");
}

/// Runs `platter -r REPO ARGS` with stdout a pipe of one page, reads
/// `lines` lines (0: none, the pipe is closed at once), closes it, and
/// requires a clean exit with nothing on stderr.
fn reader_goes_away(sandbox: &Sandbox, args: &[&OsStr], lines: usize) {
    let mut child = platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start platter");
    let stdout = child.stdout.take().unwrap();
    // SAFETY: F_SETPIPE_SZ only reads its integer argument; the fd is open.
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let mut reader = BufReader::new(stdout);
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).expect("cannot read a line");
    }
    drop(reader);
    let out = child.wait_with_output().expect("cannot wait for platter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "`platter {args:?}` with stdout closed after {lines} line(s): {} \n{stderr}",
        out.status
    );
}

// Pins: `platter snapshots | head -1` and friends: a closed stdout ends the program quietly with exit 0.
#[test]
fn closed_stdout_is_not_an_error() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x07_0002);
    let image = Image::random(sandbox.path("disk.img"), CHUNK + 1, &mut rng);
    for _ in 0..20 {
        sandbox.backup(&image.path);
    }
    // The JSON list is larger than the one-page pipe, so the reader leaving
    // after one line surely breaks a write.
    let list = sandbox.run(["--json", "snapshots"]).ok().stdout.len();
    assert!(list > 3 * 4096, "the listing is too short to fill the pipe");
    let source = image.path.as_os_str();
    let cases: [(Vec<&OsStr>, usize); 6] = [
        (vec!["snapshots".as_ref()], 1),
        (vec!["snapshots".as_ref()], 0),
        (vec!["--json".as_ref(), "snapshots".as_ref()], 1),
        (vec!["show".as_ref(), "latest".as_ref()], 1),
        (vec!["verify".as_ref()], 0),
        (vec!["backup".as_ref(), source], 0),
    ];
    for (args, lines) in cases {
        reader_goes_away(&sandbox, &args, lines);
    }
}
