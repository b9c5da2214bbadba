//! Talking to the person at one console of the medium (the screen's tty1
//! or the serial port): questions on lines, `!` for a shell at every
//! question, and the lock the consoles share so that only one of them
//! sets up a restore at a time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// The lock file both consoles' menus take before touching any disk.
const LOCK: &str = "/run/rescue/menu.lock";

pub enum Answer {
    Line(String),
    /// The console closed (the other end hung up).
    Closed,
}

pub struct Console {
    /// Which console this is (tty1, ttyS0), for the other one's messages.
    pub name: String,
}

impl Console {
    pub fn here() -> Console {
        let name = std::fs::read_link("/proc/self/fd/0")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "console".into());
        Console { name }
    }

    pub fn say(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", crate::printable::printable(text));
        let _ = out.flush();
    }

    /// Asks `question`; `!` runs a shell and asks again.
    pub fn ask(&self, question: &str) -> Answer {
        loop {
            {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{question} ");
                let _ = out.flush();
            }
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(_) => {}
            }
            let line = line.trim().to_string();
            if line == "!" {
                self.shell();
                continue;
            }
            return Answer::Line(line);
        }
    }

    /// A passphrase, typed without echo.
    pub fn ask_secret(&self, question: &str) -> Option<zeroize::Zeroizing<String>> {
        rpassword::prompt_password(format!("{question} "))
            .ok()
            .map(zeroize::Zeroizing::new)
    }

    /// A shell on this console; the menu goes on when it exits.
    pub fn shell(&self) {
        self.say("Shell: type `exit` to come back to the menu.");
        let _ = Command::new("/bin/sh").env("PS1", "rescue# ").status();
    }

    /// Takes the menu lock, or says which console holds it.
    pub fn lock(&self) -> Result<Flock<File>, String> {
        let _ = std::fs::create_dir_all("/run/rescue");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(LOCK)
            .map_err(|e| format!("cannot open {LOCK}: {e}"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut held) => {
                let _ = held.set_len(0);
                let _ = held.write_all(self.name.as_bytes());
                Ok(held)
            }
            Err((_, _)) => {
                let holder = std::fs::read_to_string(LOCK).unwrap_or_default();
                Err(format!(
                    "the menu on {} is setting up or running a restore; wait for it, or use its console",
                    if holder.is_empty() {
                        "the other console"
                    } else {
                        holder.trim()
                    }
                ))
            }
        }
    }
}
