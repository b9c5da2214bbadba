//! Which snapshots a retention policy keeps, and why. Pure: snapshots and
//! a policy in, one decision per snapshot out.
//!
//! The rules follow restic's: snapshots are grouped by host and source;
//! within a group,
//! newest first, `--keep-last N` keeps the N newest; `--keep-hourly N` (and
//! daily, weekly, monthly, yearly) keeps the newest snapshot of each of the
//! N most recent hours (days, ISO weeks, months, years) that have one;
//! `--keep-within D` keeps those taken within D of the group's newest (not
//! of now, so a source that stopped being backed up keeps its last ones);
//! `--keep-tag T` keeps those tagged T. Protected snapshots are always
//! kept. Calendar buckets are UTC, as snapshot times are. Unlike restic
//! since 0.17, a bucket rule whose count is not used up does not also keep
//! the oldest snapshot.
//!
//! A policy never removes every snapshot of a group: as restic does since
//! 0.17, a decision that would leave a group with none is refused as a
//! whole, naming the groups. Every count is at least 1 and `--keep-within`
//! always keeps a group's newest, so only a policy of tags alone can empty
//! a group, and the likely cause is a tag spelt wrong (`--keep-tag weekyl`
//! once forgot every snapshot of every source). Emptying a source on
//! purpose is done by naming its snapshots, never by a policy.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};
use crate::repo::SnapshotId;
use crate::repo::snapshot::Snapshot;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
    pub within: Option<Duration>,
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether the policy keeps by tag and by nothing else.
    pub fn is_tags_only(&self) -> bool {
        !self.tags.is_empty() && self.within.is_none() && self.counts_are_empty()
    }

    fn counts_are_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(Option::is_none)
    }

    pub fn is_empty(&self) -> bool {
        self.counts_are_empty() && self.within.is_none() && self.tags.is_empty()
    }

    /// The policy as the options that give it, e.g. `--keep-last 3
    /// --keep-tag weekly`.
    pub fn describe(&self) -> String {
        let counts = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ];
        let mut options: Vec<String> = counts
            .iter()
            .filter_map(|(name, n)| n.map(|n| format!("--keep-{name} {n}")))
            .collect();
        if let Some(d) = self.within {
            options.push(format!("--keep-within {}", humantime::format_duration(d)));
        }
        for tag in &self.tags {
            options.push(format!("--keep-tag {tag}"));
        }
        if options.is_empty() {
            "an empty policy".into()
        } else {
            options.join(" ")
        }
    }
}

/// The policy's tags that none of `snapshots` carries, in the policy's
/// order: most likely misspelt.
pub fn unmatched_tags<'a>(snapshots: &[Snapshot], policy: &'a Policy) -> Vec<&'a str> {
    let mut unmatched: Vec<&str> = Vec::new();
    for tag in &policy.tags {
        if !snapshots.iter().any(|s| s.tags.contains(tag)) && !unmatched.contains(&tag.as_str()) {
            unmatched.push(tag);
        }
    }
    unmatched
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub snapshot: SnapshotId,
    pub time: String,
    /// The group: source path, and partition when one was backed up.
    pub source: String,
    pub keep: bool,
    /// Why it is kept (empty when it goes).
    pub reasons: Vec<String>,
}

/// The group a snapshot's retention is counted in: the host, the source
/// path and the partition (the same path on two hosts is two disks), as
/// fields: two groups whose labels read alike are still two.
fn group_key(s: &Snapshot) -> (&str, &str, Option<u32>) {
    (&s.hostname, &s.source.path, s.source.partition)
}

/// A snapshot's group as people read it (see `group_key`).
pub fn group_of(s: &Snapshot) -> String {
    match s.source.partition {
        Some(n) => format!("{}:{} partition {n}", s.hostname, s.source.path),
        None => format!("{}:{}", s.hostname, s.source.path),
    }
}

type Bucket = fn(&OffsetDateTime) -> String;

const BUCKETS: [(&str, Bucket); 5] = [
    ("hourly", |t| format!("{}T{:02}", t.date(), t.hour())),
    ("daily", |t| t.date().to_string()),
    ("weekly", |t| {
        let (year, week, _) = t.to_iso_week_date();
        format!("{year}-W{week:02}")
    }),
    ("monthly", |t| {
        format!("{}-{:02}", t.year(), u8::from(t.month()))
    }),
    ("yearly", |t| t.year().to_string()),
];

