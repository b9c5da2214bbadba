//! `platter mount`: snapshots as read-only files (and with --files, the
//! filesystems inside them), until Ctrl-C, SIGTERM or `umount`.

use std::ffi::OsString;
use std::path::PathBuf;

use platter::mount::{MountOptions, mount, mount_files};
use platter::{Error, Result};

use super::{Context, layout_text, output};

/// Show snapshots as read-only files, to copy single files out of them
///
/// `platter mount MOUNTPOINT [SNAPSHOT...]` shows a folder per snapshot
/// (all of them, and those committed while mounted, unless some are
/// named), named for its time, short id and tags, holding `disk.img` (the
/// whole image), `partN.img` for each partition of the recorded layout and
/// `layout.txt`; `latest` links to the newest folder.
///
/// `platter mount --files SNAPSHOT MOUNTPOINT` also mounts the filesystem
/// of each partition read-only, without replaying its journal, at
/// MOUNTPOINT/partN (needs root); one the kernel cannot mount is named and
/// left as its image file.
///
/// Every chunk is checked before a byte of it is served. A read that
/// touches a damaged chunk fails with EIO (the byte range is printed on
/// stderr); the rest stays readable. The mount holds a shared lock on the
/// repository: `prune` and `forget` are refused until it ends. It runs in the foreground
/// until Ctrl-C, SIGTERM or `umount MOUNTPOINT` (`fusermount3 -u` for a
/// user; with --files only Ctrl-C or SIGTERM); everything is unmounted and
/// detached then.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
mkdir /mnt/snaps && platter mount /mnt/snaps\n  \
cp /mnt/snaps/latest/part2.img /tmp/root.img\n  \
platter mount --files latest /mnt/restore   (then: cp /mnt/restore/part2/etc/fstab .)")]
pub struct Args {
    /// MOUNTPOINT [SNAPSHOT...]; with --files: SNAPSHOT MOUNTPOINT
    #[arg(required = true, value_name = "ARGS")]
    args: Vec<OsString>,

    /// Also mount each partition's filesystem read-only at MOUNTPOINT/partN (needs root)
    #[arg(long)]
    files: bool,

    /// Memory for checked chunks (e.g. 64M, 1G)
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, default_value = "64MiB")]
    cache_size: u64,
}

pub fn run(ctx: &Context, args: Args) -> Result<bool> {
    let (mountpoint, specs) = split(&args)?;
    if args.files && !is_root() {
        return Err(Error::unsupported(
            "--files attaches loop devices and mounts filesystems, which needs root",
        )
        .hint("run it as root, or mount without --files and copy the partition images"));
    }
    let repo = ctx.open_repo()?;
    let snapshots = if specs.is_empty() {
        None
    } else {
        Some(repo.resolve_each(&specs)?)
    };
    let location = repo.location();
    let options = MountOptions {
        cache_size: args.cache_size,
        snapshots: snapshots.clone(),
        layout_lines: layout_text::lines,
    };
    let mut mounted = mount(repo, &mountpoint, options)?;
    let files = match (&snapshots, args.files) {
        (Some(snaps), true) => Some(mount_files(&mounted, &snaps[0])?),
        _ => None,
    };
    let folders = mounted.folder_names();
    if ctx.json {
        let filesystems = files.as_ref().map(|f| &f.filesystems);
        output::json(&serde_json::json!({
            "mountpoint": mountpoint,
            "repository": location,
            "snapshots": folders
                .iter()
                .map(|(id, name)| serde_json::json!({"id": id.to_hex(), "folder": name}))
                .collect::<Vec<_>>(),
            "filesystems": filesystems,
        }))?;
    } else {
        for fs in files.iter().flat_map(|f| &f.filesystems) {
            let what = fs.fstype.as_deref().unwrap_or("no filesystem");
            match (&fs.mounted_at, &fs.not_mounted) {
                (Some(at), _) => output::line(&format!("{}: {what} at {}", fs.name, at.display())),
                (None, why) => output::line(&format!(
                    "{}: {what} not mounted ({}); its image is {}",
                    fs.name,
                    why.as_deref().unwrap_or("unknown reason"),
                    fs.image.display()
                )),
            }
        }
        // The loop devices of --files hold files of the mount open, so
        // `umount` cannot end it: the signals do, undoing everything.
        let ends = if files.is_some() {
            "Ctrl-C or SIGTERM ends it".to_string()
        } else {
            format!(
                "Ctrl-C, SIGTERM or `umount {}` ends it",
                mountpoint.display()
            )
        };
        output::line(&format!(
            "mounted {} snapshot(s) of {location} at {} (read-only); {ends}",
            folders.len(),
            mountpoint.display(),
        ));
    }
    mounted.wait()?;
    drop(files);
    Ok(true)
}

/// The mount point and the snapshots named, from the positional arguments.
fn split(args: &Args) -> Result<(PathBuf, Vec<String>)> {
    let text = |s: &OsString| {
        s.to_str().map(str::to_string).ok_or_else(|| {
            Error::bad_input(format!(
                "{s:?} is not a snapshot id: use an id, a unique prefix of one, or `latest`"
            ))
        })
    };
    if args.files {
        let [snapshot, mountpoint] = args.args.as_slice() else {
            return Err(Error::bad_input(
                "--files takes one snapshot and a mount point: platter mount --files SNAPSHOT MOUNTPOINT",
            ));
        };
        return Ok((PathBuf::from(mountpoint), vec![text(snapshot)?]));
    }
    let (mountpoint, specs) = args
        .args
        .split_first()
        .ok_or_else(|| Error::bad_input("no mount point given"))?;
    let specs = specs.iter().map(text).collect::<Result<Vec<_>>>()?;
    Ok((PathBuf::from(mountpoint), specs))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
