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
/// Largest decompressed metadata object accepted (bounds memory on hostile input).
pub const MAX_METADATA_LEN: usize = 1 << 30;

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
/// plaintext (index segments, snapshots), and checks that name.
pub fn open_named(keys: &Keys, aad: &str, sealed: &[u8], id: &[u8; 32], what: &str) -> Result<Vec<u8>> {
    let plain = open(keys, aad, sealed, what)?;
    let got = keys.meta_id(&plain);
    if &got != id {
        return Err(Error::ChecksumMismatch { what: what.into(), expected: hex::encode(id), got: hex::encode(got) });
    }
    Ok(plain)
}

/// Opens an envelope; `what` names the object in errors.
pub fn open(keys: &Keys, aad: &str, sealed: &[u8], what: &str) -> Result<Vec<u8>> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN + 1 {
        return Err(Error::corrupt(what, format!("truncated: only {} bytes", sealed.len())));
    }
    if sealed[0] != ENVELOPE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: what.to_string(),
            found: u32::from(sealed[0]),
            supported: u32::from(ENVELOPE_VERSION),
        });
    }
    let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("length checked");
    let mut buf = sealed[1 + NONCE_LEN..].to_vec();
    if !keys.meta_cipher().open(&nonce, aad.as_bytes(), &mut buf) {
        return Err(Error::corrupt(
            what,
            "authentication failed: the object was modified, damaged, or belongs to another repository",
        ));
    }
    match buf.first() {
        Some(&COMPRESSION_NONE) => {
            buf.remove(0);
            Ok(buf)
        }
        Some(&COMPRESSION_ZSTD) => {
            decompress_bounded(&buf[1..], MAX_METADATA_LEN).map_err(|e| Error::corrupt(what, format!("zstd: {e}")))
        }
        Some(c) => Err(Error::corrupt(what, format!("unknown compression {c}"))),
        None => Err(Error::corrupt(what, "empty plaintext")),
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
        assert_eq!(open(&keys, "snapshot", &sealed, "s").unwrap(), payload);
        assert!(open(&keys, "index", &sealed, "s").is_err(), "type is bound");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(&keys, "snapshot", &bad, "s").is_err());
        assert!(open(&Keys::generate(), "snapshot", &sealed, "s").is_err());
    }
}
