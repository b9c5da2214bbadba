//! Sub-chunk deltas: a changed chunk stored as the 4 KiB pages in which it
//! differs from a base chunk (the parent snapshot's chunk at the same
//! position), when that is much smaller than the chunk.
//!
//! ```text
//! offset  size   field
//! 0       32     base chunk id
//! 32      4      pages in the chunk, p = ceil(chunk length / 4096)
//! 36      m      page mask, m = ceil(p / 8): bit i of byte i/8 set when
//!                page i is stored
//! 36+m    ...    the stored pages' bytes in page order (4096 each; the
//!                chunk's last page may be shorter)
//! ```
//!
//! This payload is what gets compressed and sealed like any chunk (see
//! `blob::store`); it is named by the id of the chunk it rebuilds, so maps,
//! dedup and checks speak chunk ids whatever the storage. Decoding checks
//! every length, and the caller checks the rebuilt chunk's id: a wrong
//! base, mask or page cannot pass.

use crate::codec::ChunkId;
use crate::error::{Error, Result};

pub const PAGE: usize = 4096;
const HEAD: usize = 36;

/// A delta is stored only when its pages hold at most this share of the
/// chunk (1/MAX_SHARE): reading it back costs a read of its base too.
const MAX_SHARE: usize = 2;

/// The largest payload a chunk of `chunk_size` bytes can have (every
/// page stored): what a reader accepts as a delta's length.
pub fn max_payload(chunk_size: u64) -> u64 {
    let pages = chunk_size.div_ceil(PAGE as u64);
    HEAD as u64 + pages.div_ceil(8) + chunk_size
}

fn page(i: usize, len: usize) -> std::ops::Range<usize> {
    i * PAGE..((i + 1) * PAGE).min(len)
}

/// Writes into `out` the delta that rebuilds `new` from `base` (chunk
/// `base_id`); false (and `out` unspecified) when the chunks differ in
/// length or in too many pages for a delta to pay.
pub fn encode(base_id: &ChunkId, base: &[u8], new: &[u8], out: &mut Vec<u8>) -> bool {
    if base.len() != new.len() || new.is_empty() {
        return false;
    }
    let pages = new.len().div_ceil(PAGE);
    let mask_len = pages.div_ceil(8);
    out.clear();
    out.extend_from_slice(&base_id.0);
    out.extend_from_slice(&(pages as u32).to_le_bytes());
    out.resize(HEAD + mask_len, 0);
    let limit = new.len() / MAX_SHARE;
    let mut stored = 0;
    for i in 0..pages {
        let range = page(i, new.len());
        if base[range.clone()] != new[range.clone()] {
            stored += range.len();
            if stored > limit {
                return false;
            }
            out[HEAD + i / 8] |= 1 << (i % 8);
            out.extend_from_slice(&new[range]);
        }
    }
    true
}

/// The base chunk a delta payload names; `None` when it is too short to
/// name one.
pub fn base_of(payload: &[u8]) -> Option<ChunkId> {
    let id: [u8; 32] = payload.get(..32)?.try_into().ok()?;
    Some(ChunkId(id))
}

/// Rebuilds a chunk from `base` and a delta payload into `out` (whose
/// length is the base's). Any inconsistency is `Corrupt`; never panics.
pub fn apply(payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<()> {
    let damaged = |why: String| Error::corrupt(format!("its delta is damaged: {why}"));
    if out.len() != base.len() || payload.len() < HEAD {
        return Err(damaged(format!(
            "{} bytes cannot rebuild a {}-byte chunk",
            payload.len(),
            base.len()
        )));
    }
    let pages = base.len().div_ceil(PAGE);
    let claimed = u32::from_le_bytes([payload[32], payload[33], payload[34], payload[35]]);
    if claimed as usize != pages {
        return Err(damaged(format!(
            "it is for a chunk of {claimed} pages, its base has {pages}"
        )));
    }
    let mask_len = pages.div_ceil(8);
    let Some(mask) = payload.get(HEAD..HEAD + mask_len) else {
        return Err(damaged("its page mask is cut short".into()));
    };
    let unused_bits = mask_len * 8 - pages;
    if unused_bits > 0 && mask[mask_len - 1] >> (8 - unused_bits) != 0 {
        return Err(damaged("its page mask marks pages past the chunk".into()));
    }
    out.copy_from_slice(base);
    let mut at = HEAD + mask_len;
    for i in (0..pages).filter(|i| mask[i / 8] & (1 << (i % 8)) != 0) {
        let range = page(i, base.len());
        let Some(bytes) = payload.get(at..at + range.len()) else {
            return Err(damaged("its pages are cut short".into()));
        };
        out[range.clone()].copy_from_slice(bytes);
        at += range.len();
    }
    if at != payload.len() {
        return Err(damaged(format!(
            "{} bytes follow its last page",
            payload.len() - at
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn deltas_rebuild_changed_pages_and_refuse_large_changes() {
        for len in [PAGE, 3 * PAGE + 100, 1 << 20] {
            let base = chunk(len, 1);
            let mut new = base.clone();
            new[0] ^= 1;
            new[len - 1] ^= 1;
            let id = ChunkId::of(&base);
            let mut payload = Vec::new();
            if len == PAGE {
                // One page of one: all of it changed, no delta.
                assert!(!encode(&id, &base, &new, &mut payload));
                continue;
            }
            assert!(encode(&id, &base, &new, &mut payload));
            assert_eq!(base_of(&payload), Some(id));
            assert!(payload.len() <= HEAD + len.div_ceil(PAGE).div_ceil(8) + 2 * PAGE);
            let mut out = vec![0; len];
            apply(&payload, &base, &mut out).unwrap();
            assert_eq!(out, new);
            assert!(!encode(&id, &base, &chunk(len, 2), &mut payload));
            assert!(!encode(&id, &base, &new[1..], &mut payload));
        }
    }

    #[test]
    fn damaged_deltas_are_errors_not_panics() {
        let len = 5 * PAGE + 7;
        let base = chunk(len, 1);
        let mut new = base.clone();
        new[len - 1] ^= 0xff;
        let mut payload = Vec::new();
        assert!(encode(&ChunkId::of(&base), &base, &new, &mut payload));
        let mut out = vec![0; len];
        for cut in 0..payload.len() {
            assert!(
                apply(&payload[..cut], &base, &mut out).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(apply(&longer, &base, &mut out).is_err());
        let mut past = payload.clone();
        past[HEAD] |= 0x80; // page 7 of a 6-page chunk
        assert!(apply(&past, &base, &mut out).is_err());
        assert!(apply(&payload, &base[..PAGE], &mut out[..PAGE]).is_err());
        for i in 0..payload.len() {
            let mut flipped = payload.clone();
            flipped[i] ^= 0x10;
            // Refused, or another chunk (the id check catches it), or a
            // flip in the base id (which the base's id check catches).
            if apply(&flipped, &base, &mut out).is_ok() {
                assert!(i < 32 || out != new, "flip at {i} rebuilt the chunk");
            }
        }
    }
}
