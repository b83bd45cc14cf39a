//! Bad input and damage: each must give a clear error naming what is wrong,
//! and must not lose what can still be read.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

// ---------------------------------------------------------------------------
// Opening

#[test]
fn wrong_password_exits_12() {
    let v = Vault::init();
    let out = v.cmd().env("VAULT_PASSWORD", "not the password").arg("snapshots").run();
    out.code_is(12).stderr_has("wrong password");
}

#[test]
fn missing_repository_exits_10_and_names_it() {
    let v = Vault::new();
    let out = v.cmd().arg("snapshots").run().code_is(10);
    assert!(out.stderr_str().contains(&*v.repo.to_string_lossy()), "the error names the location:\n{}", out.explain());
    assert!(!v.repo.exists(), "opening must not create the repository");
}

#[test]
fn directory_with_unrelated_files_is_not_a_repository() {
    let v = Vault::new();
    write(&v.repo.join("notes.txt"), b"my notes\n");
    v.cmd().arg("snapshots").run().code_is(10).stderr_has("not a vault repository");
    assert_eq!(fs::read(v.repo.join("notes.txt")).unwrap(), b"my notes\n");
}

/// A hostile repository can name a sparse file of many GiB like a
/// snapshot or an index segment. Reading it whole took a minute and 10 GB
/// of memory before being refused; it must be refused from its size, with
/// an error that names it, and the rest of the repository stay usable.
#[test]
fn oversized_snapshot_and_index_files_are_refused_by_size_and_named() {
    let v = Vault::init();
    let src = v.src("a.txt");
    write(&src, b"lost with its snapshot\n");
    let first = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    write(&src, b"kept\n");
    v.snapshot(&[&src], &[]);
    let victim = &v.repo.join("snapshots").join(&first);
    fs::File::options().write(true).open(victim).unwrap().set_len(5 << 30).unwrap();
    let name = file_name(victim);
    // This machine's cache kept the snapshot as it was written: the copy
    // proves itself against the snapshot's id and stands in for the object.
    let out = v.cmd().arg("snapshots").run().ok().stderr_has("2 snapshots");
    assert!(out.stdout_str().contains(&first[..8]), "{}", out.explain());
    // Elsewhere (no copy), the object itself is read: refused by its size.
    v.drop_cache();
    let started = std::time::Instant::now();
    let out = v.cmd().arg("snapshots").run().ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the size alone refuses it");
    out.line_with_prefix_has(&["warning:"], &name)
        .stderr_has("5368709120 bytes, more than any snapshot can hold")
        .stderr_has("1 snapshots");
    let out = v.cmd().arg("check").run().code_is(1);
    let report = out.stdout_str();
    assert!(
        report.lines().any(|l| l.starts_with("error:") && l.contains(&name) && l.contains("more than any snapshot")),
        "check names the snapshot:\n{}",
        out.explain()
    );
    fs::remove_file(victim).unwrap();

    // An index segment that large: named, and the snapshot still restores
    // after the index is rebuilt from the pack headers.
    let segs = v.repo_files("index");
    let seg = &segs[0];
    fs::File::options().write(true).open(seg).unwrap().set_len(3 << 30).unwrap();
    v.drop_cache();
    let out = v.cmd().arg("check").run().code_is(1);
    let report = out.stdout_str();
    assert!(
        report.lines().any(|l| l.starts_with("error:")
            && l.contains(&file_name(seg))
            && l.contains("3221225472 bytes, more than any index segment can hold")),
        "check names the segment:\n{}",
        out.explain()
    );
    fs::remove_file(seg).unwrap();
    v.cmd().args(["repair", "index"]).run().ok();
    let target = v.path("target");
    v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &src)).unwrap(), b"kept\n");
}

