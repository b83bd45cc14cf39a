//! Regression tests, each named after what it guards (findings of the first
//! code review).

mod common;

use std::fs;

use common::*;

/// A symlink already sitting where the snapshot has a directory must be
/// replaced, never followed: nothing may be written through it.
#[test]
fn restore_replaces_a_symlink_where_a_directory_goes() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("d/file"), b"restored content\n");
    v.snapshot(&[&src], &[]);

    let outside = v.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = v.path("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();

    let spec = format!("latest:{}", src.display());
    v.restore(&spec, &target, &[]).ok();
    assert!(listing(&outside).is_empty(), "nothing written through the symlink: {:?}", listing(&outside));
    let d = fs::symlink_metadata(target.join("d")).unwrap();
    assert!(d.is_dir(), "the symlink was replaced by a directory");
    assert_eq!(fs::read(target.join("d/file")).unwrap(), b"restored content\n");
}

/// Whatever sits where a file is restored (a symlink to a file elsewhere, a
/// fifo, a longer file) is replaced: nothing is written through the
/// symlink, the fifo doesn't block the restore, no old bytes remain.
#[test]
fn restore_replaces_whatever_sits_at_a_file_path() {
    let v = Vault::init();
    let src = v.src("src");
    for name in ["link", "fifo", "longer"] {
        write(&src.join(name), format!("restored {name}\n").as_bytes());
    }
    v.snapshot(&[&src], &[]);

    let outside = v.path("outside.txt");
    fs::write(&outside, b"must stay as it is\n").unwrap();
    let target = v.path("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
    mkfifo(&target.join("fifo"));
    fs::write(target.join("longer"), vec![b'x'; 100_000]).unwrap();

    let spec = format!("latest:{}", src.display());
    v.restore(&spec, &target, &[]).ok();
    assert_eq!(fs::read(&outside).unwrap(), b"must stay as it is\n", "nothing written through the symlink");
    for name in ["link", "fifo", "longer"] {
        let m = fs::symlink_metadata(target.join(name)).unwrap();
        assert!(m.file_type().is_file(), "{name} is a regular file now");
        assert_eq!(fs::read(target.join(name)).unwrap(), format!("restored {name}\n").as_bytes());
    }
}

/// Restoring again into a target that holds an earlier restore (a re-run
/// after a failure, say) replaces everything, hard links included.
/// Replacing one link of a file changes the inode behind the other (its
/// link count, hence its change time), which must not make the restore
/// take the other link for an entry it made itself and keep it.
#[test]
fn restore_twice_into_one_target_replaces_hard_linked_files() {
    use std::os::unix::fs::MetadataExt;
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a/one"), b"first version\n");
    fs::create_dir_all(src.join("b")).unwrap();
    fs::hard_link(src.join("a/one"), src.join("b/two")).unwrap();
    v.snapshot(&[&src], &[]);
    let target = v.path("target");
    let spec = format!("latest:{}", src.display());
    v.restore(&spec, &target, &[]).ok();
    assert_eq!(fs::read(target.join("b/two")).unwrap(), b"first version\n");

    fs::write(src.join("a/one"), b"second version\n").unwrap();
    v.snapshot(&[&src], &[]);
    v.restore(&spec, &target, &[]).ok();
    for name in ["a/one", "b/two"] {
        assert_eq!(fs::read(target.join(name)).unwrap(), b"second version\n", "{name}");
    }
    let (one, two) = (fs::metadata(target.join("a/one")).unwrap(), fs::metadata(target.join("b/two")).unwrap());
    assert_eq!((one.ino(), one.nlink()), (two.ino(), 2), "still one file with two links");
}

/// A restore holds each batch's files open: under a low open-file limit
/// the batches shrink and every file is still restored with its metadata.
#[test]
fn restore_under_a_low_open_file_limit_restores_everything() {
    let v = Vault::init();
    let src = v.src("src");
    for i in 0..300 {
        write(&src.join(format!("d{}/f{i:03}", i % 3)), format!("file {i}\n").repeat(i + 1).as_bytes());
    }
    write(&src.join("big.bin"), &random_bytes(5, 3_000_000));
    v.snapshot(&[&src], &[]);
    let target = v.path("target");
    v.cmd().args(["restore", "latest", "--target"]).arg(&target).with_open_file_limit(400).run().ok();
    assert_trees_equal(&src, &restored(&target, &src), false);
}

/// When the parent snapshot's trees can't be read (its index segment is
/// gone), a new snapshot still succeeds by reading every file, and restores.
#[test]
fn snapshot_with_unreadable_parent_reads_everything() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(1, 300_000));
    write(&src.join("b.txt"), b"hello\n");
    v.snapshot(&[&src], &[]);
    for f in v.repo_files("index") {
        fs::remove_file(f).unwrap();
    }
    v.drop_cache();
    let out = v.cmd().args(["snapshot", "--json"]).arg(&src).run().ok();
    assert!(out.stderr_str().contains("parent snapshot"), "the unreadable parent is reported:\n{}", out.explain());
    let s = out.json();
    assert_eq!(count(&s, "files_new"), 2, "{s}");
    assert!(count(&s, "bytes_read") >= 300_006, "{s}");
    let target = v.path("target");
    v.restore(s["snapshot_id"].as_str().unwrap(), &target, &[]).ok();
    assert_same_file(&src.join("a.bin"), &restored(&target, &src.join("a.bin")));
}

