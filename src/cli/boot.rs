//! `platter boot`: a snapshot as a virtual machine, without a restore.

use std::ffi::OsString;
use std::path::PathBuf;

use platter::Result;
use platter::boot::{Accel, BootOptions, BootReport, BootWatch, Firmware, prepare};
use platter::printable::to_stderr;

use super::{Context, layout_text, output};

/// Boot a snapshot as a virtual machine, at once, without restoring it
///
/// Instant recovery: the snapshot is mounted read-only in a private
/// temporary folder, a qcow2 overlay is made over its disk.img, and QEMU
/// boots the overlay. The guest reads the snapshot (every chunk checked,
/// fetched when first read) and writes only to the overlay: the repository
/// is never changed. When QEMU exits, or on Ctrl-C or SIGTERM, QEMU is
/// stopped, the overlay removed (unless --keep-overlay keeps it), the
/// snapshot unmounted and the repository's shared lock released.
///
/// Firmware: UEFI (OVMF) when the recorded layout has an EFI system
/// partition holding \EFI\BOOT\BOOTX64.EFI, else BIOS (SeaBIOS); --firmware
/// overrides. Accelerator: KVM when /dev/kvm is hardware virtualisation
/// (kvm_intel or kvm_amd), else TCG, QEMU's software CPU (slower, but it
/// boots anything); --accel overrides. The disk is the guest's first IDE
/// disk. Everything after `--` goes to QEMU as it is: a console, a network,
/// more CPUs. Without them QEMU shows the guest's screen its default way
/// (a window where it has one); on a server, `-- -nographic` puts the
/// guest's serial console in this terminal. platter's own lines go to
/// stderr. It ends when the guest powers off or QEMU quits; a QEMU that
/// fails (say, a wrong argument) makes platter fail too (exit 6).
///
/// --keep-overlay FILE keeps the guest's writes in FILE; booting again with
/// the same FILE goes on from them (FILE is checked to be this snapshot's
/// overlay). To move a recovered machine back to hardware, keep its
/// changes with --keep-overlay FILE, then `platter restore SNAPSHOT DISK --overlay FILE`
/// writes the snapshot with those changes to a disk.
///
/// --expect TEXT makes it a boot test: the guest boots with no network
/// (-nic none), its first serial port (ttyS0) goes to a private file, and
/// as soon as TEXT shows there (a login prompt, a marker a service prints)
/// the guest is stopped and platter exits 0; a guest that stops first, or
/// does not show TEXT within --timeout, exits 4 with the console's last
/// lines. Nothing it wrote is kept.
///
/// Needs qemu-system-x86_64 (Debian package qemu-system-x86), qemu-img
/// (qemu-utils), OVMF for UEFI (ovmf), /dev/fuse, and mtools to look for a
/// UEFI loader.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter boot latest -- -nographic                         (serial console in this terminal; Ctrl-A X quits)\n  \
platter boot 3f2a91c0 --keep-overlay /srv/recovered.qcow2 -- -nic user -smp 2\n  \
platter boot latest --expect 'login:' --timeout 5m               (a boot test: no network, exit 0 at the prompt)\n  \
platter restore 3f2a91c0 /dev/sdc --overlay /srv/recovered.qcow2   (back to hardware)")]
pub struct Args {
    /// Snapshot id, unique prefix, or `latest`
    snapshot: String,

    /// Firmware: bios (SeaBIOS) or uefi (OVMF); default from the recorded layout
    #[arg(long, value_enum, value_name = "bios|uefi")]
    firmware: Option<FirmwareArg>,

    /// Accelerator: kvm or tcg (the software CPU); default kvm only where it can boot a guest
    #[arg(long, value_enum, value_name = "kvm|tcg")]
    accel: Option<AccelArg>,

