//! Keys and ciphers.
//!
//! A repository has one random 64-byte master secret. Every key in use is
//! derived from it with BLAKE3 `derive_key` and a fixed context string, so a
//! single secret (wrapped per password in `keys/`) opens everything. The
//! AES-256-GCM cipher sits behind [`Cipher`], so the implementation is
//! chosen in one place: it is `ring`'s (AES-NI/VAES and carry-less multiply
//! assembly), which seals about three times as fast here as the pure-Rust
//! `aes-gcm` crate (the `encrypt` group of the `stages` benchmark).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize_lite::Secret;

use crate::error::{Error, Result};
use crate::id::BlobId;

/// Bytes of an AES-GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the master secret.
pub const MASTER_LEN: usize = 64;

mod zeroize_lite {
    /// A byte array that is wiped when dropped (best effort, no `unsafe`).
    #[derive(Clone)]
    pub struct Secret<const N: usize>(pub [u8; N]);

    impl<const N: usize> Drop for Secret<N> {
        fn drop(&mut self) {
            for b in self.0.iter_mut() {
                *b = 0;
            }
            std::hint::black_box(&self.0);
        }
    }
}

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source is unavailable");
    b
}

/// One AES-256-GCM key.
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

/// All keys derived from the master secret.
#[derive(Clone)]
pub struct Keys {
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

    /// Derives every key from a master secret.
    pub fn from_master(master: [u8; MASTER_LEN]) -> Self {
        let derive = |ctx: &str| Secret(blake3::derive_key(ctx, &master));
        let meta = derive("vault 2026-11-25 metadata encryption key");
        Keys {
            chunk_id: derive("vault 2026-11-25 blob id key"),
            data: derive("vault 2026-11-25 pack encryption key"),
            meta_id: derive("vault 2026-11-25 metadata id key"),
            gear: derive("vault 2026-11-25 chunker gear key"),
            cache: derive("vault 2026-12-05 local cache tag key"),
            meta_cipher: Cipher::new(&meta.0),
            meta,
            master: Secret(master),
        }
    }

    /// The master secret, for wrapping in a key file.
    pub fn master(&self) -> &[u8; MASTER_LEN] {
        &self.master.0
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.chunk_id.0, plaintext).as_bytes())
    }

    /// The blob-id hasher, for hashing a blob incrementally or in parallel.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.chunk_id.0)
    }

    /// The id of a metadata object (snapshot, index segment): keyed BLAKE3.
    pub fn meta_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.meta_id.0, plaintext).as_bytes()
    }

    /// The cipher for metadata objects (random nonces).
    pub fn meta_cipher(&self) -> &Cipher {
        &self.meta_cipher
    }

    /// A tag over `parts` (their lengths included) for what the local
    /// cache keeps outside a seal; compare it as a `blake3::Hash`, in
    /// constant time.
    pub fn cache_tag(&self, parts: &[&[u8]]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.cache.0);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.finalize()
    }

    /// The key the chunker's gear table is derived from.
    pub fn gear_key(&self) -> &[u8; 32] {
        &self.gear.0
    }

    /// The cipher of one pack, from its random salt.
    pub fn pack_cipher(&self, salt: &[u8; 32]) -> Cipher {
        let mut h = blake3::Hasher::new_keyed(&self.data.0);
        h.update(b"vault pack key v1");
        h.update(salt);
        Cipher::new(h.finalize().as_bytes())
    }

    /// Used only by tests that compare keys.
    #[doc(hidden)]
    pub fn meta_key_fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.meta.0).as_bytes()
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

impl KdfParams {
    /// Upper bounds accepted from a key file, so a hostile repository can't
    /// make us allocate 4 TiB or spin for hours.
    const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    const MAX_ITERATIONS: u32 = 100;
    const MAX_PARALLELISM: u32 = 64;

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(Error::corrupt("key file", format!("Argon2 parameters out of range: {self:?}")));
        }
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt("key file", format!("bad Argon2 parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| Error::corrupt("key file", format!("Argon2 failed: {e}")))?;
        Ok(out)
    }
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
        let salt = random_bytes::<32>();
        let nonce = random_bytes::<NONCE_LEN>();
        let wrap = params.derive(password, &salt)?;
        let mut buf = keys.master().to_vec();
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

    /// Parses a key file. `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let kf: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what, format!("not a key file: {e}")))?;
        if kf.version != 1 {
            return Err(Error::UnsupportedVersion { what: what.to_string(), found: kf.version, supported: 1 });
        }
        if kf.kdf != "argon2id" {
            return Err(Error::corrupt(what, format!("unknown KDF {:?}", kf.kdf)));
        }
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
        let mut buf = hex::decode(&self.sealed).map_err(|_| bad("sealed"))?;
        if buf.len() != MASTER_LEN + TAG_LEN {
            return Err(bad("sealed"));
        }
        let wrap = self.params.derive(password, &salt)?;
        if !Cipher::new(&wrap).open(&nonce, KEY_AAD, &mut buf) {
            return Ok(None);
        }
        let master: [u8; MASTER_LEN] = buf.as_slice().try_into().expect("length checked above");
        Ok(Some(Keys::from_master(master)))
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

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let keys = Keys::generate();
        let mut kf = KeyFile::seal(&keys, b"pw", fast(), "h", "u", "now").unwrap();
        kf.params.memory_kib = u32::MAX;
        assert!(kf.open(b"pw", "k").is_err());
    }
}
