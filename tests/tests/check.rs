//! `vault check` and `vault repair`: each kind of damage is made by
//! corrupting a real repository, then must be found by the right level of
//! check, named, and traced to the snapshots and paths it affects.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Two snapshots of `src`: the first of the `keep*` files, the second adds
/// `victim.bin`, whose content alone is in the data packs the second run
/// wrote. `new_*` are the files the second run added to the repository.
struct Setup {
    v: Vault,
    src: PathBuf,
    keep: Vec<(PathBuf, Vec<u8>)>,
    victim: Vec<u8>,
    first: String,
    second: String,
    new_data: Vec<PathBuf>,
    new_trees: Vec<PathBuf>,
    new_index: Vec<PathBuf>,
}

fn setup() -> Setup {
    let v = Vault::init();
    let src = v.src("src");
    let keep = vec![
        (src.join("keep1.bin"), random_bytes(200, 150_000)),
        (src.join("keep2.txt"), b"a small text file\n".to_vec()),
        (src.join("sub/keep3.bin"), random_bytes(201, 1_200_000)),
    ];
    for (p, d) in &keep {
        write(p, d);
    }
    let first = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    let (data, trees, index) = (v.repo_files("data"), v.repo_files("tree"), v.repo_files("index"));
    let victim = random_bytes(202, 600_000);
    write(&src.join("victim.bin"), &victim);
    let second = v.snapshot(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    let new = |dir: &str, before: &[PathBuf]| -> Vec<PathBuf> {
        v.repo_files(dir).into_iter().filter(|p| !before.contains(p)).collect()
    };
    let (new_data, new_trees, new_index) = (new("data", &data), new("tree", &trees), new("index", &index));
    assert!(!new_data.is_empty() && !new_trees.is_empty() && !new_index.is_empty());
    Setup { v, src, keep, victim, first, second, new_data, new_trees, new_index }
}

/// `vault check --json EXTRA`, asserting the exit code; returns the report.
#[track_caller]
fn check(v: &Vault, extra: &[&str], code: i32) -> Value {
    let out = v.cmd().args(["check", "--json"]).args(extra).run().code_is(code);
    out.json()
}

fn findings(r: &Value) -> &Vec<Value> {
    r["findings"].as_array().expect("findings is an array")
}

fn errors(r: &Value) -> Vec<&Value> {
    findings(r).iter().filter(|f| f["severity"] == "error").collect()
}

/// The error findings of one problem kind.
#[track_caller]
fn with_problem<'a>(r: &'a Value, problem: &str) -> Vec<&'a Value> {
    let v: Vec<_> = errors(r).into_iter().filter(|f| f["problem"] == problem).collect();
    assert!(!v.is_empty(), "no {problem} finding in {r:#}");
    v
}

