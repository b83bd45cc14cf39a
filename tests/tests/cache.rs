//! The local index cache: disposable, shared between processes, optional.

mod common;

use std::fs;

use common::*;

#[test]
fn deleting_the_cache_between_commands_changes_nothing() {
    let v = Vault::init();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(1, 700_000));
    write(&src.join("d/b.txt"), b"bravo\n");
    let stamp = ancestor_stamp(&src);
    let s1 = v.snapshot(&[&src], &[]);
    assert!(v.cache.exists(), "the cache dir given in VAULT_CACHE_DIR is used");

    v.drop_cache();
    let t1 = v.path("t1");
    v.restore("latest", &t1, &["--verify"]).ok();
    assert_trees_equal(&src, &restored(&t1, &src), false);

    // A snapshot after losing the cache still dedups against the repository.
    v.drop_cache();
    let s2 = v.snapshot(&[&src], &["--force"]);
    assert_no_new_blobs(&s2, &stamp, &ancestor_stamp(&src));
    assert_eq!(count(&s2, "files_new") + count(&s2, "files_changed") + count(&s2, "files_unmodified"), 2, "{s2}");

    // Another new file, cache gone again, then restore the newest.
    write(&src.join("c.bin"), &random_bytes(2, 300_000));
    v.drop_cache();
    let s3 = v.snapshot(&[&src], &[]);
    assert_eq!(count(&s3, "files_new"), 1, "{s3}");
    v.drop_cache();
    let t3 = v.path("t3");
    v.restore("latest", &t3, &[]).ok();
    assert_trees_equal(&src, &restored(&t3, &src), false);

    let ids = v.snapshot_ids();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], s1["snapshot_id"].as_str().unwrap());
}

#[test]
fn concurrent_snapshots_on_one_repository_and_cache_both_succeed() {
    let v = Vault::init();
    // Warm the cache so both processes want it.
    let warm = v.path("warm");
    write(&warm.join("w.txt"), b"warm\n");
    v.snapshot(&[&warm], &[]);

    let (a, b) = (v.path("a"), v.path("b"));
    for i in 0..4 {
        write(&a.join(format!("a{i}.bin")), &random_bytes(10 + i, 600_000));
        write(&b.join(format!("b{i}.bin")), &random_bytes(20 + i, 600_000));
    }
    // Shared content, so both runs race to store the same blobs.
    write(&a.join("shared.bin"), &random_bytes(99, 500_000));
    write(&b.join("shared.bin"), &random_bytes(99, 500_000));

    let ra = v.cmd().arg("snapshot").arg(&a).spawn();
    let rb = v.cmd().arg("snapshot").arg(&b).spawn();
    let (oa, ob) = (ra.wait(), rb.wait());
    oa.ok();
    ob.ok();

    assert_eq!(v.snapshot_ids().len(), 3);
    v.drop_cache();
    for (dir, host_spec) in [(&a, "a"), (&b, "b")] {
        let t = v.path(&format!("t-{host_spec}"));
        let id = v
            .snapshots(&[])
            .into_iter()
            .find(|s| s["paths"][0] == dir.to_str().unwrap())
            .unwrap_or_else(|| panic!("no snapshot of {}", dir.display()))["id"]
            .as_str()
            .unwrap()
            .to_string();
        v.restore(&id, &t, &[]).ok();
        assert_trees_equal(dir, &restored(&t, dir), false);
    }
}

#[test]
fn no_cache_works_and_writes_no_cache() {
    let v = Vault::new();
    let nc = |c: Cmd| c.arg("--no-cache");
    nc(v.cmd().arg("init")).run().ok();
    let src = v.src("src");
    write(&src.join("a.bin"), &random_bytes(3, 500_000));
    let stamp = ancestor_stamp(&src);
    nc(v.cmd().args(["snapshot"]).arg(&src)).run().ok();
    // A second run without a cache still finds the parent and the blobs.
    let s = nc(v.cmd().args(["snapshot", "--json"]).arg(&src)).run().ok().json();
    assert_eq!(count(&s, "files_unmodified"), 1, "{s}");
    assert_no_new_blobs(&s, &stamp, &ancestor_stamp(&src));
    let t = v.path("t");
    nc(v.cmd().arg("restore").arg("latest").arg("--target").arg(&t)).run().ok();
    assert_eq!(fs::read(restored(&t, &src).join("a.bin")).unwrap(), random_bytes(3, 500_000));
    assert!(
        !v.cache.exists() || fs::read_dir(&v.cache).unwrap().next().is_none(),
        "--no-cache wrote into the cache dir {}",
        v.cache.display()
    );
}

#[test]
fn cache_dir_option_overrides_the_environment() {
    let v = Vault::init();
    let other = v.path("other-cache");
    let src = v.path("src");
    write(&src.join("a.txt"), b"a\n");
    v.drop_cache();
    v.cmd().arg("--cache-dir").arg(&other).arg("snapshot").arg(&src).run().ok();
    assert!(other.exists() && fs::read_dir(&other).unwrap().next().is_some(), "--cache-dir is used");
    assert!(!v.cache.exists(), "the VAULT_CACHE_DIR cache is not used when --cache-dir is given");
}
