//! Snapshot and restore a tree with every kind of entry and metadata vault
//! promises to keep, then check incremental snapshots.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const SPARSE_LEN: u64 = 150 << 20;

/// Builds the source tree; returns whether xattrs are supported here and
/// the number of regular files.
fn build_tree(src: &Path) -> (bool, u64) {
    fs::create_dir_all(src).unwrap();
    write(&src.join("small.txt"), b"hello, vault\n");
    write(&src.join("medium.bin"), &random_bytes(1, 200 * 1024));
    write(&src.join("big.bin"), &random_bytes(2, 6 * 1024 * 1024 + 12_345));
    write(&src.join("empty"), b"");
    fs::create_dir(src.join("emptydir")).unwrap();
    write(&src.join("nested/a/b/c/deep.txt"), b"deep down\n");
    write(&src.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name\n");
    std::os::unix::fs::symlink("small.txt", src.join("link_rel")).unwrap();
    std::os::unix::fs::symlink(src.join("small.txt"), src.join("nested/link_abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("dangling")).unwrap();
    write(&src.join("hard1"), &random_bytes(3, 5000));
    fs::hard_link(src.join("hard1"), src.join("nested/hard2")).unwrap();
    mkfifo(&src.join("fifo"));

    write(&src.join("private.txt"), b"secret\n");
    fs::set_permissions(src.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&src.join("exec.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    write(&src.join("setgid_dir/inside.txt"), b"inside\n");
    fs::set_permissions(src.join("setgid_dir"), fs::Permissions::from_mode(0o2755)).unwrap();
    write(&src.join("owned.txt"), b"owned by someone else\n");
    std::os::unix::fs::chown(src.join("owned.txt"), Some(1234), Some(5678)).unwrap();

    // A big sparse file with a little data in the middle.
    {
        let mut f = fs::File::create(src.join("sparse.img")).unwrap();
        f.set_len(SPARSE_LEN).unwrap();
        f.seek(SeekFrom::Start(SPARSE_LEN / 2 + 123)).unwrap();
        f.write_all(b"needle in a haystack").unwrap();
    }

    let xattrs = match xattr::set(src.join("small.txt"), "user.comment", b"a comment") {
        Ok(()) => {
            xattr::set(src.join("nested"), "user.comment", b"on a directory").unwrap();
            xattr::set(src.join("big.bin"), "user.empty", b"").unwrap();
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!("note: xattrs not supported on this file system; not checking them");
            false
        }
        Err(e) => panic!("setting an xattr: {e}"),
    };

    // Distinct mtimes with nanoseconds on everything, directories last and
    // deepest first so that later steps don't change them.
    let mut entries = walk(src);
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let (files, dirs): (Vec<PathBuf>, Vec<PathBuf>) =
        entries.into_iter().partition(|p| !fs::symlink_metadata(src.join(p)).unwrap().is_dir());
    for (i, rel) in files.iter().chain(dirs.iter()).enumerate() {
        set_mtime(&src.join(rel), 1_500_000_000 + 1000 * i as i64, 123_456_789 + i as u32);
    }
    set_mtime(src, 1_400_000_000, 987_654_321);

    let nfiles = walk(src).iter().filter(|p| fs::symlink_metadata(src.join(p)).unwrap().is_file()).count() as u64;
    (xattrs, nfiles)
}

#[test]
fn full_tree_round_trips_and_incremental_snapshots_read_only_changes() {
    let v = Vault::init();
    let src = v.src("src");
    let (xattrs, nfiles) = build_tree(&src);
    let stamp1 = ancestor_stamp(&src);

    // First snapshot: everything is new.
    let s1 = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s1, "files_new"), nfiles, "files_new of the first snapshot: {s1}");
    assert_eq!(count(&s1, "errors"), 0, "first snapshot had errors: {s1}");
    assert!(count(&s1, "blobs_added") > 0, "{s1}");
    let id1 = s1["snapshot_id"].as_str().unwrap().to_string();

    // Restore with --verify and compare everything.
    let target = v.path("restore1");
    v.restore(&id1, &target, &["--verify"]).ok();
    let out = restored(&target, &src);
    assert_trees_equal(&src, &out, xattrs);

    if xattrs {
        assert_eq!(xattr::get(out.join("small.txt"), "user.comment").unwrap().as_deref(), Some(&b"a comment"[..]));
        assert_eq!(xattr::get(out.join("nested"), "user.comment").unwrap().as_deref(), Some(&b"on a directory"[..]));
    }
    let h1 = fs::metadata(out.join("hard1")).unwrap();
    let h2 = fs::metadata(out.join("nested/hard2")).unwrap();
    assert_eq!((h1.dev(), h1.ino()), (h2.dev(), h2.ino()), "the hard-linked pair was restored as two files");
    assert_eq!(kind_of(&fs::symlink_metadata(out.join("fifo")).unwrap().file_type()), "fifo");
    assert_eq!(fs::read_link(out.join("nested/link_abs")).unwrap(), src.join("small.txt"));
    assert_eq!(fs::read_link(out.join("dangling")).unwrap(), Path::new("does/not/exist"));
    assert_eq!(fs::read(out.join(OsStr::from_bytes(b"caf\xe9"))).unwrap(), b"latin-1 name\n");
    let owned = fs::metadata(out.join("owned.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert_eq!(fs::metadata(out.join("setgid_dir")).unwrap().mode() & 0o7777, 0o2755);
    let sparse = fs::metadata(out.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_LEN);
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "the sparse file was restored with {} bytes allocated for {} bytes of mostly holes",
        sparse.blocks() * 512,
        SPARSE_LEN
    );
    // Restored times of directories survive the restore of their contents.
    let m = fs::metadata(&out).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_400_000_000, 987_654_321));

    // Second snapshot of the unchanged tree: the parent is found on its own
    // and nothing is read or added.
    let s2 = v.snapshot(&[&src], &[]);
    assert_no_new_blobs(&s2, &stamp1, &ancestor_stamp(&src));
    assert_eq!(count(&s2, "files_unmodified"), nfiles, "{s2}");
    assert_eq!(count(&s2, "files_new"), 0, "{s2}");
    assert_eq!(count(&s2, "files_changed"), 0, "{s2}");
    assert_eq!(count(&s2, "bytes_read"), 0, "{s2}");
    assert!(count(&s2, "bytes_total") >= SPARSE_LEN, "bytes_total covers every file: {s2}");
    let id2 = s2["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(id1, id2);
    let list = v.snapshots(&[]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], id2.as_str());
    assert_eq!(list[1]["parent"], id1.as_str(), "the second snapshot names the first as parent");

    // Change one file in place and append to another.
    let new_small = b"HELLO, VAULT\n".to_vec();
    fs::write(src.join("small.txt"), &new_small).unwrap();
    let mut medium = fs::read(src.join("medium.bin")).unwrap();
    let extra = random_bytes(4, 70_000);
    fs::OpenOptions::new().append(true).open(src.join("medium.bin")).unwrap().write_all(&extra).unwrap();
    medium.extend_from_slice(&extra);

    let s3 = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s3, "files_changed"), 2, "{s3}");
    assert_eq!(count(&s3, "files_new"), 0, "{s3}");
    assert_eq!(count(&s3, "files_unmodified"), nfiles - 2, "{s3}");
    assert!(count(&s3, "bytes_read") >= (new_small.len() + medium.len()) as u64, "{s3}");
    assert!(count(&s3, "bytes_read") < 2 << 20, "only the changed files are read: {s3}");
    let id3 = s3["snapshot_id"].as_str().unwrap().to_string();

    let target3 = v.path("restore3");
    v.restore(&id3, &target3, &[]).ok();
    let out3 = restored(&target3, &src);
    assert_eq!(fs::read(out3.join("small.txt")).unwrap(), new_small);
    assert_eq!(fs::read(out3.join("medium.bin")).unwrap(), medium);
    assert_trees_equal(&src, &out3, xattrs);

    // The first snapshot still restores the old contents.
    let target1b = v.path("restore1b");
    v.restore(&id1, &target1b, &["--include", "small.txt", "--include", "medium.bin"]).ok();
    let out1b = restored(&target1b, &src);
    assert_eq!(fs::read(out1b.join("small.txt")).unwrap(), b"hello, vault\n");
    assert_eq!(fs::read(out1b.join("medium.bin")).unwrap(), random_bytes(1, 200 * 1024));
}

