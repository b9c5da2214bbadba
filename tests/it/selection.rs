//! Selecting snapshots by source, partition and host: one rule for
//! `snapshots`, `copy` and `forget`, stricter where snapshots are removed.

use std::fs;
use std::os::unix::fs::symlink;

use super::common::*;

// Pins: `snapshots --source` finds a snapshot by the path its backup recorded even when that path now leads elsewhere (it became a symbolic link), as copy and forget do: one matching rule.
#[test]
fn a_source_is_found_by_its_recorded_path_after_it_became_a_link() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5e_1ec7);
    let disk = Image::random(sandbox.path("disk.img"), 2 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&disk.path, &[]);
    let recorded = fs::canonicalize(&disk.path).unwrap();
    fs::rename(&recorded, sandbox.path("moved.img")).unwrap();
    symlink(sandbox.path("moved.img"), &recorded).unwrap();
    let source = recorded.to_str().unwrap();
    let listed = sandbox.run(["--json", "snapshots", "--source", source]);
    assert_eq!(listed_ids(listed.ok()), [id.as_str()]);
    let copy = sandbox.path("copy");
    run([
        "-r",
        copy.to_str().unwrap(),
        "init",
        "--plain",
        "--chunk-size",
        "64K",
    ])
    .ok();
    let copied = sandbox
        .run([
            "--json",
            "copy",
            "--to",
            copy.to_str().unwrap(),
            "--source",
            source,
        ])
        .ok()
        .json();
    assert_eq!(copied["copied"][0]["snapshot"], id.as_str(), "{copied}");
}

// Pins: --partition narrows --source to the snapshots of that partition of it, in `snapshots` and `forget` alike; without it a source's whole-disk and partition snapshots are both its own.
#[test]
fn partition_narrows_a_source() {
    if !have("partition_narrows_a_source", &["sgdisk"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("disk.img");
    sh(&format!(
        "truncate -s 16M {0}; sgdisk -o -n 1:2048:+6M -n 2:0:0 {0} >/dev/null",
        disk.display()
    ));
    let whole = sandbox.snapshot_of(&disk, &[]);
    let part2 = sandbox.snapshot_of(&disk, &["--partition", "2"]);
    let source = disk.to_str().unwrap();
    let all = sandbox.run(["--json", "snapshots", "--source", source]);
    assert_eq!(listed_ids(all.ok()), [whole.clone(), part2.clone()]);
    let second = sandbox.run([
        "--json",
        "snapshots",
        "--source",
        source,
        "--partition",
        "2",
    ]);
    assert_eq!(listed_ids(second.ok()), [part2.as_str()]);
    sandbox
        .run([
            "forget",
            "--keep-last",
            "1",
            "--source",
            source,
            "--partition",
            "1",
        ])
        .refused(3, "--source");
    let alone = sandbox.run(["snapshots", "--partition", "2"]);
    assert!(
        alone.expect_code(2).stderr.contains("--source"),
        "{}",
        alone.describe()
    );
    assert_eq!(sandbox.snapshot_ids(), [whole, part2]);
}

/// Backs up `source` as if on host `host` (a private UTS namespace).
fn backup_on_host(sandbox: &Sandbox, host: &str, source: &std::path::Path) -> String {
    let out = sh(&format!(
        "unshare --uts sh -c 'hostname {host} && {} -r {} --json backup {}'",
        env!("CARGO_BIN_EXE_platter"),
        sandbox.repo.display(),
        source.display()
    ));
    json_document(&out).expect("backup --json")["snapshot"]
        .as_str()
        .expect("an id")
        .to_string()
}

// Pins: forget --source refuses, naming the hosts and changing nothing, when the path has snapshots from several hosts (two machines' /dev/sda are two disks) unless --host names one; --host alone selects in `snapshots`.
#[test]
fn forget_by_source_names_the_host_when_several_have_it() {
    if !have(
        "forget_by_source_names_the_host_when_several_have_it",
        &["root", "unshare"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5e_1ec8);
    let mut disk = Image::random(sandbox.path("disk.img"), 2 * CHUNK, &mut rng);
    let a1 = backup_on_host(&sandbox, "alpha", &disk.path);
    disk.write_random(&mut rng, 0, CHUNK);
    let a2 = backup_on_host(&sandbox, "alpha", &disk.path);
    let b1 = backup_on_host(&sandbox, "beta", &disk.path);
    let source = disk.path.to_str().unwrap();
    let before = sandbox.repo_tree();
    sandbox
        .run(["forget", "--keep-last", "1", "--source", source])
        .refused(2, "alpha, beta");
    assert_eq!(sandbox.repo_tree(), before, "a refused forget wrote");
    let beta = sandbox.run(["--json", "snapshots", "--host", "beta"]);
    assert_eq!(listed_ids(beta.ok()), [b1.as_str()]);
    let forgot = sandbox
        .run([
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--source",
            source,
            "--host",
            "alpha",
        ])
        .ok()
        .json();
    assert_eq!(forgot["removed"], serde_json::json!([a1]), "{forgot}");
    assert_eq!(sandbox.snapshot_ids().len(), 2);
    assert!(sandbox.snapshot_ids().contains(&a2) && sandbox.snapshot_ids().contains(&b1));
}

// Pins: forget refuses --source or --host beside snapshots named by id (they choose what a policy applies to; silently ignoring them would forget what the filter was meant to spare).
#[test]
fn forget_refuses_a_source_filter_beside_named_snapshots() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5e_1ec9);
    let disk = Image::random(sandbox.path("disk.img"), 2 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&disk.path, &[]);
    sandbox
        .run(["forget", &id, "--source", "/dev/other"])
        .refused(2, "--source");
    assert_eq!(sandbox.snapshot_ids(), [id]);
}

// Pins: a relative --source finds the snapshots of a file that is gone (it is made absolute as text, not only through the file), in snapshots, copy and forget alike; copy --last 0 is refused (exit 2) instead of copying nothing or blaming the other filters.
#[test]
fn a_relative_source_that_is_gone_is_still_found() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5e_1eca);
    let disk = Image::random(sandbox.path("g.img"), 2 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&disk.path, &[]);
    fs::remove_file(&disk.path).unwrap();
    let listed = sh(&format!(
        "cd {} && {} -r {} --json snapshots --source g.img",
        sandbox.path("").display(),
        env!("CARGO_BIN_EXE_platter"),
        sandbox.repo.display()
    ));
    let listed = json_document(&listed).expect("snapshots --json");
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    let copy = sandbox.path("copy");
    let last = sandbox.run(["copy", "--to", copy.to_str().unwrap(), "--last", "0"]);
    assert!(
        last.expect_code(2).stderr.contains("--last"),
        "{}",
        last.describe()
    );
}
