//! What every test needs: a sandbox folder holding a repository, a way to
//! run the `platter` binary and read what it said, images whose expected
//! bytes are kept in memory next to the file, readers for the parts of the
//! on-disk format that damage tests aim at, and guards for loop devices and
//! mounts that clean up even when a test fails.
//!
//! Tests drive the binary, never the library: what is pinned here is what a
//! user sees (exit codes, stdout, stderr, files).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Chunk size of every test repository: small, so images stay small.
pub const CHUNK: u64 = 64 * 1024;

/// The environment variables the binary reads as defaults: the tests
/// clear them, so that the caller's never leak in.
const OWN_VARIABLES: [&str; 4] = [
    "PLATTER_REPO",
    "PLATTER_PASSWORD",
    "PLATTER_PASSWORD_FILE",
    "PLATTER_PASSWORD_COMMAND",
];

/// The binary under test, with a clean environment for its own variables.
pub fn platter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_platter"));
    for var in OWN_VARIABLES {
        cmd.env_remove(var);
    }
    // The index caches of test repositories stay with the build, not in
    // the home folder.
    cmd.env("PLATTER_CACHE_DIR", test_cache_dir());
    cmd.stdin(Stdio::null());
    cmd
}

/// Where the binary under test keeps index caches (`PLATTER_CACHE_DIR`).
pub fn test_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("index-cache")
}

/// What one run of the binary did.
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(command: String, out: Output) -> Run {
        Run {
            command,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "`platter {}` exited {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    pub fn ok(&self) -> &Run {
        self.expect_code(0)
    }

    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the binary panicked: {}",
            self.describe()
        );
        self
    }

    /// The one JSON document stdout must hold.
    pub fn json(&self) -> Value {
        json_document(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.describe()))
    }

    /// A refusal: exit `code`, an error line on stderr that mentions
    /// `mentions`, and stdout empty, or with `--json` the error as its one
    /// JSON document (kind, exit code, message, context, hints).
    pub fn refused(&self, code: i32, mentions: &str) -> &Run {
        self.expect_code(code);
        assert!(
            self.stderr.starts_with("platter: error"),
            "no error message on stderr: {}",
            self.describe()
        );
        assert!(
            self.stderr.contains(mentions),
            "the error does not mention {mentions:?}: {}",
            self.describe()
        );
        if self.command.split(' ').any(|a| a == "--json") {
            let doc = self.json();
            let error = &doc["error"];
            assert_eq!(error["exit_code"], code, "{}", self.describe());
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(mentions))
                    || error["hints"].to_string().contains(mentions),
                "the JSON error does not mention {mentions:?}: {}",
                self.describe()
            );
            assert!(error["context"].is_array() && error["hints"].is_array());
        } else {
            assert!(
                self.stdout.trim().is_empty(),
                "a refusal printed on stdout: {}",
                self.describe()
            );
        }
        self
    }
}

/// Parses `text` as exactly one JSON document (whitespace around it is fine).
pub fn json_document(text: &str) -> Result<Value, String> {
    let mut docs = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let first = docs
        .next()
        .ok_or("stdout holds no JSON document")?
        .map_err(|e| format!("stdout is not JSON ({e})"))?;
    match docs.next() {
        None => Ok(first),
        Some(_) => Err("stdout holds more than one JSON document".into()),
    }
}

/// `args` as owned strings, and as one line of text (for messages).
fn command_line<I, S>(args: I) -> (Vec<OsString>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let line = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    (args, line)
}

/// Runs the binary with `args` and waits for it.
pub fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (args, command) = command_line(args);
    let out = platter()
        .args(&args)
        .output()
        .expect("cannot run the platter binary");
    Run::from_output(command, out)
}

/// A temporary folder with a repository (64 KiB chunks) at `repo`; all of it
/// is removed when the sandbox is dropped.
pub struct Sandbox {
    dir: TempDir,
    pub repo: PathBuf,
    /// The passphrase file every run passes (encrypted sandboxes).
    pub password: Option<PathBuf>,
}

/// Argon2id at its cheapest, so tests do not spend seconds per command.
pub const FAST_KDF: [&str; 4] = ["--kdf-memory", "8M", "--kdf-iterations", "1"];

