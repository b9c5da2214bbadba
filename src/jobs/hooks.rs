//! Hooks: the user's commands before and after a job (stop a VM, freeze a
//! filesystem, send a mail on failure).
//!
//! Each runs with `/bin/sh -c` in a process group of its own, so a timeout
//! ends the shell and everything it started (SIGTERM to the group, then
//! SIGKILL after a grace). Its stdin is the job's JSON summary so far,
//! written from a thread that is not waited for beyond the timeout (a hook
//! that never reads its stdin cannot hold the job). Its stdout goes to
//! platter's stderr: platter's stdout is the summary's.
//!
//! Freezing the filesystem that holds the repository, the job log or the
//! scratch folder would hang the job on its own writes: such a hook is
//! refused when the job is read (`check_freezes`).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

/// A hook's limit when the job gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long a hook's group has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Runs `command` under `timeout`, `stdin` on its standard input. Fails
/// (BadInput: the user's command) when it exits non-zero, is killed, or
/// runs out of time (then its group is gone when this returns). A signal
/// to platter meanwhile stops the hook's group.
pub fn run(command: &str, stdin: &[u8], timeout: Duration) -> Result<()> {
    run_hook(command, stdin, timeout, true)
}

/// `run`, from the interrupt watcher: which holds the interrupt registry,
/// so the hook is not registered there (and needs not be: the watcher
/// waits for it).
pub fn run_while_interrupted(command: &str, stdin: &[u8], timeout: Duration) -> Result<()> {
    run_hook(command, stdin, timeout, false)
}

fn run_hook(command: &str, stdin: &[u8], timeout: Duration, stop_on_signal: bool) -> Result<()> {
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot pass stderr to a hook: {e}")))?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(stdout))
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot run hook `{command}` with /bin/sh: {e}"),
            )
        })?;
    let pgid = child.id() as i32;
    // Interrupted meanwhile (SIGTERM from `systemctl stop`): the hook's
    // group goes too, before the after hooks run; SIGKILL after the grace
    // if it ignores SIGTERM (it would outlive platter).
    let _stop_on_signal = stop_on_signal.then(|| {
        crate::interrupt::call_on_interrupt(move || {
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline && group_alive(pgid) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if group_alive(pgid) {
                signal_group(pgid, libc::SIGKILL);
            }
            true
        })
    });
    if let Some(mut pipe) = child.stdin.take() {
        let bytes = stdin.to_vec();
        // Detached: a hook that does not read its stdin (or hands it to a
        // process that outlives it) must not hold the job.
        let _ = std::thread::Builder::new()
            .name("hook stdin".into())
            .spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                end_group(pgid, &mut child);
                return Err(Error::bad_input(format!(
                    "hook `{command}` ran out of its {} and was stopped (its whole process group)",
                    humantime::format_duration(timeout)
                ))
                .hint("make it quicker, or raise hooks.timeout in the job file"));
            }
            Err(e) => {
                end_group(pgid, &mut child);
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot wait for hook `{command}`: {e}"),
                ));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => status.to_string(),
    };
    Err(Error::bad_input(format!(
        "hook `{command}` failed: it {how}"
    )))
}

/// SIGTERM to the group, SIGKILL after the grace, and the shell reaped.
fn end_group(pgid: i32, child: &mut std::process::Child) {
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            break;
        }
        // The shell must be reaped, or the group stays alive as a zombie.
        let _ = child.try_wait();
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait();
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill has no memory preconditions; a negative pid names the
    // process group the hook's shell leads (made with process_group(0)).
    unsafe { libc::kill(-pgid, signal) };
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Refuses a hook that freezes (`fsfreeze -f`) the filesystem holding one
/// of `keep_thawed` (what: path): the job would wait on its own writes.
pub fn check_freezes(hooks: &[&str], keep_thawed: &[(&str, &Path)]) -> Result<()> {
    for hook in hooks {
        for target in frozen_paths(hook) {
            let Ok(frozen) = std::fs::metadata(target) else {
                continue;
            };
            for (what, path) in keep_thawed {
                let Some(dev) = device_of(path) else { continue };
                if dev == frozen.dev() {
                    return Err(Error::bad_input(format!(
                        "hook `{hook}` freezes the filesystem of {target}, which holds the {what} \
                         ({}): the job would wait for ever on its own writes",
                        path.display()
                    ))
                    .hint(format!("keep the {what} on another filesystem than the one frozen, or freeze another one")));
                }
            }
        }
    }
    Ok(())
}

/// The folder or file `path`'s filesystem, by its nearest existing
/// ancestor (a log not written yet is on its folder's filesystem).
fn device_of(path: &Path) -> Option<u64> {
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

/// What each `fsfreeze` in a shell command line acts on: the word after
/// its options (`fsfreeze -f /srv`, `fsfreeze --freeze /srv`).
fn frozen_paths(command: &str) -> Vec<&str> {
    let words: Vec<&str> = command
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if word.rsplit('/').next() != Some("fsfreeze") {
            continue;
        }
        let rest = &words[i + 1..];
        let freezes = rest
            .iter()
            .take_while(|w| w.starts_with('-'))
            .any(|w| *w == "-f" || *w == "--freeze");
        if let Some(target) = rest.iter().find(|w| !w.starts_with('-'))
            && freezes
        {
            found.push(target.trim_matches(['"', '\'']));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::frozen_paths;

    #[test]
    fn fsfreeze_targets_are_found_in_a_command_line() {
        assert_eq!(frozen_paths("fsfreeze -f /srv"), ["/srv"]);
        assert_eq!(
            frozen_paths("sync; /sbin/fsfreeze --freeze '/var/lib'"),
            ["/var/lib"]
        );
        assert!(frozen_paths("fsfreeze -u /srv").is_empty());
        assert!(frozen_paths("echo fsfreeze").is_empty());
    }
}
