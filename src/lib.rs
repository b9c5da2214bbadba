//! platter: block-level disk imaging and backup.
//!
//! Layers, top to bottom (the README's "How it works", docs/FORMAT.md for
//! the bytes): `engine` runs every command's work (backup, restore, verify,
//! copy, forget, prune, repair, rebuild-index) by joining `disk` (devices,
//! images, layouts, filesystems) with `repo` (the repository format); both
//! use `codec` (hashing, compression, sealing) only. `mount` (snapshots
//! as files, over FUSE) sits on top of the engine, as the command line
//! does, and `boot` (a snapshot as a virtual machine) on top of `mount`.
//! `rescue` builds the bootable rescue medium and runs inside it, on top of
//! `disk` (it runs restores through the platter binary itself).
//! `error`, `os`, `interrupt`, `printable`, `progress` and `units` serve
//! every layer. The command line lives in the binary.

pub mod boot;
pub mod codec;
pub mod disk;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod jobs;
pub mod mount;
pub mod os;
pub mod owner;
pub mod printable;
pub mod progress;
pub mod repo;
pub mod rescue;
pub mod units;

pub use error::{Error, ErrorKind, Result};
