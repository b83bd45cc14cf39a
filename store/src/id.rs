//! Identifiers. Every object in a repository is named by a 32-byte id; each
//! kind of id gets its own newtype so that a pack id can never be passed where
//! a blob id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length in bytes of every id.
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The id as raw bytes.
            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lower-case hex, as used for object names.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as shown to people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(out))
            }

            /// Reads an id from the first 32 bytes of `b`.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some(Self(b.get(..ID_LEN)?.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(serde::de::Error::custom)
                } else {
                    Ok(Self(<[u8; ID_LEN]>::deserialize(d)?))
                }
            }
        }
    };
}

id_type!(
    /// A blob (chunk of file content or serialized tree): keyed BLAKE3 of its plaintext.
    BlobId
);
id_type!(
    /// A pack file: BLAKE3 (unkeyed) of the whole file as stored.
    PackId
);
id_type!(
    /// A snapshot object: keyed BLAKE3 of its plaintext.
    SnapshotId
);
id_type!(
    /// An index segment: keyed BLAKE3 of its plaintext.
    IndexId
);
id_type!(
    /// A key file: BLAKE3 of its bytes.
    KeyId
);
id_type!(
    /// The repository's random identity, chosen at `init`.
    RepoId
);

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a valid id: {0:?} (expected 64 hex digits)")]
pub struct ParseIdError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short(), "abababab");
    }

    #[test]
    fn from_hex_rejects_bad_input() {
        assert!(BlobId::from_hex("zz").is_err());
        assert!(BlobId::from_hex(&"a".repeat(63)).is_err());
    }
}
