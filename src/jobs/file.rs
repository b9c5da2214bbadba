//! The job file: a TOML document naming what to back up, where, how long
//! to keep it, where to copy it, how to test it and what to run around it.
//! Read in two steps, as the command line is: the raw file (serde, every
//! unknown key refused by name), then checks that need the system (who
//! owns the file, who may read it, what a hook would freeze).
//!
//! A job file holds passphrase sources and commands run as root, so a file
//! others can write is refused before it is parsed, and a file others can
//! read is refused when it holds a passphrase inline.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::retention::Policy;
use crate::error::{Error, Result};

/// Where job files named by NAME are found, unless `PLATTER_JOBS_DIR`
/// names another folder.
pub const JOBS_DIR: &str = "/etc/platter/jobs";

/// The most a job file may hold: it is a short text.
const MAX_BYTES: u64 = 1 << 20;

/// A job file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// A folder, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX].
    pub repository: String,
    pub passphrase: Option<PassphraseSpec>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(rename = "source")]
    pub sources: Vec<SourceSpec>,
    pub retention: Option<RetentionSpec>,
    #[serde(default, rename = "copy")]
    pub copies: Vec<CopySpec>,
    pub restore_test: Option<RestoreTestSpec>,
    #[serde(default)]
    pub hooks: HooksSpec,
    /// How long a step waits for a repository another command holds
    /// (another job's prune, say) before it fails; default 30 minutes.
    #[serde(default, deserialize_with = "duration")]
    pub lock_wait: Option<Duration>,
}

/// Where a repository's passphrase comes from: exactly one of these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassphraseSpec {
    /// The first line of this file.
    pub file: Option<PathBuf>,
    /// The first line this command prints (run with `sh -c`).
    pub command: Option<String>,
    /// The value of this environment variable.
    pub env: Option<String>,
    /// The passphrase itself (the job file must then be readable by its
    /// owner alone).
    pub value: Option<String>,
}

/// One thing to back up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A device (best by a stable name: /dev/disk/by-id/...), or an image
    /// file; recorded as given.
    pub path: PathBuf,
    /// Only this partition of it.
    pub partition: Option<u32>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default)]
    pub allow_mounted: bool,
}

/// A retention policy: the keys of `forget`'s --keep-* options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    pub keep_within: Option<Duration>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Free the space of forgotten snapshots at once (default true).
    #[serde(default = "yes")]
    pub prune: bool,
}

/// A second repository the new snapshots go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    pub repository: String,
    /// Without one, the main repository's passphrase is tried.
    pub passphrase: Option<PassphraseSpec>,
    /// Its own retention; without one it keeps everything copied.
    pub retention: Option<RetentionSpec>,
}

/// The restore test of the newest snapshot of each source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestSpec {
    /// A folder with room for a source's used bytes; not inside the
    /// repository.
    pub scratch: PathBuf,
    /// Also boot the snapshot (as `platter boot --expect` does: no
    /// network) and wait for `boot_expect` on its serial console.
    #[serde(default)]
    pub boot_test: bool,
    /// What the serial console must show; default `login:`.
    #[serde(default)]
    pub boot_expect: Option<String>,
    /// How long to wait for it; default 5 minutes.
    #[serde(default, deserialize_with = "duration")]
    pub boot_timeout: Option<Duration>,
}

impl RestoreTestSpec {
    /// The boot test asked for, if any.
    pub fn boot(&self) -> Option<crate::boot::BootWatch> {
        self.boot_test.then(|| crate::boot::BootWatch {
            expect: self.boot_expect.clone().unwrap_or_else(|| "login:".into()),
            timeout: self.boot_timeout.unwrap_or(Duration::from_secs(300)),
        })
    }
}

/// Commands run around the job (by /bin/sh -c, each in its own process
/// group, its stdin the JSON summary so far).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    #[serde(default)]
    pub before: Vec<String>,
    /// Run always: after a failure, a timeout and SIGTERM too.
    #[serde(default)]
    pub after: Vec<String>,
    /// Run when a step failed.
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// Each hook's limit; default 5 minutes.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

fn yes() -> bool {
    true
}

fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is no duration ({e}): write e.g. \"30s\", \"10m\" or \"2h\""
        ))
    })
}

impl RetentionSpec {
    pub fn policy(&self) -> Policy {
        let n = |v: Option<u32>| v.map(|n| n as usize);
        Policy {
            last: n(self.keep_last),
            hourly: n(self.keep_hourly),
            daily: n(self.keep_daily),
            weekly: n(self.keep_weekly),
            monthly: n(self.keep_monthly),
            yearly: n(self.keep_yearly),
            within: self.keep_within,
            tags: self.keep_tags.clone(),
        }
    }
}

