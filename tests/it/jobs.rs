//! Backup jobs (`platter run`): a job file's whole routine (backup,
//! retention, copies, restore test, hooks) end to end on image files and
//! loop devices; each step failing in turn and what still runs after it
//! (the issue's failure table); the job lock; job files refused for their
//! permissions or an unknown key; hooks past their timeout, and SIGTERM.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;

/// A sandbox with a main repository, a copy repository `copy`, a scratch
/// folder, a job state folder and a jobs folder.
struct JobSandbox {
    sandbox: Sandbox,
    copy: PathBuf,
    scratch: PathBuf,
    state: PathBuf,
}

impl JobSandbox {
    fn new() -> JobSandbox {
        let sandbox = Sandbox::new();
        let copy = sandbox.path("copy");
        run([
            OsStr::new("-r"),
            copy.as_os_str(),
            "init".as_ref(),
            "--plain".as_ref(),
            "--chunk-size".as_ref(),
            "64K".as_ref(),
        ])
        .ok();
        let scratch = sandbox.path("scratch");
        fs::create_dir(&scratch).unwrap();
        let state = sandbox.path("state");
        JobSandbox {
            sandbox,
            copy,
            scratch,
            state,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.sandbox.path(name)
    }

    /// Writes the job file `nightly.toml` (mode 600) holding `text`.
    fn job(&self, text: &str) -> PathBuf {
        let path = self.path("nightly.toml");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The usual job: `source`, keep 2 here, a copy keeping 1, a restore
    /// test; `extra` appended (more tables).
    fn usual_job(&self, source: &Path, extra: &str) -> PathBuf {
        self.job(&format!(
            "repository = {repo:?}\ntags = [\"nightly\"]\n\
             [[source]]\npath = {source:?}\n\
             [retention]\nkeep_last = 2\n\
             [[copy]]\nrepository = {copy:?}\nretention = {{ keep_last = 1 }}\n\
             [restore_test]\nscratch = {scratch:?}\n{extra}",
            repo = self.sandbox.repo,
            copy = self.copy,
            scratch = self.scratch,
        ))
    }

    fn command(&self, args: &[&OsStr]) -> std::process::Command {
        let mut cmd = platter();
        cmd.env("PLATTER_STATE_DIR", &self.state)
            .env("PLATTER_JOBS_DIR", self.path("jobs"))
            .args(args);
        cmd
    }

    /// `platter --json run --config FILE`, whatever its outcome.
    fn run_job(&self, file: &Path) -> Run {
        let args = [
            OsStr::new("--json"),
            "run".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
        ];
        let out = self.command(&args).output().expect("cannot run platter");
        Run::from_output(format!("--json run --config {}", file.display()), out)
    }

    fn snapshots_in(&self, repo: &Path) -> Vec<String> {
        let doc = run([
            OsStr::new("-r"),
            repo.as_os_str(),
            "--json".as_ref(),
            "snapshots".as_ref(),
        ])
        .ok()
        .json();
        listed(&doc)
    }
}

fn listed(doc: &Value) -> Vec<String> {
    let list = doc
        .as_array()
        .or_else(|| doc["snapshots"].as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// The steps of a summary as (step, result) pairs.
fn steps(summary: &Value) -> Vec<(String, String)> {
    summary["steps"]
        .as_array()
        .expect("a summary has steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_string(),
                s["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn step<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {summary:#}"))
}

/// An ext4 image of 8 MiB at `path`.
fn ext4_image(path: &Path) {
    sh(&format!(
        "truncate -s 8M {p} && mkfs.ext4 -q -b 4096 -E lazy_itable_init=0 {p}",
        p = path.display()
    ));
}

/// Writes a file into an ext4 image without mounting it.
fn put_file(image: &Path, name: &str, text: &str) {
    let src = image.with_extension(format!("{name}.src"));
    fs::write(&src, text).unwrap();
    sh(&format!(
        "debugfs -w -R 'write {} {name}' {} >/dev/null 2>&1",
        src.display(),
        image.display()
    ));
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// Pins: a job on an image file backs up, keeps 2 here, copies only what the copy's retention keeps (1 there, never the snapshot it removed again), and its restore test passes; the summary lists every step ok; `show` (text and --json) gives the test's result.
#[test]
fn a_job_on_an_image_file_backs_up_keeps_copies_and_tests_the_restore() {
    if !have(
        "a_job_on_an_image_file_backs_up_keeps_copies_and_tests_the_restore",
        &["root", "loop devices", "mkfs.ext4", "debugfs"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let file = jobs.usual_job(&image, "");
    let mut summaries = Vec::new();
    for round in 0..3 {
        if round > 0 {
            // Snapshot times have whole seconds: keep "newest" unambiguous.
            std::thread::sleep(Duration::from_millis(1100));
        }
        put_file(&image, &format!("f{round}"), &format!("round {round}"));
        summaries.push(jobs.run_job(&file).ok().json());
    }
    let last = &summaries[2];
    assert_eq!(
        steps(last),
        pairs(&[
            ("backup", "ok"),
            ("retention", "ok"),
            ("copy", "ok"),
            ("copy retention", "ok"),
            ("restore test", "ok"),
        ]),
        "{last:#}"
    );
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["result"], "ok");
    let here = jobs.snapshots_in(&jobs.sandbox.repo);
    let there = jobs.snapshots_in(&jobs.copy);
    assert_eq!(here.len(), 2, "keep_last 2 here: {here:?}");
    assert_eq!(there.len(), 1, "keep_last 1 there: {there:?}");
    let newest = step(last, "backup")["detail"].as_str().unwrap()[9..17].to_string();
    assert!(
        there[0].starts_with(&newest),
        "the copy holds the newest: {there:?} {newest}"
    );
    // Each run copied exactly its own new snapshot: the one the copy's
    // retention removed was not sent again.
    for s in &summaries {
        assert!(
            step(s, "copy")["detail"]
                .as_str()
                .unwrap()
                .starts_with("1 snapshot(s) copied"),
            "{s:#}"
        );
    }
    assert!(
        step(last, "restore test")["detail"]
            .as_str()
            .unwrap()
            .contains("ext4 clean"),
        "{last:#}"
    );
    assert_eq!(
        fs::read_dir(&jobs.scratch).unwrap().count(),
        0,
        "the scratch file stays"
    );
    // Each tested snapshot has its result next to it; prune removed the
    // result of the snapshot the retention forgot; verify calls none a
    // leftover; show prints it and snapshots marks it.
    let mut results: Vec<String> = fs::read_dir(jobs.sandbox.repo.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    results.sort();
    let mut live = here.clone();
    live.sort();
    assert_eq!(results, live, "one result per live snapshot");
    let report = verify_clean(&jobs.sandbox.repo);
    assert_eq!(report["leftovers"], Value::Array(vec![]), "{report:#}");
    let shown = jobs.sandbox.run(["show", "latest"]).ok().stdout.clone();
    assert!(shown.contains("restore test  ok"), "{shown}");
    assert!(shown.contains("the whole disk (ext4): clean"), "{shown}");
    let shown = jobs.sandbox.run(["--json", "show", "latest"]).ok().json();
    assert_eq!(shown["restore_test"]["result"], "ok", "{shown:#}");
    assert!(shown["id"].is_string(), "{shown:#}");
    let list = jobs.sandbox.run(["snapshots"]).ok().stdout.clone();
    assert!(list.lines().skip(1).all(|l| l.contains(" ok ")), "{list}");
    verify_clean(&jobs.copy);
}

// Pins: a job backs up a loop device (recorded by the path given) and copies it; both repositories restore it byte for byte.
#[test]
fn a_job_on_a_loop_device_backs_up_and_copies_it() {
    if !have(
        "a_job_on_a_loop_device_backs_up_and_copies_it",
        &["root", "loop devices", "mkfs.ext4"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let device = LoopDevice::attach(&image);
    let file = jobs.usual_job(&device.path, "");
    let summary = jobs.run_job(&file).ok().json();
    assert_eq!(
        steps(&summary),
        pairs(&[
            ("backup", "ok"),
            ("retention", "ok"),
            ("copy", "ok"),
            ("copy retention", "ok"),
            ("restore test", "ok"),
        ]),
        "{summary:#}"
    );
    let here = jobs.snapshots_in(&jobs.sandbox.repo);
    assert_eq!(here, jobs.snapshots_in(&jobs.copy));
    let expected = device.contents();
    jobs.sandbox.assert_restores(&here[0], &expected);
    let target = jobs.path("from-copy.img");
    run([
        OsStr::new("-r"),
        jobs.copy.as_os_str(),
        "restore".as_ref(),
        here[0].as_ref(),
        target.as_os_str(),
    ])
    .ok();
    assert_file_is(&target, &expected, "the copy's snapshot");
}

// Pins: a failed backup (source gone) skips the main repository's retention, while the copy and the restore test of the newest existing snapshot still run; the run exits with the backup's code (3).
#[test]
fn a_failed_backup_skips_retention_but_copies_and_tests_what_exists() {
    if !have(
        "a_failed_backup_skips_retention_but_copies_and_tests_what_exists",
        &["root", "loop devices", "mkfs.ext4"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let file = jobs.usual_job(&image, "");
    jobs.run_job(&file).ok();
    jobs.run_job(&file).ok();
    jobs.run_job(&file).ok();
    let before = jobs.snapshots_in(&jobs.sandbox.repo);
    fs::rename(&image, jobs.path("elsewhere.img")).unwrap();
    let run = jobs.run_job(&file);
    run.expect_code(3);
    let summary = run.json();
    assert_eq!(
        steps(&summary),
        pairs(&[
            ("backup", "failed"),
            ("retention", "skipped"),
            ("copy", "ok"),
            ("copy retention", "ok"),
            ("restore test", "ok"),
        ]),
        "{summary:#}"
    );
    assert_eq!(summary["exit_code"], 3);
    assert_eq!(
        jobs.snapshots_in(&jobs.sandbox.repo),
        before,
        "nothing was forgotten"
    );
}

// Pins: a copy target that is missing fails that copy and skips its retention only: the other copy, its retention and the restore test run; exit is the copy's code.
#[test]
fn a_missing_copy_target_fails_that_copy_only() {
    if !have(
        "a_missing_copy_target_fails_that_copy_only",
        &["root", "loop devices", "mkfs.ext4"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let gone = jobs.path("usb-not-plugged-in");
    let file = jobs.usual_job(
        &image,
        &format!("[[copy]]\nrepository = {gone:?}\nretention = {{ keep_last = 1 }}\n"),
    );
    let run = jobs.run_job(&file);
    let summary = run.json();
    let code = summary["exit_code"].as_i64().unwrap();
    assert!(code == 3 || code == 6, "{summary:#}");
    run.expect_code(code as i32);
    assert_eq!(
        steps(&summary),
        pairs(&[
            ("backup", "ok"),
            ("retention", "ok"),
            ("copy", "ok"),
            ("copy retention", "ok"),
            ("copy", "failed"),
            ("copy retention", "skipped"),
            ("restore test", "ok"),
        ]),
        "{summary:#}"
    );
    assert_eq!(jobs.snapshots_in(&jobs.copy).len(), 1);
    assert!(
        !gone.exists(),
        "nothing was made where the target is missing"
    );
}

// Pins: a snapshot of a damaged filesystem (its root inode cleared) fails the restore test with exit 4, naming the partition and the checker's finding; backup, retention and copies still ran.
#[test]
fn a_damaged_filesystem_fails_the_restore_test() {
    if !have(
        "a_damaged_filesystem_fails_the_restore_test",
        &["root", "loop devices", "mkfs.ext4", "debugfs", "e2fsck"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    sh(&format!(
        "debugfs -w -R 'clri <2>' {} >/dev/null 2>&1",
        image.display()
    ));
    let file = jobs.usual_job(&image, "");
    let run = jobs.run_job(&file);
    run.expect_code(4);
    let summary = run.json();
    assert_eq!(
        steps(&summary),
        pairs(&[
            ("backup", "ok"),
            ("retention", "ok"),
            ("copy", "ok"),
            ("copy retention", "ok"),
            ("restore test", "failed"),
        ]),
        "{summary:#}"
    );
    let error = &step(&summary, "restore test")["error"];
    assert_eq!(error["exit_code"], 4, "{summary:#}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the whole disk (ext4)"),
        "{summary:#}"
    );
    // `snapshots` says the test failed, not merely that there was one.
    let list = jobs.sandbox.run(["snapshots"]).ok().stdout.clone();
    assert!(list.contains(" failed "), "{list}");
}

// Pins: an ext4 backed up while mounted (its journal dirty) passes the restore test: the journal is replayed on the scratch copy, not reported as damage.
#[test]
fn a_dirty_journal_is_replayed_not_reported_as_damage() {
    if !have(
        "a_dirty_journal_is_replayed_not_reported_as_damage",
        &["root", "loop devices", "mkfs.ext4", "e2fsck"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let device = LoopDevice::attach(&image);
    let point = jobs.path("mnt");
    fs::create_dir(&point).unwrap();
    let mounted = Mounted::mount(&device.path, &point);
    fs::write(point.join("data"), vec![7u8; 100_000]).unwrap();
    sh("sync");
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {dev:?}\nallow_mounted = true\n\
         [restore_test]\nscratch = {scratch:?}\n",
        repo = jobs.sandbox.repo,
        dev = device.path,
        scratch = jobs.scratch,
    ));
    let summary = jobs.run_job(&file).ok().json();
    drop(mounted);
    let detail = step(&summary, "restore test")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("ext4 clean"), "{summary:#}");
}

// Pins: a before hook that fails skips the backups (and so the retention), the after hook still runs, and the on_failure hook gets the JSON summary on its stdin; exit 2.
#[test]
fn a_failing_hook_fails_the_run_and_after_and_failure_hooks_still_run() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(17));
    let after = jobs.path("after-ran");
    let told = jobs.path("failure.json");
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n[retention]\nkeep_last = 1\n\
         [hooks]\nbefore = [\"echo stopping the VM; exit 3\"]\nafter = [\"touch {after}\"]\n\
         on_failure = [\"cat > {told}\"]\n",
        repo = jobs.sandbox.repo,
        after = after.display(),
        told = told.display(),
    ));
    let run = jobs.run_job(&file);
    run.expect_code(2);
    let summary = run.json();
    assert_eq!(
        steps(&summary),
        pairs(&[
            ("hook before", "failed"),
            ("backup", "skipped"),
            ("retention", "skipped"),
            ("hook after", "ok"),
            ("hook on_failure", "ok"),
        ]),
        "{summary:#}"
    );
    assert!(after.exists(), "the after hook did not run");
    let given: Value = serde_json::from_str(&fs::read_to_string(&told).unwrap()).unwrap();
    assert_eq!(given["result"], "failed");
    assert_eq!(given["steps"][0]["result"], "failed");
    assert!(jobs.sandbox.snapshot_ids().is_empty());
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

// Pins: a hook that hangs past its timeout is stopped with its whole process group (a background child too), the run fails with exit 2 within seconds, and the after hook runs.
#[test]
fn a_hook_past_its_timeout_is_stopped_with_its_whole_group() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(18));
    let pid = jobs.path("child.pid");
    let after = jobs.path("after-ran");
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
         [hooks]\ntimeout = \"1s\"\nbefore = [\"sleep 300 & echo $! > {pid}; trap '' TERM; sleep 300\"]\n\
         after = [\"touch {after}\"]\n",
        repo = jobs.sandbox.repo,
        pid = pid.display(),
        after = after.display(),
    ));
    let started = Instant::now();
    let run = jobs.run_job(&file);
    run.expect_code(2);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout did not stop the hook"
    );
    let summary = run.json();
    assert!(
        step(&summary, "hook before")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ran out of its 1s"),
        "{summary:#}"
    );
    let child = fs::read_to_string(&pid).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || gone(child.trim())),
        "the hook's background child {child} outlived the timeout"
    );
    assert!(after.exists());
}

// Pins: a second run of a job while the first runs exits 5 naming the job; the first completes.
#[test]
fn two_runs_of_one_job_never_overlap() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(19));
    let started = jobs.path("started");
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
         [hooks]\nbefore = [\"touch {started}; sleep 2\"]\n",
        repo = jobs.sandbox.repo,
        started = started.display(),
    ));
    let args = [OsStr::new("run"), "--config".as_ref(), file.as_os_str()];
    let first = jobs
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || started.exists()));
    let out = jobs.command(&args).output().unwrap();
    let second = Run::from_output("run --config nightly.toml".into(), out);
    second.refused(5, "job nightly is already running");
    let status = first.wait_with_output().unwrap().status;
    assert!(status.success(), "the first run failed: {status}");
    assert_eq!(jobs.sandbox.snapshot_ids().len(), 1);
}

