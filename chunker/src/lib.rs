//! Streaming, keyed content-defined chunking.
//!
//! A [`Chunker`] holds FastCDC 2020 parameters (normalization level 1) and a
//! gear table. With a key, the gear table is derived from it, so chunk
//! boundaries (and hence stored sizes) reveal nothing about which known files
//! a repository holds. The cut-point search itself is `fastcdc`'s
//! [`cut_gear`](fastcdc::v2020::cut_gear).
//!
//! The caller owns the buffer: [`Chunker::next_boundary`] says where the next
//! chunk ends in a slice. [`ChunkStream`] is an iterator on top that reads any
//! [`Read`] through one fixed-size buffer and never holds a whole file.
//!
//! ```
//! use vault_chunker::Chunker;
//! let chunker = Chunker::new(4096, 16384, 65536, Some(&[7u8; 32])).unwrap();
//! let data = vec![42u8; 200_000];
//! let chunks: Vec<Vec<u8>> = chunker.stream(&data[..]).collect::<Result<_, _>>().unwrap();
//! assert_eq!(chunks.concat(), data);
//! ```

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

/// Chunk size limits accepted by FastCDC.
pub const MIN_SIZE_RANGE: (usize, usize) = (fastcdc::v2020::MINIMUM_MIN, fastcdc::v2020::MINIMUM_MAX);
/// Largest `max_size` accepted.
pub const MAX_SIZE_LIMIT: usize = fastcdc::v2020::MAXIMUM_MAX;

/// Content-defined chunking parameters and gear table.
#[derive(Clone)]
pub struct Chunker {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64]>,
    gear_ls: Box<[u64]>,
}

/// Parameters out of FastCDC's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParams(pub String);

impl std::fmt::Display for InvalidParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InvalidParams {}

impl Chunker {
    /// A chunker with the given sizes; `key` (if any) keys the gear table.
    pub fn new(
        min_size: usize,
        avg_size: usize,
        max_size: usize,
        key: Option<&[u8; 32]>,
    ) -> Result<Self, InvalidParams> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max_size)
            && min_size <= avg_size
            && avg_size <= max_size
            && min_size.is_multiple_of(2)
            && avg_size.is_multiple_of(2)
            && max_size.is_multiple_of(2);
        if !ok {
            return Err(InvalidParams(format!("invalid chunk sizes min {min_size} / avg {avg_size} / max {max_size}")));
        }
        let (mask_s, mask_l) = select_masks(avg_size, Normalization::Level1);
        let (gear, gear_ls): (Box<[u64]>, Box<[u64]>) = match key {
            None => {
                let (g, gl) = get_gear_with_seed(0);
                (g.into_owned().into(), gl.into_owned().into())
            }
            Some(key) => {
                let gear = keyed_gear(key);
                let ls: Vec<u64> = gear.iter().map(|g| g << 1).collect();
                (gear.into(), ls.into())
            }
        };
        Ok(Chunker { min_size, avg_size, max_size, mask_s, mask_l, gear, gear_ls })
    }

    /// The largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Length of the next chunk at the start of `buf`. `buf` must hold at
    /// least `max_size` bytes unless it is the end of the input (`eof`);
    /// otherwise `None` asks for more data. Returns `Some(0)` only for an
    /// empty `buf` at the end.
    pub fn next_boundary(&self, buf: &[u8], eof: bool) -> Option<usize> {
        if buf.len() < self.max_size && !eof {
            return None;
        }
        if buf.is_empty() {
            return Some(0);
        }
        let (_, cut) = cut_gear(
            buf,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        Some(cut)
    }

    /// Chunks everything `reader` yields.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        self.stream_with_buffer(reader, Vec::new())
    }

    /// Like [`stream`](Self::stream), reusing `buf` (get it back with
    /// [`ChunkStream::into_buffer`]), so that chunking many small files
    /// doesn't allocate and zero a buffer per file.
    pub fn stream_with_buffer<R: Read>(&self, reader: R, mut buf: Vec<u8>) -> ChunkStream<'_, R> {
        let cap = (self.max_size * 2).max(8 << 20);
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        ChunkStream { chunker: self, reader, buf, start: 0, end: 0, eof: false, bytes_read: 0 }
    }
}

/// Derives a gear table of 256 random-looking 64-bit values from a key.
fn keyed_gear(key: &[u8; 32]) -> Vec<u64> {
    let mut xof = blake3_xof(key);
    let mut bytes = [0u8; 256 * 8];
    xof.fill(&mut bytes);
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

fn blake3_xof(key: &[u8; 32]) -> blake3::OutputReader {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"vault fastcdc gear table v1");
    h.finalize_xof()
}

