//! JSON documents with a checksum: the config and snapshot manifests.
//!
//! On disk such a file is one JSON object,
//! `{"platter":"<kind>","version":1,"crc32":"<8 hex>","body":{...}}`, where
//! the crc32 covers the exact bytes of the body as stored. The checksum is
//! checked on the raw text, so no re-serialisation is involved, and the file
//! stays readable with `jq`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::codec::crc32;
use crate::error::{Error, Result};

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    platter: String,
    version: u32,
    crc32: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

pub fn seal<T: Serialize>(kind: &str, version: u32, body: &T) -> Result<Vec<u8>> {
    let body = serde_json::to_string_pretty(body)
        .map_err(|e| Error::bad_input(format!("cannot encode {kind}: {e}")))?;
    let head = serde_json::json!({ "platter": kind, "version": version }).to_string();
    // `head` is `{...}`: reopen it to add the checksum and the body.
    let head = head.trim_end_matches('}');
    Ok(format!(
        "{head},\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32(body.as_bytes())
    )
    .into_bytes())
}

/// Parses a sealed document of `kind` in one of `versions`; returns it and
/// its version. `what` names the file in errors.
pub fn open_versioned<T: DeserializeOwned>(
    kind: &str,
    versions: std::ops::RangeInclusive<u32>,
    bytes: &[u8],
    what: &str,
) -> Result<(T, u32)> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::corrupt(format!("{what} is not text: the file is damaged")))?;
    let env: Envelope = serde_json::from_str(text)
        .map_err(|e| Error::corrupt(format!("{what} is not a valid platter document: {e}")))?;
    if env.platter != kind {
        return Err(Error::corrupt(format!(
            "{what} is a {:?} document, expected {kind:?}",
            env.platter
        )));
    }
    if !versions.contains(&env.version) {
        return Err(Error::unsupported(format!(
            "{what} has format version {}, this platter reads versions {} to {}",
            env.version,
            versions.start(),
            versions.end()
        ))
        .hint("use the platter release that wrote this repository"));
    }
    let actual = format!("{:08x}", crc32(env.body.get().as_bytes()));
    if actual != env.crc32 {
        return Err(Error::corrupt(format!(
            "{what} fails its checksum (stored {}, computed {actual}): the file is damaged",
            env.crc32
        )));
    }
    let body = serde_json::from_str(env.body.get())
        .map_err(|e| Error::corrupt(format!("{what} has a body that does not parse: {e}")))?;
    Ok((body, env.version))
}

/// Parses a sealed document of `kind` and exactly `version`.
pub fn open<T: DeserializeOwned>(kind: &str, version: u32, bytes: &[u8], what: &str) -> Result<T> {
    open_versioned(kind, version..=version, bytes, what).map(|(body, _)| body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Doc {
        name: String,
        n: u64,
    }

    #[test]
    fn round_trip_and_every_byte_flip_is_caught() {
        let doc = Doc {
            name: "disk \"one\"".into(),
            n: 42,
        };
        let bytes = seal("thing", 1, &doc).unwrap();
        assert_eq!(open::<Doc>("thing", 1, &bytes, "t").unwrap(), doc);
        for i in 0..bytes.len() - 1 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            if let Ok(back) = open::<Doc>("thing", 1, &bad, "t") {
                // A flip in insignificant whitespace may still parse; the
                // content must then be unchanged.
                assert_eq!(back, doc, "flip at {i} changed the content unseen");
            }
        }
        assert!(open::<Doc>("other", 1, &bytes, "t").is_err());
        assert!(open::<Doc>("thing", 2, &bytes, "t").is_err());
    }
}