// Pins: a job file others can write is refused, and one others can read when it holds a passphrase inline; each names the file and what to do.
#[test]
fn job_files_with_unsafe_permissions_are_refused() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(20));
    let plain = format!(
        "repository = {:?}\n[[source]]\npath = {image:?}\n",
        jobs.sandbox.repo
    );
    let file = jobs.job(&plain);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    jobs.run_job(&file).refused(2, "can be written by others");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    jobs.run_job(&file).ok();

    let secret = jobs.job(&plain.replace(
        "[[source]]",
        "passphrase = { value = \"hunter2\" }\n[[source]]",
    ));
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let refused = jobs.run_job(&secret);
    refused.refused(2, "holds a passphrase");
    assert!(
        refused.stderr.contains("chmod 600"),
        "{}",
        refused.describe()
    );
    assert!(
        !refused.stderr.contains("hunter2"),
        "{}",
        refused.describe()
    );
}

// Pins: an unknown key in a job file (a misspelt keep_last) is refused with exit 2 naming the key and its line; nothing is backed up.
#[test]
fn an_unknown_key_in_a_job_file_is_refused_by_name() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(21));
    let file = jobs.job(&format!(
        "repository = {:?}\n[[source]]\npath = {image:?}\n[retention]\nkeep_lsat = 3\n",
        jobs.sandbox.repo
    ));
    let run = jobs.run_job(&file);
    run.refused(2, "keep_lsat");
    assert!(run.stderr.contains("line 5"), "{}", run.describe());
    assert!(jobs.sandbox.snapshot_ids().is_empty());
}

