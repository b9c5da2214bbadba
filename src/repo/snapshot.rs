//! Snapshot manifests: the commit point of a backup. A snapshot exists if
//! and only if its manifest exists; the manifest names its map (by BLAKE3)
//! and says where the data came from.

use crate::error::{Error, Result};
use crate::repo::envelope;

const KIND: &str = "snapshot";
const VERSION: u32 = 1;

/// What was backed up, as identified at backup time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// Absolute path as given (symlinks resolved).
    pub path: String,
    /// "file" or "block device".
    pub kind: String,
    pub size: u64,
    pub logical_sector_size: u32,
    /// Hardware identity of a device (serial, WWN) when sysfs knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The partition of `path` that was backed up (`--partition N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

impl SourceInfo {
    /// Whether `self` (from an earlier snapshot) is the same disk as `now`:
    /// same path and size, and no hardware identity that disagrees.
    pub fn same_source(&self, now: &SourceInfo) -> bool {
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.path == now.path
            && self.partition == now.partition
            && self.size == now.size
            && agree(&self.serial, &now.serial)
            && agree(&self.wwid, &now.wwid)
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes this backup added to the repository (stored, compressed).
    pub bytes_new: u64,
    /// Plain bytes of the chunks this backup added.
    pub bytes_new_plain: u64,
    pub chunks: u64,
    pub chunks_new: u64,
    /// Unchanged from the parent by fingerprint: not hashed, not stored.
    pub chunks_unchanged: u64,
    /// Hashed, found already stored (deduplicated).
    pub chunks_dedup: u64,
    pub chunks_zero: u64,
    /// Chunks wholly in holes of the source file: not read.
    pub chunks_hole: u64,
    /// Chunks wholly in free space of known filesystems: not read.
    #[serde(default)]
    pub chunks_free: u64,
    /// Bytes of those chunks.
    #[serde(default)]
    pub bytes_free: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MapRef {
    pub entries: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub id: String,
    /// RFC 3339, UTC, microseconds: sorts as text.
    pub time: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: SourceInfo,
    pub chunk_size: u64,
    pub map: MapRef,
    pub full: bool,
    pub stats: BackupStats,
    pub platter_version: String,
    /// Never removed by `forget` (set and cleared by `platter protect`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// The source's partition table and contents, as the disk layer reads
    /// them (kept as JSON here: the repository does not know disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<serde_json::Value>,
}

pub fn manifest_name(id: &str) -> String {
    format!("snapshots/{id}")
}

impl Snapshot {
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::seal(KIND, VERSION, self)
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<Snapshot> {
        let snap: Snapshot = envelope::open(KIND, VERSION, bytes, what)?;
        if crate::repo::parse_id(&snap.id).is_none() {
            return Err(Error::corrupt(format!(
                "{what} has a malformed snapshot id (not 64 hex digits)"
            )));
        }
        Ok(snap)
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(8)]
    }

    pub fn raw_id(&self) -> Result<crate::repo::RawId> {
        crate::repo::parse_id(&self.id)
            .ok_or_else(|| Error::corrupt(format!("snapshot {} has a malformed id", self.id)))
    }
}
