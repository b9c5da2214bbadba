//! Key slots: the master key of an encrypted repository, wrapped under a
//! passphrase, one file per passphrase in `keys/`.
//!
//! A key file is a checksummed JSON document (see `envelope`) whose body
//! holds the Argon2id parameters and salt, and the master key sealed
//! (AES-256-GCM) under the key Argon2id gives for the passphrase, with the
//! repository's id as associated data. Any slot opens the repository; the
//! master key itself is never stored in the clear.

use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::codec::kdf::{self, KdfParams};
use crate::codec::seal::{self, MasterKey};
use crate::codec::{hex, unhex};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::backend::Backend;
use crate::repo::envelope;

pub const FOLDER: &str = "keys";
const KIND: &str = "key";
const VERSION: u32 = 1;
const SALT_LEN: usize = 32;

/// Where a passphrase comes from when a repository needs one. Asked only
/// when the repository is encrypted.
pub trait PassphraseSource {
    fn passphrase(&self) -> Result<Zeroizing<String>>;
}

/// For repositories known to be plain, and for tests.
pub struct NoPassphrase;

impl PassphraseSource for NoPassphrase {
    fn passphrase(&self) -> Result<Zeroizing<String>> {
        Err(Error::bad_input("this repository is encrypted and no passphrase was given")
            .hint("give it with --password-file, PLATTER_PASSWORD_FILE, PLATTER_PASSWORD or --password-command"))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyFile {
    pub created: String,
    pub kdf: KdfParams,
    salt: String,
    wrapped: String,
}

/// One key file.
#[derive(Debug, Clone)]
pub struct KeySlot {
    /// The file's name in `keys/` (64 hex digits).
    pub id: String,
    pub file: KeyFile,
}

fn key_name(id: &str) -> String {
    format!("{FOLDER}/{id}")
}

fn wrap_aad(repo_id: &str) -> Vec<u8> {
    format!("platter master key of repository {repo_id}").into_bytes()
}

/// Wraps `master` under `passphrase` into a new key file; returns its id.
pub fn add(
    backend: &dyn Backend,
    repo_id: &str,
    master: &MasterKey,
    passphrase: &str,
    params: &KdfParams,
) -> Result<String> {
    params.check()?;
    let mut salt = [0u8; SALT_LEN];
    seal::random(&mut salt)?;
    let wrapping = kdf::derive(passphrase.as_bytes(), &salt, params)?;
    let wrapped = seal::wrap(&wrapping, &wrap_aad(repo_id), master)?;
    let file = KeyFile {
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        kdf: *params,
        salt: hex(&salt),
        wrapped: hex(&wrapped),
    };
    let id = crate::repo::random_hex(32);
    backend.write_whole(&key_name(&id), &envelope::seal(KIND, VERSION, &file)?)?;
    Ok(id)
}

/// Key files that cannot be read: name and why.
pub type Unreadable = Vec<(String, Error)>;

/// Every key file, and those that cannot be read.
pub fn list(backend: &dyn Backend) -> Result<(Vec<KeySlot>, Unreadable)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let names = match backend.list(FOLDER) {
        Ok(names) => names,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    for id in names {
        if id.starts_with('.') {
            continue;
        }
        let name = key_name(&id);
        let read = backend.read_whole(&name).and_then(|bytes| {
            envelope::open::<KeyFile>(KIND, VERSION, &bytes, &backend.describe(&name))
        });
        match read {
            Ok(file) => good.push(KeySlot { id, file }),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => bad.push((name, e)),
        }
    }
    good.sort_by(|a, b| a.file.created.cmp(&b.file.created).then(a.id.cmp(&b.id)));
    Ok((good, bad))
}

/// Finds the slot `passphrase` opens; returns the master key and the slot.
pub fn unlock(
    backend: &dyn Backend,
    repo_id: &str,
    passphrase: &str,
) -> Result<(MasterKey, KeySlot)> {
    let (slots, bad) = list(backend)?;
    if slots.is_empty() {
        let why = match bad.first() {
            Some((name, e)) => format!("its only key files are damaged ({name}: {e})"),
            None => format!("it has no key files in {}", backend.describe(FOLDER)),
        };
        return Err(Error::corrupt(format!(
            "the repository is encrypted, but {why}: without a key its data cannot be read"
        ))
        .hint("put back the keys/ folder from a copy of this repository (or its backup)"));
    }
    let aad = wrap_aad(repo_id);
    for slot in slots {
        let opened = slot_key(&slot)
            .and_then(|(salt, wrapped)| {
                let wrapping = kdf::derive(passphrase.as_bytes(), &salt, &slot.file.kdf)?;
                Ok(seal::unwrap(&wrapping, &aad, &wrapped))
            })
            .map_err(|e| e.context(backend.describe(&key_name(&slot.id))))?;
        if let Some(master) = opened {
            return Ok((master, slot));
        }
    }
    Err(Error::new(
        ErrorKind::WrongPassphrase,
        "the passphrase opens none of the repository's key files",
    )
    .hint("check the passphrase (or the file or command that gives it); `platter key list` shows the key files"))
}

fn slot_key(slot: &KeySlot) -> Result<(Vec<u8>, Vec<u8>)> {
    match (unhex(&slot.file.salt), unhex(&slot.file.wrapped)) {
        (Some(salt), Some(wrapped)) if salt.len() == SALT_LEN => Ok((salt, wrapped)),
        _ => Err(Error::corrupt(
            "key file has a malformed salt or wrapped key",
        )),
    }
}

/// Removes key file `id`.
pub fn remove(backend: &dyn Backend, id: &str) -> Result<()> {
    backend.remove(&key_name(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::LocalBackend;

    const FAST: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn any_slot_opens_and_wrong_passphrases_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FOLDER)).unwrap();
        let backend = LocalBackend::new(dir.path());
        let master = MasterKey::generate().unwrap();
        let first = add(&backend, "r1", &master, "one", &FAST).unwrap();
        let second = add(&backend, "r1", &master, "two", &FAST).unwrap();
        for (pass, slot) in [("one", &first), ("two", &second)] {
            let (key, opened) = unlock(&backend, "r1", pass).unwrap();
            assert_eq!(key.bytes(), master.bytes());
            assert_eq!(&opened.id, slot);
        }
        let err = unlock(&backend, "r1", "three").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongPassphrase);
        // A slot is tied to its repository.
        assert_eq!(
            unlock(&backend, "r2", "one").unwrap_err().kind(),
            ErrorKind::WrongPassphrase
        );
        remove(&backend, &first).unwrap();
        assert!(unlock(&backend, "r1", "one").is_err());
        assert!(unlock(&backend, "r1", "two").is_ok());
        remove(&backend, &second).unwrap();
        assert_eq!(
            unlock(&backend, "r1", "two").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