impl Sandbox {
    pub fn new() -> Sandbox {
        let sandbox = Sandbox::without_repo();
        sandbox.run(["init", "--plain", "--chunk-size", "64K"]).ok();
        sandbox
    }

    /// A sandbox with an encrypted repository (64 KiB chunks) whose
    /// passphrase is in the file `password`, which every run passes.
    pub fn encrypted() -> Sandbox {
        let mut sandbox = Sandbox::without_repo();
        let password = sandbox.path("passphrase");
        fs::write(&password, "correct horse battery staple\n").unwrap();
        sandbox.password = Some(password);
        let mut args = vec!["init", "--chunk-size", "64K"];
        args.extend(FAST_KDF);
        sandbox.run(args).ok();
        sandbox
    }

    /// A sandbox whose `repo` does not exist yet.
    pub fn without_repo() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("platter-it-")
            .tempdir()
            .expect("cannot create a temporary folder");
        let repo = dir.path().join("repo");
        Sandbox {
            dir,
            repo,
            password: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `platter -r REPO ARGS...`.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec!["-r".into(), self.repo.clone().into()];
        if let Some(password) = &self.password {
            all.extend(["--password-file".into(), password.clone().into()]);
        }
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        run(all)
    }

    /// Backs up `source` and returns the `--json` summary.
    pub fn backup(&self, source: &Path) -> Value {
        self.run([OsStr::new("--json"), "backup".as_ref(), source.as_os_str()])
            .ok()
            .json()
    }

    /// `platter --json backup SOURCE EXTRA...`; must succeed.
    pub fn backup_with(&self, source: &Path, extra: &[&str]) -> Value {
        let mut args = vec![OsStr::new("--json"), "backup".as_ref(), source.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        self.run(args).ok().json()
    }

    /// The id of a new snapshot of `source` (`backup SOURCE EXTRA...`).
    pub fn snapshot_of(&self, source: &Path, extra: &[&str]) -> String {
        self.backup_with(source, extra)["snapshot"]
            .as_str()
            .expect("a snapshot id")
            .to_string()
    }

    /// `platter --json restore SNAPSHOT TARGET EXTRA...`, whatever its outcome.
    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<OsString> = vec!["--json".into(), "restore".into(), snapshot.into()];
        args.push(target.into());
        args.extend(extra.iter().map(OsString::from));
        self.run(args)
    }

    /// Restores `snapshot` to a new file and checks it holds `expected`.
    pub fn assert_restores(&self, snapshot: &str, expected: &[u8]) {
        let target = self.path(&format!("restored-{}", random_name()));
        let report = self.restore(snapshot, &target, &[]).ok().json();
        assert_eq!(report["damaged"], Value::Array(vec![]), "{report}");
        assert_file_is(&target, expected, &format!("snapshot {snapshot}"));
        fs::remove_file(&target).expect("cannot remove a restored file");
    }

    /// Ids of the snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        listed_ids(self.run(["--json", "snapshots"]).ok())
    }

    /// Every file and folder of the repository with a digest of its content,
    /// to prove that a refused command wrote nothing.
    pub fn repo_tree(&self) -> BTreeMap<String, String> {
        tree(&self.repo)
    }

    /// Committed packs of the repository, sorted.
    pub fn packs(&self) -> Vec<PathBuf> {
        files_under(&self.repo.join("data"))
            .into_iter()
            .filter(|p| !is_temporary(p))
            .collect()
    }

    pub fn map_file(&self, snapshot: &str) -> PathBuf {
        self.repo.join("maps").join(snapshot)
    }

    pub fn manifest_file(&self, snapshot: &str) -> PathBuf {
        self.repo.join("snapshots").join(snapshot)
    }
}

/// A random 16-hex-digit name, for files that must not collide.
pub fn random_name() -> String {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("no randomness");
    hex(&buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a repository file is an unfinished write.
pub fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

/// Every file below `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Relative path -> "dir" or "LEN BLAKE3" for everything below `root`.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            if path.is_dir() {
                out.insert(rel, "dir".to_string());
                stack.push(path);
            } else {
                let bytes = fs::read(&path).unwrap_or_default();
                out.insert(
                    rel,
                    format!("{} {}", bytes.len(), blake3::hash(&bytes).to_hex()),
                );
            }
        }
    }
    out
}

