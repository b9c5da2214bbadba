//! Which snapshots a command acts on: the one owner of snapshot selection
//! (by id, prefix or `latest`; by tag; by source; the newest N) for
//! `snapshots`, `copy`, `verify` and `forget`.
//!
//! A source filter matches a snapshot whose recorded source path is the
//! path as given, made absolute, or its real path now (symbolic links
//! followed), so a path that became a link or is gone still finds its
//! snapshots, and so does the path a backup recorded. It may also name a
//! partition; `--host` selects by the host a snapshot was taken on. Commands that remove snapshots (`forget`) are
//! stricter: a source whose snapshots come from several hosts must name
//! one (in a repository shared by several machines, two hosts' /dev/sda
//! are two disks).

use crate::error::{Error, Result};
use crate::repo::snapshot::{Snapshot, sort_by_time};
use crate::repo::{BrokenManifest, Repository};

/// A source: its path, and optionally one partition of it.
#[derive(Debug, Default, Clone)]
pub struct SourceFilter {
    pub path: String,
    /// Only snapshots of this partition of the source.
    pub partition: Option<u32>,
    /// Whether `partition: None` means the whole source only (a job's
    /// source), rather than the whole source and any partition of it.
    pub exact: bool,
}

impl SourceFilter {
    /// Whether a snapshot is of this source (its paths are looked up
    /// once, here).
    pub fn matcher(&self) -> impl Fn(&Snapshot) -> bool + '_ {
        let paths = self.paths();
        move |s| {
            paths.contains(&s.source.path)
                && match self.partition {
                    Some(n) => s.source.partition == Some(n),
                    None => !self.exact || s.source.partition.is_none(),
                }
        }
    }

    /// The recorded paths this source can be: as given, made absolute as
    /// text (a file that is gone has no real path), and its real path now
    /// (links followed). A form that is not UTF-8 matches nothing: no
    /// backup records one.
    fn paths(&self) -> Vec<String> {
        let given = std::path::Path::new(&self.path);
        let mut paths = vec![self.path.clone()];
        let forms = [
            std::path::absolute(given).ok(),
            std::fs::canonicalize(given).ok(),
        ];
        for form in forms.into_iter().flatten() {
            if let Some(text) = form.to_str() {
                paths.push(text.to_string());
            }
        }
        paths
    }

    /// As a command line gives it.
    fn describe(&self) -> String {
        let mut text = format!("--source {}", self.path);
        if let Some(n) = self.partition {
            text.push_str(&format!(" --partition {n}"));
        }
        text
    }
}

/// Which snapshots to act on: every one when nothing is given.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// Snapshots by id, unique prefix or `latest`.
    pub ids: Vec<String>,
    /// Only snapshots with any of these tags.
    pub tags: Vec<String>,
    pub source: Option<SourceFilter>,
    /// Only snapshots taken on this host.
    pub host: Option<String>,
    /// Only the newest N of what the rest selects.
    pub last: Option<usize>,
}

/// What a selection found, oldest first, and (when no snapshot was named)
/// the manifests that cannot be read: a filter cannot tell whether they
/// match.
pub struct Selected {
    pub snapshots: Vec<Snapshot>,
    pub broken: Vec<BrokenManifest>,
}

impl Selection {
    /// The tag and source filters, as given on the command line.
    pub fn describe(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| format!("--tag {t}")).collect();
        let mut parts = Vec::new();
        match tags.len() {
            0 => {}
            1 => parts.push(tags.join("")),
            _ => parts.push(format!("any of {}", tags.join(", "))),
        }
        parts.extend(self.source.as_ref().map(SourceFilter::describe));
        parts.extend(self.host.as_ref().map(|h| format!("--host {h}")));
        parts.join(" and ")
    }

    fn filters(&self) -> bool {
        !self.tags.is_empty() || self.source.is_some() || self.host.is_some()
    }
}

/// The snapshots of `repo` that `selection` selects. A named snapshot that
/// does not resolve is the error (see `Repository::resolve`).
pub fn select(repo: &Repository, selection: &Selection) -> Result<Selected> {
    let (all, broken) = repo.snapshots()?;
    select_from(repo, all, broken, selection)
}

/// `select` over snapshots already listed.
pub fn select_from(
    repo: &Repository,
    all: Vec<Snapshot>,
    broken: Vec<BrokenManifest>,
    selection: &Selection,
) -> Result<Selected> {
    let (mut snapshots, broken) = if selection.ids.is_empty() {
        (all, broken)
    } else {
        let mut picked = repo.resolve_each(&selection.ids)?;
        sort_by_time(&mut picked);
        (picked, Vec::new())
    };
    if !selection.tags.is_empty() {
        snapshots.retain(|s| s.tags.iter().any(|t| selection.tags.contains(t)));
    }
    if let Some(source) = &selection.source {
        snapshots.retain(source.matcher());
    }
    if let Some(host) = &selection.host {
        snapshots.retain(|s| s.hostname == *host);
    }
    if let Some(n) = selection.last {
        let skip = snapshots.len().saturating_sub(n);
        snapshots.drain(..skip);
    }
    Ok(Selected { snapshots, broken })
}

impl Selected {
    /// Refuses a filter that selected nothing out of snapshots that exist
    /// (a mistyped filter is more likely than a wish to act on nothing),
    /// unless unreadable manifests might have matched it. `what` says what
    /// was not done.
    pub fn require_some(&self, selection: &Selection, existed: bool, what: &str) -> Result<()> {
        if self.snapshots.is_empty() && existed && self.broken.is_empty() && selection.filters() {
            return Err(Error::not_found(format!(
                "no snapshot matches {}; {what}",
                selection.describe()
            ))
            .hint("`platter snapshots` lists the snapshots with their hosts, tags and sources"));
        }
        Ok(())
    }

    /// For commands that remove snapshots: refuses a source filter without
    /// a host when the snapshots it matched come from several hosts.
    pub fn require_one_host(&self, selection: &Selection) -> Result<()> {
        let Some(source) = selection
            .source
            .as_ref()
            .filter(|_| selection.host.is_none())
        else {
            return Ok(());
        };
        let mut hosts: Vec<&str> = self.snapshots.iter().map(|s| s.hostname.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.len() > 1 {
            return Err(Error::bad_input(format!(
                "source {} has snapshots from {} hosts ({}): they are different disks",
                source.path,
                hosts.len(),
                hosts.join(", ")
            ))
            .hint("name the host with --host; nothing was changed"));
        }
        Ok(())
    }
}