    /// Guest memory (e.g. 1G, 512MiB)
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, default_value = "1GiB")]
    memory: u64,

    /// Keep the guest's writes in this qcow2 file (for `restore --overlay`): a new file, or one an earlier boot of this snapshot kept, to go on from there; default: removed on exit
    #[arg(long, value_name = "FILE")]
    keep_overlay: Option<PathBuf>,

    /// Memory for checked chunks of the snapshot (e.g. 64M, 1G)
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, default_value = "64MiB")]
    cache_size: u64,

    /// A boot test: wait for TEXT on the serial console (e.g. 'login:'), then stop the guest; no network
    #[arg(long, value_name = "TEXT", value_parser = nonempty, conflicts_with = "keep_overlay")]
    expect: Option<String>,

    /// How long a boot test waits for --expect's text (e.g. 90s, 5m)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5m", requires = "expect")]
    timeout: std::time::Duration,

    /// Extra QEMU arguments, after `--` (e.g. -- -nographic -smp 2)
    #[arg(last = true, value_name = "QEMU ARGS")]
    qemu_args: Vec<OsString>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FirmwareArg {
    Bios,
    Uefi,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AccelArg {
    Kvm,
    Tcg,
}

pub fn run(ctx: &Context, args: Args) -> Result<bool> {
    let memory_mib = args.memory / (1 << 20);
    if memory_mib < 16 {
        return Err(platter::Error::bad_input(format!(
            "--memory {} is too little for a guest",
            args.memory
        ))
        .hint("give at least 16MiB; most systems want 512MiB or more"));
    }
    let repo = ctx.open_repo()?;
    let snap = repo.resolve(&args.snapshot)?;
    let options = BootOptions {
        firmware: args.firmware.map(|f| match f {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
        }),
        accel: args.accel.map(|a| match a {
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }),
        memory_mib,
        keep_overlay: args.keep_overlay,
        qemu_args: args.qemu_args,
        cache_size: args.cache_size,
        layout_lines: layout_text::lines,
    };
    let prepared = prepare(repo, snap.clone(), options)?;
    let plan = prepared.plan();
    for w in &plan.warnings {
        output::warn(w);
    }
    // QEMU may own stdout (a serial console): platter speaks on stderr.
    to_stderr(&format!(
        "platter: booting snapshot {} ({}) with {} firmware ({}) on {} ({}); writes go to {}{}",
        snap.short_id(),
        platter::units::bytes(plan.size),
        plan.firmware.name(),
        plan.firmware_reason,
        plan.accel.name(),
        plan.accel_reason,
        plan.overlay.display(),
        if plan.overlay_resumed {
            " (going on from an earlier boot), kept after QEMU exits"
        } else if plan.overlay_kept {
            ", kept after QEMU exits"
        } else {
            ", removed when QEMU exits"
        },
    ));
    if let Some(expect) = args.expect {
        let watch = BootWatch {
            expect,
            timeout: args.timeout,
        };
        let checked = prepared.check(&watch)?;
        if ctx.json {
            output::json(&checked)?;
        } else {
            to_stderr(&format!(
                "platter: snapshot {} booted: {:?} showed on its serial console after {:.1}s; \
                 the guest was stopped, nothing was kept",
                checked.plan.snapshot.prefix(8),
                checked.expected,
                checked.seen_after_s
            ));
        }
        return Ok(true);
    }
    let report = prepared.run()?;
    if ctx.json {
        output::json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(true)
}

fn nonempty(text: &str) -> std::result::Result<String, String> {
    if text.is_empty() {
        Err("give the text to wait for (e.g. 'login:')".into())
    } else {
        Ok(text.to_string())
    }
}

fn print_report(report: &BootReport) {
    to_stderr(&format!(
        "platter: QEMU ended after {:.1}s; the repository was not changed",
        report.duration_s
    ));
    if report.plan.overlay_kept {
        to_stderr(&format!(
            "platter: the guest's writes ({}) are kept in {}: `platter restore {} DISK --overlay {}` \
             writes the snapshot with them to a disk",
            platter::units::bytes(report.overlay_bytes),
            report.plan.overlay.display(),
            report.plan.snapshot.prefix(8),
            report.plan.overlay.display()
        ));
    }
}
