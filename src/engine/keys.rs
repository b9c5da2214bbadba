//! The key files of an encrypted repository as the `key` commands change
//! them, and the master key `init --copy-key-from` shares.
//!
//! The rules live here, under a repository lock: a key file is removed
//! only if it is not the one that opened the repository, `passwd` writes
//! the new key file before it removes the old one, and a key file is named
//! by its id or a unique prefix of it.
//!
//! Locks: `list` reads under a shared lock (or none on a read-only
//! repository), `add` writes under a shared lock (a new key file takes
//! nothing away). `remove` and `passwd` take the exclusive lock, and
//! `remove` checks under it that the key file that opened the repository
//! is still there. Without both, two `key remove` run at once, each opened
//! with one of the last two passphrases and each removing the other's key
//! file, would both pass the check and leave the repository with no key
//! at all. With them the second one waits its turn, finds its own key file
//! gone and refuses. Since `remove` keeps its opener and `passwd` keeps
//! the key file it adds, a repository always keeps at least one key file.
//! The Argon2id work of a new key file is done before any lock is taken.

use crate::codec::kdf::KdfParams;
use crate::codec::seal::MasterKey;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::keys::{self, KeySlot, NewKeyFile, Unreadable};
use crate::repo::lock::LockKind;
use crate::repo::{KeyId, Repository};

/// The master key and the id of the key file that opened `repo`; an
/// error for a repository that is not encrypted.
pub fn opened_key(repo: &Repository) -> Result<(&MasterKey, &KeyId)> {
    repo.key().ok_or_else(|| {
        Error::bad_input(format!(
            "{} is not encrypted: it has no keys",
            repo.location()
        ))
        .hint("an encrypted repository is made with `platter init` (without --plain)")
    })
}

/// The key files of a repository.
pub struct KeyList {
    /// Oldest first.
    pub slots: Vec<KeySlot>,
    /// The id of the key file that opened the repository this time.
    pub current: KeyId,
    /// Key files that cannot be read.
    pub damaged: Unreadable,
}

/// Lists the key files of `repo`.
pub fn list(repo: &Repository, progress: &dyn Progress) -> Result<KeyList> {
    let (_, current) = opened_key(repo)?;
    let _lock = super::lock_for_reading(repo, "key list", progress)?;
    let (slots, damaged) = keys::list(repo.backend())?;
    Ok(KeyList {
        slots,
        current: *current,
        damaged,
    })
}

/// Adds a key file for `passphrase`; returns its id.
pub fn add(
    repo: &Repository,
    passphrase: &str,
    kdf: &KdfParams,
    progress: &dyn Progress,
) -> Result<KeyId> {
    let file = wrap(repo, passphrase, kdf)?;
    let _lock = super::lock_repo(repo, LockKind::Shared, "key add", progress)?;
    file.write(repo.backend())
}

/// A key file that replaced another.
pub struct Changed {
    pub added: KeyId,
    pub removed: KeyId,
}

/// Replaces the key file that opened `repo` with one for `passphrase`.
pub fn passwd(
    repo: &Repository,
    passphrase: &str,
    kdf: &KdfParams,
    progress: &dyn Progress,
) -> Result<Changed> {
    let (_, current) = opened_key(repo)?;
    let file = wrap(repo, passphrase, kdf)?;
    let lock = super::lock_repo(repo, LockKind::Exclusive, "key passwd", progress)?;
    // The new key file is durable before the old one goes.
    let changed = file.write(repo.backend()).and_then(|added| {
        keys::remove(repo.backend(), current)?;
        Ok(Changed {
            added,
            removed: *current,
        })
    });
    drop(lock);
    // The lock may have been taken with the space reserve's room.
    super::remake_reserve(repo, progress);
    changed
}

/// Removes the key file `spec` names (its id or a unique prefix); returns
/// its id. The key file that opened the repository is not removed.
pub fn remove(repo: &Repository, spec: &str, progress: &dyn Progress) -> Result<KeyId> {
    let (_, current) = opened_key(repo)?;
    let lock = super::lock_repo(repo, LockKind::Exclusive, "key remove", progress)?;
    let removed = remove_locked(repo, current, spec);
    drop(lock);
    // The lock may have been taken with the space reserve's room.
    super::remake_reserve(repo, progress);
    removed
}

/// `remove`'s work, under the exclusive lock.
fn remove_locked(repo: &Repository, current: &KeyId, spec: &str) -> Result<KeyId> {
    let (slots, _) = keys::list(repo.backend())?;
    if !slots.iter().any(|s| s.id == *current) {
        return Err(Error::busy(format!(
            "key {} (the one this passphrase opened) was removed while this command ran: \
             removing another one could lock everyone out",
            current.prefix(12)
        ))
        .hint("`platter key list` with a passphrase that still opens the repository shows what is left"));
    }
    let slot = pick(&slots, spec)?;
    if slot.id == *current {
        return Err(Error::bad_input(format!(
            "key {} is the one this passphrase opened: removing it could lock you out",
            slot.id.prefix(12)
        ))
        .hint("open with another passphrase to remove this one, or use `platter key passwd`"));
    }
    keys::remove(repo.backend(), &slot.id)?;
    Ok(slot.id)
}

/// The master key of `other` (opened with its passphrase), for a new
/// repository that shares it (`init --copy-key-from`).
pub fn shared_master(other: &Repository) -> Result<MasterKey> {
    let (master, _) = other.key().ok_or_else(|| {
        Error::bad_input(format!(
            "{} is not encrypted: it has no key to share",
            other.location()
        ))
    })?;
    MasterKey::from_bytes(master.bytes()).ok_or_else(|| Error::internal("key length"))
}

fn wrap(repo: &Repository, passphrase: &str, kdf: &KdfParams) -> Result<NewKeyFile> {
    let (master, _) = opened_key(repo)?;
    NewKeyFile::wrap(&repo.config().repo_id, master, passphrase, kdf)
}

/// The one slot whose id starts with `spec` (any case).
fn pick<'a>(slots: &'a [KeySlot], spec: &str) -> Result<&'a KeySlot> {
    let spec = spec.to_ascii_lowercase();
    let matches: Vec<&KeySlot> = slots
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&spec))
        .collect();
    match matches.as_slice() {
        [one] if !spec.is_empty() => Ok(one),
        [] => Err(Error::not_found(format!("no key file matches {spec:?}"))
            .hint("`platter key list` shows them")),
        _ => Err(Error::bad_input(format!(
            "{spec:?} matches {} key files: give more digits",
            matches.len()
        ))),
    }
}
