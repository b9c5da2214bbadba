//! `platter verify`: check the repository.

use platter::engine::verify::{VerifyOptions, VerifyReport, verify};
use platter::engine::verify_without_key::verify_without_key;

use super::{Context, output};

/// Check the repository's structure, and with --read-data every stored byte
///
/// Exit code 0: no damage (leftovers of interrupted backups are listed but
/// are not damage). Exit code 4: damage found; each problem names the file,
/// the chunks, and the snapshots and byte ranges it affects.
///
/// --without-key checks an encrypted repository (or any other) without its
/// passphrase: every stored byte against the crc32s the format keeps
/// outside the seals. It finds storage damage, not forgery: that takes the
/// key.
#[derive(clap::Args)]
pub struct Args {
    /// Also read every chunk and check its crc32 and id (and its seal)
    #[arg(long)]
    read_data: bool,

    /// Read every stored byte and check it against its crc32, without the
    /// passphrase (for a host that keeps copies but not the key)
    #[arg(long, conflicts_with_all = ["read_data", "snapshots", "snapshot_flags"])]
    without_key: bool,

    /// Only these snapshots (ids, prefixes or `latest`); default all
    snapshots: Vec<String>,

    /// Only this snapshot (repeatable; the same as naming it)
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    snapshot_flags: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let bar = output::Bar::new(ctx.json);
    let read_data = args.read_data || args.without_key;
    let report = if args.without_key {
        verify_without_key(&*ctx.backend()?, &bar)?
    } else {
        let repo = ctx.open_repo()?;
        let options = VerifyOptions {
            read_data: args.read_data,
            snapshots: args
                .snapshots
                .into_iter()
                .chain(args.snapshot_flags)
                .collect(),
        };
        verify(&repo, &options, &bar)?
    };
    if ctx.json {
        output::json(&report)?;
    } else {
        print(&report, read_data, args.without_key);
    }
    Ok(report.is_clean())
}

/// The report for a person: each problem, a summary line, and what to do.
fn print(report: &VerifyReport, read_data: bool, without_key: bool) {
    for p in &report.damage {
        output::line(&format!("DAMAGE   {}: {}", p.file, p.what));
        for c in p.chunks.iter().take(5) {
            output::line(&format!("         chunk {c}"));
        }
        if p.chunks.len() > 5 {
            output::line(&format!(
                "         ... and {} more chunks",
                p.chunks.len() - 5
            ));
        }
        for a in &p.affects {
            output::line(&format!(
                "         affects snapshot {} bytes {}..{}",
                &a.snapshot.prefix(8),
                a.offset,
                a.offset + a.len
            ));
        }
    }
    for p in &report.leftovers {
        output::line(&format!("LEFTOVER {}: {}", p.file, p.what));
    }
    output::line(&format!(
        "{}: {} snapshot(s), {} pack(s), {} chunk(s){}, {} problem(s), {} leftover(s), {:.1}s",
        if report.is_clean() { "ok" } else { "DAMAGED" },
        report.snapshots,
        report.packs,
        report.chunks,
        if read_data {
            format!(", {} read and checked", output::bytes(report.bytes_read))
        } else {
            String::new()
        },
        report.damage.len(),
        report.leftovers.len(),
        report.duration_s
    ));
    if !report.is_clean() && without_key {
        output::hint(
            "run `platter verify --read-data` (with the passphrase, where the repository is \
             encrypted) to see which snapshots the damage affects; `platter rebuild-index` \
             rebuilds a damaged index file from the packs, and `platter repair --from COPY` \
             brings damaged data back",
        );
    } else if !report.is_clean() {
        output::hint(
            "if an index file is damaged or chunks are in no index, `platter rebuild-index` \
             rebuilds the index from the packs; for damaged packs, restore the affected snapshots \
             with --continue-on-error to recover the rest, or bring the data back from a copy \
             of the repository with `platter repair --from COPY`",
        );
    }
    if !report.leftovers.is_empty() && report.is_clean() {
        output::hint(
            "leftovers do no harm: `platter prune` removes unfinished writes and data no \
             snapshot uses, `platter unlock` removes unfinished lock files of dead commands; \
             files that are not platter's are left for you to move away",
        );
    }
}