/// A job: its name (for its lock, its log and its units), its file, and
/// what the file says.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub path: PathBuf,
    pub file: JobFile,
}

/// The folder NAME is looked up in.
pub fn jobs_dir() -> PathBuf {
    std::env::var_os("PLATTER_JOBS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(JOBS_DIR))
}

/// Whether `name` can name a job (a file name, a unit name, a lock name).
pub fn check_name(name: &str) -> Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(Error::bad_input(format!("{name:?} is no job name")).hint(
            "a job name is up to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'",
        ))
    }
}

/// The job called `name`, from the jobs folder.
pub fn load_named(name: &str) -> Result<Job> {
    check_name(name)?;
    let path = jobs_dir().join(format!("{name}.toml"));
    if !path.exists() {
        return Err(Error::not_found(format!(
            "there is no job {name}: {} does not exist",
            path.display()
        ))
        .hint(
            "write the job file there (see `platter run --help`), or give one with --config FILE",
        ));
    }
    load(&path, name)
}

/// The job in the file `path` (given with --config): named for its file.
pub fn load_file(path: &Path) -> Result<Job> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    check_name(&name).map_err(|e| e.context(format!("the name of job file {}", path.display())))?;
    load(path, &name)
}

fn load(path: &Path, name: &str) -> Result<Job> {
    use std::io::Read;
    // Opened once: what is checked (owner, mode, kind) is the file that is
    // read, whatever the path names meanwhile.
    let opened = std::fs::File::open(path).map_err(|e| Error::io("read job file", path, e))?;
    let meta = opened
        .metadata()
        .map_err(|e| Error::io("read job file", path, e))?;
    if !meta.is_file() {
        return Err(
            Error::bad_input(format!("job file {} is not a regular file", path.display()))
                .hint("give the path of a TOML file"),
        );
    }
    refuse_writable_by_others(path, &meta)?;
    if meta.len() > MAX_BYTES {
        return Err(Error::bad_input(format!(
            "job file {} is {} bytes: that is no job file",
            path.display(),
            meta.len()
        )));
    }
    let mut text = String::new();
    opened
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read job file", path, e))?;
    let file: JobFile = toml::from_str(&text).map_err(|e| {
        Error::bad_input(format!("job file {}: {}", path.display(), e.message())).hint(format!(
            "{}; the keys are described in the README (section Use)",
            where_in(&text, e.span())
        ))
    })?;
    check_meaning(path, &file)?;
    refuse_readable_secret(path, &meta, &file)?;
    check_hooks(name, &file)?;
    Ok(Job {
        name: name.to_string(),
        path: path.to_path_buf(),
        file,
    })
}

/// "at line N: TEXT" for an error's place in the file.
fn where_in(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "check the file".into();
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
    // A line that may hold a passphrase is not repeated (errors reach logs).
    if shown.contains("value") || shown.contains("passphrase") {
        return format!("at line {line} (not shown: it may hold a passphrase)");
    }
    let shown: String = shown.chars().take(120).collect();
    format!("at line {line}: {shown}")
}

