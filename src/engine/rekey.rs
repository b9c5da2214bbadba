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
use crate::engine::chunk_mover::{
    Between, CopiedSnapshot, Fetched, Moving, move_chunks, not_in_source,
};
use crate::error::{Error, Result};
use crate::repo::index::Index;
use crate::repo::map::{Kind, MapEntry, MapHeader, MapWriter};
use crate::repo::snapshot::{MapRef, Snapshot};
use crate::repo::{Repository, SnapshotId};

pub struct Rekey {
    /// Chunk ids in the repository copied from -> ids in the other one.
    ids: HashMap<ChunkId, ChunkId>,
    /// Snapshots both repositories held when the copy started, oldest
    /// first: here, and there by id.
    common: Vec<(Snapshot, Snapshot)>,
    /// Snapshots whose maps were already learned from.
    learned: HashSet<SnapshotId>,
}

impl Rekey {
    /// `here` and `there` list the snapshots of the two repositories.
    pub fn new(here: &[Snapshot], there: &[Snapshot]) -> Rekey {
        let there: HashMap<SnapshotId, &Snapshot> = there.iter().map(|s| (s.id, s)).collect();
        let common = here
            .iter()
            .filter_map(|s| Some((s.clone(), (*there.get(&s.id)?).clone())))
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
        if !self.learned.insert(here.id) {
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
    /// its map with the new ids; returns the manifest naming that map, to
    /// commit.
    pub fn copy_one(
        &mut self,
        between: &Between,
        snap: &Snapshot,
        index: &mut Index,
    ) -> Result<(CopiedSnapshot, Snapshot)> {
        let Between { from, to, .. } = *between;
        let ids = Mutex::new(std::mem::take(&mut self.ids));
        let translated = |id: &ChunkId| ids.lock().ok().and_then(|m| m.get(id).copied());
        let label = format!("copy {} (re-keying)", snap.short_id());
        let copied = move_chunks(
            between,
            (snap, &label),
            index,
            |reader, entry, there| {
                if translated(&entry.id).is_some_and(|new| there.has(&new)) {
                    return Ok(None);
                }
                // Deltas are rebuilt and go whole: their bases' ids change.
                let plain = reader.read_indexed(&entry.id, || not_in_source(&entry.id))?;
                Ok(Some(Fetched {
                    id: to.sealing().chunk_id(&plain),
                    blob: Moving::Plain(plain),
                }))
            },
            |entry, new| {
                if let Ok(mut m) = ids.lock() {
                    m.insert(entry.id, *new);
                }
            },
        );
        self.ids = ids.into_inner().unwrap_or_default();
        let copied = copied?;
        let blake3 = self.write_map(from, to, snap)?;
        let mut there = snap.clone();
        there.map = MapRef {
            entries: snap.map.entries,
            blake3,
        };
        Ok((copied, there))
    }

    /// Writes `snap`'s map into `to` with translated ids; returns its
    /// BLAKE3.
    fn write_map(&self, from: &Repository, to: &Repository, snap: &Snapshot) -> Result<String> {
        let mut map = from.open_map(snap)?;
        let h = *map.header();
        let header = MapHeader::new(h.chunk_size, h.source_size, snap.id);
        let mut out = MapWriter::create(to.backend(), to.sealing(), header)?;
        for pos in 0..h.entries {
            let entry = map.entry(pos)?;
            let entry = match entry.kind {
                Kind::Data => {
                    let id = self.ids.get(&entry.id).ok_or_else(|| {
                        Error::internal(format!("chunk {} was not re-keyed", entry.id))
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
