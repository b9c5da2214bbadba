//! Compression of stored chunks. lz4 is used only when it saves space: an
//! incompressible chunk is stored as it is, flagged so, and costs nothing to
//! decode.

use crate::error::{Error, Result};

/// The repository's compression setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
}

impl Compression {
    pub fn parse(s: &str) -> Result<Compression> {
        match s {
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            other => Err(Error::bad_input(format!(
                "unknown compression {other:?}: use \"lz4\" (the default) or \"none\""
            ))),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "no",
            Compression::Lz4 => "lz4",
        })
    }
}

/// How one stored blob is encoded; recorded per blob in the pack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    Raw = 0,
    Lz4 = 1,
    /// A delta payload (see `codec::delta`), stored raw.
    DeltaRaw = 2,
    /// A delta payload, lz4-compressed.
    DeltaLz4 = 3,
}

impl Encoded {
    pub fn from_flags(flags: u32) -> Option<Encoded> {
        match flags {
            0 => Some(Encoded::Raw),
            1 => Some(Encoded::Lz4),
            2 => Some(Encoded::DeltaRaw),
            3 => Some(Encoded::DeltaLz4),
            _ => None,
        }
    }

    /// Whether the blob holds a delta over a base chunk rather than the
    /// chunk itself.
    pub fn is_delta(self) -> bool {
        matches!(self, Encoded::DeltaRaw | Encoded::DeltaLz4)
    }

    /// How the blob's bytes are packed, whatever they hold: raw or lz4.
    pub fn packing(self) -> Encoded {
        match self {
            Encoded::Raw | Encoded::DeltaRaw => Encoded::Raw,
            Encoded::Lz4 | Encoded::DeltaLz4 => Encoded::Lz4,
        }
    }

    /// The same packing, holding a delta.
    pub fn as_delta(self) -> Encoded {
        match self.packing() {
            Encoded::Lz4 => Encoded::DeltaLz4,
            _ => Encoded::DeltaRaw,
        }
    }
}

/// lz4 must save at least 1/32 of the chunk to be worth a decode on restore.
const MIN_SAVING_SHIFT: u32 = 5;

/// Bytes sampled to decide whether a chunk is worth compressing at all.
const PROBE_LEN: usize = 16 * 1024;

/// How `encode` stored a chunk: raw (the plain bytes themselves) or lz4
/// (the first `len` bytes of the scratch buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub how: Encoded,
    pub len: usize,
}

/// Encodes `plain`, using `scratch` for compressed output. Incompressible
/// data is never copied. `scratch` is reused between chunks and only grows,
/// so the hot path neither allocates nor zero-fills.
pub fn encode(setting: Compression, plain: &[u8], scratch: &mut Vec<u8>) -> Stored {
    encode_at(setting, plain, scratch, 0)
}

/// Like [`encode`], with the compressed bytes at `scratch[at..]`, room
/// for a seal's nonce before them (those bytes may be scribbled on).
pub fn encode_at(setting: Compression, plain: &[u8], scratch: &mut Vec<u8>, at: usize) -> Stored {
    let raw = Stored {
        how: Encoded::Raw,
        len: plain.len(),
    };
    if setting == Compression::None || !probe_compresses(plain, scratch) {
        return raw;
    }
    grow(
        scratch,
        at + lz4_flex::block::get_maximum_output_size(plain.len()),
    );
    match lz4_flex::block::compress_into(plain, &mut scratch[at..]) {
        Ok(n) if n < plain.len() - (plain.len() >> MIN_SAVING_SHIFT) => Stored {
            how: Encoded::Lz4,
            len: n,
        },
        _ => raw,
    }
}

fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// Compresses a few spread-out samples; random data (most of a disk full of
/// media and archives) fails this in a fraction of the full cost.
fn probe_compresses(plain: &[u8], scratch: &mut Vec<u8>) -> bool {
    if plain.len() <= 4 * PROBE_LEN {
        return true;
    }
    let step = plain.len() / 4;
    grow(scratch, lz4_flex::block::get_maximum_output_size(PROBE_LEN));
    (0..4).any(|i| {
        let sample = &plain[i * step..i * step + PROBE_LEN];
        matches!(lz4_flex::block::compress_into(sample, scratch),
            Ok(n) if n < PROBE_LEN - (PROBE_LEN >> MIN_SAVING_SHIFT))
    })
}

/// Decodes a stored blob into `out`, whose length is the expected plain
/// length. Hostile input gives an error, never a panic or an
/// over-allocation.
pub fn decode(how: Encoded, stored: &[u8], out: &mut [u8]) -> Result<()> {
    let plain_len = out.len();
    match how.packing() {
        Encoded::Raw => {
            if stored.len() != plain_len {
                return Err(Error::corrupt(format!(
                    "stored raw blob is {} bytes, expected {plain_len}",
                    stored.len()
                )));
            }
            out.copy_from_slice(stored);
        }
        Encoded::Lz4 => {
            let n = lz4_flex::block::decompress_into(stored, out)
                .map_err(|e| Error::corrupt(format!("lz4 data does not decode: {e}")))?;
            if n != plain_len {
                return Err(Error::corrupt(format!(
                    "lz4 data decodes to {n} bytes, expected {plain_len}"
                )));
            }
        }
        Encoded::DeltaRaw | Encoded::DeltaLz4 => {
            return Err(Error::internal("a delta's packing is raw or lz4"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_chunks_shrink_and_round_trip() {
        let plain: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 / 16).collect();
        let mut scratch = Vec::new();
        let stored = encode(Compression::Lz4, &plain, &mut scratch);
        assert_eq!(stored.how, Encoded::Lz4);
        assert!(stored.len < plain.len() / 4);
        let mut back = vec![0; plain.len()];
        decode(Encoded::Lz4, &scratch[..stored.len], &mut back).unwrap();
        assert_eq!(back, plain);
        // At an offset (after a seal's nonce): the same bytes, later.
        let mut shifted = vec![0xAA; 12];
        let at = encode_at(Compression::Lz4, &plain, &mut shifted, 12);
        assert_eq!(at, stored);
        assert_eq!(&shifted[12..12 + at.len], &scratch[..stored.len]);
    }

    #[test]
    fn random_chunks_are_stored_raw() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let plain: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut scratch = Vec::new();
        let stored = encode(Compression::Lz4, &plain, &mut scratch);
        assert_eq!(stored.how, Encoded::Raw);
        assert_eq!(stored.len, plain.len());
    }

    #[test]
    fn hostile_lz4_is_an_error_not_a_panic() {
        let mut out = vec![0; 4096];
        for junk in [
            &b""[..],
            b"\xff",
            b"\xf0\xff\xff\xff\xff",
            b"\x1f\x00\x00\x00",
        ] {
            assert!(decode(Encoded::Lz4, junk, &mut out).is_err());
        }
        assert!(decode(Encoded::Raw, b"abc", &mut out[..4]).is_err());
    }
}
