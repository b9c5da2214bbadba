//! `platter key`: the key files (passphrases) of an encrypted repository.

use std::path::PathBuf;

use platter::codec::kdf::{DEFAULT_KDF, KdfParams};
use platter::repo::Repository;
use platter::repo::keys::{self, KeySlot};
use platter::{Error, Result};

use super::passphrase::Passphrases;
use super::{Context, output};

/// Manage the passphrases that open an encrypted repository
///
/// Each passphrase is a key file in keys/ holding the master key wrapped
/// under it; any one opens the repository. Every command here needs a
/// passphrase that opens it now.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List the key files: id, when made, Argon2id parameters
    List,
    /// Add a passphrase (a new key file); the current ones keep working
    Add(NewArgs),
    /// Remove a key file, so its passphrase no longer opens the repository
    Remove(RemoveArgs),
    /// Change the passphrase you open the repository with: adds the new
    /// one, then removes the key file of the current one
    Passwd(NewArgs),
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// Read the new passphrase from the first line of FILE (default: ask
    /// twice on the terminal)
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,

    /// Run COMMAND with `sh -c`; its first line of output is the new
    /// passphrase
    #[arg(long, value_name = "COMMAND")]
    new_password_command: Option<String>,

    #[command(flatten)]
    kdf: KdfArgs,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The key file's id, or a unique prefix of it (see `platter key list`)
    id: String,
}

/// How hard a new passphrase is to guess: Argon2id's cost.
#[derive(clap::Args)]
pub struct KdfArgs {
    /// Memory Argon2id needs to turn the passphrase into a key: each guess
    /// costs an attacker this much, and the machine that opens the
    /// repository must have it free
    #[arg(long, default_value = "256M", value_name = "SIZE", value_parser = super::parse_size)]
    kdf_memory: u64,

    /// Argon2id passes over that memory (time grows with them)
    #[arg(long, default_value_t = DEFAULT_KDF.iterations, value_name = "N")]
    kdf_iterations: u32,
}

impl KdfArgs {
    pub fn params(&self) -> Result<KdfParams> {
        let params = KdfParams {
            memory_kib: u32::try_from(self.kdf_memory / 1024).unwrap_or(u32::MAX),
            iterations: self.kdf_iterations,
            parallelism: DEFAULT_KDF.parallelism,
        };
        params.check()?;
        Ok(params)
    }
}

pub fn describe_kdf(kdf: &KdfParams) -> String {
    format!(
        "Argon2id with {} and {} pass(es)",
        output::bytes(u64::from(kdf.memory_kib) * 1024),
        kdf.iterations
    )
}

pub fn run(ctx: &Context, command: Command) -> Result<bool> {
    let repo = ctx.open_repo()?;
    let Some((master, current)) = repo.key() else {
        return Err(Error::bad_input(format!(
            "{} is not encrypted: it has no keys",
            repo.root().display()
        ))
        .hint("an encrypted repository is made with `platter init` (without --plain)"));
    };
    let current = current.to_string();
    let backend = repo.backend();
    let repo_id = &repo.config().repo_id;
    match command {
        Command::List => {
            let (slots, damaged) = keys::list(backend)?;
            if ctx.json {
                let list: Vec<_> = slots
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id,
                            "current": s.id == current,
                            "created": s.file.created,
                            "kdf": s.file.kdf,
                        })
                    })
                    .collect();
                let damaged: Vec<_> = damaged
                    .iter()
                    .map(|(name, e)| serde_json::json!({"file": name, "error": e.to_string()}))
                    .collect();
                output::json(&serde_json::json!({"keys": list, "damaged": damaged}))?;
            } else {
                for s in &slots {
                    output::line(&format!(
                        "{} {}  {}  {}",
                        if s.id == current { "*" } else { " " },
                        &s.id[..12],
                        s.file.created,
                        describe_kdf(&s.file.kdf)
                    ));
                }
                for (name, e) in &damaged {
                    output::line(&format!("  DAMAGED {name}: {e}"));
                }
                output::line("(* opened this time)");
            }
            Ok(damaged.is_empty())
        }
        Command::Add(args) => {
            let (pass, kdf) = new_passphrase(&repo, &args)?;
            let id = keys::add(backend, repo_id, master, &pass, &kdf)?;
            report(ctx, "added", &id, &format!("added key {}", &id[..12]))
        }
        Command::Passwd(args) => {
            let (pass, kdf) = new_passphrase(&repo, &args)?;
            // The new key file is durable before the old one goes.
            let id = keys::add(backend, repo_id, master, &pass, &kdf)?;
            keys::remove(backend, &current)?;
            report(
                ctx,
                "changed",
                &id,
                &format!(
                    "added key {} and removed key {} (the passphrase you used)",
                    &id[..12],
                    &current[..12]
                ),
            )
        }
        Command::Remove(args) => {
            let (slots, _) = keys::list(backend)?;
            let slot = pick(&slots, &args.id)?;
            if slot.id == current {
                return Err(Error::bad_input(format!(
                    "key {} is the one this passphrase opened: removing it could lock you out",
                    &slot.id[..12]
                ))
                .hint(
                    "open with another passphrase to remove this one, or use `platter key passwd`",
                ));
            }
            keys::remove(backend, &slot.id)?;
            report(
                ctx,
                "removed",
                &slot.id,
                &format!("removed key {}", &slot.id[..12]),
            )
        }
    }
}

fn new_passphrase(
    repo: &Repository,
    args: &NewArgs,
) -> Result<(zeroize::Zeroizing<String>, KdfParams)> {
    let kdf = args.kdf.params()?;
    let source = Passphrases::explicit(
        args.new_password_command.clone(),
        args.new_password_file.clone(),
        format!("repository {}", repo.root().display()),
    );
    Ok((source.new_passphrase()?, kdf))
}

fn pick<'a>(slots: &'a [KeySlot], spec: &str) -> Result<&'a KeySlot> {
    let spec = spec.to_ascii_lowercase();
    let matches: Vec<&KeySlot> = slots.iter().filter(|s| s.id.starts_with(&spec)).collect();
    match matches.as_slice() {
        [one] if !spec.is_empty() => Ok(one),
        [] => Err(Error::not_found(format!("no key file matches {spec:?}"))
            .hint("`platter key list` shows them")),
        _ => Err(Error::bad_input(format!(
            "{spec:?} matches {} key files: give more digits",
            matches.len()
        ))),
    }
}

fn report(ctx: &Context, what: &str, id: &str, text: &str) -> Result<bool> {
    if ctx.json {
        output::json(&serde_json::json!({ what: id }))?;
    } else {
        output::line(text);
    }
    Ok(true)
}
