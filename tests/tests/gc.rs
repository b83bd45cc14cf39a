//! `vault forget`, `vault prune` and the retention lock, end to end: what
//! is kept, what is freed, that nothing a snapshot needs is ever lost, also
//! when prune is killed at any point or runs beside snapshots.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A stdin snapshot at a given time; returns its id.
fn snapshot_at(v: &Vault, time: &str, data: &[u8], extra: &[&str]) -> String {
    let out = v
        .cmd()
        .args(["snapshot", "--json", "--stdin", "--stdin-name", "db.sql", "--time", time])
        .args(extra)
        .stdin(data.to_vec())
        .run()
        .ok();
    out.json()["snapshot_id"].as_str().unwrap().to_string()
}

/// Every file of the repository with its size (the repository listing).
fn listing(v: &Vault) -> BTreeMap<PathBuf, u64> {
    v.repo_files("").into_iter().map(|p| (p.clone(), fs::metadata(&p).unwrap().len())).collect()
}

fn ids_of(arr: &Value) -> Vec<String> {
    arr.as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn forget_applies_restics_policy_per_group_and_dry_run_changes_nothing() {
    let v = Vault::init();
    let times = [
        "2026-01-01T10:00:00Z",
        "2026-01-01T18:00:00Z", // same day: the newer one is the daily
        "2026-01-02T09:00:00Z",
        "2026-01-03T09:00:00Z",
        "2026-01-10T09:00:00Z",
        "2026-02-10T09:00:00Z",
    ];
    let ids: Vec<String> =
        times.iter().enumerate().map(|(i, t)| snapshot_at(&v, t, format!("v{i}").as_bytes(), &[])).collect();
    // Another host: its own group.
    let other = snapshot_at(&v, "2026-01-01T10:00:00Z", b"other", &["--host", "other"]);
    let before = listing(&v);
    let out = v
        .cmd()
        .args(["forget", "--dry-run", "--json", "--keep-daily", "3", "--keep-monthly", "2"])
        .env("TZ", "UTC")
        .run()
        .ok();
    assert_eq!(listing(&v), before, "a dry run changed the repository");
    let groups = out.json();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let mine = groups.iter().find(|g| g["host"] != "other").unwrap();
    let kept = ids_of(&mine["keep"]);
    let removed = ids_of(&mine["remove"]);
    // Daily 3: 02-10, 01-10, 01-03. Monthly 2: 02-10 (Feb), 01-10 (Jan).
    assert_eq!(kept, vec![ids[5].clone(), ids[4].clone(), ids[3].clone()], "{mine:#}");
    assert_eq!(removed, vec![ids[2].clone(), ids[1].clone(), ids[0].clone()], "{mine:#}");
    let reasons: Vec<String> =
        mine["keep"][0]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert_eq!(reasons, vec!["daily snapshot", "monthly snapshot"]);
    let theirs = groups.iter().find(|g| g["host"] == "other").unwrap();
    assert_eq!(ids_of(&theirs["keep"]), vec![other.clone()]);

    // For real, with --keep-within relative to the newest snapshot.
    let out = v.cmd().args(["forget", "--keep-within", "1m"]).env("TZ", "UTC").run().ok();
    assert!(out.stdout_str().contains("within 1m"), "{}", out.explain());
    let left = v.snapshot_ids();
    // 2026-02-10 minus one month is 2026-01-10 09:00: only strictly newer snapshots stay.
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&ids[5]) && left.contains(&other), "{left:?}");
    // An empty policy removes nothing and says so.
    v.cmd().arg("forget").run().failed().stderr_has("no policy");
}

