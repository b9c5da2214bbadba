//! The host tools the builder runs, checked before anything is
//! downloaded, and one way to run them that names a failure.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

/// Program, or file, and the Debian package that brings it.
const NEEDED: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("xz", "xz-utils"),
    ("grub-mkrescue", "grub-common"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin"),
];

/// Refuses to start when a host tool is missing, naming every one and the
/// command that installs them.
pub fn check_tools() -> Result<()> {
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for &(what, package) in NEEDED {
        let there = if what.starts_with('/') {
            Path::new(what).is_dir()
        } else {
            crate::os::find_program(what, package).is_ok()
        };
        if !there {
            missing.push((what, package));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(what, package)| format!("{what} (package {package})"))
        .collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    Err(Error::unsupported(format!(
        "building the rescue medium needs host tools that are missing: {}",
        names.join(", ")
    ))
    .hint(format!(
        "on Debian or Ubuntu: apt-get install --no-install-recommends {}",
        packages.join(" ")
    )))
}

/// Runs `command` to its end and returns what it printed; a failure
/// names `what` and the last lines it said.
pub fn output(what: &str, command: &mut Command) -> Result<Vec<u8>> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start {what}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = said.lines().rev().take(6).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(Error::new(
        ErrorKind::Io,
        format!("{what} failed ({}): {}", out.status, tail.join(" / ")),
    ))
}

/// Like [`output`], as text.
pub fn run(what: &str, command: &mut Command) -> Result<String> {
    output(what, command).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}
