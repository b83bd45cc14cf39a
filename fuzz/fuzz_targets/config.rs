//! The repository config (docs/format.md §7): plaintext header, and the JSON
//! body; when the input is a whole config sealed with master secret [7; 64],
//! also the path through the envelope that `Repository::open` takes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vault_store::crypto::Keys;
use vault_store::format::config::{self, Config};
use vault_store::format::envelope;

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master([7u8; 64]));

fuzz_target!(|data: &[u8]| {
    // The input as the JSON body.
    let _ = Config::decode(data, "fuzz config body");
    // The input as the whole `config` file.
    if let Ok(body) = Config::split_header(data, "fuzz config")
        && let Ok(plain) = envelope::open(&KEYS, config::AAD, body.to_vec(), config::MAX_CONFIG_JSON_LEN, "fuzz config")
    {
        let _ = Config::decode(&plain, "fuzz config");
    }
});
