//! `platter upgrade`: turn on the format features this platter knows.

use platter::engine::upgrade::upgrade;

use super::{Context, output};

/// Turn on, in a repository made by an older platter, the format features
/// this one knows (today: sub-chunk deltas, which make incrementals store
/// only the 4 KiB pages that changed, and sorted index files, read a block
/// at a time)
///
/// The config changes, and index files of older versions are rewritten
/// into one sorted file (durable before they go; a damaged one stops the
/// rewrite and changes nothing). Snapshots, maps and packs stay as they
/// are. Afterwards a platter that predates a feature refuses the
/// repository (so that an old binary, say on an old rescue stick, never
/// prunes what deltas need): use this platter or a newer one with it, and
/// rebuild rescue media.
#[derive(clap::Args)]
pub struct Args {
    /// Say what would be turned on, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let bar = output::Bar::new(ctx.json);
    let report = upgrade(&repo, args.dry_run, &bar)?;
    if ctx.json {
        output::json(&report)?;
        return Ok(true);
    }
    if report.enabled.is_empty() && report.index_files_rewritten == 0 {
        output::line(&format!(
            "{} already uses every format feature this platter knows ({})",
            repo.location(),
            report.features.join(", ")
        ));
        return Ok(true);
    }
    let verb = if report.dry_run {
        "would turn on"
    } else {
        "turned on"
    };
    if !report.enabled.is_empty() {
        output::line(&format!(
            "{verb} format feature(s) {} in {}",
            report.enabled.join(", "),
            repo.location()
        ));
    }
    if report.index_files_rewritten > 0 {
        let verb = if report.dry_run {
            "would rewrite"
        } else {
            "rewrote"
        };
        output::line(&format!(
            "{verb} {} index file(s) of an older version into one sorted file{}",
            report.index_files_rewritten,
            if report.dry_run {
                String::new()
            } else {
                format!(" ({} entries)", report.index_entries_rewritten)
            }
        ));
    }
    if !report.dry_run && !report.enabled.is_empty() {
        output::line(
            "a platter that predates these features now refuses this repository: \
             use this one or a newer one with it (and rebuild rescue media)",
        );
    }
    Ok(true)
}
