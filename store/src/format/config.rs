//! The repository `config`: `"VAULTCFG" version:u32le` in plaintext (so a
//! newer format is recognised before any key is tried), then a metadata
//! envelope of type "config" holding JSON.

use serde::{Deserialize, Serialize};

use super::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::id::RepoId;

/// Plaintext magic at the start of `config`.
pub const MAGIC: &[u8; 8] = b"VAULTCFG";
/// The envelope type of the config body.
pub const AAD: &str = "config";
/// Garbage-collection protocol this build follows.
pub const GC_PROTOCOL: u32 = 2;
/// Largest `config` file a reader accepts, header and envelope included
/// (docs/format.md section 1); the JSON is a few hundred bytes.
pub const MAX_CONFIG_LEN: usize = 64 << 10;
/// Largest config JSON: what fits [`MAX_CONFIG_LEN`].
pub const MAX_CONFIG_JSON_LEN: usize = MAX_CONFIG_LEN - 12 - super::envelope::OVERHEAD;

/// FastCDC parameters, fixed for the repository's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (except a file's last).
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams { min_size: 256 * 1024, avg_size: 1024 * 1024, max_size: 4 * 1024 * 1024 }
    }
}

/// Repository settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// The repository's identity (names its local cache).
    pub id: RepoId,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// zstd level for data blobs (0 stores data uncompressed).
    pub compression_level: i32,
    /// GC protocol version; a vault that doesn't know it refuses to open the
    /// repository (so that no writer ignores the protocol).
    pub gc_protocol: u32,
    /// Retention lock: no snapshot younger than this (a restic-style
    /// duration such as `7y`) may be forgotten, nor data it uses pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retention: Option<String>,
}

impl Config {
    /// Checks values that would break the store if out of range.
    pub fn validate(&self) -> Result<()> {
        let c = &self.chunker;
        let ok = (64..=1 << 20).contains(&c.min_size)
            && (256..=1 << 22).contains(&c.avg_size)
            && (1024..=1 << 24).contains(&c.max_size)
            && c.min_size <= c.avg_size
            && c.avg_size <= c.max_size
            && c.min_size.is_multiple_of(2)
            && c.avg_size.is_power_of_two()
            && c.max_size.is_multiple_of(2);
        if !ok {
            return Err(Error::Invalid(format!(
                "chunk sizes min {} / avg {} / max {} are out of range (need 64 B ≤ min ≤ avg ≤ max ≤ 16 MiB, avg a power of two)",
                c.min_size, c.avg_size, c.max_size
            )));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(Error::Invalid(format!("pack size {} must be between 1 MiB and 1 GiB", self.pack_size)));
        }
        if let Some(r) = &self.min_retention {
            r.parse::<crate::retention::Duration>().map_err(|e| Error::Invalid(format!("minimum retention: {e}")))?;
        }
        if !(-7..=22).contains(&self.compression_level) {
            return Err(Error::Invalid(format!("compression level {} must be -7..=22", self.compression_level)));
        }
        Ok(())
    }

    /// The plaintext prefix of the config file.
    pub fn header() -> [u8; 12] {
        let mut h = [0u8; 12];
        h[..8].copy_from_slice(MAGIC);
        h[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h
    }

    /// Reads the plaintext prefix: returns the envelope that follows.
    pub fn split_header<'a>(buf: &'a [u8], what: &str) -> Result<&'a [u8]> {
        if buf.len() < 12 || &buf[..8] != MAGIC {
            return Err(Error::corrupt(what, "does not start with VAULTCFG: not a vault repository config"));
        }
        let v = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if v > FORMAT_VERSION || v == 0 {
            return Err(Error::UnsupportedVersion { what: what.into(), found: v, supported: FORMAT_VERSION });
        }
        Ok(&buf[12..])
    }

    /// JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config always serializes")
    }

    /// Parses the JSON body.
    pub fn decode(buf: &[u8], what: &str) -> Result<Self> {
        let c: Config =
            serde_json::from_slice(buf).map_err(|e| Error::corrupt(what, format!("config does not decode: {e}")))?;
        if c.version == 0 || c.version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { what: what.into(), found: c.version, supported: FORMAT_VERSION });
        }
        if c.gc_protocol > GC_PROTOCOL {
            return Err(Error::UnsupportedVersion {
                what: format!("{what} (garbage-collection protocol)"),
                found: c.gc_protocol,
                supported: GC_PROTOCOL,
            });
        }
        c.validate().map_err(|e| Error::corrupt(what, e.to_string()))?;
        Ok(c)
    }
}
