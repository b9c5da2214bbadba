//! Snapshot manifests: the commit point of a backup. A snapshot exists if
//! and only if its manifest exists; the manifest names its map (by BLAKE3)
//! and says where the data came from.
//!
//! A manifest is checked whole when it is read, field by field (`decode`):
//! its crc32 only says the bytes are those written, not that what was
//! written makes sense. One that fails is unreadable everywhere, never
//! half used: a time that does not parse would otherwise sort as `latest`
//! and stop every `forget`. Tags and the source path are taken as they are
//! (tags arriving by copy stay byte for byte), and the layout is the disk
//! layer's to read.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::repo::{SnapshotId, config, envelope};

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
    /// New chunks stored as deltas over a chunk of the parent's (of
    /// `chunks_new`).
    #[serde(default)]
    pub chunks_delta: u64,
    /// Chunks a change source said had not changed since the parent: kept
    /// from the parent's map without being read (counted in
    /// `chunks_unchanged` too).
    #[serde(default)]
    pub chunks_unread: u64,
    /// Bytes of those chunks.
    #[serde(default)]
    pub bytes_unread: u64,
    /// Bytes of the parent's chunks read back from the repository (not in
    /// `bytes_read`): to complete chunks of which a change source let only
    /// the changed pages be read from the source, and to compare changed
    /// chunks with them page by page for deltas.
    #[serde(default)]
    pub bytes_base: u64,
    pub duration_s: f64,
}

/// A change source a backup trusted: its kind (`"ranges"`, `"reflink"`)
/// and, for people, what it was (a file, a shadow) and what it said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeSourceRecord {
    pub kind: String,
    pub detail: String,
}

/// A reflink shadow's identity when it was made: its inode, size and
/// modification time (nanoseconds since the epoch). A shadow replaced,
/// linked, rewritten or cloned over since has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShadowStamp {
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MapRef {
    pub entries: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    #[serde(deserialize_with = "own_id")]
    pub id: SnapshotId,
    /// RFC 3339, UTC, microseconds: sorts as text.
    pub time: String,
    #[serde(default, deserialize_with = "parent_id")]
    pub parent: Option<SnapshotId>,
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
    /// Where this backup learned what changed since its parent, when it
    /// did not read everything to find out (see `engine::change_source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<ChangeSourceRecord>,
    /// The reflink shadow this backup kept of its image, as it was made:
    /// the next backup trusts a shadow only if it is still this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStamp>,
    /// The source's partition table and contents, as the disk layer reads
    /// them (kept as JSON here: the repository does not know disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<serde_json::Value>,
}

/// The manifest's `id`; an error names the field.
fn own_id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<SnapshotId, D::Error> {
    named_id(d, "id").and_then(|id| id.ok_or_else(|| serde::de::Error::custom("its id is null")))
}

/// The manifest's `parent`; an error names the field.
fn parent_id<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<SnapshotId>, D::Error> {
    named_id(d, "parent")
}

fn named_id<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<Option<SnapshotId>, D::Error> {
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    text.map(|t| {
        SnapshotId::parse(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "its {field} {t:?} is not a snapshot id (64 lower-case hex digits)"
            ))
        })
    })
    .transpose()
}

/// Sorts snapshots oldest first by the time they were taken (not by its
/// text: an offset or a missing fraction must not reorder them), equal
/// times by id.
pub fn sort_by_time(snaps: &mut [Snapshot]) {
    snaps.sort_by_cached_key(|s| (s.parsed_time(), s.id));
}

impl Snapshot {
    /// The recorded layout, read as `T`: the one place it is parsed. The
    /// type is the disk layer's (`disk::layout::Layout`), which this layer
    /// does not know, so the caller names it. `None` when none was recorded
    /// (snapshots made before layouts were), `Some(Err)` when it does not
    /// read as `T`.
    pub fn parsed_layout<T: serde::de::DeserializeOwned>(&self) -> Option<serde_json::Result<T>> {
        self.layout.clone().map(serde_json::from_value)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::seal(KIND, VERSION, self)
    }

    /// Parses a manifest and checks every field it can; an error names
    /// the field.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Snapshot> {
        let snap: Snapshot = envelope::open(KIND, VERSION, bytes, what)?;
        snap.check()
            .map_err(|why| Error::corrupt(format!("{what} is invalid: {why}")))?;
        Ok(snap)
    }

    /// Why the manifest's fields cannot be those of a snapshot, if they
    /// cannot.
    fn check(&self) -> std::result::Result<(), String> {
        if self.parsed_time().is_none() {
            return Err(format!("its time {:?} is not an RFC 3339 time", self.time));
        }
        if config::check_chunk_size(self.chunk_size).is_err() {
            return Err(format!(
                "its chunk size {} is not one platter uses",
                self.chunk_size
            ));
        }
        if self.map.entries != self.source.size.div_ceil(self.chunk_size) {
            return Err(format!(
                "its map has {} entries, but a {}-byte source in chunks of {} has {}",
                self.map.entries,
                self.source.size,
                self.chunk_size,
                self.source.size.div_ceil(self.chunk_size)
            ));
        }
        if super::id::parse_hex_id(&self.map.blake3).is_none() {
            return Err(format!(
                "its map's BLAKE3 {:?} is not 64 hex digits",
                self.map.blake3
            ));
        }
        let sector = self.source.logical_sector_size;
        if !sector.is_power_of_two() || !(512..=65536).contains(&sector) {
            return Err(format!("its source's sector size {sector} is not a disk's"));
        }
        if !matches!(self.source.kind.as_str(), "file" | "block device") {
            return Err(format!("its source kind {:?} is unknown", self.source.kind));
        }
        if self.source.partition == Some(0) {
            return Err("its source partition is 0 (partitions count from 1)".into());
        }
        if self.source.path.is_empty() {
            return Err("its source path is empty".into());
        }
        Ok(())
    }

    /// When the backup was taken (`None` only for a manifest `decode`
    /// would refuse). Snapshots are ordered by this, never by the text.
    pub fn parsed_time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.time, &Rfc3339).ok()
    }

    /// The first 8 hex digits of its id, as lists show it.
    pub fn short_id(&self) -> String {
        self.id.prefix(8)
    }
}
