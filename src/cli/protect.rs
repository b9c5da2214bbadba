//! `platter protect`: keep snapshots from `forget`.

use platter::engine::protect::protect;

use super::{Context, output};

/// Protect snapshots from `forget` (or, with --remove, stop protecting them)
#[derive(clap::Args)]
pub struct Args {
    /// Snapshots (ids, prefixes or `latest`)
    #[arg(required = true)]
    snapshots: Vec<String>,

    /// Remove the protection instead
    #[arg(long)]
    remove: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let bar = output::Bar::new(ctx.json);
    let done = protect(&repo, &args.snapshots, !args.remove, &bar)?;
    if ctx.json {
        let list: Vec<_> = done
            .iter()
            .map(|s| serde_json::json!({"snapshot": s.id, "protected": s.protected}))
            .collect();
        output::json(&list)?;
    } else {
        for s in &done {
            output::line(&format!(
                "snapshot {} is {}",
                s.short_id(),
                if s.protected {
                    "protected"
                } else {
                    "not protected"
                }
            ));
        }
    }
    Ok(true)
}
