//! Checking a repository's stored bytes without its key (`verify
//! --without-key`): for a host that keeps an encrypted copy but must not
//! know the passphrase. Every crc32 the format keeps outside the seals is
//! checked: the config, key files, sealed manifests, index files and locks,
//! map headers and entries, pack tables, and every blob against its frame.
//! It proves the bytes are as written, not that they are authentic: that
//! needs the key (`verify --read-data`).

use std::time::Instant;

use crate::codec::seal::SEAL_OVERHEAD;
use crate::engine::verify_report::{VerifyReport, problem};
use crate::error::{ErrorKind, Result};
use crate::progress::Progress;
use crate::repo::backend::Backend;
use crate::repo::config::Config;
use crate::repo::index::Opening;
use crate::repo::map::MapReader;
use crate::repo::names::Folder;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotId, envelope, index, keys, pack, sealed};

pub fn verify_without_key(backend: &dyn Backend, progress: &dyn Progress) -> Result<VerifyReport> {
    let started = Instant::now();
    let config = Repository::read_config(backend)?;
    let mut report = VerifyReport::default();
    let damage = |report: &mut VerifyReport, name: &str, what: &str| {
        report.damage.push(problem(backend.describe(name), what));
    };
    let encrypted = config.encryption.is_some();
    let (slots, unreadable) = keys::list(backend)?;
    for (name, e) in &unreadable {
        damage(&mut report, name, e.message());
    }
    if encrypted && slots.is_empty() {
        damage(
            &mut report,
            Folder::Keys.as_str(),
            "no readable key file: nothing in this encrypted repository can be read without one",
        );
    }
    for folder in [Folder::Snapshots, Folder::Index, Folder::Locks] {
        for name in files(backend, folder)? {
            let checked = match folder {
                // Read a block at a time: an index file can be large.
                Folder::Index => index::read_entries(
                    backend,
                    Opening::WithoutKey { encrypted },
                    &name,
                    &mut |_, _| Ok(()),
                ),
                _ => backend
                    .read_whole(&name)
                    .and_then(|bytes| check_document(&config, folder, &bytes, &name)),
            };
            match checked {
                Ok(()) if folder == Folder::Snapshots => report.snapshots += 1,
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => damage(&mut report, &name, e.message()),
            }
        }
    }
    for name in files(backend, Folder::Maps)? {
        let Some(id) = name.rsplit('/').next().and_then(SnapshotId::parse) else {
            continue;
        };
        match MapReader::check_without_key(backend, &id, encrypted) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => damage(&mut report, &name, e.message()),
        }
    }
    let mut packs: Vec<_> = pack::packs_on_disk(backend)?.into_iter().collect();
    packs.sort_unstable();
    let names: Vec<String> = packs.iter().map(crate::repo::names::pack_name).collect();
    let total = names
        .iter()
        .filter_map(|n| backend.open(n).ok().map(|f| f.len()))
        .sum();
    progress.start("check", total);
    for name in names {
        match check_pack(backend, &config, &name, &mut report, progress) {
            Ok(()) => report.packs += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => damage(&mut report, &name, e.message()),
        }
    }
    progress.finish();
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Committed files of `folder` (not unfinished writes), as repository names.
fn files(backend: &dyn Backend, folder: Folder) -> Result<Vec<String>> {
    let mut names: Vec<String> = crate::repo::ids_in(backend, folder)?
        .into_iter()
        .map(|f| folder.file(&f))
        .collect();
    names.sort();
    Ok(names)
}

fn check_document(config: &Config, folder: Folder, bytes: &[u8], what: &str) -> Result<()> {
    if config.encryption.is_some() {
        return sealed::check_without_key(bytes, what);
    }
    match folder {
        Folder::Snapshots => Snapshot::decode(bytes, what).map(|_| ()),
        _ => envelope::open::<serde::de::IgnoredAny>("lock", 1, bytes, what).map(|_| ()),
    }
}

/// Checks a pack's table and every blob's crc32; a damaged blob is one
/// problem naming its offset, and the rest of the pack is still checked.
fn check_pack(
    backend: &dyn Backend,
    config: &Config,
    name: &str,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<()> {
    let file = backend.open(name)?;
    let what = backend.describe(name);
    let (sealed, frames) = pack::read_frames(&*file, &what)?;
    let encrypted = config.encryption.is_some();
    if sealed != encrypted {
        return Err(sealed::mismatch(&format!("pack {what}"), sealed, encrypted));
    }
    // No blob is longer than a chunk stored raw and sealed.
    let longest = config.chunk_size + SEAL_OVERHEAD as u64;
    let mut buf = Vec::new();
    for frame in frames {
        if u64::from(frame.stored_len) > longest {
            report.damage.push(problem(
                what.clone(),
                &format!(
                    "the blob at offset {} claims {} bytes, more than a chunk can be",
                    frame.offset, frame.stored_len
                ),
            ));
            continue;
        }
        buf.resize(frame.stored_len as usize, 0);
        let good = file
            .read_exact_at(&mut buf, frame.offset)
            .map(|()| crate::codec::crc32(&buf) == frame.crc);
        if !matches!(good, Ok(true)) {
            report.damage.push(problem(
                what.clone(),
                &format!(
                    "the blob at offset {} ({} bytes) fails its crc32: the stored bytes are damaged",
                    frame.offset, frame.stored_len
                ),
            ));
        }
        report.chunks += 1;
        report.bytes_read += u64::from(frame.stored_len);
        progress.advance(u64::from(frame.stored_len));
    }
    Ok(())
}
