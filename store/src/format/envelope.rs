//! The sealed envelope of metadata objects (config body, index segments,
//! snapshots): `[version u8 = 1][nonce 12][AES-256-GCM(ciphertext) + tag]`,
//! where the plaintext is `[compression u8][payload]` and the additional
//! data is the object type's name. Nonces are random: metadata objects are
//! few enough that 96-bit random nonces never collide in practice.

use crate::crypto::{Keys, NONCE_LEN, TAG_LEN, random_bytes};
use crate::error::{Error, Result};

const ENVELOPE_VERSION: u8 = 1;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
/// Where the payload (or its zstd frame) starts in a sealed envelope:
/// version, nonce, compression byte.
const PAYLOAD_AT: usize = 1 + NONCE_LEN + 1;
/// Bytes a sealed envelope adds to its payload at most: version, nonce,
/// compression byte and tag (a compressed payload is stored only when
/// smaller). Each object type's size limit is its payload limit plus this.
pub const OVERHEAD: usize = PAYLOAD_AT + TAG_LEN;

/// Seals `payload` (compressed with zstd when that makes it smaller).
pub fn seal(keys: &Keys, aad: &str, payload: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(payload.len() / 2 + 1);
    match zstd::bulk::compress(payload, 3) {
        Ok(c) if c.len() < payload.len() => {
            plain.push(COMPRESSION_ZSTD);
            plain.extend_from_slice(&c);
        }
        _ => {
            plain.push(COMPRESSION_NONE);
            plain.extend_from_slice(payload);
        }
    }
    let nonce = random_bytes::<NONCE_LEN>();
    keys.meta_cipher().seal(&nonce, aad.as_bytes(), &mut plain);
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&plain);
    out
}

/// Opens the envelope of an object named by the keyed hash of its
/// plaintext (index segments, snapshots), and checks that name. The
/// payload may be at most `limit` bytes (the object type's limit).
pub fn open_named(keys: &Keys, aad: &str, sealed: Vec<u8>, id: &[u8; 32], limit: usize, what: &str) -> Result<Vec<u8>> {
    let plain = open(keys, aad, sealed, limit, what)?;
    check_name(keys, &plain, id, what)?;
    Ok(plain)
}

/// Checks that `plain`'s keyed hash is `id`, the name of the object it
/// came from.
pub fn check_name(keys: &Keys, plain: &[u8], id: &[u8; 32], what: &str) -> Result<()> {
    let got = keys.meta_id(plain);
    if &got != id {
        return Err(Error::ChecksumMismatch { what: what.into(), expected: hex::encode(id), got: hex::encode(got) });
    }
    Ok(())
}

/// Opens an envelope, decrypting it in the buffer it was read into; `what`
/// names the object in errors. The payload may be at most `limit` bytes.
pub fn open(keys: &Keys, aad: &str, sealed: Vec<u8>, limit: usize, what: &str) -> Result<Vec<u8>> {
    authenticate(keys, aad, sealed, what)?.payload(limit, what)
}

/// An envelope whose tag verified, decrypted where it was read (no copy is
/// made before authentication), its payload not yet decompressed. A reader
/// that shares a memory budget learns from [`Opened::payload_len`] what
/// decompressing will take before it does.
#[derive(Debug)]
pub struct Opened {
    /// The whole object: the payload (or its zstd frame) is at
    /// [`PAYLOAD_AT`]`..end`.
    buf: Vec<u8>,
    end: usize,
    compressed: bool,
}

/// Checks an envelope's version and tag and decrypts it in place.
pub fn authenticate(keys: &Keys, aad: &str, mut sealed: Vec<u8>, what: &str) -> Result<Opened> {
    if sealed.len() < OVERHEAD {
        return Err(Error::corrupt(what, format!("truncated: only {} bytes", sealed.len())));
    }
    if sealed[0] != ENVELOPE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: what.to_string(),
            found: u32::from(sealed[0]),
            supported: u32::from(ENVELOPE_VERSION),
        });
    }
    let (head, body) = sealed.split_at_mut(1 + NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = head[1..].try_into().expect("length checked");
    let Some(inner) = keys.meta_cipher().open_in_place(&nonce, aad.as_bytes(), body) else {
        return Err(Error::corrupt(
            what,
            "authentication failed: the object was modified, damaged, or belongs to another repository",
        ));
    };
    let compressed = match body[0] {
        COMPRESSION_NONE => false,
        COMPRESSION_ZSTD => true,
        c => return Err(Error::corrupt(what, format!("unknown compression {c}"))),
    };
    Ok(Opened { end: 1 + NONCE_LEN + inner, buf: sealed, compressed })
}

