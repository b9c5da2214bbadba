//! Ctrl-C, SIGTERM, SIGHUP and SIGQUIT: an interrupted platter leaves
//! nothing unfinished of its own behind.
//!
//! Code that creates something that must not outlive an interruption (a
//! temporary file, a lock file) registers it here *before* creating it and
//! drops the [`Registration`] once the thing is committed or gone. When a
//! signal arrives, a watcher thread removes every registered file, prints
//! the registered notes (a target left partly written), says that the
//! command was interrupted, and exits with 128 + the signal's number (130
//! for SIGINT, 143 for SIGTERM, 129 for SIGHUP, 131 for SIGQUIT). What was
//! committed before the signal (a pack, a key file) stays, as after any
//! failure.
//!
//! SIGXFSZ (a file size limit, `ulimit -f` or systemd's LimitFSIZE) is
//! ignored, so the write that passes the limit fails with EFBIG and the
//! command cleans up and reports it like any failed write.
//!
//! Only registered files are removed: a pack or an index renamed into place
//! is no longer registered (its writer's registration names the temporary
//! name, which the rename took away), so nothing committed is ever undone.
//! The watcher holds the registry until the process exits, so nothing can
//! register, and so create, a new file after the clean-up ran; the one
//! thing a signal can leave is a file registered just before the clean-up
//! and created just after it, which carries its writer's pid in its name
//! like a SIGKILL leftover.
//!
//! SIGKILL cannot be caught: what it leaves carries the dead process's pid
//! in its name, and later runs remove it (see the backend and the target).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::termios::{self, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use crate::printable::to_stderr;
use signal_hook::iterator::Signals;

enum Item {
    /// A file to remove.
    File(PathBuf),
    /// A folder this process made, to remove with all it holds.
    Tree(PathBuf),
    /// A file (or an empty folder) to remove unless `unless` exists by
    /// then: a part of a repository being made in place, which another
    /// process may have completed meanwhile.
    Unless { path: PathBuf, unless: PathBuf },
    /// A line to print: what the interruption left as it is.
    Note(String),
    /// A terminal whose mode (echo off for a passphrase) must be put back.
    Terminal(std::fs::File, Termios),
    /// Something to undo elsewhere (a lock object in object storage);
    /// says whether it did.
    Call(Box<dyn Fn() -> bool + Send>),
}

struct Registry {
    next: u64,
    items: Vec<(u64, Item)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    items: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A thread that panicked while registering left a consistent list.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Something registered; dropping it unregisters it.
#[must_use = "dropping a registration unregisters it at once"]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().items.retain(|(id, _)| *id != self.0);
    }
}

fn register(item: Item) -> Registration {
    let mut reg = registry();
    let id = reg.next;
    reg.next += 1;
    reg.items.push((id, item));
    Registration(id)
}

/// Removes `path` if the process is interrupted while the registration
/// lives. Register before creating the file.
pub fn remove_on_interrupt(path: &Path) -> Registration {
    register(Item::File(path.to_path_buf()))
}

/// Removes folder `path` and everything in it if the process is
/// interrupted while the registration lives: only for a folder this
/// process made and nobody else writes in (a repository being created).
pub fn remove_tree_on_interrupt(path: &Path) -> Registration {
    register(Item::Tree(path.to_path_buf()))
}

/// Removes file or empty folder `path` if the process is interrupted
/// while the registration lives, unless `unless` exists by then.
pub fn remove_unless_on_interrupt(path: &Path, unless: &Path) -> Registration {
    register(Item::Unless {
        path: path.to_path_buf(),
        unless: unless.to_path_buf(),
    })
}

/// Runs `undo` if the process is interrupted while the registration
/// lives: for what is not a local file (a lock object in a store). It
/// should give up quickly: the process waits for it before it exits.
pub fn call_on_interrupt(undo: impl Fn() -> bool + Send + 'static) -> Registration {
    register(Item::Call(Box::new(undo)))
}

/// Prints `note` if the process is interrupted while the registration
/// lives, e.g. that a target is partly written.
pub fn note_on_interrupt(note: String) -> Registration {
    register(Item::Note(note))
}

/// Puts the mode of the controlling terminal back as it is now if the
/// process is interrupted while the registration lives: register before
/// turning echo off for a passphrase. `None` without a terminal.
pub fn restore_terminal_on_interrupt() -> Option<Registration> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mode = termios::tcgetattr(&tty).ok()?;
    Some(register(Item::Terminal(tty, mode)))
}

/// Set by the signal handler itself, before any system call it interrupts
/// returns: see [`exit_is_pending`].
static RECEIVED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether a signal arrived and the watcher is ending the process. An
/// error seen meanwhile (a read the signal interrupted) is a consequence
/// of the interruption, not its own failure: the caller waits for the
/// watcher's exit instead of exiting with that error's code.
pub fn exit_is_pending() -> bool {
    RECEIVED
        .get()
        .is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// Starts the watcher. Call once, early in `main`: a signal that arrives
/// before it is installed ends the process the default way. A signal this
/// process was started with ignored (SIGHUP under `nohup`) stays ignored.
pub fn install() -> std::io::Result<()> {
    // SAFETY: setting a disposition to SIG_IGN runs no code of ours in a
    // signal context and touches no memory.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]
        .into_iter()
        .filter(|&s| !ignored(s))
        .collect();
    let received = RECEIVED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for &signal in &wanted {
        signal_hook::flag::register(signal, Arc::clone(received))?;
    }
    let mut signals = Signals::new(wanted)?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                interrupted(signal);
            }
        })?;
    Ok(())
}

/// Whether `signal` is ignored now (inherited from whoever started us).
fn ignored(signal: i32) -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current
    // action into `current`, a live local of the right type.
    let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) };
    read == 0 && current.sa_sigaction == libc::SIG_IGN
}

fn interrupted(signal: i32) -> ! {
    let reg = registry();
    let mut removed = 0;
    // Last made, first undone: a file goes before the folder it is in.
    for (_, item) in reg.items.iter().rev() {
        match item {
            Item::File(path) => {
                if std::fs::remove_file(path).is_ok() {
                    removed += 1;
                }
            }
            Item::Tree(path) => {
                if std::fs::remove_dir_all(path).is_ok() {
                    removed += 1;
                }
            }
            Item::Unless { path, unless } => {
                if unless.symlink_metadata().is_err()
                    && (std::fs::remove_file(path).is_ok() || std::fs::remove_dir(path).is_ok())
                {
                    removed += 1;
                }
            }
            Item::Call(undo) => {
                if undo() {
                    removed += 1;
                }
            }
            Item::Note(note) => to_stderr(&format!("platter: {note}")),
            Item::Terminal(tty, mode) => {
                // Best effort: the terminal may be gone (SIGHUP).
                let _ = termios::tcsetattr(tty, termios::SetArg::TCSANOW, mode);
                to_stderr("");
            }
        }
    }
    let name = match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGQUIT => "SIGQUIT",
        _ => "SIGHUP",
    };
    to_stderr(&format!(
        "platter: interrupted by {name}; removed {removed} unfinished file(s) and lock(s) of \
         this run; what it had committed before stays as it was"
    ));
    // The registry stays locked: no thread can register (and so create)
    // another file before the process is gone.
    std::process::exit(128 + signal)
}