#[test]
fn forced_snapshot_rereads_every_file_but_adds_nothing() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(10, 300_000));
    write(&src.join("b/c.bin"), &random_bytes(11, 100_000));
    let stamp = ancestor_stamp(&src);
    v.snapshot(&[&src], &[]);
    let s = v.snapshot(&[&src], &["--force"]);
    assert_eq!(count(&s, "files_unmodified"), 0, "--force reads every file: {s}");
    assert_eq!(count(&s, "bytes_read"), 400_000, "{s}");
    assert_no_new_blobs(&s, &stamp, &ancestor_stamp(&src));
}

#[test]
fn init_options_are_accepted_and_used() {
    // Small chunks: a 1 MiB file is cut into many blobs; level 0: stored raw.
    let v = Vault::init_with(&["--chunk-size", "64K", "--compression", "0", "--pack-size", "1MiB"]);
    let src = v.path("src");
    let data = random_bytes(20, 1 << 20);
    write(&src.join("f.bin"), &data);
    let s = v.snapshot(&[&src], &[]);
    let blobs = count(&s, "blobs_added");
    assert!(blobs >= 6, "a 1 MiB file with 64 KiB average chunks makes many blobs, got {blobs}: {s}");
    let target = v.path("t");
    v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &src).join("f.bin")).unwrap(), data);

    // Compressible data is smaller in the repository at the default level.
    let w = Vault::init();
    let src2 = w.path("src");
    write(&src2.join("zeros-ish.txt"), &b"all work and no play ".repeat(50_000));
    let s = w.snapshot(&[&src2], &[]);
    assert!(count(&s, "bytes_added") < count(&s, "bytes_added_raw") / 4, "compressible data is compressed: {s}");
}

