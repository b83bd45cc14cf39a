//! Repositories in S3, end to end through the `vault` binary, against a real
//! S3 server (s3s-fs) on 127.0.0.1 started by each test: the commands work,
//! repeated commands make few requests thanks to the local cache, faults
//! (server errors, cut connections, delays, an outage) are survived or
//! reported clearly without harm to the repository, and bad credentials, a
//! missing bucket or an unreachable endpoint give clear errors.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use vault_s3_server::{Fault, Record, S3Server};

const BUCKET: &str = "backups";

/// A repository at `s3:BUCKET/PREFIX` on `server`, not yet initialised.
fn on_s3(server: &S3Server, prefix: &str) -> Vault {
    let mut v = Vault::new();
    v.location = Some(format!("s3:{BUCKET}/{prefix}"));
    v.env = server.env();
    v
}

/// A server with the bucket, an initialised repository under `prefix` (with
/// extra `init` options), and the source tree of [`build_tree`].
fn setup(prefix: &str, init: &[&str]) -> (S3Server, Vault, std::path::PathBuf) {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let v = on_s3(&server, prefix).init_with_here(init);
    let src = v.src("tree");
    build_tree(&src);
    (server, v, src)
}

/// A small tree: a few files of each size class, nested directories.
fn build_tree(src: &Path) {
    write(&src.join("etc/app.conf"), b"listen = 127.0.0.1\n");
    write(&src.join("etc/empty"), b"");
    write(&src.join("data/big.bin"), &random_bytes(11, 5 * 1024 * 1024 + 17));
    write(&src.join("data/medium.bin"), &random_bytes(12, 700_000));
    for i in 0..30 {
        write(&src.join(format!("logs/day-{i:02}.log")), format!("line {i}\n").repeat(200 + i).as_bytes());
    }
    std::os::unix::fs::symlink("etc/app.conf", src.join("conf-link")).unwrap();
}

/// `check --read-data` is clean and the latest snapshot restores to a tree
/// equal to `src`.
#[track_caller]
fn assert_checks_and_restores(v: &Vault, src: &Path) {
    v.cmd().args(["check", "--read-data"]).run().ok();
    let target = v.path(&format!("restore-{}", v.snapshot_ids().len()));
    v.restore("latest", &target, &[]).ok();
    assert_trees_equal(src, &restored(&target, src), false);
}

fn gets_of(reqs: &[Record], dir: &str) -> usize {
    reqs.iter().filter(|r| r.method == "GET" && r.path.contains(&format!("/{dir}/"))).count()
}

fn describe(reqs: &[Record]) -> String {
    reqs.iter().map(|r| format!("{} {}?{} {:?}\n", r.method, r.path, r.query, r.fault)).collect()
}

