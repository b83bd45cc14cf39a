//! Key file JSON decoder (docs/format.md §5). `KeyFile::open` is not called:
//! it runs Argon2, which is slow by design.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::crypto::KeyFile;

fuzz_target!(|data: &[u8]| {
    let _ = KeyFile::decode(data, "fuzz key file");
});
