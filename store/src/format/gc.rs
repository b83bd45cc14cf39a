//! The objects of the garbage-collection protocol (docs/format.md §12a):
//! the maintenance lease (`locks/maintenance`) and mark lists
//! (`marks/<id>`), both JSON inside a metadata envelope.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::PackId;

/// Largest lease JSON a reader accepts: the sealed lease, like every
/// object under `locks/`, is at most 64 KiB (docs/format.md section 1).
pub const MAX_LEASE_LEN: usize = (64 << 10) - super::envelope::OVERHEAD;
/// Largest mark list JSON a reader accepts (docs/format.md section 1):
/// about a million packs, so that the single marks an older prune wrote
/// for all its unused packs still read.
pub const MAX_MARKS_LEN: usize = 64 << 20;
/// Packs a writer lists in one mark object at most (each takes 67 bytes:
/// 6.7 MB); more unused packs are listed in several marks.
pub const PACKS_PER_MARK: usize = 100_000;

/// What a lease says of its holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The operation, e.g. "prune".
    pub operation: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// User name.
    pub user: String,
    /// When it was taken (the holder's clock; informative).
    pub since: String,
    /// Random: tells this holder's lease from a later one.
    pub token: String,
    /// The holder's boot and pid namespace (Linux), so that "no such pid"
    /// only counts on the very same system, not in another container with
    /// the same host name.
    #[serde(default)]
    pub system: String,
}

impl LeaseInfo {
    /// Decodes a lease's JSON; `what` names it in errors.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(buf).map_err(|e| Error::corrupt(what, format!("not a lease: {e}")))
    }
}

/// One mark object: packs found unused by a prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marks {
    /// Object version, 1.
    pub version: u32,
    /// When prune wrote it (its clock; informative: the grace period uses
    /// the object's modification time).
    pub created: String,
    /// The packs, hex ids.
    pub packs: Vec<PackId>,
}

impl Marks {
    /// Decodes a mark list's JSON; `what` names it in errors. Version 1 only.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        let m: Marks =
            serde_json::from_slice(buf).map_err(|e| Error::corrupt(what, format!("not a mark list: {e}")))?;
        if m.version != 1 {
            return Err(Error::UnsupportedVersion { what: what.into(), found: m.version, supported: 1 });
        }
        Ok(m)
    }
}
