//! What a backup costs: an incremental stores the chunks that changed and
//! nothing else, identical data is stored once, and holes and zeros are not
//! stored at all. Costs are read from `backup --json` and checked against
//! the repository's size on disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use super::common::{CHUNK, Image, Rng, Sandbox, files_under};

/// Total bytes of committed and temporary files below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn counter(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {summary}"))
}

// Pins: after random changes in N distinct chunks the incremental stores exactly N new chunks (about N chunks of bytes), reuses the rest, and reads no more than the image.
#[test]
fn incremental_stores_only_the_changed_chunks() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x1c_0001);
    let size = 40 * CHUNK + 1000;
    let chunks = size.div_ceil(CHUNK);
    let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    let full = sandbox.backup(&image.path);
    assert_eq!(counter(&full, "chunks_new"), chunks, "{full}");

    let mut taken = vec![(full, image.bytes.clone())];
    // Two rounds; each changes a few bytes in N distinct chunks, the short
    // last chunk included in the first round.
    for changed in [vec![0u64, 7, 8, 23, 40], vec![3, 39]] {
        let data_before = bytes_under(&sandbox.repo.join("data"));
        for &pos in &changed {
            let len = CHUNK.min(size - pos * CHUNK);
            let at = pos * CHUNK + rng.below(len - 100);
            image.write_random(&mut rng, at, 100);
        }
        let summary = sandbox.backup(&image.path);
        let n = changed.len() as u64;
        // 100 bytes touch one or two 4 KiB pages: a full-size chunk is
        // stored as those pages over the parent's (a delta: 38 bytes of
        // base id, page count and mask, then the pages), the short last
        // chunk (one page) whole.
        let lens: Vec<u64> = changed
            .iter()
            .map(|&p| CHUNK.min(size - p * CHUNK))
            .collect();
        let deltas = lens.iter().filter(|&&l| l == CHUNK).count() as u64;
        let whole: u64 = lens.iter().filter(|&&l| l < CHUNK).sum();
        let (least, most) = (whole + deltas * (38 + 4096), whole + deltas * (38 + 8192));
        assert_eq!(counter(&summary, "chunks_delta"), deltas, "{summary}");
        assert!(
            counter(&summary, "bytes_base") >= deltas * CHUNK,
            "{summary}"
        );
        assert_eq!(summary["parent"], taken.last().unwrap().0["snapshot"]);
        assert_eq!(counter(&summary, "chunks_new"), n, "{summary}");
        assert_eq!(
            counter(&summary, "chunks_unchanged"),
            chunks - n,
            "{summary}"
        );
        assert_eq!(counter(&summary, "chunks_dedup"), 0, "{summary}");
        assert!(counter(&summary, "bytes_read") <= size, "{summary}");
        let plain = counter(&summary, "bytes_new_plain");
        assert!((least..=most).contains(&plain), "{summary}");
        // Random data does not compress: about that much is stored.
        let stored = counter(&summary, "bytes_new");
        assert!(stored <= plain && stored >= plain * 9 / 10, "{summary}");
        // And the repository grew by that, plus a pack header and table.
        let growth = bytes_under(&sandbox.repo.join("data")) - data_before;
        assert!(
            growth >= stored && growth <= stored + 64 * n + 4096,
            "data/ grew by {growth} bytes for {stored} new bytes"
        );
        taken.push((summary, image.bytes.clone()));
    }
    for (summary, bytes) in &taken {
        sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), bytes);
    }
}

