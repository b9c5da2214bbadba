//! A layout as lines a person can read: one line per partition, like
//! `lsblk -f` with sectors and sizes, then GUIDs, gaps and warnings.

use platter::disk::layout::{Content, Layout, Table};

use super::output::bytes;

fn content_text(c: &Content) -> String {
    let mut s = c.fstype.clone();
    if let Some(v) = &c.version {
        s += &format!(" ({v})");
    }
    if let Some(l) = &c.label {
        s += &format!(" label \"{l}\"");
    }
    if let Some(u) = &c.uuid {
        s += &format!(" uuid {u}");
    }
    if let Some(n) = c.size {
        s += &format!(", {} filesystem", bytes(n));
    }
    if let Some(n) = c.used {
        s += &format!(", {} used", bytes(n));
    }
    if let Some(why) = &c.copied_whole {
        s += &format!(" (copied whole: {why})");
    }
    s
}

/// The whole layout, a line per item, indented under the disk line.
pub fn lines(layout: &Layout) -> Vec<String> {
    // max(1): a layout read back from a damaged manifest must not divide by zero.
    let sector = u64::from(layout.sector_size.max(1));
    let mut out = disk_lines(layout, sector);
    out.extend(partition_lines(layout, sector));
    out.extend(gaps_line(layout, sector));
    for w in &layout.warnings {
        out.push(format!("  warning: {w}"));
    }
    for n in &layout.notes {
        out.push(format!("  note: {n}"));
    }
    out
}

/// The disk, its table, and what a disk without a table holds.
fn disk_lines(layout: &Layout, sector: u64) -> Vec<String> {
    let mut out = Vec::new();
    let table = match layout.table {
        Table::None => "no partition table".to_string(),
        Table::Mbr => format!(
            "MBR (DOS) partition table, disk id {}",
            layout.disk_id.as_deref().unwrap_or("-")
        ),
        Table::Gpt => format!(
            "GPT partition table, disk GUID {}",
            layout.disk_id.as_deref().unwrap_or("-")
        ),
    };
    out.push(format!(
        "{} ({} bytes, {} sectors of {} bytes), {table}",
        bytes(layout.disk_size),
        layout.disk_size,
        layout.disk_size / sector,
        sector
    ));
    if let Some(g) = &layout.gpt {
        let state = |ok: bool| if ok { "ok" } else { "DAMAGED" };
        out.push(format!(
            "  GPT: usable sectors {}..{}, {} entries of {} bytes, backup header at LBA {}; \
             primary {}, backup {}",
            g.first_usable_lba,
            g.last_usable_lba,
            g.entries,
            g.entry_size,
            g.backup_lba,
            state(g.primary_ok),
            state(g.backup_ok)
        ));
    }
    if layout.table != Table::None {
        out.push(format!(
            "  boot code in sector 0: {}",
            if layout.boot_code { "yes" } else { "none" }
        ));
    }
    if let Some(c) = &layout.content {
        out.push(format!("  holds: {}", content_text(c)));
    }
    out
}

/// A heading and a line per partition (two for GPT: its GUIDs and name).
fn partition_lines(layout: &Layout, sector: u64) -> Vec<String> {
    let mut out = Vec::new();
    if !layout.partitions.is_empty() {
        out.push(format!(
            "  {:<3} {:>11} {:>11} {:>10}  {:<24} {}",
            "NR", "START", "END", "SIZE", "TYPE", "CONTENT"
        ));
    }
    for p in &layout.partitions {
        let mut flags = Vec::new();
        if p.bootable {
            flags.push(if layout.table == Table::Gpt {
                "legacy BIOS bootable"
            } else {
                "boot"
            });
        }
        if let Some(k) = p.mbr_kind.as_deref().filter(|&k| k != "primary") {
            flags.push(k);
        }
        let content = p.content.as_ref().map_or("-".to_string(), content_text);
        out.push(format!(
            "  {:<3} {:>11} {:>11} {:>10}  {:<24} {}{}",
            p.number,
            p.start,
            p.end().saturating_sub(1),
            bytes(p.sectors.saturating_mul(sector)),
            if layout.table == Table::Gpt {
                p.type_name.clone()
            } else {
                format!("{} ({})", p.type_name, p.type_id)
            },
            content,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            }
        ));
        if layout.table == Table::Gpt {
            out.push(format!(
                "      type {}  partition {}{}",
                p.type_id,
                p.guid.as_deref().unwrap_or("-"),
                p.name
                    .as_ref()
                    .map_or(String::new(), |n| format!("  name \"{n}\""))
            ));
        }
    }
    out
}

/// The sectors outside every partition, if any.
fn gaps_line(layout: &Layout, sector: u64) -> Option<String> {
    let gaps = layout.gaps();
    if gaps.is_empty() {
        return None;
    }
    let text: Vec<String> = gaps
        .iter()
        .map(|&(start, n)| {
            format!(
                "{}..{} ({})",
                start,
                start.saturating_add(n - 1),
                bytes(n.saturating_mul(sector))
            )
        })
        .collect();
    Some(format!(
        "  outside partitions (kept byte for byte): sectors {}",
        text.join(", ")
    ))
}
