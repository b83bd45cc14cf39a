//! The command line itself: version, completions, passwords, options.

mod common;

use std::fs;

use common::*;

#[test]
fn version_prints_the_package_version() {
    let out = Cmd::vault().arg("--version").run().ok();
    let s = out.stdout_str();
    assert!(s.contains(env!("CARGO_PKG_VERSION")), "{}", out.explain());
    assert!(s.contains("vault"), "{}", out.explain());
}

#[test]
fn completion_scripts_are_printed() {
    let bash = Cmd::vault().args(["completion", "bash"]).run().ok().stdout_str();
    assert!(bash.contains("complete") && bash.contains("_vault"), "bash script:\n{bash}");
    for sub in ["snapshot", "restore", "snapshots"] {
        assert!(bash.contains(sub), "bash completion knows `{sub}`");
    }
    let zsh = Cmd::vault().args(["completion", "zsh"]).run().ok().stdout_str();
    assert!(zsh.contains("#compdef vault"), "zsh script:\n{zsh}");
    let fish = Cmd::vault().args(["completion", "fish"]).run().ok().stdout_str();
    assert!(fish.contains("complete -c vault"), "fish script:\n{fish}");
    Cmd::vault().args(["completion", "tcsh-or-so"]).run().failed();
}

#[test]
fn missing_password_without_a_terminal_is_a_clear_error() {
    let v = Vault::init();
    let out = v.cmd().env_remove("VAULT_PASSWORD").arg("snapshots").run().code_is(1);
    let out = out.stderr_has("password");
    assert!(
        !out.stderr_str().to_lowercase().contains("wrong password"),
        "no password is not a wrong one:\n{}",
        out.explain()
    );
}

#[test]
fn password_file_and_password_command_are_accepted() {
    let v = Vault::init();
    let pwfile = v.path("pw");
    fs::write(&pwfile, format!("{}\n", v.password)).unwrap();
    v.cmd().env_remove("VAULT_PASSWORD").arg("--password-file").arg(&pwfile).arg("snapshots").run().ok();
    v.cmd().env_remove("VAULT_PASSWORD").env("VAULT_PASSWORD_FILE", &pwfile).arg("snapshots").run().ok();

    let cmd = format!("echo '{}'", v.password);
    v.cmd().env_remove("VAULT_PASSWORD").args(["--password-command", &cmd, "snapshots"]).run().ok();
    v.cmd().env_remove("VAULT_PASSWORD").env("VAULT_PASSWORD_COMMAND", &cmd).arg("snapshots").run().ok();

    // A wrong password from a file is still a wrong password.
    let bad = v.path("bad");
    fs::write(&bad, "nope\n").unwrap();
    v.cmd().env_remove("VAULT_PASSWORD").arg("--password-file").arg(&bad).arg("snapshots").run().code_is(12);
    // A missing password file is named.
    v.cmd()
        .env_remove("VAULT_PASSWORD")
        .arg("--password-file")
        .arg(v.path("no-such-file"))
        .arg("snapshots")
        .run()
        .failed()
        .stderr_has("no-such-file");
    // A command that prints more than the password is read to its end
    // (it is not stuck on a full pipe) and only its first line counts.
    let chatty = format!("echo '{}'; head -c 1000000 /dev/zero", v.password);
    v.cmd().env_remove("VAULT_PASSWORD").args(["--password-command", &chatty, "snapshots"]).run().ok();
    // A failing password command is an error, not an empty password.
    v.cmd().env_remove("VAULT_PASSWORD").args(["--password-command", "sh -c 'exit 7'", "snapshots"]).run().failed();
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"f\n");
    v.snapshot(&[&src], &[]);
    let before = Cmd::vault()
        .env("VAULT_PASSWORD", &v.password)
        .env("VAULT_CACHE_DIR", &v.cache)
        .arg("-r")
        .arg(&v.repo)
        .args(["snapshots", "--json"])
        .run()
        .ok()
        .json();
    let after = Cmd::vault()
        .env("VAULT_PASSWORD", &v.password)
        .env("VAULT_CACHE_DIR", &v.cache)
        .args(["snapshots", "--json", "--repo"])
        .arg(&v.repo)
        .run()
        .ok()
        .json();
    assert_eq!(before, after);
    assert_eq!(before.as_array().map(Vec::len), Some(1));
    // --json is global too.
    let global_json = v.cmd().args(["--json", "snapshots"]).run().ok().json();
    assert_eq!(global_json, before);
    // The option wins over the environment.
    let other = Vault::new();
    v.cmd().env("VAULT_REPOSITORY", &other.repo).arg("-r").arg(&v.repo).arg("snapshots").run().ok();
}

#[test]
fn quiet_snapshot_prints_nothing_on_success() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"f\n");
    let out = v.cmd().arg("-q").arg("snapshot").arg(&src).run().ok();
    assert!(out.stdout.is_empty(), "-q prints nothing:\n{}", out.explain());
    assert_eq!(v.snapshots(&[]).len(), 1);
}

#[test]
fn unknown_subcommand_or_option_is_a_usage_error() {
    let out = Cmd::vault().arg("frobnicate").run().failed();
    assert!(out.stderr_str().contains("frobnicate"), "{}", out.explain());
    Cmd::vault().args(["snapshots", "--no-such-option"]).run().failed().stderr_has("--no-such-option");
}

