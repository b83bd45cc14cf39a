//! Finding snapshots (tags, hosts, `latest`, id prefixes), listing their
//! contents, excludes and partial restores.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Three snapshots of three directories `s1`..`s3` with tags and hosts:
/// s1 (host h1, tag a), s2 (host h2, tag b), s3 (host h1, tags a and b).
fn three_snapshots() -> (Vault, Vec<PathBuf>, Vec<String>) {
    let v = Vault::init();
    let mut dirs = Vec::new();
    let mut ids = Vec::new();
    for (i, opts) in [
        vec!["--host", "h1", "--tag", "a"],
        vec!["--host", "h2", "--tag", "b"],
        vec!["--host", "h1", "--tag", "a", "--tag", "b"],
    ]
    .iter()
    .enumerate()
    {
        let d = v.path(&format!("s{}", i + 1));
        write(&d.join(format!("file{}.txt", i + 1)), format!("content {}\n", i + 1).as_bytes());
        let s = v.snapshot(&[&d], opts);
        ids.push(s["snapshot_id"].as_str().unwrap().to_string());
        dirs.push(d);
    }
    (v, dirs, ids)
}

fn ids_of(list: &[Value]) -> Vec<String> {
    list.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn snapshots_json_lists_all_oldest_first_with_their_fields() {
    let (v, dirs, ids) = three_snapshots();
    let list = v.snapshots(&[]);
    assert_eq!(ids_of(&list), ids, "oldest first");
    for (i, s) in list.iter().enumerate() {
        let id = s["id"].as_str().unwrap();
        assert!(is_hex64(id), "{s}");
        let short = s["short_id"].as_str().expect("short_id");
        assert!(!short.is_empty() && id.starts_with(short) && short.len() < id.len(), "{s}");
        assert!(s["time"].as_str().is_some_and(|t| t.starts_with("20")), "time: {s}");
        assert!(is_hex64(s["tree"].as_str().unwrap_or("")), "tree: {s}");
        assert!(s["user"].is_string(), "user: {s}");
        assert_eq!(s["paths"], serde_json::json!([dirs[i].to_str().unwrap()]), "{s}");
        assert_eq!(s["parent"], Value::Null, "different paths, no parent: {s}");
        assert_eq!(s["summary"]["files_new"], 1, "{s}");
        assert_eq!(s["summary"]["bytes_read"], 10, "{s}");
    }
    assert_eq!(list[0]["host"], "h1");
    assert_eq!(list[1]["host"], "h2");
    assert_eq!(list[2]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(list[0]["tags"], serde_json::json!(["a"]));

    // Plain output mentions every snapshot's short id.
    let out = v.cmd().arg("snapshots").run().ok().stdout_str();
    for s in &list {
        assert!(out.contains(s["short_id"].as_str().unwrap()), "plain listing misses {}:\n{out}", s["short_id"]);
    }
}

#[test]
fn tag_and_host_filters_select_snapshots() {
    let (v, _, ids) = three_snapshots();
    assert_eq!(ids_of(&v.snapshots(&["--tag", "a"])), vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(ids_of(&v.snapshots(&["--tag", "b"])), vec![ids[1].clone(), ids[2].clone()]);
    assert_eq!(ids_of(&v.snapshots(&["--host", "h2"])), vec![ids[1].clone()]);
    assert_eq!(ids_of(&v.snapshots(&["--host", "h1", "--tag", "b"])), vec![ids[2].clone()]);
    assert!(v.snapshots(&["--tag", "nope"]).is_empty());
    assert!(v.snapshots(&["--host", "nope"]).is_empty());
}

#[test]
fn latest_honours_host_and_tag_filters() {
    let (v, dirs, _) = three_snapshots();
    let dump = |extra: &[&str], path: &Path| v.cmd().arg("dump").arg("latest").args(extra).arg(path).run();
    assert_eq!(dump(&[], &dirs[2].join("file3.txt")).ok().stdout, b"content 3\n");
    assert_eq!(dump(&["--host", "h2"], &dirs[1].join("file2.txt")).ok().stdout, b"content 2\n");

    let t = v.path("t-h2");
    v.restore("latest", &t, &["--host", "h2"]).ok();
    assert_eq!(fs::read(restored(&t, &dirs[1]).join("file2.txt")).unwrap(), b"content 2\n");
    assert!(!restored(&t, &dirs[2]).exists(), "latest --host h2 is not the newest snapshot");

    let lines = v.cmd().args(["ls", "latest", "--tag", "a", "--host", "h1"]).run().ok().stdout_str();
    assert!(lines.contains("file3.txt"), "{lines}");
    let lines = v.cmd().args(["ls", "latest", "--host", "h1", "--tag", "b"]).run().ok().stdout_str();
    assert!(lines.contains("file3.txt") && !lines.contains("file1.txt"), "{lines}");

    v.cmd().args(["ls", "latest", "--host", "nope"]).run().failed().stderr_has("latest");
}

#[test]
fn unique_id_prefix_selects_a_snapshot() {
    let (v, dirs, ids) = three_snapshots();
    for (i, id) in ids.iter().enumerate() {
        // The shortest prefix that is unique among the three.
        let n = (1..=64).find(|&n| ids.iter().filter(|o| o.starts_with(&id[..n])).count() == 1).unwrap();
        let prefix = &id[..n.max(4)];
        let out = v.cmd().args(["dump", prefix]).arg(dirs[i].join(format!("file{}.txt", i + 1))).run().ok();
        assert_eq!(out.stdout, format!("content {}\n", i + 1).as_bytes());
        // Full ids work too.
        let lines = v.ls(id, None);
        assert!(
            lines.contains(&dirs[i].join(format!("file{}.txt", i + 1)).to_string_lossy().into_owned()),
            "{lines:?}"
        );
    }
}

#[test]
fn unknown_and_ambiguous_ids_are_refused() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"x\n");
    // Snapshot until two ids share their first hex digit (at most 17).
    let mut ids: Vec<String> = Vec::new();
    let shared = loop {
        let id = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
        if let Some(o) = ids.iter().find(|o| o.as_bytes()[0] == id.as_bytes()[0]) {
            break o[..1].to_string();
        }
        ids.push(id);
        assert!(ids.len() <= 16);
    };
    v.cmd().args(["ls", &shared]).run().code_is(1).stderr_has("ambiguous").stderr_has(&shared);

    let unknown = (0..u32::MAX).map(|i| format!("{i:08x}")).find(|p| !ids.iter().any(|id| id.starts_with(p))).unwrap();
    v.cmd().args(["ls", &unknown]).run().code_is(1).stderr_has(&unknown);
    v.cmd().args(["restore", &unknown, "--target"]).arg(v.path("t")).run().code_is(1).stderr_has(&unknown);
    assert!(!v.path("t").join("tmp").exists());
}

/// A small tree with one entry of each common kind.
fn kinds_tree(src: &Path) {
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("sub/b.txt"), b"bravo!\n");
    write(&src.join("sub/deeper/c.bin"), &random_bytes(5, 1000));
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    mkfifo(&src.join("pipe"));
}

