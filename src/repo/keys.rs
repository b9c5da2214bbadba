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
use crate::repo::names::Folder;
use crate::repo::{KeyId, envelope};

const KIND: &str = "key";
const VERSION: u32 = 1;
const SALT_LEN: usize = 32;

/// Where a passphrase comes from when a repository needs one. Asked only
/// when the repository is encrypted.
pub trait PassphraseSource {
    fn passphrase(&self) -> Result<Zeroizing<String>>;

    /// Whether the repository is expected to be encrypted (a passphrase was
    /// given for it): then a repository that says it is plain is refused,
    /// since someone may have replaced its config to make new backups go
    /// in unencrypted.
    fn expects_encryption(&self) -> bool {
        false
    }
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
    /// Its file's name in `keys/`.
    pub id: KeyId,
    pub file: KeyFile,
}

fn wrap_aad(repo_id: &str) -> Vec<u8> {
    format!("platter master key of repository {repo_id}").into_bytes()
}

/// A key file made but not yet written: the Argon2id work is done before
/// anything touches the repository.
pub struct NewKeyFile(Vec<u8>);

impl NewKeyFile {
    /// Wraps `master` under `passphrase` for repository `repo_id`.
    pub fn wrap(
        repo_id: &str,
        master: &MasterKey,
        passphrase: &str,
        params: &KdfParams,
    ) -> Result<NewKeyFile> {
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
        Ok(NewKeyFile(envelope::seal(KIND, VERSION, &file)?))
    }

    /// Writes it into `keys/`; returns its id.
    pub fn write(&self, backend: &dyn Backend) -> Result<KeyId> {
        let id = KeyId::random();
        self.write_as(backend, &id)?;
        Ok(id)
    }

    /// Writes the key file under id `id` (chosen by the caller, who may
    /// arrange its removal first).
    pub fn write_as(&self, backend: &dyn Backend, id: &KeyId) -> Result<()> {
        backend.write_whole(&crate::repo::names::key_name(id), &self.0)
    }
}

/// Key files that cannot be read: name and why.
pub type Unreadable = Vec<(String, Error)>;

