//! Pack files: `[sealed blob]* [sealed header] [trailer]`.
//!
//! Trailer (44 bytes, plaintext): `salt[32] header_len:u32le magic[8]="VAULTPK1"`.
//! The pack key is derived from the repository data key and the salt; a blob
//! is sealed with its byte offset in the pack as nonce, the header with the
//! reserved all-ones nonce.
//! The header lists every blob (see [`BlobEntry`]) so that the index can be
//! rebuilt from packs alone.

use super::{BlobKind, MAX_BLOB_LEN, Reader};
use crate::crypto::{HEADER_NONCE, Keys, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// The magic at the very end of a pack.
pub const PACK_MAGIC: &[u8; 8] = b"VAULTPK1";
/// Length of the plaintext trailer.
pub const TRAILER_LEN: usize = 32 + 4 + 8;
/// Encoded length of one [`BlobEntry`].
pub const ENTRY_LEN: usize = 32 + 4 + 4 + 4 + 1;
const HEADER_MAGIC: &[u8; 4] = b"VPH1";
const HEADER_AAD: &[u8] = b"vault pack header";
/// Most blobs one pack may list (bounds a hostile header).
pub const MAX_BLOBS_PER_PACK: u32 = 1 << 20;

/// The largest pack file a reader accepts: a pack closes at its size
/// target (at most 1 GiB) or may pass it by one blob, and its sealed
/// header lists at most MAX_BLOBS_PER_PACK entries (45 MiB).
pub const MAX_PACK_LEN: u64 = (1 << 30) + MAX_BLOB_LEN as u64 + (64 << 20);

/// How a blob's plaintext was compressed before sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None,
    /// One zstd frame.
    Zstd,
}

impl Compression {
    fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Where one blob sits in its pack and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobEntry {
    /// The blob's id.
    pub id: BlobId,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Sealed length (compressed ciphertext + tag).
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Compression of the plaintext.
    pub compression: Compression,
}

impl BlobEntry {
    /// Appends the 45-byte encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.push(self.compression.to_byte());
    }

    pub(crate) fn decode(r: &mut Reader<'_>, what: &str) -> Result<Self> {
        let id = BlobId(r.array()?);
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let c = r.u8()?;
        let compression = Compression::from_byte(c)
            .ok_or_else(|| Error::corrupt(what, format!("blob {}: unknown compression {c}", id.short())))?;
        let e = BlobEntry { id, offset, stored_len, raw_len, compression };
        e.validate(what)?;
        Ok(e)
    }

    fn validate(&self, what: &str) -> Result<()> {
        let fail = |d: String| Err(Error::corrupt(what, format!("blob {}: {d}", self.id.short())));
        if (self.stored_len as usize) < TAG_LEN {
            return fail(format!("stored length {} is shorter than a tag", self.stored_len));
        }
        if self.raw_len > MAX_BLOB_LEN {
            return fail(format!("raw length {} exceeds the limit {MAX_BLOB_LEN}", self.raw_len));
        }
        if self.compression == Compression::None && self.stored_len as u64 != self.raw_len as u64 + TAG_LEN as u64 {
            return fail(format!(
                "uncompressed blob has stored length {} for raw length {}",
                self.stored_len, self.raw_len
            ));
        }
        Ok(())
    }

    /// End offset of the sealed blob.
    pub fn end(&self) -> u64 {
        self.offset as u64 + self.stored_len as u64
    }
}

/// The header of a pack: what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackHeader {
    /// Data or tree: a pack holds one kind only.
    pub kind: BlobKind,
    /// Blobs in file order; offsets are contiguous from 0.
    pub entries: Vec<BlobEntry>,
}

impl PackHeader {
    /// Plaintext encoding: `"VPH1" kind:u8 count:u32le entry*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.encode_into(&mut out);
        }
        out
    }

    /// Decodes and checks a plaintext header: the blobs must tile the pack
    /// from offset 0 up to `blobs_end` (where the sealed header starts).
    pub fn decode(buf: &[u8], blobs_end: u64, what: &str) -> Result<Self> {
        let mut r = Reader::new(buf, what);
        if r.array::<4>()? != *HEADER_MAGIC {
            return Err(Error::corrupt(what, "pack header has a wrong magic"));
        }
        let kind_byte = r.u8()?;
        let kind = BlobKind::from_byte(kind_byte)
            .ok_or_else(|| Error::corrupt(what, format!("unknown pack kind {kind_byte}")))?;
        let count = r.u32()?;
        if count > MAX_BLOBS_PER_PACK || count as usize * ENTRY_LEN != r.remaining() {
            return Err(Error::corrupt(
                what,
                format!("header claims {count} blobs but holds {} bytes of entries", r.remaining()),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut next = 0u64;
        for _ in 0..count {
            let e = BlobEntry::decode(&mut r, what)?;
            if e.offset as u64 != next {
                return Err(Error::corrupt(
                    what,
                    format!("blob {} starts at {} where {} was expected", e.id.short(), e.offset, next),
                ));
            }
            next = e.end();
            entries.push(e);
        }
        r.finish()?;
        if next != blobs_end {
            return Err(Error::corrupt(what, format!("blobs end at {next} but the header starts at {blobs_end}")));
        }
        Ok(PackHeader { kind, entries })
    }
}

/// The parsed plaintext trailer of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Salt the pack key is derived from.
    pub salt: [u8; 32],
    /// Length of the sealed header that precedes the trailer.
    pub header_len: u32,
}

impl Trailer {
    /// Encodes the 44-byte trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[..32].copy_from_slice(&self.salt);
        out[32..36].copy_from_slice(&self.header_len.to_le_bytes());
        out[36..].copy_from_slice(PACK_MAGIC);
        out
    }

    /// Decodes the trailer of a pack of `pack_len` bytes from its last bytes.
    pub fn decode(tail: &[u8], pack_len: u64, what: &str) -> Result<Self> {
        if tail.len() < TRAILER_LEN || (pack_len as usize) < TRAILER_LEN {
            return Err(Error::corrupt(what, format!("too short to be a pack ({pack_len} bytes)")));
        }
        let t = &tail[tail.len() - TRAILER_LEN..];
        if &t[36..] != PACK_MAGIC {
            return Err(Error::corrupt(what, "no pack magic at the end (truncated or not a pack)"));
        }
        let salt: [u8; 32] = t[..32].try_into().expect("slice of 32");
        let header_len = u32::from_le_bytes(t[32..36].try_into().expect("slice of 4"));
        let max = pack_len - TRAILER_LEN as u64;
        if (header_len as u64) > max || (header_len as usize) < TAG_LEN + 9 {
            return Err(Error::corrupt(
                what,
                format!("header length {header_len} does not fit the pack of {pack_len} bytes"),
            ));
        }
        Ok(Trailer { salt, header_len })
    }
}

