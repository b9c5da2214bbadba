//! Encrypted repositories: nothing readable is stored, the wrong or a
//! missing passphrase or key is named, tampering is damage and never
//! reaches a target, key files come and go, and copies move between keys.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::*;

const MARKER: &[u8] = b"PLATTER-SECRET-MARKER: root:$6$s4lt$hunter2:19000:0:99999:7:::";

/// A 1 MiB pattern: a random 4 KiB block repeated, so lz4 shrinks it and
/// its compressed form is worth looking for too.
fn pattern(rng: &mut Rng) -> Vec<u8> {
    let block = rng.bytes(4096);
    block.iter().copied().cycle().take(1 << 20).collect()
}

/// Byte strings that must not appear in an encrypted repository: the
/// marker, slices of the pattern, slices of the pattern's chunks as lz4
/// compresses them, and the plain BLAKE3 ids of the image's chunks.
fn needles(image: &[u8], pattern_at: usize, pattern: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("marker".to_string(), MARKER.to_vec())];
    for at in [0, 4096 * 3 + 17, (1 << 19) + 5, (1 << 20) - 64] {
        out.push((format!("pattern at {at}"), pattern[at..at + 64].to_vec()));
    }
    let start = pattern_at / CHUNK as usize;
    for chunk in image[start * CHUNK as usize..]
        .chunks(CHUNK as usize)
        .take(16)
        .step_by(5)
    {
        let packed = lz4_flex::block::compress(chunk);
        let mid = packed.len() / 2;
        out.push((
            "lz4 of a pattern chunk".into(),
            packed[mid..mid + 32].to_vec(),
        ));
    }
    for (i, chunk) in image.chunks(CHUNK as usize).enumerate().step_by(7) {
        let id = blake3::hash(chunk);
        out.push((format!("plain id of chunk {i}"), id.as_bytes().to_vec()));
        out.push((
            format!("plain id of chunk {i} in hex"),
            id.to_hex().as_bytes().to_vec(),
        ));
    }
    out
}

/// Every needle found in a file of `repo`, as "needle in file".
fn found(repo: &Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in files_under(repo) {
        let bytes = fs::read(&file).unwrap();
        for (name, needle) in needles {
            if bytes.windows(needle.len()).any(|w| w == &needle[..]) {
                hits.push(format!("{name} in {}", file.display()));
            }
        }
    }
    hits
}

fn image_with_secrets(sandbox: &Sandbox, rng: &mut Rng) -> (Image, Vec<u8>, usize) {
    let mut image = Image::random(sandbox.path("secret-disk.img"), 48 * CHUNK, rng);
    let text: Vec<u8> = MARKER
        .iter()
        .chain(b"\n")
        .copied()
        .cycle()
        .take(3000)
        .collect();
    image.write(5 * CHUNK + 100, &text);
    image.write(30 * CHUNK, MARKER);
    let pattern = pattern(rng);
    let pattern_at = 10 * CHUNK as usize;
    image.write(pattern_at as u64, &pattern);
    (image, pattern, pattern_at)
}

// Pins: an encrypted repository holds neither a text marker nor a 1 MiB pattern of the source, nor their lz4 forms, nor the plain BLAKE3 ids, nor the source's path or the hostname, after a full and an incremental backup; the same backup in a plain repository shows them (the search works); both restore byte for byte.
#[test]
fn an_encrypted_repository_shows_nothing_of_the_disk() {
    let mut rng = Rng::new(61);
    let sandbox = Sandbox::encrypted();
    let (mut image, pattern, pattern_at) = image_with_secrets(&sandbox, &mut rng);
    let full = sandbox.snapshot_of(&image.path, &["--tag", "before-upgrade"]);
    let first = fs::read(&image.path).unwrap();
    image.write(40 * CHUNK + 9, MARKER);
    let incr = sandbox.backup(&image.path);
    assert_eq!(incr["chunks_new"], 1, "{incr}");

    let mut look_for = needles(&first, pattern_at, &pattern);
    let path = image.path.display().to_string();
    look_for.push(("source path".into(), path.into_bytes()));
    look_for.push(("tag".into(), b"before-upgrade".to_vec()));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    if host.len() >= 6 {
        // Shorter names turn up in random bytes by chance.
        look_for.push(("hostname".into(), host.into_bytes()));
    }
    let hits = found(&sandbox.repo, &look_for);
    assert!(hits.is_empty(), "readable in the repository: {hits:#?}");

    let plain = Sandbox::new();
    plain.backup(&image.path);
    let hits = found(&plain.repo, &look_for);
    for what in [
        "marker",
        "pattern at 0",
        "lz4 of a pattern chunk",
        "plain id",
        "source path",
    ] {
        assert!(
            hits.iter().any(|h| h.starts_with(what)),
            "the search does not see {what} in a plain repository: {hits:#?}"
        );
    }

    sandbox.assert_restores(&full, &first);
    image.check();
    sandbox.assert_restores(
        incr["snapshot"].as_str().unwrap(),
        &fs::read(&image.path).unwrap(),
    );
    verify_encrypted(&sandbox);
}

