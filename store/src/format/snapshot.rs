//! Snapshot objects (`snapshots/<id>`): JSON in a metadata envelope of type
//! "snapshot". The id is the keyed hash of the JSON bytes. JSON keeps the
//! object extensible: readers ignore fields they don't know.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};

/// Version of the snapshot object.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The envelope type of snapshots.
pub const AAD: &str = "snapshot";
/// Largest snapshot JSON a reader accepts (docs/format.md section 1):
/// snapshots are a few KiB; long lists of paths, tags or excludes fit many
/// times over. Writers refuse to store a larger one.
pub const MAX_SNAPSHOT_LEN: usize = 16 << 20;

/// What a snapshot run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Files seen for the first time.
    pub files_new: u64,
    /// Files whose metadata changed since the parent snapshot.
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Entries that could not be read (left out of the snapshot) or not read
    /// fully (stored as far as they were read), each reported by path.
    pub errors: u64,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Bytes of file content the snapshot covers.
    pub bytes_total: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Bytes written to the repository (packs, sealed and compressed).
    pub bytes_added: u64,
    /// Plaintext bytes of new blobs, data and tree (before compression).
    pub bytes_added_raw: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// When the run started.
    pub time: jiff::Timestamp,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// Absolute source paths (or the stdin name).
    pub paths: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    /// Parent used for change detection.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Exclude patterns used.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// vault version that wrote it.
    pub program_version: String,
    /// The run's statistics.
    #[serde(default)]
    pub summary: Option<SnapshotSummary>,
    /// For a snapshot written by `repair snapshots`: the damaged snapshot
    /// it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

impl Snapshot {
    /// JSON bytes (deterministic for a given value).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serializes")
    }

    /// Decodes; `what` names it in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version =
            serde_json::from_slice(buf).map_err(|e| Error::corrupt(what, format!("not a snapshot: {e}")))?;
        if v.version == 0 {
            return Err(Error::corrupt(what, "snapshot version 0 does not exist"));
        }
        if v.version > SNAPSHOT_VERSION {
            return Err(Error::UnsupportedVersion { what: what.into(), found: v.version, supported: SNAPSHOT_VERSION });
        }
        serde_json::from_slice(buf).map_err(|e| Error::corrupt(what, format!("not a snapshot: {e}")))
    }
}
