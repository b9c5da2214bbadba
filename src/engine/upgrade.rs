//! `platter upgrade`: turns on, in a repository made by an older platter,
//! the format features this one knows (`repo::config::FEATURES`). From
//! then on a platter that predates a feature refuses the repository
//! instead of misreading it, or pruning what it needs.
//!
//! The config is rewritten whole, under an exclusive lock, so no backup
//! runs meanwhile; new backups then use the features. Stored files stay
//! readable as they are, and stay, but for the index: with `sorted-index`
//! on, index files of older versions are rewritten into one sorted file
//! (read, then written block by block: memory does not grow with them),
//! which is durable before they go. A damaged one stops the rewrite and
//! leaves every index file as it was (`rebuild-index` mends it).

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::config::{Config, FEATURES};
use crate::repo::index::{Opening, read_entries};
use crate::repo::lock::LockKind;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeReport {
    /// Features this run turned on.
    pub enabled: Vec<String>,
    /// The repository's features afterwards.
    pub features: Vec<String>,
    /// Index files of an older version rewritten into one sorted file
    /// (or that would be, in a dry run).
    pub index_files_rewritten: usize,
    /// Entries of the files rewritten.
    pub index_entries_rewritten: u64,
    pub dry_run: bool,
}

pub fn upgrade(repo: &Repository, dry_run: bool, progress: &dyn Progress) -> Result<UpgradeReport> {
    let _lock = if dry_run {
        None
    } else {
        Some(super::lock_repo(
            repo,
            LockKind::Exclusive,
            "upgrade",
            progress,
        )?)
    };
    // Read again under the lock: another upgrade may have run since open.
    let mut config: Config = Repository::read_config(repo.backend())?;
    let enabled: Vec<String> = FEATURES
        .iter()
        .filter(|f| !config.has(f))
        .map(|f| f.to_string())
        .collect();
    config.features.extend(enabled.iter().cloned());
    if !enabled.is_empty() && !dry_run {
        repo.rewrite_config(&config)?;
    }
    let mut report = UpgradeReport {
        enabled,
        features: config.features.clone(),
        dry_run,
        ..UpgradeReport::default()
    };
    let repo = repo.with_config(config.clone());
    let old = unsorted_index_files(&repo)?;
    report.index_files_rewritten = old.len();
    if old.is_empty() || dry_run {
        return Ok(report);
    }
    progress.start("rewrite index", old.len() as u64);
    let mut writer = repo.index_writer();
    let mut entries = 0u64;
    // The features are on whatever happens below: the old files stay
    // readable as they are until the rewrite is done.
    let stopped = |e: crate::Error| {
        let on = if report.enabled.is_empty() {
            String::new()
        } else {
            format!("format feature(s) {} are on; ", report.enabled.join(", "))
        };
        e.context(format!(
            "{on}rewriting the index into the sorted format stopped, and every index file stays \
             as it was (and is read as it is)"
        ))
    };
    for name in &old {
        // A failure to write (the scratch folder's disk full) is this
        // host's, not damage of the file being read.
        let mut wrote = Ok(());
        let read = read_entries(
            repo.backend(),
            Opening::With(repo.sealing()),
            name,
            &mut |p, e| {
                entries += 1;
                writer.push(p, &e).map_err(|err| {
                    wrote = Err(err);
                    crate::Error::internal("the scratch folder failed")
                })
            },
        );
        wrote.map_err(&stopped)?;
        read.map_err(|e| {
            stopped(e).hint(
                "mend the index with `platter rebuild-index`, then run `platter upgrade` again",
            )
        })?;
        progress.advance(1);
    }
    progress.finish();
    repo.replace_index_files(writer, &old).map_err(stopped)?;
    report.index_entries_rewritten = entries;
    Ok(report)
}

/// The repository's index files not in the sorted format.
fn unsorted_index_files(repo: &Repository) -> Result<Vec<String>> {
    if !repo.sorted_index() {
        return Ok(Vec::new());
    }
    let mut old = Vec::new();
    for name in repo.index_files()? {
        if !crate::repo::index::is_sorted_file(repo.backend(), &name)? {
            old.push(name);
        }
    }
    Ok(old)
}
