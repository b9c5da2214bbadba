//! Command-line definitions. Options are parsed by clap here and turned
//! into the library's option structs; nothing below sees clap types.

mod backup;
mod boot;
mod copy;
mod forget;
mod generated;
mod init;
mod inspect;
mod jobs;
mod key;
mod layout_text;
mod mount;
mod output;
mod passphrase;
mod protect;
mod prune;
mod rebuild_index;
mod repair;
mod rescue;
mod restore;
mod run;
mod schedule;
mod selection;
mod show;
mod snapshots;
mod unlock;
mod upgrade;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use platter::Result;

#[derive(Parser)]
#[command(
    name = "platter",
    version,
    about = "Block-level disk imaging and backup: incremental, verified, restorable",
    long_about = "platter images block devices and image files into a repository. The first \
backup of a source is full; later ones store only the chunks that changed. Every snapshot \
restores on its own, and every chunk is checked (its BLAKE3 id, or the seal of an encrypted \
one) before it is written.\n\n\
Typical use:\n  platter -r /mnt/backup/repo init\n  platter -r /mnt/backup/repo backup /dev/sdb\n  \
platter -r /mnt/backup/repo snapshots\n  platter -r /mnt/backup/repo restore latest /dev/sdc --verify",
    after_help = "Exit codes: 0 ok, 1 unexpected failure, 2 bad input, 3 not found, \
4 damaged data (also: verify found damage), 5 busy, 6 I/O error, 7 unsupported, \
8 wrong passphrase; 130 / 143 / 129 / 131 interrupted by Ctrl-C / SIGTERM / SIGHUP / SIGQUIT."
)]
struct Cli {
    /// The repository: a folder, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]
    /// for object storage (credentials from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION)
    #[arg(
        short,
        long,
        global = true,
        env = "PLATTER_REPO",
        value_name = "PATH|URL"
    )]
    repo: Option<PathBuf>,

    /// Requests in flight at once to object storage (reads; packs upload up
    /// to 4 at once, each held in memory until sent); local folders ignore
    /// it. Each reader holds a few chunks: more than 8 costs memory (a
    /// restore holds about 10 MiB more per 8) for little speed on most stores
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    connections: u16,

    /// Print one JSON document on stdout and nothing else there
    #[arg(long, global = true)]
    json: bool,

    #[command(flatten)]
    password: passphrase::PasswordArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Backup(backup::Args),
    Snapshots(snapshots::Args),
    Show(show::Args),
    Inspect(inspect::Args),
    Restore(restore::Args),
    Mount(mount::Args),
    Boot(boot::Args),
    Copy(copy::Args),
    Forget(forget::Args),
    Prune(prune::Args),
    Protect(protect::Args),
    Repair(repair::Args),
    Verify(verify::Args),
    Unlock(unlock::Args),
    RebuildIndex(rebuild_index::Args),
    Upgrade(upgrade::Args),
    #[command(subcommand)]
    Key(key::Command),
    #[command(subcommand)]
    Rescue(rescue::Command),
    Run(run::Args),
    Schedule(schedule::Args),
    Jobs(jobs::Args),
    Completions(generated::CompletionsArgs),
    Man(generated::ManArgs),
}

/// Sizes in binary units, for clap: 64G and 64GiB are both 64 x 2^30
/// bytes; a plain number is bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| format!("{e} (write e.g. 64G, 512MiB or a number of bytes)"))
}

/// What every command gets besides its own arguments.
pub struct Context {
    repo: Option<PathBuf>,
    /// Requests in flight at once to object storage (--connections).
    connections: usize,
    json: bool,
    password: passphrase::PasswordArgs,
}

impl Context {
    fn repo_path(&self) -> Result<&std::path::Path> {
        self.repo.as_deref().ok_or_else(|| {
            platter::Error::bad_input("no repository given")
                .hint("pass -r/--repo PATH or set PLATTER_REPO")
        })
    }

    /// The passphrase of the repository given with --repo, from the
    /// options, the environment or the terminal.
    fn passphrases(&self) -> Result<passphrase::Passphrases> {
        let what = format!("repository {}", self.repo_path()?.display());
        Ok(passphrase::Passphrases::new(&self.password, what))
    }

