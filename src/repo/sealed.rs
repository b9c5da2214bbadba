//! Whole files sealed as one blob: manifests, index files and lock files of
//! an encrypted repository. In a plain repository they are written as they
//! are; in an encrypted one, only sealed files are accepted.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "PLTRSEAL"
//! 8       4     format version (1)
//! 12      4     reserved, zero
//! 16      n     sealed blob: nonce [12] | ciphertext | tag [16]; the place
//!               it is sealed for is the file's name (e.g. "snapshots/<id>")
//! 16+n    4     crc32 of bytes 0..16+n
//! 20+n    4     magic "SEND"
//! ```
//!
//! The crc32 lets storage damage be told without the key; the seal proves
//! the content and that it sits under its own name.

use crate::codec::seal::NONCE_LEN;
use crate::codec::{Sealing, crc32};
use crate::error::{Error, Result};
use crate::repo::backend::Backend;
use crate::repo::fields::{FieldReader, FieldWriter};

const MAGIC: &[u8; 8] = b"PLTRSEAL";
const END_MAGIC: &[u8; 4] = b"SEND";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
const FOOTER_LEN: usize = 8;

/// The bytes to store for `plain` under `name`.
pub fn encode(sealing: &Sealing, name: &str, plain: &[u8]) -> Result<Vec<u8>> {
    if !sealing.is_encrypted() {
        return Ok(plain.to_vec());
    }
    let mut blob = Vec::new();
    sealing.seal(name.as_bytes(), plain, &mut blob)?;
    let mut out = Vec::with_capacity(HEADER_LEN + blob.len() + FOOTER_LEN);
    out.put(MAGIC);
    out.put_u32(VERSION);
    out.put_u32(0);
    out.put(&blob);
    let crc = crc32(&out);
    out.put_u32(crc);
    out.put(END_MAGIC);
    Ok(out)
}

/// The plain bytes of a file stored under `name`; `what` names it in errors.
pub fn decode(sealing: &Sealing, name: &str, mut stored: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if !sealing.is_encrypted() {
        return Ok(stored);
    }
    let blob = check_frame(&stored, what)?;
    let plain_len = sealing
        .open_in_place(name.as_bytes(), &mut stored[blob.clone()])
        .map_err(|e| Error::corrupt(format!("{what} {}", e.message())))?
        .len();
    // The plain bytes follow the nonce: move them to the front in place.
    let start = blob.start + NONCE_LEN;
    stored.copy_within(start..start + plain_len, 0);
    stored.truncate(plain_len);
    Ok(stored)
}

/// The error for a file (a map or pack) that is sealed when the repository
/// is not encrypted, or the other way round.
pub fn mismatch(what: &str, sealed: bool, encrypted: bool) -> Error {
    Error::corrupt(format!(
        "{what} is {}sealed, but the repository is {}encrypted: it was damaged or put there \
         from elsewhere",
        if sealed { "" } else { "not " },
        if encrypted { "" } else { "not " }
    ))
}

/// Whether `head` (a file's first bytes) starts a sealed file.
pub fn is_sealed(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Checks a sealed file's form and crc32 without the key.
pub fn check_without_key(stored: &[u8], what: &str) -> Result<()> {
    check_frame(stored, what).map(|_| ())
}

/// Checks magic, version and crc32; returns where the sealed blob lies.
fn check_frame(stored: &[u8], what: &str) -> Result<std::ops::Range<usize>> {
    if stored.len() < HEADER_LEN + FOOTER_LEN || &stored[..8] != MAGIC {
        return Err(Error::corrupt(format!(
            "{what} is not sealed, and an encrypted repository holds only sealed files: \
             it was damaged or put there by someone without the key"
        )));
    }
    let body_end = stored.len() - FOOTER_LEN;
    let mut tail = FieldReader::new(&stored[body_end..]);
    let crc = tail.u32();
    if &tail.bytes::<4>() != END_MAGIC || crc32(&stored[..body_end]) != crc {
        return Err(Error::corrupt(format!(
            "{what} fails its crc32: the stored bytes are damaged or truncated"
        )));
    }
    let version = FieldReader::new(&stored[8..12]).u32();
    if version != VERSION {
        return Err(Error::unsupported(format!(
            "{what} is sealed in format version {version}, this platter reads {VERSION}"
        )));
    }
    Ok(HEADER_LEN..body_end)
}

/// Writes a whole file, sealed when the repository is encrypted.
pub fn write(backend: &dyn Backend, sealing: &Sealing, name: &str, plain: &[u8]) -> Result<()> {
    backend.write_whole(name, &encode(sealing, name, plain)?)
}

/// Reads a whole file written by `write`.
pub fn read(backend: &dyn Backend, sealing: &Sealing, name: &str) -> Result<Vec<u8>> {
    let stored = backend.read_whole(name)?;
    decode(sealing, name, stored, &backend.describe(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MasterKey;

    #[test]
    fn sealed_files_open_only_unchanged_and_under_their_name() {
        let sealing = Sealing::encrypted(&MasterKey::generate().unwrap());
        let plain = b"{\"secret\": \"hostname\"}".to_vec();
        let stored = encode(&sealing, "snapshots/a", &plain).unwrap();
        assert!(!stored.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            decode(&sealing, "snapshots/a", stored.clone(), "f").unwrap(),
            plain
        );
        let err = decode(&sealing, "snapshots/b", stored.clone(), "f").unwrap_err();
        assert!(err.message().contains("does not authenticate"), "{err}");
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&sealing, "snapshots/a", bad, "f").is_err(),
                "flip at {i}"
            );
        }
        let err = decode(&sealing, "snapshots/a", plain.clone(), "f").unwrap_err();
        assert!(err.message().contains("is not sealed"), "{err}");
        let plainly = Sealing::plain();
        assert_eq!(encode(&plainly, "x", &plain).unwrap(), plain);
    }
}
