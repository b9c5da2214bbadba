//! Repositories on S3 object storage, against a real 3-node Garage cluster
//! on 127.0.0.1 (replication 3) that `tests/garage/cluster.sh` starts once
//! per test run. Every test works under its own prefix of one bucket; the
//! test that stops nodes has a cluster of its own.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use super::common::*;

/// A running cluster: its folder and the environment its clients need.
struct Cluster {
    dir: PathBuf,
    port_base: u32,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn start(name: &str, port_offset: u32) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("platter-garage-{}-{name}", std::process::id()));
        // Ports from the pid; another cluster (another test run, a bench)
        // may hold them: then the next candidates.
        let mut started = None;
        for attempt in 0..8u32 {
            // Below 32768, where Linux picks the local ports of outgoing
            // connections: a node restarted on a port that some client
            // connection had taken meanwhile could not listen there (the
            // stopped-node test timed out so, about 1 run in 10).
            let slot = (std::process::id() + attempt * 211) % 200;
            let cluster = Cluster {
                dir: dir.clone(),
                port_base: 20000 + slot * 60 + port_offset,
                env: Vec::new(),
            };
            match cluster.try_script(&["start"]) {
                Ok(()) => {
                    started = Some(cluster);
                    break;
                }
                Err(why) if why.contains("already in use") => continue,
                Err(why) => panic!("the Garage cluster did not start: {why}"),
            }
        }
        let cluster = started.expect("no free ports for a Garage cluster after 8 tries");
        let (dir, base) = (cluster.dir, cluster.port_base);
        let text = std::fs::read_to_string(dir.join("env")).expect("cluster.sh wrote no env");
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .flat_map(|l| l.split(' '))
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cluster {
            dir,
            port_base: base,
            env,
        }
    }

    /// `cluster.sh VERB DIR ARGS...`, which must succeed.
    fn script(&self, args: &[&str]) {
        if let Err(why) = self.try_script(args) {
            panic!("cluster.sh {args:?}: {why}");
        }
    }

    /// `cluster.sh VERB DIR ARGS...`; its stderr if it fails.
    fn try_script(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(garage_script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .env("GARAGE_PORT_BASE", self.port_base.to_string())
            .env("GARAGE_WATCH_PID", std::process::id().to_string())
            .env("GARAGE_WATCH_REMOVE", "1")
            .output()
            .expect("cannot run cluster.sh");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("cluster env lacks {name}"))
    }

    /// `s3:` URL of `prefix` in the test bucket.
    fn url(&self, prefix: &str) -> String {
        format!(
            "s3:{}/{}/{prefix}",
            self.var("PLATTER_S3_ENDPOINT"),
            self.var("PLATTER_S3_BUCKET")
        )
    }

    /// `platter ARGS...` with this cluster's credentials.
    fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with(args, &[])
    }

    /// Like `run`, with some variables changed (`""` removes one).
    fn run_with<I, S>(&self, args: I, changed: &[(&str, &str)]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = platter();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in changed {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let command = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        Run::from_output(command, cmd.args(&args).output().expect("run platter"))
    }

    /// A second key (`cluster.sh key`): its id and secret.
    fn key(&self, name: &str, extra: &[&str]) -> (String, String) {
        let out = Command::new("bash")
            .arg(garage_script())
            .args(["key".as_ref(), self.dir.as_os_str(), name.as_ref()])
            .args(extra)
            .env("GARAGE_PORT_BASE", self.port_base.to_string())
            .output()
            .expect("cannot run cluster.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("cluster.sh key printed no {k}: {text}"))
                .to_string()
        };
        (value("AWS_ACCESS_KEY_ID="), value("AWS_SECRET_ACCESS_KEY="))
    }

    fn node(&self, verb: &str, n: u32) {
        self.script(&[verb, &n.to_string()]);
    }

    fn stop(&self) {
        self.script(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn garage_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/garage/cluster.sh")
}

/// Whether the garage binary is here (on PATH or in ~/.cargo/bin, where
/// `.ci/run` installs it); fails under CI, skips otherwise.
fn have_garage(test: &str) -> bool {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    if home.join(".cargo/bin/garage").is_file() {
        return true;
    }
    have(test, &["garage"])
}

/// The cluster the tests share (started on first use; its watcher stops
/// it when the test process ends).
fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start("shared", 0))
}

/// A new prefix for one test.
fn prefix(test: &str) -> String {
    format!("{test}-{}", random_name())
}

/// Restores `id` from `repo` into `scratch` and checks the bytes.
fn restores(cluster: &Cluster, repo: &str, id: &str, bytes: &[u8], scratch: &Path) {
    let target = scratch.join(format!("restored-{}", random_name()));
    cluster
        .run([
            "-r",
            repo,
            "restore",
            id,
            target.to_str().unwrap(),
            "--verify",
        ])
        .ok();
    assert_file_is(&target, bytes, &format!("snapshot {id} from {repo}"));
    std::fs::remove_file(&target).unwrap();
}

