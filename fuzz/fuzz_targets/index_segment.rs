//! Index segment plaintext decoder (docs/format.md §9).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::format::index::IndexSegment;

fuzz_target!(|data: &[u8]| {
    let _ = IndexSegment::decode(data, "fuzz index segment");
});