#[test]
fn changes_hidden_from_size_and_mtime_are_still_detected() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("same_size.txt"), b"version 1\n");
    write(&src.join("renamed_over.txt"), b"original\n");
    write(&src.join("becomes_dir"), b"a file first\n");
    write(&src.join("untouched.txt"), b"untouched\n");
    for f in ["same_size.txt", "renamed_over.txt", "becomes_dir", "untouched.txt"] {
        set_mtime(&src.join(f), 1_600_000_000, 5);
    }
    v.snapshot(&[&src], &[]);

    // Same size, mtime put back: only the ctime tells.
    fs::write(src.join("same_size.txt"), b"version 2\n").unwrap();
    set_mtime(&src.join("same_size.txt"), 1_600_000_000, 5);
    // Replaced by another file (new inode) of the same size and mtime.
    write(&src.join("tmp-new"), b"replaced\n");
    set_mtime(&src.join("tmp-new"), 1_600_000_000, 5);
    fs::rename(src.join("tmp-new"), src.join("renamed_over.txt")).unwrap();
    // A file that became a directory.
    fs::remove_file(src.join("becomes_dir")).unwrap();
    write(&src.join("becomes_dir/inner.txt"), b"now a directory\n");

    let s = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s, "files_unmodified"), 1, "only untouched.txt is reused: {s}");
    let t = v.path("t");
    v.restore("latest", &t, &[]).ok();
    let r = restored(&t, &src);
    assert_eq!(fs::read(r.join("same_size.txt")).unwrap(), b"version 2\n");
    assert_eq!(fs::read(r.join("renamed_over.txt")).unwrap(), b"replaced\n");
    assert_eq!(fs::read(r.join("becomes_dir/inner.txt")).unwrap(), b"now a directory\n");
    assert_eq!(fs::read(r.join("untouched.txt")).unwrap(), b"untouched\n");
}

