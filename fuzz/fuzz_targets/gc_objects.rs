//! Decoders of the garbage-collection objects: mark lists (`marks/<id>`)
//! and the maintenance lease (`locks/maintenance`) (docs/format.md §12a).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_store::format::gc::{LeaseInfo, Marks};

fuzz_target!(|data: &[u8]| {
    let _ = Marks::decode(data, "fuzz marks");
    let _ = LeaseInfo::decode(data, "fuzz lease");
});
