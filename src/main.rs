//! The `platter` binary: parse arguments, run one command, print, and turn
//! errors into exit codes. Everything else lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
