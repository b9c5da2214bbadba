//! Second copies of a repository: `copy` moves snapshots (keeping their
//! ids) and only the chunks the other side lacks; the copy alone restores
//! everything after the first repository is gone; a killed copy resumes
//! and never leaves a snapshot that cannot be restored; damage in one
//! repository is named by `verify` and brought back by `repair --from`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use super::common::*;

/// A second repository beside the sandbox's, with its own settings.
fn other_repo(sandbox: &Sandbox, name: &str, extra: &[&str]) -> PathBuf {
    let path = sandbox.path(name);
    let mut args = vec![
        OsStr::new("-r"),
        path.as_os_str(),
        "init".as_ref(),
        "--plain".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run(args).ok();
    path
}

fn copy_to(sandbox: &Sandbox, to: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        OsStr::new("--json"),
        "copy".as_ref(),
        "--to".as_ref(),
        to.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    sandbox.run(args)
}

fn in_repo(repo: &Path, args: &[&OsStr]) -> Run {
    let mut all = vec![OsStr::new("-r"), repo.as_os_str()];
    all.extend_from_slice(args);
    run(all)
}

/// Three snapshots of an image that changes between backups; returns each
/// snapshot's id and bytes.
fn three_snapshots(sandbox: &Sandbox, rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut image = Image::random(sandbox.path("disk.img"), 40 * CHUNK + 777, rng);
    image.write_zeros(3 * CHUNK, 4 * CHUNK);
    let mut taken = Vec::new();
    for round in 0..3 {
        if round > 0 {
            image.write_random(rng, (round * 9) * CHUNK, 5 * CHUNK);
        }
        let id = sandbox.backup(&image.path)["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        taken.push((id, image.bytes.clone()));
    }
    taken
}

fn restores_from(repo: &Path, id: &str, expected: &[u8], scratch: &Path) {
    let target = scratch.join(format!("restored-{}", random_name()));
    in_repo(repo, &["restore".as_ref(), id.as_ref(), target.as_os_str()]).ok();
    assert_file_is(
        &target,
        expected,
        &format!("snapshot {id} from {}", repo.display()),
    );
    fs::remove_file(&target).unwrap();
}

fn repair_from(sandbox: &Sandbox, copy: &Path) -> Value {
    let args = [
        OsStr::new("--json"),
        "repair".as_ref(),
        "--from".as_ref(),
        copy.as_os_str(),
    ];
    sandbox.run(args).ok().json()
}

// Pins: copy moves every snapshot with its id into a repository that compresses differently; a second copy moves nothing; after the first repository is deleted, the copy restores every snapshot byte for byte and verifies clean.
#[test]
fn a_copy_restores_everything_after_the_first_repository_is_gone() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e01);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(
        &sandbox,
        "usb",
        &["--chunk-size", "64K", "--compression", "none"],
    );

    let first = copy_to(&sandbox, &usb, &[]).ok().json();
    let copied: Vec<&str> = first["copied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["snapshot"].as_str().unwrap())
        .collect();
    let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(copied, ids);
    assert!(first["chunks_copied"].as_u64().unwrap() > 0);

    let again = copy_to(&sandbox, &usb, &[]).ok().json();
    assert_eq!(again["chunks_copied"], 0, "{again}");
    assert_eq!(again["bytes_stored"], 0, "{again}");
    assert_eq!(again["already_there"].as_array().unwrap().len(), 3);

    fs::remove_dir_all(&sandbox.repo).unwrap();
    for (id, bytes) in &taken {
        restores_from(&usb, id, bytes, &sandbox.path("."));
    }
    let report = verify_clean(&usb);
    assert_eq!(report["snapshots"], 3);
}

// Pins: copy selects by --last, --tag and name (a tag nothing has is not found, exit 3), and a later copy of the rest moves only chunks the other repository lacks.
#[test]
fn copy_filters_and_moves_only_missing_chunks() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e02);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    let last = copy_to(&sandbox, &usb, &["--last", "1"]).ok().json();
    assert_eq!(last["copied"][0]["snapshot"], taken[2].0.as_str());
    let whole = last["chunks_copied"].as_u64().unwrap();
    let rest = copy_to(&sandbox, &usb, &[&taken[1].0[..10]]).ok().json();
    // The second snapshot shares all but its changed chunks with the third.
    let moved = rest["chunks_copied"].as_u64().unwrap();
    assert!(moved <= 5, "moved {moved} chunks (whole snapshot: {whole})");
    copy_to(&sandbox, &usb, &["--tag", "no-such-tag"]).refused(3, "no-such-tag");
    restores_from(&usb, &taken[1].0, &taken[1].1, &sandbox.path("."));
}

