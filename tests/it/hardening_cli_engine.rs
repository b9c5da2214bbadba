//! The key rules, run by the engine under a repository lock.

use std::fs;

use super::common::*;

// Pins: two `key remove` that overlap, each opened with one of the last two passphrases and each removing the other's key file, cannot leave the repository with no key: the second finds the key file that opened it gone (under the exclusive lock) and refuses with exit 5.
#[test]
fn overlapping_key_removes_keep_a_key() {
    let sandbox = Sandbox::encrypted();
    let first = sandbox.password.clone().unwrap();
    let second = sandbox.path("second");
    fs::write(&second, "a second passphrase\n").unwrap();
    let second_arg = second.display().to_string();
    let mut add = vec!["key", "add", "--new-password-file", &second_arg];
    add.extend(FAST_KDF);
    sandbox.run(add).ok();
    let keys = key_ids(&sandbox, &second);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let second_id = keys.iter().find(|(_, current)| *current).unwrap().0.clone();
    let first_id = keys
        .iter()
        .find(|(_, current)| !*current)
        .unwrap()
        .0
        .clone();

    // The passphrase command of the second `key remove` runs after it has
    // read the key files and before it locks the repository: there the
    // first `key remove` (opened with the first passphrase) runs whole and
    // removes the second key file.
    let repo = sandbox.repo.display().to_string();
    let other_remove = format!(
        "'{}' -r '{repo}' --password-file '{}' key remove {} >/dev/null 2>&1; cat '{second_arg}'",
        env!("CARGO_BIN_EXE_platter"),
        first.display(),
        &second_id[..12],
    );
    run([
        "-r",
        &repo,
        "--password-command",
        &other_remove,
        "key",
        "remove",
        &first_id[..12],
    ])
    .refused(5, "was removed while this command ran");
    let left = key_ids(&sandbox, &first);
    assert_eq!(left, vec![(first_id, true)], "the first key file is kept");
    sandbox.run(["snapshots"]).ok();
}
