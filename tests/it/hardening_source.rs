//! A source that changes during a backup: shrinks, shrinks and grows back,
//! is written to, is replaced by a rename, or (a loop device) changes size,
//! loses the end of its file or shows another file.
//! Each fails the backup with exit 4 and no new snapshot, and the earlier
//! snapshots still restore; an unchanged source still backs up.
//!
//! The change happens at an exact point, without luck: strace stops
//! platter with SIGSTOP in a chosen system call (`-e inject=...:signal=`),
//! the test changes the source, and resumes it. For an image file that
//! point is the first `lseek(SEEK_DATA)` of the pipeline's reader (the hole
//! check of chunk 0: everything after it is read after the change); a block
//! device has no holes, so there it is the one `fadvise64` of opening the
//! source, after platter noted what the source was.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::{
    CHUNK, Image, LoopDevice, Mounted, Rng, Run, Sandbox, files_under, have, platter, random_name,
    sh, verify_clean, wait_until,
};

/// Size of the images: 32 chunks, so most are read after the change.
const SIZE: u64 = 32 * CHUNK;

/// A `platter backup` that strace holds stopped at the first `syscall` of
/// the thread whose trace line for it contains `mark`.
struct Paused {
    /// Taken when it is resumed; a Paused dropped before (a failing test)
    /// kills both processes rather than leave them stopped.
    strace: Option<Child>,
    /// The platter process (its thread group).
    pid: i32,
    command: String,
}

impl Paused {
    /// Starts `platter -r REPO backup SOURCE EXTRA...` under strace and
    /// waits until it is stopped where asked. Threads whose first `syscall`
    /// is another one (the main thread reads cgroup files with lseek) are
    /// stopped too, and resumed at once.
    fn backup(
        sandbox: &Sandbox,
        source: &Path,
        extra: &[&str],
        syscall: &str,
        mark: &str,
    ) -> Paused {
        let log = sandbox.path(&format!("strace-{}.log", random_name()));
        let program = platter().get_program().to_owned();
        let mut args: Vec<OsString> = vec!["-r".into(), sandbox.repo.clone().into()];
        args.push("backup".into());
        args.push(source.into());
        args.extend(extra.iter().map(OsString::from));
        let command = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let strace = Command::new("strace")
            .arg("-f")
            .arg("-o")
            .arg(&log)
            .arg(format!("-etrace={syscall}"))
            .arg(format!("-einject={syscall}:signal=SIGSTOP:when=1"))
            .arg(program)
            .args(&args)
            .env_remove("PLATTER_REPO")
            .env_remove("PLATTER_PASSWORD")
            .env_remove("PLATTER_PASSWORD_FILE")
            .env_remove("PLATTER_PASSWORD_COMMAND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start strace");
        let mut resumed = 0;
        let mut target = None;
        let mut seen = None;
        let found = wait_until(Duration::from_secs(30), || {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let stops: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(" --- SIGSTOP {"))
                .collect();
            let Some(&at) = stops.get(resumed) else {
                return false;
            };
            let tid = lines[at].split_whitespace().next().unwrap_or_default();
            let stopped = lines[at..]
                .iter()
                .any(|l| l.starts_with(&format!("{tid} ")) && l.contains("stopped by SIGSTOP"));
            if !stopped {
                return false;
            }
            let call = lines[..at]
                .iter()
                .rev()
                .find(|l| l.starts_with(&format!("{tid} ")) && l.contains(&format!("{syscall}(")))
                .copied()
                .unwrap_or_default();
            let pid = thread_group(tid);
            seen = Some(pid);
            if call.contains(mark) {
                target = Some(pid);
                return true;
            }
            resume(pid);
            resumed += 1;
            false
        });
        let paused = Paused {
            strace: Some(strace),
            pid: target.or(seen).unwrap_or(0),
            command,
        };
        if !found {
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            drop(paused);
            panic!("platter never stopped in {syscall} ({mark}); strace log:\n{log_text}");
        }
        paused
    }

    /// Lets platter go on and waits for it.
    fn resume(mut self) -> Run {
        resume(self.pid);
        let strace = self.strace.take().expect("resumed once");
        let out = strace.wait_with_output().expect("cannot wait for strace");
        Run::from_output(self.command.clone(), out)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut strace) = self.strace.take() {
            if self.pid > 0 {
                // SAFETY: kill only reads its integer arguments.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
            let _ = strace.kill();
            let _ = strace.wait();
        }
    }
}

