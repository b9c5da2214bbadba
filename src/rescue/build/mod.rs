//! `platter rescue build`: the rescue medium, made on a Debian/Ubuntu host
//! from Debian packages and a static platter binary.
//!
//! Steps: check the output name and the host tools; check the binary;
//! download and unpack the kernel, busybox-static and ca-certificates into
//! the cache; pick the kernel modules; write the initramfs (a cpio archive
//! made here, with its device nodes, so no root is needed); write the boot
//! menu; let grub-mkrescue make the hybrid image under a temporary name,
//! renamed to OUT when complete.

mod binary;
mod debs;
mod host;
mod initramfs;
mod iso;
mod modules;

use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::rescue::params::{Params, Unattended};

const INIT: &str = include_str!("files/init.sh");
const INITTAB: &str = include_str!("files/inittab");
const UDHCPC: &str = include_str!("files/udhcpc.sh");

/// Where the medium keeps what the builder put there for the system.
pub const RELEASE_FILE: &str = "/etc/rescue/release";
pub const PASSPHRASE_FILE: &str = "/etc/rescue/passphrase";

pub struct BuildOptions {
    pub out: PathBuf,
    /// The binary to put inside; default the running one.
    pub platter: Option<PathBuf>,
    /// Downloaded and unpacked packages (kept between builds).
    pub cache: PathBuf,
    /// A Debian kernel image package (or metapackage) instead of
    /// linux-image-amd64.
    pub kernel_package: Option<String>,
    pub force: bool,
    pub unattended: Option<Unattended>,
    /// A passphrase file copied into the medium (unattended restores of
    /// encrypted repositories).
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    pub out: String,
    pub bytes: u64,
    pub volume_id: String,
    pub kernel: String,
    pub modules: usize,
    /// Wanted drivers this kernel lacks, with what they are for.
    pub absent: Vec<String>,
    pub platter_bytes: u64,
    pub stripped: bool,
    pub unattended: bool,
    pub seconds: f64,
}

/// The cache folder when none is given: $XDG_CACHE_HOME/platter/rescue,
/// else ~/.cache/platter/rescue.
pub fn default_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("platter").join("rescue"))
}

