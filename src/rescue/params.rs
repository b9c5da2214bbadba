//! What the rescue medium's kernel command line says: the volume id the
//! medium was built with (so it never offers itself as a target) and, on a
//! medium built with `rescue build --unattended`, the restore to run. The
//! builder writes these words into the boot menu; the running medium reads
//! them from /proc/cmdline. Unattended mode is enabled by nothing else
//! (never by a file someone could drop on a backup disk).

use crate::error::{Error, Result};

const PREFIX: &str = "platter.";

/// The restore an unattended medium runs at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unattended {
    /// A repository folder, as a path inside a filesystem of an attached
    /// disk (searched on all of them; exactly one must hold it).
    pub repo: String,
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    pub target: TargetChoice,
    /// Extend the last partition onto a larger target.
    pub grow: bool,
    /// What follows a restore that succeeded.
    pub then: Then,
}

/// How an unattended medium names its target: kernel names change
/// between boots, so by serial (or WWN) or by exact size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    Serial(String),
    Size(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Reboot,
    Poweroff,
}

/// Everything the command line of a rescue medium says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The ISO volume id of the medium the system booted from.
    pub volume_id: Option<String>,
    pub unattended: Option<Unattended>,
}

impl TargetChoice {
    /// Parses `serial:TEXT` or `size:BYTES` (a size may be written 64G).
    pub fn parse(text: &str) -> Result<TargetChoice> {
        let bad = || {
            Error::bad_input(format!("target choice {text:?} is neither serial:TEXT nor size:BYTES"))
                .hint("name the target disk by its serial (or WWN), e.g. serial:S3Z9NB0K123456, or by its exact size, e.g. size:256060514304")
        };
        match text.split_once(':') {
            Some(("serial", s)) if !s.is_empty() => Ok(TargetChoice::Serial(s.to_string())),
            Some(("size", n)) => n
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(TargetChoice::Size)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn word(&self) -> String {
        match self {
            TargetChoice::Serial(s) => format!("serial:{s}"),
            TargetChoice::Size(n) => format!("size:{n}"),
        }
    }
}

/// Characters besides letters and digits a value may hold: none of them
/// means anything to GRUB (which expands `$`, ends a command at `;`, and
/// reads `#`, `{`, `|`, `&`, `<`, `>` and quotes itself) or to the kernel.
const PLAIN_PUNCTUATION: &[u8] = b"-_.:/@+=,%~";

/// A value that can stand in one word of a GRUB `linux` line and reach
/// the kernel command line unchanged.
pub fn check_word(what: &str, value: &str) -> Result<()> {
    let fits = !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || PLAIN_PUNCTUATION.contains(&b));
    if fits {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "{what} {value:?} cannot go on the medium's kernel command line"
        ))
        .hint("use 1 to 200 letters, digits and - _ . : / @ + = , % ~ (GRUB would change or cut anything else)"))
    }
}

/// An unattended repository path as discovery writes it: absolute, no
/// `.` or `..`, no empty parts; a trailing slash is dropped.
pub fn repo_path(text: &str) -> Result<String> {
    let trimmed = text.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    let bad = !text.starts_with('/')
        || parts.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..");
    if bad {
        return Err(Error::bad_input(format!(
            "repository path {text:?} is not a plain absolute path inside a filesystem"
        ))
        .hint("write it from the filesystem's top, e.g. /backups/repo (no . or .. parts, no //)"));
    }
    check_word("repository path", trimmed)?;
    Ok(trimmed.to_string())
}

impl Params {
    /// The words that go on the kernel command line.
    pub fn words(&self) -> Result<Vec<String>> {
        let mut words = Vec::new();
        if let Some(id) = &self.volume_id {
            check_word("volume id", id)?;
            words.push(format!("{PREFIX}medium={id}"));
        }
        if let Some(u) = &self.unattended {
            check_word("repository", &u.repo)?;
            check_word("snapshot", &u.snapshot)?;
            let target = u.target.word();
            check_word("target", &target)?;
            words.push(format!("{PREFIX}unattended=1"));
            words.push(format!("{PREFIX}repo={}", u.repo));
            words.push(format!("{PREFIX}snapshot={}", u.snapshot));
            words.push(format!("{PREFIX}target={target}"));
            if u.grow {
                words.push(format!("{PREFIX}grow=1"));
            }
            if u.then == Then::Poweroff {
                words.push(format!("{PREFIX}then=poweroff"));
            }
        }
        Ok(words)
    }