/// A small fast deterministic generator (splitmix64): tests reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf`; never all zeros for 8 bytes or more.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.fill(&mut buf);
        buf
    }
}

/// An image file and, in memory, the bytes it must hold. Every change is
/// applied to both, so the copy for any point in time is `bytes.clone()`.
pub struct Image {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Image {
    /// A sparse file of `size` bytes: one hole.
    pub fn sparse(path: PathBuf, size: u64) -> Image {
        let file = File::create(&path).expect("cannot create image");
        file.set_len(size).expect("cannot size image");
        Image {
            path,
            bytes: vec![0; size as usize],
        }
    }

    /// A dense file of random bytes.
    pub fn random(path: PathBuf, size: u64, rng: &mut Rng) -> Image {
        let bytes = rng.bytes(size as usize);
        fs::write(&path, &bytes).expect("cannot write image");
        Image { path, bytes }
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn open(&self) -> File {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .expect("cannot open image")
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        assert!(end <= self.bytes.len(), "write past the end of the image");
        self.open()
            .write_all_at(data, offset)
            .expect("cannot write image");
        self.bytes[offset as usize..end].copy_from_slice(data);
    }

    pub fn write_random(&mut self, rng: &mut Rng, offset: u64, len: u64) {
        let data = rng.bytes(len as usize);
        self.write(offset, &data);
    }

    /// Writes zeros (allocated, not a hole).
    pub fn write_zeros(&mut self, offset: u64, len: u64) {
        self.write(offset, &vec![0u8; len as usize]);
    }

    /// Deallocates the range: it reads as zeros and is a hole on disk.
    pub fn punch_hole(&mut self, offset: u64, len: u64) {
        let file = self.open();
        // SAFETY: fallocate only reads its integer arguments; the fd is open
        // for writing for the duration of the call.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "cannot punch a hole: {}",
            std::io::Error::last_os_error()
        );
        let end = (offset + len).min(self.len()) as usize;
        self.bytes[offset as usize..end].fill(0);
    }

    /// The file must hold what the model says (a guard against a broken test).
    pub fn check(&self) {
        assert_file_is(&self.path, &self.bytes, "image under test");
    }
}

/// Fails with the first differing offset, not megabytes of bytes.
pub fn assert_file_is(path: &Path, expected: &[u8], what: &str) {
    let actual = fs::read(path).unwrap_or_else(|e| panic!("{what}: cannot read {path:?}: {e}"));
    assert_bytes_equal(&actual, expected, what);
}

pub fn assert_bytes_equal(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} bytes, expected {}; first difference at offset {first} (chunk {})",
        actual.len(),
        expected.len(),
        first as u64 / CHUNK
    );
}

/// One stored chunk, as a pack's table describes it (docs/FORMAT.md).
#[derive(Debug, Clone)]
pub struct Blob {
    pub id: String,
    /// 0 raw, 1 lz4, 2 and 3 a delta (raw, lz4).
    pub encoding: u32,
    pub offset: u64,
    pub stored_len: u64,
}

impl Blob {
    pub fn is_delta(&self) -> bool {
        self.encoding & 2 != 0
    }
}

/// The base chunk a raw delta blob of an unencrypted pack names (its
/// first 32 bytes); test data is random, so deltas are stored raw.
pub fn delta_base(pack: &Path, blob: &Blob) -> String {
    assert_eq!(blob.encoding, 2, "not a raw delta: {}", blob.id);
    let bytes = fs::read(pack).expect("cannot read pack");
    hex(&bytes[blob.offset as usize..blob.offset as usize + 32])
}

