//! What platter keeps about its jobs on this machine: a lock per job (so
//! two runs of one job never overlap) and a log of its runs (JSON lines,
//! one summary a line, read by `platter jobs` and `platter schedule
//! --list`). Both live in the state folder, /var/lib/platter/jobs unless
//! `PLATTER_STATE_DIR` names another.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::error::{Error, Result};

pub const STATE_DIR: &str = "/var/lib/platter/jobs";

/// The most runs `runs` reads back from a log.
const MAX_RUNS: usize = 10_000;

pub fn state_dir() -> PathBuf {
    std::env::var_os("PLATTER_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(STATE_DIR))
}

fn make_state_dir() -> Result<PathBuf> {
    let dir = state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("create the job state folder", &dir, e))?;
    Ok(dir)
}

/// The job log of `job`.
pub fn log_path(job: &str) -> PathBuf {
    state_dir().join(format!("{job}.log"))
}

/// A job's lock, held until dropped (the kernel lets go of it when the
/// process ends, however it ends).
pub struct JobLock {
    _file: File,
}

/// Takes the lock of `job`, or fails Busy naming the run that holds it.
pub fn lock_job(job: &str) -> Result<JobLock> {
    let path = make_state_dir()?.join(format!("{job}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A link planted in the state folder must not make root write
        // where it points.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("open the job lock", &path, e))?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::busy(format!(
            "job {job} is already running{} (lock {})",
            match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            },
            path.display()
        ))
        .hint("wait for that run to end; two runs of one job never overlap"));
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(JobLock { _file: file })
}

/// Appends one run's summary to the job's log.
pub fn append_run(job: &str, summary: &serde_json::Value) -> Result<()> {
    let path = make_state_dir()?.join(format!("{job}.log"));
    let mut line = serde_json::to_vec(summary).map_err(Error::internal)?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("open the job log", &path, e))?;
    // One write of the whole line: an append of a line is not mixed with
    // another process's.
    file.write_all(&line)
        .map_err(|e| Error::io("write the job log", &path, e))
}

/// The last `n` runs of `job`, oldest first; lines that are not JSON (a
/// line cut by a full disk) are skipped.
/// The longest log line read as a run (a run's summary is a few KiB).
const MAX_LINE: usize = 1 << 20;

pub fn runs(job: &str, n: usize) -> Result<Vec<serde_json::Value>> {
    let path = log_path(job);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read the job log", &path, e)),
    };
    let mut all = std::collections::VecDeque::new();
    // Lines are bytes: one cut by a full disk (mid-character too) or
    // damaged is skipped, and none is held beyond MAX_LINE.
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("read the job log", &path, e))?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() >= MAX_LINE {
            // Too long to be a run: skip to its end.
            let mut rest = Vec::new();
            while (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut rest)
                .map_err(|e| Error::io("read the job log", &path, e))?
                > 0
            {
                if rest.last() == Some(&b'\n') {
                    break;
                }
                rest.clear();
            }
            continue;
        }
        let run = serde_json::from_slice::<serde_json::Value>(&line);
        if let Ok(run @ serde_json::Value::Object(_)) = run {
            all.push_back(run);
            if all.len() > n.min(MAX_RUNS) {
                all.pop_front();
            }
        }
    }
    Ok(all.into())
}

/// The names of jobs that have a log.
pub fn logged_jobs() -> Result<Vec<String>> {
    let dir = state_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the job state folder", &dir, e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}
