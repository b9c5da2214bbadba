//! `platter rescue`: build the bootable rescue medium, and the commands
//! the medium itself runs.

use std::path::PathBuf;

use platter::rescue::build::{BuildOptions, BuildReport, build, default_cache};
use platter::rescue::params::{TargetChoice, Then, Unattended};

use super::{Context, output};

/// Bare-metal restore: a bootable rescue medium with platter on it
#[derive(clap::Subcommand)]
pub enum Command {
    Build(Box<BuildArgs>),
    /// On the medium: the banner, the clock check, and an unattended restore when its kernel command line asks for one (busybox init runs it once at boot)
    #[command(hide = true)]
    Start,
    /// On the medium: the restore menu on the console it runs on (busybox init runs it on tty1 and ttyS0)
    #[command(hide = true)]
    Menu,
}

/// Build a rescue medium: a hybrid image that boots from a USB stick or a
/// CD, on BIOS and UEFI machines
///
/// The medium holds a Debian kernel with drivers for common disks, USB,
/// network cards and the filesystems of backup disks (ext4, xfs, btrfs,
/// FAT, exFAT, and NTFS where the kernel has ntfs3), busybox, CA
/// certificates, DHCP, and this platter (or --platter PATH), which must be
/// statically linked. It boots to a menu on the screen and on the serial
/// console: it lists the disks, finds repositories on them (read-only,
/// without journal replay), asks the passphrase, the snapshot and the
/// target disk (never the medium or the repository's disk), has you type
/// the target's name, restores with read-back verification, and reboots.
/// `!` at any question opens a shell. The machine needs 1 GiB of RAM (an
/// encrypted repository's key takes 256 MiB to unlock).
///
/// Needs a Debian or Ubuntu host with apt-get and its package lists,
/// grub-mkrescue (grub-common, grub-pc-bin, grub-efi-amd64-bin), xorriso,
/// mtools and xz; the packages are downloaded with `apt-get download`
/// (nothing is installed) into the cache folder. Nothing is mounted.
///
/// --unattended makes a medium for mass restores and tests: at boot it
/// restores --snapshot of the repository found at --repo-path on an
/// attached disk onto the disk named by --target, then reboots (or powers
/// off). Only a medium built this way does that; a file on a disk never
/// turns it on. Every failure is printed and leaves the target as it was.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter rescue build rescue.iso\n  \
dd if=rescue.iso of=/dev/sdX bs=4M conv=fsync     (write it to a USB stick)\n  \
platter rescue build mass.iso --unattended --repo-path /backups/repo --target size:256060514304 --passphrase-file pass.txt --then poweroff")]
pub struct BuildArgs {
    /// The image file to write (a new file; --force replaces one; never inside a repository)
    out: PathBuf,

    /// The platter binary to put inside (statically linked); default this one
    #[arg(long, value_name = "PATH")]
    platter: Option<PathBuf>,

    /// Where downloaded packages are kept between builds [default: $XDG_CACHE_HOME/platter/rescue or ~/.cache/platter/rescue]
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// The Debian kernel package (or metapackage) to use instead of linux-image-amd64 (on Debian 12, linux-image-6.12-amd64 brings NTFS)
    #[arg(long, value_name = "NAME")]
    kernel_package: Option<String>,

    /// Replace OUT if it exists
    #[arg(long)]
    force: bool,

    /// Restore at boot without asking (needs --repo-path and --target)
    #[arg(long, requires_all = ["repo_path", "target"])]
    unattended: bool,

    /// Unattended: the repository's folder inside a filesystem on an attached disk, e.g. /backups/repo
    #[arg(long, value_name = "PATH", requires = "unattended")]
    repo_path: Option<String>,

    /// Unattended: the snapshot id, unique prefix, or latest
    #[arg(
        long,
        value_name = "ID",
        default_value = "latest",
        requires = "unattended"
    )]
    snapshot: String,

    /// Unattended: the target disk, serial:TEXT (serial or WWN) or size:BYTES (its exact size)
    #[arg(long, value_name = "serial:TEXT|size:BYTES", requires = "unattended")]
    target: Option<String>,

    /// Unattended: extend the last partition on a larger target
    #[arg(long, requires = "unattended")]
    grow_last_partition: bool,

    /// Unattended: a file whose first line is the repository's passphrase, copied INTO the medium (whoever holds the medium can read it)
    #[arg(long, value_name = "FILE", requires = "unattended")]
    passphrase_file: Option<PathBuf>,

    /// Unattended: what follows a restore that succeeded
    #[arg(long, value_name = "reboot|poweroff", default_value = "reboot", value_parser = ["reboot", "poweroff"], requires = "unattended")]
    then: String,
}

pub fn run(ctx: &Context, command: Command) -> platter::Result<bool> {
    match command {
        Command::Build(args) => run_build(ctx, *args),
        Command::Start => platter::rescue::system::start().map(|_| true),
        Command::Menu => platter::rescue::system::menu().map(|_| true),
    }
}

fn run_build(ctx: &Context, args: BuildArgs) -> platter::Result<bool> {
    let unattended = if args.unattended {
        let (Some(repo), Some(target)) = (args.repo_path, args.target) else {
            return Err(platter::Error::bad_input(
                "--unattended needs --repo-path and --target",
            ));
        };
        Some(Unattended {
            repo: platter::rescue::params::repo_path(&repo)?,
            snapshot: args.snapshot,
            target: TargetChoice::parse(&target)?,
            grow: args.grow_last_partition,
            then: if args.then == "poweroff" {
                Then::Poweroff
            } else {
                Then::Reboot
            },
        })
    } else {
        None
    };
    let cache = match args.cache.or_else(default_cache) {
        Some(cache) => cache,
        None => {
            return Err(platter::Error::bad_input(
                "no cache folder: HOME and XDG_CACHE_HOME are unset",
            )
            .hint("pass --cache DIR"));
        }
    };
    let options = BuildOptions {
        out: args.out,
        platter: args.platter,
        cache,
        kernel_package: args.kernel_package,
        force: args.force,
        unattended,
        passphrase_file: args.passphrase_file,
    };
    let json = ctx.json;
    let report = build(&options, &|step| {
        if !json {
            output::line(step);
        }
    })?;
    if json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(true)
}

fn print_report(r: &BuildReport) {
    output::line(&format!(
        "wrote {} ({}): kernel {}, {} modules, platter {}{}, volume id {}{}, {:.1}s",
        r.out,
        output::bytes(r.bytes),
        r.kernel,
        r.modules,
        output::bytes(r.platter_bytes),
        if r.stripped {
            " (stripped)"
        } else {
            " (with debug info: install binutils to strip it)"
        },
        r.volume_id,
        if r.unattended {
            ", unattended restore"
        } else {
            ""
        },
        r.seconds
    ));
    output::line(&format!(
        "next: write it to a USB stick with `dd if={} of=/dev/sdX bs=4M conv=fsync` (sdX: the stick, all of it), or burn it to a CD",
        r.out
    ));
}
