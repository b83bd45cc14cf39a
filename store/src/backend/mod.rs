//! Storage backends: the handful of operations the store needs, addressed by
//! (file type, name). Everything above this trait is backend-agnostic; retry,
//! caching or rate limits are wrappers implementing the same trait.

pub mod cache;
pub mod hook;
pub mod local;
pub mod memory;
pub mod rest;
pub mod s3;

use crate::error::BackendError;

/// A buffer that reads land in, reused from read to read. Its content is a
/// range of it, not always at the front: a read around the page cache lands
/// at an address aligned for the disk, some bytes before the range asked
/// for, and those bytes then need no moving.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl ReadBuf {
    pub const fn new() -> Self {
        ReadBuf { buf: Vec::new(), start: 0, len: 0 }
    }

    /// Takes `v` as the content.
    pub fn set(&mut self, v: Vec<u8>) {
        (self.start, self.len) = (0, v.len());
        self.buf = v;
    }

    /// At least `n` bytes of space to read into, the content emptied; then
    /// [`ReadBuf::keep`] says which of them are the content. Zero-filled
    /// only where the buffer grows.
    pub fn space(&mut self, n: usize) -> &mut [u8] {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        (self.start, self.len) = (0, 0);
        &mut self.buf
    }

    /// The content as a vector: the buffer itself, the content moved to
    /// its front when it is not there.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.copy_within(self.start..self.start + self.len, 0);
        self.buf.truncate(self.len);
        self.buf
    }

    /// Makes `len` bytes at `start` of the space the content.
    ///
    /// # Panics
    /// When they are not within the space.
    pub fn keep(&mut self, start: usize, len: usize) {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.buf.len()), "content within the buffer");
        (self.start, self.len) = (start, len);
    }
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

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

    /// The name of the object at `rel`, a path relative to this type's
    /// directory, when it is at the right depth (`xx/name` for packs,
    /// `name` for the rest); `None` for anything else stored there.
    pub fn name_in_dir(self, rel: &str) -> Option<&str> {
        let mut parts = rel.split('/');
        let first = parts.next()?;
        let name = if self.fanned_out() { parts.next()? } else { first };
        (parts.next().is_none() && !name.is_empty()).then_some(name)
    }

    /// What an object of this type is, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Key => "key file",
            FileType::Data => "data pack",
            FileType::Tree => "tree pack",
            FileType::Index => "index segment",
            FileType::Snapshot => "snapshot",
            FileType::Lock => "lease",
            FileType::Marks => "marks file",
        }
    }

    /// The most bytes an object of this type can hold (the limits of
    /// `docs/format.md` section 1: what a legitimate object can reach, with
    /// room to spare, and what vault never writes past). A whole-object
    /// read of anything larger is refused before memory is taken for it, so
    /// a damaged or hostile repository (a sparse file of a terabyte named
    /// like a snapshot) gets an error that names it, not an aborted process.
    pub fn max_len(self) -> u64 {
        use crate::format::{envelope::OVERHEAD, gc, index, snapshot};
        let len = match self {
            // A few hundred bytes each.
            FileType::Config => crate::format::config::MAX_CONFIG_LEN,
            FileType::Key => crate::crypto::MAX_KEY_FILE_LEN,
            FileType::Lock => gc::MAX_LEASE_LEN + OVERHEAD,
            // Sealed envelopes: the payload's limit and the envelope.
            FileType::Index => index::MAX_SEGMENT_LEN + OVERHEAD,
            FileType::Snapshot => snapshot::MAX_SNAPSHOT_LEN + OVERHEAD,
            FileType::Marks => gc::MAX_MARKS_LEN + OVERHEAD,
            FileType::Data | FileType::Tree => return crate::format::pack::MAX_PACK_LEN,
        };
        len as u64
    }

    /// The error for a whole-object read of `size` bytes past [`Self::max_len`].
    pub fn too_large(self, location: String, size: u64) -> BackendError {
        BackendError {
            kind: crate::error::BackendErrorKind::Oversized,
            op: "reading",
            location,
            message: format!("{size} bytes, more than any {} can hold ({} at most)", self.noun(), self.max_len()),
        }
    }

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

    /// Calls `f` with the name and size of every object of a type, in no
    /// set order. Backends that can hand the listing over as it comes (one
    /// directory, one page at a time) do, so a caller that keeps less than
    /// [`Backend::list`]'s ~130 bytes a name holds less memory; the default
    /// lists whole.
    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        for (name, size) in self.list(t)? {
            f(&name, size);
        }
        Ok(())
    }

    /// The names of all objects of a type, in no set order: for a caller that needs
    /// no sizes, which spares the local backend a `stat` per object (100 000
    /// snapshots: 12 % of an unchanged re-snapshot's CPU). Wrappers that
    /// act on listings (the metadata cache) get them through `list`.
    fn list_names(&self, t: FileType) -> BResult<Vec<String>> {
        Ok(self.list(t)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Size of one object.
    fn size(&self, t: FileType, name: &str) -> BResult<u64>;

    /// A whole object: refused, before its body is read, when it is larger
    /// than its type can be ([`FileType::max_len`]).
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>>;

    /// [`Backend::read`], calling `admit` with the object's size once that
    /// is known and before its body is read: a reader that shares a memory
    /// budget with others ([`crate::budget`]) waits there until the budget
    /// has room for the object. The default asks for the size first (one
    /// more request); the backends learn it while opening the object.
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        admit(self.size(t, name)?.min(t.max_len()));
        self.read(t, name)
    }

    /// [`Backend::read`] into `buf` (replacing its content), so that a
    /// caller reading pack after pack reuses one buffer instead of faulting
    /// in a fresh one each time.
    fn read_into(&self, t: FileType, name: &str, buf: &mut ReadBuf) -> BResult<()> {
        buf.set(self.read(t, name)?);
        Ok(())
    }

    /// `len` bytes at `offset`; a short object is an error.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>>;

    /// [`Backend::read_range`] into `buf` (replacing its content), so that
    /// a caller reading range after range reuses one buffer.
    fn read_range_into(&self, t: FileType, name: &str, offset: u64, len: u64, buf: &mut ReadBuf) -> BResult<()> {
        buf.set(self.read_range(t, name, offset, len)?);
        Ok(())
    }

    /// Stores an object that must not exist yet. If it exists already the
    /// result is an `AlreadyExists` error and the stored object is untouched
    /// (a network backend returns success instead when the stored object
    /// has the same content: it can't tell its own lost reply from that).
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()>;

    /// [`Backend::write_new`] for a buffer the caller gives up, which a
    /// network backend can send without copying it.
    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        self.write_new(t, name, &data)
    }

    /// [`Backend::write_new`] of the `len` bytes `src` gives, for a
    /// caller that holds no copy of them (the server, passing an upload
    /// on): `src` is read to its end, and an error from it (at any point,
    /// its end included, where a reader that checks what it passed on
    /// says whether that was right) leaves nothing stored. A `src` that
    /// ends before `len` bytes, or goes on past them, is refused the same
    /// way. The default collects the bytes and writes them whole; the
    /// local backend streams them through its temporary file.
    fn write_new_from(&self, t: FileType, name: &str, len: u64, src: &mut dyn std::io::Read) -> BResult<()> {
        let location = || format!("{} {}", self.location(), t.path(name));
        let data = read_exactly(src, len).map_err(|e| BackendError::from_io("writing", location(), &e))?;
        self.write_new_owned(t, name, data)
    }

    /// Replaces an object atomically: readers see the old or the new
    /// content, never a mix or nothing. Only for the few mutable objects
    /// (`config`, the maintenance lease).
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()>;

    /// Removes an object.
    fn remove(&self, t: FileType, name: &str) -> BResult<()>;

    /// Drops a local copy of an object, if this backend keeps one (see
    /// `cache`), so that the next read comes from the repository; returns
    /// whether there was one. Readers call it when an object fails to
    /// authenticate, so a damaged copy is never mistaken for damage in the
    /// repository.
    fn evict(&self, _t: FileType, _name: &str) -> bool {
        false
    }

    /// How many operations may usefully run at once.
    fn connections(&self) -> usize {
        2
    }

    /// True for backends behind a network (S3): their trees, snapshots and
    /// index segments are worth keeping in the local cache.
    fn is_remote(&self) -> bool {
        false
    }
}

