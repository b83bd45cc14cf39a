//! `vault server` end to end, through real sockets on 127.0.0.1: the
//! commands through the server (local and S3 storage behind it), what each
//! role may do, TLS with a private CA, shutdown and restarts in the middle
//! of transfers, and the limits.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vault_s3_server::S3Server;

/// A small tree: a few files of each size class, nested directories.
fn build_tree(src: &Path) {
    write(&src.join("etc/app.conf"), b"listen = 127.0.0.1\n");
    write(&src.join("etc/empty"), b"");
    for i in 0..12u64 {
        write(&src.join(format!("var/log/{i}.log")), &random_bytes(i, 3000 + i as usize * 1000));
    }
    write(&src.join("db/base.bin"), &random_bytes(99, 5 << 20));
}

fn hex64(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// A server with one local repository `db1`, initialised through the
/// server with an admin token.
fn local_server(extra: &str) -> (ServerProc, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("db1");
    let server = ServerProc::start(&[("db1", repo.to_str().unwrap())], extra, vec![]);
    let admin = server.token("db1", "admin", "ops");
    server.vault("db1", &admin).init_here();
    (server, dir, admin)
}

/// The same repository (password) for another token.
fn as_token(server: &ServerProc, token: &str, like: &Vault) -> Vault {
    let mut v = server.vault("db1", token);
    v.password = like.password.clone();
    v
}

#[test]
fn commands_work_through_the_server_and_roles_decide_what_each_token_may_do() {
    let (server, dir, admin) = local_server("");
    let ops = server.vault("db1", &admin);
    let host = as_token(&server, &server.token("db1", "append", "host1"), &ops);
    let reader = as_token(&server, &server.token("db1", "read", "auditor"), &ops);
    assert!(dir.path().join("db1/config").is_file(), "init through the server created the repository");

    // A production host (append token) backs up a tree and a stream.
    let src = host.src("tree");
    build_tree(&src);
    let first = host.snapshot(&[&src], &["--tag", "files"]);
    let dump = random_bytes(7, 2 << 20);
    let out =
        host.cmd().args(["snapshot", "--json", "--stdin", "--stdin-name", "db.sql"]).stdin(dump.clone()).run().ok();
    let stream_id = out.json()["snapshot_id"].as_str().unwrap().to_string();
    write(&src.join("etc/app.conf"), b"listen = 0.0.0.0\n");
    host.snapshot(&[&src], &[]);
    assert_eq!(host.snapshots(&[]).len(), 3);

    // Anyone with a read token restores byte for byte and verifies.
    let target = reader.path("restore");
    reader.restore("latest", &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    let conf = src.join("etc/app.conf");
    let out = reader.cmd().args(["dump", first["snapshot_id"].as_str().unwrap()]).arg(&conf).run().ok();
    assert_eq!(out.stdout, b"listen = 127.0.0.1\n");
    assert!(reader.cmd().args(["dump", &stream_id, "/db.sql"]).run().ok().stdout == dump, "the stream, byte for byte");
    reader.cmd().args(["check", "--read-data"]).run().ok();

    // The append token can't destroy anything, and says which role it lacks.
    let pw2 = host.path("pw2");
    fs::write(&pw2, "another password\n").unwrap();
    for (args, what) in [
        (vec!["forget", "--keep-last", "1"], "admin role"),
        (vec!["prune"], "admin role"),
        (vec!["key", "add", "--new-password-file", pw2.to_str().unwrap()], "admin role"),
    ] {
        let out = host.cmd().args(&args).run().failed();
        assert!(out.stderr_str().contains(what) && out.stderr_str().contains("append"), "{args:?}: {}", out.explain());
    }
    assert_eq!(host.snapshots(&[]).len(), 3, "nothing was forgotten");
    // A read token can't write.
    let out = reader.cmd().args(["snapshot"]).arg(&src).run().failed();
    assert!(out.stderr_str().contains("read role"), "{}", out.explain());

    // The admin token adds a key (another password opens the repository).
    ops.cmd().args(["key", "add", "--new-password-file"]).arg(&pw2).run().ok();
    let out = ops.cmd().env("VAULT_PASSWORD", "another password").args(["snapshots", "--json"]).run().ok();
    assert_eq!(out.json().as_array().unwrap().len(), 3);

    // The admin token forgets and prunes through the server; what is kept
    // still restores and the repository checks.
    ops.cmd().args(["forget", "--keep-last", "1", "--prune", "--grace", "0"]).run().ok();
    // One kept of each group: the tree's newest, and the stream.
    assert_eq!(ops.snapshots(&[]).len(), 2);
    ops.cmd().args(["check", "--read-data"]).run().ok();
    let target = ops.path("restore2");
    ops.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &src).join("etc/app.conf")).unwrap(), b"listen = 0.0.0.0\n");

    // Every request is in the access log with its token's name, never the token.
    let log = server.log();
    assert!(log.contains(" host1 PUT /v1/repos/db1/data/") && log.contains(" 201 "), "{log}");
    assert!(log.contains(" host1 DELETE") || log.contains(" host1 PUT /v1/repos/db1/locks/"), "{log}");
    assert!(!log.contains(&admin), "the log never holds a token");
}

