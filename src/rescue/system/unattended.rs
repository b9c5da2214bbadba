//! The unattended restore of a medium built with `rescue build
//! --unattended`: the repository, snapshot and target come from the kernel
//! command line, the passphrase (if any) from the medium itself. Every
//! check that can fail before a byte is written runs first; a failure says
//! what was wrong and leaves the target as it was.

use std::path::Path;
use std::time::{Duration, Instant};

use super::child::Platter;
use super::discover::Discovery;
use super::disks::{self, Disk};
use super::targets;
use crate::error::{Error, Result};
use crate::rescue::build::PASSPHRASE_FILE;
use crate::rescue::params::{TargetChoice, Unattended};

/// How long disks may take to appear after the drivers load (USB disks
/// are announced seconds later).
const SETTLE: Duration = Duration::from_secs(15);

/// Runs the restore `u` asks for, printing each step.
pub fn run(u: &Unattended, volume_id: Option<&str>) -> Result<()> {
    say(&format!(
        "unattended restore: snapshot {} of repository {} onto the disk with {}",
        u.snapshot,
        u.repo,
        match &u.target {
            TargetChoice::Serial(s) => format!("serial or WWN {s}"),
            TargetChoice::Size(n) => format!("size {n} bytes"),
        }
    ));
    if volume_id.is_some() && !disks::list(volume_id).iter().any(|d| d.is_medium) {
        return Err(Error::not_found(
            "the disk this medium booted from is not among the disks (not recognised by its volume id)",
        )
        .hint("an unattended restore does not choose a target without knowing which disk to avoid: boot the medium itself (not a copy inside another boot loader), or restore from the menu"));
    }
    let began = Instant::now();
    let (disks, discovery, found) = loop {
        let disks = disks::list(volume_id);
        let (discovery, found) = Discovery::run(&disks);
        let matching: Vec<_> = found.into_iter().filter(|f| f.inner == u.repo).collect();
        let target_seen = disks.iter().any(|d| matches_target(d, &u.target));
        if (!matching.is_empty() && target_seen) || began.elapsed() > SETTLE {
            break (disks, discovery, matching);
        }
        drop(discovery);
        std::thread::sleep(Duration::from_secs(1));
    };
    for note in &discovery.notes {
        say(&format!("note: {note}"));
    }
    let repo = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(
                Error::not_found(format!("no repository at {} on any disk", u.repo))
                    .hint(format!("disks seen: {}", seen(&disks))),
            );
        }
        several => {
            let places: Vec<String> = several
                .iter()
                .map(|f| f.device.display().to_string())
                .collect();
            return Err(Error::bad_input(format!(
                "a repository at {} is on several filesystems: {}",
                u.repo,
                places.join(", ")
            ))
            .hint("detach all but one of those disks"));
        }
    };
    let mut discovery = discovery;
    discovery.keep_only(Some(&repo.device));
    say(&format!(
        "repository: {} on {} ({})",
        repo.inner,
        repo.device.display(),
        repo.fstype
    ));

    let offered = targets::candidates(&disks, Some(&repo.disk));
    let matching: Vec<&&Disk> = offered
        .iter()
        .filter(|d| matches_target(d, &u.target))
        .collect();
    let target = match matching.as_slice() {
        [one] => **one,
        [] => {
            return Err(Error::not_found(
                "no disk matches the target this medium names (the medium and the repository's disk never do)",
            )
            .hint(format!("disks seen: {}", seen(&disks))));
        }
        several => {
            let names: Vec<&str> = several.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::bad_input(format!(
                "several disks match the target: {}",
                names.join(", ")
            ))
            .hint("build the medium with --target serial:... to name one disk"));
        }
    };
    say(&format!("target: {}", target.describe()));

    let mut platter = Platter::new(&repo.path.display().to_string());
    if Path::new(PASSPHRASE_FILE).exists() {
        platter.set_passphrase_file(PASSPHRASE_FILE.into());
    }
    let args = targets::restore_args(&u.snapshot, target, u.grow);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = platter.shown_unattended(&args);
    drop(discovery);
    if code != 0 {
        return Err(Error::new(
            crate::error::ErrorKind::Io,
            format!("the restore failed (exit code {code}); its message is above"),
        ));
    }
    Ok(())
}

fn matches_target(disk: &Disk, choice: &TargetChoice) -> bool {
    match choice {
        TargetChoice::Serial(s) => disk.answers_to(s),
        TargetChoice::Size(n) => disk.size == *n,
    }
}

fn seen(disks: &[Disk]) -> String {
    let all: Vec<String> = disks.iter().map(Disk::describe).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join("; ")
    }
}

fn say(line: &str) {
    println!("platter rescue: {}", crate::printable::printable(line));
}
