//! Running work over a snapshot's map on every core: the caller's thread
//! reads map entries in order and hands them to workers through a bounded
//! queue, so memory stays flat and the map is read once, sequentially.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::bounded;

use crate::error::{Error, Result};
use crate::repo::map::{MapEntry, MapReader};

/// Calls `work(state, position, entry)` for every map entry, on `workers`
/// threads, each with its own `state` from `init`. The first error stops
/// the run and is returned.
pub fn for_each_entry<S, I, F>(map: &mut MapReader, workers: usize, init: I, work: F) -> Result<()>
where
    I: Fn() -> S + Sync,
    F: Fn(&mut S, u64, MapEntry) -> Result<()> + Sync,
{
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let (tx, rx) = bounded::<(u64, MapEntry)>(workers * 4);
    let entries = map.header().entries;
    let fed = std::thread::scope(|scope| {
        for _ in 0..workers {
            let rx = rx.clone();
            let (init, work, failed, first_error) = (&init, &work, &failed, &first_error);
            scope.spawn(move || {
                let mut state = init();
                for (pos, entry) in rx.iter() {
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = work(&mut state, pos, entry) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
        drop(rx);
        for pos in 0..entries {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let entry = map.entry(pos)?;
            if tx.send((pos, entry)).is_err() {
                break;
            }
        }
        drop(tx);
        Ok(())
    });
    let worker_error = first_error.into_inner().ok().flatten();
    match (fed, worker_error) {
        (Err(e), _) | (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}
