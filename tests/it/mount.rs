//! `platter mount`: snapshots as read-only files over FUSE, and with
//! `--files` the filesystems inside them. Every test reads through the
//! kernel (the mount is real) and compares with the source's bytes.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use super::common::{
    CHUNK, Image, Rng, Sandbox, assert_bytes_equal, assert_file_is, flip_byte, have, map_ids,
    pack_table, platter, sh, wait_until,
};

/// Whether FUSE mounts can be tested here (root and /dev/fuse; the fuse3
/// package for unprivileged users). Fails under CI, skips otherwise.
fn have_fuse(test: &str, more: &[&str]) -> bool {
    let mut needs = vec!["root", "fusermount3"];
    needs.extend_from_slice(more);
    if !have(test, &needs) {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(std::env::var_os("CI").is_none(), "{test} needs /dev/fuse");
        eprintln!("SKIPPED: {test} needs /dev/fuse");
        return false;
    }
    true
}

/// A running `platter mount`; stopped (SIGTERM) and cleaned up on drop.
struct Mount {
    child: Option<Child>,
    point: PathBuf,
    stderr: PathBuf,
    /// What it printed on stdout up to its "mounted" line.
    said: String,
}

impl Mount {
    /// Starts `platter -r REPO mount ARGS` and waits until it says it is
    /// mounted.
    fn start(sandbox: &Sandbox, point: &Path, args: &[OsString]) -> Mount {
        fs::create_dir_all(point).expect("cannot create mount point");
        let stderr = sandbox.path(&format!("mount-{}.log", super::common::random_name()));
        let mut cmd = platter();
        cmd.arg("-r").arg(&sandbox.repo);
        if let Some(password) = &sandbox.password {
            cmd.arg("--password-file").arg(password);
        }
        let mut child = cmd
            .arg("mount")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("cannot create log"))
            .spawn()
            .expect("cannot start platter mount");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let mut said = String::new();
        loop {
            let mut line = String::new();
            let n = lines.read_line(&mut line).expect("cannot read stdout");
            said.push_str(&line);
            if line.starts_with("mounted ") {
                break;
            }
            if n == 0 {
                let status = child.wait().expect("wait");
                panic!(
                    "platter mount ended ({status}) before mounting: {said}\n{}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
        Mount {
            child: Some(child),
            point: point.to_path_buf(),
            stderr,
            said,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to end.
    fn stop(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("the mount is running");
        // SAFETY: kill has no memory effects; the pid is our child's, not
        // yet waited for.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        child.wait().expect("cannot wait for platter mount")
    }

    /// Unmounts from outside, as a user would, and waits for the process.
    fn unmount(&mut self) -> ExitStatus {
        sh(&format!("umount '{}'", self.point.display()));
        self.child
            .take()
            .expect("the mount is running")
            .wait()
            .expect("cannot wait for platter mount")
    }

    fn latest(&self) -> PathBuf {
        self.point.join("latest")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(libc::SIGTERM);
        }
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.point)
            .stderr(Stdio::null())
            .status();
    }
}

fn os(args: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// Mount points under the sandbox that are still mounted.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with(&dir))
        })
        .map(str::to_string)
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    sh("losetup -a || true")
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_string)
        .collect()
}

