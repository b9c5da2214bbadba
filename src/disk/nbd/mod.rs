//! A client of the NBD protocol (the subset platter needs), over any
//! byte stream: a Unix socket to `qemu-nbd` in practice.
//!
//! It speaks the fixed newstyle handshake, asks for structured replies
//! (`NBD_OPT_STRUCTURED_REPLY`), at most one metadata context
//! (`NBD_OPT_SET_META_CONTEXT`, e.g. `qemu:dirty-bitmap:NAME`), and opens
//! the default export with `NBD_OPT_GO`, asking its block size limits.
//! Then it reads (`NBD_CMD_READ`: data, hole and error chunks), asks block
//! status over the whole export (`NBD_CMD_BLOCK_STATUS`), and says goodbye
//! (`NBD_CMD_DISC`). Requests go one at a time, no larger than the
//! server's maximum block size (32 MiB when it gives none).
//!
//! Nothing the server sends is trusted: every length is checked against
//! what was asked before anything is allocated or read into (a reply that
//! announces 4 GiB allocates nothing), replies must answer the request in
//! flight, cover exactly the bytes asked, and a block status reply must
//! move forward. Any violation is an error (`Corrupt`), never a panic.
//! The protocol is described in the NBD project's `doc/proto.md`.

use std::io::{Read, Write};

use crate::error::{Error, ErrorKind, Result};

#[cfg(test)]
mod tests;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const FLAG_C_FIXED_NEWSTYLE: u32 = 1;
const FLAG_C_NO_ZEROES: u32 = 2;

const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_BIT: u32 = 1 << 31;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const CMD_READ: u16 = 0;
const CMD_DISC: u16 = 2;
const CMD_BLOCK_STATUS: u16 = 7;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// The largest option reply read (an info, a context name, an error
/// message: all far smaller); a longer one is refused, not allocated.
const MAX_OPTION_REPLY: u32 = 64 * 1024;
/// The longest error message read from a structured error chunk (the
/// protocol's limit for strings).
const MAX_MESSAGE: usize = 4096;
/// Request size when the server gives no maximum (the protocol's default).
const DEFAULT_MAX_REQUEST: u32 = 32 << 20;
/// Data chunks of one read reply at most: a server that splits a read
/// into more pieces than this is refused (bounds the bookkeeping).
const MAX_READ_PIECES: usize = 4096;
/// Dirty ranges are widened to this granularity: bounds how many a hostile
/// server can make (one per 8 KiB of export at most) and matches the pages
/// backups read.
pub const STATUS_GRANULE: u64 = 4096;

/// An open NBD export.
pub struct Client<S: Read + Write> {
    stream: S,
    size: u64,
    /// Largest request length, and the alignment requests need.
    max_request: u32,
    min_block: u32,
    /// The context id of the metadata context asked for, once agreed.
    context: Option<u32>,
    cookie: u64,
    /// Set once the stream is out of step with the protocol: no more
    /// requests are sent.
    broken: bool,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("the NBD server broke the protocol: {what}"))
        .hint("this is a bug of the NBD server (qemu-nbd) or something else answered on its socket")
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("NBD: {what}: {e}"))
}