/// One decision per snapshot, in the order given; refused (BadInput) if
/// it would remove every snapshot of a group, or if the policy is tags
/// alone and one of them is carried by no snapshot (a misspelt tag, even
/// where a protected snapshot keeps every group alive).
pub fn decide(snapshots: &[Snapshot], policy: &Policy) -> Result<Vec<Decision>> {
    let mut times = Vec::with_capacity(snapshots.len());
    for s in snapshots {
        let t = OffsetDateTime::parse(&s.time, &Rfc3339)
            .map(|t| t.to_offset(time::UtcOffset::UTC))
            .map_err(|e| {
                Error::corrupt(format!(
                    "snapshot {} has an unreadable time {:?}: {e}",
                    s.short_id(),
                    s.time
                ))
            })?;
        times.push(t);
    }
    let mut groups: BTreeMap<(&str, &str, Option<u32>), Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        groups.entry(group_key(s)).or_default().push(i);
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];
    for members in groups.values_mut() {
        // Newest first; equal times by id, so the result is stable.
        members.sort_by(|&a, &b| {
            times[b]
                .cmp(&times[a])
                .then(snapshots[b].id.cmp(&snapshots[a].id))
        });
        let newest = times[members[0]];
        for (rank, &i) in members.iter().enumerate() {
            let s = &snapshots[i];
            if s.protected {
                reasons[i].push("protected".into());
            }
            for tag in s.tags.iter().filter(|t| policy.tags.contains(t)) {
                reasons[i].push(format!("tag {tag}"));
            }
            if let Some(n) = policy.last
                && rank < n
            {
                reasons[i].push(format!("last {n}"));
            }
            if let Some(d) = policy.within
                && newest - times[i] <= d
            {
                reasons[i].push(format!(
                    "within {} of the newest",
                    humantime::format_duration(d)
                ));
            }
        }
        let counts = [
            policy.hourly,
            policy.daily,
            policy.weekly,
            policy.monthly,
            policy.yearly,
        ];
        for ((name, bucket), count) in BUCKETS.iter().zip(counts) {
            let Some(n) = count else { continue };
            let mut last_key: Option<String> = None;
            let mut kept = 0;
            for &i in members.iter() {
                if kept >= n {
                    break;
                }
                let key = bucket(&times[i]);
                if last_key.as_ref() != Some(&key) {
                    reasons[i].push(format!("{name} {key}"));
                    kept += 1;
                    last_key = Some(key);
                }
            }
        }
    }
    let decisions: Vec<Decision> = snapshots
        .iter()
        .zip(reasons)
        .map(|(s, reasons)| Decision {
            snapshot: s.id,
            time: s.time.clone(),
            source: group_of(s),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect();
    refuse_emptied_groups(&decisions, snapshots, policy)?;
    if policy.is_tags_only() {
        let unmatched = unmatched_tags(snapshots, policy);
        if !unmatched.is_empty() {
            return Err(Error::bad_input(format!(
                "the policy is --keep-tag alone, and no snapshot carries the tag{} {}: nothing \
                 would be kept by it",
                if unmatched.len() > 1 { "s" } else { "" },
                unmatched.join(", ")
            ))
            .hint("nothing was removed; check the spelling of --keep-tag (`platter snapshots` shows the tags)"));
        }
    }
    Ok(decisions)
}

/// How many emptied groups an error names before it counts the rest.
const NAMED_GROUPS: usize = 5;

/// Refuses decisions that keep no snapshot of some group.
fn refuse_emptied_groups(
    decisions: &[Decision],
    snapshots: &[Snapshot],
    policy: &Policy,
) -> Result<()> {
    let mut kept_in: BTreeMap<(&str, &str, Option<u32>), (bool, &str)> = BTreeMap::new();
    for (d, s) in decisions.iter().zip(snapshots) {
        kept_in.entry(group_key(s)).or_insert((false, &d.source)).0 |= d.keep;
    }
    let emptied: Vec<&str> = kept_in
        .values()
        .filter(|(kept, _)| !*kept)
        .map(|(_, label)| *label)
        .collect();
    let Some(first) = emptied.first() else {
        return Ok(());
    };
    let groups = match emptied.len() {
        1 => format!("source {first}"),
        n if n <= NAMED_GROUPS => format!("{n} sources: {}", emptied.join(", ")),
        n => format!(
            "{n} sources: {} and {} more",
            emptied[..NAMED_GROUPS].join(", "),
            n - NAMED_GROUPS
        ),
    };
    let mut error = Error::bad_input(format!(
        "the policy {} would remove every snapshot of {groups}; a policy never empties a source, \
         so nothing was removed",
        policy.describe()
    ));
    let unmatched = unmatched_tags(snapshots, policy);
    if !unmatched.is_empty() {
        let list = unmatched.join(", ");
        error = error.hint(if unmatched.len() == 1 {
            format!(
                "no snapshot carries the tag {list}: check the spelling of --keep-tag \
                 (`platter snapshots` shows each snapshot's tags)"
            )
        } else {
            format!(
                "no snapshot carries the tags {list}: check the spelling of --keep-tag \
                 (`platter snapshots` shows each snapshot's tags)"
            )
        });
    }
    Err(error
        .hint("to apply the policy to one source only, add --source PATH")
        .hint(
            "to forget the last snapshots of a source on purpose, name them: \
             `platter forget ID...` (`platter snapshots` lists the ids)",
        ))
}

#[cfg(test)]
mod tests;
