//! `platter prune`: free the space no snapshot needs.

use platter::engine::prune::{PruneOptions, PruneReport, prune};

use super::{Context, output};

/// Remove data that no snapshot needs, under an exclusive lock
///
/// Deletes packs no snapshot uses, and repacks packs that are mostly unused
/// (their live chunks are read, checked and written anew). Also removes
/// what interrupted commands left behind. Refuses to start while another
/// command uses the repository. Killed at any moment, it leaves every
/// snapshot restorable. Files whose names are not platter's are left alone.
///
/// On a full filesystem it uses the repository's 4 MiB space reserve to
/// take its lock and write the new index, deleting first only what no index
/// names, and makes the reserve again when done; packs that cannot be
/// repacked for lack of room stay as they are.
#[derive(clap::Args)]
pub struct Args {
    /// Show what would be removed; change nothing
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    tuning: Tuning,
}

#[derive(clap::Args)]
pub struct Tuning {
    /// Repack a pack once at least this percentage of it is unused
    #[arg(long, value_name = "PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub repack_percent: u8,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let options = PruneOptions {
        dry_run: args.dry_run,
        repack_percent: args.tuning.repack_percent,
    };
    let bar = output::Bar::new(ctx.json);
    let report = prune(&repo, &options, &bar)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        print(&report);
    }
    // Exit 4 when snapshots need chunks that no pack holds.
    Ok(report.chunks_missing == 0)
}

pub fn print(r: &PruneReport) {
    let verb = if r.dry_run { "would free" } else { "freed" };
    output::line(&format!(
        "prune{}: {} snapshot(s) use {} chunk(s); {} of {} pack(s) deleted, {} repacked into {}; \
         {} -> {} ({verb} {}); {:.1}s",
        if r.dry_run { " (dry run)" } else { "" },
        r.snapshots,
        r.chunks_used,
        r.packs_deleted,
        r.packs_before,
        r.packs_repacked,
        r.packs_written,
        output::bytes(r.bytes_before),
        output::bytes(r.bytes_after),
        output::bytes(r.bytes_before.saturating_sub(r.bytes_after)),
        r.duration_s
    ));
    if r.maps_removed + r.unfinished_removed > 0 {
        output::line(&format!(
            "removed {} map(s) without a snapshot and {} unfinished file(s)",
            r.maps_removed, r.unfinished_removed
        ));
    }
    if r.tests_removed > 0 {
        output::line(&format!(
            "removed {} restore test result(s) of snapshots that are gone",
            r.tests_removed
        ));
    }
    for d in &r.damaged_packs {
        output::warn(&format!("left as it is, unreadable: {d}"));
    }
    if r.chunks_missing > 0 {
        output::warn(&format!(
            "{} chunk(s) that snapshots use are in no pack: run `platter verify`",
            r.chunks_missing
        ));
    }
}