// Pins: a hook that would freeze the filesystem holding the repository (or the job log, or the scratch folder) is refused before anything runs.
#[test]
fn a_hook_freezing_the_repository_filesystem_is_refused() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(22));
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
         [hooks]\nbefore = [\"fsfreeze -f {dir}\"]\nafter = [\"fsfreeze -u {dir}\"]\n",
        repo = jobs.sandbox.repo,
        dir = jobs.path("").display(),
    ));
    jobs.run_job(&file).refused(2, "holds the repository");
    assert!(jobs.sandbox.snapshot_ids().is_empty());
}

// Pins: SIGTERM during a run (systemctl stop) stops the running hook's group, runs the after hooks with the summary so far, writes the run to the job log as interrupted, and exits 143.
#[test]
fn sigterm_runs_the_after_hooks_and_exits_143() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(23));
    let started = jobs.path("started");
    let told = jobs.path("after.json");
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
         [hooks]\nbefore = [\"touch {started}; sleep 30\"]\nafter = [\"cat > {told}\"]\n",
        repo = jobs.sandbox.repo,
        started = started.display(),
        told = told.display(),
    ));
    let took = terminate_run(&jobs, &file, &[], (&started, Duration::from_secs(10)));
    assert!(
        took < Duration::from_secs(10),
        "the before hook was not stopped"
    );
    let given: Value = serde_json::from_str(&fs::read_to_string(&told).unwrap()).unwrap();
    assert_eq!(given["result"], "interrupted", "{given:#}");
    // The run is in the job log, as interrupted.
    let log = fs::read_to_string(jobs.state.join("nightly.log")).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "interrupted", "{last:#}");
}

