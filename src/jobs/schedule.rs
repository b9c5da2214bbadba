//! A job on a timer: a systemd service and timer for it, written to
//! /etc/systemd/system (`PLATTER_SYSTEMD_DIR` names another folder) and
//! enabled where systemd runs.
//!
//! The service runs `platter run --config FILE` at idle priority (Nice=19,
//! IOSchedulingClass=idle). `systemctl stop` sends SIGTERM to platter
//! alone (KillMode=mixed), so it stops its hooks and runs the after hooks
//! before it exits; what is left is killed after TimeoutStopSec. The timer
//! is Persistent (a run missed while the machine was off runs at the next
//! boot) with a randomised delay, so machines sharing a repository do not
//! all start at midnight.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};
use crate::jobs::file::Job;

pub const SYSTEMD_DIR: &str = "/etc/systemd/system";

pub fn units_dir() -> PathBuf {
    std::env::var_os("PLATTER_SYSTEMD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEMD_DIR))
}

/// The units' name without suffix: `platter-job-NAME`.
pub fn unit_stem(job: &str) -> String {
    format!("platter-job-{job}")
}

/// When a job runs, as systemd's OnCalendar= says it.
pub fn check_calendar(calendar: &str) -> Result<()> {
    if calendar.is_empty() || calendar.contains(['\n', '\r']) {
        return Err(
            Error::bad_input(format!("{calendar:?} is no calendar expression"))
                .hint("write e.g. daily, weekly, \"Mon..Fri 02:00\" or \"*-*-* 03:30\""),
        );
    }
    match next_elapse(calendar) {
        // A date no year has (February 30th): the timer would never fire.
        Ok(next) if next == NEVER => Err(Error::bad_input(format!(
            "{calendar:?} never elapses (no date matches it): the job would never run"
        ))
        .hint("write e.g. daily, weekly, \"Mon..Fri 02:00\" or \"*-*-* 03:30\" (see man systemd.time)")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `next_elapse` says of a calendar that never elapses.
const NEVER: &str = "never";

/// When `calendar` next elapses, as `systemd-analyze calendar` says.
pub fn next_elapse(calendar: &str) -> Result<String> {
    let program = crate::os::find_program("systemd-analyze", "systemd")?;
    let out = Command::new(program)
        .arg("calendar")
        .arg(calendar)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run systemd-analyze: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::bad_input(format!(
            "{calendar:?} is no calendar expression systemd reads: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("write e.g. daily, weekly, \"Mon..Fri 02:00\" or \"*-*-* 03:30\" (see man systemd.time)"));
    }
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Next elapse:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| NEVER.into()))
}

/// The service and the timer of `job`, run by `exe`, on `calendar`.
pub fn units(job: &Job, exe: &Path, calendar: &str) -> (String, String) {
    let service = format!(
        "{WRITTEN_BY}{name}`; `platter schedule {name} --remove` removes it.\n\
         [Unit]\n\
         Description=platter backup job {name}\n\
         Wants=network-online.target\n\
         After=local-fs.target network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} run --config {file}\n\
         CacheDirectory=platter\n\
         Environment=PLATTER_CACHE_DIR=%C/platter\n\
         Nice=19\n\
         IOSchedulingClass=idle\n\
         KillMode=mixed\n\
         TimeoutStopSec=15min\n",
        name = job.name,
        exe = quote(&exe.display().to_string()),
        file = quote(&job.path.display().to_string()),
    );
    let timer = format!(
        "{WRITTEN_BY}{name}`; `platter schedule {name} --remove` removes it.\n\
         [Unit]\n\
         Description=Timer of platter backup job {name}\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         Persistent=true\n\
         RandomizedDelaySec=30min\n\
         Unit={stem}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        name = job.name,
        stem = unit_stem(&job.name),
    );
    (service, timer)
}

/// A word of an ExecStart= line: quoted when it holds a space, `%`, `$`
/// or a quote (systemd expands specifiers and variables in it).
fn quote(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| !c.is_whitespace() && !matches!(c, '%' | '$' | '"' | '\'' | '\\' | ';'));
    if plain {
        return word.to_string();
    }
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

/// Whether systemd runs this machine (as sd_booted(3) asks).
pub fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What `write` did.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub service: PathBuf,
    pub timer: PathBuf,
    /// Enabled with systemctl, or why not.
    pub enabled: bool,
    pub note: String,
}

