//! Whether a new chunk is stored as a delta, and over which base.

use super::{Slot, Store};
use crate::codec::{self, ChunkId};
use crate::error::Error;
use crate::repo::PlainChunk;

/// Writes into the slot's `delta` the chunk's delta over a base: the
/// parent snapshot's chunk at its position if it is stored whole, else the
/// base that chunk is a delta over (deltas never chain, so changes pile up
/// over one base until they pass half of the chunk, and the chunk is
/// stored whole again). The base must have the chunk's length and read
/// back intact; `parent_chunk` is the parent's chunk when the worker read
/// it already. Returns the base used, if any; counts what was read back
/// in `read_back`.
pub(super) fn over(
    parent: &ChunkId,
    parent_chunk: Option<PlainChunk>,
    slot: &mut Slot,
    store: &mut Store<'_>,
    read_back: &mut u64,
) -> Option<ChunkId> {
    // A chunk of one page differs in all of it: no delta can pay.
    if slot.plain.len() <= codec::delta::PAGE {
        return None;
    }
    let index = store.index;
    let base_id = index.base_of(parent).unwrap_or(*parent);
    let fits = (index.get(&base_id))
        .is_some_and(|loc| !loc.encoded.is_delta() && loc.plain_len as usize == slot.plain.len());
    if !fits {
        return None;
    }
    let base = match parent_chunk {
        Some(chunk) if base_id == *parent => chunk,
        _ => {
            // A base that does not read back intact is no base: the chunk
            // is stored whole (verify names the damage).
            let read =
                (store.repo).read_indexed(&base_id, || Error::internal("base left the index"));
            let chunk = read.ok()?;
            *read_back += chunk.len() as u64;
            chunk
        }
    };
    let made = codec::delta::encode(&base_id, &base, &slot.plain, &mut slot.delta);
    made.then_some(base_id)
}
