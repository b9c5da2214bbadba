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
        Command::new("apt-cache").args(["depends", name]),
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
        Command::new("apt-get").args(["download", "--print-uris", package]),
    )
    .map_err(|e| e.hint("run `apt-get update` if the package lists are missing or old"))?;
    // 'URL' FILE SIZE HASH
    let (file, size) = said
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace().skip(1);
            let file = words.next()?;
            let size = words.next()?.parse::<u64>().ok()?;
            (file.ends_with(".deb") && !file.contains('/')).then(|| (file.to_string(), size))
        })
        .ok_or_else(|| {
            Error::not_found(format!("apt-get knows no download for package {package}"))
                .hint("check the name, and run `apt-get update`")
        })?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(|e| Error::io("create", &debs, e))?;
    let deb = debs.join(&file);
    if fs::metadata(&deb).map(|m| m.len()).ok() != Some(size) {
        download(&debs, package, &file, &deb)?;
    }
    let trees = cache.join("trees");
    let stem = file.trim_end_matches(".deb");
    let tree = trees.join(stem);
    if !tree.join(".complete").exists() {
        unpack(&trees, stem, &deb, &tree)?;
    }
    Ok(Unpacked { tree })
}

fn download(debs: &Path, package: &str, file: &str, deb: &Path) -> Result<()> {
    let tmp = temp_dir(debs, "download")?;
    let _gone = crate::interrupt::remove_tree_on_interrupt(&tmp);
    let got = run(
        &format!("apt-get download {package}"),
        Command::new("apt-get")
            .args(["download", package])
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
        let mark = tmp.join(".complete");
        fs::write(&mark, b"").map_err(|e| Error::io("write", &mark, e))?;
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
