//! `platter schedule`: a job on a systemd timer.

use platter::jobs::schedule;

use super::{Context, output};

/// Run a job on a timer: write (and enable) its systemd service and timer
///
/// Writes platter-job-NAME.service and platter-job-NAME.timer to
/// /etc/systemd/system (PLATTER_SYSTEMD_DIR names another folder) and,
/// where systemd runs this machine, enables and starts the timer. The
/// service runs `platter run --config FILE` at idle CPU and I/O priority;
/// the timer is persistent (a run missed while the machine was off runs at
/// the next boot) with a random delay of up to 30 minutes. `--list` shows
/// each scheduled job with its last run (from the job log) and its next;
/// `--remove` disables and removes the units. Without systemd, use cron:
/// `30 2 * * * root platter run NAME` in /etc/cron.d/platter.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter schedule nightly --daily\n  \
platter schedule offsite --on 'Sat 03:00'\n  \
platter schedule --list\n  \
platter schedule nightly --remove")]
pub struct Args {
    /// The job's name: /etc/platter/jobs/NAME.toml
    #[arg(required_unless_present = "list")]
    name: Option<String>,

    /// Every day at midnight (plus the random delay)
    #[arg(long, group = "when")]
    daily: bool,

    /// Every Monday at midnight (plus the random delay)
    #[arg(long, group = "when")]
    weekly: bool,

    /// A systemd calendar expression (man systemd.time), e.g. 'Mon..Fri 02:00'
    #[arg(long, value_name = "CALENDAR", group = "when")]
    on: Option<String>,

    /// Disable and remove the job's units
    #[arg(long, conflicts_with_all = ["when", "list"])]
    remove: bool,

    /// Show the scheduled jobs, their last and next run
    #[arg(long, conflicts_with_all = ["when", "name"])]
    list: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    if args.list {
        return list(ctx);
    }
    let name = args.name.unwrap_or_default();
    platter::jobs::file::check_name(&name)?;
    if args.remove {
        let (removed, note) = schedule::remove(&name)?;
        if !removed {
            return Err(platter::Error::not_found(format!(
                "job {name} has no units in {}",
                schedule::units_dir().display()
            ))
            .hint("`platter schedule --list` shows the scheduled jobs"));
        }
        if ctx.json {
            output::json(&serde_json::json!({ "job": name, "removed": true, "note": note }))?;
        } else {
            output::line(&format!("removed the units of job {name}; {note}"));
        }
        return Ok(true);
    }
    let calendar = match (args.daily, args.weekly, args.on) {
        (true, _, _) => "daily".to_string(),
        (_, true, _) => "weekly".to_string(),
        (_, _, Some(on)) => on,
        _ => {
            return Err(
                platter::Error::bad_input("say when: --daily, --weekly or --on CALENDAR")
                    .hint("or --remove, or --list"),
            );
        }
    };
    let job = platter::jobs::file::load_named(&name)?;
    let exe = std::env::current_exe().map_err(|e| {
        platter::Error::new(
            platter::ErrorKind::Io,
            format!("cannot tell where this platter is: {e}"),
        )
    })?;
    let written = schedule::write(&job, &exe, &calendar)?;
    if ctx.json {
        output::json(&written)?;
    } else {
        output::line(&format!(
            "wrote {} and {} ({calendar}); {}",
            written.service.display(),
            written.timer.display(),
            written.note
        ));
    }
    Ok(true)
}

fn list(ctx: &Context) -> platter::Result<bool> {
    let scheduled = schedule::list()?;
    if ctx.json {
        output::json(&scheduled)?;
        return Ok(true);
    }
    if scheduled.is_empty() {
        output::line(&format!(
            "no job has a timer in {}",
            schedule::units_dir().display()
        ));
    }
    for s in &scheduled {
        output::line(&format!(
            "{}  on {}  last run {}  next run {}",
            s.job,
            s.calendar,
            match (&s.last_run, &s.last_result) {
                (Some(t), Some(r)) => format!("{t} ({r})"),
                _ => "never".into(),
            },
            s.next_run
        ));
    }
    Ok(true)
}
