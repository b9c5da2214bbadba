//! Protection: a protected snapshot is never forgotten, by policy or by
//! name, until `protect --remove`. The flag lives in the manifest, which is
//! rewritten whole (the one committed file that is replaced, atomically).

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::LockKind;
use crate::repo::snapshot::Snapshot;

/// Sets or clears the protection of snapshots; returns them.
pub fn protect(
    repo: &Repository,
    specs: &[String],
    on: bool,
    progress: &dyn Progress,
) -> Result<Vec<Snapshot>> {
    let _lock = super::lock_repo(repo, LockKind::Shared, "protect", progress)?;
    // Every name must resolve before any manifest changes.
    let chosen = specs
        .iter()
        .map(|spec| repo.resolve(spec))
        .collect::<Result<Vec<Snapshot>>>()?;
    let mut done = Vec::new();
    for mut s in chosen {
        if s.protected != on {
            s.protected = on;
            repo.commit_snapshot(&s)?;
        }
        done.push(s);
    }
    Ok(done)
}
