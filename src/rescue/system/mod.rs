//! What runs inside the booted rescue medium. busybox init runs `platter
//! rescue start` once (the banner, the clock check, and the unattended
//! restore when the kernel command line asks for one), then `platter
//! rescue menu` on the screen (tty1) and on the serial console (ttyS0).

mod child;
mod console;
mod discover;
mod disks;
mod menu;
mod targets;
mod unattended;

use std::path::Path;

use crate::error::{Error, Result};
use crate::rescue::build::RELEASE_FILE;
use crate::rescue::params::{Params, Then};

/// The medium's parameters; anywhere but on a medium, an error.
fn on_medium() -> Result<Params> {
    Params::parse(&cmdline()?)
}

/// The kernel command line, on a medium; anywhere else an error.
fn cmdline() -> Result<String> {
    if !Path::new(RELEASE_FILE).exists() {
        return Err(Error::unsupported(
            "this runs only on the rescue medium (it looks at every disk and reboots the machine)",
        )
        .hint("build a medium with `platter rescue build rescue.iso` and boot it"));
    }
    std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| Error::io("read", Path::new("/proc/cmdline"), e))
}

/// Once at boot: the banner, the clock, and the unattended restore.
pub fn start() -> Result<()> {
    let params = on_medium()?;
    println!(
        "platter rescue {}: the menu is on the screen (tty1) and the serial console (ttyS0)",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(warning) = clock_warning() {
        println!("{warning}");
    }
    let Some(job) = &params.unattended else {
        return Ok(());
    };
    match unattended::run(job, params.volume_id.as_deref()) {
        Ok(()) => {
            println!("platter rescue: unattended restore done");
            power(job.then)
        }
        Err(e) => {
            println!(
                "platter rescue: unattended restore FAILED: {}",
                crate::printable::printable(e.message())
            );
            for hint in e.hints() {
                println!("platter rescue:   {}", crate::printable::printable(hint));
            }
            println!("platter rescue: the menu follows");
            Ok(())
        }
    }
}

/// The menu on the console it is started on, pass after pass.
pub fn menu() -> Result<()> {
    // The menu needs only the volume id: unattended words someone edited
    // into a bad shape at the boot prompt must not keep it from starting
    // (`start` reports them).
    let params = Params {
        volume_id: Params::volume_id_in(&cmdline()?),
        unattended: None,
    };
    let console = console::Console::here();
    loop {
        let end = menu::session(&console, &params);
        match end {
            menu::End::Again => continue,
            menu::End::Reboot | menu::End::PowerOff => {
                // Never while the other console sets up or runs a restore.
                match console.lock() {
                    Ok(_held) => power(match end {
                        menu::End::PowerOff => Then::Poweroff,
                        _ => Then::Reboot,
                    }),
                    Err(busy) => console.say(&busy),
                }
            }
            menu::End::Closed => {
                // A console that cannot be read (a serial port with no
                // UART behind it): init starts the menu again, so wait
                // rather than spin.
                std::thread::sleep(std::time::Duration::from_secs(10));
                return Ok(());
            }
        }
    }
}

/// Flushes every write and restarts or powers off the machine.
fn power(then: Then) -> ! {
    use nix::sys::reboot::{RebootMode, reboot};
    nix::unistd::sync();
    let mode = match then {
        Then::Reboot => RebootMode::RB_AUTOBOOT,
        Then::Poweroff => RebootMode::RB_POWER_OFF,
    };
    let _ = reboot(mode);
    // Only without the right to reboot (not on a medium): stay put.
    loop {
        std::thread::park();
    }
}

/// A warning when the clock is before the day the medium was built: TLS
/// certificates and S3 request signatures fail on such a clock.
fn clock_warning() -> Option<String> {
    let text = std::fs::read_to_string(RELEASE_FILE).ok()?;
    let built: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("built="))?
        .trim()
        .parse()
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    (now + 86_400 < built).then(|| {
        format!(
            "warning: the clock says {} seconds since 1970, before this medium was built ({built}): https and S3 will fail. Set it in the shell (!) with date -s 'YYYY-MM-DD hh:mm'.",
            now
        )
    })
}
