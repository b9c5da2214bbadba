//! Pure functions on bytes: how a chunk is named, fingerprinted, compressed
//! and checksummed. Nothing here touches a file.
//!
//! Each of "how an id is made" and "how a blob is sealed" lives behind one
//! function, so that keyed ids and encryption can later replace them in one
//! place.

mod compress;
mod hash;

pub use compress::{Compression, Encoded, Stored, decode, encode};
pub use hash::{ChunkId, crc32, fingerprint, hex, is_zero};
