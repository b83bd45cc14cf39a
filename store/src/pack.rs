//! Writing and reading packs: a [`PackWriter`] compresses, seals and appends
//! blobs of one kind until the pack is big enough; [`open_blob`] turns a
//! sealed blob back into its plaintext, authenticating it on the way.

use crate::crypto::{Cipher, Keys, blob_aad, blob_nonce, random_bytes};
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::index::IndexPack;
use crate::format::pack::{BlobEntry, Compression, MAX_BLOBS_PER_PACK, PackHeader, Trailer, seal_header};
use crate::id::{BlobId, PackId};

/// Compression setting of a writer: a zstd level (negative levels are
/// zstd's fast modes), or 0 for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionLevel(pub i32);

/// Lowest and highest zstd level accepted.
pub const MIN_LEVEL: i32 = -7;
/// Highest zstd level accepted.
pub const MAX_LEVEL: i32 = 22;

/// How hard to compress data blobs: `--compression`. Every mode first tests
/// a sample of a large blob and stores data that doesn't compress as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMode {
    /// Store data uncompressed.
    Off,
    /// zstd level 1: most of level 3's ratio at about 1.5 times its speed.
    Auto,
    /// zstd's fast level -3: for data that must go in as fast as possible.
    Fastest,
    /// zstd level 3.
    Default,
    /// zstd level 19: for archives written once and kept for years.
    Max,
    /// An explicit zstd level.
    Level(i32),
}

impl CompressionMode {
    /// The zstd level (0: none).
    pub fn level(self) -> i32 {
        match self {
            CompressionMode::Off => 0,
            CompressionMode::Auto => 1,
            CompressionMode::Fastest => -3,
            CompressionMode::Default => 3,
            CompressionMode::Max => 19,
            CompressionMode::Level(n) => n,
        }
    }
}

impl std::str::FromStr for CompressionMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "off" | "none" => Ok(CompressionMode::Off),
            "auto" => Ok(CompressionMode::Auto),
            "fastest" => Ok(CompressionMode::Fastest),
            "default" => Ok(CompressionMode::Default),
            "max" => Ok(CompressionMode::Max),
            t => match t.parse::<i32>() {
                Ok(0) => Ok(CompressionMode::Off),
                Ok(n) if (MIN_LEVEL..=MAX_LEVEL).contains(&n) => Ok(CompressionMode::Level(n)),
                _ => Err(format!(
                    "{s:?}: use auto, off, fastest, default, max, or a zstd level from {MIN_LEVEL} to {MAX_LEVEL}"
                )),
            },
        }
    }
}

/// A pack being filled. Each writer has its own salt, hence its own key.
pub struct PackWriter {
    keys: Keys,
    kind: BlobKind,
    salt: [u8; 32],
    cipher: Cipher,
    buf: Vec<u8>,
    /// Bytes reserved for each pack's buffer.
    capacity: usize,
    entries: Vec<BlobEntry>,
    raw_bytes: u64,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The whole pack file.
    pub bytes: Vec<u8>,
    /// What goes into the index.
    pub index: IndexPack,
    /// Plaintext bytes of the blobs.
    pub raw_bytes: u64,
}

impl PackWriter {
    /// An empty pack of `kind`.
    pub fn new(keys: &Keys, kind: BlobKind, level: CompressionLevel, capacity: usize) -> Self {
        let salt = random_bytes::<32>();
        let compressor = if level.0 != 0 {
            Some(
                zstd::bulk::Compressor::new(level.0.clamp(MIN_LEVEL, MAX_LEVEL))
                    .expect("zstd levels -7..=22 are valid"),
            )
        } else {
            None
        };
        PackWriter {
            cipher: keys.pack_cipher(&salt),
            keys: keys.clone(),
            kind,
            salt,
            buf: Vec::with_capacity(capacity),
            capacity,
            entries: Vec::new(),
            raw_bytes: 0,
            compressor,
            scratch: Vec::new(),
        }
    }

    /// Bytes in the pack so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the pack must be closed before another blob: it holds
    /// `pack_size` bytes, or as many blobs as a header may list (a pack of
    /// tiny blobs reaches that first when the pack size is large, and a
    /// pack listing more could never be read back).
    pub fn is_full(&self, pack_size: usize) -> bool {
        self.buf.len() >= pack_size || self.entries.len() >= MAX_BLOBS_PER_PACK as usize
    }

