//! `platter rebuild-index`: rebuild the index from the packs.

use platter::engine::rebuild_index::rebuild_index;

use super::{Context, output};

/// Rebuild the index from the packs' own tables
///
/// Use it when `verify` reports a damaged or missing index file. The new
/// index is written before the old files are removed. A table entry that
/// the chunk reader would refuse (a length no chunk can have) is named and
/// left out, and so are the chunks of a pack whose table cannot be read;
/// then the old index files that name such a pack stay (exit 4). Takes an
/// exclusive lock: no backup may run meanwhile.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let bar = output::Bar::new(ctx.json);
    let report = rebuild_index(&repo, &bar)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        output::line(&format!(
            "indexed {} chunk(s) from {} pack(s); replaced {} index file(s)",
            report.chunks, report.packs, report.removed_index_files
        ));
        for pack in &report.unreadable {
            output::line(&format!("unreadable pack (not indexed): {pack}"));
        }
        for entry in &report.rejected {
            output::line(&format!("damaged table entry (not indexed): {entry}"));
        }
    }
    Ok(report.unreadable.is_empty() && report.rejected.is_empty())
}