/// The process a thread belongs to.
fn thread_group(tid: &str) -> i32 {
    let status = fs::read_to_string(format!("/proc/{tid}/status"))
        .unwrap_or_else(|e| panic!("thread {tid} is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Tgid for thread {tid}"))
}

fn resume(pid: i32) {
    // SAFETY: kill only reads its integer arguments.
    let rc = unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(rc, 0, "cannot resume {pid}");
}

/// A sandbox with one snapshot of a random image; returns its id too.
fn with_snapshot(seed: u64) -> (Sandbox, Image, String) {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(seed);
    let image = Image::random(sandbox.path("disk.img"), SIZE, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    (sandbox, image, id)
}

/// Backs up `source` stopped at its first hole check, runs `change`, and
/// returns what the backup did.
fn backup_changed_at_first_chunk(
    sandbox: &Sandbox,
    source: &Path,
    extra: &[&str],
    change: impl FnOnce(),
) -> Run {
    let paused = Paused::backup(sandbox, source, extra, "lseek", "SEEK_DATA");
    change();
    paused.resume()
}

/// The backup failed as a changed source must: exit 4, saying what
/// changed and that nothing was committed; no new snapshot; the earlier
/// one still restores to what it held; `prune` clears what it left.
fn assert_failed_as_changed(
    run: &Run,
    sandbox: &Sandbox,
    before: &[String],
    what: &str,
    earlier: (&str, &[u8]),
) {
    run.expect_code(4);
    for needle in ["changed during the backup", what, "nothing was committed"] {
        assert!(
            run.stderr.contains(needle),
            "the error does not say {needle:?}:\n{}",
            run.stderr
        );
    }
    assert_eq!(sandbox.snapshot_ids(), before, "a snapshot was committed");
    sandbox.assert_restores(earlier.0, earlier.1);
    verify_clean(&sandbox.repo);
    // Whatever it stored is a leftover, as the hint says: prune removes it.
    sandbox.run(["prune"]).ok();
    assert_eq!(files_under(&sandbox.repo.join("maps")).len(), before.len());
    let report = verify_clean(&sandbox.repo);
    assert_eq!(report["leftovers"], serde_json::json!([]), "{report:#}");
}

fn needs_strace(test: &str) -> bool {
    have(test, &["strace"])
}

// Pins: the pause used by the change tests is harmless: an unchanged image file backs up under it (exit 0) and restores.
#[test]
fn an_unchanged_source_backs_up_while_paused() {
    if !needs_strace("an_unchanged_source_backs_up_while_paused") {
        return;
    }
    let (sandbox, image, _) = with_snapshot(0x50_0001);
    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &["--full"], || {});
    run.ok();
    let ids = sandbox.snapshot_ids();
    assert_eq!(ids.len(), 2);
    sandbox.assert_restores(&ids[1], &image.bytes);
}

// Pins: an image file that shrinks during a backup fails it (exit 4, size a -> b, no snapshot): past the new end, SEEK_DATA's ENXIO is not a hole.
#[test]
fn an_image_that_shrinks_during_a_backup_fails_it() {
    if !needs_strace("an_image_that_shrinks_during_a_backup_fails_it") {
        return;
    }
    let (sandbox, image, first) = with_snapshot(0x50_0002);
    let before = sandbox.snapshot_ids();
    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &[], || {
        sh(&format!(
            "truncate -s {} {}",
            SIZE / 2,
            image.path.display()
        ));
    });
    let sizes = format!("from {SIZE} to {} bytes", SIZE / 2);
    assert_failed_as_changed(&run, &sandbox, &before, &sizes, (&first, &image.bytes));
}

