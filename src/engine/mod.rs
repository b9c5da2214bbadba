//! The pipelines: backup, restore and verify. The engine joins the disk
//! layer (sources, targets) with the repository layer; neither of those
//! knows the other.

pub mod backup;
mod backup_pipeline;
pub mod copy;
pub mod forget;
pub mod keyless;
mod pack_sink;
mod parallel;
pub mod prune;
pub mod rebuild_index;
mod rekey;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod verify;

/// Worker threads for hashing, compressing and checking.
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 16)
}

/// Chunks in flight at once: enough to keep every worker busy (up to four
/// each), few enough that memory stays flat: about 32 MiB of chunks, but
/// never fewer than one more than the workers.
pub fn chunks_in_flight(chunk_size: u64, workers: usize) -> usize {
    let by_memory = ((32u64 << 20) / chunk_size).max(2) as usize;
    by_memory.min(workers * 4).max(workers + 1)
}

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::{self, LockKind, RepoLock};

/// Takes a repository lock, telling the user about stale locks it cleared.
pub fn lock_repo<'a>(
    repo: &'a Repository,
    kind: LockKind,
    command: &str,
    progress: &dyn Progress,
) -> Result<RepoLock<'a>> {
    let (held, cleared) = lock::acquire(repo, kind, command)?;
    report_cleared(cleared, progress);
    Ok(held)
}

/// A shared lock for commands that only read: on a read-only repository
/// (a write-protected USB drive, a read-only mount) they go on unlocked.
pub fn lock_for_reading<'a>(
    repo: &'a Repository,
    command: &str,
    progress: &dyn Progress,
) -> Result<Option<RepoLock<'a>>> {
    match lock::acquire(repo, LockKind::Shared, command) {
        Ok((held, cleared)) => {
            report_cleared(cleared, progress);
            Ok(Some(held))
        }
        Err(e) if matches!(e.os_code(), Some(libc::EROFS) | Some(libc::EACCES)) => {
            progress.warn("the repository is read-only: reading it without a lock");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn report_cleared(cleared: Vec<lock::FoundLock>, progress: &dyn Progress) {
    for stale in cleared {
        let who = stale
            .info
            .map(|i| format!("`{}` (pid {})", i.command, i.pid))
            .unwrap_or_default();
        progress.warn(&format!(
            "removed a stale lock left by a process that is gone: {who} {}",
            stale.name
        ));
    }
}
