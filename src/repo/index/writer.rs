//! Writing one index file from entries handed in one at a time, in any
//! order (prune and repair write the whole index this way).

use std::collections::HashMap;

use crate::error::Result;
use crate::repo::pack::PackEntry;
use crate::repo::{IndexId, PackId, Repository};

/// An index file being gathered; `Repository::index_writer` makes one.
pub struct IndexWriter<'a> {
    repo: &'a Repository,
    order: Vec<PackId>,
    groups: HashMap<PackId, Vec<PackEntry>>,
}

impl<'a> IndexWriter<'a> {
    pub(in crate::repo) fn new(repo: &'a Repository) -> IndexWriter<'a> {
        IndexWriter {
            repo,
            order: Vec::new(),
            groups: HashMap::new(),
        }
    }

    /// Adds entry `e` of pack `pack` (a delta's entry with its base).
    pub fn push(&mut self, pack: &PackId, e: &PackEntry) -> Result<()> {
        let group = self.groups.entry(*pack).or_insert_with(|| {
            self.order.push(*pack);
            Vec::new()
        });
        group.push(*e);
        Ok(())
    }

    /// Writes the index file (durable before it returns); returns its id.
    pub fn finish(mut self) -> Result<IndexId> {
        let groups: Vec<(PackId, Vec<PackEntry>)> = (self.order.iter())
            .map(|p| (*p, self.groups.remove(p).unwrap_or_default()))
            .collect();
        self.repo.write_index(&groups)
    }
}
