//! The repository's config: format version, identity, chunk size,
//! compression and encryption. Written once by `init` and never changed.
//! It stays plain in an encrypted repository (it holds no secret), so that
//! a repository can be recognised, and its storage checked, without a key.

use crate::codec::Compression;
use crate::error::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;
/// Encrypted repositories have config version 2, so that a platter that
/// predates encryption refuses them rather than misreading them.
pub const ENCRYPTED_FORMAT_VERSION: u32 = 2;
/// A config that names features (encrypted or not) has version 3, so that
/// a platter that predates the list refuses the repository; one that has
/// the list refuses any feature it does not know (see `FEATURES`).
pub const FEATURES_FORMAT_VERSION: u32 = 3;
/// Sub-chunk deltas (`codec::delta`): blobs of encodings 2 and 3, and
/// index files of version 2 that name each delta's base. A platter that
/// does not know them must not read (it would call deltas damage) and
/// above all must not prune (it would delete the bases deltas need).
pub const DELTAS: &str = "deltas";
/// Index files of version 3 (`repo::index::sorted_file`): sorted by chunk
/// id, in blocks checked and sealed one by one. A platter that does not
/// know them would call every new index file damaged.
pub const SORTED_INDEX: &str = "sorted-index";
/// Every feature this platter reads and writes; `init` turns all of them
/// on and `upgrade` turns them on in an older repository.
pub const FEATURES: &[&str] = &[DELTAS, SORTED_INDEX];
pub const CIPHER: &str = "aes-256-gcm";
pub const CHUNK_IDS: &str = "keyed-blake3";
pub const MIN_CHUNK_SIZE: u64 = 64 * 1024;
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub repo_id: String,
    pub chunk_size: u64,
    pub compression: Compression,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Format features the repository uses (see `FEATURES`); none in a
    /// version 1 or 2 config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// How an encrypted repository seals blobs and names chunks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Encryption {
    pub cipher: String,
    pub chunk_ids: String,
}

impl Encryption {
    pub fn current() -> Encryption {
        Encryption {
            cipher: CIPHER.into(),
            chunk_ids: CHUNK_IDS.into(),
        }
    }
}

impl Config {
    pub fn version(&self) -> u32 {
        if !self.features.is_empty() {
            FEATURES_FORMAT_VERSION
        } else if self.encryption.is_some() {
            ENCRYPTED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        }
    }

    /// Checks the fields, and that `version` (the document's) matches
    /// whether the repository is encrypted.
    pub fn validate(&self, version: u32) -> Result<()> {
        if version != self.version() {
            return Err(Error::corrupt(format!(
                "the repository config is damaged: version {version} {} an encryption section \
                 and {} features",
                if self.encryption.is_some() {
                    "with"
                } else {
                    "without"
                },
                if self.features.is_empty() {
                    "without"
                } else {
                    "with"
                }
            )));
        }
        let unknown: Vec<&str> = self
            .features
            .iter()
            .map(String::as_str)
            .filter(|f| !FEATURES.contains(f))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::unsupported(format!(
                "the repository uses format features this platter ({}) does not know: {}",
                env!("CARGO_PKG_VERSION"),
                unknown
                    .iter()
                    .map(|f| crate::printable::printable(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .hint("use the platter that wrote it, or a newer one"));
        }
        if let Some(e) = &self.encryption
            && *e != Encryption::current()
        {
            return Err(Error::unsupported(format!(
                "the repository is encrypted with {} and {} chunk ids; this platter knows {CIPHER} and {CHUNK_IDS}",
                e.cipher, e.chunk_ids
            )));
        }
        check_chunk_size(self.chunk_size)
            .map_err(|e| Error::corrupt(format!("the repository config is damaged: {e}")))?;
        if self.repo_id.len() != 64 || !self.repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::corrupt(
                "the repository config is damaged: repo_id is not 64 hex digits",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Whether the repository uses format feature `name`.
    pub fn has(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// Every feature this platter knows, in a fixed order.
    pub fn all_features() -> Vec<String> {
        FEATURES.iter().map(|f| f.to_string()).collect()
    }
}

pub fn check_chunk_size(size: u64) -> Result<()> {
    let why = if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        "is outside 64 KiB to 16 MiB"
    } else if !size.is_power_of_two() {
        "is not a power of two"
    } else {
        return Ok(());
    };
    Err(Error::bad_input(format!("chunk size {size} bytes {why}"))
        .hint("use e.g. --chunk-size 1M (the default), 256K or 4M"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_checked() {
        assert!(check_chunk_size(1 << 20).is_ok());
        assert!(check_chunk_size(32 << 10).is_err());
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(32 << 20).is_err());
    }
}