#[test]
fn ls_lists_absolute_paths_recursively() {
    let v = Vault::init();
    let src = v.path("src");
    kinds_tree(&src);
    v.snapshot(&[&src], &[]);
    let s = |rel: &str| {
        if rel.is_empty() { src.to_string_lossy().into_owned() } else { src.join(rel).to_string_lossy().into_owned() }
    };

    let lines: BTreeSet<String> = v.ls("latest", None).into_iter().collect();
    for rel in ["", "a.txt", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/c.bin", "link", "pipe"] {
        assert!(lines.contains(&s(rel)), "ls misses {}: {lines:#?}", s(rel));
    }
    // The parents of the source path are listed too, and nothing else.
    assert!(lines.iter().all(|l| l.starts_with('/')), "{lines:#?}");
    assert!(
        lines.contains(&*src.parent().unwrap().to_string_lossy()),
        "the parent of the source is listed: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| s("").starts_with(l.as_str()) || l.starts_with(&s(""))),
        "unexpected entries: {lines:#?}"
    );

    let sub: BTreeSet<String> = v.ls("latest", Some(&src.join("sub"))).into_iter().collect();
    assert!(sub.contains(&s("sub/b.txt")) && sub.contains(&s("sub/deeper/c.bin")), "{sub:#?}");
    assert!(!sub.contains(&s("a.txt")), "ls PATH lists only below PATH: {sub:#?}");

    v.cmd().args(["ls", "latest"]).arg(src.join("nope")).run().failed().stderr_has("nope");
}

