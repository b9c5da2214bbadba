//! Round trips: back up, change, back up again, and every snapshot must
//! restore to exactly the bytes the source held when it was taken. Images
//! have odd sizes (a short last chunk), runs of zeros and holes.

use proptest::prelude::*;
use serde_json::Value;

use super::common::{CHUNK, Image, Rng, Sandbox};

/// What a change to an image does to a range.
#[derive(Debug, Clone, Copy)]
enum Change {
    Random,
    Zeros,
    Hole,
}

impl Change {
    fn apply(self, image: &mut Image, rng: &mut Rng, offset: u64, len: u64) {
        let len = len.min(image.len() - offset).max(1);
        match self {
            Change::Random => image.write_random(rng, offset, len),
            Change::Zeros => image.write_zeros(offset, len),
            Change::Hole => image.punch_hole(offset, len),
        }
    }
}

/// A sparse image of `size` bytes: runs of random data, allocated zeros and
/// holes, with data in the last (partial) chunk.
fn build_image(sandbox: &Sandbox, name: &str, size: u64, rng: &mut Rng) -> Image {
    let mut image = Image::sparse(sandbox.path(name), size);
    let mut offset = 0;
    while offset < size {
        let len = (1 + rng.below(3 * CHUNK)).min(size - offset);
        match rng.below(3) {
            0 => image.write_random(rng, offset, len),
            1 => image.write_zeros(offset, len),
            _ => {}
        }
        offset += len;
    }
    let tail = size.min(777);
    image.write_random(rng, size - tail, tail);
    image
}

/// `count` random changes of up to two chunks each, of every kind.
fn change_randomly(image: &mut Image, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        let offset = rng.below(image.len());
        let len = 1 + rng.below(2 * CHUNK);
        let change = [Change::Random, Change::Zeros, Change::Hole][rng.below(3) as usize];
        change.apply(image, rng, offset, len);
    }
}

/// The counters of a backup summary must add up and stay within the source.
fn check_stats(summary: &Value, size: u64) {
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {summary}"))
    };
    assert_eq!(n("size"), size, "{summary}");
    assert_eq!(n("chunks"), size.div_ceil(CHUNK), "{summary}");
    assert_eq!(
        n("chunks_new")
            + n("chunks_unchanged")
            + n("chunks_dedup")
            + n("chunks_zero")
            + n("chunks_hole"),
        n("chunks"),
        "chunk counters do not add up: {summary}"
    );
    assert!(
        n("bytes_read") <= size,
        "read more than the source: {summary}"
    );
    assert!(n("bytes_new") <= n("bytes_new_plain"), "{summary}");
}

/// Full backup, two rounds of changes each followed by an incremental, then
/// restores every snapshot and compares it with the copy kept at that time.
fn round_trip(sandbox: &Sandbox, name: &str, size: u64, rng: &mut Rng, rounds: &[usize]) {
    let mut image = build_image(sandbox, name, size, rng);
    let mut taken: Vec<(String, Vec<u8>)> = Vec::new();
    let mut parent = Value::Null;
    for (round, &changes) in std::iter::once(&0).chain(rounds).enumerate() {
        if round > 0 {
            change_randomly(&mut image, rng, changes);
        }
        image.check();
        let summary = sandbox.backup(&image.path);
        check_stats(&summary, size);
        assert_eq!(summary["parent"], parent, "wrong parent: {summary}");
        let id = summary["snapshot"]
            .as_str()
            .expect("snapshot id")
            .to_string();
        parent = Value::String(id.clone());
        taken.push((id, image.bytes.clone()));
    }
    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
}

// Pins: images of odd sizes with zeros, holes and a short last chunk survive a full backup and two incrementals, every snapshot byte for byte.
#[test]
fn odd_sized_images_round_trip_through_incrementals() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5eed_0001);
    for (i, size) in [
        1000,
        CHUNK - 1,
        CHUNK + 1,
        5 * CHUNK + 4097,
        16 * CHUNK + 12345,
        37 * CHUNK - 511,
    ]
    .into_iter()
    .enumerate()
    {
        round_trip(&sandbox, &format!("disk-{i}.img"), size, &mut rng, &[6, 6]);
    }
}

// Pins: a source whose size changed gets a new full backup (no parent), and both sizes restore exactly.
#[test]
fn a_source_that_changed_size_starts_a_new_full_backup() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5eed_0002);
    let path = sandbox.path("grows.img");
    let small = Image::random(path.clone(), 3 * CHUNK + 5, &mut rng);
    let first = sandbox.backup(&path);
    let mut bigger = small.bytes.clone();
    bigger.extend(rng.bytes(2 * CHUNK as usize + 3));
    std::fs::write(&path, &bigger).expect("cannot grow image");
    let second = sandbox.backup(&path);
    assert_eq!(second["parent"], Value::Null, "{second}");
    // The first three chunks are unchanged content: stored once.
    assert_eq!(second["chunks_dedup"], 3, "{second}");
    sandbox.assert_restores(first["snapshot"].as_str().unwrap(), &small.bytes);
    sandbox.assert_restores(second["snapshot"].as_str().unwrap(), &bigger);
}