fn refuse_writable_by_others(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(Error::bad_input(format!(
            "job file {} belongs to user {}, not to root or to this user ({me}): its commands \
             would run as this user",
            path.display(),
            meta.uid()
        ))
        .hint(format!(
            "chown root: {} (after reading it through)",
            path.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::bad_input(format!(
            "job file {} can be written by others (mode {:o}): anyone who can would run commands \
             as this user",
            path.display(),
            meta.mode() & 0o7777
        ))
        .hint(format!("chmod go-w {}", path.display())));
    }
    Ok(())
}

fn refuse_readable_secret(path: &Path, meta: &std::fs::Metadata, file: &JobFile) -> Result<()> {
    let inline = std::iter::once(&file.passphrase)
        .chain(file.copies.iter().map(|c| &c.passphrase))
        .flatten()
        .any(|p| p.value.is_some());
    if inline && meta.mode() & 0o044 != 0 {
        return Err(Error::bad_input(format!(
            "job file {} holds a passphrase (passphrase.value) and others can read it (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ))
        .hint(format!("chmod 600 {}", path.display()))
        .hint("or keep the passphrase elsewhere: passphrase = { file = \"/etc/platter/NAME.pass\" } (mode 600), or { command = \"...\" }"));
    }
    Ok(())
}

/// Checks what serde cannot: one passphrase source each, a source at
/// least, counts of at least one.
/// A repository location compared as a place: a folder by its real path
/// (or its absolute path while it does not exist), a URL without trailing
/// slashes.
fn same_place(location: &str) -> String {
    if location.starts_with("s3:") {
        return location.trim_end_matches('/').to_string();
    }
    let path = Path::new(location);
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn check_meaning(path: &Path, file: &JobFile) -> Result<()> {
    let bad = |key: &str, what: String, instead: &str| {
        Error::bad_input(format!("job file {}: {key}: {what}", path.display()))
            .hint(instead.to_string())
    };
    if file.sources.is_empty() {
        return Err(bad(
            "source",
            "the job has no source".into(),
            "add one: [[source]] path = \"/dev/disk/by-id/...\"",
        ));
    }
    if file.repository.is_empty() {
        return Err(bad(
            "repository",
            "empty".into(),
            "repository = \"/backup/repo\"",
        ));
    }
    // A copy that is the repository itself, or another copy, would have
    // its own retention forget what the other keeps.
    let mut places = vec![("repository".to_string(), same_place(&file.repository))];
    for (i, c) in file.copies.iter().enumerate() {
        let here = same_place(&c.repository);
        if let Some((other, _)) = places.iter().find(|(_, p)| *p == here) {
            return Err(bad(
                &format!("copy[{i}].repository"),
                format!("{:?} is the same repository as {other}", c.repository),
                "a copy goes to another repository (another disk, another host, object storage)",
            ));
        }
        places.push((format!("copy[{i}].repository"), here));
    }
    // Checked now, not when the backup runs after the before hooks.
    crate::engine::backup::check_tags(&file.tags)
        .map_err(|e| e.context(format!("job file {}: tags", path.display())))?;
    if file.hooks.timeout.is_some_and(|t| t.is_zero()) {
        return Err(bad(
            "hooks.timeout",
            "is zero: every hook would fail at once".into(),
            "timeout = \"5m\"",
        ));
    }
    let mut passphrases = vec![("passphrase".to_string(), &file.passphrase)];
    let mut retentions = vec![("retention".to_string(), &file.retention)];
    for (i, c) in file.copies.iter().enumerate() {
        if c.repository.is_empty() {
            return Err(bad(
                &format!("copy[{i}].repository"),
                "empty".into(),
                "repository = \"/mnt/usb/repo\"",
            ));
        }
        passphrases.push((format!("copy[{i}].passphrase"), &c.passphrase));
        retentions.push((format!("copy[{i}].retention"), &c.retention));
    }
    for (key, p) in passphrases {
        let Some(p) = p else { continue };
        let given = [
            p.file.is_some(),
            p.command.is_some(),
            p.env.is_some(),
            p.value.is_some(),
        ]
        .iter()
        .filter(|&&g| g)
        .count();
        if given != 1 {
            return Err(bad(
                &key,
                format!("names {given} passphrase sources"),
                "give exactly one of file, command, env or value, e.g. passphrase = { file = \"/etc/platter/backup.pass\" }",
            ));
        }
    }
    for (key, r) in retentions {
        let Some(r) = r else { continue };
        let counts = [
            r.keep_last,
            r.keep_hourly,
            r.keep_daily,
            r.keep_weekly,
            r.keep_monthly,
            r.keep_yearly,
        ];
        if counts.contains(&Some(0)) {
            return Err(bad(
                &key,
                "a keep count of 0".into(),
                "counts start at 1; leave a rule out to not use it",
            ));
        }
        if r.policy().is_empty() {
            return Err(bad(
                &key,
                "keeps nothing by any rule".into(),
                "give keep_last, keep_daily, ... (as `platter forget`'s --keep-* options), or leave the table out",
            ));
        }
    }
    Ok(())
}

/// Refuses hooks that would freeze what the job writes to.
fn check_hooks(name: &str, file: &JobFile) -> Result<()> {
    let h = &file.hooks;
    let hooks: Vec<&str> = h
        .before
        .iter()
        .chain(&h.after)
        .chain(&h.on_failure)
        .map(String::as_str)
        .collect();
    let log = crate::jobs::state::log_path(name);
    let mut thawed: Vec<(&str, &Path)> = Vec::new();
    let local = |r: &str| !r.starts_with("s3:");
    if local(&file.repository) {
        thawed.push(("repository", Path::new(&file.repository)));
    }
    thawed.push(("job log", &log));
    for c in &file.copies {
        if local(&c.repository) {
            thawed.push(("copy repository", Path::new(&c.repository)));
        }
    }
    if let Some(t) = &file.restore_test {
        thawed.push(("restore test's scratch folder", &t.scratch));
    }
    crate::jobs::hooks::check_freezes(&hooks, &thawed)
}
