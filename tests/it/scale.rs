//! The repository generator of `bench/scale.sh` (examples/bigrepo.rs), at a
//! small size: what it writes must be a repository every command accepts,
//! or the bench measures commands on something they would refuse.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use super::common::*;

/// The generator, built by cargo next to this test binary
/// (`target/<triple>/<profile>/examples/bigrepo`).
fn generator() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // .../<profile>/deps/tests-HASH -> .../<profile>/examples/bigrepo
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in <profile>/deps");
    let path = profile.join("examples").join("bigrepo");
    assert!(
        path.is_file(),
        "the repository generator is not built at {}: run `cargo build --example bigrepo` \
         (or `cargo test`, which builds examples; `cargo test --test tests` does not)",
        path.display()
    );
    path
}

// Pins: the generator writes a repository that verify --read-data passes,
// whose small snapshot restores byte for byte, and that forget + prune
// leave consistent.
#[test]
fn generated_repository_verifies_restores_and_prunes() {
    let sandbox = Sandbox::without_repo();
    let small = sandbox.path("small.img");
    let stdout = generate(&sandbox, (10_000, 20, 40), Some(&small));
    let small_id = small_snapshot(&stdout);
    assert!(
        stdout.contains("chunks=10000 index_files=20 snapshots=41 packs=20"),
        "{stdout}"
    );

    let ids = sandbox.snapshot_ids();
    assert_eq!(ids.len(), 41);
    // The small snapshot is the newest.
    assert_eq!(ids.last(), Some(&small_id));

    let verified = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(assert_clean(&verified, 41), 10_000);

    let expected = std::fs::read(&small).expect("the small snapshot's source");
    assert_eq!(expected.len(), 4 << 20);
    sandbox.assert_restores(&small_id, &expected);

    // Forget two snapshots: prune drops their chunks (half of each of two
    // packs: repacked) and what is left still verifies.
    sandbox.run(["forget", &ids[0], &ids[3]]).ok();
    sandbox.run(["prune"]).ok();
    let verified = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
    // 250 chunks each, less those the small snapshot also uses.
    let left = assert_clean(&verified, 39);
    assert!((9_500..10_000).contains(&left), "{verified}");
    sandbox.assert_restores(&small_id, &expected);
}

/// Checks a `verify --read-data --json` report of a clean repository of
/// `snapshots` snapshots; returns the number of chunks.
fn assert_clean(report: &serde_json::Value, snapshots: u64) -> u64 {
    let empty = serde_json::Value::Array(vec![]);
    assert_eq!(report["damage"], empty, "{report}");
    assert_eq!(report["leftovers"], empty, "{report}");
    assert_eq!(report["snapshots"], snapshots, "{report}");
    report["chunks"].as_u64().expect("a chunk count")
}

/// Generates a repository of `chunks` chunks over `index_files` index
/// files and `snapshots` snapshots (the bench's shape is `chunks / 2000`
/// and `chunks / 1000`), plus, with `small`, a small 4 MiB snapshot of
/// that image; returns what the generator printed.
pub(super) fn generate(
    sandbox: &Sandbox,
    (chunks, index_files, snapshots): (u64, u64, u64),
    small: Option<&std::path::Path>,
) -> String {
    let mut command = Command::new(generator());
    command
        .args(["--chunks", &chunks.to_string()])
        .args(["--index-files", &index_files.to_string()])
        .args(["--snapshots", &snapshots.to_string()]);
    if let Some(small) = small {
        command.arg("--small-image").arg(small);
    }
    let out = command
        .arg(&sandbox.repo)
        .output()
        .expect("cannot run the generator");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "generator failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The small snapshot's id, from what the generator printed.
fn small_snapshot(stdout: &str) -> String {
    stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("small="))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no `small=ID` line in {stdout:?}"))
        .to_string()
}

// Pins: in a repository of a million chunks (500 index files, a thousand snapshots), a first backup of a new 256 MiB image (which builds the index cache) stays within 100 MiB of peak RSS, and `snapshots`, a restore of a small snapshot and `verify` within 150 MiB each (loading the index whole took about 290 MiB for each); the restore is byte for byte and verify finds the repository clean.
#[test]
fn a_million_chunk_repository_is_worked_in_flat_memory() {
    let sandbox = Sandbox::without_repo();
    let small = sandbox.path("small.img");
    let small_id = small_snapshot(&generate(
        &sandbox,
        (1_000_000, 1_000_000 / 2000, 1_000_000 / 1000),
        Some(&small),
    ));
    let repo = sandbox.repo.as_os_str().to_owned();
    // Its own cache folder: the first command finds no cache.
    let cache = sandbox.path("cache");
    let measured = |args: &[&OsStr], bound: f64| {
        let mut all: Vec<&OsStr> = vec!["-r".as_ref(), &repo];
        all.extend_from_slice(args);
        let (run, rss) = run_measuring_rss_in(&all, &cache);
        run.ok();
        assert!(
            rss <= bound,
            "`platter {}` peaked at {rss:.0} MiB, more than {bound} MiB",
            run.command
        );
        eprintln!("{}: {rss:.0} MiB", run.command);
        run
    };
    let mut rng = Rng::new(0x18_0001);
    let image = Image::random(sandbox.path("new.img"), 256 << 20, &mut rng);
    measured(&["backup".as_ref(), image.path.as_os_str()], 100.0);
    // Snapshots read no index: the shared cache folder will do.
    let (listed, rss) = run_measuring_rss([OsStr::new("-r"), &repo, "snapshots".as_ref()]);
    listed.ok();
    assert!(rss <= 150.0, "`platter snapshots` peaked at {rss:.0} MiB");
    let target = sandbox.path("restored.img");
    measured(
        &["restore".as_ref(), small_id.as_ref(), target.as_os_str()],
        150.0,
    );
    assert_file_is(
        &target,
        &std::fs::read(&small).unwrap(),
        "the small snapshot",
    );
    let verified = measured(&["--json".as_ref(), "verify".as_ref()], 150.0).json();
    assert_eq!(verified["damage"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["snapshots"], 1002, "{verified}");
    // A million generated chunks and those of the new image.
    assert!(
        verified["chunks"].as_u64().unwrap() > 1_000_000,
        "{verified}"
    );
}
