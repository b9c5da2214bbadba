//! Restore's reads, grouped: the data chunks of a stretch of the map are
//! looked up in the index, sorted by pack and offset, and neighbouring ones
//! are merged into spans that one request reads (up to the backend's
//! `read_span`; on a local disk every span is one chunk). A chunk used at
//! several places of the stretch is read once and written at each.

use std::collections::HashMap;

use crate::codec::ChunkId;
use crate::error::{Error, Result};
use crate::repo::PackId;
use crate::repo::index::{Index, Location};
use crate::repo::map::{Kind, MapEntry, MapReader};

/// Map positions looked at together: enough that a pack's neighbouring
/// chunks fall into one stretch, few enough that the stretch costs little
/// memory and the target is still written roughly in order.
const STRETCH: u64 = 1024;

/// Where a chunk goes: its map positions and entries.
pub type Places = Vec<(u64, MapEntry)>;

/// One piece of a restore's work.
pub enum Job {
    /// Positions whose chunk is zero or unused: no read.
    Zeros(Places),
    /// A data chunk the index lacks, at these places.
    Unindexed(ChunkId, Places),
    /// Chunks of one pack read with one request.
    Span(Span),
}

/// Neighbouring chunks of one pack, in the order of their offsets, and
/// where each goes.
pub struct Span {
    pub pack: PackId,
    pub chunks: Vec<(ChunkId, Location)>,
    pub places: Vec<Places>,
}

/// Reads the map entries at `positions` and sends them as jobs, a stretch
/// at a time, merging reads up to `limit` bytes; stops when `send` says
/// false.
pub fn feed(
    map: &mut MapReader,
    positions: std::ops::Range<u64>,
    index: &Index,
    limit: u64,
    send: &mut dyn FnMut(Job) -> bool,
) -> Result<()> {
    let end = positions.end.min(map.header().entries);
    let mut start = positions.start;
    while start < end {
        let stop = end.min(start.saturating_add(STRETCH));
        let mut entries = Vec::with_capacity((stop - start) as usize);
        for pos in start..stop {
            entries.push((pos, map.entry(pos)?));
        }
        for job in stretch_jobs(entries, index, limit)? {
            if !send(job) {
                return Ok(());
            }
        }
        start = stop;
    }
    Ok(())
}

/// The jobs of one stretch of the map, in the order of their first
/// position.
fn stretch_jobs(entries: Places, index: &Index, limit: u64) -> Result<Vec<Job>> {
    let mut zeros = Places::new();
    let mut unindexed: Vec<(ChunkId, Places)> = Vec::new();
    // Each chunk once, with every place it goes.
    let mut chunks: Vec<(ChunkId, Location, Places)> = Vec::new();
    let mut seen: HashMap<ChunkId, usize> = HashMap::new();
    for (pos, entry) in entries {
        if entry.kind != Kind::Data {
            zeros.push((pos, entry));
            continue;
        }
        if let Some(&at) = seen.get(&entry.id) {
            match chunks.get_mut(at) {
                Some(chunk) => chunk.2.push((pos, entry)),
                None => return Err(Error::internal("a restore span lost a chunk")),
            }
            continue;
        }
        match index.get(&entry.id) {
            Some(loc) => {
                seen.insert(entry.id, chunks.len());
                chunks.push((entry.id, loc, vec![(pos, entry)]));
            }
            None => unindexed.push((entry.id, vec![(pos, entry)])),
        }
    }
    chunks.sort_by_key(|(_, loc, _)| (loc.pack, loc.offset));
    let mut jobs: Vec<(u64, Job)> = Vec::new();
    if let Some(first) = zeros.first().map(|(pos, _)| *pos) {
        jobs.push((first, Job::Zeros(zeros)));
    }
    for (id, places) in unindexed {
        let first = places.first().map_or(0, |p| p.0);
        jobs.push((first, Job::Unindexed(id, places)));
    }
    for span in spans(chunks, limit, |pack| *index.pack_id(pack)) {
        let first = span
            .places
            .iter()
            .flat_map(|p| p.first())
            .map(|p| p.0)
            .min();
        jobs.push((first.unwrap_or(0), Job::Span(span)));
    }
    jobs.sort_by_key(|(first, _)| *first);
    Ok(jobs.into_iter().map(|(_, job)| job).collect())
}

/// Groups chunks sorted by pack and offset into spans (`repo::spans`).
fn spans(
    chunks: Vec<(ChunkId, Location, Places)>,
    limit: u64,
    pack_id: impl Fn(u32) -> PackId,
) -> Vec<Span> {
    let cuts = crate::repo::spans(chunks.iter().map(|(_, loc, _)| loc), limit);
    let mut chunks = chunks.into_iter();
    cuts.into_iter()
        .map(|cut| {
            let (ids, places): (Vec<_>, Vec<_>) = chunks
                .by_ref()
                .take(cut.len())
                .map(|(id, loc, places)| ((id, loc), places))
                .unzip();
            let pack = ids.first().map_or(0, |(_, loc)| loc.pack);
            Span {
                pack: pack_id(pack),
                chunks: ids,
                places,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoded;

    fn chunk(n: u8, pack: u32, offset: u64, len: u32) -> (ChunkId, Location, Places) {
        let loc = Location {
            pack,
            encoded: Encoded::Raw,
            offset,
            stored_len: len,
            plain_len: len,
            crc: 0,
        };
        (ChunkId([n; 32]), loc, Places::new())
    }

    fn shapes(chunks: Vec<(ChunkId, Location, Places)>, limit: u64) -> Vec<Vec<u64>> {
        let spans = spans(chunks, limit, |n| PackId::from_bytes([n as u8; 32]));
        spans
            .iter()
            .map(|s| s.chunks.iter().map(|(_, loc)| loc.offset).collect())
            .collect()
    }

    #[test]
    fn neighbours_of_one_pack_share_a_read_up_to_the_limit() {
        let mb = 1 << 20;
        let chunks = (0..5)
            .map(|i| chunk(i, 0, u64::from(i) * mb, mb as u32))
            .collect();
        assert_eq!(
            shapes(chunks, 2 * mb),
            vec![vec![0, mb], vec![2 * mb, 3 * mb], vec![4 * mb]]
        );
    }

    #[test]
    fn another_pack_or_a_wide_gap_starts_a_new_read() {
        let mb = 1 << 20;
        let chunks = vec![
            chunk(1, 0, 0, 1000),
            chunk(2, 0, 1000 + mb, 1000),
            chunk(3, 0, 2000 + 2 * mb + 1, 1000),
            chunk(4, 1, 3000 + 2 * mb + 1, 1000),
        ];
        assert_eq!(
            shapes(chunks, 64 * mb),
            vec![
                vec![0, 1000 + mb],
                vec![2000 + 2 * mb + 1],
                vec![3000 + 2 * mb + 1]
            ]
        );
    }

    #[test]
    fn a_limit_of_zero_reads_every_chunk_on_its_own() {
        let chunks = (0..3)
            .map(|i| chunk(i, 0, u64::from(i) * 100, 100))
            .collect();
        assert_eq!(shapes(chunks, 0), vec![vec![0], vec![100], vec![200]]);
    }
}
