//! `platter restore`: write a snapshot to a file or device.

use std::path::PathBuf;

use platter::engine::restore::{
    ExpectedDisk, RestoreOptions, RestoreReport, restore, restore_with_overlay,
};

use super::{Context, output};

/// Restore a snapshot onto a new image file, an existing file, or a device
///
/// Nothing is written to a target that is mounted, in use (also through
/// another loop device on the same bytes), too small, inside a platter
/// repository (by identity: links and bind mounts count), or on a
/// filesystem without room for the data; nor to a new file in /dev (a
/// mistyped device name).
/// Every chunk is checked before it is written (its BLAKE3 id; in an
/// encrypted repository an uncompressed chunk's seal, which proves a key
/// holder sealed it for this id: `verify --read-data` recomputes every id);
/// a damaged chunk stops the restore (see --continue-on-error).
///
/// A whole disk may go onto a larger target: a GPT's backup table is moved
/// to the new end (and --grow-last-partition extends the last partition);
/// or onto a smaller one, if every partition still fits (the GPT is rebuilt
/// for the smaller size). A target with another logical sector size than
/// the source is refused. After writing a whole disk to a block device the
/// kernel is asked to re-read its partition table.
///
/// --overlay FILE adds the writes of a VM booted from the snapshot and
/// kept with `platter boot SNAPSHOT --keep-overlay FILE`: the snapshot is
/// restored (and checked with --verify), then every cluster the VM wrote
/// is written over it, so the target holds what the VM saw. The file must
/// be a qcow2 over a disk.img of this snapshot's size, or nothing is written.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter restore latest /dev/sdc --verify\n  \
platter restore latest disk.img --size 64G --grow-last-partition\n  \
platter restore latest root.img --partition 2\n  \
platter restore 3f2a91c0 /dev/sdc --overlay /srv/recovered.qcow2   (after platter boot --keep-overlay)")]
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

    /// Restore only partition N of a whole-disk snapshot (numbers as `platter show` lists them)
    #[arg(long, value_name = "N")]
    partition: Option<u32>,

    /// Size of a new image file (e.g. 64G, 512MiB, 1000000000); default the snapshot's size
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    size: Option<u64>,

    /// On a larger target, extend the last partition to the end of the disk (the filesystem in it is not grown; the next step is printed)
    #[arg(long)]
    grow_last_partition: bool,

    /// Refuse unless the target device is exactly this many bytes (checked once it is held exclusively)
    #[arg(long, value_name = "BYTES")]
    expect_size: Option<u64>,

    /// Refuse unless the target device has this serial or WWN (checked once it is held exclusively)
    #[arg(long, value_name = "TEXT")]
    expect_serial: Option<String>,

    /// Also write the changes a VM made in this qcow2 overlay (from `platter boot --keep-overlay FILE`)
    #[arg(long, value_name = "FILE")]
    overlay: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    if args
        .expect_serial
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(platter::Error::bad_input("--expect-serial is empty").hint(
            "give the serial or WWN the target must have, as `lsblk -o NAME,SERIAL,WWN` shows it",
        ));
    }
    let repo = ctx.open_repo()?;
    let options = RestoreOptions {
        force: args.force,
        verify: args.verify,
        continue_on_error: args.continue_on_error,
        partition: args.partition,
        file_size: args.size,
        grow_last_partition: args.grow_last_partition,
        expect: (args.expect_size.is_some() || args.expect_serial.is_some()).then_some(
            ExpectedDisk {
                size: args.expect_size,
                serial: args.expect_serial,
            },
        ),
    };
    let bar = output::Bar::new(ctx.json);
    let report = match &args.overlay {
        Some(overlay) => {
            restore_with_overlay(&repo, &args.snapshot, &args.target, overlay, &options, &bar)?
        }
        None => restore(&repo, &args.snapshot, &args.target, &options, &bar)?,
    };
    // Warnings go to stderr, as every command's do; --json also lists them.
    for w in &report.warnings {
        output::warn(w);
    }
    if ctx.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(report.damaged.is_empty())
}

/// The report in words, for a person.
fn print_report(report: &RestoreReport) {
    output::line(&format!(
        "restored snapshot {}{} to {} ({}): {} of data written, {} zero chunks, {:.1}s{}",
        &report.snapshot.prefix(8),
        report
            .partition
            .map_or(String::new(), |n| format!(" (partition {n})")),
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
    if let Some(overlay) = &report.overlay {
        output::line(&format!(
            "wrote the VM's changes from overlay {overlay} over it ({} in the overlay)",
            platter::units::bytes(report.overlay_bytes.unwrap_or(0))
        ));
    }
    for change in &report.table_changes {
        output::line(&format!("partition table: {change}"));
    }
    if let Some(step) = &report.next_step {
        output::line(&format!("next: grow the filesystem: {step}"));
    }
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
                &d.chunk.to_hex()[..16],
                d.reason
            ));
        }
    }
}
