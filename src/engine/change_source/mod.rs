//! Change sources: which byte ranges of a source may have changed since
//! the parent snapshot, so that an incremental reads only those.
//!
//! Without one, a backup reads every used chunk and compares its
//! fingerprint with the parent's (the scan). A change source narrows that:
//! a chunk that overlaps none of its ranges keeps the parent's map entry
//! without being read, when that entry is data still in the index, or zero;
//! every other chunk is read and fingerprinted as in a scan. Of a chunk
//! whose changed 4 KiB pages are at most half of it, only those pages are
//! read from the source, over the parent's chunk read back from the
//! repository (`bytes_base`); a parent chunk that does not read back means
//! the chunk is read whole. Either way the chunk is fingerprinted and named
//! from all its bytes, so every map entry this backup writes describes the
//! bytes it holds (the fingerprint "unknown", 0, is for an entry made
//! otherwise, and is never equal).
//!
//! The trust rules:
//! - The scan is the ground truth. A change source that is missing,
//!   stale or in doubt (no parent, an unreadable parent map, a shadow of
//!   another snapshot, a comparison that failed) gives a scan, with the
//!   reason printed (stderr, and `scan_reason` in `--json`). `--full`
//!   always scans.
//! - What a change source says is bound to (repository, parent snapshot):
//!   a reflink shadow by its name, ranges from a file by the user's word
//!   that they are since the parent. The snapshot's manifest records which
//!   source was trusted (`change_source`: kind and detail).
//! - A source's state moves on (a new shadow kept, old ones removed) only
//!   after the manifest is durable: a backup that fails leaves the state
//!   the next one needs.
//!
//! Sources: `ranges_file` (`--changed-ranges`), `reflink` (shadows of image
//! files on XFS and btrfs, `--change-source reflink`), `qemu_bitmap`
//! (persistent dirty bitmaps of qcow2 images, read over NBD,
//! `--change-source qemu-bitmap`). A qcow2 image is backed up as its
//! guest's disk, so reflink shadows, which compare the file's blocks, do
//! not apply to it: `auto` means its dirty bitmaps.

mod qemu_bitmap;
mod ranges_file;
mod reflink;

use std::path::{Path, PathBuf};

pub use ranges_file::RangesClaim;

use crate::disk::Source;
use crate::disk::ranges::Ranges;
use crate::progress::Progress;
use crate::repo::SnapshotId;
use crate::repo::snapshot::{ChangeSourceRecord, ShadowStamp, Snapshot};

/// Which change source a backup is asked to use.
#[derive(Debug, Clone, Default)]
pub enum Request {
    /// A reflink shadow where this repository keeps one of the image, a
    /// dirty bitmap where it keeps one in a qcow2 image, else the scan.
    #[default]
    Auto,
    /// The scan; this repository's shadows of the image are removed.
    Scan,
    /// Reflink shadows (kept from now on).
    Reflink,
    /// QEMU persistent dirty bitmaps in a qcow2 image (kept from now on).
    QemuBitmap,
    /// The ranges of a file, read and checked before anything is written.
    Ranges(RangesClaim),
}

/// What a backup does about change tracking.
pub struct Plan {
    /// Ranges that may have changed; `None`: every chunk is read.
    pub changed: Option<Ranges>,
    /// What the manifest records (with `changed`).
    pub record: Option<ChangeSourceRecord>,
    /// Why a change source that was asked for, or found, is not used.
    pub scan_reason: Option<String>,
    /// The new reflink shadow, as made (recorded in the manifest).
    pub shadow: Option<ShadowStamp>,
    /// A copy to read instead of the source (a reflinked shadow).
    read_from: Option<PathBuf>,
    pending: Option<Box<reflink::Pending>>,
    forget: Option<reflink::Forget>,
    qemu: Option<qemu_bitmap::Pending>,
    qemu_forget: Option<qemu_bitmap::Forget>,
}

/// What the plan needs to know of the backup.
pub struct PlanInput<'a> {
    pub request: &'a Request,
    pub repo_id: &'a str,
    pub source: &'a Source,
    pub parent: Option<&'a Snapshot>,
    /// Whether the parent's map opened (else every chunk is read anyway).
    pub parent_map: bool,
    /// The new snapshot's id.
    pub snapshot: SnapshotId,
    pub full: bool,
}

impl Plan {
    fn scan(reason: Option<String>) -> Plan {
        Plan {
            changed: None,
            record: None,
            scan_reason: reason,
            shadow: None,
            read_from: None,
            pending: None,
            forget: None,
            qemu: None,
            qemu_forget: None,
        }
    }

