//! Reading chunks back out of packs: locate, read, open the seal (when
//! encrypted), decode, and check the id before anyone uses a byte. Used by
//! restore, verify, copy, prune and repair.

use crate::codec::{self, ChunkId, Encoded, Sealing};
use crate::error::{Error, ErrorKind, Result};
use crate::os::AlignedBuf;
use crate::repo::PackId;
use crate::repo::backend::{Backend, StoredFile};
use crate::repo::index::{Index, Location};

/// The pack and place `index` gives chunk `id`, or the error `missing`
/// makes.
fn locate<'i>(
    index: &'i Index,
    id: &ChunkId,
    missing: impl FnOnce() -> Error,
) -> Result<(&'i PackId, Location)> {
    let loc = index.get(id).ok_or_else(missing)?;
    Ok((index.pack_id(loc.pack), loc))
}

/// Reads chunks out of packs, keeping recently used packs open.
pub struct ChunkReader<'a> {
    backend: &'a dyn Backend,
    /// The repository's index: where chunks are, and deltas' bases.
    index: &'a Index,
    sealing: Sealing,
    pool: BufPool,
    open: Vec<(PackId, Box<dyn StoredFile>)>,
    stored: Vec<u8>,
    /// The bytes of the last span read (reused).
    span: Vec<u8>,
    /// The last delta payload decoded (reused).
    payload: Vec<u8>,
    thorough: bool,
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
            Err(_) => AlignedBuf::new(self.size).map_err(|e| {
                Error::new(
                    crate::ErrorKind::Io,
                    format!("cannot allocate a {}-byte chunk buffer: {e}", self.size),
                )
            })?,
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
    /// A reader of the repository in `backend` whose index is `index`;
    /// decoded chunks come from `pool`.
    pub fn new(
        backend: &'a dyn Backend,
        sealing: Sealing,
        pool: BufPool,
        index: &'a Index,
    ) -> ChunkReader<'a> {
        ChunkReader {
            backend,
            index,
            sealing,
            pool,
            open: Vec::new(),
            stored: Vec::new(),
            span: Vec::new(),
            payload: Vec::new(),
            thorough: false,
        }
    }

    /// Checks everything there is to check (verify does): every chunk's
    /// crc32 too, not only the data, and in an encrypted repository the id
    /// of every chunk whose seal opened.
    pub fn thorough(mut self) -> ChunkReader<'a> {
        self.thorough = true;
        self
    }

    /// Reads chunk `id`, opens and decodes it and checks it; returns its
    /// plain bytes. Any mismatch, and any failure to read the pack, is
    /// `Corrupt` naming the pack and offset. In a plain repository the
    /// check is the chunk's id, recomputed. In an encrypted one, a raw
    /// chunk's check is its seal: it opens only for the exact bytes sealed
    /// for this id with the repository's key, which only a backup that
    /// computed the id from those bytes does, so recomputing the id too
    /// (`thorough`) would only cost a second pass over every byte. An lz4
    /// chunk's id is recomputed: its seal covers the compressed bytes, not
    /// what decompressing them gives. Either catches every change, so the
    /// crc32 is only computed when they fail (or when `thorough`), to tell
    /// storage damage
    /// (crc32 fails too) from a wrong index or a tampered blob.
    ///
    /// A delta is rebuilt over its base (read where the index places it,
    /// which must be a whole chunk), and the rebuilt chunk's id is always
    /// recomputed.
    pub fn read(&mut self, id: &ChunkId, pack: &PackId, loc: &Location) -> Result<PlainChunk> {
        let mut stored = std::mem::take(&mut self.stored);
        let result = self.read_into(id, pack, loc, &mut stored, false);
        self.stored = stored;
        result
    }

    /// Like `read`, but also hands back the chunk's stored bytes, checked,
    /// for storing them elsewhere as they are.
    pub fn read_stored(&mut self, id: &ChunkId, pack: &PackId, loc: &Location) -> Result<Vec<u8>> {
        let mut stored = Vec::new();
        let plain = self.read_into(id, pack, loc, &mut stored, true)?;
        if stored.is_empty() {
            // An unsealed raw chunk was read straight into its plain buffer.
            stored.extend_from_slice(&plain);
        }
        Ok(stored)
    }

    /// Reads chunk `id` where the index places it (see `read`). A chunk
    /// the index lacks is the error `missing` makes: what that means
    /// depends on whose index it is, which only the caller knows.
    pub fn read_indexed(
        &mut self,
        id: &ChunkId,
        missing: impl FnOnce() -> Error,
    ) -> Result<PlainChunk> {
        let (pack, loc) = locate(self.index, id, missing)?;
        self.read(id, pack, &loc)
    }

    /// Like `read_indexed`, but as `read_stored`; also hands back where the
    /// index places the chunk.
    pub fn read_stored_indexed(
        &mut self,
        id: &ChunkId,
        missing: impl FnOnce() -> Error,
    ) -> Result<(Vec<u8>, Location)> {
        let (pack, loc) = locate(self.index, id, missing)?;
        Ok((self.read_stored(id, pack, &loc)?, loc))
    }

    /// Reads chunks `chunks` of `pack`, in the order of their offsets, with
    /// one read of the bytes from the first one's start to the last one's
    /// end (a store far away answers one large request much faster than
    /// many small ones), and gives `each` every chunk's index in `chunks`
    /// and what `read` would give for it; `each` says false to stop. When
    /// the one read fails, every chunk is read on its own, so a damaged or
    /// cut pack damages only the chunks it must.
    pub fn read_span(
        &mut self,
        pack: &PackId,
        chunks: &[(ChunkId, Location)],
        each: &mut dyn FnMut(usize, Result<PlainChunk>) -> bool,
    ) {
        let mut bytes = std::mem::take(&mut self.span);
        let start = match span_of(chunks) {
            // A lone chunk too, where a read costs a request (no HEAD).
            Some((start, len)) if chunks.len() > 1 || self.backend.read_span() > 0 => {
                let name = crate::repo::names::pack_name(pack);
                bytes.resize(len, 0);
                let read = self.backend.read_at(&name, &mut bytes, start);
                read.ok().map(|()| start)
            }
            _ => None,
        };
        for (i, (id, loc)) in chunks.iter().enumerate() {
            let chunk = match start {
                Some(start) => {
                    let at = (loc.offset - start) as usize;
                    let stored = bytes.get_mut(at..at + loc.stored_len as usize);
                    self.check_stored(id, pack, loc, stored.unwrap_or_default())
                }
                None => self.read(id, pack, loc),
            };
            if !each(i, chunk) {
                break;
            }
        }
        self.span = bytes;
    }

    /// The check of a chunk whose stored bytes are in `stored` (a part of
    /// a span read at once); see `read`.
    fn check_stored(
        &mut self,
        id: &ChunkId,
        pack: &PackId,
        loc: &Location,
        stored: &mut [u8],
    ) -> Result<PlainChunk> {
        let what = self.describe_chunk(id, pack, loc);
        if loc.encoded.is_delta() {
            self.checked_lengths(id, loc, &what)?;
            return self.rebuild(id, loc, &what, false, stored);
        }
        let mut plain = self.checked_buffer(id, loc, &what)?;
        if stored.len() != loc.stored_len as usize {
            return Err(Error::internal(format!("{what}: the span read misses it")));
        }
        let raw = self.is_raw(loc);
        if raw {
            plain
                .reuse_as(loc.plain_len as usize)
                .copy_from_slice(stored);
            self.check(id, loc, &what, raw, false, &mut [], plain)
        } else {
            self.check(id, loc, &what, raw, false, stored, plain)
        }
    }

    fn read_into(
        &mut self,
        id: &ChunkId,
        pack: &PackId,
        loc: &Location,
        stored: &mut Vec<u8>,
        keep: bool,
    ) -> Result<PlainChunk> {
        let name = crate::repo::names::pack_name(pack);
        let what = self.describe_chunk(id, pack, loc);
        if loc.encoded.is_delta() {
            self.checked_lengths(id, loc, &what)?;
            stored.resize(loc.stored_len as usize, 0);
            self.read_stored_bytes(pack, &name, loc.offset, stored)
                .map_err(|e| e.context(&what))?;
            return self.rebuild(id, loc, &what, keep, stored);
        }
        let mut plain = self.checked_buffer(id, loc, &what)?;
        // An unsealed raw chunk is read straight into its (aligned) plain
        // buffer, and then `stored` stays empty.
        let raw = self.is_raw(loc);
        let read = if raw {
            stored.clear();
            self.read_stored_bytes(
                pack,
                &name,
                loc.offset,
                plain.reuse_as(loc.plain_len as usize),
            )
        } else {
            // Every byte is overwritten by the read: a buffer reused at the
            // same length is not zero-filled again.
            stored.resize(loc.stored_len as usize, 0);
            self.read_stored_bytes(pack, &name, loc.offset, stored)
        };
        read.map_err(|e| e.context(&what))?;
        self.check(id, loc, &what, raw, keep, stored, plain)
    }

    /// The base chunk delta `id` names: its blob read and opened, not
    /// rebuilt (its base may be unknown yet: `rebuild-index` asks).
    pub fn delta_base(&mut self, id: &ChunkId, pack: &PackId, loc: &Location) -> Result<ChunkId> {
        let name = crate::repo::names::pack_name(pack);
        let what = self.describe_chunk(id, pack, loc);
        self.checked_lengths(id, loc, &what)?;
        let mut stored = vec![0; loc.stored_len as usize];
        self.read_stored_bytes(pack, &name, loc.offset, &mut stored)
            .map_err(|e| e.context(&what))?;
        let mut payload = vec![0; loc.plain_len as usize];
        codec::load(&self.sealing, id, loc.encoded, &mut stored, &mut payload)
            .map_err(|e| Error::corrupt(format!("{what}: {}", e.message())))?;
        codec::delta::base_of(&payload)
            .ok_or_else(|| Error::corrupt(format!("{what} is a delta too short to name its base")))
    }

    /// How errors name chunk `id` at `loc` in `pack`.
    fn describe_chunk(&self, id: &ChunkId, pack: &PackId, loc: &Location) -> String {
        let name = crate::repo::names::pack_name(pack);
        format!(
            "chunk {id} in pack {} at offset {}",
            self.backend.describe(&name),
            loc.offset
        )
    }

    /// A buffer for chunk `id`'s plain bytes, once its lengths are sane.
    fn checked_buffer(&self, id: &ChunkId, loc: &Location, what: &str) -> Result<PooledBuf> {
        self.checked_lengths(id, loc, what)?;
        self.pool.get()
    }

    fn checked_lengths(&self, id: &ChunkId, loc: &Location, what: &str) -> Result<()> {
        loc.entry(*id)
            .check_lengths(self.pool.size as u64, &self.sealing)
            .map_err(|why| Error::corrupt(format!("{what} {why}")))
    }

    /// Opens and decodes delta `id` from its stored bytes (left as they
    /// were with `keep`), reads its base, rebuilds the chunk and checks
    /// its id.
    fn rebuild(
        &mut self,
        id: &ChunkId,
        loc: &Location,
        what: &str,
        keep: bool,
        stored: &mut [u8],
    ) -> Result<PlainChunk> {
        let crc = codec::crc32(stored);
        let damaged = |why: &str| damage(what, why, crc == loc.crc);
        if self.thorough && crc != loc.crc {
            return Err(damaged("fails its crc32"));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(loc.plain_len as usize, 0);
        let mut kept = Vec::new();
        let source = self.openable(keep, stored, &mut kept);
        let rebuilt = codec::load(&self.sealing, id, loc.encoded, source, &mut payload)
            .map_err(|e| damaged(e.message()))
            .and_then(|()| self.apply(id, what, &payload, &damaged));
        self.payload = payload;
        rebuilt
    }

    /// Rebuilds delta `id` from `payload` over its base.
    fn apply(
        &mut self,
        id: &ChunkId,
        what: &str,
        payload: &[u8],
        damaged: &dyn Fn(&str) -> Error,
    ) -> Result<PlainChunk> {
        let base_id = codec::delta::base_of(payload)
            .ok_or_else(|| damaged("is a delta too short to name its base"))?;
        let index = self.index;
        // Prune, copy and verify go by the base the index names: a delta
        // that names another one is damage, not a second opinion.
        if let Some(indexed) = index.base_of(id)
            && indexed != base_id
        {
            return Err(Error::corrupt(format!(
                "{what} is a delta over chunk {base_id}, but the index names chunk {indexed} \
                 as its base: the index is damaged (`platter rebuild-index` reads each delta's \
                 base from the delta)"
            )));
        }
        let (base_pack, base_loc) = locate(index, &base_id, || {
            Error::corrupt(format!(
                "{what} is a delta over chunk {base_id}, which the index lacks"
            ))
        })?;
        if base_loc.encoded.is_delta() {
            return Err(Error::corrupt(format!(
                "{what} is a delta over chunk {base_id}, which is itself stored as a delta"
            )));
        }
        let base = self
            .read(&base_id, base_pack, &base_loc)
            .map_err(|e| e.context(format!("{what} is a delta over a damaged chunk")))?;
        let mut plain = self.pool.get()?;
        codec::delta::apply(payload, &base, plain.reuse_as(base.len()))
            .map_err(|e| damaged(e.message()))?;
        if self.sealing.chunk_id(&plain) != *id {
            return Err(damaged("does not match its id (rebuilt over its base)"));
        }
        Ok(PlainChunk(plain))
    }

    /// Whether the chunk's stored bytes are its plain bytes.
    fn is_raw(&self, loc: &Location) -> bool {
        loc.encoded == Encoded::Raw
            && loc.stored_len == loc.plain_len
            && !self.sealing.is_encrypted()
    }

    /// The stored bytes to open a seal in: `stored` itself, or with `keep`
    /// in an encrypted repository a copy in `kept` (opening a seal
    /// overwrites what it opens).
    fn openable<'s>(
        &self,
        keep: bool,
        stored: &'s mut [u8],
        kept: &'s mut Vec<u8>,
    ) -> &'s mut [u8] {
        if keep && self.sealing.is_encrypted() {
            kept.extend_from_slice(stored);
            kept
        } else {
            stored
        }
    }

    /// Opens and decodes the chunk (from `stored`, or already in `plain`
    /// when `raw`) and checks it; see `read`. With `keep`, `stored` is left
    /// as it was.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        id: &ChunkId,
        loc: &Location,
        what: &str,
        raw: bool,
        keep: bool,
        stored: &mut [u8],
        mut plain: PooledBuf,
    ) -> Result<PlainChunk> {
        let plain_len = loc.plain_len as usize;
        let stored_crc =
            |plain: &[u8], stored: &[u8]| codec::crc32(if raw { plain } else { stored });
        // Opening a seal in place changes the stored bytes: take their
        // crc32 first, in case the seal does not open.
        let in_place = !raw && !keep && self.sealing.is_encrypted() && loc.encoded == Encoded::Lz4;
        let early_crc = (self.thorough || in_place).then(|| stored_crc(&plain, stored));
        let damaged = |why: &str, crc: u32| damage(what, why, crc == loc.crc);
        if self.thorough && early_crc != Some(loc.crc) {
            return Err(damaged("fails its crc32", early_crc.unwrap_or(0)));
        }
        if !raw {
            let mut kept = Vec::new();
            let source = self.openable(keep, stored, &mut kept);
            let loaded = codec::load(
                &self.sealing,
                id,
                loc.encoded,
                source,
                plain.reuse_as(plain_len),
            );
            if let Err(e) = loaded {
                let crc = early_crc.unwrap_or_else(|| stored_crc(&plain, stored));
                return Err(damaged(e.message(), crc));
            }
        }
        let check_id = self.thorough || !self.sealing.is_encrypted() || loc.encoded != Encoded::Raw;
        if check_id && self.sealing.chunk_id(&plain) != *id {
            let crc = early_crc.unwrap_or_else(|| stored_crc(&plain, stored));
            return Err(damaged("does not match its id", crc));
        }
        Ok(PlainChunk(plain))
    }

    /// Reads the stored bytes of a chunk; a pack that ends early or cannot
    /// be read makes the chunk damaged (so a restore can go on without it).
    fn read_stored_bytes(
        &mut self,
        pack: &PackId,
        name: &str,
        offset: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let file = self.pack_file(pack, name)?;
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "it lies beyond the end of the pack ({} bytes): the pack was truncated",
                file.len()
            )));
        }
        file.read_exact_at(out, offset).map_err(|e| {
            // An unreachable store says nothing about the chunk.
            if e.kind() == ErrorKind::Corrupt || e.is_transient() {
                e
            } else {
                Error::corrupt(format!("it cannot be read: {e}"))
            }
        })
    }

    fn pack_file(&mut self, pack: &PackId, name: &str) -> Result<&dyn StoredFile> {
        if let Some(pos) = self.open.iter().position(|(id, _)| id == pack) {
            let entry = self.open.remove(pos);
            self.open.push(entry);
        } else {
            let file = self.backend.open(name).map_err(|e| {
                if e.kind() == ErrorKind::NotFound && !e.is_transient() {
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
            None => Err(Error::internal("pack cache is empty")),
        }
    }
}

/// The error for chunk `what` that failed `why`: storage damage when its
/// stored bytes fail their crc32 (`crc_ok` false), else `why` itself (a
/// wrong index, a tampered blob).
fn damage(what: &str, why: &str, crc_ok: bool) -> Error {
    if crc_ok {
        Error::corrupt(format!("{what} {why}"))
    } else {
        Error::corrupt(format!(
            "{what} fails its crc32: the stored bytes are damaged"
        ))
    }
}

/// The bytes of the spans being read at once, all readers together.
const SPAN_BUDGET: u64 = 64 << 20;

/// How far one read of `readers` at once may reach on `backend`: its
/// `read_span`, but the spans in flight share one budget, so more
/// connections mean smaller spans, not more memory.
pub fn span_limit(backend: &dyn Backend, readers: usize) -> u64 {
    backend.read_span().min(SPAN_BUDGET / readers.max(1) as u64)
}

/// A gap between two chunks of a pack that one read still spans: reading
/// it costs less than another request.
const GAP: u64 = 1 << 20;

/// Cuts chunks sorted by pack and offset into spans that one read covers
/// (see `read_span`): a span ends at another pack, at a gap wider than
/// [`GAP`], or where it would grow past `limit` bytes (0: every chunk on
/// its own). Returns the spans as ranges of positions in `locs`.
pub fn spans<'l>(
    locs: impl IntoIterator<Item = &'l Location>,
    limit: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut open: Option<(u32, u64, u64)> = None; // pack, start, end
    for (i, loc) in locs.into_iter().enumerate() {
        let end = loc.offset + u64::from(loc.stored_len);
        match (open, out.last_mut()) {
            (Some((pack, start, last_end)), Some(span))
                if pack == loc.pack
                    && loc.offset >= last_end
                    && loc.offset - last_end <= GAP
                    && end - start <= limit =>
            {
                span.end = i + 1;
                open = Some((pack, start, end));
            }
            _ => {
                out.push(i..i + 1);
                open = Some((loc.pack, loc.offset, end));
            }
        }
    }
    out
}

/// Where the span of `chunks` (sorted by offset) starts and how long it is;
/// `None` when the chunks are out of order or the span is too large to hold.
fn span_of(chunks: &[(ChunkId, Location)]) -> Option<(u64, usize)> {
    let start = chunks.first()?.1.offset;
    let mut end = start;
    for (_, loc) in chunks {
        if loc.offset < end {
            return None;
        }
        end = loc.offset.checked_add(u64::from(loc.stored_len))?;
    }
    let len = usize::try_from(end - start).ok()?;
    (len <= MAX_SPAN).then_some((start, len))
}

/// The largest span read at once (a backend asks for far less).
const MAX_SPAN: usize = 64 << 20;
