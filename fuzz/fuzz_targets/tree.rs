//! Tree blob decoder: postcard plus the ordering check (docs/format.md §10).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::format::tree::Tree;

fuzz_target!(|data: &[u8]| {
    let _ = Tree::decode(data, "fuzz tree");
});
