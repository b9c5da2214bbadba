//! `platter unlock`: remove locks left by processes that are gone, and
//! the half-written lock files of killed commands.

use platter::repo::lock::remove_locks;

use super::{Context, output};

/// Remove stale locks: of processes that no longer run on this host, and
/// any lock not refreshed for 30 minutes (judged by this machine's clock)
///
/// Also removes half-written lock files of killed commands: those whose
/// process is gone from this host, or, when that cannot be told (another
/// host), that have not changed for an hour.
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
        let names: Vec<&str> = removed.locks.iter().map(|r| r.name.as_str()).collect();
        let mut report = serde_json::json!({ "removed": names });
        if !removed.unfinished.is_empty() {
            report["unfinished_removed"] = serde_json::json!(removed.unfinished);
        }
        output::json(&report)?;
        return Ok(true);
    }
    if removed.locks.is_empty() {
        output::line("no stale locks");
    } else {
        for r in &removed.locks {
            let who = r
                .info
                .as_ref()
                .map(|i| format!("`{}` pid {} on {}", i.command, i.pid, i.hostname))
                .unwrap_or_else(|| "unreadable lock".into());
            output::line(&format!("removed {} ({who})", r.name));
        }
    }
    for name in &removed.unfinished {
        output::line(&format!(
            "removed {} (unfinished lock file of a command that is gone)",
            repo.describe(name)
        ));
    }
    Ok(true)
}
