//! Reading chunks back out of packs: locate, read, decode, and check the
//! BLAKE3 before anyone uses a byte. Used by restore and verify.

use std::path::Path;

use crate::codec::{self, ChunkId, Encoded};
use crate::error::{Error, ErrorKind, Result};
use crate::os::AlignedBuf;
use crate::repo::backend::{Backend, ReadAt};
use crate::repo::index::Location;
use crate::repo::{RawId, pack};

/// Reads chunks out of packs, keeping recently used packs open.
pub struct ChunkReader<'a> {
    backend: &'a dyn Backend,
    pool: BufPool,
    open: Vec<(RawId, Box<dyn ReadAt>)>,
    stored: Vec<u8>,
    always_crc: bool,
}

/// A chunk's checked plain bytes, in a page-aligned buffer (so it can go to
/// direct I/O) that returns to its pool when dropped.
pub struct PlainChunk(PooledBuf);

impl std::ops::Deref for PlainChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Page-aligned buffers for decoded chunks, reused across chunks and
/// threads: fresh memory is costly to fault in, and aligned buffers can go
/// to direct I/O.
#[derive(Clone)]
pub struct BufPool {
    give: crossbeam_channel::Sender<AlignedBuf>,
    take: crossbeam_channel::Receiver<AlignedBuf>,
    size: usize,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> BufPool {
        let (give, take) = crossbeam_channel::bounded(keep);
        BufPool { give, take, size }
    }

    fn get(&self) -> Result<PooledBuf> {
        let buf = match self.take.try_recv() {
            Ok(buf) => buf,
            Err(_) => AlignedBuf::new(self.size)
                .map_err(|e| Error::io("allocate", Path::new("a chunk buffer"), e))?,
        };
        Ok(PooledBuf {
            buf: Some(buf),
            home: self.give.clone(),
        })
    }
}

pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    home: crossbeam_channel::Sender<AlignedBuf>,
}

impl PooledBuf {
    fn reuse_as(&mut self, len: usize) -> &mut [u8] {
        match self.buf.as_mut() {
            Some(buf) => buf.reuse_as(len),
            None => &mut [],
        }
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // A full pool just frees the buffer.
            let _ = self.home.try_send(buf);
        }
    }
}

const OPEN_PACKS: usize = 8;

impl<'a> ChunkReader<'a> {
    /// A reader whose decoded chunks come from `pool`.
    pub fn new(backend: &'a dyn Backend, pool: BufPool) -> ChunkReader<'a> {
        ChunkReader {
            backend,
            pool,
            open: Vec::new(),
            stored: Vec::new(),
            always_crc: false,
        }
    }

    /// Also checks every chunk's crc32 (verify does: it checks the recorded
    /// checksums too, not only the data).
    pub fn checking_crc(mut self) -> ChunkReader<'a> {
        self.always_crc = true;
        self
    }

    /// Reads chunk `id`, decodes it and checks its BLAKE3; returns its plain
    /// bytes. Any mismatch, and any failure to read the pack, is `Corrupt`
    /// naming the pack and offset. The BLAKE3 check catches every change,
    /// so the crc32 is only computed when it fails (or with
    /// `checking_crc`), to tell storage damage (crc32 fails too) from a
    /// wrong index.
    pub fn read(&mut self, id: &ChunkId, pack: &RawId, loc: &Location) -> Result<PlainChunk> {
        let name = pack::pack_name(pack);
        let what = format!(
            "chunk {id} in pack {} at offset {}",
            self.backend.describe(&name),
            loc.offset
        );
        let plain_len = loc.plain_len as usize;
        if plain_len > self.pool.size || loc.stored_len as usize > self.pool.size.saturating_mul(2)
        {
            return Err(Error::corrupt(format!(
                "{what} claims {} stored / {plain_len} plain bytes, more than a chunk can be",
                loc.stored_len
            )));
        }
        let mut plain = self.pool.get()?;
        let raw = loc.encoded == Encoded::Raw && loc.stored_len == loc.plain_len;
        // A raw chunk is read straight into its (aligned) plain buffer.
        let mut stored = std::mem::take(&mut self.stored);
        let read = if raw {
            self.read_stored(pack, &name, loc, plain.reuse_as(plain_len))
        } else {
            stored.resize(loc.stored_len as usize, 0);
            self.read_stored(pack, &name, loc, &mut stored)
        };
        let always_crc = self.always_crc;
        let check = |stored: &[u8], plain: Option<&[u8]>, decoded: Result<()>| -> Result<()> {
            let damaged = |why: &str| {
                if codec::crc32(stored) != loc.crc {
                    Error::corrupt(format!(
                        "{what} fails its crc32: the stored bytes are damaged"
                    ))
                } else {
                    Error::corrupt(format!("{what} {why}"))
                }
            };
            if always_crc && codec::crc32(stored) != loc.crc {
                return Err(damaged("fails its crc32"));
            }
            decoded.map_err(|e| damaged(e.message()))?;
            if ChunkId::of(plain.unwrap_or(stored)) != *id {
                return Err(damaged("does not match its BLAKE3 id"));
            }
            Ok(())
        };
        let result = read.map_err(|e| e.context(&what)).and_then(|()| {
            if raw {
                check(&plain, None, Ok(()))
            } else {
                let decoded = codec::decode(loc.encoded, &stored, plain.reuse_as(plain_len));
                check(&stored, Some(&plain), decoded)
            }
        });
        self.stored = stored;
        result.map(|()| PlainChunk(plain))
    }

    /// Reads the stored bytes of a chunk; a pack that ends early or cannot
    /// be read makes the chunk damaged (so a restore can go on without it).
    fn read_stored(
        &mut self,
        pack: &RawId,
        name: &str,
        loc: &Location,
        out: &mut [u8],
    ) -> Result<()> {
        let file = self.pack_file(pack, name)?;
        let end = loc.offset.checked_add(out.len() as u64);
        if end.is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "it lies beyond the end of the pack ({} bytes): the pack was truncated",
                file.len()
            )));
        }
        file.read_exact_at(out, loc.offset).map_err(|e| {
            if e.kind() == ErrorKind::Corrupt {
                e
            } else {
                Error::corrupt(format!("it cannot be read: {e}"))
            }
        })
    }

    fn pack_file(&mut self, pack: &RawId, name: &str) -> Result<&dyn ReadAt> {
        if let Some(pos) = self.open.iter().position(|(id, _)| id == pack) {
            let entry = self.open.remove(pos);
            self.open.push(entry);
        } else {
            let file = self.backend.open(name).map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::corrupt(format!("pack {} is missing", self.backend.describe(name)))
                } else {
                    e
                }
            })?;
            if self.open.len() >= OPEN_PACKS {
                self.open.remove(0);
            }
            self.open.push((*pack, file));
        }
        match self.open.last() {
            Some((_, file)) => Ok(file.as_ref()),
            None => Err(Error::new(
                ErrorKind::Io,
                "internal error: pack cache is empty",
            )),
        }
    }
}
