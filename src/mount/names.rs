//! What the folders and files of a mounted repository are called, and the
//! inode number of each.
//!
//! A snapshot's folder is named for when it was taken, then its short id,
//! then its tags: `2026-11-28_18-30-05_1a2b3c4d_nightly,db`, so `ls` lists
//! them oldest first and a person finds one by date, id or tag. Tags come
//! from whoever made the backup: a `/`, a NUL or any control character in
//! one becomes `_`, so a name is always one path component that prints on
//! one line.
//!
//! Inode numbers are unique per snapshot and file for the whole life of a
//! mount: each snapshot gets a slot when it is first seen, and its folder
//! and files are numbered inside that slot's range.

use crate::repo::snapshot::Snapshot;

pub const ROOT: u64 = 1;
pub const LATEST: u64 = 2;
/// Mount points for `--files` at the root: `partN` is `MOUNT_DIRS + N`.
const MOUNT_DIRS: u64 = 16;
/// Partition numbers a mount point can be made for.
pub const MAX_MOUNT_DIR: u32 = 1 << 24;
/// A snapshot's files: partition `N` is `PART_FILES + N` inside its slot.
const PART_FILES: u64 = 16;
/// Partition numbers a `partN.img` can be made for.
pub const MAX_PART_FILE: u32 = 1 << 31;
const SLOT_SHIFT: u32 = 32;

/// What an inode number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Root,
    Latest,
    MountDir(u32),
    Folder(usize),
    Layout(usize),
    Disk(usize),
    Part(usize, u32),
}

impl Node {
    pub fn ino(self) -> u64 {
        let slot = |k: usize| (k as u64 + 1) << SLOT_SHIFT;
        match self {
            Node::Root => ROOT,
            Node::Latest => LATEST,
            Node::MountDir(n) => MOUNT_DIRS + u64::from(n),
            Node::Folder(k) => slot(k),
            Node::Layout(k) => slot(k) + 1,
            Node::Disk(k) => slot(k) + 2,
            Node::Part(k, n) => slot(k) + PART_FILES + u64::from(n),
        }
    }

    pub fn from_ino(ino: u64) -> Option<Node> {
        match ino {
            ROOT => return Some(Node::Root),
            LATEST => return Some(Node::Latest),
            _ => {}
        }
        let k = ino >> SLOT_SHIFT;
        let sub = ino & ((1 << SLOT_SHIFT) - 1);
        if k == 0 {
            let n = ino.checked_sub(MOUNT_DIRS)?;
            return (n < u64::from(MAX_MOUNT_DIR)).then_some(Node::MountDir(n as u32));
        }
        let k = usize::try_from(k - 1).ok()?;
        match sub {
            0 => Some(Node::Folder(k)),
            1 => Some(Node::Layout(k)),
            2 => Some(Node::Disk(k)),
            n if n >= PART_FILES => Some(Node::Part(k, (n - PART_FILES) as u32)),
            _ => None,
        }
    }
}

/// One path component made of `text`: `/`, NUL and control characters
/// become `_`.
pub fn safe_component(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '/' || crate::printable::is_control(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Longest folder name, in bytes (filesystems allow 255).
const MAX_NAME: usize = 200;

/// The folder name of `snap`; `id_digits` hex digits of its id (8, more
/// when another snapshot shares the prefix).
pub fn folder_name(snap: &Snapshot, id_digits: usize) -> String {
    let time = snap
        .parsed_time()
        .map(|t| {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02}_{:02}-{:02}-{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|| "unknown-time".to_string());
    let mut name = format!("{time}_{}", snap.id.prefix(id_digits));
    if !snap.tags.is_empty() {
        let tags = safe_component(&snap.tags.join(","));
        name.push('_');
        for c in tags.chars() {
            if name.len() + c.len_utf8() > MAX_NAME {
                break;
            }
            name.push(c);
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_go_both_ways() {
        let nodes = [
            Node::Root,
            Node::Latest,
            Node::MountDir(0),
            Node::MountDir(MAX_MOUNT_DIR - 1),
            Node::Folder(0),
            Node::Layout(0),
            Node::Disk(7),
            Node::Part(3, 1),
            Node::Part(3, MAX_PART_FILE - 1),
        ];
        for node in nodes {
            assert_eq!(Node::from_ino(node.ino()), Some(node), "{node:?}");
        }
        assert_ne!(Node::Part(0, 1).ino(), Node::Part(1, 1).ino());
    }

    #[test]
    fn a_component_never_holds_a_slash_or_a_control_character() {
        assert_eq!(safe_component("a/b\n\u{1b}[2Jc\u{202e}"), "a_b__[2Jc_");
    }
}
