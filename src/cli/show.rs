//! `platter show`: everything about one snapshot.

use platter::disk::layout::Layout;

use super::{Context, layout_text, output};

/// Show one snapshot in full
#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id, unique prefix, or `latest`
    snapshot: String,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let repo = ctx.open_repo()?;
    let s = repo.resolve(&args.snapshot)?;
    if ctx.json {
        // The manifest's fields, and the restore test's result (null when
        // there is none, {"unreadable": why} when it cannot be read).
        use platter::jobs::restore_test::TestResult;
        let mut doc = serde_json::to_value(&s)
            .map_err(|e| platter::Error::internal(format!("cannot encode JSON: {e}")))?;
        let test = match platter::repo::test_result::read::<TestResult>(&repo, &s.id) {
            Ok(found) => serde_json::to_value(found)
                .map_err(|e| platter::Error::internal(format!("cannot encode JSON: {e}")))?,
            Err(e) => serde_json::json!({ "unreadable": e.to_string() }),
        };
        if let Some(fields) = doc.as_object_mut() {
            fields.insert("restore_test".into(), test);
        }
        output::json(&doc)?;
        return Ok(true);
    }
    let st = &s.stats;
    let src = &s.source;
    let mut lines = vec![
        format!("snapshot      {}", s.id),
        format!("time          {}", s.time),
        format!("host          {}", s.hostname),
        format!(
            "parent        {}",
            s.parent.map_or("none".to_string(), |p| p.to_hex())
        ),
        format!(
            "tags          {}",
            if s.tags.is_empty() {
                "-".into()
            } else {
                s.tags.join(", ")
            }
        ),
        format!(
            "source        {} ({}){}",
            src.path,
            src.kind,
            src.partition
                .map_or(String::new(), |n| format!(", partition {n}"))
        ),
        format!(
            "size          {} ({} bytes), sectors of {} bytes",
            output::bytes(src.size),
            src.size,
            src.logical_sector_size
        ),
    ];
    for (name, value) in [
        ("serial", &src.serial),
        ("wwid", &src.wwid),
        ("model", &src.model),
    ] {
        if let Some(v) = value {
            lines.push(format!("{name:<14}{v}"));
        }
    }
    lines.extend([
        format!(
            "chunks        {} of {}",
            s.map.entries,
            output::bytes(s.chunk_size)
        ),
        format!(
            "  new {}, unchanged {}, deduplicated {}, zero {}, holes {}",
            st.chunks_new, st.chunks_unchanged, st.chunks_dedup, st.chunks_zero, st.chunks_hole
        ),
        format!("read          {}", output::bytes(st.bytes_read)),
        format!(
            "added         {} ({} before compression)",
            output::bytes(st.bytes_new),
            output::bytes(st.bytes_new_plain)
        ),
        format!(
            "took          {:.2}s{}",
            st.duration_s,
            if s.full { " (--full)" } else { "" }
        ),
        format!("map blake3    {}", s.map.blake3),
        format!("written by    platter {}", s.platter_version),
    ]);
    match s.parsed_layout::<Layout>() {
        Some(Ok(layout)) => {
            for (i, l) in layout_text::lines(&layout).into_iter().enumerate() {
                lines.push(if i == 0 {
                    format!("layout        {l}")
                } else {
                    l
                });
            }
        }
        Some(Err(e)) => lines.push(format!("layout        unreadable ({e})")),
        None => lines.push("layout        not recorded (snapshot made before layouts were)".into()),
    }
    lines.extend(restore_test_lines(&repo, &s));
    for l in lines {
        output::line(&l);
    }
    Ok(true)
}

/// The snapshot's restore test result (`platter run`), if it has one.
fn restore_test_lines(
    repo: &platter::repo::Repository,
    s: &platter::repo::snapshot::Snapshot,
) -> Vec<String> {
    use platter::jobs::restore_test::{TestResult, verdict_name};
    match platter::repo::test_result::read::<TestResult>(repo, &s.id) {
        Ok(None) => vec!["restore test  none".into()],
        Err(e) => vec![format!("restore test  unreadable ({e})")],
        Ok(Some(t)) => {
            let mut lines = vec![format!(
                "restore test  {} at {} ({:.1}s), layout {}",
                t.result,
                t.time,
                t.duration_s,
                if t.layout_matches {
                    "matches"
                } else {
                    "DIFFERS"
                }
            )];
            lines.extend(t.layout_differences.iter().map(|d| format!("  {d}")));
            lines.extend(t.filesystems.iter().map(|f| {
                format!(
                    "  {} ({}): {}; {}",
                    f.place,
                    f.fstype,
                    verdict_name(&f.verdict),
                    f.note
                )
            }));
            if let Some(b) = &t.boot {
                lines.push(format!(
                    "  boot test: {}; {}",
                    if b.ok { "ok" } else { "FAILED" },
                    b.note
                ));
            }
            lines
        }
    }
}
