//! Creating a repository, all or nothing.
//!
//! A new folder is built under a hidden name beside the one asked for
//! (`.NAME.platter-init-HOST-PID-START-RANDOM`) and renamed into place whole, without
//! replacing anything that appeared there meanwhile: two `init`s of one
//! name cannot both succeed, and an interrupted or failed one leaves
//! nothing but, at worst, its hidden folder (removed on SIGINT/SIGTERM).
//! An existing empty folder (a mount point, a folder made for it) is
//! filled in place: the config, written last, must not exist yet, and a
//! failure removes what this run made. A repository is never made inside
//! another one, where the outer one's verify and prune would meet it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::codec::MasterKey;
use crate::codec::{Compression, Sealing};
use crate::error::{Error, Result};
use crate::interrupt::{self, Registration};
use crate::repo::backend::{self, Backend, LocalBackend, SharedBackend};
use crate::repo::config::{self, Config, Encryption};
use crate::repo::footprint::holds_repository;
use crate::repo::names::{CONFIG, Folder, RESERVE};
use crate::repo::{CONFIG_KIND, KeyId, NewKey, Repository, envelope, keys};

impl Repository {
    /// Checks that `path` can hold a new repository: an empty directory
    /// (`true`) or nothing yet (`false`), and not inside a repository.
    /// Callers check before asking for a passphrase.
    pub fn check_new(path: &Path) -> Result<bool> {
        if let Some(outer) = enclosing_repository(path) {
            return Err(Error::bad_input(format!(
                "{} lies inside the platter repository {}",
                path.display(),
                outer.display()
            ))
            .hint("nothing was created; make the new repository outside any other one"));
        }
        match std::fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    let what = if path.join(CONFIG).exists() {
                        "is already a platter repository"
                    } else {
                        "is not empty and is not a platter repository"
                    };
                    return Err(Error::bad_input(format!("{} {what}", path.display()))
                        .hint("name a new or empty directory"));
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::bad_input(
                format!("{} is a file, not a directory", path.display()),
            )),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Creates a repository in `path`, which must not exist or be empty.
    pub fn init(
        path: &Path,
        chunk_size: u64,
        compression: Compression,
        key: NewKey,
    ) -> Result<Repository> {
        config::check_chunk_size(chunk_size)?;
        let exists = Repository::check_new(path)?;
        let (config, sealing, key) = prepare(chunk_size, compression, key)?;
        let key_file = key.as_ref().map(|(_, file)| file);
        let key_id = if exists {
            fill_in_place(path, &config, key_file)?
        } else {
            build_and_rename(path, &config, key_file)?
        };
        Ok(Repository {
            backend: Arc::new(LocalBackend::new(path)),
            config,
            sealing,
            key: key.zip(key_id).map(|((master, _), id)| (master, id)),
        })
    }

    /// Creates a repository in a store that is not a local folder (see
    /// `init` for one that is), which must hold nothing yet. A missing
    /// bucket is created, when the credentials may, once nothing else can
    /// fail before the first write; its name is returned, for the user. The
    /// config is written last and never over another one: of two `init`s,
    /// one wins.
    pub fn init_in(
        backend: SharedBackend,
        chunk_size: u64,
        compression: Compression,
        key: NewKey,
    ) -> Result<(Repository, Option<String>)> {
        config::check_chunk_size(chunk_size)?;
        let missing = backend.missing_bucket()?;
        if missing.is_none() {
            check_place(&*backend)?;
        }
        let (config, sealing, key) = prepare(chunk_size, compression, key)?;
        let created = match missing {
            Some(bucket) => {
                let made = backend.create_bucket()?;
                // Another init may have made it meanwhile, and filled it.
                check_place(&*backend)?;
                made.then_some(bucket)
            }
            None => None,
        };
        // An init interrupted before it returns removes its key file and
        // its config: a place holding only a key file would be neither
        // empty (a new init refuses it) nor a repository, and a config
        // without its key file would be a repository nobody can open.
        let key_id = key.as_ref().map(|_| KeyId::random());
        let _cleanup = (
            key_id
                .as_ref()
                .and_then(|id| backend.remove_on_interrupt(&crate::repo::names::key_name(id))),
            backend.remove_on_interrupt(CONFIG),
        );
        if let (Some((_, file)), Some(id)) = (&key, &key_id) {
            file.write_as(&*backend, id)?;
        }
        let bytes = envelope::seal(CONFIG_KIND, config.version(), &config)?;
        // Stores without conditional writes let two inits both write: the
        // config read back says which one won.
        let written = backend.write_new(CONFIG, &bytes).and_then(|()| {
            let there = Repository::read_config(&*backend)?;
            if there.repo_id != config.repo_id {
                return Err(Error::busy(format!(
                    "another repository was created at {} at the same moment",
                    backend.location()
                ))
                .hint("nothing of this init is left; use the repository that is there"));
            }
            Ok(())
        });
        if let Err(e) = written {
            if let Some(id) = &key_id {
                let _ = backend.remove(&crate::repo::names::key_name(id));
            }
            return Err(e);
        }
        let repo = Repository {
            backend,
            config,
            sealing,
            key: key.zip(key_id).map(|((master, _), id)| (master, id)),
        };
        Ok((repo, created))
    }
}

