//! Repository locks, so that two processes cannot corrupt each other.
//!
//! A lock is a small file in `locks/`, written atomically, naming the host,
//! the pid and the process start time. Shared locks (backup, restore,
//! verify) coexist; an exclusive lock (prune, unlock of live locks) excludes
//! everything. In an encrypted repository lock files are sealed like
//! manifests.
//!
//! A held lock is written again every `REFRESH_EVERY`, so its time in the
//! store (a file's mtime, an object's Last-Modified) stays fresh. A lock is
//! stale, and removed by the next command that takes a lock, when:
//! - its time in the store is more than `STALE_AFTER` older than the lock
//!   this command just wrote, whatever host wrote it: judged by the
//!   store's clock alone, so hosts sharing a bucket need not agree on the
//!   time (`unlock`, which writes no lock, compares with this machine's
//!   clock);
//! - or its process is gone from this host (or its pid now belongs to a
//!   younger process).
//!
//! A command whose own lock went that long without a refresh (a suspended
//! laptop, a long outage) may have been judged stale by another host, and
//! a prune there may have deleted what it stored: `check_held`, which a
//! writer calls before each step that commits its data, then fails.
//! Another lock is never removed by itself otherwise: `platter unlock
//! --all` does that. Unfinished lock writes of killed commands are removed
//! by `unlock` and `prune` (see `backend`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::interrupt::Registration;
use crate::owner::{hostname, process_alive, process_start_ticks};
use crate::repo::backend::{Backend, SharedBackend};
use crate::repo::names::{Folder, lock_name};
use crate::repo::{LockId, envelope};
use crate::repo::{Repository, sealed};

const KIND: &str = "lock";
const VERSION: u32 = 1;

/// A held lock is written again this often.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A lock whose time in the store is this much older than a fresh write is
/// stale, whatever host wrote it: six refreshes missed.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

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

/// A held lock; refreshed in the background while held, released on drop.
pub struct RepoLock<'a> {
    backend: &'a dyn Backend,
    name: String,
    fresh: Arc<Freshness>,
    /// Stops the refresher when dropped.
    _refresher: Option<Refresher>,
    /// Removes the lock file if the process is interrupted.
    _cleanup: Option<Registration>,
}

/// What the refresher and `check_held` share: the lock's bytes, and the
/// longest time the lock went without a refresh, by the store's clock.
struct Freshness {
    bytes: Vec<u8>,
    longest_gap: Mutex<Duration>,
}

impl Freshness {
    /// Writes the lock again; notes how long it had gone unrefreshed, by
    /// the store's times of the old and the new file.
    fn refresh(&self, backend: &dyn Backend, name: &str) -> Result<()> {
        let before = backend.open(name)?.modified();
        backend.write_whole(name, &self.bytes)?;
        let after = backend.open(name)?.modified();
        if let (Some(before), Some(after)) = (before, after)
            && let Ok(gap) = after.duration_since(before)
            && let Ok(mut longest) = self.longest_gap.lock()
        {
            *longest = (*longest).max(gap);
        }
        Ok(())
    }
}