/// Snapshot ids and paths that the report says are affected, over all findings.
fn affected(r: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in findings(r) {
        for a in f["affected"].as_array().unwrap() {
            for p in a["paths"].as_array().unwrap() {
                out.push((a["snapshot"].as_str().unwrap().to_string(), p.as_str().unwrap().to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The repository-relative name of a file (`data/ab/abcd…`).
fn rel(v: &Vault, p: &Path) -> String {
    p.strip_prefix(&v.repo).unwrap().to_string_lossy().into_owned()
}

/// Asserts the report blames `victim.bin` of the second snapshot and
/// nothing of the first snapshot or of the kept files.
#[track_caller]
fn blames_victim_only(s: &Setup, r: &Value) {
    let hit = affected(r);
    assert!(
        hit.iter().any(|(snap, p)| *snap == s.second && p.ends_with("/src/victim.bin")),
        "victim.bin of the second snapshot is not reported: {r:#}"
    );
    for (snap, p) in &hit {
        assert_ne!(*snap, s.first, "the first snapshot doesn't use the damaged data: {r:#}");
        assert!(!p.contains("keep"), "{p} is intact but reported: {r:#}");
    }
}

#[test]
fn clean_repository_passes_with_no_findings() {
    let s = setup();
    let r = check(&s.v, &[], 0);
    assert!(findings(&r).is_empty(), "{r:#}");
    assert_eq!(r["stats"]["snapshots"], 2);
    assert!(r["stats"]["trees"].as_u64().unwrap() >= 4, "{r:#}");
    let r = check(&s.v, &["--read-data"], 0);
    assert!(findings(&r).is_empty(), "{r:#}");
    let packs = s.v.repo_files("data").len() + s.v.repo_files("tree").len();
    assert_eq!(r["stats"]["packs_read"], packs as u64);
    assert!(r["stats"]["blobs_verified"].as_u64().unwrap() > 5);
    // Without the shared cache (a temporary one is built) the result is the same.
    let r = check(&s.v, &["--no-cache"], 0);
    assert!(findings(&r).is_empty(), "{r:#}");
    assert_eq!(r["stats"]["snapshots"], 2);
    // The text report says so, too.
    let out = s.v.cmd().arg("check").run().ok();
    assert!(out.stderr_str().contains("no errors found"), "{}", out.explain());
}

#[test]
fn bit_flip_in_a_data_blob_is_found_by_read_data_only() {
    let s = setup();
    let pack = &s.new_data[0];
    flip_bit(pack, 100);
    // Structure is intact: the plain check can't see inside blobs.
    check(&s.v, &[], 0);
    let r = check(&s.v, &["--read-data"], 1);
    let name = rel(&s.v, pack);
    assert!(with_problem(&r, "pack_checksum")[0]["object"].as_str().unwrap().contains(&name), "{r:#}");
    let blob = with_problem(&r, "blob_damaged");
    assert!(blob[0]["object"].as_str().unwrap().contains(&name), "{r:#}");
    assert!(blob[0]["message"].as_str().unwrap().contains("authentication"), "{r:#}");
    blames_victim_only(&s, &r);
    // The text report names the pack and the path.
    let out = s.v.cmd().args(["check", "--read-data"]).run().code_is(1);
    let text = out.stdout_str();
    assert!(text.contains(&name) && text.contains("victim.bin") && text.contains(&s.second[..8]), "{}", out.explain());
}

#[test]
fn bit_flip_in_a_tree_blob_is_found_by_the_structure_check() {
    let s = setup();
    flip_bit(&s.new_trees[0], 20);
    s.v.drop_cache();
    let r = check(&s.v, &[], 1);
    let tree = with_problem(&r, "tree_damaged");
    assert!(tree[0]["message"].as_str().unwrap().contains(&rel(&s.v, &s.new_trees[0])), "{r:#}");
    let hit = affected(&r);
    assert!(hit.iter().any(|(snap, _)| *snap == s.second), "{r:#}");
    assert!(hit.iter().all(|(snap, _)| *snap != s.first), "{r:#}");
}

#[test]
fn bit_flip_in_a_pack_header_is_found_by_read_data() {
    let s = setup();
    let pack = &s.new_data[0];
    let len = fs::metadata(pack).unwrap().len() as usize;
    flip_bit(pack, len - 44 - 10);
    check(&s.v, &[], 0);
    let r = check(&s.v, &["--read-data"], 1);
    let header = with_problem(&r, "pack_header");
    assert!(header[0]["object"].as_str().unwrap().contains(&rel(&s.v, pack)), "{r:#}");
    blames_victim_only(&s, &r);
}

#[test]
fn truncated_pack_is_found_by_the_structure_check() {
    let s = setup();
    let pack = &s.new_data[0];
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new().write(true).open(pack).unwrap().set_len(len / 2).unwrap();
    let r = check(&s.v, &[], 1);
    let f = with_problem(&r, "pack_size");
    assert!(f[0]["object"].as_str().unwrap().contains(&rel(&s.v, pack)), "{r:#}");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("size {} bytes, the index says {len}", len / 2)), "{r:#}");
    blames_victim_only(&s, &r);
}

/// A data pack moved into the tree directory, and a stray file among the
/// packs: the pack is missing where its kind belongs (and the message says
/// where it is), not an unindexed tree pack; the stray file is a notice.
#[test]
fn pack_in_the_other_kinds_directory_is_missing_and_named_where_it_is() {
    let s = setup();
    let pack = &s.new_data[0];
    let name = rel(&s.v, pack);
    let moved = s.v.repo.join(name.replacen("data/", "tree/", 1));
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::rename(pack, &moved).unwrap();
    let stray = s.v.repo.join("data/ab/notes.txt");
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, b"not a pack").unwrap();
    let r = check(&s.v, &[], 1);
    let f = with_problem(&r, "missing_pack");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["object"], name.as_str(), "{r:#}");
    let want = format!("stored as {}", rel(&s.v, &moved));
    assert!(f[0]["message"].as_str().unwrap().contains(&want), "{r:#}");
    assert!(!findings(&r).iter().any(|f| f["problem"] == "unindexed_pack"), "{r:#}");
    let notice: Vec<_> = findings(&r).iter().filter(|f| f["problem"] == "stray_file").collect();
    assert_eq!(notice.len(), 1, "{r:#}");
    assert_eq!(notice[0]["object"], "data/*/notes.txt");
    assert_eq!(notice[0]["severity"], "notice");
    blames_victim_only(&s, &r);
    // Read-data reads the packs that are where they belong, not this one
    // (the stray file is among the data files, the moved pack a tree file).
    let r = check(&s.v, &["--read-data"], 1);
    let total = s.v.repo_files("data").len() - 1 + s.v.repo_files("tree").len() - 1;
    assert_eq!(r["stats"]["packs_read"], total as u64, "{r:#}");
}

#[test]
fn deleted_pack_is_found_and_traced_to_its_files() {
    let s = setup();
    for p in &s.new_data {
        fs::remove_file(p).unwrap();
    }
    let r = check(&s.v, &[], 1);
    let missing = with_problem(&r, "missing_pack");
    assert_eq!(missing.len(), s.new_data.len(), "{r:#}");
    assert!(missing[0]["object"].as_str().unwrap().starts_with("data/"), "{r:#}");
    blames_victim_only(&s, &r);
}

#[test]
fn bit_flip_in_an_index_segment_is_named_and_its_blobs_traced() {
    let s = setup();
    for p in &s.new_index {
        let len = fs::metadata(p).unwrap().len() as usize;
        flip_bit(p, len / 2);
    }
    // The shared cache had ingested the segments before they were damaged:
    // the check must not trust it.
    let r = check(&s.v, &[], 1);
    let seg = with_problem(&r, "index_segment");
    for p in &s.new_index {
        assert!(seg.iter().any(|f| f["object"].as_str().unwrap() == rel(&s.v, p)), "{r:#}");
    }
    // The packs the segments listed are now unindexed, and what they held missing.
    with_problem(&r, "missing_blob");
    let hit = affected(&r);
    assert!(hit.iter().any(|(snap, _)| *snap == s.second), "{r:#}");
    assert!(hit.iter().all(|(snap, _)| *snap != s.first), "{r:#}");
    assert!(findings(&r).iter().any(|f| f["problem"] == "unindexed_pack" && f["severity"] == "notice"), "{r:#}");
}

#[test]
fn bit_flip_in_a_snapshot_object_is_named() {
    let s = setup();
    let p = s.v.repo.join("snapshots").join(&s.second);
    flip_bit(&p, 30);
    let r = check(&s.v, &[], 1);
    let f = with_problem(&r, "snapshot");
    assert_eq!(f[0]["object"], format!("snapshots/{}", s.second));
    assert_eq!(r["stats"]["snapshots"], 2);
}

#[test]
fn bit_flip_in_a_key_file_is_named() {
    let s = setup();
    let before = s.v.repo_files("keys");
    let pw = s.v.path("pw2");
    fs::write(&pw, "another password\n").unwrap();
    s.v.cmd().args(["key", "add", "--new-password-file"]).arg(&pw).run().ok();
    let added: Vec<_> = s.v.repo_files("keys").into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(added.len(), 1);
    flip_bit(&added[0], 40);
    let r = check(&s.v, &[], 1);
    let f = with_problem(&r, "key_file");
    assert_eq!(f[0]["object"], rel(&s.v, &added[0]), "{r:#}");
    assert_eq!(errors(&r).len(), 1, "only the key is damaged: {r:#}");
}

#[test]
fn extra_unreferenced_pack_is_a_notice_not_an_error() {
    let s = setup();
    // What a crashed run leaves: packs without their index segment and
    // without a snapshot.
    for p in &s.new_index {
        fs::remove_file(p).unwrap();
    }
    fs::remove_file(s.v.repo.join("snapshots").join(&s.second)).unwrap();
    let r = check(&s.v, &["--read-data"], 0);
    let notices: Vec<_> = findings(&r).iter().filter(|f| f["problem"] == "unindexed_pack").collect();
    assert_eq!(notices.len(), s.new_data.len() + s.new_trees.len(), "{r:#}");
    assert!(notices.iter().all(|f| f["severity"] == "notice"));
    assert!(errors(&r).is_empty(), "{r:#}");
}

/// A sparse file larger than any pack can be, named like a pack no index
/// lists: read-data reports it from its size without reading it.
#[test]
fn oversized_file_named_like_a_pack_is_reported_without_being_read() {
    let s = setup();
    let name = "ab".repeat(32);
    let path = s.v.repo.join("data/ab").join(&name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(&path).unwrap().set_len(3 << 30).unwrap();
    let r = check(&s.v, &["--read-data"], 1);
    let f = with_problem(&r, "pack_header");
    assert!(
        f.iter().any(|f| f["object"].as_str().unwrap().contains(&name)
            && f["message"].as_str().unwrap().contains("3221225472 bytes, more than any data pack can hold")),
        "{r:#}"
    );
}

#[test]
fn pack_renamed_to_another_id_is_missing_and_its_content_mismatched() {
    let s = setup();
    let pack = &s.new_data[0];
    let fake = "ab".to_string() + &"0123456789abcdef".repeat(4)[2..];
    let to = s.v.repo.join("data").join("ab").join(&fake);
    fs::rename(pack, &to).unwrap();
    let r = check(&s.v, &[], 1);
    with_problem(&r, "missing_pack");
    assert!(findings(&r).iter().any(|f| f["problem"] == "unindexed_pack" && f["object"] == format!("data/ab/{fake}")));
    blames_victim_only(&s, &r);
    let r = check(&s.v, &["--read-data"], 1);
    let f = with_problem(&r, "pack_checksum");
    assert!(f.iter().any(|f| f["object"] == format!("data/ab/{fake}")), "{r:#}");
}

#[test]
fn deleted_index_is_rebuilt_by_repair_index() {
    let s = setup();
    let segments = s.v.repo_files("index");
    for p in &segments {
        fs::remove_file(p).unwrap();
    }
    let r = check(&s.v, &[], 1);
    with_problem(&r, "missing_blob");
    let out = s.v.cmd().args(["repair", "index"]).run().ok();
    assert!(out.stderr_str().contains("indexed"), "{}", out.explain());
    let r = check(&s.v, &["--read-data"], 0);
    assert!(findings(&r).is_empty(), "{r:#}");
    // Fully restorable, from a fresh cache too.
    s.v.drop_cache();
    let target = s.v.path("target");
    s.v.restore("latest", &target, &[]).ok();
    for (p, d) in &s.keep {
        assert_eq!(fs::read(restored(&target, p)).unwrap(), *d);
    }
    assert_eq!(fs::read(restored(&target, &s.src.join("victim.bin"))).unwrap(), s.victim);
    // Running it again changes nothing that matters.
    s.v.cmd().args(["repair", "index"]).run().ok();
    check(&s.v, &[], 0);
}

/// Deletes the data packs only the second snapshot uses, then rebuilds the
/// index from the packs that are left.
fn lose_second_snapshots_data_and_repair_index(s: &Setup) {
    for p in &s.new_data {
        fs::remove_file(p).unwrap();
    }
    s.v.cmd().args(["repair", "index"]).run().ok();
}

#[test]
fn repair_index_drops_a_lost_pack_and_repair_snapshots_drops_its_files() {
    let s = setup();
    lose_second_snapshots_data_and_repair_index(&s);
    // Dry run: names the file, writes nothing.
    let before = s.v.repo_files("");
    let out = s.v.cmd().args(["repair", "snapshots", "--dry-run"]).run().ok();
    assert!(out.stdout_str().contains("/src/victim.bin"), "{}", out.explain());
    assert_eq!(s.v.repo_files(""), before, "a dry run wrote something");
    let out = s.v.cmd().args(["repair", "snapshots", "--forget"]).run().ok();
    let text = out.stdout_str();
    assert!(text.contains("dropped") && text.contains("/src/victim.bin"), "{}", out.explain());
    assert!(!text.contains("keep"), "{}", out.explain());
    let ids = s.v.snapshot_ids();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&s.first) && !ids.contains(&s.second), "{ids:?}");
    let repaired = s.v.snapshots(&["--tag", "repaired"]);
    assert_eq!(repaired.len(), 1);
    let r = check(&s.v, &["--read-data"], 0);
    assert!(errors(&r).is_empty(), "{r:#}");
    let target = s.v.path("target");
    s.v.restore(repaired[0]["id"].as_str().unwrap(), &target, &[]).ok();
    for (p, d) in &s.keep {
        assert_eq!(fs::read(restored(&target, p)).unwrap(), *d);
    }
    assert!(!restored(&target, &s.src.join("victim.bin")).exists());
    // Nothing left to repair.
    let out = s.v.cmd().args(["repair", "snapshots"]).run().ok();
    assert!(out.stderr_str().contains("no snapshot references lost data"), "{}", out.explain());
}

/// After `repair index` dropped a lost pack, the next snapshot of the
/// unchanged source reads the files that used it again: a parent is trusted
/// to be fully indexed only until the index cache is rebuilt.
#[test]
fn snapshot_after_repair_index_stores_the_lost_files_again() {
    let s = setup();
    lose_second_snapshots_data_and_repair_index(&s);
    let snap = s.v.snapshot(&[&s.src], &[]);
    assert!(count(&snap, "bytes_read") >= s.victim.len() as u64, "the victim is read again: {snap}");
    assert_eq!(count(&snap, "files_changed"), 1, "{snap}");
    let target = s.v.path("target");
    s.v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &s.src.join("victim.bin"))).unwrap(), s.victim);
    for (p, d) in &s.keep {
        assert_eq!(fs::read(restored(&target, p)).unwrap(), *d);
    }
}

