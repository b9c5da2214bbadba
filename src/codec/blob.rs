//! How a chunk becomes a stored blob and back: compressed when that pays,
//! then sealed when the repository is encrypted. The one place that knows
//! the order of the two.

use crate::codec::ChunkId;
use crate::codec::compress::{self, Compression, Encoded};
use crate::codec::seal::{NONCE_LEN, Sealing};
use crate::error::Result;

/// Buffers `store` reuses between chunks; they only grow.
#[derive(Default)]
pub struct Scratch {
    packed: Vec<u8>,
    sealed: Vec<u8>,
}

/// Where `store` left a chunk's stored bytes, and how they are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub how: Encoded,
    /// Stored length, sealing included.
    pub len: usize,
    sealed: bool,
}

impl Blob {
    /// The same blob, recorded as holding a delta payload.
    pub fn holding_delta(self) -> Blob {
        Blob {
            how: self.how.as_delta(),
            ..self
        }
    }

    /// The stored bytes, given the chunk and the scratch `store` used.
    pub fn bytes<'a>(&self, plain: &'a [u8], scratch: &'a Scratch) -> &'a [u8] {
        if self.sealed {
            &scratch.sealed[..self.len]
        } else {
            match self.how.packing() {
                Encoded::Lz4 => &scratch.packed[..self.len],
                _ => plain,
            }
        }
    }
}

/// Encodes chunk `id` for storing. A plain repository's incompressible
/// chunk is never copied.
pub fn store(
    sealing: &Sealing,
    compression: Compression,
    id: &ChunkId,
    plain: &[u8],
    scratch: &mut Scratch,
) -> Result<Blob> {
    if !sealing.is_encrypted() {
        let packed = compress::encode(compression, plain, &mut scratch.packed);
        return Ok(Blob {
            how: packed.how,
            len: packed.len,
            sealed: false,
        });
    }
    // Compressed straight to where the seal wants it, after the nonce,
    // and sealed in place: no copy of what was compressed.
    let buf = &mut scratch.sealed;
    let packed = compress::encode_at(compression, plain, buf, NONCE_LEN);
    if packed.how == Encoded::Raw {
        if buf.len() < NONCE_LEN + plain.len() {
            buf.resize(NONCE_LEN + plain.len(), 0);
        }
        buf[NONCE_LEN..NONCE_LEN + plain.len()].copy_from_slice(plain);
    }
    let len = sealing.seal_prepared(&id.0, buf, packed.len)?;
    Ok(Blob {
        how: packed.how,
        len,
        sealed: true,
    })
}

/// Decodes the stored bytes of chunk `id` into `out` (exactly its plain
/// length). `stored` may be overwritten. Damage, and in an encrypted
/// repository a blob that belongs elsewhere, are `Corrupt`.
pub fn load(
    sealing: &Sealing,
    id: &ChunkId,
    how: Encoded,
    stored: &mut [u8],
    out: &mut [u8],
) -> Result<()> {
    if !sealing.is_encrypted() {
        return compress::decode(how, stored, out);
    }
    match how.packing() {
        Encoded::Lz4 => {
            let packed = sealing.open_in_place(&id.0, stored)?;
            compress::decode(how, packed, out)
        }
        _ => sealing.open_into(&id.0, stored, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::seal::MasterKey;

    #[test]
    fn chunks_round_trip_plain_and_sealed() {
        let text: Vec<u8> = (0..1 << 18).map(|i| b"platter "[i % 8]).collect();
        let mut noise = vec![0u8; 1 << 18];
        crate::codec::seal::random(&mut noise).unwrap();
        let sealed = Sealing::encrypted(&MasterKey::generate().unwrap());
        for sealing in [Sealing::plain(), sealed] {
            for plain in [&text, &noise] {
                let id = sealing.chunk_id(plain);
                let mut scratch = Scratch::default();
                let blob = store(&sealing, Compression::Lz4, &id, plain, &mut scratch).unwrap();
                let mut stored = blob.bytes(plain, &scratch).to_vec();
                assert_eq!(stored.len(), blob.len);
                if sealing.is_encrypted() {
                    assert!(!stored.windows(8).any(|w| w == b"platter "));
                }
                let mut out = vec![0; plain.len()];
                load(&sealing, &id, blob.how, &mut stored.clone(), &mut out).unwrap();
                assert_eq!(&out, plain);
                if sealing.is_encrypted() {
                    let other = sealing.chunk_id(b"another chunk");
                    assert!(load(&sealing, &other, blob.how, &mut stored, &mut out).is_err());
                }
            }
        }
    }
}