#[test]
fn init_rejects_bad_options_and_creates_nothing() {
    let v = Vault::new();
    v.cmd().args(["init", "--compression", "23"]).run().failed();
    v.cmd().args(["init", "--chunk-size", "banana"]).run().failed().stderr_has("banana");
    v.cmd().args(["init", "--pack-size", "12"]).run().failed();
    // A key no vault would open (Argon2 memory above 1 GiB, or below
    // Argon2's minimum) is not written.
    v.cmd().args(["init", "--kdf-memory", "1048577"]).run().code_is(2).stderr_has("kdf-memory");
    v.cmd().args(["init", "--kdf-memory", "7"]).run().code_is(2).stderr_has("kdf-memory");
    assert!(
        !v.repo.exists() || fs::read_dir(&v.repo).unwrap().next().is_none(),
        "a refused init leaves nothing behind"
    );
    // Sizes with suffixes are accepted.
    v.cmd().args(["init", "--chunk-size", "1M", "--pack-size", "16MiB", "--compression", "22"]).run().ok();
    v.cmd().arg("snapshots").run().ok();
}

/// Scripts cut output short (`vault snapshots | head -1`). With stdout
/// closed a command still does all its work and exits with its own status,
/// never a panic (101): a check that found damage exits 1, a forget removes
/// what it lists; a restore that failed files exits 3 when its stderr is
/// closed.
#[test]
fn closed_stdout_or_stderr_keeps_the_exit_status() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(3, 300_000));
    v.snapshot(&[&src], &[]);
    v.snapshot(&[&src], &["--force"]);

    let (status, err) = v.cmd().arg("snapshots").run_closed(true);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (status, err) = v.cmd().args(["snapshots", "--json"]).run_closed(true);
    assert_eq!(status.code(), Some(0), "{err}");

    let pack = v.repo_files("data").into_iter().next().expect("a data pack");
    fs::File::options().write(true).open(&pack).unwrap().set_len(1000).unwrap();
    let (status, err) = v.cmd().arg("check").run_closed(true);
    assert_eq!(status.code(), Some(1), "check found damage: {err}");
    let (status, err) = v.cmd().args(["check", "--json"]).run_closed(true);
    assert_eq!(status.code(), Some(1), "check --json found damage: {err}");
    let target = v.path("target");
    let (status, out) = v.cmd().args(["restore", "latest", "--target"]).arg(&target).run_closed(false);
    assert_eq!(status.code(), Some(3), "the restore failed a.bin: {out}");
    // A command that prints as it works still does all of it.
    let (status, err) = v.cmd().args(["forget", "--keep-last", "1"]).run_closed(true);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(v.snapshot_ids().len(), 1, "forget removed what it listed: {err}");
}

/// The JSON listing is written an element at a time: an empty repository
/// still gives an empty array, and a listing parses as one array.
#[test]
fn snapshots_json_is_one_array_empty_or_not() {
    let v = Vault::init();
    assert_eq!(v.cmd().args(["snapshots", "--json"]).run().ok().stdout_str(), "[]\n");
    let src = v.path("src");
    write(&src.join("f.txt"), b"f\n");
    v.snapshot(&[&src], &[]);
    v.snapshot(&[&src], &[]);
    let out = v.cmd().args(["snapshots", "--json"]).run().ok();
    assert_eq!(out.stdout_str().lines().count(), 1);
    assert_eq!(out.json().as_array().map(Vec::len), Some(2));
}

#[test]
fn password_command_does_not_see_vault_password() {
    let v = Vault::new();
    // The command prints VAULT_PASSWORD when it sees it, else its own
    // password: init with both set must store the command's.
    let cmd = r#"printf '%s\n' "${VAULT_PASSWORD:-from-the-command}""#;
    v.cmd().args(["--password-command", cmd, "init", "--kdf-memory", "1024"]).run().ok();
    v.cmd().env("VAULT_PASSWORD", "from-the-command").arg("snapshots").run().ok();
    v.cmd().arg("snapshots").run().code_is(12);
}

/// A password is bytes (docs/format.md section 5.2): one that is not UTF-8
/// works from VAULT_PASSWORD and from a password file, byte for byte.
#[test]
fn a_password_that_is_not_utf8_opens_the_repository() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let v = Vault::new();
    let pw = OsStr::from_bytes(b"\xff\xfepw");
    let with = |pw: &OsStr| v.cmd().env("VAULT_PASSWORD", pw);
    with(pw).args(["init", "--kdf-memory", "1024"]).run().ok();

    let src = v.src("data");
    write(&src.join("f.txt"), b"some bytes\n");
    with(pw).arg("snapshot").arg(&src).run().ok();
    let target = v.path("target");
    with(pw).args(["restore", "latest", "--target"]).arg(&target).run().ok();
    assert_same_file(&src.join("f.txt"), &restored(&target, &src.join("f.txt")));

    // Other bytes are another password, and so is the UTF-8 a lossy
    // conversion would have made of these.
    with(OsStr::from_bytes(b"\xff\xfepx")).arg("snapshots").run().code_is(12);
    let lossy = OsString::from(String::from_utf8_lossy(pw.as_bytes()).into_owned());
    with(&lossy).arg("snapshots").run().code_is(12);

    // The same bytes from a password file.
    let pwfile = v.path("pw");
    fs::write(&pwfile, b"\xff\xfepw\n").unwrap();
    v.cmd().env_remove("VAULT_PASSWORD").arg("--password-file").arg(&pwfile).arg("snapshots").run().ok();
}