/// A restore plans a few thousand files at a time: a tree larger than one
/// batch, with a hard link and a symlink whose targets sit in an earlier
/// batch, restores whole, and an include still creates only the directories
/// it needs.
#[test]
fn tree_larger_than_one_restore_batch_round_trips() {
    let v = Vault::init();
    let src = v.src("src");
    for i in 0..3000 {
        write(&src.join(format!("a/f{i:04}")), format!("file a/{i}\n").as_bytes());
    }
    for i in 0..2500 {
        write(&src.join(format!("b/sub{}/g{i:04}", i % 7)), format!("file b/{i}\n").as_bytes());
    }
    write(&src.join("c/only/here.txt"), b"included\n");
    fs::hard_link(src.join("a/f0000"), src.join("b/sub0/zz-link-to-a")).unwrap();
    std::os::unix::fs::symlink("../a/f0001", src.join("b/zz-symlink")).unwrap();
    let mut entries = walk(&src);
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, rel) in entries.iter().enumerate() {
        set_mtime(&src.join(rel), 1_600_000_000 + i as i64, 1000 + i as u32);
    }
    set_mtime(&src, 1_500_000_000, 5);
    let s = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s, "errors"), 0, "{s}");
    let id = s["snapshot_id"].as_str().unwrap().to_string();

    let target = v.path("restore");
    let out = v.restore(&id, &target, &["--verify", "--json"]).ok();
    let summary = out.json();
    assert_eq!(count(&summary, "files"), 3000 + 2500 + 1 + 1, "{summary}");
    assert_eq!(count(&summary, "verified"), 3000 + 2500 + 1, "{summary}");
    let out = restored(&target, &src);
    assert_trees_equal(&src, &out, false);
    let h1 = fs::metadata(out.join("a/f0000")).unwrap();
    let h2 = fs::metadata(out.join("b/sub0/zz-link-to-a")).unwrap();
    assert_eq!((h1.dev(), h1.ino()), (h2.dev(), h2.ino()), "the hard link across batches became two files");
    assert_eq!(fs::read(out.join("b/zz-symlink")).unwrap(), b"file a/1\n");
    let m = fs::metadata(out.join("b/sub3")).unwrap();
    assert!(m.mtime() >= 1_600_000_000, "a directory's time was not restored");

    let target2 = v.path("restore-include");
    v.restore(&id, &target2, &["--include", "here.txt"]).ok();
    let out2 = restored(&target2, &src);
    assert_eq!(fs::read(out2.join("c/only/here.txt")).unwrap(), b"included\n");
    assert!(!out2.join("a").exists() && !out2.join("b").exists(), "an include created directories it does not need");
}

/// An unchanged file's xattrs are taken from the parent snapshot, which is
/// only right because setting one changes the ctime: a new or changed xattr
/// on an otherwise unchanged file must reach the next snapshot.
#[test]
fn xattr_change_on_unchanged_file_reaches_next_snapshot() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("keep.txt"), b"same content\n");
    write(&src.join("other.txt"), b"untouched\n");
    match xattr::set(src.join("keep.txt"), "user.v", b"one") {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!("note: xattrs not supported on this file system; skipping");
            return;
        }
        Err(e) => panic!("setting an xattr: {e}"),
    }
    xattr::set(src.join("other.txt"), "user.w", b"kept").unwrap();
    v.snapshot(&[&src], &[]);
    xattr::set(src.join("keep.txt"), "user.v", b"two").unwrap();
    xattr::set(src.join("keep.txt"), "user.added", b"new").unwrap();
    let s2 = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s2, "files_unmodified"), 1, "{s2}");
    let id2 = s2["snapshot_id"].as_str().unwrap().to_string();
    let target = v.path("restore");
    v.restore(&id2, &target, &[]).ok();
    let out = restored(&target, &src);
    assert_eq!(xattr::get(out.join("keep.txt"), "user.v").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(xattr::get(out.join("keep.txt"), "user.added").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(xattr::get(out.join("other.txt"), "user.w").unwrap().as_deref(), Some(&b"kept"[..]));
}