#[test]
fn read_data_slices_cover_every_pack_once() {
    let s = setup();
    let total = s.v.repo_files("data").len() + s.v.repo_files("tree").len();
    let mut sum = 0;
    for n in 1..=3 {
        let r = check(&s.v, &["--read-data-subset", &format!("{n}/3")], 0);
        sum += r["stats"]["packs_read"].as_u64().unwrap();
    }
    assert_eq!(sum, total as u64);
    let r = check(&s.v, &["--read-data-subset", "100%"], 0);
    assert_eq!(r["stats"]["packs_read"], total as u64);
    let r = check(&s.v, &["--read-data-subset", "1"], 0);
    assert_eq!(r["stats"]["packs_read"], 1);
    s.v.cmd().args(["check", "--read-data-subset", "4/3"]).run().code_is(2).stderr_has("4/3");
}

#[test]
fn check_that_cannot_run_exits_2() {
    let s = setup();
    s.v.cmd().arg("check").env("VAULT_PASSWORD", "wrong").run().code_is(2).stderr_has("wrong password");
    let missing = s.v.path("nowhere");
    s.v.cmd().arg("check").env("VAULT_REPOSITORY", &missing).run().code_is(2).stderr_has("nowhere");
}

#[test]
fn repair_snapshots_stores_trees_anew_when_the_index_names_a_lost_copy() {
    let v = Vault::init();
    // X holds an empty directory; Y holds one too, so Y's `empty/` listing
    // is the same tree blob, stored in X's tree pack only.
    let x = v.src("x");
    fs::create_dir_all(x.join("empty")).unwrap();
    write(&x.join("a.txt"), b"x");
    let sx = v.snapshot(&[&x], &[])["snapshot_id"].as_str().unwrap().to_string();
    let x_trees = v.repo_files("tree");
    let y = v.src("y");
    fs::create_dir_all(y.join("empty")).unwrap();
    write(&y.join("b.txt"), b"y");
    let sy = v.snapshot(&[&y], &[])["snapshot_id"].as_str().unwrap().to_string();
    for p in &x_trees {
        fs::remove_file(p).unwrap();
    }
    // The index still names the lost copy of the empty listing: repair must
    // store it again rather than trust the index.
    let out = v.cmd().args(["repair", "snapshots", "--forget", &sy]).run().ok();
    assert!(out.stdout_str().contains("/empty/"), "{}", out.explain());
    v.cmd().args(["forget", &sx]).run().ok();
    v.cmd().args(["repair", "index"]).run().ok();
    let r = check(&v, &["--read-data"], 0);
    assert!(errors(&r).is_empty(), "{r:#}");
    let target = v.path("t");
    v.restore("latest", &target, &[]).ok();
    assert_eq!(fs::read(restored(&target, &y.join("b.txt"))).unwrap(), b"y");
    assert!(restored(&target, &y.join("empty")).is_dir());
}