// Pins: every command works on an S3 repository on a real Garage cluster: init, backup (full and incremental), snapshots, show, restore (byte for byte, read back), verify --read-data, verify --without-key, copy S3 -> local and local -> S3, forget, protect, prune, repair --from, rebuild-index, key add/list/passwd/remove, unlock.
#[test]
fn every_command_works_on_s3() {
    if !have_garage("every_command_works_on_s3") {
        return;
    }
    let cluster = shared();
    let sandbox = Sandbox::without_repo();
    let repo = cluster.url(&prefix("every"));
    let pass = sandbox.path("pass");
    std::fs::write(&pass, "s3 passphrase\n").unwrap();
    let p = pass.to_str().unwrap();
    let mut init = vec![
        "-r",
        &repo,
        "--password-file",
        p,
        "init",
        "--chunk-size",
        "64K",
    ];
    init.extend(FAST_KDF);
    cluster.run(&init).ok();
    let on = |args: &[&str]| {
        let mut all = vec!["-r", repo.as_str(), "--password-file", p];
        all.extend_from_slice(args);
        cluster.run(all)
    };
    let mut rng = Rng::new(0x53_0001);
    let mut image = Image::random(sandbox.path("disk.img"), 24 * CHUNK + 99, &mut rng);
    image.write_zeros(2 * CHUNK, 3 * CHUNK);
    let img = image.path.to_str().unwrap().to_string();
    let first = on(&["--json", "backup", &img]).ok().json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let first_bytes = image.bytes.clone();
    image.write_random(&mut rng, 10 * CHUNK, 2 * CHUNK);
    let second = on(&["--json", "backup", &img, "--tag", "two"]).ok().json();
    assert_eq!(second["parent"], first.as_str(), "{second}");
    assert!(
        second["chunks_unchanged"].as_u64().unwrap() > 10,
        "{second}"
    );
    let second = second["snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        listed_ids(on(&["--json", "snapshots"]).ok()),
        [first.as_str(), second.as_str()]
    );
    on(&["show", &second]).ok();
    let scratch = sandbox.path("");
    // The restore reads with the passphrase file too.
    for (id, bytes) in [(&first, &first_bytes), (&second, &image.bytes)] {
        let target = scratch.join(format!("r-{id}"));
        on(&["restore", id, target.to_str().unwrap(), "--verify"]).ok();
        assert_file_is(&target, bytes, id);
    }
    on(&["verify", "--read-data"]).ok();
    on(&["verify", "--without-key"]).ok();
    // Copies both ways, sharing the key.
    let local = sandbox.path("local");
    let mut init_local = vec!["-r", local.to_str().unwrap(), "--password-file", p, "init"];
    init_local.extend(["--chunk-size", "64K", "--copy-key-from", &repo]);
    init_local.extend(FAST_KDF);
    cluster.run(&init_local).ok();
    on(&["copy", "--to", local.to_str().unwrap()]).ok();
    let back = cluster.url(&prefix("back"));
    let mut init_back = vec!["-r", back.as_str(), "--password-file", p, "init"];
    init_back.extend([
        "--chunk-size",
        "64K",
        "--copy-key-from",
        local.to_str().unwrap(),
    ]);
    init_back.extend(FAST_KDF);
    cluster.run(&init_back).ok();
    let local_s = local.to_str().unwrap();
    cluster
        .run(["-r", local_s, "--password-file", p, "copy", "--to", &back])
        .ok();
    let listed = cluster.run(["-r", &back, "--password-file", p, "--json", "snapshots"]);
    assert_eq!(listed_ids(listed.ok()), [first.as_str(), second.as_str()]);
    // Keys.
    let pass2 = sandbox.path("pass2");
    std::fs::write(&pass2, "second passphrase\n").unwrap();
    let p2 = pass2.to_str().unwrap();
    let mut add = vec!["key", "add", "--new-password-file", p2];
    add.extend(FAST_KDF);
    on(&add).ok();
    let keys = on(&["--json", "key", "list"]).ok().json();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
    let mut passwd = vec!["key", "passwd", "--new-password-file", p];
    passwd.extend(FAST_KDF);
    cluster
        .run([&["-r", repo.as_str(), "--password-file", p2][..], &passwd].concat())
        .ok();
    // Damage one chunk here: repair brings it back from the local copy.
    protect_forget_prune_repair(cluster, &repo, p, &local, (&first, &second));
    restores_with(cluster, &repo, p, &second, &image.bytes, &scratch);
    on(&["unlock"]).ok();
}