#[test]
fn forget_by_id_and_filters() {
    let v = Vault::init();
    let a = snapshot_at(&v, "2026-01-01T10:00:00Z", b"a", &["--tag", "keep"]);
    let b = snapshot_at(&v, "2026-01-02T10:00:00Z", b"b", &[]);
    let c = snapshot_at(&v, "2026-01-03T10:00:00Z", b"c", &[]);
    v.cmd().args(["forget", &b[..8]]).run().ok();
    assert_eq!(v.snapshot_ids(), vec![a.clone(), c.clone()]);
    // --keep-tag keeps tagged snapshots whatever else the policy says.
    v.cmd().args(["forget", "--keep-last", "1", "--keep-tag", "keep"]).run().ok();
    assert_eq!(v.snapshot_ids(), vec![a, c]);
    v.cmd().args(["forget", "nonexistent"]).run().failed().stderr_has("nonexistent");
}

#[test]
fn retention_lock_refuses_to_forget_young_snapshots() {
    let v = Vault::new();
    v.cmd().args(["init", "--kdf-memory", "1024", "--min-retention", "7y"]).run().ok();
    let now = jiff::Timestamp::now();
    let ago = |days: i64| (now - jiff::SignedDuration::from_hours(24 * days)).to_string();
    let old = snapshot_at(&v, &ago(8 * 366), b"old", &[]);
    let young = snapshot_at(&v, &ago(365), b"young", &[]);
    let newest = snapshot_at(&v, &ago(1), b"newest", &[]);
    // A snapshot dated 8 years back but stored today is protected by when
    // the backend stored it: back-dating can't get around the lock.
    let backdated = snapshot_at(&v, &ago(9 * 366), b"backdated", &[]);
    // The lock measures age by the later of the recorded time and the
    // object's modification time: make `old` look stored 8 years ago.
    let stored = now.as_second() - 8 * 366 * 86400;
    set_mtime(&v.repo.join("snapshots").join(&old), stored, 0);
    set_mtime(&v.repo.join("snapshots").join(&young), now.as_second() - 365 * 86400, 0);
    // By id: refused, nothing removed.
    let out = v.cmd().args(["forget", &young]).run().code_is(1);
    assert!(out.stderr_str().contains("retention lock") && out.stderr_str().contains("7y"), "{}", out.explain());
    assert_eq!(v.snapshot_ids().len(), 4);
    // By policy: the lock keeps what the policy would drop, and says so.
    let out = v.cmd().args(["forget", "--keep-last", "1"]).run().ok();
    assert!(out.stdout_str().contains("retention lock 7y"), "{}", out.explain());
    assert!(out.stderr_str().contains("retention lock"), "{}", out.explain());
    let left = v.snapshot_ids();
    assert_eq!(
        left,
        vec![backdated.clone(), young.clone(), newest.clone()],
        "the 8-year-old one goes, the others stay"
    );
    assert!(!left.contains(&old));
    v.cmd().args(["forget", &backdated]).run().code_is(1).stderr_has("retention lock");
    // Prune never removes what the locked snapshot uses.
    v.cmd().args(["prune", "--grace", "0"]).run().ok();
    let target = v.path("t");
    v.restore(&young, &target, &[]).ok();
    assert_eq!(fs::read(target.join("db.sql")).unwrap(), b"young");
    // The lock can be raised, never lowered.
    v.cmd().args(["config", "--min-retention", "1y"]).run().failed().stderr_has("only be raised");
    v.cmd().args(["config", "--min-retention", "10y"]).run().ok();
    let cfg = v.cmd().args(["config", "--json"]).run().ok().json();
    assert_eq!(cfg["min_retention"], "10y");
}

/// Writes `n` files of distinct random content for round `round` into `dir`.
fn fill(dir: &Path, round: u64, n: u64) {
    let _ = fs::remove_dir_all(dir);
    for i in 0..n {
        write(&dir.join(format!("f{i}.bin")), &random_bytes(round * 1000 + i, 40_000 + (i as usize * 7919) % 60_000));
    }
}

