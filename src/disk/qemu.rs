//! qcow2 images read through their guest view, and their persistent dirty
//! bitmaps: `qemu-img` (info, bitmap) and `qemu-nbd` (the guest view over
//! NBD on a private Unix socket), both from the Debian package
//! `qemu-utils`.
//!
//! An image file that starts with the qcow2 magic (`QFI\xfb`) is backed up
//! as the disk its guest sees (its virtual size, its bytes), never as the
//! file's own bytes: the dirty bitmaps QEMU keeps are in guest offsets, and
//! a parent and its child must see the same disk. `qemu-nbd` serves it
//! read-only; while it runs, QEMU's image locking keeps any QEMU writer
//! (a VM, `qemu-img`, `qemu-io`) out. An image a running VM holds cannot
//! be locked: it is then served without locking (read-only, it never
//! writes) and [`ImageInfo::locked`] says why, so that nothing writes
//! to it (no bitmap is added or removed).
//!
//! `qemu-nbd` is started per use and killed when its [`Server`] is
//! dropped (and by the kernel when platter dies: `PR_SET_PDEATHSIG`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::disk::nbd::Client;
use crate::error::{Error, ErrorKind, Result};

/// The Debian package of qemu-img and qemu-nbd.
pub const PACKAGE: &str = "qemu-utils";

/// Whether `file` starts with the qcow2 magic.
pub fn is_qcow2(file: &File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && &magic == b"QFI\xfb"
}

/// A persistent dirty bitmap of a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub name: String,
    /// Marked in use: the image was not closed cleanly (a QEMU that
    /// crashed, or one that runs now), and the bitmap cannot be trusted.
    pub in_use: bool,
    /// Recording writes (flag `auto`): a disabled bitmap (libvirt
    /// disables older checkpoints') misses every write since.
    pub enabled: bool,
}

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub virtual_size: u64,
    pub bitmaps: Vec<Bitmap>,
    /// The backing file the image reads through, if any: writes to it
    /// change the guest's disk without touching the image's bitmaps.
    pub backing: Option<String>,
    /// Why the image could not be locked (a running VM holds it), when it
    /// could not: it is then read without locking, and must not be
    /// written.
    pub locked: Option<String>,
}

/// A command that ends with platter (the kernel sends it SIGTERM when the
/// thread that started it ends).
fn command(program: &str) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(crate::os::find_program(program, PACKAGE)?);
    // SAFETY: prctl is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// A failed qemu-img: `Busy` when the image is locked by another process.
fn qemu_img_failed(what: &str, image: &Path, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let said: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let said = said.join(" ");
    let kind = if is_lock_failure(&said) {
        ErrorKind::Busy
    } else {
        ErrorKind::Io
    };
    Error::new(
        kind,
        format!(
            "{what} {}: qemu-img says: {}",
            image.display(),
            said.chars().take(400).collect::<String>()
        ),
    )
}

fn is_lock_failure(said: &str) -> bool {
    said.contains("Failed to get") && said.contains("lock")
}

/// Runs `qemu-img ARGS`, returning its standard output.
fn qemu_img(args: &[&std::ffi::OsStr], what: &str, image: &Path) -> Result<Vec<u8>> {
    let out = command("qemu-img")?
        .args(args)
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: cannot run qemu-img: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(qemu_img_failed(what, image, &out.stderr))
    }
}

