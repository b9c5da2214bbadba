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

/// Parses "1M", "256K", "1MiB", "65536".
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: u64 = num
        .parse()
        .map_err(|_| Error::bad_input(format!("{text:?} is not a size: use e.g. 1M or 65536")))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(Error::bad_input(format!("{text:?}: unknown unit {unit:?}"))),
    };
    num.checked_mul(1 << shift)
        .ok_or_else(|| Error::bad_input(format!("{text:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_chunk_sizes_are_checked() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("256KiB").unwrap(), 256 << 10);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert!(check_chunk_size(1 << 20).is_ok());
        assert!(check_chunk_size(32 << 10).is_err());
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(32 << 20).is_err());
    }
}
