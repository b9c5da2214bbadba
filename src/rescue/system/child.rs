//! Running platter's own commands from the medium's menu: a restore from
//! the medium is exactly `platter restore`, with its checks, progress and
//! messages. The passphrase reaches the child through its environment
//! (the medium's memory only), never its command line.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

/// What a child command that failed said.
#[derive(Debug)]
pub struct Failed {
    pub exit_code: i32,
    pub message: String,
}

pub struct Platter {
    exe: PathBuf,
    repo: String,
    passphrase: Option<Zeroizing<String>>,
    passphrase_file: Option<PathBuf>,
    /// Extra environment (S3 credentials).
    env: Vec<(String, Zeroizing<String>)>,
}

impl Platter {
    pub fn new(repo: &str) -> Platter {
        Platter {
            exe: own_binary(),
            repo: repo.to_string(),
            passphrase: None,
            passphrase_file: None,
            env: Vec::new(),
        }
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    pub fn set_passphrase(&mut self, pass: Zeroizing<String>) {
        self.passphrase = Some(pass);
    }

    pub fn set_passphrase_file(&mut self, file: PathBuf) {
        self.passphrase_file = Some(file);
    }

    pub fn set_env(&mut self, name: &str, value: Zeroizing<String>) {
        self.env.push((name.to_string(), value));
    }

    /// `platter -r REPO ARGS...` with the passphrase in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("-r")
            .arg(&self.repo)
            .args(args)
            .env_remove("PLATTER_PASSWORD")
            .env_remove("PLATTER_PASSWORD_FILE")
            .env_remove("PLATTER_PASSWORD_COMMAND")
            .env_remove("PLATTER_REPO");
        if let Some(pass) = &self.passphrase {
            command.env("PLATTER_PASSWORD", pass.as_str());
        }
        if let Some(file) = &self.passphrase_file {
            command.env("PLATTER_PASSWORD_FILE", file);
        }
        for (name, value) in &self.env {
            command.env(name, value.as_str());
        }
        command
    }

    /// Runs a command with `--json` and returns what it printed; a
    /// failure comes back with its exit code and message.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value, Failed> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let mut command = self.command(&all);
        detach(&mut command);
        let out = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Failed {
                exit_code: 1,
                message: format!("cannot run {}: {e}", self.exe.display()),
            })?;
        let doc: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() {
            return doc.ok_or_else(|| Failed {
                exit_code: 1,
                message: "platter printed no JSON".into(),
            });
        }
        let message = doc
            .as_ref()
            .and_then(|d| d["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        Err(Failed {
            exit_code: out.status.code().unwrap_or(1),
            message,
        })
    }

    /// Runs a command on this console (its progress and messages shown);
    /// its exit code.
    pub fn shown(&self, args: &[&str]) -> i32 {
        exit_code(self.command(args).status())
    }

    /// Like `shown`, with nobody to answer: no input and no terminal to
    /// ask a passphrase on (the unattended restore).
    pub fn shown_unattended(&self, args: &[&str]) -> i32 {
        let mut command = self.command(args);
        detach(&mut command);
        exit_code(command.stdin(Stdio::null()).status())
    }

    /// `platter inspect DEVICE` on this console (needs no repository).
    pub fn inspect(device: &std::path::Path) {
        let _ = Command::new(own_binary())
            .arg("inspect")
            .arg(device)
            .status();
    }
}

/// The platter binary running now (the medium's /bin/platter).
fn own_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/bin/platter"))
}

/// Starts the child in a session of its own: it has no terminal to ask a
/// passphrase on, so a missing one is an error the caller reads (the menu
/// then asks itself), never a prompt nobody sees.
fn detach(command: &mut Command) {
    // SAFETY: setsid() is async-signal-safe and touches no memory of this
    // process; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    status.ok().and_then(|s| s.code()).unwrap_or(1)
}
