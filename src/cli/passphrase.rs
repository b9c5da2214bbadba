//! Where passphrases come from, first match wins: `--password-command`,
//! `--password-file` (or `PLATTER_PASSWORD_FILE`), `PLATTER_PASSWORD`,
//! then a prompt on the terminal (twice for a new passphrase). A
//! passphrase is never echoed, printed or logged, and is wiped from memory
//! when dropped.

use std::cell::OnceCell;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use platter::repo::keys::PassphraseSource;
use platter::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// The options that name a repository's passphrase.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Passphrase")]
pub struct PasswordArgs {
    /// Read the passphrase of an encrypted repository from the first line
    /// of FILE
    #[arg(
        long,
        global = true,
        env = "PLATTER_PASSWORD_FILE",
        value_name = "FILE"
    )]
    password_file: Option<PathBuf>,

    /// Run COMMAND with `sh -c` and use the first line it prints as the
    /// passphrase (e.g. `pass show backup`)
    #[arg(
        long,
        global = true,
        env = "PLATTER_PASSWORD_COMMAND",
        value_name = "COMMAND"
    )]
    password_command: Option<String>,
}

/// The options that name the passphrase of a second repository (`copy
/// --to`, `repair --from`); without them its passphrase is taken to be the
/// first repository's.
#[derive(clap::Args, Clone, Default)]
pub struct OtherPasswordArgs {
    /// The other repository's passphrase, from the first line of FILE
    #[arg(long, value_name = "FILE", help_heading = "Passphrase")]
    other_password_file: Option<PathBuf>,

    /// The other repository's passphrase, printed by COMMAND
    #[arg(long, value_name = "COMMAND", help_heading = "Passphrase")]
    other_password_command: Option<String>,

    /// Credentials for the other repository when it is in object storage
    /// and wants other ones than AWS_* of the environment: a file (mode
    /// 600) of NAME=value lines naming AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_REGION
    #[arg(long, value_name = "FILE", help_heading = "Passphrase")]
    other_credentials: Option<PathBuf>,
}

impl OtherPasswordArgs {
    /// Opens the other repository `path` (given with `option`, which its
    /// errors name), with its own passphrase if one was given, else with
    /// `first`'s; `connections` as --connections says.
    pub fn open(
        &self,
        path: &Path,
        first: &Passphrases,
        (option, connections): (&str, usize),
    ) -> Result<platter::repo::Repository> {
        let own = Passphrases::explicit(
            self.other_password_command.clone(),
            self.other_password_file.clone(),
            format!("repository {}", path.display()),
        );
        let lenient = Lenient(first);
        let source: &dyn PassphraseSource = if own.is_given() { &own } else { &lenient };
        let access = platter::repo::backend::Access {
            connections,
            credentials: self.other_credentials.clone(),
        };
        platter::repo::backend::open_location(path.as_os_str(), &access)
            .and_then(|backend| platter::repo::Repository::open_in(backend, source))
            .map_err(|e| {
            if e.kind() == ErrorKind::WrongPassphrase && !own.is_given() {
                e.hint("the other repository has another passphrase: give it with --other-password-file or --other-password-command")
            } else {
                e
            }
            .context(format!("the repository given with {option}"))
        })
    }
}

/// A passphrase source built from options, an environment variable and a
/// terminal prompt. It asks at most once.
pub struct Passphrases {
    command: Option<String>,
    file: Option<PathBuf>,
    env: Option<&'static str>,
    /// What the prompt names, e.g. "repository /backup/repo".
    what: String,
    cached: OnceCell<Zeroizing<String>>,
}

impl Passphrases {
    pub fn new(args: &PasswordArgs, what: String) -> Passphrases {
        Passphrases {
            command: args.password_command.clone(),
            file: args.password_file.clone(),
            env: Some("PLATTER_PASSWORD"),
            what,
            cached: OnceCell::new(),
        }
    }

    /// A source of only the given file and command (no environment
    /// variable): for a second repository's or a new passphrase.
    pub fn explicit(command: Option<String>, file: Option<PathBuf>, what: String) -> Passphrases {
        Passphrases {
            command,
            file,
            env: None,
            what,
            cached: OnceCell::new(),
        }
    }

    /// Whether anything but a prompt would give the passphrase.
    pub fn is_given(&self) -> bool {
        self.command.is_some()
            || self.file.is_some()
            || self.env.is_some_and(|v| std::env::var_os(v).is_some())
    }

    /// A new passphrase: from the options, or typed twice on the terminal.
    pub fn new_passphrase(&self) -> Result<Zeroizing<String>> {
        if self.is_given() {
            return self.passphrase();
        }
        let first = prompt(&format!("new passphrase for {}: ", self.what))?;
        let again = prompt("the same passphrase again: ")?;
        if first != again {
            return Err(Error::bad_input(
                "the two passphrases differ: nothing was changed",
            ));
        }
        Ok(first)
    }

    fn find(&self) -> Result<Zeroizing<String>> {
        if let Some(command) = &self.command {
            return from_command(command);
        }
        if let Some(file) = &self.file {
            return from_file(file);
        }
        if let Some(var) = self.env
            && let Some(value) = std::env::var_os(var)
        {
            let value = Zeroizing::new(
                value
                    .into_string()
                    .map_err(|_| Error::bad_input(format!("{var} is not valid UTF-8")))?,
            );
            return non_empty(value, var);
        }
        prompt(&format!("passphrase for {}: ", self.what))
    }
}