#[test]
fn the_server_refuses_what_a_role_does_not_allow_and_checks_pack_names() {
    let (server, _dir, admin) = local_server("");
    let append = server.token("db1", "append", "host1");
    let read = server.token("db1", "read", "auditor");
    let addr = server.addr.clone();
    let auth = |t: &str| format!("Authorization: Bearer {t}");
    let ops = server.vault("db1", &admin);
    let src = ops.src("t");
    build_tree(&src);
    ops.snapshot(&[&src], &[]);
    let snap = ops.snapshot_ids()[0].clone();
    let key = fs::read_dir(server_repo(&server).join("keys")).unwrap().next().unwrap().unwrap().file_name();
    let key = key.to_str().unwrap().to_string();

    let req = |method: &str, path: &str, token: &str, extra: &str, body: &[u8]| {
        let mut head = format!("{method} /v1/repos/db1/{path} HTTP/1.1\r\n{}", auth(token));
        if !extra.is_empty() {
            head = format!("{head}\r\n{extra}");
        }
        http(&addr, &head, body)
    };
    // Append: no delete, no overwrite, no keys, marks or lease.
    let (s, body) = req("DELETE", &format!("snapshots/{snap}"), &append, "", b"");
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("append") && body.contains("admin"), "{body}");
    let (s, body) = req("PUT", &format!("snapshots/{snap}"), &append, "If-None-Match: *", b"overwritten");
    assert_eq!(s, 412, "an existing snapshot can't be created again: {body}");
    let (s, _) = req("PUT", &format!("snapshots/{snap}"), &append, "", b"overwritten");
    assert_eq!(s, 403, "replacing needs admin");
    for path in [format!("keys/{}", hex64(1)), "marks/m1".into(), "locks/maintenance".into(), "config".into()] {
        let (s, body) = req("PUT", &path, &append, "If-None-Match: *", b"x");
        assert_eq!(s, 403, "{path}: {body}");
    }
    // A pack whose name is not the hash of its bytes.
    let bytes = b"some pack bytes".to_vec();
    let (s, body) = req("PUT", &format!("data/{}", hex64(0xab)), &append, "If-None-Match: *", &bytes);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("hash"), "{body}");
    let good = blake3::hash(&bytes).to_hex().to_string();
    let (s, body) = req("PUT", &format!("data/{good}"), &append, "If-None-Match: *", &bytes);
    assert_eq!(s, 201, "{body}");
    assert!(!server_repo(&server).join(format!("data/ab/{}", hex64(0xab))).exists(), "nothing stored for the bad pack");
    // An object type lands in its own directory only; names have their shape.
    let (s, _) = req("PUT", &format!("snapshots/{}", "a".repeat(63)), &append, "If-None-Match: *", b"x");
    assert_eq!(s, 400);
    // Read: no writes at all.
    let (s, _) = req("PUT", &format!("data/{good}"), &read, "If-None-Match: *", &bytes);
    assert_eq!(s, 403);
    let (s, body) = req("GET", &format!("keys/{key}"), &read, "", b"");
    assert_eq!(s, 200, "a read token reads the key files (clients unlock with them): {body}");
    // No token, a wrong token: 401, saying nothing of tokens or repositories.
    for head in [
        "GET /v1/repos/db1/snapshots/ HTTP/1.1".to_string(),
        format!("GET /v1/repos/db1/snapshots/ HTTP/1.1\r\n{}", auth("vt1_0000")),
        format!("GET /v1/repos/nothere/snapshots/ HTTP/1.1\r\n{}", auth("wrong")),
    ] {
        let (s, body) = http(&addr, &head, b"");
        assert_eq!(s, 401, "{head}: {body}");
        for secret in ["host1", "auditor", "ops", "db1", &append[4..12]] {
            assert!(!body.contains(secret), "{head}: the refusal names {secret}: {body}");
        }
    }
    // Another repository's name with a valid token: refused, not served.
    let (s, _) = http(&addr, &format!("GET /v1/repos/db2/snapshots/ HTTP/1.1\r\n{}", auth(&read)), b"");
    assert_eq!(s, 403);

    // A revoked token stops working on the running server.
    Cmd::vault().args(["server", "token", "revoke", "--config"]).arg(&server.config).arg("auditor").run().ok();
    let (s, _) = req("GET", "snapshots/", &read, "", b"");
    assert_eq!(s, 401);
    let out = Cmd::vault().args(["server", "token", "list", "--config"]).arg(&server.config).run().ok();
    assert!(out.stdout_str().contains("host1") && !out.stdout_str().contains("auditor"), "{}", out.stdout_str());

    // An append token can store junk under its own hash (the server can't
    // tell without the key): check names it, and prune (admin) removes it
    // as a pack no index names. Nothing else was touched.
    let out = ops.cmd().args(["check", "--read-data"]).run().code_is(1);
    assert!(out.stdout_str().contains(&good), "{}", out.explain());
    ops.cmd().args(["prune", "--grace", "0"]).run().ok();
    ops.cmd().args(["check", "--read-data"]).run().ok();
    assert_eq!(ops.snapshot_ids(), vec![snap]);
}

