//! The vault store: repository format, keys and crypto, packs, the index,
//! and the snapshot and restore pipelines. Synchronous, with threads and
//! rayon; only backends that speak a network protocol would bridge to async.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vault_store::{backend, Repository, InitOptions, OpenOptions};
//! let be: Arc<dyn backend::Backend> = backend::open_url("/tmp/repo").unwrap().into();
//! Repository::init(be.clone(), b"secret", &InitOptions::default()).unwrap();
//! let repo = Repository::open(be, b"secret", &OpenOptions::default()).unwrap();
//! println!("{} snapshots", repo.snapshots().unwrap().0.len());
//! ```

#[cfg(feature = "repository")]
pub mod archiver;
#[cfg(feature = "repository")]
pub mod backend;
#[cfg(feature = "repository")]
pub mod checker;
pub mod crypto;
pub mod error;
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
pub mod prune;
#[cfg(feature = "repository")]
pub mod repair;
#[cfg(feature = "repository")]
pub mod repository;
#[cfg(feature = "repository")]
pub mod restorer;
pub mod retention;

pub use error::{Error, Result};
pub use id::{BlobId, IndexId, KeyId, PackId, RepoId, SnapshotId};
#[cfg(feature = "repository")]
pub use repository::{InitOptions, OpenOptions, Repository};