impl PassphraseSource for Passphrases {
    fn passphrase(&self) -> Result<Zeroizing<String>> {
        if let Some(p) = self.cached.get() {
            return Ok(p.clone());
        }
        let found = self.find()?;
        Ok(self.cached.get_or_init(|| found).clone())
    }

    fn expects_encryption(&self) -> bool {
        self.is_given()
    }
}

/// Another repository's passphrase, tried for a second repository: that
/// one may well be plain.
struct Lenient<'a>(&'a Passphrases);

impl PassphraseSource for Lenient<'_> {
    fn passphrase(&self) -> Result<Zeroizing<String>> {
        self.0.passphrase()
    }
}

fn non_empty(pass: Zeroizing<String>, from: &str) -> Result<Zeroizing<String>> {
    if pass.is_empty() {
        return Err(Error::bad_input(format!(
            "the passphrase from {from} is empty"
        )));
    }
    Ok(pass)
}

/// The most a passphrase source may give before its first line ends: a
/// passphrase is a line, and a source that streams more (`/dev/zero`, a
/// disk named by mistake, `yes`) must not fill the memory.
const MAX_SOURCE_BYTES: usize = 4096;

/// What a passphrase source gave before its first line ended.
enum FirstLine {
    Line(Zeroizing<String>),
    /// More than `MAX_SOURCE_BYTES` without a line ending.
    TooLong,
    /// Bytes that are not UTF-8 text: taken lossily, two different
    /// passphrases could open the same key.
    NotText,
}

/// Reads `from` up to its first line ending (not waiting for its end: a
/// writer may keep it open) or its end, at most `MAX_SOURCE_BYTES`.
fn first_line(from: impl Read) -> std::io::Result<FirstLine> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SOURCE_BYTES + 1));
    std::io::BufReader::new(from.take(MAX_SOURCE_BYTES as u64 + 1))
        .read_until(b'\n', &mut bytes)?;
    let line = match bytes.strip_suffix(b"\n") {
        Some(line) => line,
        None if bytes.len() > MAX_SOURCE_BYTES => return Ok(FirstLine::TooLong),
        None => &bytes[..],
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(match std::str::from_utf8(line) {
        Ok(text) => FirstLine::Line(Zeroizing::new(text.to_string())),
        Err(_) => FirstLine::NotText,
    })
}

/// The passphrase in `first`, or why `from` gave none.
fn line_or_refusal(first: FirstLine, from: &str) -> Result<Zeroizing<String>> {
    match first {
        FirstLine::Line(line) => Ok(line),
        FirstLine::TooLong => Err(too_long(from)),
        FirstLine::NotText => Err(Error::bad_input(format!(
            "the passphrase from {from} is not UTF-8 text"
        ))
        .hint("use a passphrase of text: other bytes would be changed on the way")),
    }
}

fn too_long(from: &str) -> Error {
    Error::bad_input(format!(
        "{from} gives more than {MAX_SOURCE_BYTES} bytes without ending a line: that is no \
         passphrase"
    ))
    .hint("name a file (or a command) whose first line is the passphrase")
}

fn from_file(path: &Path) -> Result<Zeroizing<String>> {
    let what = format!("password file {}", path.display());
    let first = std::fs::File::open(path)
        .and_then(first_line)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("{what} does not exist"))
                    .hint("check --password-file / PLATTER_PASSWORD_FILE")
            } else {
                Error::io("read password file", path, e)
            }
        })?;
    non_empty(line_or_refusal(first, &what)?, &path.display().to_string())
}

fn from_command(command: &str) -> Result<Zeroizing<String>> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot run the --password-command (with sh): {e}"),
            )
        })?;
    // Only the first line is read; the pipe is closed after it, so a
    // command that prints more (`yes`) ends by SIGPIPE, and a process it
    // left holding its output open is not waited for.
    let read = match child.stdout.take() {
        Some(out) => first_line(out),
        None => Ok(FirstLine::Line(Zeroizing::new(String::new()))),
    };
    let line = match read {
        Ok(FirstLine::Line(line)) => line,
        refused => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match refused {
                Err(e) => Error::new(
                    ErrorKind::Io,
                    format!("cannot read the password command's output: {e}"),
                ),
                Ok(first) => match line_or_refusal(first, "the password command") {
                    Err(e) => e,
                    Ok(_) => too_long("the password command"),
                },
            });
        }
    };
    let status = child.wait().map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot wait for the password command: {e}"),
        )
    })?;
    // Ended by SIGPIPE (or so says the shell that ran it, 128 + 13) after
    // its line was read: the pipe closed on it, which is no failure.
    let line_given_then_pipe_closed = {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(libc::SIGPIPE) || status.code() == Some(128 + libc::SIGPIPE)
    };
    if !status.success() && !line_given_then_pipe_closed {
        return Err(Error::bad_input(format!(
            "the password command failed ({status}): no passphrase"
        )));
    }
    non_empty(line, "the password command")
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    // Ctrl-C at the prompt must not leave the terminal without echo.
    let _echo_back = platter::interrupt::restore_terminal_on_interrupt();
    let typed = rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|_| {
            Error::new(
                ErrorKind::BadInput,
                "a passphrase is needed and none was given (there is no terminal to ask on)",
            )
            .hint(
                "give it with --password-file, PLATTER_PASSWORD_FILE, PLATTER_PASSWORD or \
             --password-command, or run on a terminal to be asked",
            )
        })?;
    non_empty(typed, "the terminal")
}