#[test]
fn ls_json_reports_types_and_sizes() {
    let v = Vault::init();
    let src = v.path("src");
    kinds_tree(&src);
    v.snapshot(&[&src], &[]);
    let out = v.cmd().args(["ls", "--json", "latest"]).run().ok();
    let mut by_path = std::collections::BTreeMap::new();
    for line in out.stdout_str().lines().filter(|l| !l.trim().is_empty()) {
        let o: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {line:?} is not JSON: {e}"));
        if let Some(p) = o["path"].as_str() {
            by_path.insert(p.to_string(), o);
        }
    }
    let get = |rel: &str| {
        by_path.get(&*src.join(rel).to_string_lossy()).unwrap_or_else(|| panic!("no {rel} in {by_path:#?}"))
    };
    for (rel, ty) in [("a.txt", "file"), ("sub", "dir"), ("sub/b.txt", "file"), ("link", "symlink"), ("pipe", "fifo")] {
        assert_eq!(get(rel)["type"], ty, "{rel}: {}", get(rel));
    }
    assert_eq!(get("a.txt")["size"], 6);
    assert_eq!(get("sub/b.txt")["size"], 7);
    assert_eq!(get("sub/deeper/c.bin")["size"], 1000);
    for o in by_path.values() {
        for k in ["mode", "uid", "gid", "mtime"] {
            assert!(o.get(k).is_some_and(|x| !x.is_null()), "{k} missing in {o}");
        }
    }
}

#[test]
fn excludes_and_exclude_file_leave_out_matching_paths() {
    let v = Vault::init();
    let src = v.path("src");
    for rel in [
        "keep.txt",
        "app.log",
        "sub/deep.log",
        "sub/keep2.txt",
        "cache/big.bin",
        "top.bak",
        "sub/deep.bak",
        "notes.tmp",
        "sub/skip_me/x.txt",
        "sub/keep_me/y.txt",
        "# temporary files",
    ] {
        write(&src.join(rel), rel.as_bytes());
    }
    let exfile = v.path("excludes");
    fs::write(&exfile, format!("# temporary files\n\n*.tmp\n{}\n   \n# end\n", src.join("sub/skip_me").display()))
        .unwrap();
    let top_bak = format!("{}/*.bak", src.display());
    let cache = src.join("cache").to_string_lossy().into_owned();
    v.snapshot(
        &[&src],
        &["--exclude", "*.log", "--exclude", &cache, "--exclude", &top_bak, "--exclude-file", exfile.to_str().unwrap()],
    );

    let lines: BTreeSet<String> = v.ls("latest", None).into_iter().collect();
    let has = |rel: &str| lines.contains(&*src.join(rel).to_string_lossy());
    // "# temporary files" would match the comment line if comments were
    // taken as patterns.
    for rel in ["keep.txt", "sub/keep2.txt", "sub/deep.bak", "sub/keep_me/y.txt", "# temporary files"] {
        assert!(has(rel), "{rel} must be kept: {lines:#?}");
    }
    for rel in [
        "app.log",
        "sub/deep.log",
        "cache",
        "cache/big.bin",
        "top.bak",
        "notes.tmp",
        "sub/skip_me",
        "sub/skip_me/x.txt",
    ] {
        assert!(!has(rel), "{rel} must be excluded: {lines:#?}");
    }
}

#[test]
fn restore_include_and_exclude_select_files() {
    let v = Vault::init();
    let src = v.path("src");
    for rel in ["a.txt", "b.bin", "sub/c.txt", "sub/d.bin", "other/e.bin"] {
        write(&src.join(rel), rel.as_bytes());
    }
    v.snapshot(&[&src], &[]);

    let t = v.path("t-include");
    v.restore("latest", &t, &["--include", "*.txt"]).ok();
    let r = restored(&t, &src);
    assert_eq!(fs::read(r.join("a.txt")).unwrap(), b"a.txt");
    assert_eq!(fs::read(r.join("sub/c.txt")).unwrap(), b"sub/c.txt");
    let files: Vec<_> = walk(&t).into_iter().filter(|p| t.join(p).is_file()).collect();
    assert_eq!(files.len(), 2, "only the *.txt files are restored: {files:?}");

    let t = v.path("t-exclude");
    v.restore("latest", &t, &["--exclude", "*.bin"]).ok();
    let r = restored(&t, &src);
    assert!(r.join("a.txt").exists() && r.join("sub/c.txt").exists());
    assert!(!r.join("b.bin").exists() && !r.join("sub/d.bin").exists() && !r.join("other/e.bin").exists());
}

#[test]
fn restore_of_a_subpath_puts_its_contents_directly_in_the_target() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("top.txt"), b"top\n");
    write(&src.join("sub/c.txt"), b"charlie\n");
    write(&src.join("sub/inner/d.txt"), b"delta\n");
    v.snapshot(&[&src], &[]);

    let t = v.path("t");
    v.restore(&format!("latest:{}", src.join("sub").display()), &t, &[]).ok();
    assert_eq!(fs::read(t.join("c.txt")).unwrap(), b"charlie\n");
    assert_eq!(fs::read(t.join("inner/d.txt")).unwrap(), b"delta\n");
    let mut names = listing(&t);
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("c.txt"), "inner".into()], "nothing but the subpath's contents");

    // A subpath that isn't in the snapshot is an error naming it.
    v.restore(&format!("latest:{}", src.join("nope").display()), &v.path("t2"), &[]).failed().stderr_has("nope");
}

