//! The size limits of docs/format.md section 1, object type by object
//! type: an object one byte past its type's limit is refused by its size
//! alone, before its body is read, with an error that names it and says
//! how large it is against the limit; one at the limit still reads; a
//! payload that decompresses past its limit is refused by name; and the
//! writers never make an object their own readers would refuse.

use std::fs;
use std::sync::Arc;

use vault_store::backend::local::LocalBackend;
use vault_store::backend::memory::MemoryBackend;
use vault_store::backend::{Backend, FileType, damage};
use vault_store::crypto::Keys;
use vault_store::error::{BackendErrorKind, Error};
use vault_store::format::envelope;
use vault_store::format::gc::PACKS_PER_MARK;
use vault_store::format::snapshot::{self, MAX_SNAPSHOT_LEN};
use vault_store::{PackId, Repository, budget, gc};

fn name_of(t: FileType) -> String {
    if t == FileType::Config { "config".into() } else { "ab".repeat(32) }
}

/// Asserts that reading `name` of type `t` whole is refused by its size,
/// `size` bytes, naming `location`; the size is learned before the body
/// would be read, so nothing is admitted.
fn assert_refused(b: &dyn Backend, t: FileType, size: u64, location: &str) {
    let e = b.read_admitted(t, &name_of(t), &mut |n| panic!("{n} bytes admitted past the limit")).unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Oversized, "{e}");
    let msg = e.to_string();
    let expected = format!("{size} bytes, more than any {} can hold ({} at most)", t.noun(), t.max_len());
    assert!(msg.contains(location) && msg.contains(&expected), "{t:?}: {msg}");
    // Readers report it as a damaged object, named as such.
    let as_damage = damage(t, e).to_string();
    assert!(as_damage.contains(&format!("{} {location}", t.noun())) && as_damage.contains("damaged"), "{as_damage}");
}

#[test]
fn every_type_refuses_an_object_one_byte_past_its_limit_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalBackend::new(dir.path());
    local.create().unwrap();
    for t in FileType::ALL {
        let path = dir.path().join(t.path(&name_of(t)));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Sparse: no disk space, and no memory unless a read takes it.
        let f = fs::File::create(&path).unwrap();
        f.set_len(t.max_len() + 1).unwrap();
        assert_refused(&local, t, t.max_len() + 1, &path.display().to_string());
        // At the limit, the small types read (the packs' limit is 1.3 GiB,
        // the segments' and marks' 64 MiB: not worth reading here).
        if t.max_len() <= (32 << 20) {
            f.set_len(t.max_len()).unwrap();
            let mut admitted = 0;
            let got = local.read_admitted(t, &name_of(t), &mut |n| admitted = n).unwrap();
            assert_eq!((got.len() as u64, admitted), (t.max_len(), t.max_len()), "{t:?}");
        }
        fs::remove_file(&path).unwrap();
    }
    let mem = MemoryBackend::new();
    for t in FileType::ALL.into_iter().filter(|t| !matches!(t, FileType::Data | FileType::Tree)) {
        let max = t.max_len() as usize;
        mem.replace(t, &name_of(t), &vec![7u8; max + 1]).unwrap();
        assert_refused(&mem, t, max as u64 + 1, &format!("memory:{}", t.path(&name_of(t))));
        mem.replace(t, &name_of(t), &vec![7u8; max]).unwrap();
        assert_eq!(mem.read(t, &name_of(t)).unwrap().len(), max);
        mem.remove(t, &name_of(t)).unwrap();
    }
}

#[test]
fn the_limits_are_what_docs_format_md_says() {
    let kib = 1u64 << 10;
    let mib = 1u64 << 20;
    let overhead = envelope::OVERHEAD as u64;
    assert_eq!(overhead, 30);
    for (t, max) in [
        (FileType::Config, 64 * kib),
        (FileType::Key, 64 * kib),
        (FileType::Lock, 64 * kib),
        (FileType::Snapshot, 16 * mib + overhead),
        (FileType::Index, 64 * mib + overhead),
        (FileType::Marks, 64 * mib + overhead),
        (FileType::Data, vault_store::format::pack::MAX_PACK_LEN),
        (FileType::Tree, vault_store::format::pack::MAX_PACK_LEN),
    ] {
        assert_eq!(t.max_len(), max, "{t:?}");
    }
}

/// A snapshot sealed as the repository seals it, stored under its id.
fn store_sealed(be: &dyn Backend, keys: &Keys, payload: &[u8]) -> ([u8; 32], Vec<u8>) {
    let id = keys.meta_id(payload);
    let sealed = envelope::seal(keys, snapshot::AAD, payload);
    be.write_new(FileType::Snapshot, &hex::encode(id), &sealed).unwrap();
    (id, sealed)
}

#[test]
fn a_payload_past_its_limit_is_refused_by_name_even_when_its_object_is_small() {
    let mem = MemoryBackend::new();
    let keys = Keys::generate();
    let load = |id: &[u8; 32]| {
        let what = format!("snapshot {}", hex::encode(id));
        let name = hex::encode(id);
        budget::load_sealed(&mem, &keys, FileType::Snapshot, &name, (snapshot::AAD, id), MAX_SNAPSHOT_LEN, &what, Ok)
    };
    // At the limit: read, authenticated against its name, decompressed.
    let fits = vec![b'a'; MAX_SNAPSHOT_LEN];
    let (id, sealed) = store_sealed(&mem, &keys, &fits);
    assert!(sealed.len() < 1 << 20, "it compresses well");
    assert!(load(&id).unwrap() == fits);
    // One byte more: a small object whose payload is refused by its size.
    let past = vec![b'a'; MAX_SNAPSHOT_LEN + 1];
    let (id, _) = store_sealed(&mem, &keys, &past);
    let e = load(&id).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&hex::encode(id)) && msg.contains(&format!("more than {MAX_SNAPSHOT_LEN} bytes")), "{msg}");
    // Stored uncompressed (it would not compress), the same.
    let mut noise = vec![0u8; MAX_SNAPSHOT_LEN + 1];
    blake3::Hasher::new().finalize_xof().fill(&mut noise);
    let (id, sealed) = store_sealed(&mem, &keys, &noise);
    assert_eq!(sealed.len(), noise.len() + envelope::OVERHEAD, "stored as is");
    let msg = load(&id).unwrap_err().to_string();
    assert!(msg.contains(&hex::encode(id)) && msg.contains("more than any snapshot can hold"), "{msg}");
    // Every share of the read budget was given back (no other test of this
    // file reads sealed objects).
    assert_eq!(budget::metadata_reads().used(), 0);
}

