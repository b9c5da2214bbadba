//! The work behind every command: backup (with its pipeline), restore,
//! verify (and `verify --without-key`), copy (and re-keying), protect,
//! the key files of encrypted repositories, listing snapshots,
//! forget with its retention rules, prune, repair and rebuild-index. The
//! engine joins the disk layer (sources, targets) with the repository
//! layer; neither of those knows the other.

pub mod backup;
mod backup_pipeline;
pub mod change_source;
mod chunk_mover;
pub mod copy;
pub mod forget;
pub mod image_reader;
mod in_use;
pub mod keys;
mod pack_sink;
mod parallel;
pub mod protect;
pub mod prune;
pub mod rebuild_index;
mod rekey;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod snapshots;
pub mod upgrade;
pub mod verify;
mod verify_report;
pub mod verify_without_key;

/// Threads that read chunks from `repo`: the CPU's workers, or more where
/// each read waits on the network.
pub fn reader_count(repo: &crate::repo::Repository) -> usize {
    worker_count().max(repo.backend().concurrency())
}

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

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::{self, LockKind, RepoLock};

/// Whether `e` says the repository's filesystem (or the user's quota) is
/// full.
pub fn out_of_space(e: &Error) -> bool {
    matches!(e.os_code(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Takes a repository lock, telling the user about stale locks it cleared.
///
/// On a full filesystem an exclusive lock (forget, prune: the commands
/// that free space) is taken with the room of the space reserve, which the
/// command makes again when it is done (`remake_reserve`). Every other
/// time the reserve is made if it is missing and there is room for it, so
/// repositories made before it existed get one.
pub fn lock_repo<'a>(
    repo: &'a Repository,
    kind: LockKind,
    command: &str,
    progress: &dyn Progress,
) -> Result<RepoLock<'a>> {
    let (held, cleared) = match lock::acquire(repo, kind, command) {
        Err(e) if kind == LockKind::Exclusive && out_of_space(&e) => {
            if !repo.release_reserve()? {
                return Err(e.hint(
                    "the repository's filesystem is full and it has no space reserve: free a \
                     little space on it (a few MiB), then run `platter forget ... --prune`",
                ));
            }
            progress.warn(
                "the repository's filesystem is full: using the space of its reserve to take \
                 the lock",
            );
            let acquired = lock::acquire(repo, kind, command)?;
            report_cleared(acquired.1, progress);
            return Ok(acquired.0);
        }
        other => other?,
    };
    report_cleared(cleared, progress);
    // A reserve that cannot be made now is made by a later command.
    let _ = repo.make_reserve();
    Ok(held)
}

/// Makes the space reserve again after a command that may have used it;
/// warns when the filesystem still has no room for it.
pub fn remake_reserve(repo: &Repository, progress: &dyn Progress) {
    match repo.make_reserve() {
        Ok(_) => {}
        Err(e) if out_of_space(&e) => progress.warn(
            "the repository's filesystem is still too full to make its space reserve again: \
             free space (forget more snapshots and prune); the next command that writes makes it",
        ),
        Err(e) => progress.warn(&format!("cannot make the space reserve again: {e}")),
    }
}

/// A shared lock for commands that only read: on a read-only repository
/// (a write-protected USB drive, a read-only mount) or a full one (where
/// not even a lock file fits) they go on unlocked.
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
        Err(e)
            if e.os_code() == Some(libc::EROFS)
                || e.io_kind() == Some(std::io::ErrorKind::PermissionDenied) =>
        {
            progress.warn(
                "the repository is read-only here (a read-only mount or read-only credentials): \
                 reading it without a lock",
            );
            Ok(None)
        }
        Err(e) if out_of_space(&e) => {
            progress.warn(
                "the repository's filesystem is full (no room for a lock file): reading it \
                 without a lock",
            );
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
            "removed a stale lock (its process is gone, or it went unrefreshed for 30 \
             minutes): {who} {}",
            stale.name
        ));
    }
}