#[test]
fn parent_is_the_latest_snapshot_of_the_same_host_and_paths_or_the_one_given() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(30, 200_000));
    write(&src.join("b.txt"), b"bravo\n");
    let other = v.src("other");
    write(&other.join("c.txt"), b"charlie\n");

    let first = v.snapshot(&[&src], &["--host", "h1"]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    // A snapshot of other paths in between is no parent.
    v.snapshot(&[&other], &["--host", "h1"]);
    let again = v.snapshot(&[&src], &["--host", "h1"]);
    assert_eq!(count(&again, "files_unmodified"), 2, "the snapshot of the same host and paths is the parent: {again}");
    let list = v.snapshots(&[]);
    assert_eq!(list[2]["parent"], first_id.as_str());

    // Another host: no parent, every file read.
    let h2 = v.snapshot(&[&src], &["--host", "h2"]);
    assert_eq!(count(&h2, "files_unmodified"), 0, "a snapshot of another host is no parent: {h2}");
    assert_eq!(count(&h2, "bytes_read"), 200_006, "{h2}");

    // Unless given explicitly.
    let h2p = v.snapshot(&[&src], &["--host", "h3", "--parent", &first_id[..12]]);
    assert_eq!(count(&h2p, "files_unmodified"), 2, "--parent is used: {h2p}");
    assert_eq!(count(&h2p, "bytes_read"), 0, "{h2p}");
    assert_eq!(v.snapshots(&[]).last().unwrap()["parent"], first_id.as_str());

    // An unknown parent is an error.
    v.cmd()
        .arg("snapshot")
        .arg(&src)
        .args(["--parent", "00000000deadbeef"])
        .run()
        .failed()
        .stderr_has("00000000deadbeef");
}

#[test]
fn one_file_system_stays_on_the_source_file_system() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("here.txt"), b"here\n");
    let mnt = src.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (ok, err) = sh(
        "mount",
        &["-t".as_ref(), "tmpfs".as_ref(), "-o".as_ref(), "size=1m".as_ref(), "tmpfs".as_ref(), mnt.as_os_str()],
    );
    if !ok {
        eprintln!("note: skipping the --one-file-system test: cannot mount a tmpfs ({})", err.trim());
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            if !sh("umount", &[self.0.as_os_str()]).0 {
                let _ = sh("umount", &["-l".as_ref(), self.0.as_os_str()]);
            }
        }
    }
    let _guard = Umount(mnt.clone());
    write(&mnt.join("there.txt"), b"on another file system\n");

    v.snapshot(&[&src], &["--tag", "all"]);
    let all: BTreeSet<String> =
        v.cmd().args(["ls", "latest", "--tag", "all"]).run().ok().stdout_str().lines().map(str::to_string).collect();
    assert!(all.contains(&*mnt.join("there.txt").to_string_lossy()), "without -x the mount is crossed: {all:#?}");

    v.snapshot(&[&src], &["--one-file-system", "--tag", "one"]);
    let one: BTreeSet<String> =
        v.cmd().args(["ls", "latest", "--tag", "one"]).run().ok().stdout_str().lines().map(str::to_string).collect();
    assert!(one.contains(&*src.join("here.txt").to_string_lossy()), "{one:#?}");
    assert!(
        !one.contains(&*mnt.join("there.txt").to_string_lossy()),
        "--one-file-system must not cross into the mount: {one:#?}"
    );
}

#[test]
fn relative_source_paths_are_stored_as_absolute_paths() {
    let v = Vault::init();
    let src = v.src("rel");
    write(&src.join("inner/f.txt"), b"relative\n");
    let s = v.cmd().args(["snapshot", "--json", "rel/inner"]).current_dir(v.sources.path()).run().ok().json();
    let abs = src.join("inner");
    let list = v.snapshots(&[]);
    assert_eq!(list[0]["paths"], serde_json::json!([abs.to_str().unwrap()]), "{list:?}");
    assert_eq!(list[0]["id"], s["snapshot_id"]);
    let lines = v.ls("latest", None);
    assert!(lines.contains(&abs.join("f.txt").to_string_lossy().into_owned()), "{lines:#?}");

    // A relative restore target is relative to the working directory.
    let work = v.path("work");
    fs::create_dir(&work).unwrap();
    v.cmd().args(["restore", "latest", "--target", "out"]).current_dir(&work).run().ok();
    assert_eq!(fs::read(restored(&work.join("out"), &abs).join("f.txt")).unwrap(), b"relative\n");
}