fn verify_encrypted(sandbox: &Sandbox) -> Value {
    let report = sandbox.run(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report:#}");
    report
}

fn write_file(sandbox: &Sandbox, name: &str, text: &str) -> PathBuf {
    let path = sandbox.path(name);
    fs::write(&path, text).unwrap();
    path
}

/// `platter -r REPO EXTRA... restore latest TARGET`, without the sandbox's
/// passphrase.
fn restore_with(sandbox: &Sandbox, extra: &[&OsStr], target: &Path) -> Run {
    let mut args = vec![OsStr::new("-r"), sandbox.repo.as_os_str()];
    args.extend_from_slice(extra);
    args.extend([OsStr::new("restore"), "latest".as_ref(), target.as_os_str()]);
    run(args)
}

// Pins: a wrong passphrase exits 8, a missing password file exits 3, no passphrase at all (no terminal) exits 2, a repository whose key files are gone exits 4 naming keys/, a config stripped of its encryption is refused while key files or sealed files exist, a passphrase given for a plain repository is refused, and a damaged lock file blocks nothing; none of them creates the restore target. PLATTER_PASSWORD and --password-command open it.
#[test]
fn passphrase_and_key_problems_are_named_and_nothing_is_written() {
    let mut rng = Rng::new(62);
    let sandbox = Sandbox::encrypted();
    let image = Image::random(sandbox.path("disk.img"), 20 * CHUNK, &mut rng);
    sandbox.backup(&image.path);
    let target = sandbox.path("target.img");
    let wrong = write_file(&sandbox, "wrong", "correct horse battery stable\n");

    restore_with(
        &sandbox,
        &["--password-file".as_ref(), wrong.as_os_str()],
        &target,
    )
    .refused(8, "opens none of the repository's key files");
    restore_with(
        &sandbox,
        &["--password-file".as_ref(), sandbox.path("nope").as_os_str()],
        &target,
    )
    .refused(3, "does not exist");
    restore_with(&sandbox, &[], &target).refused(2, "passphrase");
    assert!(!target.exists(), "a refused restore wrote its target");

    let out = opens_with_env_password(&sandbox.repo, "correct horse battery staple");
    assert!(out.status.success(), "PLATTER_PASSWORD: {out:?}");
    let command = format!("cat {}", sandbox.password.as_ref().unwrap().display());
    restore_with(
        &sandbox,
        &["--password-command".as_ref(), command.as_ref()],
        &target,
    )
    .ok();
    assert_file_is(&target, &image.bytes, "restore with --password-command");
    fs::remove_file(&target).unwrap();

    // The key files gone: the data cannot be read, and platter says why.
    let keys = sandbox.repo.join("keys");
    let aside = sandbox.path("keys-aside");
    fs::rename(&keys, &aside).unwrap();
    sandbox
        .restore("latest", &target, &[])
        .refused(4, "no key files");
    assert!(!target.exists());
    fs::rename(&aside, &keys).unwrap();

    // A config rewritten to say "not encrypted" while keys exist.
    let config = sandbox.repo.join("config");
    let original = fs::read(&config).unwrap();
    let doc: Value = serde_json::from_slice(&original).unwrap();
    let mut body = doc["body"].clone();
    body.as_object_mut().unwrap().remove("encryption");
    // A plain version 1 config names no features.
    body.as_object_mut().unwrap().remove("features");
    let body = serde_json::to_string(&body).unwrap();
    let forged = format!(
        "{{\"platter\":\"config\",\"version\":1,\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    fs::write(&config, forged).unwrap();
    sandbox
        .restore("latest", &target, &[])
        .refused(4, "key files");
    assert!(!target.exists());
    // ... and with the key files gone too: the sealed files still tell.
    fs::rename(&keys, &aside).unwrap();
    let backup = [
        OsStr::new("-r"),
        sandbox.repo.as_os_str(),
        "backup".as_ref(),
        image.path.as_os_str(),
    ];
    run(backup).refused(4, "sealed files");
    // ... even with plain-looking files planted in front of the sealed ones.
    for planted in ["snapshots/0", "index/0", "maps/0", "locks/0"] {
        fs::write(sandbox.repo.join(planted), b"").unwrap();
    }
    // An empty pack folder whose name no pack uses yet (pack ids are
    // random, so a fixed name could already be taken).
    let empty_folder = (0..=255u8)
        .map(|byte| sandbox.repo.join(format!("data/{byte:02x}")))
        .find(|folder| !folder.exists())
        .unwrap();
    fs::create_dir(&empty_folder).unwrap();
    run(backup).refused(4, "sealed files");
    for planted in ["snapshots/0", "index/0", "maps/0", "locks/0"] {
        fs::remove_file(sandbox.repo.join(planted)).unwrap();
    }
    fs::remove_dir(&empty_folder).unwrap();
    fs::rename(&aside, &keys).unwrap();
    fs::write(&config, original).unwrap();

    // A passphrase given for a plain repository: refused, in case it was
    // an encrypted one that someone replaced.
    let plain = Sandbox::new();
    let pass = sandbox.password.as_ref().unwrap();
    run([
        OsStr::new("-r"),
        plain.repo.as_os_str(),
        "--password-file".as_ref(),
        pass.as_os_str(),
        "snapshots".as_ref(),
    ])
    .refused(2, "not encrypted, but a passphrase was given");

    // A lock file that cannot be read (here: intact, but of a future
    // format) is someone's lock: backups go on, prune waits, and
    // `unlock --all` removes it.
    let mut lock = b"PLTRSEAL".to_vec();
    lock.extend(2u32.to_le_bytes());
    lock.extend([0u8; 4 + 40]);
    let crc = crc32fast::hash(&lock);
    lock.extend(crc.to_le_bytes());
    lock.extend(b"SEND");
    fs::write(sandbox.repo.join("locks").join("a".repeat(64)), lock).unwrap();
    sandbox.backup(&image.path);
    sandbox
        .run(["forget", "--keep-last", "1"])
        .refused(5, "unreadable lock");
    sandbox.run(["unlock", "--all"]).ok();
    assert_eq!(fs::read_dir(sandbox.repo.join("locks")).unwrap().count(), 0);
    sandbox.assert_restores("latest", &image.bytes);
}

/// Offsets of the sealed blobs in a pack of an encrypted repository whose
/// chunks are all random (so stored raw, each CHUNK + 28 bytes).
fn sealed_blob(index: u64) -> u64 {
    16 + index * (CHUNK + 28)
}

fn swap(a: (&Path, u64), b: (&Path, u64), len: usize) {
    let read =
        |(file, at): (&Path, u64)| fs::read(file).unwrap()[at as usize..at as usize + len].to_vec();
    let (x, y) = (read(a), read(b));
    let write = |(file, at): (&Path, u64), bytes: &[u8]| {
        let mut all = fs::read(file).unwrap();
        all[at as usize..at as usize + len].copy_from_slice(bytes);
        fs::write(file, all).unwrap();
    };
    write(a, &y);
    write(b, &x);
}

/// Rewrites the crc32 of a sealed file, as someone tampering would.
fn fix_sealed_crc(file: &Path) {
    let mut bytes = fs::read(file).unwrap();
    let end = bytes.len() - 8;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(file, bytes).unwrap();
}

// Pins: in an encrypted repository a changed blob, blobs swapped between two packs, a manifest changed with its crc32 fixed, two manifests swapped, and a changed map are each reported as damage at their place by verify and refused by restore (exit 4, no target written); put back, everything restores.
#[test]
fn tampering_is_damage_and_never_restored() {
    let mut rng = Rng::new(63);
    let sandbox = Sandbox::encrypted();
    let one = Image::random(sandbox.path("one.img"), 12 * CHUNK, &mut rng);
    let two = Image::random(sandbox.path("two.img"), 12 * CHUNK, &mut rng);
    let id1 = sandbox.snapshot_of(&one.path, &[]);
    let id2 = sandbox.snapshot_of(&two.path, &[]);
    let packs = sandbox.packs();
    assert_eq!(packs.len(), 2, "{packs:?}");
    let target = sandbox.path("target.img");
    let refused = |id: &str, mentions: &str| {
        sandbox.restore(id, &target, &[]).refused(4, mentions);
        assert!(!target.exists(), "a refused restore wrote its target");
    };
    let damage = || -> Vec<String> {
        let report = sandbox
            .run(["--json", "verify", "--read-data"])
            .expect_code(4)
            .json();
        report["damage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect()
    };

    // One byte changed inside a blob: exactly one snapshot is hit.
    flip_byte(&packs[0], sealed_blob(3) + 500);
    let hit: Vec<&String> = [&id1, &id2]
        .into_iter()
        .filter(|id| {
            let code = sandbox.restore(id, &target, &[]).code;
            let _ = fs::remove_file(&target);
            code == Some(4)
        })
        .collect();
    assert_eq!(hit.len(), 1, "{hit:?}");
    refused(hit[0], "fails its crc32");
    let found = damage();
    assert_eq!(found.len(), 1, "{found:#?}");
    flip_byte(&packs[0], sealed_blob(3) + 500);
    verify_encrypted(&sandbox);

    // Two blobs swapped between the packs.
    swap(
        (&packs[0], sealed_blob(2)),
        (&packs[1], sealed_blob(5)),
        (CHUNK + 28) as usize,
    );
    refused(&id1, "pack");
    refused(&id2, "pack");
    let found = damage();
    assert_eq!(found.len(), 2, "{found:#?}");
    swap(
        (&packs[0], sealed_blob(2)),
        (&packs[1], sealed_blob(5)),
        (CHUNK + 28) as usize,
    );
    verify_encrypted(&sandbox);

    // A manifest changed by someone who fixed its crc32.
    let manifest = sandbox.manifest_file(&id1);
    let good = fs::read(&manifest).unwrap();
    flip_byte(&manifest, 40);
    fix_sealed_crc(&manifest);
    refused(&id1, "does not authenticate");
    sandbox.run(["snapshots"]).expect_code(4);
    fs::write(&manifest, &good).unwrap();

    // Two manifests swapped: each is intact, but not where it belongs.
    let other = sandbox.manifest_file(&id2);
    let good2 = fs::read(&other).unwrap();
    fs::write(&manifest, &good2).unwrap();
    fs::write(&other, &good).unwrap();
    refused(&id1, "does not authenticate");
    refused(&id2, "does not authenticate");
    fs::write(&manifest, &good).unwrap();
    fs::write(&other, &good2).unwrap();

    // A map changed.
    let map = sandbox.map_file(&id2);
    flip_byte(&map, 100);
    refused(&id2, "map");
    flip_byte(&map, 100);

    sandbox.assert_restores(&id1, &one.bytes);
    sandbox.assert_restores(&id2, &two.bytes);
    verify_encrypted(&sandbox);
}

/// `platter -r REPO --password-file PASSWORD ARGS...`.
fn with_password<I, S>(repo: &Path, password: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> = vec![
        "-r".into(),
        repo.into(),
        "--password-file".into(),
        password.into(),
    ];
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    run(all)
}

/// `platter -r REPO snapshots` with the passphrase in PLATTER_PASSWORD.
fn opens_with_env_password(repo: &Path, password: &str) -> std::process::Output {
    let mut cmd = platter();
    cmd.env("PLATTER_PASSWORD", password);
    cmd.args([OsStr::new("-r"), repo.as_os_str(), "snapshots".as_ref()])
        .output()
        .unwrap()
}

// Pins: `key add` gives a second passphrase that opens the repository; the first key file can be removed with the second (not with itself); afterwards only the second opens it and restores; `key passwd` replaces the passphrase used.
#[test]
fn key_slots_come_and_go() {
    let mut rng = Rng::new(64);
    let sandbox = Sandbox::encrypted();
    let image = Image::random(sandbox.path("disk.img"), 10 * CHUNK, &mut rng);
    sandbox.backup(&image.path);
    let first = sandbox.password.clone().unwrap();
    let second = write_file(&sandbox, "second", "a second passphrase\n");
    let third = write_file(&sandbox, "third", "a third passphrase\n");

    let second_arg = second.display().to_string();
    let mut add = vec!["key", "add", "--new-password-file", &second_arg];
    add.extend(FAST_KDF);
    with_password(&sandbox.repo, &first, add).ok();
    let keys = key_ids(&sandbox, &second);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let (first_id, _) = keys.iter().find(|(_, current)| !current).unwrap().clone();

    with_password(&sandbox.repo, &first, ["key", "remove", &first_id[..10]]).refused(2, "opened");
    with_password(&sandbox.repo, &second, ["key", "remove", &first_id[..10]]).ok();
    assert_eq!(key_ids(&sandbox, &second).len(), 1);
    with_password(&sandbox.repo, &first, ["snapshots"]).refused(8, "passphrase");
    let target = sandbox.path("restored.img");
    let target_arg = target.display().to_string();
    with_password(&sandbox.repo, &second, ["restore", "latest", &target_arg]).ok();
    assert_file_is(&target, &image.bytes, "restore with the second passphrase");

    let third_arg = third.display().to_string();
    let mut passwd = vec!["key", "passwd", "--new-password-file", &third_arg];
    passwd.extend(FAST_KDF);
    with_password(&sandbox.repo, &second, passwd).ok();
    with_password(&sandbox.repo, &second, ["snapshots"]).refused(8, "passphrase");
    with_password(&sandbox.repo, &third, ["verify"]).ok();
}

fn init_other(sandbox: &Sandbox, name: &str, password: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let repo = sandbox.path(name);
    let pass = write_file(sandbox, &format!("{name}-pass"), password);
    let mut args = vec![
        OsStr::new("-r"),
        repo.as_os_str(),
        "--password-file".as_ref(),
        pass.as_os_str(),
        "init".as_ref(),
        "--chunk-size".as_ref(),
        "64K".as_ref(),
    ];
    args.extend(FAST_KDF.iter().map(OsStr::new));
    args.extend(extra.iter().map(OsStr::new));
    run(args).ok();
    (repo, pass)
}

fn copy(sandbox: &Sandbox, to: &Path, to_pass: &Path) -> Value {
    sandbox
        .run([
            OsStr::new("--json"),
            "copy".as_ref(),
            "--to".as_ref(),
            to.as_os_str(),
            "--other-password-file".as_ref(),
            to_pass.as_os_str(),
        ])
        .ok()
        .json()
}

fn restores_from(repo: &Path, pass: &Path, snapshot: &str, expected: &[u8], target: &Path) {
    with_password(
        repo,
        pass,
        [OsStr::new("restore"), snapshot.as_ref(), target.as_os_str()],
    )
    .ok();
    assert_file_is(
        target,
        expected,
        &format!("{snapshot} from {}", repo.display()),
    );
    fs::remove_file(target).unwrap();
}

// Pins: a repository made with `init --copy-key-from` shares the key: copy moves blobs as they are (the same sealed bytes are in both) and repair --from works; a repository with another key gets chunks re-keyed (no sealed blob in common), a later copy moves only the changed chunks, and repair --from it is refused; a copy into a plain repository needs --decrypt; all restore byte for byte.
#[test]
fn copies_keep_or_change_keys() {
    let mut rng = Rng::new(65);
    let sandbox = Sandbox::encrypted();
    let mut image = Image::random(sandbox.path("disk.img"), 24 * CHUNK, &mut rng);
    let first = sandbox.snapshot_of(&image.path, &[]);
    let first_bytes = image.bytes.clone();

    let a_pass = sandbox.password.clone().unwrap();
    let a_pass_arg = a_pass.display().to_string();
    let same = init_other(
        &sandbox,
        "same-key",
        "another passphrase\n",
        &[
            "--copy-key-from",
            sandbox.repo.to_str().unwrap(),
            "--other-password-file",
            &a_pass_arg,
        ],
    );
    let other = init_other(&sandbox, "other-key", "a third passphrase\n", &[]);

    let report = copy(&sandbox, &same.0, &same.1);
    assert_eq!(report["rekeyed"], false, "{report}");
    let report = copy(&sandbox, &other.0, &other.1);
    assert_eq!(report["rekeyed"], true, "{report}");
    assert_eq!(report["chunks_copied"], 24, "{report}");

    let blob = fs::read(&sandbox.packs()[0]).unwrap()[16 + 100..16 + 164].to_vec();
    let holds = |repo: &Path| {
        files_under(&repo.join("data"))
            .iter()
            .any(|p| fs::read(p).unwrap().windows(64).any(|w| w == &blob[..]))
    };
    assert!(
        holds(&same.0),
        "a same-key copy did not move blobs as they are"
    );
    assert!(
        !holds(&other.0),
        "a copy to another key kept the sealed bytes"
    );

    image.write_random(&mut rng, 7 * CHUNK, 2 * CHUNK);
    let second = sandbox.snapshot_of(&image.path, &[]);
    let report = copy(&sandbox, &other.0, &other.1);
    assert_eq!(
        report["chunks_copied"], 2,
        "only the changed chunks move: {report}"
    );

    // Out of encryption only when asked.
    let plain = sandbox.path("plain-copy");
    run([
        OsStr::new("-r"),
        plain.as_os_str(),
        "init".as_ref(),
        "--plain".as_ref(),
        "--chunk-size".as_ref(),
        "64K".as_ref(),
    ])
    .ok();
    sandbox
        .run([OsStr::new("copy"), "--to".as_ref(), plain.as_os_str()])
        .refused(2, "in the clear");
    let report = sandbox
        .run([
            OsStr::new("--json"),
            "copy".as_ref(),
            "--to".as_ref(),
            plain.as_os_str(),
            "--decrypt".as_ref(),
        ])
        .ok()
        .json();
    assert_eq!(report["rekeyed"], true, "{report}");

    let target = sandbox.path("from-copy.img");
    restores_from(&other.0, &other.1, &first, &first_bytes, &target);
    restores_from(&other.0, &other.1, &second, &image.bytes, &target);
    restores_from(&same.0, &same.1, &first, &first_bytes, &target);

    sandbox
        .run([
            OsStr::new("repair"),
            "--from".as_ref(),
            other.0.as_os_str(),
            "--other-password-file".as_ref(),
            other.1.as_os_str(),
        ])
        .refused(7, "different keys");
    sandbox
        .run([
            OsStr::new("--json"),
            "repair".as_ref(),
            "--from".as_ref(),
            same.0.as_os_str(),
            "--other-password-file".as_ref(),
            same.1.as_os_str(),
        ])
        .ok();
}

// Pins: `init` encrypts by default; with no passphrase from anywhere (and no terminal) it is refused with exit 2 and creates nothing; `--plain` makes a repository that needs none.
#[test]
fn new_repositories_are_encrypted_unless_asked_not_to_be() {
    let sandbox = Sandbox::without_repo();
    sandbox.run(["init"]).refused(2, "passphrase");
    assert!(
        !sandbox.repo.exists(),
        "a refused init created the repository"
    );
    let pass = write_file(&sandbox, "pass", "p\n");
    let mut args = vec![
        OsStr::new("--json"),
        "--password-file".as_ref(),
        pass.as_os_str(),
        "init".as_ref(),
    ];
    args.extend(FAST_KDF.iter().map(OsStr::new));
    let made = sandbox.run(args).ok().json();
    assert_eq!(made["encryption"]["cipher"], "aes-256-gcm", "{made}");
    assert!(sandbox.repo.join("keys").read_dir().unwrap().count() == 1);

    let plain = Sandbox::without_repo();
    let made = plain.run(["--json", "init", "--plain"]).ok().json();
    assert_eq!(made["encryption"], Value::Null, "{made}");
    plain.run(["snapshots"]).ok();
}

/// `platter -r REPO --json verify --without-key`, with no passphrase.
fn verify_without_key(repo: &Path) -> Run {
    run([
        OsStr::new("-r"),
        repo.as_os_str(),
        "--json".as_ref(),
        "verify".as_ref(),
        "--without-key".as_ref(),
    ])
}

fn damaged_files(run: &Run) -> Vec<String> {
    run.json()["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["file"].as_str().unwrap(),
                d["what"].as_str().unwrap()
            )
        })
        .collect()
}

// Pins: `verify --without-key` needs no passphrase, reads every stored byte of an encrypted repository, and names a damaged blob (pack and offset), manifest, index file and map by their crc32s (exit 4); it also checks a plain repository.
#[test]
fn storage_damage_is_found_without_the_key() {
    let mut rng = Rng::new(66);
    let sandbox = Sandbox::encrypted();
    let image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let report = verify_without_key(&sandbox.repo).ok().json();
    assert_eq!(report["chunks"], 16, "{report}");
    assert_eq!(report["snapshots"], 1, "{report}");
    assert!(
        report["bytes_read"].as_u64().unwrap() >= 16 * CHUNK,
        "{report}"
    );

    let pack = sandbox.packs()[0].clone();
    let manifest = sandbox.manifest_file(&id);
    let map = sandbox.map_file(&id);
    let index = files_under(&sandbox.repo.join("index"))[0].clone();
    flip_byte(&pack, sealed_blob(7) + 9);
    flip_byte(&manifest, 30);
    flip_byte(&map, 90);
    flip_byte(&index, 20);
    let found = damaged_files(verify_without_key(&sandbox.repo).expect_code(4));
    assert_eq!(found.len(), 4, "{found:#?}");
    let blob = format!("offset {}", sealed_blob(7));
    for (file, says) in [
        (&pack, blob.as_str()),
        (&manifest, "crc32"),
        (&map, "checksum"),
        (&index, "crc32"),
    ] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            found.iter().any(|f| f.contains(name) && f.contains(says)),
            "{name} ({says}) not named: {found:#?}"
        );
    }

    let plain = Sandbox::new();
    plain.backup(&image.path);
    verify_without_key(&plain.repo).ok();

    // A plain pack among sealed ones, and no key file: both are damage.
    let planted = plain.packs()[0].clone();
    let name = planted.file_name().unwrap();
    let into = sandbox.repo.join("data").join(&name.to_str().unwrap()[..2]);
    fs::create_dir_all(&into).unwrap();
    fs::copy(&planted, into.join(name)).unwrap();
    fs::rename(sandbox.repo.join("keys"), sandbox.path("keys-aside")).unwrap();
    let found = damaged_files(verify_without_key(&sandbox.repo).expect_code(4));
    assert!(
        found.iter().any(|f| f.contains("not sealed")),
        "plain pack: {found:#?}"
    );
    assert!(
        found.iter().any(|f| f.contains("no readable key file")),
        "keys: {found:#?}"
    );

    flip_byte(&planted, 16 + 5);
    verify_without_key(&plain.repo).expect_code(4);
}

