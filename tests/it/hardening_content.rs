//! Repository contents that are damaged in ways their checksums do not
//! catch, or that are missing: a map that is gone, a pack table entry
//! rewritten with its crc32 fixed, a manifest whose fields are invalid or
//! of a newer format. Each is damage named where it is, no command trusts
//! it, and it spoils only what depends on it.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::*;

/// A repository with three snapshots of one image (tags "a", "b", "c"),
/// each changing a few chunks; their ids and bytes, oldest first.
fn three_snapshots(sandbox: &Sandbox, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let mut image = Image::random(sandbox.path("disk.img"), 24 * CHUNK + 321, &mut rng);
    image.write_zeros(3 * CHUNK, 2 * CHUNK);
    let mut taken = Vec::new();
    for (round, tag) in ["a", "b", "c"].into_iter().enumerate() {
        if round > 0 {
            image.write_random(&mut rng, (round as u64 * 7) * CHUNK, 3 * CHUNK);
        }
        let id = sandbox.snapshot_of(&image.path, &["--tag", tag]);
        taken.push((id, image.bytes.clone()));
    }
    taken
}

/// A second, empty plain repository beside the sandbox's.
fn other_repo(sandbox: &Sandbox, name: &str) -> PathBuf {
    let path = sandbox.path(name);
    let args = [
        OsStr::new("-r"),
        path.as_os_str(),
        "init".as_ref(),
        "--plain".as_ref(),
        "--chunk-size".as_ref(),
        "64K".as_ref(),
    ];
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

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Rewrites a plain manifest's body (and format version) and fixes its
/// crc32, as a careless tool or someone tampering would.
fn rewrite_manifest(file: &Path, version: u32, edit: impl Fn(&mut Value)) {
    let text = fs::read_to_string(file).expect("cannot read manifest");
    let at = text.find(",\"body\":").expect("a manifest body") + ",\"body\":".len();
    let mut body: Value = serde_json::from_str(
        text[at..]
            .trim_end()
            .strip_suffix('}')
            .expect("an envelope"),
    )
    .expect("the body is JSON");
    edit(&mut body);
    let body = serde_json::to_string_pretty(&body).unwrap();
    let crc = crc32fast::hash(body.as_bytes());
    let new = format!(
        "{{\"platter\":\"snapshot\",\"version\":{version},\"crc32\":\"{crc:08x}\",\"body\":{body}}}\n"
    );
    fs::write(file, new).expect("cannot write manifest");
}

/// Files of the repository outside `locks/`, with digests.
fn contents(sandbox: &Sandbox) -> Vec<(String, String)> {
    sandbox
        .repo_tree()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("locks"))
        .collect()
}

// Pins: a snapshot whose map file is missing is damage (exit 4) named with the snapshot: copy names it and copies the other snapshots (which then restore byte for byte), restore refuses it with exit 4, and prune refuses naming it and how to fix it, removing nothing.
#[test]
fn a_missing_map_is_damage_that_spoils_only_its_snapshot() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x11_a9);
    let lost = &taken[1].0;
    fs::remove_file(sandbox.map_file(lost)).unwrap();

    let usb = other_repo(&sandbox, "usb");
    let report = copy_to(&sandbox, &usb, &[]).expect_code(4).json();
    assert_eq!(ids_of(&report["failed"]), vec![lost.clone()], "{report:#}");
    assert!(
        report["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{report:#}"
    );
    assert_eq!(
        ids_of(&report["copied"]),
        vec![taken[0].0.clone(), taken[2].0.clone()],
        "{report:#}"
    );
    for (id, bytes) in [&taken[0], &taken[2]] {
        let target = sandbox.path("from-usb.img");
        let args = [
            OsStr::new("-r"),
            usb.as_os_str(),
            "restore".as_ref(),
            id.as_ref(),
            target.as_os_str(),
        ];
        run(args).ok();
        assert_file_is(&target, bytes, "a snapshot copied past a missing map");
        fs::remove_file(&target).unwrap();
    }

    let target = sandbox.path("lost.img");
    sandbox
        .run([OsStr::new("restore"), lost.as_ref(), target.as_os_str()])
        .refused(4, &lost[..8]);
    assert!(!target.exists());

    let before = contents(&sandbox);
    let refused = sandbox.run(["prune"]);
    refused.refused(4, &lost[..8]);
    assert!(
        refused.stderr.contains("repair --from"),
        "{}",
        refused.stderr
    );
    assert_eq!(contents(&sandbox), before, "a refused prune changed files");
}

