//! Debian packages for the medium: downloaded with `apt-get download`
//! (nothing is installed on the host) and unpacked with `dpkg-deb -x` into
//! a cache folder, once per package version. A download or unpack that is
//! cut short leaves only a temporary name, never a file the next build
//! would trust.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::host::run;
use crate::error::{Error, Result};

/// A package unpacked in the cache.
pub struct Unpacked {
    /// Where its files are (`tree/usr/...`, `tree/lib/...`).
    pub tree: PathBuf,
}

/// The kernel package to use: `requested` (default `linux-image-amd64`),
/// followed through a metapackage to the image package it depends on.
pub fn kernel_package(requested: Option<&str>) -> Result<String> {
    let name = requested.unwrap_or("linux-image-amd64");
    let said = run(
        &format!("apt-cache depends {name}"),
        Command::new("apt-cache").args(["depends", "--", name]),
    )
    .map_err(|e| {
        e.hint("is the name right, and are the package lists there (`apt-get update`)?")
    })?;
    let image = said.lines().find_map(|line| {
        let dep = line.trim().strip_prefix("Depends: ")?;
        dep.starts_with("linux-image-").then(|| dep.to_string())
    });
    Ok(image.unwrap_or_else(|| name.to_string()))
}

/// Downloads `package` into `cache/debs` unless that version is there,
/// and unpacks it into `cache/trees` unless it was unpacked whole before.
pub fn fetch(cache: &Path, package: &str) -> Result<Unpacked> {
    let said = run(
        &format!("apt-get download --print-uris {package}"),
        Command::new("apt-get").args(["download", "--print-uris", "--", package]),
    )
    .map_err(|e| e.hint("run `apt-get update` if the package lists are missing or old"))?;
    // 'URL' FILE SIZE SHA256:HEX
    let (file, size, sha256) = said
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace().skip(1);
            let file = words.next()?;
            let size = words.next()?.parse::<u64>().ok()?;
            let sha256 = words.next()?.strip_prefix("SHA256:")?.to_ascii_lowercase();
            (file.ends_with(".deb") && !file.contains('/') && !file.starts_with('.'))
                .then(|| (file.to_string(), size, sha256))
        })
        .ok_or_else(|| {
            Error::not_found(format!("apt-get knows no download for package {package}"))
                .hint("check the name, and run `apt-get update`")
        })?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(|e| Error::io("create", &debs, e))?;
    let deb = debs.join(&file);
    // A cached package is used only with the size and hash apt names.
    if fs::metadata(&deb).map(|m| m.len()).ok() != Some(size) || sha256_of(&deb)? != sha256 {
        download(&debs, package, &file, &deb)?;
        if sha256_of(&deb)? != sha256 {
            let _ = fs::remove_file(&deb);
            return Err(Error::corrupt(format!(
                "the download of {package} does not have the SHA-256 apt names"
            ))
            .hint("run `apt-get update` and build again"));
        }
    }
    let trees = cache.join("trees");
    let stem = file.trim_end_matches(".deb");
    let tree = trees.join(stem);
    // An unpacked tree is used only whole: every file it had when
    // unpacked, at its size (a damaged cache is unpacked again).
    if !tree_is_whole(&tree) {
        unpack(&trees, stem, &deb, &tree)?;
    }
    Ok(Unpacked { tree })
}

