//! Damage: each test breaks one repository file the way disks and careless
//! hands do (a flipped byte, a cut, a deletion) and checks that `verify`
//! names the file and what it affects, that `restore` refuses without
//! leaving a target behind, and that `restore --continue-on-error` recovers
//! everything else byte for byte and lists exactly the damaged ranges.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::{
    CHUNK, Image, Rng, Sandbox, assert_bytes_equal, chunk_ranges, delta_base, files_under,
    flip_byte, map_ids, merged, pack_table,
};

/// A repository with two snapshots of one image: `first` (full) and
/// `second` (three chunks changed, the short last one among them), with the
/// pack and index each backup wrote.
struct Fixture {
    sandbox: Sandbox,
    size: u64,
    first: Taken,
    second: Taken,
}

struct Taken {
    id: String,
    bytes: Vec<u8>,
    pack: PathBuf,
    index: PathBuf,
}

const CHANGED: [u64; 3] = [2, 10, 20];

fn fixture() -> Fixture {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xda_3a9e);
    let size = 20 * CHUNK + 1234;
    let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    image.write_zeros(5 * CHUNK, 2 * CHUNK);
    let take = |image: &Image| {
        let (packs, indexes) = (sandbox.packs(), files_under(&sandbox.repo.join("index")));
        let id = sandbox.backup(&image.path)["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        let new = |now: Vec<PathBuf>, before: &[PathBuf]| {
            let mut new: Vec<PathBuf> = now.into_iter().filter(|p| !before.contains(p)).collect();
            assert_eq!(new.len(), 1, "expected one new file: {new:?}");
            new.remove(0)
        };
        Taken {
            id,
            bytes: image.bytes.clone(),
            pack: new(sandbox.packs(), &packs),
            index: new(files_under(&sandbox.repo.join("index")), &indexes),
        }
    };
    let first = take(&image);
    for pos in CHANGED {
        image.write_random(&mut rng, pos * CHUNK + 10, 200);
    }
    let second = take(&image);
    Fixture {
        sandbox,
        size,
        first,
        second,
    }
}

impl Fixture {
    fn map(&self, taken: &Taken) -> Vec<Option<String>> {
        map_ids(&self.sandbox.map_file(&taken.id))
    }

    fn verify(&self, read_data: bool) -> Value {
        let mut args = vec!["--json", "verify"];
        if read_data {
            args.push("--read-data");
        }
        self.sandbox.run(args).expect_code(4).json()
    }

    /// Restore must refuse with exit 4 and leave no target file behind,
    /// with or without --continue-on-error as `extra` says.
    fn assert_restore_refused(&self, taken: &Taken, extra: &[&str]) {
        let target = self.sandbox.path("refused.img");
        let run = self.sandbox.restore(&taken.id, &target, extra);
        run.expect_code(4);
        assert!(
            run.stderr.starts_with("platter: error"),
            "no error message: {}",
            run.stderr
        );
        assert!(!target.exists(), "a refused restore left {target:?} behind");
    }

    /// Restores with --continue-on-error: exit 4, exactly `damaged` listed,
    /// zeros there, every other byte as taken.
    fn assert_partial_restore(&self, taken: &Taken, damaged: &[(u64, u64)]) {
        let target = self
            .sandbox
            .path(&format!("partial-{}.img", &taken.id[..8]));
        let report = self
            .sandbox
            .restore(&taken.id, &target, &["--continue-on-error"])
            .expect_code(4)
            .json();
        let listed: Vec<(u64, u64)> = report["damaged"]
            .as_array()
            .expect("damaged is a list")
            .iter()
            .map(|d| (d["offset"].as_u64().unwrap(), d["len"].as_u64().unwrap()))
            .collect();
        assert_eq!(listed, damaged, "damaged ranges: {report}");
        let mut expected = taken.bytes.clone();
        for &(offset, len) in damaged {
            expected[offset as usize..(offset + len) as usize].fill(0);
        }
        let restored = fs::read(&target).expect("no partial restore");
        assert_bytes_equal(&restored, &expected, "undamaged ranges");
        fs::remove_file(&target).unwrap();
    }
}

/// Path of `file` relative to the repository, as problems end with it.
fn relative(fixture: &Fixture, file: &Path) -> String {
    file.strip_prefix(&fixture.sandbox.repo)
        .unwrap()
        .display()
        .to_string()
}

/// The problems of `report` whose file is `name` (a path relative to the
/// repository); at least one must exist.
fn problems_about<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = report["damage"]
        .as_array()
        .expect("damage is a list")
        .iter()
        .filter(|p| p["file"].as_str().is_some_and(|f| f.ends_with(name)))
        .collect();
    assert!(!found.is_empty(), "no problem names {name}: {report:#}");
    found
}