// Pins: copying into a repository with another chunk size is refused (exit 7) with the reason and the init command that fixes it; nothing is written there.
#[test]
fn copy_refuses_another_chunk_size() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e03);
    three_snapshots(&sandbox, &mut rng);
    let other = other_repo(&sandbox, "other", &["--chunk-size", "128K"]);
    let before = tree(&other);
    let run = copy_to(&sandbox, &other, &[]);
    run.refused(7, "chunks of different sizes");
    assert!(run.stderr.contains("--chunk-size 65536"), "{}", run.stderr);
    assert_eq!(tree(&other), before);
}

// Pins: a copy killed with -9 at many moments never leaves a snapshot in the other repository that fails to restore or verify; rerun, it finishes without moving again the packs that were already indexed there.
#[test]
fn killed_copies_resume_and_leave_only_whole_snapshots() {
    let sandbox = Sandbox::new();
    // Two snapshots of 160 MiB (three packs each way): room for kills
    // between pack commits.
    let disk = sandbox.path("big.img");
    urandom_file(&disk, 160 << 20);
    let first = sandbox.backup(&disk)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let first_hash = blake3::hash(&fs::read(&disk).unwrap()).to_hex().to_string();
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&vec![0x77u8; 8 << 20], 50 << 20).unwrap();
    drop(f);
    let second = sandbox.backup(&disk)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let second_hash = blake3::hash(&fs::read(&disk).unwrap()).to_hex().to_string();
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);

    // How long a whole copy takes, into a scratch repository.
    let scratch = other_repo(&sandbox, "scratch", &["--chunk-size", "64K"]);
    let started = Instant::now();
    copy_to(&sandbox, &scratch, &[]).ok();
    let full = started.elapsed();
    fs::remove_dir_all(&scratch).unwrap();

    let (mut resumed_with_packs, mut interrupted) = (false, 0);
    for round in 0..6u32 {
        // Early in each run: every run resumes and has less left to do.
        let delay = full.mul_f64(0.05 + 0.08 * f64::from(round));
        let mut child = spawn(
            &sandbox,
            &["copy".as_ref(), "--to".as_ref(), usb.as_os_str()],
        );
        std::thread::sleep(delay);
        interrupted += usize::from(child.try_wait().unwrap().is_none());
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever the kill left, every snapshot there is whole.
        let listed = in_repo(&usb, &["--json".as_ref(), "snapshots".as_ref()])
            .ok()
            .json();
        for s in listed.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            let target = sandbox.path(&format!("check-{round}.img"));
            in_repo(&usb, &["restore".as_ref(), id.as_ref(), target.as_os_str()]).ok();
            let got = blake3::hash(&fs::read(&target).unwrap())
                .to_hex()
                .to_string();
            let want = if id == first {
                &first_hash
            } else {
                assert_eq!(id, second);
                &second_hash
            };
            assert_eq!(&got, want, "snapshot {id} after a kill at {delay:?}");
            fs::remove_file(&target).unwrap();
        }
        verify_clean(&usb);
        resumed_with_packs |= !files_under(&usb.join("index")).is_empty();
    }
    // Each run resumes where the last one stopped, so later kills may
    // find nothing left to do; the first ones must have hit a copy.
    eprintln!("a whole copy took {full:?}; {interrupted} of 6 kills hit a running copy");
    assert!(
        interrupted >= 2,
        "only {interrupted} kills hit a running copy ({full:?})"
    );
    let last = copy_to(&sandbox, &usb, &[]).ok().json();
    let total_chunks = 2 * (160 << 20) / CHUNK; // an upper bound: the two share most chunks
    if resumed_with_packs {
        assert!(
            last["chunks_copied"].as_u64().unwrap() < total_chunks / 2,
            "{last}"
        );
    }
    let listed = in_repo(&usb, &["--json".as_ref(), "snapshots".as_ref()])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    verify_clean(&usb);
}

