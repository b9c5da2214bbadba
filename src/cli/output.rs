//! Printing: plain lines and JSON on stdout (once the reader closed the
//! pipe, later lines are dropped and the command ends with its own exit
//! code, so `platter snapshots | head` works and `verify | head` still
//! reports damage), progress bars on stderr when it is a terminal, and
//! human-readable sizes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use platter::printable::{printable, to_stderr};
use platter::progress::Progress;

/// Writes a line for a person to stdout, control characters escaped (see
/// `platter::printable`); nothing if the reader went away.
pub fn line(text: &str) {
    write_stdout(&printable(text));
}

/// Text platter generated itself (a completion script), on stdout as it
/// is: its newlines and escapes are the point.
pub fn verbatim(text: &str) {
    write_stdout(text);
}

/// A next step for a person, on stderr.
pub fn hint(text: &str) {
    to_stderr(&format!("hint: {text}"));
}

/// A warning for a person, on stderr (above the progress bar, if any).
pub fn warn(text: &str) {
    to_stderr(&format!("warning: {text}"));
}

/// Set once the reader of stdout went away (`platter snapshots | head`):
/// later lines are dropped, and the command finishes its work and exits
/// with its own code (a damaged `verify | head -1` still exits 4).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn write_stdout(text: &str) {
    if STDOUT_CLOSED.load(Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::SeqCst);
            return;
        }
        to_stderr(&format!("platter: cannot write to stdout: {e}"));
        std::process::exit(platter::ErrorKind::Io.exit_code());
    }
}

/// Whether this run printed its JSON document: an error after it (a list
/// printed, then the command fails) is said on stderr only, so stdout
/// keeps exactly one document.
static JSON_WRITTEN: AtomicBool = AtomicBool::new(false);

pub fn json<T: serde::Serialize>(value: &T) -> platter::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| platter::Error::internal(format!("cannot encode JSON: {e}")))?;
    write_stdout(&text);
    JSON_WRITTEN.store(true, Ordering::SeqCst);
    Ok(())
}

pub use platter::units::bytes;

/// A command line clap refused (or `--help`, `--version`): clap prints
/// it; with `--json` anywhere on the line, the refusal is also one JSON
/// error document on stdout, as every other error is.
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind as Clap;
    if matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
        e.exit();
    }
    let _ = e.print();
    let wants_json = std::env::args_os().skip(1).any(|a| a == "--json");
    let error = platter::Error::bad_input(
        e.render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("the command line is not valid")
            .trim_start_matches("error: ")
            .to_string(),
    )
    .hint("see `platter --help` or `platter COMMAND --help`");
    if wants_json {
        let _ = json(&serde_json::json!({ "error": error.report() }));
    }
    std::process::ExitCode::from(error.kind().exit_code() as u8)
}

/// Tells the user about `e` on stderr (the message, then each hint on a
/// line of its own, control characters escaped) and, with `--json`, also
/// as one JSON document on stdout: `{"error": {kind, exit_code, message,
/// context, hints}}`, unless the command already printed its document.
/// Returns the exit code.
pub fn error(e: &platter::Error, json: bool) -> std::process::ExitCode {
    to_stderr(&format!(
        "platter: error ({}): {}",
        e.kind().name(),
        e.message()
    ));
    for hint in e.hints() {
        to_stderr(&format!("  hint: {hint}"));
    }
    if json && !JSON_WRITTEN.load(Ordering::SeqCst) {
        // The error is already on stderr if this fails too.
        let _ = self::json(&serde_json::json!({ "error": e.report() }));
    }
    std::process::ExitCode::from(e.kind().exit_code() as u8)
}

/// A progress bar on a terminal; nothing otherwise.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Bar {
    pub fn new(json: bool) -> Bar {
        Bar {
            bar: Mutex::new(None),
            enabled: !json && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }

    fn warn(&self, message: &str) {
        let guard = self.bar.lock();
        match guard.as_ref().ok().and_then(|g| g.as_ref()) {
            Some(bar) => bar.suspend(|| warn(message)),
            None => warn(message),
        }
    }
}