/// How long a network backend waits before attempt `attempt + 1` of a
/// request: exponential from 100 ms, at most 10 s, with jitter (the upper
/// half of the step chosen at random), so clients that failed together
/// don't retry together.
pub(crate) fn backoff(attempt: u32) -> std::time::Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(10)).min(10_000);
    let jitter = u64::from(u16::from_le_bytes(crate::crypto::random_bytes::<2>())) % (base / 2 + 1);
    std::time::Duration::from_millis(base / 2 + jitter)
}

/// An error's text with the text of each cause that it doesn't already
/// include, for messages that must say what actually failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let st = s.to_string();
        if !text.contains(&st) {
            text = format!("{text}: {st}");
        }
        src = s.source();
    }
    text
}

/// Reads `src` to its end, which must come after exactly `len` bytes.
pub fn read_exactly(src: &mut dyn std::io::Read, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let cap = usize::try_from(len).map_err(|_| std::io::Error::other(format!("{len} bytes do not fit in memory")))?;
    let mut data = Vec::with_capacity(cap);
    src.take(len.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 != len {
        return Err(length_mismatch(data.len() as u64, len));
    }
    Ok(data)
}

/// The error for a stream of `got` bytes where `len` were announced.
pub fn length_mismatch(got: u64, len: u64) -> std::io::Error {
    let msg = match got < len {
        true => format!("the body ended after {got} of the {len} bytes announced"),
        false => format!("the body went on past the {len} bytes announced"),
    };
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Reads an object and checks it with `check` (authenticate, decode). When
/// that fails and the backend held a local copy, the copy is dropped and
/// the object read again from the repository, so a damaged copy is never
/// reported as damage of the repository. `admit` is called with the size
/// before each read, as in [`Backend::read_admitted`].
pub fn read_checked<T>(
    backend: &dyn Backend,
    t: FileType,
    name: &str,
    admit: &mut dyn FnMut(u64),
    check: impl Fn(Vec<u8>) -> crate::Result<T>,
) -> crate::Result<T> {
    use crate::error::Error;
    let mut read = || backend.read_admitted(t, name, admit).map_err(|e| damage(t, e));
    match check(read()?) {
        Err(Error::Corrupt { .. } | Error::ChecksumMismatch { .. }) if backend.evict(t, name) => check(read()?),
        r => r,
    }
}

/// A failed read of a `t` as an error of the store: an object too large to
/// be one of its type, or no regular file, is damaged, like one that fails
/// to authenticate, so callers report it as such and go on instead of
/// stopping as for a failing backend.
pub fn damage(t: FileType, e: BackendError) -> crate::error::Error {
    use crate::error::BackendErrorKind;
    match e.kind {
        BackendErrorKind::Oversized | BackendErrorKind::NotAFile => {
            crate::error::Error::corrupt(format!("{} {}", t.noun(), e.location), e.message)
        }
        _ => e.into(),
    }
}

/// `-o KEY=VALUE` options for the backend a repository URL names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions(pub Vec<(String, String)>);

/// Options `-o` accepts, with what they mean.
pub const OPTION_HELP: &[(&str, &str)] = &[
    ("s3.endpoint", "endpoint URL of an S3-compatible store (default: AWS_ENDPOINT_URL, else AWS)"),
    ("s3.region", "region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)"),
    (
        "s3.path-style",
        "true: endpoint/bucket/key requests; false: bucket.endpoint/key (default: true with an endpoint)",
    ),
    ("s3.storage-class", "storage class of data packs, e.g. STANDARD_IA (trees, index and snapshots stay STANDARD)"),
    ("s3.connections", "concurrent requests (default 8)"),
    ("s3.retries", "retries of a failing request (default 8)"),
    ("s3.timeout", "how long a request may wait for the server, e.g. 120s (default)"),
    ("rest.connections", "concurrent requests to a vault server (default 8)"),
    ("rest.retries", "retries of a failing request to a vault server (default 8)"),
    ("rest.timeout", "how long a request may wait for a vault server, e.g. 120s (default)"),
];

impl BackendOptions {
    /// Parses `KEY=VALUE` strings; unknown keys are refused.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, crate::error::Error> {
        let mut out = Vec::new();
        for item in items {
            let item = item.as_ref();
            let Some((k, v)) = item.split_once('=') else {
                return Err(crate::error::Error::Invalid(format!("option {item:?}: expected KEY=VALUE")));
            };
            let k = k.trim();
            if !OPTION_HELP.iter().any(|(name, _)| *name == k) {
                let known: Vec<_> = OPTION_HELP.iter().map(|(n, _)| *n).collect();
                return Err(crate::error::Error::Invalid(format!(
                    "unknown option {k:?} (known: {})",
                    known.join(", ")
                )));
            }
            out.push((k.to_string(), v.trim().to_string()));
        }
        Ok(BackendOptions(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Splits an S3 repository URL into options: `s3:bucket/prefix`,
/// `s3://bucket/prefix`, or restic's `s3:http(s)://host[:port]/bucket/prefix`
/// (which also sets the endpoint). `None` when the URL is not an S3 one.
pub fn parse_s3_url(url: &str) -> Option<Result<s3::S3Options, crate::error::Error>> {
    let rest = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3:"))?;
    let (endpoint, path) = match rest.split_once("://") {
        Some((scheme @ ("http" | "https"), after)) => {
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            (Some(format!("{scheme}://{host}")), path)
        }
        _ => (None, rest),
    };
    let path = path.trim_matches('/');
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Some(Err(crate::error::Error::Invalid(format!(
            "repository {url:?}: no bucket (use s3:BUCKET/PREFIX or s3://BUCKET/PREFIX)"
        ))));
    }
    let mut o = s3::S3Options::new(bucket, prefix);
    o.endpoint = endpoint;
    Some(Ok(o))
}

fn bad_option(k: &str, v: &str, want: &str) -> crate::error::Error {
    crate::error::Error::Invalid(format!("option {k}={v:?}: {want}"))
}

/// A whole number in `range` (a trailing unit `s` allowed for times).
fn option_number(
    k: &str,
    v: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, crate::error::Error> {
    v.strip_suffix(unit)
        .filter(|_| !unit.is_empty())
        .unwrap_or(v)
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| bad_option(k, v, &format!("expected a number from {} to {}{unit}", range.start(), range.end())))
}

fn apply_rest_options(o: &mut rest::RestOptions, opts: &BackendOptions) -> Result<(), crate::error::Error> {
    if let Some((k, _)) = opts.0.iter().find(|(k, _)| !k.starts_with("rest.")) {
        return Err(crate::error::Error::Invalid(format!(
            "option {k} applies to S3 repositories (s3:BUCKET/PREFIX), not to a vault server (rest:…)"
        )));
    }
    if let Some(v) = opts.get("rest.connections") {
        o.connections = option_number("rest.connections", v, 1..=256, "")? as usize;
    }
    if let Some(v) = opts.get("rest.retries") {
        o.retries = option_number("rest.retries", v, 0..=100, "")? as usize;
    }
    if let Some(v) = opts.get("rest.timeout") {
        o.timeout = std::time::Duration::from_secs(option_number("rest.timeout", v, 1..=3600, "s")?);
    }
    Ok(())
}

fn apply_s3_options(o: &mut s3::S3Options, opts: &BackendOptions) -> Result<(), crate::error::Error> {
    if let Some((k, _)) = opts.0.iter().find(|(k, _)| !k.starts_with("s3.")) {
        return Err(crate::error::Error::Invalid(format!(
            "option {k} applies to a vault server (rest:…), not to S3 repositories"
        )));
    }
    let bad = bad_option;
    let number = option_number;
    if let Some(v) = opts.get("s3.endpoint") {
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(bad("s3.endpoint", v, "give a URL starting with http:// or https://"));
        }
        o.endpoint = Some(v.trim_end_matches('/').to_string());
    }
    if let Some(v) = opts.get("s3.region") {
        o.region = Some(v.to_string());
    }
    if let Some(v) = opts.get("s3.path-style") {
        o.path_style = Some(match v {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("s3.path-style", v, "expected true or false")),
        });
    }
    if let Some(v) = opts.get("s3.storage-class") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            return Err(bad("s3.storage-class", v, "expected a storage class name such as STANDARD_IA or GLACIER_IR"));
        }
        o.storage_class = Some(v.to_string());
    }
    if let Some(v) = opts.get("s3.connections") {
        o.connections = number("s3.connections", v, 1..=256, "")? as usize;
    }
    if let Some(v) = opts.get("s3.retries") {
        o.retries = number("s3.retries", v, 0..=100, "")? as usize;
    }
    if let Some(v) = opts.get("s3.timeout") {
        o.timeout = std::time::Duration::from_secs(number("s3.timeout", v, 1..=3600, "s")?);
    }
    Ok(())
}

