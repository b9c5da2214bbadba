//! Partition tables: `inspect` against sfdisk and blkid on tables they made,
//! damaged tables, and whole-disk restores onto larger and smaller targets
//! (checked by `sgdisk -v`), partition-level backup and restore, a restore
//! onto a real block device, and a sector-size mismatch.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::Value;

use crate::it::common::*;

const MIB: u64 = 1 << 20;

/// A 64 MiB GPT disk made by sgdisk: an ESP with FAT32, a swap partition
/// and an ext4 root that ends at 40 MiB, leaving free space at the end.
fn gpt_disk(path: &Path) {
    let p = path.display();
    sh(&format!(
        "truncate -s 64M {p}
         sgdisk -o -n 1:2048:+20M -t 1:EF00 -c 1:ESP -n 2:0:+4M -t 2:8200 -n 3:0:+14M \
                -t 3:8300 -c 3:root -A 3:set:2 {p} >/dev/null
         mkfs.fat -F 32 -n EFIPART --offset=2048 {p} $((20*1024)) >/dev/null 2>&1
         s=$(mktemp); truncate -s 4M $s; mkswap -q -L swappy $s; dd if=$s of={p} bs=1M seek=21 conv=notrunc status=none; rm $s
         mkfs.ext4 -q -F -L rootfs -E offset=$((25*1024*1024)) {p} 14M"
    ));
}

/// A 64 MiB MBR disk made by sfdisk: a bootable ext4 primary, an extended
/// partition with two logical partitions, and data in the gap before the
/// first partition (where boot loaders live).
fn mbr_disk(path: &Path) {
    let p = path.display();
    sh(&format!(
        "truncate -s 64M {p}
         printf 'label: dos\\nstart=2048, size=20480, type=83, bootable\\nstart=22528, size=40960, type=5\\n\
start=24576, size=8192, type=82\\nstart=34816, size=8192, type=c\\n' | sfdisk -q {p}
         mkfs.ext4 -q -F -L boot -E offset=$((2048*512)) {p} 10M
         head -c 500000 /dev/urandom | dd of={p} bs=512 seek=1 conv=notrunc status=none"
    ));
}

fn inspect(path: &Path) -> Value {
    run([OsStr::new("--json"), "inspect".as_ref(), path.as_os_str()])
        .ok()
        .json()
}

/// Partitions without what their filesystems say about used space.
fn without_usage(partitions: &Value) -> Value {
    let mut v = partitions.clone();
    for p in v.as_array_mut().unwrap() {
        if let Some(c) = p["content"].as_object_mut() {
            c.remove("used");
            c.remove("copied_whole");
        }
    }
    v
}

fn sfdisk_json(path: &Path) -> Value {
    let text = system("sfdisk", &["--json".as_ref(), path.as_os_str()]);
    serde_json::from_str::<Value>(&text).expect("sfdisk --json")["partitiontable"].clone()
}

