//! The tree a mount shows: a folder per snapshot holding `disk.img`, a
//! `partN.img` per partition of the recorded layout and `layout.txt`, a
//! `latest` link to the newest folder, and (for `--files`) the empty
//! folders filesystems are mounted on.
//!
//! Mounted without a list of snapshots, the tree follows the repository:
//! a lookup or listing of the root lists the manifests again (at most
//! every `RELIST_AFTER`), reads the new ones, loads the index again before
//! showing them (their chunks may be in index files that are new too),
//! and stops showing snapshots that were forgotten. A forgotten snapshot's
//! open files stay readable: its chunks stay until a prune, which the
//! mount's lock keeps waiting.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::names::{self, MAX_MOUNT_DIR, MAX_PART_FILE, Node};
use crate::disk::layout::Layout;
use crate::engine::image_reader::{ImageReader, SnapshotImage};
use crate::error::{ErrorKind, Result};
use crate::printable::printable;
use crate::progress::Progress;
use crate::repo::names::{Folder as RepoFolder, manifest_name};
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::{SnapshotId, ids_in};

/// How long a listing of the repository's snapshots is trusted.
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// How a layout becomes lines of text (the command line's renderer).
pub type LayoutLines = fn(&Layout) -> Vec<String>;

/// A file of a snapshot's folder.
pub enum Content {
    /// Text made when the folder is first shown.
    Text(Arc<Vec<u8>>),
    /// Bytes `offset..offset + len` of the snapshot's image.
    Image { offset: u64, len: u64 },
}

pub struct File {
    pub name: String,
    pub node: Node,
    pub content: Content,
}

/// A snapshot as the tree shows it: its folder.
pub struct SnapFolder {
    pub snap: Snapshot,
    pub slot: usize,
    pub name: String,
    pub files: Vec<File>,
    /// Opened on first use (the map is checked whole then).
    image: Mutex<Option<Arc<SnapshotImage>>>,
}

impl SnapFolder {
    pub fn file(&self, node: Node) -> Option<&File> {
        self.files.iter().find(|f| f.node == node)
    }
}

/// What an entry of a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Link,
}

pub struct Tree {
    reader: Arc<ImageReader>,
    /// Shows new snapshots as they are committed.
    follow: bool,
    layout_lines: LayoutLines,
    state: Mutex<State>,
    mount_dirs: Mutex<BTreeSet<u32>>,
    /// Slots whose image is kept open, least recently opened first.
    open_images: Mutex<std::collections::VecDeque<usize>>,
    pub started: SystemTime,
}

/// Snapshot images kept open when no file of theirs is: each holds its
/// map open (a file descriptor, and a store's connection state), so a
/// mount read across thousands of snapshots ran out of descriptors.
const OPEN_IMAGES: usize = 32;

#[derive(Default)]
struct State {
    /// Every snapshot seen, by slot (never reused while mounted).
    folders: Vec<Arc<SnapFolder>>,
    by_id: HashMap<SnapshotId, usize>,
    /// Slots shown now, oldest first.
    shown: Vec<usize>,
    listed_at: Option<Instant>,
    /// Manifests already warned about.
    warned: HashSet<String>,
}

