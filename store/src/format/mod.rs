//! On-disk types, each with its encoder and a decoder that trusts nothing.
//!
//! Decoders take bytes that may come from a damaged or hostile repository:
//! they never panic, never allocate from an unchecked length field, and name
//! the object they were decoding in every error. `docs/format.md` describes
//! every byte written here.

pub mod config;
pub mod envelope;
pub mod gc;
pub mod index;
pub mod pack;
pub mod snapshot;
pub mod tree;

use crate::error::{Error, Result};

/// The repository format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Largest plaintext a blob may have: bounds allocations when decoding.
pub const MAX_BLOB_LEN: u32 = 256 * 1024 * 1024;

/// What a blob holds. Tree and data blobs never share a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// A serialized directory listing.
    Tree,
}

impl BlobKind {
    /// The byte stored on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }

    /// Name in messages and the repository prefix of its packs.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'a str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(
                self.what,
                format!("truncated: needed {n} more bytes, {} left", self.buf.len()),
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("bytes() returned N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(self.what, format!("{} unexpected trailing bytes", self.buf.len())))
        }
    }
}
