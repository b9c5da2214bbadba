//! The menu a person walks through on the medium, on the screen and on
//! the serial console alike: disks, then a repository (found on a disk,
//! or typed as a path or URL), its passphrase, a snapshot, a target disk
//! (never the medium or the repository's disk), the target's name typed
//! to confirm, the restore with read-back verification, and a reboot.
//! `!` at any question opens a shell.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::child::Platter;
use super::console::{Answer, Console};
use super::discover::{Discovery, Found};
use super::disks;
use super::targets;
use crate::rescue::params::Params;

/// How a pass through the menu ended.
pub enum End {
    Again,
    Reboot,
    PowerOff,
    Closed,
}

macro_rules! ask_or_end {
    ($console:expr, $question:expr) => {
        match $console.ask($question) {
            Answer::Line(line) => line,
            Answer::Closed => return End::Closed,
        }
    };
}

/// One pass: from the list of disks to a restore (or back).
pub fn session(console: &Console, params: &Params) -> End {
    let disks = disks::list(params.volume_id.as_deref());
    console.say("");
    console.say(&format!(
        "== platter rescue: restore a disk from a snapshot ({}) ==",
        console.name
    ));
    console.say("Disks:");
    for disk in &disks {
        console.say(&format!("  {}", disk.describe()));
    }
    if params.volume_id.is_some() && !disks.iter().any(|d| d.is_medium) {
        console.say("WARNING: the disk this medium booted from is not among these (it was not recognised by its volume id): make sure you do not choose it as the target.");
    }
    for disk in disks.iter().filter(|d| !d.is_medium && !d.is_cd_drive()) {
        console.say(&format!("-- {}:", disk.name));
        Platter::inspect(&disk.path());
    }
    console.say(
        "Enter: look for repositories on these disks; or type a repository's path or s3: URL.",
    );
    console.say("r: list the disks again   !: shell   b: reboot   p: power off");
    let answer = ask_or_end!(console, "Choice:");
    match answer.as_str() {
        "r" => return End::Again,
        // super::menu() takes the lock first: never while the other
        // console restores.
        "b" => return End::Reboot,
        "p" => return End::PowerOff,
        _ => {}
    }
    let _held = match console.lock() {
        Ok(held) => held,
        Err(busy) => {
            console.say(&busy);
            return End::Again;
        }
    };
    let (mut discovery, found) = if answer.is_empty() {
        console.say("Looking for repositories (filesystems are mounted read-only, journals are not replayed)...");
        Discovery::run(&disks)
    } else {
        (Discovery::default(), Vec::new())
    };
    for note in &discovery.notes {
        console.say(&format!("  note: {note}"));
    }
    let Some((repo, repo_disk)) = choose_repository(console, &answer, &found) else {
        return End::Again;
    };
    discovery.keep_only(
        found
            .iter()
            .find(|f| f.path.display().to_string() == repo)
            .map(|f| f.device.as_path()),
    );
    let mut platter = Platter::new(&repo);
    if repo.starts_with("s3:") && !s3_credentials(console, &mut platter) {
        return End::Again;
    }
    let snapshots = match unlock(console, &mut platter) {
        Some(list) => list,
        None => return End::Again,
    };
    let Some(snapshot) = choose_snapshot(console, &platter, &snapshots) else {
        return End::Again;
    };
    let size = snapshot_size(&snapshots, &snapshot);
    let offered = targets::candidates(&disks, repo_disk.as_deref());
    if offered.is_empty() {
        console.say("There is no disk to restore to: the rescue medium, CD drives, read-only disks and the repository's disk are never offered.");
        return End::Again;
    }
    console.say("Target disks:");
    for disk in &offered {
        let note = match size {
            Some(s) if disk.size < s => "  (smaller than the snapshot: only if its partitions fit)",
            Some(s) if disk.size > s => "  (larger: the last partition can be grown)",
            _ => "",
        };
        let unsearched = if discovery.unreadable.contains(&disk.name) {
            "  (holds a filesystem this medium could not search: it may hold backups)"
        } else if found.iter().any(|f| f.disk == disk.name) {
            "  (holds another repository)"
        } else {
            ""
        };
        console.say(&format!("  {}{note}{unsearched}", disk.describe()));
    }
    let name = ask_or_end!(console, "Target disk (its name, e.g. sda):");
    let Some(target) = offered.iter().find(|d| d.name == name) else {
        console.say(&format!("{name:?} is not one of the target disks listed."));
        return End::Again;
    };
    let grow = size.is_some_and(|s| target.size > s)
        && ask_or_end!(
            console,
            "Extend the last partition to the end of the disk? [y/N]"
        )
        .eq_ignore_ascii_case("y");
    console.say(&format!(
        "EVERYTHING ON {} WILL BE REPLACED by snapshot {snapshot}.",
        target.describe()
    ));
    if target.identity().is_none() {
        console.say("This disk reports no serial number or WWN: only its size can be checked again before writing.");
    }
    let typed = ask_or_end!(
        console,
        &format!("Type {} to go on (anything else goes back):", target.name)
    );
    if typed != target.name {
        console.say("Not confirmed; nothing was written.");
        return End::Again;
    }
    let args = targets::restore_args(&snapshot, target, grow);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = platter.shown(&args);
    if code != 0 {
        console.say(&format!(
            "The restore failed (exit code {code}); its message is above."
        ));
        let _ = console.ask("Press Enter to go back to the menu.");
        return End::Again;
    }
    console.say("The restore is finished, and what was written was read back and verified.");
    if grow {
        console.say("The last partition now fills the disk; its filesystem keeps its old size until grown. This medium has no resize tools: after the reboot, grow it from the restored system (ext4: `resize2fs` on its device, also while mounted; xfs: `xfs_growfs` on its mount point).");
    }
    drop(discovery);
    match ask_or_end!(
        console,
        "Remove the rescue medium, then press Enter to reboot (m: back to the menu):"
    )
    .as_str()
    {
        "m" => End::Again,
        _ => End::Reboot,
    }
}