impl Opened {
    /// Bytes the payload takes once decompressed, as far as can be told
    /// before doing it: its length when stored as is, the size a zstd
    /// frame declares, else `limit` (what decompressing may take at most).
    /// Capped at `limit`: [`Opened::payload`] refuses more.
    pub fn payload_len(&self, limit: usize) -> usize {
        let stored = &self.buf[PAYLOAD_AT..self.end];
        if !self.compressed {
            return stored.len().min(limit);
        }
        match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) => n.min(limit as u64) as usize,
            _ => limit,
        }
    }

    /// Whether the payload is stored compressed.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// The payload: the decrypted buffer itself, moved to its front, when
    /// stored as is; else decompressed, to at most `limit` bytes.
    pub fn payload(mut self, limit: usize, what: &str) -> Result<Vec<u8>> {
        let too_large =
            |n: String| Error::corrupt(what, format!("payload of {n} bytes, more than the {limit} allowed"));
        if !self.compressed {
            let len = self.end - PAYLOAD_AT;
            if len > limit {
                return Err(too_large(len.to_string()));
            }
            self.buf.truncate(self.end);
            self.buf.drain(..PAYLOAD_AT);
            return Ok(self.buf);
        }
        decompress_bounded(&self.buf[PAYLOAD_AT..self.end], limit)
            .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))
    }
}

/// Decompresses a zstd frame, refusing output larger than `limit`. A
/// frame that records its size (ours always do) is decompressed in one
/// shot with a context kept per thread; listing thousands of snapshots or
/// index segments would otherwise set up a fresh stream for each.
pub fn decompress_bounded(data: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    /// Larger frames are streamed, so a header can't make us reserve more.
    const ONE_SHOT: u64 = 16 << 20;
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(data) {
        if n > limit as u64 {
            return Err(std::io::Error::other(format!("decompresses to more than {limit} bytes")));
        }
        let mut out = Vec::new();
        if n <= ONE_SHOT && decompress_into(data, n as usize, &mut out).is_ok() && out.len() as u64 == n {
            return Ok(out);
        }
        // Not what the header says (or several frames): the stream decides.
    }
    let mut out = Vec::new();
    let dec = zstd::stream::read::Decoder::new(data)?;
    dec.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(std::io::Error::other(format!("decompresses to more than {limit} bytes")));
    }
    Ok(out)
}

/// Decompresses `data` in one shot into `out` (cleared first; its capacity
/// is reused, nothing is zero-filled), reserving room for `len` bytes:
/// output that would not fit the buffer is an error, and output longer
/// than `len` is refused. The zstd context is kept per thread.
pub(crate) fn decompress_into(data: &[u8], len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    out.clear();
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        out.reserve(len);
        d.decompress_to_buffer(data, out)?;
        if out.len() > len {
            return Err(std::io::Error::other(format!("decompresses to {} bytes, more than {len}", out.len())));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let keys = Keys::generate();
        let payload = vec![b'x'; 10_000];
        let sealed = seal(&keys, "snapshot", &payload);
        assert!(sealed.len() < 1000, "repetitive payload is compressed");
        assert_eq!(open(&keys, "snapshot", sealed.clone(), 10_000, "s").unwrap(), payload);
        assert!(open(&keys, "index", sealed.clone(), 10_000, "s").is_err(), "type is bound");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&keys, "snapshot", bad, 10_000, "s").is_err());
        assert!(open(&Keys::generate(), "snapshot", sealed, 10_000, "s").is_err());
    }

    #[test]
    fn a_payload_past_the_limit_is_refused_stored_or_compressed() {
        let keys = Keys::generate();
        let random: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for payload in [vec![b'x'; 5000], random] {
            let sealed = seal(&keys, "index", &payload);
            let opened = authenticate(&keys, "index", sealed.clone(), "i").unwrap();
            assert_eq!(opened.payload_len(1 << 20), 5000, "known before decompressing");
            assert_eq!(opened.payload_len(100), 100, "never more than the limit");
            assert_eq!(open(&keys, "index", sealed.clone(), 5000, "i").unwrap(), payload);
            let e = open(&keys, "index", sealed, 4999, "index segment x").unwrap_err().to_string();
            assert!(e.contains("index segment x") && e.contains("4999"), "{e}");
        }
    }
}