/// Larger files are not key files (they are about 400 bytes).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Every key file, and those that cannot be read. Names that are not 64
/// hex digits are not platter's and are left alone.
pub fn list(backend: &dyn Backend) -> Result<(Vec<KeySlot>, Unreadable)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for file in backend.list(Folder::Keys.as_str())? {
        let Some(id) = KeyId::parse(&file) else {
            continue;
        };
        let name = crate::repo::names::key_name(&id);
        let what = backend.describe(&name);
        let read = backend.open(&name).and_then(|file| {
            if file.len() > MAX_KEY_FILE {
                return Err(Error::corrupt(format!(
                    "{what} is {} bytes, too large to be a key file",
                    file.len()
                )));
            }
            let mut bytes = vec![0u8; file.len() as usize];
            file.read_exact_at(&mut bytes, 0)?;
            envelope::open::<KeyFile>(KIND, VERSION, &bytes, &what)
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

/// At most this many key files are tried: more is not a repository's own.
const MAX_TRIED: usize = 32;

/// Finds the slot of `slots` (from `list`) that `passphrase` opens;
/// returns the master key and the slot. Slots are tried cheapest first, so
/// a planted key file that asks for a lot of work does not delay the
/// others; a damaged one is skipped.
pub fn unlock(
    backend: &dyn Backend,
    repo_id: &str,
    (mut slots, bad): (Vec<KeySlot>, Unreadable),
    passphrase: &str,
) -> Result<(MasterKey, KeySlot)> {
    if slots.is_empty() {
        let why = match bad.first() {
            Some((name, e)) => format!("its only key files are damaged ({name}: {e})"),
            None => format!(
                "it has no key files in {}",
                backend.describe(Folder::Keys.as_str())
            ),
        };
        return Err(Error::corrupt(format!(
            "the repository is encrypted, but {why}: without a key its data cannot be read"
        ))
        .hint("put back the keys/ folder from a copy of this repository (or its backup)"));
    }
    slots.sort_by_key(|s| u64::from(s.file.kdf.memory_kib) * u64::from(s.file.kdf.iterations));
    let aad = wrap_aad(repo_id);
    let mut skipped = Vec::new();
    let untried = slots.len().saturating_sub(MAX_TRIED);
    for slot in slots.into_iter().take(MAX_TRIED) {
        let opened = slot_key(&slot).and_then(|(salt, wrapped)| {
            let wrapping = kdf::derive(passphrase.as_bytes(), &salt, &slot.file.kdf)?;
            Ok(seal::unwrap(&wrapping, &aad, &wrapped))
        });
        match opened {
            Ok(Some(master)) => return Ok((master, slot)),
            Ok(None) => {}
            Err(e) => skipped.push(format!(
                "{}: {e}",
                backend.describe(&crate::repo::names::key_name(&slot.id))
            )),
        }
    }
    let skipped = bad
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .chain(skipped)
        .collect::<Vec<_>>();
    let mut message = "the passphrase opens none of the repository's key files".to_string();
    if !skipped.is_empty() {
        message += &format!(" ({} unreadable: {})", skipped.len(), skipped.join("; "));
    }
    if untried > 0 {
        message += &format!(
            "; {untried} more key files were not tried (a repository has a few; someone may have \
             planted these)"
        );
    }
    Err(Error::new(ErrorKind::WrongPassphrase, message).hint(
        "check the passphrase (or the file or command that gives it); `platter key list` shows the key files",
    ))
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
pub fn remove(backend: &dyn Backend, id: &KeyId) -> Result<()> {
    backend.remove(&crate::repo::names::key_name(id))
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

    fn add(backend: &dyn Backend, repo_id: &str, master: &MasterKey, pass: &str) -> Result<KeyId> {
        NewKeyFile::wrap(repo_id, master, pass, &FAST)?.write(backend)
    }

    #[test]
    fn any_slot_opens_and_wrong_passphrases_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(Folder::Keys.as_str())).unwrap();
        let backend = LocalBackend::new(dir.path());
        let master = MasterKey::generate().unwrap();
        let first = add(&backend, "r1", &master, "one").unwrap();
        let second = add(&backend, "r1", &master, "two").unwrap();
        let unlock = |repo: &str, pass: &str| unlock(&backend, repo, list(&backend)?, pass);
        for (pass, slot) in [("one", &first), ("two", &second)] {
            let (key, opened) = unlock("r1", pass).unwrap();
            assert_eq!(key.bytes(), master.bytes());
            assert_eq!(&opened.id, slot);
        }
        let err = unlock("r1", "three").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongPassphrase);
        // A slot is tied to its repository.
        assert_eq!(
            unlock("r2", "one").unwrap_err().kind(),
            ErrorKind::WrongPassphrase
        );
        // A damaged or planted key file, and files that are not key files,
        // do not lock anyone out.
        let planted = KeyFile {
            created: "0000".into(),
            kdf: FAST,
            salt: "zz".into(),
            wrapped: "00".into(),
        };
        let planted = envelope::seal(KIND, VERSION, &planted).unwrap();
        let (a, b) = (KeyId::from_bytes([0xaa; 32]), KeyId::from_bytes([0xbb; 32]));
        backend
            .write_whole(&crate::repo::names::key_name(&a), &planted)
            .unwrap();
        backend.write_whole("keys/abc", b"junk").unwrap();
        backend
            .write_whole(&crate::repo::names::key_name(&b), &vec![b' '; 100_000])
            .unwrap();
        let (slots, bad) = list(&backend).unwrap();
        assert_eq!((slots.len(), bad.len()), (3, 1));
        assert!(unlock("r1", "two").is_ok());
        let err = unlock("r1", "three").unwrap_err();
        assert!(err.message().contains("2 unreadable"), "{err}");
        remove(&backend, &a).unwrap();
        remove(&backend, &b).unwrap();

        remove(&backend, &first).unwrap();
        assert!(unlock("r1", "one").is_err());
        assert!(unlock("r1", "two").is_ok());
        remove(&backend, &second).unwrap();
        assert_eq!(unlock("r1", "two").unwrap_err().kind(), ErrorKind::Corrupt);
    }
}
