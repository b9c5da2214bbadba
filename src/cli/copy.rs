//! `platter copy`: snapshots into a second repository.

use std::path::PathBuf;

use platter::engine::copy::{CopyOptions, copy};
use platter::engine::snapshots::Selection;

use super::passphrase::OtherPasswordArgs;
use super::selection::SourceArgs;
use super::{Context, output};

/// Copy snapshots into another repository (a second disk, a USB drive, a network mount)
///
/// Only chunks the other repository lacks are moved, each checked against
/// its BLAKE3 id on the way. A snapshot appears there, with the same id,
/// only after all of its data is durable there. Snapshots already there
/// are skipped, so running it again copies nothing new, and an interrupted
/// copy resumes where it stopped. Its chunk size must be the same.
/// Between repositories that share a key (`init --copy-key-from`) or are
/// both plain, blobs move as they are stored; otherwise each chunk is
/// opened, named and sealed anew for the other repository, which costs
/// more. The other repository's passphrase is taken to be this one's
/// unless --other-password-file or --other-password-command give it. A
/// snapshot whose manifest, map or data is damaged or missing here is
/// skipped and named (exit 4); the others are copied. Filters that select
/// nothing out of a repository that has snapshots exit 3.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter -r /backup/repo copy --to /mnt/usb/repo\n  \
platter -r /backup/repo copy --to /mnt/offsite/repo --last 1 --source /dev/sda")]
pub struct Args {
    /// The repository to copy into (create it first with `platter init`)
    #[arg(long, value_name = "PATH")]
    to: PathBuf,

    /// Snapshots to copy (ids, prefixes or `latest`); default all
    snapshots: Vec<String>,

    /// Only the newest N of the selected snapshots
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    last: Option<u64>,

    /// Only snapshots with this tag (repeatable: any of them)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    #[command(flatten)]
    source: SourceArgs,

    /// Allow copying from an encrypted repository into a plain one (the
    /// copy is then readable by whoever holds it)
    #[arg(long)]
    decrypt: bool,

    #[command(flatten)]
    other: OtherPasswordArgs,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let (from, to) = ctx.open_pair(&args.other, &args.to, "--to")?;
    let options = CopyOptions {
        selection: {
            let (source, host) = args.source.split();
            Selection {
                ids: args.snapshots,
                tags: args.tags,
                source,
                host,
                last: args.last.map(|n| n as usize),
            }
        },
        decrypt: args.decrypt,
    };
    let bar = output::Bar::new(ctx.json);
    let report = copy(&from, &to, &options, &bar)?;
    let clean = report.failed.is_empty();
    if ctx.json {
        output::json(&report)?;
        return Ok(clean);
    }
    if report.rekeyed {
        output::line(
            "the repositories have different keys: chunks are opened here, named and sealed anew there",
        );
    }
    for c in &report.copied {
        output::line(&format!(
            "copied snapshot {}: {} new chunk(s), {} stored",
            &c.snapshot.prefix(8),
            c.chunks_copied,
            output::bytes(c.bytes_stored)
        ));
    }
    output::line(&format!(
        "{} snapshot(s) copied to {}, {} already there; {} chunk(s), {} stored, {:.1}s",
        report.copied.len(),
        report.to,
        report.already_there.len(),
        report.chunks_copied,
        output::bytes(report.bytes_stored),
        report.duration_s
    ));
    for f in &report.failed {
        output::line(&format!(
            "NOT copied: snapshot {} ({}); run `platter verify` here",
            &f.snapshot.prefix(8),
            f.error
        ));
    }
    Ok(clean)
}
