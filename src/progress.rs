//! Progress reporting, as a small trait: the engine says how far it got,
//! the binary decides whether that becomes a bar, a line, or nothing.

pub trait Progress: Send + Sync {
    /// A phase begins ("backup", "restore", "verify"), `total` bytes long.
    fn start(&self, phase: &str, total: u64);
    /// `bytes` more of the phase are done.
    fn advance(&self, bytes: u64);
    /// The phase is over.
    fn finish(&self);
    /// Something the user should know that does not stop the work.
    fn warn(&self, message: &str);
}

/// Reports nothing; warnings go to stderr.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
    fn warn(&self, message: &str) {
        crate::printable::to_stderr(&format!("warning: {message}"));
    }
}