/// Asserts every snapshot restores to the tree saved for its tag `r<N>`.
#[track_caller]
fn assert_all_restore(v: &Vault, expected: &Path) {
    for s in v.snapshots(&[]) {
        let id = s["id"].as_str().unwrap();
        let tag = s["tags"][0].as_str().unwrap();
        let target = v.path(&format!("restore-{}", &id[..8]));
        let _ = fs::remove_dir_all(&target);
        v.restore(id, &target, &[]).ok();
        let src = s["paths"][0].as_str().unwrap();
        assert_trees_equal(&expected.join(tag), &restored(&target, Path::new(src)), false);
        fs::remove_dir_all(&target).unwrap();
    }
}

/// A repository with `rounds` snapshots of a changing tree, each tagged
/// `r<N>`, its content kept in `expected/r<N>`; then all but the newest
/// `keep` snapshots forgotten.
fn history(rounds: u64, keep: usize) -> (Vault, PathBuf) {
    let v = Vault::init_with(&["--kdf-memory", "1024", "--pack-size", "1M"]);
    let src = v.src("data");
    let expected = v.path("expected");
    fs::create_dir_all(&expected).unwrap();
    for r in 0..rounds {
        // Half the files change each round, so packs end up partly used.
        fill(&src.join("changing"), r, 6);
        if r == 0 {
            fill(&src.join("stable"), 999, 6);
        }
        v.snapshot(&[&src], &["--tag", &format!("r{r}")]);
        let status =
            std::process::Command::new("cp").arg("-a").arg(&src).arg(expected.join(format!("r{r}"))).status().unwrap();
        assert!(status.success());
    }
    v.cmd().args(["forget", "--keep-last", &keep.to_string()]).run().ok();
    (v, expected)
}

fn du(v: &Vault) -> u64 {
    listing(v).values().sum()
}

#[test]
fn prune_frees_space_repacks_and_keeps_every_remaining_snapshot_whole() {
    let (v, expected) = history(5, 2);
    let before = listing(&v);
    let plan = v.cmd().args(["prune", "--dry-run", "--json", "--grace", "0", "--max-unused", "0%"]).run().ok().json();
    assert_eq!(listing(&v), before, "a dry run changed the repository");
    assert!(plan["packs_deleted"].as_u64().unwrap() > 0, "{plan:#}");
    let size_before = du(&v);
    let r = v.cmd().args(["prune", "--json", "--grace", "0", "--max-unused", "0%"]).run().ok().json();
    assert_eq!(r["packs_deleted"], plan["packs_deleted"], "{r:#}");
    assert!(r["packs_repacked"].as_u64().unwrap() > 0, "partly used packs are repacked: {r:#}");
    assert_eq!(r["bytes_unused_left"], 0, "{r:#}");
    let size_after = du(&v);
    assert!(size_after < size_before * 3 / 4, "{size_before} -> {size_after}");
    let check = v.cmd().args(["check", "--read-data", "--json"]).run().ok().json();
    assert!(check["findings"].as_array().unwrap().is_empty(), "{check:#}");
    assert_all_restore(&v, &expected);
    // Nothing left to do.
    let again = v.cmd().args(["prune", "--json", "--grace", "0", "--max-unused", "0%"]).run().ok().json();
    assert_eq!(again["packs_deleted"], 0, "{again:#}");
    assert_eq!(again["packs_repacked"], 0, "{again:#}");
}

