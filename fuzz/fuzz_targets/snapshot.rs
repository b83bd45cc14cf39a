//! Snapshot JSON decoder (docs/format.md §11).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::format::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data, "fuzz snapshot");
});