/// The table at the end of a pack, in offset order.
pub fn pack_table(pack: &Path) -> Vec<Blob> {
    let bytes = fs::read(pack).expect("cannot read pack");
    let footer = &bytes[bytes.len() - 16..];
    assert_eq!(&footer[8..], b"PLTRPEND", "{pack:?} has no table magic");
    let count = u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")) as usize;
    let start = bytes.len() - 16 - 64 * count;
    let mut blobs: Vec<Blob> = bytes[start..bytes.len() - 16]
        .chunks_exact(64)
        .map(|e| Blob {
            id: hex(&e[..32]),
            encoding: u32::from_le_bytes(e[32..36].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(e[40..48].try_into().expect("8 bytes")),
            stored_len: u64::from(u32::from_le_bytes(e[48..52].try_into().expect("4 bytes"))),
        })
        .collect();
    blobs.sort_by_key(|b| b.offset);
    blobs
}

/// Changes one byte of a file in place (damage, as a disk does it).
pub fn flip_byte(file: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("cannot open file to damage");
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset)
        .expect("cannot read byte");
    f.write_all_at(&[byte[0] ^ 0x20], offset)
        .expect("cannot write byte");
}

/// A pack that `accept` takes and one of its chunks that `snapshot` uses.
pub fn stored_chunk_of(
    sandbox: &Sandbox,
    snapshot: &str,
    accept: impl Fn(&Path) -> bool,
) -> (PathBuf, Blob) {
    let used: Vec<String> = map_ids(&sandbox.map_file(snapshot))
        .into_iter()
        .flatten()
        .collect();
    sandbox
        .packs()
        .into_iter()
        .filter(|p| accept(p))
        .find_map(|p| {
            let blob = pack_table(&p).into_iter().find(|b| used.contains(&b.id))?;
            Some((p, blob))
        })
        .unwrap_or_else(|| panic!("no pack holds a chunk of snapshot {snapshot}"))
}

/// A snapshot's map: for each chunk position the chunk id, or None for a
/// zero or unused chunk.
pub fn map_ids(map: &Path) -> Vec<Option<String>> {
    let bytes = fs::read(map).expect("cannot read map");
    assert_eq!(&bytes[..8], b"PLTRMAP\0", "{map:?} is not a map");
    let entries = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    bytes[80..80 + 48 * entries]
        .chunks_exact(48)
        .map(|e| (e[0] == 1).then(|| hex(&e[16..48])))
        .collect()
}

/// Byte ranges (offset, len) of `size` bytes whose chunk is one of `ids`,
/// one per chunk position.
pub fn chunk_ranges(map: &[Option<String>], ids: &[&str], size: u64) -> Vec<(u64, u64)> {
    map.iter()
        .enumerate()
        .filter(|(_, id)| id.as_deref().is_some_and(|id| ids.contains(&id)))
        .map(|(pos, _)| {
            let offset = pos as u64 * CHUNK;
            (offset, CHUNK.min(size - offset))
        })
        .collect()
}

/// Adjacent ranges merged, as `verify` reports them.
pub fn merged(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(offset, len) in ranges {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == offset => last.1 += len,
            _ => out.push((offset, len)),
        }
    }
    out
}