impl<S: Read + Write> Client<S> {
    /// Negotiates with the server on `stream`: structured replies, the
    /// metadata context `meta` when given (its absence from the server's
    /// answer is an error), and the default export.
    pub fn handshake(mut stream: S, meta: Option<&str>) -> Result<Client<S>> {
        let magic = read_u64(&mut stream, "read the greeting")?;
        let opt = read_u64(&mut stream, "read the greeting")?;
        if magic != NBDMAGIC || opt != IHAVEOPT {
            return Err(bad(format!(
                "greeting {magic:#x} {opt:#x} is not the fixed newstyle one"
            )));
        }
        let flags = read_u16(&mut stream, "read the handshake flags")?;
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(bad(
                "the server does not speak the fixed newstyle handshake",
            ));
        }
        let client_flags =
            FLAG_C_FIXED_NEWSTYLE | (u32::from(flags & FLAG_NO_ZEROES) & FLAG_C_NO_ZEROES);
        stream
            .write_all(&client_flags.to_be_bytes())
            .map_err(|e| io("send the client flags", e))?;
        let mut client = Client {
            stream,
            size: 0,
            max_request: DEFAULT_MAX_REQUEST,
            min_block: 1,
            context: None,
            cookie: 0,
            broken: false,
        };
        client.structured_replies()?;
        if let Some(name) = meta {
            client.set_meta_context(name)?;
        }
        client.go()?;
        Ok(client)
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The largest request the client sends.
    pub fn max_request(&self) -> u32 {
        self.max_request
    }