fn server_repo(server: &ServerProc) -> std::path::PathBuf {
    let text = fs::read_to_string(&server.config).unwrap();
    let url = text.lines().find_map(|l| l.strip_prefix("url = \"")).unwrap().trim_end_matches('"');
    std::path::PathBuf::from(url)
}

#[test]
fn an_s3_repository_behind_the_server() {
    let s3 = S3Server::start();
    s3.create_bucket("vault");
    let server = ServerProc::start(
        &[("db1", "s3:vault/hosts/db1")],
        "", // the endpoint and credentials come from the environment
        s3.env(),
    );
    let admin = server.token("db1", "admin", "ops");
    let ops = server.vault("db1", &admin).init_here();
    let host = as_token(&server, &server.token("db1", "append", "host1"), &ops);
    let src = host.src("tree");
    build_tree(&src);
    host.snapshot(&[&src], &[]);
    assert!(s3.root().join("vault/hosts/db1/config").is_file(), "objects land in the bucket under the prefix");
    let target = ops.path("restore");
    ops.restore("latest", &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    ops.cmd().args(["check", "--read-data"]).run().ok();
    ops.cmd().args(["forget", "latest"]).run().ok();
    ops.cmd().args(["prune", "--grace", "0"]).run().ok();
    ops.cmd().args(["check"]).run().ok();
    // Ready: the bucket answers.
    assert_eq!(http(&server.addr, "GET /ready HTTP/1.1", b"").0, 200);
}

/// A private CA and a certificate it signs for 127.0.0.1 and localhost.
fn make_certs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "vault test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (ca_pem, cert, key_pem) = (dir.join("ca.pem"), dir.join("server.crt"), dir.join("server.key"));
    fs::write(&ca_pem, ca.pem()).unwrap();
    fs::write(&cert, leaf.pem()).unwrap();
    fs::write(&key_pem, key.serialize_pem()).unwrap();
    (ca_pem, cert, key_pem)
}

