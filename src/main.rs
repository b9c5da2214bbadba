//! The `platter` binary: parse arguments, run one command, print, and turn
//! errors into exit codes. Everything else lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("platter: error ({}): {e}", e.kind().name());
            ExitCode::from(e.kind().exit_code() as u8)
        }
    }
}