/// Nothing in the repository is read unless it is a regular file: a FIFO
/// named like a snapshot hung `vault snapshots` in `open(2)` for good (no
/// writer ever comes). It must be passed over at once, with a warning that
/// names it, and `check` must report it.
#[test]
fn a_fifo_named_like_a_snapshot_is_named_and_hangs_nothing() {
    let v = Vault::init();
    let src = v.src("a.txt");
    write(&src, b"kept\n");
    v.snapshot(&[&src], &[]);
    let fifo = v.repo.join("snapshots").join("ab".repeat(32));
    mkfifo(&fifo);
    let within = std::time::Duration::from_secs(20);
    let out = v.cmd().arg("snapshots").spawn().wait_within(within).ok();
    out.line_with_prefix_has(&["warning:"], &fifo.display().to_string())
        .stderr_has("a FIFO, not a regular file")
        .stderr_has("1 snapshots");
    let out = v.cmd().arg("check").spawn().wait_within(within).code_is(1);
    assert!(
        out.stdout_str().lines().any(|l| l.starts_with("error:") && l.contains(&"ab".repeat(32)) && l.contains("FIFO")),
        "check names the FIFO:\n{}",
        out.explain()
    );
    // Nothing else suffers from it.
    let target = v.path("target");
    v.cmd().args(["restore", "latest", "--target"]).arg(&target).spawn().wait_within(within).ok();
    assert_eq!(fs::read(restored(&target, &src)).unwrap(), b"kept\n");
}

/// A symbolic link to `/dev/zero` named like an index segment is never
/// followed: an endless object is refused by what it is, not read until
/// a size limit stops it, and the error names it.
#[test]
fn a_link_to_dev_zero_as_an_index_segment_is_refused_and_named() {
    let v = Vault::init();
    let src = v.src("a.txt");
    write(&src, b"kept\n");
    v.snapshot(&[&src], &[]);
    let link = v.repo.join("index").join("cd".repeat(32));
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    v.drop_cache();
    let within = std::time::Duration::from_secs(20);
    // Skipped as an unusable segment; what the others list restores.
    let target = v.path("target");
    let out = v.cmd().args(["restore", "latest", "--target"]).arg(&target).spawn().wait_within(within).ok();
    out.line_with_prefix_has(&["warning:"], &link.display().to_string())
        .stderr_has("a symbolic link, not a regular file");
    assert_eq!(fs::read(restored(&target, &src)).unwrap(), b"kept\n");
    let out = v.cmd().arg("check").spawn().wait_within(within).code_is(1);
    assert!(
        out.stdout_str()
            .lines()
            .any(|l| l.starts_with("error:") && l.contains(&"cd".repeat(32)) && l.contains("symbolic link")),
        "check names the link:\n{}",
        out.explain()
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/dev/zero"), "left as it was");
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let v = Vault::new();
    write(&v.repo.join("notes.txt"), b"my notes\n");
    let out = v.cmd().arg("init").run().code_is(1);
    assert!(out.stderr_str().contains("error"), "{}", out.explain());
    assert!(
        out.stderr_str().contains("not empty") || out.stderr_str().contains(&*v.repo.to_string_lossy()),
        "the refusal says why:\n{}",
        out.explain()
    );
    assert_eq!(listing(&v.repo), vec![std::ffi::OsString::from("notes.txt")], "init must not write anything there");

    // A second init of a real repository is refused too, and the
    // repository still opens with its password.
    let w = Vault::init();
    w.cmd().arg("init").run().code_is(1);
    w.cmd().env("VAULT_PASSWORD", "another password").arg("init").run().code_is(1);
    w.cmd().arg("snapshots").run().ok();
}

#[test]
fn newer_format_version_asks_for_an_upgrade() {
    let v = Vault::init();
    let cfg = v.repo.join("config");
    let mut bytes = fs::read(&cfg).unwrap();
    assert_eq!(&bytes[..8], b"VAULTCFG");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&cfg, &bytes).unwrap();
    v.cmd().arg("snapshots").run().failed().stderr_has("99").stderr_has("upgrade");
}

// ---------------------------------------------------------------------------
// Damaged packs

/// A repository with two snapshots of `src`: the first of the `keep*`
/// files, the second adds `victim.bin`, whose content alone is in the data
/// packs the second snapshot wrote.
struct PackSetup {
    v: Vault,
    src: PathBuf,
    keep: Vec<(PathBuf, Vec<u8>)>,
    victim_packs: Vec<PathBuf>,
}

fn pack_setup() -> PackSetup {
    let v = Vault::init();
    let src = v.path("src");
    let keep = vec![
        (src.join("keep1.bin"), random_bytes(100, 150_000)),
        (src.join("keep2.txt"), b"a small text file\n".to_vec()),
        (src.join("sub/keep3.bin"), random_bytes(101, 1_500_000)),
    ];
    for (p, d) in &keep {
        write(p, d);
    }
    v.snapshot(&[&src], &[]);
    let before = v.repo_files("data");
    write(&src.join("victim.bin"), &random_bytes(102, 400_000));
    v.snapshot(&[&src], &[]);
    let victim_packs: Vec<_> = v.repo_files("data").into_iter().filter(|p| !before.contains(p)).collect();
    assert!(!victim_packs.is_empty(), "the second snapshot wrote data packs");
    PackSetup { v, src, keep, victim_packs }
}

