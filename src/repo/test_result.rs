//! Restore test results: `tests/<snapshot id>`, one per tested snapshot,
//! next to its manifest rather than in it (a manifest is written once, at
//! the commit, and never changed). Enveloped like the other documents
//! (kind `test`, version 1) and sealed in an encrypted repository like a
//! manifest; the body is the job's restore test result (see
//! `jobs::restore_test::TestResult` and docs/FORMAT.md). A later test of
//! the same snapshot replaces it. Prune removes the result of a snapshot
//! that is gone.

use std::collections::HashSet;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ErrorKind, Result};
use crate::repo::names::{Folder, test_result_name};
use crate::repo::{Repository, SnapshotId, envelope, sealed};

const KIND: &str = "test";
const VERSION: u32 = 1;

/// Records the restore test result of snapshot `id`.
pub fn write<T: Serialize>(repo: &Repository, id: &SnapshotId, result: &T) -> Result<()> {
    let name = test_result_name(id);
    sealed::write(
        repo.backend(),
        repo.sealing(),
        &name,
        &envelope::seal(KIND, VERSION, result)?,
    )
}

/// The restore test result of snapshot `id`, if it was tested.
pub fn read<T: DeserializeOwned>(repo: &Repository, id: &SnapshotId) -> Result<Option<T>> {
    let name = test_result_name(id);
    let bytes = match repo.read_sealed(&name) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    envelope::open(KIND, VERSION, &bytes, &repo.describe(&name)).map(Some)
}

/// The snapshots that have a result.
pub fn tested(repo: &Repository) -> Result<HashSet<SnapshotId>> {
    Ok(crate::repo::ids_in(repo.backend(), Folder::Tests)?
        .iter()
        .filter_map(|name| SnapshotId::parse(name))
        .collect())
}

/// Removes the results of snapshots not in `live`; how many. Only under
/// an exclusive lock (prune): nothing writes a result meanwhile.
pub fn remove_orphans(repo: &Repository, live: &HashSet<SnapshotId>) -> Result<usize> {
    let mut removed = 0;
    for id in tested(repo)? {
        if !live.contains(&id) {
            repo.backend().remove(&test_result_name(&id))?;
            removed += 1;
        }
    }
    Ok(removed)
}
