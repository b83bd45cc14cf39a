//! Keys: several passwords for one repository, removing and changing them.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn key_list(v: &Vault, password: &str) -> Vec<Value> {
    let out = v.cmd().env("VAULT_PASSWORD", password).args(["key", "list", "--json"]).run().ok();
    match out.json() {
        Value::Array(a) => a,
        other => panic!("key list --json is not an array: {other}"),
    }
}

fn current_id(keys: &[Value]) -> String {
    let cur: Vec<_> = keys.iter().filter(|k| k["current"] == Value::Bool(true)).collect();
    assert_eq!(cur.len(), 1, "exactly one key is current: {keys:?}");
    cur[0]["id"].as_str().expect("key id").to_string()
}

#[test]
fn a_second_password_opens_the_repository_too() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"shared data\n");
    v.snapshot(&[&src], &[]);

    let pwfile = v.path("new-password");
    fs::write(&pwfile, "second password\n").unwrap();
    v.cmd().args(["key", "add", "--new-password-file"]).arg(&pwfile).run().ok();

    let with_first = key_list(&v, &v.password);
    let with_second = key_list(&v, "second password");
    assert_eq!(with_first.len(), 2, "{with_first:?}");
    assert_eq!(with_second.len(), 2, "{with_second:?}");
    for k in &with_first {
        assert!(is_hex64(k["id"].as_str().unwrap_or("")), "key id is 64 hex: {k}");
        assert!(k["created"].is_string(), "key has a creation time: {k}");
        assert!(k.get("host").is_some() && k.get("user").is_some(), "key has host and user: {k}");
    }
    let first_id = current_id(&with_first);
    let second_id = current_id(&with_second);
    assert_ne!(first_id, second_id, "each password opens with its own key");

    // Both passwords read the same data.
    for pw in [v.password.as_str(), "second password"] {
        let out = v.cmd().env("VAULT_PASSWORD", pw).args(["dump", "latest"]).arg(src.join("f.txt")).run().ok();
        assert_eq!(out.stdout, b"shared data\n");
    }

    // Removing the second key (while opened with the first) locks that
    // password out.
    v.cmd().args(["key", "remove", &second_id]).run().ok();
    v.cmd().env("VAULT_PASSWORD", "second password").arg("snapshots").run().code_is(12).stderr_has("wrong password");
    assert_eq!(key_list(&v, &v.password).len(), 1);
}

#[test]
fn the_last_key_cannot_be_removed() {
    let v = Vault::init();
    let keys = key_list(&v, &v.password);
    assert_eq!(keys.len(), 1);
    let id = current_id(&keys);
    let out = v.cmd().args(["key", "remove", &id]).run().failed();
    assert!(out.stderr_str().contains("error"), "{}", out.explain());
    assert!(
        out.stderr_str().to_lowercase().contains("last"),
        "the refusal says it is the last key:\n{}",
        out.explain()
    );
    assert_eq!(key_list(&v, &v.password).len(), 1, "the key is still there");
    assert!(v.repo.join("keys").join(&id).exists());
}

#[test]
fn removing_an_unknown_key_fails_and_names_it() {
    let v = Vault::init();
    v.cmd().args(["key", "remove", "0000000000000000deadbeef"]).run().failed().stderr_has("0000000000000000deadbeef");
    assert_eq!(key_list(&v, &v.password).len(), 1);
}

#[test]
fn passwd_switches_to_the_new_password() {
    let mut v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"kept across password change\n");
    v.snapshot(&[&src], &[]);
    let old_id = current_id(&key_list(&v, &v.password));

    let pwfile = v.path("new-password");
    fs::write(&pwfile, "brand new password\n").unwrap();
    v.cmd().args(["key", "passwd", "--new-password-file"]).arg(&pwfile).run().ok();

    let old = v.password.clone();
    v.cmd().env("VAULT_PASSWORD", &old).arg("snapshots").run().code_is(12).stderr_has("wrong password");

    v.password = "brand new password".into();
    let keys = key_list(&v, &v.password);
    assert_eq!(keys.len(), 1, "passwd replaces the key: {keys:?}");
    assert_ne!(current_id(&keys), old_id);
    let out = v.cmd().args(["dump", "latest"]).arg(src.join("f.txt")).run().ok();
    assert_eq!(out.stdout, b"kept across password change\n");
}
