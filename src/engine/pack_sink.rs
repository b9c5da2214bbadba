//! Storing checked chunks into new packs, for commands that move chunks
//! rather than read a source (copy, prune, repair): compress with the
//! repository's setting and seal when it is encrypted (or take blobs as
//! they are stored), append, and close a pack when it is full. Each
//! closed pack is durable before it is handed back, so the caller decides
//! when an index names it.

use crate::codec::{self, ChunkId, Compression, Encoded, Scratch, Sealing};
use crate::error::{Error, Result};
use crate::repo::PackId;
use crate::repo::backend::Backend;
use crate::repo::pack::{PackEntry, PackWriter};

pub struct PackSink<'a> {
    backend: &'a dyn Backend,
    sealing: Sealing,
    compression: Compression,
    open: Option<PackWriter>,
    scratch: Scratch,
    /// Bytes stored (after compression) so far.
    pub stored_bytes: u64,
}

/// A pack that is durable under its final name, and what it holds.
pub type ClosedPack = (PackId, Vec<PackEntry>);

impl<'a> PackSink<'a> {
    /// A sink into the repository of `backend`, which `sealing` and
    /// `compression` describe.
    pub fn new(
        backend: &'a dyn Backend,
        sealing: &Sealing,
        compression: Compression,
    ) -> PackSink<'a> {
        PackSink {
            backend,
            sealing: sealing.clone(),
            compression,
            open: None,
            scratch: Scratch::default(),
            stored_bytes: 0,
        }
    }

    /// Appends a chunk whose `id` the caller checked; returns the pack it
    /// closed, if this chunk filled one.
    pub fn add(&mut self, id: ChunkId, plain: &[u8]) -> Result<Option<ClosedPack>> {
        let blob = codec::store(
            &self.sealing,
            self.compression,
            &id,
            plain,
            &mut self.scratch,
        )?;
        let bytes = blob.bytes(plain, &self.scratch);
        let writer = open_writer(&mut self.open, self.backend, &self.sealing)?;
        writer.add(id, blob.how, bytes, plain.len() as u32)?;
        self.stored_bytes += bytes.len() as u64;
        self.close_if_full()
    }

    /// Appends a blob exactly as another repository with the same key
    /// stored it (checked by the caller); a delta's `base` must be stored
    /// whole in this repository.
    pub fn add_stored(
        &mut self,
        id: ChunkId,
        (how, base): (Encoded, Option<ChunkId>),
        stored: &[u8],
        plain_len: u32,
    ) -> Result<Option<ClosedPack>> {
        let writer = open_writer(&mut self.open, self.backend, &self.sealing)?;
        match (how.is_delta(), base) {
            (false, _) => writer.add(id, how, stored, plain_len)?,
            (true, Some(base)) => writer.add_delta(id, how, stored, plain_len, base)?,
            (true, None) => {
                return Err(Error::internal(format!(
                    "delta {id} moved without its base"
                )));
            }
        };
        self.stored_bytes += stored.len() as u64;
        self.close_if_full()
    }

    fn close_if_full(&mut self) -> Result<Option<ClosedPack>> {
        match &self.open {
            Some(w) if w.len() >= crate::repo::pack::target_for(self.backend) => self.close(),
            _ => Ok(None),
        }
    }

    /// Closes the open pack, if it holds anything.
    pub fn close(&mut self) -> Result<Option<ClosedPack>> {
        match self.open.take() {
            Some(w) => w.finish().map(Some),
            None => Ok(None),
        }
    }
}

/// The open pack writer, created when there is none.
fn open_writer<'w>(
    open: &'w mut Option<PackWriter>,
    backend: &dyn Backend,
    sealing: &Sealing,
) -> Result<&'w mut PackWriter> {
    match open {
        Some(w) => Ok(w),
        None => Ok(open.insert(PackWriter::create(backend, sealing)?)),
    }
}
