//! The rescue medium: a small bootable image (BIOS and UEFI, CD and USB
//! stick) that brings a machine with an empty disk back from a snapshot.
//!
//! `build` makes the image on a Debian/Ubuntu host from Debian packages
//! (kernel, modules, busybox, CA certificates) and the static platter
//! binary; nothing is mounted while building. `system` is what runs inside
//! the booted medium: it finds disks and repositories, and walks a person
//! (or the kernel command line, unattended) through a restore. It sits on
//! top of `disk` and runs restores with the platter binary itself, so a
//! restore from the medium is exactly `platter restore`.

pub mod build;
pub mod params;
pub mod system;
