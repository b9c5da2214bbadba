//! Where each kind of repository file lives: the one owner of the folder
//! and file names of docs/FORMAT.md. Every other module builds names here,
//! so that a backend (a folder, a bucket prefix) sees one layout.

use crate::repo::{IndexId, KeyId, LockId, PackId, SnapshotId};

/// The repository's config, at its root.
pub const CONFIG: &str = "config";

/// Space kept for freeing space, at the root: on a full filesystem,
/// forget and prune delete it to make room for their lock and new index.
pub const RESERVE: &str = "reserve";

/// The folders of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Snapshot manifests, named by snapshot id.
    Snapshots,
    /// Snapshot maps, named by snapshot id.
    Maps,
    /// Index files.
    Index,
    /// Packs, in `data/xx/` by the first two hex digits of their id.
    Data,
    /// Lock files.
    Locks,
    /// Key files (encrypted repositories).
    Keys,
    /// Restore test results, named by snapshot id; made by the first one.
    Tests,
}

impl Folder {
    /// The folders every repository has (keys only when encrypted).
    pub const REQUIRED: [Folder; 5] = [
        Folder::Snapshots,
        Folder::Maps,
        Folder::Index,
        Folder::Data,
        Folder::Locks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Snapshots => "snapshots",
            Folder::Maps => "maps",
            Folder::Index => "index",
            Folder::Data => "data",
            Folder::Locks => "locks",
            Folder::Keys => "keys",
            Folder::Tests => "tests",
        }
    }

    /// The name of file `file` in this folder.
    pub fn file(self, file: &str) -> String {
        format!("{}/{file}", self.as_str())
    }
}

pub fn manifest_name(id: &SnapshotId) -> String {
    Folder::Snapshots.file(&id.to_hex())
}

pub fn test_result_name(id: &SnapshotId) -> String {
    Folder::Tests.file(&id.to_hex())
}

pub fn map_name(id: &SnapshotId) -> String {
    Folder::Maps.file(&id.to_hex())
}

pub fn index_name(id: &IndexId) -> String {
    Folder::Index.file(&id.to_hex())
}

pub fn lock_name(id: &LockId) -> String {
    Folder::Locks.file(&id.to_hex())
}

pub fn key_name(id: &KeyId) -> String {
    Folder::Keys.file(&id.to_hex())
}

/// The pack folder `data/xx` for the two hex digits `xx`.
pub fn pack_folder(digits: &str) -> String {
    Folder::Data.file(digits)
}

pub fn pack_name(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{}/{hex}", pack_folder(&hex[..2]))
}

/// The length in bytes of the longest name above: a store that limits the
/// length of its names (S3: 1024 bytes per object key, the repository's
/// prefix included) checks a prefix against it before anything is written.
pub fn longest_name() -> usize {
    let id = [0u8; 32];
    [
        manifest_name(&SnapshotId::from_bytes(id)),
        map_name(&SnapshotId::from_bytes(id)),
        index_name(&IndexId::from_bytes(id)),
        lock_name(&LockId::from_bytes(id)),
        key_name(&KeyId::from_bytes(id)),
        pack_name(&PackId::from_bytes(id)),
        CONFIG.to_string(),
        RESERVE.to_string(),
    ]
    .iter()
    .map(String::len)
    .max()
    .unwrap_or(0)
}