// Pins: an image file truncated and grown back to its size during a backup fails it (exit 4, modified): same size, but its ctime moved.
#[test]
fn an_image_that_shrinks_and_grows_back_during_a_backup_fails_it() {
    if !needs_strace("an_image_that_shrinks_and_grows_back_during_a_backup_fails_it") {
        return;
    }
    let (sandbox, image, first) = with_snapshot(0x50_0003);
    let before = sandbox.snapshot_ids();
    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &[], || {
        let path = image.path.display();
        sh(&format!(
            "truncate -s {} {path}; truncate -s {SIZE} {path}",
            SIZE / 2
        ));
    });
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "it was written to",
        (&first, &image.bytes),
    );
}

// Pins: an image file replaced by a rename (or deleted) during a backup fails it (exit 4, replaced): its path must still name the inode that was read.
#[test]
fn an_image_replaced_or_removed_during_a_backup_fails_it() {
    if !needs_strace("an_image_replaced_or_removed_during_a_backup_fails_it") {
        return;
    }
    let (sandbox, image, first) = with_snapshot(0x50_0004);
    let before = sandbox.snapshot_ids();
    let other = sandbox.path("other.img");
    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &[], || {
        fs::copy(&image.path, &other).unwrap();
        fs::rename(&other, &image.path).unwrap();
    });
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "its path names another file now",
        (&first, &image.bytes),
    );

    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &[], || {
        fs::rename(&image.path, &other).unwrap();
    });
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "no longer exists",
        (&first, &image.bytes),
    );
    fs::rename(&other, &image.path).unwrap();
    image.check();
}

// Pins: an image file written to during a backup fails it (exit 4, modified); with --allow-mounted it is backed up with a warning that the snapshot is inconsistent.
#[test]
fn an_image_written_during_a_backup_fails_it_unless_allowed() {
    if !needs_strace("an_image_written_during_a_backup_fails_it_unless_allowed") {
        return;
    }
    let (sandbox, mut image, first) = with_snapshot(0x50_0005);
    let original = image.bytes.clone();
    let before = sandbox.snapshot_ids();
    let mut rng = Rng::new(0x50_0006);
    let path = image.path.clone();
    let run = backup_changed_at_first_chunk(&sandbox, &path, &[], || {
        image.write_random(&mut rng, 20 * CHUNK, 100);
    });
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "it was written to",
        (&first, &original),
    );

    let run = backup_changed_at_first_chunk(&sandbox, &path, &["--allow-mounted"], || {
        image.write_random(&mut rng, 21 * CHUNK, 100);
    });
    run.ok();
    assert!(
        run.stderr.contains("written to during the backup") && run.stderr.contains("inconsistent"),
        "no warning:\n{}",
        run.stderr
    );
    let ids = sandbox.snapshot_ids();
    assert_eq!(ids.len(), 2);
    // Chunk 0 was read before the write, the rest after: here, all of it.
    sandbox.assert_restores(&ids[1], &image.bytes);
}

