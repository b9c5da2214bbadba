//! Ctrl-C, SIGTERM and SIGHUP: an interrupted platter leaves nothing of its
//! own behind.
//!
//! Code that creates something that must not outlive an interruption (a
//! temporary file, a lock file) registers it here *before* creating it and
//! drops the [`Registration`] once the thing is committed or gone. When a
//! signal arrives, a watcher thread removes every registered file, prints
//! the registered notes (a target left partly written), says that the
//! command was interrupted, and exits with 128 + the signal's number (130
//! for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
//!
//! Only registered files are removed: a pack or an index renamed into place
//! is no longer registered (its writer's registration names the temporary
//! name, which the rename took away), so nothing committed is ever undone.
//! The watcher holds the registry until the process exits, so nothing can
//! register, and so create, a new file after the clean-up ran.
//!
//! SIGKILL cannot be caught: what it leaves carries the dead process's pid
//! in its name, and later runs remove it (see the backend and the target).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

enum Item {
    /// A file to remove.
    File(PathBuf),
    /// A line to print: what the interruption left as it is.
    Note(String),
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

/// Prints `note` if the process is interrupted while the registration
/// lives, e.g. that a target is partly written.
pub fn note_on_interrupt(note: String) -> Registration {
    register(Item::Note(note))
}

/// Starts the watcher. Call once, early in `main`: a signal that arrives
/// before it is installed ends the process the default way.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                interrupted(signal);
            }
        })?;
    Ok(())
}

fn interrupted(signal: i32) -> ! {
    let reg = registry();
    let mut removed = 0;
    for (_, item) in &reg.items {
        match item {
            Item::File(path) => {
                if std::fs::remove_file(path).is_ok() {
                    removed += 1;
                }
            }
            Item::Note(note) => {
                eprintln!("platter: {}", crate::printable::printable(note))
            }
        }
    }
    let name = match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    };
    eprintln!(
        "platter: interrupted by {name}; removed {removed} file(s) of this run (unfinished \
         writes, locks); nothing committed was changed"
    );
    // The registry stays locked: no thread can register (and so create)
    // another file before the process is gone.
    std::process::exit(128 + signal)
}