// Pins: restore --force over an existing larger or smaller file leaves exactly the snapshot's bytes (zeros punched, length fixed).
#[test]
fn restore_with_force_replaces_an_existing_file_exactly() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5eed_0003);
    let image = build_image(&sandbox, "src.img", 9 * CHUNK + 99, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    for junk_len in [20 * CHUNK, 2 * CHUNK + 7] {
        let target = sandbox.path("existing.img");
        std::fs::write(&target, rng.bytes(junk_len as usize)).unwrap();
        let report = sandbox.restore(&id, &target, &["--force"]).ok().json();
        assert_eq!(report["target_kind"], "existing file", "{report}");
        super::common::assert_file_is(&target, &image.bytes, "restore over an existing file");
    }
}

// Pins: restore --verify reads the target back and says so in --json.
#[test]
fn restore_with_verify_reports_the_read_back() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x5eed_0004);
    let image = build_image(&sandbox, "src.img", 7 * CHUNK + 3, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = sandbox.path("out.img");
    let report = sandbox.restore(&id, &target, &["--verify"]).ok().json();
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["size"], image.len(), "{report}");
    super::common::assert_file_is(&target, &image.bytes, "restore --verify");
}

fn change_strategy() -> impl Strategy<Value = Vec<(u8, u32, u64)>> {
    prop::collection::vec((0u8..3, any::<u32>(), 1u64..=2 * CHUNK), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 24,
        ..ProptestConfig::default()
    })]

    // Pins: for any size up to 2 MiB and any pattern of changes, full + two incrementals restore byte for byte.
    #[test]
    fn any_size_and_change_pattern_round_trips(
        size in 1u64..=(2 << 20),
        seed in any::<u64>(),
        first in change_strategy(),
        second in change_strategy(),
    ) {
        let sandbox = Sandbox::new();
        let mut rng = Rng::new(seed);
        let mut image = build_image(&sandbox, "prop.img", size, &mut rng);
        let mut taken = vec![(sandbox.backup(&image.path), image.bytes.clone())];
        for changes in [&first, &second] {
            for &(kind, at, len) in changes {
                let change = [Change::Random, Change::Zeros, Change::Hole][kind as usize];
                change.apply(&mut image, &mut rng, u64::from(at) % size, len);
            }
            image.check();
            let summary = sandbox.backup(&image.path);
            check_stats(&summary, size);
            prop_assert_eq!(&summary["parent"], &taken.last().unwrap().0["snapshot"]);
            taken.push((summary, image.bytes.clone()));
        }
        for (summary, bytes) in &taken {
            sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), bytes);
        }
    }
}

// Pins: with the default 1 MiB chunks, raw chunks sit 4096-aligned in packs
// and are restored through direct I/O; files, existing files and the
// short last chunk (which is not aligned) must still come back exactly.
#[test]
fn default_chunks_restore_exactly_through_direct_io() {
    let sandbox = Sandbox::without_repo();
    sandbox.run(["init", "--plain"]).ok();
    let mut rng = Rng::new(0xd1ec7);
    let size = 6 * 1024 * 1024 + 4096 * 3 + 513;
    let mut image = Image::sparse(sandbox.path("disk.img"), size);
    image.write_random(&mut rng, 0, 3 * 1024 * 1024 + 100);
    let text: Vec<u8> = b"direct io test line\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    image.write(4 * 1024 * 1024, &text);
    image.write_random(&mut rng, size - 600, 600);
    sandbox.backup(&image.path);
    let snapshot = sandbox.snapshot_ids()[0].clone();
    for pack in sandbox.packs() {
        for blob in super::common::pack_table(&pack) {
            if blob.stored_len == 1024 * 1024 {
                assert_eq!(blob.offset % 4096, 0, "raw blob {} is not aligned", blob.id);
            }
        }
    }
    sandbox.assert_restores(&snapshot, &image.bytes);
    let existing = sandbox.path("existing.img");
    std::fs::write(&existing, vec![0xa5u8; (size + 12345) as usize]).unwrap();
    sandbox
        .restore(&snapshot, &existing, &["--force", "--verify"])
        .ok();
    super::common::assert_file_is(&existing, &image.bytes, "restore over an existing file");
}