/// A loop device over a random file whose first snapshot is taken; its
/// file is cut or grown to `new_size` (and the device resized with it when
/// `resize`: `losetup -c`) while a second backup is stopped just after
/// opening the device. The error must mention `what`.
fn loop_device_changed_during_a_backup(test: &str, new_size: u64, resize: bool, what: &str) {
    if !have(test, &["root", "loop devices", "losetup", "strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0007);
    let file: PathBuf = sandbox.path("backing.img");
    let image = Image::random(file.clone(), SIZE, &mut rng);
    let device = LoopDevice::attach(&file);
    let first = sandbox.snapshot_of(&device.path, &[]);
    let before = sandbox.snapshot_ids();
    let paused = Paused::backup(&sandbox, &device.path, &[], "fadvise64", "fadvise64(");
    sh(&format!("truncate -s {new_size} {}", file.display()));
    if resize {
        sh(&format!("losetup -c {}", device.path.display()));
    }
    let run = paused.resume();
    let copy = image.bytes.clone();
    assert_failed_as_changed(&run, &sandbox, &before, what, (&first, &copy));
}

// Pins: a loop device that grows during a backup (its file grown, `losetup -c`) fails it (exit 4, size a -> b), not a snapshot of the old size.
#[test]
fn a_loop_device_that_grows_during_a_backup_fails_it() {
    let new_size = SIZE + 4 * CHUNK;
    loop_device_changed_during_a_backup(
        "a_loop_device_that_grows_during_a_backup_fails_it",
        new_size,
        true,
        &format!("its size went from {SIZE} to {new_size} bytes"),
    );
}

// Pins: a loop device that shrinks during a backup fails it as a changed source (exit 4, size a -> b), not as a short read of bad input.
#[test]
fn a_loop_device_that_shrinks_during_a_backup_fails_it() {
    let new_size = SIZE / 2;
    loop_device_changed_during_a_backup(
        "a_loop_device_that_shrinks_during_a_backup_fails_it",
        new_size,
        true,
        &format!("its size went from {SIZE} to {new_size} bytes"),
    );
}

// Pins: a loop device whose file is cut during a backup (the device keeps its size) fails it as a changed source (exit 4), not as a read error or a snapshot of stale cache.
#[test]
fn a_loop_device_whose_file_shrinks_during_a_backup_fails_it() {
    let new_size = SIZE / 2;
    loop_device_changed_during_a_backup(
        "a_loop_device_whose_file_shrinks_during_a_backup_fails_it",
        new_size,
        false,
        &format!("lost the end of its file (the file went from {SIZE} to {new_size} bytes)"),
    );
}

/// LOOP_CHANGE_FD (linux/loop.h): swaps the file behind a read-only loop
/// device while it is open, for a file of the same size.
const LOOP_CHANGE_FD: libc::c_ulong = 0x4C06;

// Pins: a read-only loop device whose file is swapped for another during a backup (LOOP_CHANGE_FD) fails it (exit 4, shows another file).
#[test]
fn a_loop_device_whose_file_is_swapped_during_a_backup_fails_it() {
    let test = "a_loop_device_whose_file_is_swapped_during_a_backup_fails_it";
    if !have(test, &["root", "loop devices", "losetup", "strace"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0008);
    let image = Image::random(sandbox.path("backing.img"), SIZE, &mut rng);
    let other = Image::random(sandbox.path("other.img"), SIZE, &mut rng);
    // `losetup -d` cannot swap the file: the kernel keeps an open device
    // bound until it is closed, so attaching another file fails (EBUSY).
    let device = LoopDevice {
        path: PathBuf::from(sh(&format!(
            "losetup -r -f --show {}",
            image.path.display()
        ))),
    };
    let first = sandbox.snapshot_of(&device.path, &[]);
    let before = sandbox.snapshot_ids();
    let paused = Paused::backup(&sandbox, &device.path, &[], "fadvise64", "fadvise64(");
    {
        let loop_fd = fs::File::open(&device.path).unwrap();
        let new_fd = fs::File::open(&other.path).unwrap();
        // SAFETY: LOOP_CHANGE_FD takes a file descriptor by value; both
        // files are open for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                loop_fd.as_raw_fd(),
                LOOP_CHANGE_FD,
                new_fd.as_raw_fd() as libc::c_ulong,
            )
        };
        assert_eq!(rc, 0, "LOOP_CHANGE_FD: {}", std::io::Error::last_os_error());
    }
    let run = paused.resume();
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "its loop device shows another file now",
        (&first, &image.bytes),
    );
}

/// A shared (or private) mapping of a whole file, read-write, held by this
/// test process until dropped.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
    _file: fs::File,
}

