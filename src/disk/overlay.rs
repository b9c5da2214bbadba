//! qcow2 overlays over a raw disk image, through `qemu-img` (Debian package
//! qemu-utils): made by `platter boot` so a booted snapshot's writes land
//! in a file of their own, and read back by `restore --overlay` to carry
//! those writes onto a real disk.
//!
//! platter does not parse qcow2 itself: qemu-img is the reference reader
//! and writer of the format, and every program that boots such an overlay
//! has it anyway. What this module asks of it is small: create an overlay,
//! describe one (`info`, which never opens the backing file), and commit
//! one's clusters into another raw image (`commit -d`, with the backing
//! named in a `json:` file name, so the overlay itself is not changed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

/// The Debian package that ships qemu-img.
pub const QEMU_IMG_PACKAGE: &str = "qemu-utils";

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone)]
pub struct OverlayInfo {
    /// "qcow2", "raw", ...
    pub format: String,
    /// Bytes the guest sees.
    pub virtual_size: u64,
    /// The backing file as recorded in the image.
    pub backing: Option<PathBuf>,
    /// The backing file's format as recorded ("raw").
    pub backing_format: Option<String>,
    /// Bytes the overlay takes on its filesystem.
    pub actual_size: u64,
}

/// Creates a qcow2 overlay at `overlay` whose backing file is the raw image
/// `backing`: reads fall through to it, writes stay in the overlay.
pub fn create(backing: &Path, overlay: &Path) -> Result<()> {
    let mut cmd = qemu_img()?;
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(backing)
        .arg(overlay);
    run(cmd, &format!("cannot create overlay {}", overlay.display()))
}

/// Records `backing` as the backing file of `overlay` without reading
/// either (`rebase -u`): for an overlay whose old backing file is the same
/// image at another path (a snapshot's disk.img in an earlier mount).
pub fn rebase_unchecked(overlay: &Path, backing: &Path) -> Result<()> {
    let mut cmd = qemu_img()?;
    cmd.args(["rebase", "-u", "-F", "raw", "-b"])
        .arg(backing)
        .arg(overlay);
    run(
        cmd,
        &format!("cannot point overlay {} at the snapshot", overlay.display()),
    )
}

/// Describes the image at `path` without opening its backing file.
pub fn info(path: &Path) -> Result<OverlayInfo> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(Error::io("read overlay", path, e));
    }
    let out = qemu_img()?
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run qemu-img", path, e))?;
    if !out.status.success() {
        return Err(Error::bad_input(format!(
            "{} is not an image qemu-img can read: {}",
            path.display(),
            first_line(&out.stderr)
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::internal(format!("qemu-img info printed what is not JSON: {e}")))?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
    Ok(OverlayInfo {
        format: text("format").unwrap_or_default(),
        virtual_size: number("virtual-size").unwrap_or(0),
        backing: text("backing-filename").map(PathBuf::from),
        backing_format: text("backing-filename-format"),
        actual_size: number("actual-size").unwrap_or(0),
    })
}

/// Checks the overlay's own structure (`qemu-img check`, without its
/// backing file): a cut or damaged qcow2 would otherwise give some of the
/// VM's writes, or none, without a word. Leaked clusters (space the file
/// wastes) are harmless and pass.
pub fn check_intact(path: &Path) -> Result<()> {
    let name = path.to_str().ok_or_else(|| {
        Error::bad_input(format!(
            "{} is not a UTF-8 path, which qemu-img's JSON file names need",
            path.display()
        ))
        .hint("give the file a UTF-8 name (mv, or a hard link)")
    })?;
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": {"driver": "file", "filename": name},
        "backing": null,
    });
    let out = qemu_img()?
        .args(["check", "-q", "-U"])
        .arg(format!("json:{spec}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run qemu-img", path, e))?;
    // 0: no errors; 3: only leaked clusters.
    match out.status.code() {
        Some(0 | 3) => Ok(()),
        _ => Err(Error::bad_input(format!(
            "overlay {} is damaged (qemu-img check: {}): its changes cannot be trusted",
            path.display(),
            first_line(&out.stderr).trim()
        ))
        .hint("nothing was written; use an intact copy of the overlay (`qemu-img check` names the errors)")),
    }
}

/// Writes every cluster the overlay holds (data, and zeros it recorded)
/// onto `target`, a raw image file or block device, at the same offsets.
/// The overlay is read as if `target` were its backing file; the overlay
/// itself keeps its content and its recorded backing file.
pub fn commit_into(overlay: &Path, target: &Path, target_is_device: bool) -> Result<()> {
    let utf8 = |p: &Path| {
        p.to_str().map(str::to_string).ok_or_else(|| {
            Error::bad_input(format!(
                "{} is not a UTF-8 path, which qemu-img's JSON file names need",
                p.display()
            ))
            .hint("give the file a UTF-8 name (mv, or a hard link)")
        })
    };
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": {"driver": "file", "filename": utf8(overlay)?},
        "backing": {
            "driver": "raw",
            "file": {
                "driver": if target_is_device { "host_device" } else { "file" },
                "filename": utf8(target)?,
            },
        },
    });
    let mut cmd = qemu_img()?;
    cmd.args(["commit", "-q", "-d"]).arg(format!("json:{spec}"));
    run(
        cmd,
        &format!(
            "cannot write the changes of overlay {} to {}",
            overlay.display(),
            target.display()
        ),
    )
}

/// A qemu-img command that ends with platter: an interrupted platter
/// leaves no qemu-img writing on behind it (the kernel sends it SIGTERM
/// when the thread that started it ends).
fn qemu_img() -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(crate::os::find_program("qemu-img", QEMU_IMG_PACKAGE)?);
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
    Ok(cmd)
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("{what}: cannot run qemu-img: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Io,
        format!("{what}: qemu-img says: {}", first_line(&out.stderr)),
    ))
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim();
    crate::printable::printable(line).into_owned()
}
