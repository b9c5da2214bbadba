//! Sub-chunk deltas: a changed chunk stored as its changed 4 KiB pages over
//! a whole base chunk. Every command that reads, moves or removes chunks
//! must handle them, and a platter that does not know them must refuse the
//! repository.

use std::fs;

use serde_json::Value;

use super::common::*;

const PAGE: u64 = 4096;

/// Writes `pages` random 4 KiB pages at random page offsets of `image`.
fn scribble(image: &mut Image, rng: &mut Rng, pages: u64) {
    let count = image.len().div_ceil(PAGE);
    for _ in 0..pages {
        let page = rng.below(count);
        let len = PAGE.min(image.len() - page * PAGE);
        image.write_random(rng, page * PAGE, len);
    }
}

fn counter(summary: &Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name}: {summary}"))
}

/// Backs up `image` `rounds` times, scribbling between; returns each
/// snapshot with its bytes.
fn history(
    sandbox: &Sandbox,
    image: &mut Image,
    rng: &mut Rng,
    rounds: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut taken = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            scribble(image, rng, 12);
        }
        let summary = sandbox.backup(&image.path);
        taken.push((
            summary["snapshot"].as_str().unwrap().to_string(),
            image.bytes.clone(),
        ));
    }
    taken
}

// Pins: over many incrementals of random page writes (changes piling up on
// one base, chunks changed again and again), every snapshot restores byte
// for byte, each incremental stores about the pages that changed, and
// verify --read-data rebuilds every delta.
#[test]
fn deltas_restore_every_snapshot_byte_for_byte() {
    for sandbox in [Sandbox::new(), Sandbox::encrypted()] {
        let mut rng = Rng::new(0xde17a);
        let size = 24 * CHUNK + 5000;
        let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
        sandbox.backup(&image.path);
        let mut taken = Vec::new();
        for _ in 0..6 {
            scribble(&mut image, &mut rng, 10);
            let summary = sandbox.backup(&image.path);
            // Ten pages: at most ten chunks, each at most ten pages plus
            // its head, or stored whole (the short last chunk).
            assert!(counter(&summary, "chunks_delta") >= 1, "{summary}");
            assert!(
                counter(&summary, "bytes_new_plain") <= 10 * (CHUNK / 2 + 38) + 5000,
                "{summary}"
            );
            taken.push((summary, image.bytes.clone()));
        }
        for (summary, bytes) in &taken {
            sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), bytes);
        }
        let report = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
        assert_eq!(report["damage"], Value::Array(vec![]), "{report}");
        assert_eq!(report["leftovers"], Value::Array(vec![]), "{report}");
    }
}

// Pins: a chunk changed in more than half of its pages is stored whole, and
// a chunk changed back to its parent's bytes is deduplicated, not stored
// as an empty delta.
#[test]
fn large_changes_are_stored_whole_and_reverted_chunks_dedup() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde17b);
    let mut image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    sandbox.backup(&image.path);
    let before = image.bytes.clone();
    image.write_random(&mut rng, 2 * CHUNK, CHUNK / 2 + PAGE);
    image.write_random(&mut rng, 5 * CHUNK, 100);
    let summary = sandbox.backup(&image.path);
    assert_eq!(counter(&summary, "chunks_new"), 2, "{summary}");
    assert_eq!(counter(&summary, "chunks_delta"), 1, "{summary}");
    image.write(0, &before);
    let summary = sandbox.backup(&image.path);
    assert_eq!(counter(&summary, "chunks_new"), 0, "{summary}");
    assert_eq!(counter(&summary, "chunks_dedup"), 2, "{summary}");
}