impl Tree {
    /// A tree of `snapshots`, or with `None` of every snapshot of the
    /// repository, now and later.
    pub fn new(
        reader: Arc<ImageReader>,
        snapshots: Option<Vec<Snapshot>>,
        layout_lines: LayoutLines,
    ) -> Result<Tree> {
        let tree = Tree {
            reader,
            follow: snapshots.is_none(),
            layout_lines,
            state: Mutex::new(State::default()),
            mount_dirs: Mutex::new(BTreeSet::new()),
            open_images: Mutex::new(std::collections::VecDeque::new()),
            started: SystemTime::now(),
        };
        match snapshots {
            Some(mut snaps) => {
                snapshot::sort_by_time(&mut snaps);
                let mut state = tree.state();
                for snap in snaps {
                    let slot = tree.add(&mut state, snap);
                    state.shown.push(slot);
                }
            }
            None => tree.relist(&mut tree.state())?,
        }
        // After the manifests were read: it knows every chunk they need.
        tree.reader.load_index()?;
        Ok(tree)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the repository's snapshots again if the last listing is old.
    /// A failure (the store out of reach) keeps showing what was known.
    pub fn refresh(&self) {
        if !self.follow {
            return;
        }
        let mut state = self.state();
        if state
            .listed_at
            .is_some_and(|at| at.elapsed() < RELIST_AFTER)
        {
            return;
        }
        if let Err(e) = self.relist(&mut state) {
            let note = format!("cannot list the snapshots again: {e}");
            if state.warned.insert(note.clone()) {
                crate::progress::Quiet.warn(&note);
            }
        }
    }

    fn relist(&self, state: &mut State) -> Result<()> {
        let repo = self.reader.repository();
        let ids: Vec<SnapshotId> = ids_in(repo.backend(), RepoFolder::Snapshots)?
            .iter()
            .filter_map(|f| SnapshotId::parse(f))
            .collect();
        let mut new = Vec::new();
        for id in ids.iter().filter(|id| !state.by_id.contains_key(id)) {
            let name = manifest_name(id);
            let read = repo.read_sealed(&name).and_then(|bytes| {
                let snap = Snapshot::decode(&bytes, &repo.describe(&name))?;
                if snap.id != *id {
                    return Err(crate::Error::corrupt(format!(
                        "{} holds the manifest of snapshot {}",
                        repo.describe(&name),
                        snap.id
                    )));
                }
                Ok(snap)
            });
            match read {
                Ok(snap) => new.push(snap),
                Err(e) if e.is_transient() => return Err(e),
                // Forgotten between the listing and the read.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    let note = format!(
                        "snapshot manifest {} is not shown: {e}",
                        repo.describe(&name)
                    );
                    if state.warned.insert(note.clone()) {
                        crate::progress::Quiet.warn(&note);
                    }
                }
            }
        }
        // The first listing's index is loaded by `new`, after it.
        if !new.is_empty() && state.listed_at.is_some() {
            self.reader.load_index()?;
        }
        for snap in new {
            self.add(state, snap);
        }
        let present: HashSet<&SnapshotId> = ids.iter().collect();
        let mut shown: Vec<usize> = state
            .folders
            .iter()
            .filter(|f| present.contains(&f.snap.id))
            .map(|f| f.slot)
            .collect();
        shown.sort_by_cached_key(|&k| {
            let snap = &state.folders[k].snap;
            (snap.parsed_time(), snap.id)
        });
        state.shown = shown;
        state.listed_at = Some(Instant::now());
        Ok(())
    }

    /// Gives `snap` a slot and its folder; returns the slot.
    fn add(&self, state: &mut State, snap: Snapshot) -> usize {
        if let Some(&slot) = state.by_id.get(&snap.id) {
            return slot;
        }
        let slot = state.folders.len();
        let taken = |name: &str| state.folders.iter().any(|f| f.name == name);
        let mut name = names::folder_name(&snap, 8);
        if taken(&name) {
            name = names::folder_name(&snap, 64);
        }
        let files = self.files_of(&snap, slot);
        state.by_id.insert(snap.id, slot);
        state.folders.push(Arc::new(SnapFolder {
            snap,
            slot,
            name,
            files,
            image: Mutex::new(None),
        }));
        slot
    }

    fn files_of(&self, snap: &Snapshot, slot: usize) -> Vec<File> {
        let layout = match snap.parsed_layout::<Layout>() {
            Some(Ok(layout)) => Some(layout),
            _ => None,
        };
        let mut files = vec![
            File {
                name: "disk.img".into(),
                node: Node::Disk(slot),
                content: Content::Image {
                    offset: 0,
                    len: snap.source.size,
                },
            },
            File {
                name: "layout.txt".into(),
                node: Node::Layout(slot),
                content: Content::Text(Arc::new(self.layout_text(snap, layout.as_ref()))),
            },
        ];
        for (number, offset, len) in partitions(snap, layout.as_ref()) {
            files.push(File {
                name: format!("part{number}.img"),
                node: Node::Part(slot, number),
                content: Content::Image { offset, len },
            });
        }
        files
    }

    fn layout_text(&self, snap: &Snapshot, layout: Option<&Layout>) -> Vec<u8> {
        let mut lines = vec![
            format!("snapshot {}", snap.id),
            format!("taken    {} on {}", snap.time, snap.hostname),
            format!(
                "source   {} ({}, {} bytes){}",
                snap.source.path,
                crate::units::bytes(snap.source.size),
                snap.source.size,
                snap.source
                    .partition
                    .map_or_else(String::new, |n| format!(", partition {n} alone"))
            ),
        ];
        if !snap.tags.is_empty() {
            lines.push(format!("tags     {}", snap.tags.join(", ")));
        }
        lines.push("files    disk.img: the whole image".into());
        for (number, offset, len) in partitions(snap, layout) {
            lines.push(format!(
                "         part{number}.img: partition {number}, bytes {offset}..{} of disk.img",
                offset + len
            ));
        }
        lines.push(String::new());
        match layout {
            Some(layout) => lines.extend((self.layout_lines)(layout)),
            None => lines.push("no partition layout was recorded for this snapshot".into()),
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(&printable(&line));
            text.push('\n');
        }
        text.into_bytes()
    }

    /// The snapshot folder in slot `k`.
    pub fn folder(&self, k: usize) -> Option<Arc<SnapFolder>> {
        self.state().folders.get(k).cloned()
    }

    /// The snapshot folder of `id`, if shown.
    pub fn folder_of(&self, id: &SnapshotId) -> Option<Arc<SnapFolder>> {
        let state = self.state();
        let k = *state.by_id.get(id)?;
        state.folders.get(k).cloned()
    }

    /// The folders shown now, oldest first.
    pub fn shown(&self) -> Vec<Arc<SnapFolder>> {
        let state = self.state();
        state
            .shown
            .iter()
            .filter_map(|&k| state.folders.get(k).cloned())
            .collect()
    }

    /// Where `latest` points: the newest shown folder's name.
    pub fn latest(&self) -> Option<String> {
        self.shown().last().map(|f| f.name.clone())
    }

    /// The root's entries (after a refresh): `latest`, the mount points,
    /// the folders.
    pub fn root_entries(&self) -> Vec<(Node, Kind, String)> {
        self.refresh();
        let mut out = Vec::new();
        let shown = self.shown();
        if !shown.is_empty() {
            out.push((Node::Latest, Kind::Link, "latest".to_string()));
        }
        for &n in self.mount_dirs().iter() {
            out.push((Node::MountDir(n), Kind::Dir, mount_dir_name(n)));
        }
        for f in shown {
            out.push((Node::Folder(f.slot), Kind::Dir, f.name.clone()));
        }
        out
    }

    fn mount_dirs(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.mount_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows an empty folder at the root to mount a filesystem on: `partN`
    /// for partition N, `disk` for 0 (a filesystem filling the image).
    pub fn add_mount_dir(&self, n: u32) -> bool {
        n < MAX_MOUNT_DIR && self.mount_dirs().insert(n)
    }

    pub fn remove_mount_dir(&self, n: u32) {
        self.mount_dirs().remove(&n);
    }

    pub fn has_mount_dir(&self, n: u32) -> bool {
        self.mount_dirs().contains(&n)
    }

    /// The opened image of folder `folder` (opened now if it was not).
    pub fn image(&self, folder: &SnapFolder) -> Result<Arc<SnapshotImage>> {
        let mut image = folder.image.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = image.as_ref() {
            return Ok(Arc::clone(open));
        }
        let open = Arc::new(self.reader.open(&folder.snap)?);
        *image = Some(Arc::clone(&open));
        drop(image);
        // Close the least recently opened beyond the bound: a file still
        // open through FUSE keeps its own reference, so only idle images
        // are really closed.
        let evicted = {
            let mut open_images = self.open_images.lock().unwrap_or_else(|e| e.into_inner());
            open_images.retain(|&slot| slot != folder.slot);
            open_images.push_back(folder.slot);
            let excess = open_images.len().saturating_sub(OPEN_IMAGES);
            open_images.drain(..excess).collect::<Vec<_>>()
        };
        for slot in evicted {
            if let Some(old) = self.folder(slot) {
                old.image.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
        Ok(open)
    }
}

/// The name of mount point folder `n`: `disk` for 0 (no partition is
/// numbered 0), else `partN`.
pub fn mount_dir_name(n: u32) -> String {
    if n == 0 {
        "disk".to_string()
    } else {
        format!("part{n}")
    }
}

/// The partitions of `snap` that get a file: `(number, offset, len)` in
/// its image. Only a whole-disk snapshot has them.
pub fn partitions(snap: &Snapshot, layout: Option<&Layout>) -> Vec<(u32, u64, u64)> {
    let Some(layout) = layout else {
        return Vec::new();
    };
    if snap.source.partition.is_some() || layout.disk_size != snap.source.size {
        return Vec::new();
    }
    layout
        .partitions
        .iter()
        .filter(|p| p.number < MAX_PART_FILE)
        .filter_map(|p| {
            let (offset, len) = layout.partition_span(p.number, "the snapshot").ok()?;
            Some((p.number, offset, len))
        })
        .collect()
}