/// Restores the latest snapshot and checks: failure, the victim is named,
/// every `keep*` file restored byte-identical and not named.
fn restore_after_damage(s: &PackSetup) -> Out {
    let target = s.v.path("target");
    let out = s.v.restore("latest", &target, &[]).failed().error_line_has("victim.bin");
    let err = out.stderr_str();
    for (p, d) in &s.keep {
        let r = restored(&target, p);
        assert!(!err.contains(&*file_name(p)), "{} is intact but reported:\n{}", file_name(p), out.explain());
        assert_eq!(
            fs::read(&r).unwrap_or_else(|e| panic!("{}: {e}\n{}", r.display(), out.explain())),
            *d,
            "{} differs",
            r.display()
        );
    }
    out
}

#[test]
fn deleted_data_pack_fails_only_the_files_it_held() {
    let s = pack_setup();
    for p in &s.victim_packs {
        fs::remove_file(p).unwrap();
    }
    let out = restore_after_damage(&s);
    assert_names_a_pack(&out, &s.victim_packs);
}

/// The error names (a prefix of) one of the damaged packs.
#[track_caller]
fn assert_names_a_pack(out: &Out, packs: &[PathBuf]) {
    let err = out.stderr_str();
    assert!(
        packs.iter().any(|p| err.contains(&file_name(p)[..8])),
        "the error names the pack: {packs:?}\n{}",
        out.explain()
    );
}

#[test]
fn truncated_data_pack_fails_only_the_files_it_held() {
    let s = pack_setup();
    for p in &s.victim_packs {
        let len = fs::metadata(p).unwrap().len();
        fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len / 2).unwrap();
    }
    let out = restore_after_damage(&s);
    assert_names_a_pack(&out, &s.victim_packs);
}

#[test]
fn bit_flip_in_data_pack_is_detected_and_fails_only_the_files_it_held() {
    let s = pack_setup();
    // The biggest new pack surely holds victim data in its middle.
    let pack = s.victim_packs.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let len = fs::metadata(pack).unwrap().len() as usize;
    flip_bit(pack, len / 2);
    let out = restore_after_damage(&s);
    let err = out.stderr_str().to_lowercase();
    let name = file_name(pack);
    assert!(
        err.contains(&name[..8]) || err.contains("authentic"),
        "the error names the damaged pack {name} or says authentication failed:\n{}",
        out.explain()
    );
}

#[test]
fn verify_detects_nothing_wrong_in_a_healthy_restore() {
    let s = pack_setup();
    let target = s.v.path("target");
    s.v.restore("latest", &target, &["--verify"]).ok();
    assert_eq!(fs::read(restored(&target, &s.src).join("victim.bin")).unwrap(), random_bytes(102, 400_000));
}

// ---------------------------------------------------------------------------
// Damaged index

/// Snapshot 1 holds only `other/victim.bin`; snapshot 2 of `src` holds the
/// `keep*` files and a copy of `victim.bin`, whose blobs dedup against
/// snapshot 1. So the index segments written by snapshot 1 list the
/// victim's blobs and none of snapshot 2's trees. Returns them.
fn index_setup() -> (PackSetup, Vec<PathBuf>) {
    let v = Vault::init();
    let victim = random_bytes(102, 400_000);
    let other = v.path("other");
    write(&other.join("victim.bin"), &victim);
    v.snapshot(&[&other], &[]);
    let first_segments = v.repo_files("index");
    assert!(!first_segments.is_empty(), "the first snapshot wrote an index segment");

    let src = v.path("src");
    let keep = vec![
        (src.join("keep1.bin"), random_bytes(100, 150_000)),
        (src.join("keep2.txt"), b"a small text file\n".to_vec()),
        (src.join("sub/keep3.bin"), random_bytes(101, 1_500_000)),
    ];
    for (p, d) in &keep {
        write(p, d);
    }
    write(&src.join("victim.bin"), &victim);
    let s2 = v.snapshot(&[&src], &[]);
    assert!(count(&s2, "bytes_added_raw") < 2_000_000, "victim.bin dedups against the first snapshot: {s2}");
    (PackSetup { v, src, keep, victim_packs: vec![] }, first_segments)
}

