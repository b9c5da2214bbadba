//! `platter run`: one job, start to end. The order is backup (each
//! source) → retention and prune → copy to each copy target (then that
//! target's own retention) → restore test, between the before and after
//! hooks. Which steps still run after a failure is the table:
//!
//! | failed step | what still runs |
//! | --- | --- |
//! | a before hook, a backup | copies (of what exists), the restore test; no retention on the primary |
//! | retention, prune | copies, restore test |
//! | one copy | the other copies, the restore test; that copy's retention is skipped |
//! | restore test | everything; the run fails |
//!
//! The after hooks always run: after a failure, after a timeout, and on
//! SIGTERM (the interrupt watcher runs them before the process exits with
//! 143). The run's exit status is its first failed step's.
//!
//! Repository locks another command holds (another job's prune) are
//! waited for, up to the job's `lock_wait`, instead of failing the night.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::backup::{BackupOptions, backup};
use crate::engine::copy::{CopyOptions, copy};
use crate::engine::forget::{ForgetOptions, forget};
use crate::engine::prune::{PruneOptions, prune};
use crate::engine::retention::{decide, group_of};
use crate::engine::snapshots::{Selection, SourceFilter};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::file::{CopySpec, Job, PassphraseSpec, RetentionSpec};
use crate::jobs::summary::{Outcome, Step, StepError, Summary};
use crate::jobs::{hooks, restore_test, state};
use crate::progress::Progress;
use crate::repo::keys::{NoPassphrase, PassphraseSource};
use crate::repo::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotId};

/// How long a step waits for a repository lock when the job says nothing.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// A passphrase source from a file or a command (the command line's, so
/// a job reads them exactly as `--password-file` and
/// `--password-command` do): (command, file, what it is for).
pub type External<'a> =
    &'a dyn Fn(Option<String>, Option<PathBuf>, String) -> Box<dyn PassphraseSource>;

/// What a run needs besides the job.
pub struct RunEnv<'a> {
    pub external: External<'a>,
    /// Requests in flight at once to object storage.
    pub connections: usize,
    pub progress: &'a dyn Progress,
}

/// Runs `job`; the summary says how each step went. Fails only when the
/// run cannot start (the job is running already).
pub fn run(job: &Job, env: &RunEnv) -> Result<Summary> {
    let _lock = state::lock_job(&job.name)?;
    let started = Instant::now();
    let shared = Arc::new(Mutex::new(Summary::new(
        &job.name,
        &job.path.display().to_string(),
    )));
    let runner = Runner {
        job,
        env,
        summary: Arc::clone(&shared),
        hook_timeout: job.file.hooks.timeout.unwrap_or(hooks::DEFAULT_TIMEOUT),
        lock_wait: job.file.lock_wait.unwrap_or(DEFAULT_LOCK_WAIT),
    };
    let on_signal = on_interrupt(job, Arc::clone(&shared), runner.hook_timeout, started);
    runner.steps();
    // From here the after hooks run here, not from the watcher.
    drop(on_signal);
    runner.hooks("after", &job.file.hooks.after);
    let failed = runner.summary().first_failure().is_some();
    if failed {
        runner.summary_mut(|s| s.finish(started.elapsed().as_secs_f64()));
        runner.hooks("on_failure", &job.file.hooks.on_failure);
    }
    let mut summary = runner.summary();
    summary.finish(started.elapsed().as_secs_f64());
    if let Ok(doc) = serde_json::to_value(&summary)
        && let Err(e) = state::append_run(&job.name, &doc)
    {
        env.progress
            .warn(&format!("the run was not written to the job log: {e}"));
    }
    Ok(summary)
}

/// On SIGTERM (or Ctrl-C) while steps run, before the watcher ends the
/// process: the after hooks, given the summary so far, and the run in the
/// job log, as interrupted.
fn on_interrupt(
    job: &Job,
    summary: Arc<Mutex<Summary>>,
    timeout: Duration,
    started: Instant,
) -> crate::interrupt::Registration {
    let after = job.file.hooks.after.clone();
    let name = job.name.clone();
    crate::interrupt::call_on_interrupt(move || {
        let (doc, logged) = {
            let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
            s.finish(started.elapsed().as_secs_f64());
            s.result = "interrupted".into();
            (s.to_json(), serde_json::to_value(&*s))
        };
        for command in &after {
            if let Err(e) = hooks::run_while_interrupted(command, &doc, timeout) {
                crate::printable::to_stderr(&format!("platter: after hook: {e}"));
            }
        }
        if let Ok(value) = logged
            && let Err(e) = state::append_run(&name, &value)
        {
            crate::printable::to_stderr(&format!(
                "platter: the run was not written to the job log: {e}"
            ));
        }
        true
    })
}

