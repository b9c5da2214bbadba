//! `platter snapshots`: list snapshots.

use platter::engine::snapshots::{self, Selected, Selection};

use super::selection::SourceArgs;
use platter::repo::BrokenManifest;
use platter::{Error, ErrorKind};

use super::{Context, output};

/// List snapshots, oldest first
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,

    /// Only snapshots with this tag (repeatable: any of them)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let (source, host) = args.source.split();
    let selection = Selection {
        tags: args.tags,
        source,
        host,
        ..Selection::default()
    };
    let Selected {
        snapshots: snaps,
        broken,
    } = snapshots::select(&repo, &selection)?;
    for b in &broken {
        output::warn(&format!("{}: {}", b.name, b.error));
    }
    if ctx.json {
        output::json(&snaps)?;
        return all_read(&broken);
    }
    if snaps.is_empty() {
        output::line("no snapshots");
        return all_read(&broken);
    }
    // Restore tested (`platter run`): its result (ok, failed, or
    // unreadable: a damaged or foreign result file), or "-".
    let tested = platter::repo::test_result::tested(&repo).unwrap_or_default();
    let test_of = |id: &platter::repo::SnapshotId| -> &'static str {
        use platter::jobs::restore_test::TestResult;
        if !tested.contains(id) {
            return "-";
        }
        match platter::repo::test_result::read::<TestResult>(&repo, id) {
            Ok(Some(t)) if t.snapshot == *id && t.result == "ok" => "ok",
            Ok(Some(t)) if t.snapshot == *id => "failed",
            _ => "unreadable",
        }
    };
    output::line(&format!(
        "{:<8}  {:<19}  {:>10}  {:>10}  {:<16}  {:<10}  source",
        "id", "time (UTC)", "size", "added", "tags", "tested"
    ));
    for s in &snaps {
        output::line(&format!(
            "{:<8}  {:<19}  {:>10}  {:>10}  {:<16}  {:<10}  {}",
            s.short_id(),
            s.time.get(..19).unwrap_or(&s.time).replace('T', " "),
            output::bytes(s.source.size),
            output::bytes(s.stats.bytes_new),
            s.tags.join(","),
            test_of(&s.id),
            s.source.path
        ));
    }
    all_read(&broken)
}

/// Whether every manifest was read: a damaged one exits 4 (damage found),
/// and when the only unreadable ones are of a newer format, 7.
fn all_read(broken: &[BrokenManifest]) -> platter::Result<bool> {
    if !broken.is_empty()
        && broken
            .iter()
            .all(|b| b.error.kind() == ErrorKind::Unsupported)
    {
        return Err(Error::unsupported(format!(
            "{} snapshot manifest(s) are of a newer format than this platter reads",
            broken.len()
        ))
        .hint("list them with the platter release that wrote them"));
    }
    Ok(broken.is_empty())
}