/// Builds the medium; `say` hears what is being done, step by step.
pub fn build(options: &BuildOptions, say: &dyn Fn(&str)) -> Result<BuildReport> {
    let began = Instant::now();
    check_out(&options.out, options.force)?;
    outside_repositories(&options.out, "image")?;
    outside_repositories(&options.cache, "cache")?;
    host::check_tools()?;
    let passphrase = options
        .passphrase_file
        .as_deref()
        .map(read_passphrase)
        .transpose()?;
    if passphrase.is_some() && options.unattended.is_none() {
        return Err(Error::bad_input(
            "--passphrase-file goes into the medium only for an unattended restore",
        )
        .hint(
            "add --unattended with its target, or leave the passphrase out: the menu asks for it",
        ));
    }
    let volume_id = new_volume_id()?;
    let params = Params {
        volume_id: Some(volume_id.clone()),
        unattended: options.unattended.clone(),
    };
    let words = params.words()?;
    let menu_words = if options.unattended.is_some() {
        Params {
            volume_id: Some(volume_id.clone()),
            unattended: None,
        }
        .words()?
    } else {
        Vec::new()
    };

    if options.cache.exists() && !options.cache.is_dir() {
        return Err(
            Error::bad_input(format!("cache {} is not a folder", options.cache.display()))
                .hint("name a folder for --cache (it is created when missing)"),
        );
    }
    fs::create_dir_all(&options.cache).map_err(|e| Error::io("create", &options.cache, e))?;
    let _cache = lock_cache(&options.cache, say)?;
    // Holding the lock, anything half-made in the cache is a leftover of
    // a build that was killed.
    for dir in [
        options.cache.clone(),
        options.cache.join("debs"),
        options.cache.join("trees"),
    ] {
        remove_partials(&dir);
    }
    let stage = options
        .cache
        .join(format!(".stage.{}.partial", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(stage.join("boot/grub")).map_err(|e| Error::io("create", &stage, e))?;
    let _stage_gone = crate::interrupt::remove_tree_on_interrupt(&stage);
    let made = (|| {
        let me = match &options.platter {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| {
                Error::io("find the running binary", Path::new("/proc/self/exe"), e)
            })?,
        };
        let (platter, stripped) = binary::prepare(&me, &stage)?;

        let kernel_package = debs::kernel_package(options.kernel_package.as_deref())?;
        say(&format!(
            "fetching {kernel_package}, busybox-static, ca-certificates (cached in {})",
            options.cache.display()
        ));
        let kernel = debs::fetch(&options.cache, &kernel_package)?;
        let busybox = debs::fetch(&options.cache, "busybox-static")?;
        let certs = debs::fetch(&options.cache, "ca-certificates")?;

        let selection = modules::select(&kernel.tree)?;
        let absent: Vec<String> = selection
            .absent
            .iter()
            .map(|(name, what)| format!("{name} ({what})"))
            .collect();
        if !absent.is_empty() {
            say(&format!(
                "this kernel ({}) lacks: {}; pick another with --kernel-package",
                selection.release,
                absent.join(", ")
            ));
        }
        let vmlinuz = kernel_image(&kernel.tree, &selection.release)?;
        let to = stage.join("boot/vmlinuz");
        fs::copy(&vmlinuz, &to).map_err(|e| Error::io("copy the kernel to", &to, e))?;

        say(&format!(
            "writing the initramfs: {} modules, busybox, platter ({})",
            selection.ordered.len(),
            crate::units::bytes(platter.len() as u64)
        ));
        let initrd = stage.join("boot/initrd.gz");
        let file = fs::File::create(&initrd).map_err(|e| Error::io("create", &initrd, e))?;
        let mut archive = initramfs::Archive::new(BufWriter::new(file));
        let busybox_bin = busybox.tree.join("bin/busybox");
        let busybox_bytes =
            fs::read(&busybox_bin).map_err(|e| Error::io("read", &busybox_bin, e))?;
        let bundle = ca_bundle(&certs.tree.join("usr/share/ca-certificates"))?;
        let release = format!(
            "built={}\nplatter={}\nkernel={}\n",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            env!("CARGO_PKG_VERSION"),
            selection.release
        );
        let contents = Contents {
            platter: &platter,
            busybox: &busybox_bytes,
            modules: &selection.ordered,
            ca_bundle: &bundle,
            release: &release,
            passphrase: passphrase.as_deref(),
        };
        contents.write(&mut archive)?;
        archive
            .finish()?
            .into_inner()
            .map_err(|e| Error::io("write", &initrd, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io("write", &initrd, e))?;

        let title = if options.unattended.is_some() {
            "platter rescue: unattended restore"
        } else {
            "platter rescue"
        };
        let cfg = iso::grub_cfg(title, &words, &menu_words);
        let cfg_path = stage.join("boot/grub/grub.cfg");
        fs::write(&cfg_path, cfg).map_err(|e| Error::io("write", &cfg_path, e))?;

        say("making the hybrid image (grub-mkrescue)");
        let partial = partial_name(&options.out);
        let _partial_gone = crate::interrupt::remove_on_interrupt(&partial);
        let done = iso::make(&stage, &partial, &volume_id).and_then(|_| {
            fs::rename(&partial, &options.out)
                .map_err(|e| Error::io("rename the image to", &options.out, e))
        });
        if done.is_err() {
            let _ = fs::remove_file(&partial);
        }
        done?;
        let bytes = fs::metadata(&options.out).map(|m| m.len()).unwrap_or(0);
        Ok(BuildReport {
            out: options.out.display().to_string(),
            bytes,
            volume_id: volume_id.clone(),
            kernel: selection.release,
            modules: selection.ordered.len(),
            absent,
            platter_bytes: platter.len() as u64,
            stripped,
            unattended: options.unattended.is_some(),
            seconds: began.elapsed().as_secs_f64(),
        })
    })();
    let _ = fs::remove_dir_all(&stage);
    made
}

/// What goes into the initramfs besides its fixed files.
struct Contents<'a> {
    platter: &'a [u8],
    busybox: &'a [u8],
    modules: &'a [modules::Module],
    ca_bundle: &'a [u8],
    release: &'a str,
    passphrase: Option<&'a [u8]>,
}

impl Contents<'_> {
    fn write<W: std::io::Write>(&self, a: &mut initramfs::Archive<W>) -> Result<()> {
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "mnt",
            "root",
            "etc/rescue",
        ] {
            a.dir(dir)?;
        }
        // The kernel opens /dev/console before /init runs.
        a.char_device("dev/console", 0o600, 5, 1)?;
        a.char_device("dev/null", 0o666, 1, 3)?;
        a.file("init", 0o755, INIT.as_bytes())?;
        a.file("etc/inittab", 0o644, INITTAB.as_bytes())?;
        a.file("etc/rescue/udhcpc.sh", 0o755, UDHCPC.as_bytes())?;
        a.file("bin/busybox", 0o755, self.busybox)?;
        a.file("bin/platter", 0o755, self.platter)?;
        let mut order = String::new();
        for module in self.modules {
            a.file(
                &format!("lib/modules/rescue/{}.ko", module.name),
                0o644,
                &module.bytes,
            )?;
            order.push_str(&module.name);
            order.push('\n');
        }
        a.file("etc/rescue/modules", 0o644, order.as_bytes())?;
        a.file("etc/ssl/certs/ca-certificates.crt", 0o644, self.ca_bundle)?;
        a.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n")?;
        a.file("etc/nsswitch.conf", 0o644, b"hosts: files dns\n")?;
        a.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
        a.file("etc/group", 0o644, b"root:x:0:\n")?;
        a.file(&RELEASE_FILE[1..], 0o644, self.release.as_bytes())?;
        if let Some(pass) = self.passphrase {
            a.file(&PASSPHRASE_FILE[1..], 0o400, pass)?;
        }
        Ok(())
    }
}