/// The SHA-256 of a file in lower-case hex; empty when it is missing.
fn sha256_of(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The list an unpacked tree keeps of itself: "SIZE PATH" for every
/// regular file; written last, so a tree without it is incomplete.
const COMPLETE: &str = ".complete";

fn tree_is_whole(tree: &Path) -> bool {
    let Ok(list) = fs::read_to_string(tree.join(COMPLETE)) else {
        return false;
    };
    let mut files = 0;
    for line in list.lines() {
        let Some((size, rel)) = line.split_once(' ') else {
            return false;
        };
        let same = size.parse::<u64>().is_ok_and(|size| {
            fs::symlink_metadata(tree.join(rel)).is_ok_and(|m| m.is_file() && m.len() == size)
        });
        if !same {
            return false;
        }
        files += 1;
    }
    files > 0
}

/// "SIZE PATH" lines for every regular file under `dir`.
fn file_list(dir: &Path, rel: &Path, out: &mut String) -> Result<()> {
    let here = dir.join(rel);
    for entry in fs::read_dir(&here).map_err(|e| Error::io("list", &here, e))? {
        let entry = entry.map_err(|e| Error::io("list", &here, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("inspect", &path, e))?;
        let name = rel.join(entry.file_name());
        if kind.is_dir() {
            file_list(dir, &name, out)?;
        } else if kind.is_file() {
            let len = entry
                .metadata()
                .map_err(|e| Error::io("inspect", &path, e))?
                .len();
            let text = name.to_string_lossy();
            if !text.contains('\n') {
                out.push_str(&format!("{len} {text}\n"));
            }
        }
    }
    Ok(())
}

fn download(debs: &Path, package: &str, file: &str, deb: &Path) -> Result<()> {
    let tmp = temp_dir(debs, "download")?;
    let _gone = crate::interrupt::remove_tree_on_interrupt(&tmp);
    let got = run(
        &format!("apt-get download {package}"),
        Command::new("apt-get")
            .args(["download", "--", package])
            .current_dir(&tmp),
    )
    .and_then(|_| {
        let at = tmp.join(file);
        fs::rename(&at, deb).map_err(|e| Error::io("move the download into the cache", &at, e))
    });
    let _ = fs::remove_dir_all(&tmp);
    got
}

fn unpack(trees: &Path, stem: &str, deb: &Path, tree: &Path) -> Result<()> {
    fs::create_dir_all(trees).map_err(|e| Error::io("create", trees, e))?;
    let tmp = temp_dir(trees, stem)?;
    let _gone = crate::interrupt::remove_tree_on_interrupt(&tmp);
    let done = run(
        &format!("dpkg-deb -x {}", deb.display()),
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
    )
    .and_then(|_| {
        let mut list = String::new();
        file_list(&tmp, Path::new(""), &mut list)?;
        let mark = tmp.join(COMPLETE);
        fs::write(&mark, list).map_err(|e| Error::io("write", &mark, e))?;
        if tree.exists() {
            fs::remove_dir_all(tree).map_err(|e| Error::io("remove the old", tree, e))?;
        }
        fs::rename(&tmp, tree).map_err(|e| Error::io("move the unpacked package to", tree, e))
    });
    if done.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    done
}

/// A new folder beside the cache's own, named for this process.
fn temp_dir(parent: &Path, what: &str) -> Result<PathBuf> {
    let dir = parent.join(format!(".{what}.{}.partial", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins: a cached tree is used only whole (hostile session: a module deleted from the cache was reported as "this kernel lacks it", and a truncated kernel went into a medium).
    #[test]
    fn a_tree_with_a_missing_or_changed_file_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        fs::create_dir_all(tree.join("lib/modules")).unwrap();
        fs::write(tree.join("lib/modules/a.ko"), b"module").unwrap();
        fs::write(tree.join("vmlinuz"), b"kernel").unwrap();
        assert!(!tree_is_whole(tree), "no list yet");
        let mut list = String::new();
        file_list(tree, Path::new(""), &mut list).unwrap();
        fs::write(tree.join(COMPLETE), &list).unwrap();
        assert!(tree_is_whole(tree));
        fs::write(tree.join("vmlinuz"), b"").unwrap();
        assert!(!tree_is_whole(tree), "truncated file");
        fs::write(tree.join("vmlinuz"), b"kernel").unwrap();
        fs::remove_file(tree.join("lib/modules/a.ko")).unwrap();
        assert!(!tree_is_whole(tree), "deleted file");
        // The list written by an earlier platter was empty.
        fs::write(tree.join(COMPLETE), b"").unwrap();
        assert!(!tree_is_whole(tree));
    }
}
