//! Bad input: every mistake a user can make at the command line gets a
//! clear error on stderr, the documented exit code (2 bad input, 3 not
//! found), and writes nothing: no new file in the repository, no target.

use std::ffi::OsStr;
use std::fs;

use super::common::{CHUNK, Image, Rng, Sandbox, run, tree};

/// A sandbox with one snapshot of a small image; returns its id.
fn with_snapshot() -> (Sandbox, Image, String) {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xbad_0001);
    let image = Image::random(sandbox.path("disk.img"), 4 * CHUNK + 9, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    (sandbox, image, id)
}

// Pins: backing up a source that does not exist exits 3 naming it, and writes nothing.
#[test]
fn missing_source() {
    let (sandbox, _, _) = with_snapshot();
    let before = sandbox.repo_tree();
    let missing = sandbox.path("no-such-disk.img");
    sandbox
        .run([OsStr::new("backup"), missing.as_os_str()])
        .refused(3, "no-such-disk.img");
    assert_eq!(sandbox.repo_tree(), before);
}

// Pins: a directory, or an empty file, as the source exits 2 and writes nothing.
#[test]
fn directory_or_empty_file_as_source() {
    let (sandbox, _, _) = with_snapshot();
    let before = sandbox.repo_tree();
    let dir = sandbox.path("a-folder");
    fs::create_dir(&dir).unwrap();
    sandbox
        .run([OsStr::new("backup"), dir.as_os_str()])
        .refused(2, "is a directory");
    let empty = sandbox.path("empty.img");
    fs::write(&empty, b"").unwrap();
    sandbox
        .run([OsStr::new("backup"), empty.as_os_str()])
        .refused(2, "empty");
    assert_eq!(sandbox.repo_tree(), before);
}

// Pins: a folder that is not a repository exits 3 for every command and stays empty.
#[test]
fn folder_that_is_not_a_repository() {
    let sandbox = Sandbox::without_repo();
    let mut rng = Rng::new(0xbad_0002);
    let image = Image::random(sandbox.path("disk.img"), CHUNK, &mut rng);
    fs::create_dir(&sandbox.repo).unwrap();
    let target = sandbox.path("out.img");
    let commands: [Vec<&OsStr>; 6] = [
        vec!["backup".as_ref(), image.path.as_os_str()],
        vec!["snapshots".as_ref()],
        vec!["show".as_ref(), "latest".as_ref()],
        vec!["restore".as_ref(), "latest".as_ref(), target.as_os_str()],
        vec!["verify".as_ref()],
        vec!["unlock".as_ref()],
    ];
    for args in commands {
        sandbox.run(args).refused(3, "not a platter repository");
    }
    assert!(tree(&sandbox.repo).is_empty(), "something was written");
    assert!(!target.exists());
}

// Pins: a regular file given as the repository exits 3 (not found: not a repository), not 6 (I/O error).
#[test]
fn file_that_is_not_a_repository() {
    let sandbox = Sandbox::without_repo();
    fs::write(&sandbox.repo, b"just a file\n").unwrap();
    for args in [vec!["snapshots"], vec!["verify"]] {
        sandbox.run(args).refused(3, "repo");
    }
    assert_eq!(fs::read(&sandbox.repo).unwrap(), b"just a file\n");
}

// Pins: init refuses (exit 2) a non-empty folder that is not a repository, an existing repository, a file, and a bad chunk size, changing nothing.
#[test]
fn init_refuses_what_it_must_not_overwrite() {
    let sandbox = Sandbox::without_repo();
    fs::create_dir(&sandbox.repo).unwrap();
    fs::write(sandbox.repo.join("notes.txt"), b"mine").unwrap();
    let before = tree(&sandbox.repo);
    sandbox
        .run(["init"])
        .refused(2, "not empty and is not a platter repository");
    assert_eq!(tree(&sandbox.repo), before);

    let existing = Sandbox::new();
    let before = existing.repo_tree();
    existing
        .run(["init"])
        .refused(2, "already a platter repository");
    assert_eq!(existing.repo_tree(), before);

    let file = sandbox.path("a-file");
    fs::write(&file, b"x").unwrap();
    run([OsStr::new("-r"), file.as_os_str(), "init".as_ref()]).refused(2, "not a directory");
    assert_eq!(fs::read(&file).unwrap(), b"x");

    let fresh = sandbox.path("fresh");
    run([
        OsStr::new("-r"),
        fresh.as_os_str(),
        "init".as_ref(),
        "--chunk-size".as_ref(),
        "3K".as_ref(),
    ])
    .refused(2, "chunk size");
    assert!(!fresh.exists(), "a refused init created the folder");
}

// Pins: restore onto an existing file without --force exits 2 and leaves the file as it was.
#[test]
fn existing_target_without_force() {
    let (sandbox, _, id) = with_snapshot();
    let target = sandbox.path("precious.img");
    fs::write(&target, b"do not overwrite me").unwrap();
    sandbox.restore(&id, &target, &[]).refused(2, "--force");
    assert_eq!(fs::read(&target).unwrap(), b"do not overwrite me");
}