fn blkid_type(path: &Path, offset: u64) -> String {
    system(
        "blkid",
        &[
            "-p".as_ref(),
            "-O".as_ref(),
            offset.to_string().as_ref(),
            "-s".as_ref(),
            "TYPE".as_ref(),
            "-o".as_ref(),
            "value".as_ref(),
            path.as_os_str(),
        ],
    )
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

// Pins: inspect reads a GPT made by sgdisk exactly as sfdisk does (starts, sizes, type and partition GUIDs, names) and names contents as blkid does.
#[test]
fn inspect_reads_a_gpt_like_sfdisk_and_blkid() {
    if !have(
        "inspect_reads_a_gpt_like_sfdisk_and_blkid",
        &[
            "sgdisk",
            "sfdisk",
            "blkid",
            "mkfs.fat",
            "mkswap",
            "mkfs.ext4",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let ours = inspect(&disk);
    let theirs = sfdisk_json(&disk);
    assert_eq!(ours["table"], "gpt");
    assert_eq!(ours["disk_id"], theirs["id"]);
    assert_eq!(ours["gpt"]["first_usable_lba"], theirs["firstlba"]);
    assert_eq!(ours["gpt"]["last_usable_lba"], theirs["lastlba"]);
    let parts = ours["partitions"].as_array().unwrap();
    let expected = theirs["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), expected.len());
    for (p, e) in parts.iter().zip(expected) {
        assert_eq!(p["start"], e["start"], "{p}");
        assert_eq!(p["sectors"], e["size"], "{p}");
        assert_eq!(p["type_id"], e["type"], "{p}");
        assert_eq!(p["guid"], e["uuid"], "{p}");
        assert_eq!(p.get("name"), e.get("name"), "{p}");
        let offset = p["start"].as_u64().unwrap() * 512;
        assert_eq!(
            p["content"]["fstype"],
            blkid_type(&disk, offset).as_str(),
            "{p}"
        );
    }
    let names: Vec<&str> = parts
        .iter()
        .map(|p| p["type_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["EFI System", "Linux swap", "Linux filesystem"]);
    assert_eq!(parts[0]["content"]["version"], "FAT32");
    assert_eq!(parts[0]["content"]["label"], "EFIPART");
    assert_eq!(parts[1]["content"]["label"], "swappy");
    assert_eq!(parts[2]["content"]["label"], "rootfs");
    assert_eq!(parts[2]["bootable"], true, "legacy BIOS bootable attribute");
    assert_eq!(ours["gpt"]["primary_ok"], true);
    assert_eq!(ours["gpt"]["backup_ok"], true);
    assert!(ours.get("warnings").is_none(), "{ours}");

    let text = run(["inspect".as_ref(), disk.as_os_str()])
        .ok()
        .stdout
        .clone();
    for needle in [
        "GPT partition table",
        "EFI System",
        "ext4 label \"rootfs\"",
        "primary ok, backup ok",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks {needle:?}:\n{text}"
        );
    }
}

// Pins: inspect reads an MBR with an extended partition and logical partitions as sfdisk does, with the boot flag, and lists the gap before partition 1.
#[test]
fn inspect_reads_an_mbr_with_logical_partitions_like_sfdisk() {
    if !have(
        "inspect_reads_an_mbr_with_logical_partitions_like_sfdisk",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let disk = sandbox.path("mbr.img");
    mbr_disk(&disk);
    let ours = inspect(&disk);
    let theirs = sfdisk_json(&disk);
    assert_eq!(ours["table"], "mbr");
    assert_eq!(ours["disk_id"], theirs["id"]);
    let parts = ours["partitions"].as_array().unwrap();
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    for (p, e) in parts.iter().zip(theirs["partitions"].as_array().unwrap()) {
        assert_eq!(p["start"], e["start"], "{p}");
        assert_eq!(p["sectors"], e["size"], "{p}");
        assert_eq!(
            p["type_id"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x")
                .trim_start_matches('0'),
            e["type"].as_str().unwrap(),
            "{p}"
        );
        assert_eq!(
            p["bootable"],
            e.get("bootable").cloned().unwrap_or(Value::Bool(false))
        );
    }
    assert_eq!(parts[0]["content"]["fstype"], "ext4");
    assert_eq!(parts[1]["mbr_kind"], "extended");
    assert_eq!(parts[2]["mbr_kind"], "logical");
    let text = run(["inspect".as_ref(), disk.as_os_str()])
        .ok()
        .stdout
        .clone();
    assert!(
        text.contains("sectors 1..2047"),
        "the gap before partition 1 is listed:\n{text}"
    );
}

// Pins: a GPT whose primary header is damaged is read from the backup with a warning; a backup of it restores onto a larger file with a GPT that sgdisk -v finds clean.
#[test]
fn damaged_primary_gpt_is_read_from_the_backup_and_repaired_by_restore() {
    if !have(
        "damaged_primary_gpt_is_read_from_the_backup_and_repaired_by_restore",
        &["sgdisk", "mkfs.fat", "mkswap", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let good = inspect(&disk);
    // Flip a byte of the disk GUID in the primary header: its CRC fails.
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&disk)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 512 + 60).unwrap();
    f.write_all_at(&[b[0] ^ 0xFF], 512 + 60).unwrap();
    drop(f);
    let damaged = inspect(&disk);
    assert_eq!(damaged["gpt"]["primary_ok"], false);
    assert_eq!(damaged["gpt"]["backup_ok"], true);
    // The same partitions; their free space is not trusted now (a damaged
    // table means every byte is copied).
    assert_eq!(
        without_usage(&damaged["partitions"]),
        without_usage(&good["partitions"])
    );
    assert!(damaged["partitions"][2]["content"]["copied_whole"].is_string());
    let warnings = damaged["warnings"].to_string();
    assert!(
        warnings.contains("primary GPT is damaged (header CRC mismatch)"),
        "{warnings}"
    );

    let id = sandbox.snapshot_of(&disk, &[]);
    let target = sandbox.path("big.img");
    sandbox
        .restore(&id, &target, &["--size", "128M", "--verify"])
        .ok();
    sgdisk_clean(&target);
    let fixed = inspect(&target);
    assert_eq!(fixed["gpt"]["primary_ok"], true);
    assert_eq!(fixed["gpt"]["backup_lba"], 128 * 2048 - 1);
    assert_eq!(fixed["partitions"], good["partitions"]);
}

// Pins: a whole GPT disk restored onto a file twice as large keeps every partition byte for byte, sgdisk -v is clean, the old backup header is gone, and --grow-last-partition grows the last partition so that resize2fs (the printed next step) can fill it.
#[test]
fn gpt_disk_restores_onto_a_larger_file_and_grows_its_last_partition() {
    if !have(
        "gpt_disk_restores_onto_a_larger_file_and_grows_its_last_partition",
        &[
            "sgdisk",
            "mkfs.fat",
            "mkswap",
            "mkfs.ext4",
            "resize2fs",
            "e2fsck",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let source = fs::read(&disk).unwrap();
    let id = sandbox.snapshot_of(&disk, &[]);

    let plain = sandbox.path("plain.img");
    let report = sandbox
        .restore(&id, &plain, &["--size", "128M", "--verify"])
        .ok()
        .json();
    assert_eq!(fs::metadata(&plain).unwrap().len(), 128 * MIB);
    assert!(
        report["table_changes"][0]
            .as_str()
            .unwrap()
            .contains("moved the backup GPT"),
        "{report}"
    );
    sgdisk_clean(&plain);
    let restored = fs::read(&plain).unwrap();
    // Everything from the end of the primary table to the last partition's
    // end is the source's, byte for byte; so is the MBR's boot code area.
    let last_end = 25 * MIB + 14 * MIB;
    assert_bytes_equal(
        &restored[34 * 512..last_end as usize],
        &source[34 * 512..last_end as usize],
        "partitions",
    );
    assert_bytes_equal(&restored[..440], &source[..440], "boot code");
    // The source's backup header (its last sector) was stale: zeroed.
    assert!(
        restored[(64 * MIB - 512) as usize..(64 * MIB) as usize]
            .iter()
            .all(|&b| b == 0)
    );

    let grown = sandbox.path("grown.img");
    let report = sandbox
        .restore(&id, &grown, &["--size", "128M", "--grow-last-partition"])
        .ok()
        .json();
    sgdisk_clean(&grown);
    let after = inspect(&grown);
    let root = &after["partitions"][2];
    assert_eq!(
        root["start"].as_u64().unwrap() + root["sectors"].as_u64().unwrap() - 1,
        after["gpt"]["last_usable_lba"].as_u64().unwrap()
    );
    let step = report["next_step"].as_str().unwrap();
    assert!(step.contains("resize2fs /dev/loopXp3"), "{step}");
    // The step works: resize2fs fills the grown partition.
    let offset = root["start"].as_u64().unwrap() * 512;
    let len = root["sectors"].as_u64().unwrap() * 512;
    let part = sandbox.path("root.img");
    sh(&format!(
        "dd if={g} of={r} bs=1M iflag=skip_bytes,count_bytes skip={offset} count={len} status=none
         e2fsck -fy {r} >/dev/null 2>&1 || true
         resize2fs {r} >/dev/null 2>&1
         e2fsck -fn {r} >/dev/null",
        g = grown.display(),
        r = part.display()
    ));
    let fs_size = inspect(&part)["content"]["size"].as_u64().unwrap();
    assert!(
        fs_size + 1024 * 1024 > len && fs_size <= len,
        "filesystem {fs_size} in a {len}-byte partition"
    );
}

// Pins: a GPT disk restores onto a smaller file when every partition fits (sgdisk -v clean, partitions byte for byte), and is refused before writing, naming the partition and the shortfall, when one does not.
#[test]
fn gpt_disk_restores_onto_a_smaller_file_only_when_every_partition_fits() {
    if !have(
        "gpt_disk_restores_onto_a_smaller_file_only_when_every_partition_fits",
        &["sgdisk", "mkfs.fat", "mkswap", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let source = fs::read(&disk).unwrap();
    let id = sandbox.snapshot_of(&disk, &[]);

    let small = sandbox.path("small.img");
    let report = sandbox
        .restore(&id, &small, &["--size", "40M", "--verify"])
        .ok()
        .json();
    assert_eq!(fs::metadata(&small).unwrap().len(), 40 * MIB);
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("were not restored"),
        "{report}"
    );
    sgdisk_clean(&small);
    let restored = fs::read(&small).unwrap();
    let end = (39 * MIB) as usize;
    assert_bytes_equal(
        &restored[34 * 512..end],
        &source[34 * 512..end],
        "partitions",
    );
    assert_eq!(inspect(&small)["partitions"], inspect(&disk)["partitions"]);

    let tiny = sandbox.path("tiny.img");
    let run = sandbox.restore(&id, &tiny, &["--size", "39M"]);
    run.refused(2, "partition 3");
    assert!(
        run.stderr.contains("short by 16896 bytes (33 sectors)"),
        "{}",
        run.stderr
    );
    assert!(!tiny.exists());
    let left: Vec<_> = fs::read_dir(sandbox.path("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".platter-"))
        .collect();
    assert!(
        left.is_empty(),
        "temporary restore files were left: {left:?}"
    );
}

// Pins: backup --partition N stores only that partition (show says so), restores byte for byte, and restore --partition N of a whole-disk snapshot writes just that partition; a target too small for it and a partition that does not exist are refused.
#[test]
fn single_partitions_back_up_and_restore() {
    if !have(
        "single_partitions_back_up_and_restore",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("mbr.img");
    mbr_disk(&disk);
    let whole = sandbox.snapshot_of(&disk, &[]);
    let part5 = read_range(&disk, 24576 * 512, 8192 * 512);

    let only = sandbox.snapshot_of(&disk, &["--partition", "5"]);
    let shown = sandbox.run(["show", &only]).ok().stdout.clone();
    assert!(shown.contains(", partition 5"), "{shown}");
    sandbox.assert_restores(&only, &part5);
    sandbox
        .restore(&only, &sandbox.path("x.img"), &["--partition", "1"])
        .refused(2, "already of one partition");

    let out = sandbox.path("p5.img");
    let report = sandbox
        .restore(&whole, &out, &["--partition", "5", "--verify"])
        .ok()
        .json();
    assert_eq!(report["partition"], 5);
    assert_file_is(&out, &part5, "partition 5 of the whole-disk snapshot");
    let p1 = sandbox.path("p1.img");
    sandbox.restore(&whole, &p1, &["--partition", "1"]).ok();
    assert_eq!(blkid_type(&p1, 0), "ext4");
    system("e2fsck", &["-fn".as_ref(), p1.as_os_str()]);

    let small = sandbox.path("small.img");
    sandbox
        .restore(&whole, &small, &["--partition", "5", "--size", "1M"])
        .refused(2, "partition 5");
    assert!(!small.exists());
    sandbox
        .restore(&whole, &sandbox.path("p9.img"), &["--partition", "9"])
        .refused(3, "no partition 9 (it has 1, 2, 5, 6)");
    sandbox
        .restore(&whole, &sandbox.path("p2.img"), &["--partition", "2"])
        .refused(2, "extended partition");
    sandbox
        .run(["backup", disk.to_str().unwrap(), "--partition", "7"])
        .refused(3, "no partition 7");
}

// Pins: whole-disk restore onto a real block device (a partition-scanning loop device larger than the source): sgdisk -v is clean on the device, the kernel was asked to re-read the table (and, where the kernel parses GPT, the partitions appear); on a loop device that cannot scan partitions the failed re-read is a named warning, not an error.
#[test]
fn whole_disk_restore_onto_a_loop_device_rereads_its_partitions() {
    if !have(
        "whole_disk_restore_onto_a_loop_device_rereads_its_partitions",
        &[
            "root",
            "loop devices",
            "losetup",
            "sgdisk",
            "mkfs.fat",
            "mkswap",
            "mkfs.ext4",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let source = fs::read(&disk).unwrap();
    let id = sandbox.snapshot_of(&disk, &[]);
    let backing = sandbox.path("device.img");
    Image::sparse(backing.clone(), 96 * MIB);
    let dev = system(
        "losetup",
        &[
            "-f".as_ref(),
            "--show".as_ref(),
            "-P".as_ref(),
            backing.as_os_str(),
        ],
    );
    let device = LoopDevice {
        path: dev.clone().into(),
    };
    let report = sandbox
        .restore(&id, &device.path, &["--verify"])
        .ok()
        .json();
    assert_eq!(report["warnings"], Value::Array(vec![]), "{report}");
    assert_eq!(report["partitions_reread"], true, "{report}");
    sgdisk_clean(&device.path);
    let on_device = device.contents();
    let end = (39 * MIB) as usize;
    assert_bytes_equal(
        &on_device[34 * 512..end],
        &source[34 * 512..end],
        "partitions on the device",
    );
    let name = dev.trim_start_matches("/dev/");
    let config = system(
        "sh",
        &[
            "-c".as_ref(),
            "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null || true"
                .as_ref(),
        ],
    );
    if config.contains("CONFIG_EFI_PARTITION=y") {
        let part = format!("/sys/block/{name}/{name}p3");
        assert!(
            wait_until(std::time::Duration::from_secs(5), || Path::new(&part)
                .exists()),
            "{part} did not appear"
        );
    } else {
        eprintln!(
            "NOTE: this kernel does not parse GPT (CONFIG_EFI_PARTITION unset): not checking that {name}p3 appears"
        );
    }
    drop(device);

    let plain = system(
        "losetup",
        &["-f".as_ref(), "--show".as_ref(), backing.as_os_str()],
    );
    let device = LoopDevice { path: plain.into() };
    let report = sandbox.restore(&id, &device.path, &[]).ok().json();
    assert_eq!(report["partitions_reread"], false, "{report}");
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("did not re-read the partition table"),
        "{report}"
    );
}

// Pins: a snapshot of a disk with 512-byte sectors is refused (exit 7, nothing written) on a device with 4096-byte logical sectors, with the reason.
#[test]
fn restore_onto_a_device_with_another_sector_size_is_refused() {
    if !have(
        "restore_onto_a_device_with_another_sector_size_is_refused",
        &["root", "loop devices", "losetup", "sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("mbr.img");
    mbr_disk(&disk);
    let id = sandbox.snapshot_of(&disk, &[]);
    let backing = sandbox.path("4k.img");
    fs::write(&backing, vec![0x5Au8; (64 * MIB) as usize]).unwrap();
    let dev = system(
        "losetup",
        &[
            "-f".as_ref(),
            "--show".as_ref(),
            "-b".as_ref(),
            "4096".as_ref(),
            backing.as_os_str(),
        ],
    );
    let device = LoopDevice { path: dev.into() };
    sandbox
        .restore(&id, &device.path, &[])
        .refused(7, "4096-byte sectors");
    assert!(
        device.contents().iter().all(|&b| b == 0x5A),
        "the device was written"
    );
}

// Pins: damaged tables never crash inspect or backup: a truncated GPT image, overlapping MBR partitions and a partition past the end each give a named warning and exit 0.
#[test]
fn damaged_tables_give_warnings_not_crashes() {
    if !have(
        "damaged_tables_give_warnings_not_crashes",
        &["sgdisk", "sfdisk", "mkfs.fat", "mkswap", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let cut = sandbox.path("cut.img");
    gpt_disk(&cut);
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(30 * MIB)
        .unwrap();
    let l = inspect(&cut);
    let w = l["warnings"].to_string();
    assert!(
        w.contains("backup GPT") && w.contains("partition 3 ends at sector"),
        "{w}"
    );
    assert_eq!(l["partitions"].as_array().unwrap().len(), 3);
    sandbox.snapshot_of(&cut, &[]);

    let overlap = sandbox.path("overlap.img");
    let p = overlap.display();
    sh(&format!(
        "truncate -s 8M {p}
         printf 'label: dos\\nstart=2048, size=8192, type=83\\n' | sfdisk -q {p}"
    ));
    // sfdisk refuses overlapping entries: write the second one by hand.
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&overlap)
        .unwrap();
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&4096u32.to_le_bytes());
    entry[12..16].copy_from_slice(&100_000u32.to_le_bytes());
    f.write_all_at(&entry, 446 + 16).unwrap();
    f.write_all_at(&[0x55, 0xAA], 510).unwrap();
    drop(f);
    let l = inspect(&overlap);
    let w = l["warnings"].to_string();
    assert!(w.contains("partitions 1 and 2 overlap"), "{w}");
    assert!(
        w.contains("partition 2 ends at sector 104096, past the end of the disk"),
        "{w}"
    );
    sandbox.snapshot_of(&overlap, &[]);
    sandbox
        .run(["backup", overlap.to_str().unwrap(), "--partition", "2"])
        .refused(2, "past the end");
}

// Pins: a whole MBR disk restores byte for byte (boot code and the data in the gap before partition 1 included); --grow-last-partition extends its last primary partition to the end of a larger target (sfdisk agrees), and is refused (exit 7, nothing written) when the last partition is a logical one.
#[test]
fn mbr_disk_restores_byte_for_byte_and_grows_its_last_primary_partition() {
    if !have(
        "mbr_disk_restores_byte_for_byte_and_grows_its_last_primary_partition",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("mbr.img");
    let p = disk.display();
    sh(&format!(
        "truncate -s 64M {p}
         printf 'label: dos\\nstart=2048, size=20480, type=c, bootable\\nstart=22528, size=40960, type=83\\n' | sfdisk -q {p}
         mkfs.ext4 -q -F -L data -E offset=$((22528*512)) {p} 20M
         head -c 440 /dev/urandom | dd of={p} conv=notrunc status=none
         head -c 300000 /dev/urandom | dd of={p} bs=512 seek=1 conv=notrunc status=none"
    ));
    let source = fs::read(&disk).unwrap();
    let id = sandbox.snapshot_of(&disk, &[]);
    sandbox.assert_restores(&id, &source);

    let grown = sandbox.path("grown.img");
    let report = sandbox
        .restore(
            &id,
            &grown,
            &["--size", "100M", "--grow-last-partition", "--verify"],
        )
        .ok()
        .json();
    let after = sfdisk_json(&grown);
    assert_eq!(after["partitions"][1]["start"], 22528);
    assert_eq!(after["partitions"][1]["size"], 100 * 2048 - 22528);
    assert_eq!(after["partitions"][0]["size"], 20480);
    let restored = fs::read(&grown).unwrap();
    assert_bytes_equal(
        &restored[512..source.len()],
        &source[512..],
        "everything after the MBR",
    );
    assert!(
        restored[source.len()..].iter().all(|&b| b == 0),
        "the new space reads as zeros"
    );
    assert_bytes_equal(&restored[..446], &source[..446], "boot code");
    assert!(
        report["next_step"]
            .as_str()
            .unwrap()
            .contains("resize2fs /dev/loopXp2"),
        "{report}"
    );

    let logical = sandbox.path("logical.img");
    mbr_disk(&logical);
    let id = sandbox.snapshot_of(&logical, &[]);
    let target = sandbox.path("never.img");
    sandbox
        .restore(&id, &target, &["--size", "100M", "--grow-last-partition"])
        .refused(7, "logical partition");
    assert!(!target.exists());
}

// Pins: a GPT written for 4096-byte sectors (by sgdisk on a 4Kn loop device) is recognised in an image file, and its restore onto a larger file puts the backup at the new last 4096-byte sector with a table sgdisk -v (on a 4Kn loop device) finds clean.
#[test]
fn gpt_with_4096_byte_sectors_is_read_and_fitted() {
    if !have(
        "gpt_with_4096_byte_sectors_is_read_and_fitted",
        &["root", "loop devices", "losetup", "sgdisk"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("4k.img");
    Image::sparse(disk.clone(), 64 * MIB);
    {
        let dev = system(
            "losetup",
            &[
                "-f".as_ref(),
                "--show".as_ref(),
                "-b".as_ref(),
                "4096".as_ref(),
                disk.as_os_str(),
            ],
        );
        let device = LoopDevice { path: dev.into() };
        sh(&format!(
            "sgdisk -o -n 1:256:+20M -t 1:EF00 -n 2:0:+30M -t 2:8300 {} >/dev/null",
            device.path.display()
        ));
    }
    let layout = inspect(&disk);
    assert_eq!(layout["table"], "gpt");
    assert_eq!(layout["sector_size"], 4096);
    assert_eq!(layout["partitions"][0]["start"], 256);
    assert_eq!(layout["gpt"]["backup_lba"], 64 * 256 - 1);
    let id = sandbox.snapshot_of(&disk, &[]);
    let big = sandbox.path("big.img");
    sandbox
        .restore(&id, &big, &["--size", "96M", "--verify"])
        .ok();
    let fitted = inspect(&big);
    assert_eq!(fitted["gpt"]["backup_lba"], 96 * 256 - 1);
    assert_eq!(fitted["partitions"], layout["partitions"]);
    let dev = system(
        "losetup",
        &[
            "-f".as_ref(),
            "--show".as_ref(),
            "-b".as_ref(),
            "4096".as_ref(),
            big.as_os_str(),
        ],
    );
    let device = LoopDevice { path: dev.into() };
    sgdisk_clean(&device.path);
}

// Pins: a refused restore leaves an existing file (given with --force) exactly as it was, size included; --size on a block device is refused before writing.
#[test]
fn refused_restores_leave_existing_targets_untouched() {
    if !have(
        "refused_restores_leave_existing_targets_untouched",
        &["sgdisk", "mkfs.fat", "mkswap", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    gpt_disk(&disk);
    let id = sandbox.snapshot_of(&disk, &[]);
    let existing = sandbox.path("existing.img");
    let before = vec![0xC3u8; (16 * MIB) as usize];
    fs::write(&existing, &before).unwrap();
    sandbox
        .restore(&id, &existing, &["--force", "--size", "10K"])
        .refused(2, "too small for the snapshot's GPT");
    assert_file_is(&existing, &before, "existing file after a refused restore");
    sandbox
        .restore(
            &id,
            &existing,
            &["--force", "--partition", "1", "--grow-last-partition"],
        )
        .refused(2, "--grow-last-partition is for whole-disk restores");
    assert_file_is(&existing, &before, "existing file after a refused restore");
    sandbox
        .restore(&id, &existing, &["--force", "--size", "30M"])
        .refused(2, "partition 3");
    assert_file_is(&existing, &before, "existing file after a refused restore");

    if have(
        "refused_restores_leave_existing_targets_untouched",
        &["root", "loop devices", "losetup"],
    ) {
        let device = LoopDevice::attach(&existing);
        sandbox
            .restore(&id, &device.path, &["--size", "128M"])
            .refused(2, "--size is for image files");
        drop(device);
        assert_file_is(&existing, &before, "device after a refused restore");
    }
}

// Pins: a whole-disk filesystem behind a boot sector with an empty partition table (GRUB on ext4) is shown as that filesystem, not as an empty MBR, and cannot be restored onto a smaller target.
#[test]
fn a_filesystem_behind_an_empty_mbr_is_not_cut_short() {
    if !have(
        "a_filesystem_behind_an_empty_mbr_is_not_cut_short",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("vbr.img");
    let p = disk.display();
    sh(&format!(
        "truncate -s 16M {p}
         mkfs.ext4 -q -F -L whole {p}
         printf '\\xeb\\x63\\x90' | dd of={p} conv=notrunc status=none
         printf '\\x55\\xaa' | dd of={p} bs=1 seek=510 conv=notrunc status=none"
    ));
    let l = inspect(&disk);
    assert_eq!(l["table"], "none");
    assert_eq!(l["content"]["fstype"], "ext4");
    let id = sandbox.snapshot_of(&disk, &[]);
    let small = sandbox.path("small.img");
    sandbox
        .restore(&id, &small, &["--size", "4M"])
        .refused(2, "smaller than the snapshot");
    assert!(!small.exists());
}