// Pins: copy goes on past a manifest that cannot be read: it names it (exit 4) and copies the readable snapshots.
#[test]
fn copy_goes_on_past_an_unreadable_manifest() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x11_aa);
    let manifest = sandbox.manifest_file(&taken[0].0);
    let text = fs::read_to_string(&manifest).unwrap();
    flip_byte(&manifest, (text.find("\"hostname\"").unwrap() + 2) as u64);

    let usb = other_repo(&sandbox, "usb");
    let report = copy_to(&sandbox, &usb, &[]).expect_code(4).json();
    assert_eq!(
        ids_of(&report["failed"]),
        vec![taken[0].0.clone()],
        "{report:#}"
    );
    assert_eq!(
        ids_of(&report["copied"]),
        vec![taken[1].0.clone(), taken[2].0.clone()],
        "{report:#}"
    );
}

/// The table of a plain pack: where it starts and its entry count.
fn table_of(bytes: &[u8]) -> (usize, usize) {
    let footer = bytes.len() - 16;
    assert_eq!(&bytes[footer + 8..], b"PLTRPEND");
    let count = u32::from_le_bytes(bytes[footer..footer + 4].try_into().unwrap()) as usize;
    (footer - 64 * count, count)
}

/// Sets the plain length of chunk `id`'s entry in a plain pack's table
/// and fixes the table's crc32.
fn set_plain_len_in_table(pack: &Path, id: &str, plain_len: u32) {
    let mut bytes = fs::read(pack).unwrap();
    let (start, count) = table_of(&bytes);
    let entry = (0..count)
        .map(|i| start + 64 * i)
        .find(|&at| hex(&bytes[at..at + 32]) == id)
        .expect("the chunk is in the pack's table");
    bytes[entry + 52..entry + 56].copy_from_slice(&plain_len.to_le_bytes());
    let footer = bytes.len() - 16;
    let crc = crc32fast::hash(&bytes[start..footer]);
    bytes[footer + 4..footer + 8].copy_from_slice(&crc.to_le_bytes());
    fs::write(pack, bytes).unwrap();
}

