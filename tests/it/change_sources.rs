//! Change sources: an incremental that reads only what a change source says
//! may have changed, and the fingerprint scan whenever the source is
//! missing, stale or in doubt (with the reason on stderr and in `--json`).
//!
//! `--changed-ranges` is fed byte ranges, and the XML that the real
//! thin_delta and era_invalidate print for metadata files built here with
//! thin_restore and era_restore (no device-mapper needed). Reflink shadows
//! are tested on real XFS and btrfs filesystems on loop devices, with a
//! write still in the page cache when the backup starts. Every snapshot is
//! restored and compared byte for byte.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::{
    CHUNK, Hold, Image, LoopDevice, Mounted, Rng, Run, Sandbox, have, held, sh, system,
};

fn counter(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {summary}"))
}

/// `platter --json backup SOURCE EXTRA...`, whatever its outcome.
fn backup_run(sandbox: &Sandbox, source: &Path, extra: &[&OsStr]) -> Run {
    let mut args: Vec<&OsStr> = vec!["--json".as_ref(), "backup".as_ref(), source.as_os_str()];
    args.extend_from_slice(extra);
    sandbox.run(args)
}

/// A backup with `--changed-ranges FILE EXTRA...` that must succeed.
fn backup_ranges(sandbox: &Sandbox, source: &Path, file: &Path, extra: &[&str]) -> Value {
    let mut args: Vec<&OsStr> = vec!["--changed-ranges".as_ref(), file.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    backup_run(sandbox, source, &args).ok().json()
}

/// The body of the manifest of the snapshot a backup summary names, read
/// from the file itself: what is recorded, not what is printed.
fn manifest(sandbox: &Sandbox, snapshot: &Value) -> Value {
    let id = snapshot["snapshot"].as_str().expect("a snapshot id");
    let text = fs::read_to_string(sandbox.manifest_file(id)).expect("no manifest");
    let doc: Value = serde_json::from_str(&text).expect("manifest is JSON");
    doc["body"].clone()
}

/// Chunks `[first, last]` (inclusive) that the byte ranges touch.
fn chunks_touched(ranges: &[(u64, u64)], size: u64) -> u64 {
    let mut touched = vec![false; size.div_ceil(CHUNK) as usize];
    for &(offset, len) in ranges {
        if len == 0 {
            continue;
        }
        for c in offset / CHUNK..=(offset + len - 1) / CHUNK {
            touched[c as usize] = true;
        }
    }
    touched.iter().filter(|&&t| t).count() as u64
}

fn write_ranges(path: &Path, ranges: &[(u64, u64)]) {
    let mut text = String::from("# offset length (bytes)\n");
    for (offset, len) in ranges {
        text.push_str(&format!("{offset} {len}\n"));
    }
    fs::write(path, text).unwrap();
}

// Pins: with --changed-ranges an incremental reads only the chunks the ranges touch (of those, only the changed pages when they are few, over the parent's chunk), keeps the others from the parent unread, records kind "ranges" in the manifest, and restores byte for byte.
#[test]
fn changed_ranges_read_only_the_chunks_they_touch() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc5_0001);
    let size = 40 * CHUNK + 1000;
    let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    let first = sandbox.backup(&image.path);
    let writes = [
        (3 * CHUNK + 10, 100),
        (7 * CHUNK - 50, 100),
        (40 * CHUNK + 10, 20),
    ];
    for &(offset, len) in &writes {
        image.write_random(&mut rng, offset, len);
    }
    let file = sandbox.path("changed");
    write_ranges(&file, &writes);
    let summary = backup_ranges(&sandbox, &image.path, &file, &[]);
    let touched = chunks_touched(&writes, size);
    assert_eq!(touched, 4);
    assert_eq!(summary["parent"], first["snapshot"], "{summary}");
    assert_eq!(
        counter(&summary, "chunks_unread"),
        41 - touched,
        "{summary}"
    );
    assert_eq!(
        counter(&summary, "chunks_unchanged"),
        41 - touched,
        "{summary}"
    );
    assert_eq!(counter(&summary, "chunks_new"), touched, "{summary}");
    // Only the changed 4 KiB pages are read from the source, over the
    // parent's chunks read back from the repository; the short last chunk
    // (1000 bytes, all of them in its one page) is read whole.
    assert_eq!(
        counter(&summary, "bytes_read"),
        3 * 4096 + 1000,
        "only the changed pages are read: {summary}"
    );
    assert_eq!(counter(&summary, "bytes_base"), 3 * CHUNK, "{summary}");
    assert_eq!(summary["change_source"]["kind"], "ranges", "{summary}");
    assert_eq!(summary["scan_reason"], Value::Null, "{summary}");
    let recorded = manifest(&sandbox, &summary);
    assert_eq!(recorded["change_source"]["kind"], "ranges", "{recorded}");
    assert!(
        recorded["change_source"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("lines")),
        "{recorded}"
    );
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
    sandbox.assert_restores(first["snapshot"].as_str().unwrap(), &{
        let mut rng = Rng::new(0xc5_0001);
        rng.bytes(size as usize)
    });
}

