//! The chunks some snapshot uses: what `prune` keeps and `repair` mends.
//! One rule for both: a manifest or map that cannot be read is an error
//! naming it, never "uses nothing". Its snapshot's needs are unknown, and
//! a caller that went on would treat the chunks it needs as unused: prune
//! would delete them, repair would leave them damaged.

use std::collections::HashSet;

use crate::codec::ChunkId;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;

pub struct InUse {
    /// Every committed snapshot, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Every data chunk their maps name.
    pub chunks: HashSet<ChunkId>,
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
    let mut chunks = HashSet::new();
    for snap in &snapshots {
        let mut map = repo
            .open_map(snap)
            .map_err(|e| e.context(format!("snapshot {}", snap.short_id())))?;
        map.add_data_ids(&mut chunks)?;
    }
    Ok(InUse { snapshots, chunks })
}
