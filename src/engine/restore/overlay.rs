//! `restore --overlay`: a snapshot with the writes of a VM booted from it
//! (`platter boot --keep-overlay FILE`) onto a real disk or image, the way
//! a recovered server moves back to hardware.
//!
//! The overlay is checked before anything is written: a qcow2 (by what
//! qemu-img reads, not by its name) whose virtual size is the snapshot's
//! and whose recorded backing file is a `disk.img` (the file `platter
//! boot` puts under it; when its folder carries a snapshot's short id, as
//! the mount names folders, that id must be this snapshot's). Then the
//! snapshot is restored as usual (every check of a restore, every chunk
//! checked), and the overlay's clusters are written over it with `qemu-img
//! commit -d`, the overlay read as if the target were its backing file:
//! only what the guest wrote moves (data, and zeros it wrote or
//! discarded), and the overlay itself is not changed.
//!
//! Why commit rather than copying ranges from `qemu-img map` ourselves:
//! map describes clusters the guest zeroed and clusters it never touched
//! the same way unless the backing file can be opened, and a compressed
//! cluster has no file offset to copy from; qemu-img reads its own format
//! exactly, including what a later QEMU adds to it.
//!
//! The result equals what the guest saw: the snapshot's bytes where it
//! wrote nothing, its writes elsewhere. On a larger target the partition
//! table is fitted first (as in any restore) and the guest's writes go on
//! top; a guest that rewrote the partition table should be restored onto
//! a target of the snapshot's size.

use std::path::Path;

use super::{RestoreOptions, RestorePlan, RestoreReport};
use crate::disk::TargetKind;
use crate::disk::overlay::{self, OverlayInfo};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;

/// Restores snapshot `spec` of `repo` onto `target_path` with the writes
/// kept in the qcow2 overlay `overlay_path`.
pub fn restore_with_overlay(
    repo: &Repository,
    spec: &str,
    target_path: &Path,
    overlay_path: &Path,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    if options.partition.is_some() {
        return Err(Error::bad_input(
            "--overlay holds a VM's writes to the whole disk: it cannot go with --partition",
        )
        .hint("restore the whole disk with --overlay, then take the partition from it"));
    }
    let snap = repo.resolve(spec)?;
    let info = check_overlay(overlay_path, &snap)?;
    let plan = RestorePlan::new(repo, &snap.id.to_hex(), target_path, options, progress)?;
    if plan.target.size() < info.virtual_size {
        return Err(Error::bad_input(format!(
            "{} ({} bytes) is smaller than the disk the VM saw ({} bytes): its writes would not \
             fit",
            target_path.display(),
            plan.target.size(),
            info.virtual_size
        ))
        .hint("restore onto a target at least as large as the snapshot"));
    }
    let device = plan.target.kind() == TargetKind::BlockDevice;
    let mut report = plan.execute(progress)?;
    let _note = interrupt::note_on_interrupt(format!(
        "{} holds the snapshot but only part of the overlay's writes: run the restore again",
        target_path.display()
    ));
    overlay::commit_into(overlay_path, target_path, device).map_err(|e| {
        e.context(format!(
            "the snapshot was restored to {}",
            target_path.display()
        ))
    })?;
    report.overlay = Some(overlay_path.display().to_string());
    report.overlay_bytes = Some(info.actual_size);
    Ok(report)
}

/// The overlay's description, if it is a qcow2 over a `disk.img` of this
/// snapshot's size; a clear refusal otherwise.
pub fn check_overlay(path: &Path, snap: &Snapshot) -> Result<OverlayInfo> {
    let info = overlay::info(path)?;
    let refuse = |why: String| {
        Error::bad_input(format!("{} cannot be used with snapshot {}: {why}", path.display(), snap.short_id()))
            .hint("give the file that `platter boot SNAPSHOT --keep-overlay FILE` kept for this snapshot; nothing was written")
    };
    if info.format != "qcow2" {
        return Err(refuse(format!(
            "it is a {} image, not a qcow2 overlay",
            if info.format.is_empty() {
                "unknown"
            } else {
                &info.format
            }
        )));
    }
    let Some(backing) = &info.backing else {
        return Err(refuse(
            "it has no backing file, so it is not an overlay over a snapshot".into(),
        ));
    };
    if backing.file_name().is_none_or(|n| n != "disk.img") {
        return Err(refuse(format!(
            "its backing file is {}, not a snapshot's disk.img",
            backing.display()
        )));
    }
    if info.backing_format.as_deref().is_some_and(|f| f != "raw") {
        return Err(refuse(format!(
            "its backing file is recorded as {}, not raw",
            info.backing_format.as_deref().unwrap_or_default()
        )));
    }
    if let Some(other) = backing
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(short_id_in_folder_name)
        && !snap.id.to_hex().starts_with(other)
    {
        return Err(refuse(format!(
            "it was made over snapshot {other} ({})",
            backing.display()
        )));
    }
    if info.virtual_size != snap.source.size {
        return Err(refuse(format!(
            "the disk it covers is {} bytes, the snapshot {} bytes",
            info.virtual_size, snap.source.size
        )));
    }
    overlay::check_intact(path)?;
    Ok(info)
}

/// The short id in a mount's folder name (`2026-11-28_18-30-05_1a2b3c4d`,
/// then tags), if the name has that form.
fn short_id_in_folder_name(name: &str) -> Option<&str> {
    let id = name.split('_').nth(2)?;
    (id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::short_id_in_folder_name;

    #[test]
    fn a_mount_folder_name_gives_its_short_id() {
        assert_eq!(
            short_id_in_folder_name("2026-11-28_18-30-05_1a2b3c4d_nightly,db"),
            Some("1a2b3c4d")
        );
        assert_eq!(
            short_id_in_folder_name("2026-11-28_18-30-05_1a2b3c4d"),
            Some("1a2b3c4d")
        );
        assert_eq!(short_id_in_folder_name("images"), None);
        assert_eq!(short_id_in_folder_name("a_b_notanid"), None);
    }
}