/// A relative exclude pattern containing `/` matches at any depth (restic).
#[test]
fn exclude_relative_pattern_with_slash_matches_at_any_depth() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("sub/skip.txt"), b"skip\n");
    write(&src.join("sub/keep.txt"), b"keep\n");
    write(&src.join("other/skip.txt"), b"other\n");
    v.snapshot(&[&src], &["--exclude", "sub/skip.txt"]);
    let listed = v.ls("latest", None);
    let has = |p: &std::path::Path| listed.iter().any(|l| l == &p.display().to_string());
    assert!(!has(&src.join("sub/skip.txt")), "{listed:?}");
    assert!(has(&src.join("sub/keep.txt")), "{listed:?}");
    assert!(has(&src.join("other/skip.txt")), "{listed:?}");
}

/// `--tag a,b` gives two tags, as in restic.
#[test]
fn tags_may_be_comma_separated() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("f"), b"x");
    v.snapshot(&[&src], &["--tag", "daily,db"]);
    let snaps = v.snapshots(&["--tag", "db"]);
    assert_eq!(snaps.len(), 1);
    let tags: Vec<&str> = snaps[0]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tags, ["daily", "db"]);
}

/// The library's restore, called from every worker of the global thread
/// pool at once (as a caller's `par_iter` might), must finish: a worker
/// that waited for a batch's own thread would not run that batch's jobs.
#[test]
fn restore_called_from_every_worker_of_the_global_pool_finishes() {
    use std::path::Path;
    use vault_store::restorer::{self, RestoreOptions, RestoreProgress, find_node};

    let v = Vault::init();
    let src = v.src("src");
    for i in 0..40 {
        write(&src.join(format!("f{i:02}")), format!("file {i}\n").repeat(50).as_bytes());
    }
    v.snapshot(&[&src], &[]);
    let repo = v.open_repository();
    let (_, snap) = repo.find_snapshot("latest", None, &[]).unwrap();
    let node = find_node(&repo, &snap.tree, "/").unwrap();
    let targets = v.path("targets");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let files = rayon::broadcast(|w| {
                let target = targets.join(w.index().to_string());
                let opts = RestoreOptions::default();
                restorer::restore(&repo, &node, Path::new("/"), &target, &opts, &RestoreProgress::default())
                    .map(|stats| stats.files)
                    .map_err(|e| e.to_string())
            });
            done_tx.send(files).unwrap();
        });
        match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(files) => assert!(files.iter().all(|f| *f == Ok(40)), "every restore restored all: {files:?}"),
            Err(_) => {
                // A deadlock: the scope could never join, so end the process.
                eprintln!("restores called from the pool's workers hang");
                std::process::abort();
            }
        }
    });
    for w in 0..rayon::current_num_threads() {
        let got = restored(&targets.join(w.to_string()), &src);
        assert_eq!(fs::read(got.join("f39")).unwrap(), "file 39\n".repeat(50).as_bytes());
    }
}