/// The image's virtual size and bitmaps, and whether it can be locked.
pub fn info(image: &Path) -> Result<ImageInfo> {
    let args = |share: bool| -> Vec<&std::ffi::OsStr> {
        let mut a: Vec<&std::ffi::OsStr> = vec![
            "info".as_ref(),
            "--output=json".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
        ];
        if share {
            a.push("--force-share".as_ref());
        }
        a.push(image.as_os_str());
        a
    };
    let what = "inspect the qcow2 image";
    let (json, locked) = match qemu_img(&args(false), what, image) {
        Ok(json) => (json, None),
        Err(e) if e.kind() == ErrorKind::Busy => (
            qemu_img(&args(true), what, image)?,
            Some(e.message().to_string()),
        ),
        // An image qemu-img cannot open (damaged, encrypted, of a newer
        // version) cannot be backed up as its guest's disk.
        Err(e) if e.kind() == ErrorKind::Io && !e.message().contains("cannot run") => {
            return Err(Error::bad_input(e.message()).hint(format!(
                "`qemu-img check {}` says what is wrong with it; nothing was written",
                image.display()
            )));
        }
        Err(e) => return Err(e),
    };
    let mut info = parse_info(&json).map_err(|why| {
        Error::new(
            ErrorKind::Io,
            format!("{what} {}: qemu-img info gave {why}", image.display()),
        )
    })?;
    info.locked = locked;
    Ok(info)
}

/// The parts of `qemu-img info --output=json` platter uses.
fn parse_info(json: &[u8]) -> std::result::Result<ImageInfo, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("output that is not JSON ({e})"))?;
    let virtual_size = v
        .get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no virtual size")?;
    let mut bitmaps = Vec::new();
    let listed = v
        .pointer("/format-specific/data/bitmaps")
        .and_then(serde_json::Value::as_array);
    for b in listed.into_iter().flatten() {
        let Some(name) = b.get("name").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let flags = b.get("flags").and_then(serde_json::Value::as_array);
        let flag = |name: &str| flags.is_some_and(|f| f.iter().any(|f| f.as_str() == Some(name)));
        bitmaps.push(Bitmap {
            name: name.to_string(),
            in_use: flag("in-use"),
            enabled: flag("auto"),
        });
    }
    let backing = (v
        .get("backing-filename")
        .or_else(|| v.get("full-backing-filename")))
    .and_then(serde_json::Value::as_str)
    .map(str::to_string);
    Ok(ImageInfo {
        virtual_size,
        bitmaps,
        backing,
        locked: None,
    })
}

/// The granularity of the bitmaps platter adds to a guest disk of `size`
/// bytes: a page (4 KiB, what a guest writes and what a backup reads of a
/// changed chunk), coarser only beyond 2^25 bits (a 128 GiB disk), so that
/// no bitmap is over 4 MiB in the image and in QEMU's memory. QEMU's own
/// default, 64 KiB, would make every 4 KiB write read 64 KiB.
pub fn bitmap_granularity(size: u64) -> u64 {
    size.div_ceil(1 << 25)
        .next_power_of_two()
        .clamp(4096, 1 << 31)
}

/// Adds the persistent dirty bitmap `name` to the image, of `granularity`
/// bytes per bit (locking it: a running VM's image gives a `Busy` error,
/// and is not touched).
pub fn add_bitmap(image: &Path, name: &str, granularity: u64) -> Result<()> {
    let granularity = granularity.to_string();
    qemu_img(
        &[
            "bitmap".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "--add".as_ref(),
            "-g".as_ref(),
            granularity.as_ref(),
            image.as_os_str(),
            name.as_ref(),
        ],
        &format!("add the dirty bitmap {name} to"),
        image,
    )
    .map(drop)
}

/// Removes the persistent dirty bitmap `name` from the image.
pub fn remove_bitmap(image: &Path, name: &str) -> Result<()> {
    qemu_img(
        &[
            "bitmap".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "--remove".as_ref(),
            image.as_os_str(),
            name.as_ref(),
        ],
        &format!("remove the dirty bitmap {name} from"),
        image,
    )
    .map(drop)
}

/// A private folder for the socket, removed on drop.
struct SocketDir(PathBuf);

/// Folders of sockets are named so.
const SOCKET_DIR_PREFIX: &str = "platter-nbd-";

impl SocketDir {
    fn new() -> Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        remove_stale_socket_dirs();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| Error::internal(format!("no random numbers: {e}")))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("{SOCKET_DIR_PREFIX}{hex}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("create a folder for the NBD socket", &dir, e))?;
        Ok(SocketDir(dir))
    }
}

