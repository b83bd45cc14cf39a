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

pub mod archiver;
pub mod backend;
pub mod crypto;
pub mod error;
pub mod format;
pub mod fsmeta;
pub mod id;
pub mod index;
pub mod pack;
pub mod repository;
pub mod restorer;

pub use error::{Error, Result};
pub use id::{BlobId, IndexId, KeyId, PackId, RepoId, SnapshotId};
pub use repository::{InitOptions, OpenOptions, Repository};