// Pins: prune keeps, whole, every base a kept delta needs, also when the
// snapshots that used the bases are forgotten and their packs repacked.
#[test]
fn prune_keeps_the_bases_of_kept_deltas() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde17c);
    let mut image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let taken = history(&sandbox, &mut image, &mut rng, 4);
    sandbox.run(["forget", "--keep-last", "1"]).ok();
    let report = sandbox
        .run(["--json", "prune", "--repack-percent", "1"])
        .ok()
        .json();
    assert!(counter(&report, "packs_repacked") >= 1, "{report}");
    let (last, bytes) = taken.last().unwrap();
    sandbox.assert_restores(last, bytes);
    let report = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report}");
    assert_eq!(report["leftovers"], Value::Array(vec![]), "{report}");
    // The next incremental still finds its bases and makes deltas.
    scribble(&mut image, &mut rng, 3);
    let summary = sandbox.backup(&image.path);
    assert!(counter(&summary, "chunks_delta") >= 1, "{summary}");
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: a copy moves a delta as it is stored only when the other repository
// holds its base whole (so a nightly copy stays small), else whole; a copy
// that re-keys (into an encrypted repository) rebuilds every delta; both
// restore byte for byte.
#[test]
fn copies_keep_deltas_over_bases_already_there_and_expand_the_rest() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde17d);
    let mut image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let taken = history(&sandbox, &mut image, &mut rng, 3);
    let other = Sandbox::new();
    let copy = |ids: &[&str]| {
        let mut args = vec!["--json", "copy", "--to", other.repo.to_str().unwrap()];
        args.extend(ids);
        sandbox.run(args).ok().json()
    };
    // The last snapshot alone: its deltas' bases are not there.
    let first = copy(&[&taken[2].0]);
    let stored_first = counter(&first, "bytes_stored");
    assert!(stored_first >= 16 * CHUNK, "{first}");
    let deltas_there = |repo: &Sandbox| -> usize {
        repo.packs()
            .iter()
            .map(|p| pack_table(p).iter().filter(|b| b.is_delta()).count())
            .sum()
    };
    assert_eq!(deltas_there(&other), 0, "deltas moved without their bases");
    // The first, then the second: the second's deltas go as they are.
    copy(&[&taken[0].0]);
    let second = copy(&[&taken[1].0]);
    assert!(counter(&second, "bytes_stored") < 4 * CHUNK, "{second}");
    assert!(deltas_there(&other) >= 1, "no delta was moved as it is");
    for (id, bytes) in &taken {
        other.assert_restores(id, bytes);
    }
    let report = other.run(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report}");

    let sealed = Sandbox::encrypted();
    let password = sealed.password.clone().unwrap();
    sandbox
        .run([
            "copy".as_ref(),
            "--to".as_ref(),
            sealed.repo.as_os_str(),
            "--other-password-file".as_ref(),
            password.as_os_str(),
        ])
        .ok();
    for (id, bytes) in &taken {
        sealed.assert_restores(id, bytes);
    }
}

// Pins: a damaged base is named, and every delta over it is reported
// damaged for the snapshots that use it; restore refuses; rebuild-index
// (which reads each delta's base from its blob) restores what an index
// loss took.
#[test]
fn a_damaged_base_damages_its_deltas_and_rebuild_index_finds_bases() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde17e);
    let mut image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let taken = history(&sandbox, &mut image, &mut rng, 2);

    // Index loss: rebuilt from the packs, deltas' bases included.
    for file in files_under(&sandbox.repo.join("index")) {
        fs::remove_file(file).unwrap();
    }
    sandbox.run(["rebuild-index"]).ok();
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }

    // The first pack holds the bases; damage every one of its blobs.
    let first_pack = sandbox
        .packs()
        .into_iter()
        .find(|p| pack_table(p).iter().all(|b| !b.is_delta()) && pack_table(p).len() == 8)
        .expect("the full backup's pack");
    for blob in pack_table(&first_pack) {
        flip_byte(&first_pack, blob.offset + 7);
    }
    let report = sandbox
        .run(["--json", "verify", "--read-data"])
        .expect_code(4)
        .json();
    let damage = report["damage"].to_string();
    let second = &taken[1].0;
    assert!(damage.contains(second.as_str()), "{report:#}");
    let target = sandbox.path("out.img");
    sandbox.restore(second, &target, &[]).expect_code(4);
}

// Pins: a repository that names a format feature this platter does not
// know is refused (exit 7) before anything is written, naming the
// feature; so is a config whose version does not match its features.
#[test]
fn unknown_format_features_are_refused() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde17f);
    let image = Image::random(sandbox.path("disk.img"), 2 * CHUNK, &mut rng);
    sandbox.backup(&image.path);
    let config = sandbox.repo.join("config");
    let doc: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert_eq!(doc["version"], 3, "{doc}");
    assert_eq!(
        doc["body"]["features"],
        serde_json::json!(["deltas", "sorted-index"]),
        "{doc}"
    );
    let forge = |version: u32, features: Value| {
        let mut body = doc["body"].clone();
        body["features"] = features;
        let body = serde_json::to_string(&body).unwrap();
        let text = format!(
            "{{\"platter\":\"config\",\"version\":{version},\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
            crc32fast::hash(body.as_bytes())
        );
        fs::write(&config, text).unwrap();
    };
    forge(3, serde_json::json!(["deltas", "shared-packs\u{1b}[2J"]));
    let before = sandbox.repo_tree();
    let run = sandbox.run(["backup", image.path.to_str().unwrap()]);
    run.refused(7, "shared-packs");
    assert!(
        !run.describe().contains('\u{1b}'),
        "a control character was printed"
    );
    sandbox.run(["snapshots"]).refused(7, "format features");
    assert_eq!(sandbox.repo_tree(), before, "a refused command wrote");
    // Version 1 with features: damaged, not silently read as plain v1.
    forge(1, serde_json::json!(["deltas"]));
    sandbox.run(["snapshots"]).refused(4, "features");
}