/// Removes the empty socket folders a platter killed outright left
/// behind (its qemu-nbd, told by the kernel, removed the socket as it
/// ended). A folder in use holds its socket, or is younger than a start
/// may take: it is left alone, and only an empty folder can be removed.
fn remove_stale_socket_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(SOCKET_DIR_PREFIX))
        {
            continue;
        }
        let old = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > 4 * START_TIMEOUT);
        if old {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long qemu-nbd may take to open the image and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients one server takes at once (`qemu-nbd --shared`).
pub const CONNECTIONS: usize = 4;

/// A `qemu-nbd` serving one image read-only on a private Unix socket.
pub struct Server {
    child: Child,
    socket: PathBuf,
    _dir: SocketDir,
}

impl Server {
    /// Starts qemu-nbd on `image` (qcow2, read-only), exposing the
    /// persistent dirty bitmap `bitmap` when given; without locking when
    /// `lock` is false (an image a running VM holds).
    pub fn start(image: &Path, bitmap: Option<&str>, lock: bool) -> Result<Server> {
        let dir = SocketDir::new()?;
        let socket = dir.0.join("nbd.sock");
        let mut cmd = command("qemu-nbd")?;
        cmd.arg("--read-only")
            .arg("--persistent")
            .arg(format!("--shared={CONNECTIONS}"))
            .arg("--socket")
            .arg(&socket);
        if let Some(name) = bitmap {
            cmd.arg("--bitmap").arg(name);
        }
        if lock {
            cmd.arg("--format=qcow2").arg(image);
        } else {
            // Image options: commas in the file name are doubled.
            let name = image.to_str().ok_or_else(|| {
                Error::bad_input(format!("{} is not a UTF-8 path", image.display()))
            })?;
            cmd.arg("--image-opts").arg(format!(
                "driver=qcow2,file.driver=file,file.locking=off,file.filename={}",
                name.replace(',', ",,")
            ));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run qemu-nbd: {e}")))?;
        let mut server = Server {
            child,
            socket,
            _dir: dir,
        };
        server.wait_listening(image)?;
        Ok(server)
    }

    fn wait_listening(&mut self, image: &Path) -> Result<()> {
        let started = Instant::now();
        loop {
            if self.socket.exists() {
                return Ok(());
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let mut said = Vec::new();
                    if let Some(mut err) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_end(&mut err, &mut said);
                    }
                    let e = qemu_img_failed("serve (qemu-nbd)", image, &said);
                    return Err(Error::new(
                        e.kind(),
                        format!(
                            "{} ({status})",
                            e.message().replacen("qemu-img says", "qemu-nbd says", 1)
                        ),
                    ));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::new(ErrorKind::Io, format!("qemu-nbd: {e}"))),
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "qemu-nbd did not listen within {} s for {}",
                        START_TIMEOUT.as_secs(),
                        image.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A new connection to the export, with the metadata context `meta`.
    pub fn connect(&self, meta: Option<&str>) -> Result<Client<UnixStream>> {
        // The socket may exist a moment before qemu-nbd listens on it.
        let mut tries = 0;
        let stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::io("connect to qemu-nbd at", &self.socket, e)),
            }
        };
        Client::handshake(stream, meta)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Read-only: nothing to flush. Waited for, so its lock is gone
        // when this returns.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A qcow2 image's guest view, read over NBD with a few connections so
/// that several readers go at once.
pub struct Guest {
    connections: Vec<Mutex<Client<UnixStream>>>,
    next: AtomicUsize,
    info: ImageInfo,
    image: PathBuf,
    // Dropped last: the clients say goodbye first.
    _server: Server,
}

impl Guest {
    /// Serves `image` (a qcow2 file) and connects to it.
    pub fn open(image: &Path) -> Result<Guest> {
        let info = info(image)?;
        let server = Server::start(image, None, info.locked.is_none())?;
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let client = server.connect(None)?;
            if client.size() != info.virtual_size {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "qemu-nbd serves {} bytes of {}, qemu-img says its guest has {}",
                        client.size(),
                        image.display(),
                        info.virtual_size
                    ),
                ));
            }
            connections.push(Mutex::new(client));
        }
        Ok(Guest {
            connections,
            next: AtomicUsize::new(0),
            info,
            image: image.to_path_buf(),
            _server: server,
        })
    }

    pub fn size(&self) -> u64 {
        self.info.virtual_size
    }

    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// The qcow2 file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Fills `buf` from guest offset `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = self.connections.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        // A free connection if there is one, else wait for this turn's.
        for i in 0..n {
            if let Some(c) = self.connections.get((first + i) % n)
                && let Ok(mut client) = c.try_lock()
            {
                return client.read(buf, offset);
            }
        }
        let c = self
            .connections
            .get(first % n)
            .ok_or_else(|| Error::internal("no NBD connection"))?;
        let mut client = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        client.read(buf, offset)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        for c in self.connections.drain(..) {
            if let Ok(client) = c.into_inner() {
                client.disconnect();
            }
        }
    }
}