// Pins: a damaged chunk is named by verify --snapshot with the snapshot and byte range it affects; repair --from the copy brings it back; verify is clean again and the snapshot restores byte for byte.
#[test]
fn damage_is_named_and_repaired_from_a_copy() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e05);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    copy_to(&sandbox, &usb, &[]).ok();

    let (id, bytes) = &taken[0];
    let (pack, blob) = stored_chunk_of(&sandbox, id, |_| true);
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&pack)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, blob.offset + 10).unwrap();
    f.write_all_at(&[!b[0]], blob.offset + 10).unwrap();
    drop(f);

    let report = sandbox
        .run(["--json", "verify", "--read-data", "--snapshot", id])
        .expect_code(4)
        .json();
    let problem = report["damage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["chunks"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == blob.id.as_str()))
        })
        .unwrap_or_else(|| panic!("chunk {} not named: {report:#}", blob.id));
    let ranges = chunk_ranges(
        &map_ids(&sandbox.map_file(id)),
        &[&blob.id],
        bytes.len() as u64,
    );
    let named: Vec<(u64, u64)> = problem["affects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["snapshot"] == id.as_str())
        .map(|a| (a["offset"].as_u64().unwrap(), a["len"].as_u64().unwrap()))
        .collect();
    assert_eq!(named, merged(&ranges));

    let repaired = repair_from(&sandbox, &usb);
    assert_eq!(
        repaired["chunks_repaired"],
        Value::Array(vec![Value::String(blob.id.clone())])
    );
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: repair --from a copy brings back a deleted pack, a pack whose table is damaged, a damaged map and a damaged manifest in one run: verify --read-data is clean afterwards and every snapshot restores byte for byte.
#[test]
fn repair_brings_back_packs_maps_and_manifests() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e06);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    copy_to(&sandbox, &usb, &[]).ok();

    let packs = sandbox.packs();
    assert!(packs.len() >= 3, "{packs:?}");
    fs::remove_file(&packs[0]).unwrap();
    let len = fs::metadata(&packs[1]).unwrap().len();
    flip_byte(&packs[1], len - 3);
    flip_byte(&sandbox.map_file(&taken[1].0), 100);
    flip_byte(&sandbox.manifest_file(&taken[2].0), 30);
    sandbox.run(["verify", "--read-data"]).expect_code(4);

    let report = repair_from(&sandbox, &usb);
    assert_eq!(report["maps_repaired"], serde_json::json!([taken[1].0]));
    assert_eq!(
        report["manifests_repaired"],
        serde_json::json!([taken[2].0])
    );
    assert_eq!(report["chunks_unrepairable"], Value::Array(vec![]));
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: repair mends a damaged chunk that only a snapshot with an unreadable map uses (its map is damaged in the copy too): what that snapshot uses is unknown, so every damaged chunk the copy has is mended, with a warning, instead of its chunks' being taken for unused.
#[test]
fn repair_mends_chunks_of_a_snapshot_whose_map_is_unreadable() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e07);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    copy_to(&sandbox, &usb, &[]).ok();
    let later: Vec<String> = taken[1..]
        .iter()
        .flat_map(|(id, _)| map_ids(&sandbox.map_file(id)))
        .flatten()
        .collect();
    let only_first: Vec<String> = map_ids(&sandbox.map_file(&taken[0].0))
        .into_iter()
        .flatten()
        .filter(|c| !later.contains(c))
        .collect();
    let (pack, blob) = sandbox
        .packs()
        .into_iter()
        .find_map(|p| {
            let blob = pack_table(&p)
                .into_iter()
                .find(|b| only_first.contains(&b.id))?;
            Some((p, blob))
        })
        .expect("a chunk only the first snapshot uses");
    flip_byte(&pack, blob.offset + 10);
    flip_byte(&sandbox.map_file(&taken[0].0), 100);
    flip_byte(&usb.join("maps").join(&taken[0].0), 100);

    let args = [
        OsStr::new("--json"),
        "repair".as_ref(),
        "--from".as_ref(),
        usb.as_os_str(),
    ];
    // The map itself cannot be mended (the copy's is damaged too): exit 4.
    let run = sandbox.run(args);
    let report = run.expect_code(4).json();
    assert!(
        report["chunks_repaired"]
            .as_array()
            .is_some_and(|c| c.contains(&Value::String(blob.id.clone()))),
        "{report:#}"
    );
    assert!(
        run.stderr.contains("repairing every damaged chunk"),
        "{}",
        run.stderr
    );
    for (id, bytes) in &taken[1..] {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: repair exits 4 and names the snapshot when a manifest or a map cannot be repaired because the copy lacks it too (it used to exit 0 with the repository still damaged).
#[test]
fn repair_that_cannot_mend_a_map_or_manifest_fails() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e08);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    copy_to(&sandbox, &usb, &["--last", "1"]).ok();
    flip_byte(&sandbox.map_file(&taken[0].0), 100);
    flip_byte(&sandbox.manifest_file(&taken[1].0), 30);
    let args = [
        OsStr::new("--json"),
        "repair".as_ref(),
        "--from".as_ref(),
        usb.as_os_str(),
    ];
    let report = sandbox.run(args).expect_code(4).json();
    assert_eq!(
        report["maps_unrepairable"],
        serde_json::json!([taken[0].0]),
        "{report:#}"
    );
    assert_eq!(
        report["manifests_unrepairable"],
        serde_json::json!([taken[1].0]),
        "{report:#}"
    );
}