/// Seals a header for a pack with `salt`.
pub fn seal_header(keys: &Keys, salt: &[u8; 32], header: &PackHeader) -> Vec<u8> {
    let mut buf = header.encode();
    keys.pack_cipher(salt).seal(&HEADER_NONCE, HEADER_AAD, &mut buf);
    buf
}

/// Parses a pack's header given the whole pack or its tail (the last
/// `tail.len()` bytes of a `pack_len`-byte pack). Returns `Ok(Err(n))` when
/// the tail is too short and the last `n` bytes are needed.
pub fn parse_header(
    keys: &Keys,
    tail: &[u8],
    pack_len: u64,
    what: &str,
) -> Result<std::result::Result<PackHeader, usize>> {
    let trailer = Trailer::decode(tail, pack_len, what)?;
    let need = trailer.header_len as usize + TRAILER_LEN;
    if tail.len() < need {
        return Ok(Err(need));
    }
    let start = tail.len() - need;
    let mut sealed = tail[start..start + trailer.header_len as usize].to_vec();
    if !keys.pack_cipher(&trailer.salt).open(&HEADER_NONCE, HEADER_AAD, &mut sealed) {
        return Err(Error::corrupt(what, "pack header failed authentication (damaged, or another repository's pack)"));
    }
    let blobs_end = pack_len - need as u64;
    PackHeader::decode(&sealed, blobs_end, what).map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(lens: &[(u32, bool)]) -> Vec<BlobEntry> {
        let mut off = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &(raw, z))| {
                let stored = if z { raw / 2 + TAG_LEN as u32 } else { raw + TAG_LEN as u32 };
                let e = BlobEntry {
                    id: BlobId([i as u8; 32]),
                    offset: off,
                    stored_len: stored,
                    raw_len: raw,
                    compression: if z { Compression::Zstd } else { Compression::None },
                };
                off += stored;
                e
            })
            .collect()
    }

    proptest! {
        #[test]
        fn header_encode_decode_is_identity(lens in proptest::collection::vec((0u32..100_000, any::<bool>()), 0..50), tree in any::<bool>()) {
            let es = entries(&lens);
            let end = es.last().map_or(0, |e| e.end());
            let h = PackHeader { kind: if tree { BlobKind::Tree } else { BlobKind::Data }, entries: es };
            let decoded = PackHeader::decode(&h.encode(), end, "p").unwrap();
            prop_assert_eq!(decoded, h);
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), end in 0u64..10_000) {
            let _ = PackHeader::decode(&bytes, end, "p");
        }
    }

    #[test]
    fn header_with_gap_is_refused() {
        let mut es = entries(&[(10, false), (20, false)]);
        es[1].offset += 1;
        let h = PackHeader { kind: BlobKind::Data, entries: es };
        let err = PackHeader::decode(&h.encode(), 100, "pack x").unwrap_err().to_string();
        assert!(err.contains("pack x"), "{err}");
    }

    #[test]
    fn sealed_header_round_trip_and_wrong_key() {
        let keys = Keys::generate();
        let es = entries(&[(100, false), (5, true)]);
        let blobs_end = es.last().unwrap().end();
        let h = PackHeader { kind: BlobKind::Data, entries: es };
        let salt = [9u8; 32];
        let sealed = seal_header(&keys, &salt, &h);
        let mut pack = vec![0u8; blobs_end as usize];
        pack.extend_from_slice(&sealed);
        pack.extend_from_slice(&Trailer { salt, header_len: sealed.len() as u32 }.encode());
        let got = parse_header(&keys, &pack, pack.len() as u64, "p").unwrap().unwrap();
        assert_eq!(got, h);
        // A short tail asks for more.
        let tail = &pack[pack.len() - TRAILER_LEN..];
        assert_eq!(parse_header(&keys, tail, pack.len() as u64, "p").unwrap(), Err(sealed.len() + TRAILER_LEN));
        assert!(parse_header(&Keys::generate(), &pack, pack.len() as u64, "p").is_err());
    }
}