#[test]
fn deleted_index_segment_reports_the_files_it_listed() {
    let (s, segments) = index_setup();
    for p in &segments {
        fs::remove_file(p).unwrap();
    }
    s.v.drop_cache();
    restore_after_damage(&s);
}

#[test]
fn index_segment_with_a_flipped_bit_is_named_and_its_files_reported() {
    let (s, segments) = index_setup();
    for p in &segments {
        let len = fs::metadata(p).unwrap().len() as usize;
        flip_bit(p, len / 2);
    }
    s.v.drop_cache();
    let mut out = restore_after_damage(&s);
    for p in &segments {
        out = out.line_with_prefix_has(&["error:", "warning:"], &file_name(p)[..8]);
    }
}

// ---------------------------------------------------------------------------
// Restore targets

#[test]
fn restore_target_below_a_regular_file_fails_clearly() {
    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"data\n");
    v.snapshot(&[&src], &[]);
    let plain = v.path("plainfile");
    fs::write(&plain, b"I am a file\n").unwrap();
    let out = v.restore("latest", &plain.join("sub"), &[]).failed();
    assert!(out.stderr_str().contains("error"), "{}", out.explain());
    out.stderr_has("plainfile");
    assert_eq!(fs::read(&plain).unwrap(), b"I am a file\n", "the file in the way is untouched");
}