#[test]
fn tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let repo = certs.path().join("db1");
    let tls = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    let server = ServerProc::start(&[("db1", repo.to_str().unwrap())], &tls, vec![]);
    assert!(server.url("db1").starts_with("rest:https://127.0.0.1:"));
    let admin = server.token("db1", "admin", "ops");
    let mut v = server.vault("db1", &admin);
    v.env.push(("VAULT_CACERT", ca.display().to_string()));
    let v = v.init_here();
    let src = v.src("tree");
    build_tree(&src);
    v.snapshot(&[&src], &[]);
    let target = v.path("restore");
    v.restore("latest", &target, &["--cacert", ca.to_str().unwrap()]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);

    // Without the CA: a clear certificate error, at once (not retried).
    let start = Instant::now();
    let out = v.cmd().env_remove("VAULT_CACERT").arg("snapshots").run().failed();
    assert!(out.stderr_str().contains("certificate") && out.stderr_str().contains("--cacert"), "{}", out.explain());
    assert!(start.elapsed() < Duration::from_secs(10), "a certificate error is not retried");
    // Plain HTTP to the TLS port gets no answer a client could mistake.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[test]
fn plain_http_is_refused_off_loopback_and_bad_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let run = |text: &str| {
        fs::write(&cfg, text).unwrap();
        Cmd::vault().args(["server", "--config"]).arg(&cfg).run().failed()
    };
    let out = run(&format!("listen = \"0.0.0.0:0\"\nstate-dir = \"{}\"\n", dir.path().display()));
    assert!(
        out.stderr_str().contains("in the clear") && out.stderr_str().contains("insecure-http"),
        "{}",
        out.explain()
    );
    let out = run(&format!("listen = \"127.0.0.1:0\"\nstate-dir = \"{}\"\nlisten-port = 3\n", dir.path().display()));
    assert!(out.stderr_str().contains("listen-port"), "{}", out.explain());
    let out = run(&format!(
        "listen = \"127.0.0.1:0\"\nstate-dir = \"{}\"\n[tls]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n",
        dir.path().display()
    ));
    assert!(out.stderr_str().contains("/nonexistent.crt"), "{}", out.explain());
    let out = Cmd::vault()
        .args(["server", "token", "add", "--config"])
        .arg(&cfg)
        .args(["--repo", "db1", "--role", "owner", "x"])
        .run()
        .failed();
    assert!(out.stderr_str().contains("owner") || out.stderr_str().contains("nonexistent"), "{}", out.explain());
}

/// A tree of `mib` MiB of incompressible data in a few files.
fn big_tree(v: &Vault, mib: usize) -> std::path::PathBuf {
    let src = v.src("big");
    for i in 0..4 {
        write(&src.join(format!("f{i}")), &random_bytes(1000 + i as u64, (mib << 20) / 4));
    }
    src
}

