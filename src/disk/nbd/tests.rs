//! The client against scripted servers: honest ones, and hostile bytes
//! (lengths that announce gigabytes, replies out of range, cut or flipped
//! transcripts), which must give errors, never panics or huge allocations.

use std::io::{Cursor, Read, Write};

use super::*;

/// A stream whose reads come from a script and whose writes are kept.
struct Scripted {
    input: Cursor<Vec<u8>>,
    sent: Vec<u8>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn opt_reply(self, option: u32, kind: u32, data: &[u8]) -> Self {
        self.u64(OPT_REPLY_MAGIC)
            .u32(option)
            .u32(kind)
            .u32(data.len() as u32)
            .bytes(data)
    }
    /// Greeting and an agreed handshake: structured replies, the context
    /// `CONTEXT` (id 7) when `meta`, an export of `size` bytes with a
    /// maximum block size `max`.
    fn handshake(self, size: u64, max: u32, meta: bool) -> Self {
        let mut s = self
            .u64(NBDMAGIC)
            .u64(IHAVEOPT)
            .u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
            .opt_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]);
        if meta {
            let mut data = 7u32.to_be_bytes().to_vec();
            data.extend_from_slice(CONTEXT.as_bytes());
            s = s
                .opt_reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, &data)
                .opt_reply(OPT_SET_META_CONTEXT, REP_ACK, &[]);
        }
        let mut export = INFO_EXPORT.to_be_bytes().to_vec();
        export.extend_from_slice(&size.to_be_bytes());
        export.extend_from_slice(&3u16.to_be_bytes());
        let mut block = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [1u32, 4096, max] {
            block.extend_from_slice(&v.to_be_bytes());
        }
        s.opt_reply(OPT_GO, REP_INFO, &export)
            .opt_reply(OPT_GO, REP_INFO, &block)
            .opt_reply(OPT_GO, REP_ACK, &[])
    }
    fn chunk(self, flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Self {
        self.u32(STRUCTURED_REPLY_MAGIC)
            .u16(flags)
            .u16(kind)
            .u64(cookie)
            .u32(payload.len() as u32)
            .bytes(payload)
    }
    fn data(self, done: bool, cookie: u64, offset: u64, data: &[u8]) -> Self {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(data);
        self.chunk(u16::from(done), REPLY_TYPE_OFFSET_DATA, cookie, &p)
    }
    fn hole(self, done: bool, cookie: u64, offset: u64, len: u32) -> Self {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        self.chunk(u16::from(done), REPLY_TYPE_OFFSET_HOLE, cookie, &p)
    }
    fn status(self, cookie: u64, context: u32, extents: &[(u32, u32)]) -> Self {
        let mut p = context.to_be_bytes().to_vec();
        for (len, flags) in extents {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        self.chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, &p)
    }
    fn stream(self) -> Scripted {
        Scripted {
            input: Cursor::new(self.0),
            sent: Vec::new(),
        }
    }
}

const CONTEXT: &str = "qemu:dirty-bitmap:b";

/// Appends a server's reply to a script.
type Reply = Box<dyn Fn(Script) -> Script>;

fn connect(script: Script, meta: bool) -> Result<Client<Scripted>> {
    Client::handshake(script.stream(), meta.then_some(CONTEXT))
}

