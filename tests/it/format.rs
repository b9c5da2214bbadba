//! Backward compatibility: a repository written by format version 1 (kept
//! in fixtures/repo-v1, with the sha256 of each snapshot's source in
//! fixtures/repo-v1.sha256) must still verify and restore byte for byte,
//! before `platter upgrade` and after it (which rewrites its index files
//! into the sorted format).

use std::path::Path;
use std::process::Command;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The format version of each index file of `repo`.
fn index_versions(repo: &Path) -> Vec<u32> {
    std::fs::read_dir(repo.join("index"))
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            u32::from_le_bytes(bytes[8..12].try_into().unwrap())
        })
        .collect()
}

// Pins: repositories written by format v1 stay readable by every later
// version, and `upgrade` migrates their index without losing a chunk.
#[test]
fn a_version_1_repository_still_verifies_and_restores() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // A copy: locks must not be written into the source tree.
    copy_tree(&fixtures.join("repo-v1"), &repo);
    assert_eq!(index_versions(&repo), [1, 1]);
    verify_and_restore(&fixtures, dir.path(), &repo);
    let platter = env!("CARGO_BIN_EXE_platter");
    let upgrade = Command::new(platter)
        .args(["--json", "upgrade", "-r"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(upgrade.status.success(), "{upgrade:?}");
    let report: serde_json::Value = serde_json::from_slice(&upgrade.stdout).unwrap();
    assert_eq!(report["index_files_rewritten"], 2, "{report}");
    assert_eq!(index_versions(&repo), [3], "one sorted index file");
    verify_and_restore(&fixtures, dir.path(), &repo);
}

fn verify_and_restore(fixtures: &Path, dir: &Path, repo: &Path) {
    let platter = env!("CARGO_BIN_EXE_platter");
    let verify = Command::new(platter)
        .args(["verify", "--read-data", "-r"])
        .arg(repo)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let expected = std::fs::read_to_string(fixtures.join("repo-v1.sha256")).unwrap();
    let mut restored = 0;
    for line in expected.lines() {
        let (snapshot, digest) = line.split_once(' ').unwrap();
        let target = dir.join(format!("{snapshot}.img"));
        let _ = std::fs::remove_file(&target);
        let status = Command::new(platter)
            .args(["restore", snapshot])
            .arg(&target)
            .arg("-r")
            .arg(repo)
            .status()
            .unwrap();
        assert!(status.success(), "restore of {snapshot} failed");
        assert_eq!(
            sha256(&target),
            digest,
            "snapshot {snapshot} restored wrong bytes"
        );
        restored += 1;
    }
    assert_eq!(restored, 2, "the fixture lists two snapshots");
}

// Pins: upgrade stops at a damaged old index file, even one whose flipped
// version byte makes it look sorted (exit 4, saying the features are on and
// every index file stays as it was, and what to run), changing no index
// file; after rebuild-index the repository is whole and sorted.
#[test]
fn upgrade_stops_at_a_damaged_index_file_and_changes_none() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_tree(&fixtures.join("repo-v1"), &repo);
    let index = repo.join("index");
    let first = std::fs::read_dir(&index)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[8] = 3;
    std::fs::write(&first, &bytes).unwrap();
    let listing = |dir: &Path| -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        all.sort();
        all
    };
    let before = listing(&index);
    let platter = env!("CARGO_BIN_EXE_platter");
    let upgrade = || {
        Command::new(platter)
            .args(["upgrade", "-r"])
            .arg(&repo)
            .env("PLATTER_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = upgrade();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("sorted-index are on")
            && stderr.contains("stays as it was")
            && stderr.contains("rebuild-index"),
        "{stderr}"
    );
    assert_eq!(listing(&index), before, "an index file changed");
    let rebuilt = Command::new(platter)
        .args(["rebuild-index", "-r"])
        .arg(&repo)
        .env("PLATTER_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    assert!(upgrade().status.success());
    assert_eq!(index_versions(&repo), [3]);
    verify_and_restore(&fixtures, dir.path(), &repo);
}
