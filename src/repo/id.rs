//! Ids of repository files: one type per kind of file, so that a pack id
//! can never be passed where a snapshot id is meant. Every id is 256
//! random bits (writers never collide), written as 64 lower-case hex
//! digits: in file names and in manifests alike. `parse` accepts only that
//! spelling; anything else does not name a repository file (see
//! `classify`).

use std::fmt;
use std::time::SystemTime;

use crate::codec;

/// The bytes of an id of any kind, as found in a file name before its
/// kind is known (see `classify`).
pub type IdBytes = [u8; 32];

/// The bytes of 64 lower-case hex digits; `None` for any other text.
pub fn parse_hex_id(text: &str) -> Option<IdBytes> {
    let canonical =
        text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !canonical {
        return None;
    }
    codec::unhex(text)?.try_into().ok()
}

/// `bytes` random bytes from the kernel, as hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    codec::hex(&buf)
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The kernel's generator does not fail on Linux once booted; fall
        // back to time and pid so ids still differ rather than aborting.
        let seed =
            blake3::hash(format!("{:?}{}", SystemTime::now(), std::process::id()).as_bytes());
        let mut reader = blake3::Hasher::new_keyed(seed.as_bytes()).finalize_xof();
        reader.fill(buf);
    }
}

macro_rules! file_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(IdBytes);

        impl $name {
            /// A fresh random id.
            pub fn random() -> $name {
                let mut id = [0u8; 32];
                fill_random(&mut id);
                $name(id)
            }

            pub fn from_bytes(bytes: IdBytes) -> $name {
                $name(bytes)
            }

            pub fn as_bytes(&self) -> &IdBytes {
                &self.0
            }

            /// Only 64 lower-case hex digits name one.
            pub fn parse(text: &str) -> Option<$name> {
                parse_hex_id(text).map($name)
            }

            pub fn to_hex(&self) -> String {
                codec::hex(&self.0)
            }

            /// The first `digits` hex digits, as people are shown it.
            pub fn prefix(&self, digits: usize) -> String {
                let mut hex = self.to_hex();
                hex.truncate(digits);
                hex
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        concat!("the ", $what, " id {:?} is not 64 lower-case hex digits"),
                        text
                    ))
                })
            }
        }
    };
}

file_id!(
    /// Names a snapshot: its manifest in `snapshots/` and its map in `maps/`.
    SnapshotId,
    "snapshot"
);
file_id!(
    /// Names a pack in `data/xx/`.
    PackId,
    "pack"
);
file_id!(
    /// Names an index file in `index/`.
    IndexId,
    "index"
);
file_id!(
    /// Names a lock file in `locks/`.
    LockId,
    "lock"
);
file_id!(
    /// Names a key file in `keys/`.
    KeyId,
    "key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_parses() {
        let hex = "0a".repeat(32);
        assert_eq!(
            SnapshotId::parse(&hex).map(|i| i.to_hex()),
            Some(hex.clone())
        );
        assert!(SnapshotId::parse(&hex.to_uppercase()).is_none());
        assert!(PackId::parse(&hex[..62]).is_none());
        assert!(PackId::parse(&format!("{hex}00")).is_none());
    }

    #[test]
    fn ids_read_back_from_json_and_bad_ones_are_named() {
        let id = SnapshotId::random();
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<SnapshotId>(&json).ok(), Some(id));
        let bad = serde_json::from_str::<SnapshotId>("\"xyz\"").err();
        assert!(bad.is_some_and(|e| e.to_string().contains("snapshot id \"xyz\"")));
        assert_eq!(id.prefix(8).len(), 8);
    }
}