// Pins: --changed-ranges without a parent snapshot reads everything, says why on stderr and as scan_reason, and records no change source.
#[test]
fn changed_ranges_without_a_parent_scan_and_say_why() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc5_0002);
    let image = Image::random(sandbox.path("disk.img"), 6 * CHUNK, &mut rng);
    let file = sandbox.path("changed");
    write_ranges(&file, &[(0, 10)]);
    let run = backup_run(
        &sandbox,
        &image.path,
        &["--changed-ranges".as_ref(), file.as_os_str()],
    );
    let summary = run.ok().json();
    assert!(
        run.stderr.contains("no parent snapshot"),
        "{}",
        run.describe()
    );
    assert!(
        summary["scan_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no parent snapshot")),
        "{summary}"
    );
    assert_eq!(counter(&summary, "chunks_new"), 6, "{summary}");
    assert_eq!(counter(&summary, "bytes_read"), 6 * CHUNK, "{summary}");
    assert_eq!(summary["change_source"], Value::Null, "{summary}");
    assert_eq!(manifest(&sandbox, &summary).get("change_source"), None);
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: malformed --changed-ranges files, ranges past the end of the source, era_invalidate output without --block-size, and --full with --changed-ranges are refused with exit 2 before anything is written.
#[test]
fn bad_changed_ranges_are_refused_and_nothing_is_written() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc5_0003);
    let size = 8 * CHUNK;
    let image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    sandbox.backup(&image.path);
    let before = sandbox.repo_tree();
    let cases: [(&str, &[&str], &str); 9] = [
        ("0 10\nten 5\n", &[], "line 2"),
        ("0 10 20\n", &[], "line 1"),
        ("-5 10\n", &[], "line 1"),
        (
            "<blocks><range begin=\"1\"/></blocks>",
            &["--block-size", "64K"],
            "end",
        ),
        (
            "<blocks><range begin=\"1\" end=\"2\"/>",
            &["--block-size", "64K"],
            "cut short",
        ),
        ("<blocks><block block=\"1\"/></blocks>", &[], "--block-size"),
        (
            "<blocks><block block=\"1\"/></blocks>",
            &["--block-size", "1000"],
            "block size",
        ),
        (&format!("{} 1\n", size), &[], "past the end"),
        ("0 10\n", &["--full"], "--full"),
    ];
    for (text, extra, mentions) in cases {
        let file = sandbox.path("changed");
        fs::write(&file, text).unwrap();
        let mut args: Vec<&OsStr> = vec!["--changed-ranges".as_ref(), file.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        backup_run(&sandbox, &image.path, &args).refused(2, mentions);
        assert_eq!(
            sandbox.repo_tree(),
            before,
            "{text:?} wrote to the repository"
        );
    }
    // Not a list of ranges at all: a folder, an endless device.
    for (path, mentions) in [
        (sandbox.path(""), "folder"),
        ("/dev/zero".into(), "256 MiB"),
    ] {
        let args = ["--changed-ranges".as_ref(), path.as_os_str()];
        backup_run(&sandbox, &image.path, &args).refused(2, mentions);
    }
    assert_eq!(sandbox.repo_tree(), before, "a refused backup wrote");
}

