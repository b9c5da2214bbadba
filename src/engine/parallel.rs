//! Running work on every core: a feeder thread hands jobs (the entries of
//! a snapshot's map, read once and in order, or spans of packs) to workers
//! through a bounded queue, so memory stays flat; results come back to the
//! caller's thread.

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
    let positions = positions.start..positions.end.min(map.header().entries);
    fan_out(
        |send| {
            for pos in positions {
                if !send((pos, map.entry(pos)?)) {
                    break;
                }
            }
            Ok(())
        },
        workers,
        init,
        |state, (pos, entry), give| {
            give((pos, entry, work(state, pos, entry)));
        },
        |(pos, entry, result)| sink(pos, entry, result),
    )
}

/// The pipeline under [`map_entries`], for jobs of any kind: `feed` runs
/// on a thread of its own and sends jobs (its `send` says false once the
/// run is stopping); `workers` threads run `work(state, job, give)`, which
/// may give any number of results; `sink` takes each result on the calling
/// thread. Queues are bounded, so memory stays flat. The first error, of
/// the feeder or the sink, stops the run and is returned.
pub fn fan_out<J, T, S, D, I, F, K>(
    feed: D,
    workers: usize,
    init: I,
    work: F,
    mut sink: K,
) -> Result<()>
where
    J: Send,
    T: Send,
    D: FnOnce(&mut dyn FnMut(J) -> bool) -> Result<()> + Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, J, &mut dyn FnMut(T) -> bool) + Sync,
    K: FnMut(T) -> Result<()>,
{
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = bounded::<J>(workers * 2);
    // Results wait for the sink in a queue of at most 16: with many
    // workers (connections to a store far away), more would only hold
    // memory.
    let (done_tx, done_rx) = bounded::<T>(workers.min(16));
    std::thread::scope(|scope| {
        let stop = &stop;
        let feeder = scope.spawn(move || -> Result<()> {
            feed(&mut |job| !stop.load(Ordering::Relaxed) && job_tx.send(job).is_ok())
        });
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            let (init, work) = (&init, &work);
            scope.spawn(move || {
                let mut state = init();
                for job in job_rx.iter() {
                    let mut open = true;
                    work(&mut state, job, &mut |result| {
                        open = open && done_tx.send(result).is_ok();
                        open
                    });
                    if !open {
                        return;
                    }
                }
            });
        }
        drop(job_rx);
        drop(done_tx);
        let mut sunk = Ok(());
        for result in done_rx.iter() {
            sunk = sink(result);
            if sunk.is_err() {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        drop(done_rx);
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the job feeder panicked")));
        sunk.and(fed)
    })
}
