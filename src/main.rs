//! The `platter` binary: parse arguments, run one command, print, and turn
//! errors into exit codes. Everything else lives in the library.

mod cli;

use std::process::ExitCode;

use platter::printable::printable;

fn main() -> ExitCode {
    if let Err(e) = platter::interrupt::install() {
        eprintln!("platter: error (I/O error): cannot watch for Ctrl-C and SIGTERM: {e}");
        return ExitCode::from(platter::ErrorKind::Io.exit_code() as u8);
    }
    match cli::run() {
        Ok(code) => code,
        Err(_) if platter::interrupt::exit_is_pending() => loop {
            // The interrupt watcher is cleaning up and exits with the
            // signal's code; this error is only a consequence.
            std::thread::park();
        },
        Err(e) => {
            eprintln!(
                "platter: error ({}): {}",
                e.kind().name(),
                printable(e.message())
            );
            for hint in e.hints() {
                eprintln!("  hint: {}", printable(hint));
            }
            ExitCode::from(e.kind().exit_code() as u8)
        }
    }
}