/// Who is calling and whom to trust, for a `rest:` repository (a vault
/// server); the other backends take their credentials from elsewhere.
#[derive(Clone, Default)]
pub struct Access {
    /// The access token (else `VAULT_TOKEN`).
    pub token: Option<zeroize::Zeroizing<String>>,
    /// PEM file of the CA certificates to trust instead of the system's.
    pub cacert: Option<std::path::PathBuf>,
}

/// Opens the backend a repository URL names: `/path`, `file:///path`, a
/// relative path, an S3 bucket and prefix (see [`parse_s3_url`]), or a
/// repository on a vault server (`rest:https://host:port/NAME`), which
/// gets its token from `VAULT_TOKEN`.
pub fn open_url(url: &str, opts: &BackendOptions) -> Result<Box<dyn Backend>, crate::error::Error> {
    open_url_with(url, opts, &Access::default())
}

/// [`open_url`] with the token and CA for a `rest:` repository.
pub fn open_url_with(
    url: &str,
    opts: &BackendOptions,
    access: &Access,
) -> Result<Box<dyn Backend>, crate::error::Error> {
    if let Some(r) = rest::parse_url(url) {
        let mut o = r?;
        apply_rest_options(&mut o, opts)?;
        o.token = access.token.clone();
        o.cacert = access.cacert.clone();
        return Ok(Box::new(rest::RestBackend::new(o)?));
    }
    if let Some(s3) = parse_s3_url(url) {
        let mut o = s3?;
        apply_s3_options(&mut o, opts)?;
        return Ok(Box::new(s3::S3Backend::new(o)?));
    }
    if let Some((k, _)) = opts.0.first() {
        return Err(crate::error::Error::Invalid(format!(
            "option {k} applies to S3 repositories (s3:BUCKET/PREFIX) or a vault server (rest:…), not to {url:?}"
        )));
    }
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(Box::new(local::LocalBackend::new(p)));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !scheme.contains('/')
    {
        return Err(crate::error::Error::Invalid(format!(
            "repository {url:?}: the {scheme}:// backend is not supported (supported: a local path, file://PATH, s3:BUCKET/PREFIX, rest:https://HOST:PORT/NAME)"
        )));
    }
    Ok(Box::new(local::LocalBackend::new(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_is_its_content_wherever_that_sits() {
        let mut b = ReadBuf::new();
        assert!(b.is_empty());
        b.set(b"abc".to_vec());
        assert_eq!(&*b, b"abc");
        let space = b.space(10);
        assert!(space.len() >= 10);
        space[..10].copy_from_slice(b"0123456789");
        assert!(b.is_empty(), "space empties the content");
        b.keep(3, 4);
        assert_eq!(&*b, b"3456");
        b[0] = b'x';
        assert_eq!(&*b, b"x456");
        // Growing keeps nothing promised; shrinking reuses the allocation.
        b.space(4)[..2].copy_from_slice(b"yz");
        b.keep(0, 2);
        assert_eq!(&*b, b"yz");
        b.space(8)[..8].copy_from_slice(b"abcdefgh");
        b.keep(5, 3);
        assert_eq!(b.into_vec(), b"fgh");
    }

    #[test]
    #[should_panic(expected = "content within the buffer")]
    fn a_read_buffer_refuses_content_past_its_space() {
        let mut b = ReadBuf::new();
        b.space(4);
        b.keep(2, 3);
    }

    #[test]
    fn s3_urls() {
        let o = parse_s3_url("s3:bucket/some/prefix/").unwrap().unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str(), o.endpoint), ("bucket", "some/prefix", None));
        let o = parse_s3_url("s3://bucket").unwrap().unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", ""));
        let o = parse_s3_url("s3:http://127.0.0.1:9000/b/p").unwrap().unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("b", "p"));
        assert!(parse_s3_url("s3:").unwrap().is_err());
        assert!(parse_s3_url("s3:https://host/").unwrap().is_err());
        assert!(parse_s3_url("/srv/repo").is_none());
        assert!(parse_s3_url("s3backup/dir").is_none());
    }

    #[test]
    fn options_are_checked() {
        let opts = BackendOptions::parse(&["s3.connections=16", "s3.path-style=false", "s3.storage-class=STANDARD_IA"])
            .unwrap();
        let mut o = s3::S3Options::new("b", "");
        apply_s3_options(&mut o, &opts).unwrap();
        assert_eq!((o.connections, o.path_style, o.storage_class.as_deref()), (16, Some(false), Some("STANDARD_IA")));
        let e = BackendOptions::parse(&["s3.conections=3"]).unwrap_err().to_string();
        assert!(e.contains("s3.conections") && e.contains("s3.connections"), "{e}");
        assert!(BackendOptions::parse(&["s3.connections"]).is_err());
        for bad in ["s3.connections=0", "s3.path-style=maybe", "s3.storage-class=standard-ia", "s3.endpoint=host:9000"]
        {
            let opts = BackendOptions::parse(&[bad]).unwrap();
            let e = apply_s3_options(&mut o, &opts).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }
}