/// Checks that `backend` can hold a new repository: nothing there yet, and
/// not inside another repository.
fn check_place(backend: &dyn Backend) -> Result<()> {
    if let Some(outer) = backend.enclosing_repository()? {
        return Err(Error::bad_input(format!(
            "{} lies inside the platter repository {outer}",
            backend.location()
        ))
        .hint("nothing was created; make the new repository outside any other one"));
    }
    if !backend.list("")?.is_empty() {
        return Err(Error::bad_input(format!(
            "{} is not empty: a new repository needs a place of its own",
            backend.location()
        ))
        .hint("nothing was created; name a new place"));
    }
    Ok(())
}

/// A new repository's master key and its first key file.
type NewMaster = (MasterKey, keys::NewKeyFile);

/// A new repository's config, how it seals, and its key with the key file
/// for the passphrase (made first: Argon2id is the part that can fail on a
/// small machine, and nothing is created yet).
fn prepare(
    chunk_size: u64,
    compression: Compression,
    key: NewKey,
) -> Result<(Config, Sealing, Option<NewMaster>)> {
    let encrypted = matches!(key, NewKey::Encrypted { .. });
    let config = Config {
        repo_id: crate::repo::random_hex(32),
        chunk_size,
        compression,
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        encryption: encrypted.then(Encryption::current),
        features: Config::all_features(),
    };
    let (sealing, key) = match key {
        NewKey::Plain => (Sealing::plain(), None),
        NewKey::Encrypted {
            master,
            passphrase,
            kdf,
        } => {
            let file = keys::NewKeyFile::wrap(&config.repo_id, &master, &passphrase, &kdf)?;
            (Sealing::encrypted(&master), Some((master, file)))
        }
    };
    Ok((config, sealing, key))
}

/// The nearest folder above `path` (symbolic links resolved, `path`'s own
/// too when it exists) that holds a repository.
fn enclosing_repository(path: &Path) -> Option<PathBuf> {
    let absolute = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .ok()?;
    let mut dir = absolute.parent();
    while let Some(d) = dir {
        let real = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
        if holds_repository(&real) {
            return Some(real);
        }
        dir = d.parent();
    }
    None
}

