//! The restore test: does the newest snapshot still restore into
//! something usable? It is restored to a sparse file in the job's scratch
//! folder (after checking there is room for its used bytes), its
//! partition table is compared with the one the snapshot recorded, and
//! every filesystem in it is checked read-only by its own checker where
//! that is installed (e2fsck -fn, fsck.fat -n, xfs_repair -n, btrfs check
//! --readonly), through a loop device limited to its partition
//! (`--offset/--sizelimit`: partition scanning of loop devices does not
//! work everywhere).
//!
//! An ext filesystem backed up while mounted (`--allow-mounted`) has a
//! dirty journal: that is no damage. Its journal is replayed on the
//! scratch file (it is a scratch copy) and the check runs after; an XFS
//! log that needs recovery is reported as "needs recovery", not as damage.
//! Nightly false alarms teach people to ignore failures.
//!
//! With `boot_test`, the snapshot is then booted as `platter boot --expect`
//! boots it (no network, serial console watched for `boot_expect`), so a
//! backup is proven to start, not only to hold intact filesystems.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::boot::{BootOptions, BootWatch, prepare};
use crate::disk::layout::{Content, Layout, ReadAt};
use crate::engine::restore::{RestoreOptions, restore};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::file::RestoreTestSpec;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;

/// What one filesystem's check found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Clean,
    /// Its journal or log must be replayed before it mounts cleanly: what
    /// a backup of a mounted filesystem holds; no damage.
    NeedsRecovery,
    Damaged,
    /// No checker for it is installed, or none exists (swap, unknown).
    NotChecked,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FilesystemCheck {
    /// "the whole disk" or "partition N".
    pub place: String,
    pub fstype: String,
    pub checker: Option<String>,
    pub verdict: Verdict,
    /// What the check said, shortened, or why it did not run.
    pub note: String,
}

/// A restore test's result: the document recorded next to the snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TestResult {
    pub snapshot: crate::repo::SnapshotId,
    pub time: String,
    /// ok, or failed.
    pub result: String,
    /// Whether the restored partition table is the one recorded.
    pub layout_matches: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layout_differences: Vec<String>,
    pub filesystems: Vec<FilesystemCheck>,
    /// The boot test, when the job asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootOutcome>,
    pub duration_s: f64,
}

/// What a boot test found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BootOutcome {
    /// The text waited for on the serial console.
    pub expected: String,
    pub ok: bool,
    /// Seconds until it showed (when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_s: Option<f64>,
    /// Why it failed, or how it booted.
    pub note: String,
}

impl TestResult {
    /// A step's detail when it passed, else a Corrupt error naming what
    /// failed.
    pub fn into_result(self) -> Result<String> {
        let damaged: Vec<String> = self
            .filesystems
            .iter()
            .filter(|f| f.verdict == Verdict::Damaged)
            .map(|f| format!("{} ({}): {}", f.place, f.fstype, f.note))
            .collect();
        let mut problems = damaged;
        problems.extend(self.layout_differences.iter().cloned());
        if let Some(boot) = self.boot.as_ref().filter(|b| !b.ok) {
            problems.push(format!("boot test: {}", boot.note));
        }
        if !problems.is_empty() {
            return Err(Error::corrupt(format!(
                "the restore test of snapshot {} failed: {}",
                self.snapshot.prefix(8),
                problems.join("; ")
            ))
            .hint("the source itself may be damaged: check it, and restore an older snapshot to compare"));
        }
        let described: Vec<String> = self
            .filesystems
            .iter()
            .map(|f| format!("{} {} {}", f.place, f.fstype, verdict_name(&f.verdict)))
            .collect();
        Ok(format!(
            "snapshot {} restored; layout matches; {}{}",
            self.snapshot.prefix(8),
            if described.is_empty() {
                "no filesystem found".to_string()
            } else {
                described.join(", ")
            },
            match &self.boot {
                Some(b) => format!("; booted: {}", b.note),
                None => String::new(),
            }
        ))
    }
}

pub fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::NeedsRecovery => "needs recovery (journal)",
        Verdict::Damaged => "DAMAGED",
        Verdict::NotChecked => "not checked",
    }
}

