//! Hardening `forget`: a retention policy never removes every snapshot of
//! a source (a misspelt `--keep-tag` once forgot every snapshot of every
//! source and exited 0); snapshots named by id still may be the last ones.

use super::common::*;

/// A repository with `a.img` twice (the first tagged `weekly`) and `b.img`
/// once, untagged; their ids in that order.
fn two_sources(sandbox: &Sandbox) -> [String; 3] {
    let mut rng = Rng::new(0xf0_4637);
    let mut a = Image::random(sandbox.path("a.img"), 4 * CHUNK, &mut rng);
    let b = Image::random(sandbox.path("b.img"), 4 * CHUNK, &mut rng);
    let weekly = sandbox.snapshot_of(&a.path, &["--tag", "weekly"]);
    a.write_random(&mut rng, 0, CHUNK);
    let daily = sandbox.snapshot_of(&a.path, &[]);
    let other = sandbox.snapshot_of(&b.path, &[]);
    [weekly, daily, other]
}

// Pins: forget --keep-tag with a tag no snapshot carries is refused with exit 2 naming the tag, with --prune, --dry-run and --json alike, and removes nothing.
#[test]
fn a_misspelt_keep_tag_removes_nothing() {
    let sandbox = Sandbox::new();
    two_sources(&sandbox);
    let before = sandbox.repo_tree();
    sandbox
        .run(["forget", "--keep-tag", "weekyl", "--prune"])
        .refused(2, "no snapshot carries the tag weekyl");
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a refused forget changed the repository"
    );
    sandbox
        .run(["forget", "--keep-tag", "weekyl", "--dry-run"])
        .refused(2, "weekyl")
        .refused(2, "b.img");
    sandbox
        .run(["--json", "forget", "--keep-tag", "weekyl"])
        .refused(2, "weekyl");
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a refused forget changed the repository"
    );
}

// Pins: a policy that would leave one of two sources with no snapshot is refused naming that source, nothing of either source is removed, the same policy limited with --source to the other one works, and naming the last snapshot by id still forgets it.
#[test]
fn a_policy_that_would_empty_one_source_is_refused() {
    let sandbox = Sandbox::new();
    let [weekly, daily, other] = two_sources(&sandbox);
    let before = sandbox.repo_tree();
    let refused = sandbox.run(["forget", "--keep-tag", "weekly", "--prune"]);
    refused.refused(2, "b.img");
    assert!(
        !refused.stderr.contains("a.img"),
        "the source that keeps a snapshot is named: {}",
        refused.stderr
    );
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a refused forget changed the repository"
    );

    let a = sandbox.path("a.img");
    sandbox
        .run([
            "forget".as_ref(),
            "--keep-tag".as_ref(),
            "weekly".as_ref(),
            "--source".as_ref(),
            a.as_os_str(),
        ])
        .ok();
    let mut left = sandbox.snapshot_ids();
    left.sort();
    let mut expected = vec![weekly.clone(), other.clone()];
    expected.sort();
    assert_eq!(left, expected, "only a.img's untagged snapshot goes");
    assert!(!sandbox.manifest_file(&daily).exists());

    // Named by id, a source's last snapshot goes: that is a choice.
    sandbox.run(["forget", &other]).ok();
    assert_eq!(sandbox.snapshot_ids(), [weekly]);
}

// Pins: a --keep-tag no snapshot carries, beside rules that keep something in every source, is warned about by name (the snapshots it was meant to keep may be going).
#[test]
fn a_misspelt_keep_tag_beside_other_rules_is_warned_about() {
    let sandbox = Sandbox::new();
    two_sources(&sandbox);
    let run = sandbox.run([
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "weekyl",
        "--dry-run",
    ]);
    run.ok();
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("weekyl"),
        "no warning about the unmatched tag: {}",
        run.stderr
    );
}

// Pins: a policy of --keep-tag alone whose tag no snapshot carries is refused even when a protected snapshot keeps its source alive (the misspelt tag would otherwise remove the snapshots it was meant to keep).
#[test]
fn a_misspelt_keep_tag_is_refused_even_beside_a_protected_snapshot() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xf0_07);
    let image = Image::random(sandbox.path("a.img"), 2 * CHUNK, &mut rng);
    sandbox.snapshot_of(&image.path, &[]);
    sandbox.snapshot_of(&image.path, &["--tag", "keep"]);
    let newest = sandbox.snapshot_of(&image.path, &[]);
    sandbox.run(["protect", &newest]).ok();
    let before = sandbox.repo_tree();
    sandbox
        .run(["forget", "--keep-tag", "kep"])
        .refused(2, "kep");
    assert_eq!(
        sandbox.repo_tree(),
        before,
        "a refused forget changed the repository"
    );
    assert_eq!(sandbox.snapshot_ids().len(), 3);
}