/// Runs a thin-provisioning-tools program on files in `dir`.
fn tool(dir: &Path, script: &str) -> String {
    sh(&format!("cd '{}' && {script}", dir.display()))
}

// Pins: the XML that the real thin_delta prints (terse and --verbose) selects the data blocks that differ (every kind but `same`), in blocks of data_block_size x 512 bytes.
#[test]
fn thin_delta_output_selects_the_changed_blocks() {
    if !have(
        "thin_delta_output_selects_the_changed_blocks",
        &["thin_restore", "thin_delta"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let dir = sandbox.path("thin");
    fs::create_dir(&dir).unwrap();
    let mut rng = Rng::new(0xc5_0004);
    let size = 32 * CHUNK;
    let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    let first = sandbox.backup(&image.path);
    // Thin device 1 is the parent's, device 2 (a snapshot of it) the
    // current one: blocks of 128 sectors, one chunk each. Device 2 remaps
    // blocks 5-7 (different), lacks 18-19 (left_only) and adds 30
    // (right_only).
    fs::write(
        dir.join("thin.xml"),
        r#"<superblock uuid="" time="1" transaction="1" version="2" data_block_size="128" nr_data_blocks="1000">
  <device dev_id="1" mapped_blocks="20" transaction="0" creation_time="0" snap_time="0">
    <range_mapping origin_begin="0" data_begin="0" length="20" time="0"/>
  </device>
  <device dev_id="2" mapped_blocks="19" transaction="0" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="5" time="0"/>
    <range_mapping origin_begin="5" data_begin="100" length="3" time="1"/>
    <range_mapping origin_begin="8" data_begin="8" length="10" time="0"/>
    <single_mapping origin_block="30" data_block="200" time="1"/>
  </device>
</superblock>
"#,
    )
    .unwrap();
    tool(
        &dir,
        "truncate -s 8M meta && thin_restore -i thin.xml -o meta \
         && thin_delta --snap1 1 --snap2 2 meta > terse.xml \
         && thin_delta --verbose --snap1 1 --snap2 2 meta > verbose.xml",
    );
    for c in [5, 6, 7, 18, 19, 30] {
        image.write_random(&mut rng, c * CHUNK + 7, 9);
    }
    let mut parent = first["snapshot"].clone();
    for shape in ["terse.xml", "verbose.xml"] {
        let summary = backup_ranges(&sandbox, &image.path, &dir.join(shape), &[]);
        assert_eq!(summary["parent"], parent, "{shape}: {summary}");
        assert_eq!(
            counter(&summary, "bytes_read"),
            6 * CHUNK,
            "{shape}: {summary}"
        );
        assert_eq!(counter(&summary, "chunks_unread"), 26, "{shape}: {summary}");
        assert!(
            summary["change_source"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("thin_delta")),
            "{summary}"
        );
        sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
        parent = summary["snapshot"].clone();
    }
}

// Pins: the XML that the real era_invalidate prints (ranges with an exclusive end, and single blocks) selects those blocks at --block-size bytes each.
#[test]
fn era_invalidate_output_selects_the_written_blocks() {
    if !have(
        "era_invalidate_output_selects_the_written_blocks",
        &["era_restore", "era_invalidate"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let dir = sandbox.path("era");
    fs::create_dir(&dir).unwrap();
    let mut rng = Rng::new(0xc5_0005);
    let size = 16 * CHUNK;
    let mut image = Image::random(sandbox.path("disk.img"), size, &mut rng);
    sandbox.backup(&image.path);
    // Blocks of 128 sectors (one chunk); written since era 3: 1-3, 5, 9, 15.
    let eras = [1, 3, 3, 4, 1, 4, 0, 0, 2, 3, 0, 0, 0, 0, 0, 4];
    let mut xml = String::from(
        "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"16\" current_era=\"5\">\n  <era_array>\n",
    );
    for (block, era) in eras.iter().enumerate() {
        xml.push_str(&format!("    <era block=\"{block}\" era=\"{era}\"/>\n"));
    }
    xml.push_str("  </era_array>\n</superblock>\n");
    fs::write(dir.join("era.xml"), xml).unwrap();
    tool(
        &dir,
        "truncate -s 8M meta && era_restore -i era.xml -o meta \
         && era_invalidate --written-since 3 meta > written.xml",
    );
    let written = fs::read_to_string(dir.join("written.xml")).unwrap();
    assert!(
        written.contains("<range") && written.contains("<block "),
        "{written}"
    );
    for c in [1, 2, 3, 5, 9, 15] {
        image.write_random(&mut rng, c * CHUNK + 100, 50);
    }
    let summary = backup_ranges(
        &sandbox,
        &image.path,
        &dir.join("written.xml"),
        &["--block-size", "64K"],
    );
    assert_eq!(counter(&summary, "bytes_read"), 6 * CHUNK, "{summary}");
    assert_eq!(counter(&summary, "chunks_unread"), 10, "{summary}");
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: for random write patterns, an incremental with --changed-ranges (the writes' ranges) restores exactly what a scan incremental of the same image restores, round after round.
#[test]
fn changed_ranges_incrementals_equal_scan_incrementals() {
    let with_ranges = Sandbox::new();
    let scan = Sandbox::new();
    let mut rng = Rng::new(0xc5_0006);
    let size = 48 * CHUNK + 4321;
    let mut image = Image::random(with_ranges.path("disk.img"), size, &mut rng);
    with_ranges.backup(&image.path);
    scan.backup(&image.path);
    let file = with_ranges.path("changed");
    for round in 0..6 {
        let mut writes = Vec::new();
        for _ in 0..rng.below(6) {
            let len = 1 + rng.below(3 * CHUNK);
            let offset = rng.below(size - len + 1);
            match rng.below(3) {
                0 => image.write_zeros(offset, len),
                _ => image.write_random(&mut rng, offset, len),
            }
            writes.push((offset, len));
        }
        write_ranges(&file, &writes);
        let a = backup_ranges(&with_ranges, &image.path, &file, &[]);
        let b = scan.backup(&image.path);
        assert!(
            counter(&a, "bytes_read") <= counter(&b, "bytes_read"),
            "round {round}: {a}\n{b}"
        );
        assert_eq!(a["change_source"]["kind"], "ranges", "round {round}: {a}");
        with_ranges.assert_restores(a["snapshot"].as_str().unwrap(), &image.bytes);
        scan.assert_restores(b["snapshot"].as_str().unwrap(), &image.bytes);
    }
}

/// A filesystem made by `mkfs` on a loop device over a sparse file, and
/// mounted; everything goes when it is dropped (unmount before detach).
struct Scratch {
    mounted: Mounted,
    _device: LoopDevice,
}

impl Scratch {
    fn new(sandbox: &Sandbox, mkfs: &str, size: &str) -> Scratch {
        let file = sandbox.path(&format!("{mkfs}.fs"));
        system(
            "truncate",
            &["-s".as_ref(), size.as_ref(), file.as_os_str()],
        );
        let device = LoopDevice::attach(&file);
        system(mkfs, &["-q".as_ref(), device.path.as_os_str()]);
        let mounted = Mounted::mount(&device.path, &sandbox.path(&format!("{mkfs}.mnt")));
        Scratch {
            mounted,
            _device: device,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mounted.point.join(name)
    }

    /// The reflink shadows in the filesystem's top folder.
    fn shadows(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.mounted.point)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".platter-shadow."))
            .collect();
        names.sort();
        names
    }
}

/// A reflink backup: `--change-source reflink EXTRA`.
fn backup_reflink(sandbox: &Sandbox, image: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec!["--change-source".as_ref(), "reflink".as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    backup_run(sandbox, image, &args)
}

/// The reflink round trip on filesystem `mkfs`: a first backup makes the
/// shadow (scanning, with the reason), writes left in the page cache are
/// found by the next backup (which reads only their chunks), the shadow
/// moves to the new snapshot, and every snapshot restores byte for byte.
fn reflink_round_trip(test: &str, mkfs: &str, size: &str) {
    if !have(test, &["root", "loop devices", mkfs]) {
        return;
    }
    let sandbox = Sandbox::new();
    let fs = Scratch::new(&sandbox, mkfs, size);
    let mut rng = Rng::new(0xc5_0007);
    let image_size = 32 * CHUNK + 512;
    let mut image = Image::random(fs.path("vm.img"), image_size, &mut rng);
    sh("sync");
    let first_run = backup_reflink(&sandbox, &image.path, &[]);
    let first = first_run.ok().json();
    assert!(
        first["scan_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no parent")),
        "{first}"
    );
    let id1 = first["snapshot"].as_str().unwrap().to_string();
    assert_eq!(fs.shadows().len(), 1, "{:?}", fs.shadows());
    assert!(fs.shadows()[0].ends_with(&id1), "{:?}", fs.shadows());
    let mut taken = vec![(id1, image.bytes.clone())];

    // A user's own reflink of the image keeps the old blocks shared after
    // the writes below: the SHARED flag alone would call them unchanged.
    let copy = fs.path("user-copy.img");
    system(
        "cp",
        &[
            "--reflink=always".as_ref(),
            image.path.as_os_str(),
            copy.as_os_str(),
        ],
    );
    // Writes still in the page cache (no sync) when the backup starts.
    for c in [2u64, 9, 10, 32] {
        image.write_random(&mut rng, c * CHUNK + 40, 100);
    }
    // Without --change-source: the shadow found is used.
    let second = sandbox.backup(&image.path);
    assert_eq!(second["change_source"]["kind"], "reflink", "{second}");
    assert_eq!(second["scan_reason"], Value::Null, "{second}");
    assert_eq!(
        counter(&second, "bytes_read"),
        3 * 4096 + 512,
        "only the written pages are read: {second}"
    );
    assert_eq!(counter(&second, "chunks_new"), 4, "{second}");
    assert_eq!(counter(&second, "chunks_unread"), 29, "{second}");
    let id2 = second["snapshot"].as_str().unwrap().to_string();
    assert_eq!(fs.shadows().len(), 1, "{:?}", fs.shadows());
    assert!(fs.shadows()[0].ends_with(&id2), "{:?}", fs.shadows());
    taken.push((id2, image.bytes.clone()));

    // Nothing written: nothing read.
    let third = sandbox.backup(&image.path);
    assert_eq!(counter(&third, "bytes_read"), 0, "{third}");
    assert_eq!(counter(&third, "chunks_unread"), 33, "{third}");
    taken.push((
        third["snapshot"].as_str().unwrap().to_string(),
        image.bytes.clone(),
    ));

    for (id, bytes) in &taken {
        sandbox.assert_restores(id, bytes);
    }
    // --change-source scan stops tracking: the shadow goes.
    sandbox.backup_with(&image.path, &["--change-source", "scan"]);
    assert_eq!(fs.shadows(), Vec::<String>::new());
}

// Pins: on XFS, a reflink incremental reads only the chunks written since the parent's shadow, including writes still in the page cache and blocks a user's own reflink still shares, and restores byte for byte.
#[test]
fn reflink_shadow_tracks_writes_on_xfs() {
    reflink_round_trip("reflink_shadow_tracks_writes_on_xfs", "mkfs.xfs", "320M");
}

// Pins: on btrfs, a reflink incremental reads only the chunks written since the parent's shadow, including writes still in the page cache and blocks a user's own reflink still shares, and restores byte for byte.
#[test]
fn reflink_shadow_tracks_writes_on_btrfs() {
    reflink_round_trip(
        "reflink_shadow_tracks_writes_on_btrfs",
        "mkfs.btrfs",
        "160M",
    );
}

// Pins: a reflink backup killed after it cloned its new shadow leaves the parent's shadow as it was; the next backup removes the leftover, uses the parent's shadow and restores byte for byte.
#[test]
fn interrupted_reflink_backup_leaves_the_old_shadow() {
    let test = "interrupted_reflink_backup_leaves_the_old_shadow";
    if !have(test, &["root", "loop devices", "mkfs.xfs", "strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let fs = Scratch::new(&sandbox, "mkfs.xfs", "320M");
    let mut rng = Rng::new(0xc5_0008);
    let mut image = Image::random(fs.path("vm.img"), 16 * CHUNK, &mut rng);
    backup_reflink(&sandbox, &image.path, &[]).ok();
    let old = fs.shadows();
    assert_eq!(old.len(), 1);
    image.write_random(&mut rng, 5 * CHUNK, 10);
    // Held in the pipeline's first hole check (lseek), after the clone.
    let args: Vec<OsString> = ["backup".into(), image.path.clone().into_os_string()].into();
    let (code, stderr) = held(
        &sandbox,
        &args,
        &Hold {
            traced: "lseek",
            at: 8,
            once: true,
        },
        || fs.shadows().iter().any(|s| s.ends_with(".tmp")),
        Some(libc::SIGKILL),
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(sandbox.snapshot_ids().len(), 1, "no snapshot was committed");
    let now = fs.shadows();
    assert!(now.contains(&old[0]), "the old shadow went: {now:?}");
    image.write_random(&mut rng, 11 * CHUNK, 10);
    let next = sandbox.backup(&image.path);
    assert_eq!(next["change_source"]["kind"], "reflink", "{next}");
    assert_eq!(counter(&next, "bytes_read"), 2 * 4096, "{next}");
    assert_eq!(fs.shadows().len(), 1, "{:?}", fs.shadows());
    sandbox.assert_restores(next["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: a reflink request on a filesystem without reflinks (tmpfs) backs up by scanning, says why, and leaves no shadow behind.
#[test]
fn reflink_without_reflinks_scans_and_says_why() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc5_0009);
    let image = Image::random(sandbox.path("disk.img"), 4 * CHUNK, &mut rng);
    sandbox.backup(&image.path);
    let on_tmp_fs = sh(&format!("stat -f -c %T '{}'", image.path.display()));
    let run = backup_reflink(&sandbox, &image.path, &[]);
    let summary = run.ok().json();
    if on_tmp_fs == "xfs" || on_tmp_fs == "btrfs" {
        return;
    }
    assert!(
        summary["scan_reason"]
            .as_str()
            .is_some_and(|r| r.contains("XFS or btrfs")),
        "{summary}"
    );
    assert!(run.stderr.contains("XFS or btrfs"), "{}", run.describe());
    assert_eq!(counter(&summary, "bytes_read"), 4 * CHUNK, "{summary}");
    let leftovers: Vec<_> = fs::read_dir(sandbox.path(""))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("platter-shadow"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: for random write patterns on XFS (data, zeros, punched holes; some synced, some still in the page cache), a reflink incremental restores exactly what a scan incremental of the same image restores, round after round, and reads no more.
#[test]
fn reflink_incrementals_equal_scan_incrementals_on_xfs() {
    reflink_equals_scan(
        "reflink_incrementals_equal_scan_incrementals_on_xfs",
        "mkfs.xfs",
        "320M",
    );
}

// Pins: the same on btrfs.
#[test]
fn reflink_incrementals_equal_scan_incrementals_on_btrfs() {
    reflink_equals_scan(
        "reflink_incrementals_equal_scan_incrementals_on_btrfs",
        "mkfs.btrfs",
        "160M",
    );
}

fn reflink_equals_scan(test: &str, mkfs: &str, fs_size: &str) {
    if !have(test, &["root", "loop devices", mkfs]) {
        return;
    }
    let with_reflink = Sandbox::new();
    let scan = Sandbox::new();
    let fs = Scratch::new(&with_reflink, mkfs, fs_size);
    let mut rng = Rng::new(0xc5_000a);
    let size = 40 * CHUNK + 4096;
    let mut image = Image::random(fs.path("vm.img"), size, &mut rng);
    backup_reflink(&with_reflink, &image.path, &[]).ok();
    scan.backup(&image.path);
    for round in 0..6 {
        for _ in 0..rng.below(5) {
            let len = 1 + rng.below(2 * CHUNK);
            let offset = rng.below(size - len + 1);
            match rng.below(4) {
                0 => image.write_zeros(offset, len),
                1 => image.punch_hole(offset, len),
                _ => image.write_random(&mut rng, offset, len),
            }
        }
        if rng.below(2) == 0 {
            sh("sync");
        }
        let a = with_reflink.backup(&image.path);
        let b = scan.backup_with(&image.path, &["--change-source", "scan"]);
        assert_eq!(a["change_source"]["kind"], "reflink", "round {round}: {a}");
        assert!(
            counter(&a, "bytes_read") <= counter(&b, "bytes_read"),
            "round {round}: {a}\n{b}"
        );
        with_reflink.assert_restores(a["snapshot"].as_str().unwrap(), &image.bytes);
        scan.assert_restores(b["snapshot"].as_str().unwrap(), &image.bytes);
    }
}

// Pins: a chunk whose changed pages would be read over a parent chunk that no longer reads back (a damaged pack) is read whole from the source instead: the backup succeeds and restores byte for byte.
#[test]
fn a_parent_chunk_that_does_not_read_back_is_read_whole() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xc5_000b);
    let mut image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let first = sandbox.backup(&image.path);
    let id = first["snapshot"].as_str().unwrap();
    let (pack, blob) = super::common::stored_chunk_of(&sandbox, id, |_| true);
    super::common::flip_byte(&pack, blob.offset + blob.stored_len / 2);
    let pos = super::common::map_ids(&sandbox.map_file(id))
        .iter()
        .position(|c| c.as_deref() == Some(blob.id.as_str()))
        .expect("the damaged chunk is in the map") as u64;
    image.write_random(&mut rng, pos * CHUNK + 100, 10);
    let file = sandbox.path("changed");
    write_ranges(&file, &[(pos * CHUNK + 100, 10)]);
    let summary = backup_ranges(&sandbox, &image.path, &file, &[]);
    assert_eq!(counter(&summary, "bytes_read"), CHUNK, "{summary}");
    assert_eq!(counter(&summary, "bytes_base"), 0, "{summary}");
    assert_eq!(counter(&summary, "chunks_new"), 1, "{summary}");
    sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
}

// Pins: a reflink shadow is trusted only while it is the file its backup
// made: one replaced by a symbolic link to the image, a hard link to it,
// or a clone of the image written over it would report no change, so each
// gives a scan with the reason, and the snapshot holds the write.
#[test]
fn a_shadow_replaced_since_its_backup_is_not_trusted() {
    let test = "a_shadow_replaced_since_its_backup_is_not_trusted";
    if !have(test, &["root", "loop devices", "mkfs.xfs"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let fs = Scratch::new(&sandbox, "mkfs.xfs", "320M");
    let mut rng = Rng::new(0xc5_0011);
    let mut image = Image::random(fs.path("vm.img"), 16 * CHUNK, &mut rng);
    backup_reflink(&sandbox, &image.path, &[]).ok();
    for (round, forge) in ["ln -s vm.img", "ln vm.img", "cp --reflink=always vm.img"]
        .into_iter()
        .enumerate()
    {
        let shadows = fs.shadows();
        assert_eq!(shadows.len(), 1, "{shadows:?}");
        image.write_random(&mut rng, (round as u64 + 2) * CHUNK + 100, 50);
        let shadow = shadows[0].clone();
        let forgery = if forge.starts_with("cp") {
            format!("{forge} '{shadow}'")
        } else {
            format!("rm '{shadow}' && {forge} '{shadow}'")
        };
        sh(&format!("cd '{}' && {forgery}", fs.path("").display()));
        let summary = backup_run(&sandbox, &image.path, &[]).ok().json();
        let why = summary["scan_reason"].as_str().unwrap_or_default();
        assert!(why.contains("not to be trusted"), "{forge}: {summary}");
        sandbox.assert_restores(summary["snapshot"].as_str().unwrap(), &image.bytes);
    }
}