#[test]
fn two_phase_prune_waits_for_the_grace_period_and_snapshots_avoid_marked_packs() {
    let v = Vault::init();
    let src = v.src("s");
    let gone = random_bytes(1, 300_000);
    write(&src.join("gone.bin"), &gone);
    let first = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    v.cmd().args(["forget", &first]).run().ok();
    let grace = ["--grace", "2s"];
    // Packs younger than the grace period are not even marked.
    let r = v.cmd().args(["prune", "--json"]).args(grace).run().ok().json();
    assert_eq!(r["packs_marked"], 0, "{r:#}");
    assert!(r["packs_recent"].as_u64().unwrap() > 0, "{r:#}");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let r = v.cmd().args(["prune", "--json"]).args(grace).run().ok().json();
    assert!(r["packs_marked"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["packs_deleted"], 0, "{r:#}");
    assert_eq!(v.repo_files("marks").len(), 1);
    // A new snapshot of the same content must not rely on the marked pack.
    let s2 = v.snapshot(&[&src], &[]);
    assert!(count(&s2, "bytes_added_raw") >= gone.len() as u64, "the marked data was stored again: {s2}");
    let r = v.cmd().args(["prune", "--json"]).args(grace).run().ok().json();
    assert!(r["packs_waiting"].as_u64().unwrap() > 0 && r["packs_deleted"] == 0, "{r:#}");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let r = v.cmd().args(["prune", "--json"]).args(grace).run().ok().json();
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r:#}");
    assert!(v.repo_files("marks").is_empty(), "settled marks are removed");
    let target = v.path("t");
    v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &src.join("gone.bin"))).unwrap(), gone);
    v.cmd().args(["check", "--read-data"]).run().ok();
}