#[test]
fn the_snapshot_writer_refuses_what_readers_would_refuse() {
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(mem.clone(), b"pw", &fast_init()).unwrap();
    let repo = Repository::open(mem.clone(), b"pw", &Default::default()).unwrap();
    let mut snap = snapshot::Snapshot {
        version: snapshot::SNAPSHOT_VERSION,
        time: jiff::Timestamp::UNIX_EPOCH,
        host: "h".into(),
        user: "u".into(),
        paths: vec!["/x".into()],
        tags: vec![],
        tree: vault_store::BlobId([1; 32]),
        parent: None,
        excludes: vec![],
        program_version: "test".into(),
        summary: None,
        original: None,
    };
    repo.save_snapshot(&snap).unwrap();
    // Excludes read from a file can be long; this many can't be stored.
    snap.excludes = vec!["x".repeat(1000); MAX_SNAPSHOT_LEN / 1000 + 1];
    let e = repo.save_snapshot(&snap).unwrap_err().to_string();
    assert!(e.contains("more than readers accept") && e.contains("excludes (16778)"), "{e}");
    assert_eq!(mem.list(FileType::Snapshot).unwrap().len(), 1, "nothing stored");
}

fn fast_init() -> vault_store::InitOptions {
    let kdf = vault_store::crypto::KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
    vault_store::InitOptions { kdf, ..Default::default() }
}

#[test]
fn a_config_past_its_limit_is_refused_by_name() {
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(mem.clone(), b"pw", &fast_init()).unwrap();
    let mut config = mem.read(FileType::Config, "config").unwrap();
    config.resize(FileType::Config.max_len() as usize + 1, b' ');
    mem.replace(FileType::Config, "config", &config).unwrap();
    let e = Repository::open(mem.clone(), b"pw", &Default::default()).err().expect("refused").to_string();
    assert!(e.contains("memory:config") && e.contains("65537 bytes, more than any config can hold"), "{e}");
}

#[test]
fn marks_are_written_in_parts_that_each_read_and_an_old_oversized_one_names_its_remedy() {
    let mem = MemoryBackend::new();
    let keys = Keys::generate();
    let packs: Vec<PackId> =
        (0..2 * PACKS_PER_MARK as u32 + 1).map(|i| PackId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
    let names = gc::write_marks(&mem, &keys, packs.clone()).unwrap();
    assert_eq!(names.len(), 3);
    for (name, size) in mem.list(FileType::Marks).unwrap() {
        assert!(size <= FileType::Marks.max_len() / 8, "{name}: {size} bytes, far within the limit");
    }
    let mut read: Vec<PackId> = gc::load_marks(&mem, &keys).unwrap().into_iter().flat_map(|m| m.packs).collect();
    read.sort();
    let mut want = packs;
    want.sort();
    assert!(read == want, "every pack is marked once");
    // A mark past the limit (an older prune's, or a hostile one) stops
    // writers, naming it and what is safe to do.
    let big = "cd".repeat(32);
    mem.write_new(FileType::Marks, &big, &vec![0u8; FileType::Marks.max_len() as usize + 1]).unwrap();
    let e = gc::load_marks(&mem, &keys).unwrap_err().to_string();
    assert!(
        e.contains(&format!("marks/{big}"))
            && e.contains("more than any marks file can hold")
            && e.contains("removing this file is safe"),
        "{e}"
    );
}

#[test]
fn a_snapshot_run_with_lists_too_long_for_its_object_stores_nothing() {
    use vault_store::archiver::{self, Progress, SnapshotOptions, Source};
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(mem.clone(), b"pw", &fast_init()).unwrap();
    let mut repo = Repository::open(mem.clone(), b"pw", &Default::default()).unwrap();
    let before: usize = [FileType::Data, FileType::Tree, FileType::Index, FileType::Snapshot]
        .iter()
        .map(|t| mem.list(*t).unwrap().len())
        .sum();
    // Excludes read from a file can be long; this many can't be stored, and
    // the run says so before it reads or stores anything.
    let opts = SnapshotOptions { excludes: vec!["x".repeat(1000); MAX_SNAPSHOT_LEN / 1000 + 1], ..Default::default() };
    let data = vec![7u8; 1 << 20];
    let source = Source::Stream { name: "f".into(), reader: Box::new(std::io::Cursor::new(data)) };
    let e = archiver::run_snapshot(&mut repo, source, &opts, &Progress::default(), || Ok(())).unwrap_err().to_string();
    assert!(e.contains("more than readers accept") && e.contains("excludes (16778)"), "{e}");
    let after: usize = [FileType::Data, FileType::Tree, FileType::Index, FileType::Snapshot]
        .iter()
        .map(|t| mem.list(*t).unwrap().len())
        .sum();
    assert_eq!(before, after, "no pack, segment or snapshot was stored");
}
