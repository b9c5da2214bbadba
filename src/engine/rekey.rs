//! Copying snapshots between repositories with different keys (or from a
//! plain repository to an encrypted one, or back). A chunk's id depends on
//! the key, so every chunk is opened here, named with the other
//! repository's id key, and sealed with its blob key; the map is rewritten
//! with the new ids and the manifest records the new map.
//!
//! The translation from ids here to ids there is remembered, and learned
//! up front from the newest snapshot of the same source that both
//! repositories hold, so a nightly copy still moves only what changed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::codec::ChunkId;
use crate::engine::copy::{CopiedSnapshot, locate};
use crate::engine::pack_sink::PackSink;
use crate::engine::parallel::map_entries;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapHeader, MapWriter};
use crate::repo::snapshot::{MapRef, Snapshot};
use crate::repo::{BufPool, PlainChunk, Repository};

pub struct Rekey {
    /// Chunk ids in the repository copied from -> ids in the other one.
    ids: HashMap<ChunkId, ChunkId>,
    /// Snapshots both repositories held when the copy started, oldest
    /// first: here, and there by id.
    common: Vec<(Snapshot, Snapshot)>,
    /// Snapshots whose maps were already learned from.
    learned: HashSet<String>,
}

impl Rekey {
    /// `here` and `there` list the snapshots of the two repositories.
    pub fn new(here: &[Snapshot], there: &[Snapshot]) -> Rekey {
        let there: HashMap<&str, &Snapshot> = there.iter().map(|s| (s.id.as_str(), s)).collect();
        let common = here
            .iter()
            .filter_map(|s| Some((s.clone(), (*there.get(s.id.as_str())?).clone())))
            .collect();
        Rekey {
            ids: HashMap::new(),
            common,
            learned: HashSet::new(),
        }
    }

    /// Learns ids from the newest snapshot of `snap`'s source that both
    /// repositories hold.
    pub fn learn_from_common(
        &mut self,
        from: &Repository,
        to: &Repository,
        snap: &Snapshot,
    ) -> Result<()> {
        let common = self.common.iter().rev().find(|(s, _)| {
            s.source.path == snap.source.path
                && s.source.partition == snap.source.partition
                && s.source.size == snap.source.size
        });
        let Some((here, there)) = common else {
            return Ok(());
        };
        if !self.learned.insert(here.id.clone()) {
            return Ok(());
        }
        // A map that cannot be read only means more chunks are read.
        let (Ok(mut here), Ok(mut other)) = (from.open_map(here), to.open_map(there)) else {
            return Ok(());
        };
        if here.header().entries != other.header().entries {
            return Ok(());
        }
        for pos in 0..here.header().entries {
            let (a, b) = (here.entry(pos)?, other.entry(pos)?);
            if a.kind == Kind::Data && b.kind == Kind::Data {
                self.ids.insert(a.id, b.id);
            }
        }
        Ok(())
    }

    /// Copies one snapshot: its chunks the other repository lacks, then
    /// its map with the new ids, then its manifest naming that map.
    pub fn copy_one(
        &mut self,
        from: &Repository,
        to: &Repository,
        snap: &Snapshot,
        source_index: &Index,
        index: &mut Index,
        progress: &dyn Progress,
    ) -> Result<CopiedSnapshot> {
        let mut map = from.open_map(snap)?;
        let header = *map.header();
        let ids = Mutex::new(std::mem::take(&mut self.ids));
        let have: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
        let known = |id: &ChunkId| {
            index.contains(id) || have.lock().map(|set| set.contains(id)).unwrap_or(false)
        };
        let translated = |id: &ChunkId| ids.lock().ok().and_then(|m| m.get(id).copied());
        let mut sink = PackSink::new(to.backend(), to.sealing(), to.config().compression);
        let mut closed = Vec::new();
        let mut chunks = 0u64;
        progress.start(
            &format!("copy {} (re-keying)", snap.short_id()),
            header.source_size,
        );
        let pool = BufPool::new(header.chunk_size as usize, super::worker_count() * 6);
        let ran = map_entries(
            &mut map,
            0..header.entries,
            super::worker_count(),
            || from.chunk_reader(pool.clone()),
            |reader, _, entry| -> Result<Option<(ChunkId, PlainChunk)>> {
                if entry.kind != Kind::Data || translated(&entry.id).is_some_and(|n| known(&n)) {
                    return Ok(None);
                }
                let loc = locate(source_index, &entry.id)?;
                let plain = reader.read(&entry.id, source_index.pack_id(loc.pack), loc)?;
                Ok(Some((to.sealing().chunk_id(&plain), plain)))
            },
            |pos, entry, fetched| {
                if let Some((new, plain)) = fetched? {
                    if let Ok(mut m) = ids.lock() {
                        m.insert(entry.id, new);
                    }
                    let first = !index.contains(&new)
                        && have.lock().map(|mut set| set.insert(new)).unwrap_or(false);
                    if first {
                        chunks += 1;
                        if let Some(pack) = sink.add(new, &plain)? {
                            to.write_index(std::slice::from_ref(&pack))?;
                            closed.push(pack);
                        }
                    }
                }
                progress.advance(header.chunk_len(pos));
                Ok(())
            },
        );
        progress.finish();
        self.ids = ids.into_inner().unwrap_or_default();
        ran?;
        if let Some(pack) = sink.close()? {
            to.write_index(std::slice::from_ref(&pack))?;
            closed.push(pack);
        }
        for (id, entries) in &closed {
            index.add_pack(*id, entries);
        }
        let blake3 = self.write_map(from, to, snap)?;
        let mut there = snap.clone();
        there.map = MapRef {
            entries: header.entries,
            blake3,
        };
        to.commit_snapshot(&there)?;
        Ok(CopiedSnapshot {
            snapshot: snap.id.clone(),
            chunks_copied: chunks,
            bytes_stored: sink.stored_bytes,
        })
    }

    /// Writes `snap`'s map into `to` with translated ids; returns its
    /// BLAKE3.
    fn write_map(&self, from: &Repository, to: &Repository, snap: &Snapshot) -> Result<String> {
        let mut map = from.open_map(snap)?;
        let h = *map.header();
        let header = MapHeader::new(h.chunk_size, h.source_size, snap.raw_id()?);
        let mut out = MapWriter::create(to.backend(), to.sealing(), header)?;
        for pos in 0..h.entries {
            let entry = map.entry(pos)?;
            let entry = match entry.kind {
                Kind::Data => {
                    let id = self.ids.get(&entry.id).ok_or_else(|| {
                        Error::new(
                            crate::ErrorKind::Io,
                            format!("internal error: chunk {} was not re-keyed", entry.id),
                        )
                    })?;
                    MapEntry::data(*id, entry.fingerprint)
                }
                _ => entry,
            };
            out.push(&entry)?;
        }
        out.finish()
    }
}