#[test]
fn sigterm_mid_upload_leaves_the_repository_valid_and_the_retry_finishes_the_snapshot() {
    let (mut server, dir, admin) = local_server("[limits]\nshutdown-timeout = \"1s\"\n");
    let v = server.vault("db1", &admin);
    let src = big_tree(&v, 160);
    // An upload certainly in flight: half a pack sent, the rest held.
    let pack = random_bytes(5, 1 << 20);
    let name = blake3::hash(&pack).to_hex().to_string();
    let mut held = TcpStream::connect(&server.addr).unwrap();
    held.write_all(
        format!(
            "PUT /v1/repos/db1/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nIf-None-Match: *\r\nContent-Length: {}\r\n\r\n",
            pack.len()
        )
        .as_bytes(),
    )
    .unwrap();
    held.write_all(&pack[..pack.len() / 2]).unwrap();
    // And a snapshot under way: stopped at its first stored pack.
    let snap = v.cmd().args(["snapshot", "--json"]).arg(&src).spawn();
    assert!(server.wait_for_log("PUT /v1/repos/db1/data/", Duration::from_secs(60)), "{}", server.log());
    let st = server.stop(libc::SIGTERM);
    assert!(st.success(), "a SIGTERM stops the server cleanly: {st}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
    // While it is down the client retries; the server comes back.
    std::thread::sleep(Duration::from_millis(500));
    server.spawn();
    let out = snap.wait().ok();
    let id = out.json()["snapshot_id"].as_str().unwrap().to_string();
    assert!(
        server.log().contains("PUT /v1/repos/db1/snapshots/"),
        "the snapshot was finished through the restarted server:\n{}",
        server.log()
    );
    // No half-written object is visible, and everything checks.
    assert!(!dir.path().join(format!("db1/data/{}/{name}", &name[..2])).exists(), "the held upload stored nothing");
    drop(held);
    let mut tmp = Vec::new();
    collect_named(&dir.path().join("db1"), ".tmp-", &mut tmp);
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    v.cmd().args(["check", "--read-data"]).run().ok();
    let target = v.path("restore");
    v.restore(&id, &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
}

fn collect_named(dir: &Path, prefix: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            collect_named(&e.path(), prefix, out);
        } else if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(e.path());
        }
    }
}

