//! The hybrid image: GRUB for BIOS and UEFI, El Torito for CDs and a
//! hybrid MBR for USB sticks, all from `grub-mkrescue` (which builds its EFI
//! image with mtools: nothing is mounted). GRUB and the kernel talk on the
//! screen and on the first serial port.

use std::path::Path;
use std::process::Command;

use super::host::run;
use crate::error::{Error, Result};

/// The boot menu. `words` go on the kernel command line of the first
/// entry; an unattended medium gets a second entry without them, for a
/// person at the machine who wants the menu instead.
pub fn grub_cfg(title: &str, words: &[String], interactive_too: &[String]) -> String {
    let entry = |title: &str, words: &[String]| {
        format!(
            "menuentry \"{title}\" {{\n  linux /boot/vmlinuz console=tty0 console=ttyS0,115200 quiet {}\n  initrd /boot/initrd.gz\n}}\n",
            words.join(" ")
        )
    };
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\nset timeout=3\n",
    );
    cfg.push_str(&entry(title, words));
    if !interactive_too.is_empty() {
        cfg.push_str(&entry("platter rescue: menu", interactive_too));
    }
    cfg
}

/// Writes the image of folder `stage` to `out`, with volume id `volume_id`.
pub fn make(stage: &Path, out: &Path, volume_id: &str) -> Result<()> {
    run(
        "grub-mkrescue",
        Command::new("grub-mkrescue")
            .args(["--locales=", "--themes=", "--fonts=", "-o"])
            .arg(out)
            .arg(stage)
            .args(["--", "-volid", volume_id]),
    )
    .map(|_| ())
    .map_err(|e: Error| {
        e.hint("grub-mkrescue needs grub-pc-bin, grub-efi-amd64-bin, xorriso and mtools")
    })
}
