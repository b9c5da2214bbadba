//! Listing snapshots (`platter snapshots`), optionally only those of one
//! source or with one tag.
//!
//! A source given here matches a snapshot whose recorded source is the
//! path's canonical absolute form now (`repo::absolute`: symbolic links
//! followed; a path that does not exist stays as given). `copy --source`
//! and `forget --source` also accept a snapshot whose recorded source is
//! the text exactly as given: they differ when the recorded path now
//! resolves elsewhere (it became a symbolic link, or lies under one), where
//! only they still find its snapshots by that path.

use crate::error::Result;
use crate::repo::snapshot::Snapshot;
use crate::repo::{BrokenManifest, Repository};

/// Which snapshots to list: every one when both are `None`.
#[derive(Debug, Default, Clone)]
pub struct SnapshotFilter {
    /// Only snapshots of this source path.
    pub source: Option<String>,
    /// Only snapshots with this tag.
    pub tag: Option<String>,
}

/// The snapshots of `repo` that `filter` selects, oldest first, and the
/// manifests that cannot be read.
pub fn list(
    repo: &Repository,
    filter: &SnapshotFilter,
) -> Result<(Vec<Snapshot>, Vec<BrokenManifest>)> {
    let (snaps, broken) = repo.snapshots()?;
    let source = filter.source.as_ref().map(|s| {
        crate::repo::absolute(std::path::Path::new(s))
            .display()
            .to_string()
    });
    let snaps = snaps
        .into_iter()
        .filter(|s| source.as_ref().is_none_or(|p| &s.source.path == p))
        .filter(|s| filter.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .collect();
    Ok((snaps, broken))
}