#[test]
fn malicious_tree_names_cannot_escape_the_target() {
    use vault_store::SnapshotId;
    use vault_store::format::BlobKind;
    use vault_store::format::tree::{Node, NodeKind, Tree};

    let v = Vault::init();
    let src = v.path("src");
    write(&src.join("f.txt"), b"data\n");
    let s = v.snapshot(&[&src], &[]);
    let honest = SnapshotId::from_hex(s["snapshot_id"].as_str().unwrap()).unwrap();

    let repo = v.open_repository();

    let file = |name: &[u8], data: &[u8]| {
        let id = repo.store_single_blob(BlobKind::Data, data).unwrap();
        let mut n = Node::new(name.to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.size = data.len() as u64;
        n.content = vec![id];
        n
    };
    let dir = |name: &[u8], nodes: Vec<Node>| {
        let id = repo.store_single_blob(BlobKind::Tree, &Tree::new(nodes).encode()).unwrap();
        let mut n = Node::new(name.to_vec(), NodeKind::Dir);
        n.mode = 0o755;
        n.subtree = Some(id);
        n
    };
    let mut nodes = vec![
        dir(b"..", vec![file(b"escaped_dotdot", b"evil 1\n")]),
        file(b"../escaped_slash", b"evil 2\n"),
        file(b"a/b", b"evil 3\n"),
        dir(b"a", vec![]),
        file(b"ok.txt", b"fine\n"),
        file(b"x\0y", b"evil 4\n"),
    ];
    // Keep the hostile names: build the tree by hand, sorted as a writer
    // would, without `Tree::new`'s normalisation.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let root = Tree { version: 1, nodes };
    let root_id = repo.store_single_blob(BlobKind::Tree, &root.encode()).unwrap();
    let mut snap = repo.load_snapshot(&honest).unwrap();
    snap.tree = root_id;
    snap.parent = None;
    snap.tags = vec!["evil".into()];
    let evil = repo.save_snapshot(&snap).unwrap().to_hex();
    drop(repo);

    let outer = tempfile::TempDir::new().unwrap();
    let target = outer.path().join("a/target");
    fs::create_dir_all(&target).unwrap();
    let before = walk(outer.path());

    let out = v.restore(&evil, &target, &[]).failed().error_line_has("a/b").error_line_has("escaped_slash");
    let err = out.stderr_str();
    assert!(
        err.lines().any(|l| l.starts_with("error:") && l.contains("..") && !l.contains("escaped_slash")),
        "the entry `..` is named:\n{}",
        out.explain()
    );
    assert!(
        err.contains("x\0y")
            || err.contains("x\\0y")
            || err.contains("x\\u{0}y")
            || err.contains("x\\x00y")
            || err.contains("NUL"),
        "the entry with a NUL is named:\n{}",
        out.explain()
    );

    let after: Vec<_> =
        walk(outer.path()).into_iter().filter(|p| p == Path::new("a/target") || !p.starts_with("a/target")).collect();
    assert_eq!(before, after, "the restore created something outside its target");
    assert_eq!(fs::read(target.join("ok.txt")).unwrap(), b"fine\n", "the honest entry is still restored");
    let inside = walk(&target);
    assert!(
        inside.iter().all(|p| p == Path::new("ok.txt") || p == Path::new("a")),
        "only the honest entries are restored: {inside:?}"
    );
    assert!(!target.join("a/b").exists());
}

/// Batches are restored while the walk plans the next one. Hard links
/// whose first copy is in an early batch, symlinks in every batch, and a
/// damaged multiply-linked file must come out as with one batch at a time:
/// the tree equal to its source, and the damaged file and its other link
/// reported while every other file is restored.
#[test]
fn restore_in_many_batches_keeps_links_and_reports_a_failed_link_across_batches() {
    let v = Vault::init();
    let src = v.src("src");
    let first = random_bytes(7, 200_000);
    write(&src.join("a/first"), &first);
    for i in 0..300 {
        write(&src.join(format!("m/f{i:03}")), format!("file {i}\n").repeat(i + 1).as_bytes());
        if i % 50 == 0 {
            std::os::unix::fs::symlink(format!("f{i:03}"), src.join(format!("m/link{i:03}"))).unwrap();
        }
    }
    fs::create_dir_all(src.join("z")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("z/second")).unwrap();
    v.snapshot(&[&src], &[]);

    // With 600 descriptors a batch holds 88 files: four batches.
    let restore =
        |target: &Path| v.cmd().args(["restore", "latest", "--target"]).arg(target).with_open_file_limit(600).run();
    let target = v.path("target");
    restore(&target).ok();
    let back = restored(&target, &src);
    assert_trees_equal(&src, &back, false);
    use std::os::unix::fs::MetadataExt;
    let (a, z) = (fs::metadata(back.join("a/first")).unwrap(), fs::metadata(back.join("z/second")).unwrap());
    assert_eq!((a.dev(), a.ino()), (z.dev(), z.ino()), "z/second is a hard link of a/first again");

    // Damage a/first's blob alone.
    let repo = v.open_repository();
    let loc = repo.index().get(&repo.keys().blob_id(&first)).unwrap().expect("a/first's blob is indexed");
    let pack = v.repo.join(vault_store::backend::FileType::Data.path(&loc.pack.to_hex()));
    drop(repo);
    flip_bit(&pack, loc.entry.offset as usize + 100);
    let target = v.path("target-damaged");
    let out = restore(&target).failed().error_line_has("a/first").error_line_has("z/second");
    out.stderr_has("that file failed");
    let back = restored(&target, &src);
    for i in 0..300 {
        let name = format!("m/f{i:03}");
        assert_eq!(fs::read(back.join(&name)).unwrap(), fs::read(src.join(&name)).unwrap(), "{name}");
    }
    assert_eq!(fs::read_link(back.join("m/link250")).unwrap(), Path::new("f250"));
}

// ---------------------------------------------------------------------------
// Sources that misbehave

#[test]
fn source_file_that_grows_while_read_exits_3_and_keeps_what_was_read() {
    let v = Vault::init();
    let child = Sleeper::start();
    let status = PathBuf::from(format!("/proc/{}/status", child.pid()));
    assert_eq!(fs::metadata(&status).unwrap().len(), 0, "/proc files report size 0");

    let out = v.cmd().arg("snapshot").arg(&status).run().code_is(3);
    assert!(out.stderr_str().contains(&*status.to_string_lossy()), "the warning names the file:\n{}", out.explain());
    assert_eq!(v.snapshots(&[]).len(), 1, "the snapshot is recorded");
    let dumped = v.cmd().arg("dump").arg("latest").arg(&status).run().ok();
    assert!(!dumped.stdout.is_empty(), "the content read is stored");
    assert!(
        String::from_utf8_lossy(&dumped.stdout).contains("Name:"),
        "the content is the file's: {}",
        dumped.stdout_str()
    );
}

#[test]
fn unreadable_source_file_exits_3_and_the_rest_is_saved() {
    let v = Vault::init();
    let src = v.path("src");
    let files = [(src.join("a.txt"), b"alpha\n".to_vec()), (src.join("d/b.bin"), random_bytes(7, 70_000))];
    for (p, d) in &files {
        write(p, d);
    }
    let child = Sleeper::start();
    let mem = PathBuf::from(format!("/proc/{}/mem", child.pid()));
    assert!(fs::read(&mem).is_err(), "reading /proc/PID/mem from 0 fails");

    let out = v.cmd().args(["snapshot", "--json"]).arg(&src).arg(&mem).run().code_is(3);
    let mem_s = mem.to_string_lossy().into_owned();
    assert!(out.stderr_str().contains(&mem_s), "the error names the unreadable file:\n{}", out.explain());
    let s = out.json();
    assert!(count(&s, "errors") >= 1, "{s}");
    let paths: Vec<_> =
        s["error_paths"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap_or("").to_string()).collect();
    assert!(paths.contains(&mem_s), "error_paths lists {mem_s}: {s}");
    assert!(s["error_paths"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{s}");

    let snaps = v.snapshots(&[]);
    assert_eq!(snaps.len(), 1, "the snapshot is recorded");
    assert_eq!(snaps[0]["id"], s["snapshot_id"]);
    let target = v.path("target");
    v.restore("latest", &target, &[]).ok();
    for (p, d) in &files {
        assert_eq!(fs::read(restored(&target, p)).unwrap(), *d);
    }
}

// ---------------------------------------------------------------------------
// Disk full

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let (ok, _) = sh("umount", &[self.0.as_os_str()]);
        if !ok {
            let _ = sh("umount", &[OsStr::new("-l"), self.0.as_os_str()]);
        }
    }
}

#[test]
fn full_repository_disk_fails_the_snapshot_and_keeps_the_repository_usable() {
    let mut v = Vault::new();
    let mnt = v.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let (ok, err) = sh(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new("tmpfs"),
            OsStr::new("-o"),
            OsStr::new("size=3m"),
            OsStr::new("tmpfs"),
            mnt.as_os_str(),
        ],
    );
    if !ok {
        eprintln!("note: skipping the disk-full test: cannot mount a tmpfs ({})", err.trim());
        return;
    }
    let _mount = Mount(mnt.clone());
    fill_the_repository_disk(&mut v, &mnt);
}

