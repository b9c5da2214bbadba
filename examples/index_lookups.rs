//! Times index lookups in a plain repository (issue 18; `bench/scale.sh`
//! runs it): opening the index through the local cache, then random
//! lookups of chunks it holds (hits) and of ids it does not (misses),
//! single-threaded.
//!
//! ```text
//! cargo run --release --example index_lookups -- REPO [LOOKUPS]
//! ```
//!
//! Prints one line: `open_s=.. hits_per_s=.. misses_per_s=.. chunks=..`.
//! The open is cold when the cache folder (`PLATTER_CACHE_DIR`) is empty.

use std::time::Instant;

use platter::codec::ChunkId;
use platter::repo::Repository;
use platter::repo::keys::NoPassphrase;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: index_lookups REPO [LOOKUPS]");
        std::process::exit(2);
    };
    let lookups: usize = args
        .next()
        .and_then(|a| a.to_str()?.parse().ok())
        .unwrap_or(1_000_000);
    if let Err(e) = run(std::path::Path::new(&path), lookups) {
        eprintln!("index_lookups: {e}");
        std::process::exit(1);
    }
}

fn run(path: &std::path::Path, lookups: usize) -> platter::Result<()> {
    let repo = Repository::open(path, &NoPassphrase)?;
    let started = Instant::now();
    let (index, _) = repo.load_index()?;
    let open_s = started.elapsed().as_secs_f64();
    // Every 97th chunk, for hits (a walk: memory stays flat).
    let sample: Vec<ChunkId> = index.iter().step_by(97).map(|(id, _)| id).collect();
    if sample.is_empty() {
        return Err(platter::Error::bad_input("the repository holds no chunk"));
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..lookups {
        let id = &sample[(next() % sample.len() as u64) as usize];
        found += usize::from(index.get(id).is_some());
    }
    let hits_per_s = lookups as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut missed = 0;
    for _ in 0..lookups {
        let mut id = [0u8; 32];
        for part in id.chunks_mut(8) {
            part.copy_from_slice(&next().to_le_bytes());
        }
        missed += usize::from(index.get(&ChunkId(id)).is_none());
    }
    let misses_per_s = lookups as f64 / started.elapsed().as_secs_f64();
    if found != lookups || missed != lookups {
        return Err(platter::Error::internal(format!(
            "{found} of {lookups} hits found, {missed} of {lookups} misses missed"
        )));
    }
    println!(
        "open_s={open_s:.2} hits_per_s={hits_per_s:.0} misses_per_s={misses_per_s:.0} chunks={}",
        sample.len() * 97
    );
    Ok(())
}
