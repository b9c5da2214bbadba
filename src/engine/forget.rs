//! Forgetting snapshots by a retention policy or by name, and protecting
//! snapshots from it. Forgetting removes manifests and maps only; the
//! chunks go with `prune` (`forget --prune` runs it under the same lock).
//! A policy that would leave a source with no snapshot is refused before
//! anything is removed (see `retention`); naming snapshots may remove a
//! source's last ones, as the user chose them.

use crate::engine::prune::{PruneOptions, PruneReport, prune_locked};
use crate::engine::retention::{Decision, Policy, decide, unmatched_tags};
use crate::engine::snapshots::{Selection, SourceFilter, select_from};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::lock::LockKind;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotId};

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Snapshots to forget by name, instead of a policy.
    pub snapshots: Vec<String>,
    /// Apply the policy to this source only.
    pub source: Option<SourceFilter>,
    /// Apply the policy to snapshots of this host only.
    pub host: Option<String>,
    pub dry_run: bool,
    /// Prune afterwards (not with `dry_run`).
    pub prune: Option<PruneOptions>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    pub removed: Vec<SnapshotId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
}

pub fn forget(
    repo: &Repository,
    options: &ForgetOptions,
    progress: &dyn Progress,
) -> Result<ForgetReport> {
    check_options(options)?;
    let _lock = super::lock_repo(repo, LockKind::Exclusive, "forget", progress)?;
    let (mut snaps, broken) = repo.snapshots()?;
    if options.prune.is_some()
        && !options.dry_run
        && let Some(b) = broken.first()
    {
        return Err(Error::corrupt(format!(
            "snapshot manifest {} is unreadable ({}): prune could not tell what it needs",
            repo.describe(&b.name),
            b.error
        ))
        .hint("nothing was forgotten; run `platter verify`, or forget without --prune"));
    }
    for b in &broken {
        progress.warn(&format!(
            "ignoring unreadable manifest {} ({}): it is neither kept nor removed",
            repo.describe(&b.name),
            b.error
        ));
    }
    let decisions = if options.snapshots.is_empty() {
        by_policy(repo, options, &mut snaps, progress)?
    } else {
        named(repo, &options.snapshots, &mut snaps)?
    };
    let mut removed = Vec::new();
    if !options.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            if let Some(s) = snaps.iter().find(|s| s.id == d.snapshot) {
                repo.remove_snapshot(s)?;
                removed.push(s.id);
            }
        }
    }
    let prune = match options.prune {
        Some(p) if !options.dry_run => Some(prune_locked(repo, &p, progress)?),
        _ => None,
    };
    if !options.dry_run {
        // The lock may have been taken with the space reserve's room.
        super::remake_reserve(repo, progress);
    }
    Ok(ForgetReport {
        dry_run: options.dry_run,
        decisions,
        removed,
        prune,
    })
}

/// Refuses options that say nothing, or two things at once.
fn check_options(options: &ForgetOptions) -> Result<()> {
    match (options.policy.is_empty(), options.snapshots.is_empty()) {
        (true, true) => {
            return Err(Error::bad_input(
                "say what to keep (--keep-last, --keep-daily, ...) or name snapshots to forget",
            )
            .hint("see `platter forget --help`; add --dry-run to see what a policy would do"));
        }
        (false, false) => {
            return Err(Error::bad_input(
                "give either a retention policy or snapshot names, not both",
            ));
        }
        _ => {}
    }
    if !options.snapshots.is_empty() && (options.source.is_some() || options.host.is_some()) {
        return Err(Error::bad_input(
            "--source and --host choose the snapshots a policy applies to; they do not narrow \
             snapshots named by id",
        )
        .hint("name the snapshots alone, or give a policy with --source/--host"));
    }
    Ok(())
}

/// Decisions of the policy, over the snapshots of the source and host
/// asked for (`snaps` becomes those).
fn by_policy(
    repo: &Repository,
    options: &ForgetOptions,
    snaps: &mut Vec<Snapshot>,
    progress: &dyn Progress,
) -> Result<Vec<Decision>> {
    if options.source.is_some() || options.host.is_some() {
        let selection = Selection {
            source: options.source.clone(),
            host: options.host.clone(),
            ..Selection::default()
        };
        let existed = !snaps.is_empty();
        let selected = select_from(repo, std::mem::take(snaps), Vec::new(), &selection)?;
        selected.require_some(&selection, existed, "nothing was forgotten")?;
        selected.require_one_host(&selection)?;
        *snaps = selected.snapshots;
    }
    let decisions = decide(snaps, &options.policy)?;
    // Not refused (other rules kept something in every source), but
    // the snapshots the tag was meant to keep may be among those going.
    for tag in unmatched_tags(snaps, &options.policy) {
        progress.warn(&format!(
            "no snapshot{} carries the tag {tag} of --keep-tag: check its spelling; \
             the other rules decided alone",
            match &options.source {
                Some(source) => format!(" of source {}", source.path),
                None => String::new(),
            }
        ));
    }
    Ok(decisions)
}

/// Decisions for snapshots named by the user: each goes, unless protected
/// (then the whole command is refused).
fn named(repo: &Repository, specs: &[String], snaps: &mut Vec<Snapshot>) -> Result<Vec<Decision>> {
    let selection = Selection {
        ids: specs.to_vec(),
        ..Selection::default()
    };
    let chosen = select_from(repo, Vec::new(), Vec::new(), &selection)?.snapshots;
    if let Some(s) = chosen.iter().find(|s| s.protected) {
        return Err(Error::bad_input(format!(
            "snapshot {} is protected; nothing was forgotten",
            s.short_id()
        ))
        .hint(format!(
            "unprotect it first: `platter protect --remove {}`",
            s.short_id()
        )));
    }
    let decisions = chosen
        .iter()
        .map(|s| Decision {
            snapshot: s.id,
            time: s.time.clone(),
            source: crate::engine::retention::group_of(s),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    *snaps = chosen;
    Ok(decisions)
}