/// Whether the test may use `needs` (each "root" or a program name). When
/// something is missing the test fails if `CI` is set and is skipped, with
/// the reason printed, otherwise.
pub fn have(test: &str, needs: &[&str]) -> bool {
    let missing: Vec<&str> = needs
        .iter()
        .copied()
        .filter(|&need| match need {
            // SAFETY: geteuid has no preconditions and cannot fail.
            "root" => (unsafe { libc::geteuid() }) != 0,
            "loop devices" => !Path::new("/dev/loop-control").exists(),
            program => !on_path(program),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test} needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{why}, which is missing (CI is set, so this is a failure)");
    }
    eprintln!("SKIPPED: {why}, which is missing");
    false
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

/// Runs a system program and insists that it succeeds; returns its stdout.
pub fn system(program: &str, args: &[&OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a bash script (errexit, pipefail) and insists that it succeeds.
pub fn sh(script: &str) -> String {
    system(
        "bash",
        &[
            "-euo".as_ref(),
            "pipefail".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
        ],
    )
}

/// `sgdisk -v` output; panics unless it found no problems.
pub fn sgdisk_clean(path: &Path) -> String {
    let out = system("sgdisk", &["-v".as_ref(), path.as_os_str()]);
    assert!(
        out.contains("No problems found"),
        "sgdisk -v {}:\n{out}",
        path.display()
    );
    out
}

/// `verify --read-data` of the repository at `repo` finds no damage.
pub fn verify_clean(repo: &Path) -> Value {
    let args = [
        OsStr::new("-r"),
        repo.as_os_str(),
        "--json".as_ref(),
        "verify".as_ref(),
        "--read-data".as_ref(),
    ];
    let report = run(args).ok().json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report:#}");
    report
}

/// A loop device attached to a file; detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(file: &Path) -> LoopDevice {
        let dev = system(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), file.as_os_str()],
        );
        LoopDevice {
            path: PathBuf::from(dev),
        }
    }

    /// Everything the device holds, read through the device.
    pub fn contents(&self) -> Vec<u8> {
        fs::read(&self.path).expect("cannot read loop device")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A mounted filesystem; unmounted on drop.
pub struct Mounted {
    pub point: PathBuf,
}

impl Mounted {
    /// A tmpfs of `size` (e.g. "6M") mounted at `point`.
    pub fn tmpfs(point: &Path, size: &str) -> Mounted {
        fs::create_dir_all(point).expect("cannot create mount point");
        system(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                format!("size={size}").as_ref(),
                "tmpfs".as_ref(),
                point.as_os_str(),
            ],
        );
        Mounted {
            point: point.to_path_buf(),
        }
    }

    pub fn mount(device: &Path, point: &Path) -> Mounted {
        fs::create_dir_all(point).expect("cannot create mount point");
        system("mount", &[device.as_os_str(), point.as_os_str()]);
        Mounted {
            point: point.to_path_buf(),
        }
    }

    pub fn mount_ro(device: &Path, point: &Path) -> Mounted {
        fs::create_dir_all(point).expect("cannot create mount point");
        system(
            "mount",
            &[
                "-o".as_ref(),
                "ro".as_ref(),
                device.as_os_str(),
                point.as_os_str(),
            ],
        );
        Mounted {
            point: point.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.point)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// Starts `platter -r REPO ARGS...` without waiting; stdout is discarded,
/// stderr goes to the sandbox file `stderr.log` for failure messages.
pub fn spawn(sandbox: &Sandbox, args: &[&OsStr]) -> Child {
    let log = File::create(sandbox.path("stderr.log")).expect("cannot create log");
    platter()
        .arg("-r")
        .arg(&sandbox.repo)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start platter")
}

/// Polls `ready` every millisecond until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ready()
}

/// Fills a file with `size` bytes from the kernel's generator (fast even in
/// a debug build), for images too large for the in-memory model.
pub fn urandom_file(path: &Path, size: u64) {
    use std::io::Read;
    let mut src = File::open("/dev/urandom").expect("no /dev/urandom");
    let mut out = File::create(path).expect("cannot create image");
    let copied = std::io::copy(&mut (&mut src).take(size), &mut out).expect("cannot fill image");
    assert_eq!(copied, size);
}

/// Runs `command` (bash) on a pseudo-terminal from `script`, with SIGINT
/// not ignored (a background job of a script ignores it), and drives it as
/// a person would: for each `(prompt, action)` step, waits until `prompt`
/// is on the screen and the terminal's echo is off (a pty echoes whatever
/// arrives while echo is on), then runs `action` (bash; fd 3 types on the
/// terminal, $pid is the deepest process of the command, $out the screen's
/// file). Once the command's process is gone, stops typing. Returns all
/// the terminal showed; `dir` holds the fifo and the screen.
pub fn on_a_terminal(dir: &Path, command: &str, steps: &[(&str, &str)]) -> String {
    fs::create_dir_all(dir).expect("cannot create the terminal's folder");
    fs::write(dir.join("command"), command).expect("cannot write the command");
    let mut script = format!(
        "rm -f {dir}/in {dir}/out; mkfifo {dir}/in; touch {dir}/out
         env --default-signal=INT script -qec 'bash {dir}/command' /dev/null \\
             < {dir}/in > {dir}/out 2>&1 &
         script=$!
         exec 3> {dir}/in
         out={dir}/out
         deepest() {{ local p=$1 c; while c=$(pgrep -n -P $p); do p=$c; done; echo $p; }}",
        dir = dir.display(),
    );
    for (prompt, action) in steps {
        script.push_str(&format!(
            "
             ready=
             for i in $(seq 400); do
                 if grep -q {prompt:?} $out; then
                     pid=$(deepest $script)
                     tty=$(readlink /proc/$pid/fd/0 2>/dev/null || true)
                     mode=\" $(stty -F \"$tty\" -a 2>/dev/null || true) \"
                     if [ -n \"$tty\" ] && [[ $mode =~ [[:space:]]-echo[[:space:]] ]]; then
                         ready=1; break
                     fi
                 fi
                 sleep 0.05
             done
             if [ -z \"$ready\" ]; then
                 echo \"no prompt '{prompt}' with echo off within 20 s:\"; cat $out; exit 1
             fi
             {action}"
        ));
    }
    script.push_str(
        "
         while kill -0 $pid 2>/dev/null; do sleep 0.05; done
         exec 3>&-
         wait $script || true",
    );
    sh(&script);
    fs::read_to_string(dir.join("out")).expect("no screen file")
}

/// Where strace holds platter: every call in `traced` (only the first,
/// with `once`) is held for a second, and the test acts while platter is
/// held in its first call of number `at` (x86-64 numbers).
pub struct Hold {
    pub traced: &'static str,
    pub at: u32,
    pub once: bool,
}

/// Runs `platter -r REPO ARGS` under strace held as `hold` says; once
/// platter is held at `hold.at`, runs `meanwhile` (which must return true)
/// and sends `signal`, if any, to platter. Returns platter's exit code and
/// stderr.
pub fn held(
    sandbox: &Sandbox,
    args: &[OsString],
    hold: &Hold,
    meanwhile: impl FnOnce() -> bool,
    signal: Option<libc::c_int>,
) -> (Option<i32>, String) {
    let mut cmd = Command::new("strace");
    let traced = hold.traced;
    cmd.args(["-f", "-o", "/dev/null", "-e", &format!("trace={traced}")])
        .args([
            "-e",
            &format!(
                "inject={traced}:delay_enter=1000000{}",
                if hold.once { ":when=1" } else { "" }
            ),
        ])
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .args(args)
        .env_remove("PLATTER_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("cannot run strace");
    let strace_pid = child.id();
    let started = Instant::now();
    let tracee = loop {
        if let Some(pid) = traced_child(strace_pid).filter(|&pid| in_call(pid, hold.at)) {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the command was never held in system call {}",
            hold.at
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        meanwhile(),
        "held in system call {}, but the state looked for is not there",
        hold.at
    );
    if let Some(signal) = signal {
        // SAFETY: kill has no memory effects; the pid is platter's, a child
        // of the strace this test started and still waits for.
        assert_eq!(unsafe { libc::kill(tracee, signal) }, 0, "cannot signal");
    }
    let out = child.wait_with_output().expect("cannot wait for strace");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the signal did not end the command"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first child of `pid` (strace runs the command as its child).
pub fn traced_child(pid: u32) -> Option<libc::pid_t> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a thread of `pid` is stopped entering system call `nr`, where
/// strace holds it.
pub fn in_call(pid: libc::pid_t, nr: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(nr.to_string().as_str()))
    })
}

/// The ids in the list `snapshots --json` printed, oldest first.
pub fn listed_ids(run: &Run) -> Vec<String> {
    run.json()
        .as_array()
        .expect("snapshots --json is not a list")
        .iter()
        .map(|s| s["id"].as_str().expect("a snapshot without id").to_string())
        .collect()
}

/// `platter -r REPO --password-file PASSWORD --json key list`: each key
/// file's id and whether PASSWORD opened it.
pub fn key_ids(sandbox: &Sandbox, password: &Path) -> Vec<(String, bool)> {
    let args = [
        OsStr::new("-r"),
        sandbox.repo.as_os_str(),
        "--password-file".as_ref(),
        password.as_os_str(),
        "--json".as_ref(),
        "key".as_ref(),
        "list".as_ref(),
    ];
    run(args).ok().json()["keys"]
        .as_array()
        .expect("key list --json has no keys")
        .iter()
        .map(|k| {
            (
                k["id"].as_str().expect("a key without id").to_string(),
                k["current"] == true,
            )
        })
        .collect()
}

/// The boot fixtures' folder (`fixtures/boot/build.sh`), built once per
/// test run by whichever test asks first (the script skips up-to-date
/// images, so later runs cost nothing); one builder, so that two test
/// modules never build into the same folder at once.
pub fn boot_fixtures() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-fixtures");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/boot/build.sh");
        system(script.to_str().unwrap(), &[dir.as_os_str()]);
        dir
    })
}

