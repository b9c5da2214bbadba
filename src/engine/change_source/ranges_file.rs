//! `backup --changed-ranges FILE`: the byte ranges someone else knows
//! changed since the parent snapshot, in one of three shapes.
//!
//! - Lines of `offset length` in bytes (decimal); `#` starts a comment.
//! - The XML of `thin_delta` (thin-provisioning-tools), terse or
//!   `--verbose`: ranges of data blocks of `data_block_size` sectors of 512
//!   bytes (from its `<superblock>`); every kind but `same` (`different`,
//!   `left_only`, `right_only`) is a change.
//! - The XML of `era_invalidate`: `<range begin end>` (end exclusive) and
//!   `<block block>` in blocks whose size the output does not say, so
//!   `--block-size` is required.
//!
//! The XML is read with quick-xml, never by hand. Anything else, a number
//! that does not parse or overflows, or a range past the end of the
//! source is refused (exit 2) before anything is written.

use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::disk::ranges::Ranges;
use crate::error::{Error, IoContext, Result};

/// The ranges a file claims changed since the parent.
#[derive(Debug, Clone)]
pub struct RangesClaim {
    pub ranges: Ranges,
    /// Which shape the file had: `lines`, `thin_delta` or `era_invalidate`.
    pub format: &'static str,
    pub file: PathBuf,
}

impl RangesClaim {
    /// Reads and checks `file`; `block_size` (bytes) is that of
    /// era_invalidate output.
    pub fn read(file: &Path, block_size: Option<u64>) -> Result<RangesClaim> {
        if let Some(size) = block_size.filter(|&b| b == 0 || b % 512 != 0) {
            return Err(Error::bad_input(format!(
                "--block-size {size} is not a block size: era devices count blocks of 512-byte \
                 sectors"
            ))
            .hint("give the era device's block size in bytes, e.g. 64K"));
        }
        let bytes = read_bounded(file)?;
        let refuse = |why: String| {
            Error::bad_input(format!("{}: {why}", file.display())).hint(
                "nothing was written; give `offset length` lines in bytes, or the XML output \
                 of thin_delta or era_invalidate (with --block-size)",
            )
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|e| refuse(format!("not UTF-8 text ({e})")))?;
        let (ranges, format) = parse(text, block_size).map_err(refuse)?;
        Ok(RangesClaim {
            ranges: Ranges::new(ranges),
            format,
            file: file.to_path_buf(),
        })
    }

    /// Refuses ranges that end past a source of `size` bytes.
    pub fn check_within(&self, size: u64) -> Result<()> {
        match self.ranges.end() {
            Some(end) if end > size => Err(Error::bad_input(format!(
                "{}: a changed range ends at byte {end}, past the end of the source ({size} bytes)",
                self.file.display()
            ))
            .hint("nothing was written; the ranges must be of this source (check the block size and the device they were taken from)")),
            _ => Ok(()),
        }
    }
}