/// Writes the units of `job` (file, then rename) and enables the timer
/// where systemd runs and the units are in its folder.
pub fn write(job: &Job, exe: &Path, calendar: &str) -> Result<Written> {
    check_calendar(calendar)?;
    let dir = units_dir();
    // systemd starts a service in /: the job file by its absolute path,
    // which no unit line can hold with a control character in it.
    let absolute = std::path::absolute(&job.path)
        .map_err(|e| Error::io("find the absolute path of", &job.path, e))?;
    if absolute.to_string_lossy().chars().any(char::is_control) {
        return Err(Error::bad_input(format!(
            "job file {} has a control character in its path: no unit can name it",
            crate::printable::printable(&absolute.to_string_lossy())
        ))
        .hint("rename the job file or its folder"));
    }
    let job = Job {
        path: absolute,
        ..job.clone()
    };
    let (service_text, timer_text) = units(&job, exe, calendar);
    let stem = unit_stem(&job.name);
    let service = dir.join(format!("{stem}.service"));
    let timer = dir.join(format!("{stem}.timer"));
    refuse_foreign(&[&service, &timer])?;
    write_file(&service, &service_text)?;
    write_file(&timer, &timer_text)?;
    let (enabled, note) = enable(
        &dir,
        &[
            vec!["daemon-reload"],
            vec!["enable", "--now", &format!("{stem}.timer")],
        ],
    );
    let note = if enabled {
        note
    } else {
        format!("not enabled: {note}")
    };
    Ok(Written {
        service,
        timer,
        enabled,
        note,
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let _remove = crate::interrupt::remove_on_interrupt(&temporary);
    std::fs::write(&temporary, text).map_err(|e| Error::io("write a unit", &temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io("write a unit", path, e)
    })
}

/// Runs each systemctl command, where that makes sense: (whether it ran,
/// what to tell the user).
fn enable(dir: &Path, commands: &[Vec<&str>]) -> (bool, String) {
    if dir != Path::new(SYSTEMD_DIR) {
        return (
            false,
            format!(
                "the units are in {} (PLATTER_SYSTEMD_DIR), where systemd does not look",
                dir.display()
            ),
        );
    }
    if !systemd_runs() {
        return (
            false,
            "systemd does not run this machine (PID 1 is not systemd); see the README for cron"
                .into(),
        );
    }
    for args in commands {
        match Command::new("systemctl")
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return (
                    false,
                    format!(
                        "systemctl {} failed: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                );
            }
            Err(e) => return (false, format!("cannot run systemctl: {e}")),
        }
    }
    (true, "done with systemctl".into())
}

/// The first line of every unit `write` makes.
const WRITTEN_BY: &str = "# Written by `platter schedule ";

/// Refuses to replace or remove a unit someone else wrote under one of
/// our names.
fn refuse_foreign(paths: &[&Path]) -> Result<()> {
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if !text.starts_with(WRITTEN_BY) {
            return Err(Error::bad_input(format!(
                "{} was not written by `platter schedule`: it is left as it is",
                path.display()
            ))
            .hint("move or remove it yourself if platter is to schedule this job"));
        }
    }
    Ok(())
}

/// Disables and removes the units of job `name`; whether there were any.
pub fn remove(name: &str) -> Result<(bool, String)> {
    let dir = units_dir();
    let stem = unit_stem(name);
    let timer = dir.join(format!("{stem}.timer"));
    let service = dir.join(format!("{stem}.service"));
    if !timer.exists() && !service.exists() {
        return Ok((false, String::new()));
    }
    refuse_foreign(&[&service, &timer])?;
    let (disabled, note) = enable(&dir, &[vec!["disable", "--now", &format!("{stem}.timer")]]);
    for path in [&timer, &service] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove a unit", path, e)),
        }
    }
    if !disabled {
        return Ok((
            true,
            format!("systemctl was not asked to disable it: {note}"),
        ));
    }
    let (_, reloaded) = enable(&dir, &[vec!["daemon-reload"]]);
    Ok((true, format!("disabled; {reloaded}")))
}

/// One scheduled job, for `schedule --list`.
#[derive(Debug, serde::Serialize)]
pub struct Scheduled {
    pub job: String,
    pub calendar: String,
    pub timer: PathBuf,
    /// The last run in the job log: when it started and how it went.
    pub last_run: Option<String>,
    pub last_result: Option<String>,
    /// When the calendar next elapses (systemd-analyze calendar), or why
    /// that is unknown.
    pub next_run: String,
}

/// The jobs with a timer in the units folder.
pub fn list() -> Result<Vec<Scheduled>> {
    let dir = units_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the units folder", &dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(job) = file
            .to_str()
            .and_then(|n| n.strip_prefix("platter-job-"))
            .and_then(|n| n.strip_suffix(".timer"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let calendar = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("OnCalendar="))
            .unwrap_or_default()
            .to_string();
        let last = crate::jobs::state::runs(job, 1)?.pop();
        let next_run = match next_elapse(&calendar) {
            Ok(next) => next,
            Err(e) => format!("unknown ({})", e.message()),
        };
        found.push(Scheduled {
            job: job.to_string(),
            timer: entry.path(),
            last_run: last
                .as_ref()
                .and_then(|r| r["started"].as_str().map(str::to_string)),
            last_result: last
                .as_ref()
                .and_then(|r| r["result"].as_str().map(str::to_string)),
            calendar,
            next_run,
        });
    }
    found.sort_by(|a, b| a.job.cmp(&b.job));
    Ok(found)
}