// Pins: the commands that rewrite a repository work on an encrypted one: forget --prune deletes a dead pack and repacks a half-dead one (moving its sealed blobs as they are), protect keeps a snapshot, rebuild-index reads the sealed pack tables, unlock reads the sealed locks; afterwards verify --read-data and --without-key are clean and every kept snapshot restores.
#[test]
fn every_command_works_on_an_encrypted_repository() {
    let mut rng = Rng::new(67);
    let sandbox = Sandbox::encrypted();
    let mut image = Image::random(sandbox.path("disk.img"), 20 * CHUNK, &mut rng);
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push((sandbox.snapshot_of(&image.path, &[]), image.bytes.clone()));
        image.write_random(&mut rng, 0, 10 * CHUNK);
    }
    taken.push((sandbox.snapshot_of(&image.path, &[]), image.bytes.clone()));
    sandbox.run(["protect", &taken[1].0[..8]]).ok();
    let pruned = sandbox
        .run([
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--repack-percent",
            "40",
        ])
        .ok()
        .json();
    let prune = &pruned["prune"];
    assert!(prune["packs_deleted"].as_u64().unwrap() >= 1, "{pruned:#}");
    assert!(prune["packs_repacked"].as_u64().unwrap() >= 1, "{pruned:#}");
    sandbox.run(["rebuild-index"]).ok();
    sandbox.run(["unlock"]).ok();
    verify_encrypted(&sandbox);
    verify_without_key(&sandbox.repo).ok();
    let ids = sandbox.snapshot_ids();
    assert_eq!(ids, vec![taken[1].0.clone(), taken[3].0.clone()]);
    sandbox.assert_restores(&taken[1].0, &taken[1].1);
    sandbox.assert_restores(&taken[3].0, &taken[3].1);
}

