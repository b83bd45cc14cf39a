//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and any saved crash
//! inputs (`fuzz/regressions/<target>/`) through the decoders, so CI guards
//! against regressions without running the fuzzer. Seeds are valid
//! encodings (made with master key [7; 64]) and must decode.

use std::fs;
use std::path::{Path, PathBuf};

use vault_store::crypto::{KeyFile, Keys};
use vault_store::format::config::{self, Config};
use vault_store::format::envelope;
use vault_store::format::gc::{LeaseInfo, Marks};
use vault_store::format::index::IndexSegment;
use vault_store::format::pack::{PackHeader, parse_header};
use vault_store::format::snapshot::Snapshot;
use vault_store::format::tree::Tree;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(rd) = fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_file() {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn is_seed(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-"))
}

fn keys() -> Keys {
    Keys::from_master([7u8; 64])
}

#[test]
fn pack_header_corpus() {
    let keys = keys();
    let all = inputs("pack_header");
    assert!(all.iter().any(|(p, _)| is_seed(p)), "the corpus has seeds");
    for (p, data) in all {
        let len = data.len() as u64;
        let sealed = parse_header(&keys, &data, len, "pack");
        if let Some((head, rest)) = data.split_first_chunk::<8>() {
            let _ = PackHeader::decode(rest, u64::from_le_bytes(*head), "pack header");
        }
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("seed-pack") {
            assert!(matches!(sealed, Ok(Ok(_))), "{}: {sealed:?}", p.display());
        }
    }
}

#[test]
fn tree_index_snapshot_keyfile_corpus() {
    for (p, data) in inputs("tree") {
        let r = Tree::decode(&data, "tree");
        assert!(!is_seed(&p) || r.is_ok(), "{}: {r:?}", p.display());
    }
    for (p, data) in inputs("index_segment") {
        let r = IndexSegment::decode(&data, "index");
        assert!(!is_seed(&p) || r.is_ok(), "{}: {r:?}", p.display());
    }
    for (p, data) in inputs("snapshot") {
        let r = Snapshot::decode(&data, "snapshot");
        assert!(!is_seed(&p) || r.is_ok(), "{}: {r:?}", p.display());
    }
    for (p, data) in inputs("key_file") {
        let r = KeyFile::decode(&data, "key");
        assert!(!is_seed(&p) || r.is_ok(), "{}: {r:?}", p.display());
    }
}

#[test]
fn config_and_envelope_corpus() {
    let keys = keys();
    for (p, data) in inputs("config") {
        let body = Config::decode(&data, "config");
        let file = Config::split_header(&data, "config")
            .and_then(|b| envelope::open(&keys, config::AAD, b.to_vec(), config::MAX_CONFIG_JSON_LEN, "config"))
            .and_then(|plain| Config::decode(&plain, "config"));
        if is_seed(&p) {
            assert!(body.is_ok() || file.is_ok(), "{}: {body:?} / {file:?}", p.display());
        }
    }
    for (p, data) in inputs("envelope") {
        let opened = ["config", "index", "snapshot"]
            .iter()
            .any(|aad| envelope::open(&keys, aad, data.clone(), 1 << 20, "envelope").is_ok());
        let _ = envelope::decompress_bounded(&data, 1 << 20);
        let name = p.file_name().unwrap().to_string_lossy();
        if name.starts_with("seed-") && name != "seed-zstd-frame" {
            assert!(opened, "{} opens", p.display());
        }
    }
}

#[test]
fn gc_objects_corpus() {
    let all = inputs("gc_objects");
    assert!(all.iter().any(|(p, _)| is_seed(p)), "the corpus has seeds");
    for (p, data) in all {
        let marks = Marks::decode(&data, "marks");
        let lease = LeaseInfo::decode(&data, "lease");
        let name = p.file_name().unwrap().to_string_lossy();
        if name == "seed-marks" {
            assert_eq!(marks.unwrap().packs.len(), 2, "{}", p.display());
        }
        if name == "seed-lease" {
            assert_eq!(lease.unwrap().pid, 42, "{}", p.display());
        }
    }
}
