//! Pure functions on bytes: how a chunk is named, fingerprinted, compressed,
//! sealed and checksummed, and how a passphrase becomes a key. Nothing here
//! touches a file.
//!
//! "How an id is made" is `Sealing::chunk_id` and "how a blob is sealed"
//! is `blob::store`; everything that names or stores a chunk goes through
//! them.

mod blob;
mod compress;
pub mod delta;
mod hash;
pub mod kdf;
pub mod seal;

pub use blob::{Blob, Scratch, load, store};
pub use compress::{Compression, Encoded};
pub use hash::{ChunkId, crc32, fingerprint, hex, is_zero, unhex};
pub use seal::{MasterKey, Sealing};
