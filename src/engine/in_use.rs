//! The chunks some snapshot uses: what `prune` keeps and `repair` mends.
//! One rule for both: a manifest or map that cannot be read is an error
//! naming it, never "uses nothing". Its snapshot's needs are unknown, and
//! a caller that went on would treat the chunks it needs as unused: prune
//! would delete them, repair would leave them damaged.
//!
//! The set is exact and may be larger than memory (`IdSet`: sorted runs in
//! the repository's cache folder past a few tens of MiB), never a filter
//! that could call a chunk used that is not, or the reverse.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::index::idset::{IdSet, IdSetBuilder};
use crate::repo::map::Kind;
use crate::repo::snapshot::Snapshot;

pub struct InUse {
    /// Every committed snapshot, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Every data chunk their maps name.
    pub chunks: IdSet,
}

/// The snapshots of `repo` and the chunks they use; `Corrupt` when a
/// manifest or a map cannot be read.
pub fn in_use(repo: &Repository) -> Result<InUse> {
    let (snapshots, broken) = repo.snapshots()?;
    if let Some(b) = broken.first() {
        return Err(Error::corrupt(format!(
            "snapshot manifest {} is unreadable ({}): what that snapshot needs is unknown",
            repo.describe(&b.name),
            b.error
        )));
    }
    let mut chunks = IdSetBuilder::new(repo);
    for snap in &snapshots {
        let mut map = repo
            .open_map(snap)
            .map_err(|e| e.context(format!("snapshot {}", snap.short_id())))?;
        for pos in 0..map.header().entries {
            let e = map.entry(pos)?;
            if e.kind == Kind::Data {
                chunks.insert(e.id)?;
            }
        }
    }
    Ok(InUse {
        snapshots,
        chunks: chunks.finish()?,
    })
}
