//! One test suite for every backend: the local directory, memory, and S3
//! through a real S3 server on 127.0.0.1 (s3s-fs). Each must behave the
//! same way wherever the store relies on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vault_s3_server::S3Server;
use vault_store::backend::{self, Backend, BackendOptions, FileType};

use vault_store::error::BackendErrorKind;

mod common;

fn hex_name(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// A pack's name: the BLAKE3 hash of its bytes (a vault server checks it).
fn pack_name(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8).collect()
}

/// Everything the store asks of a backend.
fn suite(b: &dyn Backend) {
    let loc = b.location();
    assert!(b.is_empty().unwrap(), "{loc}: a new location is empty");
    b.create().unwrap();
    for t in FileType::ALL {
        assert!(b.list(t).unwrap().is_empty(), "{loc}: nothing listed in {t:?} yet");
    }

    // put-if-absent, get, size, and no overwrite.
    b.write_new(FileType::Config, "config", b"config v1").unwrap();
    assert!(!b.is_empty().unwrap());
    assert_eq!(b.read(FileType::Config, "config").unwrap(), b"config v1");
    let e = b.write_new(FileType::Config, "config", b"other").unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::AlreadyExists, "{loc}: {e}");
    assert_eq!(b.read(FileType::Config, "config").unwrap(), b"config v1", "{loc}: never overwritten");
    assert_eq!(b.list(FileType::Config).unwrap(), vec![("config".to_string(), 9)]);

    // put (replace) is atomic and whole.
    b.replace(FileType::Config, "config", b"config v2, longer").unwrap();
    assert_eq!(b.read(FileType::Config, "config").unwrap(), b"config v2, longer");

    // Fanned-out packs, ranged reads.
    let d1 = pattern(100_000, 1);
    let (p1, p2) = (pack_name(&d1), pack_name(b"tree pack"));
    b.write_new(FileType::Data, &p1, &d1).unwrap();
    b.write_new(FileType::Tree, &p2, b"tree pack").unwrap();
    assert_eq!(b.size(FileType::Data, &p1).unwrap(), 100_000);
    assert_eq!(b.read_range(FileType::Data, &p1, 1000, 5000).unwrap(), &d1[1000..6000]);
    assert_eq!(b.read_range(FileType::Data, &p1, 99_990, 10).unwrap(), &d1[99_990..]);
    let e = b.read_range(FileType::Data, &p1, 99_990, 11).unwrap_err();
    assert!(!e.is_not_found(), "{loc}: a short range is an error, not a missing object: {e}");

    // Listing with a prefix: each type sees its own objects only, by name.
    assert_eq!(b.list(FileType::Data).unwrap(), vec![(p1.clone(), 100_000)]);
    assert_eq!(b.list(FileType::Tree).unwrap(), vec![(p2.clone(), 9)]);
    let (i1, i2) = (hex_name(0x01), hex_name(0x02));
    b.write_new(FileType::Index, &i2, b"segment two").unwrap();
    b.write_new(FileType::Index, &i1, b"segment one").unwrap();
    let names: Vec<String> = b.list(FileType::Index).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![i1.clone(), i2.clone()], "{loc}: sorted by name");
    let mut bare = b.list_names(FileType::Index).unwrap();
    bare.sort();
    assert_eq!(bare, names, "{loc}: the names alone are the same names");
    assert_eq!(b.list_names(FileType::Data).unwrap(), vec![p1.clone()], "{loc}: fanned-out names");
    assert_eq!(b.list_names(FileType::Config).unwrap(), vec!["config".to_string()]);
    assert!(b.list(FileType::Snapshot).unwrap().is_empty());
    assert!(b.list_names(FileType::Snapshot).unwrap().is_empty());

    // Modification times are the backend's and recent.
    for (name, size, mtime) in b.list_times(FileType::Index).unwrap() {
        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
        assert!(age < Duration::from_secs(600), "{loc}: {name} ({size} bytes) has mtime {mtime:?}");
    }

    // An empty object.
    let s = hex_name(0x55);
    b.write_new(FileType::Snapshot, &s, b"").unwrap();
    assert_eq!(b.read(FileType::Snapshot, &s).unwrap(), b"");
    assert_eq!(b.size(FileType::Snapshot, &s).unwrap(), 0);
    assert_eq!(b.list(FileType::Snapshot).unwrap(), vec![(s.clone(), 0)]);

    // A missing object is NotFound, named.
    let missing = hex_name(0xcd);
    for e in [
        b.read(FileType::Data, &missing).unwrap_err(),
        b.size(FileType::Data, &missing).unwrap_err(),
        b.read_range(FileType::Data, &missing, 0, 1).unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{loc}: {e}");
        assert!(e.to_string().contains(&format!("data/cd/{missing}")), "{loc}: the error names the object: {e}");
    }

    // Delete.
    b.remove(FileType::Index, &i1).unwrap();
    assert!(b.read(FileType::Index, &i1).unwrap_err().is_not_found());
    assert_eq!(b.list(FileType::Index).unwrap(), vec![(i2.clone(), 11)]);
    // Removing what is gone is harmless: S3 says nothing, a file system says "not found".
    if let Err(e) = b.remove(FileType::Index, &i1) {
        assert!(e.is_not_found(), "{loc}: {e}");
    }

    // A 40 MiB object (S3: a multipart upload).
    let big = pattern(40 << 20, 7);
    let bn = pack_name(&big);
    b.write_new(FileType::Data, &bn, &big).unwrap();
    assert_eq!(b.size(FileType::Data, &bn).unwrap(), big.len() as u64);
    assert!(b.read(FileType::Data, &bn).unwrap() == big, "{loc}: 40 MiB read back whole");
    let mid: usize = 20 << 20;
    assert!(b.read_range(FileType::Data, &bn, mid as u64 - 7, 1 << 20).unwrap() == big[mid - 7..mid - 7 + (1 << 20)]);
    let e = b.write_new(FileType::Data, &bn, &big[..1000]).unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::AlreadyExists, "{loc}: {e}");
    let other = pattern(33 << 20, 9);
    let e = b.write_new(FileType::Data, &bn, &other).unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::AlreadyExists, "{loc}: a large create over an object: {e}");
    assert!(b.read(FileType::Data, &bn).unwrap() == big, "{loc}: never overwritten");
    // The same bytes again: "exists" or success, and still the same object.
    if let Err(e) = b.write_new(FileType::Data, &bn, &big) {
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists, "{loc}: {e}");
    }
    assert_eq!(b.size(FileType::Data, &bn).unwrap(), big.len() as u64);
}