/// The repository: a number from the found list, or a typed path or URL;
/// with the disk it is on (never a target).
fn choose_repository(
    console: &Console,
    typed: &str,
    found: &[Found],
) -> Option<(String, Option<String>)> {
    if !typed.is_empty() {
        return Some((typed.to_string(), disk_of_path(Path::new(typed))));
    }
    if found.is_empty() {
        console.say("No repository was found on these disks. Type a path or s3: URL at the menu, or use the shell (!) to look.");
        return None;
    }
    console.say("Repositories:");
    for (n, f) in found.iter().enumerate() {
        console.say(&format!(
            "  {}) {} on {} ({}{})",
            n + 1,
            f.inner,
            f.device.display(),
            f.fstype,
            f.label
                .as_ref()
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default()
        ));
    }
    let Answer::Line(pick) = console.ask("Repository number [1]:") else {
        return None;
    };
    let n = if pick.is_empty() {
        Some(1)
    } else {
        pick.parse::<usize>().ok()
    };
    let Some(f) = n.and_then(|n| found.get(n.checked_sub(1)?)) else {
        console.say(&format!(
            "{pick:?} is not one of the numbers listed (1 to {}).",
            found.len()
        ));
        return None;
    };
    Some((f.path.display().to_string(), Some(f.disk.clone())))
}

/// The disk a typed local path lies on, from the device of its filesystem.
fn disk_of_path(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let dir = crate::disk::block_dir(dev)?;
    let disk: PathBuf = if dir.join("partition").exists() {
        dir.parent()?.to_path_buf()
    } else {
        dir
    };
    Some(disk.file_name()?.to_string_lossy().into_owned())
}

/// Asks for S3 credentials (the clock checked first: request signing
/// fails on a clock that is far off).
fn s3_credentials(console: &Console, platter: &mut Platter) -> bool {
    if let Some(warning) = super::clock_warning() {
        console.say(&warning);
        return false;
    }
    let Answer::Line(key) = console.ask("AWS_ACCESS_KEY_ID:") else {
        return false;
    };
    let Some(secret) = console.ask_secret("AWS_SECRET_ACCESS_KEY (not shown):") else {
        return false;
    };
    let Answer::Line(region) = console.ask("AWS_REGION [us-east-1]:") else {
        return false;
    };
    platter.set_env("AWS_ACCESS_KEY_ID", Zeroizing::new(key));
    platter.set_env("AWS_SECRET_ACCESS_KEY", secret);
    if !region.is_empty() {
        platter.set_env("AWS_REGION", Zeroizing::new(region));
    }
    true
}

/// Lists the snapshots, asking for the passphrase until it is right (or
/// the person gives up with an empty one).
fn unlock(console: &Console, platter: &mut Platter) -> Option<Vec<serde_json::Value>> {
    let mut asked = false;
    loop {
        match platter.json(&["snapshots"]) {
            Ok(serde_json::Value::Array(list)) => return Some(list),
            Ok(_) => {
                console.say("platter snapshots printed something unexpected.");
                return None;
            }
            Err(failed)
                if failed.message.contains("passphrase")
                    || failed.exit_code == crate::ErrorKind::WrongPassphrase.exit_code() =>
            {
                if asked {
                    console.say(&failed.message);
                }
                let pass = console.ask_secret("Passphrase of the repository (empty: back):")?;
                if pass.is_empty() {
                    return None;
                }
                platter.set_passphrase(pass);
                asked = true;
            }
            Err(failed) => {
                console.say(&format!(
                    "Cannot read repository {}: {}",
                    platter.repo(),
                    failed.message
                ));
                return None;
            }
        }
    }
}

fn choose_snapshot(
    console: &Console,
    platter: &Platter,
    list: &[serde_json::Value],
) -> Option<String> {
    if list.is_empty() {
        console.say("The repository holds no snapshot.");
        return None;
    }
    platter.shown(&["snapshots"]);
    let newest = list.last()?["id"].as_str()?.to_string();
    let short: String = newest.chars().take(8).collect();
    let Answer::Line(typed) = console.ask(&format!("Snapshot to restore [{short}]:")) else {
        return None;
    };
    if typed.is_empty() {
        return Some(newest);
    }
    let matching: Vec<&str> = list
        .iter()
        .filter_map(|s| s["id"].as_str())
        .filter(|id| id.starts_with(&typed))
        .collect();
    match matching.as_slice() {
        [one] => Some(one.to_string()),
        [] => {
            console.say(&format!("No snapshot id begins with {typed:?}."));
            None
        }
        _ => {
            console.say(&format!(
                "{typed:?} begins several snapshot ids; type more of it."
            ));
            None
        }
    }
}

fn snapshot_size(list: &[serde_json::Value], id: &str) -> Option<u64> {
    list.iter().find(|s| s["id"].as_str() == Some(id))?["source"]["size"].as_u64()
}
