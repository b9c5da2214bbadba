//! Linux swap: only the header page holds anything that outlives a boot,
//! and only up to the area's own size (what follows, such as RAID
//! metadata at the end of a member, stays). A hibernation image replaces
//! the signature and is copied whole.

use super::{Ranges, Region};
use crate::disk::layout::swap_page;
use crate::error::{Error, Result};

/// The free space of the swap area in `r`.
pub fn free_ranges(r: &Region) -> Result<Ranges> {
    let head = r.read(0, (r.len.min(65536)) as usize)?;
    let Some((page, true)) = swap_page(&head) else {
        return Err(Error::corrupt(
            "it holds a hibernation image or an unknown swap header",
        ));
    };
    let last_page = u64::from(crate::disk::layout::le::u32(&head, 1028));
    let end = (last_page + 1).saturating_mul(page).min(r.len);
    if last_page == 0 || end <= page {
        return Err(Error::corrupt("its header gives no size"));
    }
    Ok(Ranges::new(vec![(page, end)]))
}
