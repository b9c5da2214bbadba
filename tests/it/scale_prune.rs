//! Prune on a repository of 10^6 chunks (issue 18): its memory must not
//! grow with the repository. The repository is written by the generator of
//! `bench/scale.sh` (examples/bigrepo.rs, see `scale.rs`).

use std::path::PathBuf;
use std::process::Command;

use super::common::*;

/// Peak RSS allowed to prune, whatever the repository holds (issue 18).
const PRUNE_RSS_MIB: f64 = 150.0;

/// The generator, built by cargo next to this test binary
/// (`target/<triple>/<profile>/examples/bigrepo`).
fn generator() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in <profile>/deps");
    let path = profile.join("examples").join("bigrepo");
    assert!(
        path.is_file(),
        "the repository generator is not built at {}: run `cargo build --example bigrepo`",
        path.display()
    );
    path
}

// Pins: prune of a repository of 10^6 chunks (500 index files, 1000
// snapshots) stays within 150 MiB peak RSS, dry run and real run, and
// leaves a repository that verifies (before, it held every used chunk,
// every pack table and the new index in memory: 1.3 GiB).
#[test]
fn prune_of_a_million_chunks_stays_within_150_mib() {
    let sandbox = Sandbox::without_repo();
    let out = Command::new(generator())
        .args(["--chunks", "1000000", "--index-files", "500", "--snapshots", "1000"])
        .arg(&sandbox.repo)
        .output()
        .expect("cannot run the generator");
    assert!(
        out.status.success(),
        "generator failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = sandbox.snapshot_ids();
    assert_eq!(ids.len(), 1001);
    // Snapshot j uses chunks [1000j, 1000j+1000), pack k holds
    // [2000k, 2000k+2000): forgetting snapshots 1, 3 and 5 leaves packs 0-2
    // half used (repacked), 8 and 9 leave pack 4 unused (deleted). The
    // small snapshot uses none of those chunks.
    let forget = [&ids[1], &ids[3], &ids[5], &ids[8], &ids[9]];
    sandbox
        .run(["forget"].into_iter().chain(forget.iter().map(|s| s.as_str())))
        .ok();

    let repo = sandbox.repo.to_string_lossy().into_owned();
    let (dry, dry_rss) = run_measuring_rss(["-r", &repo, "--json", "prune", "--dry-run"]);
    let dry = dry.ok().json();
    assert_eq!(dry["packs_deleted"], 1, "{dry}");
    assert_eq!(dry["packs_repacked"], 3, "{dry}");
    let (pruned, rss) = run_measuring_rss(["-r", &repo, "--json", "prune"]);
    let pruned = pruned.ok().json();
    assert_eq!(pruned["packs_deleted"], 1, "{pruned}");
    assert_eq!(pruned["packs_repacked"], 3, "{pruned}");
    assert_eq!(pruned["chunks_used"], dry["chunks_used"], "{pruned}");
    assert_eq!(pruned["bytes_after"], dry["bytes_after"], "{pruned}");
    assert!(
        dry_rss <= PRUNE_RSS_MIB && rss <= PRUNE_RSS_MIB,
        "prune's peak RSS: {dry_rss:.0} MiB (dry run), {rss:.0} MiB; at most \
         {PRUNE_RSS_MIB} MiB allowed"
    );

    let verified = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(verified["damage"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["snapshots"], 996, "{verified}");
    assert_eq!(verified["chunks"], 995_000, "{verified}");
}
