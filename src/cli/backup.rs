//! `platter backup`: image a device or file into the repository.

use std::path::PathBuf;

use platter::disk::layout::Layout;
use platter::engine::backup::{Backup, BackupOptions, backup_reporting};
use platter::engine::change_source::{RangesClaim, Request};
use platter::repo::SnapshotId;
use platter::repo::snapshot::{ChangeSourceRecord, Snapshot};

use super::{Context, output};

/// Back up a block device or image file as a new snapshot
///
/// The parent is the latest snapshot of the same source (same path and size,
/// and same serial/WWN for devices). Chunks whose fingerprint matches the
/// parent's are reused without hashing or storing, so later backups cost only
/// what changed. Holes of sparse image files are not read.
///
/// A source in use by a writer (mounted read-write, held by LVM, dm-crypt or
/// RAID, or mapped shared and writable by a process) is refused with exit 5,
/// before the backup and again before its commit. A source whose real path
/// is not valid UTF-8 is refused with exit 2.
///
/// The source must not change during the backup: if its size changes, its
/// path comes to name another file or device (a rename over it), a loop
/// device's backing file changes, or an image file or a loop device's file is
/// written to, the backup fails with exit 4 and no snapshot is made. Stop what
/// writes to it, or back up a snapshot or copy of it.
///
/// Change sources say which ranges may have changed since the parent, so that
/// only the chunks they touch are read; the others keep the parent's entries
/// unread. `--changed-ranges FILE` takes them from a file; `--change-source
/// reflink` keeps a reflinked shadow of an image file (XFS, btrfs) per
/// snapshot and compares the parent's shadow with a new one; `--change-source
/// qemu-bitmap` keeps a persistent dirty bitmap in a qcow2 image. A qcow2 image
/// file is always backed up as its guest's disk (virtual size and contents),
/// read through qemu-nbd: that needs qemu-img and qemu-nbd installed (Debian
/// package qemu-utils). Whenever a change
/// source is missing, stale or in doubt the backup reads every chunk and says
/// why (on stderr, and as `scan_reason` with --json); `--full` always does.
#[derive(clap::Args)]
pub struct Args {
    /// Block device (e.g. /dev/sdb) or image file; opened read-only
    source: PathBuf,

    /// Label the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Hash every chunk instead of trusting the parent's fingerprints or a change source
    #[arg(long)]
    full: bool,

    /// Use this snapshot as the parent (id, prefix or `latest`)
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,

    /// Back up only partition N of the disk or image (as `platter inspect` numbers them)
    #[arg(long, value_name = "N")]
    partition: Option<u32>,

    /// Read and store every byte, free space of known filesystems too
    #[arg(long)]
    raw: bool,

    /// Back up a source in use by a writer (mounted read-write, mapped shared and
    /// writable); the image will be inconsistent (files changing during the backup),
    /// and its free space is read too. An image file or loop device written to
    /// during the backup is then accepted with a warning (a change of its size or
    /// identity still fails the backup)
    #[arg(long)]
    allow_mounted: bool,

    /// Where to learn what changed since the parent. `reflink`: keep a reflinked
    /// shadow of the image file next to it (`.NAME.platter-shadow.REPO.SNAPSHOT`,
    /// same folder; XFS or btrfs), read the new shadow and compare it with the
    /// parent's. A shadow costs no space when made, then pins every block the
    /// image overwrites until the next backup replaces it (about one backup's
    /// worth of changes). `auto` (default): reflink where this repository already
    /// keeps a shadow of the image (or a dirty bitmap in a qcow2 image), else the
    /// scan. `qemu-bitmap`: for a qcow2 image, add a persistent dirty bitmap
    /// (`platter.REPO.SNAPSHOT`) after each backup and read only what it marks
    /// next time (needs qemu-img and qemu-nbd, Debian package qemu-utils; an
    /// image a running VM holds is read with a scan and not written). `scan`:
    /// read every chunk and remove this repository's shadows and bitmaps of the
    /// image
    #[arg(long, value_enum, value_name = "SOURCE")]
    change_source: Option<ChangeSourceArg>,

    /// Read only the chunks that overlap the ranges in FILE, which must be the
    /// changes since the parent, in bytes of the source as backed up (of the
    /// partition, with --partition): `offset length` lines (decimal, `#`
    /// comments), or the XML output of thin_delta or era_invalidate
    /// (thin-provisioning-tools). Not with --full
    #[arg(long, value_name = "FILE")]
    changed_ranges: Option<PathBuf>,

    /// Bytes per block of era_invalidate output in --changed-ranges (its XML does
    /// not say): the era device's block size, e.g. 64K
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, requires = "changed_ranges")]
    block_size: Option<u64>,
}

/// `--change-source`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ChangeSourceArg {
    Auto,
    Scan,
    Reflink,
    QemuBitmap,
}

