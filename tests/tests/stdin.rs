//! Snapshots of a stream: `--stdin` and `--stdin-from-command`.

mod common;

use common::*;

#[test]
fn stdin_snapshot_round_trips_through_dump() {
    let v = Vault::init();
    let data = random_bytes(42, 3 << 20);
    let out = v.cmd().args(["snapshot", "--json", "--stdin", "--stdin-name", "db.sql"]).stdin(data.clone()).run().ok();
    let s = out.json();
    assert_eq!(count(&s, "bytes_read"), data.len() as u64, "{s}");
    assert_eq!(count(&s, "files_new"), 1, "{s}");
    let id = s["snapshot_id"].as_str().unwrap().to_string();

    let dumped = v.cmd().args(["dump", &id, "/db.sql"]).run().ok();
    assert!(
        dumped.stdout == data,
        "dump returned {} bytes that differ from the {} bytes stored",
        dumped.stdout.len(),
        data.len()
    );
    // `latest` resolves to the same snapshot.
    let dumped = v.cmd().args(["dump", "latest", "/db.sql"]).run().ok();
    assert!(dumped.stdout == data, "dump latest differs");

    let lines = v.ls(&id, None);
    assert!(lines.iter().any(|l| l == "/db.sql"), "ls of a stdin snapshot shows /db.sql: {lines:?}");

    // A dump of a path that is not in the snapshot fails and names it.
    v.cmd().args(["dump", &id, "/nope.sql"]).run().failed().stderr_has("/nope.sql");
}

#[test]
fn stdin_from_command_stores_the_command_output() {
    let v = Vault::init();
    let s = v
        .cmd()
        .args(["snapshot", "--json", "--stdin-from-command", "--stdin-name", "out.txt", "--", "sh", "-c"])
        .arg(r"printf 'line one\nline two\n'; printf '\001\002\377'")
        .run()
        .ok()
        .json();
    let id = s["snapshot_id"].as_str().unwrap().to_string();
    let dumped = v.cmd().args(["dump", &id, "/out.txt"]).run().ok();
    assert_eq!(dumped.stdout, b"line one\nline two\n\x01\x02\xff");
    assert_eq!(v.snapshots(&[]).len(), 1);
}

#[test]
fn stdin_from_command_that_fails_records_no_snapshot() {
    let v = Vault::init();
    // One good snapshot first, so that "unchanged" isn't just "still empty".
    v.cmd()
        .args(["snapshot", "--stdin-from-command", "--stdin-name", "ok.txt", "--", "sh", "-c", "echo fine"])
        .run()
        .ok();
    assert_eq!(v.snapshots(&[]).len(), 1);

    let out = v
        .cmd()
        .args(["snapshot", "--stdin-from-command", "--stdin-name", "bad.txt", "--", "sh", "-c", "echo partial; exit 3"])
        .run();
    let out = out.code_is(1);
    assert!(out.stderr_str().contains("error"), "the failure is reported as an error:\n{}", out.explain());
    let snaps = v.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "a failed command must not leave a snapshot: {snaps:?}");
    let dumped = v.cmd().args(["dump", "latest", "/ok.txt"]).run().ok();
    assert_eq!(dumped.stdout, b"fine\n", "latest is still the good snapshot");

    // A command that doesn't exist fails the same way.
    v.cmd()
        .args(["snapshot", "--stdin-from-command", "--stdin-name", "x", "--", "/nonexistent/program-for-vault-tests"])
        .run()
        .failed()
        .stderr_has("program-for-vault-tests");
    assert_eq!(v.snapshots(&[]).len(), 1);
}

#[test]
fn dump_of_a_large_stream_is_in_order_and_stops_at_a_damaged_blob() {
    // Small chunks and packs: the stream spans dozens of blobs in several
    // packs, so the dump's readers finish blobs out of order.
    let v =
        Vault::init_with(&["--kdf-memory", "1024", "--chunk-size", "64K", "--compression", "0", "--pack-size", "1M"]);
    let data = random_bytes(7, 6 << 20);
    v.cmd().args(["snapshot", "--stdin", "--stdin-name", "big.sql"]).stdin(data.clone()).run().ok();
    let dumped = v.cmd().args(["dump", "latest", "/big.sql"]).run().ok();
    assert!(
        dumped.stdout == data,
        "dump returned {} bytes that differ from the {} stored",
        dumped.stdout.len(),
        data.len()
    );

    // Damage a pack in the middle of the stream: the dump fails, names the
    // pack, and what it wrote before is a prefix of the data.
    let mut packs = v.repo_files("data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let victim = &packs[packs.len() / 2];
    flip_bit(victim, 1000);
    let out = v.cmd().args(["dump", "latest", "/big.sql"]).run().failed();
    let out = out.stderr_has(&file_name(victim));
    assert!(out.stdout.len() < data.len(), "a dump with a damaged blob must not look complete");
    assert!(data.starts_with(&out.stdout), "what was written before the damage is the data's start");
}

#[test]
fn stdin_from_command_does_not_pass_vault_secrets_to_the_command() {
    let v = Vault::init();
    let pwfile = v.path("pw");
    std::fs::write(&pwfile, format!("{}\n", v.password)).unwrap();
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIA-test-access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-access-key-9f3a"),
        ("AWS_SESSION_TOKEN", "test-session-token-77c1"),
    ];
    let mut cmd = v
        .cmd()
        .env("VAULT_PASSWORD_FILE", &pwfile)
        .env("PGPASSWORD", "the-producer-keeps-this")
        .env("AWS_REGION", "eu-west-1");
    for (k, val) in secrets {
        cmd = cmd.env(k, val);
    }
    // The password file opens the repository (it comes before the
    // command and VAULT_PASSWORD, which is set too): vault itself had
    // every one of these variables.
    cmd = cmd.env("VAULT_PASSWORD_COMMAND", "echo unused-password-command");
    let s = cmd
        .args(["snapshot", "--json", "--stdin-from-command", "--stdin-name", "env.txt", "--", "env"])
        .run()
        .ok()
        .json();
    let id = s["snapshot_id"].as_str().unwrap().to_string();
    let env = v.cmd().args(["dump", &id, "/env.txt"]).run().ok().stdout_str();
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "the producer's environment was stored:\n{env}");
    assert!(
        env.lines().any(|l| l == "PGPASSWORD=the-producer-keeps-this"),
        "the producer keeps its own variables:\n{env}"
    );
    assert!(env.lines().any(|l| l == "AWS_REGION=eu-west-1"), "settings that are no secret stay:\n{env}");
    assert!(!env.contains(&v.password), "the repository password reached the producer:\n{env}");
    for (k, val) in secrets {
        assert!(!env.contains(val) && !env.contains(&format!("{k}=")), "{k} reached the producer:\n{env}");
    }
    for k in ["VAULT_PASSWORD=", "VAULT_PASSWORD_FILE=", "VAULT_PASSWORD_COMMAND="] {
        assert!(!env.lines().any(|l| l.starts_with(k)), "{k} reached the producer:\n{env}");
    }
}