/// The same on ext4, where packs are written with O_DIRECT: the error is
/// the disk's, and no partial pack or temporary file is left.
#[test]
fn full_ext4_repository_disk_fails_the_snapshot_and_keeps_the_repository_usable() {
    let mut v = Vault::new();
    let (image, mnt) = (v.path("disk.img"), v.path("mnt"));
    fs::create_dir(&mnt).unwrap();
    fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let (ok, err) = sh("mkfs.ext4", &[OsStr::new("-q"), OsStr::new("-F"), image.as_os_str()]);
    if !ok {
        eprintln!("note: skipping the ext4 disk-full test: mkfs.ext4 failed ({})", err.trim());
        return;
    }
    let (ok, err) = sh("mount", &[OsStr::new("-o"), OsStr::new("loop"), image.as_os_str(), mnt.as_os_str()]);
    if !ok {
        eprintln!("note: skipping the ext4 disk-full test: cannot loop-mount an image ({})", err.trim());
        return;
    }
    let _mount = Mount(mnt.clone());
    fill_the_repository_disk(&mut v, &mnt);
}

/// Puts a repository on the small file system at `mnt`, snapshots a little,
/// then more than fits: that snapshot fails naming the full disk, and the
/// first one is still listed and restores.
fn fill_the_repository_disk(v: &mut Vault, mnt: &Path) {
    v.repo = mnt.join("repo");
    v.cmd().arg("init").run().ok();

    let small = v.path("small");
    write(&small.join("note.txt"), b"fits easily\n");
    let first = v.snapshot(&[&small], &[])["snapshot_id"].as_str().unwrap().to_string();

    let big = v.path("big");
    write(&big.join("huge.bin"), &random_bytes(9, 20 << 20));
    v.cmd().arg("snapshot").arg(&big).run().failed().stderr_has("No space left on device");

    assert_eq!(v.snapshot_ids(), vec![first.clone()], "only the first snapshot is listed");
    let temporary: Vec<_> = ["data", "tree"]
        .into_iter()
        .flat_map(|dir| v.repo_files(dir))
        .filter(|f| f.file_name().unwrap().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left behind: {temporary:?}");
    v.cmd().arg("check").run().ok();
    let target = v.path("target");
    v.restore(&first, &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &small).join("note.txt")).unwrap(), b"fits easily\n");
}