    fn send_option(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| Error::internal("NBD option too long"))?;
        let mut msg = Vec::with_capacity(16 + data.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(data);
        self.stream
            .write_all(&msg)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io("send an option", e))
    }

    /// One option reply to `option`: (reply type, data).
    fn option_reply(&mut self, option: u32) -> Result<(u32, Vec<u8>)> {
        let magic = read_u64(&mut self.stream, "read an option reply")?;
        let answered = read_u32(&mut self.stream, "read an option reply")?;
        let kind = read_u32(&mut self.stream, "read an option reply")?;
        let len = read_u32(&mut self.stream, "read an option reply")?;
        if magic != OPT_REPLY_MAGIC {
            return Err(bad(format!("option reply magic {magic:#x}")));
        }
        if answered != option {
            return Err(bad(format!(
                "a reply to option {answered} came for option {option}"
            )));
        }
        if len > MAX_OPTION_REPLY {
            return Err(bad(format!(
                "an option reply of {len} bytes (at most {MAX_OPTION_REPLY} are read)"
            )));
        }
        let mut data = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut data)
            .map_err(|e| io("read an option reply", e))?;
        Ok((kind, data))
    }

    fn refused(option: &str, kind: u32, data: &[u8]) -> Error {
        let text = String::from_utf8_lossy(data);
        Error::unsupported(format!(
            "the NBD server refused {option} (error {:#x}{}{})",
            kind,
            if text.is_empty() { "" } else { ": " },
            text.chars().take(200).collect::<String>()
        ))
    }

    fn structured_replies(&mut self) -> Result<()> {
        self.send_option(OPT_STRUCTURED_REPLY, &[])?;
        let (kind, data) = self.option_reply(OPT_STRUCTURED_REPLY)?;
        match kind {
            REP_ACK => Ok(()),
            k if k & REP_ERR_BIT != 0 => Err(Self::refused("structured replies", k, &data)),
            k => Err(bad(format!(
                "reply type {k} to the structured reply option"
            ))),
        }
    }

    fn set_meta_context(&mut self, name: &str) -> Result<()> {
        let mut data = Vec::new();
        data.extend_from_slice(&0u32.to_be_bytes()); // default export ""
        data.extend_from_slice(&1u32.to_be_bytes());
        let len =
            u32::try_from(name.len()).map_err(|_| Error::internal("context name too long"))?;
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(name.as_bytes());
        self.send_option(OPT_SET_META_CONTEXT, &data)?;
        loop {
            let (kind, data) = self.option_reply(OPT_SET_META_CONTEXT)?;
            match kind {
                REP_META_CONTEXT => {
                    let (id, got) = data
                        .split_first_chunk::<4>()
                        .ok_or_else(|| bad("a metadata context reply shorter than its id"))?;
                    if got != name.as_bytes() {
                        return Err(bad(format!(
                            "context {:?} came for the one asked, {name:?}",
                            String::from_utf8_lossy(got)
                        )));
                    }
                    if self.context.is_some() {
                        return Err(bad("one metadata context was asked, two came"));
                    }
                    self.context = Some(u32::from_be_bytes(*id));
                }
                REP_ACK => break,
                k if k & REP_ERR_BIT != 0 => {
                    return Err(Self::refused("the metadata context", k, &data));
                }
                k => {
                    return Err(bad(format!(
                        "reply type {k} to the metadata context option"
                    )));
                }
            }
        }
        if self.context.is_none() {
            return Err(Error::not_found(format!(
                "the NBD server does not have the metadata context {name:?}"
            )));
        }
        Ok(())
    }

    fn go(&mut self) -> Result<()> {
        let mut data = Vec::new();
        data.extend_from_slice(&0u32.to_be_bytes()); // default export ""
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        self.send_option(OPT_GO, &data)?;
        let mut export = false;
        loop {
            let (kind, data) = self.option_reply(OPT_GO)?;
            match kind {
                REP_INFO => {
                    let (info, rest) = data
                        .split_first_chunk::<2>()
                        .ok_or_else(|| bad("an info reply shorter than its type"))?;
                    match u16::from_be_bytes(*info) {
                        INFO_EXPORT => {
                            let rest: &[u8; 10] = rest
                                .try_into()
                                .map_err(|_| bad("an export info of the wrong length"))?;
                            let mut size = [0u8; 8];
                            size.copy_from_slice(&rest[..8]);
                            self.size = u64::from_be_bytes(size);
                            export = true;
                        }
                        INFO_BLOCK_SIZE => {
                            let rest: &[u8; 12] = rest
                                .try_into()
                                .map_err(|_| bad("a block size info of the wrong length"))?;
                            let word = |i: usize| {
                                u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]])
                            };
                            let (min, max) = (word(0), word(8));
                            if !min.is_power_of_two() || min > 64 * 1024 {
                                return Err(bad(format!("minimum block size {min}")));
                            }
                            if max < min {
                                return Err(bad(format!(
                                    "maximum block size {max} below the minimum {min}"
                                )));
                            }
                            self.min_block = min;
                            // Whole minimum blocks, and no more than the default.
                            self.max_request = max.min(DEFAULT_MAX_REQUEST) / min * min;
                        }
                        _ => {} // other infos may come unasked
                    }
                }
                REP_ACK => break,
                k if k & REP_ERR_BIT != 0 => {
                    return Err(Self::refused("to open the export", k, &data));
                }
                k => return Err(bad(format!("reply type {k} to the go option"))),
            }
        }
        if !export {
            return Err(bad("the export was opened without saying its size"));
        }
        Ok(())
    }

    fn request(&mut self, kind: u16, offset: u64, len: u32) -> Result<u64> {
        if self.broken {
            return Err(Error::new(
                ErrorKind::Io,
                "NBD: the connection is out of step after an earlier error",
            ));
        }
        self.cookie = self.cookie.wrapping_add(1);
        let mut msg = [0u8; 28];
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg[6..8].copy_from_slice(&kind.to_be_bytes());
        msg[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        msg[16..24].copy_from_slice(&offset.to_be_bytes());
        msg[24..28].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&msg)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io("send a request", e))?;
        Ok(self.cookie)
    }

    /// Checks a request of `len` bytes at `offset` against the export.
    fn check_span(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::internal(format!(
                "NBD request [{offset}, +{len}) past the export's {} bytes",
                self.size
            )));
        }
        Ok(())
    }

    /// Fills `buf` with the export's bytes from `offset`.
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_span(offset, buf.len() as u64)?;
        let step = self.max_request as usize;
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(step);
            let piece = &mut buf[done..done + n];
            let at = offset + done as u64;
            let result = self.read_one(piece, at);
            if let Err(e) = result {
                return Err(e.context(format!("reading {n} bytes at offset {at} over NBD")));
            }
            done += n;
        }
        Ok(())
    }

    fn read_one(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = u32::try_from(buf.len()).map_err(|_| Error::internal("NBD read too long"))?;
        let cookie = self.request(CMD_READ, offset, len)?;
        match self.read_reply(buf, offset, cookie) {
            Ok(answer) => answer,
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// The reply to a read: data and holes fill `buf`, which they must
    /// cover exactly once; an error chunk is the read's error (the inner
    /// one: the connection stays in step), the outer is a broken stream.
    fn read_reply(&mut self, buf: &mut [u8], offset: u64, cookie: u64) -> Result<Result<()>> {
        let want = buf.len() as u64;
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut failure: Option<Error> = None;
        loop {
            let magic = read_u32(&mut self.stream, "read a reply")?;
            if magic == SIMPLE_REPLY_MAGIC {
                let error = read_u32(&mut self.stream, "read a reply")?;
                let got = read_u64(&mut self.stream, "read a reply")?;
                if got != cookie {
                    return Err(bad(format!("a reply for request {got}, not {cookie}")));
                }
                if !covered.is_empty() {
                    return Err(bad("a simple reply after structured chunks"));
                }
                if error != 0 {
                    return Ok(Err(server_error(error, "", offset)));
                }
                self.stream
                    .read_exact(buf)
                    .map_err(|e| io("read data", e))?;
                return Ok(Ok(()));
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(bad(format!("reply magic {magic:#x}")));
            }
            let flags = read_u16(&mut self.stream, "read a reply chunk")?;
            let kind = read_u16(&mut self.stream, "read a reply chunk")?;
            let got = read_u64(&mut self.stream, "read a reply chunk")?;
            let len = read_u32(&mut self.stream, "read a reply chunk")?;
            if got != cookie {
                return Err(bad(format!(
                    "a reply chunk for request {got}, not {cookie}"
                )));
            }
            match kind {
                REPLY_TYPE_NONE => {
                    if len != 0 {
                        return Err(bad("a none chunk with a payload"));
                    }
                }
                REPLY_TYPE_OFFSET_DATA => {
                    let at = read_u64(&mut self.stream, "read a data chunk")?;
                    let n = u64::from(len)
                        .checked_sub(8)
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(format!("a data chunk of {len} bytes")))?;
                    let start = piece_within(at, n, offset, want)?;
                    add_piece(&mut covered, start, start + n)?;
                    self.stream
                        .read_exact(&mut buf[start as usize..(start + n) as usize])
                        .map_err(|e| io("read data", e))?;
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    if len != 12 {
                        return Err(bad(format!("a hole chunk of {len} bytes")));
                    }
                    let at = read_u64(&mut self.stream, "read a hole chunk")?;
                    let n = u64::from(read_u32(&mut self.stream, "read a hole chunk")?);
                    if n == 0 {
                        return Err(bad("an empty hole"));
                    }
                    let start = piece_within(at, n, offset, want)?;
                    add_piece(&mut covered, start, start + n)?;
                    buf[start as usize..(start + n) as usize].fill(0);
                }
                k if k & REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(k, len)?;
                    failure.get_or_insert(e);
                }
                k => {
                    return Err(bad(format!("reply chunk type {k} to a read")));
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = failure {
            return Ok(Err(e));
        }
        let total: u64 = covered.iter().map(|(a, b)| b - a).sum();
        if total != want {
            return Err(bad(format!("a read of {want} bytes answered with {total}")));
        }
        Ok(Ok(()))
    }

    /// Reads an error chunk's payload (bounded) into an error.
    fn error_chunk(&mut self, kind: u16, len: u32) -> Result<Error> {
        let len = len as usize;
        if !(6..=6 + MAX_MESSAGE + 8).contains(&len) {
            return Err(bad(format!("an error chunk of {len} bytes")));
        }
        let mut data = vec![0u8; len];
        self.stream
            .read_exact(&mut data)
            .map_err(|e| io("read an error chunk", e))?;
        let code = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let msg_len = usize::from(u16::from_be_bytes([data[4], data[5]]));
        let message = data
            .get(6..6 + msg_len)
            .ok_or_else(|| bad("an error message longer than its chunk"))?;
        let tail = len - 6 - msg_len;
        let offset_given = kind == REPLY_TYPE_ERROR_BIT | 2;
        if (offset_given && tail != 8) || (!offset_given && tail != 0) {
            return Err(bad(format!(
                "an error chunk of type {kind} with {tail} extra bytes"
            )));
        }
        Ok(server_error(code, &String::from_utf8_lossy(message), 0))
    }

    /// The ranges of the whole export whose status has any bit of `mask`
    /// in the agreed metadata context (for a dirty bitmap: 1, dirty),
    /// widened to [`STATUS_GRANULE`], sorted and merged.
    pub fn block_status_all(&mut self, mask: u32) -> Result<Vec<(u64, u64)>> {
        let Some(context) = self.context else {
            return Err(Error::internal("block status without a metadata context"));
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0u64;
        while pos < self.size {
            let len = (self.size - pos).min(u64::from(self.max_request)) as u32;
            let cookie = self.request(CMD_BLOCK_STATUS, pos, len)?;
            let reached = match self.status_reply(cookie, context, pos, len, mask, &mut out) {
                Ok(r) => r,
                Err(e) => {
                    self.broken = true;
                    return Err(e.context(format!("asking block status at offset {pos}")));
                }
            };
            pos = reached;
        }
        Ok(out)
    }

    /// Reads one block status reply; returns how far it told.
    fn status_reply(
        &mut self,
        cookie: u64,
        context: u32,
        offset: u64,
        len: u32,
        mask: u32,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<u64> {
        let end = offset + u64::from(len);
        let mut reached: Option<u64> = None;
        let mut failure: Option<Error> = None;
        loop {
            let magic = read_u32(&mut self.stream, "read a reply")?;
            if magic == SIMPLE_REPLY_MAGIC {
                let error = read_u32(&mut self.stream, "read a reply")?;
                let got = read_u64(&mut self.stream, "read a reply")?;
                if got != cookie {
                    return Err(bad(format!("a reply for request {got}, not {cookie}")));
                }
                return Err(if error != 0 {
                    server_error(error, "", offset)
                } else {
                    bad("a simple reply to block status")
                });
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(bad(format!("reply magic {magic:#x}")));
            }
            let flags = read_u16(&mut self.stream, "read a reply chunk")?;
            let kind = read_u16(&mut self.stream, "read a reply chunk")?;
            let got = read_u64(&mut self.stream, "read a reply chunk")?;
            let chunk_len = read_u32(&mut self.stream, "read a reply chunk")?;
            if got != cookie {
                return Err(bad(format!(
                    "a reply chunk for request {got}, not {cookie}"
                )));
            }
            match kind {
                REPLY_TYPE_NONE if chunk_len == 0 => {}
                REPLY_TYPE_BLOCK_STATUS => {
                    if chunk_len < 12 || (chunk_len - 4) % 8 != 0 {
                        return Err(bad(format!("a block status chunk of {chunk_len} bytes")));
                    }
                    if reached.is_some() {
                        return Err(bad("two block status chunks for one context"));
                    }
                    let id = read_u32(&mut self.stream, "read block status")?;
                    if id != context {
                        return Err(bad(format!("block status of context {id}, not {context}")));
                    }
                    // Descriptors are read one by one: nothing is
                    // allocated for what the server announces.
                    let mut pos = offset;
                    for _ in 0..(chunk_len - 4) / 8 {
                        let n = read_u32(&mut self.stream, "read block status")?;
                        let status = read_u32(&mut self.stream, "read block status")?;
                        if n == 0 {
                            return Err(bad("an empty block status extent"));
                        }
                        if pos >= end {
                            return Err(bad("block status extents past the last one allowed"));
                        }
                        let next = (pos + u64::from(n)).min(end);
                        if status & mask != 0 {
                            push_widened(out, pos, next, self.size);
                        }
                        pos = next;
                    }
                    reached = Some(pos);
                }
                k if k & REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(k, chunk_len)?;
                    failure.get_or_insert(e);
                }
                k => return Err(bad(format!("reply chunk type {k} to block status"))),
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        reached.ok_or_else(|| bad("a block status reply without status"))
    }

    /// Says goodbye (`NBD_CMD_DISC`; the server answers nothing).
    pub fn disconnect(mut self) {
        if !self.broken {
            let _ = self.request(CMD_DISC, 0, 0);
        }
    }
}

/// Where a chunk of `n` bytes at export offset `at` starts in a request
/// for `want` bytes at `offset`; it must lie within.
fn piece_within(at: u64, n: u64, offset: u64, want: u64) -> Result<u64> {
    let start = at
        .checked_sub(offset)
        .filter(|s| s.checked_add(n).is_some_and(|end| end <= want))
        .ok_or_else(|| {
            bad(format!(
                "a chunk [{at}, +{n}) outside the read [{offset}, +{want})"
            ))
        })?;
    Ok(start)
}

/// Notes `[start, end)` as covered; overlapping an earlier piece, or more
/// pieces than [`MAX_READ_PIECES`], is an error.
fn add_piece(covered: &mut Vec<(u64, u64)>, start: u64, end: u64) -> Result<()> {
    let i = covered.partition_point(|&(a, _)| a < start);
    if covered.get(i).is_some_and(|&(a, _)| a < end)
        || i.checked_sub(1)
            .and_then(|j| covered.get(j))
            .is_some_and(|&(_, b)| b > start)
    {
        return Err(bad(format!("read reply chunks overlap at {start}")));
    }
    // Merge with the neighbours it touches, so in-order replies stay one piece.
    let joins_before = i > 0 && covered[i - 1].1 == start;
    let joins_after = covered.get(i).is_some_and(|&(a, _)| a == end);
    match (joins_before, joins_after) {
        (true, true) => {
            covered[i - 1].1 = covered[i].1;
            covered.remove(i);
        }
        (true, false) => covered[i - 1].1 = end,
        (false, true) => covered[i].0 = start,
        (false, false) => {
            if covered.len() >= MAX_READ_PIECES {
                return Err(bad("a read reply in too many pieces"));
            }
            covered.insert(i, (start, end));
        }
    }
    Ok(())
}

/// Appends `[start, end)`, widened to [`STATUS_GRANULE`] (within `size`),
/// merging with the last range; ranges come in order.
fn push_widened(out: &mut Vec<(u64, u64)>, start: u64, end: u64, size: u64) {
    let start = start / STATUS_GRANULE * STATUS_GRANULE;
    let end = end
        .div_ceil(STATUS_GRANULE)
        .saturating_mul(STATUS_GRANULE)
        .min(size);
    match out.last_mut() {
        Some(last) if last.1 >= start => last.1 = last.1.max(end),
        _ => out.push((start, end)),
    }
}

fn server_error(code: u32, message: &str, offset: u64) -> Error {
    let errno = match code {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "error",
    };
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {}", message.chars().take(200).collect::<String>())
    };
    Error::new(
        ErrorKind::Io,
        format!("the NBD server failed a request near offset {offset} ({errno} {code}{detail})"),
    )
}

fn read_u64(s: &mut impl Read, what: &str) -> Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b).map_err(|e| io(what, e))?;
    Ok(u64::from_be_bytes(b))
}

fn read_u32(s: &mut impl Read, what: &str) -> Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b).map_err(|e| io(what, e))?;
    Ok(u32::from_be_bytes(b))
}

fn read_u16(s: &mut impl Read, what: &str) -> Result<u16> {
    let mut b = [0u8; 2];
    s.read_exact(&mut b).map_err(|e| io(what, e))?;
    Ok(u16::from_be_bytes(b))
}
