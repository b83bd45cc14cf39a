//! Errors of the store. Each variant carries what a person needs to act on
//! it: which object, which file, what was expected and what was found.

use std::io;
use std::path::PathBuf;

/// Result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a backend operation failed, so callers (and a retry wrapper) can decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The object does not exist.
    NotFound,
    /// A create-only write found the object already there.
    AlreadyExists,
    /// Worth retrying: a timeout, a reset connection, a 5xx.
    Transient,
    /// Retrying won't help: permission denied, disk full, bad request.
    Permanent,
    /// The object is larger than any of its type can be
    /// ([`FileType::max_len`](crate::backend::FileType::max_len)): damage
    /// (or a hostile repository), not a failure of the backend.
    Oversized,
    /// Where an object should be there is something that is no regular
    /// file (a FIFO, a device, a socket, a symbolic link, a directory):
    /// damage or a hostile repository, and it is never opened for reading.
    NotAFile,
}

/// A failed backend operation, naming the object it was about.
#[derive(Debug, thiserror::Error)]
#[error("{op} {location}: {message}")]
pub struct BackendError {
    /// What went wrong, for decisions.
    pub kind: BackendErrorKind,
    /// The operation: "reading", "writing", "listing", ...
    pub op: &'static str,
    /// Where: a path or URL of the object.
    pub location: String,
    /// The underlying cause, in words.
    pub message: String,
}

impl BackendError {
    /// Builds an error from an I/O error, classifying it.
    pub fn from_io(op: &'static str, location: impl Into<String>, e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => BackendErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => BackendErrorKind::AlreadyExists,
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                BackendErrorKind::Transient
            }
            _ => BackendErrorKind::Permanent,
        };
        Self { kind, op, location: location.into(), message: e.to_string() }
    }

    /// True when the object did not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == BackendErrorKind::NotFound
    }
}

/// Every error the store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// The location holds no repository.
    #[error("{location} is not a vault repository: {reason}")]
    NotARepository {
        /// The repository location.
        location: String,
        /// Why it isn't one.
        reason: String,
    },

    /// `init` on a location that already holds files.
    #[error("{location} is not empty: refusing to create a repository there")]
    TargetNotEmpty {
        /// The location.
        location: String,
    },

    /// No key file opens with the given password.
    #[error("wrong password: none of the {keys} key(s) in {location} opens with it{}", damaged_note(.damaged))]
    WrongPassword {
        /// The repository location.
        location: String,
        /// How many key files were tried.
        keys: usize,
        /// The key files that could not be tried, as errors naming each:
        /// one of them may have been the key for this password.
        damaged: Vec<String>,
    },

    /// The repository was written by a newer vault.
    #[error("{what} has format version {found}, this vault reads up to {supported}: upgrade vault")]
    UnsupportedVersion {
        /// Which object.
        what: String,
        /// Version found.
        found: u32,
        /// Highest version supported.
        supported: u32,
    },

    /// An object decoded to nonsense or failed authentication.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// Which object (e.g. "pack data/ab/ab12…", "index segment 3f…").
        what: String,
        /// What was wrong.
        detail: String,
    },

    /// A hash did not match.
    #[error("{what}: checksum mismatch, expected {expected}, got {got}")]
    ChecksumMismatch {
        /// Which object.
        what: String,
        /// The id it should have.
        expected: String,
        /// The hash of what was read.
        got: String,
    },

    /// A blob the repository should have is not in the index.
    #[error("blob {0} is not in the repository index")]
    BlobNotFound(String),

    /// A snapshot name matched nothing or more than one.
    #[error("{0}")]
    SnapshotNotFound(String),

    /// A path inside a snapshot does not exist.
    #[error("path {path:?} is not in the snapshot: {reason}")]
    PathNotFound {
        /// The path asked for.
        path: String,
        /// Which component was missing or not a directory.
        reason: String,
    },

    /// A blob (a huge directory listing) is larger than readers accept.
    #[error("a {kind} blob of {len} bytes exceeds the limit of {limit} bytes")]
    BlobTooLarge {
        /// "data" or "tree".
        kind: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: u32,
    },

    /// Local I/O on a source or target file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// The local index cache could not be used.
    #[error("index cache {}: {message}", path.display())]
    Cache {
        /// Cache directory.
        path: PathBuf,
        /// What happened.
        message: String,
    },

    /// Another process holds the maintenance lease.
    #[error("{0}")]
    Locked(String),

    /// A refused request (bad option value, last key removal, ...).
    #[error("{0}")]
    Invalid(String),

    /// Work was cut short by an earlier failure in a pipeline stage.
    #[error("{0}")]
    Pipeline(String),

    /// The store lacks a feature this operation needs (an S3-compatible
    /// server that ignores conditional writes, say).
    #[error("{0}")]
    Unsupported(String),
}

/// The end of a [`Error::WrongPassword`] message: the damaged key files.
fn damaged_note(damaged: &[String]) -> String {
    if damaged.is_empty() {
        String::new()
    } else {
        format!(" (not tried, one may be the key for it: {})", damaged.join("; "))
    }
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into(), detail: detail.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// True when the error means a backend object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Backend(e) if e.is_not_found())
    }
}