/// The dirty ranges of the persistent bitmap `bitmap` of `image`, in
/// guest bytes, sorted and merged (widened to 4 KiB). `lock`: as for
/// [`Server::start`].
pub fn dirty_ranges(image: &Path, bitmap: &str, lock: bool) -> Result<Vec<(u64, u64)>> {
    let server = Server::start(image, Some(bitmap), lock)?;
    let mut client = server.connect(Some(&format!("qemu:dirty-bitmap:{bitmap}")))?;
    let ranges = client.block_status_all(1)?;
    client.disconnect();
    drop(server);
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reads_virtual_size_and_in_use_bitmaps() {
        let json = br#"{"virtual-size": 67108864, "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"bitmaps": [
                {"flags": ["in-use", "auto"], "name": "a", "granularity": 65536},
                {"flags": ["auto"], "name": "b", "granularity": 65536},
                {"flags": "odd"}]}}}"#;
        let info = parse_info(json).unwrap();
        assert_eq!(info.virtual_size, 64 << 20);
        assert_eq!(
            info.bitmaps,
            vec![
                Bitmap {
                    name: "a".into(),
                    in_use: true,
                    enabled: true
                },
                Bitmap {
                    name: "b".into(),
                    in_use: false,
                    enabled: true
                }
            ]
        );
        assert!(parse_info(b"{}").is_err());
    }

    #[test]
    fn only_old_empty_socket_folders_are_removed() {
        let dir = |what: &str| {
            let d = SocketDir::new().unwrap();
            let path = d.0.clone();
            std::mem::forget(d);
            (what.to_string(), path)
        };
        let (_, stale) = dir("stale");
        let (_, young) = dir("young");
        let (_, busy) = dir("busy");
        std::fs::write(busy.join("nbd.sock"), b"").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for d in [&stale, &busy] {
            File::open(d).unwrap().set_modified(long_ago).unwrap();
        }
        remove_stale_socket_dirs();
        assert!(!stale.exists());
        assert!(young.exists() && busy.exists());
        std::fs::remove_dir_all(&young).unwrap();
        std::fs::remove_dir_all(&busy).unwrap();
    }

    #[test]
    fn bitmaps_track_pages_up_to_32_mi_bits() {
        assert_eq!(bitmap_granularity(1), 4096);
        assert_eq!(bitmap_granularity(4 << 30), 4096);
        assert_eq!(bitmap_granularity(128 << 30), 4096);
        assert_eq!(bitmap_granularity((128 << 30) + 1), 8192);
        assert_eq!(bitmap_granularity(1 << 40), 32 * 1024);
        assert_eq!(bitmap_granularity(u64::MAX), 1 << 31);
        assert!(parse_info(b"not json").is_err());
    }
}