// Pins: backing up an unchanged source again reads it but writes no pack and no index.
#[test]
fn unchanged_source_adds_nothing() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x1c_0002);
    let image = Image::random(sandbox.path("disk.img"), 12 * CHUNK + 1, &mut rng);
    sandbox.backup(&image.path);
    let data = super::common::tree(&sandbox.repo.join("data"));
    let index = super::common::tree(&sandbox.repo.join("index"));
    let again = sandbox.backup(&image.path);
    assert_eq!(counter(&again, "chunks_new"), 0, "{again}");
    assert_eq!(counter(&again, "chunks_unchanged"), 13, "{again}");
    assert_eq!(counter(&again, "bytes_new"), 0, "{again}");
    assert_eq!(super::common::tree(&sandbox.repo.join("data")), data);
    assert_eq!(super::common::tree(&sandbox.repo.join("index")), index);
    sandbox.assert_restores(again["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: --full ignores the parent's fingerprints (re-hashes every chunk) yet stores nothing already stored.
#[test]
fn full_backup_rehashes_but_stores_nothing_twice() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x1c_0003);
    let image = Image::random(sandbox.path("disk.img"), 6 * CHUNK + 17, &mut rng);
    let first = sandbox.backup(&image.path);
    let full = sandbox
        .run([
            "--json".as_ref(),
            "backup".as_ref(),
            "--full".as_ref(),
            image.path.as_os_str(),
        ])
        .ok()
        .json();
    assert_eq!(full["parent"], first["snapshot"], "{full}");
    assert_eq!(counter(&full, "chunks_unchanged"), 0, "{full}");
    assert_eq!(counter(&full, "chunks_dedup"), 7, "{full}");
    assert_eq!(counter(&full, "chunks_new"), 0, "{full}");
    assert_eq!(counter(&full, "bytes_new"), 0, "{full}");
    sandbox.assert_restores(full["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: two identical sources (different paths) dedupe: the second stores no chunk, and repeated chunks inside one image are stored once.
#[test]
fn identical_data_is_stored_once() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x1c_0004);
    let one = Image::random(sandbox.path("one.img"), 10 * CHUNK + 333, &mut rng);
    let two = sandbox.path("two.img");
    std::fs::write(&two, &one.bytes).unwrap();
    let first = sandbox.backup(&one.path);
    assert_eq!(counter(&first, "chunks_new"), 11, "{first}");
    let data = super::common::tree(&sandbox.repo.join("data"));
    let second = sandbox.backup(&two);
    assert_eq!(
        second["parent"],
        Value::Null,
        "another path is another source"
    );
    assert_eq!(counter(&second, "chunks_new"), 0, "{second}");
    assert_eq!(counter(&second, "chunks_dedup"), 11, "{second}");
    assert_eq!(counter(&second, "bytes_new"), 0, "{second}");
    assert_eq!(super::common::tree(&sandbox.repo.join("data")), data);
    sandbox.assert_restores(second["snapshot"].as_str().unwrap(), &one.bytes);

    let block = rng.bytes(CHUNK as usize);
    let repeated: Vec<u8> = block.repeat(9);
    let path = sandbox.path("repeated.img");
    std::fs::write(&path, &repeated).unwrap();
    let summary = sandbox.backup(&path);
    assert_eq!(counter(&summary, "chunks_new"), 1, "{summary}");
    assert_eq!(counter(&summary, "chunks_dedup"), 8, "{summary}");
    assert_eq!(counter(&summary, "bytes_new_plain"), CHUNK, "{summary}");
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &repeated);
}

// Pins: an image that is one hole is not read and stores nothing, and restores as a sparse file of zeros.
#[test]
fn hole_only_image_stores_nothing() {
    let sandbox = Sandbox::new();
    let size = 160 * CHUNK + 1;
    let image = Image::sparse(sandbox.path("holes.img"), size);
    let summary = sandbox.backup(&image.path);
    assert_eq!(counter(&summary, "chunks_hole"), 161, "{summary}");
    assert_eq!(counter(&summary, "bytes_read"), 0, "{summary}");
    assert_eq!(counter(&summary, "bytes_new"), 0, "{summary}");
    assert_eq!(counter(&summary, "chunks_new"), 0, "{summary}");
    assert!(sandbox.packs().is_empty(), "a pack was written");
    let id = summary["snapshot"].as_str().unwrap();
    let target = sandbox.path("restored.img");
    sandbox.restore(id, &target, &[]).ok();
    super::common::assert_file_is(&target, &image.bytes, "hole-only image");
    let allocated = target.metadata().unwrap().blocks() * 512;
    assert!(
        allocated < size / 16,
        "restored file is not sparse: {allocated} bytes allocated"
    );
}

// Pins: an image of written zeros is read but stores nothing.
#[test]
fn zero_image_stores_nothing() {
    let sandbox = Sandbox::new();
    let size = 20 * CHUNK + 5;
    let path = sandbox.path("zeros.img");
    std::fs::write(&path, vec![0u8; size as usize]).unwrap();
    let summary = sandbox.backup(&path);
    assert_eq!(counter(&summary, "chunks_zero"), 21, "{summary}");
    assert_eq!(counter(&summary, "bytes_new"), 0, "{summary}");
    assert!(sandbox.packs().is_empty(), "a pack was written");
    sandbox.assert_restores(
        summary["snapshot"].as_str().unwrap(),
        &vec![0u8; size as usize],
    );
}
