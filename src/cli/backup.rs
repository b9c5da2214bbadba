//! `platter backup`: image a device or file into the repository.

use std::path::PathBuf;

use platter::disk::layout::Layout;
use platter::engine::backup::{BackupOptions, backup};
use platter::repo::SnapshotId;
use platter::repo::snapshot::Snapshot;

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
#[derive(clap::Args)]
pub struct Args {
    /// Block device (e.g. /dev/sdb) or image file; opened read-only
    source: PathBuf,

    /// Label the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Hash every chunk instead of trusting the parent's fingerprints
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
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let options = BackupOptions {
        tags: args.tags,
        full: args.full,
        parent: args.parent,
        partition: args.partition,
        raw: args.raw,
        allow_mounted: args.allow_mounted,
    };
    let bar = output::Bar::new(ctx.json);
    let snap = backup(&repo, &args.source, &options, &bar)?;
    let s = &snap.stats;
    if ctx.json {
        output::json(&BackupReport::new(&snap))?;
    } else {
        let parent = snap
            .parent
            .map_or("none (full backup)".to_string(), |p| p.prefix(8));
        output::line(&format!(
            "snapshot {} of {} ({}): read {}, skipped {} free, added {} in {} new{} of {} chunks \
             ({} unchanged, {} deduplicated, {} zero), parent {}, {:.1}s",
            snap.short_id(),
            snap.source.path,
            output::bytes(snap.source.size),
            output::bytes(s.bytes_read),
            output::bytes(s.bytes_free),
            output::bytes(s.bytes_new),
            s.chunks_new,
            if s.chunks_delta > 0 {
                format!(
                    " ({} as changed pages over {} of the parent's, read back)",
                    s.chunks_delta,
                    output::bytes(s.bytes_base_read)
                )
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
        for line in filesystems(&snap) {
            output::line(&format!("  {line}"));
        }
    }
    Ok(true)
}

/// What `backup --json` prints. The fields are in alphabetical order, as
/// the JSON has always had them.
#[derive(serde::Serialize)]
struct BackupReport<'a> {
    bytes_base_read: u64,
    bytes_free: u64,
    bytes_new: u64,
    bytes_new_plain: u64,
    bytes_read: u64,
    chunks: u64,
    chunks_dedup: u64,
    chunks_delta: u64,
    chunks_free: u64,
    chunks_hole: u64,
    chunks_new: u64,
    chunks_unchanged: u64,
    chunks_zero: u64,
    duration_s: f64,
    filesystems: Vec<String>,
    parent: Option<SnapshotId>,
    size: u64,
    snapshot: SnapshotId,
    source: &'a str,
    tags: &'a [String],
    time: &'a str,
}

impl<'a> BackupReport<'a> {
    fn new(snap: &'a Snapshot) -> BackupReport<'a> {
        let s = &snap.stats;
        BackupReport {
            bytes_base_read: s.bytes_base_read,
            bytes_free: s.bytes_free,
            bytes_new: s.bytes_new,
            bytes_new_plain: s.bytes_new_plain,
            bytes_read: s.bytes_read,
            chunks: s.chunks,
            chunks_dedup: s.chunks_dedup,
            chunks_delta: s.chunks_delta,
            chunks_free: s.chunks_free,
            chunks_hole: s.chunks_hole,
            chunks_new: s.chunks_new,
            chunks_unchanged: s.chunks_unchanged,
            chunks_zero: s.chunks_zero,
            duration_s: s.duration_s,
            filesystems: filesystems(snap),
            parent: snap.parent,
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