#[test]
fn local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend::open_url(dir.path().join("repo").to_str().unwrap(), &BackendOptions::default()).unwrap();
    suite(&*b);
}

#[test]
fn memory_backend() {
    suite(&backend::memory::MemoryBackend::new());
}

/// An S3 backend for `url` on the test server (credentials given directly:
/// the tests don't change their own environment).
pub fn s3_backend(server: &S3Server, url: &str) -> Arc<dyn Backend> {
    let mut o = backend::parse_s3_url(url).unwrap().unwrap();
    o.endpoint = Some(server.endpoint());
    o.credentials = Some((vault_s3_server::ACCESS_KEY.into(), vault_s3_server::SECRET_KEY.into()));
    Arc::new(backend::s3::S3Backend::new(o).unwrap())
}

#[test]
fn s3_backend_suite() {
    let server = S3Server::start();
    server.create_bucket("suite");
    let b = s3_backend(&server, "s3:suite/some/prefix");
    suite(&*b);
    // Objects live under the prefix, at the same relative paths as on disk.
    let root = server.root().join("suite/some/prefix");
    assert!(root.join("config").is_file());
    let p1 = pack_name(&pattern(100_000, 1));
    assert!(root.join(format!("data/{}/{p1}", &p1[..2])).is_file());
    assert!(root.join(format!("index/{}", hex_name(0x02))).is_file());
    one_create_wins(&*b, false);
}

/// A repository on a vault server (over plain HTTP on 127.0.0.1), with an
/// admin token, in front of a local directory: the same suite, through the
/// HTTP API and the server's checks.
#[test]
fn rest_backend_suite() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let server = common::ServerProc::start(&[("suite", repo.to_str().unwrap())], "", vec![]);
    let token = server.token("suite", "admin", "suite-admin");
    let access = backend::Access { token: Some(token.into()), cacert: None };
    let b = backend::open_url_with(&server.url("suite"), &BackendOptions::default(), &access).unwrap();
    suite(&*b);
    let p1 = pack_name(&pattern(100_000, 1));
    assert!(repo.join(format!("data/{}/{p1}", &p1[..2])).is_file(), "objects land at their paths on the server");
    one_create_wins(&*b, true);
}

/// Racing creates of one name with different bytes: exactly one succeeds,
/// and its bytes are stored. With `same_bytes`, also creates of the same
/// bytes (a vault server over a directory tells them apart; S3 can't tell
/// another's object with our bytes from our own retried create, which is
/// why objects that must be created exclusively, the lease and its break
/// markers, carry random bytes).
fn one_create_wins(b: &dyn Backend, same_bytes: bool) {
    for round in 0..5u8 {
        let name = format!("race-{round}");
        let wins: Vec<u8> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u8)
                .map(|i| {
                    let name = &name;
                    s.spawn(move || b.write_new(FileType::Lock, name, &[round, i]).is_ok().then_some(i))
                })
                .collect();
            hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.len(), 1, "round {round}: one create wins: {wins:?}");
        assert_eq!(b.read(FileType::Lock, &name).unwrap(), [round, wins[0]], "the winner's bytes are stored");
    }
    if same_bytes {
        b.write_new(FileType::Lock, "twice", b"same").unwrap();
        let e = b.write_new(FileType::Lock, "twice", b"same").unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists, "{e}");
    }
}

/// The suite through a server in front of an S3 bucket: the 40 MiB pack
/// goes up as a streamed multipart upload, checked against its name.
#[test]
fn rest_over_s3_backend_suite() {
    let s3 = S3Server::start();
    s3.create_bucket("suite");
    let server = common::ServerProc::start(&[("suite", "s3:suite/behind")], "", s3.env());
    let token = server.token("suite", "admin", "suite-admin");
    let access = backend::Access { token: Some(token.into()), cacert: None };
    let b = backend::open_url_with(&server.url("suite"), &BackendOptions::default(), &access).unwrap();
    suite(&*b);
    let big = pattern(40 << 20, 7);
    let bn = pack_name(&big);
    assert!(s3.root().join(format!("suite/behind/data/{}/{bn}", &bn[..2])).is_file());
    // A large pack whose bytes don't match its name is refused, and the
    // multipart upload is abandoned: nothing under that name.
    let wrong = pack_name(b"not these bytes");
    let e = b.write_new(FileType::Data, &wrong, &big).unwrap_err();
    assert!(e.to_string().contains("hash"), "{e}");
    assert!(b.size(FileType::Data, &wrong).unwrap_err().is_not_found());
    one_create_wins(&*b, false);
}
