//! `platter inspect`: the layout of a device or image, read-only.

use std::path::PathBuf;

use platter::disk::{Source, free_space};

use super::{Context, layout_text, output};

/// Show a disk's or image's partition table and what each partition holds
///
/// Reads the MBR or GPT (both GPT headers and their CRCs are checked; a
/// damaged primary is read from the backup), and names each partition's
/// filesystem by its magic: ext2/3/4, vfat, exfat, ntfs, xfs, btrfs, swap,
/// LUKS, LVM, and for ext2/3/4, FAT and swap how much of each is used
/// (from the filesystem's own allocation structures). Opens the source
/// read-only and never writes. Needs no repository.
#[derive(clap::Args)]
pub struct Args {
    /// Block device (e.g. /dev/sdb) or image file
    source: PathBuf,

    /// With --json: also list the free byte ranges a backup would skip
    #[arg(long)]
    free_ranges: bool,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let source = Source::open(&args.source)?;
    let mut layout = source.layout()?;
    let free = free_space::free_ranges(&mut layout, &source)?;
    if ctx.json {
        let mut doc = serde_json::to_value(&layout)
            .map_err(|e| platter::Error::bad_input(format!("cannot encode JSON: {e}")))?;
        if args.free_ranges {
            doc["free_ranges"] = serde_json::json!(free.as_slice());
        }
        output::json(&doc)?;
        return Ok(true);
    }
    output::line(&format!("{}:", source.path().display()));
    for l in layout_text::lines(&layout) {
        output::line(&l);
    }
    Ok(true)
}