// Pins: on a terminal (a pty from `script`), `init` asks for the passphrase twice and echoes none of it; the repository then opens with it; two different answers are refused with nothing created.
#[test]
fn the_terminal_prompt_asks_twice_and_echoes_nothing() {
    if !have(
        "the_terminal_prompt_asks_twice_and_echoes_nothing",
        &["script"],
    ) {
        return;
    }
    let sandbox = Sandbox::without_repo();
    let typed = |answers: [&str; 2], repo: &Path| -> String {
        let command = format!(
            "{} -r {} init --kdf-memory 8M --kdf-iterations 1",
            env!("CARGO_BIN_EXE_platter"),
            repo.display()
        );
        on_a_terminal(
            &sandbox.path("pty"),
            &command,
            &[
                ("new passphrase", &format!("echo {} >&3", answers[0])),
                ("same passphrase", &format!("echo {} >&3", answers[1])),
            ],
        )
    };
    let out = typed(["horse-battery-7", "horse-battery-7"], &sandbox.repo);
    assert!(out.contains("new passphrase for repository"), "{out}");
    assert!(out.contains("the same passphrase again"), "{out}");
    assert!(
        !out.contains("horse-battery"),
        "the passphrase was echoed: {out}"
    );
    let opened = opens_with_env_password(&sandbox.repo, "horse-battery-7");
    assert!(opened.status.success(), "{opened:?}");

    let other = sandbox.path("other");
    let out = typed(["one-answer", "another-answer"], &other);
    assert!(out.contains("the two passphrases differ"), "{out}");
    assert!(!other.exists(), "a refused init created {other:?}");
}