#[test]
fn a_server_restart_in_the_middle_of_a_restore() {
    let (mut server, _dir, admin) = local_server("");
    let v = server.vault("db1", &admin);
    let src = big_tree(&v, 160);
    v.snapshot(&[&src], &[]);
    v.drop_cache();
    let target = v.path("restore");
    let restore = v.cmd().args(["restore", "latest", "--target"]).arg(&target).spawn();
    assert!(server.wait_for_log("GET /v1/repos/db1/data/", Duration::from_secs(60)), "{}", server.log());
    // Killed outright, not stopped gracefully: connections break mid-body.
    server.stop(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    server.spawn();
    restore.wait().ok();
    assert!(server.log().contains("GET /v1/repos/db1/data/"), "reads went on after the restart:\n{}", server.log());
    assert_trees_equal(&src, &restored(&target, &src), false);
}

#[test]
fn limits_hold_and_bad_requests_get_clear_answers() {
    // A repository with a snapshot, made through a server without limits;
    // then a second server on it with tight ones.
    let (plain, dir, plain_admin) = local_server("");
    let snap = {
        let v = plain.vault("db1", &plain_admin);
        let src = v.src("t");
        write(&src.join("f"), b"hello");
        v.snapshot(&[&src], &[]);
        v.snapshot_ids()[0].clone()
    };
    let limits =
        "[limits]\nmax-connections = 3\nmax-requests-per-token = 1\nheader-timeout = \"1s\"\nbody-timeout = \"1s\"\n";
    let server = ServerProc::start(&[("db1", dir.path().join("db1").to_str().unwrap())], limits, vec![]);
    let admin = server.token("db1", "admin", "ops");
    let addr = server.addr.clone();
    let auth = format!("Authorization: Bearer {admin}");

    // The connection cap: two idle connections and a third, then one more
    // is turned away with 503 (never a crash); freed slots serve again.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (s, body) = http(&addr, "GET /health HTTP/1.1", b"");
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("max-connections"), "{body}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http(&addr, "GET /health HTTP/1.1", b"").0, 200);

    // A slow client is cut by the header timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(start.elapsed() < Duration::from_secs(10), "cut after the header timeout, not left open");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // An upload that stalls is cut by the body timeout and stores nothing;
    // while it holds the token's only request slot, the token's next
    // request is answered 429.
    let name = hex64(0x77);
    let mut stall = TcpStream::connect(&addr).unwrap();
    stall
        .write_all(
            format!("PUT /v1/repos/db1/snapshots/{name} HTTP/1.1\r\nHost: x\r\n{auth}\r\nIf-None-Match: *\r\nContent-Length: 1000\r\n\r\n0123456789")
                .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (s, body) = http(&addr, &format!("GET /v1/repos/db1/snapshots/ HTTP/1.1\r\n{auth}"), b"");
    assert_eq!(s, 429, "{body}");
    stall.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let _ = stall.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(!dir.path().join(format!("db1/snapshots/{name}")).exists(), "nothing stored");

    // Malformed paths, `..`, huge ranges, bodies over the cap: 4xx, named.
    for (head, want) in [
        ("GET /v1/repos/db1/data/.. HTTP/1.1".to_string(), 400),
        ("GET /v1/repos/db1/../../etc/passwd HTTP/1.1".to_string(), 400),
        ("GET /v1/repos/db1/data/%2e%2e HTTP/1.1".to_string(), 400),
        ("GET /v1/repos/db1/nothing/x HTTP/1.1".to_string(), 400),
        ("GET /v1/repos/db1/data/zz/zz HTTP/1.1".to_string(), 400),
        ("PATCH /v1/repos/db1/config HTTP/1.1".to_string(), 405),
        (format!("GET /v1/repos/db1/snapshots/{snap} HTTP/1.1\r\nRange: bytes=999999999999-"), 416),
        (format!("GET /v1/repos/db1/snapshots/{snap} HTTP/1.1\r\nRange: bytes=0-1,5-6"), 400),
        (format!("GET /v1/repos/db1/snapshots/{} HTTP/1.1", hex64(0x99)), 404),
        ("GET /v1/repos/db1/snapshots/ HTTP/1.1\r\nRange: bytes=-18446744073709551615".to_string(), 200),
    ] {
        let (s, body) = http(&addr, &format!("{head}\r\n{auth}"), b"");
        assert_eq!(s, want, "{head}: {body}");
        assert!(want == 200 || !body.trim().is_empty(), "{head}: the answer says why");
    }
    // Ranges and sizes of a pack, as a client would ask for them.
    let pack = fs::read_dir(dir.path().join("db1/data"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .next()
        .unwrap()
        .unwrap();
    let pack_bytes = fs::read(pack.path()).unwrap();
    let pname = pack.file_name().to_str().unwrap().to_string();
    let raw = |head: &str| -> String {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        c.write_all(format!("{head}\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let n = pack_bytes.len();
    let head = raw(&format!("HEAD /v1/repos/db1/data/{pname} HTTP/1.1"));
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains(&format!("content-length: {n}\r\n")),
        "{head}"
    );
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(format!("GET /v1/repos/db1/data/{pname} HTTP/1.1\r\nHost: x\r\n{auth}\r\nRange: bytes=-10\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 206") && head.contains(&format!("content-range: bytes {}-{}/{n}", n - 10, n - 1)),
        "{head}"
    );
    assert_eq!(&buf[split + 4..], &pack_bytes[n - 10..], "the last ten bytes");
    // A client that stops reading a download is cut, and the log says so.
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(format!("GET /v1/repos/db1/data/{pname} HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n").as_bytes())
            .unwrap();
        let mut first = [0u8; 100];
        c.read_exact(&mut first).unwrap();
    }
    assert!(
        server.wait_for_log(&format!("GET /v1/repos/db1/data/{pname} 200"), Duration::from_secs(10)),
        "{}",
        server.log()
    );

    // A body over its type's cap is refused before it is read.
    let mut big = TcpStream::connect(&addr).unwrap();
    big.write_all(
        format!(
            "PUT /v1/repos/db1/snapshots/{} HTTP/1.1\r\nHost: x\r\n{auth}\r\nIf-None-Match: *\r\nContent-Length: 1000000000000\r\n\r\n",
            hex64(0x66)
        )
        .as_bytes(),
    )
    .unwrap();
    big.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let _ = big.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("at most"), "{answer}");
    // An upload without a length.
    let mut chunked = TcpStream::connect(&addr).unwrap();
    chunked
        .write_all(
            format!(
                "PUT /v1/repos/db1/snapshots/{} HTTP/1.1\r\nHost: x\r\n{auth}\r\nIf-None-Match: *\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                hex64(0x65)
            )
            .as_bytes(),
        )
        .unwrap();
    chunked.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = Vec::new();
    let _ = chunked.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 411"), "{}", String::from_utf8_lossy(&buf));

    // Still serving, and health and readiness say so.
    assert_eq!(http(&addr, "GET /health HTTP/1.1", b"").0, 200);
    assert_eq!(http(&addr, "GET /ready HTTP/1.1", b"").0, 200);
    plain.vault("db1", &plain_admin).cmd().args(["check", "--read-data"]).run().ok();
}

#[test]
fn tokens_come_from_a_file_or_a_command_and_a_bad_one_is_named() {
    let (server, dir, admin) = local_server("");
    let like = server.vault("db1", &admin);
    let mut v = server.vault("db1", "unused");
    v.password = like.password.clone();
    v.env.retain(|(k, _)| *k != "VAULT_TOKEN");
    let file = dir.path().join("token");
    fs::write(&file, format!("{admin}\n")).unwrap();
    v.cmd().arg("--token-file").arg(&file).arg("snapshots").run().ok();
    v.cmd().args(["--token-command", &format!("cat {}", file.display()), "snapshots"]).run().ok();
    // No token at all, a wrong one, a failing command: each says what to fix.
    let out = v.cmd().arg("snapshots").run().failed();
    assert!(out.stderr_str().contains("401") && out.stderr_str().contains("VAULT_TOKEN"), "{}", out.explain());
    fs::write(&file, "vt1_wrong\n").unwrap();
    let out = v.cmd().arg("--token-file").arg(&file).arg("snapshots").run().failed();
    assert!(out.stderr_str().contains("unknown access token"), "{}", out.explain());
    let out = v.cmd().args(["--token-command", "exit 3", "snapshots"]).run().failed();
    assert!(out.stderr_str().contains("token command") && out.stderr_str().contains("exit 3"), "{}", out.explain());
    // rest: options are checked; S3 options are refused for a server.
    let out = v.cmd().arg("--token-file").arg(&file).args(["-o", "s3.connections=4", "snapshots"]).run().failed();
    assert!(out.stderr_str().contains("s3.connections"), "{}", out.explain());
    let out = v.cmd().arg("--token-file").arg(&file).args(["-o", "rest.connections=0", "snapshots"]).run().failed();
    assert!(out.stderr_str().contains("rest.connections"), "{}", out.explain());
    // A malformed URL is named.
    let out =
        Cmd::vault().args(["--repo", "rest:ftp://host/db1", "snapshots"]).env("VAULT_PASSWORD", "x").run().failed();
    assert!(out.stderr_str().contains("rest:ftp://host/db1"), "{}", out.explain());
}

/// Replies lost after the server stored a create (the server is told to cut
/// the connections of the first creates before answering): each client
/// retry finds the object, takes it for its own only because its first
/// attempt's outcome was unknown and the bytes are its own, and every
/// command finishes with a whole repository. The exclusive-create probe
/// of `init` still sees its second, different create refused.
#[test]
fn lost_replies_to_creates_are_retried_and_taken_for_what_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("db1");
    let server =
        ServerProc::start(&[("db1", repo.to_str().unwrap())], "", vec![("VAULT_SERVER_TEST_CUT_CREATES", "10".into())]);
    let admin = server.token("db1", "admin", "ops");
    let v = server.vault("db1", &admin).init_here();
    let src = v.src("tree");
    build_tree(&src);
    v.snapshot(&[&src], &[]);
    // Prune's clock probe and lease are creates too (init and the snapshot
    // make 8 of this tree): the last cut replies fall on them.
    v.cmd().args(["prune", "--grace", "0"]).run().ok();
    let cuts = server.log().matches("connection cut before the answer (test)").count();
    assert_eq!(cuts, 10, "{}", server.log());
    assert!(server.log().contains("/locks/maintenance: stored, connection cut"), "{}", server.log());
    v.cmd().args(["check", "--read-data"]).run().ok();
    let target = v.path("restore");
    v.restore("latest", &target, &[]).ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
    // The lease was given back: another prune takes it at once.
    v.cmd().args(["prune", "--grace", "0"]).run().ok();
}