/// Refuses an output that is a device, a folder, in /dev, or an existing
/// file without --force; its folder must exist.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.starts_with("/dev") {
        return Err(Error::bad_input(format!(
            "{} is in /dev: the medium is built as an image file",
            out.display()
        ))
        .hint("build it into a file, then write that to the stick: dd if=rescue.iso of=/dev/sdX bs=4M conv=fsync"));
    }
    match fs::metadata(out) {
        Ok(meta) if meta.file_type().is_block_device() => {
            return Err(Error::bad_input(format!(
                "{} is a block device: the medium is built as an image file",
                out.display()
            ))
            .hint("build it into a file, then write that to the stick: dd if=rescue.iso of=/dev/sdX bs=4M conv=fsync"));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(Error::bad_input(format!("{} is a folder", out.display()))
                .hint("name the image file, e.g. rescue.iso"));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Error::bad_input(format!(
                "{} exists and is not a regular file",
                out.display()
            )));
        }
        Ok(_) if !force => {
            return Err(Error::bad_input(format!("{} exists", out.display()))
                .hint("pass --force to replace it, or name another file"));
        }
        _ => {}
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::not_found(format!(
            "folder {} of the image does not exist",
            parent.display()
        )));
    }
    Ok(())
}

/// Refuses `path` (which need not exist yet) when it lies in a platter
/// repository: the image or the cache would add files to it, and --force
/// could replace one of its own.
fn outside_repositories(path: &Path, what: &str) -> Result<()> {
    let existing = path
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .unwrap_or(Path::new("."));
    match crate::repo::footprint::repository_around(existing) {
        Some(repo) => Err(Error::bad_input(format!(
            "{what} {} is inside the platter repository {}",
            path.display(),
            repo.display()
        ))
        .hint("put it outside every repository; nothing was written")),
        None => Ok(()),
    }
}