// Pins: a name in keys/ that is not a key file's (an upper-case id, a README) is listed by verify as a leftover, as in every other folder, and is not read as a key.
#[test]
fn a_foreign_name_in_keys_is_a_leftover() {
    let sandbox = Sandbox::encrypted();
    let keys = sandbox.repo.join("keys");
    let key = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let upper = keys.join(key.file_name().unwrap().to_str().unwrap().to_uppercase());
    fs::copy(&key, &upper).unwrap();
    let report = sandbox.run(["--json", "verify"]).ok().json();
    assert!(
        report["leftovers"]
            .to_string()
            .contains(upper.file_name().unwrap().to_str().unwrap()),
        "{report:#}"
    );
}

// Pins: without --kdf-iterations, init times Argon2id here and picks the passes (1 to 10) for about 0.5 s at the memory given, which it never raises; --kdf-iterations is kept as given (issue 16: encryption without a fixed tax).
#[test]
fn kdf_passes_are_calibrated_unless_given() {
    let sandbox = Sandbox::without_repo();
    let password = sandbox.path("passphrase");
    std::fs::write(&password, "calibrate me\n").unwrap();
    let init = |repo: &str, extra: &[&str]| {
        let mut args = vec![
            "-r",
            repo,
            "--password-file",
            password.to_str().unwrap(),
            "--json",
            "init",
            "--kdf-memory",
            "8M",
        ];
        args.extend_from_slice(extra);
        run(&args).ok().json()
    };
    let a = sandbox.path("a");
    let calibrated = init(a.to_str().unwrap(), &[]);
    let passes = calibrated["kdf"]["iterations"].as_u64().unwrap_or(0);
    assert!((1..=10).contains(&passes), "{calibrated}");
    assert_eq!(calibrated["kdf"]["memory_kib"], 8 * 1024, "{calibrated}");
    let b = sandbox.path("b");
    let given = init(b.to_str().unwrap(), &["--kdf-iterations", "3"]);
    assert_eq!(given["kdf"]["iterations"], 3, "{given}");
}

