//! `platter upgrade`: turns on, in a repository made by an older platter,
//! the format features this one knows (`repo::config::FEATURES`). From
//! then on a platter that predates a feature refuses the repository
//! instead of misreading it, or pruning what it needs.
//!
//! Only the config changes (rewritten whole, under an exclusive lock, so
//! no backup runs meanwhile); files already stored stay as they are and
//! stay readable. New backups then use the features.

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::config::{Config, FEATURES};
use crate::repo::lock::LockKind;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeReport {
    /// Features this run turned on.
    pub enabled: Vec<String>,
    /// The repository's features afterwards.
    pub features: Vec<String>,
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
    Ok(UpgradeReport {
        enabled,
        features: config.features,
        dry_run,
    })
}