    /// Where the repository given with --repo is stored.
    fn backend(&self) -> Result<platter::repo::backend::SharedBackend> {
        let access = platter::repo::backend::Access {
            connections: self.connections,
            credentials: None,
        };
        platter::repo::backend::open_location(self.repo_path()?.as_os_str(), &access)
    }

    fn open_repo(&self) -> Result<platter::repo::Repository> {
        platter::repo::Repository::open_in(self.backend()?, &self.passphrases()?)
    }

    /// The repository given with --repo and another one, `path`, given
    /// with `option` (with its own passphrase options `other`).
    fn open_pair(
        &self,
        other: &passphrase::OtherPasswordArgs,
        path: &std::path::Path,
        option: &str,
    ) -> Result<(platter::repo::Repository, platter::repo::Repository)> {
        let passphrases = self.passphrases()?;
        let this = platter::repo::Repository::open_in(self.backend()?, &passphrases)?;
        Ok((
            this,
            other.open(path, &passphrases, (option, self.connections))?,
        ))
    }
}

/// Runs the command line; every outcome becomes an exit code here (the
/// codes are `ErrorKind::exit_code`'s, listed in the README).
pub fn run() -> ExitCode {
    if let Err(e) = platter::interrupt::install() {
        let e = platter::Error::new(
            platter::ErrorKind::Io,
            format!("cannot watch for Ctrl-C and SIGTERM: {e}"),
        );
        return output::error(&e, false);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(e),
    };
    let ctx = Context {
        repo: cli.repo,
        connections: usize::from(cli.connections),
        json: cli.json,
        password: cli.password,
    };
    if let Command::Run(args) = cli.command {
        // A job's exit code is its first failed step's.
        return run::run(&ctx, args);
    }
    match run_command(&ctx, cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        // Damage found (verify, a restore that went on past damage).
        Ok(false) => exit_code(platter::ErrorKind::Corrupt),
        Err(e) => failed(e, ctx.json),
    }
}

/// The exit code of a command that failed with `e`, which is printed.
fn failed(e: platter::Error, json: bool) -> ExitCode {
    if platter::interrupt::exit_is_pending() {
        loop {
            // The interrupt watcher is cleaning up and exits with the
            // signal's code; this error is only a consequence.
            std::thread::park();
        }
    }
    output::error(&e, json)
}

fn exit_code(kind: platter::ErrorKind) -> ExitCode {
    ExitCode::from(kind.exit_code() as u8)
}

fn run_command(ctx: &Context, command: Command) -> Result<bool> {
    match command {
        Command::Init(args) => init::run(ctx, args),
        Command::Backup(args) => backup::run(ctx, args),
        Command::Snapshots(args) => snapshots::run(ctx, args),
        Command::Show(args) => show::run(ctx, args),
        Command::Inspect(args) => inspect::run(ctx, args),
        Command::Restore(args) => restore::run(ctx, args),
        Command::Mount(args) => mount::run(ctx, args),
        Command::Boot(args) => boot::run(ctx, args),
        Command::Copy(args) => copy::run(ctx, args),
        Command::Forget(args) => forget::run(ctx, args),
        Command::Prune(args) => prune::run(ctx, args),
        Command::Protect(args) => protect::run(ctx, args),
        Command::Repair(args) => repair::run(ctx, args),
        Command::Verify(args) => verify::run(ctx, args),
        Command::Unlock(args) => unlock::run(ctx, args),
        Command::RebuildIndex(args) => rebuild_index::run(ctx, args),
        Command::Upgrade(args) => upgrade::run(ctx, args),
        Command::Key(command) => key::run(ctx, command),
        Command::Rescue(command) => rescue::run(ctx, command),
        Command::Schedule(args) => schedule::run(ctx, args),
        Command::Jobs(args) => jobs::run(ctx, args),
        Command::Run(_) => Err(platter::Error::internal(
            "`run` is dispatched before run_command",
        )),
        Command::Completions(args) => generated::completions(ctx.json, args),
        Command::Man(args) => generated::man(ctx.json, args),
    }
}
