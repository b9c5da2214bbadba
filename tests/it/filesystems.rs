//! Free space: real ext4 (several feature sets), FAT12/16/32 and swap
//! filesystems, filled and partly emptied, then checked three ways: the
//! free ranges platter finds equal the filesystem tools' own (dumpe2fs,
//! fsck.fat), a backup reads and stores about the used bytes only, and
//! the restored filesystem checks clean with every file identical. Damaged
//! allocation structures make platter copy the filesystem whole.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::*;

const MIB: u64 = 1 << 20;

fn inspect(path: &Path) -> Value {
    run([
        OsStr::new("--json"),
        "inspect".as_ref(),
        "--free-ranges".as_ref(),
        path.as_os_str(),
    ])
    .ok()
    .json()
}

fn free_ranges(report: &Value) -> Vec<(u64, u64)> {
    report["free_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect()
}

/// dumpe2fs's free block ranges of the ext filesystem at `offset` of
/// `image`, as byte ranges of the image.
fn dumpe2fs_free(image: &Path, offset: u64) -> Vec<(u64, u64)> {
    let out = sh(&format!(
        "dumpe2fs -o superblock=0 -o blocksize=0 {} 2>/dev/null || dumpe2fs {} 2>/dev/null",
        image.display(),
        image.display()
    ));
    let block: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .expect("block size")
        .trim()
        .parse()
        .unwrap();
    // With bigalloc, a range `a-b` names the first block of its last
    // cluster as `b`.
    let per_cluster = out
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .map_or(1, |c| c.trim().parse::<u64>().unwrap() / block);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for line in out
        .lines()
        // The per-group lines are indented; the header's total is not.
        .filter_map(|l| l.strip_prefix("  Free blocks: "))
    {
        for part in line.split(", ").filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            let (start, end) = (offset + a * block, offset + (b + per_cluster) * block);
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
    }
    ranges
}

/// Every regular file under `dir` with its BLAKE3, sorted by path.
fn file_hashes(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = files_under(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            (
                rel,
                blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Mounts `image` read-only through a loop device and hashes its files.
fn hashes_of_image(image: &Path, scratch: &Path) -> Vec<(String, String)> {
    let device = LoopDevice::attach(image);
    let point = scratch.join(format!("mnt-{}", random_name()));
    let mounted = Mounted::mount_ro(&device.path, &point);
    let hashes = file_hashes(&mounted.point);
    drop(mounted);
    hashes
}

/// A 96 MiB ext4 image made with `mkfs_options`, filled with files of
/// random bytes, some deleted again.
fn ext4_image(sandbox: &Sandbox, name: &str, mkfs_options: &str) -> PathBuf {
    let image = sandbox.path(name);
    let mnt = sandbox.path(&format!("{name}.mnt"));
    sh(&format!(
        "truncate -s 96M {i}
         mkfs.ext4 -q -F {mkfs_options} {i}
         mkdir -p {m}
         mount -o loop {i} {m}
         for n in 1 2 3 4 5 6; do head -c $((n * 3))M /dev/urandom > {m}/file$n; done
         mkdir {m}/dir; for n in $(seq 1 40); do head -c $((n * 1000)) /dev/urandom > {m}/dir/small$n; done
         rm {m}/file2 {m}/file5 {m}/dir/small1*
         umount {m}",
        i = image.display(),
        m = mnt.display()
    ));
    image
}

// Pins: for ext4 made with default, 1 KiB-block non-flex_bg 32-bit, meta_bg, sparse_super2 and bigalloc feature sets, the free ranges equal dumpe2fs's byte for byte; the backup reads and stores about the used bytes; the restore passes e2fsck -fn and every file is identical.
#[test]
fn ext4_free_space_matches_dumpe2fs_and_restores_identical_files() {
    if !have(
        "ext4_free_space_matches_dumpe2fs_and_restores_identical_files",
        &[
            "root",
            "loop devices",
            "mkfs.ext4",
            "dumpe2fs",
            "e2fsck",
            "mount",
        ],
    ) {
        return;
    }
    let variants = [
        ("default", ""),
        ("small-blocks", "-b 1024 -O ^flex_bg,^64bit"),
        ("meta-bg", "-O meta_bg,^resize_inode"),
        ("sparse-super2", "-O sparse_super2"),
        ("bigalloc", "-O bigalloc -C 65536"),
        ("gdt-csum", "-O ^metadata_csum,uninit_bg"),
    ];
    for (name, options) in variants {
        let sandbox = Sandbox::new();
        let image = ext4_image(&sandbox, &format!("{name}.img"), options);
        let report = inspect(&image);
        assert_eq!(report["content"]["fstype"], "ext4", "{name}");
        assert_eq!(
            free_ranges(&report),
            dumpe2fs_free(&image, 0),
            "{name}: free ranges"
        );
        let used = report["content"]["used"].as_u64().unwrap();

        let backup = sandbox.backup_with(&image, &[]);
        let read = backup["bytes_read"].as_u64().unwrap();
        let stored = backup["bytes_new"].as_u64().unwrap();
        // Chunks are 64 KiB: a chunk with one used block is read whole.
        assert!(
            read >= used.min(96 * MIB) / 2 && read <= used + 24 * MIB,
            "{name}: read {read}, used {used}"
        );
        assert!(stored <= read, "{name}: stored {stored}");
        assert!(read < 80 * MIB, "{name}: read {read} of 96 MiB");

        let restored = sandbox.path("restored.img");
        sandbox
            .restore(backup["snapshot"].as_str().unwrap(), &restored, &[])
            .ok();
        system("e2fsck", &["-fn".as_ref(), restored.as_os_str()]);
        assert_eq!(
            hashes_of_image(&restored, &sandbox.path(".")),
            hashes_of_image(&image, &sandbox.path(".")),
            "{name}: files differ after restore"
        );
    }
}

// Pins: for FAT12, FAT16 and FAT32 filled with mtools and partly emptied, the free bytes equal fsck.fat's free clusters; the backup reads about the used bytes; the restore passes fsck.fat -n and every file reads back identical.
#[test]
fn fat_free_space_matches_fsck_fat_and_restores_identical_files() {
    if !have(
        "fat_free_space_matches_fsck_fat_and_restores_identical_files",
        &["mkfs.fat", "fsck.fat", "mcopy", "mdel"],
    ) {
        return;
    }
    for (bits, size_mib) in [(12, 8), (16, 64), (32, 96)] {
        let sandbox = Sandbox::new();
        let image = sandbox.path(&format!("fat{bits}.img"));
        let files = sandbox.path("files");
        fs::create_dir_all(&files).unwrap();
        let mut rng = Rng::new(bits);
        for n in 1..=6u64 {
            fs::write(
                files.join(format!("f{n}.bin")),
                rng.bytes((n * size_mib * 1024 * 12) as usize),
            )
            .unwrap();
        }
        sh(&format!(
            "truncate -s {size_mib}M {i}
             mkfs.fat -F {bits} {i} >/dev/null
             export MTOOLS_SKIP_CHECK=1
             mcopy -i {i} {f}/* ::/
             mdel -i {i} ::/f2.bin ::/f4.bin",
            i = image.display(),
            f = files.display()
        ));
        let report = inspect(&image);
        assert_eq!(report["content"]["version"], format!("FAT{bits}"));
        let fsck = system(
            "fsck.fat",
            &["-n".as_ref(), "-v".as_ref(), image.as_os_str()],
        );
        let cluster: u64 = fsck
            .lines()
            .find_map(|l| l.trim().strip_suffix(" bytes per cluster"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (used, total) = fsck
            .lines()
            .last()
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|c| c.trim_end_matches(" clusters").split_once('/'))
            .map(|(u, t)| (u.parse::<u64>().unwrap(), t.parse::<u64>().unwrap()))
            .unwrap();
        let free: u64 = free_ranges(&report).iter().map(|(a, b)| b - a).sum();
        assert_eq!(
            free,
            (total - used) * cluster,
            "FAT{bits}: free bytes vs fsck.fat"
        );

        let backup = sandbox.backup_with(&image, &[]);
        let read = backup["bytes_read"].as_u64().unwrap();
        let used_bytes = report["content"]["used"].as_u64().unwrap();
        assert!(
            read <= used_bytes + used_bytes / 2 + 2 * MIB,
            "FAT{bits}: read {read}, used {used_bytes}"
        );

        let restored = sandbox.path("restored.img");
        sandbox
            .restore(backup["snapshot"].as_str().unwrap(), &restored, &[])
            .ok();
        system("fsck.fat", &["-n".as_ref(), restored.as_os_str()]);
        for n in [1, 3, 5, 6] {
            let out = sandbox.path(&format!("out{n}"));
            sh(&format!(
                "MTOOLS_SKIP_CHECK=1 mcopy -n -i {} ::/f{n}.bin {}",
                restored.display(),
                out.display()
            ));
            assert!(
                fs::read(&out).unwrap() == fs::read(files.join(format!("f{n}.bin"))).unwrap(),
                "FAT{bits}: f{n}.bin differs"
            );
        }
    }
}

// Pins: of a swap area only the header page is read; the restore is a swap area with the same UUID and label.
#[test]
fn swap_keeps_only_its_header() {
    if !have("swap_keeps_only_its_header", &["mkswap", "blkid"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = sandbox.path("swap.img");
    sh(&format!(
        "head -c 32M /dev/urandom > {i}; mkswap -q -L swappy {i}",
        i = image.display()
    ));
    let backup = sandbox.backup_with(&image, &[]);
    assert_eq!(backup["bytes_read"], CHUNK, "{backup}");
    let restored = sandbox.path("restored.img");
    sandbox
        .restore(backup["snapshot"].as_str().unwrap(), &restored, &[])
        .ok();
    let info = |p: &PathBuf| {
        system(
            "blkid",
            &[
                "-p".as_ref(),
                "-o".as_ref(),
                "export".as_ref(),
                p.as_os_str(),
            ],
        )
    };
    assert_eq!(
        info(&restored).replace("restored.img", "swap.img"),
        info(&image)
    );
}

// Pins: a whole GPT disk with a 64 MiB ESP (FAT32), an ext4 root and swap reads and stores about its used bytes, and restores with both filesystems clean and identical; --raw reads every byte.
#[test]
fn a_whole_disk_backup_reads_about_the_used_bytes() {
    if !have(
        "a_whole_disk_backup_reads_about_the_used_bytes",
        &[
            "root",
            "loop devices",
            "sgdisk",
            "mkfs.ext4",
            "mkfs.fat",
            "mkswap",
            "e2fsck",
            "fsck.fat",
            "mount",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("disk.img");
    let root = ext4_image(&sandbox, "root.img", "");
    sh(&format!(
        "truncate -s 256M {d}
         sgdisk -o -n 1:2048:+64M -t 1:EF00 -n 2:0:+16M -t 2:8200 -n 3:0:+96M -t 3:8300 {d} >/dev/null
         mkfs.fat -F 32 --offset=2048 {d} $((64*1024)) >/dev/null 2>&1
         head -c 3M /dev/urandom > {s}/boot.bin
         MTOOLS_SKIP_CHECK=1 mcopy -i {d}@@$((2048*512)) {s}/boot.bin ::/
         s2=$(mktemp); truncate -s 16M $s2; mkswap -q $s2; dd if=$s2 of={d} bs=1M seek=65 conv=notrunc status=none; rm $s2
         dd if={r} of={d} bs=1M seek=81 conv=notrunc status=none",
        d = disk.display(),
        s = sandbox.path(".").display(),
        r = root.display()
    ));
    let report = inspect(&disk);
    let used: u64 = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content"]["used"].as_u64().unwrap())
        .sum();
    let backup = sandbox.backup_with(&disk, &[]);
    let read = backup["bytes_read"].as_u64().unwrap();
    assert!(
        read < used + 16 * MIB && read < 256 * MIB / 2,
        "read {read}, used {used}: {backup:#}"
    );
    assert!(
        backup["bytes_free"].as_u64().unwrap() > 100 * MIB,
        "{backup:#}"
    );

    let restored = sandbox.path("restored.img");
    sandbox
        .restore(
            backup["snapshot"].as_str().unwrap(),
            &restored,
            &["--verify"],
        )
        .ok();
    let part = |image: &Path, start_mib: u64, mib: u64, name: &str| {
        let out = sandbox.path(name);
        sh(&format!(
            "dd if={} of={} bs=1M skip={start_mib} count={mib} status=none",
            image.display(),
            out.display()
        ));
        out
    };
    let root_restored = part(&restored, 81, 96, "root-restored.img");
    system("e2fsck", &["-fn".as_ref(), root_restored.as_os_str()]);
    assert_eq!(
        hashes_of_image(&root_restored, &sandbox.path(".")),
        hashes_of_image(&root, &sandbox.path("."))
    );
    let esp = part(&restored, 1, 64, "esp-restored.img");
    system("fsck.fat", &["-n".as_ref(), esp.as_os_str()]);
    let out = sandbox.path("boot.out");
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i {} ::/boot.bin {}",
        esp.display(),
        out.display()
    ));
    assert!(fs::read(&out).unwrap() == fs::read(sandbox.path("boot.bin")).unwrap());

    // --raw reads every byte that is not a hole of the sparse image.
    let raw = sandbox.backup_with(&disk, &["--raw", "--full"]);
    assert!(
        raw["bytes_read"].as_u64().unwrap() > read + 32 * MIB,
        "{raw:#}"
    );
    assert_eq!(raw["bytes_free"], 0);
}

// Pins: an ext4 whose bitmap disagrees with its descriptor, one claiming more blocks than its partition, and a FAT whose table lost its media byte are each copied whole with the reason named, and restore byte for byte.
#[test]
fn damaged_allocation_structures_mean_a_whole_copy() {
    if !have(
        "damaged_allocation_structures_mean_a_whole_copy",
        &["mkfs.ext4", "mkfs.fat", "debugfs"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();

    let bitmap = sandbox.path("bitmap.img");
    sh(&format!(
        "truncate -s 32M {i}; mkfs.ext4 -q -F {i}",
        i = bitmap.display()
    ));
    // Set bits in group 0's bitmap without telling the descriptor.
    let bb: u64 = sh(&format!(
        "dumpe2fs {} 2>/dev/null | awk '/Block bitmap at/ {{print $4; exit}}'",
        bitmap.display()
    ))
    .trim_end_matches(',')
    .parse()
    .unwrap();
    let block: u64 = sh(&format!(
        "dumpe2fs -h {} 2>/dev/null | awk '/^Block size/ {{print $3}}'",
        bitmap.display()
    ))
    .parse()
    .unwrap();
    let f = fs::OpenOptions::new().write(true).open(&bitmap).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xFF; 64], bb * block + block - 256).unwrap();
    drop(f);
    cases.push((bitmap, "bitmap"));

    let big = sandbox.path("big.img");
    sh(&format!(
        "truncate -s 32M {i}; mkfs.ext4 -q -F {i}; truncate -s 24M {i}",
        i = big.display()
    ));
    cases.push((big, "more than its"));

    let fat = sandbox.path("fat.img");
    sh(&format!(
        "truncate -s 16M {i}; mkfs.fat -F 16 {i} >/dev/null",
        i = fat.display()
    ));
    flip_byte(&fat, 512 * u64::from(fs::read(&fat).unwrap()[0x0E]));
    cases.push((fat, "media byte"));

    // A group forged to claim it has no bitmap: its checksum no longer holds.
    let forged = sandbox.path("forged.img");
    sh(&format!(
        "truncate -s 32M {i}; mkfs.ext4 -q -F -b 1024 -O ^flex_bg {i}
         debugfs -w -R 'set_bg 1 flags 2' {i} 2>/dev/null",
        i = forged.display()
    ));
    cases.push((forged, "checksum"));

    let dirty = sandbox.path("dirty.img");
    sh(&format!(
        "truncate -s 16M {i}; mkfs.fat -F 16 {i} >/dev/null
         printf '\\x01' | dd of={i} bs=1 seek=$((0x25)) conv=notrunc status=none",
        i = dirty.display()
    ));
    cases.push((dirty, "dirty"));

    for (image, reason) in cases {
        let report = inspect(&image);
        let why = report["content"]["copied_whole"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(why.contains(reason), "{}: {report:#}", image.display());
        let backup = sandbox.backup_with(&image, &[]);
        assert_eq!(backup["bytes_free"], 0, "{backup:#}");
        sandbox.assert_restores(
            backup["snapshot"].as_str().unwrap(),
            &fs::read(&image).unwrap(),
        );
    }
}

// Pins: a source mounted read-write is refused (exit 5) naming the mount point; --allow-mounted backs it up whole; mounted read-only it is backed up normally.
#[test]
fn a_filesystem_mounted_read_write_is_refused() {
    if !have(
        "a_filesystem_mounted_read_write_is_refused",
        &["root", "loop devices", "mkfs.ext4", "mount"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = sandbox.path("fs.img");
    sh(&format!(
        "truncate -s 32M {i}; mkfs.ext4 -q -F {i}",
        i = image.display()
    ));
    let device = LoopDevice::attach(&image);
    let point = sandbox.path("mnt");
    {
        let _mounted = Mounted::mount(&device.path, &point);
        let run = sandbox.run([OsStr::new("backup"), device.path.as_os_str()]);
        run.refused(5, "mounted read-write");
        assert!(
            run.stderr.contains(&point.display().to_string()),
            "{}",
            run.stderr
        );
        sandbox
            .run([OsStr::new("backup"), image.as_os_str()])
            .refused(5, "mounted read-write");
        let forced = sandbox.backup_with(&device.path, &["--allow-mounted"]);
        assert_eq!(forced["bytes_free"], 0);
    }
    let _ro = Mounted::mount_ro(&device.path, &point);
    let ro = sandbox.backup_with(&device.path, &[]);
    assert!(ro["bytes_free"].as_u64().unwrap() > 0, "{ro:#}");
}

// Pins: an incremental backup of an ext4 filesystem reads only its used chunks and stores only what changed (a new file), and restores to identical files.
#[test]
fn incremental_backups_read_used_chunks_and_store_changes() {
    if !have(
        "incremental_backups_read_used_chunks_and_store_changes",
        &["root", "loop devices", "mkfs.ext4", "e2fsck", "mount"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = ext4_image(&sandbox, "fs.img", "");
    // A device, not a sparse file: free space cannot hide in holes.
    let device = LoopDevice::attach(&image);
    let first = sandbox.backup_with(&device.path, &[]);
    let used = inspect(&device.path)["content"]["used"].as_u64().unwrap();
    let point = sandbox.path("mnt");
    {
        let mounted = Mounted::mount(&device.path, &point);
        fs::write(mounted.point.join("new.bin"), Rng::new(7).bytes(5 << 20)).unwrap();
    }
    let second = sandbox.backup_with(&device.path, &[]);
    assert_eq!(second["parent"], first["snapshot"]);
    let read = second["bytes_read"].as_u64().unwrap();
    assert!(
        read <= used + 5 * MIB + 24 * MIB && read < 96 * MIB * 3 / 4,
        "read {read}, used {used}"
    );
    let new = second["bytes_new_plain"].as_u64().unwrap();
    assert!(
        (5 * MIB..5 * MIB + 4 * MIB).contains(&new),
        "stored {new} new plain bytes for a 5 MiB file"
    );
    drop(device);
    let restored = sandbox.path("restored.img");
    sandbox
        .restore(second["snapshot"].as_str().unwrap(), &restored, &[])
        .ok();
    system("e2fsck", &["-fn".as_ref(), restored.as_os_str()]);
    assert_eq!(
        hashes_of_image(&restored, &sandbox.path(".")),
        hashes_of_image(&image, &sandbox.path("."))
    );
}

// Pins: file data that looks like a swap signature does not make a FAT filesystem "swap"; a swap area keeps whatever follows its own size; a FAT boot sector in front of a real partition table makes every byte copied, not the disk a "FAT filesystem".
#[test]
fn look_alike_signatures_never_hide_data() {
    if !have(
        "look_alike_signatures_never_hide_data",
        &["mkfs.fat", "mcopy", "mkswap", "sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    // A file of 512-byte records each ending in SWAPSPACE2, on FAT12.
    let fat = sandbox.path("fat.img");
    let record: Vec<u8> = [vec![0x5Au8; 502], b"SWAPSPACE2".to_vec()].concat();
    fs::write(sandbox.path("sig.bin"), record.repeat(400)).unwrap();
    fs::write(sandbox.path("r1.bin"), Rng::new(3).bytes(300_000)).unwrap();
    sh(&format!(
        "truncate -s 8M {i}; mkfs.fat -F 12 {i} >/dev/null
         export MTOOLS_SKIP_CHECK=1; mcopy -i {i} {s}/sig.bin ::/doc.bin; mcopy -i {i} {s}/r1.bin ::/",
        i = fat.display(),
        s = sandbox.path(".").display()
    ));
    assert_eq!(inspect(&fat)["content"]["fstype"], "vfat");
    let id = sandbox.backup_with(&fat, &[])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = sandbox.path("fat-restored.img");
    sandbox.restore(&id, &restored, &[]).ok();
    let out = sandbox.path("r1.out");
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i {} ::/r1.bin {}",
        restored.display(),
        out.display()
    ));
    assert!(fs::read(&out).unwrap() == fs::read(sandbox.path("r1.bin")).unwrap());

    // A swap area of 4 MiB in a 16 MiB file, data after it.
    let swap = sandbox.path("swap.img");
    sh(&format!(
        "truncate -s 16M {i}; mkswap -q {i} 4096
         head -c 4M /dev/urandom | dd of={i} bs=1M seek=10 conv=notrunc status=none",
        i = swap.display()
    ));
    let id = sandbox.backup_with(&swap, &[])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = fs::read(&swap).unwrap();
    let restored = sandbox.path("swap-restored.img");
    sandbox.restore(&id, &restored, &[]).ok();
    let got = fs::read(&restored).unwrap();
    assert!(
        got[4 << 20..] == bytes[4 << 20..],
        "what follows the swap area was lost"
    );

    // A FAT boot sector left in front of an MBR with a partition.
    let disk = sandbox.path("disk.img");
    sh(&format!(
        "truncate -s 64M {i}; mkfs.fat -F 32 -s 8 {i} >/dev/null
         echo 'start=2048,type=83' | sfdisk -q --wipe never {i} 2>/dev/null
         mkfs.ext4 -q -F -E offset=$((2048*512)) {i} 32M",
        i = disk.display()
    ));
    let layout = inspect(&disk);
    assert_eq!(layout["table"], "mbr", "{layout:#}");
    assert!(
        layout["warnings"]
            .to_string()
            .contains("both a filesystem's boot sector"),
        "{layout:#}"
    );
    let backup = sandbox.backup_with(&disk, &[]);
    assert_eq!(backup["bytes_free"], 0, "{backup:#}");
    sandbox.assert_restores(
        backup["snapshot"].as_str().unwrap(),
        &fs::read(&disk).unwrap(),
    );
}
