//! Keys and ciphers.
//!
//! A repository has one random 64-byte master secret. Every key in use is
//! derived from it with BLAKE3 `derive_key` and a fixed context string, so a
//! single secret (wrapped per password in `keys/`) opens everything. The
//! AES-256-GCM cipher sits behind [`Cipher`], so the implementation is
//! chosen in one place: it is `ring`'s (AES-NI/VAES and carry-less multiply
//! assembly), which seals about three times as fast here as the pure-Rust
//! `aes-gcm` crate (the `encrypt` group of the `stages` benchmark).
//!
//! Secrets are wiped when dropped (the `zeroize` crate): the master secret
//! and the keys derived from it (held once, behind an `Arc`, however often
//! [`Keys`] is cloned), each pack key, the Argon2 output that wraps the
//! master secret, and the unwrapped master secret's buffer. What this can't
//! reach: `ring` keeps each AES key as an expanded key schedule (and the
//! GHASH key) inside its `LessSafeKey`, opaque and never wiped; BLAKE3
//! hashers made inside `blake3::keyed_hash` and the callers' blob hashers
//! keep a key copy until their memory is reused; and moves of a value
//! may leave a copy on the stack.

use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::id::BlobId;

/// Bytes of an AES-GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the master secret.
pub const MASTER_LEN: usize = 64;

/// A key or secret, wiped when dropped.
type Secret<const N: usize> = Zeroizing<[u8; N]>;

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source is unavailable");
    b
}

/// One AES-256-GCM key. `ring` expands it into a key schedule it doesn't
/// wipe when dropped (see the module docs).
#[derive(Clone)]
pub struct Cipher(LessSafeKey);

impl Cipher {
    /// A cipher for a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Cipher(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key")))
    }

    /// Encrypts `buf` in place and appends the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut Vec<u8>) {
        self.seal_tail(nonce, aad, buf, 0);
    }

    /// Encrypts `buf[start..]` in place and appends the tag.
    pub fn seal_tail(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buf[start..])
            .expect("AES-GCM accepts messages up to 64 GiB; blobs are far smaller");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Checks the tag at the end of `buf` and decrypts in place, removing it.
    /// Returns `false` when authentication fails (wrong key or modified data).
    #[must_use]
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut Vec<u8>) -> bool {
        match self.open_in_place(nonce, aad, buf) {
            Some(n) => {
                buf.truncate(n);
                true
            }
            None => false,
        }
    }

    /// Checks the tag at the end of `buf` and decrypts the rest in place.
    /// Returns the plaintext's length (`buf[..n]`), or `None` when
    /// authentication fails, in which case `ring` has overwritten the body
    /// with zeros (plaintext that failed authentication is never seen).
    #[must_use]
    pub fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Option<usize> {
        let body_len = buf.len().checked_sub(TAG_LEN)?;
        let (body, tag) = buf.split_at_mut(body_len);
        let tag = Tag::try_from(&*tag).ok()?;
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, body, 0..)
            .ok()
            .map(|_| body_len)
    }
}

/// The nonce of the blob at `offset` in a pack. Offsets are unique within
/// a pack and every pack has its own key, so nonces never repeat under a key.
pub fn blob_nonce(offset: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&offset.to_le_bytes());
    n
}

/// The nonce reserved for a pack's header (no blob offset below 4 GiB reaches it).
pub const HEADER_NONCE: [u8; NONCE_LEN] = [0xff; NONCE_LEN];

/// The additional authenticated data of a blob: its id and its type, so a
/// blob can't be swapped for another or passed off as another type.
pub fn blob_aad(id: &BlobId, kind: u8) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[..32].copy_from_slice(id.as_bytes());
    aad[32] = kind;
    aad
}

/// All keys derived from the master secret. A clone shares them: they are
/// held once and wiped when the last clone is dropped.
#[derive(Clone)]
pub struct Keys(Arc<KeyMaterial>);

/// What [`Keys`] holds. Each secret wipes itself when dropped (checked at
/// compile time by `secrets_are_wiped_on_drop` below).
struct KeyMaterial {
    master: Secret<MASTER_LEN>,
    chunk_id: Secret<32>,
    data: Secret<32>,
    meta: Secret<32>,
    meta_id: Secret<32>,
    gear: Secret<32>,
    cache: Secret<32>,
    meta_cipher: Cipher,
}

