//! The platter binary that goes onto the medium: it must be statically
//! linked (the medium has no C library), and goes in without its debug
//! information when the host can strip it.

use std::path::Path;
use std::process::Command;

use object::elf::{EM_X86_64, PT_INTERP};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};

use crate::error::{Error, Result};

/// How to build a binary the medium can run.
const BUILD_STATIC: &str = "build a static one with `cargo build --release` in platter's source \
folder (its .cargo/config.toml links statically), or elsewhere with \
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu, \
and pass --platter target/x86_64-unknown-linux-gnu/release/platter";

/// Checks that `path` is a static x86-64 executable.
pub fn check_static(path: &Path, bytes: &[u8]) -> Result<()> {
    let not_one = |why: String| {
        Error::bad_input(format!(
            "{} cannot go onto the rescue medium: {why}",
            path.display()
        ))
    };
    let elf = ElfFile64::<object::Endianness>::parse(bytes)
        .map_err(|e| not_one(format!("not a 64-bit ELF executable ({e})")))?;
    let endian = elf.endian();
    if elf.elf_header().e_machine(endian) != EM_X86_64 {
        return Err(not_one("it is not an x86-64 program".into()));
    }
    let dynamic = elf
        .elf_program_headers()
        .iter()
        .any(|h| h.p_type(endian) == PT_INTERP);
    if dynamic {
        return Err(not_one(
            "it is dynamically linked, and the medium has no C library for it".into(),
        )
        .hint(BUILD_STATIC));
    }
    Ok(())
}

/// The binary at `path`, checked, without debug information when `strip`
/// is on the host (`scratch` holds the stripped copy for a moment).
pub fn prepare(path: &Path, scratch: &Path) -> Result<(Vec<u8>, bool)> {
    // A platter binary is tens of MiB; 1 GiB is far past any.
    let bytes = super::read_regular(path, "platter binary", 1 << 30)?;
    check_static(path, &bytes)?;
    if crate::os::find_program("strip", "binutils").is_err() {
        return Ok((bytes, false));
    }
    let out = scratch.join("platter.stripped");
    super::host::run(
        "strip --strip-debug",
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(path),
    )?;
    let stripped = std::fs::read(&out).map_err(|e| Error::io("read", &out, e))?;
    let _ = std::fs::remove_file(&out);
    check_static(&out, &stripped)?;
    Ok((stripped, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_is_static() {
        // The crate is built static (.cargo/config.toml), tests included.
        let me = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&me).unwrap();
        check_static(&me, &bytes).unwrap();
    }

    #[test]
    fn a_dynamic_program_is_refused_with_the_way_to_a_static_one() {
        let sh = Path::new("/bin/sh");
        let bytes = std::fs::read(sh).unwrap();
        let e = check_static(sh, &bytes).unwrap_err();
        assert!(
            e.message().contains("dynamically linked"),
            "{}",
            e.message()
        );
        assert!(e.hints().iter().any(|h| h.contains("crt-static")));
        assert!(check_static(Path::new("x"), b"#!/bin/sh\n").is_err());
    }
}
