//! Retention tables: snapshot times in, the kept set and the reasons out,
//! checked against what restic documents for the same rules.

use super::*;
use crate::repo::snapshot::{BackupStats, MapRef, SourceInfo};

fn snap(n: usize, time: &str, source: &str) -> Snapshot {
    Snapshot {
        id: format!("{n:064x}"),
        time: time.to_string(),
        parent: None,
        hostname: "h".into(),
        tags: Vec::new(),
        source: SourceInfo {
            path: source.into(),
            kind: "file".into(),
            size: 1,
            logical_sector_size: 512,
            serial: None,
            wwid: None,
            model: None,
            partition: None,
        },
        chunk_size: 1 << 20,
        map: MapRef {
            entries: 1,
            blake3: String::new(),
        },
        full: false,
        stats: BackupStats::default(),
        platter_version: "0".into(),
        protected: false,
        layout: None,
    }
}

/// Snapshots at these times (all of one source), oldest first.
fn series(times: &[&str]) -> Vec<Snapshot> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| snap(i, t, "/dev/sda"))
        .collect()
}

/// Indexes of kept snapshots and their reasons.
fn kept(snaps: &[Snapshot], policy: &Policy) -> Vec<(usize, Vec<String>)> {
    decide(snaps, policy)
        .unwrap()
        .into_iter()
        .enumerate()
        .filter(|(_, d)| d.keep)
        .map(|(i, d)| (i, d.reasons))
        .collect()
}

fn idx(kept: &[(usize, Vec<String>)]) -> Vec<usize> {
    kept.iter().map(|(i, _)| *i).collect()
}

/// Two weeks of snapshots at 01:00 and 13:00 UTC, from Mon 2026-11-02.
fn twice_daily() -> Vec<Snapshot> {
    let mut times = Vec::new();
    for day in 2..=15 {
        times.push(format!("2026-11-{day:02}T01:00:00.000000Z"));
        times.push(format!("2026-11-{day:02}T13:00:00.000000Z"));
    }
    let refs: Vec<&str> = times.iter().map(String::as_str).collect();
    series(&refs)
}

#[test]
fn keep_last_keeps_the_newest_n() {
    let s = twice_daily();
    let k = kept(
        &s,
        &Policy {
            last: Some(3),
            ..Policy::default()
        },
    );
    assert_eq!(idx(&k), [25, 26, 27]);
    assert!(k.iter().all(|(_, r)| r == &["last 3".to_string()]));
}

#[test]
fn keep_daily_keeps_the_newest_of_each_of_the_last_n_days() {
    let s = twice_daily();
    let k = kept(
        &s,
        &Policy {
            daily: Some(3),
            ..Policy::default()
        },
    );
    // The 13:00 snapshots of Nov 13, 14 and 15.
    assert_eq!(idx(&k), [23, 25, 27]);
    assert_eq!(k[2].1, ["daily 2026-11-15"]);
}

#[test]
fn keep_weekly_uses_iso_weeks() {
    let s = twice_daily();
    // Nov 2-8 is ISO week 45, Nov 9-15 week 46.
    let k = kept(
        &s,
        &Policy {
            weekly: Some(5),
            ..Policy::default()
        },
    );
    assert_eq!(idx(&k), [13, 27]);
    assert_eq!(k[0].1, ["weekly 2026-W45"]);
    assert_eq!(k[1].1, ["weekly 2026-W46"]);
}

#[test]
fn keep_monthly_and_yearly_count_buckets_that_have_snapshots() {
    let s = series(&[
        "2024-12-31T23:00:00.000000Z",
        "2025-03-01T00:00:00.000000Z",
        "2025-03-15T00:00:00.000000Z",
        "2025-07-01T00:00:00.000000Z",
        "2026-01-05T00:00:00.000000Z",
    ]);
    let k = kept(
        &s,
        &Policy {
            monthly: Some(3),
            yearly: Some(2),
            ..Policy::default()
        },
    );
    assert_eq!(idx(&k), [2, 3, 4]);
    assert_eq!(k[0].1, ["monthly 2025-03"]);
    assert_eq!(k[1].1, ["monthly 2025-07", "yearly 2025"]);
    assert_eq!(k[2].1, ["monthly 2026-01", "yearly 2026"]);
}

#[test]
fn keep_hourly_within_and_tags_combine() {
    let mut s = series(&[
        "2026-11-26T08:10:00.000000Z",
        "2026-11-26T08:50:00.000000Z",
        "2026-11-26T09:20:00.000000Z",
        "2026-11-26T10:05:00.000000Z",
    ]);
    s[0].tags = vec!["before-upgrade".into()];
    let policy = Policy {
        hourly: Some(2),
        within: Some(Duration::from_secs(3600)),
        tags: vec!["before-upgrade".into()],
        ..Policy::default()
    };
    let k = kept(&s, &policy);
    assert_eq!(idx(&k), [0, 2, 3]);
    assert_eq!(k[0].1, ["tag before-upgrade"]);
    assert_eq!(k[1].1, ["within 1h of the newest", "hourly 2026-11-26T09"]);
    assert_eq!(k[2].1, ["within 1h of the newest", "hourly 2026-11-26T10"]);
}

#[test]
fn protected_snapshots_and_sources_are_counted_apart() {
    let mut s = twice_daily();
    s[0].protected = true;
    s.push(snap(99, "2026-11-01T00:00:00.000000Z", "/dev/sdb"));
    let k = kept(
        &s,
        &Policy {
            last: Some(1),
            ..Policy::default()
        },
    );
    assert_eq!(idx(&k), [0, 27, 28]);
    assert_eq!(k[0].1, ["protected"]);
    assert_eq!(
        k[2].1,
        ["last 1"],
        "the other source keeps its own last one"
    );
}

#[test]
fn an_empty_policy_keeps_only_protected_snapshots() {
    let s = twice_daily();
    assert!(Policy::default().is_empty());
    assert!(kept(&s, &Policy::default()).is_empty());
}

#[test]
fn the_same_path_on_two_hosts_is_two_groups() {
    let mut s = series(&["2026-11-01T00:00:00.000000Z", "2026-11-02T00:00:00.000000Z"]);
    s[0].hostname = "other".into();
    let k = kept(
        &s,
        &Policy {
            last: Some(1),
            ..Policy::default()
        },
    );
    assert_eq!(idx(&k), [0, 1]);
}