impl Keys {
    /// A fresh random master secret.
    pub fn generate() -> Self {
        Self::from_master(random_bytes::<MASTER_LEN>())
    }

    /// Derives every key from a master secret, and wipes the argument.
    pub fn from_master(mut master: [u8; MASTER_LEN]) -> Self {
        let keys = Self::derive(&master);
        master.zeroize();
        keys
    }

    /// Derives every key from a master secret, writing each straight into
    /// the shared allocation (a key built on the stack and moved there
    /// would leave a copy behind).
    fn derive(master: &[u8; MASTER_LEN]) -> Self {
        let zero = || Zeroizing::new([0u8; 32]);
        let mut m = Arc::new(KeyMaterial {
            master: Zeroizing::new([0; MASTER_LEN]),
            chunk_id: zero(),
            data: zero(),
            meta: zero(),
            meta_id: zero(),
            gear: zero(),
            cache: zero(),
            meta_cipher: Cipher::new(&[0; 32]),
        });
        let k = Arc::get_mut(&mut m).expect("the Arc was made just now");
        k.master.copy_from_slice(master);
        let derive = |ctx: &str, out: &mut [u8; 32]| {
            let mut h = blake3::Hasher::new_derive_key(ctx);
            h.update(master);
            let mut hash = h.finalize();
            out.copy_from_slice(hash.as_bytes());
            hash.zeroize();
            // The hasher's buffer holds the master secret.
            h.zeroize();
        };
        derive("vault 2026-11-25 blob id key", &mut k.chunk_id);
        derive("vault 2026-11-25 pack encryption key", &mut k.data);
        derive("vault 2026-11-25 metadata encryption key", &mut k.meta);
        derive("vault 2026-11-25 metadata id key", &mut k.meta_id);
        derive("vault 2026-11-25 chunker gear key", &mut k.gear);
        derive("vault 2026-12-05 local cache tag key", &mut k.cache);
        k.meta_cipher = Cipher::new(&k.meta);
        Keys(m)
    }

    /// The master secret, for wrapping in a key file.
    pub fn master(&self) -> &[u8; MASTER_LEN] {
        &self.0.master
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.0.chunk_id, plaintext).as_bytes())
    }

    /// The blob-id hasher, for hashing a blob incrementally or in parallel.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0.chunk_id)
    }

    /// The id of a metadata object (snapshot, index segment): keyed BLAKE3.
    pub fn meta_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0.meta_id, plaintext).as_bytes()
    }

    /// The cipher for metadata objects (random nonces).
    pub fn meta_cipher(&self) -> &Cipher {
        &self.0.meta_cipher
    }

    /// A tag over `parts` (their lengths included) for what the local
    /// cache keeps outside a seal; compare it as a `blake3::Hash`, in
    /// constant time.
    pub fn cache_tag(&self, parts: &[&[u8]]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0.cache);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let tag = h.finalize();
        h.zeroize();
        tag
    }

    /// The key the chunker's gear table is derived from.
    pub fn gear_key(&self) -> &[u8; 32] {
        &self.0.gear
    }

    /// The cipher of one pack, from its random salt.
    pub fn pack_cipher(&self, salt: &[u8; 32]) -> Cipher {
        let mut h = blake3::Hasher::new_keyed(&self.0.data);
        h.update(b"vault pack key v1");
        h.update(salt);
        let mut key = h.finalize();
        let cipher = Cipher::new(key.as_bytes());
        key.zeroize();
        h.zeroize();
        cipher
    }

    /// Used only by tests that compare keys.
    #[doc(hidden)]
    pub fn meta_key_fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&*self.0.meta).as_bytes()
    }
}

/// Argon2id cost parameters stored in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

/// Bounds on the costs a key file may ask for (docs/format.md section 5.3).
/// A key file is tried on every command by whoever opens the repository,
/// so its costs are bounded by what `vault` itself writes: 3 passes over at
/// most 1 GiB (the default is 64 MiB; only the hidden `init --kdf-memory`
/// asks for another amount). Lanes split the memory and add no work; up to
/// 4 are accepted, RFC 9106's recommendation, though vault writes 1.
impl KdfParams {
    /// Most memory, in KiB (1 GiB).
    pub const MAX_MEMORY_KIB: u32 = 1 << 20;
    /// Most passes.
    pub const MAX_ITERATIONS: u32 = 3;
    /// Most lanes.
    pub const MAX_PARALLELISM: u32 = 4;
    /// Least memory per lane, in KiB (Argon2's own minimum).
    pub const MIN_MEMORY_KIB_PER_LANE: u32 = 8;