/// protect, forget, prune, rebuild-index and repair on an S3 repository.
fn protect_forget_prune_repair(
    cluster: &Cluster,
    repo: &str,
    p: &str,
    local: &Path,
    (first, second): (&str, &str),
) {
    let on = |args: &[&str]| {
        let mut all = vec!["-r", repo, "--password-file", p];
        all.extend_from_slice(args);
        cluster.run(all)
    };
    on(&["protect", second]).ok();
    on(&["forget", second]).refused(2, "protected");
    on(&["protect", "--remove", second]).ok();
    let forgot = on(&["--json", "forget", "--keep-last", "1", "--prune"])
        .ok()
        .json();
    assert_eq!(forgot["removed"], serde_json::json!([first]), "{forgot}");
    on(&["rebuild-index"]).ok();
    on(&["verify", "--read-data"]).ok();
    let repaired = on(&["--json", "repair", "--from", local.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(
        repaired["chunks_unrepairable"],
        Value::Array(vec![]),
        "{repaired}"
    );
}

fn restores_with(cluster: &Cluster, repo: &str, p: &str, id: &str, bytes: &[u8], scratch: &Path) {
    let target = scratch.join(format!("restored-{}", random_name()));
    cluster
        .run([
            "-r",
            repo,
            "--password-file",
            p,
            "restore",
            id,
            target.to_str().unwrap(),
        ])
        .ok();
    assert_file_is(&target, bytes, id);
}

// Pins: the offsite copy: copy a local repository to S3, delete the local one, and every snapshot restores byte for byte from S3 alone; verify --read-data there is clean.
#[test]
fn a_copy_on_s3_restores_everything_after_the_local_repository_is_gone() {
    if !have_garage("a_copy_on_s3_restores_everything_after_the_local_repository_is_gone") {
        return;
    }
    let cluster = shared();
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x53_0002);
    let mut image = Image::random(sandbox.path("disk.img"), 16 * CHUNK, &mut rng);
    let mut taken = Vec::new();
    for round in 0..3 {
        if round > 0 {
            image.write_random(&mut rng, (round * 4) * CHUNK, 3 * CHUNK);
        }
        taken.push((sandbox.snapshot_of(&image.path, &[]), image.bytes.clone()));
    }
    let offsite = cluster.url(&prefix("offsite"));
    cluster
        .run(["-r", &offsite, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let local = sandbox.repo.to_str().unwrap();
    cluster.run(["-r", local, "copy", "--to", &offsite]).ok();
    std::fs::remove_dir_all(&sandbox.repo).unwrap();
    cluster.run(["-r", &offsite, "verify", "--read-data"]).ok();
    for (id, bytes) in &taken {
        restores(cluster, &offsite, id, bytes, &sandbox.path(""));
    }
}

// Pins: wrong credentials, a wrong region, a missing bucket and missing credentials are clear errors naming what to check (bad input 2 or not found 3), and nothing is written; a prefix is a folder: a repository at PREFIX never sees one at PREFIX-longer, and one inside another's prefix is refused.
#[test]
fn bad_credentials_regions_and_buckets_are_named() {
    if !have_garage("bad_credentials_regions_and_buckets_are_named") {
        return;
    }
    let cluster = shared();
    let repo = cluster.url(&prefix("creds"));
    cluster
        .run_with(
            ["-r", &repo, "init", "--plain"],
            &[("AWS_SECRET_ACCESS_KEY", "0000")],
        )
        .refused(2, "refused the credentials");
    cluster
        .run_with(
            ["-r", &repo, "init", "--plain"],
            &[("AWS_REGION", "us-east-1")],
        )
        .refused(2, "expects the region garage");
    cluster
        .run_with(
            ["-r", &repo, "init", "--plain"],
            &[("AWS_ACCESS_KEY_ID", "")],
        )
        .refused(2, "AWS_ACCESS_KEY_ID");
    let missing = format!("s3:{}/no-such-bucket/x", cluster.var("PLATTER_S3_ENDPOINT"));
    cluster
        .run(["-r", &missing, "init", "--plain"])
        .refused(3, "no-such-bucket does not exist");
    cluster
        .run(["-r", &repo, "snapshots"])
        .refused(3, "not a platter repository");
    // Nothing was written by the refusals: init works now.
    cluster
        .run(["-r", &repo, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let longer = format!("{repo}-longer");
    cluster
        .run(["-r", &longer, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let report = cluster.run(["-r", &repo, "--json", "verify"]).ok().json();
    assert_eq!(report["leftovers"], Value::Array(vec![]), "{report:#}");
    cluster
        .run(["-r", &format!("{repo}/inner/x"), "init", "--plain"])
        .refused(2, "lies inside the platter repository");
    cluster
        .run(["-r", "s3:ftp://host/bucket", "snapshots"])
        .refused(2, "http:// or https://");
    cluster
        .run(["-r", "s3:http://127.0.0.1:99999/bucket", "snapshots"])
        .refused(2, "port");
    cluster
        .run(["-r", &missing, "snapshots"])
        .refused(3, "no-such-bucket does not exist");
}

/// A new plain S3 repository under a prefix named for `test`, holding one
/// snapshot of a random image of `chunks` chunks: the sandbox (which holds
/// the image), the repository, the image and the snapshot's id.
fn one_snapshot(
    cluster: &Cluster,
    test: &str,
    seed: u64,
    chunks: u64,
) -> (Sandbox, String, Image, String) {
    let sandbox = Sandbox::without_repo();
    let repo = cluster.url(&prefix(test));
    cluster
        .run(["-r", &repo, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let mut rng = Rng::new(seed);
    let image = Image::random(sandbox.path("disk.img"), chunks * CHUNK, &mut rng);
    let id = snapshot_id(cluster.run([
        "-r",
        &repo,
        "--json",
        "backup",
        image.path.to_str().unwrap(),
    ]));
    (sandbox, repo, image, id)
}

/// The id of the snapshot a successful `backup --json` made.
fn snapshot_id(backup: Run) -> String {
    let out = backup.ok().json();
    match out["snapshot"].as_str() {
        Some(id) => id.to_string(),
        None => panic!("backup --json named no snapshot: {out}"),
    }
}

/// Serialises the tests that stop nodes of their own cluster.
static NODES: Mutex<()> = Mutex::new(());

// Pins: with one Garage node stopped during a backup, the backup succeeds and restores; with every node stopped, a backup fails with an I/O error (exit 6) naming the store, commits nothing, and once the nodes are back the next backup completes and verify is clean.
#[test]
fn a_stopped_node_is_survived_and_a_stopped_cluster_is_named() {
    if !have_garage("a_stopped_node_is_survived_and_a_stopped_cluster_is_named") {
        return;
    }
    let _one_at_a_time = NODES.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("nodes", 30);
    let sandbox = Sandbox::without_repo();
    let repo = cluster.url("nodes");
    cluster
        .run(["-r", &repo, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let mut rng = Rng::new(0x53_0003);
    let mut image = Image::random(sandbox.path("disk.img"), 32 * CHUNK, &mut rng);
    let img = image.path.to_str().unwrap().to_string();
    cluster.node("stop-node", 3);
    let one_down = cluster
        .run(["-r", &repo, "--json", "backup", &img])
        .ok()
        .json();
    cluster.node("start-node", 3);
    let id = one_down["snapshot"].as_str().unwrap().to_string();
    restores(&cluster, &repo, &id, &image.bytes, &sandbox.path(""));
    let before = listed_ids(cluster.run(["-r", &repo, "--json", "snapshots"]).ok());
    image.write_random(&mut rng, 0, 4 * CHUNK);
    for n in [3, 2, 1] {
        cluster.node("stop-node", n);
    }
    let failed = cluster.run(["-r", &repo, "backup", &img]);
    failed.refused(6, "127.0.0.1");
    // Every node back (start on the cluster's folder keeps its data).
    cluster.script(&["start"]);
    assert_eq!(
        listed_ids(cluster.run(["-r", &repo, "--json", "snapshots"]).ok()),
        before
    );
    cluster.run(["-r", &repo, "backup", &img]).ok();
    cluster.run(["-r", &repo, "verify", "--read-data"]).ok();
    cluster.stop();
}

// Pins: with read-only credentials (the offsite copy read back), snapshots, verify and restore work without a lock and say so, and a backup is refused naming the refused credentials (exit 2), leaving nothing.
#[test]
fn read_only_credentials_read_but_do_not_write() {
    if !have_garage("read_only_credentials_read_but_do_not_write") {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, image, id) = one_snapshot(cluster, "readonly", 0x53_0004, 8);
    let img = image.path.to_str().unwrap().to_string();
    let (key, secret) = cluster.key("reader", &["--read-only"]);
    let ro = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let target = sandbox.path("restored.img");
    let restored = cluster.run_with(["-r", &repo, "restore", &id, target.to_str().unwrap()], &ro);
    assert!(
        restored.ok().stderr.contains("without a lock"),
        "{}",
        restored.describe()
    );
    assert_file_is(
        &target,
        &image.bytes,
        "a restore with read-only credentials",
    );
    cluster
        .run_with(["-r", &repo, "verify", "--read-data"], &ro)
        .ok();
    let before = listed_ids(cluster.run(["-r", &repo, "--json", "snapshots"]).ok());
    cluster
        .run_with(["-r", &repo, "backup", &img], &ro)
        .refused(2, "refused the credentials");
    assert_eq!(
        listed_ids(cluster.run(["-r", &repo, "--json", "snapshots"]).ok()),
        before
    );
    cluster.run(["-r", &repo, "verify"]).ok();
}

// Pins: a backup to S3 killed with SIGKILL mid-upload leaves a repository whose verify --read-data finds no damage, whose earlier snapshot restores byte for byte, and where the rerun completes (the kill -9 test beside the fault-injection ones of faults.rs).
#[test]
fn a_backup_killed_mid_upload_harms_nothing() {
    if !have_garage("a_backup_killed_mid_upload_harms_nothing") {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, mut image, first) = one_snapshot(cluster, "killed", 0x53_0005, 16);
    let img = image.path.to_str().unwrap().to_string();
    let mut rng = Rng::new(0x53_0006);
    let first_bytes = image.bytes.clone();
    let big = Image::random(sandbox.path("big.img"), 1200 * CHUNK, &mut rng);
    let mut cmd = platter();
    for (k, v) in &cluster.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["-r", &repo, "backup", big.path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn a backup");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("kill -9");
    let _ = child.wait();
    // Its lock is stale (its pid is gone); the next command removes it.
    let report = cluster
        .run(["-r", &repo, "--json", "verify", "--read-data"])
        .ok()
        .json();
    assert_eq!(report["damage"], Value::Array(vec![]), "{report:#}");
    restores(cluster, &repo, &first, &first_bytes, &sandbox.path(""));
    image.write_random(&mut rng, 0, 2 * CHUNK);
    cluster
        .run(["-r", &repo, "backup", big.path.to_str().unwrap()])
        .ok();
    cluster.run(["-r", &repo, "backup", &img]).ok();
    cluster.run(["-r", &repo, "verify", "--read-data"]).ok();
}

// Pins: copy --to an S3 repository whose store wants other credentials than the environment's takes them from --other-credentials FILE (mode 600): a read-only key there is refused naming the credentials, a writing key copies; a file others may read is refused.
#[test]
fn the_other_repository_takes_its_own_credentials() {
    if !have_garage("the_other_repository_takes_its_own_credentials") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let cluster = shared();
    let sandbox = Sandbox::new();
    let mut rng = Rng::new(0x53_0006);
    let image = Image::random(sandbox.path("disk.img"), 6 * CHUNK, &mut rng);
    let id = sandbox.snapshot_of(&image.path, &[]);
    let offsite = cluster.url(&prefix("othercreds"));
    cluster
        .run(["-r", &offsite, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let file = |name: &str, key: (String, String), mode: u32| {
        let path = sandbox.path(name);
        let text = format!(
            "# {name}\nexport AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_REGION=garage\n",
            key.0, key.1
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let reader = file("reader.env", cluster.key("reader", &["--read-only"]), 0o600);
    let writer = file("writer.env", cluster.key("writer", &[]), 0o600);
    let open = file("open.env", cluster.key("writer", &[]), 0o644);
    let local = sandbox.repo.to_str().unwrap();
    // No AWS_* in the environment: only the file can open the other one.
    let none = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
    let copy = |creds: &Path| {
        let args = [
            "-r",
            local,
            "copy",
            "--to",
            &offsite,
            "--other-credentials",
            creds.to_str().unwrap(),
        ];
        cluster.run_with(args, &none)
    };
    copy(&reader).refused(2, "refused the credentials");
    copy(&open).refused(2, "chmod 600");
    let fifo = sandbox.path("fifo.env");
    sh(&format!("mkfifo -m 600 {}", fifo.display()));
    copy(&fifo).refused(2, "not a regular file");
    copy(&writer).ok();
    restores(cluster, &offsite, &id, &image.bytes, &sandbox.path(""));
}

// Pins: Ctrl-C during a backup to S3 removes the run's lock object before the process exits (a lock left in a shared bucket would hold other hosts' prune off for 30 minutes), and says so.
#[test]
fn an_interrupted_backup_removes_its_lock_from_the_store() {
    if !have_garage("an_interrupted_backup_removes_its_lock_from_the_store") {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, _, _) = one_snapshot(cluster, "interrupted", 0x53_0007, 4);
    let mut rng = Rng::new(0x53_0008);
    let big = Image::random(sandbox.path("big.img"), 3000 * CHUNK, &mut rng);
    let mut cmd = platter();
    for (k, v) in &cluster.env {
        cmd.env(k, v);
    }
    let child = cmd
        .args(["-r", &repo, "backup", big.path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a backup");
    // Well inside the backup: its lock is taken after about 0.2 s.
    std::thread::sleep(std::time::Duration::from_millis(800));
    // SAFETY: kill has no memory effects; the pid is our own child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("removed 1"), "{stderr}");
    let left = cluster
        .run(["-r", &repo, "--json", "unlock", "--all"])
        .ok()
        .json();
    assert_eq!(left["removed"], Value::Array(vec![]), "{left}");
}

// Pins: init creates a missing bucket when the credentials may and says so ("created bucket X", and created_bucket in --json), and a backup there works; every other command names the missing bucket (exit 3) and creates nothing; an init in a bucket that exists creates none.
#[test]
fn init_creates_a_missing_bucket_when_the_credentials_may() {
    if !have_garage("init_creates_a_missing_bucket_when_the_credentials_may") {
        return;
    }
    let cluster = shared();
    let (key, secret) = cluster.key("maker-a", &["--create-bucket"]);
    let creds = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let sandbox = Sandbox::without_repo();
    let mut rng = Rng::new(0x53_0009);
    let image = Image::random(sandbox.path("disk.img"), 4 * CHUNK, &mut rng);
    let img = image.path.to_str().unwrap();
    let bucket = format!("made-{}", random_name());
    let endpoint = cluster.var("PLATTER_S3_ENDPOINT");
    let repo = format!("s3:{endpoint}/{bucket}/laptop");
    let missing = format!("{bucket} does not exist");
    cluster
        .run_with(["-r", &repo, "snapshots"], &creds)
        .refused(3, &missing);
    cluster
        .run_with(["-r", &repo, "backup", img], &creds)
        .refused(3, &missing);
    let made = cluster.run_with(
        ["-r", &repo, "init", "--plain", "--chunk-size", "64K"],
        &creds,
    );
    assert!(
        made.ok()
            .stdout
            .contains(&format!("created bucket {bucket}\n")),
        "{}",
        made.describe()
    );
    let id = snapshot_id(cluster.run_with(["-r", &repo, "--json", "backup", img], &creds));
    let target = sandbox.path("restored.img");
    cluster
        .run_with(
            ["-r", &repo, "restore", &id, target.to_str().unwrap()],
            &creds,
        )
        .ok();
    assert_file_is(&target, &image.bytes, "a restore from the new bucket");
    let second = format!("s3:{endpoint}/{bucket}/desktop");
    let again = cluster
        .run_with(["-r", &second, "--json", "init", "--plain"], &creds)
        .ok()
        .json();
    assert_eq!(again["created_bucket"], Value::Null, "{again}");
}

// Pins: init in a missing bucket with credentials that may not create one fails naming the bucket and what to do (create it, or use credentials that may), exit 3, and writes nothing: the bucket is still missing afterwards.
#[test]
fn init_names_a_missing_bucket_it_may_not_create() {
    if !have_garage("init_names_a_missing_bucket_it_may_not_create") {
        return;
    }
    let cluster = shared();
    let bucket = format!("denied-{}", random_name());
    let endpoint = cluster.var("PLATTER_S3_ENDPOINT");
    let repo = format!("s3:{endpoint}/{bucket}/laptop");
    // The shared cluster's main key may not create buckets.
    let refused = cluster.run(["-r", &repo, "init", "--plain"]);
    refused.refused(3, &format!("the bucket {bucket} does not exist"));
    for what in [
        "may not create it",
        &format!("create the bucket {bucket}"),
        "credentials that may create buckets",
    ] {
        assert!(refused.stderr.contains(what), "{}", refused.describe());
    }
    assert!(
        !refused.stderr.contains(cluster.var("AWS_ACCESS_KEY_ID")),
        "{}",
        refused.describe()
    );
    // Still missing: a key that may create buckets creates it now.
    let (key, secret) = cluster.key("maker-b", &["--create-bucket"]);
    let creds = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let made = cluster.run_with(["-r", &repo, "init", "--plain"], &creds);
    assert!(
        made.ok()
            .stdout
            .contains(&format!("created bucket {bucket}")),
        "{}",
        made.describe()
    );
}

// Pins: an https:// URL for a store that serves plain http fails at once (not retried for 15 s as if the store were unreachable) with a bad-input error (exit 2) that names TLS and the s3:http:// URL to use instead.
#[test]
fn https_to_a_plain_http_store_is_named_as_tls_at_once() {
    if !have_garage("https_to_a_plain_http_store_is_named_as_tls_at_once") {
        return;
    }
    let cluster = shared();
    let plain = cluster.url(&prefix("tls"));
    let https = plain.replacen("s3:http://", "s3:https://", 1);
    for command in [&["init", "--plain"][..], &["snapshots"]] {
        let started = std::time::Instant::now();
        let failed = cluster.run([&["-r", https.as_str()][..], command].concat());
        failed
            .refused(2, "TLS")
            .refused(2, &format!("name the repository {plain}"));
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(5),
            "{command:?} took {took:?}: {}",
            failed.describe()
        );
    }
}

// Pins: a prefix that would make platter's longest object key pass 479 bytes (Garage's limit with LMDB, where longer keys fail with a 503 after 15 s of retries; S3's own is 1024) is refused at once (exit 2) naming the longest prefix allowed, and nothing is written; a prefix at the limit works for init, backup and restore.
#[test]
fn a_prefix_too_long_for_object_keys_is_refused_at_once() {
    if !have_garage("a_prefix_too_long_for_object_keys_is_refused_at_once") {
        return;
    }
    let cluster = shared();
    let sandbox = Sandbox::without_repo();
    let base = prefix("long");
    // "snapshots/" and a 64-digit id is the longest name under the prefix.
    let allowed = 479 - 1 - "snapshots/".len() - 64;
    let at_limit = format!("{base}/{}", "p".repeat(allowed - base.len() - 1));
    assert_eq!(at_limit.len(), allowed);
    for too_long in [
        format!("{at_limit}q"),
        format!("{base}/{}", "q".repeat(1000)),
    ] {
        cluster
            .run(["-r", &cluster.url(&too_long), "init", "--plain"])
            .refused(2, &format!("at most {allowed} bytes"));
    }
    // Nothing was written under the base: a repository can be made there.
    let mut rng = Rng::new(0x53_000a);
    let image = Image::random(sandbox.path("disk.img"), 3 * CHUNK, &mut rng);
    let repo = cluster.url(&at_limit);
    cluster
        .run(["-r", &repo, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    let id = snapshot_id(cluster.run([
        "-r",
        &repo,
        "--json",
        "backup",
        image.path.to_str().unwrap(),
    ]));
    restores(cluster, &repo, &id, &image.bytes, &sandbox.path(""));
    cluster.run(["-r", &repo, "verify", "--read-data"]).ok();
}

// Pins: ? and # (a query or fragment), %-escapes, empty segments (//), . and .. segments, control characters and backslashes in an S3 URL's path are refused at once with the reason (exit 2) instead of being taken into every object's name, and nothing is written; one slash at the end is fine.
#[test]
fn urls_whose_path_would_misname_objects_are_refused() {
    if !have_garage("urls_whose_path_would_misname_objects_are_refused") {
        return;
    }
    let cluster = shared();
    let base = prefix("misnamed");
    for (path, why) in [
        ("a?b", "'?'"),
        ("a#b", "'#'"),
        ("a?", "'?'"),
        ("a%20b", "'%'"),
        ("a//b", "empty segment"),
        ("a/b//", "empty segment"),
        ("a/./b", ". or .."),
        ("a/../b", ". or .."),
        ("a\\b", "backslashes"),
        ("a\tb", "control characters"),
    ] {
        cluster
            .run([
                "-r",
                &cluster.url(&format!("{base}/{path}")),
                "init",
                "--plain",
            ])
            .refused(2, why);
    }
    let endpoint = cluster.var("PLATTER_S3_ENDPOINT");
    cluster
        .run(["-r", &format!("s3:{endpoint}//platter-test/{base}"), "init"])
        .refused(2, "names no bucket");
    // Nothing was written under the base, and a slash at the end names it.
    let made = cluster.run(["-r", &format!("{}/", cluster.url(&base)), "init", "--plain"]);
    assert!(
        made.ok()
            .stdout
            .contains(&format!("{}/{base} ", cluster.var("PLATTER_S3_BUCKET"))),
        "{}",
        made.describe()
    );
}

// Pins: a snapshot in an S3 repository mounts (issue 14: "and for S3 ones"): its disk.img reads back byte for byte through FUSE, and SIGTERM ends the mount and leaves no lock on the store.
#[test]
fn a_snapshot_on_s3_mounts_and_reads_back() {
    let test = "a_snapshot_on_s3_mounts_and_reads_back";
    if !have_garage(test) || !have(test, &["root", "fusermount3"]) {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, image, _id) = one_snapshot(cluster, test, 0x5301, 24);
    let point = sandbox.path("mnt");
    std::fs::create_dir_all(&point).expect("mount point");
    let mut cmd = platter();
    for (k, v) in &cluster.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["-r", &repo, "mount"])
        .arg(&point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start platter mount");
    let mut said = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    while !said.lines().any(|l| l.starts_with("mounted ")) {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read stdout");
        assert!(n > 0, "platter mount ended before mounting: {said}");
        said.push_str(&line);
    }
    let read = std::fs::read(point.join("latest").join("disk.img"));
    // SAFETY: kill has no memory effects; the pid is our child's, not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for platter mount");
    assert!(
        read.as_ref().is_ok_and(|bytes| *bytes == image.bytes),
        "disk.img through the mount differs from the image ({:?})",
        read.map(|b| b.len())
    );
    assert_eq!(status.code(), Some(143), "SIGTERM ends the mount");
    let left = cluster
        .run(["-r", &repo, "--json", "unlock", "--all"])
        .ok()
        .json();
    assert_eq!(left["removed"], Value::Array(vec![]), "{left}");
}

/// A name server on 127.0.0.2:53 that answers every A question with
/// 127.0.0.1 (and every other question with no answer), and remembers the
/// names it was asked. Ends with the test process.
fn tiny_dns() -> std::sync::Arc<Mutex<Vec<String>>> {
    let socket = std::net::UdpSocket::bind("127.0.0.2:53").expect("bind 127.0.0.2:53");
    let asked = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            // The question: labels from byte 12 to a zero, then type and class.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < n && query[at] != 0 {
                let len = usize::from(query[at]);
                labels.push(
                    String::from_utf8_lossy(&query[at + 1..(at + 1 + len).min(n)]).into_owned(),
                );
                at += 1 + len;
            }
            let end = at + 5;
            if end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
            seen.lock().unwrap().push(labels.join("."));
            let mut reply = query[..2].to_vec();
            reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(qtype == 1), 0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..end]);
            if qtype == 1 {
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    asked
}

// Pins: the static binary (the one the rescue medium carries, glibc linked in) reaches an S3 endpoint by a name only a DNS server knows: it reads resolv.conf and asks (issue 15: "test an endpoint by name, not only by IP").
#[test]
fn the_static_binary_reaches_s3_by_a_name_from_dns() {
    let test = "the_static_binary_reaches_s3_by_a_name_from_dns";
    if !have_garage(test) || !have(test, &["root", "unshare"]) {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, _image, id) = one_snapshot(cluster, test, 0x5302, 4);
    let name = "garage-by-dns.platter.test";
    let by_name = repo.replacen("127.0.0.1", name, 1);
    assert_ne!(by_name, repo, "the endpoint is not 127.0.0.1: {repo}");
    let asked = tiny_dns();
    let resolv = sandbox.path("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.2\noptions timeout:2 attempts:2\n",
    )
    .unwrap();
    // In a mount namespace of its own, /etc/resolv.conf names only the
    // test's name server.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
    ])
    .arg(&resolv)
    .arg(env!("CARGO_BIN_EXE_platter"))
    .args(["-r", &by_name, "--json", "snapshots"]);
    for (k, v) in &cluster.env {
        cmd.env(k, v);
    }
    let out = Run::from_output(
        format!("snapshots of {by_name}"),
        cmd.output().expect("unshare"),
    );
    let listed = out.ok().json();
    assert_eq!(listed[0]["id"].as_str(), Some(id.as_str()), "{listed}");
    assert!(
        asked.lock().unwrap().iter().any(|n| n == name),
        "the name server was not asked for {name}: {:?}",
        asked.lock().unwrap()
    );
}

// Pins: a machine without CA certificates gets an error that says so for an https endpoint (reqwest's default client panicked, for http endpoints too), and an http endpoint needs none (found building the rescue medium).
#[test]
fn missing_ca_certificates_are_named_not_a_panic() {
    let test = "missing_ca_certificates_are_named_not_a_panic";
    if !have_garage(test) {
        return;
    }
    let cluster = shared();
    let (sandbox, repo, _image, id) = one_snapshot(cluster, test, 0x5303, 2);
    let empty_dir = sandbox.path("no-certs");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty_file = sandbox.path("no-certs.pem");
    std::fs::write(&empty_file, "").unwrap();
    let no_certs = [
        ("SSL_CERT_FILE", empty_file.to_str().unwrap()),
        ("SSL_CERT_DIR", empty_dir.to_str().unwrap()),
    ];
    let https = repo.replacen("s3:http://", "s3:https://", 1);
    cluster
        .run_with(["-r", &https, "snapshots"], &no_certs)
        .refused(7, "CA certificates");
    let listed = cluster
        .run_with(["-r", &repo, "--json", "snapshots"], &no_certs)
        .ok()
        .json();
    assert_eq!(listed[0]["id"].as_str(), Some(id.as_str()), "{listed}");
}

/// A repository on the shared cluster, for tests elsewhere: its URL, the
/// variables its clients need (credentials, region).
pub(super) struct OnS3 {
    pub url: String,
    pub env: Vec<(String, String)>,
}

/// A plain repository on the shared cluster with one snapshot of `image`
/// (the rescue medium restores from it). None when Garage is missing
/// (outside CI).
pub(super) fn repository_holding(test: &str, image: &Path) -> Option<OnS3> {
    if !have_garage(test) {
        return None;
    }
    let cluster = shared();
    let repo = cluster.url(&prefix(test));
    cluster
        .run(["-r", &repo, "init", "--plain", "--chunk-size", "64K"])
        .ok();
    snapshot_id(cluster.run(["-r", &repo, "--json", "backup", image.to_str().unwrap()]));
    Some(OnS3 {
        url: repo,
        env: cluster.env.clone(),
    })
}
