//! The medium's root filesystem: a gzip-compressed newc cpio archive,
//! written entry by entry with owners, modes and device nodes set in the
//! archive itself (no root needed on the host, nothing staged on disk).

use std::collections::HashSet;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::{Error, ErrorKind, Result};

const DIR: u32 = 0o040000;
const FILE: u32 = 0o100000;
const CHAR: u32 = 0o020000;

pub struct Archive<W: Write> {
    out: GzEncoder<W>,
    next_ino: u32,
    dirs: HashSet<String>,
}

fn failed(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot write the rescue initramfs: {e}"),
    )
}

impl<W: Write> Archive<W> {
    pub fn new(out: W) -> Archive<W> {
        Archive {
            out: GzEncoder::new(out, Compression::new(6)),
            next_ino: 1,
            dirs: HashSet::new(),
        }
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| Error::bad_input(format!("{path} is too large for the initramfs")))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut writer = cpio::newc::Builder::new(path)
            .ino(ino)
            .mode(mode)
            .nlink(if mode & DIR == DIR { 2 } else { 1 })
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut self.out, size);
        writer.write_all(data).map_err(failed)?;
        writer.finish().map_err(failed)?;
        Ok(())
    }

    /// Every folder above `path`, once.
    fn parents(&mut self, path: &str) -> Result<()> {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let dir = &path[..at + slash];
            if self.dirs.insert(dir.to_string()) {
                self.entry(dir, DIR | 0o755, (0, 0), &[])?;
            }
            at += slash + 1;
        }
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.parents(path)?;
        if self.dirs.insert(path.to_string()) {
            self.entry(path, DIR | 0o755, (0, 0), &[])?;
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        self.entry(path, FILE | (mode & 0o7777), (0, 0), data)
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.parents(path)?;
        self.entry(path, CHAR | (mode & 0o7777), (major, minor), &[])
    }

    /// Writes the trailer and the end of the compressed stream.
    pub fn finish(self) -> Result<W> {
        let out = cpio::newc::trailer(self.out).map_err(failed)?;
        out.finish().map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_read_back_with_their_types_and_parents() {
        let mut archive = Archive::new(Vec::new());
        archive.file("bin/busybox", 0o755, b"hello").unwrap();
        archive.char_device("dev/console", 0o600, 5, 1).unwrap();
        let gz = archive.finish().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut names = Vec::new();
        let mut rest = &raw[..];
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry();
            names.push((e.name().to_string(), e.mode(), e.rdev_major()));
            rest = reader.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("bin".into(), 0o040755, 0),
                ("bin/busybox".into(), 0o100755, 0),
                ("dev".into(), 0o040755, 0),
                ("dev/console".into(), 0o020600, 5),
            ]
        );
    }
}