/// The change source asked for; a file of ranges is read and checked here,
/// before anything is written.
fn change_source(args: &Args) -> platter::Result<Request> {
    match (&args.changed_ranges, args.change_source) {
        (Some(_), Some(other)) if other != ChangeSourceArg::Auto => Err(platter::Error::bad_input(
            "--changed-ranges and --change-source name two change sources: give one",
        )
        .hint("nothing was written")),
        (Some(file), _) => Ok(Request::Ranges(RangesClaim::read(file, args.block_size)?)),
        (None, None | Some(ChangeSourceArg::Auto)) => Ok(Request::Auto),
        (None, Some(ChangeSourceArg::Scan)) => Ok(Request::Scan),
        (None, Some(ChangeSourceArg::Reflink)) => Ok(Request::Reflink),
        (None, Some(ChangeSourceArg::QemuBitmap)) => Ok(Request::QemuBitmap),
    }
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let change_source = change_source(&args)?;
    let repo = ctx.open_repo()?;
    let options = BackupOptions {
        tags: args.tags,
        full: args.full,
        parent: args.parent,
        partition: args.partition,
        raw: args.raw,
        allow_mounted: args.allow_mounted,
        change_source,
    };
    let bar = output::Bar::new(ctx.json);
    let done = backup_reporting(&repo, &args.source, &options, &bar)?;
    let snap = &done.snapshot;
    let s = &snap.stats;
    if ctx.json {
        output::json(&BackupReport::new(&done))?;
    } else {
        let parent = snap
            .parent
            .map_or("none (full backup)".to_string(), |p| p.prefix(8));
        output::line(&format!(
            "snapshot {} of {} ({}): read {}{}, skipped {} free, added {} in {} new{} of {} \
             chunks ({} unchanged, {} deduplicated, {} zero), parent {}, {:.1}s",
            snap.short_id(),
            snap.source.path,
            output::bytes(snap.source.size),
            output::bytes(s.bytes_read),
            if s.bytes_base > 0 {
                format!(
                    " (and {} of the parent's chunks from the repository)",
                    output::bytes(s.bytes_base)
                )
            } else {
                String::new()
            },
            output::bytes(s.bytes_free),
            output::bytes(s.bytes_new),
            s.chunks_new,
            if s.chunks_delta > 0 {
                format!(" ({} stored as their changed pages)", s.chunks_delta)
            } else {
                String::new()
            },
            s.chunks,
            s.chunks_unchanged,
            s.chunks_dedup,
            s.chunks_zero + s.chunks_hole,
            parent,
            s.duration_s
        ));
        if let Some(cs) = &snap.change_source {
            output::line(&format!(
                "  change source {}: {}; {} chunks not read",
                cs.kind, cs.detail, s.chunks_unread
            ));
        }
        for line in filesystems(snap) {
            output::line(&format!("  {line}"));
        }
    }
    Ok(true)
}

/// What `backup --json` prints. The fields are in alphabetical order, as
/// the JSON has always had them.
#[derive(serde::Serialize)]
struct BackupReport<'a> {
    bytes_base: u64,
    bytes_free: u64,
    bytes_new: u64,
    bytes_new_plain: u64,
    bytes_read: u64,
    bytes_unread: u64,
    change_source: Option<&'a ChangeSourceRecord>,
    chunks: u64,
    chunks_dedup: u64,
    chunks_delta: u64,
    chunks_free: u64,
    chunks_hole: u64,
    chunks_new: u64,
    chunks_unchanged: u64,
    chunks_unread: u64,
    chunks_zero: u64,
    duration_s: f64,
    filesystems: Vec<String>,
    parent: Option<SnapshotId>,
    scan_reason: Option<&'a str>,
    size: u64,
    snapshot: SnapshotId,
    source: &'a str,
    tags: &'a [String],
    time: &'a str,
}

impl<'a> BackupReport<'a> {
    fn new(done: &'a Backup) -> BackupReport<'a> {
        let snap = &done.snapshot;
        let s = &snap.stats;
        BackupReport {
            bytes_base: s.bytes_base,
            bytes_free: s.bytes_free,
            bytes_new: s.bytes_new,
            bytes_new_plain: s.bytes_new_plain,
            bytes_read: s.bytes_read,
            bytes_unread: s.bytes_unread,
            change_source: snap.change_source.as_ref(),
            chunks: s.chunks,
            chunks_dedup: s.chunks_dedup,
            chunks_delta: s.chunks_delta,
            chunks_free: s.chunks_free,
            chunks_hole: s.chunks_hole,
            chunks_new: s.chunks_new,
            chunks_unchanged: s.chunks_unchanged,
            chunks_unread: s.chunks_unread,
            chunks_zero: s.chunks_zero,
            duration_s: s.duration_s,
            filesystems: filesystems(snap),
            parent: snap.parent,
            scan_reason: done.scan_reason.as_deref(),
            size: snap.source.size,
            snapshot: snap.id,
            source: &snap.source.path,
            tags: &snap.tags,
            time: &snap.time,
        }
    }
}

/// One line per filesystem: how much of it is used, or why it was copied
/// whole.
fn filesystems(snap: &Snapshot) -> Vec<String> {
    let Some(Ok(layout)) = snap.parsed_layout::<Layout>() else {
        return Vec::new();
    };
    let sector = u64::from(layout.sector_size);
    let whole = layout
        .content
        .iter()
        .map(|c| ("the whole source".to_string(), layout.disk_size, c));
    let parts = layout.partitions.iter().filter_map(|p| {
        let c = p.content.as_ref()?;
        Some((
            format!("partition {}", p.number),
            p.sectors.saturating_mul(sector),
            c,
        ))
    });
    whole
        .chain(parts)
        .map(|(name, size, c)| match (&c.used, &c.copied_whole) {
            (Some(used), _) => format!(
                "{name} ({}): {} used of {}, free space skipped",
                c.fstype,
                output::bytes(*used),
                output::bytes(size)
            ),
            (None, Some(why)) => format!("{name} ({}): copied whole: {why}", c.fstype),
            (None, None) => format!("{name} ({}): copied whole (free space not read)", c.fstype),
        })
        .collect()
}