    /// Says which parameter is out of bounds, and what the bound is.
    pub fn check(&self) -> std::result::Result<(), String> {
        let KdfParams { memory_kib: m, iterations: t, parallelism: p } = *self;
        if !(1..=Self::MAX_PARALLELISM).contains(&p) {
            return Err(format!("Argon2 parallelism {p} is out of bounds (1 to {})", Self::MAX_PARALLELISM));
        }
        if !(1..=Self::MAX_ITERATIONS).contains(&t) {
            return Err(format!("Argon2 iterations {t} is out of bounds (1 to {})", Self::MAX_ITERATIONS));
        }
        let min_m = Self::MIN_MEMORY_KIB_PER_LANE * p;
        if !(min_m..=Self::MAX_MEMORY_KIB).contains(&m) {
            return Err(format!(
                "Argon2 memory_kib {m} is out of bounds ({min_m} to {} with parallelism {p})",
                Self::MAX_MEMORY_KIB
            ));
        }
        Ok(())
    }

    /// The work of a derivation, in KiB blocks filled: memory times passes
    /// (lanes split the memory, they add nothing). Orders key files for
    /// trying; meaningful only for parameters within bounds.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// Derives the wrapping key into `out` (the caller's, so that it is
    /// wiped where it lives, not copied out of this frame). `what` names
    /// the key file in errors.
    fn derive(&self, password: &[u8], salt: &[u8], out: &mut [u8; 32], what: &str) -> Result<()> {
        // Checked here too, not only when decoding: a `KeyFile` may be
        // built in memory.
        self.check().map_err(|e| Error::corrupt(what, e))?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt(what, format!("bad Argon2 parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon.hash_password_into(password, salt, out).map_err(|e| Error::corrupt(what, format!("Argon2 failed: {e}")))
    }
}

/// Puts key files in the order to try a password on them: the cheapest
/// Argon2 cost first, then by name. Someone who can write to `keys/` then
/// can't make every command pay for an expensive key file before the real
/// ones by giving it a name that sorts first; only a key cheaper than the
/// real one goes ahead of it, and that costs little.
pub fn sort_for_unlock<N: Ord>(keys: &mut [(N, KeyFile)]) {
    keys.sort_by(|(a_name, a), (b_name, b)| a.params.cost().cmp(&b.params.cost()).then_with(|| a_name.cmp(b_name)));
}

/// The contents of `keys/<id>`: the master secret wrapped under a key derived
/// from one password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version of this file (1).
    pub version: u32,
    /// When the key was added (RFC 3339).
    pub created: String,
    /// Host the key was added on.
    pub host: String,
    /// User who added it.
    pub user: String,
    /// Always "argon2id".
    pub kdf: String,
    /// Argon2 costs.
    pub params: KdfParams,
    /// Argon2 salt, hex.
    pub salt: String,
    /// AES-GCM nonce, hex.
    pub nonce: String,
    /// The sealed master secret (64 bytes + 16 tag), hex.
    pub sealed: String,
}

const KEY_AAD: &[u8] = b"vault key file v1";
/// Largest key file a reader accepts (docs/format.md section 1); one is
/// about 600 bytes.
pub const MAX_KEY_FILE_LEN: usize = 64 << 10;

impl KeyFile {
    /// Wraps the master secret under `password`.
    pub fn seal(
        keys: &Keys,
        password: &[u8],
        params: KdfParams,
        host: &str,
        user: &str,
        created: &str,
    ) -> Result<Self> {
        // A key vault wouldn't accept when opening is never written.
        params.check().map_err(|e| Error::Invalid(format!("cannot add a key: {e}")))?;
        let salt = random_bytes::<32>();
        let nonce = random_bytes::<NONCE_LEN>();
        let mut wrap = Zeroizing::new([0u8; 32]);
        params.derive(password, &salt, &mut wrap, "new key file")?;
        // Room for the tag, so that no copy of the plaintext is left
        // behind by a reallocation (it is sealed in place).
        let mut buf = Vec::with_capacity(MASTER_LEN + TAG_LEN);
        buf.extend_from_slice(keys.master());
        Cipher::new(&wrap).seal(&nonce, KEY_AAD, &mut buf);
        Ok(KeyFile {
            version: 1,
            created: created.to_string(),
            host: host.to_string(),
            user: user.to_string(),
            kdf: "argon2id".to_string(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            sealed: hex::encode(buf),
        })
    }

    /// Parses a key file, and checks that its Argon2 costs are within
    /// bounds. `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let kf: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what, format!("not a key file: {e}")))?;
        if kf.version != 1 {
            return Err(Error::UnsupportedVersion { what: what.to_string(), found: kf.version, supported: 1 });
        }
        if kf.kdf != "argon2id" {
            return Err(Error::corrupt(what, format!("unknown KDF {:?}", kf.kdf)));
        }
        kf.params.check().map_err(|e| Error::corrupt(what, e))?;
        Ok(kf)
    }