// Pins: `schedule NAME --daily` writes a service and a timer that `systemd-analyze verify` accepts (persistent, randomised delay, idle priority), whose ExecStart runs the job; `schedule --list` shows its last run from the job log and its next; `jobs` shows the runs with their steps; `--remove` takes the units away; a calendar that is no expression, or that never elapses (February 30th), is refused and writes nothing. Enabling through systemctl is not tried: PID 1 is not systemd here.
#[test]
fn schedule_writes_units_that_verify_and_whose_exec_start_runs_the_job() {
    if !have(
        "schedule_writes_units_that_verify_and_whose_exec_start_runs_the_job",
        &["systemd-analyze"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(24));
    fs::create_dir(jobs.path("jobs")).unwrap();
    let units = jobs.path("units");
    fs::create_dir(&units).unwrap();
    let file = jobs.path("jobs/nightly.toml");
    fs::write(
        &file,
        format!(
            "repository = {:?}\n[[source]]\npath = {image:?}\n",
            jobs.sandbox.repo
        ),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let platter_env = |args: &[&str]| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = jobs
            .command(&args)
            .env("PLATTER_SYSTEMD_DIR", &units)
            .output()
            .unwrap();
        Run::from_output(
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out,
        )
    };
    let written = platter_env(&["--json", "schedule", "nightly", "--daily"])
        .ok()
        .json();
    assert_eq!(written["enabled"], false, "{written:#}");
    let service = units.join("platter-job-nightly.service");
    let timer = units.join("platter-job-nightly.timer");
    system(
        "systemd-analyze",
        &["verify".as_ref(), service.as_os_str(), timer.as_os_str()],
    );
    let timer_text = fs::read_to_string(&timer).unwrap();
    for line in ["OnCalendar=daily", "Persistent=true", "RandomizedDelaySec="] {
        assert!(timer_text.contains(line), "{timer_text}");
    }
    let service_text = fs::read_to_string(&service).unwrap();
    for line in ["Nice=19", "IOSchedulingClass=idle", "KillMode=mixed"] {
        assert!(service_text.contains(line), "{service_text}");
    }
    system("systemd-analyze", &["calendar".as_ref(), "daily".as_ref()]);
    eprintln!("SKIPPED (part): enabling the timer with systemctl: PID 1 is not systemd here");

    let exec = service_text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let status = std::process::Command::new(words[0])
        .args(&words[1..])
        .env("PLATTER_STATE_DIR", &jobs.state)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the ExecStart line failed: {exec}");
    assert_eq!(jobs.sandbox.snapshot_ids().len(), 1);

    let listed = platter_env(&["--json", "schedule", "--list"]).ok().json();
    assert_eq!(listed[0]["job"], "nightly", "{listed:#}");
    assert_eq!(listed[0]["last_result"], "ok", "{listed:#}");
    assert!(
        !listed[0]["next_run"]
            .as_str()
            .unwrap()
            .starts_with("unknown"),
        "{listed:#}"
    );

    let runs = platter_env(&["--json", "jobs", "nightly", "--last", "1"])
        .ok()
        .json();
    let run = &runs["jobs"]["nightly"][0];
    assert_eq!(steps(run), pairs(&[("backup", "ok")]), "{runs:#}");
    let text = platter_env(&["jobs"]).ok().stdout.clone();
    assert!(
        text.contains("job nightly") && text.contains("backup"),
        "{text}"
    );

    platter_env(&["schedule", "nightly", "--remove"]).ok();
    assert!(!service.exists() && !timer.exists());
    platter_env(&["schedule", "nightly", "--on", "not a day"]).refused(2, "no calendar expression");
    // A date no year has: the timer would never fire.
    platter_env(&["schedule", "nightly", "--on", "*-02-30"]).refused(2, "never elapses");
    assert!(!service.exists() && !timer.exists());
}

/// Writes a live exclusive lock, held by this test process, into `repo`
/// (as another job's prune would hold it).
fn hold_exclusive_lock(repo: &Path) -> PathBuf {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let ticks: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let body = serde_json::json!({
        "kind": "exclusive",
        "hostname": nix::unistd::gethostname().unwrap().into_string().unwrap(),
        "pid": std::process::id(),
        "start_ticks": ticks,
        "command": "prune",
        "time": "2024-01-01T00:00:00Z",
    })
    .to_string();
    let text = format!(
        "{{\"platter\":\"lock\",\"version\":1,\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    let path = repo.join("locks").join(random_name().repeat(4));
    fs::write(&path, text).unwrap();
    path
}

// Pins: a job whose repository another command holds waits for it (up to lock_wait) instead of failing: with lock_wait 1s it fails with exit 5 naming the holder, with a longer one it backs up once the lock goes.
#[test]
fn a_job_waits_for_the_repository_lock_up_to_its_limit() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(25));
    let lock = hold_exclusive_lock(&jobs.sandbox.repo);
    let job = |wait: &str| {
        jobs.job(&format!(
            "repository = {:?}\nlock_wait = \"{wait}\"\n[[source]]\npath = {image:?}\n",
            jobs.sandbox.repo
        ))
    };
    let short = job("1s");
    let run = jobs.run_job(&short);
    run.expect_code(5);
    let summary = run.json();
    let message = step(&summary, "backup")["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("in use by `prune`"), "{summary:#}");

    let long = job("60s");
    let args = [
        OsStr::new("--json"),
        "run".as_ref(),
        "--config".as_ref(),
        long.as_os_str(),
    ];
    let child = jobs
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run::from_output("--json run --config (lock_wait 60s)".into(), out);
    run.ok();
    assert!(run.stderr.contains("waiting for it"), "{}", run.describe());
    assert_eq!(jobs.sandbox.snapshot_ids().len(), 1);
}

// Pins: with boot_test, the restore test also boots the newest snapshot
// (no network) and waits for boot_expect on its serial console: the run
// passes when it shows, `show` prints the boot, and a text that never
// shows fails the restore test (exit 4) quoting the console.
#[test]
fn a_boot_test_boots_the_newest_snapshot_to_the_expected_text() {
    let test = "a_boot_test_boots_the_newest_snapshot_to_the_expected_text";
    if !have(
        test,
        &[
            "root",
            "qemu-system-x86_64",
            "qemu-img",
            "fusermount3",
            "mcopy",
        ],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    fs::copy(boot_fixtures().join("bios-gpt.img"), &image).unwrap();
    let marker = format!("{}-{}", "BOOT-MARKER", "OK");
    let job = |expect: &str| {
        jobs.job(&format!(
            "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
             [restore_test]\nscratch = {scratch:?}\nboot_test = true\n\
             boot_expect = {expect:?}\nboot_timeout = \"120s\"\n",
            repo = jobs.sandbox.repo,
            scratch = jobs.scratch,
        ))
    };
    let summary = jobs.run_job(&job(&marker)).ok().json();
    let detail = step(&summary, "restore test")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("booted:"), "{summary:#}");
    let shown = jobs.sandbox.run(["show", "latest"]).ok().stdout.clone();
    assert!(shown.contains("boot test: ok"), "{shown}");

    let never = format!("{}-{}", "NEVER", "SHOWN");
    let failed = jobs.run_job(&job(&never));
    failed.expect_code(4);
    let summary = failed.json();
    let restore = step(&summary, "restore test");
    let said = restore.to_string();
    assert!(
        said.contains("boot test") && said.contains(&marker),
        "{summary:#}"
    );
    let left: Vec<_> = fs::read_dir(&jobs.scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

// Pins: a whole disk's job counts only its whole-disk snapshots: its
// retention never forgets the snapshots of one partition of that disk
// (made by hand or by another job), and its restore test tests its own.
#[test]
fn a_whole_disk_job_leaves_its_partitions_snapshots_alone() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    fs::copy(boot_fixtures().join("bios-gpt.img"), &image).unwrap();
    for _ in 0..3 {
        jobs.sandbox
            .run([
                "backup".as_ref(),
                image.as_os_str(),
                "--partition".as_ref(),
                "1".as_ref(),
                "--tag".as_ref(),
                "keep-me".as_ref(),
            ])
            .ok();
    }
    let file = jobs.job(&format!(
        "repository = {:?}\n[[source]]\npath = {image:?}\n[retention]\nkeep_last = 1\n",
        jobs.sandbox.repo
    ));
    jobs.run_job(&file).ok();
    let kept = jobs
        .sandbox
        .run(["--json", "snapshots", "--tag", "keep-me"])
        .ok()
        .json();
    assert_eq!(
        listed(&kept).len(),
        3,
        "partition snapshots were forgotten: {kept:#}"
    );
}

// Pins: a copy target that is the job's own repository (or another copy
// target), by any spelling, is refused before anything runs: its own
// retention would forget the main repository's snapshots.
#[test]
fn a_copy_target_that_is_the_repository_itself_is_refused() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(22));
    let repo = jobs.sandbox.repo.display().to_string();
    for target in [format!("{repo}/"), format!("{repo}/../repo")] {
        let file = jobs.job(&format!(
            "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
             [[copy]]\nrepository = {target:?}\nretention = {{ keep_last = 1 }}\n"
        ));
        jobs.run_job(&file).refused(2, "same repository");
        assert!(jobs.sandbox.snapshot_ids().is_empty());
    }
}

// Pins: a job log line that is not a run (cut mid-character by a full
// disk, garbage, a JSON value that is no summary) is skipped: `platter
// jobs` still lists the runs around it.
#[test]
fn a_damaged_job_log_line_is_skipped() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(23));
    let file = jobs.job(&format!(
        "repository = {:?}\n[[source]]\npath = {image:?}\n",
        jobs.sandbox.repo
    ));
    jobs.run_job(&file).ok();
    let log = jobs.state.join("nightly.log");
    let mut bytes = fs::read(&log).unwrap();
    bytes.extend_from_slice(b"\xff\xfe garbage\n[1,2]\n\"str\"\n");
    fs::write(&log, &bytes).unwrap();
    jobs.run_job(&file).ok();
    let out = jobs
        .command(&[OsStr::new("--json"), "jobs".as_ref(), "nightly".as_ref()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("\"backup\"").count() >= 2, "{text}");
    assert!(!text.contains("\"str\""), "{text}");
}

