//! `platter restore`: write a snapshot to a file or device.

use std::path::PathBuf;

use platter::engine::restore::{RestoreOptions, restore};

use super::{Context, output};

/// Restore a snapshot onto a new image file, an existing file, or a device
///
/// Nothing is written to a target that is mounted, in use, or smaller than
/// the snapshot. Every chunk is checked against its BLAKE3 id before it is
/// written; a damaged chunk stops the restore (see --continue-on-error).
#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id, unique prefix, or `latest`
    snapshot: String,

    /// New image file (created sparse), existing file (with --force) or block device
    target: PathBuf,

    /// Overwrite an existing image file
    #[arg(long)]
    force: bool,

    /// Read the target back afterwards and compare it with the snapshot
    #[arg(long)]
    verify: bool,

    /// Write zeros where chunks are damaged, go on, and list the damaged ranges
    #[arg(long)]
    continue_on_error: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let options = RestoreOptions {
        force: args.force,
        verify: args.verify,
        continue_on_error: args.continue_on_error,
    };
    let bar = output::Bar::new(ctx.json);
    let report = restore(&repo, &args.snapshot, &args.target, &options, &bar)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        output::line(&format!(
            "restored snapshot {} to {} ({}): {} of data written, {} zero chunks, {:.1}s{}",
            &report.snapshot[..8],
            report.target,
            report.target_kind,
            output::bytes(report.bytes_written),
            report.chunks_zero,
            report.duration_s,
            match report.verified {
                Some(true) => ", read back and verified",
                _ => "",
            }
        ));
        if !report.damaged.is_empty() {
            output::line(&format!(
                "{} damaged range(s) were filled with zeros:",
                report.damaged.len()
            ));
            for d in &report.damaged {
                output::line(&format!(
                    "  bytes {}..{} (chunk {}): {}",
                    d.offset,
                    d.offset + d.len,
                    &d.chunk[..16],
                    d.reason
                ));
            }
        }
    }
    Ok(report.damaged.is_empty())
}
