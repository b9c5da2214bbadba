//! Linux swap: only the header page holds anything that outlives a boot.
//! A hibernation image replaces the signature, so it is never taken for
//! swap (and is copied whole).

use super::{Ranges, Region};
use crate::error::{Error, Result};

/// Everything after the header page is free.
pub fn free_ranges(r: &Region) -> Result<Ranges> {
    for page in [4096u64, 8192, 16384, 65536] {
        if page <= r.len && r.read(page - 10, 10)? == b"SWAPSPACE2" {
            return Ok(Ranges::new(vec![(page, r.len)]));
        }
    }
    Err(Error::corrupt(
        "no SWAPSPACE2 signature (an old or hibernated swap area)",
    ))
}
