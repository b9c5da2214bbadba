//! Real block devices: loop devices attached to image files, an ext4 made
//! with the real mkfs and really mounted. These tests need root and
//! util-linux; without them they skip (or fail when CI is set).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::common::{
    CHUNK, Image, LoopDevice, Mounted, Rng, Sandbox, assert_bytes_equal, have, random_name, system,
};

const LOOP: [&str; 3] = ["root", "loop devices", "losetup"];

/// Writes through the device (not its backing file, whose pages the
/// device's own cache would not see) and keeps the model in step.
fn write_through(device: &LoopDevice, model: &mut [u8], offset: u64, data: &[u8]) {
    let dev = OpenOptions::new().write(true).open(&device.path).unwrap();
    dev.write_all_at(data, offset).unwrap();
    dev.sync_all().unwrap();
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

// Pins: a loop device backs up (full, then incremental with exactly the changed chunks) and each snapshot restores onto another, larger loop device byte for byte, zeros included.
#[test]
fn loop_device_round_trip_onto_another_loop_device() {
    if !have("loop_device_round_trip_onto_another_loop_device", &LOOP) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde_0001);
    // Whole sectors, as a loop device needs, but not whole chunks.
    let size = 48 * CHUNK + 7 * 512;
    let mut image = Image::random(sandbox.path("source.img"), size, &mut rng);
    image.write_zeros(10 * CHUNK, 3 * CHUNK);
    let source = LoopDevice::attach(&image.path);
    let mut bytes = image.bytes.clone();

    let first = sandbox.backup(&source.path);
    assert_eq!(first["size"], size, "{first}");
    let first_bytes = bytes.clone();
    write_through(&source, &mut bytes, 3 * CHUNK + 5, &rng.bytes(100));
    write_through(&source, &mut bytes, 11 * CHUNK, &rng.bytes(CHUNK as usize));
    write_through(&source, &mut bytes, size - 300, &rng.bytes(300));
    let second = sandbox.backup(&source.path);
    assert_eq!(second["parent"], first["snapshot"], "{second}");
    assert_eq!(second["chunks_new"], 3, "{second}");

    let target_file = sandbox.path("target.img");
    std::fs::write(&target_file, rng.bytes((size + 5 * CHUNK) as usize)).unwrap();
    let target = LoopDevice::attach(&target_file);
    // The second snapshot first, so that restoring the first must zero the
    // chunk the second filled.
    for (summary, expected) in [(&second, &bytes), (&first, &first_bytes)] {
        let id = summary["snapshot"].as_str().unwrap();
        let report = sandbox.restore(id, &target.path, &["--verify"]).ok().json();
        assert_eq!(report["target_kind"], "block device", "{report}");
        assert_eq!(report["verified"], true, "{report}");
        let on_device = target.contents();
        assert_bytes_equal(
            &on_device[..size as usize],
            expected,
            "restored loop device",
        );
    }
}

// Pins: restoring onto a mounted device is refused with exit 5 and not one byte of the device changes.
#[test]
fn restore_onto_a_mounted_device_is_refused() {
    let needs = [
        "root",
        "loop devices",
        "losetup",
        "mkfs.ext4",
        "mount",
        "umount",
    ];
    if !have("restore_onto_a_mounted_device_is_refused", &needs) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde_0002);
    let size = 16 << 20;
    let image = Image::random(sandbox.path("source.img"), size, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    let target_file = sandbox.path("fs.img");
    Image::sparse(target_file.clone(), size);
    let device = LoopDevice::attach(&target_file);
    system(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-E".as_ref(),
            "lazy_itable_init=0,lazy_journal_init=0".as_ref(),
            device.path.as_os_str(),
        ],
    );
    let mounted = Mounted::mount(&device.path, &sandbox.path("mnt"));
    let file = mounted.point.join("hello.txt");
    std::fs::write(&file, b"still here").unwrap();
    std::fs::File::open(&file).unwrap().sync_all().unwrap();
    system("sync", &[]);
    let before = device.contents();
    assert_ne!(before, image.bytes, "the test would not see a write");

    let target = device.path.clone();
    sandbox.restore(&id, &target, &[]).refused(5, "mounted");
    assert!(
        device.contents() == before,
        "the mounted device was written"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"still here");
}

