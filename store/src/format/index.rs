//! Index segments (`index/<id>`): for each pack, its blobs. Sealed in a
//! metadata envelope with type "index"; the id is the keyed hash of the
//! plaintext below.
//!
//! Plaintext: `"VIX1" packs:u32le` then per pack
//! `pack_id[32] kind:u8 pack_size:u64le salt[32] blobs:u32le entry*`
//! (entries as in the pack header; the salt lets a reader derive the pack key
//! without fetching the pack's trailer first).

use super::pack::{BlobEntry, ENTRY_LEN, MAX_BLOBS_PER_PACK};
use super::{BlobKind, Reader};
use crate::error::{Error, Result};
use crate::id::PackId;

const MAGIC: &[u8; 4] = b"VIX1";
/// The envelope type of index segments.
pub const AAD: &str = "index";
/// Encoded length of a pack record without its entries.
const PACK_RECORD_LEN: usize = 32 + 1 + 8 + 32 + 4;
/// Largest segment plaintext a reader accepts (docs/format.md section 1).
/// Writers close a segment before a pack record would take it past this
/// ([`record_len`]); one record of a full pack (`MAX_BLOBS_PER_PACK`
/// entries, 45 MiB) always fits.
pub const MAX_SEGMENT_LEN: usize = 64 << 20;
/// Bytes of the segment header (magic and pack count).
pub const SEGMENT_HEAD_LEN: usize = 8;
// A writer can always close a segment with the pack it has: the record of
// a full pack fits an empty segment.
const _: () = assert!(SEGMENT_HEAD_LEN + PACK_RECORD_LEN + MAX_BLOBS_PER_PACK as usize * ENTRY_LEN <= MAX_SEGMENT_LEN);

/// Encoded length of the record of a pack with `blobs` entries.
pub fn record_len(blobs: usize) -> usize {
    PACK_RECORD_LEN + blobs * ENTRY_LEN
}

/// One pack as an index segment records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack's id.
    pub id: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Size of the pack file in bytes.
    pub size: u64,
    /// The pack's key salt (copied from its trailer).
    pub salt: [u8; 32],
    /// Its blobs.
    pub blobs: Vec<BlobEntry>,
}

/// A decoded index segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSegment {
    /// Packs described by this segment.
    pub packs: Vec<IndexPack>,
}

impl IndexSegment {
    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.packs.iter().map(|p| record_len(p.blobs.len())).sum();
        let mut out = Vec::with_capacity(SEGMENT_HEAD_LEN + n);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.id.as_bytes());
            out.push(p.kind.to_byte());
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&p.salt);
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                b.encode_into(&mut out);
            }
        }
        out
    }

    /// Decodes and checks a plaintext segment.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(buf, what);
        if r.array::<4>()? != *MAGIC {
            return Err(Error::corrupt(what, "index segment has a wrong magic"));
        }
        let count = r.u32()?;
        // Don't trust `count` for allocation.
        let mut packs = Vec::with_capacity((count as usize).min(r.remaining() / PACK_RECORD_LEN));
        for _ in 0..count {
            let id = PackId(r.array()?);
            let kb = r.u8()?;
            let kind = BlobKind::from_byte(kb)
                .ok_or_else(|| Error::corrupt(what, format!("pack {}: unknown kind {kb}", id.short())))?;
            let size = r.u64()?;
            let salt = r.array()?;
            let n = r.u32()?;
            if n > MAX_BLOBS_PER_PACK || n as usize * ENTRY_LEN > r.remaining() {
                return Err(Error::corrupt(
                    what,
                    format!("pack {}: claims {n} blobs, more than the segment holds", id.short()),
                ));
            }
            let mut blobs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let b = BlobEntry::decode(&mut r, what)?;
                if b.end() > size {
                    return Err(Error::corrupt(
                        what,
                        format!(
                            "blob {} ends at {} past the end of pack {} ({} bytes)",
                            b.id.short(),
                            b.end(),
                            id.short(),
                            size
                        ),
                    ));
                }
                blobs.push(b);
            }
            packs.push(IndexPack { id, kind, size, salt, blobs });
        }
        r.finish()?;
        Ok(IndexSegment { packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;
    use crate::id::BlobId;

    #[test]
    fn round_trip() {
        let seg = IndexSegment {
            packs: vec![IndexPack {
                id: PackId([1; 32]),
                kind: BlobKind::Tree,
                size: 1000,
                salt: [3; 32],
                blobs: vec![BlobEntry {
                    id: BlobId([2; 32]),
                    offset: 0,
                    stored_len: 116,
                    raw_len: 100,
                    compression: Compression::None,
                }],
            }],
        };
        assert_eq!(IndexSegment::decode(&seg.encode(), "i").unwrap(), seg);
    }

    #[test]
    fn blob_past_pack_end_is_refused() {
        let seg = IndexSegment {
            packs: vec![IndexPack {
                id: PackId([1; 32]),
                kind: BlobKind::Data,
                size: 10,
                salt: [3; 32],
                blobs: vec![BlobEntry {
                    id: BlobId([2; 32]),
                    offset: 0,
                    stored_len: 116,
                    raw_len: 100,
                    compression: Compression::None,
                }],
            }],
        };
        assert!(IndexSegment::decode(&seg.encode(), "i").unwrap_err().to_string().contains("past the end"));
    }

    #[test]
    fn huge_count_does_not_allocate() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexSegment::decode(&b, "i").is_err());
    }
}