/// Restores `snap` into the scratch folder, checks it, removes it.
pub fn run(
    repo: &Repository,
    snap: &Snapshot,
    spec: &RestoreTestSpec,
    progress: &dyn Progress,
) -> Result<TestResult> {
    let started = Instant::now();
    let scratch = check_scratch(repo, &spec.scratch)?;
    let needed = snap.source.size.saturating_sub(snap.stats.bytes_free);
    check_room(&scratch, needed)?;
    let image = scratch.join(format!(
        "platter-restore-test-{}-{}.img",
        snap.id.prefix(8),
        std::process::id()
    ));
    let _remove = Scratch::new(&image);
    restore(
        repo,
        &snap.id.to_hex(),
        &image,
        &RestoreOptions::default(),
        progress,
    )?;
    let recorded = match snap.parsed_layout::<Layout>() {
        Some(Ok(layout)) => Some(layout),
        Some(Err(e)) => {
            return Err(Error::corrupt(format!(
                "snapshot {} has an unreadable layout: {e}",
                snap.short_id()
            )));
        }
        None => None,
    };
    let layout_differences = match &recorded {
        Some(layout) => compare_layout(&image, layout)?,
        None => Vec::new(),
    };
    let mut filesystems = Vec::new();
    if let Some(layout) = &recorded {
        if let Some(c) = &layout.content {
            filesystems.push(check(&image, "the whole disk", c, None));
        }
        let sector = u64::from(layout.sector_size);
        for p in &layout.partitions {
            if let Some(c) = &p.content {
                let span = (
                    p.start.saturating_mul(sector),
                    p.sectors.saturating_mul(sector),
                );
                filesystems.push(check(
                    &image,
                    &format!("partition {}", p.number),
                    c,
                    Some(span),
                ));
            }
        }
    }
    let boot = spec.boot().map(|watch| boot_test(repo, snap, &watch));
    let failed = !layout_differences.is_empty()
        || filesystems.iter().any(|f| f.verdict == Verdict::Damaged)
        || boot.as_ref().is_some_and(|b| !b.ok);
    Ok(TestResult {
        snapshot: snap.id,
        time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        result: if failed { "failed" } else { "ok" }.into(),
        layout_matches: layout_differences.is_empty(),
        layout_differences,
        filesystems,
        boot,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Boots `snap` until `watch.expect` shows on its serial console (see
/// `boot::Prepared::check`); a boot that cannot start is a failed test.
fn boot_test(repo: &Repository, snap: &Snapshot, watch: &BootWatch) -> BootOutcome {
    let options = BootOptions {
        firmware: None,
        accel: None,
        memory_mib: 1024,
        keep_overlay: None,
        qemu_args: Vec::new(),
        cache_size: 64 << 20,
        layout_lines: |_| Vec::new(),
    };
    let checked = prepare(repo.duplicate(), snap.clone(), options).and_then(|p| p.check(watch));
    match checked {
        Ok(c) => BootOutcome {
            expected: watch.expect.clone(),
            ok: true,
            after_s: Some(c.seen_after_s),
            note: format!(
                "{:?} after {:.1}s ({} firmware, {})",
                watch.expect,
                c.seen_after_s,
                c.plan.firmware.name(),
                c.plan.accel.name()
            ),
        },
        Err(e) => BootOutcome {
            expected: watch.expect.clone(),
            ok: false,
            after_s: None,
            note: e.message().to_string(),
        },
    }
}

/// Records `result` next to its snapshot (`tests/<snapshot id>`, see
/// docs/FORMAT.md), under a shared lock so that no prune runs meanwhile.
pub fn record(repo: &Repository, result: &TestResult, progress: &dyn Progress) -> Result<()> {
    let _lock = crate::engine::lock_repo(
        repo,
        crate::repo::lock::LockKind::Shared,
        "restore test",
        progress,
    )?;
    crate::repo::test_result::write(repo, &result.snapshot, result)
}

/// The scratch folder, made absolute; refused inside a local repository
/// (the test's file would be taken for a leftover, and fill the disk the
/// backups need).
fn check_scratch(repo: &Repository, scratch: &Path) -> Result<PathBuf> {
    let real = std::fs::canonicalize(scratch).map_err(|e| {
        Error::io("find the restore test's scratch folder", scratch, e)
            .hint("create it, or change restore_test.scratch in the job file")
    })?;
    if !real.is_dir() {
        return Err(Error::bad_input(format!(
            "restore_test.scratch {} is not a folder",
            scratch.display()
        )));
    }
    if let Ok(repo_real) = std::fs::canonicalize(repo.location())
        && real.starts_with(&repo_real)
    {
        return Err(Error::bad_input(format!(
            "restore_test.scratch {} is inside the repository {}",
            scratch.display(),
            repo_real.display()
        ))
        .hint(
            "give a scratch folder outside the repository, on a filesystem with room for a restore",
        ));
    }
    Ok(real)
}

fn check_room(scratch: &Path, needed: u64) -> Result<()> {
    let stat = nix::sys::statvfs::statvfs(scratch).map_err(|e| {
        Error::io(
            "measure the free space of",
            scratch,
            std::io::Error::from(e),
        )
    })?;
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    if free < needed {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "the scratch folder {} has {free} bytes free; the restore test needs about {needed}",
                scratch.display()
            ),
        )
        .hint("free space there, or point restore_test.scratch at a larger filesystem"));
    }
    Ok(())
}

/// Removes the scratch file when the test ends, however it ends.
struct Scratch {
    path: PathBuf,
    _on_signal: crate::interrupt::Registration,
}

impl Scratch {
    fn new(path: &Path) -> Scratch {
        Scratch {
            path: path.to_path_buf(),
            _on_signal: crate::interrupt::remove_on_interrupt(path),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct FileAt(std::fs::File);

impl ReadAt for FileAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, offset).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read the restored image: {e}"),
            )
        })
    }
}