/// A GPT disk of 6 MiB + 20 KiB (not a multiple of the chunk size) with
/// two partitions of random bytes, runs of zeros, a hole, and data in the
/// gap between them.
fn gpt_disk(sandbox: &Sandbox, rng: &mut Rng) -> Image {
    let size = 6 * 1024 * 1024 + 20 * 1024;
    let mut image = Image::sparse(sandbox.path("disk.img"), size);
    sh(&format!(
        "sgdisk -o -n1:2048:+2M -n2:6144:+2M '{}' >/dev/null",
        image.path.display()
    ));
    image.bytes = fs::read(&image.path).expect("cannot read image");
    image.write_random(rng, 1024 * 1024, 2 * 1024 * 1024);
    image.write_zeros(1024 * 1024 + 5 * CHUNK, 3 * CHUNK);
    image.punch_hole(2 * 1024 * 1024, 2 * CHUNK);
    image.write_random(rng, 3 * 1024 * 1024 + 100, 1024 * 1024 + 5000);
    image.check();
    image
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

// Pins: disk.img and every partN.img of a mounted snapshot equal, byte for byte, the restored image and the restored partitions; the folder is named for time, short id and tags; layout.txt lists the partitions; everything is read-only.
#[test]
fn mounted_images_equal_the_restored_ones() {
    if !have_fuse("mounted_images_equal_the_restored_ones", &["sgdisk"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(14);
    let image = gpt_disk(&sandbox, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &["--tag", "nightly", "--tag", "a/b"]);
    let mount = Mount::start(&sandbox, &sandbox.path("mnt"), &os(&[&sandbox.path("mnt")]));

    let folders: Vec<String> = fs::read_dir(&mount.point)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let folder = &folders[0];
    assert!(
        folder.contains(&id[..8]) && folder.ends_with("_nightly,a_b"),
        "{folder}"
    );
    assert_eq!(
        fs::read_link(mount.latest()).unwrap(),
        PathBuf::from(folder)
    );

    let restored = sandbox.path("restored.img");
    sandbox.restore(&id, &restored, &[]).ok();
    assert_file_is(&mount.latest().join("disk.img"), &image.bytes, "disk.img");
    assert_file_is(
        &mount.latest().join("disk.img"),
        &fs::read(&restored).unwrap(),
        "disk.img against the restored image",
    );
    for n in [1, 2] {
        let part = sandbox.path(&format!("part{n}.restored"));
        sandbox
            .restore(&id, &part, &["--partition", &n.to_string()])
            .ok();
        assert_file_is(
            &mount.latest().join(format!("part{n}.img")),
            &fs::read(&part).unwrap(),
            &format!("part{n}.img"),
        );
    }
    let layout = fs::read_to_string(mount.latest().join("layout.txt")).unwrap();
    assert!(layout.contains(&id), "{layout}");
    assert!(layout.contains("part2.img: partition 2"), "{layout}");
    assert!(layout.contains("GPT"), "{layout}");

    let write = fs::OpenOptions::new()
        .write(true)
        .open(mount.latest().join("disk.img"));
    assert_eq!(
        write.err().and_then(|e| e.raw_os_error()),
        Some(libc::EROFS),
        "a snapshot file opened for writing"
    );
}

// Pins: random reads of any offset and length (a few hundred, seeded) through the mount equal the source, at the end of the image too; concurrent readers each get their bytes.
#[test]
fn random_and_concurrent_reads_equal_the_source() {
    if !have_fuse("random_and_concurrent_reads_equal_the_source", &["sgdisk"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(1414);
    let image = gpt_disk(&sandbox, &mut rng);
    sandbox.backup(&image.path);
    // A cache of 4 chunks: reads must evict and fetch again.
    let mount = Mount::start(
        &sandbox,
        &sandbox.path("mnt"),
        &os(&[&sandbox.path("mnt"), &"--cache-size", &"256K"]),
    );
    let disk = mount.latest().join("disk.img");
    let size = image.len();
    for i in 0..300 {
        let offset = rng.below(size + CHUNK);
        let len = 1 + rng.below(if i % 3 == 0 { 4 * CHUNK } else { 5000 }) as usize;
        let got = read_at(&disk, offset, len).unwrap();
        let from = offset.min(size) as usize;
        let to = (offset + len as u64).min(size) as usize;
        assert_bytes_equal(
            &got,
            &image.bytes[from..to],
            &format!("read {offset}+{len}"),
        );
    }
    let bytes = &image.bytes;
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let disk = &disk;
            scope.spawn(move || {
                let mut rng = Rng::new(t);
                for _ in 0..50 {
                    let offset = rng.below(size - 1);
                    let len = 1 + rng.below(3 * CHUNK).min(size - offset - 1) as usize;
                    let got = read_at(disk, offset, len).unwrap();
                    assert_bytes_equal(
                        &got,
                        &bytes[offset as usize..offset as usize + len],
                        &format!("thread {t} read {offset}+{len}"),
                    );
                }
            });
        }
    });
}

// Pins: a mount of all snapshots goes on serving while a backup writes into the same repository, and the snapshot that backup commits appears in it (and `latest` follows); the snapshot mounted before reads unchanged.
#[test]
fn a_backup_while_mounted_appears_in_the_mount() {
    if !have_fuse("a_backup_while_mounted_appears_in_the_mount", &[]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(7);
    let mut image = Image::random(sandbox.path("a.img"), 3 * 1024 * 1024 + 333, &mut rng);
    let first = sandbox.snapshot_of(&image.path, &[]);
    let before = image.bytes.clone();
    let mount = Mount::start(&sandbox, &sandbox.path("mnt"), &os(&[&sandbox.path("mnt")]));
    let first_folder = mount.latest().canonicalize().unwrap();

    image.write_random(&mut rng, 1024 * 1024, 512 * 1024);
    let second = std::thread::scope(|scope| {
        let backup = scope.spawn(|| sandbox.snapshot_of(&image.path, &[]));
        while !backup.is_finished() {
            assert_file_is(
                &first_folder.join("disk.img"),
                &before,
                "the first snapshot",
            );
        }
        backup.join().unwrap()
    });
    assert!(
        wait_until(Duration::from_secs(5), || {
            fs::read_link(mount.latest()).is_ok_and(|l| l.to_string_lossy().contains(&second[..8]))
        }),
        "the new snapshot {second} did not appear: {:?}",
        fs::read_dir(&mount.point).map(|d| d.count())
    );
    assert_file_is(
        &mount.latest().join("disk.img"),
        &image.bytes,
        "the new snapshot",
    );
    assert_file_is(
        &first_folder.join("disk.img"),
        &before,
        "the first snapshot",
    );
    assert!(first_folder.to_string_lossy().contains(&first[..8]));
}

// Pins: a damaged chunk fails every read that touches it with EIO (a read crossing into it from a good chunk too), never a short read or zeros; stderr names its byte range; the rest of the image reads correctly.
#[test]
fn a_damaged_chunk_fails_with_eio_in_its_range_only() {
    if !have_fuse("a_damaged_chunk_fails_with_eio_in_its_range_only", &[]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(99);
    let image = Image::random(sandbox.path("a.img"), 2 * 1024 * 1024, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let map = map_ids(&sandbox.map_file(&id));
    // Damage the chunk at position 5.
    let pos = 5;
    let victim = map[pos].clone().expect("position 5 holds data");
    let (pack, blob) = sandbox
        .packs()
        .into_iter()
        .find_map(|p| {
            let blob = pack_table(&p).into_iter().find(|b| b.id == victim)?;
            Some((p, blob))
        })
        .expect("a pack holds the chunk");
    flip_byte(&pack, blob.offset + blob.stored_len / 2);

    let mount = Mount::start(&sandbox, &sandbox.path("mnt"), &os(&[&sandbox.path("mnt")]));
    let disk = mount.latest().join("disk.img");
    let (start, end) = (pos as u64 * CHUNK, (pos as u64 + 1) * CHUNK);
    for (offset, len) in [
        (start, 1),
        (start + 100, 4096),
        (end - 1, 1),
        (start - 10, 20),
    ] {
        let got = read_at(&disk, offset, len);
        assert_eq!(
            got.as_ref().err().and_then(|e| e.raw_os_error()),
            Some(libc::EIO),
            "read {offset}+{len} in or into the damaged chunk: {:?}",
            got.map(|b| b.len())
        );
    }
    for (offset, len) in [
        (0, start as usize),
        (end, 1024 * 1024),
        (start - 4096, 4096),
    ] {
        let got = read_at(&disk, offset, len).unwrap();
        assert_bytes_equal(
            &got,
            &image.bytes[offset as usize..offset as usize + len],
            &format!("good read {offset}+{len}"),
        );
    }
    let cat = std::process::Command::new("cat")
        .arg(&disk)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!cat.success(), "cat of the whole image must fail");
    let said = format!("disk.img: bytes {start}..{end} cannot be read");
    assert!(mount.stderr().contains(&said), "{}", mount.stderr());
}

// Pins: the mount holds a shared lock for its whole life, so prune is refused while it is mounted (nothing deleted under it) and works once `umount` ended the mount (exit 0, lock gone).
#[test]
fn prune_waits_while_mounted_and_umount_ends_the_mount() {
    if !have_fuse("prune_waits_while_mounted_and_umount_ends_the_mount", &[]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(3);
    let mut image = Image::random(sandbox.path("a.img"), 1024 * 1024, &mut rng);
    let first = sandbox.snapshot_of(&image.path, &[]);
    image.write_random(&mut rng, 0, 512 * 1024);
    sandbox.backup(&image.path);
    // The first snapshot's own chunks are now garbage for prune.
    sandbox.run(["forget", &first]).ok();
    let mut mount = Mount::start(&sandbox, &sandbox.path("mnt"), &os(&[&sandbox.path("mnt")]));
    let packs = sandbox.packs();
    sandbox.run(["prune"]).refused(5, "in use by `mount`");
    assert_eq!(sandbox.packs(), packs, "prune deleted packs under a mount");
    assert_file_is(&mount.latest().join("disk.img"), &image.bytes, "disk.img");

    let status = mount.unmount();
    assert_eq!(status.code(), Some(0), "{}", mount.stderr());
    assert!(mounts_under(&mount.point).is_empty());
    assert_eq!(fs::read_dir(sandbox.repo.join("locks")).unwrap().count(), 0);
    sandbox.run(["prune"]).ok();
    assert_ne!(
        sandbox.packs(),
        packs,
        "prune had nothing to do: the test proves nothing"
    );
    sandbox.assert_restores("latest", &image.bytes);
}

// Pins: an encrypted repository mounts like a plain one; its images read back byte for byte.
#[test]
fn an_encrypted_repository_mounts() {
    if !have_fuse("an_encrypted_repository_mounts", &[]) {
        return;
    }
    let sandbox = Sandbox::encrypted();
    let mut rng = Rng::new(5);
    let image = Image::random(sandbox.path("a.img"), 1024 * 1024 + 77, &mut rng);
    sandbox.backup(&image.path);
    let mount = Mount::start(&sandbox, &sandbox.path("mnt"), &os(&[&sandbox.path("mnt")]));
    assert_file_is(&mount.latest().join("disk.img"), &image.bytes, "disk.img");
}

/// Makes an ext4 and an xfs filesystem in the partitions of GPT disk
/// `disk` (2048+64 MiB and after it 310 MiB, xfs's smallest) and runs
/// `fill` with their mount points.
fn fill_filesystems(disk: &Path, mkfs: bool, script: &str) {
    let d = disk.display();
    sh(&format!(
        "set -e; p1=$(losetup -f --show --offset $((2048*512)) --sizelimit $((64<<20)) '{d}')
         p2=$(losetup -f --show --offset $((133120*512)) --sizelimit $((310<<20)) '{d}')
         trap 'cd /; umount -q \"{d}.m1\" \"{d}.m2\" 2>/dev/null; losetup -d $p1 $p2' EXIT
         {mkfs}
         mkdir -p '{d}.m1' '{d}.m2'; mount $p1 '{d}.m1'; mount $p2 '{d}.m2'
         cd '{d}.m1'; {script}",
        mkfs = if mkfs {
            "mkfs.ext4 -q $p1; mkfs.xfs -q $p2"
        } else {
            ":"
        }
    ));
}

// Pins: `mount --files` shows each filesystem of a GPT disk (ext4 and xfs) with a tree identical to the source's, for a full backup and after an incremental; SIGINT and SIGTERM each end it with nothing left mounted, no loop device attached and no lock.
#[test]
fn files_shows_the_source_trees_and_signals_leave_nothing() {
    if !have_fuse(
        "files_shows_the_source_trees_and_signals_leave_nothing",
        &[
            "loop devices",
            "sgdisk",
            "mkfs.ext4",
            "mkfs.xfs",
            "mkswap",
            "diff",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let disk = sandbox.path("gpt.img");
    let d = disk.display();
    sh(&format!(
        "truncate -s 400M '{d}'; sgdisk -o -n1:2048:+64M -n2:133120:+310M -n3:768000:+4M '{d}' >/dev/null
         p3=$(losetup -f --show --offset $((768000*512)) --sizelimit $((4<<20)) '{d}')
         mkswap -q $p3 || mkswap $p3 >/dev/null; losetup -d $p3"
    ));
    let copy = |to: &str| {
        format!(
            "mkdir -p '{to}/1' '{to}/2'; cp -a '{d}.m1/.' '{to}/1/'; cp -a '{d}.m2/.' '{to}/2/'"
        )
    };
    // The script runs inside the ext4 mount.
    let first_tree = sandbox.path("tree1");
    sh(&format!("mkdir -p '{}'", first_tree.display()));
    fill_filesystems(
        &disk,
        true,
        &format!(
            "mkdir -p etc deep/a/b; echo host > etc/hostname; head -c 300000 /dev/urandom > deep/a/b/blob
             ln -s ../etc/hostname deep/link; cd '{d}.m2'; mkdir -p data; head -c 2000000 /dev/urandom > data/big
             echo small > data/small; {}",
            copy(&first_tree.display().to_string())
        ),
    );
    let first = sandbox.snapshot_of(&disk, &[]);
    let second_tree = sandbox.path("tree2");
    fill_filesystems(
        &disk,
        false,
        &format!(
            "rm deep/a/b/blob; echo changed > etc/hostname; head -c 100000 /dev/urandom > new
             cd '{d}.m2'; head -c 1000000 /dev/urandom > data/big; {}",
            copy(&second_tree.display().to_string())
        ),
    );
    let second = sandbox.snapshot_of(&disk, &[]);

    for (snapshot, tree, signal, code) in [
        (&first, &first_tree, libc::SIGINT, 130),
        (&second, &second_tree, libc::SIGTERM, 143),
    ] {
        let point = sandbox.path(&format!("files-{code}"));
        let mut mount = Mount::start(
            &sandbox,
            &point,
            &os(&[&"--files", &snapshot.as_str(), &point]),
        );
        assert!(mount.said.contains("part1: ext4 at"), "{}", mount.said);
        assert!(mount.said.contains("part2: xfs at"), "{}", mount.said);
        assert!(
            mount
                .said
                .contains("part3: swap not mounted (it is swap space); its image is"),
            "{}",
            mount.said
        );
        for n in [1, 2] {
            sh(&format!(
                "diff -r --no-dereference '{}/{n}' '{}/part{n}'",
                tree.display(),
                point.display()
            ));
        }
        assert_eq!(mounts_under(&point).len(), 3, "FUSE and two filesystems");
        assert_eq!(loops_under(&point).len(), 2, "two loop devices");
        let status = mount.stop(signal);
        assert_eq!(status.code(), Some(code), "{}", mount.stderr());
        assert_eq!(mounts_under(&point), Vec::<String>::new());
        assert_eq!(loops_under(&point), Vec::<String>::new());
        assert_eq!(fs::read_dir(sandbox.repo.join("locks")).unwrap().count(), 0);
    }
}

// Pins: a snapshot that is one filesystem (no partition table) gets its files at MOUNTPOINT/disk with --files.
#[test]
fn files_mounts_a_snapshot_that_is_one_filesystem() {
    if !have_fuse(
        "files_mounts_a_snapshot_that_is_one_filesystem",
        &["loop devices", "mkfs.ext4", "diff"],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let fs_image = sandbox.path("fs.img");
    let tree = sandbox.path("tree");
    sh(&format!(
        "set -e; mkdir -p '{t}/d'; echo one > '{t}/d/one'; head -c 200000 /dev/urandom > '{t}/blob'
         truncate -s 32M '{f}'; mkfs.ext4 -q -d '{t}' '{f}'",
        t = tree.display(),
        f = fs_image.display()
    ));
    let id = sandbox.snapshot_of(&fs_image, &[]);
    let point = sandbox.path("files");
    let mount = Mount::start(&sandbox, &point, &os(&[&"--files", &id.as_str(), &point]));
    assert!(mount.said.contains("disk: ext4 at"), "{}", mount.said);
    sh(&format!(
        "diff -r '{}' '{}/disk' -x lost+found",
        tree.display(),
        point.display()
    ));
}

// Pins: a mount point left behind by a killed mount (SIGKILL cannot be caught) is named with the step that clears it; after `umount` it mounts again.
#[test]
fn a_mount_left_by_a_killed_process_is_named() {
    if !have_fuse("a_mount_left_by_a_killed_process_is_named", &[]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(9);
    let image = Image::random(sandbox.path("a.img"), 200_000, &mut rng);
    sandbox.backup(&image.path);
    let point = sandbox.path("mnt");
    let mut mount = Mount::start(&sandbox, &point, &os(&[&point]));
    assert_eq!(mount.stop(libc::SIGKILL).code(), None);
    assert_eq!(mounts_under(&point).len(), 1, "a killed mount stays");
    sandbox.run(os(&[&"mount", &point])).refused(
        6,
        &format!("unmount it first (`umount {}`", point.display()),
    );
    sh(&format!("umount '{}'", point.display()));
    let mount = Mount::start(&sandbox, &point, &os(&[&point]));
    assert_file_is(&mount.latest().join("disk.img"), &image.bytes, "disk.img");
}

// Pins: a mount point that is missing, not a folder, not empty or inside the repository (it hid the locks), a --files without its two arguments and a cache smaller than 4 chunks are refused before anything is mounted or locked.
#[test]
fn bad_mount_arguments_are_refused_and_leave_nothing() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(8);
    let image = Image::random(sandbox.path("a.img"), 300_000, &mut rng);
    sandbox.backup(&image.path);
    let full = sandbox.path("full");
    fs::create_dir_all(full.join("x")).unwrap();
    let empty = sandbox.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let cases: Vec<(Vec<OsString>, i32, &str)> = vec![
        (os(&[&sandbox.path("missing")]), 3, "create it first"),
        (os(&[&image.path]), 2, "is not a folder"),
        (os(&[&full]), 2, "is not empty"),
        (
            os(&[&sandbox.repo.join("locks")]),
            2,
            "inside the platter repository",
        ),
        (
            os(&[&"--files", &empty]),
            2,
            "--files takes one snapshot and a mount point",
        ),
        (
            os(&[&empty, &"--cache-size", &"128K"]),
            2,
            "fewer than 4 chunks",
        ),
        (os(&[&empty, &"feedbeef"]), 3, "no snapshot matches"),
    ];
    for (args, code, says) in cases {
        let mut all = os(&[&"mount"]);
        all.extend(args);
        sandbox.run(all).refused(code, says);
        assert!(mounts_under(&sandbox.path("")).is_empty());
        assert_eq!(fs::read_dir(sandbox.repo.join("locks")).unwrap().count(), 0);
    }
}