    /// The medium's volume id from a kernel command line, whatever else
    /// it holds.
    pub fn volume_id_in(cmdline: &str) -> Option<String> {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(PREFIX)?.strip_prefix("medium="))
            .map(str::to_string)
    }

    /// Reads the parameters from a kernel command line. Unattended mode
    /// needs all of its words; a medium with some but not all of them is
    /// an error (it would otherwise fall back to asking, which a mass
    /// restore cannot answer).
    pub fn parse(cmdline: &str) -> Result<Params> {
        let mut get = std::collections::HashMap::new();
        for word in cmdline.split_whitespace() {
            if let Some(rest) = word.strip_prefix(PREFIX)
                && let Some((key, value)) = rest.split_once('=')
            {
                get.insert(key.to_string(), value.to_string());
            }
        }
        let volume_id = get.get("medium").cloned();
        if get.get("unattended").map(String::as_str) != Some("1") {
            return Ok(Params {
                volume_id,
                unattended: None,
            });
        }
        let need = |key: &str| {
            get.get(key).cloned().ok_or_else(|| {
                Error::bad_input(format!(
                    "the kernel command line turns on unattended mode but has no {PREFIX}{key}="
                ))
                .hint("build the medium again with `platter rescue build --unattended ...`")
            })
        };
        let then = match get.get("then").map(String::as_str) {
            None | Some("reboot") => Then::Reboot,
            Some("poweroff") => Then::Poweroff,
            Some(other) => {
                return Err(Error::bad_input(format!(
                    "{PREFIX}then={other} is neither reboot nor poweroff"
                )));
            }
        };
        Ok(Params {
            volume_id,
            unattended: Some(Unattended {
                repo: repo_path(&need("repo")?)?,
                snapshot: need("snapshot")?,
                target: TargetChoice::parse(&need("target")?)?,
                grow: get.get("grow").map(String::as_str) == Some("1"),
                then,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_as_written() {
        let params = Params {
            volume_id: Some("PLATTER_1A2B3C4D".into()),
            unattended: Some(Unattended {
                repo: "/backups/repo".into(),
                snapshot: "latest".into(),
                target: TargetChoice::Serial("QM00003".into()),
                grow: true,
                then: Then::Poweroff,
            }),
        };
        let line = format!("console=ttyS0 quiet {}", params.words().unwrap().join(" "));
        assert_eq!(Params::parse(&line).unwrap(), params);
    }

    #[test]
    fn incomplete_unattended_words_are_an_error() {
        assert!(Params::parse("platter.unattended=1 platter.repo=/r").is_err());
        let plain = Params::parse("platter.medium=X platter.repo=/r").unwrap();
        assert!(plain.unattended.is_none());
    }

    #[test]
    fn words_with_spaces_or_quotes_are_refused() {
        for bad in [
            "a b",
            "a\"b",
            "",
            "a\nb",
            "é",
            "late${root}",
            "A;echo",
            "/r$x#y",
            "{x}",
            "a|b",
        ] {
            assert!(check_word("x", bad).is_err(), "{bad:?}");
        }
        assert!(check_word("x", "WD-WCC4N1234567_1.0:x/y@z+w=v,u%t~s").is_ok());
        assert!(TargetChoice::parse("size:0").is_err());
        assert!(TargetChoice::parse("name:sda").is_err());
        assert_eq!(
            TargetChoice::parse("size:1024").unwrap(),
            TargetChoice::Size(1024)
        );
    }

    #[test]
    fn repository_paths_are_written_as_discovery_writes_them() {
        assert_eq!(repo_path("/backups/repo/").unwrap(), "/backups/repo");
        assert_eq!(repo_path("/repo").unwrap(), "/repo");
        for bad in [
            "relative/repo",
            "/backups/../repo",
            "/a//b",
            "/",
            "/./x",
            "",
        ] {
            assert!(repo_path(bad).is_err(), "{bad:?}");
        }
    }
}
