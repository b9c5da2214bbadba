//! `platter run`: one backup job, from its job file.

use std::path::PathBuf;

use platter::jobs::file::{Job, load_file, load_named};
use platter::jobs::run::{RunEnv, run as run_job};

use super::passphrase::Passphrases;
use super::{Context, output};

/// Run a backup job: backup, retention, copies and a restore test, as its job file says
///
/// The job file (TOML) is /etc/platter/jobs/NAME.toml (PLATTER_JOBS_DIR
/// names another folder), or FILE with --config. The steps: the `before`
/// hooks; a backup of each source; the retention policy and prune; a copy
/// to each copy target (only what the target's retention would keep, or
/// newer than its newest), then that target's own retention; the restore
/// test of each source's newest snapshot; the `after` hooks, always (after
/// a failure, a timeout and SIGTERM too); the `on_failure` hooks when a
/// step failed. A failed backup skips the retention of the main
/// repository (nothing is forgotten while the newest backup is missing);
/// a failed copy skips that copy's retention; every other step still runs.
/// The summary lists each step with its result and duration; the exit
/// status is the first failed step's. Two runs of one job never overlap
/// (the second exits 5); a repository another command holds is waited for
/// (`lock_wait`, default 30m). Each run is kept in the job log
/// (/var/lib/platter/jobs/NAME.log, or PLATTER_STATE_DIR): see `platter jobs`.
#[derive(clap::Args)]
#[command(after_long_help = "A job file:\n  \
repository = \"/backup/repo\"\n  \
passphrase = { file = \"/etc/platter/backup.pass\" }   # or command, env, value\n  \
tags = [\"nightly\"]\n  \
[[source]]\n  \
path = \"/dev/disk/by-id/ata-EXAMPLE_SERIAL\"\n  \
[retention]\n  \
keep_daily = 7\n  \
keep_weekly = 4\n  \
[[copy]]\n  \
repository = \"/mnt/usb/repo\"\n  \
retention = { keep_last = 10 }\n  \
[restore_test]\n  \
scratch = \"/var/tmp/platter\"\n  \
[hooks]\n  \
before = [\"virsh suspend web\"]\n  \
after = [\"virsh resume web\"]\n  \
on_failure = [\"mail -s 'backup failed' root\"]\n  \
timeout = \"5m\"")]
pub struct Args {
    /// The job's name: /etc/platter/jobs/NAME.toml
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    name: Option<String>,

    /// The job file to run (the job is named for the file)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The job named by NAME or --config.
pub fn job(name: Option<&str>, config: Option<&std::path::Path>) -> platter::Result<Job> {
    match (name, config) {
        (_, Some(path)) => load_file(path),
        (Some(name), None) => load_named(name),
        (None, None) => Err(platter::Error::bad_input(
            "name a job, or give --config FILE",
        )),
    }
}

/// Runs the job and prints its summary; the exit code is the first
/// failed step's (0 when every step passed).
pub fn run(ctx: &Context, args: Args) -> std::process::ExitCode {
    match run_and_print(ctx, args) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => super::failed(e, ctx.json),
    }
}

fn run_and_print(ctx: &Context, args: Args) -> platter::Result<u8> {
    let job = job(args.name.as_deref(), args.config.as_deref())?;
    let external = |command: Option<String>,
                    file: Option<PathBuf>,
                    what: String|
     -> Box<dyn platter::repo::keys::PassphraseSource> {
        Box::new(Passphrases::explicit(command, file, what))
    };
    let bar = output::Bar::new(ctx.json);
    let env = RunEnv {
        external: &external,
        connections: ctx.connections,
        progress: &bar,
    };
    let summary = run_job(&job, &env)?;
    if ctx.json {
        output::json(&summary)?;
    } else {
        for line in summary.text() {
            output::line(&line);
        }
    }
    Ok(u8::try_from(summary.exit_code).unwrap_or(1))
}
