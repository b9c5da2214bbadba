//! Chunk ids (BLAKE3-256), change fingerprints (xxh3-64) and frame checksums
//! (crc32).

use std::fmt;

/// The BLAKE3-256 of a chunk's plain bytes. Equal chunks have equal ids and
/// are stored once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(plain: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(plain).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Written as hex in reports.
impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The bytes of lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// xxh3-64 of a chunk: cheap, used only to notice that a chunk is unchanged
/// from the parent snapshot at the same position.
pub fn fingerprint(plain: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(plain)
}

pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// True when every byte is zero. The fold over a block compiles to SIMD ORs;
/// blocks let a chunk with early data stop early.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_bit_anywhere() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for pos in [0, 1, 7, 8, 100, 4095, 4098] {
            buf[pos] = 0x10;
            assert!(!is_zero(&buf), "missed a set bit at {pos}");
            buf[pos] = 0;
        }
        assert!(is_zero(&buf[3..]));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 0xab, 0xff])).unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(unhex("AB").unwrap(), vec![0xab]);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }

    #[test]
    fn ids_are_blake3() {
        assert_eq!(
            ChunkId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let big = vec![7u8; 1 << 20];
        assert_eq!(ChunkId::of(&big).0, *blake3::hash(&big).as_bytes());
    }
}
