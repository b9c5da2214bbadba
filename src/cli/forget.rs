//! `platter forget`: remove snapshots by a retention policy or by name.

use std::time::Duration;

use platter::engine::forget::{ForgetOptions, forget};
use platter::engine::prune::PruneOptions;
use platter::engine::retention::Policy;

use super::selection::SourceArgs;
use super::{Context, output, prune};

/// Remove snapshots by a retention policy (per source), or by name
///
/// Within each source, newest first: --keep-last N keeps the N newest;
/// --keep-hourly/daily/weekly/monthly/yearly N keep the newest snapshot of
/// each of the N most recent hours, days, ISO weeks, months or years (UTC)
/// that have one; --keep-within 30d keeps those taken within 30 days of the
/// source's newest snapshot; --keep-tag keeps tagged ones. A snapshot kept
/// by any rule stays. Protected snapshots (`platter protect`) always stay.
/// A policy never removes every snapshot of a source: one that would (a
/// misspelt --keep-tag, say) is refused with exit 2 and changes nothing;
/// to forget the last snapshots of a source, name them by id. Only
/// manifests and maps are removed; add --prune (or run `platter prune`) to
/// free the space. Use --dry-run first. In a repository several machines
/// back up to, a --source whose snapshots come from several hosts is
/// refused unless --host names one: the same path on two hosts is two
/// disks.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run\n  \
platter forget --keep-last 3 --source /dev/sda --prune\n  \
platter forget 3f2a91c0")]
pub struct Args {
    /// Snapshots to forget by name (instead of a policy)
    snapshots: Vec<String>,

    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep_yearly: Option<u32>,
    /// Keep snapshots taken within this long of the source's newest (e.g. 14d, 36h)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_within: Option<Duration>,
    /// Keep snapshots with this tag (repeatable); a tag no snapshot carries is named in a warning
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,

    #[command(flatten)]
    source: SourceArgs,

    /// Show what would be kept and removed, and why; change nothing
    #[arg(long)]
    dry_run: bool,

    /// Then remove the data no snapshot needs (see `platter prune`)
    #[arg(long)]
    prune: bool,

    #[command(flatten)]
    prune_args: prune::Tuning,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let (source, host) = args.source.split();
    let options = ForgetOptions {
        policy: Policy {
            last: args.keep_last.map(|n| n as usize),
            hourly: args.keep_hourly.map(|n| n as usize),
            daily: args.keep_daily.map(|n| n as usize),
            weekly: args.keep_weekly.map(|n| n as usize),
            monthly: args.keep_monthly.map(|n| n as usize),
            yearly: args.keep_yearly.map(|n| n as usize),
            within: args.keep_within,
            tags: args.keep_tags,
        },
        snapshots: args.snapshots,
        source,
        host,
        dry_run: args.dry_run,
        prune: args.prune.then_some(PruneOptions {
            dry_run: false,
            repack_percent: args.prune_args.repack_percent,
        }),
    };
    let bar = output::Bar::new(ctx.json);
    let report = forget(&repo, &options, &bar)?;
    if ctx.json {
        output::json(&report)?;
        return Ok(true);
    }
    let mut source = None;
    for d in &report.decisions {
        if source.as_ref() != Some(&d.source) {
            output::line(&format!("source {}:", d.source));
            source = Some(d.source.clone());
        }
        let verdict = match (d.keep, report.dry_run) {
            (true, _) => "keep",
            (false, true) => "would remove",
            (false, false) => "removed",
        };
        output::line(&format!(
            "  {}  {}  {:<12}  {}",
            &d.snapshot.prefix(8),
            &d.time[..19.min(d.time.len())],
            verdict,
            d.reasons.join(", ")
        ));
    }
    let kept = report.decisions.iter().filter(|d| d.keep).count();
    output::line(&format!(
        "{} kept, {} {}",
        kept,
        report.decisions.len() - kept,
        if report.dry_run {
            "would be removed (dry run: nothing changed)"
        } else {
            "removed"
        }
    ));
    if let Some(p) = &report.prune {
        prune::print(p);
    }
    Ok(true)
}
