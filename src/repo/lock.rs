//! Repository locks, so that two processes cannot corrupt each other.
//!
//! A lock is a small file in `locks/`, written atomically, naming the host,
//! the pid and the process start time. Shared locks (backup, restore,
//! verify) coexist; an exclusive lock (prune, unlock of live locks) excludes
//! everything. A lock whose process is gone from this host (or whose pid now
//! belongs to a younger process) is stale and is removed by the next run.
//! In an encrypted repository lock files are sealed like manifests.

use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::Registration;
use crate::repo::backend::Backend;
use crate::repo::{Repository, sealed};
use crate::repo::{envelope, hex_id, random_id};

const KIND: &str = "lock";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub hostname: String,
    pub pid: u32,
    /// Process start time in clock ticks since boot (from /proc), so a reused
    /// pid is not mistaken for the owner.
    pub start_ticks: u64,
    pub command: String,
    pub time: String,
}

/// A held lock; released on drop.
pub struct RepoLock<'a> {
    backend: &'a dyn Backend,
    name: String,
    /// Removes the lock file if the process is interrupted.
    _cleanup: Option<Registration>,
}

impl Drop for RepoLock<'_> {
    fn drop(&mut self) {
        // Failing to remove is reported on the next run as a stale lock.
        let _ = self.backend.remove(&self.name);
    }
}

/// What was found in `locks/`.
pub struct FoundLock {
    pub name: String,
    pub info: Option<LockInfo>,
    pub stale: bool,
}

/// How long a shared locker waits for an exclusive lock to go away: an
/// exclusive locker that finds others refuses and removes its lock at
/// once, so one that is in the way is usually gone within moments.
const SHARED_PATIENCE: Duration = Duration::from_secs(5);

pub fn acquire<'a>(
    repo: &'a Repository,
    kind: LockKind,
    command: &str,
) -> Result<(RepoLock<'a>, Vec<FoundLock>)> {
    let started = Instant::now();
    let mut cleared = Vec::new();
    loop {
        match try_acquire(repo, kind, command, &mut cleared)? {
            Ok(lock) => return Ok((lock, cleared)),
            Err(conflict) => {
                let exclusive = conflict
                    .info
                    .as_ref()
                    .is_some_and(|o| o.kind == LockKind::Exclusive);
                if kind == LockKind::Shared && exclusive && started.elapsed() < SHARED_PATIENCE {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                return Err(busy(&conflict));
            }
        }
    }
}

/// Writes our lock and checks the others: our lock, or (after removing
/// ours again) the first lock in the way.
fn try_acquire<'a>(
    repo: &'a Repository,
    kind: LockKind,
    command: &str,
    cleared: &mut Vec<FoundLock>,
) -> Result<std::result::Result<RepoLock<'a>, FoundLock>> {
    let info = LockInfo {
        kind,
        hostname: hostname(),
        pid: std::process::id(),
        start_ticks: process_start_ticks(std::process::id()).unwrap_or(0),
        command: command.to_string(),
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let name = format!("locks/{}", hex_id(&random_id()));
    let backend = repo.backend();
    let sealed = sealed::encode(
        repo.sealing(),
        &name,
        &envelope::seal(KIND, VERSION, &info)?,
    )?;
    let cleanup = backend.remove_on_interrupt(&name);
    backend.write_whole(&name, &sealed)?;
    let lock = RepoLock {
        backend,
        name,
        _cleanup: cleanup,
    };
    for found in list(repo)? {
        if found.name == lock.name {
            continue;
        }
        if found.stale {
            backend.remove(&found.name)?;
            cleared.push(found);
            continue;
        }
        let conflicts = match &found.info {
            Some(other) => kind == LockKind::Exclusive || other.kind == LockKind::Exclusive,
            // A lock file being written right now, or a damaged one: be safe.
            None => kind == LockKind::Exclusive,
        };
        if conflicts {
            // Dropping `lock` removes our lock file.
            return Ok(Err(found));
        }
    }
    Ok(Ok(lock))
}

fn busy(found: &FoundLock) -> Error {
    let who = found.info.as_ref().map_or_else(
        || format!("unreadable lock {}", found.name),
        |o| {
            format!(
                "`{}` (pid {} on {}, since {})",
                o.command, o.pid, o.hostname, o.time
            )
        },
    );
    Error::busy(format!("the repository is in use by {who}"))
        .hint("wait for it to finish; if that process is gone for sure, run `platter unlock`")
}

/// Every lock file, with whether it is stale.
pub fn list(repo: &Repository) -> Result<Vec<FoundLock>> {
    let backend = repo.backend();
    let me = hostname();
    let mut out = Vec::new();
    for file in backend.list("locks")? {
        if file.starts_with('.') {
            continue;
        }
        let name = format!("locks/{file}");
        let info = match repo.read_sealed(&name) {
            Ok(bytes) => envelope::open::<LockInfo>(KIND, VERSION, &bytes, &name).ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            // Unreadable: someone's lock all the same (or junk for
            // `unlock --all`).
            Err(_) => None,
        };
        let stale = info
            .as_ref()
            .is_some_and(|i| i.hostname == me && !process_alive(i.pid, i.start_ticks));
        out.push(FoundLock { name, info, stale });
    }
    Ok(out)
}

/// Removes stale locks, and with `all` every lock. Returns what it removed.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<Vec<FoundLock>> {
    let mut removed = Vec::new();
    for found in list(repo)? {
        if found.stale || all {
            repo.backend().remove(&found.name)?;
            removed.push(found);
        }
    }
    Ok(removed)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn process_alive(pid: u32, start_ticks: u64) -> bool {
    match process_start_ticks(pid) {
        None => false,
        Some(now) => start_ticks == 0 || now == start_ticks,
    }
}

/// Field 22 of /proc/PID/stat: when the process started.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it do not.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_pid_is_not() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).unwrap();
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(u32::MAX - 1, 0));
    }
}