    /// Serializes the key file.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a key file always serializes")
    }

    /// Unwraps the master secret. `Ok(None)` means the password is wrong.
    pub fn open(&self, password: &[u8], what: &str) -> Result<Option<Keys>> {
        let bad = |field: &str| Error::corrupt(what, format!("field {field} is not valid hex of the right length"));
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt"))?;
        if salt.len() < 8 || salt.len() > 64 {
            return Err(bad("salt"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(&self.nonce, &mut nonce).map_err(|_| bad("nonce"))?;
        // Decrypted in place: the buffer holds the master secret.
        let mut buf = Zeroizing::new(hex::decode(&self.sealed).map_err(|_| bad("sealed"))?);
        if buf.len() != MASTER_LEN + TAG_LEN {
            return Err(bad("sealed"));
        }
        let mut wrap = Zeroizing::new([0u8; 32]);
        self.params.derive(password, &salt, &mut wrap, what)?;
        if !Cipher::new(&wrap).open(&nonce, KEY_AAD, &mut buf) {
            return Ok(None);
        }
        let master: &[u8; MASTER_LEN] = buf.as_slice().try_into().expect("length checked above");
        Ok(Some(Keys::derive(master)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    #[test]
    fn seal_open_round_trip() {
        let c = Cipher::new(&[7; 32]);
        let mut buf = b"hello".to_vec();
        c.seal(&blob_nonce(3), b"aad", &mut buf);
        assert_eq!(buf.len(), 5 + TAG_LEN);
        assert!(!c.open(&blob_nonce(4), b"aad", &mut buf.clone()));
        assert!(!c.open(&blob_nonce(3), b"other", &mut buf.clone()));
        assert!(c.open(&blob_nonce(3), b"aad", &mut buf));
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn open_with_wrong_password() {
        let keys = Keys::generate();
        let kf = KeyFile::seal(&keys, b"right", fast(), "h", "u", "now").unwrap();
        let kf = KeyFile::decode(&kf.encode(), "k").unwrap();
        assert!(kf.open(b"wrong", "k").unwrap().is_none());
        let opened = kf.open(b"right", "k").unwrap().unwrap();
        assert_eq!(opened.master(), keys.master());
    }

    /// Every secret [`Keys`] holds wipes itself when dropped. A compile-time
    /// check: `KeyMaterial` is destructured without `..`, so a new field
    /// doesn't compile until it is listed here (and so wiped, or said why
    /// not).
    #[test]
    fn secrets_are_wiped_on_drop() {
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let keys = Keys::generate();
        let KeyMaterial { master, chunk_id, data, meta, meta_id, gear, cache, meta_cipher: _ } = &*keys.0;
        wiped(master);
        for k in [chunk_id, data, meta, meta_id, gear, cache] {
            wiped(k);
        }
        // The wrapping key and the unwrapped master secret's buffer.
        wiped(&Zeroizing::new([0u8; 32]));
        wiped(&Zeroizing::new(Vec::<u8>::new()));
    }

    /// The keys derived into the shared allocation are those of the
    /// format (docs/format.md section 4), not the zeros they start as.
    #[test]
    fn derived_keys_follow_the_format() {
        let master = [9u8; MASTER_LEN];
        let keys = Keys::from_master(master);
        assert_eq!(keys.gear_key(), &blake3::derive_key("vault 2026-11-25 chunker gear key", &master));
        let meta = blake3::derive_key("vault 2026-11-25 metadata encryption key", &master);
        assert_eq!(keys.meta_key_fingerprint(), *blake3::hash(&meta).as_bytes());
        let blob_key = blake3::derive_key("vault 2026-11-25 blob id key", &master);
        assert_eq!(keys.blob_id(b"x").as_bytes(), blake3::keyed_hash(&blob_key, b"x").as_bytes());
        let mut sealed = b"m".to_vec();
        Cipher::new(&meta).seal(&[1; NONCE_LEN], b"a", &mut sealed);
        assert!(keys.meta_cipher().open(&[1; NONCE_LEN], b"a", &mut sealed));
        let data = blake3::derive_key("vault 2026-11-25 pack encryption key", &master);
        let mut h = blake3::Hasher::new_keyed(&data);
        h.update(b"vault pack key v1");
        h.update(&[3; 32]);
        let mut sealed = b"p".to_vec();
        Cipher::new(h.finalize().as_bytes()).seal(&blob_nonce(0), b"", &mut sealed);
        assert!(keys.pack_cipher(&[3; 32]).open(&blob_nonce(0), b"", &mut sealed));
    }

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let keys = Keys::generate();
        let kf = KeyFile::seal(&keys, b"pw", fast(), "h", "u", "now").unwrap();
        let p = |memory_kib, iterations, parallelism| KdfParams { memory_kib, iterations, parallelism };
        for (params, field) in [
            (p(u32::MAX, 1, 1), "memory_kib"),
            (p(4 << 20, 1, 1), "memory_kib"),
            (p(KdfParams::MAX_MEMORY_KIB + 1, 1, 1), "memory_kib"),
            (p(7, 1, 1), "memory_kib"),
            (p(31, 1, 4), "memory_kib"),
            (p(64, 100, 1), "iterations"),
            (p(64, KdfParams::MAX_ITERATIONS + 1, 1), "iterations"),
            (p(64, 0, 1), "iterations"),
            (p(1024, 1, 64), "parallelism"),
            (p(64, 1, KdfParams::MAX_PARALLELISM + 1), "parallelism"),
            (p(64, 1, 0), "parallelism"),
        ] {
            let mut bad = kf.clone();
            bad.params = params;
            // Refused when parsed (so `key list` and `check` say so too) ...
            let err = KeyFile::decode(&bad.encode(), "key file keys/abc").unwrap_err().to_string();
            assert!(err.contains("keys/abc") && err.contains(field), "{params:?}: {err}");
            // ... and before any Argon2 run when opened.
            let err = bad.open(b"pw", "key file keys/abc").err().expect("refused").to_string();
            assert!(err.contains("keys/abc") && err.contains(field), "{params:?}: {err}");
            // Nor does vault write such a key.
            assert!(KeyFile::seal(&keys, b"pw", params, "h", "u", "now").is_err(), "{params:?}");
        }
        // The bounds themselves are accepted, and so is what vault writes.
        assert_eq!(p(KdfParams::MAX_MEMORY_KIB, KdfParams::MAX_ITERATIONS, KdfParams::MAX_PARALLELISM).check(), Ok(()));
        assert_eq!(p(32, 1, 4).check(), Ok(()));
        assert_eq!(KdfParams::default().check(), Ok(()));
    }

    #[test]
    fn key_files_are_tried_cheapest_first_then_by_name() {
        let keys = Keys::generate();
        let kf = KeyFile::seal(&keys, b"pw", fast(), "h", "u", "now").unwrap();
        let with = |name: &'static str, memory_kib, iterations, parallelism| {
            let mut k = kf.clone();
            k.params = KdfParams { memory_kib, iterations, parallelism };
            (name, k)
        };
        let mut list = vec![
            // Sorts first by name, and costs the most.
            with("0000", KdfParams::MAX_MEMORY_KIB, KdfParams::MAX_ITERATIONS, 1),
            with("ffff", 64 * 1024, 3, 1),
            with("aaaa", 64 * 1024, 3, 1),
            // Lanes add no work: as cheap as the one below, then by name.
            with("cccc", 64, 1, 4),
            with("bbbb", 64, 1, 1),
            with("1111", 1024, 3, 1),
        ];
        sort_for_unlock(&mut list);
        let order: Vec<_> = list.iter().map(|(n, _)| *n).collect();
        assert_eq!(order, ["bbbb", "cccc", "1111", "aaaa", "ffff", "0000"]);
    }
}
