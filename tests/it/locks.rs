//! Locks judged by the store's clock: a lock not refreshed for
//! `STALE_AFTER` is stale whatever host wrote it (a repository in a bucket
//! shared by several hosts cannot ask another host's kernel about a pid),
//! and a command whose own lock went that long without a refresh fails
//! before it commits. Repositories in memory, whose files' times a test can
//! move back.

use std::sync::Arc;
use std::time::Duration;

use platter::codec::Compression;
use platter::engine::lock_repo;
use platter::engine::prune::{PruneOptions, prune};
use platter::progress::Quiet;
use platter::repo::backend::{MemoryBackend, SharedBackend};
use platter::repo::keys::NoPassphrase;
use platter::repo::lock::{LockKind, STALE_AFTER};
use platter::repo::names::Folder;
use platter::repo::{NewKey, Repository};

fn repository() -> (MemoryBackend, Repository) {
    let store = MemoryBackend::new();
    let shared: SharedBackend = Arc::new(store.clone());
    Repository::init_in(shared.clone(), 64 << 10, Compression::Lz4, NewKey::Plain).expect("init");
    let repo = Repository::open_in(shared, &NoPassphrase).expect("open");
    (store, repo)
}

fn locks(store: &MemoryBackend) -> Vec<String> {
    let files = store.snapshot_files().expect("files");
    files
        .keys()
        .filter(|n| n.starts_with(Folder::Locks.as_str()))
        .cloned()
        .collect()
}

/// A lock of a command that lives on but stopped refreshing it (another
/// host's, as far as age goes): a copy of a real lock's file under a new
/// name, `age` old.
fn planted_lock(store: &MemoryBackend, repo: &Repository, age: Duration) -> String {
    let held = lock_repo(repo, LockKind::Shared, "backup", &Quiet).expect("lock");
    let name = locks(store).pop().expect("a lock file");
    let bytes = store.snapshot_files().expect("files")[&name].clone();
    drop(held);
    let planted = format!("{}/{}", Folder::Locks.as_str(), "ab".repeat(32));
    store.put(&planted, Some(bytes)).expect("plant");
    store.age(&planted, age).expect("age");
    planted
}

// Pins: a lock whose time in the store is more than STALE_AFTER old is stale whatever host wrote it (its process lives here, which used to keep it forever): prune removes it and runs; a lock refreshed within STALE_AFTER still holds prune off (exit 5).
#[test]
fn an_unrefreshed_lock_is_stale_by_the_stores_clock() {
    let (store, repo) = repository();
    let options = PruneOptions {
        dry_run: false,
        repack_percent: 50,
    };
    let fresh = planted_lock(&store, &repo, STALE_AFTER / 2);
    let refused = prune(&repo, &options, &Quiet).expect_err("prune ran past a live lock");
    assert_eq!(refused.kind(), platter::ErrorKind::Busy, "{refused}");
    store.put(&fresh, None).expect("remove");
    let old = planted_lock(&store, &repo, STALE_AFTER + Duration::from_secs(60));
    prune(&repo, &options, &Quiet).expect("prune past a stale lock");
    assert!(!locks(&store).contains(&old), "the stale lock stayed");
}

// Pins: a command whose own lock went more than STALE_AFTER without a refresh (a suspended laptop: another host may have found it stale and pruned) fails check_held, naming that, before it commits; a lock refreshed in time passes, and a lock that was removed fails.
#[test]
fn a_lock_that_went_unrefreshed_fails_before_a_commit() {
    let (store, repo) = repository();
    let held = lock_repo(&repo, LockKind::Shared, "backup", &Quiet).expect("lock");
    held.check_held().expect("a fresh lock holds");
    let name = locks(&store).pop().expect("a lock file");
    store
        .age(&name, STALE_AFTER + Duration::from_secs(60))
        .expect("age");
    let err = held.check_held().expect_err("an unrefreshed lock held");
    assert!(err.message().contains("without a refresh"), "{err}");
    store.put(&name, None).expect("remove");
    let err = held.check_held().expect_err("a removed lock held");
    assert!(err.message().contains("was removed"), "{err}");
}

// Pins: two exclusive commands started at once do not both give up: each
// backs off from the other's lock, and a random pause lets one of them win
// (they used to fail together in about 2 runs of 5).
#[test]
fn two_exclusive_lockers_started_at_once_do_not_both_give_up() {
    let (_store, repo) = repository();
    for round in 0..12 {
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        lock_repo(&repo, LockKind::Exclusive, "race", &Quiet)
                            .map(|lock| {
                                // Held a moment, as a short prune would.
                                std::thread::sleep(Duration::from_millis(20));
                                drop(lock);
                            })
                            .is_ok()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(
            outcomes.iter().any(|ok| *ok),
            "round {round}: both exclusive lockers gave up"
        );
    }
}