/// The (offset, length) of every request the client sent.
fn requests(sent: &[u8]) -> Vec<(u16, u64, u32)> {
    let magic = REQUEST_MAGIC.to_be_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 28 <= sent.len() {
        if sent[i..i + 4] == magic {
            let r = &sent[i..i + 28];
            out.push((
                u16::from_be_bytes([r[6], r[7]]),
                u64::from_be_bytes(r[16..24].try_into().unwrap()),
                u32::from_be_bytes(r[24..28].try_into().unwrap()),
            ));
            i += 28;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn a_read_is_assembled_from_data_and_hole_chunks_in_any_order() {
    let script = Script::default()
        .handshake(1 << 20, 1 << 20, false)
        .hole(false, 1, 4096 + 100, 50)
        .data(false, 1, 4096 + 150, &[7u8; 50])
        .data(true, 1, 4096, &[9u8; 100]);
    let mut client = connect(script, false).unwrap();
    assert_eq!(client.size(), 1 << 20);
    let mut buf = [1u8; 200];
    client.read(&mut buf, 4096).unwrap();
    assert_eq!(&buf[..100], &[9u8; 100][..]);
    assert_eq!(&buf[100..150], &[0u8; 50][..]);
    assert_eq!(&buf[150..], &[7u8; 50][..]);
}

#[test]
fn reads_larger_than_the_servers_maximum_are_split() {
    let max = 64 * 1024;
    let mut script = Script::default().handshake(1 << 20, max, false);
    for i in 0..3u64 {
        script = script.hole(true, i + 1, i * u64::from(max), max);
    }
    let mut client = connect(script, false).unwrap();
    let mut buf = vec![1u8; 3 * max as usize];
    client.read(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let sent = requests(&client.stream.sent);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|&(_, _, len)| len <= max), "{sent:?}");
}

#[test]
fn a_chunk_announcing_4_gib_is_refused_without_allocating_it() {
    // A data chunk, an option reply and an error chunk, each claiming
    // u32::MAX bytes: errors, and nothing of that size is allocated
    // (the test would abort or crawl if it were).
    let data = Script::default()
        .handshake(1 << 20, 1 << 20, false)
        .u32(STRUCTURED_REPLY_MAGIC)
        .u16(1)
        .u16(REPLY_TYPE_OFFSET_DATA)
        .u64(1)
        .u32(u32::MAX)
        .u64(0);
    let mut client = connect(data, false).unwrap();
    let mut buf = [0u8; 4096];
    let e = client.read(&mut buf, 0).unwrap_err();
    assert!(e.message().contains("outside the read"), "{}", e.message());

    let option = Script::default()
        .u64(NBDMAGIC)
        .u64(IHAVEOPT)
        .u16(FLAG_FIXED_NEWSTYLE)
        .u64(OPT_REPLY_MAGIC)
        .u32(OPT_STRUCTURED_REPLY)
        .u32(REP_ACK)
        .u32(u32::MAX);
    let e = connect(option, false).err().unwrap();
    assert!(e.message().contains("option reply of"), "{}", e.message());

    let error = Script::default()
        .handshake(1 << 20, 1 << 20, false)
        .u32(STRUCTURED_REPLY_MAGIC)
        .u16(1)
        .u16(REPLY_TYPE_ERROR_BIT | 1)
        .u64(1)
        .u32(u32::MAX);
    let mut client = connect(error, false).unwrap();
    assert!(client.read(&mut buf, 0).is_err());
}

#[test]
fn replies_that_do_not_answer_the_read_exactly_are_errors() {
    let cases: Vec<(&str, Reply)> = vec![
        ("short", Box::new(|s: Script| s.data(true, 1, 0, &[1; 100]))),
        (
            "overlap",
            Box::new(|s: Script| s.data(false, 1, 0, &[1; 150]).data(true, 1, 100, &[1; 100])),
        ),
        (
            "before",
            Box::new(|s: Script| s.data(true, 1, 0, &[1; 300])),
        ),
        (
            "wrong cookie",
            Box::new(|s: Script| s.data(true, 9, 0, &[1; 200])),
        ),
        ("empty hole", Box::new(|s: Script| s.hole(true, 1, 0, 0))),
        (
            "unknown type",
            Box::new(|s: Script| s.chunk(1, 77, 1, &[0; 8])),
        ),
        (
            "bad magic",
            Box::new(|s: Script| s.u32(0xdead_beef).bytes(&[0; 64])),
        ),
        (
            "cut",
            Box::new(|s: Script| s.u32(STRUCTURED_REPLY_MAGIC).u16(1)),
        ),
    ];
    for (name, reply) in cases {
        let script = reply(Script::default().handshake(1 << 20, 1 << 20, false));
        let mut client = connect(script, false).unwrap();
        let mut buf = [0u8; 200];
        assert!(client.read(&mut buf, 0).is_err(), "{name}");
        // Out of step: no further request is sent.
        let before = client.stream.sent.len();
        assert!(client.read(&mut buf, 0).is_err(), "{name}");
        assert_eq!(client.stream.sent.len(), before, "{name}");
    }
}

#[test]
fn an_error_chunk_fails_the_read_and_the_connection_goes_on() {
    let mut msg = 5u32.to_be_bytes().to_vec();
    msg.extend_from_slice(&4u16.to_be_bytes());
    msg.extend_from_slice(b"oops");
    let script = Script::default()
        .handshake(1 << 20, 1 << 20, false)
        .chunk(1, REPLY_TYPE_ERROR_BIT | 1, 1, &msg)
        .data(true, 2, 0, &[3; 16]);
    let mut client = connect(script, false).unwrap();
    let mut buf = [0u8; 16];
    let e = client.read(&mut buf, 0).unwrap_err();
    assert!(
        e.message().contains("EIO") && e.message().contains("oops"),
        "{}",
        e.message()
    );
    client.read(&mut buf, 0).unwrap();
    assert_eq!(buf, [3; 16]);
}

#[test]
fn block_status_walks_the_whole_export_within_the_maximum_request() {
    let max = 256 * 1024;
    let size = 600 * 1024;
    let script = Script::default()
        .handshake(size, max, true)
        // Less than asked: the client asks again from where it stopped.
        .status(1, 7, &[(100 * 1024, 0), (28 * 1024, 1)])
        // Past the request: clamped.
        .status(2, 7, &[(1 << 30, 1)])
        .status(3, 7, &[(10, 0), (1, 1), (size as u32, 0)]);
    let mut client = connect(script, true).unwrap();
    let dirty = client.block_status_all(1).unwrap();
    // 128K: 100K clean, 28K dirty; 128K..384K dirty; one dirty byte at
    // 384K+10, widened to its 4 KiB page.
    assert_eq!(
        dirty,
        vec![(100 * 1024, 384 * 1024), (384 * 1024, 388 * 1024)]
            .into_iter()
            .fold(Vec::<(u64, u64)>::new(), |mut v, r| {
                match v.last_mut() {
                    Some(l) if l.1 >= r.0 => l.1 = r.1,
                    _ => v.push(r),
                }
                v
            })
    );
    let sent = requests(&client.stream.sent);
    assert_eq!(
        sent,
        vec![
            (CMD_BLOCK_STATUS, 0, max),
            (CMD_BLOCK_STATUS, 128 * 1024, max),
            (CMD_BLOCK_STATUS, 384 * 1024, 216 * 1024)
        ]
    );
}

#[test]
fn block_status_that_does_not_move_forward_or_names_another_context_is_an_error() {
    let cases: Vec<(&str, Reply)> = vec![
        (
            "empty extent",
            Box::new(|s: Script| s.status(1, 7, &[(0, 1)])),
        ),
        (
            "other context",
            Box::new(|s: Script| s.status(1, 8, &[(4096, 1)])),
        ),
        (
            "extents after the end",
            Box::new(|s: Script| s.status(1, 7, &[(1 << 20, 1), (4096, 1)])),
        ),
        (
            "no status",
            Box::new(|s: Script| s.chunk(1, REPLY_TYPE_NONE, 1, &[])),
        ),
        (
            "odd length",
            Box::new(|s: Script| s.chunk(1, REPLY_TYPE_BLOCK_STATUS, 1, &[0; 9])),
        ),
    ];
    for (name, reply) in cases {
        let script = reply(Script::default().handshake(1 << 20, 1 << 20, true));
        let mut client = connect(script, true).unwrap();
        assert!(client.block_status_all(1).is_err(), "{name}");
    }
}

#[test]
fn a_server_without_the_asked_context_or_structured_replies_is_refused() {
    let no_context = Script::default()
        .u64(NBDMAGIC)
        .u64(IHAVEOPT)
        .u16(FLAG_FIXED_NEWSTYLE)
        .opt_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[])
        .opt_reply(OPT_SET_META_CONTEXT, REP_ACK, &[]);
    let e = connect(no_context, true).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let unsupported = Script::default()
        .u64(NBDMAGIC)
        .u64(IHAVEOPT)
        .u16(FLAG_FIXED_NEWSTYLE)
        .opt_reply(OPT_STRUCTURED_REPLY, REP_ERR_BIT | 1, b"no");
    let e = connect(unsupported, false).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn any_cut_or_flipped_byte_of_a_session_gives_an_error_not_a_panic() {
    let honest = Script::default()
        .handshake(1 << 20, 1 << 20, true)
        .data(false, 1, 0, &[5; 64])
        .hole(true, 1, 64, 64)
        .status(2, 7, &[(4096, 1), ((1 << 20) - 4096, 0)])
        .0;
    let session = |bytes: Vec<u8>| -> Result<()> {
        let mut client = Client::handshake(
            Scripted {
                input: Cursor::new(bytes),
                sent: Vec::new(),
            },
            Some(CONTEXT),
        )?;
        let mut buf = [0u8; 128];
        client.read(&mut buf, 0)?;
        client.block_status_all(1)?;
        Ok(())
    };
    session(honest.clone()).unwrap();
    for cut in 0..honest.len() {
        assert!(session(honest[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    for at in 0..honest.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = honest.clone();
            bytes[at] ^= flip;
            let _ = session(bytes);
        }
    }
}
