//! `platter backup`: image a device or file into the repository.

use std::path::PathBuf;

use platter::engine::backup::{BackupOptions, backup};

use super::{Context, output};

/// Back up a block device or image file as a new snapshot
///
/// The parent is the latest snapshot of the same source (same path and size,
/// and same serial/WWN for devices). Chunks whose fingerprint matches the
/// parent's are reused without hashing or storing, so later backups cost only
/// what changed. Holes of sparse image files are not read.
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
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let options = BackupOptions {
        tags: args.tags,
        full: args.full,
        parent: args.parent,
        partition: args.partition,
    };
    let bar = output::Bar::new(ctx.json);
    let snap = backup(&repo, &args.source, &options, &bar)?;
    let s = &snap.stats;
    if ctx.json {
        output::json(&serde_json::json!({
            "snapshot": snap.id,
            "parent": snap.parent,
            "source": snap.source.path,
            "size": snap.source.size,
            "tags": snap.tags,
            "time": snap.time,
            "bytes_read": s.bytes_read,
            "bytes_new": s.bytes_new,
            "bytes_new_plain": s.bytes_new_plain,
            "chunks": s.chunks,
            "chunks_new": s.chunks_new,
            "chunks_unchanged": s.chunks_unchanged,
            "chunks_dedup": s.chunks_dedup,
            "chunks_zero": s.chunks_zero,
            "chunks_hole": s.chunks_hole,
            "duration_s": s.duration_s,
        }))?;
    } else {
        let parent = snap
            .parent
            .as_deref()
            .map_or("none (full backup)".to_string(), |p| {
                p[..8.min(p.len())].to_string()
            });
        output::line(&format!(
            "snapshot {} of {} ({}): read {}, added {} in {} new of {} chunks \
             ({} unchanged, {} deduplicated, {} zero), parent {}, {:.1}s",
            snap.short_id(),
            snap.source.path,
            output::bytes(snap.source.size),
            output::bytes(s.bytes_read),
            output::bytes(s.bytes_new),
            s.chunks_new,
            s.chunks,
            s.chunks_unchanged,
            s.chunks_dedup,
            s.chunks_zero + s.chunks_hole,
            parent,
            s.duration_s
        ));
    }
    Ok(true)
}