/// The thread that refreshes a lock; stops when dropped.
struct Refresher {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Refresher {
    fn start(backend: SharedBackend, name: String, fresh: Arc<Freshness>) -> Option<Refresher> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("lock refresh".into())
            .spawn(move || {
                // A failed refresh is tried again next time; a lock that
                // goes stale meanwhile is caught by `check_held`.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(REFRESH_EVERY)
                {
                    let _ = fresh.refresh(&*backend, &name);
                }
            })
            .ok()?;
        Some(Refresher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RepoLock<'_> {
    fn drop(&mut self) {
        // Stop refreshing before removing, or a refresh could bring the
        // file back.
        drop(self._refresher.take());
        // The command's work is done (or failed on its own): a lock that
        // stays is only in the way, and the next run on this host clears
        // it as stale. Say so, so that nobody wonders why.
        if let Err(e) = self.backend.remove(&self.name) {
            crate::printable::to_stderr(&format!(
                "warning: could not release the repository lock: {e}; the next command on \
                 this host removes it, or run `platter unlock`"
            ));
        }
    }
}

impl RepoLock<'_> {
    /// Fails if this lock's file is gone (someone removed it: `unlock
    /// --all` while this command ran), or if it went `STALE_AFTER` without
    /// a refresh (another host may have judged it stale): a prune may since
    /// have deleted what this command wrote and not yet named in an index.
    /// Refreshes the lock. A writer calls this before each step that makes
    /// its data part of the repository.
    pub fn check_held(&self) -> Result<()> {
        match self.fresh.refresh(self.backend, &self.name) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::busy(format!(
                    "this command's repository lock {} was removed while it ran (by `platter \
                     unlock --all`, or by another host that found it stale): a prune may have \
                     deleted what it stored",
                    self.name
                ))
                .hint("nothing was committed; run the command again (and `platter verify` if a prune ran meanwhile)"));
            }
            Err(e) => return Err(e),
        }
        let gap = self
            .fresh
            .longest_gap
            .lock()
            .map(|g| *g)
            .unwrap_or_default();
        if gap > STALE_AFTER {
            return Err(Error::busy(format!(
                "this command's repository lock {} went {} without a refresh (the machine \
                 slept, or the store was out of reach): another host may have found it stale \
                 and pruned what this command stored",
                self.name,
                humantime::format_duration(Duration::from_secs(gap.as_secs()))
            ))
            .hint("nothing was committed; run the command again"));
        }
        Ok(())
    }
}

/// What was found in `locks/`.
pub struct FoundLock {
    pub name: String,
    pub info: Option<LockInfo>,
    pub stale: bool,
}

/// How long a locker waits for an exclusive lock to go away: an exclusive
/// locker that finds others refuses and removes its lock at once, so one
/// that is in the way is usually gone within moments.
const SHARED_PATIENCE: Duration = Duration::from_secs(5);