/// Segments written by hand through the library: one that describes a pack
/// otherwise than the segment its run wrote is a conflict naming both; one
/// that records another key salt than the pack's trailer is found by
/// read-data, which says the index can't decrypt it.
#[test]
fn index_segments_that_disagree_with_each_other_or_with_the_pack_are_named() {
    use vault_store::index::{load_segment, save_segment};
    let s = setup();
    let repo = s.v.open_repository();
    let name = s.new_index[0].file_name().unwrap().to_str().unwrap().to_string();
    let seg = load_segment(repo.backend(), repo.keys(), &vault_store::IndexId::from_hex(&name).unwrap()).unwrap();
    let pack = seg.packs.iter().find(|p| p.kind == vault_store::format::BlobKind::Data).expect("a data pack");
    let pack_name = vault_store::backend::FileType::Data.path(&pack.id.to_hex());

    let mut other = vault_store::format::index::IndexSegment { packs: vec![pack.clone()] };
    other.packs[0].blobs[0].id = vault_store::BlobId([7; 32]);
    let conflicting = save_segment(repo.backend(), repo.keys(), &other).unwrap().to_hex();
    let r = check(&s.v, &[], 1);
    let f = with_problem(&r, "index_conflict");
    assert_eq!(f.len(), 1, "{r:#}");
    let said = format!("{} {}", f[0]["object"], f[0]["message"]);
    assert!(said.contains(&name) && said.contains(&conflicting) && said.contains(&pack_name), "{r:#}");

    // Only a segment with the wrong salt left for the pack.
    fs::remove_file(&s.new_index[0]).unwrap();
    fs::remove_file(s.v.repo_files("index").into_iter().find(|p| p.ends_with(&conflicting)).unwrap()).unwrap();
    let mut salted = seg.clone();
    for p in &mut salted.packs {
        if p.id == pack.id {
            p.salt[0] ^= 1;
        }
    }
    save_segment(repo.backend(), repo.keys(), &salted).unwrap();
    let r = check(&s.v, &["--read-data"], 1);
    let f = with_problem(&r, "index_mismatch");
    assert_eq!(f[0]["object"], pack_name.as_str(), "{r:#}");
    assert!(f[0]["message"].as_str().unwrap().contains("key salt"), "{r:#}");
    blames_victim_only(&s, &r);
}