/// Builds the repository in a hidden folder beside `path` and renames it
/// into place, never over anything. Returns the key file's id.
fn build_and_rename(
    path: &Path,
    config: &Config,
    key: Option<&keys::NewKeyFile>,
) -> Result<Option<KeyId>> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::bad_input(format!("{} names no folder", path.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    let prefix = format!(".{}.platter-init-", name.to_string_lossy());
    crate::os::remove_leftovers_of_dead(parent, &prefix, crate::os::Leftover::Folder);
    let staging = parent.join(format!(
        "{prefix}{}-{}",
        crate::owner::this_writer(),
        crate::repo::random_hex(4)
    ));
    let _cleanup = interrupt::remove_tree_on_interrupt(&staging);
    let built = std::fs::create_dir(&staging)
        .map_err(|e| Error::io("create", &staging, e))
        .and_then(|()| fill(&staging, config, key, None))
        .and_then(|id| {
            crate::os::rename_no_replace(&staging, path).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST)
                    || e.raw_os_error() == Some(libc::ENOTEMPTY)
                {
                    Error::busy(format!(
                        "{} appeared while this repository was being made (another init?)",
                        path.display()
                    ))
                    .hint("nothing was created; look at what is there now")
                } else {
                    Error::io("rename into place", path, e)
                }
            })?;
            Ok(id)
        });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let id = built?;
    backend::sync_dir(parent)?;
    Ok(id)
}

/// Fills the existing empty folder `path`. Another init may fill it at the
/// same time: whatever this run made is removed on a failure or a signal
/// only while no config exists (once one does, the folders, and the
/// reserve, belong to that repository), and a folder only when empty.
/// Returns the key file's id.
fn fill_in_place(
    path: &Path,
    config: &Config,
    key: Option<&keys::NewKeyFile>,
) -> Result<Option<KeyId>> {
    let config_path = path.join(CONFIG);
    let mut made: Vec<(PathBuf, Registration)> = Vec::new();
    for folder in Folder::REQUIRED.iter().chain(key.map(|_| &Folder::Keys)) {
        let dir = path.join(folder.as_str());
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let cleanup = interrupt::remove_unless_on_interrupt(&dir, &config_path);
                made.push((dir, cleanup));
            }
            // Made by another init of the same folder: not ours to remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                undo_unless_configured(path, &made);
                return Err(Error::io("create", &dir, e));
            }
        }
    }
    let filled = fill(path, config, key, Some(&config_path));
    if filled.is_err() {
        undo_unless_configured(path, &made);
    }
    filled
}

/// Removes the empty folders this run made, unless a config exists.
fn undo_unless_configured(path: &Path, made: &[(PathBuf, Registration)]) {
    if path.join(CONFIG).symlink_metadata().is_ok() {
        return;
    }
    for (dir, _) in made.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Writes the folders, the key file, the space reserve and, last, the
/// config (which must not exist yet) into `dir`. Returns the key file's id.
/// In place (`in_place` is the config's path), the key file and the
/// reserve are undone on a failure or a signal while no config exists; in
/// a staging folder, removing the folder undoes everything.
fn fill(
    dir: &Path,
    config: &Config,
    key: Option<&keys::NewKeyFile>,
    in_place: Option<&Path>,
) -> Result<Option<KeyId>> {
    let backend = LocalBackend::new(dir);
    for folder in Folder::REQUIRED.iter().chain(key.map(|_| &Folder::Keys)) {
        let sub = dir.join(folder.as_str());
        std::fs::create_dir_all(&sub).map_err(|e| Error::io("create", &sub, e))?;
    }
    backend::sync_dir(dir)?;
    let mut undo = Vec::new();
    let undo_on_signal =
        |path: PathBuf| in_place.map(|c| interrupt::remove_unless_on_interrupt(&path, c));
    let key_id = key.map(|file| file.write(&backend)).transpose()?;
    if let Some(id) = &key_id {
        undo.extend(undo_on_signal(dir.join(crate::repo::names::key_name(id))));
    }
    undo.extend(undo_on_signal(dir.join(RESERVE)));
    let configured = crate::repo::write_reserve(&backend).and_then(|()| {
        // The config is written last: a folder without one is no
        // repository.
        let bytes = envelope::seal(CONFIG_KIND, config.version(), config)?;
        backend.write_new(CONFIG, &bytes)
    });
    if let Err(e) = configured {
        // This run's key file is no one's; the reserve is another
        // repository's once a config exists (another init won the race).
        if let Some(id) = &key_id {
            let _ = backend.remove(&crate::repo::names::key_name(id));
        }
        if dir.join(CONFIG).symlink_metadata().is_err() {
            let _ = backend.remove(RESERVE);
        }
        return Err(e);
    }
    Ok(key_id)
}
