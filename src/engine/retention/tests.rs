//! Retention tables: snapshot times in, the kept set and the reasons out,
//! checked against what restic documents for the same rules.

use super::*;
use crate::repo::SnapshotId;
use crate::repo::snapshot::{BackupStats, MapRef, SourceInfo};

fn snap(n: usize, time: &str, source: &str) -> Snapshot {
    Snapshot {
        id: SnapshotId::parse(&format!("{n:064x}")).unwrap_or_else(SnapshotId::random),
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
        change_source: None,
        shadow: None,
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

/// A policy of the defaults with `set` applied.
fn policy(set: impl Fn(&mut Policy)) -> Policy {
    let mut policy = Policy::default();
    set(&mut policy);
    policy
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
    let k = kept(&s, &policy(|p| p.last = Some(3)));
    assert_eq!(idx(&k), [25, 26, 27]);
    assert!(k.iter().all(|(_, r)| r == &["last 3".to_string()]));
}

#[test]
fn keep_daily_keeps_the_newest_of_each_of_the_last_n_days() {
    let s = twice_daily();
    let k = kept(&s, &policy(|p| p.daily = Some(3)));
    // The 13:00 snapshots of Nov 13, 14 and 15.
    assert_eq!(idx(&k), [23, 25, 27]);
    assert_eq!(k[2].1, ["daily 2026-11-15"]);
}

#[test]
fn keep_weekly_uses_iso_weeks() {
    let s = twice_daily();
    // Nov 2-8 is ISO week 45, Nov 9-15 week 46.
    let k = kept(&s, &policy(|p| p.weekly = Some(5)));
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
        &policy(|p| {
            p.monthly = Some(3);
            p.yearly = Some(2)
        }),
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
    let k = kept(&s, &policy(|p| p.last = Some(1)));
    assert_eq!(idx(&k), [0, 27, 28]);
    assert_eq!(k[0].1, ["protected"]);
    assert_eq!(
        k[2].1,
        ["last 1"],
        "the other source keeps its own last one"
    );
}

// Pins: groups are (host, path, partition) as fields: a file named "d.img partition 1" and partition 1 of d.img read alike as labels but are two sources, each keeping its last snapshot.
#[test]
fn sources_whose_labels_read_alike_are_counted_apart() {
    let mut s = series(&["2026-11-26T08:00:00.000000Z", "2026-11-26T09:00:00.000000Z"]);
    s[0].source.path = "/t/d.img partition 1".into();
    s[1].source.path = "/t/d.img".into();
    s[1].source.partition = Some(1);
    assert_eq!(
        group_of(&s[0]),
        group_of(&s[1]),
        "the labels should collide"
    );
    let k = kept(&s, &policy(|p| p.last = Some(1)));
    assert_eq!(idx(&k), [0, 1]);
}

#[test]
fn an_empty_policy_keeps_only_protected_snapshots() {
    let mut s = twice_daily();
    s[3].protected = true;
    assert!(Policy::default().is_empty());
    assert_eq!(idx(&kept(&s, &Policy::default())), [3]);
}

/// The refusal `decide` gives: it must be BadInput.
fn refusal(snaps: &[Snapshot], policy: &Policy) -> Error {
    match decide(snaps, policy) {
        Ok(d) => panic!("the policy was not refused: {d:?}"),
        Err(e) => {
            assert_eq!(e.kind(), crate::error::ErrorKind::BadInput, "{e}");
            e
        }
    }
}

fn tag_policy(tags: &[&str]) -> Policy {
    Policy {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Policy::default()
    }
}

// Pins: a policy that would keep no snapshot of a source is refused as a whole, naming that source and the policy, not the sources that keep some.
#[test]
fn a_policy_never_empties_a_group() {
    let mut s = twice_daily();
    s[5].tags = vec!["weekly".into()];
    s.push(snap(99, "2026-11-01T00:00:00.000000Z", "/dev/sdb"));
    let e = refusal(&s, &tag_policy(&["weekly"]));
    let message = e.message();
    assert!(message.contains("h:/dev/sdb"), "{message}");
    assert!(!message.contains("h:/dev/sda"), "{message}");
    assert!(message.contains("--keep-tag weekly"), "{message}");
    assert!(
        !e.hints().iter().any(|h| h.contains("no snapshot carries")),
        "the tag is carried, so it is no typo: {:?}",
        e.hints()
    );
    assert!(e.hints().iter().any(|h| h.contains("platter forget ID")));
    // The same snapshots with the other source left out are fine.
    s.pop();
    assert_eq!(idx(&kept(&s, &tag_policy(&["weekly"]))), [5]);
}

// Pins: a --keep-tag that no snapshot carries (a typo) is named in the refusal of the policy it empties every group with.
#[test]
fn a_tag_no_snapshot_carries_is_named_in_the_refusal() {
    let mut s = twice_daily();
    s[5].tags = vec!["weekly".into()];
    s.push(snap(99, "2026-11-01T00:00:00.000000Z", "/dev/sdb"));
    let e = refusal(&s, &tag_policy(&["weekyl"]));
    assert!(e.message().contains("2 sources"), "{}", e.message());
    assert!(
        e.hints()
            .iter()
            .any(|h| h.contains("no snapshot carries the tag weekyl")),
        "{:?}",
        e.hints()
    );
    assert_eq!(
        unmatched_tags(&s, &tag_policy(&["weekly", "weekyl"])),
        ["weekyl"]
    );
}

#[test]
fn protected_snapshots_and_keep_within_keep_every_group_alive() {
    let mut s = twice_daily();
    let mut other = snap(99, "2026-11-01T00:00:00.000000Z", "/dev/sdb");
    other.protected = true;
    s.push(other);
    s[0].tags = vec!["keep".into()];
    // sdb's only snapshot is protected, so the tag rule empties nothing.
    assert_eq!(idx(&kept(&s, &tag_policy(&["keep"]))), [0, 28]);
    // --keep-within always keeps a group's newest, however short it is.
    let within = Policy {
        within: Some(Duration::from_secs(1)),
        ..Policy::default()
    };
    assert_eq!(idx(&kept(&s, &within)), [27, 28]);
}

#[test]
fn a_policy_describes_itself_as_its_options() {
    let policy = Policy {
        last: Some(3),
        monthly: Some(12),
        within: Some(Duration::from_secs(14 * 86400)),
        tags: vec!["a".into(), "b".into()],
        ..Policy::default()
    };
    assert_eq!(
        policy.describe(),
        "--keep-last 3 --keep-monthly 12 --keep-within 14days --keep-tag a --keep-tag b"
    );
}

#[test]
fn the_same_path_on_two_hosts_is_two_groups() {
    let mut s = series(&["2026-11-01T00:00:00.000000Z", "2026-11-02T00:00:00.000000Z"]);
    s[0].hostname = "other".into();
    let k = kept(&s, &policy(|p| p.last = Some(1)));
    assert_eq!(idx(&k), [0, 1]);
}
