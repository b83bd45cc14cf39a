//! Restoring device nodes and sockets, with and without the privilege to
//! make devices. Nothing is skipped silently: a device that can't be made
//! is an error line naming its path and the reason, the restore exits 3,
//! and every other entry is restored.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;

/// The unprivileged user the restore runs as.
const NOBODY: u32 = 65534;

/// A source tree with regular files, a character and a block device (as
/// made by `mknod`, which needs root) and a socket. False when devices
/// can't be made here (not root, or no `CAP_MKNOD`).
fn build_tree(src: &Path) -> bool {
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("sub/big.bin"), &random_bytes(7, 3 << 20));
    write(&src.join("sub/deeper/c.txt"), b"gamma\n");
    let (ok, err) = sh("mknod", &[src.join("null3").as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()]);
    if !ok {
        eprintln!("note: can't make a device node here ({err}); not testing devices");
        return false;
    }
    let (ok, err) = sh("mknod", &[src.join("sub/loop200").as_os_str(), "b".as_ref(), "7".as_ref(), "200".as_ref()]);
    assert!(ok, "mknod of a block device: {err}");
    // The listener is dropped at once; its socket file stays.
    std::os::unix::net::UnixListener::bind(src.join("sub/sock")).expect("binding a socket in the source tree");
    assert!(fs::symlink_metadata(src.join("sub/sock")).unwrap().file_type().is_socket());
    true
}

const REGULAR: [&str; 3] = ["a.txt", "sub/big.bin", "sub/deeper/c.txt"];
const DEVICES: [&str; 2] = ["null3", "sub/loop200"];

#[track_caller]
fn assert_files_restored(src: &Path, out: &Path) {
    for rel in REGULAR {
        assert_same_file(&src.join(rel), &out.join(rel));
    }
    let sock = fs::symlink_metadata(out.join("sub/sock")).expect("the socket was restored");
    assert!(sock.file_type().is_socket(), "sub/sock was restored as {}", kind_of(&sock.file_type()));
}

/// Asserts that the restore exited 3 and named each device that it could
/// not make, why, and nothing else; the rest of the tree is in place.
#[track_caller]
fn assert_devices_reported(out: Out, src: &Path, target: &Path) {
    let out = out.code_is(3);
    let dest = restored(target, src);
    for rel in DEVICES {
        let path = dest.join(rel);
        out.stderr_str()
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains(&format!("{}: ", path.display())))
            .filter(|l| l.contains("Operation not permitted") && l.contains("CAP_MKNOD"))
            .unwrap_or_else(|| panic!("no error line names {} and why:\n{}", path.display(), out.explain()));
        assert!(fs::symlink_metadata(&path).is_err(), "{} exists", path.display());
    }
    let errors = out.stderr_str().lines().filter(|l| l.starts_with("error: /")).count();
    assert_eq!(errors, DEVICES.len(), "one error line per device and no more:\n{}", out.explain());
    out.error_line_has("2 paths could not be restored");
    assert_files_restored(src, &dest);
}

#[test]
fn devices_and_sockets_restore_as_root_and_are_reported_without_mknod() {
    let v = Vault::init();
    let src = v.src("src");
    if !build_tree(&src) {
        return;
    }
    let s = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s, "others"), 3, "two devices and a socket: {s}");

    // As root: everything comes back as it was, devices with their numbers.
    let target = v.path("as-root");
    v.restore("latest", &target, &[]).ok();
    let out = restored(&target, &src);
    assert_trees_equal(&src, &out, true);
    for rel in DEVICES {
        let (a, b) = (fs::symlink_metadata(src.join(rel)).unwrap(), fs::symlink_metadata(out.join(rel)).unwrap());
        assert_eq!(kind_of(&b.file_type()), kind_of(&a.file_type()), "{rel}");
        assert_eq!(b.rdev(), a.rdev(), "{rel}: device number");
    }
    assert!(fs::symlink_metadata(out.join("null3")).unwrap().file_type().is_char_device());
    assert!(fs::symlink_metadata(out.join("sub/loop200")).unwrap().file_type().is_block_device());

    // Root without CAP_MKNOD (as in most containers).
    let target = v.path("no-mknod");
    let res = v
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run_under("setpriv", &["--inh-caps=-mknod", "--bounding-set=-mknod"])
        .run();
    if res.stderr_str().contains("setpriv:") {
        eprintln!("note: setpriv can't drop CAP_MKNOD here: {}", res.stderr_str());
    } else {
        assert_devices_reported(res, &src, &target);
    }

    // An ordinary user, with a copy of the repository and cache it can use.
    let theirs = tempfile::TempDir::new().unwrap();
    let (repo, cache, target) = (theirs.path().join("repo"), theirs.path().join("cache"), theirs.path().join("t"));
    let (ok, err) = sh("cp", &["-a".as_ref(), v.repo.as_os_str(), repo.as_os_str()]);
    assert!(ok, "copying the repository: {err}");
    let owner = format!("{NOBODY}:{NOBODY}");
    let (ok, err) = sh("chown", &["-R".as_ref(), owner.as_ref(), theirs.path().as_os_str()]);
    assert!(ok, "chown: {err}");
    let ids = NOBODY.to_string();
    let res = v
        .cmd()
        .env("VAULT_REPOSITORY", &repo)
        .env("VAULT_CACHE_DIR", &cache)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .run_under("setpriv", &["--reuid", &ids, "--regid", &ids, "--clear-groups"])
        .run();
    assert_devices_reported(res, &src, &target);
    let a = fs::metadata(restored(&target, &src).join("a.txt")).unwrap();
    assert_eq!(a.uid(), NOBODY, "the restore ran unprivileged");
}
