//! `platter repair`: bring back damaged data from a copy of the repository.

use std::path::PathBuf;

use platter::engine::repair::repair;

use super::passphrase::OtherPasswordArgs;
use super::{Context, output};

/// Repair damaged or lost chunks, maps and manifests from a copy of this repository
///
/// Reads and checks every stored chunk (as `verify --read-data`), then
/// fetches what is damaged or missing from the other repository (made by
/// `platter copy`; an encrypted one must share this one's key, see
/// `init --copy-key-from`), checks it, and stores it here again. Runs under an
/// exclusive lock. Run `platter verify` afterwards; `platter prune` frees
/// the space of the damaged copies.
#[derive(clap::Args)]
pub struct Args {
    /// The repository holding good copies (e.g. the one `platter copy --to` wrote)
    #[arg(long, value_name = "PATH")]
    from: PathBuf,

    #[command(flatten)]
    other: OtherPasswordArgs,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let (repo, from) = ctx.open_pair(&args.other, &args.from, "--from")?;
    let bar = output::Bar::new(ctx.json);
    let report = repair(&repo, &from, &bar)?;
    let clean = report.chunks_unrepairable.is_empty()
        && report.maps_unrepairable.is_empty()
        && report.manifests_unrepairable.is_empty();
    if ctx.json {
        output::json(&report)?;
        return Ok(clean);
    }
    output::line(&format!(
        "found {} problem(s); repaired {} chunk(s), {} map(s), {} manifest(s) from {}; \
         {} chunk(s), {} map(s), {} manifest(s) could not be repaired; {:.1}s",
        report.damage.len(),
        report.chunks_repaired.len(),
        report.maps_repaired.len(),
        report.manifests_repaired.len(),
        from.location(),
        report.chunks_unrepairable.len(),
        report.maps_unrepairable.len(),
        report.manifests_unrepairable.len(),
        report.duration_s
    ));
    for id in &report.chunks_unrepairable {
        output::line(&format!("  not repairable: chunk {id}"));
    }
    for id in &report.maps_unrepairable {
        output::line(&format!("  not repairable: the map of snapshot {id}"));
    }
    for id in &report.manifests_unrepairable {
        output::line(&format!("  not repairable: the manifest of snapshot {id}"));
    }
    Ok(clean)
}