// Pins: `schedule` neither replaces nor removes a unit it did not write
// (a hand-written one under the same name), and a job found through a
// relative jobs folder gets an absolute path in its unit (systemd starts
// services in /).
#[test]
fn schedule_leaves_units_it_did_not_write_alone() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(24));
    fs::create_dir(jobs.path("jobs")).unwrap();
    let file = jobs.path("jobs").join("nightly.toml");
    fs::write(
        &file,
        format!(
            "repository = {:?}\n[[source]]\npath = {image:?}\n",
            jobs.sandbox.repo
        ),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let units = jobs.path("units");
    fs::create_dir(&units).unwrap();
    let schedule = |args: &[&str]| {
        let mut cmd = jobs.command(&[OsStr::new("schedule")]);
        cmd.args(args)
            .env("PLATTER_SYSTEMD_DIR", &units)
            .env("PLATTER_JOBS_DIR", "jobs")
            .current_dir(jobs.path(""));
        let out = cmd.output().unwrap();
        Run::from_output(format!("schedule {}", args.join(" ")), out)
    };
    schedule(&["nightly", "--daily"]).ok();
    let service = units.join("platter-job-nightly.service");
    let text = fs::read_to_string(&service).unwrap();
    assert!(
        text.contains(&format!("--config {}", file.display())),
        "{text}"
    );
    schedule(&["nightly", "--remove"]).ok();
    let mine = "[Unit]\nDescription=mine\n";
    fs::write(&service, mine).unwrap();
    schedule(&["nightly", "--daily"]).refused(2, "not written by");
    schedule(&["nightly", "--remove"]).refused(2, "not written by");
    assert_eq!(fs::read_to_string(&service).unwrap(), mine);
}

