//! The threads that fetch chunks for a random-access reader: each keeps
//! its own `ChunkReader` (with its open packs), so reads of several chunks
//! run at once, as many as restore runs. Chunks a read waits for come
//! first; read-ahead takes what is left.

use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender, select_biased, unbounded};

use super::cache::{ChunkCache, Failure, Slot};
use crate::codec::ChunkId;
use crate::error::{Error, Result};
use crate::repo::index::Index;
use crate::repo::{BufPool, Repository};

/// One chunk to fetch into its slot.
pub struct Job {
    pub id: ChunkId,
    pub slot: Arc<Slot>,
}

/// What the fetch threads share with the reader.
pub struct Shared {
    pub repo: Arc<Repository>,
    pub index: RwLock<Arc<Index>>,
    pub cache: ChunkCache,
    pub pool: BufPool,
}

impl Shared {
    pub fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(index) => Arc::clone(&index),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// The fetch threads; they end when this is dropped.
pub struct Fetchers {
    demand: Option<Sender<Job>>,
    ahead: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Fetchers {
    pub fn start(shared: &Arc<Shared>, count: usize) -> Result<Fetchers> {
        let (demand, demand_rx) = unbounded::<Job>();
        let (ahead, ahead_rx) = unbounded::<Job>();
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let (shared, demand_rx, ahead_rx) =
                (Arc::clone(shared), demand_rx.clone(), ahead_rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("chunk fetch {n}"))
                .spawn(move || fetch_loop(&shared, &demand_rx, &ahead_rx))
                .map_err(|e| Error::internal(format!("cannot start a fetch thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Fetchers {
            demand: Some(demand),
            ahead: Some(ahead),
            threads,
        })
    }

    /// Fetches a chunk a read waits for, before any read-ahead.
    pub fn demand(&self, job: Job) {
        if let Some(tx) = &self.demand {
            let _ = tx.send(job);
        }
    }

    /// Fetches a chunk a sequential reader will probably want next.
    pub fn ahead(&self, job: Job) {
        if let Some(tx) = &self.ahead {
            let _ = tx.send(job);
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        drop(self.demand.take());
        drop(self.ahead.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn fetch_loop(shared: &Shared, demand: &Receiver<Job>, ahead: &Receiver<Job>) {
    loop {
        let job = select_biased! {
            recv(demand) -> job => job,
            recv(ahead) -> job => job,
        };
        let Ok(job) = job else {
            return;
        };
        // The index may be reloaded between jobs: a reader per job (its
        // packs stay open only as long as it).
        let index = shared.index();
        let fetched = (shared.repo)
            .chunk_reader(shared.pool.clone(), &index)
            .read_indexed(&job.id, || not_indexed(&job.id))
            .map(Arc::new)
            .map_err(|e| Failure::from_error(&e));
        shared.cache.settle(&job.id, &job.slot, fetched);
    }
}

/// The error for a chunk of the snapshot that the index lacks.
fn not_indexed(id: &ChunkId) -> Error {
    Error::corrupt(format!("chunk {id} is not in the index"))
        .hint("run `platter verify`; `platter rebuild-index` rebuilds the index from the packs")
}
