//! Talking to devices and image files: opening them safely, their size and
//! sector size, holes, identity, and whether something else is using them.
//! Nothing here knows about repositories.

pub mod free_space;
mod fs_mount;
mod ioctl;
pub mod layout;
mod loop_attach;
pub mod nbd;
pub mod overlay;
mod place;
pub mod qemu;
pub mod ranges;
mod room;
pub mod shadow;
mod source;
mod sysfs;
mod target;

pub use fs_mount::{ReadOnlyMount, kernel_mounts, unmount};
pub use ioctl::set_read_only;
pub use loop_attach::LoopDevice;
pub use place::{FileId, Forbidden};
pub use source::{Source, SourceIdentity};
pub use sysfs::{block_dir, hardware_identity, mounts_of_device};
pub use target::{Target, TargetKind};