// Pins: restoring onto a device smaller than the snapshot is refused with exit 2 and the device is untouched.
#[test]
fn restore_onto_a_too_small_device_is_refused() {
    if !have("restore_onto_a_too_small_device_is_refused", &LOOP) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde_0003);
    let image = Image::random(sandbox.path("source.img"), 4 << 20, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let small = Image::random(sandbox.path("small.img"), 2 << 20, &mut rng);
    let device = LoopDevice::attach(&small.path);
    let before = device.contents();
    sandbox
        .restore(&id, &device.path, &[])
        .refused(2, "smaller");
    assert!(device.contents() == before, "the small device was written");
}

// Pins: restore --force onto an image file that is attached as a loop device is refused as busy (exit 5), file untouched.
#[test]
fn restore_onto_a_file_attached_as_loop_device_is_refused() {
    if !have(
        "restore_onto_a_file_attached_as_loop_device_is_refused",
        &LOOP,
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xde_0004);
    let image = Image::random(sandbox.path("source.img"), 1 << 20, &mut rng);
    let id = sandbox.backup(&image.path)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let busy = Image::random(sandbox.path("busy.img"), 1 << 20, &mut rng);
    let _device = LoopDevice::attach(&busy.path);
    sandbox
        .restore(&id, &busy.path, &["--force"])
        .refused(5, "attached");
    busy.check();
}

// Pins: with the default 1 MiB chunks, a restore onto a block device writes
// aligned chunks with direct I/O and the rest through the page cache; the
// device must hold exactly the snapshot either way.
#[test]
fn default_chunks_restore_onto_a_loop_device_exactly() {
    if !have("default_chunks_restore_onto_a_loop_device_exactly", &LOOP) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    sandbox.run(["init", "--plain"]).ok();
    let mut rng = Rng::new(0xde_0002);
    let mib = 1024 * 1024;
    let size = 9 * mib + 3 * 512;
    let mut image = Image::random(sandbox.path("source.img"), size, &mut rng);
    image.write_zeros(2 * mib, mib);
    let text: Vec<u8> = b"log line\n"
        .iter()
        .copied()
        .cycle()
        .take(mib as usize)
        .collect();
    image.write(5 * mib, &text);
    let summary = sandbox.backup(&image.path);
    let id = summary["snapshot"].as_str().unwrap().to_string();
    let target_file = sandbox.path("target.img");
    std::fs::write(&target_file, rng.bytes((size + mib) as usize)).unwrap();
    let target = LoopDevice::attach(&target_file);
    let report = sandbox
        .restore(&id, &target.path, &["--verify"])
        .ok()
        .json();
    assert_eq!(report["verified"], true, "{report}");
    assert_bytes_equal(
        &target.contents()[..size as usize],
        &image.bytes,
        "restored loop device",
    );
}

// Pins: a device named by a stable link (/dev/disk/by-id/...) is recorded
// by that link as given, so that after the disks are renumbered a backup
// through the same link still finds its parent; one named by its kernel
// name is recorded by that name.
#[test]
fn a_device_named_by_a_stable_link_is_recorded_as_given() {
    if !have(
        "a_device_named_by_a_stable_link_is_recorded_as_given",
        &["root", "loop devices"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0xb1d);
    let image = Image::random(sandbox.path("disk.img"), 8 * CHUNK, &mut rng);
    let device = LoopDevice::attach(&image.path);
    let dir = std::path::Path::new("/dev/disk/by-id");
    let made_dir = !dir.exists();
    std::fs::create_dir_all(dir).unwrap();
    let link = dir.join(format!("platter-test-{}", random_name()));
    std::os::unix::fs::symlink(&device.path, &link).unwrap();
    let first = sandbox.backup(&link);
    let second = sandbox.backup(&link);
    let plain = sandbox.backup(&device.path);
    std::fs::remove_file(&link).unwrap();
    if made_dir {
        let _ = std::fs::remove_dir(dir);
        let _ = std::fs::remove_dir("/dev/disk");
    }
    assert_eq!(first["source"], link.to_str().unwrap(), "{first}");
    assert_eq!(second["parent"], first["snapshot"], "{second}");
    assert_eq!(plain["source"], device.path.to_str().unwrap(), "{plain}");
    assert_eq!(plain["parent"], serde_json::Value::Null, "{plain}");
}
