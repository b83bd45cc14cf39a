//! Opening a repository whose `keys/` holds key files someone else put
//! there: out-of-bounds Argon2 costs, an expensive key that sorts first by
//! name, an oversized or unparseable file. Each is skipped (and named when
//! no key opens), and the real key is tried first.

use std::sync::Arc;

use vault_store::backend::memory::MemoryBackend;
use vault_store::backend::{Backend, FileType};
use vault_store::crypto::{KdfParams, KeyFile, Keys, MAX_KEY_FILE_LEN};
use vault_store::{Error, InitOptions, KeyId, OpenOptions, Repository};

const CHEAP: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

/// A repository with one cheap key for `pw`, and the id of that key.
fn repository() -> (Arc<MemoryBackend>, KeyId) {
    let backend = Arc::new(MemoryBackend::new());
    let opts = InitOptions { kdf: CHEAP, ..InitOptions::default() };
    Repository::init(backend.clone(), b"pw", &opts).unwrap();
    let real = open(&backend, b"pw").unwrap().current_key();
    (backend, real)
}

fn open(backend: &Arc<MemoryBackend>, password: &[u8]) -> vault_store::Result<Repository> {
    let opts = OpenOptions { skip_index: true, ..OpenOptions::default() };
    Repository::open(backend.clone(), password, &opts)
}

/// Writes a key file under the name of its hash, as vault would; returns
/// the name.
fn put_key(backend: &MemoryBackend, bytes: &[u8]) -> String {
    let name = blake3::hash(bytes).to_hex().to_string();
    backend.write_new(FileType::Key, &name, bytes).unwrap();
    name
}

/// A key file for `pw` whose params were changed afterwards (it can't
/// open: the wrapping key depended on the old ones).
fn key_with_params(params: KdfParams) -> Vec<u8> {
    let mut kf = KeyFile::seal(&Keys::generate(), b"pw", CHEAP, "h", "u", "now").unwrap();
    kf.params = params;
    kf.encode()
}

#[test]
fn a_key_file_with_out_of_bounds_costs_is_skipped_and_named() {
    let (backend, real) = repository();
    // 100 passes: far above what vault writes (3), cheap to run by mistake.
    let hostile = put_key(&backend, &key_with_params(KdfParams { memory_kib: 64, iterations: 100, parallelism: 1 }));

    // The real key still opens.
    assert_eq!(open(&backend, b"pw").unwrap().current_key(), real);

    // A wrong password names the hostile file and its parameter.
    let err = open(&backend, b"wrong").err().expect("a wrong password is refused");
    assert!(matches!(err, Error::WrongPassword { keys: 2, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("keys/{hostile}")) && msg.contains("iterations 100"), "{msg}");

    // `key list` shows it as damaged, with the reason.
    let listed = open(&backend, b"pw").unwrap().list_keys().unwrap();
    let (_, entry) = listed.iter().find(|(id, _)| id.to_hex() == hostile).expect("listed");
    let why = entry.as_ref().expect_err("listed as damaged");
    assert!(why.contains("iterations 100"), "{why}");

    // Alone, it is the error.
    backend.remove(FileType::Key, &real.to_hex()).unwrap();
    let err = open(&backend, b"pw").err().expect("no key opens").to_string();
    assert!(err.contains(&format!("keys/{hostile}")) && err.contains("iterations"), "{err}");

    // A key file asking for 4 GiB is refused before any memory is taken.
    let huge = put_key(&backend, &key_with_params(KdfParams { memory_kib: 4 << 20, iterations: 1, parallelism: 1 }));
    let err = open(&backend, b"pw").err().expect("no key opens").to_string();
    assert!(err.contains(&format!("keys/{huge}")) && err.contains("memory_kib 4194304"), "{err}");
}

#[test]
fn an_expensive_key_that_sorts_first_is_tried_after_the_cheap_one() {
    let (backend, cheap) = repository();
    // A second key for the same password, dearer (within bounds), whose
    // name sorts before the cheap one's: added again until it does (each
    // try is a coin toss; 64 misses in a row would take 2^-64).
    let dear = KdfParams { memory_kib: 4096, iterations: 3, parallelism: 1 };
    let repo = open(&backend, b"pw").unwrap();
    let expensive = (0..64)
        .find_map(|_| {
            let id = repo.add_key(b"pw", dear, "h", "u").unwrap();
            if id.to_hex() < cheap.to_hex() {
                Some(id)
            } else {
                backend.remove(FileType::Key, &id.to_hex()).unwrap();
                None
            }
        })
        .expect("a key id that sorts first");
    drop(repo);

    // Both open with the password; by name the expensive one would be
    // tried (and used) first. The cheap one is.
    let repo = open(&backend, b"pw").unwrap();
    assert_eq!(repo.current_key(), cheap, "the cheap key opened, not {}", expensive.to_hex());

    // Without the cheap key, the expensive one still opens.
    backend.remove(FileType::Key, &cheap.to_hex()).unwrap();
    assert_eq!(open(&backend, b"pw").unwrap().current_key(), expensive);
}

#[test]
fn an_oversized_or_unparseable_key_file_is_skipped_and_named() {
    let (backend, real) = repository();
    let big = vec![b' '; MAX_KEY_FILE_LEN + 1];
    let big_name = "0".repeat(64);
    backend.write_new(FileType::Key, &big_name, &big).unwrap();
    let junk = put_key(&backend, b"{\"version\": 1,");

    assert_eq!(open(&backend, b"pw").unwrap().current_key(), real);

    let err = open(&backend, b"wrong").err().expect("a wrong password is refused");
    assert!(matches!(err, Error::WrongPassword { keys: 3, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("keys/{big_name}")) && msg.contains(&format!("{} bytes", big.len())), "{msg}");
    assert!(msg.contains(&format!("keys/{junk}")) && msg.contains("not a key file"), "{msg}");
}