fn partial_name(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

/// A volume id no other medium has: the running medium knows itself by it.
fn new_volume_id() -> Result<String> {
    let mut random = [0u8; 5];
    getrandom::fill(&mut random)
        .map_err(|e| Error::internal(format!("no random numbers for the volume id: {e}")))?;
    let hex: String = random.iter().map(|b| format!("{b:02X}")).collect();
    Ok(format!("PLATTER_RESCUE_{hex}"))
}

/// The first line of a passphrase file, which is all that goes into the
/// medium (a file may hold other secrets below it).
fn read_passphrase(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_regular(path, "passphrase file", 64 * 1024)?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(Error::bad_input(format!(
            "passphrase file {} is empty (its first line is the passphrase)",
            path.display()
        )));
    }
    let mut line = first.to_vec();
    line.push(b'\n');
    Ok(line)
}

/// A regular file's bytes, refused when it is anything else (a FIFO would
/// block, a device read forever) or larger than `limit`.
pub(super) fn read_regular(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| Error::io(&format!("read the {what}"), path, e))?;
    if !meta.is_file() {
        return Err(Error::bad_input(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(Error::bad_input(format!(
            "{what} {} is {} bytes, more than a {what} can be ({limit})",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map_err(|e| Error::io(&format!("read the {what}"), path, e))
}

/// Removes the `*.partial` files and folders in `dir`.
fn remove_partials(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().ends_with(".partial") {
            continue;
        }
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Holds the cache for this build: two builds unpacking into one cache
/// would replace each other's files. A second build waits, and says so.
fn lock_cache(cache: &Path, say: &dyn Fn(&str)) -> Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = cache.join(".lock");
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))
    };
    match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((file, _)) => {
            say(&format!(
                "waiting for another `platter rescue build` that uses the cache {}",
                cache.display()
            ));
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io("lock", &path, e.into()))
        }
    }
}

fn kernel_image(tree: &Path, release: &str) -> Result<PathBuf> {
    let image = tree.join("boot").join(format!("vmlinuz-{release}"));
    if image.is_file() {
        return Ok(image);
    }
    Err(
        Error::not_found(format!("the kernel package has no boot/vmlinuz-{release}"))
            .hint("name a Debian kernel image package with --kernel-package"),
    )
}

/// Every certificate of the ca-certificates package, in one PEM file (as
/// update-ca-certificates would write it), in a stable order.
fn ca_bundle(dir: &Path) -> Result<Vec<u8>> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "crt") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    found.sort();
    if found.is_empty() {
        return Err(Error::not_found(format!(
            "no certificates under {}",
            dir.display()
        )));
    }
    let mut bundle = Vec::new();
    for path in found {
        let mut pem = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        bundle.extend_from_slice(&pem);
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins: only the passphrase (the first line) goes into the medium, not the rest of its file (hostile session: a second line with another secret was copied too).
    #[test]
    fn only_the_first_line_of_the_passphrase_file_goes_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        fs::write(&file, "first-line-pass\r\nAWS_SECRET=other-secret\n").unwrap();
        assert_eq!(read_passphrase(&file).unwrap(), b"first-line-pass\n");
        fs::write(&file, "\nsecond").unwrap();
        assert!(read_passphrase(&file).is_err());
    }

    // Pins: a FIFO, a device or a folder given as a file is refused at once (hostile session: a FIFO hung the build, /dev/zero read without end).
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let e = read_regular(path, "passphrase file", 1024).unwrap_err();
            assert!(
                e.message().contains("not a regular file"),
                "{}",
                e.message()
            );
        }
        let big = dir.path().join("big");
        fs::write(&big, vec![0u8; 2048]).unwrap();
        assert!(read_regular(&big, "passphrase file", 1024).is_err());
    }
}
