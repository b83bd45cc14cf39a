//! Storage backends: the handful of operations the store needs, addressed by
//! (file type, name). Everything above this trait is backend-agnostic; retry,
//! caching or rate limits are wrappers implementing the same trait.

pub mod crash;
pub mod local;

use crate::error::BackendError;

/// The kinds of objects in a repository, each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// `config`, a single object.
    Config,
    /// `keys/<id>`.
    Key,
    /// `data/<xx>/<id>`: data packs.
    Data,
    /// `tree/<xx>/<id>`: tree packs.
    Tree,
    /// `index/<id>`.
    Index,
    /// `snapshots/<id>`.
    Snapshot,
    /// `locks/<id>`: the maintenance lease.
    Lock,
    /// `marks/<id>`: packs marked for deletion by prune (two-phase GC).
    Marks,
}

impl FileType {
    /// The directory (prefix) of this type; empty for the config.
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Data => "data",
            FileType::Tree => "tree",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Lock => "locks",
            FileType::Marks => "marks",
        }
    }

    /// Whether objects are spread over `<xx>/` subdirectories.
    pub fn fanned_out(self) -> bool {
        matches!(self, FileType::Data | FileType::Tree)
    }

    /// Every type, for creating and listing a repository.
    pub const ALL: [FileType; 8] = [
        FileType::Config,
        FileType::Key,
        FileType::Data,
        FileType::Tree,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
        FileType::Marks,
    ];

    /// The relative path of object `name` of this type.
    pub fn path(self, name: &str) -> String {
        match self {
            FileType::Config => "config".to_string(),
            t if t.fanned_out() => format!("{}/{}/{}", t.dir(), name.get(..2).unwrap_or("00"), name),
            t => format!("{}/{}", t.dir(), name),
        }
    }
}

/// Result of backend operations.
pub type BResult<T> = Result<T, BackendError>;

/// Storage for a repository.
pub trait Backend: Send + Sync {
    /// Where the repository is, for messages (a path or URL).
    fn location(&self) -> String;

    /// Creates the directory structure, if the backend has one.
    fn create(&self) -> BResult<()>;

    /// True when nothing is stored at the location yet.
    fn is_empty(&self) -> BResult<bool>;

    /// Names and sizes of all objects of a type.
    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>>;

    /// Names, sizes and modification times of all objects of a type. The
    /// times are the backend's (the file system's, the server's): garbage
    /// collection measures its grace period with them, not the client clock.
    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, std::time::SystemTime)>>;

    /// Size of one object.
    fn size(&self, t: FileType, name: &str) -> BResult<u64>;

    /// A whole object.
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>>;

    /// `len` bytes at `offset`; a short object is an error.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>>;

    /// Stores an object that must not exist yet. If it exists already the
    /// result is an `AlreadyExists` error and the stored object is untouched.
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()>;

    /// Replaces an object atomically: readers see the old or the new
    /// content, never a mix or nothing. Only for the few mutable objects
    /// (`config`, the maintenance lease).
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()>;

    /// Removes an object.
    fn remove(&self, t: FileType, name: &str) -> BResult<()>;

    /// How many operations may usefully run at once.
    fn connections(&self) -> usize {
        2
    }
}

/// Opens the backend a repository URL names: `/path`, `file:///path` or a
/// relative path.
pub fn open_url(url: &str) -> Result<Box<dyn Backend>, crate::error::Error> {
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(Box::new(local::LocalBackend::new(p)));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !scheme.contains('/')
    {
        return Err(crate::error::Error::Invalid(format!(
            "repository {url:?}: the {scheme}:// backend is not supported by this build (supported: a local path or file://)"
        )));
    }
    if url.starts_with("s3:") {
        return Err(crate::error::Error::Invalid(format!(
            "repository {url:?}: S3 repositories are not supported by this build yet"
        )));
    }
    Ok(Box::new(local::LocalBackend::new(url)))
}