/// Opens of files under `folder/` of `sandbox`'s repository by one
/// `platter snapshots`, counted with strace.
fn opens_under(sandbox: &Sandbox, folder: &str) -> usize {
    let log = sandbox.path("strace.log");
    let out = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=openat", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_platter"))
        .arg("-r")
        .arg(&sandbox.repo)
        .arg("snapshots")
        .env("PLATTER_CACHE_DIR", test_cache_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let needle = format!("{}/{folder}/", sandbox.repo.display());
    fs::read_to_string(&log).unwrap().matches(&needle).count()
}

// Pins: the check that a plain repository holds no sealed file (its config
// may have been replaced) reads each file's head once per host: a second
// open reads no map; without the host's list every map is read again; a
// sealed file under a name the list does not hold is still found.
#[test]
fn the_check_for_sealed_files_reads_each_file_once_per_host() {
    if !have(
        "the_check_for_sealed_files_reads_each_file_once_per_host",
        &["strace"],
    ) {
        return;
    }
    let plain = Sandbox::new();
    let mut rng = Rng::new(0x5ea1);
    let image = Image::random(plain.path("disk.img"), 2 * CHUNK, &mut rng);
    plain.backup(&image.path);
    plain.backup(&image.path);
    plain.run(["snapshots"]).ok();
    assert_eq!(opens_under(&plain, "maps"), 0, "maps read again");
    let lists: Vec<PathBuf> = files_under(&test_cache_dir())
        .into_iter()
        .filter(|p| p.ends_with("unsealed.list"))
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                // "LEN NS NAME"
                .any(|l| {
                    (l.splitn(3, ' ').nth(2)).is_some_and(|name| plain.repo.join(name).exists())
                })
        })
        .collect();
    assert_eq!(lists.len(), 1, "{lists:?}");
    fs::remove_file(&lists[0]).unwrap();
    assert_eq!(opens_under(&plain, "maps"), 2, "each map read once");
    // A sealed manifest of another repository, planted under its name.
    let sealed = Sandbox::encrypted();
    let id = sealed.snapshot_of(&image.path, &[]);
    let manifest = sealed.manifest_file(&id);
    let planted = plain
        .repo
        .join("snapshots")
        .join(manifest.file_name().unwrap());
    fs::copy(&manifest, &planted).unwrap();
    plain.run(["snapshots"]).refused(4, "sealed files");
    fs::remove_file(&planted).unwrap();
    // ... and one written over a file the list names (same name, same
    // inode): the list knows files by length and time too.
    plain.run(["snapshots"]).ok();
    let listed = files_under(&plain.repo.join("snapshots")).remove(0);
    fs::write(&listed, fs::read(&manifest).unwrap()).unwrap();
    plain.run(["snapshots"]).refused(4, "sealed files");
}

