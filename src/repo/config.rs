//! The repository's config: format version, identity, chunk size and
//! compression. Written once by `init` and never changed.

use crate::codec::Compression;
use crate::error::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;
pub const MIN_CHUNK_SIZE: u64 = 64 * 1024;
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub repo_id: String,
    pub chunk_size: u64,
    pub compression: Compression,
    pub created: String,
}

impl Config {
    pub fn validate(&self) -> Result<()> {
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

pub fn check_chunk_size(size: u64) -> Result<()> {
    if !size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Err(Error::bad_input(format!(
            "chunk size {size} is not a power of two between 64 KiB and 16 MiB"
        ))
        .hint("use e.g. --chunk-size 1M (the default), 256K or 4M"));
    }
    Ok(())
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