// Pins: a repository written before features existed (the v1 fixture)
// works as it is; `upgrade` turns deltas on (a dry run changes nothing),
// and the next incremental stores deltas while the old snapshots still
// restore.
#[test]
fn upgrade_turns_deltas_on_in_an_old_repository() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let sandbox = Sandbox::without_repo();
    sh(&format!(
        "cp -r '{}' '{}'",
        fixtures.join("repo-v1").display(),
        sandbox.repo.display()
    ));
    let config = sandbox.repo.join("config");
    let old = fs::read(&config).unwrap();
    let dry = sandbox.run(["--json", "upgrade", "--dry-run"]).ok().json();
    assert_eq!(
        dry["enabled"],
        serde_json::json!(["deltas", "sorted-index"]),
        "{dry}"
    );
    assert_eq!(
        fs::read(&config).unwrap(),
        old,
        "a dry run changed the config"
    );
    let mut rng = Rng::new(0xde180);
    let mut image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    // Before: no deltas, whatever changes.
    sandbox.backup(&image.path);
    scribble(&mut image, &mut rng, 2);
    let before = sandbox.backup(&image.path);
    assert_eq!(counter(&before, "chunks_delta"), 0, "{before}");
    sandbox.run(["upgrade"]).ok();
    let doc: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert_eq!(doc["version"], 3, "{doc}");
    scribble(&mut image, &mut rng, 2);
    let after = sandbox.backup(&image.path);
    assert!(counter(&after, "chunks_delta") >= 1, "{after}");
    sandbox.assert_restores(after["snapshot"].as_str().unwrap(), &image.bytes);
    let again = sandbox.run(["--json", "upgrade"]).ok().json();
    assert_eq!(again["enabled"], serde_json::json!([]), "{again}");
    let report = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report}");
}

/// Rewrites `sandbox`'s config as a plain version 1 config without
/// features (as before `upgrade`), with a valid crc32.
fn forge_v1_config(sandbox: &Sandbox) {
    let config = sandbox.repo.join("config");
    let doc: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    let mut body = doc["body"].clone();
    body.as_object_mut().unwrap().remove("features");
    let body = serde_json::to_string(&body).unwrap();
    let text = format!(
        "{{\"platter\":\"config\",\"version\":1,\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    fs::write(&config, text).unwrap();
}

// Pins: an index that names another base than the delta itself names is
// damage (verify --read-data names it and says to rebuild the index; a
// copy does not move the delta over the wrong base), and rebuild-index
// mends it.
#[test]
fn an_index_base_that_disagrees_with_the_delta_is_damage() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde181);
    let mut image = Image::random(sandbox.path("disk.img"), 4 * CHUNK, &mut rng);
    let first = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let whole: Vec<String> = pack_table(&sandbox.packs()[0])
        .into_iter()
        .map(|b| b.id)
        .collect();
    image.write_random(&mut rng, 100, 100);
    let second = sandbox.backup(&image.path);
    assert_eq!(counter(&second, "chunks_delta"), 1, "{second}");
    let second = second["snapshot"].as_str().unwrap().to_string();
    let index = files_under(&sandbox.repo.join("index"))
        .into_iter()
        .find(|f| {
            let b = fs::read(f).unwrap();
            b[8] == 3 && b[32..40] == 1u64.to_le_bytes()
        })
        .expect("a sorted index file naming one base");
    edit_index(&index, |bytes, entries| {
        // The one delta's base is the file's first base, right after the
        // last entry block (and its crc32).
        let at = entries[entries.len() - 1] + 64 + 4;
        let base = hex(&bytes[at..at + 32]);
        let other = whole.iter().find(|id| **id != base).unwrap();
        for (i, pair) in other.as_bytes().chunks(2).enumerate() {
            bytes[at + i] = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
    });

    let report = sandbox
        .run(["--json", "verify", "--read-data"])
        .expect_code(4)
        .json();
    assert!(report.to_string().contains("rebuild-index"), "{report:#}");
    let other_repo = Sandbox::new();
    let to = other_repo.repo.to_str().unwrap();
    sandbox.run(["copy", "--to", to, &first]).ok();
    sandbox.run(["copy", "--to", to, &second]).expect_code(4);
    other_repo.run(["verify", "--read-data"]).ok();

    sandbox.run(["rebuild-index"]).ok();
    sandbox.assert_restores(&second, &image.bytes);
    sandbox.run(["verify", "--read-data"]).ok();
}

// Pins: a copy into a repository without the deltas feature (made by an
// older platter, not upgraded) stores every chunk whole, so that older
// platter can still read it; and verify names deltas in a repository whose
// config does not name the feature.
#[test]
fn deltas_never_enter_a_repository_without_the_feature() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde182);
    let mut image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let taken = history(&sandbox, &mut image, &mut rng, 3);
    let old = Sandbox::new();
    forge_v1_config(&old);
    for (id, _) in &taken {
        sandbox
            .run(["copy", "--to", old.repo.to_str().unwrap(), id.as_str()])
            .ok();
    }
    for pack in old.packs() {
        assert!(
            pack_table(&pack).iter().all(|b| !b.is_delta()),
            "a delta was copied into a repository without deltas"
        );
    }
    for (id, bytes) in &taken {
        old.assert_restores(id, bytes);
    }
    forge_v1_config(&sandbox);
    let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
    assert!(report.to_string().contains("platter upgrade"), "{report:#}");
}
