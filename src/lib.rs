//! platter: block-level disk imaging and backup.
//!
//! Layers, top to bottom (see DESIGN.md): `engine` runs backups, restores
//! and verification by joining `disk` (devices and images) with `repo` (the
//! repository format); both use `codec` (hashing, compression) only. The
//! command line lives in the binary.

pub mod codec;
pub mod disk;
pub mod engine;
pub mod error;
pub mod interrupt;
pub mod os;
pub mod printable;
pub mod progress;
pub mod repo;
pub mod units;

pub use error::{Error, ErrorKind, Result};