/// An iterator of chunks read from a [`Read`] through a fixed buffer.
pub struct ChunkStream<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    bytes_read: u64,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The buffer, for reuse by the next stream.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes read from the reader so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Reads until the buffer holds `max_size` bytes past `start` or EOF.
    fn fill(&mut self) -> io::Result<()> {
        let want = self.chunker.max_size;
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.buf.len() - self.start < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end - self.start < want {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            self.eof = true;
            self.start = self.end;
            return Some(Err(e));
        }
        let window = &self.buf[self.start..self.end];
        let n = self.chunker.next_boundary(window, self.eof).expect("fill() provides max_size bytes or reaches EOF");
        if n == 0 {
            return None;
        }
        let chunk = window[..n].to_vec();
        self.start += n;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic pseudo-random byte generator (xorshift), for golden values.
    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn lengths(c: &Chunker, data: &[u8]) -> Vec<usize> {
        c.stream(data).map(|r| r.unwrap().len()).collect()
    }

    #[test]
    fn chunk_empty_input() {
        let c = Chunker::new(64, 256, 1024, None).unwrap();
        assert_eq!(c.stream(&[][..]).count(), 0);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Chunker::new(1024, 512, 4096, None).is_err());
        assert!(Chunker::new(63, 256, 1024, None).is_err());
    }

    #[test]
    fn golden_boundaries_unkeyed_and_keyed() {
        // Guards against any change to chunking: boundaries decide dedup
        // against every existing repository.
        let data = pseudo_random(1 << 20, 0x5eed);
        let c = Chunker::new(16 * 1024, 64 * 1024, 256 * 1024, None).unwrap();
        let unkeyed = lengths(&c, &data);
        assert_eq!(unkeyed.iter().sum::<usize>(), data.len());
        let k = Chunker::new(16 * 1024, 64 * 1024, 256 * 1024, Some(&[1; 32])).unwrap();
        let keyed = lengths(&k, &data);
        assert_ne!(unkeyed, keyed, "the key changes boundaries");
        assert_eq!(
            unkeyed,
            [
                47852, 21818, 36432, 37838, 36865, 72767, 81706, 43918, 88836, 150435, 92508, 59188, 18128, 93826,
                146569, 19890
            ]
        );
        assert_eq!(keyed, [92174, 74499, 124289, 90532, 139441, 101403, 62821, 70430, 57340, 152288, 83359]);
    }

    /// A reader that returns at most 7 bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(7);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn chunks_concatenate_and_respect_limits(len in 0usize..300_000, seed in 1u64..u64::MAX) {
            let data = pseudo_random(len, seed);
            let c = Chunker::new(1024, 4096, 16384, Some(&[3; 32])).unwrap();
            let chunks: Vec<Vec<u8>> = c.stream(&data[..]).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(chunks.concat(), data.clone());
            for (i, ch) in chunks.iter().enumerate() {
                prop_assert!(ch.len() <= 16384);
                if i + 1 < chunks.len() {
                    prop_assert!(ch.len() >= 1024);
                }
            }
            // Same data, any read pattern: same chunks.
            let again: Vec<Vec<u8>> = c.stream(Trickle(&data)).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(again, chunks);
        }

        #[test]
        fn insertion_shifts_only_nearby_boundaries(seed in 1u64..u64::MAX, at in 0usize..200_000, ins in proptest::collection::vec(any::<u8>(), 1..100)) {
            let data = pseudo_random(400_000, seed);
            let mut edited = data[..at].to_vec();
            edited.extend_from_slice(&ins);
            edited.extend_from_slice(&data[at..]);
            let c = Chunker::new(1024, 4096, 16384, None).unwrap();
            let ends = |d: &[u8]| {
                let mut pos = 0usize;
                c.stream(d).map(|ch| { pos += ch.unwrap().len(); pos }).collect::<Vec<_>>()
            };
            let before = ends(&data);
            let after = ends(&edited);
            // Boundaries well past the edit are the same, shifted by the insertion.
            let shifted: std::collections::HashSet<usize> = after.iter().map(|e| e - ins.len().min(*e)).collect();
            let far: Vec<usize> = before.iter().copied().filter(|&e| e > at + 3 * 16384).collect();
            let kept = far.iter().filter(|e| shifted.contains(e)).count();
            prop_assert!(far.is_empty() || kept * 10 >= far.len() * 9, "kept {} of {}", kept, far.len());
        }
    }
}
