//! The metadata envelope (docs/format.md §6), opened with fixed keys under
//! each of the three type names. Random input almost never passes AES-GCM,
//! so the bounded zstd decoder that runs after authentication is also fed
//! the input directly (with a small limit).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vault_store::crypto::Keys;
use vault_store::format::envelope::{self, decompress_bounded};
use vault_store::format::{config, index, snapshot};

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master([7u8; 64]));

fuzz_target!(|data: &[u8]| {
    for (aad, limit) in [
        (config::AAD, config::MAX_CONFIG_JSON_LEN),
        (index::AAD, index::MAX_SEGMENT_LEN),
        (snapshot::AAD, snapshot::MAX_SNAPSHOT_LEN),
    ] {
        let _ = envelope::open(&KEYS, aad, data.to_vec(), limit, "fuzz envelope");
    }
    let _ = decompress_bounded(data, 1 << 20);
});
