//! A restore: check everything that can be checked before the first write
//! (the map, the index knows every chunk, the target is safe and large
//! enough for every partition), then write every chunk after checking it:
//! its BLAKE3 id, or for a raw chunk of an encrypted repository its seal
//! (see `ChunkReader`: a key holder sealed these bytes for this id; the
//! BLAKE3 itself is recomputed by `verify --read-data`). A whole disk
//! restored onto a target of another size gets its partition table fitted
//! to the target (backup GPT moved to the end, optionally the last
//! partition grown); a block device is then asked to re-read its partition
//! table. One partition of a whole-disk snapshot can be restored on its
//! own.
//!
//! A restore is planned, then executed (`plan.rs`, `execute.rs`): a
//! [`RestorePlan`] holds everything checked and the target already opened,
//! and only [`RestorePlan::execute`], which consumes it, writes. So every
//! refusal comes before the first write by construction: an error while
//! planning leaves the target as it was (a new file, created under a
//! temporary name, is removed with the plan).
//!
//! The target must not lie in the repository being read, nor in any other
//! platter repository: the engine names those places to the disk layer (by
//! device and inode number, see `plan::RepositoryFiles`), which checks the
//! target, the file behind a loop device, and every folder above them.
//!
//! `overlay.rs` restores a snapshot with the writes of a VM booted from it
//! (`platter boot --keep-overlay`) on top.

mod execute;
mod overlay;
mod plan;
mod spans;

use std::path::Path;

pub use overlay::{check_overlay, restore_with_overlay};
pub use plan::RestorePlan;

use crate::codec::ChunkId;
use crate::error::Result;
use crate::progress::Progress;
use crate::repo::{Repository, SnapshotId};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Overwrite an existing image file.
    pub force: bool,
    /// Read the target back afterwards and compare.
    pub verify: bool,
    /// Write zeros where a chunk is damaged and go on; report every range.
    pub continue_on_error: bool,
    /// Restore only this partition of a whole-disk snapshot.
    pub partition: Option<u32>,
    /// Size of a new (or forced) image file; default the snapshot's size
    /// (or the partition's).
    pub file_size: Option<u64>,
    /// Extend the last partition's entry to the end of a larger target.
    pub grow_last_partition: bool,
    /// The disk the target must be, checked once it is held exclusively.
    pub expect: Option<ExpectedDisk>,
}

/// What the target device must be (the rescue medium names the disk a
/// person chose this way: kernel names can move between two looks).
#[derive(Debug, Clone, Default)]
pub struct ExpectedDisk {
    /// Its exact size in bytes.
    pub size: Option<u64>,
    /// Its serial or WWN.
    pub serial: Option<String>,
}

/// A byte range of the target that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRange {
    pub offset: u64,
    pub len: u64,
    pub chunk: ChunkId,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub target: String,
    pub target_kind: String,
    pub size: u64,
    pub bytes_written: u64,
    pub chunks: u64,
    pub chunks_zero: u64,
    pub damaged: Vec<DamagedRange>,
    /// Some(true) when --verify read back every byte and it matched.
    pub verified: Option<bool>,
    /// The partition restored, with --partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Changes made to the partition table to fit the target, and what
    /// the user should do next.
    pub table_changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// Whether the kernel re-read the device's partition table (whole-disk
    /// restores onto block devices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions_reread: Option<bool>,
    /// The qcow2 overlay whose writes went over the snapshot (--overlay),
    /// and the bytes it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay_bytes: Option<u64>,
    /// Problems that did not stop the restore.
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

/// Which bytes of the snapshot go to the target: `[start, start + len)`
/// of the snapshot lands at `[0, len)` of the target.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    len: u64,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// The map positions whose chunks overlap the window.
    fn positions(&self, chunk_size: u64) -> std::ops::Range<u64> {
        self.start / chunk_size..self.end().div_ceil(chunk_size)
    }

    /// The part of the chunk at `offset` (`len` bytes) inside the window:
    /// its range within the chunk, and where it goes on the target.
    fn clip(&self, offset: u64, len: u64) -> Option<(std::ops::Range<usize>, u64)> {
        let a = offset.max(self.start);
        let b = (offset + len).min(self.end());
        (a < b).then(|| ((a - offset) as usize..(b - offset) as usize, a - self.start))
    }
}

/// Restores snapshot `spec` of `repo` onto `target_path`.
pub fn restore(
    repo: &Repository,
    spec: &str,
    target_path: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    RestorePlan::new(repo, spec, target_path, options, progress)?.execute(progress)
}