    /// Compresses (when that shrinks it), seals and appends a blob. Returns
    /// the stored length.
    pub fn add(&mut self, id: BlobId, plaintext: &[u8]) -> Result<u32> {
        let offset = u32::try_from(self.buf.len())
            .map_err(|_| Error::Invalid("pack exceeds 4 GiB; lower the pack size".into()))?;
        if plaintext.len() > crate::format::MAX_BLOB_LEN as usize {
            return Err(Error::BlobTooLarge {
                kind: self.kind.name(),
                len: plaintext.len(),
                limit: crate::format::MAX_BLOB_LEN,
            });
        }
        if self.entries.len() >= MAX_BLOBS_PER_PACK as usize {
            return Err(Error::Pipeline(format!(
                "a pack holds at most {MAX_BLOBS_PER_PACK} blobs; this one is full and must be closed first"
            )));
        }
        let raw_len = plaintext.len() as u32;
        let start = self.buf.len();
        let mut compression = Compression::None;
        let worth_it = self.compressor.is_some() && self.looks_compressible(plaintext);
        if worth_it && let Some(c) = self.compressor.as_mut() {
            self.scratch.clear();
            self.scratch.reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
            let n = c
                .compress_to_buffer(plaintext, &mut self.scratch)
                .map_err(|e| Error::Pipeline(format!("zstd compression failed: {e}")))?;
            if n < plaintext.len() {
                compression = Compression::Zstd;
            }
        }
        // Append, then seal in place at the end of the pack: one copy.
        self.buf.extend_from_slice(if compression == Compression::Zstd { &self.scratch } else { plaintext });
        self.cipher.seal_tail(&blob_nonce(offset), &blob_aad(&id, self.kind.to_byte()), &mut self.buf, start);
        let stored_len = (self.buf.len() - start) as u32;
        self.entries.push(BlobEntry { id, offset, stored_len, raw_len, compression });
        self.raw_bytes += plaintext.len() as u64;
        Ok(stored_len)
    }

    /// A cheap test on a 16 KiB sample from the middle of a large blob: data
    /// that is already compressed (media, archives, encrypted dumps) is
    /// stored as is without spending a full zstd pass on it. Small blobs are
    /// always tried.
    fn looks_compressible(&mut self, data: &[u8]) -> bool {
        const SAMPLE: usize = 16 << 10;
        if data.len() < 8 * SAMPLE {
            return true;
        }
        let Some(c) = self.compressor.as_mut() else { return false };
        let mid = data.len() / 2;
        let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
        self.scratch.clear();
        self.scratch.reserve(zstd::zstd_safe::compress_bound(SAMPLE));
        match c.compress_to_buffer(sample, &mut self.scratch) {
            Ok(n) => n < SAMPLE - SAMPLE / 16,
            Err(_) => true,
        }
    }

    /// Appends header and trailer and computes the pack id.
    pub fn finish(self) -> FinishedPack {
        seal_pack(&self.keys, self.kind, self.salt, self.entries, self.buf, self.raw_bytes)
    }

    /// Finishes this pack like [`PackWriter::finish`] and starts the next
    /// one in place, with a new salt (hence a new key) and a new buffer. The
    /// zstd context and the scratch buffer carry over, so a long run doesn't
    /// allocate and fault them in again for every pack.
    pub fn finish_and_restart(&mut self) -> FinishedPack {
        let salt = random_bytes::<32>();
        self.cipher = self.keys.pack_cipher(&salt);
        let old_salt = std::mem::replace(&mut self.salt, salt);
        let old_buf = std::mem::replace(&mut self.buf, Vec::with_capacity(self.capacity));
        let entries = std::mem::take(&mut self.entries);
        let raw_bytes = std::mem::take(&mut self.raw_bytes);
        seal_pack(&self.keys, self.kind, old_salt, entries, old_buf, raw_bytes)
    }
}

/// Appends the sealed header and the trailer to a pack's blobs and computes
/// its id.
fn seal_pack(
    keys: &Keys,
    kind: BlobKind,
    salt: [u8; 32],
    entries: Vec<BlobEntry>,
    mut bytes: Vec<u8>,
    raw_bytes: u64,
) -> FinishedPack {
    let header = PackHeader { kind, entries };
    let sealed = seal_header(keys, &salt, &header);
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&Trailer { salt, header_len: sealed.len() as u32 }.encode());
    let id = PackId(*blake3::hash(&bytes).as_bytes());
    FinishedPack {
        id,
        index: IndexPack { id, kind, size: bytes.len() as u64, salt, blobs: header.entries },
        bytes,
        raw_bytes,
    }
}

