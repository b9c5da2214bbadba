//! A boot test: boot a snapshot with no network, watch its serial console
//! for an expected text (a login prompt, a marker), and stop the guest as
//! soon as it shows, or when the time is up. Proof that a backup boots,
//! not only that its bytes are intact.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BootPlan, Prepared, qemu};
use crate::error::{Error, ErrorKind, Result};
use crate::interrupt;

/// What to wait for.
#[derive(Debug, Clone)]
pub struct BootWatch {
    /// Text the serial console must show (e.g. `login:`).
    pub expect: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BootCheck {
    #[serde(flatten)]
    pub plan: BootPlan,
    pub expected: String,
    /// Seconds from starting QEMU until the text showed.
    pub seen_after_s: f64,
}

/// The serial console's file in the private folder.
pub(super) const CONSOLE: &str = "console.log";

/// The last bytes of the console kept for an error message.
const TAIL: usize = 600;

/// How often the console is looked at.
const POLL: Duration = Duration::from_millis(200);

impl Prepared {
    /// Boots with the network off (`-nic none`: a restored machine must
    /// not reach the services it used to talk to) and the serial console
    /// in a file of the private folder; returns once `watch.expect` shows
    /// there, after stopping the guest. A guest that ends, or does not
    /// show the text in time, is an error (exit 4) quoting the console's
    /// last lines; everything is undone either way.
    pub fn check(mut self, watch: &BootWatch) -> Result<BootCheck> {
        let console = self.scratch_dir().join(CONSOLE);
        let mut serial = OsString::from("file:");
        serial.push(console.as_os_str());
        self.qemu.extra.splice(
            0..0,
            [
                "-nic".into(),
                "none".into(),
                "-display".into(),
                "none".into(),
                "-monitor".into(),
                "none".into(),
                "-no-reboot".into(),
                "-serial".into(),
                serial,
            ],
        );
        if interrupt::exit_is_pending() {
            loop {
                std::thread::park();
            }
        }
        let started = Instant::now();
        let mut child = self.qemu.spawn()?;
        let pid = child.id() as i32;
        self.qemu_pid.store(pid, Ordering::SeqCst);
        let seen = loop {
            if shows(&console, &watch.expect) {
                break true;
            }
            match child.try_wait() {
                Ok(Some(_)) => break shows(&console, &watch.expect),
                Ok(None) => {}
                Err(e) => {
                    qemu::stop(pid);
                    return Err(Error::new(ErrorKind::Io, format!("cannot watch QEMU: {e}")));
                }
            }
            if started.elapsed() >= watch.timeout {
                break false;
            }
            std::thread::sleep(POLL);
        };
        let after = started.elapsed().as_secs_f64();
        qemu::stop(pid);
        let _ = child.wait();
        self.qemu_pid.store(0, Ordering::SeqCst);
        if interrupt::exit_is_pending() {
            loop {
                std::thread::park();
            }
        }
        let plan = self.plan.clone();
        let tail = console_tail(&console);
        drop(self.mounted.take());
        if !seen {
            let why = if after >= watch.timeout.as_secs_f64() {
                format!("within {} s", watch.timeout.as_secs())
            } else {
                format!("before the guest stopped after {after:.1} s")
            };
            return Err(Error::corrupt(format!(
                "snapshot {} did not show {:?} on its serial console {why}; its last lines: {tail}",
                plan.snapshot.prefix(8),
                watch.expect,
            ))
            .hint("a guest whose console is not on the first serial port (ttyS0) shows nothing there: expect text it prints there, or raise the timeout"));
        }
        Ok(BootCheck {
            plan,
            expected: watch.expect.clone(),
            seen_after_s: after,
        })
    }
}

fn shows(console: &Path, text: &str) -> bool {
    std::fs::read(console).is_ok_and(|bytes| {
        bytes
            .windows(text.len().max(1))
            .any(|w| w == text.as_bytes())
    })
}

/// The console's last lines on one line, each after a `|` (control
/// characters are escaped where it is printed).
fn console_tail(console: &Path) -> String {
    let bytes = std::fs::read(console).unwrap_or_default();
    let start = bytes.len().saturating_sub(TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "(nothing)".into()
    } else {
        format!("| {}", lines.join(" | "))
    }
}