/// The ranges `(start, end)` in bytes and the shape they came in, or
/// what is wrong.
type Parsed = std::result::Result<(Vec<(u64, u64)>, &'static str), String>;

/// The most a ranges file may hold: millions of ranges, far more than a
/// change list needs, and a bound on what a wrong path (`/dev/zero`) costs.
const MOST: u64 = 256 << 20;

/// Reads `file` whole, up to `MOST` bytes; a folder, or anything longer,
/// is refused.
fn read_bounded(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let refuse = |why: &str| {
        Error::bad_input(format!("{}: {why}", file.display()))
            .hint("give a file of `offset length` lines, or thin_delta or era_invalidate output")
    };
    if std::fs::metadata(file).is_ok_and(|m| m.is_dir()) {
        return Err(refuse("is a folder, not a list of changed ranges"));
    }
    let opened = std::fs::File::open(file).at("open the changed ranges in", file)?;
    let mut bytes = Vec::new();
    opened
        .take(MOST + 1)
        .read_to_end(&mut bytes)
        .at("read the changed ranges in", file)?;
    if bytes.len() as u64 > MOST {
        return Err(refuse(
            "holds more than 256 MiB: that is no list of changed ranges",
        ));
    }
    Ok(bytes)
}

fn parse(text: &str, block_size: Option<u64>) -> Parsed {
    if text.trim_start().starts_with('<') {
        return parse_xml(text, block_size);
    }
    if block_size.is_some() {
        return Err(
            "--block-size is for era_invalidate output; `offset length` lines are in bytes".into(),
        );
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let number = |s: &str| {
            s.parse::<u64>()
                .ok()
                .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        };
        let parsed = match fields.as_slice() {
            [offset, len] => number(offset).zip(number(len)),
            _ => None,
        };
        let Some((offset, len)) = parsed else {
            let shown: String = line.trim().chars().take(80).collect();
            return Err(format!(
                "line {} is not `offset length` (two decimal byte counts): {shown:?}{}",
                n + 1,
                if line.trim().chars().count() > 80 {
                    "..."
                } else {
                    ""
                }
            ));
        };
        let end = offset
            .checked_add(len)
            .ok_or_else(|| format!("line {}: the range ends past 2^64 bytes", n + 1))?;
        out.push((offset, end));
    }
    Ok((out, "lines"))
}

fn parse_xml(text: &str, block_size: Option<u64>) -> Parsed {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut walk = Walk::default();
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed XML near byte {at}: {e}"))?;
        match event {
            Event::Start(e) => {
                walk.element(&e, block_size)?;
                walk.open.push(name(&e));
            }
            Event::Empty(e) => walk.element(&e, block_size)?,
            Event::End(_) => {
                walk.open.pop();
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::Text(_) => {}
            _ => return Err(format!("unexpected XML near byte {at}")),
        }
    }
    if !walk.open.is_empty() {
        return Err(format!(
            "the XML ends inside <{}>: cut short?",
            walk.open.join("><")
        ));
    }
    let format = walk.format.ok_or("the XML holds no element")?;
    Ok((walk.ranges, format))
}

/// Where the XML reader is.
#[derive(Default)]
struct Walk {
    format: Option<&'static str>,
    /// Bytes per block.
    block: u64,
    /// Names of the open elements, outermost first.
    open: Vec<String>,
    ranges: Vec<(u64, u64)>,
}

fn name(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_string()
}

/// Kinds of thin_delta's regions.
const THIN_KINDS: [&str; 4] = ["same", "different", "left_only", "right_only"];

impl Walk {
    fn element(
        &mut self,
        e: &BytesStart<'_>,
        block_size: Option<u64>,
    ) -> std::result::Result<(), String> {
        let element = name(e);
        let parent = self.open.last().map(String::as_str);
        match (self.format, parent, element.as_str()) {
            (None, None, "superblock") => {
                let sectors = number(e, "data_block_size")?;
                let block = sectors
                    .checked_mul(512)
                    .filter(|&b| b > 0)
                    .ok_or_else(|| format!("data_block_size=\"{sectors}\" is not a block size"))?;
                if let Some(given) = block_size.filter(|&b| b != block) {
                    return Err(format!(
                        "--block-size {given} disagrees with thin_delta's data_block_size \
                         ({sectors} sectors = {block} bytes); omit --block-size"
                    ));
                }
                self.format = Some("thin_delta");
                self.block = block;
            }
            (None, None, "blocks") => {
                let block = block_size.ok_or(
                    "era_invalidate output does not say its block size: give --block-size \
                     (the era device's block size in bytes)",
                )?;
                self.format = Some("era_invalidate");
                self.block = block;
            }
            (None, _, other) => {
                return Err(format!(
                    "<{other}> is neither thin_delta's <superblock> nor era_invalidate's <blocks>"
                ));
            }
            (Some("thin_delta"), Some("superblock"), "diff") => {}
            (Some("thin_delta"), Some("diff"), kind) if THIN_KINDS.contains(&kind) => {
                // The terse shape: the region is the element itself; the
                // verbose one holds <range> elements.
                let has = |a: &str| e.try_get_attribute(a).ok().flatten().is_some();
                if has("begin") || has("length") {
                    self.thin_region(e, kind)?;
                }
            }
            (Some("thin_delta"), Some(kind), "range") if THIN_KINDS.contains(&kind) => {
                let kind = kind.to_string();
                self.thin_region(e, &kind)?;
            }
            (Some("era_invalidate"), Some("blocks"), "range") => {
                let (begin, end) = (number(e, "begin")?, number(e, "end")?);
                if end <= begin {
                    return Err(format!(
                        "<range begin=\"{begin}\" end=\"{end}\"> is empty or reversed (end is exclusive)"
                    ));
                }
                self.push(begin, end - begin)?;
            }
            (Some("era_invalidate"), Some("blocks"), "block") => {
                let block = number(e, "block")?;
                self.push(block, 1)?;
            }
            (Some(format), parent, other) => {
                return Err(format!(
                    "unexpected <{other}> {} in {format} output",
                    parent.map_or("at the top".to_string(), |p| format!("inside <{p}>"))
                ));
            }
        }
        Ok(())
    }

    fn thin_region(&mut self, e: &BytesStart<'_>, kind: &str) -> std::result::Result<(), String> {
        let (begin, len) = (number(e, "begin")?, number(e, "length")?);
        if kind == "same" {
            return Ok(());
        }
        self.push(begin, len)
    }

    /// Adds `count` blocks from block `first`.
    fn push(&mut self, first: u64, count: u64) -> std::result::Result<(), String> {
        let overflow = || {
            format!(
                "blocks {first}+{count} of {} bytes lie past 2^64 bytes",
                self.block
            )
        };
        let start = first.checked_mul(self.block).ok_or_else(overflow)?;
        let len = count.checked_mul(self.block).ok_or_else(overflow)?;
        let end = start.checked_add(len).ok_or_else(overflow)?;
        self.ranges.push((start, end));
        Ok(())
    }
}

/// The attribute `attr` of `e`, a decimal number.
fn number(e: &BytesStart<'_>, attr: &str) -> std::result::Result<u64, String> {
    let element = name(e);
    let value = e
        .try_get_attribute(attr)
        .map_err(|err| format!("<{element}> has a damaged attribute: {err}"))?
        .ok_or_else(|| format!("<{element}> lacks the attribute {attr}"))?;
    let text = value
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|err| format!("<{element} {attr}> does not read: {err}"))?;
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|_| text.trim().bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("<{element} {attr}=\"{text}\"> is not a decimal number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_comments_and_blank_lines_parse() {
        let text = "# changed\n0 4096\n\n  8192   100 # tail\n";
        assert_eq!(
            parse(text, None),
            Ok((vec![(0, 4096), (8192, 8292)], "lines"))
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for text in [
            "0 1\n5\n",
            "0 1\n-1 4\n",
            "1 2 3\n",
            "0x10 5\n",
            "18446744073709551615 2\n",
        ] {
            let err = parse(text, None).unwrap_err();
            assert!(err.contains("line"), "{text:?}: {err}");
        }
    }

    #[test]
    fn thin_delta_terse_and_verbose_shapes_agree() {
        let terse = r#"<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="1000">
  <diff left="1" right="2">
    <same begin="0" length="5"/>
    <different begin="5" length="3"/>
    <left_only begin="18" length="2"/>
    <right_only begin="30" length="2"/>
  </diff>
</superblock>"#;
        let verbose = r#"<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="1000">
  <diff left="1" right="2">
    <same>
      <range begin="0" data_begin="0" length="5"/>
    </same>
    <different>
      <range begin="5" left_data_begin="5" right_data_begin="100" length="3"/>
    </different>
    <left_only>
      <range begin="18" data_begin="18" length="2"/>
    </left_only>
    <right_only>
      <range begin="30" data_begin="200" length="2"/>
    </right_only>
  </diff>
</superblock>"#;
        let b = 128 * 512;
        let want = vec![(5 * b, 8 * b), (18 * b, 20 * b), (30 * b, 32 * b)];
        assert_eq!(parse(terse, None), Ok((want.clone(), "thin_delta")));
        assert_eq!(parse(verbose, None), Ok((want, "thin_delta")));
    }

    #[test]
    fn era_invalidate_needs_a_block_size_and_ends_are_exclusive() {
        let text =
            "<blocks>\n  <range begin=\"1\" end = \"4\"/>\n  <block block=\"9\"/>\n</blocks>\n";
        assert!(parse(text, None).unwrap_err().contains("--block-size"));
        assert_eq!(
            parse(text, Some(4096)),
            Ok((
                vec![(4096, 4 * 4096), (9 * 4096, 10 * 4096)],
                "era_invalidate"
            ))
        );
    }

    #[test]
    fn malformed_xml_is_refused() {
        for text in [
            "<blocks><range begin=\"1\"/></blocks>",
            "<blocks><range begin=\"4\" end=\"4\"/></blocks>",
            "<blocks><range begin=\"1\" end=\"2\"/>",
            "<blocks><oops/></blocks>",
            "<superblock><diff/></superblock>",
            "<superblock data_block_size=\"8\"><diff><different begin=\"x\" length=\"1\"/></diff></superblock>",
            // A region without its start is not skipped as an empty container.
            "<superblock data_block_size=\"128\"><diff><different length=\"5\"/></diff></superblock>",
            "<other/>",
            "<blocks><block block=\"18446744073709551615\"/></blocks>",
        ] {
            assert!(parse(text, Some(512)).is_err(), "{text}");
        }
    }
}
