//! Pack trailer and header decoders (docs/format.md §8), plaintext and sealed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vault_store::crypto::Keys;
use vault_store::format::pack::{PackHeader, Trailer, parse_header};

/// Fixed keys, so that seeds sealed with master secret [7; 64] authenticate
/// and the decoding after authentication is reached.
static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master([7u8; 64]));

fuzz_target!(|data: &[u8]| {
    // The plaintext header: the first 8 bytes are `blobs_end` (u64le), the
    // rest is the header.
    if let Some((head, rest)) = data.split_first_chunk::<8>() {
        let _ = PackHeader::decode(rest, u64::from_le_bytes(*head), "fuzz pack header");
    }
    // The input as a whole pack.
    let len = data.len() as u64;
    let _ = Trailer::decode(data, len, "fuzz pack");
    let _ = parse_header(&KEYS, data, len, "fuzz pack");
    // The input as the tail of a larger pack (the first 4 bytes, u32le, say
    // how many bytes precede it).
    if let Some(head) = data.first_chunk::<4>() {
        let pack_len = len + u64::from(u32::from_le_bytes(*head));
        let _ = Trailer::decode(data, pack_len, "fuzz pack tail");
        let _ = parse_header(&KEYS, data, pack_len, "fuzz pack tail");
    }
});