/// Boots `image` with `firmware` ("bios" or "uefi"); panics unless the
/// marker appears. Returns the boot-check line (result and seconds).
pub fn boots(image: &Path, firmware: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/boot/boot-check.sh");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(script)
        .arg(image)
        .arg(firmware)
        .output()
        .expect("cannot run boot-check.sh");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{} did not boot ({firmware}): {line}\n{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{line} (wall {:.1}s)", started.elapsed().as_secs_f64())
}

/// Runs the binary with `args` and returns what it did and its peak
/// resident set size in MiB, as GNU time reports it (it forks the command
/// from its own small process: a command started from this large,
/// many-threaded test process would be charged this process's peak too,
/// which the kernel carries across exec into the child's rusage).
pub fn run_measuring_rss<I, S>(args: I) -> (Run, f64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_measuring_rss_in(args, &test_cache_dir())
}

/// `run_measuring_rss` with `cache` as the index cache folder.
pub fn run_measuring_rss_in<I, S>(args: I, cache: &Path) -> (Run, f64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (args, command) = command_line(args);
    let measured = tempfile::NamedTempFile::new().expect("a temporary file for GNU time");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"])
        .arg(measured.path())
        .arg(env!("CARGO_BIN_EXE_platter"))
        .args(&args)
        .env("PLATTER_CACHE_DIR", cache)
        .stdin(Stdio::null());
    for var in OWN_VARIABLES {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .expect("cannot run /usr/bin/time (package time)");
    let run = Run::from_output(command, out);
    let text = fs::read_to_string(measured.path()).unwrap_or_default();
    // The last line is the figure (a line before it may say the command
    // exited non-zero).
    let kib: f64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time wrote no figure: {text:?}"));
    (run, kib / 1024.0)
}

/// Edits the plain index file at `path` (any version): `edit` gets its
/// bytes and the offset of each 64-byte entry; every crc32 the file keeps
/// is then made to match again, so that only what `edit` did is wrong.
pub fn edit_index(path: &Path, edit: impl FnOnce(&mut [u8], &[usize])) {
    let mut bytes = fs::read(path).unwrap();
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    if u32_at(&bytes, 8) != 3 {
        let (packs, count) = (u32_at(&bytes, 12) as usize, u64_at(&bytes, 16) as usize);
        let entries: Vec<usize> = (0..count).map(|i| 24 + 32 * packs + 64 * i).collect();
        edit(&mut bytes, &entries);
        let end = bytes.len() - 8;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        fs::write(path, bytes).unwrap();
        return;
    }
    // Version 3: parts (head, entry blocks, base blocks, keys), each
    // followed by its crc32 (docs/FORMAT.md, "Index file").
    let (packs, per) = (u32_at(&bytes, 16) as usize, u32_at(&bytes, 20) as usize);
    let (count, bases) = (u64_at(&bytes, 24) as usize, u64_at(&bytes, 32) as usize);
    let mut parts = vec![(44, 24 + 32 * packs)];
    let mut at = 44 + 24 + 32 * packs + 4;
    let mut entries = Vec::new();
    for (items, len) in [(count, 64), (bases, 32)] {
        for k in 0..items.div_ceil(per) {
            let n = (items - k * per).min(per);
            if len == 64 {
                entries.extend((0..n).map(|i| at + 64 * i));
            }
            parts.push((at, n * len));
            at += n * len + 4;
        }
    }
    parts.push((at, 32 * count.div_ceil(per)));
    edit(&mut bytes, &entries);
    for (at, len) in parts {
        let crc = crc32fast::hash(&bytes[at..at + len]);
        bytes[at + len..at + len + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes[..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}
