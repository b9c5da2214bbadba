//! Running work over a snapshot's map on every core: a feeder thread reads
//! map entries in order and hands them to workers through a bounded queue,
//! so memory stays flat and the map is read once, sequentially; results
//! come back to the caller's thread.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::bounded;

use crate::error::{Error, Result};
use crate::repo::map::{MapEntry, MapReader};

/// Runs `work(state, position, entry)` for the map entries at `positions` on `workers`
/// threads and hands each result to `sink` on the calling thread, in the
/// order they finish. The map is read by a feeder thread. Use it when the
/// results must go through one place (one writer to a target, so that
/// writers do not fight over the file's lock). The first error stops the
/// run and is returned.
pub fn map_entries<S, T, I, F, K>(
    map: &mut MapReader,
    positions: std::ops::Range<u64>,
    workers: usize,
    init: I,
    work: F,
    mut sink: K,
) -> Result<()>
where
    T: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, u64, MapEntry) -> T + Sync,
    K: FnMut(u64, MapEntry, T) -> Result<()>,
{
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = bounded::<(u64, MapEntry)>(workers * 2);
    let (done_tx, done_rx) = bounded::<(u64, MapEntry, T)>(workers);
    let positions = positions.start..positions.end.min(map.header().entries);
    std::thread::scope(|scope| {
        let stop = &stop;
        let feeder = scope.spawn(move || -> Result<()> {
            for pos in positions {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let entry = map.entry(pos)?;
                if job_tx.send((pos, entry)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let (init, work) = (&init, &work);
            scope.spawn(move || {
                let mut state = init();
                for (pos, entry) in job_rx.iter() {
                    let result = work(&mut state, pos, entry);
                    if done_tx.send((pos, entry, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(job_rx);
        drop(done_tx);
        let mut sunk = Ok(());
        for (pos, entry, result) in done_rx.iter() {
            sunk = sink(pos, entry, result);
            if sunk.is_err() {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        drop(done_rx);
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(Error::internal("map reader panicked")));
        sunk.and(fed)
    })
}