struct Runner<'a> {
    job: &'a Job,
    env: &'a RunEnv<'a>,
    summary: Arc<Mutex<Summary>>,
    hook_timeout: Duration,
    lock_wait: Duration,
}

/// What a step returns: what it did, for the summary.
type Did = Result<String>;

impl Runner<'_> {
    fn summary(&self) -> Summary {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn summary_mut(&self, change: impl FnOnce(&mut Summary)) {
        change(&mut self.summary.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs one step and records it; whether it succeeded.
    fn step(&self, step: &str, target: &str, work: impl FnOnce() -> Did) -> bool {
        let started = Instant::now();
        let outcome = work();
        let duration_s = started.elapsed().as_secs_f64();
        let ok = outcome.is_ok();
        let (result, detail, error) = match outcome {
            Ok(detail) => (Outcome::Ok, detail, None),
            Err(e) => {
                self.env
                    .progress
                    .warn(&format!("{step} {target} failed: {e}"));
                (Outcome::Failed, String::new(), Some(StepError::from(&e)))
            }
        };
        self.record(Step {
            step: step.into(),
            target: target.into(),
            result,
            detail,
            error,
            duration_s,
        });
        ok
    }

    fn skip(&self, step: &str, target: &str, why: &str) {
        self.record(Step {
            step: step.into(),
            target: target.into(),
            result: Outcome::Skipped,
            detail: why.into(),
            error: None,
            duration_s: 0.0,
        });
    }

    fn record(&self, step: Step) {
        self.summary_mut(|s| s.steps.push(step));
    }

    /// Each hook of `list` in turn; whether all succeeded.
    fn hooks(&self, which: &str, list: &[String]) -> bool {
        let mut all = true;
        for command in list {
            let doc = self.summary().to_json();
            all &= self.step(&format!("hook {which}"), command, || {
                hooks::run(command, &doc, self.hook_timeout).map(|()| String::new())
            });
        }
        all
    }

    fn steps(&self) {
        let file = &self.job.file;
        let ready = self.hooks("before", &file.hooks.before);
        let primary = self.open(&file.repository, file.passphrase.as_ref(), None);
        let primary = match primary {
            Ok(repo) => Some(repo),
            Err(e) => {
                self.step("open", &file.repository, || Err(e));
                None
            }
        };
        let mut backed_up = ready && primary.is_some();
        for source in &file.sources {
            let target = source.path.display().to_string();
            match (&primary, ready) {
                (Some(repo), true) => {
                    backed_up &= self.step("backup", &target, || self.backup(repo, source))
                }
                (_, false) => self.skip("backup", &target, "a before hook failed"),
                (None, _) => self.skip("backup", &target, "the repository did not open"),
            }
        }
        let Some(repo) = primary else {
            self.skip_rest("the repository did not open");
            return;
        };
        if let Some(retention) = &file.retention {
            if backed_up {
                self.step("retention", &file.repository, || {
                    self.retention(&repo, retention)
                });
            } else {
                self.skip(
                    "retention",
                    &file.repository,
                    "a backup failed: nothing is forgotten while the newest backup is missing",
                );
            }
        }
        for c in &file.copies {
            self.copy_to(&repo, c);
        }
        if let Some(spec) = &file.restore_test {
            for (target, snap) in self.newest_per_source(&repo) {
                match snap {
                    Some(snap) => {
                        self.step("restore test", &target, || {
                            let result = restore_test::run(&repo, &snap, spec, self.env.progress)?;
                            self.patiently(|| {
                                restore_test::record(&repo, &result, self.env.progress)
                            })?;
                            result.into_result()
                        });
                    }
                    None => self.skip("restore test", &target, "the source has no snapshot yet"),
                }
            }
        }
    }

    fn skip_rest(&self, why: &str) {
        let file = &self.job.file;
        if file.retention.is_some() {
            self.skip("retention", &file.repository, why);
        }
        for c in &file.copies {
            self.skip("copy", &c.repository, why);
        }
        if file.restore_test.is_some() {
            self.skip("restore test", &file.repository, why);
        }
    }

    /// Opens a repository, with its passphrase source; a copy target
    /// without one tries the main repository's.
    fn open(
        &self,
        location: &str,
        spec: Option<&PassphraseSpec>,
        fallback: Option<&PassphraseSpec>,
    ) -> Result<Repository> {
        let what = format!("repository {location}");
        let source = passphrase_source(spec.or(fallback), what, self.env.external);
        let access = crate::repo::backend::Access {
            connections: self.env.connections,
            credentials: None,
        };
        self.patiently(|| {
            crate::repo::backend::open_location(std::ffi::OsStr::new(location), &access)
                .and_then(|backend| Repository::open_in(backend, &*source))
        })
        .map_err(|e| e.context(format!("opening repository {location}")))
    }

    /// `work`, again while a repository lock held by another command is
    /// in the way, up to the job's `lock_wait`.
    fn patiently<T>(&self, mut work: impl FnMut() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut told = false;
        loop {
            match work() {
                Err(e)
                    if e.kind() == ErrorKind::Busy
                        && e.message().starts_with("the repository is in use")
                        && started.elapsed() < self.lock_wait =>
                {
                    if !told {
                        self.env.progress.warn(&format!(
                            "{e}: waiting for it (up to {})",
                            humantime::format_duration(self.lock_wait)
                        ));
                        told = true;
                    }
                    let left = self.lock_wait.saturating_sub(started.elapsed());
                    std::thread::sleep(left.min(Duration::from_secs(1)));
                }
                other => return other,
            }
        }
    }

    fn backup(&self, repo: &Repository, source: &crate::jobs::file::SourceSpec) -> Did {
        let options = BackupOptions {
            tags: self.job.file.tags.clone(),
            partition: source.partition,
            raw: source.raw,
            allow_mounted: source.allow_mounted,
            ..BackupOptions::default()
        };
        let snap = self.patiently(|| backup(repo, &source.path, &options, self.env.progress))?;
        Ok(format!(
            "snapshot {}: read {}, added {}",
            snap.short_id(),
            crate::units::bytes(snap.stats.bytes_read),
            crate::units::bytes(snap.stats.bytes_new)
        ))
    }

    /// The job's sources as snapshot filters (with this host: the same
    /// path on another host is another disk).
    fn filters(&self) -> Vec<(String, SourceFilter)> {
        self.job
            .file
            .sources
            .iter()
            .map(|s| {
                (
                    s.path.display().to_string(),
                    SourceFilter {
                        path: s.path.display().to_string(),
                        partition: s.partition,
                        // A whole disk's job leaves its partitions' snapshots alone.
                        exact: true,
                    },
                )
            })
            .collect()
    }

    /// The job's snapshots in `repo` (of its sources, taken on this host).
    fn own_snapshots(&self, repo: &Repository) -> Result<Vec<Snapshot>> {
        let (all, _) = repo.snapshots()?;
        let host = crate::owner::hostname();
        let filters = self.filters();
        let matchers: Vec<_> = filters.iter().map(|(_, f)| f.matcher()).collect();
        Ok(all
            .into_iter()
            .filter(|s| s.hostname == host && matchers.iter().any(|m| m(s)))
            .collect())
    }

    fn newest_per_source(&self, repo: &Repository) -> Vec<(String, Option<Snapshot>)> {
        let (all, _) = repo.snapshots().unwrap_or_default();
        let host = crate::owner::hostname();
        self.filters()
            .into_iter()
            .map(|(name, f)| {
                let matcher = f.matcher();
                let newest = all
                    .iter()
                    .filter(|s| s.hostname == host && matcher(s))
                    .max_by_key(|s| (s.parsed_time(), s.id))
                    .cloned();
                (name, newest)
            })
            .collect()
    }

    /// Forget by the policy, per source of the job, then prune.
    fn retention(&self, repo: &Repository, spec: &RetentionSpec) -> Did {
        let mut removed = 0;
        let mut kept = 0;
        for (_, filter) in self.filters() {
            let options = ForgetOptions {
                policy: spec.policy(),
                source: Some(filter),
                host: Some(crate::owner::hostname()),
                ..ForgetOptions::default()
            };
            match self.patiently(|| forget(repo, &options, self.env.progress)) {
                Ok(report) => {
                    removed += report.removed.len();
                    kept += report.decisions.iter().filter(|d| d.keep).count();
                }
                // A source with no snapshot yet has nothing to forget.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut detail = format!(
            "{} kept, {removed} forgotten ({})",
            kept,
            spec.policy().describe()
        );
        if spec.prune {
            let options = PruneOptions::default();
            let report = self.patiently(|| prune(repo, &options, self.env.progress))?;
            detail.push_str(&format!(
                "; pruned: {} of {} pack(s) deleted, {} freed",
                report.packs_deleted,
                report.packs_before,
                crate::units::bytes(report.bytes_before.saturating_sub(report.bytes_after))
            ));
            if report.chunks_missing > 0 {
                return Err(Error::corrupt(format!(
                    "prune found {} chunk(s) that snapshots use in no pack",
                    report.chunks_missing
                ))
                .hint("run `platter verify` on the repository"));
            }
        }
        Ok(detail)
    }

    /// One copy target: the copy, then its own retention (skipped when
    /// the copy failed).
    fn copy_to(&self, from: &Repository, spec: &CopySpec) {
        let mut opened = None;
        let copied = self.step("copy", &spec.repository, || {
            let to = self.open(
                &spec.repository,
                spec.passphrase.as_ref(),
                self.job.file.passphrase.as_ref(),
            )?;
            let detail = self.copy_selected(from, &to, spec);
            opened = Some(to);
            detail
        });
        let Some(retention) = &spec.retention else {
            return;
        };
        match opened {
            Some(to) if copied => {
                self.step("copy retention", &spec.repository, || {
                    self.retention(&to, retention)
                });
            }
            _ => self.skip("copy retention", &spec.repository, "the copy failed"),
        }
    }

    fn copy_selected(&self, from: &Repository, to: &Repository, spec: &CopySpec) -> Did {
        let ours = self.own_snapshots(from)?;
        let wanted = worth_copying(ours, to, spec.retention.as_ref())?;
        if wanted.is_empty() {
            return Ok("nothing new to copy".into());
        }
        let options = CopyOptions {
            selection: Selection {
                ids: wanted.iter().map(|id| id.to_hex()).collect(),
                ..Selection::default()
            },
            decrypt: false,
        };
        let report = self.patiently(|| copy(from, to, &options, self.env.progress))?;
        if let Some(f) = report.failed.first() {
            return Err(Error::corrupt(format!(
                "{} snapshot(s) could not be copied; {}: {}",
                report.failed.len(),
                f.snapshot.prefix(8),
                f.error
            ))
            .hint("run `platter verify` on the main repository"));
        }
        Ok(format!(
            "{} snapshot(s) copied, {} chunk(s), {} stored",
            report.copied.len(),
            report.chunks_copied,
            crate::units::bytes(report.bytes_stored)
        ))
    }
}

/// Which of `ours` go to `to`: those it lacks that its retention would
/// keep, or that are newer than its newest of their source; without a
/// retention, all it lacks. A nightly run thus never sends again what the
/// copy's retention removed.
fn worth_copying(
    ours: Vec<Snapshot>,
    to: &Repository,
    retention: Option<&RetentionSpec>,
) -> Result<Vec<SnapshotId>> {
    let (there, _) = to.snapshots()?;
    let there_ids: HashSet<SnapshotId> = there.iter().map(|s| s.id).collect();
    let missing: Vec<Snapshot> = ours
        .into_iter()
        .filter(|s| !there_ids.contains(&s.id))
        .collect();
    let Some(retention) = retention else {
        return Ok(missing.iter().map(|s| s.id).collect());
    };
    let mut newest_there: HashMap<String, time::OffsetDateTime> = HashMap::new();
    for s in &there {
        if let Some(t) = s.parsed_time() {
            let e = newest_there.entry(group_of(s)).or_insert(t);
            *e = (*e).max(t);
        }
    }
    let mut both = there.clone();
    both.extend(missing.iter().cloned());
    // A policy refused on these snapshots (tags alone, none carried)
    // keeps none of them by rule: only the newer ones go.
    let kept: HashSet<SnapshotId> = decide(&both, &retention.policy())
        .map(|d| {
            d.into_iter()
                .filter(|d| d.keep)
                .map(|d| d.snapshot)
                .collect()
        })
        .unwrap_or_default();
    Ok(missing
        .iter()
        .filter(|s| {
            let newer = match (s.parsed_time(), newest_there.get(&group_of(s))) {
                (Some(t), Some(newest)) => t > *newest,
                _ => true,
            };
            newer || kept.contains(&s.id)
        })
        .map(|s| s.id)
        .collect())
}

/// The passphrase source a job file names; none for a plain repository.
fn passphrase_source(
    spec: Option<&PassphraseSpec>,
    what: String,
    external: External,
) -> Box<dyn PassphraseSource> {
    let Some(spec) = spec else {
        return Box::new(NoPassphrase);
    };
    if let Some(value) = &spec.value {
        return Box::new(Given {
            value: Some(zeroize::Zeroizing::new(value.clone())),
            from: "passphrase.value".into(),
        });
    }
    if let Some(var) = &spec.env {
        return Box::new(Given {
            value: std::env::var(var).ok().map(zeroize::Zeroizing::new),
            from: format!("${var}"),
        });
    }
    external(spec.command.clone(), spec.file.clone(), what)
}

/// A passphrase known already (inline in the job file, or from the
/// environment variable the job file names).
struct Given {
    value: Option<zeroize::Zeroizing<String>>,
    from: String,
}

impl PassphraseSource for Given {
    fn passphrase(&self) -> Result<zeroize::Zeroizing<String>> {
        match &self.value {
            Some(p) if !p.is_empty() => Ok(p.clone()),
            Some(_) => Err(Error::bad_input(format!("the passphrase from {} is empty", self.from))),
            None => Err(Error::bad_input(format!(
                "the job's passphrase is to come from {}, which is not set (or not UTF-8)",
                self.from
            ))
            .hint("set it in the environment of the job (for a timer: an Environment= line in its service)")),
        }
    }

    fn expects_encryption(&self) -> bool {
        true
    }
}
