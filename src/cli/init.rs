//! `platter init`: create a repository.

use std::path::PathBuf;

use platter::codec::{Compression, MasterKey};
use platter::engine::keys;
use platter::repo::{NewKey, Repository};

use super::key::KdfArgs;
use super::passphrase::OtherPasswordArgs;
use super::{Context, output};

/// Create a new repository in an empty or new folder
///
/// A new repository is encrypted unless --plain is given: every chunk,
/// map, index and manifest is sealed with AES-256-GCM under a random master
/// key, which is stored only wrapped under your passphrase (Argon2id). The
/// passphrase is asked twice on the terminal, or taken from
/// --password-file, PLATTER_PASSWORD_FILE, PLATTER_PASSWORD or
/// --password-command. Without the passphrase (or another key added with
/// `platter key add`) nothing in the repository can be read: keep it
/// somewhere other than the backups.
///
/// The repository keeps a 4 MiB file `reserve`, so that `forget --prune`
/// can free space even when the filesystem has filled up.
///
/// In object storage (s3:...), init creates a missing bucket when the
/// credentials may, and says so; other commands never create one.
#[derive(clap::Args)]
#[command(after_long_help = "Examples:\n  \
platter -r /backup/repo init\n  \
platter -r /backup/repo init --password-file /root/.platter-pass\n  \
platter -r /mnt/usb/repo init --copy-key-from /backup/repo\n  \
platter -r /tmp/scratch init --plain")]
pub struct Args {
    /// Chunk size: a power of two from 64K to 16M. Smaller chunks make
    /// incrementals cheaper, larger ones make the map and index smaller.
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = super::parse_size)]
    chunk_size: u64,

    /// Compression of stored chunks: lz4 or none
    #[arg(long, default_value = "lz4", value_name = "HOW")]
    compression: String,

    /// Encrypt the repository (the default)
    #[arg(long, conflicts_with = "plain")]
    encrypt: bool,

    /// Do not encrypt: whoever can read the repository can read every disk
    /// in it
    #[arg(long)]
    plain: bool,

    /// Share the master key of this encrypted repository (it needs its
    /// passphrase), so that `copy` between the two moves blobs as they are
    /// and `repair --from` works; the new repository gets its own key file
    #[arg(long, value_name = "PATH", conflicts_with = "plain")]
    copy_key_from: Option<PathBuf>,

    /// The --copy-key-from repository's passphrase, when it is not the
    /// new repository's
    #[command(flatten)]
    other: OtherPasswordArgs,

    #[command(flatten)]
    kdf: KdfArgs,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let compression = Compression::parse(&args.compression)?;
    let path = ctx.repo_path()?;
    platter::repo::config::check_chunk_size(args.chunk_size)?;
    let backend = ctx.backend()?;
    let local = backend.local_root().is_some();
    if local {
        Repository::check_new(path)?;
    }
    let passphrases = ctx.passphrases()?;
    // Once: without --kdf-iterations the passes are calibrated here.
    let kdf = if args.plain {
        None
    } else {
        Some(args.kdf.params()?)
    };
    let key = if let Some(kdf) = kdf {
        let master = match &args.copy_key_from {
            None => MasterKey::generate()?,
            Some(other) => {
                let other_repo =
                    args.other
                        .open(other, &passphrases, ("--copy-key-from", ctx.connections))?;
                keys::shared_master(&other_repo)?
            }
        };
        NewKey::Encrypted {
            master,
            passphrase: passphrases.new_passphrase()?,
            kdf,
        }
    } else {
        NewKey::Plain
    };
    let (repo, created_bucket) = if local {
        (
            Repository::init(path, args.chunk_size, compression, key)?,
            None,
        )
    } else {
        Repository::init_in(backend, args.chunk_size, compression, key)?
    };
    let config = repo.config();
    if ctx.json {
        output::json(&serde_json::json!({
            "repository": repo.location(),
            "created_bucket": created_bucket,
            "repo_id": config.repo_id,
            "chunk_size": config.chunk_size,
            "compression": config.compression,
            "encryption": config.encryption,
            "kdf": repo.key().and(kdf),
            "key_shared_with": args.copy_key_from.map(|p| p.display().to_string()),
        }))?;
    } else {
        if let Some(bucket) = &created_bucket {
            output::line(&format!("created bucket {bucket}"));
        }
        let how = match (&kdf, &args.copy_key_from) {
            (None, _) => "not encrypted".to_string(),
            (Some(kdf), None) => format!("encrypted, {}", super::key::describe_kdf(kdf)),
            (Some(kdf), Some(other)) => format!(
                "encrypted with the key of {}, {}",
                other.display(),
                super::key::describe_kdf(kdf)
            ),
        };
        output::line(&format!(
            "created repository {} (id {}, chunks of {}, {} compression, {how})",
            repo.location(),
            &config.repo_id[..8],
            output::bytes(config.chunk_size),
            config.compression
        ));
    }
    Ok(true)
}