    /// Decides, and for reflink makes the new shadow. Says why it scans
    /// (`progress.warn`) when a change source was asked for or found.
    pub fn make(input: &PlanInput<'_>, progress: &dyn Progress) -> Plan {
        let plan = match input.request {
            Request::Ranges(claim) => ranges(input, claim),
            Request::Scan => Plan {
                forget: reflink_forget(input),
                qemu_forget: qemu_bitmap::Forget::of(input.source, input.repo_id),
                ..Plan::scan(None)
            },
            Request::Reflink if input.source.guest().is_some() => Plan::scan(Some(format!(
                "{} is a qcow2 image, backed up as its guest's disk: reflink shadows compare                  the file's blocks, not the guest's; use --change-source qemu-bitmap",
                input.source.path().display()
            ))),
            Request::QemuBitmap | Request::Auto
                if input.source.guest().is_some()
                    || matches!(input.request, Request::QemuBitmap) =>
            {
                qemu_bitmap::plan(&qemu_bitmap::Input {
                    source: input.source,
                    repo_id: input.repo_id,
                    parent: input.parent,
                    parent_map: input.parent_map,
                    snapshot: input.snapshot,
                    full: input.full,
                    asked: matches!(input.request, Request::QemuBitmap),
                })
            }
            Request::Auto | Request::Reflink | Request::QemuBitmap => {
                reflink::plan(&reflink::Input {
                    image: input.source,
                    repo_id: input.repo_id,
                    parent: input.parent,
                    parent_map: input.parent_map,
                    snapshot: input.snapshot,
                    full: input.full,
                    asked: matches!(input.request, Request::Reflink),
                })
            }
        };
        if let Some(why) = &plan.scan_reason {
            progress.warn(&format!(
                "change source not used, reading every chunk: {why}"
            ));
        }
        plan
    }

    /// The file to read instead of the source, when there is one.
    pub fn read_from(&self) -> Option<&Path> {
        self.read_from.as_deref()
    }

    /// Moves the change source's state on: call only once the manifest is
    /// durable, and the source is closed (a qcow2 image's qemu-nbd holds
    /// its lock, which adding a bitmap needs). The snapshot exists whatever happens here, so a failure
    /// is a warning (the next backup then scans).
    pub fn commit(mut self, progress: &dyn Progress) {
        if let Some(pending) = self.pending.take()
            && let Err(e) = pending.commit()
        {
            progress.warn(&format!(
                "the snapshot is committed, but its reflink shadow could not be kept ({e}); \
                 the next backup reads every chunk"
            ));
        }
        if let Some(forget) = self.forget.take() {
            forget.commit();
        }
        if let Some(pending) = self.qemu.take()
            && let Err(e) = pending.commit()
        {
            progress.warn(&format!(
                "the snapshot is committed, but no dirty bitmap could be added for it ({e}); \
                 the next backup reads every chunk"
            ));
        }
        if let Some(forget) = self.qemu_forget.take()
            && let Err(e) = forget.commit()
        {
            progress.warn(&format!(
                "the snapshot is committed, but this repository's dirty bitmaps could not be \
                 removed from the image ({e})"
            ));
        }
    }
}

fn reflink_forget(input: &PlanInput<'_>) -> Option<reflink::Forget> {
    // Shadows are of whole image files: a backup of one partition of the
    // image has none of its own, and leaves the whole image's alone.
    let id = input.source.identity();
    if id.is_device || id.partition.is_some() {
        return None;
    }
    reflink::Forget::of(input.source, input.repo_id)
}

fn ranges(input: &PlanInput<'_>, claim: &RangesClaim) -> Plan {
    let Some(parent) = input.parent else {
        return Plan::scan(Some(format!(
            "{}: there is no parent snapshot of this source for its ranges to be changes since",
            claim.file.display()
        )));
    };
    if !input.parent_map {
        return Plan::scan(Some(format!(
            "the map of parent {} cannot be read",
            parent.short_id()
        )));
    }
    let detail = format!(
        "{} ({}): {} changed range(s), {} bytes, since parent {}",
        claim.file.display(),
        claim.format,
        claim.ranges.as_slice().len(),
        claim.ranges.total(),
        parent.short_id()
    );
    Plan {
        changed: Some(claim.ranges.clone()),
        record: Some(ChangeSourceRecord {
            kind: "ranges".into(),
            detail,
        }),
        ..Plan::scan(None)
    }
}
