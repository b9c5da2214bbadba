//! What a check of a repository found, for `verify` and `verify
//! --without-key` alike: damage (a file at fault, the chunks it makes
//! unreadable, the snapshot ranges those hold) and leftovers.

use crate::codec::ChunkId;
use crate::repo::SnapshotId;

/// Part of a snapshot's source that a problem makes unrestorable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AffectedRange {
    pub snapshot: SnapshotId,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The repository file at fault.
    pub file: String,
    pub what: String,
    /// Chunks that are unreadable because of it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affects: Vec<AffectedRange>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub packs: usize,
    pub chunks: usize,
    pub bytes_read: u64,
    pub damage: Vec<Problem>,
    pub leftovers: Vec<Problem>,
    pub duration_s: f64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// A problem with file `file`, affecting no chunk known yet.
pub(super) fn problem(file: String, what: &str) -> Problem {
    Problem {
        file,
        what: what.to_string(),
        chunks: Vec::new(),
        affects: Vec::new(),
    }
}