/// Chunks named by the problems, sorted.
fn chunks_of(problems: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = problems
        .iter()
        .flat_map(|p| p["chunks"].as_array().cloned().unwrap_or_default())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Byte ranges of `snapshot` the problems say are affected, sorted.
fn affected(problems: &[&Value], snapshot: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = problems
        .iter()
        .flat_map(|p| p["affects"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["snapshot"] == snapshot)
        .map(|a| (a["offset"].as_u64().unwrap(), a["len"].as_u64().unwrap()))
        .collect();
    out.sort();
    out
}

fn truncate(file: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

// Pins: a flipped byte inside a stored chunk is found by verify --read-data (pack, chunk, both snapshots at the right offset); restore refuses; --continue-on-error zeroes just that chunk.
#[test]
fn flipped_byte_in_a_pack() {
    let f = fixture();
    let id = f.map(&f.first)[0].clone().expect("chunk 0 holds data");
    let blob = pack_table(&f.first.pack)
        .into_iter()
        .find(|b| b.id == id)
        .expect("chunk 0 is in the first pack");
    flip_byte(&f.first.pack, blob.offset + blob.stored_len / 2);

    let report = f.verify(true);
    assert_eq!(report["damage"].as_array().unwrap().len(), 1, "{report:#}");
    let problems = problems_about(&report, &relative(&f, &f.first.pack));
    assert_eq!(chunks_of(&problems), vec![id.clone()]);
    assert_eq!(affected(&problems, &f.first.id), vec![(0, CHUNK)]);
    assert_eq!(affected(&problems, &f.second.id), vec![(0, CHUNK)]);

    f.assert_restore_refused(&f.first, &[]);
    f.assert_partial_restore(&f.first, &[(0, CHUNK)]);
    f.assert_partial_restore(&f.second, &[(0, CHUNK)]);
}

// Pins: a pack cut in half is found by plain verify (pack named, the chunks past the cut with their snapshots and offsets); restore refuses; --continue-on-error recovers the chunks before the cut.
#[test]
fn truncated_pack() {
    let f = fixture();
    let blobs = pack_table(&f.first.pack);
    let k = blobs.len() / 2;
    truncate(&f.first.pack, blobs[k].offset + blobs[k].stored_len / 2);
    let lost: Vec<&str> = blobs[k..].iter().map(|b| b.id.as_str()).collect();
    // The second backup's deltas over lost chunks are lost with them.
    let deltas: Vec<String> = pack_table(&f.second.pack)
        .into_iter()
        .filter(|b| b.is_delta() && lost.contains(&delta_base(&f.second.pack, b).as_str()))
        .map(|b| b.id)
        .collect();
    let lost_second: Vec<&str> = lost
        .iter()
        .copied()
        .chain(deltas.iter().map(String::as_str))
        .collect();
    let mut lost_sorted: Vec<String> = lost_second.iter().map(|s| s.to_string()).collect();
    lost_sorted.sort();

    let report = f.verify(false);
    let problems = problems_about(&report, &relative(&f, &f.first.pack));
    assert_eq!(chunks_of(&problems), lost_sorted, "{report:#}");
    let (map1, map2) = (f.map(&f.first), f.map(&f.second));
    assert_eq!(
        affected(&problems, &f.first.id),
        merged(&chunk_ranges(&map1, &lost, f.size))
    );
    assert_eq!(
        affected(&problems, &f.second.id),
        merged(&chunk_ranges(&map2, &lost_second, f.size))
    );

    f.assert_restore_refused(&f.first, &[]);
    f.assert_partial_restore(&f.first, &chunk_ranges(&map1, &lost, f.size));
    f.assert_partial_restore(&f.second, &chunk_ranges(&map2, &lost_second, f.size));
}

// Pins: a deleted pack is named by plain verify with the chunks and the one snapshot it affects; the other snapshot still restores; the affected one is refused or partly restored.
#[test]
fn deleted_pack() {
    let f = fixture();
    let ids: Vec<String> = pack_table(&f.second.pack)
        .into_iter()
        .map(|b| b.id)
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        ids.len(),
        CHANGED.len(),
        "the incremental stored the changed chunks"
    );
    fs::remove_file(&f.second.pack).unwrap();

    let report = f.verify(false);
    let problems = problems_about(&report, &relative(&f, &f.second.pack));
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(chunks_of(&problems), expected, "{report:#}");
    let ranges = chunk_ranges(&f.map(&f.second), &ids, f.size);
    let changed: Vec<(u64, u64)> = CHANGED
        .iter()
        .map(|&p| (p * CHUNK, CHUNK.min(f.size - p * CHUNK)))
        .collect();
    assert_eq!(ranges, changed, "the lost chunks are the changed ones");
    assert_eq!(affected(&problems, &f.second.id), merged(&ranges));
    assert_eq!(affected(&problems, &f.first.id), vec![]);

    f.sandbox.assert_restores(&f.first.id, &f.first.bytes);
    f.assert_restore_refused(&f.second, &[]);
    f.assert_partial_restore(&f.second, &ranges);
}

// Pins: a truncated index file is named by verify, the chunks it described are reported missing for every snapshot using them, restore refuses before writing, and --continue-on-error recovers what other indexes still know.
#[test]
fn truncated_index() {
    let f = fixture();
    let len = fs::metadata(&f.first.index).unwrap().len();
    truncate(&f.first.index, len / 2);
    let ids: Vec<String> = pack_table(&f.first.pack)
        .into_iter()
        .map(|b| b.id)
        .collect();
    // The second backup stored its changed chunks as deltas over the
    // first's: without their bases they are lost too.
    let deltas: Vec<String> = pack_table(&f.second.pack)
        .into_iter()
        .filter(|b| b.is_delta())
        .map(|b| b.id)
        .collect();
    assert_eq!(deltas.len(), 2, "the short last chunk is stored whole");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let lost_second: Vec<&str> = ids
        .iter()
        .copied()
        .chain(deltas.iter().map(String::as_str))
        .collect();

    let report = f.verify(false);
    problems_about(&report, &relative(&f, &f.first.index));
    let all: Vec<&Value> = report["damage"].as_array().unwrap().iter().collect();
    let (map1, map2) = (f.map(&f.first), f.map(&f.second));
    assert_eq!(
        affected(&all, &f.first.id),
        merged(&chunk_ranges(&map1, &ids, f.size)),
        "{report:#}"
    );
    assert_eq!(
        merged(&affected(&all, &f.second.id)),
        merged(&chunk_ranges(&map2, &lost_second, f.size)),
        "{report:#}"
    );

    f.assert_restore_refused(&f.first, &[]);
    f.assert_restore_refused(&f.second, &[]);
    f.assert_partial_restore(&f.second, &chunk_ranges(&map2, &lost_second, f.size));
}

// Pins: a cut map and a map with a flipped byte are each named by verify for their whole snapshot; restore refuses even with --continue-on-error; the next backup of the source still works.
#[test]
fn damaged_maps() {
    let f = fixture();
    let map1 = f.sandbox.map_file(&f.first.id);
    let map2 = f.sandbox.map_file(&f.second.id);
    truncate(&map1, fs::metadata(&map1).unwrap().len() - 100);
    flip_byte(&map2, 80 + 48 * 3 + 20);

    let report = f.verify(false);
    for (map, taken) in [(&map1, &f.first), (&map2, &f.second)] {
        let problems = problems_about(&report, &relative(&f, map));
        assert_eq!(
            affected(&problems, &taken.id),
            vec![(0, f.size)],
            "{report:#}"
        );
        f.assert_restore_refused(taken, &[]);
        f.assert_restore_refused(taken, &["--continue-on-error"]);
    }

    let image = f.sandbox.path("disk.img");
    let next = f.sandbox.backup(&image);
    assert_eq!(
        next["chunks_unchanged"], 0,
        "a damaged parent map was trusted"
    );
    f.sandbox
        .assert_restores(next["snapshot"].as_str().unwrap(), &f.second.bytes);
}

// Pins: a manifest with a flipped byte is named by verify, that snapshot cannot be restored, `snapshots` lists the rest and exits 4, and the other snapshot restores.
#[test]
fn damaged_manifest() {
    let f = fixture();
    let manifest = f.sandbox.manifest_file(&f.first.id);
    let text = fs::read_to_string(&manifest).unwrap();
    let at = text.find("\"hostname\"").expect("a hostname field") + 2;
    flip_byte(&manifest, at as u64);

    let report = f.verify(false);
    problems_about(&report, &relative(&f, &manifest));

    f.assert_restore_refused(&f.first, &[]);
    f.assert_restore_refused(&f.first, &["--continue-on-error"]);
    let listed = f.sandbox.run(["--json", "snapshots"]).expect_code(4).json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![f.second.id.as_str()]);
    f.sandbox.assert_restores(&f.second.id, &f.second.bytes);
}

// Pins: with the newest manifest damaged, `restore latest` does not silently restore an older snapshot: it fails, or warns naming the damaged manifest.
#[test]
fn latest_is_not_silently_an_older_snapshot() {
    let f = fixture();
    let manifest = f.sandbox.manifest_file(&f.second.id);
    let text = fs::read_to_string(&manifest).unwrap();
    let at = text.find("\"hostname\"").expect("a hostname field") + 2;
    flip_byte(&manifest, at as u64);

    let target = f.sandbox.path("latest.img");
    let run = f.sandbox.restore("latest", &target, &[]);
    let warned = run.stderr.contains(&f.second.id);
    assert!(
        run.code != Some(0) || warned,
        "`restore latest` silently restored the older snapshot {}; stderr: {:?}",
        &f.first.id[..8],
        run.stderr
    );
}

// Pins: a damaged config makes every command exit 4 with a message naming the config file, and nothing is written.
#[test]
fn damaged_config() {
    let f = fixture();
    let config = f.sandbox.repo.join("config");
    let text = fs::read_to_string(&config).unwrap();
    let at = text.find("\"chunk_size\"").expect("a chunk_size field") + 2;
    flip_byte(&config, at as u64);
    let before = f.sandbox.repo_tree();
    let image = f.sandbox.path("disk.img");
    f.sandbox
        .run([std::ffi::OsStr::new("backup"), image.as_os_str()])
        .refused(4, "config");
    f.sandbox.run(["snapshots"]).refused(4, "config");
    f.sandbox.run(["verify"]).refused(4, "config");
    f.assert_restore_refused(&f.first, &[]);
    assert_eq!(f.sandbox.repo_tree(), before);
}

// Pins: a backup does not inherit a parent's chunk that the repository lost
// (its pack deleted): the source still has the data, so it is stored again
// and the new snapshot restores, while the old one stays damaged.
#[test]
fn a_lost_parent_chunk_is_stored_again_by_the_next_backup() {
    let f = fixture();
    fs::remove_file(&f.first.pack).unwrap();
    let summary = f.sandbox.backup(&f.sandbox.path("disk.img"));
    assert_eq!(summary["parent"], f.second.id.as_str(), "{summary}");
    assert!(
        summary["chunks_new"].as_u64().unwrap() > 0,
        "nothing stored again: {summary}"
    );
    let third = summary["snapshot"].as_str().unwrap();
    f.sandbox.assert_restores(third, &f.second.bytes);
    f.assert_restore_refused(&f.first, &[]);
}

// Pins: rebuild-index keeps the old index files that name a pack whose
// table cannot be read, so the chunks that pack holds stay reachable
// through them; the others are replaced, so that running it again while
// the pack is unreadable does not add a whole index each time.
#[test]
fn rebuild_index_keeps_old_index_files_when_a_pack_is_unreadable() {
    let f = fixture();
    let len = fs::metadata(&f.first.pack).unwrap().len();
    let file = OpenOptions::new().write(true).open(&f.first.pack).unwrap();
    file.write_all_at(b"XXXX", len - 4).unwrap();
    let report = f
        .sandbox
        .run(["--json", "rebuild-index"])
        .expect_code(4)
        .json();
    assert_eq!(report["removed_index_files"], 1, "{report}");
    assert!(!f.second.index.exists(), "{report}");
    let files = files_under(&f.sandbox.repo.join("index")).len();
    for _ in 0..2 {
        let again = f
            .sandbox
            .run(["--json", "rebuild-index"])
            .expect_code(4)
            .json();
        assert_eq!(again["removed_index_files"], 1, "{again}");
        let now = files_under(&f.sandbox.repo.join("index")).len();
        assert_eq!(now, files, "the index grew");
    }
    assert_eq!(
        report["unreadable"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        f.first.index.exists(),
        "the first backup's index file was removed"
    );
    // The chunks are still found (through the old index), and they are intact.
    f.sandbox.assert_restores(&f.first.id, &f.first.bytes);
}

// Pins: a stray file in data/ (a .DS_Store, a copied README) neither stops
// backups and restores nor counts as damage; verify lists it as a leftover.
#[test]
fn a_stray_file_in_the_data_folder_is_a_leftover_not_a_failure() {
    let f = fixture();
    fs::write(f.sandbox.repo.join("data").join("stray"), b"not a pack").unwrap();
    f.sandbox.assert_restores(&f.second.id, &f.second.bytes);
    f.sandbox.backup(&f.sandbox.path("disk.img"));
    let report = f.sandbox.run(["--json", "verify"]).ok().json();
    let leftovers = report["leftovers"].to_string();
    assert!(leftovers.contains("stray"), "{report}");
}
