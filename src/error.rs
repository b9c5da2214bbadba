//! The library's one error type.
//!
//! Every failure a user can meet is one of a few kinds, and the kind decides
//! the exit code (see `ErrorKind::exit_code`). The message says what happened,
//! where (path, offset, snapshot), and what to do next; the binary prints it
//! as is. Lower layers attach context with `Error::context`, so a message
//! reads from the outermost action inwards.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, coarsely: enough for a script to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The user asked for something that cannot be done as asked.
    BadInput,
    /// A repository, snapshot, source or file does not exist.
    NotFound,
    /// Stored data failed a check: a checksum, a hash, a structure.
    Corrupt,
    /// Someone else holds the repository or the target.
    Busy,
    /// The operating system refused a read, write or sync.
    Io,
    /// Valid, but not something this version can handle.
    Unsupported,
    /// No key of an encrypted repository opens with the passphrase given.
    WrongPassphrase,
    /// A bug in platter: a state its own code should never reach.
    Internal,
}

impl ErrorKind {
    /// The process exit code for this kind; documented in the README.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Corrupt => 4,
            ErrorKind::Busy => 5,
            ErrorKind::Io => 6,
            ErrorKind::Unsupported => 7,
            ErrorKind::WrongPassphrase => 8,
            ErrorKind::Internal => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Corrupt => "damaged data",
            ErrorKind::Busy => "busy",
            ErrorKind::Io => "I/O error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::WrongPassphrase => "wrong passphrase",
            ErrorKind::Internal => "internal error",
        }
    }
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// What platter was doing, outermost first; `message` already starts
    /// with it, this keeps it apart for `--json`.
    context: Vec<String>,
    /// Next steps for the user, in the order they were added.
    hints: Vec<String>,
    source: Option<io::Error>,
    /// The store could not be reached or answered "try later": nothing is
    /// known about the data, so it must not be called damaged.
    transient: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            hints: Vec::new(),
            source: None,
            transient: false,
        }
    }

    /// Marks a failure of the store itself (unreachable, overloaded), which
    /// says nothing about the data: commands stop on it (exit 6) instead of
    /// counting the file as damaged.
    pub fn transient(mut self) -> Error {
        self.transient = true;
        self
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn bad_input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn busy(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Busy, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// A bug: platter reached a state its own code should rule out. The
    /// message says which; the user is asked to report it (exit 1).
    pub fn internal(what: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Internal, format!("internal error: {what}"))
            .hint("this is a bug in platter: please report it with the command you ran")
    }

    /// An OS error on `path` while doing `what`. The kind follows the errno:
    /// a missing file is `NotFound`; a path the user gave that cannot name
    /// a file (no permission, a symbolic link loop, a name too long) is
    /// `BadInput`; a file in use (EBUSY, ETXTBSY: an active swap file or a
    /// running program) is `Busy`; the rest is `Io`.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Error {
        Error::storage(what, &path.display().to_string(), err)
    }

    /// An I/O error on `object`, a file of a repository as its backend
    /// describes it (a path, or a name in a store).
    pub fn storage(what: &str, object: &str, err: io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::BadInput,
            _ => match err.raw_os_error() {
                Some(libc::ELOOP | libc::ENAMETOOLONG) => ErrorKind::BadInput,
                Some(libc::EBUSY | libc::ETXTBSY) => ErrorKind::Busy,
                _ => ErrorKind::Io,
            },
        };
        Error {
            kind,
            message: format!("cannot {what} {object}: {err}"),
            context: Vec::new(),
            hints: Vec::new(),
            source: Some(err),
            transient: false,
        }
    }

    /// The OS error number behind an I/O error, if any.
    pub fn os_code(&self) -> Option<i32> {
        self.source.as_ref().and_then(|e| e.raw_os_error())
    }

    /// What kind of I/O error is behind this one, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.source.as_ref().map(|e| e.kind())
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened, with its context, without the hints.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The next steps suggested to the user.
    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    /// What platter was doing when it failed, outermost first.
    pub fn contexts(&self) -> &[String] {
        &self.context
    }

    /// Prefixes the message with what the caller was doing.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        let what = what.to_string();
        self.message = format!("{what}: {}", self.message);
        self.context.insert(0, what);
        self
    }

    /// Appends a next step for the user.
    pub fn hint(mut self, next_step: impl fmt::Display) -> Error {
        self.hints.push(next_step.to_string());
        self
    }
}

/// An error as `--json` prints it: the kind and its exit code, the whole
/// message, and apart from it what platter was doing and the hints.
#[derive(serde::Serialize)]
pub struct ErrorReport<'a> {
    pub kind: ErrorKind,
    pub exit_code: i32,
    pub message: &'a str,
    pub context: &'a [String],
    pub hints: &'a [String],
}

impl Error {
    pub fn report(&self) -> ErrorReport<'_> {
        ErrorReport {
            kind: self.kind,
            exit_code: self.kind.exit_code(),
            message: &self.message,
            context: &self.context,
            hints: &self.hints,
        }
    }
}

/// One line: the message, then each hint after "; hint: ". The binary
/// prints an error's hints on lines of their own.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for hint in &self.hints {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds a "cannot <what> <path>" context to io results.
pub trait IoContext<T> {
    fn at(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bugs_exit_1_and_hints_stay_apart_from_the_message() {
        let bug = Error::internal("pool closed");
        assert_eq!(bug.kind().exit_code(), 1);
        assert!(bug.message().starts_with("internal error: pool closed"));
        assert!(bug.hints()[0].contains("report"));
        let e = Error::bad_input("no")
            .hint("first")
            .context("doing x")
            .hint("second");
        assert_eq!(e.message(), "doing x: no");
        assert_eq!(e.contexts(), ["doing x"]);
        assert_eq!(e.hints(), ["first", "second"]);
        assert_eq!(e.to_string(), "doing x: no; hint: first; hint: second");
    }
}