/// How the restored image's partition table differs from the recorded
/// one (nothing when they match).
fn compare_layout(image: &Path, recorded: &Layout) -> Result<Vec<String>> {
    let file =
        std::fs::File::open(image).map_err(|e| Error::io("open the restored image", image, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("measure the restored image", image, e))?
        .len();
    let now = Layout::read(&FileAt(file), size, recorded.sector_size, true)?;
    let mut differences = Vec::new();
    if now.table != recorded.table {
        differences.push(format!(
            "partition table {:?}, recorded {:?}",
            now.table, recorded.table
        ));
    }
    let shape = |l: &Layout| -> Vec<(u32, u64, u64)> {
        l.partitions
            .iter()
            .map(|p| (p.number, p.start, p.sectors))
            .collect()
    };
    if shape(&now) != shape(recorded) {
        differences.push(format!(
            "partitions (number, start, sectors) {:?}, recorded {:?}",
            shape(&now),
            shape(recorded)
        ));
    }
    Ok(differences)
}

/// The checker of a filesystem type: program, its read-only arguments,
/// and the package that has it.
fn checker(fstype: &str) -> Option<(&'static str, &'static [&'static str], &'static str)> {
    Some(match fstype {
        "ext2" | "ext3" | "ext4" => ("e2fsck", &["-fn"], "e2fsprogs"),
        "vfat" | "fat" | "msdos" => ("fsck.fat", &["-n"], "dosfstools"),
        "xfs" => ("xfs_repair", &["-n"], "xfsprogs"),
        "btrfs" => ("btrfs", &["check", "--readonly"], "btrfs-progs"),
        _ => return None,
    })
}

fn check(
    image: &Path,
    place: &str,
    content: &Content,
    span: Option<(u64, u64)>,
) -> FilesystemCheck {
    let mut result = FilesystemCheck {
        place: place.into(),
        fstype: content.fstype.clone(),
        checker: None,
        verdict: Verdict::NotChecked,
        note: String::new(),
    };
    let Some((program, args, package)) = checker(&content.fstype) else {
        result.note = format!("no checker for {}", content.fstype);
        return result;
    };
    result.checker = Some(format!("{program} {}", args.join(" ")));
    if crate::os::find_program(program, package).is_err() {
        result.note = format!("{program} is not installed (package {package})");
        return result;
    }
    match check_on_loop(image, span, program, args, &content.fstype) {
        Ok((verdict, note)) => {
            result.verdict = verdict;
            result.note = note;
        }
        Err(e) => {
            result.note = format!("could not check it: {e}");
        }
    }
    result
}

/// Runs a program; its exit code and its output, both streams.
fn output(program: &str, args: &[&str], device: &Path) -> Result<(i32, String)> {
    let out = Command::new(program)
        .args(args)
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run {program}: {e}")))?;
    // stderr first: e2fsck says its version there, and its verdict last
    // on stdout, which is the line kept for a clean check.
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok((out.status.code().unwrap_or(-1), text))
}

fn check_on_loop(
    image: &Path,
    span: Option<(u64, u64)>,
    program: &str,
    args: &[&str],
    fstype: &str,
) -> Result<(Verdict, String)> {
    // Writable: a journal may be replayed on this scratch copy.
    let attached = crate::disk::LoopDevice::writable(image, span)
        .map_err(|e| e.hint("the restore test needs root and a free loop device"))?;
    let (mut code, mut text) = output(program, args, attached.path())?;
    let mut replayed = false;
    if program == "e2fsck" && text.contains("skipping journal recovery") {
        // The scratch copy is ours: replay the journal, then check.
        output("e2fsck", &["-y", "-E", "journal_only"], attached.path())?;
        (code, text) = output(program, args, attached.path())?;
        replayed = true;
    }
    // xfs_repair -n: 2 is a dirty log (mount it to replay it); a log
    // with changes it would have to zero makes it say so and exit 1,
    // which is what every backup of a mounted XFS holds: no damage.
    let dirty_xfs_log = fstype == "xfs"
        && (code == 2 || (code == 1 && text.contains("valuable metadata changes in a log")));
    let verdict = match (fstype, code) {
        (_, 0) => Verdict::Clean,
        _ if dirty_xfs_log => Verdict::NeedsRecovery,
        _ => Verdict::Damaged,
    };
    let mut note = shorten(&text, verdict != Verdict::Clean);
    if replayed {
        note = format!("journal replayed on the scratch copy first; {note}");
    }
    Ok((verdict, note))
}

/// The last meaningful lines of a checker's output.
fn shorten(text: &str, failed: bool) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let keep = if failed { 4 } else { 1 };
    lines[lines.len().saturating_sub(keep)..].join(" / ")
}
