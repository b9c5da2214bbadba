//! `platter unlock`: remove locks left by processes that are gone.

use platter::repo::lock::remove_locks;

use super::{Context, output};

/// Remove stale locks (of processes that no longer run on this host)
#[derive(clap::Args)]
pub struct Args {
    /// Remove every lock, also of running processes and other hosts.
    /// Only when you are sure no other platter uses the repository.
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let removed = remove_locks(&repo, args.all)?;
    if ctx.json {
        let names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
        output::json(&serde_json::json!({ "removed": names }))?;
    } else if removed.is_empty() {
        output::line("no stale locks");
    } else {
        for r in &removed {
            let who = r
                .info
                .as_ref()
                .map(|i| format!("`{}` pid {} on {}", i.command, i.pid, i.hostname))
                .unwrap_or_else(|| "unreadable lock".into());
            output::line(&format!("removed {} ({who})", r.name));
        }
    }
    Ok(true)
}