/// How long to pause before trying again. Two exclusive lockers that meet
/// both back off; a random pause (50 to 305 ms) lets one of them win on a
/// later try instead of both meeting again.
fn pause(kind: LockKind) -> Duration {
    let mut jitter = [0u8; 1];
    match kind {
        LockKind::Shared => Duration::from_millis(100),
        LockKind::Exclusive => {
            let _ = crate::codec::seal::random(&mut jitter);
            Duration::from_millis(50 + u64::from(jitter[0]))
        }
    }
}

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
                if exclusive && started.elapsed() < SHARED_PATIENCE {
                    std::thread::sleep(pause(kind));
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
    let name = lock_name(&LockId::random());
    let backend = repo.backend();
    let sealed = sealed::encode(
        repo.sealing(),
        &name,
        &envelope::seal(KIND, VERSION, &info)?,
    )?;
    let cleanup = backend.remove_on_interrupt(&name);
    backend.write_whole(&name, &sealed)?;
    let fresh = Arc::new(Freshness {
        bytes: sealed,
        longest_gap: Mutex::new(Duration::ZERO),
    });
    let lock = RepoLock {
        backend,
        _refresher: Refresher::start(repo.shared_backend(), name.clone(), Arc::clone(&fresh)),
        fresh,
        name,
        _cleanup: cleanup,
    };
    let seen = read_locks(repo)?;
    // The store's "now": the time of the lock just written.
    let now = seen
        .iter()
        .find(|s| s.name == lock.name)
        .and_then(|s| s.written);
    let (stale, live): (Vec<FoundLock>, Vec<FoundLock>) = judge(seen, now)
        .into_iter()
        .filter(|found| found.name != lock.name)
        .partition(|found| found.stale);
    // All at once: a store far away takes tens of milliseconds a request.
    let removed =
        crate::repo::backend::each_at_once(backend, &stale, |found| backend.remove(&found.name));
    for (found, removed) in stale.into_iter().zip(removed) {
        removed?;
        cleared.push(found);
    }
    for found in live {
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

/// The error for a lock in the way, with the step that helps: waiting or
/// stopping a process of this host, or `unlock --all` for a lock that
/// `unlock` alone does not remove (unreadable, another host's).
fn busy(found: &FoundLock) -> Error {
    let Some(o) = found.info.as_ref() else {
        return Error::busy(format!(
            "the repository is in use: unreadable lock {}",
            found.name
        ))
        .hint(
            "it may be a lock being written right now: try again; if it stays, make sure no \
             other platter uses the repository, then remove it with `platter unlock --all`",
        );
    };
    let who = format!(
        "`{}` (pid {} on {}, since {})",
        o.command, o.pid, o.hostname, o.time
    );
    let error = Error::busy(format!("the repository is in use by {who}"));
    if o.hostname == hostname() {
        error.hint(format!(
            "wait for it to finish, or stop it (pid {}) and run the command again",
            o.pid
        ))
    } else {
        error.hint(format!(
            "the lock is held by host {}: once that host's command has ended (or that host is \
             gone for good), `platter unlock --all` removes it",
            o.hostname
        ))
    }
}

/// Every lock file, with whether it is stale: `now` is the store's time
/// to judge age by (that of a lock just written), else this machine's.
pub fn list(repo: &Repository, now: Option<SystemTime>) -> Result<Vec<FoundLock>> {
    Ok(judge(read_locks(repo)?, now))
}

/// Larger files in `locks/` are not read (a lock is a few hundred bytes).
const MAX_LOCK_FILE: u64 = 64 * 1024;

/// A lock file as read: what it says (`None`: unreadable) and when the
/// store wrote it.
struct Seen {
    name: String,
    info: Option<LockInfo>,
    written: Option<SystemTime>,
}

/// Reads every lock file: one listing (with lengths and times), then one
/// read each, all at once (a store far away takes tens of milliseconds a
/// request). A lock that is gone by the time it is read is left out.
fn read_locks(repo: &Repository) -> Result<Vec<Seen>> {
    let backend = repo.backend();
    let listed = crate::repo::id_files_in(backend, Folder::Locks)?;
    let read = crate::repo::backend::each_at_once(backend, &listed, |file| {
        let name = Folder::Locks.file(&file.name);
        let seen = |info| Some((name.clone(), info, file.modified));
        if file.len > MAX_LOCK_FILE {
            // Not a lock of ours (they are a few hundred bytes): unreadable,
            // and not worth reading.
            return seen(None);
        }
        let what = backend.describe(&name);
        match backend.read_whole(&name) {
            Ok(bytes) => seen(
                sealed::decode(repo.sealing(), &name, bytes, &what)
                    .and_then(|plain| envelope::open::<LockInfo>(KIND, VERSION, &plain, &name))
                    .ok(),
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            // Unreadable: someone's lock all the same (or junk for
            // `unlock --all`).
            Err(_) => seen(None),
        }
    });
    Ok(read
        .into_iter()
        .flatten()
        .map(|(name, info, written)| Seen {
            name,
            info,
            written,
        })
        .collect())
}

/// Which of the locks read are stale, judged by `now` (see `list`).
fn judge(seen: Vec<Seen>, now: Option<SystemTime>) -> Vec<FoundLock> {
    let now = now.unwrap_or_else(SystemTime::now);
    let me = hostname();
    seen.into_iter()
        .map(
            |Seen {
                 name,
                 info,
                 written,
             }| {
                let dead_here = info
                    .as_ref()
                    .is_some_and(|i| i.hostname == me && !process_alive(i.pid, i.start_ticks));
                let unrefreshed = written
                    .and_then(|w| now.duration_since(w).ok())
                    .is_some_and(|age| age > STALE_AFTER);
                FoundLock {
                    name,
                    info,
                    stale: dead_here || unrefreshed,
                }
            },
        )
        .collect()
}

/// What `remove_locks` removed.
pub struct Removed {
    pub locks: Vec<FoundLock>,
    /// Unfinished lock writes of commands that are gone.
    pub unfinished: Vec<String>,
}

/// Removes stale locks, and with `all` every lock, and the unfinished lock
/// writes of commands that are gone (never one a live writer is about to
/// rename, not even with `all`). Returns what it removed.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<Removed> {
    let mut locks = Vec::new();
    for found in list(repo, None)? {
        if found.stale || all {
            repo.backend().remove(&found.name)?;
            locks.push(found);
        }
    }
    let unfinished = repo
        .backend()
        .remove_unfinished(Folder::Locks.as_str(), false)?;
    Ok(Removed { locks, unfinished })
}
