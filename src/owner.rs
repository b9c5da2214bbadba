//! Who wrote a file, and whether that writer still runs (for the
//! repository's locks and unfinished writes, a restore's hidden target and
//! an init's staging folder alike): a host, a pid and
//! the process's start time (so a reused pid is not mistaken for the
//! owner). Locks record it in full; unfinished writes carry it in their
//! temporary name, so that a leftover of a killed command can be told from
//! a file a live writer is about to rename.

use std::time::Duration;

/// An unfinished write whose owner cannot be judged (another host, or a
/// name from an older platter) is abandoned once it has not changed for
/// this long: writers rename or remove their files within seconds.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A short tag for this host, fit for a file name.
pub fn host_tag() -> String {
    blake3::hash(hostname().as_bytes()).to_hex()[..8].to_string()
}

/// Whether process `pid`, started at `start_ticks` (0: unknown), runs on
/// this host. When /proc does not show it (hidepid, another user's
/// process), `kill(pid, 0)` decides: a process we may not signal exists,
/// and is taken to be the writer rather than risk its files.
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    match process_start_ticks(pid) {
        Some(now) => start_ticks == 0 || now == start_ticks,
        None => {
            let Ok(pid) = i32::try_from(pid) else {
                return false;
            };
            matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Ok(()) | Err(nix::errno::Errno::EPERM)
            )
        }
    }
}

/// Whether the unfinished file at `path`, whose name carries the writer
/// record `record` (see [`this_writer`]), is left behind for good: its
/// writer is gone from this host, or, when that cannot be told (another
/// host, an older name), it has not changed for [`ABANDONED_AFTER`].
pub fn left_behind(record: Option<&str>, path: &std::path::Path) -> bool {
    if let Some(gone) = record.and_then(writer_gone) {
        return gone;
    }
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|changed| std::time::SystemTime::now().duration_since(changed).ok())
        .is_some_and(|age| age >= ABANDONED_AFTER)
}

/// Field 22 of /proc/PID/stat: when the process started.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it do not.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process, as a temporary name records it: host tag, pid, start time.
pub fn this_writer() -> String {
    let pid = std::process::id();
    format!(
        "{}-{pid}-{}",
        host_tag(),
        process_start_ticks(pid).unwrap_or(0)
    )
}

/// Whether the writer recorded as `host-pid-ticks` is known to be gone:
/// `Some(true)` gone, `Some(false)` running, `None` cannot tell (another
/// host, or not such a record).
pub fn writer_gone(record: &str) -> Option<bool> {
    let mut parts = record.splitn(3, '-');
    let (host, pid, ticks) = (parts.next()?, parts.next()?, parts.next()?);
    if host != host_tag() {
        return None;
    }
    Some(!process_alive(pid.parse().ok()?, ticks.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_dead_pid_is_not() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).unwrap();
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(u32::MAX - 1, 0));
    }

    #[test]
    fn a_writer_record_tells_live_from_gone() {
        assert_eq!(writer_gone(&this_writer()), Some(false));
        let me = std::process::id();
        let ticks = process_start_ticks(me).unwrap();
        assert_eq!(
            writer_gone(&format!("{}-{me}-{}", host_tag(), ticks + 1)),
            Some(true)
        );
        assert_eq!(writer_gone(&format!("0000zzzz-{me}-{ticks}")), None);
        assert_eq!(writer_gone("junk"), None);
    }
}