#[test]
fn only_one_prune_at_a_time_and_a_dead_holder_does_not_block() {
    let (v, _) = history(2, 1);
    let first = v.cmd().args(["prune", "--grace", "0"]).env("VAULT_TEST_PAUSE_AFTER_LEASE", "30").spawn();
    let lease = v.repo.join("locks").join("maintenance");
    let t0 = std::time::Instant::now();
    while !lease.exists() {
        assert!(t0.elapsed().as_secs() < 20, "the first prune never took the lease");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = v.cmd().args(["prune", "--grace", "0"]).run().failed();
    let err = out.stderr_str();
    assert!(err.contains("locked") && err.contains("prune") && err.contains("pid"), "{}", out.explain());
    // Kill the holder: its lease stays behind, but its process is gone.
    let pid = first.pid();
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    let _ = first.wait();
    assert!(lease.exists(), "a killed prune leaves its lease");
    let out = v.cmd().args(["prune", "--grace", "0"]).run().ok();
    assert!(out.stderr_str().contains("deleted"), "{}", out.explain());
    assert!(!lease.exists(), "the lease is released");
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let ok = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
    assert!(ok);
}

/// Copies the repository aside, then for N = 0, 1, 2, ... restores the copy
/// and runs prune (with `args`) killed by SIGKILL before its (N+1)-th write,
/// until a run completes. After each kill: `check --read-data` finds no
/// damage, every snapshot restores byte-identical, and prune runs again to
/// the end (with `spotless`, leaving not even a notice: no pack of the
/// crashed run is left over). Returns how many kills there were.
fn kill_harness(v: &Vault, expected: &Path, args: &[&str], spotless: bool) -> u64 {
    let pristine = v.path("pristine");
    copy_dir(&v.repo, &pristine);
    for n in 0..200u64 {
        copy_dir(&pristine, &v.repo);
        v.drop_cache();
        let out = v.cmd().args(["prune", "-q"]).args(args).env("VAULT_TEST_KILL_AFTER_WRITES", n.to_string()).run();
        if out.success() {
            return n;
        }
        assert_eq!(out.code, None, "prune failed instead of being killed after {n} writes:\n{}", out.explain());
        v.cmd().args(["check", "--read-data"]).run().code_is(0);
        assert_all_restore(v, expected);
        v.cmd().args(["prune", "-q"]).args(args).run().ok();
        let r = v.cmd().args(["check", "--read-data", "--json"]).run().ok().json();
        assert!(
            r["findings"].as_array().unwrap().iter().all(|f| f["severity"] != "error"),
            "the rerun left damage: {r:#}"
        );
        assert!(!spotless || r["findings"].as_array().unwrap().is_empty(), "the rerun left leftovers: {r:#}");
    }
    panic!("prune never completed");
}

#[test]
fn prune_killed_at_any_point_leaves_every_snapshot_whole() {
    let (v, expected) = history(4, 2);
    let kills = kill_harness(&v, &expected, &["--grace", "0", "--max-unused", "0%"], true);
    assert!(kills >= 5, "prune did only {kills} writes");
    assert_all_restore(&v, &expected);
}

#[test]
fn snapshots_running_beside_repeated_prunes_all_restore() {
    let v = Vault::init_with(&["--kdf-memory", "1024", "--pack-size", "1M"]);
    let expected = v.path("expected");
    fs::create_dir_all(&expected).unwrap();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let src = v.src(&format!("w{w}"));
            (w, src, expected.clone())
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let marked = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (w, src, expected) in &writers {
            let (v, marked, done) = (&v, &marked, &done);
            s.spawn(move || {
                // At least six rounds, and more (up to 30) until prune has
                // marked or deleted packs while they run: a fast machine
                // could otherwise finish before any pack is old enough.
                for r in 0..30u64 {
                    if r >= 6 && marked.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                        break;
                    }
                    // Each round keeps some content of the last (dedup against
                    // packs prune may have marked) and adds new content.
                    fill(&src.join("new"), w * 100 + r, 3);
                    if r % 2 == 0 {
                        fill(&src.join("old"), w * 100 + r, 3);
                    }
                    let tag = format!("w{w}r{r}");
                    v.snapshot(&[src], &["--tag", &tag]);
                    let ok = std::process::Command::new("cp")
                        .arg("-a")
                        .arg(src)
                        .arg(expected.join(&tag))
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok);
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let stop2 = stop.clone();
        let v = &v;
        let marked = &marked;
        s.spawn(move || {
            let stop = stop2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out =
                    v.cmd().args(["forget", "-q", "--keep-last", "2", "--prune", "--grace", "1s", "--json"]).run();
                // Another prune holding the lease is fine; anything else is not.
                assert!(out.success() || out.stderr_str().contains("locked"), "{}", out.explain());
                // The last line is prune's report.
                if let Some(r) = out.stdout_str().lines().last().and_then(|l| serde_json::from_str::<Value>(l).ok()) {
                    let n = r["packs_marked"].as_u64().unwrap_or(0) + r["packs_deleted"].as_u64().unwrap_or(0);
                    marked.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
        // Let the writers finish, then stop the pruner.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let started = std::time::Instant::now();
        loop {
            assert!(started.elapsed().as_secs() < 300, "the writers did not finish (one failed?)");
            if done.load(std::sync::atomic::Ordering::Relaxed) == writers.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    std::thread::sleep(std::time::Duration::from_millis(1100));
    v.cmd().args(["forget", "-q", "--keep-last", "2", "--prune", "--grace", "1s"]).run().ok();
    v.cmd().args(["check", "--read-data"]).run().ok();
    assert_all_restore(&v, &expected);
    assert!(v.snapshots(&[]).len() >= 4, "two per writer are kept");
    assert!(marked.into_inner() > 0, "prune marked or deleted packs while the snapshots ran");
}

#[test]
fn a_snapshot_that_deduplicated_against_a_pack_marked_during_its_run_stores_the_data_again() {
    let v = Vault::init();
    let src = v.src("s");
    let data = random_bytes(5, 500_000);
    write(&src.join("x.bin"), &data);
    let first = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    v.cmd().args(["forget", &first]).run().ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A snapshot of the same data starts: no marks yet, so it deduplicates
    // against the pack of the forgotten snapshot. While it waits before
    // committing, prune marks that pack.
    let running = v.cmd().args(["snapshot", "--json"]).arg(&src).env("VAULT_TEST_PAUSE_BEFORE_COMMIT", "5").spawn();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // Its own cache, so it doesn't wait for the running snapshot's.
    let r =
        v.cmd().args(["prune", "--json", "--grace", "1s"]).env("VAULT_CACHE_DIR", v.path("cache2")).run().ok().json();
    assert!(r["packs_marked"].as_u64().unwrap() > 0, "{r:#}");
    let out = running.wait().ok();
    assert!(out.stderr_str().contains("stored again"), "{}", out.explain());
    // Once the grace period is over, prune deletes the marked pack; the new
    // snapshot doesn't need it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = v.cmd().args(["prune", "--json", "--grace", "1s"]).run().ok().json();
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r:#}");
    let target = v.path("t");
    v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &src.join("x.bin"))).unwrap(), data);
    v.cmd().args(["check", "--read-data"]).run().ok();
}

#[test]
fn prune_killed_while_deleting_marked_packs_leaves_every_snapshot_whole() {
    let (v, expected) = history(4, 2);
    // Mark, then let the grace period pass: the next prune deletes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = v.cmd().args(["prune", "--json", "--grace", "1s", "--max-unused", "0%"]).run().ok().json();
    assert!(r["packs_marked"].as_u64().unwrap() > 0, "{r:#}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let kills = kill_harness(&v, &expected, &["--grace", "1s", "--max-unused", "0%"], false);
    assert!(kills >= 3, "prune did only {kills} writes");
    assert!(v.repo_files("marks").is_empty(), "settled marks go");
}

#[test]
fn a_damaged_mark_stops_snapshots_with_a_safe_remedy() {
    let v = Vault::init();
    let src = v.src("s");
    write(&src.join("a.txt"), b"a");
    v.snapshot(&[&src], &[]);
    let mark = v.repo.join("marks").join("ab".repeat(32));
    fs::write(&mark, b"not a mark").unwrap();
    // Its packs can't be known, so deduplicating could rely on a pack about
    // to go: the snapshot stops and names the file and the remedy.
    let out = v.cmd().arg("snapshot").arg(&src).run().failed();
    let err = out.stderr_str();
    assert!(err.contains(&"ab".repeat(32)) && err.contains("removing this file is safe"), "{}", out.explain());
    fs::remove_file(&mark).unwrap();
    v.snapshot(&[&src], &[]);
}

#[test]
fn prune_refuses_when_a_used_pack_is_misplaced_or_truncated() {
    let v = Vault::init();
    let src = v.src("s");
    write(&src.join("a.bin"), &random_bytes(9, 300_000));
    v.snapshot(&[&src], &[]);
    let pack = v.repo_files("data").pop().unwrap();
    let rel = pack.strip_prefix(v.repo.join("data")).unwrap().to_path_buf();
    let moved = v.repo.join("tree").join(&rel);
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::rename(&pack, &moved).unwrap();
    let before = listing(&v);
    v.cmd().args(["prune", "--grace", "0"]).run().failed().stderr_has("misplaced");
    assert_eq!(listing(&v), before, "prune changed the repository");
    fs::rename(&moved, &pack).unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len - 10).unwrap();
    v.cmd().args(["prune", "--grace", "0"]).run().failed().stderr_has("truncated");
}

#[test]
fn prune_refuses_while_a_snapshot_is_unreadable_and_deletes_nothing() {
    // Two snapshots forgotten: prune would have packs to delete.
    let (v, _) = history(3, 1);
    let id = v.snapshot_ids().remove(0);
    let object = v.repo.join("snapshots").join(&id);
    let mut sealed = fs::read(&object).unwrap();
    let mid = sealed.len() / 2;
    sealed[mid] ^= 1;
    fs::write(&object, sealed).unwrap();
    let before = listing(&v);
    // Without the cache's copy of the snapshot, prune can't know what it
    // uses: it must stop before deleting anything.
    let out = v.cmd().args(["--no-cache", "prune", "--grace", "0"]).run().failed();
    assert!(out.stderr_str().contains("snapshot is unreadable") && out.stderr_str().contains(&id), "{}", out.explain());
    assert_eq!(listing(&v), before, "prune changed the repository");
}