// Pins: a tag the backup would refuse (empty, or with control characters)
// is refused when the job file is read, before any hook runs.
#[test]
fn bad_tags_are_refused_before_the_hooks_run() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(25));
    let marker = jobs.path("before-ran");
    for tag in ["", "night\\u001b[2J"] {
        let file = jobs.job(&format!(
            "repository = {:?}\ntags = [\"{tag}\"]\n[[source]]\npath = {image:?}\n\
             [hooks]\nbefore = [\"touch {}\"]\n",
            jobs.sandbox.repo,
            marker.display()
        ));
        jobs.run_job(&file).refused(2, "tag");
        assert!(!marker.exists(), "the before hook ran for tag {tag:?}");
    }
}

// Pins: SIGTERM while the restore test checks the restored filesystem
// detaches its loop device and removes its scratch file (the run exits
// 143); before, the loop device stayed attached to the deleted image.
#[test]
fn sigterm_during_the_restore_test_leaves_no_loop_device_or_scratch_file() {
    if !have(
        "sigterm_during_the_restore_test_leaves_no_loop_device_or_scratch_file",
        &["root", "loop devices", "mkfs.ext4", "losetup"],
    ) {
        return;
    }
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    ext4_image(&image);
    let file = jobs.usual_job(&image, "");
    // An e2fsck that says it started, then waits.
    let bin = jobs.path("bin");
    fs::create_dir(&bin).unwrap();
    let started = jobs.path("checking");
    let fake = bin.join("e2fsck");
    fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexec sleep 20\n", started.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let env = [("PATH", path)];
    terminate_run(&jobs, &file, &env, (&started, Duration::from_secs(30)));
    let left: Vec<_> = fs::read_dir(&jobs.scratch).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let attached = std::process::Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    let attached = String::from_utf8_lossy(&attached.stdout).into_owned();
    let scratch = jobs.scratch.display().to_string();
    assert!(!attached.contains(&scratch), "{attached}");
}