#[test]
fn s3_repository_end_to_end() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let v = on_s3(&server, "hosts/db1").init_here();
    assert!(server.root().join(BUCKET).join("hosts/db1/config").is_file(), "config is stored under the prefix");

    let src = v.src("tree");
    build_tree(&src);
    let summary = v.snapshot(&[&src], &["--tag", "files", "-o", "s3.storage-class=REDUCED_REDUNDANCY"]);
    assert!(count(&summary, "files_new") >= 33, "{summary}");

    // Only data packs carry the storage class; metadata stays STANDARD.
    let puts: Vec<Record> = server.requests().into_iter().filter(|r| r.method == "PUT").collect();
    let data_puts: Vec<&Record> = puts.iter().filter(|r| r.path.contains("/data/")).collect();
    assert!(!data_puts.is_empty(), "{}", describe(&puts));
    assert!(data_puts.iter().all(|r| r.storage_class.as_deref() == Some("REDUCED_REDUNDANCY")), "{}", describe(&puts));
    for dir in ["/tree/", "/index/", "/snapshots/"] {
        let meta: Vec<&Record> = puts.iter().filter(|r| r.path.contains(dir)).collect();
        assert!(!meta.is_empty(), "a PUT under {dir}: {}", describe(&puts));
        assert!(meta.iter().all(|r| r.storage_class.is_none()), "{dir} stays STANDARD: {}", describe(&puts));
    }

    // A stream, as from pg_dump.
    let dump = random_bytes(13, 3 << 20);
    v.cmd().args(["snapshot", "--stdin", "--stdin-name", "db.sql", "--tag", "db"]).stdin(dump.clone()).run().ok();
    let snaps = v.snapshots(&[]);
    assert_eq!(snaps.len(), 2, "{snaps:?}");

    // Restore byte for byte, from a machine that has never seen the repository.
    v.drop_cache();
    let target = v.path("restore");
    v.restore(summary["snapshot_id"].as_str().unwrap(), &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    let out = v.cmd().args(["dump", "latest", "/db.sql"]).run().ok();
    assert!(out.stdout == dump, "dump returns the stream byte for byte");

    // A second password.
    let pw2 = v.path("pw2");
    fs::write(&pw2, "another password\n").unwrap();
    v.cmd().args(["key", "add", "--new-password-file"]).arg(&pw2).run().ok();
    let out = v.cmd().env("VAULT_PASSWORD", "another password").args(["snapshots", "--json"]).run().ok();
    assert_eq!(out.json().as_array().unwrap().len(), 2);
    v.cmd().env("VAULT_PASSWORD", "wrong").arg("snapshots").run().code_is(12);

    // The repository verifies, then a flipped bit in a data pack and in a
    // tree pack (on the server's disk) are found and named, although the
    // local cache holds a good copy of the tree pack: check reads the bucket.
    v.cmd().args(["check", "--read-data"]).run().ok();
    v.ls("latest", None);
    let mut victims = Vec::new();
    for dir in ["data", "tree"] {
        let mut packs = Vec::new();
        collect(&server.root().join(BUCKET).join("hosts/db1").join(dir), &mut packs);
        packs.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
        flip_bit(&packs[0], 100);
        victims.push(packs[0].clone());
    }
    let out = v.cmd().args(["check", "--read-data"]).run().code_is(1);
    for victim in &victims {
        assert!(out.stdout_str().contains(&file_name(victim)), "check names {}:\n{}", victim.display(), out.explain());
    }

    // init refuses a prefix that holds a repository.
    v.cmd().arg("init").run().failed().stderr_has("not empty");
    // S3 options on a local repository are refused, not ignored.
    Vault::init().cmd().args(["-o", "s3.connections=4", "snapshots"]).run().code_is(1).stderr_has("S3 repositories");
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            collect(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn s3_repeated_commands_read_from_the_cache() {
    let (server, v, src) = setup("cached", &[]);
    v.snapshot(&[&src], &[]);
    v.snapshot(&[&src], &[]);

    // `snapshots`: the first run on a fresh cache reads each snapshot once…
    v.drop_cache();
    server.clear_requests();
    assert_eq!(v.snapshots(&[]).len(), 2);
    assert_eq!(gets_of(&server.requests(), "snapshots"), 2, "{}", describe(&server.requests()));
    // …the second reads none: config, key list, key, snapshot list.
    server.clear_requests();
    assert_eq!(v.snapshots(&[]).len(), 2);
    let reqs = server.requests();
    assert_eq!(gets_of(&reqs, "snapshots"), 0, "{}", describe(&reqs));
    assert!(reqs.len() <= 4, "a second `snapshots` makes {} requests:\n{}", reqs.len(), describe(&reqs));

    // An unchanged re-snapshot on this fresh cache reads the parent's trees
    // once; the next one reads no tree pack, no snapshot and no index
    // segment again, writes only the snapshot object, and lists each
    // directory it needs at most twice. The stamp is taken before the run
    // that becomes the parent: a directory above the source that changes
    // between the two runs (other tests share the temporary directory)
    // changes the trees above the source.
    let before = ancestor_stamp(&src);
    v.snapshot(&[&src], &[]);
    server.clear_requests();
    let summary = v.snapshot(&[&src], &[]);
    let after = ancestor_stamp(&src);
    assert_eq!(count(&summary, "files_unmodified"), count(&summary, "files_new") + count(&summary, "files_unmodified"));
    let reqs = server.requests();
    for dir in ["tree", "snapshots", "index", "data"] {
        assert_eq!(gets_of(&reqs, dir), 0, "GET under {dir}/:\n{}", describe(&reqs));
    }
    // Writes: the snapshot object, and a tree pack and index segment only
    // if a directory above the source changed meanwhile (other tests share
    // the temporary directory).
    let puts: Vec<&Record> = reqs.iter().filter(|r| r.method == "PUT").collect();
    let extra = if tree_blobs_allowed(&before, &after) == 0 { 0 } else { 2 };
    assert!(puts.iter().any(|r| r.path.contains("/snapshots/")), "{}", describe(&reqs));
    assert!(puts.len() <= 1 + extra && !puts.iter().any(|r| r.path.contains("/data/")), "{}", describe(&reqs));
    assert!(reqs.len() <= 10 + extra, "an unchanged re-snapshot makes {} requests:\n{}", reqs.len(), describe(&reqs));

    // A restore on this machine reads trees from the cache: only data packs.
    server.clear_requests();
    let target = v.path("restore");
    v.restore("latest", &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    let reqs = server.requests();
    assert_eq!(gets_of(&reqs, "tree"), 0, "{}", describe(&reqs));
    assert!(gets_of(&reqs, "data") > 0);
}

#[test]
fn s3_survives_errors_resets_and_delays() {
    let (server, v, src) = setup("flaky", &["--pack-size", "1M"]);
    write(&src.join("data/more.bin"), &random_bytes(15, 6 << 20));
    // 10 % server errors, 6 % cut connections, 10 % delayed by 300 ms, and
    // the first three writes are stored but their replies lost.
    server.faults().set(100, 60, 100, Duration::from_millis(300));
    server.faults().cut_puts.store(3, std::sync::atomic::Ordering::SeqCst);
    let out = v.cmd().args(["-v", "snapshot", "--json"]).arg(&src).run().ok();
    assert!(out.stderr_str().contains("debug:"), "retries are logged with -v:\n{}", out.explain());
    let target = v.path("restore");
    v.drop_cache();
    v.restore("latest", &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    let reqs = server.requests();
    for kind in [Fault::Status(500), Fault::Status(503), Fault::Reset, Fault::Delay] {
        assert!(reqs.iter().any(|r| r.fault == kind), "no {kind:?} was injected in {} requests", reqs.len());
    }
    // A reset after a write landed makes the client see a failure for a
    // write that happened: the retry finds the object and accepts it.
    assert!(reqs.iter().any(|r| r.fault == Fault::Reset && r.method == "PUT"), "no PUT was cut: {}", describe(&reqs));
    server.faults().clear();
    v.cmd().args(["check", "--read-data"]).run().ok();
}

#[test]
fn s3_outage_fails_clearly_and_a_rerun_succeeds() {
    let (server, v, src) = setup("outage", &["--pack-size", "1M"]);
    v.snapshot(&[&src], &[]);
    write(&src.join("data/new.bin"), &random_bytes(14, 8 << 20));

    // Down from the start: the command fails at once, naming the server.
    server.faults().fail_all.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = v.cmd().args(["snapshot", "-o", "s3.retries=2"]).arg(&src).run().code_is(1);
    let err = out.stderr_str();
    assert!(err.contains(&server.endpoint()) && err.contains("s3://backups/outage/"), "{}", out.explain());
    assert!(err.contains("503") || err.contains("SlowDown"), "{}", out.explain());
    server.faults().clear();

    // Down in the middle of the upload: two packs land, the run fails.
    server.clear_requests();
    server.faults().fail_after_puts(2);
    let out = v.cmd().args(["snapshot", "-o", "s3.retries=2"]).arg(&src).run().code_is(1);
    assert!(out.stderr_str().contains("s3://backups/outage/"), "{}", out.explain());
    let reqs = server.requests();
    let landed = reqs.iter().filter(|r| r.method == "PUT" && r.path.contains("/data/") && r.fault == Fault::None);
    assert!(landed.count() > 0, "no pack landed before the outage:\n{}", describe(&reqs));
    assert!(!reqs.iter().any(|r| r.method == "PUT" && r.path.contains("/snapshots/") && r.fault == Fault::None));

    // Nothing was harmed: the repository checks clean, the rerun completes,
    // and both snapshots restore.
    server.faults().clear();
    v.cmd().args(["check", "--read-data"]).run().ok();
    v.snapshot(&[&src], &[]);
    assert_eq!(v.snapshots(&[]).len(), 2);
    assert_checks_and_restores(&v, &src);
}

#[test]
fn s3_bad_credentials_bucket_and_endpoint_are_named() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let v = on_s3(&server, "repo").init_here();

    let out = v.cmd().env("AWS_SECRET_ACCESS_KEY", "not-the-secret").arg("snapshots").run().code_is(1);
    let err = out.stderr_str();
    assert!(err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("s3://backups/repo/"), "{}", out.explain());

    let out = v.cmd().env("AWS_ACCESS_KEY_ID", "nobody").arg("snapshots").run().code_is(1);
    assert!(out.stderr_str().contains("AWS_ACCESS_KEY_ID"), "{}", out.explain());

    let out = v.cmd().env("VAULT_REPOSITORY", "s3:no-such-bucket/repo").arg("snapshots").run().code_is(1);
    assert!(out.stderr_str().contains("bucket \"no-such-bucket\" does not exist"), "{}", out.explain());
    let out = v.cmd().env("VAULT_REPOSITORY", "s3:no-such-bucket/repo").arg("init").run().code_is(1);
    assert!(out.stderr_str().contains("bucket \"no-such-bucket\" does not exist"), "{}", out.explain());

    // An endpoint where nothing listens (a port just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    let out = v.cmd().env("AWS_ENDPOINT_URL", &dead).args(["-o", "s3.retries=1", "snapshots"]).run().code_is(1);
    assert!(out.stderr_str().contains(&format!("cannot connect to {dead}")), "{}", out.explain());

    // A prefix with no repository is "no repository" (exit 10), not an S3 error.
    v.cmd().env("VAULT_REPOSITORY", format!("s3:{BUCKET}/elsewhere")).arg("snapshots").run().code_is(10);
    // A bad option is named.
    v.cmd().args(["-o", "s3.conections=4", "snapshots"]).run().code_is(1).stderr_has("s3.conections");
}

/// An object larger than any of its type can be is refused from the size
/// in the response's head, before its body is taken in, and named.
#[test]
fn s3_oversized_key_object_is_refused_and_named() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let v = on_s3(&server, "repo").init_here();
    let keys: Vec<_> =
        fs::read_dir(server.root().join(BUCKET).join("repo/keys")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(keys.len(), 1);
    fs::write(&keys[0], vec![b'{'; 2 << 20]).unwrap();
    let out = v.cmd().arg("snapshots").run().code_is(1);
    let err = out.stderr_str();
    assert!(
        err.contains(&format!("s3://backups/repo/keys/{}", file_name(&keys[0])))
            && err.contains("2097152 bytes, more than any key file can hold"),
        "{}",
        out.explain()
    );
}

#[test]
fn s3_forget_prune_and_check() {
    let (server, v, src) = setup("gc", &["--pack-size", "1M"]);
    v.snapshot(&[&src], &[]);
    let gone = src.join("data/only-in-the-second.bin");
    write(&gone, &random_bytes(16, 3 << 20));
    let second = v.snapshot(&[&src], &[]);
    fs::remove_file(&gone).unwrap();
    v.snapshot(&[&src], &[]);
    let data_bytes = || {
        let mut packs = Vec::new();
        collect(&server.root().join(BUCKET).join("gc/data"), &mut packs);
        packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum::<u64>()
    };
    let before = data_bytes();

    // Forget the snapshot that alone held the 3 MiB file, prune at once.
    v.cmd().args(["forget"]).arg(second["snapshot_id"].as_str().unwrap()).run().ok();
    let out = v.cmd().args(["prune", "--grace", "0", "--json"]).run().ok();
    let report = out.json();
    assert!(count(&report, "packs_deleted") + count(&report, "packs_repacked") > 0, "{report}");
    assert!(count(&report, "bytes_freed") >= 2 << 20, "{report}");
    let after = data_bytes();
    assert!(before - after >= 2 << 20, "the forgotten 3 MiB file's data is gone: {before} -> {after} bytes");
    assert!(fs::read_dir(server.root().join(BUCKET).join("gc/locks")).map_or(0, |d| d.count()) == 0, "lease released");

    // What is left is whole and restores.
    assert_eq!(v.snapshots(&[]).len(), 2);
    assert_checks_and_restores(&v, &src);
}

#[test]
fn s3_requests_that_time_out_are_retried() {
    let (server, v, src) = setup("slow", &["--pack-size", "1M"]);
    // A fifth of the requests answer after 1.5 s, past a 1 s timeout, and
    // so do the first two PUTs whatever order the uploads come in. A
    // timed-out PUT has landed all the same: the retry must accept it.
    server.faults().set(0, 0, 200, Duration::from_millis(1500));
    server.faults().delay_puts.store(2, std::sync::atomic::Ordering::SeqCst);
    let out = v.cmd().args(["-v", "-o", "s3.timeout=1", "snapshot"]).arg(&src).run().ok();
    assert!(out.stderr_str().contains("retrying the write"), "a timed-out create is retried:\n{}", out.explain());
    let target = v.path("restore");
    v.drop_cache();
    v.cmd().args(["-o", "s3.timeout=1", "restore", "latest", "--target"]).arg(&target).run().ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    server.faults().clear();
    v.cmd().args(["check", "--read-data"]).run().ok();
}

/// Paths under `dir` whose name starts with `prefix`, at any depth.
fn named_like(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(e.path());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(named_like(&e.path(), prefix));
        }
    }
    out
}

#[test]
fn s3_check_fetches_each_tree_pack_once_and_keeps_no_copy() {
    let (server, v, src) = setup("check-trees", &[]);
    // Many directories: many trees, in a few tree packs.
    for d in 0..60 {
        write(&src.join(format!("dirs/d{d:02}/sub/f.txt")), format!("{d}\n").as_bytes());
    }
    v.snapshot(&[&src], &[]);
    let mut packs = Vec::new();
    collect(&server.root().join(BUCKET).join("check-trees/tree"), &mut packs);
    assert!(!packs.is_empty());
    for args in [&["check"][..], &["check", "--read-data"]] {
        server.clear_requests();
        let out = v.cmd().args(args).run().ok();
        assert!(out.stderr_str().contains("no errors"), "{}", out.explain());
        // One request per tree pack, not one per tree (a walk of a large
        // tree took minutes), and the bucket itself is read: nothing from
        // an earlier run is used.
        let reqs = server.requests();
        assert_eq!(gets_of(&reqs, "tree"), packs.len(), "{args:?}:\n{}", describe(&reqs));
        assert_eq!(
            named_like(&v.cache, "vault-objects-"),
            Vec::<std::path::PathBuf>::new(),
            "the run's copies are gone"
        );
    }
}

/// A real S3 implementation honours `If-None-Match: *`: `init` finds the
/// maintenance lease usable (no warning), and prune takes the lease,
/// deletes what a forgotten snapshot alone used, and leaves the rest whole.
#[test]
fn s3_init_finds_exclusive_creates_and_prune_runs() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let v = on_s3(&server, "repo");
    let out = v.cmd().args(["init", "--kdf-memory", "1024"]).run().ok();
    assert!(!out.stderr_str().contains("conditional writes"), "{}", out.explain());
    let src = v.src("tree");
    build_tree(&src);
    let gone = v.src("gone");
    write(&gone.join("only-here.bin"), &random_bytes(21, 3 << 20));
    v.snapshot(&[&gone], &[]);
    v.snapshot(&[&src], &[]);
    let first = v.snapshot_ids()[0].clone();
    v.cmd().args(["forget", &first]).run().ok();
    let out = v.cmd().args(["--json", "prune", "--grace", "0"]).run().ok();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["packs_deleted"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        fs::read_dir(server.root().join(BUCKET).join("repo/locks")).map_or(0, |d| d.count()) == 0,
        "no lease, probe or break marker is left behind"
    );
    assert_checks_and_restores(&v, &src);
}