/// Decompresses a blob whose plaintext length is known, in one shot into
/// `out` (cleared first; its capacity is reused, nothing is zero-filled),
/// with a zstd context kept per thread. Output that would not fit is an
/// error, so a hostile blob can't make it allocate more than the entry says.
fn decompress_blob(data: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    // The frame says how large it decompresses (our writers always record
    // it): check before allocating, so a hostile length can't reserve memory.
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n == raw_len as u64 => crate::format::envelope::decompress_into(data, raw_len, out),
        Ok(Some(n)) => Err(std::io::Error::other(format!("frame holds {n} bytes, the entry says {raw_len}"))),
        _ => {
            *out = crate::format::envelope::decompress_bounded(data, raw_len)?;
            Ok(())
        }
    }
}

/// Authenticates, decrypts and decompresses one sealed blob. `what` names the
/// pack in errors.
pub fn open_blob(cipher: &Cipher, kind: BlobKind, entry: &BlobEntry, sealed: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut buf = sealed.to_vec();
    let mut out = Vec::new();
    open_blob_in_place(cipher, kind, entry, &mut buf, what, &mut out)?;
    if entry.compression == Compression::None {
        buf.truncate(entry.raw_len as usize);
        return Ok(buf);
    }
    Ok(out)
}

/// [`open_blob`] without a copy of the sealed bytes: decrypts `sealed` in
/// place and returns the plaintext, which is `sealed[..raw_len]` for a blob
/// stored uncompressed and is decompressed into `scratch` (whose capacity
/// is reused from blob to blob) otherwise.
pub fn open_blob_in_place<'a>(
    cipher: &Cipher,
    kind: BlobKind,
    entry: &BlobEntry,
    sealed: &'a mut [u8],
    what: &str,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    if sealed.len() != entry.stored_len as usize {
        return Err(Error::corrupt(
            what,
            format!("blob {}: read {} bytes, expected {}", entry.id, sealed.len(), entry.stored_len),
        ));
    }
    let Some(len) = cipher.open_in_place(&blob_nonce(entry.offset), &blob_aad(&entry.id, kind.to_byte()), sealed)
    else {
        return Err(Error::corrupt(
            what,
            format!("blob {} at offset {} failed authentication (damaged or modified data)", entry.id, entry.offset),
        ));
    };
    let body: &'a [u8] = &sealed[..len];
    let plain = match entry.compression {
        Compression::None => body,
        Compression::Zstd => {
            decompress_blob(body, entry.raw_len as usize, scratch)
                .map_err(|e| Error::corrupt(what, format!("blob {}: zstd: {e}", entry.id)))?;
            scratch.as_slice()
        }
    };
    if plain.len() != entry.raw_len as usize {
        return Err(Error::corrupt(
            what,
            format!("blob {}: decoded to {} bytes, index says {}", entry.id, plain.len(), entry.raw_len),
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::parse_header;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn pack_encode_decode(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..5000), 0..12), level in 0i32..4) {
            let keys = Keys::generate();
            let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(level), 0);
            let ids: Vec<BlobId> = blobs.iter().map(|b| keys.blob_id(b)).collect();
            for (id, b) in ids.iter().zip(&blobs) {
                w.add(*id, b).unwrap();
            }
            let p = w.finish();
            prop_assert_eq!(PackId(*blake3::hash(&p.bytes).as_bytes()), p.id);
            let header = parse_header(&keys, &p.bytes, p.bytes.len() as u64, "p").unwrap().unwrap();
            prop_assert_eq!(&header.entries, &p.index.blobs);
            let cipher = keys.pack_cipher(&p.index.salt);
            for (e, b) in header.entries.iter().zip(&blobs) {
                let sealed = &p.bytes[e.offset as usize..e.end() as usize];
                prop_assert_eq!(&open_blob(&cipher, BlobKind::Data, e, sealed, "p").unwrap(), b);
                // The type is bound: a data blob can't be read as a tree blob.
                prop_assert!(open_blob(&cipher, BlobKind::Tree, e, sealed, "p").is_err());
            }
        }
    }

    #[test]
    fn a_restarted_writer_starts_a_new_pack_with_its_own_salt() {
        let keys = Keys::generate();
        let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(1), 1 << 16);
        let (a, b) = (b"first pack's blob".repeat(50), b"second pack's blob".repeat(70));
        w.add(keys.blob_id(&a), &a).unwrap();
        let first = w.finish_and_restart();
        assert!(w.is_empty(), "the restarted writer has no blob of the first pack");
        assert_eq!(w.len(), 0, "nor any of its bytes");
        w.add(keys.blob_id(&b), &b).unwrap();
        let second = w.finish();
        assert_ne!(first.index.salt, second.index.salt);
        for (p, blob) in [(&first, &a), (&second, &b)] {
            let header = parse_header(&keys, &p.bytes, p.bytes.len() as u64, "p").unwrap().unwrap();
            assert_eq!(header.entries.len(), 1);
            assert_eq!(header.entries[0].offset, 0);
            assert_eq!(PackId(*blake3::hash(&p.bytes).as_bytes()), p.id);
            assert_eq!(p.raw_bytes, blob.len() as u64);
            let e = &header.entries[0];
            let sealed = &p.bytes[e.offset as usize..e.end() as usize];
            assert_eq!(&open_blob(&keys.pack_cipher(&p.index.salt), BlobKind::Data, e, sealed, "p").unwrap(), blob);
        }
    }

    #[test]
    fn a_pack_of_tiny_blobs_is_full_at_the_headers_limit_and_reads_back() {
        // With a large pack size, tiny blobs reach the most a header may
        // list long before the byte target: the pack must close there, or
        // its header would be refused when read.
        let keys = Keys::generate();
        let pack_size = 1 << 30;
        let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(0), 0);
        for i in 0..MAX_BLOBS_PER_PACK {
            assert!(!w.is_full(pack_size), "full after {i} blobs");
            let b = i.to_le_bytes();
            w.add(keys.blob_id(&b), &b).unwrap();
        }
        assert!(w.is_full(pack_size));
        assert!(w.len() < pack_size / 32, "the byte target is far off");
        let extra = u32::MAX.to_le_bytes();
        let err = w.add(keys.blob_id(&extra), &extra).unwrap_err().to_string();
        assert!(err.contains("at most 1048576 blobs"), "{err}");
        let p = w.finish();
        let header = parse_header(&keys, &p.bytes, p.bytes.len() as u64, "p").unwrap().unwrap();
        assert_eq!(header.entries.len(), MAX_BLOBS_PER_PACK as usize);
        let last = header.entries.last().unwrap();
        let sealed = &p.bytes[last.offset as usize..last.end() as usize];
        let plain = open_blob(&keys.pack_cipher(&p.index.salt), BlobKind::Data, last, sealed, "p").unwrap();
        assert_eq!(plain, (MAX_BLOBS_PER_PACK - 1).to_le_bytes());
    }

    #[test]
    fn incompressible_blobs_skip_zstd_and_text_is_compressed() {
        let keys = Keys::generate();
        let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(3), 0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text: Vec<u8> = b"INSERT INTO t VALUES (1, 'abc');\n".iter().copied().cycle().take(1 << 20).collect();
        w.add(keys.blob_id(&random), &random).unwrap();
        w.add(keys.blob_id(&text), &text).unwrap();
        let p = w.finish();
        assert_eq!(p.index.blobs[0].compression, Compression::None);
        assert_eq!(p.index.blobs[1].compression, Compression::Zstd);
        assert!(p.index.blobs[1].stored_len < 100_000);
    }

    #[test]
    fn flipped_bit_is_detected_and_named() {
        let keys = Keys::generate();
        let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(3), 0);
        let id = keys.blob_id(b"hello world");
        w.add(id, b"hello world").unwrap();
        let p = w.finish();
        let e = p.index.blobs[0];
        let mut sealed = p.bytes[..e.end() as usize].to_vec();
        sealed[3] ^= 0x10;
        let err = open_blob(&keys.pack_cipher(&p.index.salt), BlobKind::Data, &e, &sealed, "pack data/xy").unwrap_err();
        assert!(err.to_string().contains("pack data/xy") && err.to_string().contains("authentication"), "{err}");
    }
}