impl Mapping {
    fn new(path: &Path, shared: bool) -> Mapping {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: a fresh mapping at an address the kernel picks, of a file
        // open for reading and writing for the mapping's whole life.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping {
            addr,
            len,
            _file: file,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, used by no one else.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// What this test process is called in a writer's description.
fn this_process() -> String {
    format!("process {}", std::process::id())
}

// Pins: a source whose real path is not UTF-8 is refused (exit 2, bytes escaped, nothing written), even through a UTF-8 symbolic link, so two such files are never recorded as one source; a UTF-8 hard link backs up.
#[test]
fn a_source_whose_real_path_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStringExt;
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0010);
    let name = |byte: u8| {
        let mut bytes = sandbox.path("vm").into_os_string().into_vec();
        bytes.extend([byte, b'.', b'i', b'm', b'g']);
        PathBuf::from(OsString::from_vec(bytes))
    };
    let (a, b) = (name(0xff), name(0xfe));
    let image = Image::random(a.clone(), 4 * CHUNK, &mut rng);
    Image::random(b.clone(), 4 * CHUNK, &mut rng);
    let before = sandbox.repo_tree();
    for (path, shown) in [(&a, "vm\\xff.img"), (&b, "vm\\xfe.img")] {
        let run = sandbox.run([OsString::from("backup"), path.into()]);
        run.refused(2, "not valid UTF-8");
        assert!(run.stderr.contains(shown), "{}", run.stderr);
        assert!(run.stderr.contains("hard link"), "{}", run.stderr);
    }
    let link = sandbox.path("link.img");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    sandbox
        .run([OsString::from("backup"), link.into()])
        .refused(2, "vm\\xff.img");
    assert_eq!(sandbox.repo_tree(), before, "a refused backup wrote");
    let hard = sandbox.path("vm-a.img");
    fs::hard_link(&a, &hard).unwrap();
    let id = sandbox.snapshot_of(&hard, &[]);
    sandbox.assert_restores(&id, &image.bytes);
}

// Pins: an image file that a process maps shared and writable is refused as in use (exit 5, naming the process), as a write through its dirty pages moves no ctime; --allow-mounted takes it; a private mapping is no writer.
#[test]
fn an_image_mapped_shared_and_writable_is_refused_unless_allowed() {
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0011);
    let image = Image::random(sandbox.path("disk.img"), 4 * CHUNK, &mut rng);
    {
        let _private = Mapping::new(&image.path, false);
        sandbox.snapshot_of(&image.path, &[]);
    }
    let before = sandbox.snapshot_ids();
    let mapping = Mapping::new(&image.path, true);
    let run = sandbox.run([OsString::from("backup"), image.path.clone().into()]);
    run.refused(5, "mapped shared and writable");
    assert!(run.stderr.contains(&this_process()), "{}", run.stderr);
    assert_eq!(sandbox.snapshot_ids(), before);
    sandbox.snapshot_of(&image.path, &["--allow-mounted"]);
    drop(mapping);
    sandbox.snapshot_of(&image.path, &[]);
}

// Pins: a shared writable mapping made while a backup reads (no write, so no ctime moves) fails it before the commit (exit 5, naming the process, no snapshot).
#[test]
fn an_image_mapped_during_a_backup_fails_it() {
    if !needs_strace("an_image_mapped_during_a_backup_fails_it") {
        return;
    }
    let (sandbox, image, _) = with_snapshot(0x50_0012);
    let before = sandbox.snapshot_ids();
    let mut mapping = None;
    let run = backup_changed_at_first_chunk(&sandbox, &image.path, &[], || {
        mapping = Some(Mapping::new(&image.path, true));
    });
    run.refused(5, "came into use during the backup");
    assert!(run.stderr.contains(&this_process()), "{}", run.stderr);
    assert_eq!(sandbox.snapshot_ids(), before, "a snapshot was committed");
    drop(mapping);
}

