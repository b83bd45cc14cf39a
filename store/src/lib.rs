//! The vault store: repository format, keys and crypto, packs, the index,
//! and the snapshot and restore pipelines. Synchronous, with threads and
//! rayon; only backends that speak a network protocol would bridge to async.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vault_store::{backend, Repository, InitOptions, OpenOptions};
//! let be: Arc<dyn backend::Backend> = backend::open_url("/tmp/repo", &Default::default()).unwrap().into();
//! Repository::init(be.clone(), b"secret", &InitOptions::default()).unwrap();
//! let repo = Repository::open(be, b"secret", &OpenOptions::default()).unwrap();
//! println!("{} snapshots", repo.snapshots().unwrap().0.len());
//! ```

#[cfg(feature = "repository")]
pub mod archiver;
#[cfg(feature = "repository")]
pub mod backend;
#[cfg(feature = "repository")]
pub mod budget;
#[cfg(feature = "repository")]
pub mod checker;
pub mod crypto;
#[cfg(feature = "repository")]
pub mod drill;
pub mod error;
#[cfg(feature = "repository")]
pub mod exclude;
#[cfg(feature = "repository")]
pub mod forget;
pub mod format;
#[cfg(feature = "repository")]
pub mod fsmeta;
#[cfg(feature = "repository")]
pub mod gc;
pub mod id;
#[cfg(feature = "repository")]
pub mod index;
pub mod pack;
#[cfg(feature = "repository")]
pub mod prescan;
#[cfg(feature = "repository")]
pub mod prune;
#[cfg(feature = "repository")]
pub mod repair;
#[cfg(feature = "repository")]
pub mod repository;
#[cfg(feature = "repository")]
pub mod restorer;
pub mod retention;
#[cfg(feature = "repository")]
pub mod secret;

pub use error::{Error, Result};

/// Parses a byte size: `4096`, `64K`, `16M`, `16MiB`, `2G`, `1T` (binary
/// multiples). The error names the input and what is expected.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 16M, 1G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown size unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}
pub use id::{BlobId, IndexId, KeyId, PackId, RepoId, SnapshotId};
#[cfg(feature = "repository")]
pub use repository::{InitOptions, OpenOptions, Repository};