// Pins: a pack table entry with an impossible length (plain length 0xFFFFFFFF, table crc32 fixed) is named by verify as damage in that pack's table; rebuild-index leaves it out (exit 4, naming it) and keeps the old index file that names that pack, so every snapshot still restores byte for byte.
#[test]
fn rebuild_index_leaves_out_table_entries_the_reader_refuses() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x12_ab);
    let (pack, blob) = stored_chunk_of(&sandbox, &taken[0].0, |_| true);
    set_plain_len_in_table(&pack, &blob.id, u32::MAX);
    let pack_name = pack.file_name().unwrap().to_string_lossy().to_string();

    let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
    let damage = report["damage"].to_string();
    assert!(
        damage.contains(&pack_name) && damage.contains(&blob.id),
        "{report:#}"
    );

    // The index still locates the chunk: it is not reported unreadable.
    let table = report["damage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains(&blob.id))
        .unwrap();
    assert!(table["chunks"].is_null(), "{report:#}");

    let old = files_under(&sandbox.repo.join("index")).len();
    let rebuilt = sandbox
        .run(["--json", "rebuild-index"])
        .expect_code(4)
        .json();
    assert!(
        rebuilt["rejected"].to_string().contains(&blob.id),
        "{rebuilt:#}"
    );
    // Only the old index file that names that pack stays.
    assert_eq!(rebuilt["removed_index_files"], old - 1, "{rebuilt:#}");
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: with every index file lost and one pack table entry impossible, rebuild-index indexes the rest; the refused chunk is then reported missing by verify and refused by restore (exit 4) instead of being trusted.
#[test]
fn a_refused_table_entry_shows_as_missing_never_as_a_trap() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x12_ac);
    let (pack, blob) = stored_chunk_of(&sandbox, &taken[0].0, |_| true);
    set_plain_len_in_table(&pack, &blob.id, u32::MAX);
    for index in files_under(&sandbox.repo.join("index")) {
        fs::remove_file(index).unwrap();
    }
    let rebuilt = sandbox
        .run(["--json", "rebuild-index"])
        .expect_code(4)
        .json();
    assert!(
        rebuilt["rejected"].to_string().contains(&blob.id),
        "{rebuilt:#}"
    );
    let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
    let missing = report["damage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains("in no index"))
        .unwrap_or_else(|| panic!("no missing chunks reported: {report:#}"));
    assert!(
        missing["chunks"].to_string().contains(&blob.id),
        "{report:#}"
    );
    let users: Vec<&(String, Vec<u8>)> = taken
        .iter()
        .filter(|(id, _)| {
            map_ids(&sandbox.map_file(id))
                .iter()
                .flatten()
                .any(|c| *c == blob.id)
        })
        .collect();
    let target = sandbox.path("trap.img");
    sandbox
        .run([
            OsStr::new("restore"),
            users[0].0.as_ref(),
            target.as_os_str(),
        ])
        .refused(4, &blob.id);
    for (id, bytes) in taken.iter().filter(|t| !users.contains(t)) {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: verify compares each pack table with the index both ways: an index file that lost a pack's entries (the pack table still lists them) is reported with `rebuild-index` as the fix, and after it verify is clean.
#[test]
fn verify_names_rebuild_index_when_pack_tables_list_unindexed_chunks() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x12_ad);
    let indexes = files_under(&sandbox.repo.join("index"));
    fs::remove_file(&indexes[0]).unwrap();
    let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
    assert!(
        report["damage"].to_string().contains("rebuild-index"),
        "{report:#}"
    );
    sandbox.run(["rebuild-index"]).ok();
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: prune leaves a pack whose table has an entry the chunk reader would refuse as it is (named among damaged packs): with the index intact every snapshot still restores after it; with the index lost it indexes nothing from that table and exits 4 (chunks missing) instead of writing the entry into the new index.
#[test]
fn prune_leaves_a_pack_with_an_impossible_table_entry_alone() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x12_af);
    let (pack, blob) = stored_chunk_of(&sandbox, &taken[0].0, |_| true);
    set_plain_len_in_table(&pack, &blob.id, u32::MAX);
    let tampered = fs::read(&pack).unwrap();
    let pack_name = pack.file_name().unwrap().to_string_lossy().to_string();

    let report = sandbox.run(["--json", "prune"]).ok().json();
    assert!(
        report["damaged_packs"].to_string().contains(&pack_name),
        "{report:#}"
    );
    assert_eq!(fs::read(&pack).unwrap(), tampered, "prune changed the pack");
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }

    for index in files_under(&sandbox.repo.join("index")) {
        fs::remove_file(index).unwrap();
    }
    let report = sandbox.run(["--json", "prune"]).expect_code(4).json();
    assert!(report["chunks_missing"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(fs::read(&pack).unwrap(), tampered, "prune changed the pack");
    let damage = sandbox.run(["--json", "verify"]).expect_code(4).json();
    assert!(
        !damage
            .to_string()
            .contains("index entries no chunk can have"),
        "prune indexed the impossible entry: {damage:#}"
    );
}

// Pins: verify compares every field of each index entry with its pack's table (not only offset and crc32): an index entry whose lengths were changed (crc32 fixed) is named with the chunk and `rebuild-index`, which then makes verify clean and every snapshot restore.
#[test]
fn verify_compares_every_index_entry_with_its_pack_table() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x12_ae);
    let (_, blob) = stored_chunk_of(&sandbox, &taken[0].0, |_| true);
    let index = files_under(&sandbox.repo.join("index"))
        .into_iter()
        .find(|i| {
            let bytes = fs::read(i).unwrap();
            bytes.windows(32).any(|w| hex(w) == blob.id)
        })
        .expect("an index names the chunk");
    edit_index(&index, |bytes, entries| {
        let entry = *entries
            .iter()
            .find(|&&at| hex(&bytes[at..at + 32]) == blob.id)
            .unwrap();
        // A raw chunk one byte shorter: lengths a chunk can have, but not these.
        let shorter = (blob.stored_len as u32 - 1).to_le_bytes();
        bytes[entry + 48..entry + 52].copy_from_slice(&shorter);
        bytes[entry + 52..entry + 56].copy_from_slice(&shorter);
    });

    let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
    let damage = report["damage"].to_string();
    assert!(
        damage.contains(&blob.id) && damage.contains("rebuild-index"),
        "{report:#}"
    );
    sandbox.run(["rebuild-index"]).ok();
    verify_clean(&sandbox.repo);
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: a manifest whose time does not parse (crc32 fixed) is damage named by verify, with or without the key (naming the field); `latest` and the automatic parent skip it (with a warning naming it) instead of sorting it last as text; forget of the other snapshots works; prune, and forget --prune, refuse naming it.
#[test]
fn a_manifest_with_an_unreadable_time_is_damage_and_blocks_only_prune() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x13_a1);
    let bad = &taken[0].0;
    rewrite_manifest(&sandbox.manifest_file(bad), 1, |body| {
        body["time"] = "zz-not-a-time".into();
    });

    for how in [
        &["--json", "verify"][..],
        &["--json", "verify", "--without-key"],
    ] {
        let report = sandbox.run(how).expect_code(4).json();
        let damage = report["damage"].to_string();
        assert!(
            damage.contains(bad) && damage.contains("time"),
            "{report:#}"
        );
    }

    let latest = sandbox.run(["--json", "show", "latest"]);
    assert_eq!(latest.ok().json()["id"], taken[2].0.as_str());
    assert!(latest.stderr.contains(bad.as_str()), "{}", latest.stderr);
    sandbox.assert_restores("latest", &taken[2].1);
    let next = sandbox.backup(&sandbox.path("disk.img"));
    assert_eq!(next["parent"], taken[2].0.as_str(), "{next}");

    let before = contents(&sandbox);
    sandbox
        .run(["forget", "--keep-last", "1", "--prune"])
        .refused(4, bad);
    assert_eq!(contents(&sandbox), before, "a refused forget changed files");
    sandbox.run(["prune"]).refused(4, bad);

    let forgot = sandbox
        .run(["--json", "forget", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(forgot["removed"].as_array().unwrap().len(), 2, "{forgot:#}");
    assert!(
        sandbox.manifest_file(bad).exists(),
        "the bad one was removed"
    );
}

// Pins: `latest` is the newest snapshot by the time it was taken, not by the text of its time (an offset makes an older time sort later as text).
#[test]
fn latest_is_the_newest_by_time_not_by_text() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x13_a2);
    // 23:00 at +23:00 is 00:00 UTC of the same day: before the others,
    // which were taken today, but after them as text.
    let today = sandbox.run(["--json", "show", &taken[2].0]).ok().json()["time"]
        .as_str()
        .unwrap()[..10]
        .to_string();
    rewrite_manifest(&sandbox.manifest_file(&taken[0].0), 1, |body| {
        body["time"] = format!("{today}T23:00:00+23:00").into();
    });
    verify_clean(&sandbox.repo);
    let latest = sandbox.run(["--json", "show", "latest"]).ok().json();
    assert_eq!(latest["id"], taken[2].0.as_str());
    assert_eq!(sandbox.snapshot_ids()[0], taken[0].0);
}

