//! Storing checked chunks into new packs, for commands that move chunks
//! rather than read a source (copy, prune, repair): compress with the
//! repository's setting, append, and close a pack when it is full. Each
//! closed pack is durable before it is handed back, so the caller decides
//! when an index names it.

use crate::codec::{self, ChunkId, Compression};
use crate::engine::backup_pipeline::PACK_TARGET;
use crate::error::Result;
use crate::repo::RawId;
use crate::repo::backend::Backend;
use crate::repo::pack::{PackEntry, PackWriter};

pub struct PackSink<'a> {
    backend: &'a dyn Backend,
    compression: Compression,
    open: Option<PackWriter>,
    scratch: Vec<u8>,
    /// Bytes stored (after compression) so far.
    pub stored_bytes: u64,
}

/// A pack that is durable under its final name, and what it holds.
pub type ClosedPack = (RawId, Vec<PackEntry>);

impl<'a> PackSink<'a> {
    pub fn new(backend: &'a dyn Backend, compression: Compression) -> PackSink<'a> {
        PackSink {
            backend,
            compression,
            open: None,
            scratch: Vec::new(),
            stored_bytes: 0,
        }
    }

    /// Appends a chunk whose `id` the caller checked; returns the pack it
    /// closed, if this chunk filled one.
    pub fn add(&mut self, id: ChunkId, plain: &[u8]) -> Result<Option<ClosedPack>> {
        let stored = codec::encode(self.compression, plain, &mut self.scratch);
        let writer = match self.open.as_mut() {
            Some(w) => w,
            None => self.open.insert(PackWriter::create(self.backend)?),
        };
        let bytes = stored.bytes(plain, &self.scratch);
        writer.add(id, stored.how, bytes, plain.len() as u32)?;
        self.stored_bytes += bytes.len() as u64;
        if writer.len() >= PACK_TARGET {
            return self.close();
        }
        Ok(None)
    }

    /// Closes the open pack, if it holds anything.
    pub fn close(&mut self) -> Result<Option<ClosedPack>> {
        match self.open.take() {
            Some(w) => w.finish().map(Some),
            None => Ok(None),
        }
    }
}