// Pins: repair brings back a manifest that was deleted (its map is still here) when the copy has that snapshot; before, verify called the map a leftover, repair did nothing and the next prune deleted the snapshot's data.
#[test]
fn repair_brings_back_a_lost_manifest() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e09);
    let taken = three_snapshots(&sandbox, &mut rng);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    copy_to(&sandbox, &usb, &[]).ok();
    fs::remove_file(sandbox.manifest_file(&taken[1].0)).unwrap();
    let report = repair_from(&sandbox, &usb);
    assert_eq!(
        report["manifests_repaired"],
        serde_json::json!([taken[1].0]),
        "{report:#}"
    );
    sandbox.run(["prune"]).ok();
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: a chunk damaged in the repository copied from spoils only the snapshot that needs it: copy names it (exit 4), copies the others, and the copied ones restore byte for byte.
#[test]
fn copy_skips_only_snapshots_with_damaged_data() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc0_4e07);
    let taken = three_snapshots(&sandbox, &mut rng);
    // A chunk only the first snapshot has (the later ones rewrote it).
    let later: Vec<String> = [&taken[1].0, &taken[2].0]
        .iter()
        .flat_map(|id| map_ids(&sandbox.map_file(id)).into_iter().flatten())
        .collect();
    let (pack, blob) = stored_chunk_of(&sandbox, &taken[0].0, |p| {
        pack_table(p).iter().any(|b| !later.contains(&b.id))
    });
    let blob = if later.contains(&blob.id) {
        pack_table(&pack)
            .into_iter()
            .find(|b| !later.contains(&b.id))
            .unwrap()
    } else {
        blob
    };
    flip_byte(&pack, blob.offset + 5);
    let usb = other_repo(&sandbox, "usb", &["--chunk-size", "64K"]);
    let report = copy_to(&sandbox, &usb, &[]).expect_code(4).json();
    assert_eq!(
        report["failed"][0]["snapshot"],
        taken[0].0.as_str(),
        "{report:#}"
    );
    assert_eq!(report["copied"].as_array().unwrap().len(), 2, "{report:#}");
    for (id, bytes) in &taken[1..] {
        restores_from(&usb, id, bytes, &sandbox.path("."));
    }
    verify_clean(&usb);
}