// Pins: a target that is a folder, or inside a missing folder, is refused (2, 3) and nothing is created.
#[test]
fn target_folder_problems() {
    let (sandbox, _, id) = with_snapshot();
    let dir = sandbox.path("folder");
    fs::create_dir(&dir).unwrap();
    sandbox.restore(&id, &dir, &[]).refused(2, "is a directory");
    assert!(tree(&dir).is_empty());
    let inside_missing = sandbox.path("missing/out.img");
    sandbox
        .restore(&id, &inside_missing, &[])
        .refused(3, "does not exist");
    assert!(!sandbox.path("missing").exists());
}

// Pins: an unknown snapshot id exits 3, a non-hex one exits 2, for show, restore and verify; no target is created.
#[test]
fn unknown_or_malformed_snapshot_id() {
    let (sandbox, _, id) = with_snapshot();
    let unknown = if id.starts_with("ffff") {
        "0000"
    } else {
        "ffff"
    };
    let target = sandbox.path("out.img");
    for (spec, code) in [(unknown, 3), ("not-an-id", 2)] {
        sandbox.restore(spec, &target, &[]).refused(code, spec);
        assert!(!target.exists(), "restore of {spec} created the target");
        sandbox.run(["show", spec]).refused(code, spec);
        sandbox.run(["verify", spec]).refused(code, spec);
    }
}

// Pins: a prefix matching several snapshots exits 2 naming the candidates, and no target is created; a unique prefix works.
#[test]
fn ambiguous_snapshot_prefix() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xbad_0003);
    let image = Image::random(sandbox.path("tiny.img"), 4096, &mut rng);
    // 17 random ids: two share their first hex digit for sure.
    let mut ids: Vec<String> = (0..17)
        .map(|_| {
            sandbox.backup(&image.path)["snapshot"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    let shared = ids
        .windows(2)
        .map(|w| {
            let n = w[0]
                .bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count();
            (n, &w[0])
        })
        .max()
        .map(|(n, id)| id[..n].to_string())
        .unwrap();
    assert!(!shared.is_empty());
    let target = sandbox.path("out.img");
    let refused = sandbox.restore(&shared, &target, &[]);
    refused.refused(2, "matches");
    assert!(!target.exists());

    // One digit more than the longest shared prefix is unique.
    let unique = &ids[0][..shared.len() + 1];
    sandbox.restore(unique, &target, &[]).ok();
    super::common::assert_file_is(&target, &image.bytes, "unique prefix");
}

// Pins: no repository given (no -r, no PLATTER_REPO) exits 2 and says how to give one; PLATTER_REPO works.
#[test]
fn repository_from_flag_or_environment() {
    run(["snapshots"]).refused(2, "PLATTER_REPO");
    let (sandbox, _, id) = with_snapshot();
    let out = super::common::platter()
        .env("PLATTER_REPO", &sandbox.repo)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    let listed = super::common::Run::from_output("snapshots (PLATTER_REPO)".into(), out);
    assert_eq!(listed.ok().json()[0]["id"], id.as_str());
}

// Pins: `restore --expect-serial ""` is refused before anything is opened (hostile session: it reached the device check and said `not ""`).
#[test]
fn an_empty_expected_serial_is_refused() {
    let sandbox = Sandbox::new();
    let target = sandbox.path("t.img");
    sandbox
        .run([
            "restore",
            "latest",
            target.to_str().unwrap(),
            "--expect-serial",
            " ",
        ])
        .refused(2, "--expect-serial is empty");
    assert!(!target.exists());
}

// Pins: `rescue build` and `man` never write into a repository: `rescue build REPO/config --force` replaced the repository's config (it then no longer opened), and a cache inside one added folders to it.
#[test]
fn rescue_images_caches_and_man_pages_stay_out_of_repositories() {
    let sandbox = Sandbox::new();
    let config = sandbox.repo.join("config");
    let before = std::fs::read(&config).unwrap();
    let cache = sandbox.path("cache");
    sandbox
        .run([
            "rescue",
            "build",
            config.to_str().unwrap(),
            "--force",
            "--cache",
            cache.to_str().unwrap(),
        ])
        .refused(2, "inside the platter repository");
    let inner_cache = sandbox.repo.join("cache");
    let image = sandbox.path("rescue.iso");
    sandbox
        .run([
            "rescue",
            "build",
            image.to_str().unwrap(),
            "--cache",
            inner_cache.to_str().unwrap(),
        ])
        .refused(2, "inside the platter repository");
    let data = sandbox.repo.join("data");
    sandbox
        .run(["man", data.to_str().unwrap()])
        .refused(2, "inside the platter repository");
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert!(!inner_cache.exists() && !cache.exists() && !image.exists());
    assert!(
        !std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".1"))
    );
    sandbox.run(["snapshots"]).ok();
}
