//! `platter key`: the key files (passphrases) of an encrypted repository.

use std::path::PathBuf;

use platter::Result;
use platter::codec::kdf::{self, DEFAULT_PARALLELISM, KdfParams};
use platter::engine::keys::{self, KeyList};
use platter::repo::{KeyId, Repository};

use super::passphrase::Passphrases;
use super::{Context, output};

/// Manage the passphrases that open an encrypted repository
///
/// Each passphrase is a key file in keys/ holding the master key wrapped
/// under it; any one opens the repository. Every command here needs a
/// passphrase that opens it now. `remove` and `passwd` take the
/// repository's exclusive lock: while a backup or another command uses the
/// repository they fail with exit 5.
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
    /// repository must have it free. The default is fixed, never scaled up
    /// to the machine making the key: a key made on a large server must
    /// still open on a small NAS or in the 1 GiB rescue VM
    #[arg(long, default_value = "256M", value_name = "SIZE", value_parser = super::parse_size)]
    kdf_memory: u64,

    /// Argon2id passes over that memory (time grows with them) [default:
    /// as many as take about 0.5 s on this machine, at least 1]
    #[arg(long, value_name = "N")]
    kdf_iterations: Option<u32>,
}

impl KdfArgs {
    /// The parameters for a new key: the passes given, or calibrated here
    /// (which takes about one pass).
    pub fn params(&self) -> Result<KdfParams> {
        let memory_kib = u32::try_from(self.kdf_memory / 1024).unwrap_or(u32::MAX);
        let params = match self.kdf_iterations {
            Some(iterations) => KdfParams {
                memory_kib,
                iterations,
                parallelism: DEFAULT_PARALLELISM,
            },
            None => {
                // Checked before a pass is timed: a hostile memory size
                // must not be allocated.
                KdfParams {
                    memory_kib,
                    iterations: 1,
                    parallelism: DEFAULT_PARALLELISM,
                }
                .check()?;
                kdf::calibrated(memory_kib, kdf::CALIBRATION_TARGET)?
            }
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
    // A plain repository is refused before a new passphrase is asked.
    keys::opened_key(&repo)?;
    let bar = output::Bar::new(ctx.json);
    match command {
        Command::List => {
            let KeyList {
                slots,
                current,
                damaged,
            } = keys::list(&repo, &bar)?;
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
                        s.id.prefix(12),
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
            let id = keys::add(&repo, &pass, &kdf, &bar)?;
            report(ctx, "added", &id, &format!("added key {}", id.prefix(12)))
        }
        Command::Passwd(args) => {
            let (pass, kdf) = new_passphrase(&repo, &args)?;
            let changed = keys::passwd(&repo, &pass, &kdf, &bar)?;
            report(
                ctx,
                "changed",
                &changed.added,
                &format!(
                    "added key {} and removed key {} (the passphrase you used)",
                    changed.added.prefix(12),
                    changed.removed.prefix(12)
                ),
            )
        }
        Command::Remove(args) => {
            let id = keys::remove(&repo, &args.id, &bar)?;
            report(
                ctx,
                "removed",
                &id,
                &format!("removed key {}", id.prefix(12)),
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
        format!("repository {}", repo.location()),
    );
    Ok((source.new_passphrase()?, kdf))
}

fn report(ctx: &Context, what: &str, id: &KeyId, text: &str) -> Result<bool> {
    if ctx.json {
        output::json(&serde_json::json!({ what: id }))?;
    } else {
        output::line(text);
    }
    Ok(true)
}