// Pins: a loop device whose backing file a process maps shared and writable is refused as in use (exit 5, naming the process).
#[test]
fn a_loop_device_whose_file_is_mapped_shared_and_writable_is_refused() {
    let test = "a_loop_device_whose_file_is_mapped_shared_and_writable_is_refused";
    if !have(test, &["root", "loop devices", "losetup"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0013);
    let image = Image::random(sandbox.path("backing.img"), 4 * CHUNK, &mut rng);
    let device = LoopDevice::attach(&image.path);
    let _mapping = Mapping::new(&image.path, true);
    let run = sandbox.run([OsString::from("backup"), device.path.clone().into()]);
    run.refused(5, "mapped shared and writable");
    assert!(run.stderr.contains(&this_process()), "{}", run.stderr);
    assert_eq!(sandbox.snapshot_ids(), Vec::<String>::new());
}

// Pins: a loop device written through (buffered, not flushed) or whose backing file is written during a backup fails it (exit 4, its backing file's ctime moved); --allow-mounted takes it with a warning.
#[test]
fn a_loop_device_written_during_a_backup_fails_it_unless_allowed() {
    let test = "a_loop_device_written_during_a_backup_fails_it_unless_allowed";
    if !have(test, &["root", "loop devices", "losetup", "strace", "dd"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x50_0014);
    let file: PathBuf = sandbox.path("backing.img");
    let image = Image::random(file.clone(), SIZE, &mut rng);
    let device = LoopDevice::attach(&file);
    let first = sandbox.snapshot_of(&device.path, &[]);
    let before = sandbox.snapshot_ids();
    let paused = Paused::backup(&sandbox, &device.path, &[], "fadvise64", "fadvise64(");
    sh(&format!(
        "dd if=/dev/urandom of={} bs=4096 count=1 seek=100 conv=notrunc status=none",
        device.path.display()
    ));
    let run = paused.resume();
    assert_failed_as_changed(
        &run,
        &sandbox,
        &before,
        "backing file was written to",
        (&first, &image.bytes),
    );

    let paused = Paused::backup(
        &sandbox,
        &device.path,
        &["--allow-mounted"],
        "fadvise64",
        "fadvise64(",
    );
    sh(&format!(
        "dd if=/dev/urandom of={} bs=4096 count=1 seek=200 conv=notrunc status=none",
        file.display()
    ));
    let run = paused.resume();
    run.ok();
    assert!(
        run.stderr.contains("written to during the backup") && run.stderr.contains("inconsistent"),
        "no warning:\n{}",
        run.stderr
    );
}

// Pins: backing up one partition of an image is not refused because a loop device over another partition's bytes of the same file is mounted; the mounted partition and the whole image still are (exit 5).
#[test]
fn a_partition_backs_up_while_another_partition_of_its_image_is_mounted() {
    let test = "a_partition_backs_up_while_another_partition_of_its_image_is_mounted";
    if !have(
        test,
        &[
            "root",
            "loop devices",
            "losetup",
            "sgdisk",
            "mkfs.ext4",
            "mount",
        ],
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    let image = sandbox.path("g.img");
    sh(&format!(
        "truncate -s 16M {0}; sgdisk -o -n 1:2048:+6M -n 2:0:0 {0} >/dev/null",
        image.display()
    ));
    let device = LoopDevice {
        path: PathBuf::from(sh(&format!(
            "losetup -f --show --offset {} --sizelimit {} {}",
            2048 * 512,
            12288 * 512,
            image.display()
        ))),
    };
    sh(&format!("mkfs.ext4 -q {}", device.path.display()));
    let _mounted = Mounted::mount(&device.path, &sandbox.path("m"));
    sandbox.snapshot_of(&image, &["--partition", "2"]);
    for extra in [&["--partition", "1"][..], &[]] {
        let mut args = vec![OsString::from("backup"), image.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        sandbox.run(args).refused(5, "mounted read-write");
    }
}