// Pins: a config swapped to plain over an encrypted repository whose only
// sealed files left are its index files (sorted, sealed a block at a
// time) is refused before anything is written.
#[test]
fn sealed_sorted_index_files_tell_a_swapped_config() {
    let sealed = Sandbox::encrypted();
    let mut rng = Rng::new(0x5ea2);
    let image = Image::random(sealed.path("disk.img"), 2 * CHUNK, &mut rng);
    sealed.backup(&image.path);
    let plain = Sandbox::new();
    for folder in ["keys", "snapshots", "maps"] {
        fs::remove_dir_all(sealed.repo.join(folder)).unwrap();
        fs::create_dir(sealed.repo.join(folder)).unwrap();
    }
    let mut config: Value =
        serde_json::from_slice(&fs::read(plain.repo.join("config")).unwrap()).unwrap();
    let theirs: Value =
        serde_json::from_slice(&fs::read(sealed.repo.join("config")).unwrap()).unwrap();
    config["body"]["repo_id"] = theirs["body"]["repo_id"].clone();
    let body = serde_json::to_string(&config["body"]).unwrap();
    let version = config["version"].as_u64().unwrap();
    let text = format!(
        "{{\"platter\":\"config\",\"version\":{version},\"crc32\":\"{:08x}\",\"body\":{body}}}\n",
        crc32fast::hash(body.as_bytes())
    );
    fs::write(sealed.repo.join("config"), text).unwrap();
    let before = sealed.repo_tree();
    run([
        OsStr::new("-r"),
        sealed.repo.as_os_str(),
        "backup".as_ref(),
        image.path.as_os_str(),
    ])
    .refused(4, "sealed files");
    assert_eq!(sealed.repo_tree(), before, "a refused backup wrote");
}