// Pins: SIGTERM during a before hook that ignores SIGTERM ends the hook's
// whole group with SIGKILL after the grace (3 s), so nothing of it
// outlives the run, which exits 143.
#[test]
fn sigterm_kills_a_hook_that_ignores_it() {
    let jobs = JobSandbox::new();
    let image = jobs.path("disk.img");
    Image::random(image.clone(), 4 * CHUNK, &mut Rng::new(29));
    let started = jobs.path("started");
    // A duration no other process here sleeps for, to find it by.
    let marker = "sleep 37.25";
    let file = jobs.job(&format!(
        "repository = {repo:?}\n[[source]]\npath = {image:?}\n\
         [hooks]\nbefore = [\"trap '' TERM; touch {started}; {marker}\"]\n",
        repo = jobs.sandbox.repo,
        started = started.display(),
    ));
    let took = terminate_run(&jobs, &file, &[], (&started, Duration::from_secs(10)));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let alive = || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    assert!(
        wait_until(Duration::from_secs(2), || !alive()),
        "the hook outlived the run"
    );
}

/// Runs job `file` with `env` added, sends it SIGTERM once `ready` exists
/// (within `wait`), and checks that it exits 143; returns how long it took
/// after the signal.
fn terminate_run(
    jobs: &JobSandbox,
    file: &Path,
    env: &[(&str, String)],
    (ready, wait): (&Path, Duration),
) -> Duration {
    let args = [OsStr::new("run"), "--config".as_ref(), file.as_os_str()];
    let mut command = jobs.command(&args);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(wait, || ready.exists()));
    let begun = Instant::now();
    // SAFETY: kill has no memory effects; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    begun.elapsed()
}
