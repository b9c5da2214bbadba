//! Sorted files of fixed-length records that begin with a chunk id (index
//! cache tables, id sets), looked up a 4 KiB page at a time: keys held in
//! memory (the first 8 bytes of the first id of each page) name the pages
//! that can hold an id, which are read with pread (a fault on a mapping of
//! them would map the page cache's whole large folio), and their records
//! are searched there. Walks go through a mapping and let the pages go
//! behind them.

use std::fs::File;
use std::ops::Range;

use crate::codec::ChunkId;

pub const PAGE: u64 = 4096;

/// The first 8 bytes of an id as a number that sorts as the id does.
pub fn key(id: &ChunkId) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(k)
}

/// The pages that can hold `id`, from the last whose key is below the id's
/// to the first whose key is above it, as (first page, records); `None`
/// when there are none. `per_page` records to a page, `count` in all.
pub fn span(keys: &[u64], id: &ChunkId, per_page: u64, count: u64) -> Option<(u64, Range<u64>)> {
    let k = key(id);
    let first = keys.partition_point(|&p| p < k).saturating_sub(1) as u64;
    let end = keys.partition_point(|&p| p <= k) as u64;
    let records = first * per_page..(end * per_page).min(count);
    (!records.is_empty()).then_some((first, records))
}

/// Hands `f` bytes `from..to` of `file`, read with pread into a page on
/// the stack when they fit; a failed read falls back on `map` (the same
/// bytes).
pub fn read<R>(
    file: &File,
    map: &memmap2::Mmap,
    bytes: Range<u64>,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let (from, to) = (bytes.start as usize, bytes.end as usize);
    let mut page = [0u8; PAGE as usize];
    let mut more = Vec::new();
    let buf: &mut [u8] = if to - from <= page.len() {
        &mut page[..to - from]
    } else {
        more.resize(to - from, 0);
        &mut more
    };
    if std::os::unix::fs::FileExt::read_exact_at(file, buf, bytes.start).is_err() {
        buf.copy_from_slice(&map[from..to]);
    }
    f(buf)
}

/// The records of `buf` (each `record` bytes, sorted) whose id is `id`.
pub fn equal(buf: &[u8], record: usize, id: &ChunkId) -> Range<usize> {
    let count = buf.len() / record;
    let id_of = |i: usize| &buf[i * record..i * record + 32];
    let first = partition(count, |i| id_of(i) < &id.0[..]);
    let end = first + partition(count - first, |i| id_of(first + i) == &id.0[..]);
    first..end
}

/// The first of `0..count` for which `below` is false (it is true for a
/// prefix).
fn partition(count: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Lets the whole pages within bytes `range` of `map` go from this
/// process's memory (they stay in the page cache).
pub fn release(map: &memmap2::Mmap, range: Range<u64>) {
    let start = range.start.div_ceil(PAGE) * PAGE;
    let end = range.end.min(map.len() as u64) / PAGE * PAGE;
    if end > start {
        // SAFETY: the callers map read-only files that nobody changes or
        // truncates while mapped (cache tables are never rewritten; id sets
        // are unlinked as soon as they are mapped): pages dropped here are
        // read again from the file if touched later, so nothing is lost or
        // changed.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
    }
}
