//! Shell completions and manual pages, generated from the command-line
//! definition (issue 17).

use std::process::{Command, Stdio};

use super::common::*;

// Pins: `platter completions bash` is a script bash loads, and completing `platter res` offers rescue and restore.
#[test]
fn bash_completion_completes_commands() {
    let script = run(["completions", "bash"]).ok().stdout.clone();
    let out = Command::new("bash")
        .args([
            "-c",
            "source /dev/stdin; COMP_WORDS=(platter res); COMP_CWORD=1; _platter platter res platter; echo \"${COMPREPLY[*]}\"",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .expect("bash");
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(
        offered.split_whitespace().any(|w| w == "rescue")
            && offered.split_whitespace().any(|w| w == "restore"),
        "{offered}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let text = run(["completions", shell]).ok().stdout.clone();
        assert!(text.contains("rescue"), "{shell}: {text}");
    }
}

// Pins: a reader that stops early (`platter completions bash | head -1`) is not a crash (clap_complete panics when its writer fails).
#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    let out = Command::new("bash")
        .args(["-c", "set -o pipefail; \"$0\" completions bash | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}"])
        .arg(env!("CARGO_BIN_EXE_platter"))
        .output()
        .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{stderr}");
}

// Pins: `platter man DIR` writes one page per command (platter.1, platter-restore.1, platter-rescue-build.1, ...) that man renders; a DIR that is not a folder is refused and nothing is written.
#[test]
fn man_pages_are_written_for_every_command() {
    let sandbox = Sandbox::without_repo();
    let dir = sandbox.path("man1");
    std::fs::create_dir_all(&dir).unwrap();
    run(["man", dir.to_str().unwrap()]).ok();
    for page in [
        "platter.1",
        "platter-restore.1",
        "platter-rescue-build.1",
        "platter-key-add.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    if have("man_pages_are_written_for_every_command", &["man"]) {
        let shown = Command::new("man")
            .arg("-l")
            .arg(dir.join("platter-restore.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(text.contains("--verify") && text.contains("NAME"), "{text}");
    }
    let file = sandbox.path("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    run(["man", file.to_str().unwrap()]).refused(2, "not a folder");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
