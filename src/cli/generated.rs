//! `platter completions` and `platter man`: shell completions and manual
//! pages, generated from the command-line definition itself (clap_complete,
//! clap_mangen), so they never disagree with `--help`.

use std::path::PathBuf;

use clap::CommandFactory;
use platter::Error;

use super::{Cli, output};

/// Print the shell completion script for SHELL on stdout
///
/// Install it once (as root for everyone), e.g.:
///   bash: platter completions bash > /etc/bash_completion.d/platter
///   zsh:  platter completions zsh > /usr/local/share/zsh/site-functions/_platter
///   fish: platter completions fish > ~/.config/fish/completions/platter.fish
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

/// Write the manual pages (platter.1 and one per command, platter-backup.1, ...) into DIR
///
/// Existing pages of the same names are replaced. Install them once, e.g.:
///   platter man /usr/local/share/man/man1 && mandb -q
/// then `man platter-restore`.
#[derive(clap::Args)]
pub struct ManArgs {
    /// An existing folder, e.g. /usr/local/share/man/man1
    dir: PathBuf,
}

pub fn completions(json: bool, args: CompletionsArgs) -> platter::Result<bool> {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics when its writer fails, and
    // stdout may be a pipe its reader closed.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "platter", &mut script);
    let script = String::from_utf8_lossy(&script);
    if json {
        output::json(&serde_json::json!({
            "shell": args.shell.to_string(),
            "script": script,
        }))?;
    } else {
        output::verbatim(script.trim_end_matches('\n'));
    }
    Ok(true)
}

pub fn man(json: bool, args: ManArgs) -> platter::Result<bool> {
    let dir = &args.dir;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("look at", dir, e))?;
    if !meta.is_dir() {
        return Err(
            Error::bad_input(format!("{} is not a folder", dir.display()))
                .hint("name the folder the pages go into, e.g. /usr/local/share/man/man1"),
        );
    }
    if let Some(repo) = platter::repo::footprint::repository_around(dir) {
        return Err(Error::bad_input(format!(
            "{} is inside the platter repository {}",
            dir.display(),
            repo.display()
        ))
        .hint("write the pages into a manual folder, e.g. /usr/local/share/man/man1"));
    }
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| Error::io("write the manual pages into", dir, e))?;
    // The pages written, named as clap_mangen names them: one per command
    // that --help shows, subcommands joined with '-'.
    fn names(command: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            command.get_name().to_string()
        } else {
            format!("{prefix}-{}", command.get_name())
        };
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            names(sub, &name, out);
        }
        out.push(format!("{name}.1"));
    }
    let mut pages = Vec::new();
    names(&Cli::command(), "", &mut pages);
    pages.sort();
    if json {
        output::json(&serde_json::json!({ "dir": dir.display().to_string(), "pages": pages }))?;
    } else {
        output::line(&format!(
            "wrote {} manual pages into {} (read one with `man -l {}/platter.1`)",
            pages.len(),
            dir.display(),
            dir.display()
        ));
    }
    Ok(true)
}