// Pins: manifests whose fields make no sense (crc32 fixed) are damage named by verify with the field: a parent that is not an id, a layout the disk layer cannot read, a chunk size platter never uses, a map whose entry count does not fit the source size, a map BLAKE3 that is not a digest.
#[test]
fn every_manifest_field_is_checked() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x13_a3);
    let manifest = sandbox.manifest_file(&taken[1].0);
    let good = fs::read(&manifest).unwrap();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 5] = [
        ("parent", |b| b["parent"] = "not-an-id".into()),
        ("layout", |b| b["layout"] = 7.into()),
        ("chunk size", |b| b["chunk_size"] = 4096.into()),
        ("entries", |b| b["map"]["entries"] = 1.into()),
        ("BLAKE3", |b| b["map"]["blake3"] = "".into()),
    ];
    for (field, edit) in cases {
        rewrite_manifest(&manifest, 1, edit);
        let report = sandbox.run(["--json", "verify"]).expect_code(4).json();
        let damage = report["damage"].to_string();
        assert!(
            damage.contains(&taken[1].0) && damage.contains(field),
            "{field}: {report:#}"
        );
        fs::write(&manifest, &good).unwrap();
    }
    verify_clean(&sandbox.repo);
}

// Pins: a manifest of a newer format version is unsupported (exit 7, as the README says), not damage: restore and show of it, and `snapshots`, exit 7.
#[test]
fn a_manifest_of_a_newer_format_is_unsupported() {
    let sandbox = Sandbox::new();
    let taken = three_snapshots(&sandbox, 0x16_a1);
    let newer = &taken[1].0;
    rewrite_manifest(&sandbox.manifest_file(newer), 2, |_| {});
    let target = sandbox.path("newer.img");
    sandbox
        .run([OsStr::new("restore"), newer.as_ref(), target.as_os_str()])
        .refused(7, "version");
    sandbox.run(["show", newer]).refused(7, "version");
    let listed = sandbox.run(["--json", "snapshots"]).expect_code(7).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

// Pins: `copy --tag` or `--source` that selects nothing out of snapshots that exist exits 3 naming the filter and writes nothing; a plain copy of an empty repository still exits 0.
#[test]
fn a_copy_filter_that_matches_nothing_is_not_found() {
    let sandbox = Sandbox::new();
    let usb = other_repo(&sandbox, "usb");
    copy_to(&sandbox, &usb, &[]).ok();
    three_snapshots(&sandbox, 0x16_a2);
    let before = tree(&usb);
    copy_to(&sandbox, &usb, &["--tag", "no-such-tag"]).refused(3, "--tag no-such-tag");
    copy_to(&sandbox, &usb, &["--source", "/dev/nothing"]).refused(3, "--source /dev/nothing");
    let after: Vec<_> = tree(&usb)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("locks"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(n, _)| !n.starts_with("locks"))
        .collect();
    assert_eq!(
        after, before,
        "a refused copy wrote into the other repository"
    );
    let report = copy_to(&sandbox, &usb, &["--tag", "b"]).ok().json();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report:#}");
}

// Pins: with every index file lost, restore and verify point to rebuild-index (not to zero-filling, nor to calling the packs harmless leftovers), and after it the snapshot restores byte for byte.
#[test]
fn a_lost_index_points_to_rebuild_index() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x16_b0);
    let image = Image::random(sandbox.path("disk.img"), 6 * CHUNK + 11, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    for file in files_under(&sandbox.repo.join("index")) {
        fs::remove_file(file).unwrap();
    }
    let target = sandbox.path("out.img");
    sandbox
        .run([OsStr::new("restore"), id.as_ref(), target.as_os_str()])
        .refused(4, "rebuild-index");
    let verify = sandbox.run(["verify"]);
    verify.expect_code(4);
    assert!(verify.stdout.contains("rebuild-index"), "{}", verify.stdout);
    assert!(!verify.stderr.contains("do no harm"), "{}", verify.stderr);
    sandbox.run(["rebuild-index"]).ok();
    sandbox.assert_restores(&id, &image.bytes);
}
