//! `platter inspect`: the layout of a device or image, read-only.

use std::path::PathBuf;

use platter::disk::Source;

use super::{Context, layout_text, output};

/// Show a disk's or image's partition table and what each partition holds
///
/// Reads the MBR or GPT (both GPT headers and their CRCs are checked; a
/// damaged primary is read from the backup), and names each partition's
/// filesystem by its magic: ext2/3/4, vfat, exfat, ntfs, xfs, btrfs, swap,
/// LUKS, LVM. Opens the source read-only and never writes. Needs no
/// repository.
#[derive(clap::Args)]
pub struct Args {
    /// Block device (e.g. /dev/sdb) or image file
    source: PathBuf,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let source = Source::open(&args.source)?;
    let layout = source.layout()?;
    if ctx.json {
        output::json(&layout)?;
        return Ok(true);
    }
    output::line(&format!("{}:", source.path().display()));
    for l in layout_text::lines(&layout) {
        output::line(&l);
    }
    Ok(true)
}
