//! Prune on a repository of 10^6 chunks (issue 18): its memory must not
//! grow with the repository. The repository is written by the generator of
//! `bench/scale.sh` (examples/bigrepo.rs, see `scale.rs`).

use super::common::*;
use super::scale::generate;

/// Peak RSS allowed to prune, whatever the repository holds (issue 18).
const PRUNE_RSS_MIB: f64 = 150.0;

/// A generated repository of 10^6 chunks (500 index files, 1000 snapshots
/// and the small one) in which five snapshots were forgotten: prune then
/// repacks 3 packs and deletes 1.
fn million_chunks_with_five_forgotten() -> Sandbox {
    let sandbox = Sandbox::without_repo();
    generate(&sandbox, (1_000_000, 500, 1000), None);
    let ids = sandbox.snapshot_ids();
    assert_eq!(ids.len(), 1001);
    // Snapshot j uses chunks [1000j, 1000j+1000), pack k holds
    // [2000k, 2000k+2000): forgetting snapshots 1, 3 and 5 leaves packs 0-2
    // half used (repacked), 8 and 9 leave pack 4 unused (deleted). The
    // small snapshot uses none of those chunks.
    let forget = [&ids[1], &ids[3], &ids[5], &ids[8], &ids[9]];
    sandbox
        .run(
            ["forget"]
                .into_iter()
                .chain(forget.iter().map(|s| s.as_str())),
        )
        .ok();
    sandbox
}

/// Runs `platter --json prune EXTRA...` on `sandbox`, checks its decisions;
/// returns its report and peak RSS in MiB.
fn prune_measured(sandbox: &Sandbox, extra: &[&str]) -> (serde_json::Value, f64) {
    let repo = sandbox.repo.to_string_lossy().into_owned();
    let mut args = vec!["-r", &repo, "--json", "prune"];
    args.extend(extra);
    let (run, rss) = run_measuring_rss(&args);
    let report = run.ok().json();
    eprintln!("{}: peak RSS {rss:.0} MiB", args.join(" "));
    assert_eq!(report["packs_deleted"], 1, "{report}");
    assert_eq!(report["packs_repacked"], 3, "{report}");
    assert_eq!(report["chunks_used"], 995_000, "{report}");
    assert_eq!(report["chunks_missing"], 0, "{report}");
    (report, rss)
}

// Pins: prune's decisions on a repository of 10^6 chunks are made within
// 150 MiB peak RSS (the dry run: every decision, nothing written), and the
// real run leaves a repository that verifies. Before, prune held every
// used chunk, every pack table and the new index in memory: 1240 MiB.
#[test]
fn prune_decides_on_a_million_chunks_within_150_mib() {
    let sandbox = million_chunks_with_five_forgotten();
    let (_, dry_rss) = prune_measured(&sandbox, &["--dry-run"]);
    assert!(
        dry_rss <= PRUNE_RSS_MIB,
        "prune --dry-run's peak RSS is {dry_rss:.0} MiB; at most {PRUNE_RSS_MIB} MiB allowed"
    );
    prune_measured(&sandbox, &[]);
    let verified = sandbox.run(["--json", "verify"]).ok().json();
    assert_eq!(verified["damage"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["snapshots"], 996, "{verified}");
    assert_eq!(verified["chunks"], 995_000, "{verified}");
}

// Pins: prune of a repository of 10^6 chunks, writing included, stays
// within 150 MiB peak RSS. Prune feeds the new index to the IndexWriter
// entry by entry and holds none of it; the writer sorts it in runs in the
// cache folder and streams the index file (it gathered the whole index in
// memory before: 289 MiB here).
#[test]
fn prune_of_a_million_chunks_stays_within_150_mib() {
    let sandbox = million_chunks_with_five_forgotten();
    let (_, rss) = prune_measured(&sandbox, &[]);
    assert!(
        rss <= PRUNE_RSS_MIB,
        "prune's peak RSS is {rss:.0} MiB; at most {PRUNE_RSS_MIB} MiB allowed"
    );
}
